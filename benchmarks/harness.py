"""What a benchmark case is: inputs, contenders (ctflow and its peers), agreement checks.

A :class:`Case` loads its inputs from the cached :class:`~benchmarks.data.BenchData` and lists
:class:`Contender` s. Each contender's ``build(inputs, threads)`` returns a :class:`Runner`:
``run()`` is the timed call; ``before()`` (untimed) runs before each timed call, e.g. to evict
the page cache or delete a previous dump; ``finish(output)`` (untimed) turns the output into
plain numpy arrays in ctflow's (z, y, x) order so it can be compared with the reference.

``check(ref, out)`` compares a contender's finished output with the reference contender's
(ctflow on 2 threads unless the case says otherwise) and returns ``(ok, metrics)``; a run whose
outputs disagree is reported as failing, so no contender wins by computing something else.

Every contender runs in its own worker process by default. Two small extensions cover the
cases that need more than that:

* :attr:`Contender.env`: environment variables of the contender's worker process (e.g. the
  switches of :mod:`ctflow.tuning`, or unsetting ``CTFLOW_NUM_THREADS`` for Dask workers);
* :class:`Interleave` (``Case.interleave``): all contenders of the case in ONE worker process,
  their timed calls in rounds that rotate the order (1-thread / 2-thread pairs, engines), so a
  drifting host speed hits every contender alike; per-round ratios become meaningful.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
#: environment variables the runner sets to the contender's thread count in its worker process
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    "CTFLOW_NUM_THREADS",
    "BLOSC_NTHREADS",
)

Check = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], tuple[bool, dict[str, Any]]]


@dataclass
class Runner:
    """The callables of one contender, built in the worker process."""

    run: Callable[[], Any]
    finish: Callable[[Any], Arrays] | None = None
    before: Callable[[], None] | None = None
    #: a cheaper untimed warm-up than ``run`` (e.g. one scan of a pipeline); default ``run``
    warmup: Callable[[], Any] | None = None
    #: facts to report (file size on disk, output dtype ...), filled by the contender
    info: dict[str, Any] = field(default_factory=dict)
    #: untimed, after each timed call: a side measurement the runner keeps in ``info``
    after: Callable[[], None] | None = None
    #: a runner that resets the RSS high-water mark itself (peaks per step) keeps here the
    #: highest ``VmHWM`` it saw, MiB; the worker reports the larger of it and the final mark
    peak_seen_mb: float = 0.0
    #: untimed, once at the end (after ``finish``): release what ``build`` started (a cluster)
    close: Callable[[], None] | None = None


@dataclass
class Contender:
    """One way of doing a case's work."""

    tool: str  # "ctflow", "SimpleITK", "scipy.ndimage", "torch", "MONAI", "TorchIO", "numpy" ...
    how: str  # the call, e.g. "Resample(sitkLinear)"
    threads: int
    build: Callable[[dict[str, Any], int], Runner]
    #: "2 (split)" style labels for hand-threaded compositions; default str(threads)
    threads_label: str | None = None
    #: environment of the worker process on top of the parent's (None unsets a variable);
    #: the thread-count variables are set from ``threads`` first, so this can override them
    env: Mapping[str, str | None] | None = None

    @property
    def key(self) -> str:
        return f"{self.tool}|{self.how}|{self.threads_label or self.threads}"

    @property
    def is_ctflow(self) -> bool:
        return self.tool == "ctflow"


@dataclass(frozen=True)
class Interleave:
    """Run all contenders of a case in one worker process, their timed calls interleaved.

    Round ``k`` times every contender once, the order rotated by ``k`` (two contenders:
    A B, B A, A B ...). Each contender is built and warmed up first; with ``settle`` each timed
    call follows an untimed call of the same contender, so it finds the process (buffer pool,
    caches) as a stream of its own calls leaves it. Peak memory is that of the shared process
    and is not attributed to a contender; ``--budget`` does not apply.
    """

    settle: bool = False


@dataclass
class Case:
    """One benchmark: inputs, contenders and how to compare their outputs."""

    name: str
    title: str
    inputs: Callable[[Any], dict[str, Any]]  # BenchData -> inputs (in the worker)
    contenders: list[Contender]
    check: Check
    #: bytes a perfect implementation must read + write (from the inputs), None if meaningless
    bytes_moved: Callable[[dict[str, Any]], int] | None = None
    #: scans processed per timed call (for scans/s), or a function of the data profile
    items: int | Callable[[Any], int] = 1
    #: key of the reference contender (default: ctflow with the most threads)
    reference: str | None = None
    #: data parts the case needs (generated before it runs)
    parts: tuple[str, ...] = ("scan",)
    note: str = ""
    #: a case whose timed call cannot repeat cheaply may ask for fewer repeats (never below 5)
    max_repeats: int | None = None
    #: whether the case exists for a data profile (default: always)
    when: Callable[[Any], bool] | None = None
    #: checks of one output on its own (e.g. crop counts), run for every contender
    validate: Callable[[Mapping[str, np.ndarray]], tuple[bool, dict[str, Any]]] | None = None
    #: a case that needs more timed calls (e.g. pairs) makes at least this many
    min_repeats: int | None = None
    #: all contenders in one process, timed in rotating rounds (see :class:`Interleave`)
    interleave: Interleave | None = None
    #: part of a run without ``--cases`` (False: only when named, e.g. a Dask cluster)
    in_default: bool = True

    def n_items(self, profile: Any) -> int:
        return int(self.items(profile) if callable(self.items) else self.items)

    def reference_key(self) -> str:
        if self.reference is not None:
            return self.reference
        ours = [c for c in self.contenders if c.is_ctflow]
        return max(ours, key=lambda c: c.threads).key

    def contender(self, key: str) -> Contender:
        for c in self.contenders:
            if c.key == key:
                return c
        raise KeyError(f"case {self.name}: no contender {key!r}")


