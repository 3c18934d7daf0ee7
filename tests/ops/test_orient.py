"""Tests of ctflow.ops.orient against SimpleITK's DICOMOrient and hand-computed index mappings.

References: ``sitk.DICOMOrient`` (voxels, spacing, origin, direction) on the same real files read
by SimpleITK itself, on a RAS NIfTI written with nibabel, and on oblique images built in
SimpleITK; ``GetOrientationFromDirectionCosines`` for the codes; and, for world positions, the
input index each output voxel came from, recovered from the voxel's value (every value unique).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from ctflow.errors import InvalidParameterError, InvalidScanError
from ctflow.geometry import Geometry, direction_from_sitk, direction_to_sitk
from ctflow.io.reader import read_scan
from ctflow.ops.orient import (
    ORIENTATION_CODES,
    OrientTransform,
    orientation_code,
    orientation_transform,
    reorient,
    reoriented_geometry,
)

pytestmark = pytest.mark.timeout(300)

sitk_code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines

# (relative path, in-plane crop (y0, y1, x0, x1) or None). The 512x512 and 256x256 volumes are
# cropped in-plane — the same crop in SimpleITK (image slicing, which moves the origin) and in
# ctflow (array slicing + Geometry.shifted) — because sitk.DICOMOrient takes up to 0.6 s per
# axis permutation on a whole volume; test_full_real_volumes_match_sitk covers them uncropped.
REAL = [
    ("invesalius_cranium/cranium.mhd", (40, 161, 37, 140)),
    ("pyradiomics_lung/lung1_image.nrrd", (150, 271, 101, 204)),
    ("totalsegmentator_examples/example_ct_sm.nii.gz", None),
    ("totalsegmentator_examples/derived/example_ct_dicom_uncompressed", (200, 321, 180, 283)),
]


def _sitk_read(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _sitk_geometry(img: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spacing, origin, direction of a SimpleITK image in ctflow (z, y, x) order."""
    return (
        np.array(img.GetSpacing()[::-1]),
        np.array(img.GetOrigin()[::-1]),
        direction_from_sitk(img.GetDirection()),
    )


def _sitk_image(arr: np.ndarray, g: Geometry) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing([float(v) for v in g.spacing[::-1]])
    img.SetOrigin([float(v) for v in g.origin[::-1]])
    img.SetDirection(direction_to_sitk(g.direction))
    return img


def assert_same_as_sitk(arr: np.ndarray, g: Geometry, ref: sitk.Image, label: str) -> None:
    """ctflow (array, geometry) equals a SimpleITK image: voxels exactly, geometry to 1e-6."""
    want = sitk.GetArrayViewFromImage(ref)
    assert arr.shape == want.shape, label
    assert np.array_equal(arr, want), label
    spacing, origin, direction = _sitk_geometry(ref)
    np.testing.assert_allclose(g.spacing, spacing, rtol=0, atol=1e-6, err_msg=label)
    np.testing.assert_allclose(g.origin, origin, rtol=0, atol=1e-6, err_msg=label)
    np.testing.assert_allclose(g.direction, direction, rtol=0, atol=1e-6, err_msg=label)


def _rotation(axis: int, deg: float) -> np.ndarray:
    """Rotation matrix by ``deg`` about ``axis`` (any fixed convention will do)."""
    t = np.deg2rad(deg)
    a, b = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r


@pytest.fixture(scope="module")
def real_scans(real_data: Path) -> list[tuple[str, np.ndarray, Geometry, sitk.Image]]:
    """Each real file read once by ctflow and once by SimpleITK (cropped alike, see REAL)."""
    out = []
    for rel, crop in REAL:
        scan = read_scan(real_data / rel)
        ref = _sitk_read(real_data / rel)
        arr, g = scan.images, scan.geometry
        if crop is not None:
            y0, y1, x0, x1 = crop
            arr = arr[:, y0:y1, x0:x1]
            g = g.shifted((0, y0, x0))
            ref = ref[x0:x1, y0:y1, :]
        assert_same_as_sitk(arr, g, ref, f"{rel} as read")  # the inputs agree
        out.append((rel, arr, g, ref))
    return out


