"""Hostile and damaged files given to the native readers (MetaImage, NIfTI, NRRD) and read_scan.

Each case fails at once with a typed error naming the file (or reads in bounded memory):

* case 2: a compressed volume (``.nii.gz``, ``.zraw``, gzip NRRD) is inflated in pieces straight
  into its array: one volume in memory, not two; a tiny stream claiming gigabytes is refused
  before anything is allocated;
* case 6: a header cannot make ctflow read a file outside its folder (``/etc/passwd``, ``../x``,
  a symlink out) unless ``allow_external_data=True``;
* case 11: a FIFO, socket or device named like a scan (or as a data file) is refused without
  blocking;
* case 12: paths with a NUL byte or over-long names are InvalidParameterError naming them;
* a corpus of damaged headers for each format (truncated, absurd sizes, negative sizes, huge
  HeaderSize, wrong types, data of the wrong length, ...) and seeded random damage: always a
  ctflow error, never ValueError / struct.error / OverflowError / MemoryError.

Memory cases run in a child under ``RLIMIT_AS`` (:func:`conftest.run_limited`).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import shutil
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ctflow as cf
from ctflow.actions.io import Load
from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.io import store
from ctflow.io.metaimage import read_metaimage, write_metaimage
from ctflow.io.nifti import read_nifti, write_nifti
from ctflow.io.nifti.writer import _header_bytes
from ctflow.io.nrrd import read_nrrd
from ctflow.io.reader import detect_format, read_scan
from ctflow.io.sitk import read_with_sitk

POSIX = sys.platform.startswith(("linux", "darwin"))
ARR = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60
RAW = ARR.astype("<i2").tobytes()


# --------------------------------------------------------------------------------------------
# case 2: compressed reads hold one copy of the volume

SHAPE = (1200, 512, 512)  # 600 MiB of int16
VOLUME_MB = SHAPE[0] * SHAPE[1] * SHAPE[2] * 2 / 2**20


def _deflate_constant(fh: Any, wbits: int, slabs: int, slab: bytes, head: bytes = b"") -> int:
    """Write ``head`` + ``slabs`` copies of ``slab`` compressed, one slab at a time."""
    comp = zlib.compressobj(1, zlib.DEFLATED, wbits)
    n = fh.write(comp.compress(head))
    for _ in range(slabs):
        n += fh.write(comp.compress(slab))
    return n + fh.write(comp.flush())


#: stored type -> the constant written, NIfTI datatype, MetaImage and NRRD type names
CONSTANT_TYPES = {
    "int16": (-1000, 4, "MET_SHORT", "short"),
    "uint16": (1000, 512, "MET_USHORT", "ushort"),  # read as int16 (values fit)
    "int32": (-1000, 8, "MET_INT", "int"),  # read as int16, twice the bytes stored
}


def _write_constant(
    folder: Path, kind: str, shape: tuple[int, int, int] = SHAPE, dtype: str = "int16"
) -> Path:
    """A volume of one value (-1000 HU), compressed piece by piece (the test never holds it)."""
    z, y, x = shape
    value, code, met_type, nrrd_type = CONSTANT_TYPES[dtype]
    stored = np.dtype(dtype).newbyteorder("<")
    slab = np.full((y, x), value, stored).tobytes()
    if kind == "nii.gz":
        path = folder / "c.nii.gz"
        head = _header_bytes(shape, code, stored.itemsize, Geometry((1.0, 1.0, 1.0)))
        with open(path, "wb") as fh:
            _deflate_constant(fh, 31, z, slab, head)
        return path
    if kind == "zraw":
        with open(folder / "c.zraw", "wb") as fh:
            n = _deflate_constant(fh, 15, z, slab)
        path = folder / "c.mhd"
        path.write_text(
            f"ObjectType = Image\nNDims = 3\nDimSize = {x} {y} {z}\nElementSpacing = 1 1 1\n"
            f"ElementType = {met_type}\nCompressedData = True\nCompressedDataSize = {n}\n"
            "ElementDataFile = c.zraw\n"
        )
        return path
    path = folder / "c.nrrd"
    with open(path, "wb") as fh:
        fh.write(
            f"NRRD0004\ntype: {nrrd_type}\ndimension: 3\nsizes: {x} {y} {z}\nendian: little\n"
            "encoding: gzip\nspacings: 1 1 1\n\n".encode()
        )
        _deflate_constant(fh, 31, z, slab)
    return path


_PEAK_CHILD = """
import ctflow as cf, ctflow.io.metaimage, ctflow.io.nifti, ctflow.io.nrrd
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmHWM:"))
base = hwm()
scan = cf.read_scan({path!r})
assert scan.shape == {shape!r}, scan.shape
assert scan.images.dtype.name == "int16", scan.images.dtype
assert int(scan.images.min()) == int(scan.images.max()) == {value}
print("@@BASE", base)
"""


@pytest.mark.parametrize("dtype", list(CONSTANT_TYPES))
@pytest.mark.parametrize("kind", ["nii.gz", "zraw", "gzip nrrd"])
def test_a_compressed_volume_is_inflated_into_one_array(tmp_path, limited, kind, dtype):
    # uint16 and int32 become int16 without a second volume: a view, or slab by slab
    path = _write_constant(tmp_path, kind, dtype=dtype)
    assert path.stat().st_size + (tmp_path / "c.zraw").exists() * 2**20 < 8 * 2**20
    # a second copy (600 MiB more) would not fit under the limit: MemoryError in the child
    value = CONSTANT_TYPES[dtype][0]
    code = _PEAK_CHILD.format(path=str(path), shape=SHAPE, value=value)
    res = limited(code, limit_mb=1280, timeout=300)
    assert res.error_type is None, f"{res.error_type}: {res.error}"
    base = float(next(x for x in res.stdout.splitlines() if x.startswith("@@BASE")).split()[1])
    print(f"{kind} {dtype}: peak {res.peak_mb:.0f} MiB, {base:.0f} MiB before the read")
    assert res.peak_mb < VOLUME_MB + 100
    assert res.peak_mb - base < VOLUME_MB + 32  # the reader's own extra: a few MB


def _lying_stream(folder: Path, kind: str) -> Path:
    """A few hundred compressed bytes whose header claims a 4 GiB volume."""
    shape = (512, 2048, 2048)
    if kind == "nii.gz":
        path = folder / "lie.nii.gz"
        head = _header_bytes(shape, 4, 2, Geometry((1.0, 1.0, 1.0)))
        path.write_bytes(gzip.compress(head + RAW))
        return path
    if kind == "zraw":
        (folder / "lie.zraw").write_bytes(zlib.compress(RAW))
        path = folder / "lie.mhd"
        path.write_text(
            "NDims = 3\nDimSize = 2048 2048 512\nElementSpacing = 1 1 1\nElementType = MET_SHORT\n"
            "CompressedData = True\nElementDataFile = lie.zraw\n"
        )
        return path
    path = folder / "lie.nrrd"
    path.write_bytes(
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2048 2048 512\nendian: little\n"
        b"encoding: gzip\nspacings: 1 1 1\n\n" + gzip.compress(RAW)
    )
    return path


@pytest.mark.parametrize("kind", ["nii.gz", "zraw", "gzip nrrd"])
def test_a_tiny_stream_claiming_4_gib_is_refused_before_allocating(tmp_path, limited, kind):
    path = _lying_stream(tmp_path, kind)
    res = limited(f"import ctflow as cf\ncf.read_scan({str(path)!r})\n", limit_mb=1536)
    assert res.error_type == "CorruptFileError", res.error
    assert str(path) in res.error and "cannot inflate to the 4294967296 voxel bytes" in res.error
    assert res.peak_mb < 250


# --------------------------------------------------------------------------------------------
# case 6: data files outside the header's folder


def _mhd_text(data_name: str, extra: str = "", etype: str = "MET_SHORT") -> str:
    return (
        f"NDims = 3\nDimSize = 6 5 4\nElementSpacing = 1 1 1\nElementType = {etype}\n{extra}"
        f"ElementDataFile = {data_name}\n"
    )


def _nhdr_text(data_name: str) -> str:
    return (
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\nencoding: raw\n"
        f"spacings: 1 1 1\ndata file: {data_name}\n"
    )


@pytest.fixture()
def layout(tmp_path: Path) -> Path:
    """``scans/`` (where the headers go), ``outside.raw`` beside it, ``scans/in.raw`` inside."""
    (tmp_path / "scans" / "sub").mkdir(parents=True)
    (tmp_path / "outside.raw").write_bytes(RAW)
    (tmp_path / "scans" / "in.raw").write_bytes(RAW)
    (tmp_path / "scans" / "sub" / "deep.raw").write_bytes(RAW)
    (tmp_path / "scans" / "link.raw").symlink_to(tmp_path / "outside.raw")
    return tmp_path


#: MetaIO (SimpleITK) also takes "Key : Value" and "Key:Value"; the native reader refuses both
COLON_TEXTS: dict[str, Callable[[str], str]] = {
    "mhd colon separator": lambda text: text.replace(" = ", " : "),
    "mhd no-space colon": lambda text: text.replace(" = ", ":"),
}


def _analyze_pair(folder: Path, arr: np.ndarray, image: Path, gz: bool = False) -> Path:
    """A NIfTI-1 ``h.hdr`` whose implicit image file ``h.img`` (``h.img.gz``) links to ``image``."""
    import SimpleITK as sitk

    path = folder / "h.hdr"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))  # h.hdr + h.img
    (folder / "h.img").unlink()
    (folder / ("h.img.gz" if gz else "h.img")).symlink_to(image)
    return path


def _header(layout: Path, kind: str, data_name: str) -> Path:
    if kind.startswith("hdr/img"):  # the image file is implicit: h.img (.gz) -> outside
        gz = kind.endswith(".gz")
        if gz:
            (layout / "outside.img.gz").write_bytes(gzip.compress(RAW))
        image = layout / ("outside.img.gz" if gz else "outside.raw")
        return _analyze_pair(layout / "scans", ARR, image, gz)
    if kind.startswith("mhd"):
        path = layout / "scans" / "h.mhd"
        path.write_text(COLON_TEXTS.get(kind, str)(_mhd_text(data_name)))
    else:
        path = layout / "scans" / "h.nhdr"
        path.write_text(_nhdr_text(data_name))
    return path


OUTSIDE = {
    "parent folder": lambda t: "../outside.raw",
    "absolute path": lambda t: str(t / "outside.raw"),
    "symlink out of the folder": lambda t: "link.raw",
    "sub then up twice": lambda t: "sub/../../outside.raw",
}
READERS: dict[str, Callable[..., Any]] = {
    "read_scan": read_scan,
    "native reader": lambda p, **kw: (read_metaimage if p.suffix == ".mhd" else read_nrrd)(p, **kw),
    "sitk": lambda p, **kw: read_scan(p, "sitk", **kw),
}


OUTSIDE_CASES = [
    *((kind, where, reader) for kind in ("mhd", "nhdr") for where in OUTSIDE for reader in READERS),
    # read by SimpleITK only: the native readers refuse colon lines and .hdr files altogether
    *((kind, where, "sitk") for kind in COLON_TEXTS for where in OUTSIDE),
    ("hdr/img", "symlink out of the folder", "sitk"),
    ("hdr/img.gz", "symlink out of the folder", "sitk"),
]


@pytest.mark.skipif(not POSIX, reason="symlinks")
@pytest.mark.parametrize(
    ("kind", "where", "reader"), OUTSIDE_CASES, ids=["-".join(case) for case in OUTSIDE_CASES]
)
def test_a_data_file_outside_the_folder_needs_allow_external_data(layout, kind, where, reader):
    path = _header(layout, kind, OUTSIDE[where](layout))
    read = READERS[reader]
    with pytest.raises(UnsupportedFormatError) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert "outside the header's folder" in message and "allow_external_data=True" in message
    outside = layout / ("outside.img.gz" if kind == "hdr/img.gz" else "outside.raw")
    assert os.path.realpath(outside) in message  # where it really points
    scan = read(path, allow_external_data=True)
    assert (scan.images == ARR).all()
    if kind in COLON_TEXTS:  # the native reader refuses the header whatever it names
        for allow in (False, True):
            with pytest.raises(CorruptFileError, match="is not 'Key = Value'"):
                read_metaimage(path, allow_external_data=allow)


PASSWD_CASES = [
    *(pytest.param("=", reader, id=reader) for reader in READERS),
    *(pytest.param(kind, "sitk", id=f"{kind}-sitk") for kind in COLON_TEXTS),
    pytest.param("hdr/img symlink", "sitk", id="hdr/img symlink-sitk"),
]


@pytest.mark.skipif(not os.path.isfile("/etc/passwd"), reason="no /etc/passwd")
@pytest.mark.parametrize(("kind", "reader"), PASSWD_CASES)
def test_elementdatafile_etc_passwd_with_headersize_minus_1_is_refused(tmp_path, kind, reader):
    secret = Path("/etc/passwd").read_bytes()
    if kind == "hdr/img symlink":  # h.hdr (4 x 2 x 1 bytes) + h.img -> /etc/passwd
        path = _analyze_pair(tmp_path, np.zeros((1, 2, 4), np.uint8), Path("/etc/passwd"))
        line, expected = "h.img, the NIfTI/Analyze file paired with h.hdr", secret[:8]
    else:
        path = tmp_path / "h.mhd"
        text = _mhd_text("/etc/passwd", "HeaderSize = -1\n", "MET_UCHAR").replace("6 5 4", "4 2 1")
        path.write_text(COLON_TEXTS.get(kind, str)(text))
        line = {"=": "ElementDataFile = ", "mhd colon separator": "ElementDataFile : "}.get(
            kind, "ElementDataFile:"
        ) + "/etc/passwd"
        expected = secret[-8:]  # HeaderSize = -1: the last 8 bytes
    real = os.path.realpath("/etc/passwd")
    with pytest.raises(UnsupportedFormatError, match=re.escape(f"{line!r} names {real}, outside")):
        READERS[reader](path)
    # trusted, it is read as the header says
    scan = READERS[reader](path, allow_external_data=True)
    assert bytes(scan.images.astype(np.uint8).ravel()) == expected


@pytest.mark.skipif(not POSIX, reason="symlinks")
@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(
    "name", ["in.raw", "sub/deep.raw", "./in.raw", "sub/../in.raw", "ABSOLUTE"]
)
@pytest.mark.parametrize("kind", ["mhd", "nhdr"])
def test_data_files_inside_the_folder_are_read(layout, kind, name, reader):
    if name == "ABSOLUTE":
        name = str(layout / "scans" / "in.raw")
    scan = READERS[reader](_header(layout, kind, name))
    assert (scan.images == ARR).all()


@pytest.mark.skipif(not POSIX, reason="symlinks")
@pytest.mark.parametrize("kind", ["mhd", "nhdr"])
def test_a_symlinked_header_may_read_the_data_beside_the_file_it_points_to(tmp_path, kind):
    store, farm = tmp_path / "store", tmp_path / "farm"
    store.mkdir()
    farm.mkdir()
    (store / "in.raw").write_bytes(RAW)
    real = store / f"h.{kind}"
    real.write_text(_mhd_text("in.raw") if kind == "mhd" else _nhdr_text("in.raw"))
    (farm / real.name).symlink_to(real)
    (farm / "in.raw").symlink_to(store / "in.raw")
    assert (read_scan(farm / real.name).images == ARR).all()


_SLICES_MHD = "NDims = 3\nDimSize = 6 5 4\nElementSpacing = 1 1 1\nElementType = MET_SHORT\n"
_SLICES_NHDR = (
    "NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\nencoding: raw\n"
    "spacings: 1 1 1\n"
)
SLICE_HEADERS = {  # name -> (header text, whether a slice file lies outside)
    "mhd pattern": (_SLICES_MHD + "ElementDataFile = s%d.raw 0 3 1\n", False),
    "mhd pattern out": (_SLICES_MHD + "ElementDataFile = ../o%d.raw 0 3 1\n", True),
    "mhd list": (
        _SLICES_MHD + "ElementDataFile = LIST 2D\ns0.raw\ns1.raw\ns2.raw\ns3.raw\n",
        False,
    ),
    "mhd list out": (
        _SLICES_MHD + "ElementDataFile = LIST\ns0.raw\ns1.raw\ns2.raw\n../o3.raw\n",
        True,
    ),
    "nhdr pattern": (_SLICES_NHDR + "data file: s%d.raw 0 3 1 2\n", False),
    "nhdr pattern out": (_SLICES_NHDR + "data file: ../o%d.raw 0 3 1 2\n", True),
    "nhdr list": (_SLICES_NHDR + "data file: LIST\ns0.raw\ns1.raw\ns2.raw\ns3.raw\n", False),
    "nhdr list out": (_SLICES_NHDR + "data file: LIST\ns0.raw\ns1.raw\ns2.raw\n../o3.raw\n", True),
}


@pytest.mark.parametrize("case", list(SLICE_HEADERS))
def test_sitk_checks_every_slice_file_of_a_list_or_pattern(tmp_path, case):
    """The native readers refuse slice lists; ITK (fmt="sitk") reads them: every file named
    must lie in the header's folder, as for one data file."""
    (tmp_path / "scans").mkdir()
    for i in range(4):
        (tmp_path / "scans" / f"s{i}.raw").write_bytes(ARR[i].astype("<i2").tobytes())
        (tmp_path / f"o{i}.raw").write_bytes(ARR[i].astype("<i2").tobytes())
    text, outside = SLICE_HEADERS[case]
    path = tmp_path / "scans" / f"h.{case.split()[0]}"
    path.write_text(text)
    with pytest.raises(UnsupportedFormatError, match=r"(lists|patterns) are not supported"):
        read_scan(path)
    if outside:
        with pytest.raises(UnsupportedFormatError, match=r"o\d\.raw, outside the header's folder"):
            read_scan(path, "sitk")
    else:
        assert (read_scan(path, "sitk").images == ARR).all()
    assert (read_scan(path, "sitk", allow_external_data=True).images == ARR).all()


