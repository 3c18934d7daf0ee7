"""The local engine (:mod:`ctflow.engines.local`) and the protocol (:mod:`ctflow.engines.base`).

What is checked is what the two modules document: every engine satisfies the runtime-checkable
:class:`~ctflow.engines.base.Engine`; outcomes come back strictly in plan order whatever order the
batches finish in; ``prefetch`` bounds the batches running and held at once; a batch's failure
travels in its outcome (``error`` under ``on_error="raise"``, ``failed`` items under ``"skip"``)
and never out of ``run_batches``; a consumer that stops early cancels what is pending and waits for
what runs; and once the run's :class:`~ctflow.runs.StopSignal` is set no new batch starts.

The instruments are actions that sleep, meet or count with thread-safe counters; volumes are
2x4x4, so every test takes well under a second or two.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ctflow as cf
from ctflow.actions.base import BatchAction
from ctflow.engines import DaskEngine, Engine, LocalEngine, resolve_engine
from ctflow.io.metaimage import write_metaimage
from ctflow.runs import BatchOutcome, RunOptions, StopSignal, plan_batches, stop_requested

pytestmark = pytest.mark.timeout(60)

N_SCANS = 8


class Broken(ArithmeticError):
    """The tests' own failure (an original type the engine must not wrap)."""


