"""Actions of the user's own.

A plain function, a ``@cf.action`` batch method, and the item function behind
``@cf.inbatch_parallel``; and how a pipeline finds and checks a batch class's ``@cf.action``
methods (:func:`user_actions`, :func:`check_method`, :func:`absolute_arg`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from ctflow.actions.base import ACTIONS, Action, ItemAction, jsonable
from ctflow.errors import InvalidParameterError
from ctflow.parallel import ACTION_ATTR
from ctflow.validation import as_path

if TYPE_CHECKING:
    from ctflow.batch import CTBatch
    from ctflow.item import CTItem

__all__ = ["Call", "ItemFunction", "Method", "absolute_arg", "check_method", "user_actions"]


def _returned(name: str, result: Any) -> Any:
    from ctflow.batch import CTBatch

    if result is not None and not isinstance(result, CTBatch):
        raise InvalidParameterError(
            f"action {name!r} returned {type(result).__name__}; actions must return a batch "
            f"(or None for in-place changes)"
        )
    return result


def _record(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    payload = {"args": jsonable(list(args)), "kwargs": jsonable(dict(kwargs))}
    out: dict[str, Any] = {"action": name, "method": True, **payload}
    text = repr(payload)
    if "<" in text or "object at" in text:
        out["replayable"] = False
    return out


class Call(Action):
    """A plain function ``func(batch, *args, **kwargs) -> batch | None`` as a pipeline step.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> b = cf.CTBatch.from_arrays([np.zeros((1, 2, 2), np.int16)])
    >>> Call(lambda batch, k: batch.warn(0, "note", f"k={k}"), (3,))(b).warnings
    [['note: k=3']]
    """

    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if not callable(self.func):
            raise InvalidParameterError(f"call: expected a callable; got {self.func!r}")
        self._set("args", tuple(self.args))
        self._set("kwargs", dict(self.kwargs))

    @property
    def label(self) -> str:
        """The function's name."""
        return str(getattr(self.func, "__name__", repr(self.func)))

    def __call__(self, batch: CTBatch) -> CTBatch:
        """Call the function; record it in every item's history (not replayable)."""
        result = _returned("call", self.func(batch, *self.args, **dict(self.kwargs)))
        out = batch if result is None else result
        entry = {"action": "call", "function": self.label, "replayable": False}
        for i in range(len(out)):
            out.add_history(i, dict(entry))
        return out

    def __repr__(self) -> str:
        """Return a readable summary."""
        parts = [self.label, *(repr(a) for a in self.args)]
        parts += [f"{k}={v!r}" for k, v in dict(self.kwargs).items()]
        return f".call({', '.join(parts)})"


class Method(Action):
    """A ``@cf.action`` method of the batch class, called by name: ``batch.<name>(*args)``.

    This is how ``Pipeline().my_action(...)`` runs a user's action of a ``CTBatch`` subclass.
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        if not isinstance(self.method, str) or not self.method.isidentifier():
            raise InvalidParameterError(f"pipeline: bad action name {self.method!r}")
        self._set("args", tuple(self.args))
        self._set("kwargs", dict(self.kwargs))

    @property
    def label(self) -> str:
        """The method's name."""
        return self.method

    def __call__(self, batch: CTBatch) -> CTBatch:
        """Call the batch's method; record it unless the method recorded itself."""
        before = [len(h) for h in batch.history]
        result = _returned(
            self.method, getattr(batch, self.method)(*self.args, **dict(self.kwargs))
        )
        out = batch if result is None else result
        if out is batch and [len(h) for h in out.history] == before:
            for i in range(len(out)):
                out.add_history(i, _record(self.method, self.args, dict(self.kwargs)))
        return out

    def replay(self, batch: CTBatch, drawn: Sequence[Mapping[str, Any]]) -> CTBatch:
        """Call the method again (the batch class must have it)."""
        del drawn
        return self(batch)

    def __repr__(self) -> str:
        """Return a readable summary."""
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in dict(self.kwargs).items()]
        return f".{self.method}({', '.join(parts)})"