@pytest.mark.parametrize(
    "value",
    [
        "ElementDataFile = a%s.raw",
        "ElementDataFile = s%d%s.raw 0 3 1",
        "ElementDataFile = s%n.raw 0 3 1",
        "ElementDataFile = s%d.raw 0 3",
        "ElementDataFile = s%d.raw 0 3 0",
        "ElementDataFile = s%ld.raw 0 3 1",
        "data file: s%d%s.raw 0 3 1 2",
        "data file: s%s.raw 0 3 1",
    ],
)
def test_sitk_never_gets_a_file_pattern_that_crashes_it(tmp_path, value):
    """ITK formats these with C's sprintf and an int: %s, %n or a missing step segfault the
    process, so they are refused even with allow_external_data=True."""
    header = _SLICES_MHD if value.startswith("Element") else _SLICES_NHDR
    path = tmp_path / ("h.mhd" if value.startswith("Element") else "h.nhdr")
    path.write_text(header + value + "\n")
    for allow in (False, True):
        with pytest.raises(UnsupportedFormatError, match="not a file pattern SimpleITK can read"):
            read_scan(path, "sitk", allow_external_data=allow)


def test_allow_external_data_is_a_checked_bool_for_the_formats_that_use_it(tmp_path):
    nii = write_nifti(tmp_path / "a.nii", ARR, Geometry((1.0, 1.0, 1.0)))
    mhd = write_metaimage(tmp_path / "a.mhd", ARR, Geometry((1.0, 1.0, 1.0)))
    with pytest.raises(InvalidParameterError, match=r"read_scan: allow_external_data .*'nifti'"):
        read_scan(nii, allow_external_data=True)
    for reader in (read_scan, read_metaimage, read_with_sitk):
        with pytest.raises(InvalidParameterError, match="allow_external_data"):
            reader(mhd, allow_external_data="yes")
    assert read_scan(nii, allow_external_data=False).shape == (4, 5, 6)
    with pytest.raises(InvalidParameterError, match="load: allow_external_data"):
        Load(allow_external_data="yes")


