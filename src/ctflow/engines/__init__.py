"""Engines execute whole batches of a pipeline run: locally on threads, or on a Dask cluster.

Both implement the :class:`~ctflow.engines.base.Engine` protocol: ``run_batches(dataset,
actions, plan, options)`` yields :class:`~ctflow.runs.BatchOutcome` objects in plan order.
Batches reach an engine as ids and source paths, never as arrays. Both run a batch with the
same function (:func:`ctflow.execution.run_one`), so a seeded run gives the same output on
either.
"""

from __future__ import annotations

from typing import Any

from ctflow.engines.base import Engine
from ctflow.engines.dask import DaskEngine
from ctflow.engines.local import LocalEngine
from ctflow.errors import InvalidParameterError

__all__ = ["DaskEngine", "Engine", "LocalEngine", "resolve_engine"]


def resolve_engine(engine: Any) -> Engine:
    """Turn ``engine=`` of a run into an engine object ("local" or an :class:`Engine`)."""
    if engine is None or engine == "local":
        return LocalEngine()
    if isinstance(engine, Engine):
        return engine
    raise InvalidParameterError(
        f"engine must be 'local' or an engine object (e.g. ctflow.DaskEngine); got {engine!r}"
    )
