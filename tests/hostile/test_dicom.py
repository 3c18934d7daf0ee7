"""Hostile DICOM folders (issue 16, cases 3, 11 and 12).

A damaged slice of the series being read (or a damaged file that may be one) is a
CorruptFileError naming it, never a silently shorter volume nor a "gap"; other files are still
skipped and reported. Special files are listed without being opened, huge or hostile headers
cost seconds and megabytes, and bad folder paths are typed errors naming them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import sys
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.dicom import read_dicom_series, scan_dicom_folder
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.reader import read_scan

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom"),  # pydicom on damaged headers
]

N = 8
VOLUME = (np.arange(N * 10 * 12).reshape(N, 10, 12) % 300 - 150).astype(np.int16)
GEOMETRY = Geometry((2.0, 0.7, 0.8), (-40.0, 10.0, 20.0))
HUGE = 500 * 2**20  # bytes of the huge sparse files (holes: nothing is written)
PIXEL_TAG = b"\xe0\x7f\x10\x00"
POSITION_TAG = b"\x20\x00\x32\x00DS"  # (0020,0032) ImagePositionPatient, explicit VR


def write_series(folder: Path, volume: np.ndarray = VOLUME, **kw: Any) -> list[Path]:
    return write_dicom_series(folder, volume, GEOMETRY, **kw)


#: The native reader, and SimpleITK (GDCM) through read_scan(folder, "sitk"): same safety
DICOM_READERS = ["native", "sitk"]


def read_folder(reader: str, folder: Path, **kw: Any) -> Any:
    if reader == "native":
        return read_dicom_series(folder, **kw)
    pytest.importorskip("SimpleITK")
    return read_scan(folder, "sitk")


def skipped(result: Any) -> dict[str, str]:
    entries = result.info["skipped"] if hasattr(result, "info") else result.skipped
    return {Path(d["file"]).name: d["reason"] for d in entries}


def meta_end(data: bytes) -> int:
    """Offset of the first byte after the file meta group ((0002,0000) gives its length)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return 144 + int.from_bytes(data[140:144], "little")


def file_meta(transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Preamble, 'DICM' and a minimal file meta group of a CT image, nothing after it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    data = buf.getvalue()
    return data[: meta_end(data)]


# ------------------------------------------------------------------------------------------
# case 3: a damaged slice is an error naming it, wherever it sits in the series
# ------------------------------------------------------------------------------------------
def _garbage_after(offset: int):
    def damage(data: bytes) -> bytes:
        rng = np.random.default_rng(7)
        start = offset if offset >= 0 else data.rindex(PIXEL_TAG)
        return data[:start] + rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()

    return damage


DAMAGES = {
    "cut to 300 bytes": lambda d: d[:300],
    "cut after the preamble": lambda d: d[:132],
    "cut inside the preamble": lambda d: d[:100],
    "emptied": lambda d: b"",
    "zeroed": lambda d: bytes(len(d)),
    "garbage after the file meta": lambda d: _garbage_after(meta_end(d))(d),
    "header cut inside ImagePositionPatient": lambda d: d[: d.index(POSITION_TAG) + 14],
    "garbage from the PixelData element on": lambda d: _garbage_after(-1)(d),
    "pixel data cut (good header)": lambda d: d[:-50],
    "pixel data length beyond the file (good header)": lambda d: (
        d[: d.rindex(PIXEL_TAG) + 8] + (10**6).to_bytes(4, "little") + d[d.rindex(PIXEL_TAG) + 12 :]
    ),
}
POSITIONS = {"first": 0, "middle": N // 2, "last": N - 1}


@pytest.mark.parametrize("reader", DICOM_READERS)
@pytest.mark.parametrize("position", list(POSITIONS))
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_slice_is_an_error_naming_it(tmp_path, damage, position, reader):
    """Through SimpleITK too: GDCM silently drops a slice it cannot read."""
    files = write_series(tmp_path / "s")
    victim = files[POSITIONS[position]]
    victim.write_bytes(DAMAGES[damage](victim.read_bytes()))
    # damaged is not "missing": never resampled over
    for kw in ({"allow_uneven": False}, {"allow_uneven": True}) if reader == "native" else ({},):
        with pytest.raises(CorruptFileError, match=re.escape(str(victim))):
            read_folder(reader, victim.parent, **kw)
    # the listing accounts for the file (as a series file or as skipped, with its damage)
    listing = scan_dicom_folder(victim.parent)
    listed = [f for s in listing for f in s.files]
    assert sorted(listed + [d["file"] for d in listing.skipped]) == sorted(map(str, files))


def test_a_damaged_compressed_slice_is_an_error_naming_it(tmp_path):
    files = write_series(tmp_path / "s")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f)
    clean = read_dicom_series(files[0].parent)
    np.testing.assert_array_equal(clean.images, VOLUME)
    victim = files[-1]
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(CorruptFileError, match=re.escape(str(victim))):
        read_dicom_series(victim.parent)


def test_a_broken_symbolic_link_named_like_the_slices_is_a_damaged_slice(tmp_path):
    files = write_series(tmp_path / "s")
    folder = files[0].parent
    (folder / "somewhere_else").symlink_to(tmp_path / "nowhere")
    scan = read_dicom_series(folder)  # a broken link with another name: skipped
    assert scan.shape == VOLUME.shape
    assert skipped(scan)["somewhere_else"].startswith("broken symbolic link")
    files[-1].unlink()
    files[-1].symlink_to(tmp_path / "nowhere")  # slice0007.dcm -> a missing target
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(files[-1]))}: broken symbolic"):
        read_dicom_series(folder)