@pytest.mark.skipif(not POSIX, reason="symlinks")
def test_the_load_action_passes_allow_external_data_and_ignores_it_for_nifti(layout):
    mhd = _header(layout, "mhd", "../outside.raw")
    nii = write_nifti(layout / "scans" / "n.nii.gz", ARR, Geometry((1.0, 1.0, 1.0)))
    ds = cf.Dataset.from_paths({"m": mhd, "n": nii})
    with pytest.raises(UnsupportedFormatError, match="allow_external_data=True"):
        Load()(ds.create_batch(["m"]))
    batch = Load(allow_external_data=True)(ds.create_batch(["m", "n"]))
    assert all((batch.get(i, "images") == ARR).all() for i in ("m", "n"))


# --------------------------------------------------------------------------------------------
# case 11: FIFOs, sockets and devices


class Fifos:
    """Makes FIFOs; a watchdog thread opens them for writing now and then, so a reader stuck in
    ``open()`` gets EOF instead of hanging the run, and records that it had to (``unblocked``)."""

    def __init__(self) -> None:
        self.made: list[Path] = []
        self.unblocked: list[Path] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def __call__(self, path: Path) -> Path:
        os.mkfifo(path)
        self.made.append(path)
        return path

    def _watch(self) -> None:
        while not self.stop.wait(0.5):
            for f in self.made:
                try:  # succeeds only while a reader has the FIFO open (or is opening it)
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    continue
                self.unblocked.append(f)


