"""Scans/second of a LUNA16-style pipeline: local engine vs Dask with 1 and 2 workers.

Pipeline (the ``ctflow demo`` one, with the preprocessed scans dumped too)::

    load -> fetch_nodules(csv) -> unify_spacing(1 mm, common in-plane size) -> normalize_hu
         -> create_mask -> dump(scans) -> sample_nodules(4 crops) -> dump(crops)

on LUNA16-like phantoms (:func:`ctflow.synthetic.make_dataset`, 16 of 96 x 256 x 256 on the
full profile), ``batch_size=2``, ``prefetch=1``, ``seed=0``. Engines (contenders):

* ``local``: batches in this process, items on ctflow's threads (all cores);
* ``dask-1``: a ``LocalCluster`` of 1 worker process x 1 Dask thread (its batch uses all cores);
* ``dask-2``: 2 worker processes x 1 Dask thread (each batch uses cores / 2 item threads).

An interleaved case: the three engines live in one worker process and their timed runs rotate
round by round, so load from other jobs on the machine hits all of them alike. Each engine is
started (cluster start-up, ``info["startup_s"]``) and warmed up (two one-scan batches twice, so
every Dask worker compiles its kernels; ``info["warmup_s"]``) before the first round; each run
writes into a fresh folder. The thread-count variables the runner sets for other cases are
unset (:data:`ENV`), so the Dask workers size their item threads as they would in production
(cores / Dask threads of the host).

* **Agreement**: the dumps (scans and crops) of every engine must be byte-identical to the
  local engine's (SHA-1 over every file's relative path and bytes).
* **Per-batch overhead**: after each timed run, a pipeline without actions over many one-item
  batches (a batch is created from its ids and paths and its report comes back) gives the
  seconds per batch of the engine (``info["empty_batch_s"]``); Dask's overhead is its value
  minus the local engine's.

Only run when named (``--cases dask``): it starts Dask clusters.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import THREAD_ENV, Case, Contender, Interleave, Runner, exact

BATCH_SIZE = 2
CROPS = 4
#: the thread-count variables unset, as in a user's shell: ``CTFLOW_NUM_THREADS`` would fix the
#: item threads of every Dask worker, and ``BLOSC_NTHREADS`` > 1 overrides the one compression
#: thread of ctflow's dumps, whose bytes then vary from run to run (the arrays do not)
ENV: dict[str, str | None] = dict.fromkeys(THREAD_ENV)
LOCAL = "local engine"


def _inputs(data: Any) -> dict[str, Any]:
    paths, csv = data.dask_paths()
    sizes = data.profile.dask
    return {
        "paths": [Path(p) for p in paths],
        "csv": csv,
        "in_plane": sizes.in_plane,
        "crop": tuple(sizes.crop),
        "overhead_batches": sizes.overhead_batches,
        "scratch": tempfile.mkdtemp(prefix="ctflow-bench-dask-"),
    }


def luna_pipeline(csv: Path, out: Path, size: int, crop: tuple[int, int, int]) -> Any:
    """The LUNA16-style preprocessing pipeline, dumping scans and crops under ``out``."""
    import ctflow as cf

    return (
        cf.Pipeline()
        .load()
        .fetch_nodules(str(csv))
        .unify_spacing((1.0, 1.0, 1.0), shape=(None, size, size))
        .normalize_hu(-1000, 400)
        .create_mask()
        .dump(out / "scans")
        .sample_nodules(batch_size=CROPS, nodule_size=crop, share=0.5)
        .dump(out / "crops")
    )


def digest(root: Path) -> tuple[bytes, int]:
    """SHA-1 over the relative path and bytes of every file under ``root``; number of files."""
    h = hashlib.sha1()
    n = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
            n += 1
    return h.digest(), n


def _empty_batch_seconds(engine: Any, n_batches: int) -> float:
    """Seconds per one-item batch of a pipeline without actions (files never opened)."""
    import ctflow as cf

    ds = cf.Dataset({f"x{k:05d}": f"/nonexistent/x{k:05d}.mhd" for k in range(n_batches)})
    t0 = time.perf_counter()
    report = (ds >> cf.Pipeline()).run(batch_size=1, prefetch=1, engine=engine)
    seconds = (time.perf_counter() - t0) / n_batches
    if report.n_batches != n_batches:
        raise RuntimeError(f"empty pipeline ran {report.n_batches} of {n_batches} batches")
    return seconds


def _builder(n_workers: int | None) -> Any:
    """A runner of the pipeline on the local engine (None) or a LocalCluster of n workers."""

    def build(inp: dict[str, Any], threads: int) -> Runner:
        del threads  # the engines size their item threads themselves (see the module doc)
        import ctflow as cf

        t0 = time.perf_counter()
        engine: Any = "local"
        if n_workers is not None:
            engine = cf.DaskEngine(n_workers=n_workers, threads_per_worker=1)
            engine.client.wait_for_workers(n_workers, timeout=60)
        startup = time.perf_counter() - t0
        ds = cf.Dataset.from_paths(inp["paths"])
        warm = ds.subset(ds.ids[:BATCH_SIZE])
        dst = Path(tempfile.mkdtemp(prefix="run-", dir=inp["scratch"]))
        pipe = luna_pipeline(inp["csv"], dst, inp["in_plane"], inp["crop"])
        empty: list[float] = []

        def fresh() -> None:
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)

        def run_on(d: Any, batch_size: int) -> Any:
            report = (d >> pipe).run(batch_size=batch_size, prefetch=1, seed=0, engine=engine)
            if report.failed or len(report.done) != len(d):
                raise RuntimeError(f"{d} on {engine}: failed {report.failed[:3]}")
            return report

        def warmup() -> Any:
            t1 = time.perf_counter()
            for _ in range(2):  # every worker gets a batch and compiles its kernels
                fresh()
                run_on(warm, 1)
            runner.info["warmup_s"] = round(time.perf_counter() - t1, 3)

        def run() -> Any:
            report = run_on(ds, BATCH_SIZE)
            runner.info["action_s"] = {k: round(v, 3) for k, v in report.timings.items()}
            return report

        def after() -> None:
            empty.append(_empty_batch_seconds(engine, inp["overhead_batches"]))
            runner.info["empty_batch_ms"] = round(statistics.median(empty) * 1e3, 3)

        def finish(_: Any) -> dict[str, np.ndarray]:
            sha, n = digest(dst)
            return {"digest": np.frombuffer(sha, np.uint8).copy(), "files": np.array([n])}

        def close() -> None:
            if not isinstance(engine, str):
                engine.close()

        runner = Runner(run, finish, before=fresh, warmup=warmup, after=after, close=close)
        runner.info["startup_s"] = round(startup, 3)
        runner.info["workers"] = n_workers
        return runner

    return build


def check(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """Dumps byte-identical to the local engine's (same files, same bytes)."""
    ok, _ = exact("digest")(ref, out)
    same_files = int(out["files"][0]) == int(ref["files"][0])
    return ok and same_files, {"files": int(out["files"][0]), "byte_identical": ok}


DASK = Case(
    name="dask",
    title="LUNA16-style pipeline: local engine vs Dask LocalCluster with 1 and 2 workers",
    inputs=_inputs,
    contenders=[
        Contender("ctflow", LOCAL, 2, _builder(None), "local", env=ENV),
        Contender("ctflow", "DaskEngine, 1 worker x 1 thread", 2, _builder(1), "1x(2)", env=ENV),
        Contender("ctflow", "DaskEngine, 2 workers x 1 thread", 2, _builder(2), "2x(1)", env=ENV),
    ],
    check=check,
    parts=("dask",),
    reference=f"ctflow|{LOCAL}|local",
    items=lambda profile: profile.dask.n_scans,
    interleave=Interleave(),
    in_default=False,
    note=(
        f"batch_size={BATCH_SIZE}, prefetch=1, seed=0; the engines' timed runs rotate round by "
        "round in one process. Threads: Dask workers x item threads per batch."
    ),
)

CASES = [DASK]
