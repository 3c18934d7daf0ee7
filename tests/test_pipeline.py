"""Pipeline: laziness, validation, +, repr, epochs/shuffle/drop_last, prefetch and errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import ctflow as cf
from ctflow.io.metaimage import write_metaimage
from ctflow.runs import plan_batches

pytestmark = pytest.mark.timeout(120)


class Broken(ValueError):
    pass


class Counting(cf.CTBatch):
    calls = 0
    lock = threading.Lock()

    @cf.action
    def count(self):
        with Counting.lock:
            Counting.calls += 1
        return self

    @cf.action
    @cf.inbatch_parallel
    def explode_on(self, item, bad_ids=()):
        if item.id in bad_ids:
            raise Broken(f"cannot process {item.id}")

    @cf.action
    def explode_batch_with(self, bad_id):
        if bad_id in self.ids:
            raise Broken(f"whole batch with {bad_id} fails")
        return self

    @cf.action
    @cf.inbatch_parallel
    def jitter(self, item):
        return item.images + item.rng.normal(0, 1, item.images.shape).astype(np.float32)

    @cf.action
    def slow(self, seconds=0.01):
        time.sleep(seconds)
        return self

    @cf.action
    def meet(self, barrier):
        barrier.wait(timeout=20)
        return self

    @cf.action
    @cf.inbatch_parallel
    def note_threads(self, item, seen):
        seen.append((item.id, item.n_threads))


@pytest.fixture()
def tiny_ds(tmp_path):
    """Ten 2x4x4 scans, each filled with its number."""
    for k in range(10):
        write_metaimage(
            tmp_path / f"s{k}.mhd", np.full((2, 4, 4), k, np.int16), cf.Geometry((1, 1, 1))
        )
    return cf.Dataset.from_glob(str(tmp_path / "*.mhd"), batch_class=Counting)


def test_defining_a_pipeline_does_no_work(tiny_ds):
    Counting.calls = 0
    p = cf.Pipeline().load().count().count()
    bound = tiny_ds >> p
    assert Counting.calls == 0
    assert len(bound) == 3
    bound.run(batch_size=5)
    assert Counting.calls == 4


def test_unknown_action_fails_at_definition_listing_what_exists():
    with pytest.raises(cf.InvalidParameterError) as info:
        cf.Pipeline().load().unify_spacng((1, 1, 1))
    msg = str(info.value)
    assert (
        "unknown action 'unify_spacng'" in msg and "unify_spacing" in msg and "normalize_hu" in msg
    )


def test_bad_arguments_fail_at_definition():
    # the methods have real signatures: a wrong call is Python's own TypeError, at once
    with pytest.raises(TypeError, match="positional arguments"):
        cf.Pipeline().normalize_hu(-1000, 400, "float32", True, 7)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        cf.Pipeline().load(fromat="mhd")  # type: ignore[call-arg]


def test_binding_rechecks_against_the_dataset_batch_class(tmp_path):
    write_metaimage(tmp_path / "a.mhd", np.zeros((1, 2, 2), np.int16), cf.Geometry((1, 1, 1)))
    plain = cf.Dataset.from_glob(str(tmp_path / "*.mhd"))
    with pytest.raises(cf.InvalidParameterError, match="unknown action 'count' for CTBatch"):
        plain >> cf.Pipeline().count()


def test_concatenation_and_repr(tiny_ds):
    p1 = cf.Pipeline().load()
    p2 = cf.Pipeline().normalize_hu(-1000, 400).flip(axis=2)
    p = p1 + p2
    assert p.action_names == ["load", "normalize_hu", "flip"]
    assert p1.action_names == ["load"]  # values: adding did not change p1
    assert repr(p) == "Pipeline(\n  .load()\n  .normalize_hu()\n  .flip(axis=(2,))\n)"
    assert repr(cf.Pipeline().normalize_hu(-500, 300)) == (
        "Pipeline(\n  .normalize_hu(min_hu=-500.0, max_hu=300.0)\n)"
    )
    assert "on Dataset(10 items" in repr(tiny_ds >> p)


def test_plan_epochs_drop_last_and_shuffle():
    ids = [f"i{k}" for k in range(7)]
    plan = list(plan_batches(ids, 3, n_epochs=2))
    assert [len(b) for _, b in plan] == [3, 3, 1, 3, 3, 1]
    assert [p for p, _ in plan] == list(range(6))
    plan = list(plan_batches(ids, 3, n_epochs=2, drop_last=True))
    assert [len(b) for _, b in plan] == [3, 3, 3, 3]
    a = [b for _, b in plan_batches(ids, 7, shuffle=True, n_epochs=3, seed=5)]
    b = [b for _, b in plan_batches(ids, 7, shuffle=True, n_epochs=3, seed=5)]
    assert a == b
    assert all(sorted(e) == ids for e in a)
    assert a[0] != a[1] or a[1] != a[2]  # epochs are reshuffled
    with pytest.raises(cf.InvalidParameterError):
        list(plan_batches(ids, 0))


def test_gen_batch_and_next_batch_order(tiny_ds):
    p = tiny_ds >> cf.Pipeline().load()
    ids = [b.ids for b in p.gen_batch(batch_size=4, n_epochs=1)]
    assert ids == [["s0", "s1", "s2", "s3"], ["s4", "s5", "s6", "s7"], ["s8", "s9"]]
    first = p.next_batch(4, drop_last=True)
    second = p.next_batch(4)
    assert first.ids == ["s0", "s1", "s2", "s3"] and second.ids == ["s4", "s5", "s6", "s7"]
    with pytest.raises(StopIteration):
        p.next_batch(4)
    p.reset()
    assert p.next_batch(3).ids == ["s0", "s1", "s2"]
    infinite = p.gen_batch(batch_size=4, n_epochs=None, shuffle=True, seed=1)
    seen = [next(infinite) for _ in range(6)]
    assert len(seen) == 6
    infinite.close()


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_prefetch_with_failing_items_skip_finishes_and_reports(tiny_ds, tmp_path, prefetch):
    out = tmp_path / f"out{prefetch}"
    p = tiny_ds >> (
        cf.Pipeline().load().explode_on(bad_ids=("s3", "s8")).explode_batch_with("s5").dump(out)
    )
    report = p.run(batch_size=2, prefetch=prefetch, on_error="skip")
    failed = dict(report.failed)
    # a batch-level action that fails is retried item by item: s4, batched with s5, goes on
    assert sorted(failed) == ["s3", "s5", "s8"]
    assert "Broken" in failed["s3"] and "explode_on" in failed["s3"]
    assert "explode_batch_with" in failed["s5"] and "s5 fails" in failed["s5"]
    assert sorted(report.done) == ["s0", "s1", "s2", "s4", "s6", "s7", "s9"]
    assert sorted(d.name for d in out.iterdir()) == sorted(report.done)
    assert report.n_batches == 5 and report.n_items == 10
    assert set(report.timings) == {"load", "explode_on", "explode_batch_with", "dump"}


@pytest.mark.parametrize("prefetch", [0, 2])
def test_prefetch_raise_reraises_original_type_and_does_not_hang(tiny_ds, prefetch):
    p = tiny_ds >> cf.Pipeline().load().slow(0.02).explode_on(bad_ids=("s4",))
    t0 = time.perf_counter()
    with pytest.raises(Broken, match="cannot process s4") as info:
        p.run(batch_size=2, prefetch=prefetch)
    assert time.perf_counter() - t0 < 30
    assert any("'s4'" in n for n in info.value.__notes__)
    # the batch executor threads are gone (nothing keeps running after the error)
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("ctflow-batch")]


def test_same_output_for_prefetch_0_and_3(tiny_ds):
    p = tiny_ds >> cf.Pipeline().load().jitter()
    runs = []
    for prefetch, workers in [(0, 1), (3, 2)]:
        runs.append(
            [
                b.images.copy()
                for b in p.gen_batch(
                    batch_size=3, shuffle=True, seed=11, prefetch=prefetch, n_workers=workers
                )
            ]
        )
    assert len(runs[0]) == len(runs[1]) == 4
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
    other = [b.images for b in p.gen_batch(batch_size=3, shuffle=True, seed=12)]
    assert not np.array_equal(other[0], runs[0][0])


def test_batches_running_at_once_share_the_threads(tiny_ds):
    # batches meet in pairs before and after reading their thread count: both are running then
    seen: list[tuple[str, int]] = []
    meet, leave = threading.Barrier(2), threading.Barrier(2)
    p = tiny_ds >> cf.Pipeline().meet(meet).note_threads(seen).meet(leave)
    p.run(batch_size=1, prefetch=2, n_workers=4)
    assert sorted(n for _, n in seen) == [2] * len(tiny_ds)  # 4 threads, 2 batches at a time
    # a batch running alone under a share gets all of them (one thread per item here)
    seen.clear()
    (tiny_ds >> cf.Pipeline().note_threads(seen)).run(batch_size=2, prefetch=1, n_workers=4)
    assert sorted(n for _, n in seen) == [2] * len(tiny_ds)  # 4 threads / 2 items
    # without prefetch: n_workers as given
    seen.clear()
    (tiny_ds >> cf.Pipeline().note_threads(seen)).run(batch_size=1, n_workers=3)
    assert {n for _, n in seen} == {3}
    # a yielded batch keeps the caller's n_workers for the actions called on it later
    batch = next((tiny_ds >> cf.Pipeline().load()).gen_batch(prefetch=2, n_workers=3))
    assert batch.n_workers == 3


def test_run_report_summary_and_progress(tiny_ds, capsys):
    report = (tiny_ds >> cf.Pipeline().load().normalize_hu()).run(batch_size=4, progress=True)
    assert report.done == tiny_ds.ids and report.failed == []
    text = report.summary()
    assert "done 10" in text and "normalize_hu" in text
    assert report.peak_rss_mb > 0 and report.wall_time > 0


def test_run_report_aligns_the_times_of_long_action_labels():
    from ctflow.runs import RunReport

    report = RunReport(timings={"load": 1.0, "sample_nodules + normalize_hu": 0.25})
    rows = [line for line in report.summary().splitlines() if line.endswith("%")]
    assert len(rows) == 2
    assert len({line.index(" s ") for line in rows}) == 1  # the seconds in one column


def test_unbound_pipeline_run_is_a_clear_error():
    with pytest.raises(cf.InvalidParameterError, match="no dataset"):
        cf.Pipeline().load().run(batch_size=1)


def test_call_step_and_subclass_batches_in_pipelines(tiny_ds):
    seen = []
    p = tiny_ds >> cf.Pipeline().load().call(
        lambda b, tag: seen.append((tag, type(b).__name__)), "x"
    )
    p.run(batch_size=5)
    assert seen == [("x", "Counting"), ("x", "Counting")]
