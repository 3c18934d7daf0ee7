"""Fused geometry: consecutive geometric actions of a pipeline run as one resampling pass.

Every geometric action maps the voxels of its output grid to positions in its input grid. A
chain of them — ``unify_spacing``, ``resize``, ``reorient``, ``flip``, ``rotate``, crops, a
constant ``pad``, ``random_flip``, ``random_affine``, ``random_elastic`` — is one map from the
last grid back to the first, so the chain needs one interpolation, not one per action: less
blur, and only the voxels that are kept are computed (a 256³ crop of a resampled scan costs
256³ samples, not the whole resampled volume).

How a chain is planned (:func:`fuse`, called by :class:`~ctflow.Pipeline` unless built with
``fuse=False``):

* Each geometric action says whether it can be fused with its settings (``fusable()``: e.g.
  ``unify_spacing`` with ``order`` 0 or 1, no anti-aliasing, no reflect/edge padding of a fixed
  shape) and, for one item, what it does to the grid (``grid_step(state, params)``: the output
  shape and geometry, the 4x4 map from output to input voxel indices, or an elastic
  displacement, and the world map of an augmentation that moves the anatomy).
* Runs of consecutive fusable actions that interpolate at least once become one
  :class:`Fused` action; a run is split where two steps ask for different interpolation
  (``order``, ``cval``, output ``dtype``, ``labels_interpolation``) or a second elastic step
  comes.
* ``normalize_hu`` (a voxel-wise map) commutes with crops, flips and reorientation exactly, so
  ``unify_spacing → normalize_hu → central_crop`` runs as ``[unify_spacing + central_crop] →
  normalize_hu``: identical output, the crop joins the resampling pass.
* For the same reason ``normalize_hu → sample_nodules`` (or ``sample_crops``) runs on the crops
  only (:mod:`ctflow.actions.fusion_crops`).

A fused run draws each action's random parameters from the same generator the action would
have used alone (one per action, as the unfused run), records each action in the item's
history with its own parameters (so ``invert`` and ``replay`` see the actions, not the
fusion), and gives what the unfused run gives within interpolation tolerance: identical where
the unfused chain interpolates once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ctflow.actions.base import Action, ItemAction
from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.labels import resample_mask

if TYPE_CHECKING:
    from ctflow.item import CTItem

__all__ = [
    "Fused",
    "GridState",
    "GridStep",
    "fuse",
    "index_map",
    "move_nodules",
    "resample_item",
]


def index_map(source: Geometry, target: Geometry) -> NDArray[np.float64]:
    """Return the 4x4 map from ``target`` voxel indices to ``source`` voxel indices."""
    return np.asarray(np.linalg.solve(source.affine, target.affine), dtype=np.float64)


@dataclass
class GridStep:
    """What one geometric action does to one item's grid (no voxel is touched).

    Attributes
    ----------
    shape : 3 ints
        Output grid shape.
    geometry : Geometry
        Output grid geometry.
    matrix : (4, 4) array
        Output voxel index -> input voxel index (identity for an elastic step).
    interpolates : bool
        False for maps that only move whole voxels (crops, flips, reorientation, pads).
    elastic : tuple or None
        ``(coef, grid_origin, grid_step)`` of a B-spline displacement (mm) in the frame
        ``index * spacing`` of this grid (:mod:`ctflow.ops.warp`).
    world : (4, 4) array or None
        For augmentations that move the anatomy: output world mm -> input world mm (the
        anatomy at input world ``T(p)`` shows at output world ``p``). None: world positions
        are kept (the step only changes the grid).
    """

    shape: tuple[int, ...]
    geometry: Geometry
    matrix: NDArray[np.float64]
    interpolates: bool = True
    elastic: tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]] | None = None
    world: NDArray[np.float64] | None = None


@dataclass
class GridState:
    """An item's grid as a chain of geometric actions sees it, without its voxels.

    It stands in for a :class:`~ctflow.item.CTItem` in ``make_params`` and ``grid_step``:
    ``images`` is a zero-cost read-only array of the right shape (never read).
    """

    id: str
    shape: tuple[int, ...]
    geometry: Geometry
    rng: np.random.Generator
    n_threads: int = 1
    nodules: pd.DataFrame | None = None
    new_warnings: list[str] = field(default_factory=list)
    masks: Any = None
    lungs: Any = None

    @classmethod
    def of(cls, item: CTItem) -> GridState:
        """Return the grid of ``item``."""
        return cls(
            item.id,
            item.shape,
            item.geometry,
            item.rng,
            item.n_threads,
            item.nodules,
            item.new_warnings,
        )

    @property
    def images(self) -> NDArray[Any]:
        """A read-only stand-in of the item's shape (no memory)."""
        return np.broadcast_to(np.zeros((), np.int16), self.shape)

    @property
    def spacing(self) -> NDArray[np.float64]:
        """(z, y, x) voxel size in mm."""
        return self.geometry.spacing

    def require_images(self, what: str) -> NDArray[Any]:
        """Return the stand-in images."""
        del what
        return self.images

    def warn(self, message: str) -> None:
        """Record a warning about the item."""
        self.new_warnings.append(str(message))

    def after(self, step: GridStep) -> GridState:
        """Return the state on ``step``'s output grid."""
        return GridState(
            self.id,
            tuple(int(v) for v in step.shape),
            step.geometry,
            self.rng,
            self.n_threads,
            self.nodules,
            self.new_warnings,
        )


