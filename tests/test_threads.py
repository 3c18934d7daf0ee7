"""Kernels cut into ranges (run_ranges) and the threads a ThreadShare lends to them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ctflow.ops.intensity import normalize_hu
from ctflow.ops.lungs import segment_lungs
from ctflow.ops.resample import unify_spacing
from ctflow.synthetic import make_phantom
from ctflow.threads import LEND_PARTS, ThreadShare, run_ranges, split_ranges
from ctflow.tuning import tuned


@pytest.fixture(autouse=True)
def lending():
    """Thread lending is opt-in (ctflow.tuning); these tests are about it."""
    with tuned(lend_threads=True):
        yield


def _thread_log() -> tuple[list[tuple[int, int, str]], threading.Lock]:
    return [], threading.Lock()


@pytest.mark.parametrize(
    ("n", "parts", "min_size"), [(10, 3, 1), (7, 7, 1), (5, 9, 1), (100, 8, 30)]
)
def test_split_ranges_cover_the_range_once_in_near_equal_parts(n, parts, min_size):
    ranges = split_ranges(n, parts, min_size)
    covered = [i for a, b in ranges for i in range(a, b)]
    assert covered == list(range(n))
    sizes = [b - a for a, b in ranges]
    assert len(ranges) == min(parts, max(1, n // min_size))
    assert max(sizes) - min(sizes) <= 1
    assert min(sizes) >= min(min_size, n)


def test_split_ranges_of_nothing_is_empty():
    assert split_ranges(0, 4) == []


def test_run_ranges_returns_every_part_in_order_and_the_caller_works_too():
    seen, lock = _thread_log()
    me = threading.current_thread().name

    def part(a: int, b: int) -> int:
        with lock:
            seen.append((a, b, threading.current_thread().name))
        time.sleep(0.02)  # long enough for the helper to start and take parts
        return b - a

    out = run_ranges(part, 100, 2, per_thread=3)
    assert [(a, b) for a, b, _ in out] == split_ranges(100, 6)
    assert [r for *_, r in out] == [b - a for a, b in split_ranges(100, 6)]
    names = {name for *_, name in seen}
    assert me in names and len(names) == 2  # the caller and one kernel thread
    assert sorted((a, b) for a, b, _ in seen) == split_ranges(100, 6)  # each part once


def test_one_thread_without_a_share_is_one_call_in_the_caller():
    seen: list[tuple[int, int, str]] = []
    run_ranges(lambda a, b: seen.append((a, b, threading.current_thread().name)), 50, 1)
    assert seen == [(0, 50, threading.current_thread().name)]


class PartFailed(RuntimeError):
    pass


def test_a_failing_part_is_reraised_and_stops_the_parts_not_started():
    ran: list[int] = []

    def part(a: int, b: int) -> None:
        ran.append(a)
        if a == 20:
            raise PartFailed(f"part at {a}")

    share = ThreadShare(2)
    # two batches running, one thread each: nothing to lend; cut finely under a share: parts of 10
    with share.running(), share.running(), pytest.raises(PartFailed, match="part at 20"):
        run_ranges(part, 10 * LEND_PARTS * 2, 1)
    assert ran == [0, 10, 20]  # one thread: parts run in order and none after the failure


def _batch_leaves_mid_kernel(expect_another: bool) -> list[tuple[int, int, str]]:
    """Batch A runs a one-thread kernel under a share of 2; batch B ends while it runs."""
    share = ThreadShare(2)
    seen, lock = _thread_log()
    a_started, b_left = threading.Event(), threading.Event()

    def part(a: int, b: int) -> None:
        with lock:
            seen.append((a, b, threading.current_thread().name))
        if a == 0:
            a_started.set()
            assert b_left.wait(10)
        time.sleep(0.03)

    b_running = threading.Event()
    threads_of_a: list[int] = []

    def batch_b() -> None:
        with share.running():
            b_running.set()
            assert a_started.wait(10)
            if expect_another:
                share.expect()  # the engine is about to start another batch on this thread
        b_left.set()

    def batch_a() -> None:
        with share.running():
            threads_of_a.append(share.threads())
            run_ranges(part, 64, 1)

    t_b = threading.Thread(target=batch_b)
    t_b.start()
    assert b_running.wait(10)
    t_a = threading.Thread(target=batch_a, name="batch-a")
    t_a.start()
    t_a.join(20)
    t_b.join(20)
    assert threads_of_a == [1]  # both batches ran: one thread each
    assert sorted((a, b) for a, b, _ in seen) == split_ranges(64, LEND_PARTS * 2)
    return seen


def test_the_thread_of_a_batch_that_ends_joins_the_running_kernel():
    seen = _batch_leaves_mid_kernel(expect_another=False)
    names = [name for *_, name in seen]
    assert names[0] == "batch-a"  # A's own thread started the kernel; a lent one joined
    assert any(name.startswith("ctflow-kernel") for name in names), names


def test_no_thread_is_lent_while_another_batch_is_about_to_start():
    seen = _batch_leaves_mid_kernel(expect_another=True)
    assert {name for *_, name in seen} == {"batch-a"}


def test_a_lone_batch_under_a_share_lends_no_threads_it_already_has():
    share = ThreadShare(2)
    seen, lock = _thread_log()

    def part(a: int, b: int) -> None:
        with lock:
            seen.append((a, b, threading.current_thread().name))
        time.sleep(0.01)

    with share.running():
        n = share.threads()
        run_ranges(part, 40, n)
    assert n == 2
    assert len({name for *_, name in seen}) == 2  # the caller and one thread: never three


@pytest.fixture(scope="module")
def phantom():
    scan, _ = make_phantom(shape=(64, 96, 96), spacing=(2.5, 0.8, 0.8), n_nodules=2, seed=4)
    return scan


def test_kernels_give_the_same_output_when_threads_are_lent_to_them(phantom):
    """A share of 2 with one batch running lends the idle thread to every kernel of the batch:
    finer parts on two threads must give exactly the one-thread output."""
    image, geom = phantom.images, phantom.geometry
    plain = (
        segment_lungs(image, geom),
        normalize_hu(image, dtype="float32"),
        unify_spacing(image, geom, (1.0, 1.0, 1.0))[0],
    )
    share = ThreadShare(2)
    with share.running():  # one thread held (no action asked for more), the other lent
        lent = (
            segment_lungs(image, geom),
            normalize_hu(image, dtype="float32"),
            unify_spacing(image, geom, (1.0, 1.0, 1.0))[0],
        )
    for a, b in zip(plain, lent, strict=True):
        np.testing.assert_array_equal(a, b)
