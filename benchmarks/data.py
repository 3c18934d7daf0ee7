"""The benchmark data: LUNA16-sized synthetic chest CTs, generated once and cached on disk.

Everything is made by :mod:`ctflow.synthetic` (anatomy, HU levels, noise, LUNA16-like nodules)
and written with real writers: MetaImage by ctflow, a DICOM series by pydicom (uncompressed,
``RescaleIntercept = -1024`` as most scanners store it), ``.npy`` by numpy. The cache lives in
``$CTFLOW_BENCH_CACHE`` (default ``<tmp>/ctflow-bench-cache``), one folder per profile and data
version; each part is written under a temporary name and marked complete, so an interrupted
generation resumes.

The main scan is 300 x 512 x 512 int16 at (1.25, 0.703125, 0.703125) mm: its 1 mm grid
(375 x 360 x 360) covers exactly the same field of view, so the centred grid of ctflow, the
``align_corners=False`` grid of torch, ``grid_mode=True`` of scipy and the output grid given to
SimpleITK all sample the same points, and outputs can be compared voxel by voxel.

Examples
--------
>>> import tempfile
>>> data = BenchData(PROFILES["tiny"], tempfile.mkdtemp())
>>> data.scan()["images"].shape
(24, 64, 64)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ctflow.geometry import Geometry
from ctflow.io.metaimage import write_metaimage
from ctflow.synthetic import make_phantom

__all__ = ["PROFILES", "BenchData", "DaskSizes", "Profile", "default_cache_dir"]

#: Bump when the generated data changes, so stale caches are not reused.
DATA_VERSION = 3


@dataclass(frozen=True)
class DaskSizes:
    """Data of the ``dask`` case: LUNA16-like phantoms of :func:`ctflow.synthetic.make_dataset`."""

    n_scans: int = 16
    shape: tuple[int, int, int] = (96, 256, 256)
    #: in-plane size after resampling to 1 mm (``unify_spacing(shape=(None, n, n))``)
    in_plane: int = 192
    crop: tuple[int, int, int] = (32, 48, 48)
    #: one-item batches of the pipeline without actions that measure Dask's per-batch cost
    overhead_batches: int = 300


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run."""

    name: str
    scan_shape: tuple[int, int, int]
    scan_spacing: tuple[float, float, float]
    n_nodules: int
    #: (Z, z spacing) of each pipeline scan; in-plane shape and spacing as the main scan.
    pipeline_scans: tuple[tuple[int, float], ...]
    #: in-plane sizes of the size-scaling scans (Z and spacing as the main scan).
    size_scaling: tuple[int, ...]
    resize_shape: tuple[int, int, int]
    crop_shape: tuple[int, int, int]
    n_crops: int
    min_lung_ml: float = 15.0
    #: (Z, Y, X) of the scans of the ragged-batch case: different shapes, stored LPS and RAS.
    mixed_scans: tuple[tuple[int, int, int], ...] = ()
    #: (Z, Y, X) of the four float32 volumes of the ``parallel`` case (a user's numba action)
    parallel_shape: tuple[int, int, int] = (100, 256, 256)
    dask: DaskSizes = DaskSizes()


PROFILES: dict[str, Profile] = {
    "full": Profile(
        name="full",
        scan_shape=(300, 512, 512),
        scan_spacing=(1.25, 0.703125, 0.703125),
        n_nodules=3,
        pipeline_scans=(
            (300, 1.25),
            (240, 1.25),
            (160, 2.5),
            (350, 1.0),
            (280, 1.25),
            (200, 2.0),
            (330, 1.0),
            (260, 1.25),
        ),
        size_scaling=(256, 512, 768),
        resize_shape=(128, 256, 256),
        crop_shape=(32, 64, 64),
        n_crops=16,
        mixed_scans=((300, 512, 512), (240, 640, 640), (260, 448, 512), (180, 768, 768)),
    ),
    "quick": Profile(
        name="quick",
        scan_shape=(64, 128, 128),
        scan_spacing=(1.25, 0.75, 0.75),
        n_nodules=2,
        pipeline_scans=((64, 1.25), (40, 2.0)),
        size_scaling=(64, 128, 192),
        resize_shape=(32, 64, 64),
        crop_shape=(16, 32, 32),
        n_crops=8,
        min_lung_ml=2.0,
        mixed_scans=((64, 128, 128), (48, 160, 160), (56, 112, 128), (40, 192, 192)),
        parallel_shape=(32, 128, 128),
        dask=DaskSizes(4, (48, 128, 128), 96, (32, 48, 48), 100),
    ),
    "tiny": Profile(
        name="tiny",
        scan_shape=(24, 64, 64),
        scan_spacing=(1.25, 0.75, 0.75),
        n_nodules=1,
        pipeline_scans=((24, 1.25), (16, 2.5)),
        size_scaling=(32, 64),
        resize_shape=(12, 32, 32),
        crop_shape=(8, 16, 16),
        n_crops=4,
        min_lung_ml=0.5,
        mixed_scans=((24, 64, 64), (16, 80, 80), (20, 56, 64), (12, 96, 96)),
        parallel_shape=(8, 32, 32),
        dask=DaskSizes(4, (24, 64, 64), 48, (8, 16, 16), 20),
    ),
}


