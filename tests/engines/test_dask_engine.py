"""The Dask engine on a real LocalCluster (2 worker processes, loopback only)."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import ctflow as cf
from ctflow.io import store
from ctflow.io.metaimage import write_metaimage

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(300)


class SlowBatch(cf.CTBatch):
    @cf.action
    def slow(self, seconds=0.0):
        time.sleep(seconds)
        return self

    @cf.action
    @cf.inbatch_parallel
    def fail_on(self, item, bad_id=""):
        if item.id == bad_id:
            raise ArithmeticError(f"deterministic failure of {item.id}")

    @cf.action
    @cf.inbatch_parallel
    def jitter(self, item):
        noise = item.rng.normal(0, 50, item.images.shape)
        return (item.images + noise).astype(np.float32)


@pytest.fixture(scope="module")
def cluster_engine():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="2GiB",
    )
    client = distributed.Client(cluster)
    engine = cf.DaskEngine(client)
    yield engine
    client.close()
    cluster.close()


@pytest.fixture()
def scans(tmp_path):
    rng = np.random.default_rng(3)
    for k in range(12):
        arr = rng.integers(-1000, 500, size=(4, 16, 16)).astype(np.int16)
        write_metaimage(tmp_path / f"s{k:02d}.mhd", arr, cf.Geometry((2.0, 0.7, 0.7), (k, 0, 0)))
    return cf.Dataset.from_glob(str(tmp_path / "*.mhd"), batch_class=SlowBatch)


def _dumped(folder):
    return sorted(p.name for p in folder.iterdir())


def test_dask_output_equals_local_output(scans, tmp_path, cluster_engine):
    outs = {}
    for name, engine in [("local", "local"), ("dask", cluster_engine)]:
        dst = tmp_path / name
        pipe = scans >> cf.Pipeline().load().jitter().normalize_hu().dump(dst)
        report = pipe.run(batch_size=3, seed=5, engine=engine, on_error="skip", prefetch=1)
        assert sorted(report.done) == scans.ids
        outs[name] = dst
    assert _dumped(outs["local"]) == _dumped(outs["dask"]) == scans.ids
    for i in scans.ids:
        a = store.read_item(outs["local"] / i)
        b = store.read_item(outs["dask"] / i)
        np.testing.assert_array_equal(a.components["images"], b.components["images"])
        assert a.geometry == b.geometry
    # gen_batch brings the processed batches back, in order
    batches = list((scans >> cf.Pipeline().load()).gen_batch(batch_size=5, engine=cluster_engine))
    assert [b.ids for b in batches] == [scans.ids[:5], scans.ids[5:10], scans.ids[10:]]


def test_deterministic_failure_is_reported_once(scans, tmp_path, cluster_engine):
    pipe = scans >> cf.Pipeline().load().fail_on(bad_id="s04").dump(tmp_path / "o")
    report = pipe.run(batch_size=2, engine=cluster_engine, on_error="skip")
    assert [i for i, _ in report.failed] == ["s04"]
    assert "ArithmeticError" in report.failed[0][1]
    assert _dumped(tmp_path / "o") == [i for i in scans.ids if i != "s04"]
    with pytest.raises(ArithmeticError, match="s04"):
        pipe.run(batch_size=2, engine=cluster_engine, on_error="raise")


def test_client_memory_bounded_in_flight(scans, tmp_path, cluster_engine):
    cluster_engine.max_in_flight_seen = 0
    pipe = scans >> cf.Pipeline().load().slow(0.05)
    report = pipe.run(batch_size=1, engine=cluster_engine, prefetch=1)
    assert report.n_batches == 12
    assert 1 <= cluster_engine.max_in_flight_seen <= 1 + 2  # prefetch + workers, not 12


def test_worker_killed_mid_run_loses_and_duplicates_nothing(scans, tmp_path):
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = distributed.Client(cluster)
    try:
        engine = cf.DaskEngine(client)
        pids = list(client.run(os.getpid).values())
        out = tmp_path / "out"
        pipe = scans >> cf.Pipeline().load().slow(0.4).dump(out)

        def kill_one():
            time.sleep(1.0)
            os.kill(pids[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_one)
        killer.start()
        report = pipe.run(batch_size=2, engine=engine, on_error="skip", seed=0)
        killer.join()
        assert sorted(report.done) == scans.ids
        assert report.failed == []
        assert _dumped(out) == scans.ids  # every item exactly once, no leftovers
        for i in scans.ids:
            assert store.is_item_dir(out / i)
    finally:
        client.close()
        cluster.close()


def test_engine_argument_validation():
    with pytest.raises(cf.InvalidParameterError, match="scheduler address"):
        cf.DaskEngine(42)
    assert "not connected" in repr(cf.DaskEngine("tcp://127.0.0.1:8786"))
