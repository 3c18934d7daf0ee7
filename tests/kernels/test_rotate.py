"""Tests of ctflow.kernels.rotate against a pixel-by-pixel numpy/Python reference.

Kernel level: any 2x2 matrix (shears and scalings too, not only rotations), every plane of a
C-ordered volume through flat arrays and element strides, plane ranges ``[p0, p1)`` (empty,
one plane, ranges crossing the :data:`PLANE_BLOCK` / :data:`PLANE_GROUP` boundaries) and
one-row planes. ``rotate`` itself (scipy / SimpleITK agreement, dtypes, spacing) is tested in
tests/ops/test_spatial.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctflow.kernels.rotate import (
    PLANE_BLOCK,
    PLANE_GROUP,
    rotate_bilinear,
    rotate_nearest,
    row_ranges,
)

MATRICES = [
    (math.cos(0.3), math.sin(0.3), -math.sin(0.3), math.cos(0.3)),  # a rotation
    (0.0, 1.0, -1.0, 0.0),  # 90 degrees: exact integer sources
    (0.9, 0.35, -1.6, 0.7),  # rotation in mm on unequal spacings: not orthogonal
    (1.0, 0.4, 0.0, 1.0),  # a shear
    (1.7, 0.0, 0.0, 0.6),  # a scaling
]


def _sources(i, j, na, nb, m):
    """Source coordinates of output (i, j), with the kernels' arithmetic."""
    m_aa, m_ab, m_ba, m_bb = m
    ca, cb = (na - 1) * 0.5, (nb - 1) * 0.5
    fa = (m_aa * (i - ca) - m_ab * cb + ca) + m_ab * j
    fb = (m_ba * (i - ca) - m_bb * cb + cb) + m_bb * j
    return fa, fb


def _inside(fa, fb, na, nb):
    return 0.0 <= fa <= na - 1.0 and 0.0 <= fb <= nb - 1.0


def _naive(vol, m, order, cval, round_out):
    """``vol`` (P, A, B): every output pixel pulled from its source, planes independent."""
    _, na, nb = vol.shape
    out = np.empty(vol.shape, np.float64)
    for i in range(na):
        for j in range(nb):
            fa, fb = _sources(i, j, na, nb, m)
            if not _inside(fa, fb, na, nb):
                out[:, i, j] = cval
                continue
            if order == 0:
                v = vol[:, math.floor(fa + 0.5), math.floor(fb + 0.5)].astype(np.float64)
            else:
                ia, ib = int(fa), int(fb)
                wa, wb = fa - ia, fb - ib
                ia1, ib1 = min(ia + 1, na - 1), min(ib + 1, nb - 1)
                v = (1 - wa) * ((1 - wb) * vol[:, ia, ib] + wb * vol[:, ia, ib1]) + wa * (
                    (1 - wb) * vol[:, ia1, ib] + wb * vol[:, ia1, ib1]
                )
            out[:, i, j] = (
                np.where(v >= 0, np.floor(v + 0.5), -np.floor(0.5 - v)) if round_out else v
            )
    return out


@pytest.mark.parametrize("m", MATRICES)
@pytest.mark.parametrize(("na", "nb"), [(7, 9), (1, 6), (6, 1), (2, 2)])
def test_row_ranges_are_the_inside_pixels_of_each_row(m, na, nb):
    lo, hi = row_ranges(na, nb, *m)
    for i in range(na):
        inside = [j for j in range(nb) if _inside(*_sources(i, j, na, nb, m), na, nb)]
        assert inside == list(range(lo[i], hi[i])), (i, inside, lo[i], hi[i])


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("m", MATRICES)
def test_every_plane_matches_the_reference(order, m, rng):
    vol = rng.integers(-1000, 1000, (3, 11, 13)).astype(np.int16)
    out = np.zeros(vol.shape, np.float32)
    kernel = rotate_bilinear if order == 1 else rotate_nearest
    n_p, na, nb = vol.shape
    kernel(vol.ravel(), out.ravel(), na, nb, na * nb, nb, 1, 0, n_p, *m, -1000.0, False)
    ref = _naive(vol, m, order, -1000.0, False)
    if order == 0:
        np.testing.assert_array_equal(out, ref)
    else:
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=2e-3)


@pytest.mark.parametrize("plane", [(1, 2), (0, 2), (0, 1)])
def test_strides_select_the_plane_and_round_integer_outputs(plane, rng):
    vol = rng.integers(-500, 500, (6, 7, 8)).astype(np.int16)
    a, b = plane
    p = 3 - a - b
    elem = np.asarray(vol.strides) // vol.itemsize
    out = np.zeros(vol.shape, np.int16)
    m = MATRICES[2]
    na, nb = vol.shape[a], vol.shape[b]
    rotate_bilinear(
        vol.ravel(), out.ravel(), na, nb, int(elem[p]), int(elem[a]), int(elem[b]),
        0, vol.shape[p], *m, -7.0, True,
    )  # fmt: skip
    view = np.transpose(vol, (p, a, b))
    ref = _naive(view, m, 1, -7.0, True)
    got = np.transpose(out, (p, a, b)).astype(np.float64)
    close = np.abs(got - ref) <= 1  # float32 vs float64 may round a near-.5 value apart
    assert close.all() and (got == ref).mean() > 0.99


@pytest.mark.parametrize(
    ("p0", "p1"), [(0, 0), (5, 6), (3, PLANE_GROUP + 5), (PLANE_BLOCK - 2, PLANE_BLOCK + 3)]
)
def test_only_planes_of_the_range_are_written(p0, p1, rng):
    n_p = PLANE_BLOCK + 6
    vol = rng.standard_normal((n_p, 5, 6)).astype(np.float32)
    out = np.full(vol.shape, 99.0, np.float32)
    m = MATRICES[0]
    rotate_nearest(vol.ravel(), out.ravel(), 5, 6, 30, 6, 1, p0, p1, *m, 0.0, False)
    np.testing.assert_array_equal(out[:p0], 99.0)
    np.testing.assert_array_equal(out[p1:], 99.0)
    np.testing.assert_array_equal(out[p0:p1], _naive(vol[p0:p1], m, 0, 0.0, False))