def _interpolation(action: Any) -> tuple[Any, ...]:
    """Return the interpolation settings a step asks for (None: any); a pass must agree."""
    dtype = getattr(action, "dtype", None)
    return (
        getattr(action, "order", None),
        getattr(action, "step_cval", None),
        None if dtype is None else np.dtype(dtype).str,
        getattr(action, "labels_interpolation", None),
    )


def _compatible(group: Sequence[Any], action: Any) -> bool:
    """Whether ``action`` can join the pass of ``group``."""
    if getattr(action, "elastic_step", False) and any(
        getattr(a, "elastic_step", False) for a in group
    ):
        return False
    mine = _interpolation(action)
    for other in group:
        for a, b in zip(mine, _interpolation(other), strict=True):
            if a is not None and b is not None and a != b:
                return False
    return True


def _fusable(action: Action) -> bool:
    check = getattr(action, "fusable", None)
    return isinstance(action, ItemAction) and callable(check) and bool(check())


def _exact(action: Action) -> bool:
    return _fusable(action) and bool(getattr(action, "exact_step", False))


def fuse(actions: Sequence[Action]) -> tuple[Action, ...]:
    """Return ``actions`` with runs of fusable geometric actions as :class:`Fused` actions.

    Examples
    --------
    >>> import ctflow as cf
    >>> p = cf.Pipeline().load().unify_spacing(1.0).normalize_hu().central_crop((8, 8, 8))
    >>> [a.label for a in fuse(p.actions)]
    ['load', 'unify_spacing + central_crop', 'normalize_hu']
    """
    out: list[Action] = []
    group: list[Any] = []

    def close() -> None:
        if len(group) > 1 and any(not getattr(a, "exact_step", False) for a in group):
            out.append(Fused(tuple(group)))
        else:
            out.extend(group)
        group.clear()

    i = 0
    todo = list(actions)
    while i < len(todo):
        action = todo[i]
        if _fusable(action):
            if group and not _compatible(group, action):
                close()
            group.append(action)
            i += 1
            continue
        if group and getattr(action, "pointwise", False):
            # voxel-wise actions commute with moves of whole voxels: pull those into the pass
            j = i + 1
            while j < len(todo) and _exact(todo[j]) and _compatible(group, todo[j]):
                group.append(todo[j])
                j += 1
            if j > i + 1:
                todo = [*todo[: i + 1], *todo[j:]]
        close()
        out.append(action)
        i += 1
    close()
    from ctflow.actions.fusion_crops import crops_first

    return crops_first(out)


def _compose(steps: Sequence[GridStep]) -> dict[str, Any]:
    """Compose the steps' maps: final output index -> first input index (see the module)."""
    e = next((k for k, s in enumerate(steps) if s.elastic is not None), None)
    if e is None:
        m = np.eye(4)
        for s in steps:
            m = m @ s.matrix
        return {"matrix": m}
    before = np.eye(4)
    for s in steps[:e]:
        before = before @ s.matrix
    after = np.eye(4)
    for s in steps[e + 1 :]:
        after = after @ s.matrix
    sp = np.diag([*steps[e].geometry.spacing, 1.0])
    return {
        "P": (sp @ after)[:3],
        "Q": (before @ np.linalg.inv(sp))[:3],
        "elastic": steps[e].elastic,
    }