def default_cache_dir() -> Path:
    """``$CTFLOW_BENCH_CACHE`` or ``<tmp>/ctflow-bench-cache``."""
    env = os.environ.get("CTFLOW_BENCH_CACHE")
    return Path(env) if env else Path(tempfile.gettempdir()) / "ctflow-bench-cache"


def _geometry_dict(g: Geometry) -> dict[str, Any]:
    return {
        "spacing": g.spacing.tolist(),
        "origin": g.origin.tolist(),
        "direction": g.direction.tolist(),
    }


def geometry_from(d: dict[str, Any]) -> Geometry:
    """Geometry from the dict written next to a cached array."""
    return Geometry(d["spacing"], d["origin"], d["direction"])


def _ellipsoids_mask(
    shape: tuple[int, int, int],
    index_of: Callable[[int, np.ndarray], np.ndarray],
    spacing: np.ndarray,
    ellipsoids: list[dict[str, Any]],
) -> np.ndarray:
    """uint8 mask of the union of phantom ellipsoids (phantom mm = source index x spacing).

    ``index_of(axis, k)`` maps grid indices ``k`` along ``axis`` to continuous source indices.
    """
    mm = [index_of(a, np.arange(shape[a], dtype=np.float64)) * spacing[a] for a in range(3)]
    out = np.zeros(shape, np.uint8)
    for e in ellipsoids:
        c = np.asarray(e["center_mm"], np.float64)
        s = np.asarray(e["semi_axes_mm"], np.float64)
        q = [((mm[a] - c[a]) / s[a]) ** 2 for a in range(3)]
        inside = q[0][:, None, None] + q[1][None, :, None] + q[2][None, None, :] <= 1.0
        out |= inside.astype(np.uint8)
    return out