@pytest.fixture()
def fifo() -> Iterator[Fifos]:
    """:class:`Fifos` for one test; the test fails if a reader ever blocked on one."""
    fifos = Fifos()
    yield fifos
    fifos.stop.set()
    fifos.thread.join()
    assert not fifos.unblocked, f"a reader blocked opening {fifos.unblocked}"


def _special(kind: str, path: Path, fifo: Fifos) -> Path:
    if kind == "FIFO":
        return fifo(path)
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        cwd = os.getcwd()
        os.chdir(path.parent)  # AF_UNIX names are short: bind a relative one
        try:
            sock.bind(path.name)
        finally:
            os.chdir(cwd)
            sock.close()
        return path
    path.symlink_to("/dev/null")  # a character device
    return path


SPECIAL_NAMES = [
    "scan.mhd",
    "scan.mha",
    "scan.nii",
    "scan.nii.gz",
    "scan.nrrd",
    "scan.nhdr",
    "scan",
]
SPECIAL_WHAT = {"FIFO": "a FIFO", "socket": "a socket", "device": "a character device"}


@pytest.mark.skipif(not POSIX, reason="FIFOs and sockets")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["read_scan", "sitk"])
@pytest.mark.parametrize("name", SPECIAL_NAMES)
@pytest.mark.parametrize("kind", list(SPECIAL_WHAT))
def test_a_special_file_named_like_a_scan_is_refused_at_once(tmp_path, fifo, kind, name, how):
    path = _special(kind, tmp_path / name, fifo)
    with pytest.raises(CorruptFileError) as err:
        read_scan(path) if how == "read_scan" else read_scan(path, "sitk")
    assert str(err.value).startswith(f"{path}: is {SPECIAL_WHAT[kind]}")
    assert "regular files" in str(err.value)


@pytest.mark.skipif(not POSIX, reason="FIFOs")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("reader", [read_metaimage, read_nifti, read_nrrd, detect_format])
def test_each_reader_refuses_a_fifo(tmp_path, fifo, reader):
    path = fifo(tmp_path / "scan")
    with pytest.raises(CorruptFileError, match=r"is a FIFO \(named pipe\)"):
        reader(path)


@pytest.mark.skipif(not POSIX, reason="FIFOs and sockets")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["read_scan", "sitk"])
@pytest.mark.parametrize("kind", list(SPECIAL_WHAT))
@pytest.mark.parametrize("fmt", ["mhd", "nhdr"])
def test_a_special_file_as_data_file_is_refused_at_once(tmp_path, fifo, fmt, kind, how):
    data = _special(kind, tmp_path / "data.raw", fifo)
    header = tmp_path / f"h.{fmt}"
    header.write_text(_mhd_text("data.raw") if fmt == "mhd" else _nhdr_text("data.raw"))
    fmt_arg = "sitk" if how == "sitk" else None
    if kind == "device":  # the link leads out of the folder: refused as such by default
        with pytest.raises(UnsupportedFormatError, match="allow_external_data=True"):
            read_scan(header, fmt_arg)
    for allow in (False, True) if kind != "device" else (True,):
        with pytest.raises(CorruptFileError) as err:
            read_scan(header, fmt_arg, allow_external_data=allow)
        assert str(err.value).startswith(f"{header}: its data file {data}")
        assert f"is {SPECIAL_WHAT[kind]}" in str(err.value)


