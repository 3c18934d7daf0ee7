"""The phantom generator: LIDC statistics, anatomy, and annotations right in world mm.

References: the LIDC statistics CSVs in ``../shared/data/real/lidc_stats`` (read only here, to
check the numbers carried into the package), SimpleITK's reading of the written files and its
``TransformPhysicalPointToIndex``/``TransformPhysicalPointToContinuousIndex``, nibabel's
reading of the NIfTI files, and digests of what the generator wrote before mixed datasets
existed (git HEAD before the change, computed once from that code).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from ctflow.errors import InvalidParameterError
from ctflow.synthetic import (
    NODULE_DIAMETER_BINS_MM,
    NODULE_DIAMETER_COUNTS,
    NODULES_PER_SCAN_COUNTS,
    TISSUE_HU,
    make_dataset,
    make_phantom,
    sample_nodule_counts,
    sample_nodule_diameters,
)


def test_carried_statistics_equal_the_lidc_tables(real_data):
    hist = pd.read_csv(real_data / "lidc_stats" / "diameter_histogram.csv")
    assert [*hist["bin_lo_mm"], hist["bin_hi_mm"].iloc[-1]] == list(NODULE_DIAMETER_BINS_MM)
    assert list(hist["nodules_luna16_like"]) == list(NODULE_DIAMETER_COUNTS)
    per_scan = pd.read_csv(real_data / "lidc_stats" / "nodules_per_scan.csv")
    table = dict(zip(per_scan.iloc[:, 0].astype(str), per_scan["scans_thin_luna16_like"]))
    for k in range(6):
        assert NODULES_PER_SCAN_COUNTS[k] == table[str(k)]
    assert sum(NODULES_PER_SCAN_COUNTS.values()) == per_scan["scans_thin_luna16_like"].sum()


def test_sampled_diameters_and_counts_follow_the_histograms():
    d = sample_nodule_diameters(20000, seed=1)
    counts, _ = np.histogram(d, bins=NODULE_DIAMETER_BINS_MM)
    expected = np.asarray(NODULE_DIAMETER_COUNTS) / sum(NODULE_DIAMETER_COUNTS) * len(d)
    nz = expected > 0
    chi2 = float(np.sum((counts[nz] - expected[nz]) ** 2 / expected[nz]))
    assert chi2 < 30.0  # 8 dof: p ~ 2e-4 at 30
    assert counts[~nz].sum() == 0

    c = sample_nodule_counts(20000, seed=2)
    total = sum(NODULES_PER_SCAN_COUNTS.values())
    assert abs((c == 0).mean() - NODULES_PER_SCAN_COUNTS[0] / total) < 0.015
    assert abs((c == 1).mean() - NODULES_PER_SCAN_COUNTS[1] / total) < 0.015
    assert c.max() >= 6


def test_phantom_is_deterministic_int16_with_tissues_at_their_hu():
    a, ta = make_phantom((40, 96, 96), (2.5, 0.7, 0.7), n_nodules=2, seed=5)
    b, tb = make_phantom((40, 96, 96), (2.5, 0.7, 0.7), n_nodules=2, seed=5)
    c, _ = make_phantom((40, 96, 96), (2.5, 0.7, 0.7), n_nodules=2, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    pd.testing.assert_frame_equal(ta, tb)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.int16
    img = a.images
    assert abs(np.median(img[:, 0, :]) - TISSUE_HU["air"]) < 60  # outside the body
    lungish = img[(img > -950) & (img < -700)]
    assert lungish.size > 0.05 * img.size and abs(np.median(lungish) - TISSUE_HU["lung"]) < 60
    assert (img > 500).any()  # bone


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]])],
    ids=["identity", "permuted-flipped"],
)
def test_annotations_point_at_nodule_tissue_through_simpleitk(tmp_path, direction):
    from ctflow.io.metaimage import write_metaimage

    scan, table = make_phantom(
        (48, 96, 96), (2.0, 0.75, 0.75), n_nodules=3, seed=9, direction=direction
    )
    path = write_metaimage(tmp_path / "p.mhd", scan.images, scan.geometry)
    image = sitk.ReadImage(str(path))
    arr = sitk.GetArrayViewFromImage(image)  # (z, y, x)
    assert len(table) >= 1
    for row in table.itertuples():
        ijk = image.TransformPhysicalPointToIndex((row.coordX, row.coordY, row.coordZ))
        value = arr[ijk[2], ijk[1], ijk[0]]
        assert value > -300, (row, value)  # nodule tissue, not lung (-850)
        assert 3.0 <= row.diameter_mm <= 70.0


def test_make_dataset_writes_luna_files_and_table(tmp_path):
    paths, csv = make_dataset(tmp_path, n_scans=3, shape=(24, 48, 48), seed=4)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert len(table) >= 1
    uids = {p.stem for p in paths}
    assert set(table["seriesuid"].astype(str)) <= uids
    assert all(u.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.") for u in uids)
    for p in paths:
        image = sitk.ReadImage(str(p))
        sx, sy, sz = image.GetSpacing()
        assert 0.6 <= sx == sy <= 0.8 and 0.7 <= sz <= 2.5
        assert image.GetPixelID() == sitk.sitkInt16
        assert any(abs(v) > 1 for v in image.GetOrigin())  # LUNA-like non-zero origin


def test_bad_parameters_are_typed_errors(tmp_path):
    with pytest.raises(InvalidParameterError, match="shape"):
        make_phantom((2, 8, 8))
    with pytest.raises(InvalidParameterError, match="n_scans"):
        make_dataset(tmp_path, n_scans=-1)


# -- mixed datasets: shapes, stored orientations and formats ----------------------------------
_LPS = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # SimpleITK direction, row-major (x, y, z)
_RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _uid(path: Path) -> str:
    return path.name.removesuffix(".nii.gz").removesuffix(".mhd").removesuffix(".mha")


def _assert_annotations_hit_nodules(paths, csv) -> int:
    """Every annotation centre, mapped by SimpleITK into the file it read, is nodule tissue."""
    table = pd.read_csv(csv)
    by_uid = {_uid(p): p for p in paths}
    assert set(table["seriesuid"].astype(str)) <= set(by_uid)
    for row in table.itertuples():
        image = sitk.ReadImage(str(by_uid[str(row.seriesuid)]))
        arr = sitk.GetArrayViewFromImage(image)  # (z, y, x)
        cidx = image.TransformPhysicalPointToContinuousIndex((row.coordX, row.coordY, row.coordZ))
        i, j, k = (round(c) for c in cidx)
        assert 0 <= k < arr.shape[0] and 0 <= j < arr.shape[1] and 0 <= i < arr.shape[2], row
        assert arr[k, j, i] > -300, (row, arr[k, j, i])  # nodule tissue, not lung (-850)
    return len(table)


def test_mixed_dataset_mixes_sizes_orientations_and_formats(tmp_path):
    paths, csv = make_dataset(tmp_path, n_scans=4, shape=(32, 96, 96), seed=6, mixed=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("1.")) == sorted(
        [p.name for p in paths] + [p.with_suffix(".raw").name for p in paths if p.suffix == ".mhd"]
    )
    images = [sitk.ReadImage(str(p)) for p in paths]
    sizes = [im.GetSize() for im in images]  # (X, Y, Z)
    assert len({(y, x) for x, y, _ in sizes}) == 4
    for x, y, z in sizes:  # drawn around (32, 96, 96) by factors 0.75 .. 1.25, Y <= X
        assert 24 <= z <= 40 and 72 <= y <= x <= 120
    # intended storage: LPS, RAS, LPS, RAS; formats mhd, mhd, nifti, nifti
    assert [im.GetDirection() for im in images] == [_LPS, _RAS, _LPS, _RAS]
    assert [p.name.endswith(".nii.gz") for p in paths] == [False, False, True, True]
    for p, im in zip(paths, images):
        assert im.GetPixelID() == sitk.sitkInt16
        if p.name.endswith(".nii.gz"):  # a real NIfTI: nibabel agrees on shape and world
            nii = nib.load(str(p))
            assert nii.shape == im.GetSize()
            ras = nib.aff2axcodes(nii.affine)
            assert ras == (("R", "A", "S") if im.GetDirection() == _RAS else ("L", "P", "S"))
            ijk = np.array([3.0, 5.0, 7.0])
            world_ras = nii.affine[:3, :3] @ ijk + nii.affine[:3, 3]
            world_lps = im.TransformContinuousIndexToPhysicalPoint(ijk.tolist())
            np.testing.assert_allclose(world_ras * [-1, -1, 1], world_lps, atol=1e-3)
    # seed 6 puts a nodule in every scan: each format x orientation pair is checked
    table = pd.read_csv(csv)
    assert table["seriesuid"].astype(str).nunique() == 4
    assert _assert_annotations_hit_nodules(paths, csv) >= 4


def test_explicit_shapes_orientations_and_formats_are_what_the_files_hold(tmp_path):
    shapes = [(20, 64, 80), (24, 72, 72), (28, 56, 64), (16, 80, 96)]
    codes = ["RAS", "lpi", "RPS", "LAS"]
    fmts = ["nifti", "mha", "mhd", "nifti"]
    paths, csv = make_dataset(
        tmp_path, n_scans=4, seed=1, shapes=shapes, orientations=codes, fmt=fmts
    )
    expected_diag = [(-1, -1, 1), (1, 1, -1), (-1, 1, 1), (1, -1, 1)]  # SimpleITK x, y, z
    suffixes = [".nii.gz", ".mha", ".mhd", ".nii.gz"]
    for p, shp, diag, suffix in zip(paths, shapes, expected_diag, suffixes):
        image = sitk.ReadImage(str(p))
        assert image.GetSize() == shp[::-1]
        np.testing.assert_array_equal(np.diag(np.reshape(image.GetDirection(), (3, 3))), diag)
        assert np.count_nonzero(image.GetDirection()) == 3
        assert p.name.endswith(suffix)
    assert _assert_annotations_hit_nodules(paths, csv) >= 1


@pytest.mark.parametrize("code", ["RAS", "LPI", "RAI"])
def test_stored_orientation_only_flips_the_array_never_the_world(tmp_path, code):
    """The same scan stored LPS and as ``code``: same voxels at the same world points."""
    common = {"n_scans": 1, "shapes": [(12, 40, 48)], "seed": 3}
    (lps,), csv_lps = make_dataset(tmp_path / "lps", **common)
    (other,), csv_other = make_dataset(tmp_path / "other", orientations=[code], **common)
    pd.testing.assert_frame_equal(pd.read_csv(csv_lps), pd.read_csv(csv_other))
    a, b = sitk.ReadImage(str(lps)), sitk.ReadImage(str(other))
    flips = tuple(2 - i for i, (letter, keep) in enumerate(zip(code, "LPS")) if letter != keep)
    arr_a, arr_b = sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b)
    np.testing.assert_array_equal(np.flip(arr_b, axis=flips), arr_a)
    for zyx in [(0, 0, 0), (11, 39, 47), (5, 17, 3)]:
        mirrored = [
            s - 1 - v if ax in flips else v for ax, (s, v) in enumerate(zip(arr_a.shape, zyx))
        ]
        pa = a.TransformIndexToPhysicalPoint([int(v) for v in zyx[::-1]])
        pb = b.TransformIndexToPhysicalPoint([int(v) for v in mirrored[::-1]])
        np.testing.assert_allclose(pa, pb, atol=1e-9)


def test_same_seed_same_files_and_mixed_keeps_the_scans_draws(tmp_path):
    def files(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    kw = {"n_scans": 4, "shape": (20, 48, 48), "mixed": True}
    make_dataset(tmp_path / "a", seed=2, **kw)
    make_dataset(tmp_path / "b", seed=2, **kw)
    make_dataset(tmp_path / "c", seed=3, **kw)
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert files(tmp_path / "a") != files(tmp_path / "c")
    # the mixed plan has its own random stream: spacings and uids equal the plain call's
    plain, _ = make_dataset(tmp_path / "plain", n_scans=4, shape=(20, 48, 48), seed=2)
    mixed, _ = make_dataset(tmp_path / "d", seed=2, **kw)
    assert [_uid(p) for p in plain] == [_uid(p) for p in mixed]
    for p, q in zip(plain, mixed):
        np.testing.assert_allclose(
            sitk.ReadImage(str(p)).GetSpacing(), sitk.ReadImage(str(q)).GetSpacing(), rtol=1e-6
        )


def _content_digest(paths, csv) -> str:
    """sha256 of what the files hold, read by SimpleITK: names, voxels, geometry, table.

    Independent of how the writers lay the bytes out (header key order, number formatting),
    so only a change of the generated content changes it.
    """
    h = hashlib.sha256()
    for p in paths:
        image = sitk.ReadImage(str(p))
        h.update(p.name.encode())
        h.update(sitk.GetArrayViewFromImage(image).astype("<i2").tobytes())
        geo = (*image.GetSpacing(), *image.GetOrigin(), *image.GetDirection())
        h.update(" ".join(f"{v:.6f}" for v in geo).encode())
    table = pd.read_csv(csv)
    h.update(table.to_csv(index=False, float_format="%.6f").encode())
    return h.hexdigest()


@pytest.mark.parametrize(
    ("kwargs", "digest"),
    [
        (
            {"n_scans": 2, "shape": (24, 48, 48), "seed": 0},
            "7fa24629e16b7832ba05ceb52fd4945d708340b20e7fa0ef4c2f9467c7796abd",
        ),
        (
            {
                "n_scans": 2,
                "shape": (20, 40, 44),
                "seed": 7,
                "spacing": (2.0, 0.7, 0.7),
                "fmt": "mha",
            },
            "159910409d128cadd5c57e44b654d7d78b88286152ab031b958a1565e396acb2",
        ),
    ],
    ids=["default", "spacing-mha"],
)
def test_the_old_call_writes_what_it_wrote_before_mixed_datasets(tmp_path, kwargs, digest):
    # digests computed from the generator as it was before shapes/orientations/mixed existed
    paths, csv = make_dataset(tmp_path / "old", **kwargs)
    assert _content_digest(paths, csv) == digest
    same, _ = make_dataset(
        tmp_path / "explicit", **kwargs, shapes=None, orientations=None, mixed=False
    )
    assert [p.read_bytes() for p in same] == [p.read_bytes() for p in paths]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_scans": 2, "shapes": [(16, 32, 32)]}, "shapes.*n_scans=2"),
        ({"n_scans": 1, "shapes": [(2, 32, 32)]}, r"shapes\[0\] must be at least"),
        ({"n_scans": 1, "shapes": "big"}, "shapes"),
        ({"n_scans": 1, "orientations": "XYZ"}, "orientation code 'XYZ'"),
        ({"n_scans": 1, "orientations": "PLS"}, "orientation code 'PLS'"),
        ({"n_scans": 1, "orientations": "LP"}, "orientation code"),
        ({"n_scans": 2, "orientations": ["LPS"]}, "orientations.*n_scans=2"),
        ({"n_scans": 1, "fmt": "png"}, "fmt must be one of"),
        ({"n_scans": 2, "fmt": ["mhd", "nii"]}, "fmt must be one of"),
        ({"n_scans": 2, "fmt": ["mhd"]}, "fmt.*n_scans=2"),
        ({"n_scans": 1, "mixed": "yes"}, "mixed"),
    ],
)
def test_bad_mixed_parameters_are_typed_errors_before_writing(tmp_path, kwargs, match):
    dst = tmp_path / "never"
    with pytest.raises(InvalidParameterError, match=match):
        make_dataset(dst, shape=(16, 32, 32), **kwargs)
    assert not dst.exists()