def _sampler(plan: Mapping[str, Any], shape: tuple[int, ...], n_threads: int) -> Any:
    """Return ``sample(array, order, cval, dtype)`` through the composed map."""
    from ctflow.ops.affine import resample_matrix

    def sample(arr: NDArray[Any], order: int, cval: float, dtype: Any = None) -> NDArray[Any]:
        if "matrix" in plan:
            return resample_matrix(
                arr,
                plan["matrix"],
                shape,
                order=order,
                cval=cval,
                dtype=dtype,
                n_threads=n_threads,
                where="fused geometry",
            )
        from ctflow.ops.warp import warp

        coef, origin, step = plan["elastic"]
        return warp(
            arr,
            plan["P"],
            plan["Q"],
            shape,
            coef=coef,
            grid_origin=origin,
            grid_step=step,
            order=order,
            cval=cval,
            dtype=dtype,
            n_threads=n_threads,
        )

    return sample


def move_nodules(nodules: pd.DataFrame, step: GridStep) -> pd.DataFrame:
    """Return a nodule table (world mm) after a step that moves the anatomy.

    A nodule at input world ``c`` shows at output world ``p`` with ``T(p) = c``; its diameter
    scales with the cube root of the step's volume change. Elastic steps invert the
    displacement at each centre by fixed-point iteration.
    """
    if len(nodules) == 0 or (step.world is None and step.elastic is None):
        return nodules
    out = nodules.copy()
    centres = out[["z", "y", "x"]].to_numpy(np.float64)
    if step.world is not None:
        inv = np.linalg.inv(step.world)
        out[["z", "y", "x"]] = centres @ inv[:3, :3].T + inv[:3, 3]
        scale = abs(np.linalg.det(inv[:3, :3])) ** (1.0 / 3.0)
        out["diameter"] = out["diameter"].to_numpy(np.float64) * scale
        return out
    from ctflow.ops.warp import elastic_displacement

    assert step.elastic is not None
    coef, origin, grid_step = step.elastic
    g = step.geometry
    # frame f = index * spacing; the output point f shows the input at f + D(f)
    target = g.world_to_voxel(centres) * g.spacing
    f = target.copy()
    for _ in range(20):
        f = target - elastic_displacement(f, coef, origin, grid_step)
    out[["z", "y", "x"]] = g.voxel_to_world(f / g.spacing)
    return out


