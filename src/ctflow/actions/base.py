"""What an action is: a small frozen object that checks its parameters when it is written.

An action is a frozen dataclass (every subclass of :class:`Action` is made one: declare the
parameters as annotated class attributes). Its constructor validates every value (a bad one raises
:class:`~ctflow.errors.InvalidParameterError` naming the action and the parameter, before any
scan is read), and calling it on a batch does the work: ``UnifySpacing((1, 1, 1))(batch)``. A
:class:`~ctflow.Pipeline` is an ordered tuple of actions.

Two kinds do the work differently:

* :class:`ItemAction` works on one item at a time; the batch runs every item on its threads
  (:meth:`ctflow.CTBatch.run_items`). Random parameters are drawn apart from applying them —
  TorchIO 2's split: :meth:`ItemAction.make_params` draws them from the item's own generator
  (seeded from the run's seed, the batch's position, the action's place and the item), and
  :meth:`ItemAction.apply` applies them deterministically. So results do not depend on thread
  count, prefetch or engine, and a drawn record can be applied again.
* :class:`BatchAction` works on the whole batch at once (a voxelwise pass over every item's
  buffer, a nodule table, crops drawn across the batch).

Every item keeps a record of the actions applied to it (``item.history``): the action's name,
its arguments, and the parameters as drawn, all JSON. ``dump`` writes it to ``meta.json``;
:func:`ctflow.history.replay` applies it again and gets the same arrays.

Writing a new action
--------------------
Subclass :class:`ItemAction` (or :class:`BatchAction`), give it a ``name``, declare its
parameters as annotated attributes (they become the frozen dataclass fields), check them in
``__post_init__``, and implement ``apply``::

    class Scale(ItemAction):
        name = "scale"
        family = "intensity"
        factor: float = 2.0

        def __post_init__(self):
            self._set("factor", as_float(self.factor, "factor", self.name))

        def apply(self, item, params):
            return item.images * np.float32(self.factor)

A named action is registered (:data:`ACTIONS`): pipeline files can use it by name, and
``Pipeline().then(Invert())`` or ``Invert()(batch)`` run it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform

import numpy as np

from ctflow.errors import InvalidParameterError

if TYPE_CHECKING:
    from ctflow.batch import CTBatch
    from ctflow.item import CTItem

__all__ = ["ACTIONS", "Action", "BatchAction", "ItemAction", "action_from_record", "jsonable"]

#: Registered actions by name: what pipeline files and history records may name.
ACTIONS: dict[str, type[Action]] = {}


def jsonable(value: Any) -> Any:
    """Return ``value`` as plain JSON data.

    Tuples and arrays become lists, numpy scalars Python ones, paths strings, dtypes their
    names; anything else its ``repr``.

    Examples
    --------
    >>> jsonable((np.float32(1.5), np.dtype("int16"), np.arange(2)))
    [1.5, 'int16', [0, 1]]
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else repr(v)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.dtype | type) and value is not type:
        try:
            return np.dtype(value).name
        except TypeError:
            return repr(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()] if value.size <= 4096 else repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [jsonable(v) for v in value]
    return repr(value)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


