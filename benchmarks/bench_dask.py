"""Scans/second of a LUNA16-style pipeline: local engine vs Dask with 1 and 2 workers.

Pipeline (the ``ctflow demo`` one, with the preprocessed scans dumped too)::

    load -> fetch_nodules(csv) -> unify_spacing(1 mm, common in-plane size) -> normalize_hu
         -> create_mask -> dump(scans) -> sample_nodules -> dump(crops)

on LUNA16-like synthetic phantoms (:func:`ctflow.synthetic.make_dataset`) written as .mhd/.raw.
Engines:

* ``local``: batches in this process, ``prefetch=1``, items on ctflow's threads (all cores);
* ``dask-1``: a ``LocalCluster`` of 1 worker process x 1 Dask thread (its batch uses all cores);
* ``dask-2``: 2 worker processes x 1 Dask thread (each batch uses cores / 2 item threads).

Each configuration is started and warmed up first (numba kernels compile once per worker
process; cluster start-up and warm-up are reported separately), then timed over ``--repeat``
rounds that run every engine in turn (so load from other jobs on the machine hits all engines
alike), each run into a fresh folder; median and best are reported. The dumps of all engines are
compared byte for byte.

The per-batch overhead of Dask is measured with a near-empty pipeline (no action at all: a batch
is created from its ids and paths on the worker and its report comes back) over many one-item
batches: seconds per batch on Dask minus seconds per batch on the local engine.

Run: ``python -m benchmarks.bench_dask`` (``--quick`` for a smoke run). Writes
``benchmarks/results/dask.json`` and ``dask.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ctflow as cf
from benchmarks.common import write_results
from ctflow.synthetic import make_dataset


def _digest(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def luna_pipeline(csv: Path, out: Path, size: int) -> cf.Pipeline:
    """The LUNA16-style preprocessing pipeline, dumping scans and crops under ``out``."""
    return (
        cf.Pipeline()
        .load()
        .fetch_nodules(str(csv))
        .unify_spacing((1.0, 1.0, 1.0), shape=(None, size, size))
        .normalize_hu(-1000, 400)
        .create_mask()
        .dump(out / "scans")
        .sample_nodules(batch_size=4, nodule_size=(32, 48, 48), share=0.5)
        .dump(out / "crops")
    )


def _time_runs(
    ds: cf.Dataset, csv: Path, work: Path, size: int, engine: Any, repeat: int, batch_size: int
) -> tuple[list[float], str, cf.RunReport]:
    times = []
    digest = ""
    report = cf.RunReport()
    for k in range(repeat):
        out = work / f"run{k}"
        shutil.rmtree(out, ignore_errors=True)
        pipe = ds >> luna_pipeline(csv, out, size)
        t0 = time.perf_counter()
        report = pipe.run(batch_size=batch_size, prefetch=1, seed=0, engine=engine)
        times.append(time.perf_counter() - t0)
        if report.failed or len(report.done) != len(ds):
            raise RuntimeError(f"benchmark run failed: {report.failed[:3]}")
        digest = _digest(out)
        shutil.rmtree(out, ignore_errors=True)
    return times, digest, report


def _overhead(engine: Any, n_batches: int, repeat: int) -> float:
    """Median seconds per one-item batch of a pipeline without actions."""
    ds = cf.Dataset({f"x{k:05d}": f"/nonexistent/x{k:05d}.mhd" for k in range(n_batches)})
    pipe = ds >> cf.Pipeline()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        report = pipe.run(batch_size=1, prefetch=1, engine=engine)
        times.append((time.perf_counter() - t0) / n_batches)
        assert report.n_batches == n_batches
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, one repeat")
    parser.add_argument("--scans", type=int, default=None, help="number of scans")
    parser.add_argument("--repeat", type=int, default=None, help="timed runs per engine")
    parser.add_argument("--workdir", type=Path, default=None, help="data/dump folder (tmp)")
    args = parser.parse_args(argv)

    if args.quick:
        n_scans, shape, size, repeat, n_overhead = 4, (48, 128, 128), 96, 1, 100
    else:
        n_scans, shape, size, repeat, n_overhead = 16, (96, 256, 256), 192, 5, 300
    n_scans = args.scans or n_scans
    repeat = args.repeat or repeat
    batch_size = 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ctflow-bench-dask-"))
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    paths, csv = make_dataset(work / "data", n_scans=n_scans, shape=shape, seed=0)
    print(f"data: {n_scans} phantoms {shape} int16 in {time.perf_counter() - t0:.1f} s")
    ds = cf.Dataset.from_paths(paths)
    warm = ds.subset(ds.ids[:batch_size])

    configs: list[tuple[str, int | None]] = [("local", None), ("dask-1", 1), ("dask-2", 2)]
    engines: dict[str, Any] = {}
    startup: dict[str, float] = {}
    warmup: dict[str, float] = {}
    times: dict[str, list[float]] = {name: [] for name, _ in configs}
    overhead: dict[str, list[float]] = {name: [] for name, _ in configs}
    digests: dict[str, str] = {}
    reports: dict[str, cf.RunReport] = {}
    try:
        for name, n_workers in configs:
            t0 = time.perf_counter()
            if n_workers is None:
                engines[name] = "local"
            else:
                engines[name] = cf.DaskEngine(n_workers=n_workers, threads_per_worker=1)
                engines[name].client.wait_for_workers(n_workers, timeout=60)
            startup[name] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(2):  # every worker gets a batch and compiles its kernels
                _time_runs(warm, csv, work, size, engines[name], 1, 1)
            warmup[name] = time.perf_counter() - t0
        # rounds interleave the engines, so load from other jobs hits all of them alike
        for k in range(repeat):
            for name, _ in configs:
                runs, digests[name], reports[name] = _time_runs(
                    ds, csv, work, size, engines[name], 1, batch_size
                )
                times[name] += runs
                overhead[name].append(_overhead(engines[name], n_overhead, 1))
                print(f"round {k + 1}/{repeat} {name:7s} {n_scans / runs[0]:6.2f} scans/s")
    finally:
        for engine in engines.values():
            if not isinstance(engine, str):
                engine.close()

    results: dict[str, dict[str, Any]] = {}
    for name, n_workers in configs:
        med, best = statistics.median(times[name]), min(times[name])
        per_batch = statistics.median(overhead[name])
        results[name] = {
            "workers": n_workers,
            "startup_s": round(startup[name], 3),
            "warmup_s": round(warmup[name], 3),
            "times_s": [round(t, 3) for t in times[name]],
            "median_s": round(med, 3),
            "best_s": round(best, 3),
            "scans_per_s": round(n_scans / med, 3),
            "scans_per_s_best": round(n_scans / best, 3),
            "per_batch_s": round(per_batch, 6),
            "time_per_action_s": {k: round(v, 3) for k, v in reports[name].timings.items()},
        }
        print(
            f"{name:7s} {n_scans / med:6.2f} scans/s (median of {repeat}; best "
            f"{n_scans / best:.2f}), empty batch {per_batch * 1e3:.2f} ms, "
            f"start-up {startup[name]:.2f} s, warm-up {warmup[name]:.2f} s"
        )
    identical = len(set(digests.values())) == 1
    local_batch = results["local"]["per_batch_s"]
    for name in ("dask-1", "dask-2"):
        results[name]["overhead_per_batch_ms"] = round(
            (results[name]["per_batch_s"] - local_batch) * 1e3, 3
        )
    load_after = os.getloadavg()
    shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"# Dask engine vs local engine ({'quick' if args.quick else 'full'} run)",
        "",
        f"LUNA16-style pipeline (load, fetch_nodules, unify_spacing 1 mm with in-plane "
        f"{size}x{size}, normalize_hu, create_mask, dump scans, sample_nodules 4 crops, dump "
        f"crops) on {n_scans} synthetic phantoms {shape} int16, batch_size={batch_size}, "
        f"prefetch=1; {repeat} rounds, each running every engine in turn. Load average "
        f"before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f} on {len(os.sched_getaffinity(0))} cores: "
        f"other jobs shared the machine, so differences within the spread of the runs "
        f"(column 'runs') are noise.",
        "",
        "| engine | scans/s (median) | scans/s (best) | runs (s) | cluster start (s) "
        "| warm-up (s) | empty batch (ms) | Dask overhead / batch (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        over = r.get("overhead_per_batch_ms")
        lines.append(
            f"| {name} | {r['scans_per_s']:.2f} | {r['scans_per_s_best']:.2f} "
            f"| {min(r['times_s']):.2f}–{max(r['times_s']):.2f} | {r['startup_s']:.2f} "
            f"| {r['warmup_s']:.2f} | {r['per_batch_s'] * 1e3:.2f} "
            f"| {'—' if over is None else f'{over:.2f}'} |"
        )
    lines += ["", f"Dumps byte-identical across engines: {'yes' if identical else 'NO'}.", ""]
    table = "\n".join(lines)
    payload = {
        "profile": "quick" if args.quick else "full",
        "n_scans": n_scans,
        "shape": list(shape),
        "in_plane": size,
        "batch_size": batch_size,
        "repeat": repeat,
        "overhead_batches": n_overhead,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in load_after],
        "dumps_identical": identical,
        "engines": results,
    }
    path = write_results("dask", payload, table)
    print(table)
    print(f"written: {path}")
    return payload


if __name__ == "__main__":
    main()
