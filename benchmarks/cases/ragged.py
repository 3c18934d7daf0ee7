"""A batch of scans of different shapes against the same scans in one-item batches.

Four scans of four (Z, Y, X) (512², 640², a cropped 448x512 and 768² in-plane on the full
profile), stored LPS and RAS, through load -> unify spacing to 1 mm (each keeps its own field of
view) -> lung mask -> HU window, on 2 threads:

* **ragged batch**: one ``batch_size=4`` batch holding all four (one buffer per component,
  items run in parallel on the batch's threads);
* **one-item batches**: the same pipeline with ``batch_size=1`` and ``prefetch=1`` (two batches
  in flight sharing the threads, the way single-scan batches use 2 cores).

The target (issue 14): the ragged batch costs at most 10 % more per item than the one-item
batches. Outputs must be equal item by item (checksums of images and lungs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner

LO, HI = -1000.0, 400.0


def _inputs(data: Any) -> dict[str, Any]:
    paths, _ = data.mixed_paths()
    return {"paths": [Path(p) for p in paths], "min_ml": data.profile.min_lung_ml}


def _pipeline(inp: dict[str, Any]) -> Any:
    import ctflow as cf

    return (
        cf.Pipeline()
        .load()
        .unify_spacing((1.0, 1.0, 1.0), padding="edge", dtype="int16")
        .segment(min_lung_ml=inp["min_ml"])
        .normalize_hu(LO, HI)
    )


def _summary(batches: list[Any]) -> dict[str, np.ndarray]:
    """Per item (in id order): shape, sums of images and lungs (float64 sums of float32)."""
    rows = {}
    for b in batches:
        for k, item_id in enumerate(b.ids):
            item = b[k]
            rows[item_id] = [
                *item.shape,
                float(item.images.sum(dtype=np.float64)),
                float(item.lungs.sum(dtype=np.float64)),
            ]
    return {"out": np.array([rows[i] for i in sorted(rows)], np.float64)}


def _builder(batch_size: int, prefetch: int) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        import ctflow as cf

        ds = cf.Dataset.from_paths(inp["paths"])
        pipe = ds >> _pipeline(inp)

        def run() -> list[Any]:
            return list(pipe.gen_batch(batch_size=batch_size, prefetch=prefetch, n_workers=threads))

        return Runner(run, _summary)

    return build


def check(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """The same items, shapes and sums as the ragged batch's."""
    a, b = ref["out"], out["out"]
    same = a.shape == b.shape and np.allclose(a, b, rtol=1e-9, atol=0)
    return bool(same), {"items": int(b.shape[0])}


RAGGED = Case(
    name="ragged_batch",
    title="4 scans of 4 shapes (LPS + RAS): one ragged batch vs 4 one-item batches",
    inputs=_inputs,
    contenders=[
        Contender("ctflow", "one batch of 4 shapes (batch_size=4)", 2, _builder(4, 0)),
        Contender("ctflow", "one-item batches (batch_size=1, prefetch=1)", 2, _builder(1, 1)),
    ],
    check=check,
    parts=("mixed",),
    items=lambda profile: len(profile.mixed_scans),
    reference="ctflow|one batch of 4 shapes (batch_size=4)|2",
    max_repeats=5,
    note="Each timed call loads and processes all four scans; no dump.",
)

CASES = [RAGGED]