class BenchData:
    """Generated benchmark inputs of one profile, cached under ``root``.

    Parameters
    ----------
    profile : Profile
        Sizes.
    root : path, optional
        Cache root (default :func:`default_cache_dir`).
    """

    def __init__(self, profile: Profile, root: str | os.PathLike[str] | None = None) -> None:
        self.profile = profile
        base = Path(root) if root is not None else default_cache_dir()
        self.dir = base / f"{profile.name}-v{DATA_VERSION}"
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _part(self, name: str, build: Callable[[Path], None]) -> Path:
        final = self.dir / name
        if (self.dir / f".{name}.complete").is_file():
            return final
        tmp = self.dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        (self.dir / f".{name}.complete").write_text("ok")
        return final

    def prepare(self, parts: tuple[str, ...] = ("scan", "dicom", "pipeline", "sizes")) -> None:
        """Generate (or find in the cache) the named parts."""
        for part in parts:
            getattr(self, f"{part}_dir")()

    # -- the main scan ------------------------------------------------------------------------
    def scan_dir(self) -> Path:
        """Folder of the main scan: .mhd/.raw, .npy, 1 mm version, masks, meta."""
        return self._part("scan", self._build_scan)

    def _build_scan(self, d: Path) -> None:
        from ctflow.ops.masks import create_mask
        from ctflow.ops.resample import unify_spacing

        p = self.profile
        scan, table = make_phantom(p.scan_shape, p.scan_spacing, n_nodules=p.n_nodules, seed=11)
        g = scan.geometry
        write_metaimage(d / "scan.mhd", scan.images, g)
        np.save(d / "scan.npy", scan.images)
        centers = table[["coordZ", "coordY", "coordX"]].to_numpy(np.float64)
        diameters = table["diameter_mm"].to_numpy(np.float64)
        lungs = scan.info["phantom"]["lungs"]
        sp = g.spacing
        # label volume at the original resolution: the phantom's lung ellipsoids
        np.save(d / "lungs.npy", _ellipsoids_mask(p.scan_shape, lambda a, k: k, sp, lungs))
        # the scan on the 1 mm grid (int16 HU), its geometry, the true lungs and nodule masks
        iso, g1 = unify_spacing(scan.images, g, 1.0, padding="edge", dtype=np.int16, n_threads=2)
        np.save(d / "scan_1mm.npy", iso)
        old_vox = g.world_to_voxel  # identity direction: axes map independently

        def index_of(a: int, k: np.ndarray) -> np.ndarray:
            w = np.zeros((k.size, 3))
            w[:, a] = k
            return old_vox(g1.voxel_to_world(w))[:, a]

        np.save(d / "lungs_1mm.npy", _ellipsoids_mask(iso.shape, index_of, sp, lungs))
        np.save(d / "nodules_1mm.npy", create_mask(iso.shape, g1, centers, diameters))
        meta = {
            "geometry": _geometry_dict(g),
            "geometry_1mm": _geometry_dict(g1),
            "shape": list(p.scan_shape),
            "shape_1mm": list(iso.shape),
            "nodules": np.column_stack([centers, diameters]).tolist(),
            "seriesuid": scan.info["seriesuid"],
        }
        (d / "scan.json").write_text(json.dumps(meta, indent=1))

    def scan(self) -> dict[str, Any]:
        """The main scan: ``images`` (int16), ``geometry``, nodules ``centers``/``diameters``."""
        d = self.scan_dir()
        meta = json.loads((d / "scan.json").read_text())
        nod = np.asarray(meta["nodules"], np.float64).reshape(-1, 4)
        return {
            "images": np.load(d / "scan.npy"),
            "geometry": geometry_from(meta["geometry"]),
            "centers": nod[:, :3].copy(),
            "diameters": nod[:, 3].copy(),
            "mhd": d / "scan.mhd",
            "raw": d / "scan.raw",
            "meta": meta,
        }

    def scan_1mm(self) -> dict[str, Any]:
        """The main scan on its 1 mm grid (int16), true lungs and nodule masks (uint8)."""
        d = self.scan_dir()
        meta = json.loads((d / "scan.json").read_text())
        nod = np.asarray(meta["nodules"], np.float64).reshape(-1, 4)
        return {
            "images": np.load(d / "scan_1mm.npy"),
            "geometry": geometry_from(meta["geometry_1mm"]),
            "lungs_true": np.load(d / "lungs_1mm.npy"),
            "nodule_mask": np.load(d / "nodules_1mm.npy"),
            "centers": nod[:, :3].copy(),
            "diameters": nod[:, 3].copy(),
        }

    def lung_labels(self) -> np.ndarray:
        """The phantom's lungs at the main scan's resolution (uint8 label volume)."""
        return np.load(self.scan_dir() / "lungs.npy")

    # -- DICOM series of the main scan ------------------------------------------------------------
    def dicom_dir(self) -> Path:
        """A folder of single-frame uncompressed CT slices holding the main scan."""
        return self._part("dicom", self._build_dicom)

    def _build_dicom(self, d: Path) -> None:
        scan = self.scan()
        write_dicom_series(d, scan["images"], scan["geometry"], scan["meta"]["seriesuid"])

    def dicom_j2k_dir(self) -> Path:
        """The main scan as JPEG 2000 lossless CT slices (pydicom + pylibjpeg-openjpeg)."""
        return self._part("dicom_j2k", self._build_dicom_j2k)

    def _build_dicom_j2k(self, d: Path) -> None:
        import pydicom
        from pydicom.uid import JPEG2000Lossless

        for path in sorted(self.dicom_dir().iterdir()):
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000Lossless)
            ds.save_as(d / path.name, enforce_file_format=True)

    # -- the 8 pipeline scans ---------------------------------------------------------------------
    def pipeline_dir(self) -> Path:
        """Folder with the pipeline scans (.mhd/.raw) and ``annotations.csv``."""
        return self._part("pipeline", self._build_pipeline)

    def _build_pipeline(self, d: Path) -> None:
        p = self.profile
        _, ny, nx = p.scan_shape
        _write_set(
            d,
            [
                ((z, ny, nx), (dz, p.scan_spacing[1], p.scan_spacing[2]))
                for z, dz in p.pipeline_scans
            ],
            seed=100,
        )

    def pipeline_paths(self) -> tuple[list[Path], Path]:
        """The pipeline scans (sorted) and their annotations table."""
        d = self.pipeline_dir()
        return sorted(d.glob("*.mhd")), d / "annotations.csv"

    # -- scans of different shapes and stored orientations ------------------------------------
    def mixed_dir(self) -> Path:
        """Folder with the ragged-batch scans (.mhd, stored LPS and RAS) and annotations."""
        return self._part("mixed", self._build_mixed)

    def _build_mixed(self, d: Path) -> None:
        from ctflow.synthetic import make_dataset

        shapes = self.profile.mixed_scans
        codes = ["LPS", "RAS"] * (len(shapes) // 2 + 1)
        make_dataset(d, len(shapes), shapes=shapes, orientations=codes[: len(shapes)], seed=300)

    def mixed_paths(self) -> tuple[list[Path], Path]:
        """The ragged-batch scans (sorted) and their annotations table."""
        d = self.mixed_dir()
        return sorted(d.glob("*.mhd")), d / "annotations.csv"

    # -- the Dask engine's data ---------------------------------------------------------------
    def dask_dir(self) -> Path:
        """Folder with the ``dask`` case's phantoms (.mhd/.raw) and ``annotations.csv``."""
        return self._part("dask", self._build_dask)

    def _build_dask(self, d: Path) -> None:
        from ctflow.synthetic import make_dataset

        sizes = self.profile.dask
        make_dataset(d, n_scans=sizes.n_scans, shape=sizes.shape, seed=0)

    def dask_paths(self) -> tuple[list[Path], Path]:
        """The ``dask`` case's scans (sorted) and their annotations table."""
        d = self.dask_dir()
        return sorted(d.glob("*.mhd")), d / "annotations.csv"

    # -- size scaling -------------------------------------------------------------------------
    def sizes_dir(self) -> Path:
        """Scans of the same Z and spacing as the main scan, in-plane sizes of the profile."""
        return self._part("sizes", self._build_sizes)

    def _build_sizes(self, d: Path) -> None:
        p = self.profile
        z = p.scan_shape[0]
        specs = [((z, n, n), p.scan_spacing) for n in p.size_scaling]
        _write_set(d, specs, seed=200, names=[f"size{n}" for n in p.size_scaling])

    def size_paths(self) -> tuple[dict[int, Path], Path]:
        """``{in-plane size: .mhd path}`` and the annotations table."""
        d = self.sizes_dir()
        return {n: d / f"size{n}.mhd" for n in self.profile.size_scaling}, d / "annotations.csv"


def _write_set(
    d: Path,
    specs: list[tuple[tuple[int, int, int], tuple[float, float, float]]],
    seed: int,
    names: list[str] | None = None,
) -> None:
    """Write phantoms (each with 1-3 nodules) and one LUNA16 ``annotations.csv``."""
    tables = []
    for k, (shape, spacing) in enumerate(specs):
        scan, table = make_phantom(shape, spacing, n_nodules=1 + k % 3, seed=seed + k)
        uid = names[k] if names else f"bench{k:02d}"
        table["seriesuid"] = uid
        write_metaimage(d / f"{uid}.mhd", scan.images, scan.geometry)
        tables.append(table)
    pd.concat(tables, ignore_index=True).to_csv(d / "annotations.csv", index=False)


def write_dicom_series(folder: Path, images: np.ndarray, geometry: Geometry, uid: str) -> None:
    """Write an int16 HU volume as one uncompressed CT slice per file (identity direction).

    Stored values are ``HU + 1024`` as unsigned 16 bit with ``RescaleIntercept = -1024``.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    nz, ny, nx = images.shape
    sp = geometry.spacing
    study = generate_uid(entropy_srcs=[uid, "study"])
    series = generate_uid(entropy_srcs=[uid, "series"])
    for z in range(nz):
        meta = FileMetaDataset()
        sop = generate_uid(entropy_srcs=[uid, str(z)])
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.Modality = "CT"
        ds.PatientID = "ctflow-bench"
        ds.InstanceNumber = z + 1
        wz, wy, wx = geometry.voxel_to_world(np.array([[z, 0.0, 0.0]]))[0]
        ds.ImagePositionPatient = [f"{wx:.6f}", f"{wy:.6f}", f"{wz:.6f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [f"{sp[1]:.8g}", f"{sp[2]:.8g}"]
        ds.SliceThickness = f"{sp[0]:.8g}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = (images[z].astype(np.int32) + 1024).astype("<u2").tobytes()
        ds.save_as(folder / f"slice{z:04d}.dcm", enforce_file_format=True)
