"""The DICOM reader's fast path (:mod:`ctflow.io.dicom.quick`) and its rescale kernels.

The reference for the fast header pass is the pydicom header pass of the same reader
(``_read_header``, itself tested against SimpleITK and pydicom in test_dicom.py): on every file
of pydicom's own test corpus, of the real-data folder and of thousands of byte-mutated files,
the fast path either declines (returns None: pydicom reads the file) or gives exactly the
header pydicom gives. The kernels are checked against numpy expressions (stumpy style), and
whole series against the reader with the fast path switched off.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ctflow.errors import CorruptFileError
from ctflow.geometry import Geometry
from ctflow.io import dicom
from ctflow.io.dicom import read_dicom_series
from ctflow.io.dicom.headers import _Header, _read_header
from ctflow.io.dicom.quick import _quick_header
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.kernels.rescale import rescale_float32, rescale_int16

pytestmark = pytest.mark.timeout(300)

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _difference(quick: _Header, slow: _Header) -> str:
    """Name the first field where the two headers differ ("" when they are the same)."""
    if slow.problems:
        return f"pydicom met problems the fast path did not: {slow.problems}"
    for f in dataclasses.fields(_Header):
        if f.name in ("dataset", "problems"):
            continue
        a, b = getattr(quick, f.name), getattr(slow, f.name)
        if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
            equal = a is not None and b is not None and np.array_equal(a, b)
        else:
            equal = a == b
        if not equal:
            return f"{f.name}: fast {a!r}, pydicom {b!r}"
    return ""


def _check_both_ways(path: Path) -> bool:
    """Assert the fast header is None or pydicom's; return whether the fast path took it."""
    size = path.stat().st_size
    quick = _quick_header(path, size)
    if quick is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd values of odd files
        slow = _read_header(path, size)
    assert isinstance(slow, _Header), (path, "the fast path read a file pydicom refuses", slow)
    assert _difference(quick, slow) == "", (path, _difference(quick, slow))
    return True


def test_fast_headers_equal_pydicom_headers_on_pydicom_test_files():
    taken = [p.name for p in _files(PYDICOM_FILES) if _check_both_ways(p)]
    # plain files of every kind go the fast way: explicit / implicit VR, encapsulated pixels
    for name in (
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "JPEG2000.dcm",
        "MR_small_RLE.dcm",
    ):
        assert name in taken, name
    assert len(taken) > 60


def test_fast_headers_equal_pydicom_headers_on_real_files(real_data):
    files = _files(real_data)
    taken = [p for p in files if _check_both_ways(p)]
    series = real_data / "totalsegmentator_examples"
    compressed = _files(series / "example_ct_dicom")
    uncompressed = _files(series / "derived" / "example_ct_dicom_uncompressed")
    assert len(compressed) == len(uncompressed) == 20
    assert set(compressed + uncompressed) <= set(taken)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("MR_small_bigendian.dcm", "big endian"),
        ("image_dfl.dcm", "deflated"),
        ("badVR.dcm", "a malformed value"),
        ("no_meta.dcm", "no DICM prefix"),
        ("rtplan.dcm", "no image"),
    ],
)
def test_unusual_files_are_left_to_pydicom(name, why):
    path = PYDICOM_FILES / name
    assert _quick_header(path, path.stat().st_size) is None, why


def _slice(tmp_path: Path) -> Path:
    vol = np.arange(2 * 6 * 5, dtype=np.int16).reshape(2, 6, 5) - 30
    return write_dicom_series(tmp_path / "s", vol, Geometry((2.0, 0.5, 0.5)))[0]


