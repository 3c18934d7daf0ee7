"""Tests of ctflow.io.reader (format detection, read_scan), ctflow.io.writer and the broken-file
corpus: every bad input the readers must refuse, for every format where it applies, generated
from good files (written by SimpleITK or pydicom) and read through ``read_scan``. Each must give
its typed ctflow error with the offending file named, and never allocate a claimed giant volume.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io import voxel_sources as voxels
from ctflow.io.metaimage import read_metaimage
from ctflow.io.nifti import read_nifti
from ctflow.io.nrrd import read_nrrd
from ctflow.io.reader import FORMATS, detect_format, read_scan
from ctflow.io.scan import Scan
from ctflow.io.store import write_item
from ctflow.io.voxels import INFLATE_IN, INFLATE_OUT, ZlibSource
from ctflow.io.writer import write_scan

pytestmark = pytest.mark.timeout(120)

SHAPE = (6, 9, 11)  # (z, y, x)
SPACING_XYZ = (0.7, 0.85, 2.5)
ORIGIN_XYZ = (-170.125, 31.5, -301.75)
_C, _S = np.cos(0.4), np.sin(0.4)
DIRECTION_XYZ = np.array([[_C, -_S, 0.0], [_S, _C, 0.0], [0.0, 0.0, -1.0]])


def _volume(dtype=np.int16) -> np.ndarray:
    return np.random.default_rng(0).integers(-1024, 2000, size=SHAPE).astype(dtype)


def _sitk_write(path: Path, arr: np.ndarray, *, compress: bool = False) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(ORIGIN_XYZ)
    img.SetDirection(tuple(DIRECTION_XYZ.ravel()))
    sitk.WriteImage(img, str(path), useCompression=compress)
    return path


def assert_world_equal(scan: Scan, path: Path, atol: float = 1e-6) -> None:
    ref = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(
        scan.images.astype(np.float64), sitk.GetArrayFromImage(ref).astype(np.float64)
    )
    idx = np.random.default_rng(1).uniform(0, 1, (100, 3)) * (np.array(scan.shape) - 1)
    ref_world = np.array(
        [ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]]) for p in idx]
    )[:, ::-1]
    np.testing.assert_allclose(scan.geometry.voxel_to_world(idx), ref_world, atol=atol)


# ------------------------------------------------------------------------------------------
# DICOM writing (pydicom)
# ------------------------------------------------------------------------------------------
def _dicom_slice(pixels: np.ndarray, z: float, *, uid: str = "1.2.3.4", **fields) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = uid
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = ["-100", "-120.5", f"{z:g}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.7", "0.8"]
    ds.SliceThickness = 2
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.PixelData = pixels.astype("<i2").tobytes()
    for key, value in fields.items():
        setattr(ds, key, value)
    return ds


def _dicom_series(folder: Path, n: int = 5, shape=(8, 9)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stored = np.random.default_rng(2).integers(0, 3000, size=(n, *shape))
    files = []
    for k in range(n):
        p = folder / f"slice{k:02d}"
        _dicom_slice(stored[k], 2.0 * k).save_as(p, enforce_file_format=True)
        files.append(p)
    return files


def _rewrite(path: Path, **changes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


# ------------------------------------------------------------------------------------------
# format detection and dispatch
# ------------------------------------------------------------------------------------------
def test_detect_format_by_name(tmp_path):
    names = {
        "a.mhd": "mhd",
        "A.MHA": "mhd",
        "b.nii": "nifti",
        "b.nii.gz": "nifti",
        "c.nrrd": "nrrd",
        "c.nhdr": "nrrd",
    }
    for name, kind in names.items():
        assert detect_format(tmp_path / name) == kind  # by name, even before the file exists
    (tmp_path / "series").mkdir()
    assert detect_format(tmp_path / "series") == "dicom"
    write_item(tmp_path, "dumped", {"images": np.zeros((2, 2, 2), np.int16)}, Geometry((1, 1, 1)))
    assert detect_format(tmp_path / "dumped") == "ctflow"
    with pytest.raises(CorruptFileError, match=r"absent: no such file or folder"):
        detect_format(tmp_path / "absent")


def test_detect_format_by_content_when_the_name_says_nothing(tmp_path):
    arr = _volume()
    for name, suffix, kind in [
        ("nrrdfile", ".nrrd", "nrrd"),
        ("niifile", ".nii", "nifti"),
        ("niigz", ".nii.gz", "nifti"),
        ("mhafile", ".mha", "mhd"),
    ]:
        p = _sitk_write(tmp_path / f"x{suffix}", arr, compress=suffix == ".nrrd")
        p.rename(tmp_path / name)
        assert detect_format(tmp_path / name) == kind
        scan = read_scan(tmp_path / name)
        np.testing.assert_array_equal(scan.images, arr)
    _dicom_series(tmp_path / "dcm", n=1)
    with pytest.raises(UnsupportedFormatError, match=r"slice00: a single DICOM file.*folder"):
        detect_format(tmp_path / "dcm" / "slice00")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt: not an image file"):
        read_scan(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("name", "reader_name", "direct"),
    [
        ("s.mhd", "ctflow.io.metaimage", read_metaimage),
        ("s.mha", "ctflow.io.metaimage", read_metaimage),
        ("s.nii", "ctflow.io.nifti", read_nifti),
        ("s.nii.gz", "ctflow.io.nifti", read_nifti),
        ("s.nrrd", "ctflow.io.nrrd", read_nrrd),
    ],
)
def test_read_scan_uses_the_native_readers(tmp_path, name, reader_name, direct):
    p = _sitk_write(tmp_path / name, _volume(), compress=name.endswith("nrrd"))
    scan = read_scan(p)
    assert scan.info["reader"] == reader_name
    assert_world_equal(scan, p)
    same = direct(p)
    np.testing.assert_array_equal(same.images, scan.images)
    assert same.geometry == scan.geometry


def test_dicom_folder_uses_the_native_reader_and_reports_skipped(tmp_path):
    files = _dicom_series(tmp_path / "s")
    (tmp_path / "s" / "README.txt").write_text("not DICOM")
    scan = read_scan(tmp_path / "s")
    assert scan.info["reader"] == "ctflow.io.dicom"
    assert scan.shape == (5, 8, 9)
    assert [d["file"] for d in scan.skipped] == [str(tmp_path / "s" / "README.txt")]
    assert "not a DICOM file" in scan.skipped[0]["reason"]
    text = scan.describe()
    assert "skipped:   " in text and "README.txt" in text and "not a DICOM file" in text
    assert f"files:     {len(files)} read" in text
    # series_uid and allow_uneven go through read_scan
    assert read_scan(tmp_path / "s", series_uid="1.2.3.4").shape == scan.shape
    files[2].unlink()
    with pytest.raises(InvalidScanError, match="missing slice"):
        read_scan(tmp_path / "s")
    resampled = read_scan(tmp_path / "s", allow_uneven=True)
    assert resampled.shape[0] == 5 and resampled.info["resampled"]["from_slices"] == 4
    np.testing.assert_array_equal(resampled.images[[0, 1, 3, 4]], scan.images[[0, 1, 3, 4]])
    mean = (scan.images[1].astype(np.float64) + scan.images[3]) / 2
    np.testing.assert_array_equal(resampled.images[2], np.rint(mean))


def test_two_ct_series_in_a_folder_warn_and_report_the_other_files(tmp_path):
    folder = tmp_path / "two"
    _dicom_series(folder, n=5)
    stored = np.zeros((8, 9), np.int16)
    for k in range(3):
        _dicom_slice(stored, 2.0 * k, uid="1.2.3.9").save_as(folder / f"other{k}")
    scan = read_scan(folder)
    assert scan.info["series_uid"] == "1.2.3.4" and scan.shape[0] == 5
    (warning,) = scan.warnings
    assert "2 CT series" in warning and "1.2.3.9 (3 slices)" in warning
    others = {Path(d["file"]).name: d["reason"] for d in scan.skipped}
    assert sorted(others) == ["other0", "other1", "other2"]
    assert all("another series (1.2.3.9" in r for r in others.values())
    chosen = read_scan(folder, series_uid="1.2.3.9")
    assert chosen.shape[0] == 3 and chosen.warnings == []


def test_fmt_forces_a_format_and_is_validated(tmp_path):
    p = _sitk_write(tmp_path / "s.mhd", _volume())
    with pytest.raises(CorruptFileError, match=r"s\.mhd: not a NIfTI file"):
        read_scan(p, fmt="nifti")
    with pytest.raises(CorruptFileError, match=r"s\.mhd: not a NRRD file"):
        read_scan(p, fmt="nrrd")
    with pytest.raises(UnsupportedFormatError, match="unknown fmt 'png'"):
        read_scan(p, fmt="png")
    with pytest.raises(InvalidParameterError, match="DICOM folders only"):
        read_scan(p, series_uid="1.2")
    assert set(FORMATS) == {"mhd", "nifti", "nrrd", "dicom", "ctflow", "sitk"}


def test_ctflow_dump_folder(tmp_path):
    arr = _volume()
    g = Geometry((2.5, 0.85, 0.7), (1.0, 2.0, 3.0))
    write_item(tmp_path, "item", {"images": arr}, g)
    scan = read_scan(tmp_path / "item")
    np.testing.assert_array_equal(scan.images, arr)
    assert scan.geometry == g and scan.info["format"] == "ctflow"


def test_sitk_fallback_reads_what_native_readers_refuse(tmp_path):
    arr = _volume()
    p = _sitk_write(tmp_path / "analyze.hdr", arr)  # NIfTI-1 .hdr/.img pair
    with pytest.raises(UnsupportedFormatError, match=r"analyze\.hdr.*fmt='sitk'"):
        read_scan(p)
    scan = read_scan(p, fmt="sitk")
    assert scan.info["reader"] == "SimpleITK"
    assert_world_equal(scan, p)
    # a DICOM folder through GDCM equals the native reader on a clean series
    _dicom_series(tmp_path / "dcm")
    native, fallback = read_scan(tmp_path / "dcm"), read_scan(tmp_path / "dcm", fmt="sitk")
    np.testing.assert_array_equal(native.images, fallback.images)
    np.testing.assert_allclose(native.geometry.affine, fallback.geometry.affine, atol=1e-9)
    (tmp_path / "junk.vtk").write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptFileError, match=r"junk\.vtk: SimpleITK cannot read it"):
        read_scan(tmp_path / "junk.vtk", fmt="sitk")


# ------------------------------------------------------------------------------------------
# writer
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["w.mhd", "w.mha", "w.nii", "w.nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_write_scan_round_trips_through_sitk(tmp_path, name, dtype):
    arr = _volume().clip(0, 255).astype(dtype)
    g = Geometry(SPACING_XYZ[::-1], ORIGIN_XYZ[::-1], direction_from_sitk(DIRECTION_XYZ.ravel()))
    p = write_scan(tmp_path / name, arr, g)
    ref = sitk.ReadImage(str(p))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ref), arr)
    idx = np.random.default_rng(4).uniform(0, 1, (100, 3)) * (np.array(SHAPE) - 1)
    ref_world = np.array(
        [ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in q[::-1]]) for q in idx]
    )[:, ::-1]
    np.testing.assert_allclose(ref_world, g.voxel_to_world(idx), atol=1e-4)
    back = read_scan(p)
    np.testing.assert_array_equal(back.images, arr)
    if name.endswith((".mhd", ".mha")):
        assert back.geometry == g  # MetaImage keeps 17 significant digits: exact


def test_write_scan_compressed_metaimage_and_bad_arguments(tmp_path):
    g = Geometry((1, 1, 1))
    arr = np.ones((2, 3, 4), np.int16)
    p = write_scan(tmp_path / "c.mhd", arr, g, fmt="mhd", compress=True)
    assert (tmp_path / "c.zraw").is_file() and read_scan(p).info["compressed"] is True
    for args, kwargs, match in [
        (("x.png", arr, g), {}, "must end with"),
        (("x.mhd", arr, g, "nifti"), {}, "does not match"),
        (("x.mhd", arr, g, "tiff"), {}, "fmt must be one of"),
        (("x.nii", arr, g), {"compress": True}, "use the .nii.gz suffix"),
        (("x.nii", arr, "geometry"), {}, "Geometry"),
        (("x.mhd", arr[0], g), {}, "non-empty"),
    ]:
        path, *rest = args
        with pytest.raises(InvalidParameterError, match=match):
            write_scan(tmp_path / path, *rest, **kwargs)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["c.mhd", "c.zraw"]


# ------------------------------------------------------------------------------------------
# the broken-file corpus
# ------------------------------------------------------------------------------------------
def _cut(path: Path, n: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - n])


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_bytes().decode("latin-1")
    edited = re.sub(old, new, text, count=1, flags=re.MULTILINE)
    assert edited != text, (old, path)
    path.write_bytes(edited.encode("latin-1"))


def _nifti_field(path: Path, offset: int, code: str, value) -> None:
    """Overwrite one NIfTI-1 header field (gzip'd or not) in place."""
    raw = path.read_bytes()
    gz = raw[:2] == b"\x1f\x8b"
    data = bytearray(gzip.decompress(raw) if gz else raw)
    packed = np.array(value, code).tobytes()
    data[offset : offset + len(packed)] = packed
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))


