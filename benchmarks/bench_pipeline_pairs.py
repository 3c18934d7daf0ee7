"""Thread scaling of the whole pipeline, 1 vs 2 threads measured in alternating pairs.

The ``pipeline`` case times ctflow on 1 thread and on 2 threads in two separate processes, a
minute or more apart. On a shared virtual machine the host's speed drifts by 10-30 % over
minutes (the same 1-thread run took 3.6-5.2 s within one hour here), which moves a ratio of two
such medians by more than the effect being measured. Here one process runs the same pipeline
(:func:`benchmarks.cases.pipeline.ctflow_builder`, same data, same output checks) on 1 thread
and on 2 threads in turn, ``pairs`` times, alternating which goes first, so both see the same
host; the ratio of the two medians and the median of the per-pair ratios are reported.

Both runners are warmed up (compilation, the buffer pool) before the first timed pair. Each
timed run follows an untimed run at the same thread count, so that it finds the buffer pool
(:mod:`ctflow.memory`) as a stream of runs at that thread count leaves it, as in the
``pipeline`` case's repeated runs: two batches in flight ask for other buffer sizes in another
order than one, and straight after a 1-thread run a 2-thread run missed the pool 7-9 times
in 32 requests, after a 2-thread run 3-5 times (the misses of each timed run are reported).
Each run starts from an empty output folder, as in the ``pipeline`` case.

Run: ``python -m benchmarks.bench_pipeline_pairs [--profile full] [--pairs 7] [--json PATH]``
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine


def measure(profile: str = "full", cache: str | None = None, pairs: int = 7) -> dict[str, Any]:
    """Alternate 1- and 2-thread runs of the ctflow pipeline; times, ratios and checks."""
    from benchmarks.cases import pipeline as case
    from benchmarks.data import PROFILES, BenchData

    data = BenchData(PROFILES[profile], cache)
    inputs = case._inputs(data)
    try:
        runners = {n: case.ctflow_builder(1)(inputs, n) for n in (1, 2)}
        for runner in runners.values():  # compile, fill the pool: untimed
            for call in (runner.warmup, runner.run):
                runner.before()
                call()
        from ctflow import memory

        times: dict[int, list[float]] = {1: [], 2: []}
        misses: dict[int, list[int]] = {1: [], 2: []}  # buffer-pool misses of each timed run
        for k in range(pairs):
            for n in (1, 2) if k % 2 == 0 else (2, 1):
                runner = runners[n]
                for timed in (False, True):  # settle the buffer pool, then time
                    runner.before()
                    gc.collect()
                    before = memory.pool_stats()["misses"]
                    t0 = time.perf_counter()
                    runner.run()
                    if timed:
                        times[n].append(time.perf_counter() - t0)
                        misses[n].append(memory.pool_stats()["misses"] - before)
        ok, detail = case.validate(runners[2].finish(None))  # the last run's products
    finally:
        shutil.rmtree(inputs["scratch"], ignore_errors=True)
    m1, m2 = statistics.median(times[1]), statistics.median(times[2])
    pair_ratios = [a / b for a, b in zip(times[1], times[2], strict=True)]
    return {
        "scans": len(inputs["paths"]),
        "pairs": pairs,
        "times_1": [round(t, 4) for t in times[1]],
        "times_2": [round(t, 4) for t in times[2]],
        "median_1": round(m1, 4),
        "median_2": round(m2, 4),
        "ratio": round(m1 / m2, 3),
        "median_pair_ratio": round(statistics.median(pair_ratios), 3),
        "pair_ratios": [round(r, 3) for r in pair_ratios],
        "pool_misses_1": misses[1],
        "pool_misses_2": misses[2],
        "valid": {"ok": ok, **detail},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--json", type=Path, default=RESULTS / "pipeline_pairs.json")
    args = parser.parse_args(argv)
    result = measure(args.profile, args.cache, args.pairs)
    payload = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=1))
    print(
        f"pipeline, {result['scans']} scans, {args.pairs} alternating pairs: "
        f"1 thread {result['median_1']:.2f} s, 2 threads {result['median_2']:.2f} s, "
        f"{result['ratio']:.2f}x (median pair ratio {result['median_pair_ratio']:.2f}x); "
        f"outputs valid: {result['valid']['ok']}"
    )
    return 0 if result["valid"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