@dataclass_transform(frozen_default=True)
class Action:
    """Base of every action (every subclass is made a frozen dataclass).

    Class attributes
    ----------------
    name : str
        The action's name in pipelines, files and records (registered in :data:`ACTIONS`).
    family : str
        "io", "geometry", "intensity", "anatomy", "projections", "annotations", "sampling",
        "patches", "augmentation" or "custom".
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = "custom"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Make the subclass a frozen dataclass and register it by name."""
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(cls, frozen=True, repr=False)
        name = cls.__dict__.get("name")
        if name:
            ACTIONS[name] = cls

    # -- running ---------------------------------------------------------------------------
    def __call__(self, batch: CTBatch) -> CTBatch:
        """Run the action on ``batch``; return the batch (the same one, changed, or a new one)."""
        raise NotImplementedError

    def replay(self, batch: CTBatch, drawn: Sequence[Mapping[str, Any]]) -> CTBatch:
        """Apply the action again with the parameters recorded for each item (``drawn``)."""
        del drawn
        return self(batch)

    # -- describing --------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """The name errors, warnings and timings use (the action's name)."""
        return self.name or type(self).__name__

    def arguments(self) -> dict[str, Any]:
        """Return the action's parameters by name, as given (normalised by the constructor)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def record(self) -> dict[str, Any]:
        """Return ``{"action": name, "args": {...}}`` in JSON, for an item's history."""
        args = {k: jsonable(v) for k, v in self.arguments().items()}
        out: dict[str, Any] = {"action": self.name, "args": args}
        if not _is_json(args) or any(isinstance(v, str) and v.startswith("<") for v in args):
            out["replayable"] = False
        return out

    @classmethod
    def path_fields(cls) -> frozenset[str]:
        """Parameters that hold a file or folder (declared ``os.PathLike``), e.g. ``dump(dst)``.

        Examples
        --------
        >>> from ctflow.actions import Dump
        >>> sorted(Dump.path_fields())
        ['dst']
        """
        return frozenset(
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if "PathLike" in str(f.type)
        )

    @classmethod
    def from_record(cls, args: Mapping[str, Any]) -> Action:
        """Return the action a record's ``args`` describe."""
        return cls(**dict(args))

    def __repr__(self) -> str:
        """Return a readable summary."""
        shown = []
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            default = f.default
            if default is not dataclasses.MISSING and _same(value, default):
                continue
            shown.append(f"{f.name}={_short(value)}")
        return f".{self.name or type(self).__name__}({', '.join(shown)})"

    # -- errors ------------------------------------------------------------------------------
    def invalid(self, parameter: str, rule: str, got: Any) -> InvalidParameterError:
        """``InvalidParameterError("<name>: <parameter> must be <rule>; got <got>")``."""
        return InvalidParameterError(f"{self.name}: {parameter} must be {rule}; got {got!r}")

    def _set(self, field: str, value: Any) -> None:
        """Store a normalised value in a frozen field (constructors only)."""
        object.__setattr__(self, field, value)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def _short(value: Any) -> str:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return f"<DataFrame {len(value)} rows>"
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>"
    if callable(value) and hasattr(value, "__name__"):
        return str(value.__name__)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class ItemAction(Action):
    """An action that works on one item at a time; the batch runs all items on its threads.

    Subclasses implement :meth:`apply` and, when they draw random parameters,
    :meth:`make_params`.
    """

    #: ``apply`` returns arrays it allocated itself (nobody else holds them), so the batch may
    #: overwrite them in place later; true for ctflow's own actions.
    fresh_results: ClassVar[bool] = False
    #: A pipeline may run this action and its neighbouring item actions item by item (each item
    #: through all of them, then one assembly; see :func:`ctflow.execution.execute`). True:
    #: an item action depends on its item only. Set False for one that must see the batch.
    item_by_item: ClassVar[bool] = True
    #: The action may run on items loaded with ``load(lazy=True)`` (no voxels): ``load``.
    lazy_ok: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Make the subclass a frozen dataclass and register it by name."""
        super().__init_subclass__(**kwargs)
        if "fresh_results" not in cls.__dict__:
            cls.fresh_results = cls.__module__.startswith("ctflow.actions.")

    def history_entries(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return what an item's history records of this action with its drawn ``params``."""
        return [{**self.record(), "params": dict(params)}]

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Draw this item's random parameters from ``item.rng`` (JSON values); default none."""
        del item
        return {}

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> Any:
        """Do the work on one item with the drawn ``params``.

        Returns a new images array, a dict of components (``images``, ``masks``, ``lungs``,
        ``geometry`` or ``spacing``/``origin``/``direction``, ``nodules``, ``info``,
        ``warnings``), or None when nothing changed.
        """
        raise NotImplementedError

    def __call__(self, batch: CTBatch) -> CTBatch:
        """Run :meth:`apply` on every item of ``batch`` (in parallel)."""
        return batch.run_items(self)

    def replay(self, batch: CTBatch, drawn: Sequence[Mapping[str, Any]]) -> CTBatch:
        """Apply with the recorded parameters instead of drawing new ones."""
        return batch.run_items(self, params=drawn)


class BatchAction(Action):
    """An action that works on the whole batch at once (subclasses implement :meth:`run`)."""

    #: The action may run on each item as a batch of its own, inside a run of item actions
    #: (:func:`ctflow.execution.execute`): True when its result for an item depends on that
    #: item only (``fetch_nodules`` keeps the table's rows of the batch's ids). Default False.
    item_by_item: ClassVar[bool] = False

    def run(self, batch: CTBatch) -> CTBatch:
        """Do the work; return the batch (``batch`` itself, changed, or a new one)."""
        raise NotImplementedError

    def drawn(self, batch: CTBatch, index: int) -> dict[str, Any]:
        """Return what this action decided for item ``index`` (JSON, for its history)."""
        del batch, index
        return {}

    def __call__(self, batch: CTBatch) -> CTBatch:
        """Run on ``batch`` and record the action in every item's history."""
        out = self.run(batch)
        record = self.record()
        for i in range(len(out)):
            out.add_history(i, {**record, "params": self.drawn(out, i)})
        return out


def action_from_record(record: Mapping[str, Any]) -> Action:
    """Return the action a history record names, with its arguments.

    Raises
    ------
    InvalidParameterError
        An unknown action, or one whose arguments were not recorded as JSON.
    """
    name = record.get("action")
    cls = ACTIONS.get(str(name))
    if cls is None:
        raise InvalidParameterError(
            f"history: action {name!r} is not a registered action; registered: "
            f"{', '.join(sorted(ACTIONS))}"
        )
    if record.get("replayable") is False:
        raise InvalidParameterError(
            f"history: {name!r} was recorded with arguments that are not JSON (a DataFrame, a "
            f"callable ...); it cannot be replayed from the record"
        )
    return cls.from_record(record.get("args") or {})
