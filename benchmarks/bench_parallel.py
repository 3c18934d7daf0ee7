"""Speed-up of a user's numba ``nogil`` per-item action on 1 vs 2 item threads.

The action is what a user writes (``@cf.action @cf.inbatch_parallel`` over one item) around a
numba ``njit(nogil=True)`` kernel: a 3x3x3 mean filter on float32. It runs on a batch of 4
synthetic scans; the same batch is processed with ``n_workers=1`` and ``n_workers=2``, and the
outputs are checked to be identical.

Run: ``python -m benchmarks.bench_parallel``
"""

from __future__ import annotations

import numba
import numpy as np

import ctflow as cf
from benchmarks.common import median_time, write_results


@numba.njit(nogil=True, cache=True)
def mean3(src, out):
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


class BenchBatch(cf.CTBatch):
    @cf.action
    @cf.inbatch_parallel
    def smooth(self, item):
        return mean3(item.images, np.empty(item.images.shape, np.float32))


def main(n_items: int = 4, shape: tuple[int, int, int] = (100, 256, 256)) -> dict[str, float]:
    rng = np.random.default_rng(0)
    vols = [rng.normal(0, 100, shape).astype(np.float32) for _ in range(n_items)]
    batch = BenchBatch.from_arrays(vols)
    mean3(vols[0][:4, :8, :8], np.empty((4, 8, 8), np.float32))  # compile outside timing
    outs = {}
    times = {}
    for workers in (1, 2):

        def run(w=workers):
            b = BenchBatch.from_arrays(vols, n_workers=w)
            outs[w] = b.smooth().images

        times[workers], _ = median_time(run, repeat=5)
    assert np.array_equal(outs[1], outs[2]), "threaded output differs"
    speedup = times[1] / times[2]
    table = (
        "| threads | median s (batch of 4 x 100x256x256 float32) | speed-up |\n|---|---|---|\n"
        f"| 1 | {times[1]:.3f} | 1.00 |\n| 2 | {times[2]:.3f} | {speedup:.2f} |\n"
    )
    write_results("parallel_action", {"seconds": times, "speedup_2_threads": speedup}, table)
    print(table)
    del batch
    return {"t1": times[1], "t2": times[2], "speedup": speedup}


if __name__ == "__main__":
    main()