@pytest.mark.parametrize("name", ["slice0003.dcm", "private.key"])
def test_a_file_that_cannot_be_opened_is_judged_by_its_name_and_size(tmp_path, monkeypatch, name):
    """Permissions do not bite as root: the refusal to open is simulated."""
    files = write_series(tmp_path / "s")
    folder = files[0].parent
    locked = folder / name
    if name == "private.key":
        locked.write_bytes(b"k" * 10)
    import ctflow.io.dicom.parse as headers

    real_opener = headers._opener

    def opener(path: str, flags: int) -> int:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_opener(path, flags)

    monkeypatch.setattr(headers, "_opener", opener)
    if name == "private.key":  # another name, another size: skipped and reported
        scan = read_dicom_series(folder)
        assert skipped(scan)[name] == "unreadable file (PermissionError: Permission denied)"
        return
    with pytest.raises(CorruptFileError, match=rf"{name}: unreadable file \(PermissionError"):
        read_dicom_series(folder)


def test_a_zeroed_slice_under_another_name_is_known_by_its_size(tmp_path):
    files = write_series(tmp_path / "s")
    zeroed = files[0].parent / "lost_and_found"  # no digits: only its size tells
    zeroed.write_bytes(bytes(files[0].stat().st_size))
    files[0].unlink()
    with pytest.raises(CorruptFileError, match=r"lost_and_found: not a DICOM file.* its size"):
        read_dicom_series(zeroed.parent)


def _jpeg(size: int) -> bytes:
    return (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(size))[:size]


def _dicomdir() -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.FileSetID = "TEST"
    return ds