# ------------------------------------------------------------------------------------------
def test_orientation_codes_are_the_48_valid_ones():
    pairs = ("RL", "AP", "SI")
    expect = {
        "".join(letters)
        for perm in itertools.permutations(pairs)
        for letters in itertools.product(*perm)
    }
    assert len(ORIENTATION_CODES) == 48 == len(set(ORIENTATION_CODES))
    assert set(ORIENTATION_CODES) == expect
    assert ORIENTATION_CODES[:4] == ("RAS", "RAI", "RPS", "RPI")
    assert ORIENTATION_CODES[-1] == "IPL"


@pytest.mark.parametrize("code", ORIENTATION_CODES)
def test_real_files_match_sitk_dicom_orient(real_scans, code):
    for rel, arr, g, ref in real_scans:
        out, g2 = reorient(arr, g, code)
        assert_same_as_sitk(out, g2, sitk.DICOMOrient(ref, code), f"{rel} -> {code}")
        assert orientation_code(g2.direction) == code


def test_full_real_volumes_match_sitk(real_data):
    """Uncropped volumes: flips only, a swap and a 3-cycle of axes (with flips)."""
    codes = ("RAI", "PRS", "SLA")  # (x, y, z) letters
    for rel, _ in REAL:
        scan = read_scan(real_data / rel)
        ref = _sitk_read(real_data / rel)
        for code in codes:
            out, g2 = reorient(scan.images, scan.geometry, code)
            assert_same_as_sitk(out, g2, sitk.DICOMOrient(ref, code), f"{rel} -> {code}")


def test_ras_nifti_matches_sitk(tmp_path):
    rng = np.random.default_rng(5)
    arr = rng.integers(-1024, 3000, size=(9, 11, 13), dtype=np.int16)  # (z, y, x), asymmetric
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-40.5, 12.25, -101.0)  # RAS world mm of voxel (i, j, k) = (0, 0, 0)
    img = nib.Nifti1Image(arr.transpose(2, 1, 0), affine)  # nibabel indexes (i, j, k) = (x, y, z)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = tmp_path / "ras.nii.gz"
    nib.save(img, path)

    scan = read_scan(path)
    ref = sitk.ReadImage(str(path))
    assert_same_as_sitk(scan.images, scan.geometry, ref, "RAS NIfTI as read")
    assert np.array_equal(scan.images, arr)
    # RAS affine -> LPS world: x and y negated; voxel (0, 0, 0) at LPS (40.5, -12.25, -101)
    np.testing.assert_allclose(scan.geometry.origin, (-101.0, -12.25, 40.5), atol=1e-6)
    assert orientation_code(scan.geometry.direction) == "RAS" == sitk_code(ref.GetDirection())
    for code in ORIENTATION_CODES:
        out, g2 = reorient(scan.images, scan.geometry, code)
        assert_same_as_sitk(out, g2, sitk.DICOMOrient(ref, code), f"RAS NIfTI -> {code}")


OBLIQUE = {
    # ~20 degrees about two axes: every column clearly closest to one world axis
    "oblique": _rotation(0, 20.0) @ _rotation(2, -23.0),
    # two columns closest to the same world axis: a per-column argmax fails, ITK's greedy rule
    # still assigns three different axes
    "greedy": _rotation(2, 50.0) @ _rotation(1, 40.0),
    # exact ties (|cos| = |sin| = sqrt(1/2)): ITK's tie-break
    "tie45": _rotation(0, 45.0),
    "tie-flip": np.array([[-1.0, 2, 2], [2, -1, 2], [2, 2, -1]]) / 3 * np.array([1, -1, 1]),
}