# --------------------------------------------------------------------------------------------
# case 12: paths that cannot name a file

BAD_PATHS = {
    "nul byte": lambda t: f"{t}/scan\x00.mhd",
    "nul byte, no suffix": lambda t: f"{t}/scan\x00",
    "nul byte, bytes path": lambda t: os.fsencode(f"{t}/scan\x00.nii"),
    "name over 255 bytes": lambda t: f"{t}/" + "y" * 300 + ".nii",
    "name over 255 bytes, no suffix": lambda t: f"{t}/" + "é" * 200,
    "path over 4096 bytes": lambda t: "/" + "/".join(["d" * 200] * 25) + "/scan.nrrd",
}
PATH_READERS: dict[str, Callable[[Any], Any]] = {
    "read_scan": read_scan,
    "detect_format": detect_format,
    "read_metaimage": read_metaimage,
    "read_nifti": read_nifti,
    "read_nrrd": read_nrrd,
    "read_with_sitk": read_with_sitk,
    # the public store API: item folders and dump roots
    "read_item": store.read_item,
    "read_meta": store.read_meta,
    "read_crop": lambda p: store.read_crop(p, (0, 0, 0), (1, 1, 1)),
    "is_item_dir": store.is_item_dir,
    "write_item": lambda p: store.write_item(p, "x", {"images": ARR}, Geometry((1, 1, 1))),
    "remove_stale_writes": store.remove_stale_writes,
}


@pytest.mark.parametrize("reader", list(PATH_READERS))
@pytest.mark.parametrize("bad", list(BAD_PATHS))
def test_bad_paths_are_typed_errors_naming_them(tmp_path, bad, reader):
    path = BAD_PATHS[bad](tmp_path)
    with pytest.raises(InvalidParameterError) as err:
        PATH_READERS[reader](path)
    message = str(err.value)
    assert message.startswith(f"{reader}: path")
    assert re.search(r"contains a NUL byte|has a name of \d+ bytes|longer than 4096 bytes", message)
    if "nul" in bad:
        assert repr(os.fsdecode(path)) in message  # names it


@pytest.mark.parametrize("reader", list(PATH_READERS))
@pytest.mark.parametrize("bad", [None, 42, "", b""], ids=["None", "int", "empty", "empty bytes"])
def test_not_a_path_is_a_typed_error(reader, bad):
    with pytest.raises(InvalidParameterError, match=f"{reader}: path must"):
        PATH_READERS[reader](bad)


# --------------------------------------------------------------------------------------------
# the corpus of damaged headers: a ctflow error, never a bare Python one

NAN, INF = float("nan"), float("inf")
_NIFTI_FIELDS = {
    "dim": (40, "<8h"),
    "datatype": (70, "<h"),
    "pixdim": (76, "<8f"),
    "vox_offset": (108, "<f"),
    "scl_slope": (112, "<f"),
    "qform_code": (252, "<h"),
    "sform_code": (254, "<h"),
    "srow": (280, "<12f"),
}


def _mhd(folder: Path, data: bytes = RAW, compress: bool = False, **keys: str) -> Path:
    fields = {"NDims": "3", "DimSize": "6 5 4", "ElementSpacing": "1 1 1"}
    fields["ElementType"] = "MET_SHORT"
    if compress:
        fields["CompressedData"] = "True"
        data = zlib.compress(data)
    fields.update(keys)
    name = fields.pop("ElementDataFile", "d.raw")
    text = "".join(f"{k} = {v}\n" for k, v in fields.items() if v is not None)
    (folder / "d.raw").write_bytes(data)
    path = folder / "h.mhd"
    path.write_text(text + f"ElementDataFile = {name}\n")
    return path


def _nrrd(
    folder: Path,
    extra: str = "spacings: 1 1 1\n",
    data: bytes = RAW,
    compress: bool | None = None,
    **lines: str,
) -> Path:
    """A .nrrd; ``lines`` replace the header lines of those fields (``sizes="sizes: 1 2 3"``)."""
    head = (
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\nencoding: raw\n" + extra
    )
    for name, line in lines.items():
        head = re.sub(rf"^{name}:.*$", line, head, flags=re.MULTILINE)
    gz = "encoding: gzip" in head if compress is None else compress
    path = folder / "a.nrrd"
    path.write_bytes(head.encode() + b"\n" + (gzip.compress(data) if gz else data))
    return path


def _nifti(folder: Path, gz: bool = False, body: bytes | None = None, **fields: Any) -> Path:
    head = bytearray(write_nifti(folder / "seed.nii", ARR, Geometry((1.0, 1.0, 1.0))).read_bytes())
    for name, values in fields.items():
        off, fmt = _NIFTI_FIELDS[name]
        head[off : off + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    data = bytes(head) if body is None else bytes(head[:352]) + body
    path = folder / ("a.nii.gz" if gz else "a.nii")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / name).write_bytes(data)
        return folder / name

    return make


_NR = b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nendian: little\n"
_DIM = (3, 6, 5, 4, 1, 1, 1, 1)
BIG = "9" * 25
C, U, S = CorruptFileError, UnsupportedFormatError, InvalidScanError