def _report(series_uid: str) -> Dataset:
    """A Comprehensive SR object (no image) in the CT series."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "SR"
    return ds


def test_non_dicom_files_are_still_skipped(tmp_path):
    files = write_series(tmp_path / "s")
    folder = files[0].parent
    size = files[0].stat().st_size
    (folder / "README.txt").write_text("slices of a phantom\n")
    (folder / "preview.jpg").write_bytes(_jpeg(size))  # the size of a slice, but a JPEG
    (folder / "slice0099.dcm").write_bytes(_jpeg(size))  # the name of a slice, but a JPEG
    (folder / "notes0001.txt").write_text("x" * size)  # text of a slice's size
    _dicomdir().save_as(folder / "DICOMDIR", enforce_file_format=True)
    series_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    _report(series_uid).save_as(folder / "report.dcm", enforce_file_format=True)
    (folder / "DICOMDIR_copy").write_bytes((folder / "DICOMDIR").read_bytes())
    scan = read_dicom_series(folder)
    np.testing.assert_array_equal(scan.images, VOLUME)
    reasons = skipped(scan)
    assert sorted(reasons) == sorted(
        ["README.txt", "preview.jpg", "slice0099.dcm", "notes0001.txt", "DICOMDIR",
         "DICOMDIR_copy", "report.dcm"]
    )  # fmt: skip
    for name in ("README.txt", "preview.jpg", "slice0099.dcm", "notes0001.txt"):
        assert reasons[name].startswith("not a DICOM file"), name
    assert reasons["DICOMDIR"].startswith("DICOMDIR")
    assert reasons["DICOMDIR_copy"].startswith("DICOMDIR")
    assert reasons["report.dcm"].startswith("no image in this DICOM object")


@pytest.fixture()
def two_series(tmp_path) -> tuple[list[Path], list[Path], str]:
    """Series A (8 slices, slice000k.dcm) and B (3 smaller slices, other_000k.dcm) together."""
    ours = write_series(tmp_path / "s")
    other_volume = np.zeros((3, 6, 7), np.int16)
    other = write_series(tmp_path / "b", other_volume, series_uid="1.2.3.4.5")
    moved = []
    for p in other:
        target = ours[0].parent / p.name.replace("slice", "other_")
        p.rename(target)
        moved.append(target)
    return ours, moved, "1.2.3.4.5"


OTHER_DAMAGES = {
    "pixel data cut": (lambda d: d[:-20], "another series (1.2.3.4.5"),
    "header cut after its SeriesInstanceUID": (
        lambda d: d[: d.index(POSITION_TAG) + 14],
        "damaged DICOM file of series 1.2.3.4.5",
    ),
    "zeroed": (lambda d: bytes(len(d)), "not a DICOM file"),
}


@pytest.mark.parametrize("damage", list(OTHER_DAMAGES))
def test_a_damaged_file_of_another_series_is_skipped(two_series, damage):
    _, other, _ = two_series
    hurt, reason = OTHER_DAMAGES[damage]
    victim = other[1]
    victim.write_bytes(hurt(victim.read_bytes()))
    scan = read_dicom_series(victim.parent)
    np.testing.assert_array_equal(scan.images, VOLUME)
    assert reason in skipped(scan)[victim.name]


def test_a_damaged_file_whose_series_cannot_be_told_is_an_error(two_series):
    """Cut before its SeriesInstanceUID, B's file might be one of A's slices: refused."""
    _, other, other_uid = two_series
    other[1].write_bytes(other[1].read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=r"other_0001\.dcm: damaged.*does not tell"):
        read_dicom_series(other[1].parent)
    # B itself (read by UID) is refused too: the file may be one of B's slices just as well
    with pytest.raises(CorruptFileError, match=r"other_0001\.dcm"):
        read_dicom_series(other[1].parent, series_uid=other_uid)


# ------------------------------------------------------------------------------------------
# case 3: unreadable folders
# ------------------------------------------------------------------------------------------
def _make_fifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)


@pytest.mark.parametrize("reader", [read_dicom_series, scan_dicom_folder])
@pytest.mark.parametrize(
    "kind", ["missing", "broken symlink", "file", "FIFO", "empty", "only junk", "not a path"]
)
def test_an_unreadable_folder_is_a_typed_error(tmp_path, reader, kind):
    target: Any = tmp_path / "target"
    error, match = CorruptFileError, "no such folder"
    if kind == "broken symlink":
        target.symlink_to(tmp_path / "gone")
        match = "broken symbolic link"
    elif kind == "file":
        target.write_bytes(b"x")
        error, match = InvalidParameterError, "must be a directory.*got the file"
    elif kind == "FIFO":
        _make_fifo(target)
        error, match = InvalidParameterError, "must be a directory.*FIFO"
    elif kind == "empty":
        target.mkdir()
        match = "no DICOM files"
    elif kind == "only junk":
        target.mkdir()
        (target / "a.txt").write_text("hello")
        match = "no DICOM files"
    elif kind == "not a path":
        target = 42
        error, match = InvalidParameterError, "must be a path"
    if reader is scan_dicom_folder and kind in ("empty", "only junk"):
        assert list(reader(target)) == []  # a listing of nothing is not an error
        return
    with pytest.raises(error, match=match):
        reader(target)


def test_a_folder_that_cannot_be_listed_is_a_typed_error(tmp_path, monkeypatch):
    files = write_series(tmp_path / "s")
    folder = files[0].parent
    if hasattr(os, "geteuid") and os.geteuid() != 0:  # root ignores permissions
        folder.chmod(0)
        try:
            with pytest.raises(CorruptFileError, match=r"cannot (list|access) the folder"):
                read_dicom_series(folder)
        finally:
            folder.chmod(0o755)

    def refuse(path: Any) -> Any:
        raise PermissionError(13, "Permission denied", str(path))

    import ctflow.io.dicom.folder as folder_module

    monkeypatch.setattr(folder_module.os, "scandir", refuse)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(folder))}: cannot list"):
        read_dicom_series(folder)


# ------------------------------------------------------------------------------------------
# case 12: folder paths that cannot be paths
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reader", [read_dicom_series, scan_dicom_folder])
@pytest.mark.parametrize(
    "path, match",
    [
        ("/data/dicom\x00/series", r"folder '/data/dicom\\x00/series' contains a NUL byte"),
        ("/data/" + "y" * 300, r"folder has a name of 300 bytes \('yyyy"),
        ("/" + "/".join(["d" * 200] * 25), r"folder '/dddd.*is longer than 4096 bytes"),
    ],
    ids=["nul byte", "name over 255 bytes", "path over 4096 bytes"],
)
def test_bad_folder_paths_are_typed_errors_naming_them(reader, path, match):
    with pytest.raises(InvalidParameterError, match=match):
        reader(path)
    with pytest.raises(InvalidParameterError, match=match):
        reader(Path(path) if "\x00" not in path else path)


# ------------------------------------------------------------------------------------------
# case 11: special files are listed without being opened
# ------------------------------------------------------------------------------------------
def _socket(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets on this platform")
    monkeypatch.chdir(path.parent)  # bind a short relative name (AF_UNIX paths are short)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path.name)
    sock.close()  # the socket file stays


def _device(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except (AttributeError, OSError, PermissionError):
        pytest.skip("cannot create a device node here")


SPECIAL = {
    "FIFO": (lambda p, mp: _make_fifo(p), "a FIFO (named pipe)"),
    "FIFO named like a slice": (lambda p, mp: _make_fifo(p), "a FIFO (named pipe)"),
    "socket": (_socket, "a socket"),
    "device node": (_device, "a character device"),
    "symlink to /dev/zero": (lambda p, mp: p.symlink_to("/dev/zero"), "a character device"),
    "symlink to a FIFO": (
        lambda p, mp: (
            _make_fifo(p.parent.parent / "pipe"),
            p.symlink_to(p.parent.parent / "pipe"),
        ),
        "a FIFO (named pipe)",
    ),
}


@pytest.mark.timeout(30)  # opening a FIFO without a writer would block forever
@pytest.mark.parametrize("reader", DICOM_READERS)
@pytest.mark.parametrize("kind", list(SPECIAL))
def test_special_files_are_skipped_without_being_opened(tmp_path, monkeypatch, kind, reader):
    files = write_series(tmp_path / "s")
    folder = files[0].parent
    name = "slice0100.dcm" if "like a slice" in kind else "special"
    make, what = SPECIAL[kind]
    make(folder / name, monkeypatch)
    opened: list[str] = []
    real_open = os.open

    def recording_open(path: Any, *args: Any, **kw: Any) -> int:
        opened.append(os.path.basename(os.fspath(path)))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", recording_open)
    scan = read_folder(reader, folder)  # GDCM alone finds no series beside a FIFO
    np.testing.assert_array_equal(scan.images, VOLUME)
    assert skipped(scan)[name] == f"{what}, not a regular file; not opened"
    assert skipped(scan_dicom_folder(folder))[name] == f"{what}, not a regular file; not opened"
    assert name not in opened and "slice0003.dcm" in opened  # the slices were opened, not it


# ------------------------------------------------------------------------------------------
# case 11: huge or hostile headers cost seconds and megabytes (child under RLIMIT_AS)
# ------------------------------------------------------------------------------------------
def _sparse(path: Path, head: bytes, size: int = HUGE) -> None:
    """Write ``head`` then a hole up to ``size`` bytes (no data is written for the hole)."""
    with open(path, "wb") as fh:
        fh.write(head)
        fh.truncate(size)


def _deflate_bomb(path: Path) -> None:
    """A deflated dataset of ~100 kB that inflates to 100 MiB (one private OB element)."""
    inflated = 100 * 2**20
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = b"\x09\x00\x10\x10OB\x00\x00" + inflated.to_bytes(4, "little")
    stream = packer.compress(body) + packer.compress(bytes(inflated)) + packer.flush()
    path.write_bytes(file_meta(DeflatedExplicitVRLittleEndian) + stream)


HOSTILE = {
    "zeros after the file meta": lambda p: _sparse(p, file_meta()),
    "undefined-length private element then zeros": lambda p: _sparse(
        p, file_meta() + b"\x09\x00\x10\x10OB\x00\x00\xff\xff\xff\xff"
    ),
    "undefined-length sequence then zeros": lambda p: _sparse(
        p, file_meta() + b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff"
    ),
    "huge Specific Character Set (pydicom never defers it)": lambda p: _sparse(
        p,
        file_meta()
        + b"\x08\x00\x05\x00UT\x00\x00"
        + (HUGE - len(file_meta()) - 12).to_bytes(4, "little"),
    ),
    "deflate bomb": _deflate_bomb,
}

_CHILD = """
import json, time
from ctflow.errors import CTFlowError
from ctflow.io.dicom import read_dicom_series, scan_dicom_folder
folder = {folder!r}
t0 = time.perf_counter()
listing = scan_dicom_folder(folder)
t1 = time.perf_counter()
try:
    scan = read_dicom_series(folder)
    outcome = ["read", list(scan.shape), [d["file"] for d in scan.info["skipped"]]]
