"""The phantom generator: LIDC statistics, anatomy, and annotations right in world mm.

References: the LIDC statistics CSVs in ``../shared/data/real/lidc_stats`` (read only here, to
check the numbers carried into the package), SimpleITK's reading of the written files and its
``TransformPhysicalPointToIndex``.
"""

from __future__ import annotations

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
