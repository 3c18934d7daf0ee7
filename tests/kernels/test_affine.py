"""The affine resampling kernels (:mod:`ctflow.kernels.affine`) against naive references.

:func:`affine_linear` is compared with ``scipy.ndimage.affine_transform(order=1, mode="nearest")``
(the same continuous source index ``M[:, :3] @ o + M[:, 3]``; mode "nearest" is the kernel's
clamp of sources within half a voxel of the edge) and :func:`affine_nearest` with the index
``floor(src + 0.5)`` read voxel by voxel; both give ``cval`` where the source leaves
``[-0.5, n - 0.5)``. The kernels are called directly, on arrays the ops never hand them
(non-contiguous int16, size-1 axes, float64 outputs, part of the planes).

Elsewhere: tests/ops/test_affine.py checks ``resample_to`` / ``resample_matrix`` (which make the
source contiguous first and send diagonal maps to the separable kernels, never here), and
tests/kernels/test_warp.py checks that the warp kernels without coefficients equal these ones.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctflow.kernels.affine import affine_linear, affine_nearest, inside_range
from ctflow.threads import run_ranges

pytestmark = pytest.mark.timeout(120)

#: Sources closer than this to the inside/outside boundary (``-0.5`` or ``n - 0.5``) or to a
#: nearest-neighbour tie (``k + 0.5``) are left out of the voxel-by-voxel comparisons: there the
#: kernel (which steps the position along the row) and the reference (one matrix product) may
#: see the two sides of the boundary through float64 rounding (~1e-13 here), and the kernel
#: deliberately treats ties a hair below .5 as ties (see
#: test_nearest_ties_round_up_even_a_hair_below_one_half).
NEAR = 1e-7


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    out = np.eye(3)
    for k, (i, j) in enumerate(((1, 2), (0, 2), (0, 1))):
        r = np.eye(3)
        c, s = np.cos(a[k]), np.sin(a[k])
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = out @ r
    return out


def _random_map(rng, src_shape, out_shape, max_deg=35.0) -> np.ndarray:
    """A 3x4 map (rotation, scale, shift) that puts the output grid across the source's edge."""
    lin = _rotation(rng, max_deg) * rng.uniform(0.6, 1.4, 3)[None, :]
    centre_src = (np.asarray(src_shape) - 1) / 2
    centre_out = (np.asarray(out_shape) - 1) / 2
    shift = rng.uniform(-0.25, 0.25, 3) * np.asarray(src_shape)
    return np.ascontiguousarray(np.hstack([lin, (centre_src + shift - lin @ centre_out)[:, None]]))


def _sources(m: np.ndarray, out_shape) -> np.ndarray:
    idx = np.indices(out_shape).reshape(3, -1).astype(np.float64)
    return m[:, :3] @ idx + m[:, 3:4]