def _mhd(tmp: Path, arr=None, compress=False) -> Path:
    return _sitk_write(tmp / "bad.mhd", _volume() if arr is None else arr, compress=compress)


def _mha(tmp: Path, arr=None) -> Path:
    return _sitk_write(tmp / "bad.mha", _volume() if arr is None else arr)


def _nii(tmp: Path, arr=None, gz=False) -> Path:
    return _sitk_write(tmp / ("bad.nii.gz" if gz else "bad.nii"), _volume() if arr is None else arr)


def _nrrd(tmp: Path, arr=None, gz=False) -> Path:
    return _sitk_write(tmp / "bad.nrrd", _volume() if arr is None else arr, compress=gz)


def _nhdr(tmp: Path) -> Path:
    arr = _volume()
    (tmp / "bad.raw").write_bytes(arr.astype("<i2").tobytes())
    z, y, x = arr.shape
    (tmp / "bad.nhdr").write_text(
        f"NRRD0004\ntype: short\ndimension: 3\nsizes: {x} {y} {z}\nendian: little\n"
        "encoding: raw\nspace: LPS\nspace directions: (0.7,0,0) (0,0.85,0) (0,0,2.5)\n"
        "data file: bad.raw\n"
    )
    return tmp / "bad.nhdr"


def _series(tmp: Path) -> Path:
    _dicom_series(tmp / "badseries", n=6)
    return tmp / "badseries"


