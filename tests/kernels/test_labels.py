"""Tests of ctflow.kernels.labels against naive numpy references, and of LabelVoxels on top.

Kernel level: :func:`slice_counts` against ``np.bincount`` of each row and :func:`kth_voxel`
against ``np.flatnonzero(row == v)[k]``, on random uint8 / uint16 maps (values changing at
every voxel), maps of long runs (whole 64-bit words of one value), the extreme labels 0, 255
and 65535, and layouts where :func:`words_of` has no words to give (odd row lengths, rows not
on a word boundary) so the kernels go element by element. ``counts`` is exactly
``max + 1`` wide, as :class:`~ctflow.ops.crop.LabelVoxels` now sizes it.

:class:`~ctflow.ops.crop.LabelVoxels`: counts sized by the largest label (not 65536 columns for
a uint16 map), draws that hit only voxels of the label and are uniform over them (a chi-square
test, fixed seed, loose bound), and the error on a label with no voxels.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from ctflow.errors import InvalidParameterError
from ctflow.kernels.labels import kth_voxel, slice_counts, words_of
from ctflow.ops.crop import LabelVoxels

DTYPES = [np.uint8, np.uint16]
#: (Z, N): N a multiple of 8 (whole words for both dtypes), of 4 only (uint16 whole, uint8
#: odd), and odd (no whole words), plus a row shorter than one word
SHAPES = [(5, 64), (4, 36), (3, 37), (6, 3)]


# -- naive references ---------------------------------------------------------------------------
def _counts(flat, n_values):
    """``counts[z, v]``: how many elements of row ``z`` equal ``v`` (np.bincount per row)."""
    out = np.zeros((flat.shape[0], n_values), np.int64)
    for z, row in enumerate(flat):
        out[z] = np.bincount(row, minlength=n_values)
    return out


def _kth(row, value, k):
    """Index of the ``k``-th element of ``row`` equal to ``value``; -1 when there is none."""
    hits = np.flatnonzero(row == value)
    return int(hits[k]) if k < hits.size else -1


# -- maps ---------------------------------------------------------------------------------------
def _top(dtype):
    return int(np.iinfo(dtype).max)


def _noise(rng, shape, dtype):
    """A value change at almost every element; the extreme labels included."""
    values = np.array([0, 1, 2, 7, 255, _top(dtype)], dtype)
    return values[rng.integers(0, values.size, shape)]


def _runs(rng, shape, dtype):
    """Long runs of one value (whole words of it), some short ones between, across rows."""
    values = np.array([0, 3, 255, _top(dtype)], dtype)
    n = int(np.prod(shape))
    out = np.empty(n, dtype)
    pos = 0
    while pos < n:
        length = int(rng.choice([1, 2, 5, 9, 17, 40, 100]))
        out[pos : pos + length] = values[rng.integers(values.size)]
        pos += length
    return out.reshape(shape)


def _constant(rng, shape, dtype):
    """One value everywhere: every word continues the first run."""
    return np.full(shape, _top(dtype), dtype)


MAPS = [_noise, _runs, _constant]


def _unaligned(a):
    """A C-contiguous copy of ``a`` whose data starts one element past a word boundary."""
    buf = np.empty(a.size * a.itemsize + 16, np.uint8)
    start = (-buf.ctypes.data) % 8 + a.itemsize
    out = buf[start : start + a.size * a.itemsize].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % 8 != 0 and out.flags.c_contiguous
    return out


# -- words_of -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_words_of_views_whole_words_or_gives_none(dtype, rng):
    per = 8 // np.dtype(dtype).itemsize
    flat = _noise(rng, (3, 8 * per), dtype)
    words = words_of(flat)
    assert words.shape == (3, 8) and words.dtype == np.uint64
    assert np.shares_memory(words, flat)  # the same memory, not a copy
    np.testing.assert_array_equal(words.view(dtype), flat)
    odd = _noise(rng, (3, 8 * per + 1), dtype)
    assert words_of(odd).shape == (3, 0)  # rows that are not whole words
    assert words_of(_unaligned(flat)).shape == (3, 0)  # rows not on a word boundary


# -- slice_counts -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", MAPS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unaligned", [False, True])
def test_slice_counts_equal_bincount_per_row(make, shape, dtype, unaligned, rng):
    flat = make(rng, shape, dtype)
    if unaligned:
        flat = _unaligned(flat)
    words = words_of(flat)
    n_values = int(flat.max()) + 1  # as LabelVoxels sizes them: no spare column
    counts = np.zeros((shape[0], n_values), np.int64)
    slice_counts(flat, words, counts, 0, shape[0])
    np.testing.assert_array_equal(counts, _counts(flat, n_values))
    assert counts.sum() == flat.size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("z0", "z1"), [(0, 0), (2, 2), (1, 3), (0, 5), (4, 5)])
def test_slice_counts_add_to_their_rows_only(dtype, z0, z1, rng):
    flat = _runs(rng, (5, 48), dtype)
    n_values = _top(dtype) + 1
    before = rng.integers(0, 3, (5, n_values))  # counts add up: what was there stays
    counts = before.copy()
    slice_counts(flat, words_of(flat), counts, z0, z1)
    expected = before.copy()
    expected[z0:z1] += _counts(flat[z0:z1], n_values)
    np.testing.assert_array_equal(counts, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_counts_of_empty_rows_count_nothing(dtype):
    flat = np.zeros((3, 0), dtype)
    counts = np.zeros((3, 1), np.int64)
    slice_counts(flat, words_of(flat), counts, 0, 3)
    assert not counts.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_run_crossing_word_and_row_ends_is_split_by_row(dtype):
    per = 8 // np.dtype(dtype).itemsize
    flat = np.zeros((2, 4 * per), dtype)
    flat[0, per + 1 :] = 9  # a run from mid-word to the row's end ...
    flat[1, : 2 * per + 3] = 9  # ... and on from the next row's start to mid-word
    counts = np.zeros((2, 10), np.int64)
    slice_counts(flat, words_of(flat), counts, 0, 2)
    np.testing.assert_array_equal(counts[:, 9], [3 * per - 1, 2 * per + 3])
    np.testing.assert_array_equal(counts[:, 0], [per + 1, 2 * per - 3])


# -- kth_voxel ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", MAPS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("unaligned", [False, True])
def test_kth_voxel_equals_flatnonzero(make, shape, dtype, unaligned, rng):
    flat = make(rng, shape, dtype)
    if unaligned:
        flat = _unaligned(flat)
    words = words_of(flat)
    for z in range(shape[0]):
        row = flat[z]
        for value in [*np.unique(row).tolist(), 4, 256, _top(dtype) - 1]:  # some absent
            value = min(value, _top(dtype))
            n = int(np.count_nonzero(row == value))
            for k in [*range(min(n, 70)), *range(max(n - 3, 0), n + 2)]:  # all k, and past n
                got = kth_voxel(flat, words, z, value, k)
                assert got == _kth(row, value, k), (z, value, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kth_voxel_counts_whole_words_of_the_value(dtype):
    """A row of one value: words are counted whole until the one holding the k-th."""
    per = 8 // np.dtype(dtype).itemsize
    flat = np.full((1, 16 * per), 255, dtype)  # 16 whole words
    words = words_of(flat)
    assert words.shape == (1, 16)
    for k in range(flat.shape[1] + 1):
        assert kth_voxel(flat, words, 0, 255, k) == (k if k < flat.shape[1] else -1)
    assert kth_voxel(flat, words, 0, 0, 0) == -1


# -- LabelVoxels --------------------------------------------------------------------------------
def _sparse_map(dtype, value, shape=(9, 10, 12), seed=0):
    """A map of background and ``value`` at uneven counts per slice (some slices without)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, dtype)
    for z in range(shape[0]):
        if z % 3 == 1:
            continue
        n = int(rng.integers(1, 12))
        idx = rng.choice(shape[1] * shape[2], n, replace=False)
        lab[z].reshape(-1)[idx] = value
    return lab


