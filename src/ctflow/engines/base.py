"""The engine protocol: what every engine (local threads, Dask) does, in the same words.

An engine executes whole batches of a run. ``run_batches(dataset, actions, plan, options)``
takes the dataset (ids -> sources), the pipeline's action objects, the plan (``(position,
ids)`` of each batch, from :func:`ctflow.runs.plan_batches`) and the run's
:class:`~ctflow.runs.RunOptions`, and yields one :class:`~ctflow.runs.BatchOutcome`
per batch, strictly in plan order. Every engine:

* runs a batch with :func:`ctflow.execution.run_one` (so a seeded run gives the same output on
  every engine);
* bounds the batches in flight by ``prefetch``, so memory stays bounded however long the
  dataset: ``prefetch`` batches are made ahead of what the engine's executors are running — the
  local engine runs one batch for the consumer and ``prefetch`` ahead (at most ``prefetch + 1``
  exist), the Dask engine keeps the cluster's threads busy and queues ``max(prefetch, 1)``
  more (at most ``max(prefetch, 1) + <cluster threads>`` run or wait);
* leaves nothing behind: idle pooled buffers (:mod:`ctflow.memory`) are released when the run
  ends, in this process and in every worker;
* transports failures the same way: the outcome's ``error`` (under ``on_error="raise"``) or its
  ``failed`` items (under ``"skip"``) — an engine never raises out of ``run_batches`` for a
  batch's failure, and a consumer that stops early cancels what is pending;
* is a context manager (``with cf.DaskEngine() as engine: ...``) whose ``close`` releases what
  it started.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ctflow.actions.base import Action
    from ctflow.dataset import Dataset
    from ctflow.runs import BatchOutcome, RunOptions

__all__ = ["Engine"]


@runtime_checkable
class Engine(Protocol):
    """Executes the batches of a pipeline run (see the module docstring)."""

    def run_batches(
        self,
        dataset: Dataset,
        actions: Sequence[Action],
        plan: Iterable[tuple[int, list[str]]],
        options: RunOptions,
    ) -> Iterator[BatchOutcome]:
        """Yield the outcome of every planned batch, in plan order."""
        ...

    def close(self) -> None:
        """Release what the engine started (threads, a cluster)."""
        ...

    def __enter__(self) -> Any:
        """Return the engine itself."""
        ...

    def __exit__(self, *exc: object) -> None:
        """:meth:`close`."""
        ...
