"""The Dask engine on a real LocalCluster (2 worker processes, loopback only).

One cluster serves the whole module. Its scheduler allows one extra attempt per task
(``allowed_failures=1``) so the test of a batch that kills its worker every time costs two worker
restarts instead of four; every test that kills workers waits for both to be back.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import distributed
import numpy as np
import pandas as pd
import pytest

import ctflow as cf
from ctflow.io import store
from ctflow.io.metaimage import write_metaimage
from ctflow.synthetic import make_dataset
from ctflow.system import cpu_count

pytestmark = pytest.mark.timeout(120)

N_SCANS = 12


class EngineBatch(cf.CTBatch):
    """Actions the tests steer the cluster with (all deterministic given the seed)."""

    @cf.action
    def slow(self, seconds=0.0):
        time.sleep(seconds)
        return self

    @cf.action
    def mark(self, folder):
        """Leave ``<folder>/<first id>.<pid>.<n>`` when the batch starts (who runs what)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        stem = f"{self.ids[0]}.{os.getpid()}"
        n = len(list(Path(folder).glob(f"{stem}.*")))
        (Path(folder) / f"{stem}.{n}").touch()
        return self

    @cf.action
    def wait_for(self, folder, head, count, timeout=15.0):
        """Item ``head`` finishes only once ``count`` marks exist in ``folder`` (or timeout)."""
        if head in self.ids:
            end = time.monotonic() + timeout
            while len(list(Path(folder).glob("*"))) < count and time.monotonic() < end:
                time.sleep(0.01)
        return self

    @cf.action
    def use_pool(self, mib=16):
        """Take a pooled buffer (as a kernel's output would) and let it go idle."""
        from ctflow import memory

        buf = memory.empty(mib * 2**20, np.uint8)
        buf[:] = 1
        del buf
        return self

    @cf.action
    @cf.inbatch_parallel
    def fail_on(self, item, bad_id="", attempts=None):
        if item.id == bad_id:
            if attempts is not None:
                with open(Path(attempts) / item.id, "a") as fh:
                    fh.write(f"{os.getpid()}\n")
            raise ArithmeticError(f"deterministic failure of {item.id}")

    @cf.action
    def die_on(self, bad_id, attempts):
        """Kill this process (as a segfault in a C extension would) when ``bad_id`` is here."""
        if bad_id in self.ids:
            with open(Path(attempts) / bad_id, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            time.sleep(0.2)
            os._exit(13)
        return self

    @cf.action
    @cf.inbatch_parallel
    def jitter(self, item):
        noise = item.rng.normal(0, 50, item.images.shape)
        return (item.images + noise).astype(np.float32)

    @cf.action
    def record_threads(self):
        for info in self.info:
            info["n_workers"] = self.n_workers
        return self


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="2GiB",
        scheduler_kwargs={"allowed_failures": 1, "dashboard_address": "127.0.0.1:0"},
    )
    client = distributed.Client(cluster)
    yield cluster, client
    client.close()
    cluster.close()


@pytest.fixture()
def engine(cluster):
    _, client = cluster
    client.wait_for_workers(2, timeout=60)  # a previous test may have killed one
    return cf.DaskEngine(client)


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(3)
    for k in range(N_SCANS):
        arr = rng.integers(-1000, 500, size=(4, 16, 16)).astype(np.int16)
        write_metaimage(d / f"s{k:02d}.mhd", arr, cf.Geometry((2.0, 0.7, 0.7), (k, 0, 0)))
    return d


@pytest.fixture()
def scans(scan_dir):
    return cf.Dataset.from_glob(str(scan_dir / "*.mhd"), batch_class=EngineBatch)


@pytest.fixture(scope="module")
def luna(tmp_path_factory):
    """Six LUNA16-like phantoms (with nodules) and their annotations.csv."""
    d = tmp_path_factory.mktemp("luna")
    paths, csv = make_dataset(d, n_scans=6, shape=(32, 64, 64), seed=1)
    return cf.Dataset.from_paths(paths, batch_class=EngineBatch), csv


def _bytes(p: Path) -> bytes:
    """A file's bytes; for ``meta.json`` without ``history``: the compared runs' pipelines differ
    by test instruments (``mark``, ``slow``) that the history faithfully records."""
    if p.name != "meta.json":
        return p.read_bytes()
    meta = json.loads(p.read_text())
    meta.pop("history", None)
    return json.dumps(meta, sort_keys=True).encode()


