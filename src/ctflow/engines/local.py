"""The local engine: batches run in this process; up to ``prefetch`` of them ahead, on threads.

Ordering and failure rules (the prefetch bugs RadIO had are the reason for this module):

* Outcomes are yielded strictly in plan order, whatever order batches finish in.
* A batch never raises inside a worker thread: :func:`~ctflow.pipeline.execute` turns every
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
from typing import TYPE_CHECKING, Any

from ctflow.parallel import ThreadShare, default_n_workers

if TYPE_CHECKING:
    from ctflow.dataset import Dataset
    from ctflow.pipeline import ActionCall, BatchOutcome

__all__ = ["LocalEngine"]


def run_one(
    dataset: Dataset,
    actions: Sequence[ActionCall],
    position: int,
    ids: Sequence[str],
    *,
    seed: int | None,
    on_error: Any,
    n_workers: int | None,
    keep_batch: bool,
    share: ThreadShare | None = None,
) -> BatchOutcome:
    """Create, execute and summarise one batch (never raises under ``on_error="skip"``).

    Under a ``share`` the batch's actions use their fair share of its threads (``n_workers``
    is then ignored: it is the share's total).
    """
    if share is not None:
        with share.running():
            outcome = run_one(
                dataset, actions, position, ids,
                seed=seed, on_error=on_error, n_workers=None, keep_batch=keep_batch,
            )  # fmt: skip
        if outcome.batch is not None:  # actions called later on it use the caller's choice
            outcome.batch.n_workers = n_workers
        return outcome
    from ctflow.pipeline import BatchOutcome, execute

    try:
        batch = dataset.create_batch(list(ids), n_workers=n_workers)
    except Exception as exc:
        outcome = BatchOutcome(position=position, ids=list(ids))
        if on_error != "skip":
            outcome.error = exc
        else:
            outcome.failed = [(i, f"create_batch: {type(exc).__name__}: {exc}") for i in ids]
        return outcome
    return execute(
        batch, actions, position=position, seed=seed, on_error=on_error, keep_batch=keep_batch
    )


class LocalEngine:
    """Run batches in this process (items on the shared thread pool).

    Examples
    --------
    >>> LocalEngine()
    LocalEngine()
    """

    def __repr__(self) -> str:
        return "LocalEngine()"

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
        """Yield the outcome of every planned batch, in order."""
        kw = {"seed": seed, "on_error": on_error, "n_workers": n_workers, "keep_batch": keep_batch}
        if prefetch <= 0:
            for position, ids in plan:
                yield run_one(dataset, actions, position, ids, **kw)
            return
        share = kw["share"] = ThreadShare(int(n_workers or default_n_workers()))
        pool = ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="ctflow-batch")
        pending: deque[Future[BatchOutcome]] = deque()
        planned = iter(plan)

        def fill() -> None:
            while len(pending) < prefetch + 1:
                try:
                    position, ids = next(planned)
                except StopIteration:
                    return
                share.expect()  # its thread is not idle: it is about to start this batch
                pending.append(pool.submit(run_one, dataset, actions, position, ids, **kw))

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
