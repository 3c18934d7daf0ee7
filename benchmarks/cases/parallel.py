"""A user's own numba ``nogil`` per-item action on 1 vs 2 item threads.

The action is what a user writes (``@cf.action @cf.inbatch_parallel`` over one item) around a
numba ``njit(nogil=True)`` kernel: a 3x3x3 mean filter on float32. One timed call builds a batch
of four random float32 volumes (100 x 256 x 256 on the full profile) with ``n_workers`` 1 or 2
and runs the action on it; the outputs of both thread counts must be identical.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, exact

N_ITEMS = 4


@cache
def _kernel() -> Any:
    import numba

    @numba.njit(nogil=True, cache=False)
    def mean3(src: np.ndarray, out: np.ndarray) -> np.ndarray:
        z, y, x = src.shape
        for k in range(z):
            k0, k1 = max(k - 1, 0), min(k + 2, z)
            for j in range(y):
                j0, j1 = max(j - 1, 0), min(j + 2, y)
                for i in range(x):
                    i0, i1 = max(i - 1, 0), min(i + 2, x)
                    acc = np.float32(0.0)
                    for kk in range(k0, k1):
                        for jj in range(j0, j1):
                            for ii in range(i0, i1):
                                acc += src[kk, jj, ii]
                    out[k, j, i] = acc / ((k1 - k0) * (j1 - j0) * (i1 - i0))
        return out

    return mean3


@cache
def smooth_batch_class() -> Any:
    """A ``CTBatch`` subclass with the user's ``smooth`` action (built once per process)."""
    import ctflow as cf

    mean3 = _kernel()

    class SmoothBatch(cf.CTBatch):
        @cf.action
        @cf.inbatch_parallel
        def smooth(self, item: Any) -> np.ndarray:
            return mean3(item.images, np.empty(item.images.shape, np.float32))

    return SmoothBatch


def _inputs(data: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    shape = data.profile.parallel_shape
    return {"vols": [rng.normal(0, 100, shape).astype(np.float32) for _ in range(N_ITEMS)]}


def _build(inp: dict[str, Any], threads: int) -> Runner:
    batch_class = smooth_batch_class()
    vols = inp["vols"]

    def run() -> np.ndarray:
        b = batch_class.from_arrays(vols, n_workers=threads)
        return np.asarray(b.smooth().images)

    return Runner(run)


PARALLEL = Case(
    name="parallel",
    title="A user's numba nogil item action (3x3x3 mean filter), batch of 4 float32 volumes",
    inputs=_inputs,
    contenders=[
        Contender("ctflow", "@cf.action @cf.inbatch_parallel + njit(nogil)", 1, _build),
        Contender("ctflow", "@cf.action @cf.inbatch_parallel + njit(nogil)", 2, _build),
    ],
    check=exact(),
    parts=(),
    items=N_ITEMS,
    note=(
        "One timed call: CTBatch.from_arrays(4 volumes, n_workers) + the action; items run on "
        "the batch's threads, one each. Outputs on 1 and 2 threads must be identical."
    ),
)

CASES = [PARALLEL]