def _digest(root: Path) -> dict[str, str]:
    """sha1 of every file under ``root`` (hidden ones too), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha1(_bytes(p)).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _luna_pipeline(csv, dst):
    return (
        cf.Pipeline()
        .load()
        .fetch_nodules(str(csv))
        .unify_spacing((1.5, 1.0, 1.0), shape=(None, 48, 48))
        .create_mask()
        .jitter()
        .normalize_hu()
        .sample_nodules(3, (8, 16, 16), share=0.5)
        .dump(dst)
    )


# ----------------------------------------------------------------------------------- same output
def test_dask_dumps_are_byte_identical_to_local_ones(luna, tmp_path, engine):
    ds, csv = luna
    digests = {}
    runs = [("local", "local", 3, 1), ("dask", engine, 3, 0), ("other_seed", "local", 4, 1)]
    for name, eng, seed, prefetch in runs:
        report = (ds >> _luna_pipeline(csv, tmp_path / name)).run(
            batch_size=2, seed=seed, engine=eng, prefetch=prefetch
        )
        assert sorted(report.done) == sorted(ds.ids) and report.failed == []
        digests[name] = _digest(tmp_path / name)
    # 3 batches x 3 crops, each images + masks + meta.json, nothing else (no staging leftovers)
    assert len(digests["local"]) == 27
    assert digests["dask"] == digests["local"]
    # the random actions matter: another seed writes other bytes
    assert digests["other_seed"] != digests["local"]


def test_workers_keep_no_idle_pooled_buffers_after_a_run(scans, tmp_path, engine):
    from ctflow import memory

    pipe = scans >> cf.Pipeline().load().use_pool(16).dump(tmp_path / "out")
    report = pipe.run(batch_size=3, seed=0, engine=engine)
    assert sorted(report.done) == sorted(scans.ids)
    stats = engine.client.run(memory.pool_stats)
    assert len(stats) == 2
    for worker, s in stats.items():
        assert s["idle_bytes"] == 0 and s["idle_buffers"] == 0, (worker, s)


def test_gen_batch_on_dask_returns_the_same_batches(luna, engine):
    ds, csv = luna
    pipe = ds >> (
        cf.Pipeline()
        .load()
        .fetch_nodules(str(csv))
        .jitter()
        .sample_nodules(2, (8, 16, 16), share=0.5)
    )
    kw = {"batch_size": 2, "shuffle": True, "n_epochs": 2, "seed": 11}
    local = list(pipe.gen_batch(**kw))
    remote = list(pipe.gen_batch(**kw, engine=engine, prefetch=1))
    assert len(local) == len(remote) == 6
    assert [b.ids for b in remote] == [b.ids for b in local]
    for a, b in zip(local, remote, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.spacing, b.spacing)
        np.testing.assert_array_equal(a.origin, b.origin)
        pd.testing.assert_frame_equal(a.nodules, b.nodules)
        assert a.info == b.info


def test_item_threads_follow_the_cores_per_dask_thread(scans, engine):
    cores = cpu_count()
    pipe = scans >> cf.Pipeline().record_threads()
    batches = list(pipe.gen_batch(batch_size=6, engine=engine))
    # 2 worker processes x 1 Dask thread on this host share its cores
    assert {info["n_workers"] for b in batches for info in b.info} == {max(1, cores // 2)}
    batches = list(pipe.gen_batch(batch_size=6, engine=engine, n_workers=3))
    assert {info["n_workers"] for b in batches for info in b.info} == {3}


# ----------------------------------------------------------------------------------- failures
def test_deterministic_failure_is_reported_once_and_not_retried(scans, tmp_path, engine):
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    pipe = scans >> cf.Pipeline().load().fail_on(bad_id="s04", attempts=attempts).dump(
        tmp_path / "o"
    )
    report = pipe.run(batch_size=2, engine=engine, on_error="skip")
    assert [i for i, _ in report.failed] == ["s04"]
    assert "ArithmeticError" in report.failed[0][1] and "s04" in report.failed[0][1]
    assert sorted(report.done) == [i for i in scans.ids if i != "s04"]
    assert _visible(tmp_path / "o") == [i for i in scans.ids if i != "s04"]
    assert len((attempts / "s04").read_text().split()) == 1
    with pytest.raises(ArithmeticError, match="s04"):
        pipe.run(batch_size=2, engine=engine, on_error="raise")
    assert len((attempts / "s04").read_text().split()) == 2  # once more, not again and again


def test_batch_that_kills_its_worker_is_reported_once(scans, tmp_path, cluster, engine):
    _, client = cluster
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    # the last batch, so no innocent batch queues behind it on a dying worker twice (Dask would
    # then give up on that one too: see docs/dask.md, "Fault tolerance")
    pipe = scans >> cf.Pipeline().load().die_on("s11", attempts).dump(tmp_path / "o")
    report = pipe.run(batch_size=2, engine=engine, on_error="skip")
    # the batch [s10, s11] is lost with its worker on every attempt: reported once, both items
    assert [i for i, _ in report.failed] == ["s10", "s11"]
    assert all("KilledWorker" in reason for _, reason in report.failed)
    assert sorted(report.done) == scans.ids[:10]
    assert _visible(tmp_path / "o") == scans.ids[:10]
    # tried 1 + allowed_failures times, on two different worker processes, then given up
    pids = (attempts / "s11").read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2
    client.wait_for_workers(2, timeout=60)


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(scans, tmp_path, cluster, engine):
    _, client = cluster
    reference = tmp_path / "reference"
    (scans >> cf.Pipeline().load().jitter().dump(reference)).run(batch_size=2, seed=0)
    worker_pids = set(client.run(os.getpid).values())
    marks, out = tmp_path / "marks", tmp_path / "out"
    killed: dict[str, object] = {}

    def kill_a_worker_mid_batch():
        # wait until one worker has finished a batch and started another, then SIGKILL it
        end = time.monotonic() + 60
        while time.monotonic() < end:
            started = sorted(marks.glob("*"), key=lambda p: p.stat().st_mtime_ns)
            by_pid: dict[int, list[str]] = {}
            for p in started:
                first_id, pid, _ = p.name.split(".")
                by_pid.setdefault(int(pid), []).append(first_id)
            for pid, firsts in by_pid.items():
                if pid in worker_pids and len(firsts) >= 2:
                    os.kill(pid, signal.SIGKILL)
                    killed.update(pid=pid, batch=firsts[-1])
                    return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_worker_mid_batch)
    killer.start()
    pipe = scans >> cf.Pipeline().load().mark(marks).slow(0.4).jitter().dump(out)
    report = pipe.run(batch_size=2, engine=engine, on_error="skip", seed=0, prefetch=1)
    killer.join(timeout=60)
    assert killed, "the test never found a worker mid-batch to kill"
    # every item exactly once, nothing failed, no leftovers, same bytes as an undisturbed run
    assert sorted(report.done) == scans.ids and report.failed == []
    assert sorted(os.listdir(out)) == scans.ids
    assert _digest(out) == _digest(reference)
    # the batch the dead worker was running ran again, in another process
    reran = {p.name.split(".")[1] for p in marks.glob(f"{killed['batch']}.*")}
    assert str(killed["pid"]) in reran and len(reran) >= 2
    client.wait_for_workers(2, timeout=60)


# ----------------------------------------------------------------------------------- memory
@pytest.fixture(scope="module")
def many_scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    for k in range(30):
        write_metaimage(
            d / f"m{k:02d}.mhd", np.full((2, 8, 8), k, np.int16), cf.Geometry((1.0, 1.0, 1.0))
        )
    return cf.Dataset.from_glob(str(d / "*.mhd"), batch_class=EngineBatch)


def _ctflow_futures(client) -> int:
    return sum(str(k).startswith("ctflow-batch") for k in client.futures)


def test_gen_batch_holds_a_bounded_number_of_batches(many_scans, cluster, engine):
    _, client = cluster
    pipe = many_scans >> cf.Pipeline().load().slow(0.01)
    held = []
    seen = []
    for batch in pipe.gen_batch(batch_size=1, engine=engine, prefetch=1):
        held.append(_ctflow_futures(client))
        seen.extend(batch.ids)
    assert seen == many_scans.ids  # every batch came back, in order
    limit = 1 + 2  # prefetch + worker threads, not 30
    assert engine.max_held_seen <= limit and 1 <= engine.max_in_flight_seen <= limit
    # the client's own count lags by the releases its event loop has not processed yet
    assert max(held) <= 2 * limit < 30

    def released():
        return _ctflow_futures(client) == 0

    end = time.monotonic() + 10
    while not released() and time.monotonic() < end:
        time.sleep(0.05)
    assert released()  # the client keeps nothing after the run

    def scheduler_tasks(dask_scheduler):
        return sum(str(k).startswith("ctflow-batch") for k in dask_scheduler.tasks)

    end = time.monotonic() + 10
    while client.run_on_scheduler(scheduler_tasks) and time.monotonic() < end:
        time.sleep(0.05)
    assert client.run_on_scheduler(scheduler_tasks) == 0


def test_stopping_an_endless_gen_batch_releases_everything(many_scans, cluster, engine):
    _, client = cluster
    pipe = many_scans >> cf.Pipeline().load().slow(0.05)
    batches = pipe.gen_batch(batch_size=1, n_epochs=None, engine=engine, prefetch=2)  # endless
    got = [next(batches).ids for _ in range(3)]
    batches.close()  # what a `break` out of a training loop does
    assert got == [["m00"], ["m01"], ["m02"]]
    assert engine.max_held_seen <= 2 + 2
    end = time.monotonic() + 10
    while _ctflow_futures(client) and time.monotonic() < end:
        time.sleep(0.05)
    assert _ctflow_futures(client) == 0


def test_run_keeps_the_cluster_busy_behind_a_slow_batch_with_bounded_memory(
    many_scans, tmp_path, engine
):
    marks = tmp_path / "marks"
    marks.mkdir()
    # the first batch finishes only after 16 later batches started: an engine that waited for
    # it before submitting more would stall here until the timeout and fail the assertions
    pipe = many_scans >> cf.Pipeline().load().mark(marks).wait_for(marks, "m00", 17)
    report = pipe.run(batch_size=1, engine=engine, prefetch=1)
    assert report.done == many_scans.ids  # in plan order
    limit = 1 + 2
    window = max(4 * limit, limit + 16)
    assert engine.max_in_flight_seen <= limit  # running or queued on the cluster
    assert 17 <= engine.max_held_seen <= window < 30  # finished reports waiting their turn


# ----------------------------------------------------------------------------------- interruption
_CLIENT_SCRIPT = """
import sys, time
import ctflow as cf

