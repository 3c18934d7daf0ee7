"""Run ONE contender of ONE case in this (fresh) process and write its measurements.

``python -m benchmarks.worker spec.json`` — the spec names the case, the contender, the data
profile and cache, the repeats and where to write the result JSON and the output arrays. The
parent (:mod:`benchmarks.run`) starts one such process per contender with the thread-count
environment variables already set, so imports, caches and memory of one contender never touch
another's numbers.

Protocol of one measurement:

1. load the inputs (untimed), build the contender's runner (imports, setup: untimed);
2. ``warmup`` untimed calls (numba compilation / cache load, first-touch of library state);
3. the warm-up output is dropped, ctflow's buffer pool (:mod:`ctflow.memory`) is emptied so
   the buffers it keeps between calls count in the peak, and the RSS high-water mark is reset
   (:func:`reset_peak_rss`);
4. ``repeats`` timed calls, each preceded by the untimed ``before()`` and by dropping the
   previous output, so the peak is that of one call, and followed by the untimed ``after()``
   (a side measurement of the runner's own);
5. peak RSS (``VmHWM``) and the baseline RSS before the timed calls are recorded; the last
   output is finished into numpy arrays and saved (``.npz``) for the agreement checks.
   The buffer pool's misses (and requests) of each timed call are recorded too.

An interleaved case (:class:`~benchmarks.harness.Interleave`) gives the spec a list of
``contenders`` (and ``outputs``): all are built and warmed up in this one process, then timed
in rounds that rotate their order; the result file holds one result per contender.
"""

from __future__ import annotations

import gc
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import peak_rss_mb, reset_peak_rss, rss_mb
from benchmarks.harness import Runner, as_numpy


def _pool_counts() -> tuple[int, int] | None:
    """(misses, requests) of ctflow's buffer pool so far, if ctflow.memory is in use."""
    memory = sys.modules.get("ctflow.memory")
    if memory is None:
        return None
    stats = memory.pool_stats()
    return int(stats["misses"]), int(stats["hits"]) + int(stats["misses"])


def _clear_pool() -> None:
    if "ctflow.memory" in sys.modules:  # idle pooled buffers are part of ctflow's peak
        sys.modules["ctflow.memory"].clear_pool()