def _inside(s: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Inside the source (``[-0.5, n - 0.5)`` on every axis), and near that boundary."""
    n = np.asarray(shape, dtype=np.float64)[:, None]
    inside = np.all((s >= -0.5) & (s < n - 0.5), axis=0)
    near = np.any((np.abs(s + 0.5) < NEAR) | (np.abs(s - (n - 0.5)) < NEAR), axis=0)
    return inside, near


def _linear_reference(src, m, out_shape, cval) -> np.ndarray:
    ref = ndi.affine_transform(
        src.astype(np.float64),
        m[:, :3],
        offset=m[:, 3],
        output_shape=out_shape,
        order=1,
        mode="nearest",
    ).ravel()
    inside, _ = _inside(_sources(m, out_shape), src.shape)
    ref[~inside] = cval
    return ref


def _nearest_reference(src, m, out_shape, cval) -> tuple[np.ndarray, np.ndarray]:
    """The naive nearest sample (voxel by voxel) and where a voxel is near a tie or the edge."""
    s = _sources(m, out_shape)
    inside, near = _inside(s, src.shape)
    frac = s - np.floor(s)
    near |= np.any(np.abs(frac - 0.5) < NEAR, axis=0)
    flat = src.ravel().tolist()  # python ints/floats: read one voxel at a time
    _, ny, nx = src.shape
    ref = np.full(s.shape[1], cval, dtype=np.float64)
    for k in np.flatnonzero(inside):
        iz, iy, ix = (int(np.floor(s[a, k] + 0.5)) for a in range(3))
        ref[k] = flat[(iz * ny + iy) * nx + ix]
    return ref, near


def _round_half_away(v: np.ndarray) -> np.ndarray:
    return np.where(v >= 0, np.floor(v + 0.5), -np.floor(0.5 - v))


def _volume(rng, shape, dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return rng.normal(0.0, 400.0, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1500), shape, endpoint=True).astype(
        dtype
    )


# ------------------------------------------------------------------------------- inside_range
@pytest.mark.parametrize("seed", range(6))
def test_inside_range_is_the_brute_force_range(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        n = int(rng.integers(0, 40))
        lo = float(rng.uniform(-3, 3))
        hi = lo + float(rng.choice([rng.uniform(0, 20), 0.0, -1.0]))  # empty when hi < lo
        s0 = float(rng.uniform(-30, 30))
        step = float(rng.choice([rng.uniform(-3, 3), 0.0, 1.0, -1.0, 1e-13]))
        a, b = inside_range(s0, step, lo, hi, n)
        ok = [x for x in range(n) if lo <= s0 + step * x <= hi]
        if ok:
            # the set is a run of consecutive x (the position is affine in x)
            assert (a, b) == (ok[0], ok[-1] + 1)
        else:
            assert a >= b
        assert 0 <= a <= n and 0 <= b <= n


def test_inside_range_ends_exactly_on_the_bounds():
    # positions that land exactly on lo and hi are inside (closed interval)
    assert inside_range(-0.5, 0.5, -0.5, 3.5, 20) == (0, 9)
    assert inside_range(3.5, -0.5, -0.5, 3.5, 20) == (0, 9)
    assert inside_range(2.0, 0.0, -0.5, 3.5, 7) == (0, 7)  # constant inside
    assert inside_range(4.0, 0.0, -0.5, 3.5, 7)[0] >= inside_range(4.0, 0.0, -0.5, 3.5, 7)[1]


# ------------------------------------------------------------------------------- trilinear
LINEAR_CASES = [
    # source dtype, output dtype
    (np.float32, np.float32),
    (np.int16, np.float32),
    (np.uint8, np.float32),
    (np.float64, np.float64),
    (np.int16, np.int16),  # integer outputs: rounded half away from zero
    (np.uint16, np.int32),
]


@pytest.mark.parametrize(("src_dtype", "out_dtype"), LINEAR_CASES)
@pytest.mark.parametrize("seed", range(3))
def test_linear_equals_affine_transform_across_the_edge(src_dtype, out_dtype, seed):
    rng = np.random.default_rng(100 + seed)
    src_shape = tuple(int(v) for v in rng.integers(3, 14, 3))
    out_shape = tuple(int(v) for v in rng.integers(3, 16, 3))
    src = _volume(rng, src_shape, src_dtype)
    m = _random_map(rng, src_shape, out_shape)
    cval = -1000.0 if np.dtype(out_dtype).kind != "u" else 0.0
    out = np.empty(out_shape, out_dtype)
    round_out = np.dtype(out_dtype).kind in "iu"
    affine_linear(src, out, m, cval, 0, out_shape[0], round_out)
    ref = _linear_reference(src, m, out_shape, cval)
    s = _sources(m, out_shape)
    inside, near = _inside(s, src_shape)
    assert 0.05 < inside.mean() < 0.98  # rows start outside ...
    n = np.asarray(src_shape)[:, None]
    band = inside & np.any((s < 0) | (s > n - 1), axis=0)
    assert band.any()  # ... cross the half-voxel band where taps are clamped, and the core
    got = out.ravel().astype(np.float64)
    keep = ~near
    if round_out:
        ties = np.abs(np.abs(ref - np.trunc(ref)) - 0.5) < 1e-9  # float64 noise decides a tie
        keep &= ~ties
        np.testing.assert_array_equal(got[keep], _round_half_away(ref)[keep])
    elif out_dtype == np.float32:
        # the kernel computes in float64 and rounds once to float32 (at most half an ulp,
        # i.e. 2**-24 relative); the two float64 evaluations differ only by operation order
        # (~1e-13 absolute at these magnitudes): 1 ulp relative + 1e-9 absolute covers both
        np.testing.assert_allclose(got[keep], ref[keep], rtol=2.0**-23, atol=1e-9)
    else:  # float64 output: operation order alone
        np.testing.assert_allclose(got[keep], ref[keep], rtol=1e-13, atol=1e-9)
    assert keep.mean() > 0.97


@pytest.mark.parametrize("seed", range(4))
def test_linear_reads_a_non_contiguous_int16_source(seed):
    # the ops copy a non-contiguous source first; the kernel itself takes any layout
    rng = np.random.default_rng(200 + seed)
    big = _volume(rng, (14, 40, 34), np.int16)
    src = big[::-1, ::2, 1::2]  # (14, 20, 17): reversed planes, strided rows and columns
    assert not src.flags.c_contiguous
    out_shape = (12, 21, 18)
    m = _random_map(rng, src.shape, out_shape)
    out = np.empty(out_shape, np.float32)
    affine_linear(src, out, m, -1000.0, 0, out_shape[0], False)
    ref = _linear_reference(np.ascontiguousarray(src), m, out_shape, -1000.0)
    _, near = _inside(_sources(m, out_shape), src.shape)
    np.testing.assert_allclose(out.ravel()[~near], ref[~near], rtol=2.0**-23, atol=1e-9)
    rounded = np.empty(out_shape, np.int16)
    affine_linear(src, rounded, m, -1000.0, 0, out_shape[0], True)
    ties = np.abs(np.abs(ref - np.trunc(ref)) - 0.5) < 1e-9
    keep = ~near & ~ties
    np.testing.assert_array_equal(rounded.ravel()[keep], _round_half_away(ref)[keep])
    # and the same as from a contiguous copy, voxel for voxel
    again = np.empty(out_shape, np.float32)
    affine_linear(np.ascontiguousarray(src), again, m, -1000.0, 0, out_shape[0], False)
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("src_shape", [(1, 6, 7), (5, 1, 4), (4, 6, 1), (1, 1, 5), (1, 1, 1)])
def test_linear_on_size_one_axes_is_constant_along_them(src_shape):
    # a single voxel along an axis: no neighbour to interpolate with, the edge value
    rng = np.random.default_rng(7)
    src = rng.normal(0.0, 100.0, src_shape).astype(np.float32)
    out_shape = (4, 5, 6)
    m = _random_map(rng, src_shape, out_shape, max_deg=20.0)
    out = np.empty(out_shape, np.float32)
    affine_linear(src, out, m, -1000.0, 0, out_shape[0], False)
    ref = _linear_reference(src, m, out_shape, -1000.0)
    _, near = _inside(_sources(m, out_shape), src_shape)
    np.testing.assert_allclose(out.ravel()[~near], ref[~near], rtol=2.0**-23, atol=1e-9)


# ------------------------------------------------------------------------------- nearest
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.int32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_nearest_equals_the_voxel_by_voxel_reference(dtype, seed):
    rng = np.random.default_rng(300 + seed)
    src_shape = tuple(int(v) for v in rng.integers(2, 12, 3))
    out_shape = tuple(int(v) for v in rng.integers(3, 14, 3))
    src = _volume(rng, src_shape, dtype)
    if seed == 2:
        src = np.asfortranarray(src)  # another layout
    m = _random_map(rng, src_shape, out_shape)
    cval = dtype(0)
    out = np.empty(out_shape, dtype)
    affine_nearest(src, out, m, cval, 0, out_shape[0])
    ref, near = _nearest_reference(src, m, out_shape, float(cval))
    # copied, never computed: exactly equal
    np.testing.assert_array_equal(out.ravel()[~near], ref[~near].astype(dtype))
    assert (~near).mean() > 0.97


def test_nearest_ties_round_up_even_a_hair_below_one_half():
    # ITK's nearest index floor(s + 0.5): a tie goes up, also when the position arithmetic
    # lands a hair below it (0.7 * 1 - 0.2 = 0.49999999999999994 in float64)
    src = np.arange(6, dtype=np.int16).reshape(1, 1, 6)
    m = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.7, -0.2]])
    assert 0.7 * 1 - 0.2 < 0.5
    out = np.empty((1, 1, 8), np.int16)
    affine_nearest(src, out, m, np.int16(-1), 0, 1)
    # x = 0..7 -> sources -0.2, 0.5 (a hair below), 1.2, 1.9, 2.6, 3.3, 4.0, 4.7
    assert out.ravel().tolist() == [0, 1, 1, 2, 3, 3, 4, 5]
    half = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, 0.0]])
    out = np.empty((1, 1, 12), np.int16)
    affine_nearest(src, out, half, np.int16(-1), 0, 1)
    # 0, .5, 1, 1.5 ... 5.5: ties up; 5.5 is outside ([-0.5, 5.5))
    assert out.ravel().tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, -1]


# ------------------------------------------------------------------------------- both
@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_identity_permutation_and_flip_are_exact(dtype):
    rng = np.random.default_rng(11)
    src = _volume(rng, (5, 7, 6), dtype)
    nz = src.shape[0]
    identity = np.hstack([np.eye(3), np.zeros((3, 1))])
    # output (z, y, x) reads source (nz - 1 - z, x, y): z reversed, x and y swapped
    perm = np.array([[-1.0, 0, 0, nz - 1], [0, 0, 1.0, 0], [0, 1.0, 0, 0]])
    expected = np.transpose(src[::-1], (0, 2, 1))
    round_out = np.dtype(dtype).kind in "iu"
    for m, want in ((identity, src), (perm, expected)):
        lin = np.empty(want.shape, dtype)
        affine_linear(src, lin, m, -1000.0, 0, want.shape[0], round_out)
        near = np.empty(want.shape, dtype)
        affine_nearest(src, near, m, dtype(-1000), 0, want.shape[0])
        np.testing.assert_array_equal(lin, want)
        np.testing.assert_array_equal(near, want)


@pytest.mark.parametrize("order", [0, 1])
def test_only_planes_z0_to_z1_are_written_and_splitting_changes_nothing(order):
    rng = np.random.default_rng(12)
    src = _volume(rng, (9, 11, 10), np.float32)
    out_shape = (13, 12, 11)
    m = _random_map(rng, src.shape, out_shape)

    def run(out, z0, z1):
        if order == 1:
            affine_linear(src, out, m, -1000.0, z0, z1, False)
        else:
            affine_nearest(src, out, m, np.float32(-1000.0), z0, z1)

    whole = np.empty(out_shape, np.float32)
    run(whole, 0, out_shape[0])
    part = np.full(out_shape, np.nan, np.float32)
    run(part, 4, 7)
    np.testing.assert_array_equal(part[4:7], whole[4:7])
    assert np.isnan(part[:4]).all() and np.isnan(part[7:]).all()
    split = np.full(out_shape, np.nan, np.float32)
    run_ranges(lambda a, b: run(split, a, b), out_shape[0], 3, per_thread=2)
    np.testing.assert_array_equal(split, whole)


def test_a_grid_entirely_outside_is_cval():
    src = np.ones((4, 4, 4), np.float32)
    m = np.hstack([np.eye(3), np.full((3, 1), 10.0)])  # every source index >= 10
    out = np.zeros((3, 3, 3), np.float32)
    affine_linear(src, out, m, -7.0, 0, 3, False)
    assert (out == -7.0).all()
    lab = np.zeros((3, 3, 3), np.uint8)
    affine_nearest(src.astype(np.uint8), lab, m, np.uint8(9), 0, 3)
    assert (lab == 9).all()
