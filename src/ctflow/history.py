"""An item's record of the actions applied to it, and replaying it.

Every item carries ``history``: one JSON entry per action applied to it, in order::

    {"action": "rotate", "args": {"angle": 15.0, "random": true, ...}, "params": {"angle": -7.3}}

``args`` are the action's arguments as written; ``params`` what was drawn or decided for this
item (a random angle, a noise seed, a crop's start, the source read, the item's nodule rows).
``dump`` writes it to ``meta.json["history"]`` and ``load`` of a dump reads it back, so a
dumped item says how it was made. :func:`replay` applies the record again — the actions with
the recorded parameters, no new draws — and gets the same arrays.

Examples
--------
>>> import numpy as np, ctflow as cf
>>> b = cf.CTBatch.from_arrays([np.arange(64, dtype=np.int16).reshape(4, 4, 4)], ids=["a"])
>>> b.set_random_state(0, 0)
>>> out = b.rotate(30.0, random=True, order=0).flip(2)
>>> again = replay(out.history[0], cf.CTBatch.from_arrays([np.arange(64, dtype=np.int16)
...                                                         .reshape(4, 4, 4)], ids=["a"]))
>>> bool(np.array_equal(again.images, out.images))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctflow.actions.base import action_from_record
from ctflow.actions.custom import Method
from ctflow.batch import CTBatch
from ctflow.errors import InvalidParameterError

__all__ = ["replay"]

#: Actions a replay leaves out: they write files, they do not change the item.
_SIDE_EFFECTS = frozenset({"dump"})


def replay(
    history: Sequence[Mapping[str, Any]],
    batch: CTBatch | None = None,
    *,
    batch_class: type[CTBatch] = CTBatch,
) -> CTBatch:
    """Apply an item's recorded actions again, with the recorded parameters.

    Parameters
    ----------
    history : sequence of dict
        ``item.history``, ``batch.history[i]`` or ``meta.json["history"]`` of a dump.
    batch : CTBatch, optional
        A one-item batch to apply the record to (e.g. the scan loaded fresh, when the record
        starts after the load). Default: a new one-item batch of ``batch_class`` whose source
        is the record's first ``load`` (which the replay then reads).
    batch_class : type, default CTBatch
        The class of the new batch (it must have the ``@cf.action`` methods the record names).

    Returns
    -------
    CTBatch
        The batch with every recorded action applied (``dump`` is left out).

    Raises
    ------
    InvalidParameterError
        An entry that cannot be replayed (a plain function, arguments that were not JSON), or
        no batch and no ``load`` to start from.
    """
    entries = [dict(e) for e in history]
    if batch is None:
        first = entries[0] if entries else {}
        source = (first.get("params") or {}).get("source")
        if first.get("action") != "load" or not source:
            raise InvalidParameterError(
                "replay: the record does not start with a load of a source; pass the batch to "
                "replay it on"
            )
        item_id = Path(str(source)).name.split(".")[0] or "item"
        labels = (first.get("params") or {}).get("labels")
        batch = batch_class([item_id], [str(source)], labels=[labels])
    if len(batch) != 1:
        raise InvalidParameterError(
            f"replay: a record is one item's; give a one-item batch (got {len(batch)} items)"
        )
    k = 0
    while k < len(entries):
        entry = entries[k]
        name = entry.get("action")
        fused = entry.get("fused")
        if fused and int(fused[0]) == 0 and int(fused[1]) > 1:
            # the actions ran as one resampling pass: replay them as one (same interpolation)
            from ctflow.actions.fusion import Fused

            group = entries[k : k + int(fused[1])]
            actions = tuple(action_from_record(e) for e in group)
            drawn = [{"steps": [e.get("params") or {} for e in group]}]
            batch = Fused(actions).replay(batch, drawn)
            k += len(group)
            continue
        k += 1
        if name in _SIDE_EFFECTS:
            continue
        if entry.get("replayable") is False:
            raise InvalidParameterError(
                f"replay: entry {k - 1} ({name!r}) cannot be replayed: it was recorded from a "
                f"plain function or with arguments that are not JSON"
            )
        params = [entry.get("params") or {}]
        if entry.get("method"):
            action: Any = Method(
                str(name), tuple(entry.get("args") or ()), entry.get("kwargs") or {}
            )
        else:
            action = action_from_record(entry)
        batch = action.replay(batch, params)
    return batch