except CTFlowError as exc:
    outcome = [type(exc).__name__, str(exc)]
t2 = time.perf_counter()
print("@@OUT" + json.dumps({{"scan_s": t1 - t0, "read_s": t2 - t1, "outcome": outcome,
      "skipped": listing.skipped, "n_series": len(listing)}}))
"""


def _run(limited: Any, folder: Path) -> tuple[dict[str, Any], float]:
    res = limited(_CHILD.format(folder=str(folder)), limit_mb=1536, timeout=120)
    assert res.error_type is None, res.error
    line = next(x for x in res.stdout.splitlines() if x.startswith("@@OUT"))
    return json.loads(line[len("@@OUT") :]), res.peak_mb


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sparse files, RLIMIT_AS")
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_huge_hostile_dicm_file_costs_seconds_and_megabytes(tmp_path, limited, kind):
    files = write_series(tmp_path / "s")
    huge = files[0].parent / "huge.bin"
    HOSTILE[kind](huge)
    assert huge.stat().st_blocks * 512 < 2 * 2**20  # the test wrote no big data
    out, peak_mb = _run(limited, huge.parent)
    print(f"{kind}: scan {out['scan_s']:.2f} s, read {out['read_s']:.2f} s, peak {peak_mb:.0f} MB")
    assert out["scan_s"] < 5 and out["read_s"] < 5
    assert peak_mb < 300
    # listed as a damaged DICOM file; the series is refused: its series cannot be told
    (entry,) = [d for d in out["skipped"] if d["file"] == str(huge)]
    assert entry["reason"].startswith("damaged DICOM file: ")
    assert out["outcome"][0] == "CorruptFileError"
    assert out["outcome"][1].startswith(f"{huge}: damaged DICOM file")


def _with_huge_private_element(data: bytes, size: int) -> tuple[bytes, bytes]:
    """Split a slice around a new private OB element of ``size`` bytes before PixelData."""
    at = data.rindex(PIXEL_TAG)
    element = b"\xd1\x7f\x10\x10OB\x00\x00" + size.to_bytes(4, "little")  # (7FD1,1010)
    return data[:at] + element, data[at:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sparse files, RLIMIT_AS")
def test_a_slice_with_a_huge_private_element_reads_fast(tmp_path, limited):
    files = write_series(tmp_path / "s")
    victim = files[N // 2]
    size = HUGE
    head, tail = _with_huge_private_element(victim.read_bytes(), size)
    with open(victim, "wb") as fh:
        fh.write(head)
        fh.seek(size, os.SEEK_CUR)  # a hole for the element's value
        fh.write(tail)
    assert victim.stat().st_size > HUGE and victim.stat().st_blocks * 512 < 2 * 2**20
    out, peak_mb = _run(limited, victim.parent)
    print(f"huge private element: scan {out['scan_s']:.2f} s, read {out['read_s']:.2f} s, "
          f"peak {peak_mb:.0f} MB")  # fmt: skip
    assert out["outcome"] == ["read", list(VOLUME.shape), []]
    assert out["scan_s"] < 5 and out["read_s"] < 5 and peak_mb < 300
    np.testing.assert_array_equal(read_dicom_series(victim.parent).images, VOLUME)
