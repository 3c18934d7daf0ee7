"""Peak memory of each step of the demo pipeline on one LUNA16-sized scan.

One synthetic 300x512x512 int16 scan (.mhd) goes through the steps of ``ctflow demo``'s pipeline
one action at a time (load, fetch_nodules, unify_spacing to 1 mm with a 384x384 in-plane size,
normalize_hu, create_mask, sample_nodules, dump). Before each step the RSS high-water mark is
reset (``/proc/self/clear_refs``); after it, the step's peak above the RSS it started from is
recorded. Two passes: the second is the steady state (numba caches compiled, allocator warm).

Run: ``python -m benchmarks.bench_memory``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import ctflow as cf
from benchmarks.common import peak_rss_mb, reset_peak_rss, rss_mb, write_results
from ctflow.synthetic import make_dataset


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ctflow-bench-memory-"))
    paths, csv = make_dataset(
        work / "scans", n_scans=1, shape=(300, 512, 512), seed=1, spacing=(1.25, 0.7, 0.7)
    )
    annotations = cf.read_annotations(csv)
    ds = cf.Dataset.from_paths(paths)
    steps = [
        ("load", lambda b: b.load()),
        ("fetch_nodules", lambda b: b.fetch_nodules(annotations)),
        ("unify_spacing", lambda b: b.unify_spacing((1.0, 1.0, 1.0), shape=(None, 384, 384))),
        ("normalize_hu", lambda b: b.normalize_hu()),
        ("create_mask", lambda b: b.create_mask()),
        ("sample_nodules", lambda b: b.sample_nodules(8, (32, 64, 64))),
        ("dump", lambda b: b.dump(work / "out")),
    ]
    passes = []
    for _ in range(2):
        start = rss_mb()
        batch = ds.create_batch(ds.ids)
        batch.set_random_state(0, 0)
        rows = []
        for name, step in steps:
            before = rss_mb()
            reset_peak_rss()
            batch = step(batch)
            rows.append(
                {"action": name, "peak_extra_mb": peak_rss_mb() - before, "top": peak_rss_mb()}
            )
        passes.append({"steps": rows, "peak_mb": max(r["top"] for r in rows) - start})
    lines = [
        "| action | peak above its starting RSS, MiB (1st pass) | (2nd pass) |",
        "|---|---|---|",
    ]
    for a, b in zip(passes[0]["steps"], passes[1]["steps"], strict=True):
        lines.append(f"| {a['action']} | {a['peak_extra_mb']:.0f} | {b['peak_extra_mb']:.0f} |")
    lines.append(
        f"| **whole pipeline, above the RSS before load** | {passes[0]['peak_mb']:.0f} "
        f"| {passes[1]['peak_mb']:.0f} |"
    )
    table = "\n".join(lines) + "\n"
    write_results("memory", {"scan": [300, 512, 512], "passes": passes}, table)
    print(table)


if __name__ == "__main__":
    main()
