"""@action / @inbatch_parallel: user subclasses, shape changes, geometry, errors, nogil kernels."""

from __future__ import annotations

import threading

import numba
import numpy as np
import pytest

import ctflow as cf


class TooDark(RuntimeError):
    pass


@numba.njit(nogil=True, cache=True)
def _box_smooth(src, out):
    """A 3x3 in-plane box mean, released from the GIL (a stand-in for a user's kernel)."""
    z, y, x = src.shape
    for k in range(z):
        for j in range(y):
            for i in range(x):
                acc = 0.0
                cnt = 0
                for dj in range(-1, 2):
                    for di in range(-1, 2):
                        jj, ii = j + dj, i + di
                        if 0 <= jj < y and 0 <= ii < x:
                            acc += src[k, jj, ii]
                            cnt += 1
                out[k, j, i] = acc / cnt
    return out


class MyBatch(cf.CTBatch):
    threads_seen: set[str] = set()

    @cf.action
    @cf.inbatch_parallel(target="threads")
    def smooth(self, item):
        MyBatch.threads_seen.add(threading.current_thread().name)
        out = np.empty(item.images.shape, np.float32)
        return _box_smooth(item.images, out)

    @cf.action
    @cf.inbatch_parallel
    def halve_z(self, item):
        """Shape change + geometry change: keep every second slice."""
        g = item.geometry
        return {
            "images": item.images[::2].copy(),
            "spacing": g.spacing * [2, 1, 1],
            "origin": g.origin,
        }

    @cf.action
    @cf.inbatch_parallel(target="for")
    def add_inplace(self, item, value):
        item.images += value

    @cf.action
    @cf.inbatch_parallel
    def fail_if_dark(self, item, threshold=-500):
        if item.images.mean() < threshold:
            raise TooDark(f"mean {item.images.mean():.0f} HU")
        return None

    @cf.action
    @cf.inbatch_parallel
    def noisy(self, item, sigma=10.0):
        return item.images + item.rng.normal(0, sigma, item.images.shape).astype(np.float32)


def _batch(zs=(3, 4, 5), fill=None):
    vols = [
        np.arange(z * 16, dtype=np.float32).reshape(z, 4, 4)
        if fill is None
        else np.full((z, 4, 4), fill[k], np.float32)
        for k, z in enumerate(zs)
    ]
    return MyBatch.from_arrays(
        vols, ids=[f"s{k}" for k in range(len(zs))], spacing=(1.0, 0.5, 0.5), n_workers=2
    )


def test_user_action_runs_on_threads_and_matches_reference():
    b = _batch()
    ref = [_box_smooth(it.images, np.empty(it.images.shape, np.float32)) for it in b]
    MyBatch.threads_seen.clear()
    b.smooth()
    for k, r in enumerate(ref):
        np.testing.assert_array_equal(b[k].images, r)
    assert any(name.startswith("ctflow-item") for name in MyBatch.threads_seen)
    assert b.images.dtype == np.float32


def test_shape_change_reassembles_skyscraper_and_geometry():
    b = _batch((3, 4, 5))
    origin = b.origin.copy()
    b.halve_z()
    assert b.bounds.tolist() == [0, 2, 4, 7]
    np.testing.assert_allclose(b.spacing, [[2.0, 0.5, 0.5]] * 3)
    np.testing.assert_allclose(b.origin, origin)


def test_in_place_item_action_and_for_target():
    b = _batch()
    before = b.images.copy()
    b.add_inplace(5)
    np.testing.assert_array_equal(b.images, before + 5)


def test_failing_item_reraises_original_exception_with_note():
    b = _batch(fill=[0.0, -900.0, 0.0])
    with pytest.raises(TooDark, match="mean -900 HU") as info:
        b.fail_if_dark()
    notes = " ".join(getattr(info.value, "__notes__", []))
    assert "fail_if_dark" in notes and "'s1'" in notes


def test_skip_mode_drops_only_the_failing_item():
    b = _batch(zs=(3, 4, 5), fill=[0.0, -900.0, 7.0])
    b.on_error = "skip"
    b.fail_if_dark()
    assert b.ids == ["s0", "s2"]
    assert b.bounds.tolist() == [0, 3, 8]
    assert b[1].images[0, 0, 0] == 7.0
    assert [(f.id, f.action, type(f.error)) for f in b.failed] == [("s1", "fail_if_dark", TooDark)]


def test_random_item_actions_do_not_depend_on_thread_count():
    outs = []
    for workers, target_batch in [(1, _batch()), (2, _batch()), (3, _batch())]:
        target_batch.n_workers = workers
        target_batch.set_random_state(seed=42, position=3)
        outs.append(target_batch.noisy().images)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    other = _batch()
    other.set_random_state(seed=42, position=4)
    assert not np.array_equal(other.noisy().images, outs[0])


def test_n_workers_keyword_and_signature_for_pipelines():
    b = _batch()
    b.smooth(n_workers=1)
    p = cf.Pipeline(batch_class=MyBatch).smooth().halve_z()
    assert p.action_names == ["smooth", "halve_z"]
    with pytest.raises(cf.InvalidParameterError, match="bad arguments for add_inplace"):
        cf.Pipeline(batch_class=MyBatch).add_inplace()


def test_nested_parallel_call_does_not_deadlock():
    class Outer(cf.CTBatch):
        @cf.action
        @cf.inbatch_parallel
        def outer(self, item):
            inner = MyBatch.from_arrays([item.images.copy(), item.images.copy()], n_workers=2)
            return inner.smooth().images[: item.images.shape[0]]

    b = Outer.from_arrays([np.ones((2, 4, 4), np.float32)] * 4, n_workers=2)
    b.outer()
    np.testing.assert_allclose(b.images, 1.0)


def test_bad_item_return_type_is_a_clear_error():
    class Bad(cf.CTBatch):
        @cf.action
        @cf.inbatch_parallel
        def bad(self, item):
            return 3

    with pytest.raises(cf.InvalidParameterError, match="returned int"):
        Bad.from_arrays([np.zeros((1, 2, 2))]).bad()
