"""Run pipelines on a Dask cluster (``dask.distributed``): one task = one batch.

What travels
------------
A task carries the batch's ids and source PATHS, the pipeline's action calls, the batch's
position and the run seed — never voxel arrays. Workers read the files themselves and write dumps
themselves. Only small :class:`~ctflow.runs.BatchOutcome` reports come back, plus the
processed batch when the caller asked for it (``gen_batch``). Paths mean on every worker what
they mean where the pipeline was written: sources are made absolute on the client, and actions
make their path parameters absolute when they are written (``dump(dst)``,
``fetch_nodules(path)``, any :class:`pathlib.Path` argument of a user action).

Same output as the local engine
-------------------------------
A batch is executed by the same function as in the local engine
(:func:`ctflow.execution.run_one`), seeded by ``(seed, position)``; dumps contain nothing
that depends on the machine, so a seeded run writes byte-identical dumps on either engine.

Bounded memory
--------------
At most ``max(prefetch, 1) + <Dask threads of the cluster>`` batches run or wait on the cluster
(the engine follows workers that join or leave during a run). Outcomes are yielded in plan
order; results that finished early wait on the cluster (not in the client) until their turn, up
to a window: the in-flight limit when whole batches come back (``gen_batch``), ``max(4 * limit,
limit + 16)`` for the small reports of ``run``. So neither the client nor the workers grow with
the dataset, and one slow batch does not idle the cluster.

Failures
--------
* An item or batch that fails deterministically is turned into report entries on the worker
  under ``on_error="skip"`` (exactly as locally) — nothing is raised, so Dask does not retry it.
  Under ``on_error="raise"`` the original exception comes back to the client and is raised there.
* A worker process that dies mid-batch: Dask runs the task again on another worker. Dumps are
  atomic and idempotent (:mod:`ctflow.io.store`), so a batch that runs twice leaves one copy of
  each item, byte-identical to a single run.
* A batch that kills its worker every time ends in ``distributed.KilledWorker`` after Dask's
  ``distributed.scheduler.allowed-failures`` further attempts (default 3) and is reported once:
  its items are ``failed`` under ``on_error="skip"``; under ``"raise"`` the error is raised.
* Ctrl-C or a crash of the client: the client's queued batches are dropped by the scheduler;
  running ones finish their (atomic) writes. Run again with ``dump(..., skip_existing=True)``.

Threads
-------
Each task processes its batch's items on ctflow's item thread pool (numba ``nogil`` kernels).
Unless the run gives ``n_workers`` or the worker sets ``CTFLOW_NUM_THREADS``, a task uses
``cores of its machine // Dask threads on that machine`` item threads, so Dask threads x item
threads never oversubscribe the cores.

Examples
--------
>>> engine = DaskEngine()            # a LocalCluster of processes, started on first use
>>> engine                           # doctest: +ELLIPSIS
DaskEngine(local cluster, not started)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ctflow.deps import optional_import
from ctflow.errors import InvalidParameterError
from ctflow.runs import BatchOutcome, RunOptions, stop_requested

if TYPE_CHECKING:
    from ctflow.actions.base import Action
    from ctflow.dataset import Dataset

__all__ = ["DaskEngine"]

#: Seconds between two looks at the cluster's workers during a run.
_LAYOUT_REFRESH_S = 5.0


def _import_distributed() -> Any:
    return optional_import("distributed", "the Dask engine")


# --------------------------------------------------------------------------------- on the client
def _absolute(path: Any) -> Any:
    """``path`` made absolute against the client's working directory (URLs left alone)."""
    if isinstance(path, PurePath):
        return path if path.is_absolute() else type(path)(os.path.abspath(path))
    if isinstance(path, str) and path and "://" not in path and not os.path.isabs(path):
        return os.path.abspath(path)
    return path


def absolute_sources(sources: Mapping[str, str]) -> dict[str, str]:
    """Return the sources with relative paths made absolute (workers may run in another folder).

    Examples
    --------
    >>> import os
    >>> absolute_sources({"a": "/d/a.mhd", "b": "b.mhd"})["b"] == os.path.abspath("b.mhd")
    True
    """
    return {i: str(_absolute(str(p))) for i, p in sources.items()}