class _Timed:
    """Timed calls of one runner: times and buffer-pool misses per call, the last output."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.times: list[float] = []
        self.misses: list[int] = []
        self.requests: list[int] = []
        self.out: Any = None

    def warm_up(self, n: int) -> None:
        for _ in range(n):
            if self.runner.before is not None:
                self.runner.before()
            out = (self.runner.warmup or self.runner.run)()
            del out

    def call(self, timed: bool = True) -> None:
        runner = self.runner
        if runner.before is not None:
            runner.before()
        self.out = None
        if not timed:
            runner.run()
            return
        pool = _pool_counts()
        t0 = time.perf_counter()
        self.out = runner.run()
        self.times.append(time.perf_counter() - t0)
        after = _pool_counts()
        if pool is not None and after is not None:
            self.misses.append(after[0] - pool[0])
            self.requests.append(after[1] - pool[1])
        if runner.after is not None:
            runner.after()

    def result(self, case: Any, key: str, inputs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "case": case.name,
            "contender": key,
            "times": self.times,
            "median": float(np.median(self.times)),
            "bytes": case.bytes_moved(inputs) if case.bytes_moved else None,
        }
        if self.misses:
            out["pool_misses"] = self.misses
            out["pool_requests"] = self.requests
        return out

    def save(self, output: str | None, result: dict[str, Any]) -> None:
        runner = self.runner
        if output is not None:
            finished = runner.finish(self.out) if runner.finish else {"out": as_numpy(self.out)}
            np.savez(output, **finished)
            result["output"] = output
        result["info"] = dict(runner.info)


def _cleanup(inputs: Any) -> None:
    scratch = inputs.get("scratch") if isinstance(inputs, dict) else None
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(
    case_name: str,
    contender_key: str,
    profile: str,
    cache: str | None,
    repeats: int,
    warmup: int,
    output: str | None,
    budget_s: float | None = None,
) -> dict[str, Any]:
    """Measure one contender; returns the result dict (and saves the output when asked).

    With ``budget_s``, a contender whose first timed call shows that ``repeats`` calls would
    take longer than the budget makes ``max(3, budget_s // first)`` calls instead.
    """
    from benchmarks.cases import get_case
    from benchmarks.data import PROFILES, BenchData

    case = get_case(case_name)
    contender = case.contender(contender_key)
    data = BenchData(PROFILES[profile], cache)
    inputs = case.inputs(data)
    runner: Runner | None = None
    try:
        runner = contender.build(inputs, contender.threads)
        timed = _Timed(runner)
        timed.warm_up(warmup)
        runner.peak_seen_mb = 0.0  # the warm-up's peaks are not the timed calls'
        gc.collect()
        _clear_pool()
        base = rss_mb()
        peak_reset = reset_peak_rss()
        wanted = repeats
        while len(timed.times) < wanted:
            timed.call()
            first = timed.times[0]
            if len(timed.times) == 1 and budget_s and first * repeats > budget_s:
                wanted = min(repeats, max(3, int(budget_s // first)))
        peak = max(peak_rss_mb(), runner.peak_seen_mb)
        result = timed.result(case, contender_key, inputs)
        result["baseline_rss_mb"] = round(base, 1)
        result["peak_rss_mb"] = round(peak, 1)
        result["peak_extra_mb"] = round(peak - base, 1) if peak_reset else None
        timed.save(output, result)
        return result
    finally:
        if runner is not None and runner.close is not None:
            runner.close()
        _cleanup(inputs)


def measure_interleaved(
    case_name: str,
    keys: list[str],
    profile: str,
    cache: str | None,
    rounds: int,
    warmup: int,
    outputs: list[str | None],
) -> list[dict[str, Any]]:
    """Measure the contenders ``keys`` of an interleaved case in this one process.

    Every contender gets its own inputs (its own scratch folder), is built and warmed up, then
    ``rounds`` rounds time each once, in an order rotated by the round's index.
    """
    from benchmarks.cases import get_case
    from benchmarks.data import PROFILES, BenchData

    case = get_case(case_name)
    assert case.interleave is not None, f"case {case_name} is not interleaved"
    settle = case.interleave.settle
    data = BenchData(PROFILES[profile], cache)
    all_inputs: list[Any] = []
    timed: list[_Timed] = []
    try:
        for key in keys:
            contender = case.contender(key)
            all_inputs.append(case.inputs(data))
            timed.append(_Timed(contender.build(all_inputs[-1], contender.threads)))
        for t in timed:
            t.warm_up(warmup)
            t.runner.peak_seen_mb = 0.0
        gc.collect()
        base = rss_mb()
        peak_reset = reset_peak_rss()
        n = len(timed)
        for k in range(rounds):
            for j in range(n):
                t = timed[(j + k) % n]
                if settle:
                    t.call(timed=False)
                gc.collect()
                t.call()
        peak = max([peak_rss_mb()] + [t.runner.peak_seen_mb for t in timed])
        results = []
        for key, t, inputs, output in zip(keys, timed, all_inputs, outputs, strict=True):
            result = t.result(case, key, inputs)
            result["baseline_rss_mb"] = round(base, 1)
            result["peak_rss_mb"] = round(peak, 1)
            result["peak_extra_mb"] = None  # one process for all: not one contender's peak
            result["shared_process_peak_extra_mb"] = round(peak - base, 1) if peak_reset else None
            result["rounds"] = rounds
            t.save(output, result)
            results.append(result)
        return results
    finally:
        for t in timed:
            if t.runner.close is not None:
                t.runner.close()
        for inputs in all_inputs:
            _cleanup(inputs)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.worker spec.json``."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    result: Any
    try:
        if "contenders" in spec:
            result = {
                "results": measure_interleaved(
                    spec["case"],
                    list(spec["contenders"]),
                    spec["profile"],
                    spec.get("cache"),
                    int(spec["repeats"]),
                    int(spec.get("warmup", 1)),
                    list(spec["outputs"]),
                )
            }
        else:
            result = measure(
                spec["case"],
                spec["contender"],
                spec["profile"],
                spec.get("cache"),
                int(spec["repeats"]),
                int(spec.get("warmup", 1)),
                spec.get("output"),
                spec.get("budget_s"),
            )
    except Exception as exc:
        result = {
            "case": spec["case"],
            "contender": spec.get("contender") or spec.get("contenders"),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
