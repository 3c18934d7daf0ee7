"""Tests of ctflow.kernels.warp against a voxel-by-voxel numpy reference.

The reference evaluates the four steps literally: ``p = P o``, ``p += D(p)`` with ``D`` the sum
over *every* control point of ``B(u0 - i) B(u1 - j) B(u2 - k) coef[:, i, j, k]`` (no support
bookkeeping), ``s = Q p``, then samples (trilinear with the edge clamped within half a voxel,
or ``floor(s + 0.5)``; ``cval`` outside ``[-0.5, n - 0.5)``). Frames aligned with the output
rows along each of the three frame axes (the separable per-row path) and rotated frames (the
64-point path) are covered, with and without coefficients, float and integer volumes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctflow.kernels.affine import affine_linear, affine_nearest
from ctflow.kernels.warp import (
    MIN_SEGMENT,
    bspline_displacement,
    compose,
    row_axis,
    warp_linear,
    warp_nearest,
)
from ctflow.threads import run_ranges


def _bspline(t: np.ndarray) -> np.ndarray:
    """The centred cubic B-spline."""
    a = np.abs(t)
    return np.where(
        a < 1.0, 2.0 / 3.0 - a**2 + a**3 / 2.0, np.where(a < 2.0, (2.0 - a) ** 3 / 6.0, 0.0)
    )


def _naive_displacement(coef, origin, step, points):
    """D at (n, 3) points: the sum over every control point of the grid."""
    _, n0, n1, n2 = coef.shape
    u = (np.asarray(points, np.float64) - origin) / step
    b0 = _bspline(u[:, 0:1] - np.arange(n0))  # (n, n0)
    b1 = _bspline(u[:, 1:2] - np.arange(n1))
    b2 = _bspline(u[:, 2:3] - np.arange(n2))
    return np.einsum("pi,pj,pk,cijk->pc", b0, b1, b2, coef.astype(np.float64))


def _naive_sources(p, q, coef, origin, step, shape):
    o = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    f = o @ p[:, :3].T + p[:, 3]
    if coef is not None:
        f = f + _naive_displacement(coef, origin, step, f)
    return f @ q[:, :3].T + q[:, 3]


def _naive_sample(src, s, order, cval):
    """Values at sources ``s`` (n, 3) and the mask of ambiguous voxels (ties, edges)."""
    n = np.asarray(src.shape, np.float64)
    inside = np.all((s >= -0.5) & (s < n - 0.5), axis=1)
    # a source within float noise of the extent's edge, or of a rounding tie, may go either way
    near = np.abs(np.concatenate([s + 0.5, s - (n - 0.5)], axis=1)).min(axis=1) < 1e-6
    vals = np.full(len(s), cval, np.float64)
    v = src.astype(np.float64)
    for k in np.flatnonzero(inside):
        if order == 0:
            r = np.floor(s[k] + 0.5)
            near[k] |= bool(np.any(np.abs(s[k] + 0.5 - np.round(s[k] + 0.5)) < 1e-6))
            vals[k] = v[tuple(r.astype(int))]
            continue
        f = np.clip(s[k], 0.0, n - 1.0)
        i = np.minimum(np.floor(f), np.maximum(n - 2, 0)).astype(int)
        w = np.where(n > 1, f - i, 0.0)
        j = np.where(n > 1, i + 1, i)
        acc = 0.0
        for dz in (0, 1):
            for dy in (0, 1):
                for dx in (0, 1):
                    idx = (j[0] if dz else i[0], j[1] if dy else i[1], j[2] if dx else i[2])
                    wt = (
                        (w[0] if dz else 1 - w[0])
                        * (w[1] if dy else 1 - w[1])
                        * (w[2] if dx else 1 - w[2])
                    )
                    acc += wt * v[idx]
        vals[k] = acc
    return vals, near


def _rotation(rng, degrees):
    a = np.deg2rad(rng.uniform(-degrees, degrees, 3))
    out = np.eye(3)
    for i, j, t in ((0, 1, a[0]), (0, 2, a[1]), (1, 2, a[2])):
        r = np.eye(3)
        r[i, i] = r[j, j] = math.cos(t)
        r[i, j], r[j, i] = -math.sin(t), math.sin(t)
        out = out @ r
    return out


def _case(kind, rng, src_shape, out_shape, coarse=False):
    """P (output index -> frame mm), Q (frame mm -> source index) and a control grid.

    The fine grid (a control point every ~3 voxels) makes oblique rows sum their 64 control
    points voxel by voxel; the coarse one (every ~14 voxels) builds one polynomial per cell.
    """
    sp_src = rng.uniform(0.7, 1.6, 3)
    sp_out = rng.uniform(0.7, 1.6, 3)
    centre_src = (np.asarray(src_shape) - 1) / 2 * sp_src
    if kind == "aligned":  # the output grid is the frame, cropped
        lin = np.diag(sp_out)
    elif kind == "permuted z":  # rows along frame axis 0 (x flipped, axes permuted)
        lin = np.diag(sp_out)[[2, 0, 1]] * np.array([1.0, 1.0, -1.0])
    elif kind == "permuted y":
        lin = np.diag(sp_out)[[0, 2, 1]] * np.array([1.0, -1.0, 1.0])
    elif kind == "rotated yx":  # oblique rows, constant along frame axis 0
        a = np.deg2rad(rng.uniform(10.0, 30.0))
        r = np.array([[1.0, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        lin = r @ np.diag(sp_out)
    else:  # rotated about all three axes
        lin = _rotation(rng, 25) @ np.diag(sp_out)
    shift = rng.uniform(-1.0, 1.0, 3)
    p = np.hstack([lin, (centre_src + shift - lin @ ((np.asarray(out_shape) - 1) / 2))[:, None]])
    rot = _rotation(rng, 10)  # frame -> source: another small rotation and the spacing
    q_lin = np.diag(1.0 / sp_src) @ rot
    q = np.hstack([q_lin, (-q_lin @ centre_src + (np.asarray(src_shape) - 1) / 2)[:, None]])
    extent = np.asarray(src_shape) * sp_src
    step = np.full(3, 14.0) if coarse else extent / 3.0
    origin = -step + rng.uniform(-0.5, 0.5, 3) * step
    n_ctrl = (6, 5, 7)
    coef = rng.uniform(-1.0, 1.0, (3, *n_ctrl)).astype(np.float32) * np.float32(0.3 * step.min())
    return p, q, coef, origin, step


KINDS = ["aligned", "permuted z", "permuted y", "rotated yx", "rotated"]


def _run(kernel_order, src, out, p, q, coef, origin, step, cval, round_out=False):
    if kernel_order == 1:
        warp_linear(src, out, p, q, coef, origin, step, cval, 0, out.shape[0], round_out)
    else:
        warp_nearest(src, out, p, q, coef, origin, step, out.dtype.type(cval), 0, out.shape[0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
@pytest.mark.parametrize("elastic", ["fine", "coarse", None])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernels_equal_the_voxel_by_voxel_reference(kind, order, dtype, elastic, seed):
    rng = np.random.default_rng(seed)
    src_shape, out_shape = (7, 9, 8), (6, 8, 10)
    p, q, coef, origin, step = _case(kind, rng, src_shape, out_shape, elastic == "coarse")
    if kind.startswith("rotated"):  # the 64-point sums (fine grid) or cell polynomials (coarse)
        oblique = np.abs(p[:, 2] / step).max() * MIN_SEGMENT > 1.0
        assert oblique == (elastic != "coarse")
    src = (rng.normal(0.0, 300.0, src_shape)).astype(dtype)
    cval = -1000.0
    use = coef if elastic else np.zeros((3, 0, 0, 0), np.float32)
    out = np.empty(out_shape, dtype)
    round_out = np.dtype(dtype).kind in "iu"
    _run(order, src, out, p, q, use, origin, step, cval, round_out)
    s = _naive_sources(p, q, coef if elastic else None, origin, step, out_shape)
    ref, near = _naive_sample(src, s, order, cval)
    if round_out:
        near |= np.abs(np.abs(ref) % 1.0 - 0.5) < 1e-3  # rounding ties
        ref = np.sign(ref) * np.floor(np.abs(ref) + 0.5)
    got = out.ravel().astype(np.float64)
    ok = ~near
    assert ok.mean() > 0.97
    np.testing.assert_allclose(got[ok], ref[ok], atol=2e-3, rtol=1e-5)
    inside = ref != cval
    assert 0.2 < inside.mean() < 1.0  # both inside and outside voxels are exercised


@pytest.mark.parametrize("kind", KINDS)
def test_row_axis_picks_the_separable_path(kind):
    rng = np.random.default_rng(5)
    p, *_, step = _case(kind, rng, (7, 9, 8), (6, 8, 10))
    expected = {"aligned": 2, "permuted z": 0, "permuted y": 1}.get(kind, -1)
    assert row_axis(p, step, 10) == expected
    p90 = p.copy()
    p90[0, 2] = 1e-17  # what a 90-degree rotation leaves behind
    if kind == "aligned":
        assert row_axis(p90, step, 10) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_without_coefficients_the_kernels_are_the_affine_ones(kind):
    rng = np.random.default_rng(11)
    p, q, _, origin, step = _case(kind, rng, (7, 9, 8), (6, 8, 10))
    src = rng.normal(0.0, 300.0, (7, 9, 8)).astype(np.float32)
    empty = np.zeros((3, 0, 0, 0), np.float32)
    m = compose(p, q)
    np.testing.assert_allclose(m, np.hstack([q[:, :3] @ p[:, :3], q @ np.r_[p[:, 3], 1][:, None]]))
    a, b = np.empty((6, 8, 10), np.float32), np.empty((6, 8, 10), np.float32)
    warp_linear(src, a, p, q, empty, origin, step, -1000.0, 0, 6, False)
    affine_linear(src, b, m, -1000.0, 0, 6, False)
    np.testing.assert_array_equal(a, b)
    lab = rng.integers(0, 5, (7, 9, 8)).astype(np.uint8)
    c, d = np.empty((6, 8, 10), np.uint8), np.empty((6, 8, 10), np.uint8)
    warp_nearest(lab, c, p, q, empty, origin, step, np.uint8(0), 0, 6)
    affine_nearest(lab, d, m, np.uint8(0), 0, 6)
    np.testing.assert_array_equal(c, d)
    # zero coefficients: the elastic path, but the same map
    zeros = np.zeros((3, 4, 4, 4), np.float32)
    e = np.empty((6, 8, 10), np.float32)
    warp_linear(src, e, p, q, zeros, origin, step, -1000.0, 0, 6, False)
    np.testing.assert_allclose(e, a, atol=1e-3)


def test_bspline_displacement_equals_the_naive_sum():
    rng = np.random.default_rng(2)
    coef = rng.uniform(-3, 3, (3, 5, 6, 4)).astype(np.float32)
    origin = np.array([-4.0, 1.0, -2.0])
    step = np.array([3.0, 2.5, 4.0])
    extent = origin + step * (np.array(coef.shape[1:]) - 1)
    # inside, in the fading band (within 2 steps outside), and far outside the grid
    pts = rng.uniform(origin - 2.5 * step, extent + 2.5 * step, (400, 3))
    pts[:5] = origin + step * np.array([[0, 0, 0], [1, 2, 3], [4, 5, 3], [2, 2, 2], [-2, 7, 5]])
    got = bspline_displacement(coef, origin, step, pts)
    ref = _naive_displacement(coef, origin, step, pts)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    far = np.any((pts < origin - 2 * step) | (pts > extent + 2 * step), axis=1)
    assert far.any() and np.all(got[far] == 0.0)
    assert not bspline_displacement(np.zeros((3, 0, 0, 0), np.float32), origin, step, pts).any()


@pytest.mark.parametrize("kind", ["aligned", "rotated"])
@pytest.mark.parametrize("order", [0, 1])
def test_splitting_planes_across_threads_gives_the_same_volume(kind, order):
    rng = np.random.default_rng(4)
    p, q, coef, origin, step = _case(kind, rng, (7, 9, 8), (11, 8, 10))
    src = rng.normal(0.0, 300.0, (7, 9, 8)).astype(np.float32)
    whole = np.empty((11, 8, 10), np.float32)
    _run(order, src, whole, p, q, coef, origin, step, -1000.0)
    parts = np.full((11, 8, 10), np.nan, np.float32)

    def part(z0, z1):
        if order == 1:
            warp_linear(src, parts, p, q, coef, origin, step, -1000.0, z0, z1, False)
        else:
            warp_nearest(src, parts, p, q, coef, origin, step, np.float32(-1000.0), z0, z1)

    run_ranges(part, 11, 3, per_thread=2)
    np.testing.assert_array_equal(parts, whole)
    one = np.full((11, 8, 10), np.nan, np.float32)
    if order == 1:
        warp_linear(src, one, p, q, coef, origin, step, -1000.0, 3, 4, False)
    else:
        warp_nearest(src, one, p, q, coef, origin, step, np.float32(-1000.0), 3, 4)
    np.testing.assert_array_equal(one[3], whole[3])
    assert np.isnan(one[:3]).all() and np.isnan(one[4:]).all()
