"""Pipeline: a lazy, readable chain of batch actions, run over a whole dataset.

A :class:`Pipeline` is a value: a tuple of action calls (name + arguments). Defining one does no
work; every call is checked at once against the batch class (unknown names fail listing what
exists, wrong arguments fail showing the signature). Bind it to a dataset with
``dataset >> pipeline`` and run it:

* :meth:`Pipeline.run` processes every batch and returns a :class:`RunReport`
  (items done / failed with reasons / skipped, time per action, wall time, peak memory);
* :meth:`Pipeline.gen_batch` yields the processed batches (for training on the fly);
* :meth:`Pipeline.next_batch` returns them one at a time.

Execution model
---------------
The dataset's ids are cut into batches (:func:`plan_batches`: shuffle per epoch from ``seed``,
``n_epochs``, ``drop_last``). Each batch gets a position in the run; its random actions are seeded
from ``(seed, position)``, so output does not depend on prefetch depth, thread count or engine.
An engine (:mod:`ctflow.engines`) executes whole batches: the local engine runs up to ``prefetch``
batches in background threads while the consumer works on the current one, and yields outcomes
strictly in order. A failing batch never hangs the run and never drops other batches: with
``on_error="raise"`` the original exception is raised (with a note naming the batch and action)
after in-flight work is cancelled; with ``on_error="skip"`` failing items are dropped from their
batch, reported, and everything else goes on.

Examples
--------
>>> import ctflow as cf
>>> p = cf.Pipeline().load().normalize_hu(-1000, 400)
>>> p
Pipeline(
  .load()
  .normalize_hu(-1000, 400)
)
>>> (p + cf.Pipeline().flip(axis=2)).action_names
['load', 'normalize_hu', 'flip']
"""

from __future__ import annotations

import inspect
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ctflow.batch import CTBatch
from ctflow.errors import InvalidParameterError
from ctflow.parallel import ACTION_ATTR

if TYPE_CHECKING:
    from ctflow.dataset import Dataset

__all__ = ["ActionCall", "BatchOutcome", "Pipeline", "RunReport", "execute", "plan_batches"]

OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class ActionCall:
    """One step of a pipeline: an action name (or a callable for ``call``) and its arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    func: Callable[..., Any] | None = None

    def __repr__(self) -> str:
        parts = [_short(a) for a in self.args]
        parts += [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        if self.func is not None:
            parts.insert(0, getattr(self.func, "__name__", repr(self.func)))
        return f".{self.name}({', '.join(parts)})"


def _short(value: Any) -> str:
    try:
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            return f"<DataFrame {len(value)} rows>"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _all_batch_classes(cls: type[CTBatch] = CTBatch) -> list[type[CTBatch]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_batch_classes(sub))
    return out


def _check_call(batch_class: type[CTBatch] | None, call: ActionCall) -> None:
    """Fail now (at definition time) on an unknown action or arguments that cannot bind."""
    if call.func is not None:
        return
    classes = [batch_class] if batch_class is not None else _all_batch_classes()
    for cls in classes:
        method = getattr(cls, call.name, None)
        if method is not None and getattr(method, ACTION_ATTR, False):
            try:
                inspect.signature(method).bind(None, *call.args, **call.kwargs)
            except TypeError as exc:
                sig = str(inspect.signature(method)).replace("(self, ", "(", 1)
                raise InvalidParameterError(
                    f"pipeline: bad arguments for {call.name}{sig}: {exc}"
                ) from None
            return
    names = sorted({n for c in classes for n in c.action_names()})
    where = batch_class.__name__ if batch_class is not None else "any CTBatch class"
    raise InvalidParameterError(
        f"pipeline: unknown action {call.name!r} for {where}; actions: {', '.join(names)}"
    )


# ---------------------------------------------------------------------------------------------
@dataclass
class BatchOutcome:
    """What executing one batch produced (small and picklable unless ``batch`` is kept)."""

    position: int
    ids: list[str]
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    batch: CTBatch | None = None
    error: BaseException | None = None


@dataclass
class RunReport:
    """Summary of :meth:`Pipeline.run`.

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
        self.warnings.extend(outcome.warnings)
        for name, t in outcome.timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + t

    def summary(self) -> str:
        """A human-readable multi-line summary."""
        lines = [
            f"items: {self.n_items} in {self.n_batches} batches — done {len(self.done)}, "
            f"failed {len(self.failed)}, skipped (existing) {len(self.skipped)}, "
            f"warnings {len(self.warnings)}",
            f"wall time: {self.wall_time:.2f} s ({self.n_items / max(self.wall_time, 1e-9):.2f} "
            f"items/s), peak RSS {self.peak_rss_mb:.0f} MiB",
        ]
        if self.timings:
            total = sum(self.timings.values()) or 1.0
            lines.append("time per action (summed over batches):")
            for name, t in self.timings.items():
                lines.append(f"  {name:<16} {t:8.2f} s  {100 * t / total:5.1f} %")
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
        return self.summary()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------------------------
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
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer; got {batch_size!r}")
    if n_epochs is not None and (not isinstance(n_epochs, int | np.integer) or n_epochs < 1):
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