#: id -> (make the file in a folder, expected error, what the message says)
CORPUS: dict[str, tuple[Callable[[Path], Path], type[Exception], str]] = {
    # MetaImage
    "mhd truncated header": (_file("t.mhd", b"NDims = 3\nDimSize = 6 5"), S, "no ElementDataFile"),
    "mhd empty": (_file("e.mhd", b""), C, "empty file"),
    "mhd binary": (_file("b.mhd", b"NDims = 3\n\x00\x01\x02"), C, "binary bytes"),
    "mhd dims absurd": (lambda f: _mhd(f, DimSize=f"6 5 {BIG}"), S, "refusing volumes larger"),
    "mhd dims over 4 GiB": (lambda f: _mhd(f, DimSize="65536 65536 2"), S, "MAX_VOXELS_BYTES"),
    "mhd dims negative": (lambda f: _mhd(f, DimSize="-6 5 4"), S, "DimSize must be 3 positive"),
    "mhd dims zero": (lambda f: _mhd(f, DimSize="6 0 4"), S, "DimSize must be 3 positive"),
    "mhd dims not integers": (lambda f: _mhd(f, DimSize="6.0 5 4"), S, "DimSize must be 3 int"),
    "mhd dims too few": (lambda f: _mhd(f, DimSize="6 5"), S, "DimSize must be 3 integers"),
    "mhd NDims 2": (lambda f: _mhd(f, NDims="2", DimSize="6 5"), S, "NDims must be 3"),
    "mhd spacing negative": (lambda f: _mhd(f, ElementSpacing="-1 1 1"), S, "positive"),
    "mhd spacing overflows": (lambda f: _mhd(f, ElementSpacing="1e309 1 1"), S, "finite"),
    "mhd transform 1e308": (
        lambda f: _mhd(f, TransformMatrix="1e308 0 0 0 1e308 0 0 0 1e308"),
        S,
        "axis cosines",
    ),
    "mhd transform singular": (
        lambda f: _mhd(f, TransformMatrix="0 0 0 0 0 0 0 0 0"),
        S,
        "orthonormal",
    ),
    "mhd HeaderSize huge": (lambda f: _mhd(f, HeaderSize=BIG), C, "holds 0 bytes"),
    "mhd HeaderSize huge, compressed": (
        lambda f: _mhd(f, compress=True, HeaderSize=BIG),
        C,
        "holds no compressed data",
    ),
    "mhd HeaderSize 2**62, compressed": (
        lambda f: _mhd(f, compress=True, HeaderSize=str(2**62)),
        C,
        "holds no compressed data",
    ),
    "mhd HeaderSize -2": (lambda f: _mhd(f, HeaderSize="-2"), S, "HeaderSize must be -1"),
    "mhd HeaderSize -1, data short": (
        lambda f: _mhd(f, RAW[:-1], HeaderSize="-1"),
        C,
        "truncated file",
    ),
    "mhd CompressedDataSize negative": (
        lambda f: _mhd(f, compress=True, CompressedDataSize="-5"),
        S,
        "CompressedDataSize must be positive",
    ),
    "mhd CompressedDataSize huge": (
        lambda f: _mhd(f, compress=True, CompressedDataSize=BIG),
        C,
        "CompressedDataSize says",
    ),
    "mhd ElementType unknown": (lambda f: _mhd(f, ElementType="MET_STRING"), U, "ElementType"),
    "mhd ElementType empty": (lambda f: _mhd(f, ElementType=""), U, "ElementType"),
    "mhd ElementType too wide for the data": (
        lambda f: _mhd(f, ElementType="MET_DOUBLE"),
        C,
        "needs 960: expected 960 bytes, got 240 \\(truncated file\\)",
    ),
    "mhd channels huge": (lambda f: _mhd(f, ElementNumberOfChannels=BIG), U, "Channels"),
    "mhd data short": (lambda f: _mhd(f, RAW[:-1]), C, "truncated file"),
    "mhd data long": (lambda f: _mhd(f, RAW + b"x"), C, "sizes disagree"),
    "mhd zraw short": (lambda f: _mhd(f, RAW[:-2], compress=True), C, "truncated"),
    "mhd zraw long": (lambda f: _mhd(f, RAW + RAW, compress=True), C, "more voxel bytes"),
    "mhd zraw not zlib": (
        lambda f: _mhd(f, b"plain bytes" * 30, CompressedData="True"),
        C,
        "corrupt",
    ),
    "mhd data name too long": (
        lambda f: _mhd(f, ElementDataFile="q" * 300),
        C,
        "its data file",
    ),
    "mhd data file is a folder": (lambda f: _mhd(f, ElementDataFile="."), C, "is a folder"),
    "mhd data file missing": (lambda f: _mhd(f, ElementDataFile="no.raw"), C, "does not exist"),
    "mhd data is the header": (lambda f: _mhd(f, ElementDataFile="h.mhd"), C, "truncated file"),
    "mhd NaN voxels": (
        lambda f: _mhd(f, np.full(120, np.nan, "<f4").tobytes(), ElementType="MET_FLOAT"),
        S,
        "NaN or Inf",
    ),
    "mhd doubles beyond float32": (
        lambda f: _mhd(f, np.full(120, 1e300, "<f8").tobytes(), ElementType="MET_DOUBLE"),
        S,
        "NaN or Inf",
    ),
    "mhd uint64 beyond float32": (
        lambda f: _mhd(f, np.full(120, 2**63, "<u8").tobytes(), ElementType="MET_ULONG_LONG"),
        S,
        "fit neither int16",
    ),
    "mhd flag not a bool": (lambda f: _mhd(f, BinaryDataByteOrderMSB="maybe"), S, "True or False"),
    # NIfTI
    "nii empty": (_file("e.nii", b""), C, "not a NIfTI file"),
    "nii truncated header": (lambda f: _file("t.nii", _nifti(f).read_bytes()[:200])(f), C, "trunc"),
    "nii not NIfTI": (_file("x.nii", b"\x00" * 400), C, "sizeof_hdr must be 348 or 540"),
    "nii gz not gzip inside": (_file("x.nii.gz", b"\x1f\x8b" + b"\x00" * 50), C, "corrupt"),
    "nii gz empty stream": (_file("e.nii.gz", gzip.compress(b"")), C, "not a NIfTI file"),
    "nii dims absurd": (lambda f: _nifti(f, dim=(3, 32767, 32767, 32767, 1, 1, 1, 1)), S, "MAX_"),
    "nii dims negative": (lambda f: _nifti(f, dim=(3, -6, 5, 4, 1, 1, 1, 1)), S, "positive"),
    "nii dim[0] 0": (lambda f: _nifti(f, dim=(0, 6, 5, 4, 1, 1, 1, 1)), C, "dim\\[0\\]"),
    "nii dim[0] 8": (lambda f: _nifti(f, dim=(8, 6, 5, 4, 1, 1, 1, 1)), C, "dim\\[0\\]"),
    "nii 4-D with 0 frames": (lambda f: _nifti(f, dim=(4, 6, 5, 4, 0, 1, 1, 1)), S, "positive"),
    "nii time series": (lambda f: _nifti(f, dim=(4, 6, 5, 2, 2, 1, 1, 1)), U, "3-D"),
    "nii datatype unknown": (lambda f: _nifti(f, datatype=(9999,)), U, "datatype 9999"),
    "nii datatype 0": (lambda f: _nifti(f, datatype=(0,)), U, "datatype 0"),
    "nii datatype complex": (lambda f: _nifti(f, datatype=(32,)), U, "complex64"),
    "nii datatype too wide for the data": (lambda f: _nifti(f, datatype=(64,)), C, "truncated"),
    "nii pixdim NaN": (lambda f: _nifti(f, pixdim=(1, NAN, 1, 1, 1, 1, 1, 1)), S, "pixdim"),
    "nii pixdim negative": (lambda f: _nifti(f, pixdim=(1, -1, 1, 1, 1, 1, 1, 1)), S, "pixdim"),
    "nii vox_offset NaN": (lambda f: _nifti(f, vox_offset=(NAN,)), C, "vox_offset"),
    "nii vox_offset inf": (lambda f: _nifti(f, vox_offset=(INF,)), C, "vox_offset"),
    "nii vox_offset 1e38": (lambda f: _nifti(f, vox_offset=(1e38,)), C, "truncated file"),
    "nii gz vox_offset 1e38": (lambda f: _nifti(f, True, vox_offset=(1e38,)), C, "truncated"),
    "nii scl_slope 3e38": (lambda f: _nifti(f, scl_slope=(3.4e38,)), S, "NaN or Inf"),
    "nii sform all zero": (
        lambda f: _nifti(f, sform_code=(1,), qform_code=(0,), srow=(0.0,) * 12),
        S,
        "no usable orientation",
    ),
    "nii data short": (lambda f: _nifti(f, body=RAW[:-1]), C, "truncated file"),
    "nii data long": (lambda f: _nifti(f, body=RAW + b"xx"), C, "sizes disagree"),
    "nii gz data short": (lambda f: _nifti(f, True, body=RAW[:-1]), C, "truncated"),
    "nii gz data long": (lambda f: _nifti(f, True, body=RAW + b"xx"), C, "more voxel bytes"),
    "nii gz truncated stream": (
        lambda f: _file("t.nii.gz", _nifti(f, True).read_bytes()[:-20])(f),
        C,
        "truncated",
    ),
    "nii gz garbage after": (
        lambda f: _file("g.nii.gz", _nifti(f, True).read_bytes() + b"junk")(f),
        C,
        "corrupt",
    ),
    "nii gz bad CRC": (
        lambda f: _file("c.nii.gz", _flip(_nifti(f, True).read_bytes(), -8))(f),
        C,
        "corrupt",
    ),
    "nii gz claims 4 GiB": (
        lambda f: _nifti(f, True, dim=(3, 2048, 2048, 512, 1, 1, 1, 1)),
        C,
        "cannot inflate",
    ),
    # NRRD
    "nrrd magic only": (_file("m.nrrd", b"NRRD0004\n"), S, "no 'type' field"),
    "nrrd truncated header": (_file("t.nrrd", _NR[:30]), C, "not a known 'field: value' line"),
    "nrrd no blank line": (_file("n.nrrd", _NR + b"encoding: raw\nspacings: 1 1 1\n"), C, "empty"),
    "nrrd not NRRD": (_file("x.nrrd", b"NRRD0000\n"), C, "not a NRRD file"),
    "nrrd sizes absurd": (lambda f: _nrrd(f, sizes=f"sizes: 6 5 {BIG}"), S, "MAX_VOXELS"),
    "nrrd sizes negative": (lambda f: _nrrd(f, sizes="sizes: -6 5 4"), S, "positive"),
    "nrrd sizes too few": (lambda f: _nrrd(f, sizes="sizes: 6 5"), S, "must be 3 integers"),
    "nrrd dimension absurd": (lambda f: _nrrd(f, dimension=f"dimension: {BIG}"), S, "1..16"),
    "nrrd type unknown": (lambda f: _nrrd(f, type="type: complex"), U, "element type"),
    "nrrd type block": (lambda f: _nrrd(f, type="type: block"), U, "block"),
    "nrrd type too wide for the data": (lambda f: _nrrd(f, type="type: double"), C, "truncated"),
    "nrrd endian odd": (lambda f: _nrrd(f, endian="endian: middle"), S, "little or big"),
    "nrrd encoding bzip2": (lambda f: _nrrd(f, encoding="encoding: bzip2"), U, "bzip2"),
    "nrrd gzip that is not": (
        lambda f: _nrrd(f, encoding="encoding: gzip", compress=False),
        C,
        "corrupt",
    ),
    "nrrd byte skip huge": (lambda f: _nrrd(f, f"spacings: 1 1 1\nbyte skip: {BIG}\n"), C, "0 b"),
    "nrrd byte skip huge, gzip": (
        lambda f: _nrrd(f, f"spacings: 1 1 1\nbyte skip: {BIG}\n", encoding="encoding: gzip"),
        C,
        "truncated",
    ),
    "nrrd line skip huge": (lambda f: _nrrd(f, f"spacings: 1 1 1\nline skip: {BIG}\n"), C, "ends"),
    "nrrd line skip, no newline": (
        lambda f: _nrrd(f, "spacings: 1 1 1\nline skip: 1\n", data=b"\x01" * 240),
        C,
        "ends inside its 1 skipped lines",
    ),
    "nrrd spacing NaN": (lambda f: _nrrd(f, "spacings: nan 1 1\n"), S, "no voxel size"),
    "nrrd directions NaN": (
        lambda f: _nrrd(f, "space: RAS\nspace directions: (nan,0,0) (0,1,0) (0,0,1)\n"),
        S,
        "finite",
    ),
    "nrrd directions 1e308": (
        lambda f: _nrrd(f, "space: RAS\nspace directions: (1e308,0,0) (0,1e308,0) (0,0,1e308)\n"),
        S,
        "finite vectors",
    ),
    "nrrd directions too few": (
        lambda f: _nrrd(f, "space: RAS\nspace directions: (1,0,0) (0,1,0)\n"),
        S,
        "one \\(x,y,z\\) vector per axis",
    ),
    "nrrd directions unclosed": (
        lambda f: _nrrd(f, "space: RAS\nspace directions: (1,0,0 (0,1,0) (0,0,1)\n"),
        S,
        "vectors or 'none'",
    ),
    "nrrd space dimension absurd": (
        lambda f: _nrrd(f, f"space dimension: {BIG}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"),
        U,
        "world axes",
    ),
    "nrrd kinds count": (lambda f: _nrrd(f, "spacings: 1 1 1\nkinds: domain domain\n"), S, "words"),
    "nrrd data short": (lambda f: _nrrd(f, data=RAW[:-1]), C, "truncated file"),
    "nrrd data long": (lambda f: _nrrd(f, data=RAW + b"x"), C, "sizes disagree"),
    "nrrd gzip trailing garbage": (
        lambda f: _file("g.nrrd", _nrrd(f, encoding="encoding: gzip").read_bytes() + b"junk")(f),
        C,
        "corrupt",
    ),
    "nrrd gzip claims 4 GiB": (
        lambda f: _nrrd(f, encoding="encoding: gzip", sizes="sizes: 2048 2048 512"),
        C,
        "cannot inflate",
    ),
    "nhdr data file missing": (
        _file("d.nhdr", (_NR + b"encoding: raw\nspacings: 1 1 1\ndata file: no.raw\n")),
        C,
        "does not exist",
    ),
    "nhdr data file list": (
        _file("l.nhdr", (_NR + b"encoding: raw\nspacings: 1 1 1\ndata file: LIST\n")),
        U,
        "must name one file",
    ),
}