@pytest.mark.parametrize(
    ("dtype", "top", "width"),
    [(np.uint8, 4, 256), (np.uint8, 255, 256), (np.uint16, 4, 5), (np.uint16, 65535, 65536)],
)
def test_counts_are_as_wide_as_the_largest_label(dtype, top, width, rng):
    lab = rng.integers(0, 3, (7, 16, 16)).astype(dtype)
    lab[3, 4, 5] = top
    vox = LabelVoxels(lab)
    assert vox.counts.shape == (7, width)  # uint16: max + 1, not 65536 columns
    np.testing.assert_array_equal(vox.counts, _counts(lab.reshape(7, -1), width))
    assert vox.present() == [0, 1, 2, top]
    assert vox.count(top) == 1 and vox.count(top + 1) == 0 and vox.count(-1) == 0
    assert vox.draw(top, rng).tolist() == [3, 4, 5]


def test_a_uint16_map_of_few_labels_costs_few_columns():
    lab = np.zeros((300, 8, 8), np.uint16)
    lab[::7, 2, 3] = 5
    vox = LabelVoxels(lab, n_threads=2)
    assert vox.counts.shape == (300, 6) and vox.counts.nbytes == 300 * 6 * 8
    assert vox.count(5) == lab[::7].shape[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", MAPS)
def test_label_voxels_on_odd_and_unaligned_maps(dtype, make, rng):
    lab = make(rng, (5, 7, 9), dtype)  # rows of 63 elements: no whole words
    for arr in (lab, _unaligned(lab), np.asfortranarray(lab)):
        vox = LabelVoxels(arr, n_threads=2)
        width = vox.counts.shape[1]
        np.testing.assert_array_equal(vox.counts, _counts(lab.reshape(5, -1), width))
        for value in vox.present():
            for _ in range(5):
                assert lab[tuple(vox.draw(value, rng))] == value


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_count_the_same(dtype, rng):
    lab = _runs(rng, (23, 20, 24), dtype)
    one, two = LabelVoxels(lab, 1), LabelVoxels(lab, 2)
    np.testing.assert_array_equal(one.counts, two.counts)
    np.testing.assert_array_equal(one.totals, np.bincount(lab.ravel(), minlength=one.totals.size))


@pytest.mark.parametrize(("dtype", "value"), [(np.uint8, 255), (np.uint16, 65535), (np.uint8, 0)])
def test_draws_are_uniform_over_the_label_voxels(dtype, value):
    lab = _sparse_map(dtype, value)
    if value == 0:  # background as the label: a few zeros in a map of ones
        lab = np.where(_sparse_map(dtype, 1) == 1, 0, 1).astype(dtype)
    cells = [tuple(c) for c in np.argwhere(lab == value).tolist()]
    vox = LabelVoxels(lab)
    assert vox.count(value) == len(cells) > 20
    rng = np.random.default_rng(7)
    n_draws = 200 * len(cells)
    drawn = Counter(tuple(vox.draw(value, rng).tolist()) for _ in range(n_draws))
    assert set(drawn) <= set(cells)  # only voxels of the label ...
    assert set(drawn) == set(cells)  # ... and every one of them
    observed = np.array([drawn[c] for c in cells], np.float64)
    chi2 = float(((observed - 200.0) ** 2 / 200.0).sum())
    assert stats.chi2.sf(chi2, len(cells) - 1) > 1e-4, chi2  # loose: fails only if skewed


def test_draws_of_a_large_label_hit_only_that_label(rng):
    lab = _runs(rng, (12, 32, 40), np.uint16)
    vox = LabelVoxels(lab)
    for value in vox.present():
        zs = []
        for _ in range(200):
            z, y, x = vox.draw(value, rng).tolist()
            assert lab[z, y, x] == value
            zs.append(z)
        # slices are drawn in proportion to their counts: every slice holding many is reached
        rich = np.flatnonzero(vox.counts[:, value] > vox.count(value) / 6)
        assert set(rich.tolist()) <= set(zs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_label_without_voxels_is_an_error(dtype, rng):
    lab = _sparse_map(dtype, 3)
    vox = LabelVoxels(lab)
    for absent in (1, 2, 4, 255, _top(dtype)):
        with pytest.raises(InvalidParameterError, match=f"no voxel has label {absent}"):
            vox.draw(absent, rng)


def test_empty_maps_and_wrong_maps():
    for shape in [(0, 4, 4), (3, 0, 5)]:
        for dtype in DTYPES:
            vox = LabelVoxels(np.zeros(shape, dtype))
            assert vox.present() == [] and vox.count(0) == 0
            with pytest.raises(InvalidParameterError, match="no voxel has label 0"):
                vox.draw(0, np.random.default_rng(0))
    with pytest.raises(InvalidParameterError, match="uint8 or uint16"):
        LabelVoxels(np.zeros((2, 3, 4), np.int16))
    with pytest.raises(InvalidParameterError, match="uint8 or uint16"):
        LabelVoxels(np.zeros((3, 4), np.uint8))
