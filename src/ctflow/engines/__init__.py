"""Engines execute whole batches of a pipeline run: locally on threads, or on a Dask cluster.

An engine has one method, ``run_batches(dataset, actions, plan, *, prefetch, on_error, seed,
n_workers, keep_batch)``, which yields :class:`~ctflow.pipeline.BatchOutcome` objects in plan
order. Batches reach an engine as ids and source paths, never as arrays. Both engines run a batch
with the same function (:func:`ctflow.engines.local.run_one`), so a seeded run gives the same
output on either.
"""

from __future__ import annotations

from typing import Any

from ctflow.engines.dask import DaskEngine
from ctflow.engines.local import LocalEngine
from ctflow.errors import InvalidParameterError

__all__ = ["DaskEngine", "LocalEngine", "resolve_engine"]


def resolve_engine(engine: Any) -> Any:
    """Turn ``engine=`` of a run into an engine object ("local" or an object with run_batches)."""
    if engine is None or engine == "local":
        return LocalEngine()
    if hasattr(engine, "run_batches"):
        return engine
    raise InvalidParameterError(
        f"engine must be 'local' or an engine object (e.g. ctflow.DaskEngine); got {engine!r}"
    )
