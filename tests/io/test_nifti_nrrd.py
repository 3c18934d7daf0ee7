"""Tests of ctflow.io.nifti and ctflow.io.nrrd, the native NIfTI and NRRD readers (and writer).

The reference is SimpleITK reading the same file: voxel values must be equal and the world
position of many voxels (``TransformContinuousIndexToPhysicalPoint``) equal to 1e-6 mm. Files are
written by SimpleITK, by nibabel (to control qform/sform codes, units, scaling, byte order) and
by hand (NRRD headers), all in ``tmp_path``. NIfTI-2, which SimpleITK cannot read, is checked
against the NIfTI-1 file holding the same image.
"""

from __future__ import annotations

import gzip
import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.nifti import read_nifti, write_nifti
from ctflow.io.nrrd import read_nrrd
from ctflow.io.scan import Scan

pytestmark = pytest.mark.timeout(120)

SHAPE = (5, 6, 7)  # (z, y, x)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = _rotation(0.3, -0.2, 0.5)
FLIPPED = OBLIQUE @ np.diag([1.0, -1.0, 1.0])  # left-handed (det -1)


def _volume(dtype=np.int16, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 3000, size=SHAPE).astype(dtype)


def _sitk_image(arr: np.ndarray, direction: np.ndarray, spacing=(0.7, 0.85, 2.5)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((-170.125, 31.5, -301.75))
    img.SetDirection(tuple(direction.ravel()))
    return img


def assert_matches_sitk(
    scan: Scan, path: Path, *, atol: float = 1e-6, spacing_atol: float = 1e-12
) -> sitk.Image:
    """Voxels equal and world positions of many voxels equal to SimpleITK's read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sitk.ReadImage(str(path))
    ref_arr = sitk.GetArrayFromImage(ref)
    assert scan.shape == ref_arr.shape
    np.testing.assert_array_equal(scan.images.astype(np.float64), ref_arr.astype(np.float64))
    np.testing.assert_allclose(
        scan.geometry.spacing, ref.GetSpacing()[::-1], rtol=0, atol=spacing_atol
    )
    rng = np.random.default_rng(3)
    last = np.array(scan.shape, dtype=np.float64) - 1
    idx = np.vstack(
        [
            rng.uniform(-1, 1, size=(150, 3)) * (last + 2),
            np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]) * last,
        ]
    )
    ours = scan.geometry.voxel_to_world(idx)
    want = np.array(
        [ref.TransformContinuousIndexToPhysicalPoint([float(v) for v in p[::-1]]) for p in idx]
    )[:, ::-1]
    np.testing.assert_allclose(ours, want, rtol=0, atol=atol)
    return ref


def _affine(rotation: np.ndarray, spacing, offset) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = rotation * np.asarray(spacing, dtype=np.float64)[None, :]
    a[:3, 3] = offset
    return a


# ==========================================================================================
# NIfTI
# ==========================================================================================
@pytest.mark.parametrize("name", ["a.nii", "b.nii.gz"])
@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, FLIPPED], ids=["eye", "obl", "flip"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.int32, np.float32, np.float64])
def test_nifti_written_by_sitk_reads_like_sitk(tmp_path, name, direction, dtype):
    arr = _volume(dtype) if dtype != np.uint8 else _volume(np.int16).clip(0, 255).astype(dtype)
    sitk.WriteImage(_sitk_image(arr, direction), str(tmp_path / name))
    scan = read_nifti(tmp_path / name)
    assert_matches_sitk(scan, tmp_path / name)
    expected = np.float32 if np.dtype(dtype).kind == "f" else np.int16
    assert scan.images.dtype == expected
    assert scan.info["compressed"] is name.endswith(".gz")
    assert scan.info["transform"].startswith("sform (sform_code 1")


_QA = _affine(_rotation(0.1, 0.2, 0.3), (0.7, 0.8, 2.5), (10.0, 20.0, 30.0))
_SA = _affine(_rotation(0.5, -0.2, 0.1), (0.7, 0.8, 2.5), (-5.0, 7.0, 9.0))
_SA_NEAR = _QA.copy()
_SA_NEAR[0, 3] += 1e-5
_SKEW = _SA.copy()
_SKEW[0, 1] += 0.3


@pytest.mark.parametrize(
    ("qform", "qcode", "sform", "scode", "pixdim", "used"),
    [
        (_QA, 1, _SA, 1, None, "sform"),  # sform_code 1 (scanner) wins
        (_QA, 1, _SA, 2, None, "qform"),  # aligned sform unlike the qform: qform
        (_QA, 1, _SA_NEAR, 2, None, "sform"),  # aligned sform "very similar": sform
        (_QA, 0, _SA, 2, None, "sform"),  # no qform
        (_QA, 1, _SA, 0, None, "qform"),  # no sform
        (_QA, 1, _SKEW, 1, None, "qform"),  # skewed sform is unusable
        (_QA, 0, _SA, 1, (1.0, 1.0, 1.0), "sform"),  # spacing from pixdim even then
        (_QA, 1, _SA, 0, (1.0, 1.0, 1.0), "qform"),
        (_QA, 0, _SA, 0, None, "none"),  # no orientation at all
    ],
)
def test_qform_sform_choice_follows_itk(tmp_path, qform, qcode, sform, scode, pixdim, used):
    img = nib.Nifti1Image(_volume().T, None)
    img.header.set_qform(qform, code=qcode)
    img.header.set_sform(sform, code=scode)
    if pixdim is not None:
        img.header["pixdim"][1:4] = pixdim
    nib.save(img, tmp_path / "q.nii")
    scan = read_nifti(tmp_path / "q.nii")
    assert scan.info["transform"].startswith(used)
    assert_matches_sitk(scan, tmp_path / "q.nii")
    if pixdim is not None and used == "sform":
        assert any("spacing is taken from pixdim" in w for w in scan.info["warnings"])


def test_skewed_sform_without_qform_is_refused_like_itk(tmp_path):
    img = nib.Nifti1Image(_volume().T, None)
    img.header.set_qform(_QA, code=0)
    img.header.set_sform(_SKEW, code=2)
    nib.save(img, tmp_path / "skew.nii")
    with pytest.raises(InvalidScanError, match=r"skew\.nii: no usable orientation"):
        read_nifti(tmp_path / "skew.nii")
    with pytest.raises(RuntimeError, match="orthonormal"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sitk.ReadImage(str(tmp_path / "skew.nii"))


@pytest.mark.parametrize("units", ["mm", "meter", "micron", "unknown"])
@pytest.mark.parametrize("qfac", [1.0, -1.0])
def test_units_and_qfac_like_itk(tmp_path, units, qfac):
    img = nib.Nifti1Image(_volume().T, None)
    img.header.set_qform(_QA, code=1)
    img.header["pixdim"][0] = qfac
    img.header.set_xyzt_units(units)
    nib.save(img, tmp_path / "u.nii")
    scan = read_nifti(tmp_path / "u.nii")
    assert_matches_sitk(scan, tmp_path / "u.nii", atol=1e-6 * (1000 if units == "meter" else 1))


@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "expected"),
    [
        (np.int16, 1.0, -1024.0, np.int16),  # CT stored with an intercept stays int16
        (np.uint16, 1.0, -1024.0, np.int16),
        (np.int16, 2.0, 5.0, np.int16),
        (np.int16, 0.5, -1024.0, np.float32),  # non-integral slope
        (np.int16, 20.0, 0.0, np.float32),  # integral, but beyond int16
        (np.float32, 0.25, 3.0, np.float32),
        (np.int16, float("nan"), float("nan"), np.int16),  # NaN = no scaling (niftilib)
        (np.int16, 0.0, 7.0, np.int16),  # slope 0 reads as 1 (ITK); the intercept applies
    ],
)
def test_scl_slope_and_inter_like_itk(tmp_path, dtype, slope, inter, expected):
    arr = _volume(np.int32, seed=4).clip(0, 3000).astype(dtype)
    nib.save(nib.Nifti1Image(arr.T, _QA), tmp_path / "s.nii")
    raw = bytearray((tmp_path / "s.nii").read_bytes())
    raw[112:120] = np.array([slope, inter], "<f4").tobytes()  # scl_slope, scl_inter as is
    (tmp_path / "s.nii").write_bytes(bytes(raw))
    scan = read_nifti(tmp_path / "s.nii")
    assert scan.images.dtype == expected
    ref = assert_matches_sitk(scan, tmp_path / "s.nii")
    eff_slope = slope if np.isfinite(slope) and slope != 0 else 1.0
    eff_inter = inter if np.isfinite(inter) else 0.0
    rescaled = eff_slope != 1 or eff_inter != 0
    assert scan.info["rescaled"] is rescaled
    if np.dtype(dtype).kind != "f":  # ITK turns rescaled integers into float32
        assert (ref.GetPixelID() == sitk.sitkFloat32) is rescaled


def test_big_endian_with_extension_and_trailing_unit_dims(tmp_path):
    arr = _volume()
    hdr = nib.Nifti1Header(endianness=">")
    img = nib.Nifti1Image(arr.T.astype(">i2")[..., None, None], _QA, header=hdr)
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"a comment, 16 bytes"))
    nib.save(img, tmp_path / "be.nii")
    raw = (tmp_path / "be.nii").read_bytes()
    assert raw[:4] == (348).to_bytes(4, "big")
    assert np.frombuffer(raw[108:112], ">f4")[0] > 352  # vox_offset after the extension
    scan = read_nifti(tmp_path / "be.nii")
    np.testing.assert_array_equal(scan.images, arr)
    assert_matches_sitk(scan, tmp_path / "be.nii")


def test_multi_member_gzip_reads_as_one_stream(tmp_path):
    sitk.WriteImage(_sitk_image(_volume(), OBLIQUE), str(tmp_path / "one.nii"))
    data = (tmp_path / "one.nii").read_bytes()
    (tmp_path / "two.nii.gz").write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    assert gzip.decompress((tmp_path / "two.nii.gz").read_bytes()) == data
    scan = read_nifti(tmp_path / "two.nii.gz")
    assert_matches_sitk(scan, tmp_path / "one.nii")


@pytest.mark.parametrize("gz", [False, True])
def test_nifti2_equals_the_nifti1_file_sitk_reads(tmp_path, gz):
    arr = _volume()
    img1 = nib.Nifti1Image(arr.T, _QA)
    img1.header.set_sform(_QA, code=1)
    nib.save(img1, tmp_path / "n1.nii")
    suffix = ".nii.gz" if gz else ".nii"
    nib.save(nib.Nifti2Image(arr.T, _QA), tmp_path / f"n2{suffix}")
    scan = read_nifti(tmp_path / f"n2{suffix}")
    assert scan.info["version"] == 2
    np.testing.assert_array_equal(scan.images, arr)
    # the NIfTI-1 file holds float32 geometry, the NIfTI-2 one float64
    assert_matches_sitk(scan, tmp_path / "n1.nii", atol=1e-4, spacing_atol=1e-6)


def test_four_d_and_two_d_and_vector_images_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2, 2), np.int16), _QA), tmp_path / "t.nii")
    with pytest.raises(UnsupportedFormatError, match=r"t\.nii: expected a 3-D volume; got a 4-D"):
        read_nifti(tmp_path / "t.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 3), np.int16), _QA), tmp_path / "flat.nii")
    with pytest.raises(UnsupportedFormatError, match=r"flat\.nii: expected a 3-D volume"):
        read_nifti(tmp_path / "flat.nii")
    img = nib.Nifti1Image(np.zeros((4, 3, 2, 1, 3), np.float32), _QA)
    img.header.set_intent("vector")
    nib.save(img, tmp_path / "vec.nii")
    with pytest.raises(UnsupportedFormatError, match=r"vec\.nii: intent VECTOR"):
        read_nifti(tmp_path / "vec.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 3, 2), np.complex64), _QA), tmp_path / "c.nii")
    with pytest.raises(UnsupportedFormatError, match=r"c\.nii: datatype 32 \(complex64\)"):
        read_nifti(tmp_path / "c.nii")


@pytest.mark.parametrize("name", ["w.nii", "w.nii.gz"])
@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, FLIPPED], ids=["eye", "obl", "flip"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.bool_])
def test_written_nifti_reads_in_sitk_and_nibabel_at_the_same_world_positions(
    tmp_path, name, direction, dtype
):
    arr = _volume(np.int16, seed=2)
    arr = (arr > 500) if dtype == np.bool_ else arr.clip(0, 255).astype(dtype)
    g = Geometry((2.5, 0.85, 0.7), (-301.75, 31.5, -170.125), direction_from_sitk(direction))
    p = write_nifti(tmp_path / name, arr, g)
    assert [f.name for f in tmp_path.iterdir()] == [name]  # no temporary file left
    ref = sitk.ReadImage(str(p))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(ref), arr.astype(np.uint8 if dtype == np.bool_ else dtype)
    )
    scan = read_nifti(p)
    assert_matches_sitk(scan, p)
    # the file holds g to float32 precision: compare with the geometry we wrote
    idx = np.random.default_rng(0).uniform(0, 1, (100, 3)) * (np.array(SHAPE) - 1)
    np.testing.assert_allclose(scan.geometry.voxel_to_world(idx), g.voxel_to_world(idx), atol=1e-4)
    # nibabel's RAS affine is the same mapping (x, y sign-flipped)
    aff = nib.load(p).affine
    ijk = idx[:, ::-1]
    ras = ijk @ aff[:3, :3].T + aff[:3, 3]
    lps_zyx = (ras * [-1, -1, 1])[:, ::-1]
    np.testing.assert_allclose(lps_zyx, g.voxel_to_world(idx), atol=1e-4)


def test_nifti_writer_rejects_bad_arguments(tmp_path):
    g = Geometry((1, 1, 1))
    from ctflow.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=r"\.nii or \.nii\.gz"):
        write_nifti(tmp_path / "a.mhd", np.zeros((2, 2, 2), np.int16), g)
    with pytest.raises(InvalidParameterError, match="non-empty"):
        write_nifti(tmp_path / "a.nii", np.zeros((2, 2), np.int16), g)
    with pytest.raises(InvalidParameterError, match="dtype"):
        write_nifti(tmp_path / "a.nii", np.zeros((2, 2, 2), np.complex64), g)
    with pytest.raises(InvalidParameterError, match="does not exist"):
        write_nifti(tmp_path / "no" / "a.nii", np.zeros((2, 2, 2), np.int16), g)
    assert list(tmp_path.iterdir()) == []


# ==========================================================================================
# NRRD
# ==========================================================================================
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, FLIPPED], ids=["eye", "obl", "flip"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_nrrd_written_by_sitk_reads_like_sitk(tmp_path, compress, direction, dtype):
    arr = _volume(dtype) if np.dtype(dtype).kind != "u" else _volume(np.int16).clip(0).astype(dtype)
    sitk.WriteImage(_sitk_image(arr, direction), str(tmp_path / "s.nrrd"), useCompression=compress)
    scan = read_nrrd(tmp_path / "s.nrrd")
    assert_matches_sitk(scan, tmp_path / "s.nrrd")
    assert scan.info["encoding"] == ("gzip" if compress else "raw")
    assert scan.info["space"] == "LPS"


def _write_nrrd(path: Path, fields: str, data: bytes, *, shape=(2, 3, 4), type_="short") -> Path:
    z, y, x = shape
    header = f"NRRD0004\n# comment\ntype: {type_}\ndimension: 3\nsizes: {x} {y} {z}\n{fields}"
    path.write_bytes(header.encode() + b"\n" + data)
    return path


_ARR = np.arange(24, dtype=np.int16).reshape(2, 3, 4) * 7 - 50
_DIRS = "space directions: (0.5,0.1,0) (-0.12,0.6,0) (0,0,2)\n"
_ORIGIN = "space origin: (10,-20.5,30)\n"


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        (f"endian: little\nencoding: raw\nspace: RAS\n{_DIRS}{_ORIGIN}", _ARR.tobytes()),
        (f"endian: little\nencoding: raw\nspace: LAS\n{_DIRS}{_ORIGIN}", _ARR.tobytes()),
        (f"endian: little\nencoding: raw\nspace: left-posterior-superior\n{_DIRS}", _ARR.tobytes()),
        (f"endian: little\nencoding: raw\nspace: scanner-xyz\n{_DIRS}{_ORIGIN}", _ARR.tobytes()),
        (f"endian: little\nencoding: raw\nspace dimension: 3\n{_DIRS}{_ORIGIN}", _ARR.tobytes()),
        ("endian: little\nencoding: raw\nspacings: 0.5 0.6 2\n", _ARR.tobytes()),
        ("endian: little\nencoding: raw\nspacings: 0.5 0.6 2\naxis mins: 1 2 3\n", _ARR.tobytes()),
        (
            "endian: little\nencoding: raw\nspacings: 0.5 0.6 2\naxis mins: 1 2 3\n"
            "centers: node cell node\n",
            _ARR.tobytes(),
        ),
        (f"endian: big\nencoding: raw\nspace: LPS\n{_DIRS}", _ARR.astype(">i2").tobytes()),
        (f"endian: little\nencoding: gzip\nspace: RAS\n{_DIRS}", gzip.compress(_ARR.tobytes())),
        (
            f"endian: little\nencoding: raw\nbyte skip: -1\nspace: LPS\n{_DIRS}",
            b"junk" + _ARR.tobytes(),
        ),
        (
            f"endian: little\nencoding: raw\nbyte skip: 3\nspace: LPS\n{_DIRS}",
            b"abc" + _ARR.tobytes(),
        ),
        (
            f"endian: little\nencoding: raw\nline skip: 2\nspace: LPS\n{_DIRS}",
            b"line 1\nline 2\n" + _ARR.tobytes(),
        ),
        (  # skipped lines longer than a read piece (64 KiB), then data holding newlines
            f"endian: little\nencoding: raw\nline skip: 3\nspace: LPS\n{_DIRS}",
            b"a" * 100_000 + b"\n\nshort\n" + (_ARR + ord("\n")).tobytes(),
        ),
        (  # line skip comes before the gzip stream (teem and ITK skip them in the raw file)
            f"endian: little\nencoding: gzip\nline skip: 2\nspace: LPS\n{_DIRS}",
            b"one\ntwo\n" + gzip.compress(_ARR.tobytes()),
        ),
        (
            f"endian: little\nencoding: gz\nbyte skip: 5\nspace: LPS\n{_DIRS}",
            gzip.compress(b"12345" + _ARR.tobytes()),
        ),
        (f"encoding: raw\nkinds: domain space ???\nspace: LPS\n{_DIRS}key:=value\n", None),
    ],
)
def test_hand_written_nrrd_headers_read_like_sitk(tmp_path, fields, data):
    if data is None:  # uint8: no endian needed
        data = _ARR.astype(np.uint8).tobytes()
        p = _write_nrrd(tmp_path / "h.nrrd", fields, data, type_="uchar")
    else:
        p = _write_nrrd(tmp_path / "h.nrrd", fields, data)
    scan = read_nrrd(p)
    assert_matches_sitk(scan, p)


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
@pytest.mark.parametrize("absolute", [False, True])
def test_detached_header(tmp_path, encoding, absolute):
    data = _ARR.tobytes() if encoding == "raw" else gzip.compress(_ARR.tobytes())
    (tmp_path / "d.raw").write_bytes(data)
    name = str(tmp_path / "d.raw") if absolute else "d.raw"
    fields = f"endian: little\nencoding: {encoding}\nspace: RAS\n{_DIRS}data file: {name}\n"
    (tmp_path / "d.nhdr").write_text(f"NRRD0005\ntype: int16\ndimension: 3\nsizes: 4 3 2\n{fields}")
    scan = read_nrrd(tmp_path / "d.nhdr")
    np.testing.assert_array_equal(scan.images, _ARR)
    assert scan.info["data_file"] == str(tmp_path / "d.raw")
    assert_matches_sitk(scan, tmp_path / "d.nhdr")


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ("endian: little\nencoding: bzip2\nspacings: 1 1 1\n", UnsupportedFormatError, "bzip2"),
        ("endian: little\nencoding: ascii\nspacings: 1 1 1\n", UnsupportedFormatError, "ascii"),
        ("endian: little\nencoding: raw\n", InvalidScanError, "no voxel size"),
        ("endian: little\nencoding: raw\nspace: LPS\n", InvalidScanError, "no 'space directions'"),
        (
            f"endian: little\nencoding: raw\nspace: LPS\nspacings: 1 1 1\n{_DIRS}",
            InvalidScanError,
            "both 'space' and 'spacings'",
        ),
        (
            "endian: little\nencoding: raw\nspace: LPS\n"
            "space directions: (1,0,0) (0.5,1,0) (0,0,2)\n",
            InvalidScanError,
            "orthonormal",
        ),
        (
            "endian: little\nencoding: raw\nspace: RAST\n"
            "space directions: (1,0,0,0) (0,1,0,0) (0,0,1,0)\n",
            UnsupportedFormatError,
            "time spaces",
        ),
        (
            "endian: little\nencoding: raw\nspace: LPS\nspace directions: (1,0,0) (0,1,0) none\n",
            InvalidScanError,
            "one \\(x,y,z\\) vector per axis",
        ),
        (
            "endian: little\nencoding: raw\nspacings: 1 1 1\nkinds: 3-vector domain domain\n",
            UnsupportedFormatError,
            "multi-component",
        ),
        ("encoding: raw\nspacings: 1 1 1\n", InvalidScanError, "needs an 'endian' field"),
        (
            "endian: little\nencoding: raw\nspacings: 1 1 1\ndata file: LIST\n",
            UnsupportedFormatError,
            "lists and file patterns",
        ),
        (
            "endian: little\nencoding: raw\nspacings: 1 1 1\ndata file: f%03d.raw 1 10 1\n",
            UnsupportedFormatError,
            "lists and file patterns",
        ),
        ("endian: little\nencoding: raw\nspacings: 1 1 1\nfoo: bar\n", CorruptFileError, "foo"),
        ("endian: little\nencoding: raw\nspace: mars\n", UnsupportedFormatError, "mars"),
    ],
)
def test_nrrd_headers_ctflow_refuses(tmp_path, fields, error, match):
    p = _write_nrrd(tmp_path / "bad.nrrd", fields, _ARR.tobytes())
    with pytest.raises(error, match=r"bad\.nrrd.*" + match):
        read_nrrd(p)


def test_nrrd_type_names_and_block(tmp_path):
    for name in ("signed char", "int8_t", "unsigned short int", "longlong", "double"):
        code = {"signed char": "i1", "int8_t": "i1", "unsigned short int": "<u2",
                "longlong": "<i8", "double": "<f8"}[name]  # fmt: skip
        p = _write_nrrd(
            tmp_path / "t.nrrd",
            "endian: little\nencoding: raw\nspacings: 1 1 1\n",
            np.abs(_ARR).astype(code).tobytes(),
            type_=name,
        )
        assert_matches_sitk(read_nrrd(p), p)
    p = _write_nrrd(tmp_path / "b.nrrd", "encoding: raw\nspacings: 1 1 1\n", b"", type_="block")
    with pytest.raises(UnsupportedFormatError, match=r"b\.nrrd.*block"):
        read_nrrd(p)
    p = _write_nrrd(tmp_path / "c.nrrd", "encoding: raw\nspacings: 1 1 1\n", b"", type_="char")
    with pytest.raises(UnsupportedFormatError, match=r"c\.nrrd: unknown NRRD element type"):
        read_nrrd(p)


# ==========================================================================================
# fuzzing: only ctflow errors (or a valid scan) come out
# ==========================================================================================
_NRRD_LINES = [
    "NRRD0004",
    "type: short",
    "dimension: 3",
    "sizes: 4 3 2",
    "endian: little",
    "encoding: raw",
    "space: left-posterior-superior",
    "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)",
    "space origin: (1,2,3)",
]
_NRRD_FIELDS = [line.split(": ")[0] for line in _NRRD_LINES[1:]] + [
    "spacings",
    "byte skip",
    "line skip",
    "data file",
    "kinds",
    "axis mins",
    "centers",
    "space dimension",
]
_TEXT = st.one_of(
    st.text(max_size=25),
    st.lists(
        st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True)),
        max_size=5,
    ).map(lambda xs: " ".join(map(str, xs))),
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=4).map(
        lambda xs: " ".join(f"({','.join(map(str, xs))})" for _ in range(3))
    ),
    st.sampled_from(["gzip", "raw", "RAS", "none", "-1", "LIST", "float", "uchar", "big"]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.one_of(
            st.tuples(st.just("set"), st.sampled_from(_NRRD_FIELDS), _TEXT),
            st.tuples(st.just("drop"), st.integers(1, len(_NRRD_LINES) - 1), st.just("")),
            st.tuples(st.just("raw"), st.integers(0, len(_NRRD_LINES)), st.binary(max_size=30)),
        ),
        min_size=1,
        max_size=4,
    ),
    data_len=st.integers(0, 60),
    gz=st.booleans(),
)
def test_fuzzed_nrrd_headers_only_raise_ctflow_errors(edits, data_len, gz):
    lines = [line.encode() for line in _NRRD_LINES]
    for kind, where, what in edits:
        if kind == "set":
            new = f"{where}: {what}".encode("utf-8", "surrogatepass")
            keys = [ln.split(b": ")[0] for ln in lines]
            if where.encode() in keys:
                lines[keys.index(where.encode())] = new
            else:
                lines.append(new)
        elif kind == "drop":
            lines.pop(min(where, len(lines) - 1))
        else:
            lines.insert(min(where, len(lines)), what)
    data = np.arange(24, dtype="<i2").tobytes()[:data_len]
    if gz:
        data = gzip.compress(data)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fz.nrrd"
        p.write_bytes(b"\n".join(lines) + b"\n\n" + data)
        try:
            scan = read_nrrd(p)
        except CTFlowError as exc:
            assert "fz.nrrd" in str(exc)
        else:
            assert scan.images.ndim == 3 and scan.images.dtype in (np.int16, np.float32)
            assert np.all(scan.geometry.spacing > 0) and np.all(np.isfinite(scan.geometry.affine))


_NIFTI_BASE: list[bytes] = []


def _nifti_base() -> bytes:
    if not _NIFTI_BASE:
        with tempfile.TemporaryDirectory() as d:
            img = nib.Nifti1Image(_ARR.T.copy(), _QA)
            img.header.set_sform(_SA, code=2)
            img.header.set_qform(_QA, code=1)
            nib.save(img, Path(d) / "b.nii")
            _NIFTI_BASE.append((Path(d) / "b.nii").read_bytes())
    return _NIFTI_BASE[0]


# (offset, numpy type) of interesting NIfTI-1 header fields
_NIFTI_FIELDS = {
    "sizeof_hdr": (0, "<i4"),
    "dim0": (40, "<i2"),
    "dim1": (42, "<i2"),
    "dim3": (46, "<i2"),
    "dim4": (48, "<i2"),
    "intent": (68, "<i2"),
    "datatype": (70, "<i2"),
    "pixdim0": (76, "<f4"),
    "pixdim1": (80, "<f4"),
    "pixdim3": (88, "<f4"),
    "vox_offset": (108, "<f4"),
    "scl_slope": (112, "<f4"),
    "scl_inter": (116, "<f4"),
    "xyzt_units": (123, "u1"),
    "qform_code": (252, "<i2"),
    "sform_code": (254, "<i2"),
    "quatern_b": (256, "<f4"),
    "qoffset_x": (268, "<f4"),
    "srow_x0": (280, "<f4"),
    "srow_z3": (324, "<f4"),
    "magic": (344, "S4"),
}
_NIFTI_VALUES = st.one_of(
    st.integers(-(2**15), 2**15 - 1),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 3, 4, 7, 16, 64, 348, 352, 512, 1007, 2**31 - 1, -1]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.sampled_from(sorted(_NIFTI_FIELDS)), _NIFTI_VALUES), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 400)),
    gz=st.booleans(),
)
def test_fuzzed_nifti_headers_only_raise_ctflow_errors(edits, cut, gz):
    buf = bytearray(_nifti_base())
    for name, value in edits:
        offset, code = _NIFTI_FIELDS[name]
        dtype = np.dtype(code)
        if dtype.kind == "S":
            packed = str(value).encode()[:4].ljust(4, b"\0")
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            packed = np.array(
                int(np.clip(np.nan_to_num(value), info.min, info.max)), dtype
            ).tobytes()
        else:
            with np.errstate(over="ignore"):
                packed = np.array(value, dtype).tobytes()
        buf[offset : offset + len(packed)] = packed
    data = bytes(buf if cut is None else buf[:cut])
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ("fz.nii.gz" if gz else "fz.nii")
        p.write_bytes(gzip.compress(data) if gz else data)
        try:
            scan = read_nifti(p)
        except CTFlowError as exc:
            assert "fz.nii" in str(exc)
        else:
            assert scan.images.ndim == 3 and scan.images.dtype in (np.int16, np.float32)
            assert np.all(scan.geometry.spacing > 0) and np.all(np.isfinite(scan.geometry.affine))
            if scan.images.dtype == np.float32:
                assert np.all(np.isfinite(scan.images))
