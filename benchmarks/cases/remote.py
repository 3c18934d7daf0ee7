"""Loading a dataset of dumps from an S3 API server against the local disk.

The pipeline scans are preprocessed once (1 mm, HU window) and dumped (untimed), then copied
to a bucket of moto's S3 server on loopback (``moto[server]``, a dev dependency). Timed:
``load()`` of every item through ``gen_batch(batch_size=1, prefetch=1)`` on 2 threads, from
``s3://`` (each dump's objects fetched concurrently, then read) and from the local folder.
moto is a Python server in the measured process, so the S3 number is a floor for what the
fetch path costs, not a measurement of AWS; the case runs only when named
(``--cases s3_dumps``).
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


def _s3(inp: dict[str, Any], threads: int) -> Runner:
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
    ds = cf.Dataset.from_glob(f"s3://{BUCKET}/dumps/*", dirs=True, storage_options=options)
    runner = Runner(lambda: _load(ds, threads), _summary)
    runner.info["MB_of_dump_files"] = round(inp["bytes"] / 1e6, 1)
    return runner


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
    )
]