# --------------------------------------------------------------------------------- on a worker
def _item_threads(n_workers: int | None, host_threads: Mapping[str, int]) -> int | None:
    """Item threads for a task on this worker: explicit, from the environment, or cores/slots."""
    if n_workers is not None or os.environ.get("CTFLOW_NUM_THREADS"):
        return n_workers
    distributed = _import_distributed()
    from ctflow.threads import default_n_workers

    try:
        worker = distributed.get_worker()
    except ValueError:  # not on a Dask worker (e.g. a task run in the client for debugging)
        return None
    host = distributed.comm.get_address_host(worker.address)
    slots = host_threads.get(host) or getattr(worker, "nthreads", 1) or 1
    return max(1, default_n_workers() // int(slots))


def _stop_checker(name: str | None) -> Any:
    """On a worker: whether the client asked the run to stop (a ``distributed.Event``).

    Asked before every action and every item; the scheduler is asked at most every
    ``_STOP_POLL_S`` seconds, and once the answer is yes it stays yes.
    """
    if name is None:
        return None
    distributed = _import_distributed()
    try:
        event = distributed.Event(name)
    except ValueError:  # not on a Dask worker (a task run in the client for debugging)
        from ctflow.runs import stop_requested

        return lambda: stop_requested(name)
    state = {"set": False, "asked": -float("inf")}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["set"] and now - state["asked"] >= _STOP_POLL_S:
            state["asked"] = now
            state["set"] = bool(event.is_set())
        return bool(state["set"])

    return should_stop


#: scheduler states of a task that no worker has started
_NOT_STARTED = frozenset({"released", "waiting", "queued", "no-worker"})
#: seconds between looks at the run's stop signal while batches are in flight
_STOP_POLL_S = 0.25


def _task_states(keys: list[str], dask_scheduler: Any = None) -> dict[str, str]:
    """Return the scheduler's state of each task (run on the scheduler)."""
    tasks = dask_scheduler.tasks
    return {k: str(tasks[k].state) for k in keys if k in tasks}


def _run_batch_task(
    sources: dict[str, str],
    labels: dict[str, str],
    batch_class: type,
    actions: Sequence[Action],
    position: int,
    ids: Sequence[str],
    options: RunOptions,
    host_threads: Mapping[str, int],
    storage_options: Mapping[str, Any] | None = None,
) -> BatchOutcome:
    """Run one batch on a Dask worker (:func:`ctflow.execution.run_one`, as locally).

    ``storage_options`` are the dataset's fsspec options (sources behind URLs): the worker
    reads the objects itself.
    """
    from dataclasses import replace

    from ctflow.dataset import Dataset
    from ctflow.execution import run_one

    dataset = Dataset(sources, batch_class, labels=labels, storage_options=storage_options)
    threads = _item_threads(options.n_workers, host_threads)
    outcome = run_one(
        dataset,
        actions,
        position,
        ids,
        replace(options, n_workers=threads),
        should_stop=_stop_checker(options.stop),
    )
    if outcome.error is not None:
        raise outcome.error  # a real exception: Dask does not retry it, the client raises it
    return outcome


# --------------------------------------------------------------------------------- the engine
class DaskEngine:
    """Execute whole batches of a pipeline on a Dask cluster.

    Parameters
    ----------
    client_or_address : distributed.Client, distributed cluster, str or None
        An existing client, a cluster object (e.g. ``LocalCluster``), a scheduler address
        (``"tcp://host:8786"``), or None to start a ``LocalCluster`` of worker processes on this
        machine, bound to 127.0.0.1 (on first use).
    n_workers : int, optional
        Worker processes of the local cluster (default 2, or 1 on a single core).
    threads_per_worker : int, default 1
        Dask threads (= batches at once) per local worker; ctflow's own item threads do the
        parallel work inside a batch.
    **cluster_kwargs
        More ``LocalCluster`` arguments (e.g. ``memory_limit="8GiB"``).

    Attributes
    ----------
    max_in_flight_seen : int
        Most batches submitted and not finished at once, over this engine's runs.
    max_held_seen : int
        Most batch futures the client held at once (running or finished and waiting their turn).

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
        if isinstance(client_or_address, str):
            self.address = client_or_address
        elif client_or_address is None:
            self.address = None  # a LocalCluster, started on first use
        elif hasattr(client_or_address, "submit") and hasattr(client_or_address, "scheduler_info"):
            self._client = client_or_address
        elif isinstance(getattr(client_or_address, "scheduler_address", None), str):
            self.address = client_or_address.scheduler_address
        else:
            raise InvalidParameterError(
                "DaskEngine: expected a distributed.Client, a cluster, a scheduler address like "
                f"'tcp://host:8786', or None; got {client_or_address!r}"
            )
        if n_workers is not None and (not isinstance(n_workers, int) or n_workers < 1):
            raise InvalidParameterError(
                f"DaskEngine: n_workers must be a positive integer; got {n_workers!r}"
            )
        if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
            raise InvalidParameterError(
                f"DaskEngine: threads_per_worker must be a positive integer; "
                f"got {threads_per_worker!r}"
            )
        from ctflow.system import cpu_count

        cores = cpu_count()
        self._n_workers = n_workers if n_workers is not None else max(1, min(2, cores))
        self._threads_per_worker = threads_per_worker
        self._cluster_kwargs = cluster_kwargs
        self.max_in_flight_seen = 0
        self.max_held_seen = 0

    def __repr__(self) -> str:
        """Return a readable summary."""
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
                # the scheduler's HTTP endpoint (health, metrics): loopback, any free port
                kwargs["scheduler_kwargs"] = {
                    "dashboard_address": "127.0.0.1:0",
                    **(kwargs.get("scheduler_kwargs") or {}),
                }
                self._cluster = distributed.LocalCluster(**kwargs)
                self._client = distributed.Client(self._cluster)
            self._owns_client = True
        return self._client

    def close(self) -> None:
        """Close the client and the local cluster this engine started."""
        if self._owns_client and self._client is not None:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()
        self._client = None
        self._cluster = None
        self._owns_client = False

    def __enter__(self) -> DaskEngine:
        """Return the object itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Release what the object holds."""
        self.close()

    def _host_threads(self) -> dict[str, int]:
        """Dask threads per host of the cluster as it is now."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        counts: Counter[str] = Counter()
        for info in workers.values():
            counts[str(info.get("host", ""))] += int(info.get("nthreads", 1) or 1)
        return dict(counts)

    def run_batches(
        self,
        dataset: Dataset,
        actions: Sequence[Action],
        plan: Iterable[tuple[int, list[str]]],
        options: RunOptions,
    ) -> Iterator[BatchOutcome]:
        """Yield the outcome of every planned batch, in plan order, from the cluster."""
        distributed = _import_distributed()
        client = self.client
        prefetch, on_error, keep_batch = options.prefetch, options.on_error, options.keep_batch
        sources = absolute_sources(dataset.sources)
        pending: deque[tuple[int, list[str], Any]] = deque()
        planned = iter(plan)
        exhausted = False
        layout: dict[str, Any] = {"checked": -float("inf")}

        def refresh() -> None:
            """Follow the cluster's size (workers may join or leave): every few seconds."""
            now = time.monotonic()
            if now - layout["checked"] < _LAYOUT_REFRESH_S:
                return
            host_threads = self._host_threads()
            limit = max(1, prefetch) + max(1, sum(host_threads.values()))
            layout.update(
                checked=now,
                host_threads=host_threads,
                limit=limit,  # batches running or queued on the cluster
                window=limit if keep_batch else max(4 * limit, limit + 16),  # futures held
            )

        def n_unfinished() -> int:
            return sum(fut is not None and not fut.done() for _, _, fut in pending)

        stopping = False

        def fill() -> None:
            nonlocal exhausted, stopping
            if stop_requested(options.stop):
                if not stopping:  # the first Ctrl-C: tell the workers, submit nothing more
                    stopping = True
                    distributed.Event(options.stop, client=client).set()
                    self._cancel_unstarted(pending)
                return
            refresh()
            limit, window = layout["limit"], layout["window"]
            unfinished = n_unfinished()
            while not exhausted and unfinished < limit and len(pending) < window:
                try:
                    position, ids = next(planned)
                except StopIteration:
                    exhausted = True
                    return
                fut = client.submit(
                    _run_batch_task,
                    # a batch travels as its ids and source paths, nothing more
                    {i: sources[i] for i in ids},
                    {i: dataset.labels[i] for i in ids if i in dataset.labels},
                    dataset.batch_class,
                    actions,
                    position,
                    ids,
                    options,
                    layout["host_threads"],
                    dataset.storage_options or None,
                    pure=False,
                    key=f"ctflow-batch-{position}-{os.urandom(4).hex()}",
                )
                pending.append((position, list(ids), fut))
                unfinished += 1
                self.max_in_flight_seen = max(self.max_in_flight_seen, unfinished)
                self.max_held_seen = max(self.max_held_seen, len(pending))

        try:
            fill()
            while pending:
                position, ids, fut = pending[0]
                if fut is None:  # cancelled before it started (Ctrl-C): nothing of it was done
                    pending.popleft()
                    yield BatchOutcome(position=position, ids=ids, interrupted=list(ids))
                    continue
                if not fut.done():
                    # wait for any batch (a finished one frees a slot for the next submission),
                    # a fraction of a second at most: a Ctrl-C reaches the workers at once
                    with contextlib.suppress(TimeoutError):
                        distributed.wait(
                            [f for _, _, f in pending if f is not None and not f.done()],
                            timeout=_STOP_POLL_S,
                            return_when="FIRST_COMPLETED",
                        )
                    fill()
                    continue
                pending.popleft()
                outcome = self._collect(distributed, fut, position, ids, on_error)
                fut.release()
                fill()
                yield outcome
        finally:
            for _, _, fut in pending:
                if fut is not None:
                    fut.cancel()
            pending.clear()
            self._clear_worker_pools()

    def _cancel_unstarted(self, pending: deque[tuple[int, list[str], Any]]) -> None:
        """Cancel the batches no worker has started (Ctrl-C); they come back as interrupted.

        Batches a worker runs stop at their next action or item (the run's ``Event``); the
        ones still queued on the scheduler are cancelled here and never start.
        """
        keys = [fut.key for _, _, fut in pending if fut is not None and not fut.done()]
        if not keys:
            return
        try:
            states = self.client.run_on_scheduler(_task_states, keys=keys)
        except Exception:  # the scheduler cannot say: let the batches stop at their first check
            return
        for k, (position, ids, fut) in enumerate(pending):
            if fut is not None and states.get(fut.key) in _NOT_STARTED:
                fut.cancel()
                pending[k] = (position, ids, None)

    def _clear_worker_pools(self) -> None:
        """Give the workers' idle pooled buffers back to the OS: they do not outlive the run."""
        from ctflow import memory

        # a worker gone, a closed client: nothing left to release there
        with contextlib.suppress(Exception):
            self.client.run(memory.clear_pool)

    @staticmethod
    def _collect(
        distributed: Any, fut: Any, position: int, ids: list[str], on_error: Any
    ) -> BatchOutcome:
        try:
            outcome: BatchOutcome = fut.result()
            return outcome
        except distributed.KilledWorker as exc:
            exc.add_note(
                f"ctflow: the batch at position {position} ({ids}) killed its Dask worker on "
                f"every attempt (distributed.scheduler.allowed-failures)"
            )
            outcome = BatchOutcome(position=position, ids=list(ids))
            if on_error != "skip":
                outcome.error = exc
            else:
                reason = f"KilledWorker: the batch killed its Dask worker on every attempt ({exc})"
                outcome.failed = [(i, reason) for i in ids]
            return outcome
        except Exception as exc:
            return BatchOutcome(position=position, ids=list(ids), error=exc)
