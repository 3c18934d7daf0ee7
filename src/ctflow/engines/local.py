"""The local engine: batches run in this process; up to ``prefetch`` of them ahead, on threads.

Ordering and failure rules (the prefetch bugs RadIO had are the reason for this module):

* Outcomes are yielded strictly in plan order, whatever order batches finish in.
* A batch never raises inside a worker thread: :func:`~ctflow.execution.execute` turns every
  failure into an outcome (``error`` under ``on_error="raise"``, ``failed`` items under
  ``"skip"``), so no future is lost and no producer blocks on a dead consumer.
* At most ``prefetch + 1`` batches exist at once (the one being consumed and ``prefetch`` ahead),
  so memory stays bounded however long the dataset is.
* When the consumer stops early (an error raised, a ``break``), pending batches are cancelled
  and running ones are waited for, so nothing keeps writing after the run returns.

Threads: without prefetch a batch uses ``n_workers`` threads (default: the usable cores). With
prefetch, the batches running at once share ``n_workers`` (a :class:`~ctflow.parallel.ThreadShare`):
two batches on 2 cores get one thread each, and the last batch of the run gets both again —
from its next action on, and at once for the kernel it is running (the idle thread takes the
parts of it that have not started: :func:`~ctflow.parallel.run_ranges`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ctflow.execution import run_one
from ctflow.runs import BatchOutcome, RunOptions, stop_requested
from ctflow.threads import ThreadShare, default_n_workers

if TYPE_CHECKING:
    from ctflow.actions.base import Action
    from ctflow.dataset import Dataset

__all__ = ["LocalEngine"]


class LocalEngine:
    """Run batches in this process (items on the shared thread pool).

    Examples
    --------
    >>> LocalEngine()
    LocalEngine()
    """

    def __repr__(self) -> str:
        """Return a readable summary."""
        return "LocalEngine()"

    def __enter__(self) -> LocalEngine:
        """Return the object itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Release what the object holds."""
        self.close()

    def close(self) -> None:
        """Nothing to release: each run's threads end with the run."""

    def run_batches(
        self,
        dataset: Dataset,
        actions: Sequence[Action],
        plan: Iterable[tuple[int, list[str]]],
        options: RunOptions,
    ) -> Iterator[BatchOutcome]:
        """Yield the outcome of every planned batch, in order."""
        prefetch = options.prefetch
        if prefetch <= 0:
            for position, ids in plan:
                if stop_requested(options.stop):
                    return  # stopped (Ctrl-C): no new batch starts
                yield run_one(dataset, actions, position, ids, options)
            return
        share = ThreadShare(int(options.n_workers or default_n_workers()))
        pool = ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="ctflow-batch")
        pending: deque[Future[BatchOutcome]] = deque()
        planned = iter(plan)

        def fill() -> None:
            # ``prefetch`` batches in flight: with the one the consumer holds, prefetch + 1
            while len(pending) < prefetch and not stop_requested(options.stop):
                try:
                    position, ids = next(planned)
                except StopIteration:
                    return
                share.expect()  # its thread is not idle: it is about to start this batch
                pending.append(
                    pool.submit(run_one, dataset, actions, position, ids, options, share)
                )

        try:
            fill()
            while pending:
                outcome = pending.popleft().result()
                fill()
                yield outcome
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