# ------------------------------------------------------------------------------- instruments
class Probe:
    """Thread-safe record of what the batches did: starts, ends, and how many at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.ended: list[str] = []
        self.running = 0
        self.peak_running = 0
        self.held = 0
        self.peak_held = 0
        self.events: dict[str, threading.Event] = {}

    def event(self, name: str) -> threading.Event:
        with self.lock:
            return self.events.setdefault(name, threading.Event())

    def start(self, item_id: str) -> None:
        with self.lock:
            self.started.append(item_id)
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
            self.held += 1  # a batch exists from its start until its consumer lets it go
            self.peak_held = max(self.peak_held, self.held)
        self.event(f"started {item_id}").set()

    def end(self, item_id: str) -> None:
        with self.lock:
            self.ended.append(item_id)
            self.running -= 1

    def release(self) -> None:
        """The consumer is done with one outcome."""
        with self.lock:
            self.held -= 1


class Start(BatchAction):
    """First action: the batch (named by its first id) starts."""

    probe: Probe

    def run(self, batch: cf.CTBatch) -> cf.CTBatch:
        self.probe.start(batch.ids[0])
        return batch


class Work(BatchAction):
    """``seconds[id]`` of work (0 for ids not listed); the batches in ``meeting`` wait until
    ``meet`` batches have run at once (or ``patience`` seconds), so that peak is reached."""

    probe: Probe
    seconds: dict[str, float]
    meet: int = 0
    meeting: tuple[str, ...] = ()
    patience: float = 5.0

    def run(self, batch: cf.CTBatch) -> cf.CTBatch:
        if batch.ids[0] in self.meeting:
            end = time.monotonic() + self.patience
            while self.probe.peak_running < self.meet and time.monotonic() < end:
                time.sleep(0.002)
        time.sleep(self.seconds.get(batch.ids[0], 0.0))
        return batch


class End(BatchAction):
    """Last action: the batch went through every action."""

    probe: Probe

    def run(self, batch: cf.CTBatch) -> cf.CTBatch:
        self.probe.end(batch.ids[0])
        return batch


class FailOn(BatchAction):
    """Raise :class:`Broken` for a batch holding ``bad_id``."""

    bad_id: str

    def run(self, batch: cf.CTBatch) -> cf.CTBatch:
        if self.bad_id in batch.ids:
            raise Broken(f"cannot process {self.bad_id}")
        return batch


class StopWhen(BatchAction):
    """In the batch of ``trigger``: wait until the batch of ``after`` started, then set ``stop``."""

    stop: StopSignal
    trigger: str
    probe: Probe
    after: str | None = None

    def run(self, batch: cf.CTBatch) -> cf.CTBatch:
        if batch.ids[0] == self.trigger:
            if self.after is not None:
                assert self.probe.event(f"started {self.after}").wait(10)
            self.stop.set()
        return batch


class EngineBatch(cf.CTBatch):
    """User actions (``@cf.action``) for the tests through the public pipeline API."""

    @cf.action
    def sleep_by_id(self, seconds, finished):
        time.sleep(seconds.get(self.ids[0], 0.0))
        finished.append(self.ids[0])
        return self

    @cf.action
    @cf.inbatch_parallel
    def explode_on(self, item, bad_id=""):
        if item.id == bad_id:
            raise Broken(f"cannot process {item.id}")

    @cf.action
    def ctrl_c_on(self, item_id):
        """Press Ctrl-C (in this process) while the batch of ``item_id`` runs."""
        if item_id in self.ids:
            signal.raise_signal(signal.SIGINT)
        return self

    @cf.action
    def mark(self, seen):
        seen.extend(self.ids)
        return self


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scans")
    for k in range(N_SCANS):
        write_metaimage(
            d / f"s{k}.mhd", np.full((2, 4, 4), 10 * k, np.int16), cf.Geometry((1.0, 1.0, 1.0))
        )
    return d


@pytest.fixture()
def ds(scan_dir: Path) -> cf.Dataset:
    return cf.Dataset.from_glob(str(scan_dir / "*.mhd"), batch_class=EngineBatch)


def _run(
    dataset: cf.Dataset,
    actions: list[Any],
    plan: Any,
    *,
    on_each: Callable[[BatchOutcome], None] | None = None,
    **options: Any,
) -> list[BatchOutcome]:
    """All outcomes of a local run (``on_each`` called as each arrives, i.e. by the consumer)."""
    out = []
    for outcome in LocalEngine().run_batches(dataset, actions, plan, RunOptions(**options)):
        out.append(outcome)
        if on_each is not None:
            on_each(outcome)
    return out


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ctflow-batch")]


# ----------------------------------------------------------------------------------- protocol
def test_local_and_dask_engines_satisfy_the_engine_protocol():
    local = LocalEngine()
    assert isinstance(local, Engine)
    with local as entered:
        assert entered is local
    assert repr(local) == "LocalEngine()"
    # a DaskEngine starts its LocalCluster on first use (the ``client`` property), not when it
    # is made: the protocol check needs no cluster
    dask = DaskEngine()
    assert isinstance(dask, Engine)
    assert repr(dask) == "DaskEngine(local cluster, not started)"
    assert dask._client is None and dask._cluster is None
    dask.close()  # nothing started, nothing to release
    with DaskEngine("tcp://127.0.0.1:1") as remote:  # an address: connects on first use only
        assert isinstance(remote, Engine)
        assert repr(remote) == "DaskEngine('tcp://127.0.0.1:1', not connected)"


def test_resolve_engine_accepts_engines_and_rejects_what_is_not_one():
    assert isinstance(resolve_engine("local"), LocalEngine)
    assert isinstance(resolve_engine(None), LocalEngine)
    engine = LocalEngine()
    assert resolve_engine(engine) is engine

    class HalfAnEngine:  # run_batches alone is not the protocol (no close, no context)
        def run_batches(self, dataset, actions, plan, options):
            return iter(())

    assert not isinstance(HalfAnEngine(), Engine)
    with pytest.raises(cf.InvalidParameterError, match="engine must be 'local'"):
        resolve_engine(HalfAnEngine())
    with pytest.raises(cf.InvalidParameterError, match="engine must be 'local'"):
        resolve_engine("threads")


def test_a_user_engine_that_follows_the_protocol_runs_a_pipeline(ds):
    class Recording:
        """Delegates to the local engine and records what a run hands an engine."""

        def __init__(self) -> None:
            self.plans: list[list[tuple[int, list[str]]]] = []
            self.options: list[RunOptions] = []
            self.closed = False

        def run_batches(self, dataset, actions, plan, options) -> Iterator[BatchOutcome]:
            plan = list(plan)
            self.plans.append(plan)
            self.options.append(options)
            return LocalEngine().run_batches(dataset, actions, plan, options)

        def close(self) -> None:
            self.closed = True

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    engine = Recording()
    assert isinstance(engine, Engine)
    report = (ds >> cf.Pipeline().load()).run(batch_size=3, prefetch=1, seed=5, engine=engine)
    assert report.done == ds.ids and report.n_batches == 3
    assert engine.plans == [list(plan_batches(ds.ids, 3, seed=5))]
    (options,) = engine.options
    assert (options.prefetch, options.seed, options.keep_batch) == (1, 5, False)
    assert options.stop is not None and not stop_requested(options.stop)  # the run's signal
    assert not engine.closed  # the caller's engine: the run does not close it


# ------------------------------------------------------------------------------------ ordering
@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_outcomes_come_back_in_plan_order_when_earlier_batches_are_slower(ds, prefetch):
    probe = Probe()
    # the earlier the batch, the slower: with prefetch they finish in reverse order
    seconds = {"s5": 0.24, "s0": 0.16, "s7": 0.08}
    plan = [(7, ["s5"]), (3, ["s0", "s1"]), (9, ["s7"]), (4, ["s2"]), (0, ["s3", "s4"])]
    outs = _run(
        ds,
        [Start(probe), Work(probe, seconds), End(probe)],
        iter(plan),  # any iterable of (position, ids): positions are the caller's
        prefetch=prefetch,
    )
    assert [(o.position, o.ids) for o in outs] == plan
    assert [o.done for o in outs] == [ids for _, ids in plan]
    assert all(o.error is None and o.failed == [] for o in outs)
    assert all(
        o.batch is not None and o.batch.ids == ids for o, (_, ids) in zip(outs, plan, strict=True)
    )
    if prefetch >= 2:  # the test means something: batches really finished out of order
        assert probe.ended.index("s0") < probe.ended.index("s5")
        assert probe.ended.index("s7") < probe.ended.index("s0")


def test_gen_batch_yields_in_plan_order_with_a_slow_user_action(ds):
    plan = [ids for _, ids in plan_batches(ds.ids, 2, shuffle=True, seed=3)]
    assert plan != sorted(plan)  # a shuffled plan: plan order is not the ids' order
    # the first batch of the plan is the slowest, the second slower than the third
    seconds = {plan[0][0]: 0.2, plan[1][0]: 0.1}
    finished: list[str] = []
    pipe = ds >> cf.Pipeline().load().sleep_by_id(seconds, finished)
    got = [b.ids for b in pipe.gen_batch(batch_size=2, shuffle=True, seed=3, prefetch=3)]
    assert got == plan
    # the batches really finished out of order (3 run at once)
    assert finished.index(plan[2][0]) < finished.index(plan[1][0]) < finished.index(plan[0][0])


# ------------------------------------------------------------------------------------ prefetch
@pytest.mark.parametrize("prefetch", [1, 2, 3])
def test_prefetch_k_runs_k_batches_at_once_and_never_more(ds, prefetch):
    # local.py: ``prefetch`` batches run ahead "on threads" (a pool of ``prefetch`` threads).
    # The first ``prefetch`` batches wait for each other, so the peak is reached; a pool that
    # let one more batch run would show as a higher peak.
    probe = Probe()
    meeting = tuple(f"s{k}" for k in range(prefetch))
    work = Work(probe, {}, meet=prefetch, meeting=meeting)
    outs = _run(
        ds,
        [Start(probe), work, End(probe)],
        plan_batches(ds.ids, 1),
        prefetch=prefetch,
        on_each=lambda o: time.sleep(0.01),  # a consumer slower than the batches
    )
    assert [o.position for o in outs] == list(range(N_SCANS))
    assert probe.peak_running == prefetch
    assert sorted(probe.ended) == sorted(ds.ids)


def test_without_prefetch_nothing_runs_ahead_of_the_consumer(ds):
    probe = Probe()
    seen_at_consumer: list[int] = []
    _run(
        ds,
        [Start(probe), End(probe)],
        plan_batches(ds.ids, 2),
        prefetch=0,
        on_each=lambda o: seen_at_consumer.append(len(probe.started)),
    )
    assert seen_at_consumer == [1, 2, 3, 4]  # batch j+1 starts only when j has been consumed
    assert not _batch_threads()


@pytest.mark.parametrize("prefetch", [1, 2])
def test_prefetch_k_holds_at_most_k_plus_1_batches_as_documented(ds, prefetch):
    # held = started by the engine and not yet let go by the consumer; the consumer is slower
    # than a batch, so whatever the engine may run ahead does run ahead
    probe = Probe()

    def consume(outcome: BatchOutcome) -> None:
        time.sleep(0.06)
        probe.release()

    _run(
        ds,
        [Start(probe), Work(probe, {}), End(probe)],
        plan_batches(ds.ids, 1),
        prefetch=prefetch,
        on_each=consume,
    )
    assert probe.peak_held <= prefetch + 1


def test_a_consumer_that_stops_early_cancels_pending_batches_and_waits_for_running_ones(ds):
    probe = Probe()
    prefetch = 2
    actions = [Start(probe), Work(probe, dict.fromkeys(ds.ids, 0.05)), End(probe)]
    gen = LocalEngine().run_batches(
        ds, actions, plan_batches(ds.ids, 1, n_epochs=50), RunOptions(prefetch=prefetch)
    )
    first = next(gen)
    assert first.position == 0 and first.done == ["s0"]
    gen.close()  # the consumer stops (a break, an error of its own)
    started = list(probe.started)
    # running batches were waited for (no batch is left half-way), pending ones never start
    assert sorted(probe.ended) == sorted(started)
    # the documented bound: the consumed one + prefetch ahead
    assert len(started) <= 1 + prefetch
    assert not _batch_threads()
    time.sleep(0.15)
    assert probe.started == started  # nothing starts after the run returned


# -------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("prefetch", [0, 2])
def test_raise_travels_in_the_outcome_with_its_original_type_and_notes(ds, prefetch):
    pipe = ds >> cf.Pipeline().load().explode_on(bad_id="s3")
    outs = _run(ds, list(pipe.planned), plan_batches(ds.ids, 2), prefetch=prefetch)
    # the engine never raises a batch's failure: every batch comes back, in order
    assert [o.position for o in outs] == [0, 1, 2, 3]
    bad = outs[1]
    assert bad.ids == ["s2", "s3"] and bad.done == [] and bad.batch is None
    assert type(bad.error) is Broken and str(bad.error) == "cannot process s3"
    notes = "\n".join(bad.error.__notes__)
    assert "'explode_on'" in notes  # the action
    assert "position 1" in notes  # the batch
    assert "'s3'" in notes  # the item
    for other in (outs[0], outs[2], outs[3]):
        assert other.error is None and other.done == other.ids


@pytest.mark.parametrize("prefetch", [0, 3])
def test_pipeline_raises_the_original_exception_and_leaves_no_batch_thread(ds, prefetch):
    pipe = ds >> cf.Pipeline().load().explode_on(bad_id="s5")
    got: list[list[str]] = []
    with pytest.raises(Broken, match="cannot process s5") as info:
        for batch in pipe.gen_batch(batch_size=2, prefetch=prefetch):
            got.append(batch.ids)
    assert got == [["s0", "s1"], ["s2", "s3"]]  # the batches before the failing one
    assert any("'s5'" in n for n in info.value.__notes__)
    assert not _batch_threads()


@pytest.mark.parametrize("prefetch", [0, 2])
def test_skip_reports_failed_items_and_the_other_items_finish(ds, prefetch):
    probe = Probe()
    actions = [Start(probe), FailOn("s4"), End(probe)]
    outs = _run(ds, actions, plan_batches(ds.ids, 3), prefetch=prefetch, on_error="skip")
    assert [o.ids for o in outs] == [["s0", "s1", "s2"], ["s3", "s4", "s5"], ["s6", "s7"]]
    assert all(o.error is None for o in outs)
    bad = outs[1]
    # a batch action that fails is run again on each item alone: only s4 is dropped
    assert bad.failed == [("s4", "FailOn: Broken: cannot process s4")]
    assert bad.done == ["s3", "s5"]
    assert bad.batch is not None and bad.batch.ids == ["s3", "s5"]
    assert outs[0].done == ["s0", "s1", "s2"] and outs[2].done == ["s6", "s7"]
    assert sorted(probe.ended) == ["s0", "s3", "s6"]  # End sees s3 and s5 as one batch


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_batch_that_cannot_be_made_is_an_outcome_too(ds, on_error):
    # an id the dataset does not know: create_batch fails inside the engine's batch
    plan = [(0, ["s0"]), (1, ["nope", "s1"]), (2, ["s2"])]
    outs = _run(ds, [], plan, prefetch=1, on_error=on_error)
    assert [o.position for o in outs] == [0, 1, 2]
    assert outs[0].done == ["s0"] and outs[2].done == ["s2"]
    if on_error == "raise":
        assert isinstance(outs[1].error, cf.InvalidParameterError)
        assert "nope" in str(outs[1].error)
    else:
        assert outs[1].error is None
        assert [i for i, _ in outs[1].failed] == ["nope", "s1"]
        assert all(r.startswith("create_batch: ") for _, r in outs[1].failed)


# ---------------------------------------------------------------------------------------- stop
def test_stop_set_mid_run_starts_no_new_batch_without_prefetch(ds):
    probe = Probe()
    with StopSignal() as stop:
        actions = [Start(probe), StopWhen(stop, "s2", probe), End(probe)]
        outs = _run(ds, actions, plan_batches(ds.ids, 1), prefetch=0, stop=stop.name)
    assert probe.started == ["s0", "s1", "s2"]  # no batch after the stop
    assert probe.ended == ["s0", "s1"]  # nor the stopping batch's next action
    assert [o.position for o in outs] == [0, 1, 2]
    assert outs[2].done == [] and outs[2].interrupted == ["s2"]
    assert [o.done for o in outs[:2]] == [["s0"], ["s1"]]


@pytest.mark.parametrize("prefetch", [1, 2])
def test_stop_set_mid_run_starts_no_new_batch_with_prefetch(ds, prefetch):
    # s0 sets the stop once s1 runs beside it (s1 is then in its 0.3 s of work): the batches
    # submitted and not started by then, and all the others, never start an action
    probe = Probe()
    after = "s1" if prefetch > 1 else None  # prefetch 1: one thread, s0 is alone
    with StopSignal() as stop:
        actions = [
            Start(probe),
            StopWhen(stop, "s0", probe, after=after),
            Work(probe, {"s1": 0.3}),
            End(probe),
        ]
        outs = _run(ds, actions, plan_batches(ds.ids, 1), prefetch=prefetch, stop=stop.name)
    assert sorted(probe.started) == (["s0", "s1"] if prefetch > 1 else ["s0"])
    assert probe.ended == []  # every started batch stopped before its next action
    positions = [o.position for o in outs]
    assert positions == list(range(len(positions))) and len(positions) <= prefetch + 1
    assert all(o.done == [] and o.interrupted == o.ids for o in outs)


def test_first_ctrl_c_of_a_run_stops_it_between_batches_and_reports(ds):
    # the run's StopSignal is set by the first SIGINT (here raised in the main thread by an
    # action of the batch of s2, prefetch 0: the batch runs in the main thread)
    seen: list[str] = []
    pipe = ds >> cf.Pipeline().load().ctrl_c_on("s2").mark(seen)
    before = signal.getsignal(signal.SIGINT)
    report = pipe.run(batch_size=1)
    assert report.stopped
    assert report.done == ["s0", "s1"] and report.interrupted == ["s2"]
    assert seen == ["s0", "s1"]  # s2 did not start its next action, s3.. did not start
    assert report.n_batches == 3
    assert signal.getsignal(signal.SIGINT) is before


def test_first_ctrl_c_ends_gen_batch_with_keyboard_interrupt(ds):
    pipe = ds >> cf.Pipeline().load().ctrl_c_on("s4")
    got: list[list[str]] = []
    with pytest.raises(KeyboardInterrupt, match="stopped"):
        for batch in pipe.gen_batch(batch_size=2):
            got.append(batch.ids)
    assert got == [["s0", "s1"], ["s2", "s3"]]  # the stopped batch is not handed out


def test_a_callers_sigint_handler_is_restored_after_a_stopped_run(ds):
    calls: list[int] = []

    def mine(signum: int, frame: Any) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        report = (ds >> cf.Pipeline().load().ctrl_c_on("s1")).run(batch_size=1)
        assert report.stopped
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)
