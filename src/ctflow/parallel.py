"""Your own actions, the RadIO way: ``@cf.action`` and ``@cf.inbatch_parallel``.

* :func:`action` marks a :class:`~ctflow.CTBatch` method as usable in a
  :class:`~ctflow.Pipeline` (``Pipeline().my_action(...)``). The method works on the whole
  batch and returns a batch.
* :func:`inbatch_parallel` turns a method written for ONE item into a batch method that runs
  every item on the batch's threads: the method becomes an item action
  (:class:`~ctflow.actions.ItemFunction`) and runs exactly like the built-in ones
  (:mod:`ctflow.assembly`: per-item generators, original exceptions with notes naming the item,
  ``on_error="skip"`` dropping only the failing items, results assembled into new buffers).

The item method gets an item view (``item.images``, ``item.masks``, ``item.spacing``, ...,
``item.rng``) and the action's arguments, and returns a new images array, a dict of components
or None. A new action can also be a small class (:mod:`ctflow.actions.base`); the thread
machinery is :mod:`ctflow.threads`.

Examples
--------
>>> import numpy as np
>>> import ctflow as cf
>>> class MyBatch(cf.CTBatch):
...     @cf.action
...     @cf.inbatch_parallel(target="threads")
...     def negate(self, item):
...         return -item.images
>>> b = MyBatch.from_arrays([np.ones((2, 4, 4), np.int16), np.ones((3, 4, 4), np.int16)])
>>> int(b.negate().images.sum())
-80
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Literal, ParamSpec, TypeVar

from ctflow.errors import InvalidParameterError
from ctflow.threads import (
    ThreadShare,
    current_share,
    default_n_workers,
    map_items,
    run_ranges,
    split_ranges,
)

__all__ = [
    "ACTION_ATTR",
    "ThreadShare",
    "action",
    "current_share",
    "default_n_workers",
    "inbatch_parallel",
    "map_items",
    "run_ranges",
    "split_ranges",
]

P = ParamSpec("P")
R = TypeVar("R")

ACTION_ATTR = "__ctflow_action__"
PARALLEL_ATTR = "__ctflow_parallel__"
Target = Literal["threads", "for"]


def action(method: Callable[P, R]) -> Callable[P, R]:
    """Mark a batch method as an action usable in pipelines.

    The method must return a batch (usually ``self``). Pipelines accept only methods marked
    this way, and unknown names fail when the pipeline is defined.

    Examples
    --------
    >>> import ctflow as cf
    >>> class MyBatch(cf.CTBatch):
    ...     @cf.action
    ...     def add_one(self):
    ...         self.images += 1
    ...         return self
    >>> "add_one" in MyBatch.action_names()
    True
    """
    setattr(method, ACTION_ATTR, True)
    return method


def _item_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """Signature of the batch-level method: drop the ``item`` parameter."""
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if len(params) < 2:
        raise InvalidParameterError(
            f"@inbatch_parallel: {fn.__qualname__} must take (self, item, ...); "
            f"got ({', '.join(p.name for p in params)})"
        )
    extra = inspect.Parameter("n_workers", inspect.Parameter.KEYWORD_ONLY, default=None)
    kept = [params[0], *params[2:]]
    if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in kept) and not any(
        p.name == "n_workers" for p in kept
    ):
        kept.append(extra)
    return sig.replace(parameters=kept)


def inbatch_parallel(
    fn: Callable[..., Any] | None = None,
    *,
    target: Target = "threads",
    n_workers: int | None = None,
) -> Any:
    """Turn a method written for ONE item into a batch method run item-parallel.

    Parameters
    ----------
    fn : callable, optional
        ``fn(self, item, *args, **kwargs)`` returning a new images array, a dict of components,
        or ``None`` (changed in place). Used bare (``@inbatch_parallel``) or with arguments.
    target : {"threads", "for"}, default "threads"
        ``"threads"``: items run on a shared thread pool; ``"for"``: sequentially (debugging).
    n_workers : int, optional
        Threads to use; default: the batch's ``n_workers`` or the number of usable cores. Can also
        be given per call as the keyword ``n_workers=``.

    Returns
    -------
    callable
        The batch-level method; it returns the batch with its components re-assembled.

    Examples
    --------
    >>> import numpy as np
    >>> import ctflow as cf
    >>> class MyBatch(cf.CTBatch):
    ...     @cf.action
    ...     @cf.inbatch_parallel
    ...     def crop_top(self, item, n):
    ...         return item.images[n:]
    >>> b = MyBatch.from_arrays([np.zeros((5, 4, 4), np.int16), np.zeros((6, 4, 4), np.int16)])
    >>> b.crop_top(2).bounds.tolist()
    [0, 3, 7]
    """
    if target not in ("threads", "for"):
        raise InvalidParameterError(
            f"inbatch_parallel: target must be 'threads' or 'for'; got {target!r}"
        )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        signature = _item_signature(func)
        accepts_n_workers = "n_workers" in inspect.signature(func).parameters

        @functools.wraps(func)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            workers = (
                kwargs.get("n_workers") if accepts_n_workers else kwargs.pop("n_workers", None)
            )
            workers = workers or n_workers or getattr(self, "n_workers", None)
            from ctflow.actions.custom import ItemFunction

            item_action = ItemFunction(func, self, tuple(args), dict(kwargs))
            return self.run_items(item_action, n_workers=workers, target=target)

        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        setattr(wrapper, PARALLEL_ATTR, True)
        return wrapper

    if fn is not None:
        return decorate(fn)
    return decorate
