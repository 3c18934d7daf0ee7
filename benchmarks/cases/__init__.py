"""All benchmark cases, in the order they run and appear in the report."""

from __future__ import annotations

from benchmarks.harness import Case

__all__ = ["all_cases", "get_case"]


def all_cases() -> list[Case]:
    """Every case (imports the case modules; peers are imported only when a case runs)."""
    from benchmarks.cases import (
        augment,
        dask,
        feed,
        intensity,
        io,
        labels,
        lungs,
        memory,
        nodules,
        parallel,
        pipeline,
        ragged,
        remote,
        resample,
        scaling,
        spatial,
        tuning,
    )

    return [
        *io.CASES,
        *resample.CASES,
        *intensity.CASES,
        *spatial.CASES,
        *augment.CASES,
        *lungs.CASES,
        *nodules.CASES,
        *labels.CASES,
        *pipeline.CASES,
        *feed.CASES,
        *tuning.CASES,
        *memory.CASES,
        *ragged.CASES,
        *scaling.CASES,
        *parallel.CASES,
        *dask.CASES,
        *remote.CASES,
    ]


def get_case(name: str) -> Case:
    """The case called ``name``."""
    for case in all_cases():
        if case.name == name:
            return case
    raise KeyError(f"no benchmark case {name!r}; known: {[c.name for c in all_cases()]}")
