"""Loading and storing: .mhd, a DICOM series, and dump / load of a whole scan.

Timings are from the page cache ("warm") unless the case says cold: then, before every timed
call, the files are written back (``fsync``) and dropped from the page cache with
``posix_fadvise(POSIX_FADV_DONTNEED)``. On a virtual machine the host may still cache the disk,
so "cold" means "not in this machine's page cache". Dumps are timed to the page cache
(write-back to the disk happens later and is not timed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, exact, xyz_to_zyx
from benchmarks.peers import sitk_threads, torch_threads


def _nbytes2(inp: dict[str, Any]) -> int:
    return 2 * int(inp["images"].nbytes)


# -- load .mhd ----------------------------------------------------------------------------------
def _mhd_inputs(data: Any) -> dict[str, Any]:
    s = data.scan()
    return {"images": s["images"], "mhd": s["mhd"], "raw": s["raw"]}


def _ctflow_mhd(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.io.metaimage import read_metaimage

    return Runner(lambda: read_metaimage(inp["mhd"]).images, lambda out: {"out": out})


def _numpy_fromfile(inp: dict[str, Any], threads: int) -> Runner:
    shape = inp["images"].shape

    def run() -> np.ndarray:
        return np.fromfile(inp["raw"], dtype="<i2").reshape(shape)

    return Runner(run, lambda out: {"out": out})


def _sitk_mhd(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)

    def run() -> Any:
        img = sitk.ReadImage(str(inp["mhd"]))
        return img, sitk.GetArrayViewFromImage(img)  # keep the image alive with its view

    return Runner(run, lambda out: {"out": np.array(out[1])})


def _tio_mhd(inp: dict[str, Any], threads: int) -> Runner:
    sitk_threads(threads)
    torch_threads(threads)
    import torchio as tio

    def run() -> Any:
        img = tio.ScalarImage(inp["mhd"])
        img.load()
        return img.data

    return Runner(run, lambda out: {"out": xyz_to_zyx(out)})


LOAD_MHD = Case(
    name="load_mhd",
    title="Load a .mhd/.raw scan (page cache)",
    inputs=_mhd_inputs,
    contenders=[
        Contender("ctflow", "read_metaimage", 1, _ctflow_mhd),
        Contender("numpy", "fromfile (raw bytes, shape known)", 1, _numpy_fromfile),
        Contender("SimpleITK", "ReadImage + GetArrayViewFromImage", 2, _sitk_mhd),
        Contender("TorchIO", "ScalarImage.load", 2, _tio_mhd),
    ],
    check=exact(),
    bytes_moved=_nbytes2,
    reference="ctflow|read_metaimage|1",
    note="Bandwidth bound: the voxel bytes read from the page cache and written into the array.",
)


# -- load a DICOM series ------------------------------------------------------------------------
def _dicom_inputs(data: Any) -> dict[str, Any]:
    return {"images": data.scan()["images"], "folder": data.dicom_dir()}


def _dicom_j2k_inputs(data: Any) -> dict[str, Any]:
    return {"images": data.scan()["images"], "folder": data.dicom_j2k_dir()}


def _ctflow_dicom(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.io.dicom import read_dicom_series

    return Runner(lambda: read_dicom_series(inp["folder"]).images, lambda out: {"out": out})


def _sitk_dicom(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)

    def run() -> Any:
        reader = sitk.ImageSeriesReader()
        names = reader.GetGDCMSeriesFileNames(str(inp["folder"]))
        reader.SetFileNames(names)
        reader.SetOutputPixelType(sitk.sitkInt16)
        img = reader.Execute()
        return img, sitk.GetArrayViewFromImage(img)

    return Runner(run, lambda out: {"out": np.array(out[1])})


def _pydicom_naive(inp: dict[str, Any], threads: int) -> Runner:
    import pydicom

    def run() -> np.ndarray:
        slices = [pydicom.dcmread(p) for p in sorted(Path(inp["folder"]).iterdir())]
        slices.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
        vol = np.empty((len(slices), slices[0].Rows, slices[0].Columns), np.int16)
        for z, ds in enumerate(slices):
            hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
            vol[z] = hu
        return vol

    return Runner(run, lambda out: {"out": out})


def _monai_dicom(inp: dict[str, Any], threads: int) -> Runner:
    torch_threads(threads)
    from monai.transforms import LoadImage

    load = LoadImage(reader="PydicomReader", image_only=True)

    def finish(out: Any) -> dict[str, np.ndarray]:
        # PydicomReader (swap_ij=True) returns (x, y, z) like the other MONAI readers
        return {"out": xyz_to_zyx(out).astype(np.int16)}

    return Runner(lambda: load(str(inp["folder"])), finish)


def _tio_dicom(inp: dict[str, Any], threads: int) -> Runner:
    sitk_threads(threads)
    torch_threads(threads)
    import torchio as tio

    def run() -> Any:
        img = tio.ScalarImage(inp["folder"])
        img.load()
        return img.data

    return Runner(run, lambda out: {"out": xyz_to_zyx(out).astype(np.int16)})


LOAD_DICOM = Case(
    name="load_dicom",
    title="Load a DICOM series (one uncompressed file per slice, page cache)",
    inputs=_dicom_inputs,
    contenders=[
        Contender("ctflow", "read_dicom_series", 1, _ctflow_dicom),
        Contender("ctflow", "read_dicom_series", 2, _ctflow_dicom),
        Contender("pydicom", "dcmread + pixel_array per slice (naive)", 1, _pydicom_naive),
        Contender("SimpleITK", "ImageSeriesReader (GDCM, int16)", 2, _sitk_dicom),
        Contender("MONAI", "LoadImage(PydicomReader)", 2, _monai_dicom),
        Contender("TorchIO", "ScalarImage(folder).load", 2, _tio_dicom),
    ],
    check=exact(),
    bytes_moved=_nbytes2,
    reference="ctflow|read_dicom_series|2",
    parts=("scan", "dicom"),
    note=(
        "ctflow reads the two dozen header values it needs straight from the bytes (pydicom "
        "only for unusual files) and the pixels on the batch's threads."
    ),
)

LOAD_DICOM_J2K = Case(
    name="load_dicom_j2k",
    title="Load a DICOM series (JPEG 2000 lossless, one file per slice, page cache)",
    inputs=_dicom_j2k_inputs,
    contenders=[
        Contender("ctflow", "read_dicom_series", 1, _ctflow_dicom),
        Contender("ctflow", "read_dicom_series", 2, _ctflow_dicom),
        Contender("pydicom", "dcmread + pixel_array per slice (naive)", 1, _pydicom_naive),
        Contender("SimpleITK", "ImageSeriesReader (GDCM, int16)", 2, _sitk_dicom),
    ],
    check=exact(),
    reference="ctflow|read_dicom_series|2",
    parts=("scan", "dicom_j2k"),
    in_default=False,
    note=(
        "Bound by the JPEG 2000 decoder: ctflow and pydicom decode with pylibjpeg-openjpeg, "
        "which holds the GIL (2 threads cannot help); GDCM has its own OpenJPEG build."
    ),
)


# -- dump and load back -----------------------------------------------------------------------
def _dump_inputs(data: Any) -> dict[str, Any]:
    s = data.scan()
    return {"images": s["images"], "geometry": s["geometry"], "scratch": tempfile.mkdtemp()}


def _files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in _files(path))


def _evict(path: Path) -> None:
    for p in _files(path):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class _Format:
    """How one tool writes and reads a whole int16 scan."""

    def __init__(self, name: str) -> None:
        self.name = name

    def path(self, scratch: str) -> Path:
        ext = {"ctflow": "", "npy": ".npy", "torch": ".pt", "mha": ".mha"}[self.name]
        return Path(scratch) / f"scan_{self.name}{ext}"

    def write(self, arr: np.ndarray, geometry: Any, path: Path) -> None:
        if self.name == "ctflow":
            from ctflow.io.store import write_item

            write_item(path.parent, path.name, {"images": arr}, geometry)
        elif self.name == "npy":
            np.save(path, arr)
        elif self.name == "torch":
            import torch

            torch.save(torch.from_numpy(arr), path)
        else:
            import SimpleITK as sitk

            from benchmarks.peers import sitk_image

            sitk.WriteImage(sitk_image(arr, geometry), str(path), False)

    def read(self, path: Path) -> np.ndarray:
        if self.name == "ctflow":
            from ctflow.io.store import read_item

            return read_item(path).components["images"]
        if self.name == "npy":
            return np.load(path)
        if self.name == "torch":
            import torch

            return torch.load(path).numpy()
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


_FORMATS = {
    "ctflow": ("ctflow", "store.write_item / read_item (blosc2 LZ4 + shuffle, whole-plane chunks)"),
    "numpy": ("npy", "np.save / np.load (.npy)"),
    "torch": ("torch", "torch.save / torch.load (MONAI PersistentDataset's format)"),
    "SimpleITK": ("mha", "WriteImage / ReadImage (.mha, uncompressed)"),
}


def _threads_for(tool: str, threads: int) -> None:
    if tool == "torch":
        torch_threads(threads)
    if tool == "SimpleITK":
        sitk_threads(threads)


def _dump_builder(tool: str) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        _threads_for(tool, threads)
        fmt = _Format(_FORMATS[tool][0])
        path = fmt.path(inp["scratch"])
        runner = Runner(lambda: fmt.write(inp["images"], inp["geometry"], path))

        def finish(_: Any) -> dict[str, np.ndarray]:
            runner.info["MB_on_disk"] = round(_size(path) / 1e6, 1)
            runner.info["ratio"] = round(inp["images"].nbytes / _size(path), 2)
            return {"out": fmt.read(path)}

        runner.before = lambda: _remove(path)
        runner.finish = finish
        return runner

    return build


def _load_builder(tool: str, cold: bool) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        _threads_for(tool, threads)
        fmt = _Format(_FORMATS[tool][0])
        path = fmt.path(inp["scratch"])
        _remove(path)
        fmt.write(inp["images"], inp["geometry"], path)
        runner = Runner(lambda: fmt.read(path), lambda out: {"out": out})
        runner.info["MB_on_disk"] = round(_size(path) / 1e6, 1)
        if cold:
            runner.before = lambda: _evict(path)
        return runner

    return build


def _io_contenders(kind: str) -> list[Contender]:
    out = []
    for tool, (_, how) in _FORMATS.items():
        if kind == "warm" and tool in ("torch", "SimpleITK"):
            continue  # measured cold and for dumping; warm they only re-read the page cache
        build = _dump_builder(tool) if kind == "dump" else _load_builder(tool, kind == "cold")
        out.append(
            Contender(tool, how, 2 if tool in ("ctflow", "SimpleITK", "torch") else 1, build)
        )
    return out


def _roundtrip_inputs(data: Any) -> dict[str, Any]:
    return _dump_inputs(data)


DUMP = Case(
    name="dump",
    title="Dump a whole int16 scan (to the page cache)",
    inputs=_roundtrip_inputs,
    contenders=_io_contenders("dump"),
    check=exact(),
    bytes_moved=_nbytes2,
    note="Written to the page cache: the disk write-back is not timed. MB on disk in 'info'.",
)

LOAD_DUMP = Case(
    name="load_dump",
    title="Load a dumped scan back (page cache)",
    inputs=_roundtrip_inputs,
    contenders=_io_contenders("warm"),
    check=exact(),
    bytes_moved=_nbytes2,
)

LOAD_DUMP_COLD = Case(
    name="load_dump_cold",
    title="Load a dumped scan back (cold: evicted from the page cache before each run)",
    inputs=_roundtrip_inputs,
    contenders=_io_contenders("cold"),
    check=exact(),
    bytes_moved=None,
    note=(
        "Before each timed call the files are fsync'ed and dropped from the page cache with "
        "posix_fadvise(DONTNEED); the virtual disk's host may still cache them."
    ),
)

CASES = [LOAD_MHD, LOAD_DICOM, LOAD_DICOM_J2K, DUMP, LOAD_DUMP, LOAD_DUMP_COLD]
