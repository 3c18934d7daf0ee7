"""Pipeline: a lazy, readable chain of actions, run over a whole dataset.

A :class:`Pipeline` is a value: a tuple of action objects (:mod:`ctflow.actions`). Writing one
does no work, but every action checks its parameters at once, so a bad value fails before any
scan is read. Its methods have the actions' real signatures (IDEs complete them; a type
checker rejects ``Pipeline().lodd()``). Bind it to a dataset with ``dataset >> pipeline`` and:

* :meth:`Pipeline.run` processes every batch and returns a :class:`RunReport`
  (items done / failed with reasons / skipped, warnings, time per action, wall time, peak
  memory);
* :meth:`Pipeline.gen_batch` yields the processed batches (for training on the fly);
* :meth:`Pipeline.next_batch` returns them one at a time.

How a run executes is described in :mod:`ctflow.execution`.

Examples
--------
>>> import ctflow as cf
>>> p = cf.Pipeline().load().normalize_hu(-1000, 400)
>>> p
Pipeline(
  .load()
  .normalize_hu()
)
>>> (p + cf.Pipeline().flip(axis=2)).action_names
['load', 'normalize_hu', 'flip']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ctflow import memory
from ctflow.actions.base import Action
from ctflow.actions.custom import Call, Method, absolute_arg, check_method
from ctflow.actions.methods import ActionMethods
from ctflow.batch import CTBatch
from ctflow.errors import InvalidParameterError
from ctflow.execution import execute, peak_rss_mb
from ctflow.runs import BatchOutcome, OnError, RunOptions, RunReport, StopSignal, plan_batches

if TYPE_CHECKING:
    from ctflow.dataset import Dataset

__all__ = ["Pipeline"]


class Pipeline(ActionMethods):
    """A lazy chain of actions.

    Build it by calling actions on it (each call returns a NEW pipeline), bind it to a dataset
    with ``dataset >> pipeline``, then :meth:`run`, :meth:`gen_batch` or :meth:`next_batch`.
    Besides the built-in actions (methods with their real signatures), :meth:`then` appends
    any action object, :meth:`call` a plain function, and the ``@cf.action`` methods of a
    ``CTBatch`` subclass are called by name (``Pipeline().my_action(...)``; checked when
    written, against the dataset's batch class when bound).

    Parameters
    ----------
    actions : sequence of Action, optional
        The actions, in order.
    batch_class : type, optional
        Check user actions against this class (default: any CTBatch subclass; binding to a
        dataset re-checks against the dataset's batch class).
    fuse : bool, default True
        Run consecutive geometric actions (resampling, reorientation, flips, rotations, crops,
        random affine and elastic deformations) as one resampling pass that computes only the
        kept voxels (:mod:`ctflow.actions.fusion`), and ``normalize_hu`` followed by
        ``sample_nodules`` / ``sample_crops`` on the crops only, with identical results
        (:mod:`ctflow.actions.fusion_crops`); ``False`` runs every action on its own.

    Examples
    --------
    >>> import ctflow as cf
    >>> prep = cf.Pipeline().load().unify_spacing((1.0, 1.0, 1.0)).normalize_hu()
    >>> len(prep)
    3
    >>> cf.Pipeline().normalize_hu(min_hu=500, max_hu=100)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: normalize_hu: max_hu must be greater than ...; got 100
    """

    def __init__(
        self,
        actions: Sequence[Action] = (),
        *,
        dataset: Dataset | None = None,
        batch_class: type[CTBatch] | None = None,
        fuse: bool = True,
    ) -> None:
        from ctflow.validation import as_bool

        self._fuse = as_bool(fuse, "fuse", "Pipeline")
        for action in actions:
            if not isinstance(action, Action):
                raise InvalidParameterError(
                    f"pipeline: expected action objects (ctflow.actions); got {action!r}"
                )
        self._actions: tuple[Action, ...] = tuple(actions)
        self._dataset = dataset
        self._batch_class = (
            batch_class
            if batch_class is not None
            else (dataset.batch_class if dataset is not None else None)
        )
        self._iterator: Iterator[CTBatch] | None = None

    # -------------------------------------------------------------- building
    def _then(self, action: Action) -> Pipeline:
        return self.then(action)

    def then(self, action: Action) -> Pipeline:
        """Return a new pipeline with ``action`` appended (any :class:`~ctflow.actions.Action`).

        Examples
        --------
        >>> import ctflow as cf
        >>> from ctflow.actions import Flip
        >>> cf.Pipeline().then(Flip(axis=2)).action_names
        ['flip']
        """
        if not isinstance(action, Action):
            raise InvalidParameterError(
                f"pipeline.then: expected an action object (ctflow.actions); got {action!r}"
            )
        if isinstance(action, Method):
            check_method(self._batch_class, action)
        return Pipeline(
            (*self._actions, action),
            dataset=self._dataset,
            batch_class=self._batch_class,
            fuse=self._fuse,
        )

    if not TYPE_CHECKING:  # user actions by name at run time; type checkers see none

        def __getattr__(self, name: str) -> Callable[..., Pipeline]:
            """Return a user action of the batch class, by name."""
            if name.startswith("_"):
                raise AttributeError(name)
            check_method(self._batch_class, Method(name), name_only=True)  # unknown: fail now

            def add(*args: Any, **kwargs: Any) -> Pipeline:
                args = tuple(absolute_arg(a) for a in args)
                kwargs = {k: absolute_arg(v) for k, v in kwargs.items()}
                return self.then(Method(name, args, kwargs))

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
        return self.then(Call(func, tuple(args), dict(kwargs)))

    def __add__(self, other: Pipeline) -> Pipeline:
        """Return the concatenation of two pipelines."""
        if not isinstance(other, Pipeline):
            return NotImplemented
        dataset = self._dataset if self._dataset is not None else other._dataset
        out = Pipeline(
            (*self._actions, *other._actions), dataset=dataset, fuse=self._fuse and other._fuse
        )
        if out._batch_class is not None:
            for action in out._actions:
                if isinstance(action, Method):
                    check_method(out._batch_class, action)
        return out

    def bind(self, dataset: Dataset) -> Pipeline:
        """Return this pipeline bound to ``dataset`` (user actions checked against its class)."""
        for action in self._actions:
            if isinstance(action, Method):
                check_method(dataset.batch_class, action)
        return Pipeline(
            self._actions, dataset=dataset, batch_class=dataset.batch_class, fuse=self._fuse
        )

    def __rrshift__(self, dataset: Dataset) -> Pipeline:
        """Bind this pipeline to a dataset: ``dataset >> pipeline``."""
        from ctflow.dataset import Dataset

        if not isinstance(dataset, Dataset):
            return NotImplemented
        return self.bind(dataset)

    @property
    def actions(self) -> tuple[Action, ...]:
        """The action objects, in order."""
        return self._actions

    @property
    def fuse(self) -> bool:
        """Whether consecutive geometric actions run as one pass."""
        return self._fuse

    @property
    def planned(self) -> tuple[Action, ...]:
        """The actions as they run: fused runs as one action each (when ``fuse``).

        Examples
        --------
        >>> import ctflow as cf
        >>> p = cf.Pipeline().unify_spacing(1.0).rotate(10).central_crop((8, 8, 8))
        >>> [a.label for a in p.planned]
        ['unify_spacing + rotate + central_crop']
        >>> [a.label for a in cf.Pipeline(p.actions, fuse=False).planned]
        ['unify_spacing', 'rotate', 'central_crop']
        """
        if not self._fuse:
            return self._actions
        from ctflow.actions.fusion import fuse

        return fuse(self._actions)

    @property
    def action_names(self) -> list[str]:
        """Names of the actions, in order."""
        return [a.label for a in self._actions]

    @property
    def dataset(self) -> Dataset | None:
        """The bound dataset, if any."""
        return self._dataset

    def __len__(self) -> int:
        """Return the number of items."""
        return len(self._actions)

    def __repr__(self) -> str:
        """Return a readable summary."""
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
        outcome = execute(batch, self.planned, position=position, seed=seed)
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
        engine: Any,
        options: RunOptions,
    ) -> Iterator[BatchOutcome]:
        dataset = self._require_dataset("run")
        plan = plan_batches(
            dataset.ids,
            batch_size,
            shuffle=shuffle,
            n_epochs=n_epochs,
            drop_last=drop_last,
            seed=options.seed,
        )
        from ctflow.engines import resolve_engine

        runner = resolve_engine(engine)
        yield from runner.run_batches(dataset, self.planned, plan, options)

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

        Notes
        -----
        The first Ctrl-C stops the run after the actions in progress: no batch starts and no
        batch starts another action (a ``dump`` included); the report says what was done
        (``report.stopped``, ``report.interrupted``). A second Ctrl-C interrupts at once.

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
        stop = StopSignal()
        options = RunOptions(prefetch, on_error, seed, n_workers, keep_batch=False, stop=stop.name)
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
            with stop, memory.run_scope():  # idle buffers: for the next run only
                for outcome in self._outcomes(
                    batch_size=batch_size,
                    shuffle=shuffle,
                    n_epochs=n_epochs,
                    drop_last=drop_last,
                    engine=engine,
                    options=options,
                ):
                    if outcome.error is not None:
                        raise outcome.error
                    report.add(outcome)
                    if bar is not None:
                        bar.update(len(outcome.ids))
                        if report.failed:
                            bar.set_postfix(failed=len(report.failed))
                report.stopped = stop.is_set()
        finally:
            if bar is not None:
                bar.close()
            report.wall_time = time.perf_counter() - t0
            report.peak_rss_mb = peak_rss_mb()
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
        are in each yielded batch's ``failed`` list. The first Ctrl-C stops the run after the
        actions in progress (:class:`~ctflow.runs.StopSignal`) and ends the loop with
        ``KeyboardInterrupt``; a second one interrupts at once.

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
        stop = StopSignal()
        options = RunOptions(prefetch, on_error, seed, n_workers, keep_batch=True, stop=stop.name)
        bar = _progress(progress, None)
        try:
            with stop, memory.run_scope():  # idle buffers: for the next run only
                for outcome in self._outcomes(
                    batch_size=batch_size,
                    shuffle=shuffle,
                    n_epochs=n_epochs,
                    drop_last=drop_last,
                    engine=engine,
                    options=options,
                ):
                    if outcome.error is not None:
                        raise outcome.error
                    if bar is not None:
                        bar.update(len(outcome.ids))
                    if stop.is_set():
                        break  # batches stopped half-way are not handed out
                    if outcome.batch is not None and len(outcome.batch) > 0:
                        stop.pause()  # Ctrl-C in the caller's loop body is the caller's
                        yield outcome.batch
                        stop.resume()
                if stop.is_set():
                    raise KeyboardInterrupt("ctflow: the run was stopped (Ctrl-C)")
        finally:
            if bar is not None:
                bar.close()

    def next_batch(self, batch_size: int = 1, **kwargs: Any) -> CTBatch:
        """Return the next processed batch of an iteration started by the first call.

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