def _set_value(path: Path, tag: int, vr: bytes, value: bytes) -> None:
    """Rewrite an explicit VR element's value in place, padded with spaces to its length."""
    data = bytearray(path.read_bytes())
    head = (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + vr
    at = data.index(head, 132)
    length = int.from_bytes(data[at + 6 : at + 8], "little")
    assert len(value) <= length
    data[at + 8 : at + 8 + length] = value.ljust(length)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("tag", "vr", "value"),
    [
        (0x0008103E, b"LO", "ctflow \u00e9".encode("latin-1")),  # pydicom decodes the charset
        (0x0008103E, b"LO", b"ct\x00flow"),
        (0x00180050, b"DS", b"nan"),
        (0x00280030, b"DS", b"0.5\\x"),
        (0x00200032, b"DS", b"1\\2"),
        (0x00280030, b"DS", b"1_0\\.5"),
    ],
)
def test_values_the_fast_path_cannot_convert_exactly_go_to_pydicom(tmp_path, tag, vr, value):
    path = _slice(tmp_path)
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = "x" * 16
    ds.SliceThickness = "2.00000"
    ds.ImagePositionPatient = ["0.000", "0.000", "0.000"]
    ds.PixelSpacing = ["0.5000", "0.5000"]
    ds.save_as(path, enforce_file_format=True)
    assert _quick_header(path, path.stat().st_size) is not None
    _set_value(path, tag, vr, value)
    if tag == 0x00280030 and value.startswith(b"1_0"):
        _check_both_ways(path)  # python reads 1_0 as 10: whichever way, the same header
        return
    assert _quick_header(path, path.stat().st_size) is None


def _with_sequences(tmp_path: Path, syntax: str) -> Path:
    """CT_small with nested sequences of defined and undefined length before its pixels."""
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    inner = Dataset()
    inner.CodeValue, inner.CodeMeaning = "113691", "IHE Standard Template"
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.ConceptNameCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, item])
    ds.add_new(0x00091010, "LO", "ctflow-test")  # a private block
    ds.add_new(0x00091011, "SQ", Sequence([item]))
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds["ReferencedImageSequence"].value[0].is_undefined_length_sequence_item = True
    ds.file_meta.TransferSyntaxUID = syntax
    path = tmp_path / f"sequences-{syntax}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_sequences_of_defined_and_undefined_length_are_skipped(tmp_path, syntax):
    path = _with_sequences(tmp_path, syntax)
    assert _check_both_ways(path)
    assert b"\xff\xff\xff\xff" in path.read_bytes()[:4000]  # undefined lengths were written