class ItemFunction(ItemAction):
    """A user's item method (``@cf.inbatch_parallel``) as an item action.

    ``func(batch, item, *args, **kwargs)`` is called for every item on the batch's threads;
    it returns a new images array, a dict of components, or None.
    """

    fresh_results = False

    func: Callable[..., Any]
    batch: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The method's name."""
        return str(getattr(self.func, "__name__", "item_function"))

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> Any:
        """Call the user's method for one item."""
        return self.func(self.batch, item, *self.args, **dict(self.kwargs))

    def record(self) -> dict[str, Any]:
        """Return the method's name and arguments."""
        return _record(self.label, self.args, dict(self.kwargs))

    def __repr__(self) -> str:
        """Return a readable summary."""
        return f".{self.label}(...)"


# ------------------------------------------------ finding and checking @cf.action methods
def _all_batch_classes(cls: type[CTBatch]) -> list[type[CTBatch]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_batch_classes(sub))
    return out


def user_actions(cls: type[CTBatch]) -> list[str]:
    """Return the names of the ``@cf.action`` methods of a batch class (its own and inherited).

    Parameters
    ----------
    cls : type
        A ``CTBatch`` class.

    Returns
    -------
    list of str
        The names, sorted.

    Examples
    --------
    >>> import ctflow as cf
    >>> user_actions(cf.CTBatch)
    []
    """
    return sorted(
        name
        for name in dir(cls)
        if not name.startswith("_") and getattr(getattr(cls, name, None), ACTION_ATTR, False)
    )


def check_method(
    batch_class: type[CTBatch] | None, action: Method, *, name_only: bool = False
) -> None:
    """Check that a user action exists on the batch class and takes the given arguments.

    A pipeline not bound to a dataset yet accepts the action when any batch class has it with
    a signature that takes the arguments (two classes may define actions of the same name);
    binding checks it again against the dataset's class.

    Parameters
    ----------
    batch_class : type or None
        The batch class to check against; None: every ``CTBatch`` class.
    action : Method
        The user action: the method's name and its arguments.
    name_only : bool
        Check only that the action exists, not its arguments.

    Raises
    ------
    InvalidParameterError
        No such ``@cf.action`` method, or it does not take the arguments.

    Examples
    --------
    >>> import ctflow as cf
    >>> check_method(cf.CTBatch, Method("lodd"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: pipeline: unknown action 'lodd' for CTBatch; actions: ...
    """
    if batch_class is not None:
        classes = [batch_class]
    else:
        from ctflow.batch import CTBatch

        classes = _all_batch_classes(CTBatch)
    mismatch: str | None = None
    for cls in classes:
        method = getattr(cls, action.method, None)
        if method is not None and getattr(method, ACTION_ATTR, False):
            if name_only:
                return
            try:
                inspect.signature(method).bind(None, *action.args, **dict(action.kwargs))
            except TypeError as exc:
                sig = str(inspect.signature(method)).replace("(self, ", "(", 1)
                mismatch = mismatch or f"pipeline: bad arguments for {action.method}{sig}: {exc}"
                continue
            return
    if mismatch is not None:
        raise InvalidParameterError(mismatch)
    names = sorted({*ACTIONS, *(n for c in classes for n in user_actions(c))})
    where = batch_class.__name__ if batch_class is not None else "any CTBatch class"
    raise InvalidParameterError(
        f"pipeline: unknown action {action.method!r} for {where}; actions: {', '.join(names)}"
    )


def absolute_arg(value: Any) -> Any:
    """Make a path object among a user action's arguments absolute.

    It then means the same on every Dask worker.

    Parameters
    ----------
    value : object
        One argument of a user action.

    Returns
    -------
    object
        A path object as an absolute path (str); any other value as given.

    Examples
    --------
    >>> from pathlib import PurePath
    >>> import os
    >>> absolute_arg(PurePath("scan.mhd")) == os.path.abspath("scan.mhd"), absolute_arg(3)
    (True, 3)
    """
    return as_path(value) if isinstance(value, PurePath) else value