# -- conversions --------------------------------------------------------------------------------
def as_numpy(x: Any) -> np.ndarray:
    """numpy view/copy of a numpy array, torch tensor, MONAI MetaTensor or SimpleITK image."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("SimpleITK"):
        import SimpleITK as sitk

        return sitk.GetArrayFromImage(x)
    if hasattr(x, "detach"):  # torch.Tensor / MetaTensor
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)


def xyz_to_zyx(x: Any) -> np.ndarray:
    """A channel-first (1, x, y, z) or (x, y, z) array/tensor as a C-contiguous (z, y, x) array."""
    a = as_numpy(x)
    if a.ndim == 4:
        a = a[0]
    return np.ascontiguousarray(a.transpose(2, 1, 0))


# -- checks -----------------------------------------------------------------------------------
def _shape_mismatch(a: np.ndarray, b: np.ndarray) -> tuple[bool, dict[str, Any]] | None:
    if a.shape != b.shape:
        return False, {"shape": list(b.shape), "expected_shape": list(a.shape)}
    return None


def exact(key: str = "out") -> Check:
    """Outputs must be equal voxel for voxel."""

    def check(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]):
        a, b = ref[key], out[key]
        bad = _shape_mismatch(a, b)
        if bad:
            return bad
        n = int(np.count_nonzero(a != b))
        return n == 0, {"differing_voxels": n}

    return check


def close(max_mean: float, max_p999: float, key: str = "out", region: str | None = None) -> Check:
    """Mean and 99.9th percentile of ``|out - ref|`` below limits (optionally on a region key)."""

    def check(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]):
        a, b = ref[key], out[key]
        bad = _shape_mismatch(a, b)
        if bad:
            return bad
        mean, p999, worst = _diff_stats(a, b, None if region is None else ref[region])
        ok = mean <= max_mean and p999 <= max_p999
        return ok, {
            "mean_abs_diff": round(mean, 6),
            "p99.9_abs_diff": round(p999, 6),
            "max_abs_diff": round(worst, 6),
            "limits": [max_mean, max_p999],
        }

    return check


def _diff_stats(a: np.ndarray, b: np.ndarray, region: np.ndarray | None) -> tuple[float, ...]:
    means, p999s, worst = [], [], 0.0
    counts = []
    for z in range(0, a.shape[0], 16):  # slab-wise: no volume-sized float temporaries
        d = np.abs(a[z : z + 16].astype(np.float32) - b[z : z + 16].astype(np.float32))
        if region is not None:
            d = d[region[z : z + 16] != 0]
        if d.size == 0:
            continue
        means.append(float(d.mean(dtype=np.float64)))
        counts.append(d.size)
        p999s.append(float(np.quantile(d, 0.999)))
        worst = max(worst, float(d.max()))
    if not counts:
        return 0.0, 0.0, 0.0
    mean = float(np.average(means, weights=counts))
    return mean, float(max(p999s)), worst


def labels(max_fraction: float, key: str = "out", ties: bool = False) -> Check:
    """At most ``max_fraction`` of the voxels of two label volumes may differ.

    With ``ties``, voxels whose sample position is an exact half-way tie on some axis (the
    reference output holds 1-D ``tie_z``, ``tie_y``, ``tie_x`` flags) are not compared: there
    the nearest voxel is a coin flip decided by each tool's floating-point rounding.
    """

    def check(ref: Mapping[str, np.ndarray], out: Mapping[str, np.ndarray]):
        a, b = ref[key], out[key]
        bad = _shape_mismatch(a, b)
        if bad:
            return bad
        n = 0
        total = 0
        for z in range(0, a.shape[0], 16):
            d = a[z : z + 16].astype(bool) != b[z : z + 16].astype(bool)
            if ties:
                tie = (
                    ref["tie_z"][z : z + 16, None, None].astype(bool)
                    | ref["tie_y"][None, :, None].astype(bool)
                    | ref["tie_x"][None, None, :].astype(bool)
                )
                d &= ~tie
                total += int(np.count_nonzero(~np.broadcast_to(tie, d.shape)))
            else:
                total += d.size
            n += int(np.count_nonzero(d))
        frac = n / max(total, 1)
        return frac <= max_fraction, {
            "differing_fraction": float(f"{frac:.3g}"),
            "limit": max_fraction,
            **({"compared_fraction": round(total / a.size, 3)} if ties else {}),
        }

    return check


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two masks (1.0 when both are empty)."""
    a = a.astype(bool)
    b = b.astype(bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.count_nonzero(a & b)) / s