@pytest.mark.parametrize("name", list(OBLIQUE))
def test_oblique_matches_sitk(name):
    direction = OBLIQUE[name]
    if name == "greedy":
        assert len(set(np.argmax(np.abs(direction), axis=0).tolist())) < 3
    rng = np.random.default_rng(8)
    arr = rng.normal(0, 300, size=(6, 8, 11)).astype(np.float32)
    g = Geometry((2.5, 0.9, 0.7), (33.3, 20.0, -10.0), direction)
    ref = _sitk_image(arr, g)
    assert orientation_code(direction) == sitk_code(ref.GetDirection())
    for code in ORIENTATION_CODES:
        out, g2 = reorient(arr, g, code)
        label = f"{name} -> {code}"
        assert_same_as_sitk(out, g2, sitk.DICOMOrient(ref, code), label)
        # columns only permuted and negated: every cosine of the output is one of the input's
        assert np.array_equal(
            np.sort(np.abs(g2.direction).ravel()), np.sort(np.abs(direction).ravel())
        )
        if not name.startswith("tie"):
            assert orientation_code(g2.direction) == code, label


def test_orientation_code_matches_sitk_on_random_and_tied_matrices():
    rng = np.random.default_rng(21)
    mats = []
    for _ in range(300):  # random rotations, half of them improper
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        mats.append(q * np.sign(np.diag(r)))
    c = np.sqrt(0.5)
    tied = [
        np.array([[c, -c, 0], [c, c, 0], [0, 0, 1.0]]),
        np.array([[-1.0, 2, 2], [2, -1, 2], [2, 2, -1]]) / 3,
        _rotation(2, 45.0) @ _rotation(0, 45.0),
    ]
    for t in tied:
        for p in itertools.permutations(range(3)):
            for s in itertools.product((1.0, -1.0), repeat=3):
                mats.append(t[:, list(p)] * np.array(s))
                mats.append(t[list(p), :] * np.array(s)[:, None])
    for d in mats:
        assert orientation_code(d) == sitk_code(direction_to_sitk(d)), d.round(4).tolist()
    assert orientation_code(np.eye(3)) == "LPS"
    assert orientation_code(np.eye(3).ravel()) == "LPS"
    assert orientation_code(np.diag([-1.0, 1.0, 1.0])) == "LPI"  # slices from head to feet


@pytest.mark.parametrize("name", ["identity", "ras", "oblique"])
def test_world_positions_are_preserved(name, rng):
    shape = (5, 7, 9)
    image = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)  # value = flat old index
    direction = {
        "identity": np.eye(3),
        "ras": np.diag([1.0, -1.0, -1.0]),
        "oblique": OBLIQUE["oblique"],
    }[name]
    g = Geometry((2.0, 0.8, 0.6), (-50.0, 10.0, 120.0), direction)
    for code in ORIENTATION_CODES:
        out, g2 = reorient(image, g, code)
        assert g2 == reoriented_geometry(shape, g, code)
        new_idx = rng.integers(0, np.array(out.shape), size=(40, 3))
        old_idx = np.array(np.unravel_index(out[tuple(new_idx.T)], shape)).T
        np.testing.assert_allclose(
            g2.voxel_to_world(new_idx), g.voxel_to_world(old_idx), rtol=0, atol=1e-9
        )


def test_hand_computed_lps_to_ras_and_axis_swap():
    shape = (4, 5, 6)
    g = Geometry((3.0, 2.0, 1.0), (7.0, 8.0, 9.0))
    image = np.random.default_rng(0).integers(0, 255, size=shape).astype(np.uint8)
    out, g2 = reorient(image, g, "RAS")  # y and x reversed
    for z, y, x in [(0, 0, 0), (3, 4, 5), (1, 2, 3), (2, 0, 5)]:
        old = (z, shape[1] - 1 - y, shape[2] - 1 - x)
        assert out[z, y, x] == image[old]
        np.testing.assert_allclose(g2.voxel_to_world((z, y, x)), g.voxel_to_world(old))
    np.testing.assert_array_equal(g2.origin, (7.0, 16.0, 14.0))
    np.testing.assert_array_equal(g2.direction, np.diag([1.0, -1.0, -1.0]))

    out, g2 = reorient(image, g, "SPL")  # x <- z, z <- x
    assert out.shape == (6, 5, 4)
    assert out[5, 1, 2] == image[2, 1, 5]
    np.testing.assert_array_equal(g2.spacing, (1.0, 2.0, 3.0))
    np.testing.assert_array_equal(g2.origin, g.origin)
    assert orientation_transform(g.direction, "SPL") == OrientTransform((2, 1, 0), (False,) * 3)
    axes, flips = orientation_transform(g.direction, "LIA")  # z <- y, y <- z reversed
    assert axes == (1, 0, 2) and flips == (True, True, False)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.bool_])
