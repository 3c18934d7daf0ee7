"""The buffer pool: reuse only after the last view dies, bounded idle memory, thread safety."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import ctflow as cf
from ctflow import memory, tuning

BIG = (40, 256, 256)  # 10 MiB of float32: pooled
MOVES_PAGES = sys.platform.startswith("linux")  # pages move between buffers (mremap)


@pytest.fixture
def pool(monkeypatch):
    """A fresh pool (no high-water mark yet) with a known limit; the process's pool afterwards."""
    monkeypatch.setattr(memory, "_pool", memory._Pool(256 * 2**20))
    with tuning.tuned(move_pages=True):  # whatever the environment says: these tests need it
        yield
    memory.clear_pool()


def test_a_freed_buffer_is_reused_only_when_no_view_is_left(pool):
    a = memory.empty(BIG, np.float32)
    address = a.ctypes.data
    view = a[5:7]
    view[:] = 7.0
    del a
    gc.collect()
    assert memory.pool_stats()["idle_buffers"] == 0  # the view keeps the buffer in use
    b = memory.empty(BIG, np.float32)
    assert b.ctypes.data != address
    b[:] = -1.0
    assert (view == 7.0).all()  # live data never aliased
    del view
    c = memory.empty(BIG, np.int16)  # another dtype fits in the same buffer (half the size)
    assert c.ctypes.data != address  # too small a request for a twice-larger buffer
    del c
    d = memory.empty((36, 256, 256), np.float32)  # 10 % smaller: reuses it
    assert d.ctypes.data == address
    assert memory.pool_stats()["hits"] >= 1


def test_small_arrays_and_a_zero_limit_bypass_the_pool(pool):
    small = memory.empty((4, 8, 8), np.float32)
    assert small.base is None
    memory.set_pool_limit(0)
    a = memory.empty(BIG, np.float32)
    assert a.base is None
    del a
    assert memory.pool_stats()["idle_bytes"] == 0


def test_idle_memory_stays_under_the_limit(pool):
    memory.set_pool_limit(25 * 2**20)
    arrays = [memory.empty(BIG, np.float32) for _ in range(4)]  # 4 x 10 MiB in use: allowed
    assert memory.pool_stats()["idle_bytes"] == 0
    del arrays
    stats = memory.pool_stats()
    assert stats["idle_bytes"] <= 25 * 2**20 and stats["idle_buffers"] == 2
    with pytest.raises(cf.InvalidParameterError, match="nbytes must be an integer >= 0"):
        memory.set_pool_limit(-1)


def test_owns_data(pool):
    z = memory.empty(BIG, np.float32)
    assert memory.owns_data(z) and memory.owns_data(np.zeros(3))
    assert not memory.owns_data(z[1:]) and not memory.owns_data(z[:, ::2])
    assert not memory.owns_data(np.zeros(4)[1:])