def _flip(data: bytes, at: int) -> bytes:
    """``data`` with one bit of byte ``at`` flipped."""
    b = bytearray(data)
    b[at] ^= 1
    return bytes(b)


@pytest.mark.filterwarnings("error")  # no stray numpy overflow warnings either
@pytest.mark.parametrize("case", list(CORPUS))
def test_damaged_headers_are_ctflow_errors_naming_the_file(tmp_path, case):
    make, expected, words = CORPUS[case]
    path = make(tmp_path)
    with pytest.raises(CTFlowError) as err:
        read_scan(path)
    assert type(err.value) is expected, f"{type(err.value).__name__}: {err.value}"
    assert re.search(words, str(err.value)), str(err.value)
    assert str(err.value).startswith(f"{path}: ")


def _seeds(folder: Path) -> dict[str, Path]:
    """Small valid files of every kind the native readers take."""
    import SimpleITK as sitk

    g = Geometry((2.0, 0.7, 0.8), (1.0, 2.0, 3.0))
    img = sitk.GetImageFromArray(ARR)
    img.SetSpacing((0.8, 0.7, 2.0))
    sitk.WriteImage(img, str(folder / "r.nrrd"))
    sitk.WriteImage(img, str(folder / "g.nrrd"), useCompression=True)
    sitk.WriteImage(img, str(folder / "d.nhdr"))
    return {
        "mhd": write_metaimage(folder / "raw.mhd", ARR, g),
        "mhd zraw": write_metaimage(folder / "z.mhd", ARR, g, compress=True),
        "mha": write_metaimage(folder / "m.mha", ARR, g),
        "nii": write_nifti(folder / "n.nii", ARR, g),
        "nii.gz": write_nifti(folder / "b.nii.gz", ARR, g),
        "nrrd": folder / "r.nrrd",
        "nrrd gzip": folder / "g.nrrd",
        "nhdr": folder / "d.nhdr",
    }


