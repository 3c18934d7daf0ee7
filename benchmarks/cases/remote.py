"""Loading a dataset of dumps from an S3 API server against the local disk.

The pipeline scans are preprocessed once (1 mm, HU window) and dumped (untimed), then copied
to a bucket of moto's S3 server on loopback (``moto[server]``, a dev dependency). Timed:
``load()`` of every item through ``gen_batch(batch_size=1, prefetch=1)`` on 2 threads, from
``s3://`` (each dump's objects fetched concurrently, then read) and from the local folder.
moto is a Python server in the measured process, so the S3 number is a floor for what the
fetch path costs, not a measurement of AWS; the case runs only when named
(``--cases s3_dumps``).

``s3_lazy_crops`` cuts two 64^3 crops per dumped scan: ``load(lazy=True)`` from ``s3://``
fetches ``meta.json`` and the chunks under the crops by ranged GETs; ``load()`` fetches the
dumps whole. The MB each call fetches are recorded. moto answers a ranged GET by reading the
whole object (a 1 KB range of a 170 MB object: 0.115 s here), so on moto fewer bytes are not
faster; on object stores that serve ranges, the time follows the bytes.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cases.feed import _dump_inputs
from benchmarks.harness import Case, Contender, Runner

BUCKET = "ctflow-bench"


def _inputs(data: Any) -> dict[str, Any]:
    inp = _dump_inputs(data)
    inp["bytes"] = sum(f.stat().st_size for d in inp["dumps"] for f in Path(d).iterdir())
    return inp


def _summary(batches: list[Any]) -> dict[str, np.ndarray]:
    rows = {b.ids[0]: float(b[0].images.sum(dtype=np.float64)) for b in batches}
    return {"sums": np.array([rows[k] for k in sorted(rows)])}


def _load(ds: Any, threads: int) -> list[Any]:
    import ctflow as cf

    return list((ds >> cf.Pipeline().load()).gen_batch(batch_size=1, prefetch=1, n_workers=threads))


def _local(inp: dict[str, Any], threads: int) -> Runner:
    import ctflow as cf

    ds = cf.Dataset.from_paths(inp["dumps"])
    return Runner(lambda: _load(ds, threads), _summary)


def _bucket(inp: dict[str, Any]) -> Any:
    """Start moto's S3 server on loopback, copy the dumps to it; return the dataset on S3."""
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    import ctflow as cf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": endpoint}}
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
    ).create_bucket(Bucket=BUCKET)  # fmt: skip
    fs = s3fs.S3FileSystem(**options)
    for item in inp["dumps"]:
        for f in Path(item).iterdir():
            fs.put_file(str(f), f"{BUCKET}/dumps/{Path(item).name}/{f.name}")
    return cf.Dataset.from_glob(f"s3://{BUCKET}/dumps/*", dirs=True, storage_options=options)


def _s3(inp: dict[str, Any], threads: int) -> Runner:
    ds = _bucket(inp)
    runner = Runner(lambda: _load(ds, threads), _summary)
    runner.info["MB_of_dump_files"] = round(inp["bytes"] / 1e6, 1)
    return runner


# -- crops of lazy items ------------------------------------------------------------------------
CROP = (64, 64, 64)
CROPS = 2


def _crops(ds: Any, threads: int, lazy: bool) -> dict[str, np.ndarray]:
    import ctflow as cf

    pipe = cf.Pipeline().load(lazy=lazy).sample_crops(CROPS, CROP, pad_value=0.0)
    batches = (ds >> pipe).gen_batch(batch_size=1, prefetch=1, n_workers=threads, seed=7)
    rows = {
        (b.ids[k], k): float(b[k].images.sum(dtype=np.float64))
        for b in batches
        for k in range(len(b))
    }
    return {"sums": np.array([rows[k] for k in sorted(rows)])}


def _crops_local(inp: dict[str, Any], threads: int) -> Runner:
    import ctflow as cf

    ds = cf.Dataset.from_paths(inp["dumps"])
    return Runner(lambda: _crops(ds, threads, True), lambda out: out)


def _crops_s3(lazy: bool) -> Any:
    def build(inp: dict[str, Any], threads: int) -> Runner:
        from ctflow.io.remote import filesystem

        ds = _bucket(inp)
        fs = filesystem(next(iter(ds.sources.values())))  # the instance ctflow reads with
        fetched = [0]
        ranged, whole = fs.cat_file, fs.get

        def cat_file(path: str, start: Any = None, end: Any = None, **kw: Any) -> Any:
            out = ranged(path, start=start, end=end, **kw)
            fetched[0] += len(out)
            return out

        def get(rpaths: Any, lpaths: Any, **kw: Any) -> Any:
            names = rpaths if isinstance(rpaths, list) else [rpaths]
            fetched[0] += sum(int(fs.size(p)) for p in names)
            return whole(rpaths, lpaths, **kw)

        fs.cat_file, fs.get = cat_file, get

        def run() -> dict[str, np.ndarray]:
            fetched[0] = 0
            out = _crops(ds, threads, lazy)
            runner.info["MB_fetched_per_call"] = round(fetched[0] / 1e6, 1)
            return out

        runner = Runner(run, lambda out: out)
        runner.info["MB_of_dump_files"] = round(inp["bytes"] / 1e6, 1)
        return runner

    return build


def check(ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> tuple[bool, dict[str, Any]]:
    """The same items and voxel sums as from the local disk."""
    same = ref["sums"].shape == out["sums"].shape and np.array_equal(ref["sums"], out["sums"])
    return bool(same), {"items": int(out["sums"].shape[0])}


CASES = [
    Case(
        name="s3_dumps",
        title="load() of dumps from an S3 API server (moto, loopback) vs the local disk",
        inputs=_inputs,
        contenders=[
            Contender("ctflow", "load() from the local folder", 2, _local),
            Contender("ctflow", "load() from s3:// (moto on loopback)", 2, _s3),
        ],
        check=check,
        bytes_moved=lambda inp: int(inp["bytes"]),
        items=lambda profile: min(8, len(profile.pipeline_scans)),
        parts=("pipeline",),
        reference="ctflow|load() from the local folder|2",
        note="moto serves from the measured process (GIL): a floor for the fetch path, not AWS",
        in_default=False,
    ),
    Case(
        name="s3_lazy_crops",
        title=f"{CROPS} crops of 64^3 per dumped scan: lazy from s3:// (byte ranges) vs whole",
        inputs=_inputs,
        contenders=[
            Contender("ctflow", "load(lazy=True) from the local folder", 2, _crops_local),
            Contender(
                "ctflow", "load(lazy=True) from s3:// (chunks under the crops)", 2, _crops_s3(True)
            ),
            Contender("ctflow", "load() from s3:// (whole dumps), then crops", 2, _crops_s3(False)),
        ],
        check=check,
        items=lambda profile: min(8, len(profile.pipeline_scans)),
        parts=("pipeline",),
        reference="ctflow|load(lazy=True) from the local folder|2",
        note=(
            "moto serves from the measured process and reads the whole object for every "
            "ranged GET: compare the MB fetched, not the time"
        ),
        in_default=False,
    ),
]
