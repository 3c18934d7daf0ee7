"""Tutorial 2 — your own parallel action: an in-plane rotation written with numba.

Run it:  python docs/tutorials/custom_parallel_action.py [--quick]

RadIO's story: the augmentation you need is not in the library, and a Python loop over the
scans of a batch uses one core. In ctflow you write the action for ONE item, mark it with
``@cf.action`` + ``@cf.inbatch_parallel``, and it runs on every item of the batch at once, on
threads. Threads only help when the work releases the GIL, so the heavy loop is a numba kernel
compiled with ``nogil=True``.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

import numba
import numpy as np
from scipy import ndimage

import ctflow as cf


@numba.njit(nogil=True, cache=True)
def rotate_slices(src, angle_deg, cval, out):
    """Rotate every (y, x) slice of ``src`` by ``angle_deg`` about the slice centre, bilinear.

    Output voxel ``o`` takes input ``c + R (o - c)``, ``R = [[cos, sin], [-sin, cos]]`` — the
    convention of ``scipy.ndimage.rotate(axes=(1, 2), reshape=False)``. Outside: ``cval``.
    """
    nz, ny, nx = src.shape
    t = math.radians(angle_deg)
    cos, sin = math.cos(t), math.sin(t)
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    for j in range(ny):
        for i in range(nx):
            yy = cy + cos * (j - cy) + sin * (i - cx)
            xx = cx - sin * (j - cy) + cos * (i - cx)
            y0, x0 = math.floor(yy), math.floor(xx)
            fy, fx = yy - y0, xx - x0
            for k in range(nz):
                acc = 0.0
                for dy in range(2):
                    for dx in range(2):
                        w = (fy if dy else 1.0 - fy) * (fx if dx else 1.0 - fx)
                        py, px = y0 + dy, x0 + dx
                        if 0 <= py < ny and 0 <= px < nx:
                            acc += w * src[k, py, px]
                        else:
                            acc += w * cval
                out[k, j, i] = acc
    return out


class AugmentedBatch(cf.CTBatch):
    """CTBatch plus one user action."""

    @cf.action
    @cf.inbatch_parallel(target="threads")  # written for one item, run on all of them
    def rotate_xy(self, item, max_angle=15.0):
        """Rotate each item in the axial plane by a random angle in [-max_angle, max_angle]."""
        angle = float(item.rng.uniform(-max_angle, max_angle))  # seeded per run/batch/item
        images = item.images.astype(np.float32, copy=False)
        out = np.empty_like(images)
        rotate_slices(images, angle, np.float32(-1000.0), out)
        # the geometry turns with the content, so nodule tables (world mm) stay valid
        return {
            "images": out,
            "geometry": item.geometry.rotated(images.shape, angle, (1, 2)),
            "info": {"angle": angle},
        }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volumes (what CI runs)")
    args = parser.parse_args(argv)
    n, shape = (4, (16, 96, 96)) if args.quick else (8, (64, 384, 384))
    rng = np.random.default_rng(0)
    scans = [rng.integers(-1000, 400, size=shape).astype(np.int16) for _ in range(n)]

    # 1. it is a pipeline action like the built-in ones
    batch = AugmentedBatch.from_arrays(scans, spacing=(1.0, 0.7, 0.7))
    batch.set_random_state(seed=0, position=0)
    rotated = batch.rotate_xy(max_angle=15.0)
    angles = [info["angle"] for info in rotated.info]
    print("angles:", np.round(angles, 2).tolist())

    # 2. it computes what scipy computes (away from the border, where padding rules differ)
    ref = ndimage.rotate(
        scans[0].astype(np.float32), angles[0], axes=(1, 2), reshape=False, order=1, cval=-1000.0
    )
    m = 8
    err = np.abs(rotated[0].images - ref)[:, m:-m, m:-m].max()
    print(f"max |ctflow kernel - scipy.ndimage.rotate| inside the border: {err:.4f} HU")
    assert err < 0.05

    # 3. and the threads really run in parallel: time 1 vs 2 worker threads
    for workers in (1, 2):
        b = AugmentedBatch.from_arrays(scans, spacing=(1.0, 0.7, 0.7), n_workers=workers)
        b.rotate_xy()  # first call compiles (cached on disk afterwards)
        t0 = time.perf_counter()
        for _ in range(3):
            b = AugmentedBatch.from_arrays(scans, spacing=(1.0, 0.7, 0.7), n_workers=workers)
            b.rotate_xy()
        print(f"{workers} thread(s): {(time.perf_counter() - t0) / 3 * 1000:.0f} ms per batch")

    # 4. in a pipeline: the dataset makes AugmentedBatch batches
    from ctflow.io.metaimage import write_metaimage

    with tempfile.TemporaryDirectory() as folder:
        for k, scan in enumerate(scans):
            write_metaimage(f"{folder}/scan{k}.mhd", scan, cf.Geometry((1.0, 0.7, 0.7)))
        dataset = cf.Dataset.from_glob(f"{folder}/*.mhd", batch_class=AugmentedBatch)
        augment = cf.Pipeline().load().rotate_xy(max_angle=10).normalize_hu()
        print(augment)
        for batch in (dataset >> augment).gen_batch(batch_size=2, shuffle=True, seed=1):
            print(batch.ids, [round(i["angle"], 2) for i in batch.info], batch.images.dtype)


if __name__ == "__main__":
    main()