def execute(
    batch: CTBatch,
    actions: Sequence[ActionCall],
    *,
    position: int = 0,
    seed: int | None = None,
    on_error: OnError = "raise",
    keep_batch: bool = True,
) -> BatchOutcome:
    """Run ``actions`` on one batch; never raises when ``on_error="skip"``.

    This is what every engine runs for one batch (in a thread or on a Dask worker). Under
    ``on_error="skip"`` one bad item fails alone: an item-parallel action drops just the
    items that raise, and when an action that works on the whole batch raises, it is run
    again on each item by itself, so only the items it fails on are dropped (with their
    reason) and the others go on.
    """
    ids = list(batch.ids)
    outcome = BatchOutcome(position=position, ids=ids)
    batch.set_random_state(seed, position)
    batch.on_error = on_error
    current: CTBatch = batch
    seen: set[tuple[str, str]] = set()
    for call in actions:
        if len(current) == 0:
            break
        t0 = time.perf_counter()
        try:
            result = _call(current, call)
        except Exception as exc:
            exc.add_note(
                f"ctflow: in action {call.name!r} of the batch at position {position} "
                f"({current.ids})"
            )
            if on_error != "skip":
                outcome.error = exc
                return outcome
            result = _isolate(current, call, exc)
        finally:
            dt = time.perf_counter() - t0
            outcome.timings[call.name] = outcome.timings.get(call.name, 0.0) + dt
        _harvest_warnings(current, outcome, seen)
        if result is not None:
            current = result
    _harvest_warnings(current, outcome, seen)
    for failure in current.failed:
        outcome.failed.append(
            (
                _parent(failure.id, ids),
                f"{failure.action}: {type(failure.error).__name__}: {failure.error}",
            )
        )
    failed_set = _failed_ids(outcome)
    outcome.done = [i for i in ids if i not in failed_set]
    outcome.skipped = [i for i in current.skipped if i in ids]
    if keep_batch:
        outcome.batch = current
    return outcome


def _call(batch: CTBatch, call: ActionCall) -> CTBatch | None:
    """One action on one batch: the batch it returns (None: changed in place)."""
    if call.func is not None:
        result = call.func(batch, *call.args, **call.kwargs)
    else:
        result = getattr(batch, call.name)(*call.args, **call.kwargs)
    if result is not None and not isinstance(result, CTBatch):
        raise InvalidParameterError(
            f"action {call.name!r} returned {type(result).__name__}; actions must return "
            f"a batch (or None for in-place changes)"
        )
    return result


def _isolate(batch: CTBatch, call: ActionCall, error: Exception) -> CTBatch:
    """After ``call`` failed on the whole batch: run it on each item alone, keep those that
    pass, and record the others as failed (``on_error="skip"``)."""
    from ctflow.batch import ItemFailure

    if len(batch) == 1:
        parts: list[CTBatch] = []
        failures = [ItemFailure(batch.ids[0], call.name, error)]
    else:
        parts, failures = [], []
        for i in range(len(batch)):
            single = batch._select([i], copy=False)
            single.failed = []
            try:
                result = _call(single, call)
            except Exception as exc:
                exc.add_note(f"ctflow: in action {call.name!r} on item {batch.ids[i]!r} (#{i})")
                failures.append(ItemFailure(batch.ids[i], call.name, exc))
                continue
            parts.append(single if result is None else result)
    if not parts:
        out = batch._select([], copy=False)
    else:
        out = type(batch).concat(parts)
    out.failed = [*batch.failed, *out.failed, *failures]
    out.dumped = [*batch.dumped, *out.dumped]
    out.skipped = [*batch.skipped, *out.skipped]
    return out


