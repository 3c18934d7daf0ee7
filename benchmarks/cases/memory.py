"""Peak memory of each step of the demo pipeline on one LUNA16-sized scan.

The first pipeline scan (300 x 512 x 512 int16 on the full profile) goes through the steps of
``ctflow demo``'s pipeline one batch action at a time: load, fetch_nodules, unify_spacing to
1 mm with a 384 x 384 in-plane size (3/4 of the scan's), normalize_hu, create_mask,
sample_nodules (8 crops), dump. Before each step the RSS high-water mark is reset
(``/proc/self/clear_refs``); after it, the step's peak above the RSS it started from and its
time are recorded (``info["passes"]``, one list per call). The warm-up call is the first pass
(numba caches loaded, allocator and buffer pool cold); the timed calls are the steady state.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import peak_rss_mb, reset_peak_rss, rss_mb
from benchmarks.harness import Case, Contender, Runner, exact

CROPS = 8
STEPS = (
    "load",
    "fetch_nodules",
    "unify_spacing",
    "normalize_hu",
    "create_mask",
    "sample_nodules",
    "dump",
)


def _inputs(data: Any) -> dict[str, Any]:
    paths, csv = data.pipeline_paths()
    ny = data.profile.scan_shape[1]
    return {
        "path": Path(paths[0]),
        "csv": csv,
        "in_plane": round(ny * 0.75),
        "crop": tuple(data.profile.crop_shape),
        "scratch": tempfile.mkdtemp(prefix="ctflow-bench-memory-"),
    }


def _steps(inp: dict[str, Any], annotations: Any, dst: Path) -> list[tuple[str, Any]]:
    n = inp["in_plane"]
    actions = {
        "load": lambda b: b.load(),
        "fetch_nodules": lambda b: b.fetch_nodules(annotations),
        "unify_spacing": lambda b: b.unify_spacing((1.0, 1.0, 1.0), shape=(None, n, n)),
        "normalize_hu": lambda b: b.normalize_hu(),
        "create_mask": lambda b: b.create_mask(),
        "sample_nodules": lambda b: b.sample_nodules(CROPS, inp["crop"]),
        "dump": lambda b: b.dump(dst),
    }
    return [(name, actions[name]) for name in STEPS]


def _build(inp: dict[str, Any], threads: int) -> Runner:
    import ctflow as cf

    ds = cf.Dataset.from_paths([inp["path"]])
    annotations = cf.read_annotations(inp["csv"])
    dst = Path(inp["scratch"]) / "out"
    steps = _steps(inp, annotations, dst)
    passes: list[dict[str, Any]] = []

    def run() -> Any:
        start = rss_mb()
        batch = ds.create_batch(ds.ids, n_workers=threads)
        batch.set_random_state(0, 0)
        rows: list[dict[str, Any]] = []
        for name, step in steps:
            reset_peak_rss()  # the high-water mark is now the current RSS ...
            before = rss_mb()  # ... so it never ends below this reading
            t0 = time.perf_counter()
            batch = step(batch)
            seconds = time.perf_counter() - t0
            top = peak_rss_mb()
            runner.peak_seen_mb = max(runner.peak_seen_mb, top)
            rows.append(
                {
                    "action": name,
                    "peak_extra_mb": round(top - before, 1),
                    "top_mb": round(top, 1),
                    "s": round(seconds, 4),
                }
            )
        passes.append({"steps": rows, "peak_mb": round(max(r["top_mb"] for r in rows) - start, 1)})
        return batch

    def fresh() -> None:
        shutil.rmtree(dst, ignore_errors=True)

    def finish(batch: Any) -> dict[str, np.ndarray]:
        crops = np.asarray(batch.images)
        return {"crops": np.array([len(batch), *crops.shape[1:]], np.int64)}

    runner = Runner(run, finish, before=fresh)
    runner.info["passes"] = passes  # the first is the warm-up (first pass)
    return runner


MEMORY = Case(
    name="memory",
    title="Peak memory of each step of the demo pipeline on one scan, one action at a time",
    inputs=_inputs,
    contenders=[Contender("ctflow", "batch actions one by one (demo pipeline)", 2, _build)],
    check=exact("crops"),
    parts=("pipeline",),
    note=(
        "Per-step peaks (above the RSS each step started from) are in the memory table; the "
        "row's peak is the highest of any step, above the RSS before the timed calls."
    ),
)

CASES = [MEMORY]
