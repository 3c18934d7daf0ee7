"""Run pipelines on a Dask cluster (``dask.distributed``): one task = one batch.

What travels
------------
A task carries the dataset's ids and source PATHS, the pipeline's action calls, the batch's
position and the run seed — never voxel arrays. Workers read the files themselves and write dumps
themselves (:mod:`ctflow.io.store` writes are atomic and idempotent, so a task that runs twice
leaves one copy of each item). Only small :class:`~ctflow.pipeline.BatchOutcome` reports come back,
plus the processed batch when the caller asked for it (``gen_batch``).

Bounded memory
--------------
At most ``prefetch + number_of_workers`` batches are in flight; the next batch is submitted only
when the oldest one has been consumed, so the client's memory does not grow with the dataset.

Failures
--------
* A batch that fails deterministically is turned into a report entry by
  :func:`~ctflow.pipeline.execute` on the worker (``on_error="skip"``) — nothing is raised, so
  Dask does not retry it. With ``on_error="raise"`` the original exception comes back to the
  client and is raised there.
* A worker process that dies mid-batch: Dask reschedules the task on another worker; the
  atomic dump makes the rerun safe. A batch that kills its worker every time ends in
  ``KilledWorker`` after Dask's ``allowed-failures`` attempts and is reported as failed.

Threads
-------
Each task processes its batch's items on ctflow's item thread pool. Size it to the worker's
cores: run ``dask worker ADDRESS --nworkers 1 --nthreads 1`` per machine and let ctflow use all
the cores (``n_workers`` of the run, default: the worker's usable cores).

Examples
--------
>>> engine = DaskEngine()            # a LocalCluster of processes, started on first use
>>> engine                           # doctest: +ELLIPSIS
DaskEngine(local cluster, not started)
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ctflow.errors import InvalidParameterError, MissingDependencyError

if TYPE_CHECKING:
    from ctflow.dataset import Dataset
    from ctflow.pipeline import ActionCall, BatchOutcome

__all__ = ["DaskEngine"]


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        raise MissingDependencyError(
            "the Dask engine needs dask[distributed]: pip install 'dask[distributed]'"
        ) from exc
    return distributed


def _run_batch_task(
    sources: dict[str, str],
    batch_class: type,
    actions: Sequence[ActionCall],
    position: int,
    ids: Sequence[str],
    seed: int | None,
    on_error: str,
    n_workers: int | None,
    keep_batch: bool,
) -> BatchOutcome:
    """What a Dask worker runs for one batch."""
    from ctflow.dataset import Dataset
    from ctflow.engines.local import run_one

    dataset = Dataset(sources, batch_class)
    outcome = run_one(
        dataset,
        actions,
        position,
        ids,
        seed=seed,
        on_error=on_error,
        n_workers=n_workers,
        keep_batch=keep_batch,
    )
    if outcome.error is not None:
        raise outcome.error
    return outcome


class DaskEngine:
    """Execute whole batches of a pipeline on a Dask cluster.

    Parameters
    ----------
    client_or_address : distributed.Client, str or None
        An existing client, a scheduler address (``"tcp://host:8786"``), or None to start a
        ``LocalCluster`` of worker processes on this machine (on first use).
    n_workers : int, optional
        Worker processes of the local cluster (default 2 or the number of cores, if fewer).
    threads_per_worker : int, default 1
        Dask threads per local worker; ctflow's own item threads do the parallel work inside a
        batch.
    **cluster_kwargs
        More ``LocalCluster`` arguments (e.g. ``memory_limit``).

    Examples
    --------
    >>> import ctflow as cf
    >>> engine = cf.DaskEngine("tcp://127.0.0.1:8786")  # connects on first use
    >>> engine.address
    'tcp://127.0.0.1:8786'
    """

    def __init__(
        self,
        client_or_address: Any = None,
        *,
        n_workers: int | None = None,
        threads_per_worker: int = 1,
        **cluster_kwargs: Any,
    ) -> None:
        self._client: Any = None
        self._cluster: Any = None
        self._owns_client = False
        self.address: str | None = None
        if client_or_address is None:
            pass
        elif isinstance(client_or_address, str):
            self.address = client_or_address
        elif hasattr(client_or_address, "submit") and hasattr(client_or_address, "scheduler_info"):
            self._client = client_or_address
        else:
            raise InvalidParameterError(
                "DaskEngine: expected a distributed.Client, a scheduler address like "
                f"'tcp://host:8786', or None; got {client_or_address!r}"
            )
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
        self._n_workers = n_workers if n_workers is not None else max(1, min(2, cores))
        self._threads_per_worker = threads_per_worker
        self._cluster_kwargs = cluster_kwargs
        self.max_in_flight_seen = 0

    def __repr__(self) -> str:
        if self._client is not None:
            return f"DaskEngine({self._client.scheduler.address})"
        if self.address is not None:
            return f"DaskEngine({self.address!r}, not connected)"
        return "DaskEngine(local cluster, not started)"

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (connecting or starting the local cluster if needed)."""
        if self._client is None:
            distributed = _import_distributed()
            if self.address is not None:
                self._client = distributed.Client(self.address)
            else:
                kwargs = {
                    "n_workers": self._n_workers,
                    "threads_per_worker": self._threads_per_worker,
                    "processes": True,
                    "host": "127.0.0.1",
                    "dashboard_address": None,
                    **self._cluster_kwargs,
                }
                self._cluster = distributed.LocalCluster(**kwargs)
                self._client = distributed.Client(self._cluster)
            self._owns_client = True
        return self._client

    def worker_threads(self) -> int:
        """Cores per worker for ctflow's item threads (the smallest worker's thread count)."""
        nthreads = self.client.nthreads()
        return max(1, min(nthreads.values())) if nthreads else 1

    def close(self) -> None:
        """Close the client and the local cluster this engine started."""
        if self._owns_client and self._client is not None:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        self._client = None
        self._cluster = None

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_batches(
        self,
        dataset: Dataset,
        actions: Sequence[ActionCall],
        plan: Iterable[tuple[int, list[str]]],
        *,
        prefetch: int = 0,
        on_error: Any = "raise",
        seed: int | None = None,
        n_workers: int | None = None,
        keep_batch: bool = True,
    ) -> Iterator[BatchOutcome]:
        """Yield the outcome of every planned batch, in order, from the cluster."""
        from ctflow.pipeline import BatchOutcome

        distributed = _import_distributed()
        client = self.client
        n_dask_workers = max(1, len(client.scheduler_info().get("workers", {})))
        limit = max(1, prefetch) + n_dask_workers
        actions = tuple(actions)
        pending: deque[tuple[int, list[str], Any]] = deque()
        planned = iter(plan)

        def fill() -> None:
            while len(pending) < limit:
                try:
                    position, ids = next(planned)
                except StopIteration:
                    return
                fut = client.submit(
                    _run_batch_task,
                    # a batch travels as its ids and source paths, nothing more
                    {i: dataset.sources[i] for i in ids},
                    dataset.batch_class,
                    actions,
                    position,
                    ids,
                    seed,
                    on_error,
                    n_workers,
                    keep_batch,
                    pure=False,
                    key=f"ctflow-batch-{position}-{os.urandom(4).hex()}",
                )
                pending.append((position, ids, fut))
                self.max_in_flight_seen = max(self.max_in_flight_seen, len(pending))

        try:
            fill()
            while pending:
                position, ids, fut = pending.popleft()
                try:
                    outcome = fut.result()
                except distributed.KilledWorker as exc:
                    outcome = BatchOutcome(position=position, ids=list(ids))
                    if on_error != "skip":
                        outcome.error = exc
                    else:
                        reason = f"KilledWorker: the batch killed its worker repeatedly ({exc})"
                        outcome.failed = [(i, reason) for i in ids]
                except Exception as exc:
                    outcome = BatchOutcome(position=position, ids=list(ids), error=exc)
                fut.release()
                fill()
                yield outcome
        finally:
            for _, _, fut in pending:
                fut.cancel()