def _harvest_warnings(batch: CTBatch, outcome: BatchOutcome, seen: set[tuple[str, str]]) -> None:
    """Copy the batch's new item warnings into the outcome, under the items' original ids."""
    for parent, bucket in zip(_origin_ids(batch), batch.warnings, strict=True):
        for message in bucket:
            key = (parent, message)
            if key not in seen:
                seen.add(key)
                outcome.warnings.append(key)


def _failed_ids(outcome: BatchOutcome) -> set[str]:
    return {i for i, _ in outcome.failed}


def _origin_ids(batch: CTBatch) -> list[str]:
    parents = [info.get("parent") for info in batch.info]
    return [p if p is not None else i for p, i in zip(parents, batch.ids, strict=True)]


def _parent(item_id: str, ids: Sequence[str]) -> str:
    return item_id if item_id in ids else next((i for i in ids if item_id.startswith(i)), item_id)


# ---------------------------------------------------------------------------------------------
class Pipeline:
    """A lazy chain of batch actions.

    Build it by calling actions on it (each call returns a NEW pipeline), bind it to a dataset
    with ``dataset >> pipeline``, then :meth:`run`, :meth:`gen_batch` or :meth:`next_batch`.

    Parameters
    ----------
    batch_class : type, optional
        Check actions against this class (default: any CTBatch subclass; binding to a dataset
        re-checks against the dataset's batch class).

    Examples
    --------
    >>> import ctflow as cf
    >>> prep = cf.Pipeline().load().unify_spacing((1.0, 1.0, 1.0)).normalize_hu()
    >>> len(prep)
    3
    >>> cf.Pipeline().no_such_action()
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: pipeline: unknown action 'no_such_action' ...
    """

    def __init__(
        self,
        actions: Sequence[ActionCall] = (),
        *,
        dataset: Dataset | None = None,
        batch_class: type[CTBatch] | None = None,
    ) -> None:
        self._actions: tuple[ActionCall, ...] = tuple(actions)
        self._dataset = dataset
        self._batch_class = (
            batch_class
            if batch_class is not None
            else (dataset.batch_class if dataset is not None else None)
        )
        self._iterator: Iterator[CTBatch] | None = None

    # -------------------------------------------------------------- building
    def _with(self, call: ActionCall) -> Pipeline:
        _check_call(self._batch_class, call)
        return Pipeline(
            (*self._actions, call), dataset=self._dataset, batch_class=self._batch_class
        )

    def __getattr__(self, name: str) -> Callable[..., Pipeline]:
        if name.startswith("_"):
            raise AttributeError(name)

        def add(*args: Any, **kwargs: Any) -> Pipeline:
            return self._with(ActionCall(name, args, kwargs))

        # fail on unknown names at once, even before the call's parentheses
        _check_name = ActionCall(name)
        try:
            _check_call(self._batch_class, _check_name)
        except InvalidParameterError as exc:
            if "unknown action" in str(exc):
                raise
        return add

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Pipeline:
        """Append a plain function ``func(batch, *args, **kwargs) -> batch | None``.

        Examples
        --------
        >>> import ctflow as cf
        >>> cf.Pipeline().call(lambda b: b)
        Pipeline(
          .call(<lambda>)
        )
        """
        if not callable(func):
            raise InvalidParameterError(f"call: expected a callable; got {func!r}")
        return self._with(ActionCall("call", args, kwargs, func))

    def __add__(self, other: Pipeline) -> Pipeline:
        if not isinstance(other, Pipeline):
            return NotImplemented
        dataset = self._dataset if self._dataset is not None else other._dataset
        out = Pipeline((*self._actions, *other._actions), dataset=dataset)
        if out._batch_class is not None:
            for call in out._actions:
                _check_call(out._batch_class, call)
        return out

    def bind(self, dataset: Dataset) -> Pipeline:
        """This pipeline bound to ``dataset`` (actions re-checked against its batch class)."""
        for call in self._actions:
            _check_call(dataset.batch_class, call)
        return Pipeline(self._actions, dataset=dataset, batch_class=dataset.batch_class)

    @property
    def actions(self) -> tuple[ActionCall, ...]:
        """The action calls, in order."""
        return self._actions

    @property
    def action_names(self) -> list[str]:
        """Names of the actions, in order."""
        return [a.name for a in self._actions]

    @property
    def dataset(self) -> Dataset | None:
        """The bound dataset, if any."""
        return self._dataset

    def __len__(self) -> int:
        return len(self._actions)

    def __repr__(self) -> str:
        head = "Pipeline("
        if self._dataset is not None:
            head = f"Pipeline(  # on {self._dataset!r}"
        body = "".join(f"\n  {a!r}" for a in self._actions)
        return f"{head}{body}\n)"

    # -------------------------------------------------------------- running
    def _require_dataset(self, what: str) -> Dataset:
        if self._dataset is None:
            raise InvalidParameterError(
                f"{what}: the pipeline has no dataset; bind one with `dataset >> pipeline`"
            )
        return self._dataset

    def execute(self, batch: CTBatch, *, seed: int | None = None, position: int = 0) -> CTBatch:
        """Run the actions on one given batch (raising on the first error) and return it.

        Examples
        --------
        >>> import numpy as np, ctflow as cf
        >>> b = cf.CTBatch.from_arrays([np.zeros((2, 4, 4), np.int16)])
        >>> cf.Pipeline().normalize_hu().execute(b).images.dtype
        dtype('float32')
        """
        outcome = execute(batch, self._actions, position=position, seed=seed)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.batch is not None
        return outcome.batch

    def _outcomes(
        self,
        *,
        batch_size: int,
        shuffle: bool | int,
        n_epochs: int | None,
        drop_last: bool,
        prefetch: int,
        on_error: OnError,
        seed: int | None,
        engine: Any,
        n_workers: int | None,
        keep_batch: bool,
    ) -> Iterator[BatchOutcome]:
        dataset = self._require_dataset("run")
        if on_error not in ("raise", "skip"):
            raise InvalidParameterError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
        if not isinstance(prefetch, int | np.integer) or prefetch < 0:
            raise InvalidParameterError(f"prefetch must be an integer >= 0; got {prefetch!r}")
        plan = plan_batches(
            dataset.ids,
            batch_size,
            shuffle=shuffle,
            n_epochs=n_epochs,
            drop_last=drop_last,
            seed=seed,
        )
        from ctflow.engines import resolve_engine

        runner = resolve_engine(engine)
        yield from runner.run_batches(
            dataset,
            self._actions,
            plan,
            prefetch=int(prefetch),
            on_error=on_error,
            seed=seed,
            n_workers=n_workers,
            keep_batch=keep_batch,
        )

    def run(
        self,
        batch_size: int = 1,
        shuffle: bool | int = False,
        n_epochs: int = 1,
        drop_last: bool = False,
        prefetch: int = 0,
        progress: bool = False,
        on_error: OnError = "raise",
        seed: int | None = None,
        *,
        engine: Any = "local",
        n_workers: int | None = None,
    ) -> RunReport:
        """Process the whole dataset; return a :class:`RunReport`.

        Parameters
        ----------
        batch_size : int
            Items per batch.
        shuffle : bool or int
            Shuffle ids every epoch (an int is the shuffle seed).
        n_epochs : int
            Passes over the dataset.
        drop_last : bool
            Drop an incomplete last batch of each epoch.
        prefetch : int
            Batches processed ahead in background threads (0: one at a time). On a
            :class:`~ctflow.DaskEngine`: extra batches in flight beyond the cluster's threads.
        progress : bool
            Show a tqdm progress bar (items, items/s, ETA).
        on_error : {"raise", "skip"}
            Raise the first error (original type) or drop failing items and report them.
        seed : int, optional
            Seed of random actions and shuffling; same seed -> same output.
        engine : "local" or an engine object
            Where batches run.
        n_workers : int, optional
            Threads for the items and kernels of a batch (default: usable cores). With
            ``prefetch``, the batches running at once share them (two batches on 2 threads run
            on one each; the last batch gets both). On Dask: per batch, default the machine's
            cores divided by the Dask threads running on it.

        Examples
        --------
        >>> import tempfile, numpy as np, ctflow as cf
        >>> from ctflow.io.metaimage import write_metaimage
        >>> d = tempfile.mkdtemp()
        >>> for n in ("a", "b", "c"):
        ...     p = write_metaimage(f"{d}/{n}.mhd", np.zeros((2, 4, 4), np.int16),
        ...                         cf.Geometry((1, 1, 1)))
        >>> ds = cf.Dataset.from_glob(f"{d}/*.mhd")
        >>> report = (ds >> cf.Pipeline().load().normalize_hu()).run(batch_size=2)
        >>> report.done, report.failed
        (['a', 'b', 'c'], [])
        """
        if n_epochs is None:
            raise InvalidParameterError(
                "run: n_epochs must be a positive integer (None never ends)"
            )
        dataset = self._require_dataset("run")
        report = RunReport()
        t0 = time.perf_counter()
        total = None
        if isinstance(n_epochs, int):
            per_epoch = len(dataset)
            if drop_last:
                per_epoch = (per_epoch // batch_size) * batch_size if batch_size >= 1 else 0
            total = per_epoch * n_epochs
        bar = _progress(progress, total)
        try:
            for outcome in self._outcomes(
                batch_size=batch_size,
                shuffle=shuffle,
                n_epochs=n_epochs,
                drop_last=drop_last,
                prefetch=prefetch,
                on_error=on_error,
                seed=seed,
                engine=engine,
                n_workers=n_workers,
                keep_batch=False,
            ):
                if outcome.error is not None:
                    raise outcome.error
                report.add(outcome)
                if bar is not None:
                    bar.update(len(outcome.ids))
                    if report.failed:
                        bar.set_postfix(failed=len(report.failed))
        finally:
            if bar is not None:
                bar.close()
            report.wall_time = time.perf_counter() - t0
            report.peak_rss_mb = _peak_rss_mb()
        return report

    def gen_batch(
        self,
        batch_size: int = 1,
        shuffle: bool | int = False,
        n_epochs: int | None = 1,
        drop_last: bool = False,
        prefetch: int = 0,
        on_error: OnError = "raise",
        seed: int | None = None,
        *,
        engine: Any = "local",
        n_workers: int | None = None,
        progress: bool = False,
    ) -> Iterator[CTBatch]:
        """Yield processed batches (``n_epochs=None`` repeats forever).

        Batches whose items all failed under ``on_error="skip"`` are not yielded; the failures
        are in each yielded batch's ``failed`` list.

        Examples
        --------
        >>> import tempfile, numpy as np, ctflow as cf
        >>> from ctflow.io.metaimage import write_metaimage
        >>> d = tempfile.mkdtemp()
        >>> for n in ("a", "b", "c"):
        ...     p = write_metaimage(f"{d}/{n}.mhd", np.zeros((2, 4, 4), np.int16),
        ...                         cf.Geometry((1, 1, 1)))
        >>> p = cf.Dataset.from_glob(f"{d}/*.mhd") >> cf.Pipeline().load()
        >>> [b.ids for b in p.gen_batch(batch_size=2)]
        [['a', 'b'], ['c']]
        """
        bar = _progress(progress, None)
        try:
            for outcome in self._outcomes(
                batch_size=batch_size,
                shuffle=shuffle,
                n_epochs=n_epochs,
                drop_last=drop_last,
                prefetch=prefetch,
                on_error=on_error,
                seed=seed,
                engine=engine,
                n_workers=n_workers,
                keep_batch=True,
            ):
                if outcome.error is not None:
                    raise outcome.error
                if bar is not None:
                    bar.update(len(outcome.ids))
                if outcome.batch is not None and len(outcome.batch) > 0:
                    yield outcome.batch
        finally:
            if bar is not None:
                bar.close()

    def next_batch(self, batch_size: int = 1, **kwargs: Any) -> CTBatch:
        """The next processed batch of an iteration started by the first call.

        Arguments of the first call define the iteration (see :meth:`gen_batch`); call
        :meth:`reset` to start over. Raises StopIteration at the end.
        """
        if self._iterator is None:
            self._iterator = self.gen_batch(batch_size, **kwargs)
        return next(self._iterator)

    def reset(self) -> None:
        """Forget the iteration of :meth:`next_batch`."""
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
        self._iterator = None


def _progress(enabled: bool, total: int | None) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="item", dynamic_ncols=True, smoothing=0.1)
