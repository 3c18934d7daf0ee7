"""What a run is: its options, its plan of batches, its stop signal and its report.

A run of a pipeline over a dataset is planned here (:func:`plan_batches`), configured by one
:class:`RunOptions` (the same meaning on every engine), stopped between actions by a
:class:`StopSignal` (the first Ctrl-C), and summarised from each batch's
:class:`BatchOutcome` into a :class:`RunReport`. How a batch executes is in
:mod:`ctflow.execution`.
"""

from __future__ import annotations

import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ctflow.errors import InvalidParameterError

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = [
    "BatchOutcome",
    "OnError",
    "RunOptions",
    "RunReport",
    "StopRequested",
    "StopSignal",
    "plan_batches",
    "stop_requested",
]


OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class RunOptions:
    """How the batches of one run execute (the same meaning on every engine).

    Attributes
    ----------
    prefetch : int
        Batches processed ahead of the one being consumed (local: in background threads that
        share ``n_workers``; Dask: extra batches in flight beyond the cluster's threads).
    on_error : {"raise", "skip"}
        Raise the first error (original type, notes naming batch, action and item) or drop the
        failing items and report them.
    seed : int or None
        Seed of every random draw of the run.
    n_workers : int or None
        Threads for the items and kernels of a batch (default: the usable cores).
    keep_batch : bool
        Hand the processed batch back in the outcome (``gen_batch``) or only the report
        (``run``).
    stop : str or None
        Name of the run's stop signal (:class:`StopSignal`): once it is set (the first Ctrl-C),
        no batch starts and no batch starts another action.
    """

    prefetch: int = 0
    on_error: OnError = "raise"
    seed: int | None = None
    n_workers: int | None = None
    keep_batch: bool = True
    stop: str | None = None

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if self.on_error not in ("raise", "skip"):
            raise InvalidParameterError(
                f"on_error must be 'raise' or 'skip'; got {self.on_error!r}"
            )
        ok = isinstance(self.prefetch, int | np.integer) and not isinstance(self.prefetch, bool)
        if not ok or self.prefetch < 0:
            raise InvalidParameterError(f"prefetch must be an integer >= 0; got {self.prefetch!r}")
        if self.n_workers is not None and (
            isinstance(self.n_workers, bool)
            or not isinstance(self.n_workers, int | np.integer)
            or self.n_workers < 1
        ):
            raise InvalidParameterError(
                f"n_workers must be a positive integer or None; got {self.n_workers!r}"
            )