def _mutate(rng: random.Random, data: bytes, text: bool) -> bytes:
    """One random damage: cut, a flipped byte, an extreme number, a dropped line, data +/-."""
    kind = rng.randrange(5)
    if kind == 0:
        return data[: rng.randrange(len(data))]
    if kind == 1 or not text:
        i = rng.randrange(min(len(data), 360))
        return data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
    head_end = data.find(b"\n\n") + 1 if data.startswith(b"NRRD") else len(data)
    head_end = head_end if head_end > 0 else len(data)
    if kind == 2:
        numbers = list(re.finditer(rb"-?\d+(\.\d+)?(e-?\d+)?", data[:head_end]))
        if numbers:
            m = rng.choice(numbers)
            extreme = rng.choice([b"0", b"-1", BIG.encode(), b"nan", b"1e309", b"", b"2147483648"])
            return data[: m.start()] + extreme + data[m.end() :]
    if kind == 3:
        lines = data[:head_end].split(b"\n")
        del lines[rng.randrange(len(lines))]
        return b"\n".join(lines) + data[head_end:]
    return data + b"\x01" * rng.randrange(1, 40)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize(
    "seed", ["mhd", "mhd zraw", "mha", "nii", "nii.gz", "nrrd", "nrrd gzip", "nhdr"]
)
def test_random_damage_is_a_scan_or_a_ctflow_error(tmp_path, seed):
    original = _seeds(tmp_path)[seed]
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.stem == original.stem}
    gz = seed == "nii.gz"
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    for i in range(150):
        case = tmp_path / f"case{i}"
        case.mkdir()
        for name, data in files.items():
            (case / name).write_bytes(data)
        target = case / original.name
        data = gzip.decompress(files[original.name]) if gz else files[original.name]
        damaged = _mutate(rng, data, text=seed not in ("nii", "nii.gz"))
        target.write_bytes(gzip.compress(damaged) if gz else damaged)
        if len(files) > 1 and rng.random() < 0.3:  # damage the data file instead
            other = next(case / n for n in files if n != original.name)
            other.write_bytes(_mutate(rng, other.read_bytes(), text=False))
        try:
            read_scan(target)
            outcome = "read"
        except CTFlowError as exc:
            assert str(exc).startswith(str(target)), str(exc)
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        shutil.rmtree(case)
    print(seed, json.dumps(outcomes))
    assert sum(n for k, n in outcomes.items() if k != "read") >= 20  # the damage mattered