def test_mutated_files_give_pydicom_headers_or_none(tmp_path):
    """Random byte edits and cuts in the headers of plain files: never a different header."""
    rng = np.random.default_rng(20261205)
    bases = [PYDICOM_FILES / n for n in ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm")]
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        bases.append(_with_sequences(tmp_path, syntax))
    bases.append(_slice(tmp_path))
    target = tmp_path / "mutated.dcm"
    taken = 0
    for i in range(1500):
        base = bases[i % len(bases)]
        data = bytearray(base.read_bytes())
        header = _quick_header(base, len(data))
        assert header is not None
        end = header.pixel_offset or min(len(data), 4000)
        for _ in range(int(rng.integers(1, 4))):
            if len(data) <= 140:
                break
            k = int(rng.integers(128, min(end, len(data))))
            mode = int(rng.integers(3))
            if mode == 0:
                data[k] = int(rng.integers(256))
            elif mode == 1:
                data[k : k + 4] = int(rng.integers(2**32)).to_bytes(4, "little")
            else:
                del data[k:]
        target.write_bytes(bytes(data))
        taken += _check_both_ways(target)
    assert taken > 100  # the mutations left many files plain


def test_a_foreign_vr_of_an_unwanted_element_reads_as_pydicom_reads_it(tmp_path):
    data = bytearray((PYDICOM_FILES / "CT_small.dcm").read_bytes())
    at = data.find(b"\x08\x00\x20\x00DA")  # StudyDate
    for vr in (b"ZZ", b"UN", b"OB"):
        edited = bytearray(data)
        edited[at + 4 : at + 6] = vr
        path = tmp_path / f"{vr.decode()}.dcm"
        path.write_bytes(bytes(edited))
        _check_both_ways(path)


def test_series_read_the_fast_way_equal_the_pydicom_way(tmp_path, monkeypatch, real_data):
    rng = np.random.default_rng(5)
    vol = rng.integers(-1024, 2000, size=(7, 20, 18)).astype(np.int16)
    files = write_dicom_series(tmp_path / "plain", vol, Geometry((1.25, 0.7, 0.6), (-5, 3, 9)))
    (tmp_path / "implicit").mkdir()
    for p in files:
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(tmp_path / "implicit" / p.name, enforce_file_format=True)
    real = real_data / "totalsegmentator_examples" / "example_ct_dicom"
    folders = [tmp_path / "plain", tmp_path / "implicit", real]
    fast = [read_dicom_series(f) for f in folders]
    np.testing.assert_array_equal(fast[0].images, vol)
    np.testing.assert_array_equal(fast[1].images, vol)
    monkeypatch.setattr(dicom.folder, "_quick_header", lambda *args: None)
    for f, a in zip(folders, fast, strict=True):
        b = read_dicom_series(f)
        np.testing.assert_array_equal(a.images, b.images)
        assert a.images.dtype == b.images.dtype
        assert a.geometry == b.geometry
        assert a.info == b.info


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_the_first_damaged_slice_in_slice_order_is_named(tmp_path, monkeypatch, n_threads):
    monkeypatch.setenv("CTFLOW_NUM_THREADS", str(n_threads))
    vol = np.zeros((12, 8, 8), np.int16)
    files = write_dicom_series(tmp_path / "s", vol, Geometry((1.0, 1.0, 1.0)))
    for k in (9, 4, 10):  # cut inside the pixel data: the header still reads
        files[k].write_bytes(files[k].read_bytes()[:-20])
    with pytest.raises(CorruptFileError, match=files[4].name):
        read_dicom_series(tmp_path / "s")


def test_deflated_copy_reads_identically(tmp_path):
    vol = np.arange(4 * 6 * 7, dtype=np.int16).reshape(4, 6, 7) * 3 - 200
    files = write_dicom_series(tmp_path / "s", vol, Geometry((2.0, 1.0, 1.0)))
    (tmp_path / "d").mkdir()
    for p in files:
        shutil.copy(p, tmp_path / "d" / p.name)
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(tmp_path / "d" / p.name, enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "d").images, vol)


# -- the rescale kernels against numpy ---------------------------------------------------------
def _naive(stored, slope, intercept, padding, dtype):
    hu = stored.astype(np.float64) * slope + intercept
    pad = np.zeros(stored.shape, bool)
    if padding is not None:
        pad = (stored >= padding[0]) & (stored <= padding[1])
    hu[pad] = -1000
    return hu.astype(dtype), int(pad.sum())


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32])
@pytest.mark.parametrize("padding", [None, (0, 0), (-2000, 5), (-30000, -29000)])
def test_rescale_kernels_equal_numpy(dtype, padding):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    lo, hi = max(int(info.min), -3000), min(int(info.max), 3000)
    stored = rng.integers(lo, hi, size=5000, endpoint=True).astype(dtype)
    pad = (1, 0) if padding is None else padding
    for slope, intercept in ((1, -1024), (2, 7), (-1, 0)):
        ref, n_ref = _naive(stored, slope, intercept, padding, np.int16)
        out = np.empty(stored.size, np.int16)
        n = rescale_int16(stored, out, slope, intercept, *pad)
        np.testing.assert_array_equal(out, ref)
        assert n == n_ref
    for slope, intercept in ((0.5, -1024.25), (1.0 / 3, 0.1)):
        ref, n_ref = _naive(stored, slope, intercept, padding, np.float32)
        out = np.empty(stored.size, np.float32)
        n = rescale_float32(stored, out, slope, intercept, *pad)
        np.testing.assert_array_equal(out, ref)
        assert n == n_ref


def test_rescale_int16_reports_hu_outside_int16():
    stored = np.array([0, 10, 40000], np.uint16)
    out = np.empty(3, np.int16)
    assert rescale_int16(stored, out, 1, -1024, 1, 0) == -1
    assert rescale_int16(stored, out, 1, -40000, 40000, 40000) == -1  # 0 - 40000 too low
    assert rescale_int16(stored[:2], out[:2], 1, -1024, 1, 0) == 0
    np.testing.assert_array_equal(out[:2], [-1024, -1014])