def _nan(arr: np.ndarray) -> np.ndarray:
    out = arr.astype(np.float32)
    out[1, 2, 3] = np.nan
    out[2, 3, 4] = np.inf
    return out


def _then(make: Callable[[Path], Path], change: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        p = make(tmp)
        change(p)
        return p

    return build


def _in_series(change: Callable[[Path], None]) -> Callable[[Path], Path]:
    return _then(_series, change)


def _slice(folder: Path, k: int) -> Path:
    return folder / f"slice{k:02d}"


def _text_edit(make: Callable[[Path], Path], old: str, new: str) -> Callable[[Path], Path]:
    return _then(make, lambda p: _edit_text(p, old, new))


def _nifti_edit(
    make: Callable[[Path], Path], offset: int, code: str, value
) -> Callable[[Path], Path]:
    return _then(make, lambda p: _nifti_field(p, offset, code, value))


def _junk(name: str, data: bytes) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return build


def _folder(name: str, files: dict[str, bytes]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        (tmp / name).mkdir()
        for file, data in files.items():
            (tmp / name / file).write_bytes(data)
        return tmp / name

    return build


def _dicom_all(**changes) -> Callable[[Path], Path]:
    return _in_series(lambda f: [_rewrite(p, **changes) for p in sorted(f.iterdir())])


def _dicom_one(k: int, **changes) -> Callable[[Path], Path]:
    return _in_series(lambda f: _rewrite(_slice(f, k), **changes))


def _odd_slice(folder: Path) -> None:
    _dicom_slice(np.zeros((8, 10)), 12.0).save_as(_slice(folder, 6), enforce_file_format=True)


_mhdz = lambda t: _mhd(t, compress=True)  # noqa: E731
_niigz = lambda t: _nii(t, gz=True)  # noqa: E731
_nrrdgz = lambda t: _nrrd(t, gz=True)  # noqa: E731
_GIANT = [30000, 30000, 30000]
_GIANT_NRRD = (
    b"NRRD0004\ntype: short\ndimension: 3\nsizes: 40000 40000 40000\nendian: little\n"
    b"encoding: gzip\nspacings: 1 1 1\n\n" + gzip.compress(bytes(64))
)
_IPP = "ImagePositionPatient"
_ZERO_DIR = "space directions: (0,0,0)"
_SP = r"^ElementSpacing = .*$"

# (case id, builder, error type, regex that must match the message, naming the bad file)
CORPUS: list[tuple[str, Callable[[Path], Path], type[CTFlowError], str]] = [
    # -- truncated data --
    ("mhd-truncated-raw", _then(_mhd, lambda p: _cut(p.with_suffix(".raw"), 7)),
     CorruptFileError, r"bad\.mhd.*bad\.raw.*truncated"),
    ("mha-truncated", _then(_mha, lambda p: _cut(p, 7)), CorruptFileError, r"bad\.mha.*truncated"),
    ("zraw-truncated", _then(_mhdz, lambda p: _cut(p.with_suffix(".zraw"), 20)),
     CorruptFileError, r"bad\.mhd.*truncated"),
    ("nii-truncated", _then(_nii, lambda p: _cut(p, 7)), CorruptFileError, r"bad\.nii.*truncated"),
    ("niigz-truncated", _then(_niigz, lambda p: _cut(p, 30)),
     CorruptFileError, r"bad\.nii\.gz.*truncated"),
    ("nrrd-truncated", _then(_nrrd, lambda p: _cut(p, 7)),
     CorruptFileError, r"bad\.nrrd.*truncated"),
    ("nrrdgz-truncated", _then(_nrrdgz, lambda p: _cut(p, 30)),
     CorruptFileError, r"bad\.nrrd.*truncated"),
    ("nhdr-truncated-data", _then(_nhdr, lambda p: _cut(p.with_suffix(".raw"), 7)),
     CorruptFileError, r"bad\.nhdr.*bad\.raw.*truncated"),
    ("dicom-truncated-slice", _in_series(lambda f: _cut(_slice(f, 3), 9)),
     CorruptFileError, r"slice03: PixelData holds \d+ bytes.*truncated"),
    # -- header sizes disagree with the data --
    ("mhd-sizes-disagree", _text_edit(_mhd, r"DimSize = 11 9 6", "DimSize = 11 9 5"),
     CorruptFileError, r"bad\.mhd.*sizes disagree"),
    ("nii-sizes-disagree", _nifti_edit(_nii, 46, "<i2", 5),
     CorruptFileError, r"bad\.nii.*sizes disagree"),
    ("niigz-sizes-disagree", _nifti_edit(_niigz, 46, "<i2", 5),
     CorruptFileError, r"bad\.nii\.gz.*sizes disagree"),
    ("nrrd-sizes-disagree", _text_edit(_nrrd, r"sizes: 11 9 6", "sizes: 11 9 5"),
     CorruptFileError, r"bad\.nrrd.*sizes disagree"),
    ("nrrdgz-sizes-disagree", _text_edit(_nrrdgz, r"sizes: 11 9 6", "sizes: 11 9 5"),
     CorruptFileError, r"bad\.nrrd.*sizes disagree"),
    ("dicom-sizes-disagree", _dicom_all(Rows=7),
     CorruptFileError, r"slice0\d: PixelData holds \d+ bytes but Rows x Columns"),
    # -- unknown element type --
    ("mhd-unknown-type", _text_edit(_mhd, "MET_SHORT", "MET_QUATERNION"),
     UnsupportedFormatError, r"bad\.mhd.*ElementType must be one of"),
    ("nii-unknown-type", _nifti_edit(_nii, 70, "<i2", 999),
     UnsupportedFormatError, r"bad\.nii: datatype 999 \(unknown\)"),
    ("nrrd-unknown-type", _text_edit(_nrrd, "type: short", "type: quaternion"),
     UnsupportedFormatError, r"bad\.nrrd: unknown NRRD element type 'quaternion'"),
    # -- series problems --
    ("dicom-missing-slice", _in_series(lambda f: _slice(f, 2).unlink()),
     InvalidScanError, r"badseries: missing slice.*slice01.*slice03"),
    ("dicom-uneven-spacing", _dicom_one(3, **{_IPP: ["-100", "-120.5", "6.5"]}),
     InvalidScanError, r"badseries: uneven slice spacing.*slice03"),
    ("dicom-duplicate-position", _dicom_one(3, **{_IPP: ["-100", "-120.5", "4"]}),
     InvalidScanError, r"badseries: two slices at the same position.*slice0[23].*slice0[23]"),
    ("dicom-mixed-in-plane-size", _in_series(_odd_slice),
     InvalidScanError, r"badseries: all slices .* same Rows x Columns.*slice06"),
    ("dicom-not-ct", _dicom_all(Modality="MR"),
     InvalidScanError, r"badseries: not a CT series \(Modality MR\)"),
    # -- zero or negative spacing --
    ("mhd-zero-spacing", _text_edit(_mhd, _SP, "ElementSpacing = 0.7 0 2.5"),
     InvalidScanError, r"bad\.mhd: ElementSpacing must be 3 positive"),
    ("mhd-negative-spacing", _text_edit(_mhd, _SP, "ElementSpacing = 0.7 -0.85 2.5"),
     InvalidScanError, r"bad\.mhd: ElementSpacing must be 3 positive"),
    ("nii-zero-spacing", _nifti_edit(_nii, 84, "<f4", 0.0),
     InvalidScanError, r"bad\.nii: pixdim\[1:4\].*positive"),
    ("nii-negative-spacing", _nifti_edit(_nii, 88, "<f4", -2.5),
     InvalidScanError, r"bad\.nii: pixdim\[1:4\].*positive"),
    ("nrrd-zero-spacing", _text_edit(_nrrd, r"^space directions: \(\S+\)", _ZERO_DIR),
     InvalidScanError, r"bad\.nrrd.*zero spacing"),
    ("nrrd-negative-spacing", _text_edit(_nhdr, r"^space: LPS\nspace directions: .*$",
                                         "spacings: 0.7 -0.85 2.5"),
     InvalidScanError, r"bad\.nhdr: NRRD spacing must be positive"),
    ("dicom-zero-spacing", _dicom_all(PixelSpacing=["0", "0.8"]),
     InvalidScanError, r"slice0\d: PixelSpacing must be 2 positive numbers"),
    ("dicom-negative-spacing", _dicom_all(PixelSpacing=["0.7", "-0.8"]),
     InvalidScanError, r"slice0\d: PixelSpacing must be 2 positive numbers"),
    # -- NaN / Inf in float volumes --
    ("mhd-nan", lambda t: _mhd(t, _nan(_volume())), InvalidScanError, r"bad\.mhd.*2 NaN or Inf"),
    ("mha-nan-float64", lambda t: _mha(t, _nan(_volume()).astype(np.float64)),
     InvalidScanError, r"bad\.mha.*2 NaN or Inf"),
    ("nii-nan", lambda t: _nii(t, _nan(_volume())), InvalidScanError, r"bad\.nii.*2 NaN or Inf"),
    ("niigz-inf-after-scaling",
     _nifti_edit(lambda t: _nii(t, np.full(SHAPE, 3e38, np.float32), gz=True), 112, "<f4", 10.0),
     InvalidScanError, r"bad\.nii\.gz.*NaN or Inf"),
    ("nrrd-nan", lambda t: _nrrd(t, _nan(_volume()), gz=True),
     InvalidScanError, r"bad\.nrrd.*2 NaN or Inf"),
    # -- an empty folder; files that are not images at all --
    ("dicom-empty-folder", _folder("empty", {}), CorruptFileError, r"empty: no DICOM files"),
    ("dicom-not-an-image", _folder("junk", {"a.txt": b"x"}),
     CorruptFileError, r"junk: no DICOM files.*a\.txt"),
    ("mhd-not-an-image", _junk("bad.mhd", bytes(range(256)) * 4),
     CorruptFileError, r"bad\.mhd: not a MetaImage"),
    ("mha-not-an-image", _junk("bad.mha", b"hello = world\n"),
     UnsupportedFormatError, r"bad\.mha: not a MetaImage header"),
    ("nii-not-an-image", _junk("bad.nii", b"\x89PNG\r\n" + bytes(500)),
     CorruptFileError, r"bad\.nii: not a NIfTI file"),
    ("niigz-not-an-image", _junk("bad.nii.gz", gzip.compress(b"hello" * 100)),
     CorruptFileError, r"bad\.nii\.gz: not a NIfTI gzip file"),
    ("nii-empty-file", _junk("bad.nii", b""), CorruptFileError, r"bad\.nii: not a NIfTI file"),
    ("nrrd-not-an-image", _junk("bad.nrrd", b"GIF89a" + bytes(100)),
     CorruptFileError, r"bad\.nrrd: not a NRRD file"),
    ("nhdr-missing-data-file", _then(_nhdr, lambda p: p.with_suffix(".raw").unlink()),
     CorruptFileError, r"bad\.nhdr: its data file .*bad\.raw.*does not exist"),
    ("other-not-an-image", _junk("bad.bin", bytes(1000)),
     UnsupportedFormatError, r"bad\.bin: not an image file"),
    ("missing-file", lambda t: t / "bad.nii.gz", CorruptFileError, r"bad\.nii\.gz: no such file"),
    # -- gigantic claimed sizes (refused before allocating) --
    ("mhd-giant", _text_edit(_mhd, r"DimSize = 11 9 6", "DimSize = 40000 40000 40000"),
     InvalidScanError, r"bad\.mhd.*MAX_VOXELS_BYTES"),
    ("nii-giant", _nifti_edit(_nii, 42, "<i2", _GIANT),
     InvalidScanError, r"bad\.nii.*MAX_VOXELS_BYTES"),
    ("niigz-giant", _nifti_edit(_niigz, 42, "<i2", _GIANT),
     InvalidScanError, r"bad\.nii\.gz.*MAX_VOXELS_BYTES"),
    ("nrrd-giant", _junk("bad.nrrd", _GIANT_NRRD),
     InvalidScanError, r"bad\.nrrd.*MAX_VOXELS_BYTES"),
    ("dicom-giant", _dicom_all(Rows=65535, Columns=65535),
     InvalidScanError, r"badseries.*MAX_VOXELS_BYTES"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "error", "match"), [c[1:] for c in CORPUS], ids=[c[0] for c in CORPUS]
)
def test_broken_file_corpus_gives_typed_errors_naming_the_file(
    tmp_path, monkeypatch, build, error, match
):
    path = build(tmp_path)
    real_empty, real_zeros = np.empty, np.zeros

    def guarded(alloc):
        def call(shape, *args, **kwargs):
            if int(np.prod(shape, dtype=np.float64)) > 50_000_000:
                pytest.fail(f"a {shape} array was allocated for a bad file")
            return alloc(shape, *args, **kwargs)

        return call

    monkeypatch.setattr(np, "empty", guarded(real_empty))
    monkeypatch.setattr(np, "zeros", guarded(real_zeros))
    with pytest.raises(error, match=match) as info:
        read_scan(path)
    assert isinstance(info.value, CTFlowError)


def test_corpus_covers_every_bad_input_of_the_issue():
    ids = " ".join(c[0] for c in CORPUS)
    for needed in ["missing-slice", "uneven-spacing", "duplicate-position", "mixed-in-plane-size",
                   "not-ct", "nan", "empty-folder", "missing-file"]:  # fmt: skip
        assert needed in ids, needed
    for fmt in ("mhd", "nii", "nrrd", "dicom"):  # each defect, for every format it applies to
        for defect in ("truncated", "sizes-disagree", "zero-spacing", "negative-spacing",
                       "not-an-image", "giant"):  # fmt: skip
            assert f"{fmt}-{defect}" in ids, (fmt, defect)
    for fmt in ("mhd", "nii", "nrrd"):
        assert f"{fmt}-unknown-type" in ids and f"{fmt}-nan" in ids


def test_corpus_builders_make_good_files_when_left_alone(tmp_path):
    """Without their defect the corpus files read fine (so each case tests its defect)."""
    for make in (_mhd, _mha, _nii, lambda t: _nii(t, gz=True), _nrrd, _nhdr):
        sub = tmp_path / f"good{len(list(tmp_path.iterdir()))}"
        sub.mkdir()
        scan = read_scan(make(sub))
        np.testing.assert_array_equal(scan.images, _volume())
    scan = read_scan(_series(tmp_path))
    assert scan.shape == (6, 8, 9) and scan.skipped == []


# ---------------------------------------------------------------- compressed voxel input
def _zlib_pieces(data: bytes, gzip_members: int = 0) -> bytes:
    """``data`` as one zlib stream, or as ``gzip_members`` concatenated gzip members."""
    if not gzip_members:
        return zlib.compress(data, 6)
    step = -(-len(data) // gzip_members)
    return b"".join(gzip.compress(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize("members", [0, 1, 3], ids=["zlib", "gzip", "3 gzip members"])
@pytest.mark.parametrize("content", ["noise", "runs"])
@pytest.mark.parametrize("piece", [331, 65537, 2**20], ids=["331 B", "64 KiB + 1", "1 MiB"])
def test_the_inflater_fills_any_buffer_sizes_across_its_pieces(content, members, piece):
    rng = np.random.default_rng(7)
    n = 3 * INFLATE_OUT + 12345  # several output pieces, not a multiple of any of them
    if content == "noise":  # incompressible: many input pieces per output piece
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    else:  # long runs: one small input piece inflates to many output pieces
        data = np.repeat(rng.integers(0, 256, 40, dtype=np.uint8), -(-n // 40))[:n].tobytes()
    stream = _zlib_pieces(data, members)
    src = ZlibSource(io.BytesIO(stream), len(stream), Path("x"), Path("x"), multi_member=True)
    out = bytearray(n)
    pos = 0
    while pos < n:
        got = src.fill(memoryview(out)[pos : pos + piece])
        assert got == min(piece, n - pos)
        pos += got
    src.finish()
    assert bytes(out) == data


def test_the_inflater_says_when_the_stream_is_longer_or_truncated():
    data = bytes(range(256)) * 5000
    stream = zlib.compress(data)
    src = ZlibSource(io.BytesIO(stream), len(stream), Path("h.mhd"), Path("d.zraw"))
    assert src.fill(memoryview(bytearray(len(data) - 1))) == len(data) - 1
    with pytest.raises(CorruptFileError, match=r"h\.mhd: d\.zraw inflates to more voxel bytes"):
        src.finish()
    cut = stream[: len(stream) // 2]
    src = ZlibSource(io.BytesIO(cut), len(cut), Path("h.mhd"), Path("d.zraw"))
    assert src.fill(memoryview(bytearray(len(data)))) < len(data)
    with pytest.raises(CorruptFileError, match=r"h\.mhd: compressed voxel data in d\.zraw is t"):
        src.finish()


def test_the_inflater_returns_bounded_pieces(monkeypatch):
    """Each zlib call may return at most INFLATE_OUT bytes, whatever the caller's buffer."""
    sizes: list[int] = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, wbits: int) -> None:
            self.z = real(wbits)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.z, name)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            assert 0 < max_length <= INFLATE_OUT and len(data) <= INFLATE_IN
            out = self.z.decompress(data, max_length)
            sizes.append(len(out))
            return out

    monkeypatch.setattr(voxels.zlib, "decompressobj", Spy)
    data = bytes(8 * INFLATE_OUT)  # zeros: 8 MiB from a few kB
    stream = zlib.compress(data)
    src = ZlibSource(io.BytesIO(stream), len(stream), Path("x"), Path("x"))
    assert src.fill(memoryview(bytearray(len(data)))) == len(data)
    assert max(sizes) == INFLATE_OUT and sum(sizes) == len(data)