def test_result_is_a_view_and_round_trips(dtype):
    rng = np.random.default_rng(3)
    values = rng.normal(0, 100, size=(4, 6, 7))
    image = (values > 0) if dtype == np.bool_ else values.astype(dtype)
    g = Geometry((2.5, 0.7, 0.75), (-300.0, -180.0, -170.0), OBLIQUE["oblique"])
    start = orientation_code(g.direction)
    same, g_same = reorient(image, g, start.lower())
    assert same is image and g_same == g
    for code in ORIENTATION_CODES:
        out, g2 = reorient(image, g, code)
        assert out.dtype == image.dtype
        if code != start:
            assert np.shares_memory(out, image)
            assert out.base is not None
        back, g3 = reorient(out, g2, start)
        assert np.shares_memory(back, image)
        assert np.array_equal(back, image)
        np.testing.assert_array_equal(g3.spacing, g.spacing)
        np.testing.assert_array_equal(g3.direction, g.direction)  # exact: only sign flips
        np.testing.assert_allclose(g3.origin, g.origin, rtol=0, atol=1e-9)


@pytest.mark.parametrize("bad", ["LPX", "LLS", "LP", 3, "RAS ", "", None, "LPSR", "SPP"])
def test_bad_codes_are_refused(bad):
    g = Geometry((1.0, 1.0, 1.0))
    image = np.zeros((2, 2, 2), np.int16)
    msg = r'code must be 3 letters, one of R/L, one of A/P, one of S/I \(e\.g\. "LPS"\); got '
    with pytest.raises(InvalidParameterError, match=rf"^reorient: {msg}{re.escape(repr(bad))}$"):
        reorient(image, g, bad)
    with pytest.raises(InvalidParameterError, match=rf"^orientation_transform: {msg}"):
        orientation_transform(np.eye(3), bad)
    with pytest.raises(InvalidParameterError, match=rf"^reoriented_geometry: {msg}"):
        reoriented_geometry((2, 2, 2), g, bad)


def test_lower_case_codes_are_accepted():
    g = Geometry((1.0, 1.0, 1.0))
    image = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    a, ga = reorient(image, g, "ras")
    b, gb = reorient(image, g, "RAS")
    assert np.array_equal(a, b) and ga == gb
    assert orientation_code(ga.direction) == "RAS"


def test_other_bad_arguments_are_refused():
    g = Geometry((1.0, 1.0, 1.0))
    with pytest.raises(InvalidScanError, match="reorient: image must be a 3-D"):
        reorient(np.zeros((2, 2)), g, "LPS")
    with pytest.raises(InvalidParameterError, match="reorient: geometry must be a ctflow"):
        reorient(np.zeros((2, 2, 2)), {"spacing": 1}, "LPS")
    with pytest.raises(InvalidParameterError, match="orientation_code: direction must be"):
        orientation_code(np.eye(2))
    with pytest.raises(InvalidParameterError, match="orientation_code: direction must be"):
        orientation_code([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(InvalidParameterError, match="reoriented_geometry: shape must be 3"):
        reoriented_geometry((2, 0, 2), g, "RAS")
    with pytest.raises(InvalidParameterError, match="reoriented_geometry: shape must be 3"):
        reoriented_geometry((2, 2), g, "RAS")