class Fused(ItemAction):
    """Consecutive geometric actions applied to every item in one resampling pass.

    Built by :func:`fuse` (pipelines do it unless ``Pipeline(fuse=False)``); each action is
    recorded in the item's history with its own parameters. Images are sampled with the
    steps' ``order`` and ``cval`` (air where the final grid leaves the scan), label masks
    nearest (or ``labels_interpolation="onehot"``), probability masks linearly, lungs nearest.

    Examples
    --------
    >>> import numpy as np, ctflow as cf
    >>> from ctflow.actions import CentralCrop, UnifySpacing
    >>> b = cf.CTBatch.from_arrays([np.zeros((10, 8, 8), np.int16)], spacing=(2.0, 1.0, 1.0))
    >>> b = Fused((UnifySpacing(1.0), CentralCrop((4, 4, 4))))(b)
    >>> b.images.shape, [h["action"] for h in b.history[0]]
    ((4, 4, 4), ['unify_spacing', 'central_crop'])
    """

    # no ``name``: not registered, so pipeline files cannot name it; the planner builds it
    family = "geometry"
    actions: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        """Check the parameters and normalise them."""
        acts = tuple(self.actions)
        if not acts or not all(_fusable(a) for a in acts):
            raise InvalidParameterError(
                f"fused geometry: actions must be geometric actions that can be fused; got "
                f"{self.actions!r}"
            )
        self._set("actions", acts)

    @property
    def label(self) -> str:
        """The actions' names joined by ``+``."""
        return " + ".join(a.label for a in self.actions)

    @property
    def n_seeds(self) -> int:
        """One generator per action, as when they run one by one."""
        return len(self.actions)

    def record(self) -> dict[str, Any]:
        """Return the record of the group (items record each action instead)."""
        return {"action": self.label, "args": {"actions": [a.record() for a in self.actions]}}

    def history_entries(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Return one history entry per action, with its own parameters.

        Each entry says it ran as step ``k`` of a fused pass of ``n`` (``"fused": [k, n]``),
        so :func:`ctflow.replay` runs the same pass again.
        """
        steps = params.get("steps") or [{} for _ in self.actions]
        n = len(self.actions)
        return [
            {**a.record(), "params": p, "fused": [k, n]}  # replay fuses them again
            for k, (a, p) in enumerate(zip(self.actions, steps, strict=True))
        ]

    def _steps(self, item: Any, drawn: Sequence[Mapping[str, Any]] | None) -> tuple[Any, ...]:
        state = GridState.of(item)
        rngs = getattr(item, "rngs", None) or [item.rng] * len(self.actions)
        params: list[dict[str, Any]] = []
        steps: list[GridStep] = []
        for k, action in enumerate(self.actions):
            state.rng = rngs[k]
            p = dict(action.make_params(state)) if drawn is None else dict(drawn[k])
            step = action.grid_step(state, p)
            params.append(p)
            steps.append(step)
            state = state.after(step)
        return params, steps

    def make_params(self, item: CTItem) -> dict[str, Any]:
        """Draw every action's parameters, each from its own generator."""
        params, _ = self._steps(item, None)
        return {"steps": params}

    def apply(self, item: CTItem, params: Mapping[str, Any]) -> dict[str, Any]:
        """Compose the actions' maps and sample every component once."""
        item.require_images(self.label)
        _, steps = self._steps(item, params["steps"])
        return resample_item(item, self.actions, steps)


def resample_item(item: Any, actions: Sequence[Any], steps: Sequence[GridStep]) -> dict[str, Any]:
    """Sample every component of ``item`` once through the composed ``steps`` of ``actions``.

    Returns the item's new components, geometry and (when a step moves the anatomy) nodules.
    """
    images = item.images
    last = steps[-1]
    plan = _compose(steps)
    sample = _sampler(plan, last.shape, item.n_threads)
    moving = [a for a in actions if not getattr(a, "exact_step", False)]
    order = next((a.order for a in moving if getattr(a, "order", None) is not None), 1)
    cval = next(
        (a.step_cval for a in actions if getattr(a, "step_cval", None) is not None),
        -1000.0,
    )
    dtype = getattr(moving[-1], "dtype", None) if moving else None
    if dtype is None:
        dtype = images.dtype if order == 0 else np.float32
    if not any(getattr(a, "step_cval", None) is not None for a in actions):
        # no step asked for a fill (resize and unify_spacing pad by their edges): air, as
        # close as the output dtype holds it
        kind = np.dtype(dtype)
        if kind.kind in "ui":
            info = np.iinfo(kind)
            cval = float(min(max(cval, info.min), info.max))
    out: dict[str, Any] = {
        "images": sample(images, order, cval, dtype),
        "geometry": last.geometry,
    }
    mode = next(
        (
            a.labels_interpolation
            for a in actions
            if getattr(a, "labels_interpolation", "nearest") != "nearest"
        ),
        "nearest",
    )

    def linear(v: NDArray[Any], outside: float) -> NDArray[Any]:
        return np.asarray(sample(v, 1, outside, np.float32))

    def nearest(v: NDArray[Any]) -> NDArray[Any]:
        return np.asarray(sample(v, 0, 0.0))

    for comp in ("masks", "lungs"):
        arr = getattr(item, comp)
        if arr is not None:
            how = mode if comp == "masks" else "nearest"
            out[comp] = resample_mask(arr, linear, nearest, how)
    if len(item.nodules) and any(s.world is not None or s.elastic is not None for s in steps):
        table = item.nodules
        for s in steps:
            table = move_nodules(table, s)
        out["nodules"] = table.drop(columns=["id"], errors="ignore")
    return out