class SlowBatch(cf.CTBatch):
    @cf.action
    def slow(self, seconds):
        time.sleep(seconds)
        return self

    @cf.action
    @cf.inbatch_parallel
    def jitter(self, item):
        return (item.images + item.rng.normal(0, 50, item.images.shape)).astype("float32")

src, out, address = sys.argv[1:4]
ds = cf.Dataset.from_glob(src + "/*.mhd", batch_class=SlowBatch)
engine = "local" if address == "local" else cf.DaskEngine(address)
pipe = ds >> cf.Pipeline().load().slow(0.4).jitter().dump(out, skip_existing=True)
report = pipe.run(batch_size=1, seed=0, prefetch=1, n_workers=1, engine=engine)
print("STOPPED" if report.stopped else "FINISHED", len(report.done), flush=True)
"""


@pytest.mark.parametrize(
    ("where", "sig"),
    [("dask", signal.SIGINT), ("dask", signal.SIGKILL), ("local", signal.SIGINT)],
    ids=["dask-ctrl-c", "dask-client-killed", "local-ctrl-c"],
)
def test_interrupted_client_leaves_no_half_item_and_a_rerun_finishes(
    scans, scan_dir, tmp_path, cluster, engine, where, sig
):
    cluster_obj, _ = cluster
    reference = tmp_path / "reference"
    (scans >> cf.Pipeline().load().jitter().dump(reference)).run(batch_size=1, seed=0)
    ref = _digest(reference)
    script = tmp_path / "client.py"
    script.write_text(textwrap.dedent(_CLIENT_SCRIPT))
    out = tmp_path / "out"
    address = cluster_obj.scheduler_address if where == "dask" else "local"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(scan_dir), str(out), address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            if out.is_dir() and len(_visible(out)) >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "FINISHED" not in stdout
    if sig == signal.SIGINT:  # Ctrl-C: the run stops between actions and reports what it did
        assert proc.returncode == 0, stderr
        assert "STOPPED" in stdout and "stopping after the actions in progress" in stderr
    else:  # the client killed: nothing reported
        assert proc.returncode != 0
    # interrupted mid-run; whatever is visible is a complete item, equal to the reference
    done_before = _visible(out)
    assert 2 <= len(done_before) < N_SCANS
    for i in done_before:
        assert store.is_item_dir(out / i)
        for name in os.listdir(out / i):
            assert ref[f"{i}/{name}"] == hashlib.sha1(_bytes(out / i / name)).hexdigest()
    # resume: the items already there are skipped, the rest is written
    pipe = scans >> cf.Pipeline().load().jitter().dump(out, skip_existing=True)
    report = pipe.run(batch_size=1, seed=0, engine=engine)
    assert sorted(report.done) == scans.ids and report.failed == []
    assert set(done_before) <= set(report.skipped) and len(report.skipped) < N_SCANS
    # batches the dead client left running finish their (atomic) writes; then nothing is left
    end = time.monotonic() + 20
    while (out / store.STAGING).exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert _digest(out) == ref


# ----------------------------------------------------------------------------------- set-up
def test_relative_paths_are_resolved_on_the_client(scan_dir, tmp_path, monkeypatch, engine):
    monkeypatch.chdir(tmp_path)
    ds = cf.Dataset.from_paths(
        {p.stem: os.path.relpath(p, tmp_path) for p in sorted(scan_dir.glob("*.mhd"))}
    )
    # the dataset resolves sources on the client, whatever the workers' working folder
    assert ds.sources["s00"] == str(scan_dir / "s00.mhd")
    report = (ds >> cf.Pipeline().load().dump("relative_out")).run(
        batch_size=4, engine=engine, on_error="raise"
    )
    assert sorted(report.done) == ds.ids
    assert _visible(tmp_path / "relative_out") == ds.ids


def test_default_engine_starts_and_stops_its_own_loopback_cluster(scans):
    with cf.DaskEngine(n_workers=1) as engine:
        assert "not started" in repr(engine)
        report = (scans >> cf.Pipeline().load()).run(batch_size=6, engine=engine)
        assert sorted(report.done) == scans.ids
        assert engine.client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert len(engine.client.scheduler_info()["workers"]) == 1
    assert "not started" in repr(engine)


def test_engine_argument_validation(cluster):
    cluster_obj, _ = cluster
    with pytest.raises(cf.InvalidParameterError, match="scheduler address"):
        cf.DaskEngine(42)
    with pytest.raises(cf.InvalidParameterError, match="n_workers"):
        cf.DaskEngine(n_workers=0)
    assert "not connected" in repr(cf.DaskEngine("tcp://127.0.0.1:8786"))
    assert cf.DaskEngine(cluster_obj).address == cluster_obj.scheduler_address


# ----------------------------------------------------------------------------------- cache()
def test_cache_on_the_cluster_makes_each_item_once_and_equals_the_plain_run(
    scans, tmp_path, engine
):
    """cache(dir=...) on Dask workers: the spilled items are shared through the folder, so each
    item is made once in the whole run (3 epochs, 2 worker processes), and later epochs give
    what an uncached local run gives."""
    marks, cached = tmp_path / "marks", tmp_path / "cache"
    body = cf.Pipeline().load().mark(marks).unify_spacing((1.4, 1.4, 1.4)).normalize_hu()
    pipe = cf.Pipeline([*body.actions]).cache(ram_gb=0.0, dir=cached).central_crop((2, 8, 8))
    epochs = list(
        (scans >> pipe).gen_batch(batch_size=1, n_epochs=3, seed=0, engine=engine, prefetch=2)
    )
    assert len(epochs) == 3 * len(scans.ids)
    made = sorted(p.name.split(".")[0] for p in marks.iterdir())
    assert made == sorted(scans.ids)  # each item made once, by whichever worker got it first
    pids = {p.name.split(".")[1] for p in marks.iterdir()}
    assert len(pids) == 2  # both workers made items
    plain = cf.Pipeline([*body.actions]).central_crop((2, 8, 8))
    ref = {b.ids[0]: b.images for b in (scans >> plain).gen_batch(batch_size=1, seed=0)}
    for b in epochs:
        np.testing.assert_array_equal(b.images, ref[b.ids[0]])
