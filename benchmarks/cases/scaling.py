"""Scaling: every ctflow batch action on 1 and 2 threads, scan size, and batch size.

* ``batch_actions``: the pipeline's actions plus ``rotate`` on a batch of 4 pipeline scans of
  similar size (``batch_size=4``), on ``n_workers`` 1 and 2; the time of every action comes from
  the run report. Items run in parallel (one thread each), so the speed-up is bounded by the
  item sizes' balance as well as by memory bandwidth. Outputs on 1 and 2 threads must be equal.
* ``size_<n>``: one scan of 300 x n x n voxels (same spacing, so the work grows with n²)
  through the whole pipeline, ctflow on 1 and 2 threads (inside the operations).
* ``batch_<B>``: the pipeline over the first B pipeline scans in one batch of B, 2 threads.
"""

from __future__ import annotations

from typing import Any

from benchmarks.cases.pipeline import (
    check,
    ctflow_builder,
    pipeline_inputs,
    validate,
)
from benchmarks.data import PROFILES
from benchmarks.harness import Case, Contender

#: pipeline scans of similar size for the thread-scaling batch (indices into the profile's list)
ACTION_SCANS = (0, 1, 4, 7)


def _action_inputs(data: Any) -> dict[str, Any]:
    paths, csv = data.pipeline_paths()
    picked = [paths[i] for i in ACTION_SCANS if i < len(paths)]
    return pipeline_inputs(picked, csv, data)


def _n_action_scans(profile: Any) -> int:
    return len([i for i in ACTION_SCANS if i < len(profile.pipeline_scans)])


BATCH_ACTIONS = Case(
    name="batch_actions",
    title="Every pipeline action on a batch of 4 scans, 1 vs 2 threads",
    inputs=_action_inputs,
    contenders=[
        Contender("ctflow", "Pipeline incl. rotate, batch_size=4", 1, ctflow_builder(4, 0, True)),
        Contender("ctflow", "Pipeline incl. rotate, batch_size=4", 2, ctflow_builder(4, 0, True)),
    ],
    check=check,
    validate=validate,
    parts=("pipeline",),
    items=_n_action_scans,
    note="Per-action medians are in the thread-scaling table.",
)


def _size_inputs(n: int) -> Any:
    def load(data: Any) -> dict[str, Any]:
        paths, csv = data.size_paths()
        return pipeline_inputs([paths[n]], csv, data)

    return load


def _size_case(n: int) -> Case:
    return Case(
        name=f"size_{n}",
        title=f"Whole pipeline on one scan of {n} x {n} in-plane voxels",
        inputs=_size_inputs(n),
        contenders=[
            Contender("ctflow", "Pipeline, 1 scan", 1, ctflow_builder(1, 0)),
            Contender("ctflow", "Pipeline, 1 scan", 2, ctflow_builder(1, 0)),
        ],
        check=check,
        validate=validate,
        parts=("sizes",),
        when=lambda profile: n in profile.size_scaling,
    )


def _batch_inputs(b: int) -> Any:
    def load(data: Any) -> dict[str, Any]:
        paths, csv = data.pipeline_paths()
        return pipeline_inputs(paths[:b], csv, data)

    return load


def _batch_case(b: int) -> Case:
    return Case(
        name=f"batch_{b}",
        title=f"Whole pipeline on {b} scans in one batch",
        inputs=_batch_inputs(b),
        contenders=[Contender("ctflow", f"Pipeline, batch_size={b}", 2, ctflow_builder(b, 0))],
        check=check,
        validate=validate,
        parts=("pipeline",),
        items=b,
        when=lambda profile: b <= len(profile.pipeline_scans),
    )


SIZES = sorted({n for p in PROFILES.values() for n in p.size_scaling})
BATCHES = (2, 8)  # one scan per batch is size_512, four is batch_actions (with rotate)

CASES = [
    BATCH_ACTIONS,
    *[_size_case(n) for n in SIZES],
    *[_batch_case(b) for b in BATCHES],
]
