"""Crops first: a voxel-wise action followed by crop sampling runs on the crops only.

``normalize_hu`` followed by ``sample_nodules`` (the LUNA16 pipeline's last two steps) windows
every voxel of every scan — a float32 copy twice the size of the int16 batch — and then keeps
a few crops of it. The two commute: the crops are chosen from the nodule table, the masks and
the shapes, never from voxel values, and they are cut as whole voxels; the only value a crop
takes from its scan apart from its voxels is the padding where it leaves the scan, the scan's
minimum, and a monotone window maps the minimum to the minimum. So :func:`crops_first` (called
by :func:`~ctflow.actions.fusion.fuse`) plans the pair as one :class:`CropsFirst` action that
cuts the crops and windows them: identical arrays, histories, nodules and warnings, without
the batch-wide copy (on 4 LUNA16-sized scans, 667 MiB and one pass over them).

It applies only where the result is identical by construction: the voxel-wise action is a
deterministic batch action (``pointwise``; random intensity augmentations draw per item, and
items are scans before and crops after), the sampler declares ``intensity_blind`` with its
default padding (``pad_value=None``), and the pair is not a float scan windowed to integers (a
float scan may hold NaN, which a window to uint8 refuses wherever it lies; windowed to float32
a NaN stays NaN, voxel by voxel and as the padding). Otherwise the two run in their order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np

from ctflow.actions.base import Action, BatchAction
from ctflow.errors import InvalidParameterError

if TYPE_CHECKING:
    from ctflow.batch import CTBatch

__all__ = ["CropsFirst", "crops_first"]


def _pointwise(action: Any) -> TypeGuard[BatchAction]:
    return isinstance(action, BatchAction) and bool(getattr(action, "pointwise", False))


def _blind(action: Any) -> TypeGuard[BatchAction]:
    return (
        isinstance(action, BatchAction)
        and bool(getattr(action, "intensity_blind", False))
        and getattr(action, "pad_value", None) is None
    )


def crops_first(actions: Sequence[Action]) -> tuple[Action, ...]:
    """Return ``actions`` with each voxel-wise action followed by a crop sampler as one action.

    Examples
    --------
    >>> import ctflow as cf
    >>> p = cf.Pipeline().load().normalize_hu().sample_nodules(4, (8, 8, 8))
    >>> [a.label for a in crops_first(p.actions)]
    ['load', 'sample_nodules + normalize_hu']
    """
    out: list[Action] = []
    for action in actions:
        if out and _blind(action) and _pointwise(out[-1]):
            out[-1] = CropsFirst(out[-1], action)
        else:
            out.append(action)
    return tuple(out)


class CropsFirst(BatchAction):
    """A voxel-wise batch action and the crop sampler after it, run on the crops only.

    Built by the planner (:func:`crops_first`); the crops' histories record ``voxelwise`` then
    ``sampler``, as they were written, so :func:`ctflow.replay` runs them in that order.

    Examples
    --------
    >>> import numpy as np, pandas as pd, ctflow as cf
    >>> from ctflow.actions import NormalizeHU, SampleNodules
    >>> ann = pd.DataFrame({"id": ["a"], "z": [8.0], "y": [8.0], "x": [8.0], "diameter": [4.0]})
    >>> scan = np.arange(16**3, dtype=np.int16).reshape(16, 16, 16) - 1000
    >>> b = cf.CTBatch.from_arrays([scan], ids=["a"], nodules=ann)
    >>> pair = (NormalizeHU(), SampleNodules(2, (4, 4, 4), share=1.0))
    >>> a = pair[1](pair[0](b.select([0], copy=True)))
    >>> c = CropsFirst(*pair)(b.select([0], copy=True))
    >>> bool(np.array_equal(a.images, c.images)), [h["action"] for h in c.history[0]]
    (True, ['normalize_hu', 'sample_nodules'])
    """

    # no ``name``: not registered, so pipeline files cannot name it; the planner builds it
    family = "sampling"
    voxelwise: BatchAction
    sampler: BatchAction

    def __post_init__(self) -> None:
        """Check that the pair commutes."""
        if not (_pointwise(self.voxelwise) and _blind(self.sampler)):
            raise InvalidParameterError(
                f"crops first: needs a voxel-wise batch action and a crop sampler with its "
                f"default padding; got {self.voxelwise!r} and {self.sampler!r}"
            )

    @property
    def label(self) -> str:
        """The sampler's name, then the voxel-wise action's (the order they run in)."""
        return f"{self.sampler.label} + {self.voxelwise.label}"

    def record(self) -> dict[str, Any]:
        """Return the record of the pair (items record each action instead)."""
        return {"action": self.label, "args": {"actions": [self.voxelwise.record(),
                                                           self.sampler.record()]}}  # fmt: skip

    def __call__(self, batch: CTBatch) -> CTBatch:
        """Cut the crops, then window them; each crop's history in the written order."""
        from ctflow.lazy import is_lazy

        if not batch.has("images") or is_lazy(batch):
            return _step(self.sampler, _step(self.voxelwise, batch))  # the errors they give
        kind = batch.ragged("images").buffer.dtype.kind
        if kind == "f" and np.dtype(getattr(self.voxelwise, "dtype", "float32")).kind in "iu":
            return _step(self.sampler, _step(self.voxelwise, batch))  # NaN: refused anywhere
        crops = _step(self.voxelwise, _step(self.sampler, batch))
        for history in crops.history:  # [..., sampler, voxelwise] -> [..., voxelwise, sampler]
            history[-2], history[-1] = history[-1], history[-2]
        return crops


def _step(action: BatchAction, batch: CTBatch) -> CTBatch:
    """Run one of the pair as the executor would run it alone (so a failure is the same).

    Under ``on_error="skip"`` an action that fails on the batch runs on each item by itself and
    only the items it fails on are dropped, recorded under the action's own name.
    """
    from ctflow.execution import isolate
    from ctflow.runs import StopRequested

    try:
        return action(batch)
    except StopRequested:
        raise
    except Exception as exc:
        if batch.on_error != "skip":
            raise
        return isolate(batch, action, exc)
