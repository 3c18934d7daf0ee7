"""Tutorial 5 — the same pipeline on a Dask cluster.

Run it:  python docs/tutorials/dask_cluster.py [--out DIR] [--quick] [--scheduler tcp://HOST:8786]

``engine=cf.DaskEngine(...)`` makes every batch a Dask task. Tasks carry file paths and the
pipeline's action list, never arrays: workers read the scans and write the dumps themselves.
Without ``--scheduler`` a local cluster of 2 worker processes is started (and stopped), which is
how to try it on a laptop; on a real cluster start ``dask scheduler`` and one
``dask worker tcp://HOST:8786 --nworkers 1 --nthreads 1`` per machine (ctflow's own threads use
the cores), and pass the address. See the Dask page of the docs for sizing and failure handling.
"""

from __future__ import annotations

import argparse
import filecmp
from pathlib import Path

import ctflow as cf
from ctflow.synthetic import make_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tutorial_output/dask", help="working folder")
    parser.add_argument("--quick", action="store_true", help="tiny data (what CI runs)")
    parser.add_argument("--scheduler", default=None, help="scheduler address (default: local)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # workers may run elsewhere: give them absolute paths

    n_scans, shape = (4, (32, 64, 64)) if args.quick else (16, (160, 320, 320))
    make_dataset(out / "scans", n_scans=n_scans, shape=shape, seed=2)
    dataset = cf.Dataset.from_glob(str(out / "scans" / "*.mhd"))
    annotations = cf.read_annotations(out / "scans" / "annotations.csv")

    def prep(dst: Path) -> cf.Pipeline:
        return (
            cf.Pipeline()
            .load()
            .fetch_nodules(annotations)
            .unify_spacing((1.5, 1.5, 1.5), shape=(None, 48, 48))
            .normalize_hu(-1000, 400)
            .create_mask()
            .sample_nodules(batch_size=4, nodule_size=(16, 24, 24), share=0.5)
            .dump(dst)
        )

    # the same pipeline, the same seed: first in this process...
    local = (dataset >> prep(out / "local")).run(batch_size=2, seed=0)
    print("local:", local.summary().splitlines()[0])

    # ...then on the cluster. The engine connects (or starts a local cluster) on first use.
    with cf.DaskEngine(args.scheduler) as engine:
        report = (dataset >> prep(out / "dask")).run(
            batch_size=2, seed=0, engine=engine, prefetch=1, on_error="skip"
        )
        print(f"dask engine: {engine}")
    print(report.summary())
    assert not report.failed

    # seeded random actions give the same crops whatever the engine
    names = sorted(p.name for p in (out / "local").iterdir())
    assert names == sorted(p.name for p in (out / "dask").iterdir())
    same = all(
        sorted(f.name for f in (out / "local" / n).iterdir())
        == sorted(f.name for f in (out / "dask" / n).iterdir())
        and all(
            filecmp.cmp(f, out / "dask" / n / f.name, shallow=False)
            for f in (out / "local" / n).iterdir()
        )
        for n in names
    )
    print(f"{len(names)} crops, identical to the local run: {same}")
    assert same


if __name__ == "__main__":
    main()