class StopSignal:
    """A run's "stop after the current actions" flag, set by its first Ctrl-C.

    :meth:`ctflow.Pipeline.run` and ``gen_batch`` make one per run (when they run in the main
    thread) and install a SIGINT handler for the run: the first Ctrl-C sets the flag — no new
    batch starts, no batch starts its next action (a ``dump`` included), running item threads
    finish the kernel they are in, and the run ends with a report of what was done — and
    restores Python's handler, so a second Ctrl-C interrupts at once. Engines look the flag up
    by name (:func:`stop_requested`); the Dask engine mirrors it in a ``distributed.Event`` its
    workers check between actions.

    Examples
    --------
    >>> with StopSignal() as stop:
    ...     before = stop_requested(stop.name)
    ...     stop.set()
    ...     after = stop_requested(stop.name)
    >>> before, after, stop_requested(stop.name)
    (False, True, False)
    """

    _registry: ClassVar[dict[str, threading.Event]] = {}

    def __init__(self) -> None:
        self.name = f"ctflow-stop-{uuid.uuid4().hex}"
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False
        self._fired = False  # the first Ctrl-C came: Python's handler stands in for ours

    def set(self) -> None:
        """Ask the run to stop after the current actions."""
        self.event.set()

    def is_set(self) -> bool:
        """Return whether the run was asked to stop."""
        return self.event.is_set()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: stop after the current actions; the next one interrupts at once."""
        del signum, frame
        self.set()
        self._fired = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr.write(
            "\nctflow: stopping after the actions in progress (Ctrl-C again to stop at once)\n"
        )

    def __enter__(self) -> StopSignal:
        """Register the signal and, in the main thread, catch the first Ctrl-C of the run."""
        StopSignal._registry[self.name] = self.event
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = True
            except (ValueError, OSError):  # no signals here (an embedded interpreter)
                self._installed = False
        return self

    def __exit__(self, *exc: object) -> None:
        """Restore the previous Ctrl-C handler and forget the signal."""
        self.pause()
        StopSignal._registry.pop(self.name, None)

    def pause(self) -> None:
        """Give Ctrl-C back to the previous handler.

        ``gen_batch`` does it while it waits at a ``yield``: the caller's loop body is the
        caller's, and a Ctrl-C there interrupts it as usual.
        """
        main = threading.current_thread() is threading.main_thread()
        if self._installed and main:  # a handler can only be set from the main thread
            current = signal.getsignal(signal.SIGINT)
            ours = current == self._on_sigint
            if ours or (self._fired and current is signal.default_int_handler):
                signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def resume(self) -> None:
        """Catch Ctrl-C again (``gen_batch`` goes on producing batches)."""
        if self._installed or self.event.is_set():
            return
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)
                self._installed = True
            except (ValueError, OSError):
                self._installed = False


class StopRequested(Exception):
    """The run was asked to stop (Ctrl-C) before an item of an action started.

    Raised by :func:`ctflow.assembly.run_items` instead of starting the item; the batch's
    items are then reported as interrupted (neither done nor failed), never as failures.
    """


def stop_requested(name: str | None) -> bool:
    """Return whether the run whose stop signal is ``name`` was asked to stop (this process)."""
    if name is None:
        return False
    event = StopSignal._registry.get(name)
    return event is not None and event.is_set()


@dataclass
class BatchOutcome:
    """What executing one batch produced (small and picklable unless ``batch`` is kept)."""

    position: int
    ids: list[str]
    done: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    batch: CTBatch | None = None
    error: BaseException | None = None


@dataclass
class RunReport:
    """Summary of :meth:`ctflow.Pipeline.run`.

    Attributes
    ----------
    n_items : int
        Items attempted (counting repeats over epochs).
    done : list of str
        Items that went through every action.
    failed : list of (str, str)
        Item id and reason (``"action: ExceptionType: message"``).
    skipped : list of str
        Items left alone by ``dump(..., skip_existing=True)``.
    interrupted : list of str
        Items not finished because the run was stopped (Ctrl-C): neither done nor failed.
    stopped : bool
        The run was stopped before the end of its plan (Ctrl-C).
    warnings : list of (str, str)
        Item id and what ctflow decided on its own about it (``"action: message"``): a gap
        in a DICOM series interpolated, files of a folder not read, no nodule to centre crops
        on, an empty mask, a lung mask implausibly small ... The items are still done.
    timings : dict
        Seconds spent per action, summed over batches (wall time of the action call).
    n_batches : int
    wall_time : float
        Seconds for the whole run.
    peak_rss_mb : float
        Peak resident memory of the process so far, MiB (on Dask: the client process only).
    """

    n_items: int = 0
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    stopped: bool = False
    warnings: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    n_batches: int = 0
    wall_time: float = 0.0
    peak_rss_mb: float = 0.0

    def add(self, outcome: BatchOutcome) -> None:
        """Merge one batch outcome into the report."""
        self.n_batches += 1
        self.n_items += len(outcome.ids)
        self.done.extend(outcome.done)
        self.failed.extend(outcome.failed)
        self.skipped.extend(outcome.skipped)
        self.interrupted.extend(outcome.interrupted)
        self.warnings.extend(outcome.warnings)
        for name, t in outcome.timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + t

    def summary(self) -> str:
        """Return a human-readable multi-line summary."""
        lines = [
            f"items: {self.n_items} in {self.n_batches} batches — done {len(self.done)}, "
            f"failed {len(self.failed)}, skipped (existing) {len(self.skipped)}, "
            f"warnings {len(self.warnings)}",
            *(
                [
                    f"STOPPED (Ctrl-C): {len(self.interrupted)} item(s) of running or queued "
                    f"batches not finished; batches never submitted are not counted"
                ]
                if self.stopped
                else []
            ),
            f"wall time: {self.wall_time:.2f} s ({self.n_items / max(self.wall_time, 1e-9):.2f} "
            f"items/s), peak RSS {self.peak_rss_mb:.0f} MiB",
        ]
        if self.timings:
            total = sum(self.timings.values()) or 1.0
            lines.append("time per action (summed over batches):")
            width = max(16, *(len(name) for name in self.timings))  # fused labels are long
            for name, t in self.timings.items():
                lines.append(f"  {name:<{width}} {t:8.2f} s  {100 * t / total:5.1f} %")
        for item_id, reason in self.failed[:20]:
            lines.append(f"  FAILED {item_id}: {reason}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more failures")
        for item_id, message in self.warnings[:20]:
            lines.append(f"  WARNING {item_id}: {message}")
        if len(self.warnings) > 20:
            lines.append(f"  ... and {len(self.warnings) - 20} more warnings")
        return "\n".join(lines)

    def __str__(self) -> str:
        """Return the summary."""
        return self.summary()


def plan_batches(
    ids: Sequence[str],
    batch_size: int,
    *,
    shuffle: bool | int = False,
    n_epochs: int | None = 1,
    drop_last: bool = False,
    seed: int | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(position, ids)`` of each batch of a run, epoch after epoch.

    ``shuffle=True`` permutes ids every epoch with a generator seeded by ``(seed, epoch)``
    (an int ``shuffle`` is used as the seed). ``n_epochs=None`` repeats forever.
    ``drop_last`` drops an incomplete last batch of each epoch.

    Examples
    --------
    >>> [b for _, b in plan_batches(list("abcde"), 2, drop_last=True)]
    [['a', 'b'], ['c', 'd']]
    """
    ok = isinstance(batch_size, int | np.integer) and not isinstance(batch_size, bool)
    if not ok or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer; got {batch_size!r}")
    if n_epochs is not None and (
        not isinstance(n_epochs, int | np.integer) or isinstance(n_epochs, bool) or n_epochs < 1
    ):
        raise InvalidParameterError(
            f"n_epochs must be a positive integer or None; got {n_epochs!r}"
        )
    if not ids:
        raise InvalidParameterError("the dataset is empty: nothing to run")
    ids = list(ids)
    shuffle_seed = seed if isinstance(shuffle, bool) else int(shuffle)
    base_entropy = shuffle_seed if shuffle_seed is not None else np.random.SeedSequence().entropy
    position = 0
    epoch = 0
    while n_epochs is None or epoch < n_epochs:
        order = ids
        if shuffle is not False:
            rng = np.random.default_rng(np.random.SeedSequence(base_entropy, spawn_key=(epoch,)))
            order = [ids[i] for i in rng.permutation(len(ids))]
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if drop_last and len(chunk) < batch_size:
                break
            yield position, chunk
            position += 1
        epoch += 1