def _in_threads(work, n: int) -> None:
    """Run ``work(k)`` for k = 0..n-1, each on its own thread, and wait for all."""
    threads = [threading.Thread(target=work, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_threads_allocating_and_freeing_never_share_live_buffers(pool):
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(20):
            shape = (int(rng.integers(32, 48)), 256, 256)
            a = memory.empty(shape, np.float32)
            a.fill(seed)
            if not (a == seed).all() or not (a[-1] == seed).all():
                errors.append(f"thread {seed}: buffer changed under it")
            del a

    _in_threads(work, 4)
    assert errors == []
    assert memory.pool_stats()["hits"] > 0


def test_normalize_hu_still_works_in_place_on_a_pooled_volume(pool):
    user = np.linspace(-1200, 600, 20 * 256 * 256, dtype=np.float32).reshape(20, 256, 256)
    b = cf.CTBatch.from_arrays([user], spacing=(2.0, 1.0, 1.0)).unify_spacing((1.0, 1.0, 1.0))
    resampled = b.images
    assert resampled.nbytes >= memory.MIN_BYTES and resampled.base is not None  # pooled
    hu = resampled.copy()
    b.normalize_hu()
    assert np.shares_memory(b.images, resampled)  # overwritten in place
    np.testing.assert_allclose(b.images, (np.clip(hu, -1000, 400) + 1000) / 1400, rtol=1e-6)
    # a pooled batch's item view is not owned: the batch of crops does not overwrite it
    assert not memory.owns_data(resampled[3:5])


def test_a_bad_pool_size_in_the_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CTFLOW_POOL_MB", "lots")
    with pytest.raises(cf.InvalidParameterError, match="CTFLOW_POOL_MB"):
        memory._default_limit()
    monkeypatch.setenv("CTFLOW_POOL_MB", "-5")
    with pytest.raises(cf.InvalidParameterError, match="CTFLOW_POOL_MB must be a number of"):
        memory._default_limit()
    monkeypatch.setenv("CTFLOW_POOL_MB", "64")
    assert memory._default_limit() == 64 * 2**20


def test_zeros_is_zero_even_in_a_reused_buffer(pool):
    a = memory.empty(BIG, np.float32)
    address = a.ctypes.data
    a.fill(7.0)
    del a
    z = memory.zeros(BIG, np.float32)
    assert z.ctypes.data == address and not z.any()
    small = memory.zeros((2, 3), np.uint8)  # not pooled: numpy's zeros
    assert small.base is None and not small.any()


def test_a_small_miss_takes_only_the_pages_it_needs_from_a_big_idle_buffer(pool):
    mib = 2**20 // 4  # float32 elements per MiB
    memory.set_pool_limit(45 * 2**20)
    a = memory.empty(40 * mib, np.float32)
    b = memory.empty(40 * mib, np.float32)  # 80 MiB in use at once: the high-water mark
    b.fill(4.0)
    big = b.ctypes.data
    del a, b  # the limit keeps one 40 MiB buffer idle (b's: the most recently freed)
    assert memory.pool_stats()["idle_buffers"] == 1
    c = memory.empty(9 * mib, np.float32)  # a 50 MiB buffer for 9 MiB: more than 2x too big
    assert c.ctypes.data != big
    d = memory.empty(30 * mib, np.float32)  # fits what is left of it: reused, at its address
    assert d.ctypes.data == big
    if MOVES_PAGES:  # c is 10 MiB of b's written pages (the last ones), d the 30 before them
        assert (c == 4.0).all() and (d == 4.0).all()
        assert memory.pool_stats()["fresh_bytes"] == 80 * 2**20  # a and b only


def test_idle_pages_over_the_mark_move_into_the_next_miss(pool):
    mib = 2**20 // 4  # float32 elements per MiB
    a = memory.empty(40 * mib, np.float32)  # 40 MiB in use at most: the high-water mark
    a.fill(1.0)
    a_address = a.ctypes.data
    del a  # idle: one 50 MiB buffer (25 % headroom), 40 MiB of it written
    before = memory.pool_stats()
    b = memory.empty(12 * mib, np.float32)  # too small for it (more than 2x too big) ...
    after = memory.pool_stats()
    assert after["misses"] == before["misses"] + 1
    # ... and 40 idle + 12 in use would cross the mark: 12 MiB of idle memory must go
    if MOVES_PAGES:  # they move into b: a's last written pages, still holding a's values
        assert after["resized"] == before["resized"] + 1
        assert after["fresh_bytes"] == before["fresh_bytes"]
        assert (b == 1.0).all()
        assert after["idle_buffers"] == 1 and after["idle_bytes"] == 28 * 2**20  # a keeps 28
    else:  # freed, and b is new memory
        assert after["fresh_bytes"] == before["fresh_bytes"] + 12 * 2**20
        assert after["idle_buffers"] == 0
    b.fill(2.0)
    assert b.nbytes == 12 * 2**20 and (b == 2.0).all()
    if MOVES_PAGES:  # what a kept is still a's memory, at a's address, and serves a request
        c = memory.empty(28 * mib, np.float32)
        assert memory.pool_stats()["hits"] == after["hits"] + 1
        assert c.ctypes.data == a_address and (c == 1.0).all()
        c[-1] = 3.0
        assert c[-1] == 3.0 and (b == 2.0).all()


@pytest.mark.skipif(not MOVES_PAGES, reason="pages move between buffers only on Linux (mremap)")
def test_a_miss_gathers_pages_from_several_idle_buffers_oldest_first(pool):
    mib = 2**20 // 4
    a = memory.empty(20 * mib, np.float32)
    b = memory.empty(20 * mib, np.float32)  # 40 MiB in use at once: the mark
    a.fill(1.0)
    b.fill(2.0)
    del a  # freed first: given first
    del b
    before = memory.pool_stats()
    c = memory.empty(30 * mib, np.float32)  # fits neither 26 MiB buffer; 30 must leave idle
    after = memory.pool_stats()
    assert after["misses"] == before["misses"] + 1
    assert after["fresh_bytes"] == before["fresh_bytes"]  # no new memory at all
    assert (c[: 20 * mib] == 1.0).all()  # all of a ...
    assert (c[20 * mib :] == 2.0).all()  # ... then the end of b's written part
    assert after["idle_buffers"] == 1 and after["idle_bytes"] == 10 * 2**20  # b keeps 10
    c[:] = 5.0
    d = memory.empty(10 * mib, np.float32)  # what b kept: its first 10 MiB, b's values
    assert memory.pool_stats()["hits"] == after["hits"] + 1 and (d == 2.0).all()
    assert (c == 5.0).all()


def _pipeline_scan(sizes: tuple[int, int, int, int]) -> None:
    """The arrays of one pipeline scan, in MiB: loaded, resampled (the loaded one freed), a
    mask, a float copy; all freed at the end."""
    loaded = memory.empty(sizes[0] * 2**20, np.uint8)
    loaded.fill(1)
    resampled = memory.empty(sizes[1] * 2**20, np.uint8)
    resampled.fill(1)
    del loaded
    mask = memory.empty(sizes[2] * 2**20, np.uint8)
    floats = memory.empty(sizes[3] * 2**20, np.uint8)
    mask.fill(1)
    floats.fill(1)
    del resampled, mask, floats


def test_scans_of_different_sizes_stop_missing_after_one_pass(pool):
    """Each role's largest array comes from a different scan: one buffer per role at its
    largest is more than any one scan's peak, which the quarter of slack over the high-water
    mark allows (with none, 6 of 16 requests missed on every pass)."""
    scans = [(30, 18, 9, 36), (16, 20, 10, 40), (35, 17, 9, 34), (25, 20, 10, 40)]
    assert memory.pool_slack() == 1.25
    with tuning.tuned(move_pages=False):
        for scan in scans:
            _pipeline_scan(scan)
        for _ in range(2):
            before = memory.pool_stats()
            for scan in scans:
                _pipeline_scan(scan)
            after = memory.pool_stats()
            assert after["misses"] == before["misses"]
            assert after["fresh_bytes"] == before["fresh_bytes"]
    # pooled memory, all idle now, within 1.25x the most in use at once (counted in written
    # pages of the buffers in use, at most one buffer per role at its largest: 105 MiB)
    high_water = memory._pool.high_water
    assert 0 < after["idle_bytes"] <= 1.25 * high_water <= 1.25 * 105 * 2**20


def test_pages_moved_between_buffers_never_touch_live_arrays(pool):
    """Random sizes (so misses take pages from idle buffers), arrays kept alive across rounds
    by four threads: every live array keeps its own values, and most misses are moved pages."""
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        live: list[tuple[np.ndarray, float]] = []
        for step in range(40):
            n = int(rng.integers(8, 60)) * 2**20 // 4  # 8-60 MiB of float32
            value = float(seed * 1000 + step)
            a = memory.empty(n, np.float32)
            a.fill(value)
            live.append((a, value))
            if len(live) > 3:  # free one at random: its buffer goes idle, then gives pages
                live.pop(int(rng.integers(len(live))))
            for arr, v in live:
                if arr[0] != v or arr[-1] != v or arr[len(arr) // 2] != v:
                    errors.append(f"thread {seed}, step {step}: a live array changed")
        for arr, v in live:
            if not (arr == v).all():
                errors.append(f"thread {seed}: a live array changed")

    _in_threads(work, 4)
    assert errors == []
    stats = memory.pool_stats()
    assert stats["misses"] > 0
    if MOVES_PAGES:
        assert stats["resized"] > 0


def test_a_pipeline_runs_without_resource_and_without_mremap():
    """As on Windows or macOS: no ``resource`` module, no C library to move pages with."""
    code = (
        "import sys, ctypes\n"
        "sys.modules['resource'] = None\n"
        "real = ctypes.CDLL\n"
        "def no_libc(name, *a, **k):\n"
        "    if name is None:  # the process's own C library: mmap/mremap/sync_file_range\n"
        "        raise OSError('no C library here')\n"
        "    return real(name, *a, **k)\n"
        "ctypes.CDLL = no_libc\n"
        "import numpy as np, ctflow as cf\n"
        "from ctflow import memory\n"
        "from ctflow import memory_pages\n"
        "assert memory_pages.LIBC is None\n"
        "vol = np.arange(40 * 256 * 256, dtype=np.int16).reshape(40, 256, 256) % 2000 - 1000\n"
        "b = cf.CTBatch.from_arrays([vol, vol[:30]], spacing=(2.0, 1.0, 1.0))\n"
        "out = cf.Pipeline().unify_spacing((1.0, 1.0, 1.0)).normalize_hu().execute(b)\n"
        "again = cf.Pipeline().unify_spacing((1.0, 1.0, 1.0)).normalize_hu().execute(\n"
        "    cf.CTBatch.from_arrays([vol, vol[:30]], spacing=(2.0, 1.0, 1.0)))\n"
        "assert np.array_equal(out[1].images, again[1].images)\n"
        "stats = memory.pool_stats()\n"
        "print(out.shapes.tolist(), stats['hits'] > 0, cf.execution.peak_rss_mb())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("[[80, 256, 256], [60, 256, 256]] True 0.0")


# -- run scopes: idle buffers outlive a run by pool_linger() seconds only ---------------------
def test_a_miss_without_page_moving_starts_at_a_huge_page_boundary(pool):
    with tuning.tuned(move_pages=False):
        a = memory.empty(BIG, np.float32)
    assert a.ctypes.data % (2 * 2**20) == 0  # not malloc's 16 bytes past a page boundary
    a[:] = 1.5  # the whole array is ours to write
    assert float(a.sum()) == 1.5 * a.size


def _scoped_buffer() -> int:
    with memory.run_scope():
        a = memory.empty(BIG, np.float32)
        address = int(a.ctypes.data)
        del a
    return address


def test_the_pool_is_emptied_a_linger_after_the_last_run(pool, monkeypatch):
    monkeypatch.setenv("CTFLOW_POOL_LINGER", "0.3")
    _scoped_buffer()
    assert memory.pool_stats()["idle_buffers"] == 1  # kept for a next run ...
    deadline = time.monotonic() + 10
    while memory.pool_stats()["idle_buffers"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert memory.pool_stats()["idle_bytes"] == 0  # ... and freed soon after


def test_a_run_started_within_the_linger_reuses_the_buffers(pool, monkeypatch):
    monkeypatch.setenv("CTFLOW_POOL_LINGER", "0.4")
    first = _scoped_buffer()
    with memory.run_scope():
        time.sleep(0.8)  # the first run's timer fires meanwhile: this run is on, nothing goes
        assert memory.pool_stats()["idle_buffers"] == 1
        a = memory.empty(BIG, np.float32)
        assert a.ctypes.data == first and memory.pool_stats()["hits"] == 1
        del a
    assert memory.pool_stats()["idle_buffers"] == 1


def test_nested_scopes_free_the_pool_when_the_outer_one_ends(pool, monkeypatch):
    monkeypatch.setenv("CTFLOW_POOL_LINGER", "0")
    with memory.run_scope():
        _scoped_buffer()  # an inner run (gen_batch inside a run, say) ends: the outer is on
        assert memory.pool_stats()["idle_buffers"] == 1
    assert memory.pool_stats()["idle_buffers"] == 0  # linger 0: at once


def test_a_pipeline_run_frees_its_idle_buffers(pool, monkeypatch, tmp_path):
    monkeypatch.setenv("CTFLOW_POOL_LINGER", "0")
    vol = np.arange(40 * 256 * 256, dtype=np.int32).reshape(40, 256, 256) % 2000 - 1000
    from ctflow.io.writer import write_scan

    path = write_scan(tmp_path / "a.mhd", vol.astype(np.int16), cf.Geometry((2, 1, 1)))
    ds = cf.Dataset.from_paths([path])
    report = (ds >> cf.Pipeline().load().unify_spacing((1.0, 1.0, 1.0))).run(batch_size=1)
    assert report.done == ["a"] and memory.pool_stats()["misses"] > 0
    assert memory.pool_stats()["idle_bytes"] == 0


def test_without_slack_the_pool_stays_within_its_high_water_mark(pool, monkeypatch):
    monkeypatch.setenv("CTFLOW_POOL_SLACK", "1")
    scans = [(30, 18, 9, 36), (16, 20, 10, 40), (35, 17, 9, 34), (25, 20, 10, 40)]
    with tuning.tuned(move_pages=False):
        for scan in scans * 2:
            _pipeline_scan(scan)
    stats = memory.pool_stats()
    assert stats["idle_bytes"] <= memory._pool.high_water
    assert stats["misses"] > len(scans)  # the price: scans of other sizes keep missing


@pytest.mark.parametrize("raw", ["0.5", "big", "nan"])
def test_a_bad_slack_is_refused(monkeypatch, raw):
    monkeypatch.setenv("CTFLOW_POOL_SLACK", raw)
    with pytest.raises(cf.InvalidParameterError, match="CTFLOW_POOL_SLACK"):
        memory.pool_slack()


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_bad_linger_is_refused(monkeypatch, raw):
    monkeypatch.setenv("CTFLOW_POOL_LINGER", raw)
    with pytest.raises(cf.InvalidParameterError, match="CTFLOW_POOL_LINGER"):
        memory.pool_linger()


@pytest.mark.skipif(not MOVES_PAGES, reason="the guard protects pages with Linux's mprotect")
@pytest.mark.parametrize("move_pages", ["0", "1"])
def test_the_guard_faults_a_use_of_memory_the_pool_took_back(move_pages):
    code = (
        "import ctypes, numpy as np\n"
        "from ctflow import memory\n"
        "a = memory.empty((40, 256, 256), np.float32)\n"
        "a[:] = 1.0\n"
        "address = a.ctypes.data\n"
        "del a\n"
        "b = memory.empty((40, 256, 256), np.float32)  # reused: usable again\n"
        "assert b.ctypes.data == address\n"
        "b[:] = 2.0\n"
        "c = memory.empty((20, 256, 256), np.float32)  # a miss: pages moved or new\n"
        "c[:] = 3.0\n"
        "assert float(b.sum()) == 2.0 * b.size and float(c.sum()) == 3.0 * c.size\n"
        "del b, c\n"
        "print('released', flush=True)\n"
        "ctypes.string_at(address, 1)  # a stale pointer: must fault, not read\n"
        "print('read freed memory')\n"
    )
    env = {**os.environ, "CTFLOW_POOL_GUARD": "1", "CTFLOW_MOVE_PAGES": move_pages}
    res = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.stdout == "released\n", res.stderr
    assert res.returncode == -11 and "Segmentation fault" in res.stderr


def test_an_unfinished_gen_batch_does_not_hang_the_interpreter_at_exit(tmp_path):
    """Its run scope ends when the garbage collector closes it at shutdown: no linger thread
    can start then (Timer.start waited forever), so the pool is freed at once."""
    code = (
        "import numpy as np, ctflow as cf\n"
        "from ctflow.io.writer import write_scan\n"
        f"d = {str(tmp_path)!r}\n"
        "vol = np.zeros((40, 256, 256), np.int16)\n"
        "paths = [write_scan(f'{d}/{n}.mhd', vol, cf.Geometry((1, 1, 1))) for n in 'ab']\n"
        "p = cf.Dataset.from_paths(paths) >> cf.Pipeline().load().normalize_hu()\n"
        "gen = p.gen_batch(batch_size=1)\n"
        "print(next(gen).ids, flush=True)  # the generator stays open until the interpreter ends\n"
    )
    env = {**os.environ, "CTFLOW_POOL_LINGER": "30"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "['a']\n"
