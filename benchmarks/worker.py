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
   previous output, so the peak is that of one call;
5. peak RSS (``VmHWM``) and the baseline RSS before the timed calls are recorded; the last
   output is finished into numpy arrays and saved (``.npz``) for the agreement checks.
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
from benchmarks.harness import as_numpy


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
    try:
        runner = contender.build(inputs, contender.threads)
        for _ in range(warmup):
            if runner.before is not None:
                runner.before()
            out = (runner.warmup or runner.run)()
            del out
        gc.collect()
        if "ctflow.memory" in sys.modules:  # idle pooled buffers are part of ctflow's peak
            sys.modules["ctflow.memory"].clear_pool()
        base = rss_mb()
        peak_reset = reset_peak_rss()
        times: list[float] = []
        out = None
        wanted = repeats
        while len(times) < wanted:
            if runner.before is not None:
                runner.before()
            out = None
            t0 = time.perf_counter()
            out = runner.run()
            times.append(time.perf_counter() - t0)
            if len(times) == 1 and budget_s and times[0] * repeats > budget_s:
                wanted = min(repeats, max(3, int(budget_s // times[0])))
        peak = peak_rss_mb()
        result: dict[str, Any] = {
            "case": case_name,
            "contender": contender_key,
            "times": times,
            "median": float(np.median(times)),
            "baseline_rss_mb": round(base, 1),
            "peak_rss_mb": round(peak, 1),
            "peak_extra_mb": round(peak - base, 1) if peak_reset else None,
            "bytes": case.bytes_moved(inputs) if case.bytes_moved else None,
        }
        if output is not None:
            finished = runner.finish(out) if runner.finish else {"out": as_numpy(out)}
            np.savez(output, **finished)
            result["output"] = output
        result["info"] = dict(runner.info)
        return result
    finally:
        scratch = inputs.get("scratch") if isinstance(inputs, dict) else None
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m benchmarks.worker spec.json``."""
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(args[0]).read_text())
    try:
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
            "contender": spec["contender"],
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }
    Path(spec["result"]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
