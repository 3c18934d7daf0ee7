"""Shared fixtures: synthetic phantoms written to real files, the real-data folder, and a real
S3 API server on loopback (moto's ThreadedMotoServer) for sources, dumps and caches on object
storage."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of small real CT files (``../shared/data/real``); skip when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real CT data folder {REAL_DATA} is absent (it sits beside the repo in CI)")
    return REAL_DATA


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Four small LUNA16-like phantoms (.mhd/.raw) and annotations.csv; session-wide, read-only."""
    from ctflow.synthetic import make_dataset

    dst = tmp_path_factory.mktemp("phantoms")
    return make_dataset(dst, n_scans=4, shape=(40, 64, 64), seed=7)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


#: the bucket the S3 server starts with, and its credentials (not real ones: a test checks that
#: the secret never reaches a log, an error, a report or a meta.json)
S3_BUCKET = "ctflow-test"
S3_KEY = "testing"
S3_SECRET = "not-a-real-secret-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running S3 API server: where it is, its credentials, and an s3fs client of it."""

    endpoint: str
    bucket: str
    key: str
    secret: str
    fs: Any
    options: dict[str, Any] = field(default_factory=dict)

    def make_bucket(self, name: str) -> str:
        """Create a bucket (once per session) and return its name."""
        import boto3  # comes with moto

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
        )
        if name not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=name)
        self.fs.invalidate_cache()
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 in server mode on a free loopback port (s3fs talks to it as to AWS)."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    s3fs = pytest.importorskip("s3fs", reason="s3fs is the [s3] extra (installed with dev)")
    # a client without credentials must fail here, never ask a cloud metadata address for them
    # (the CLI's subprocesses inherit this too)
    metadata = os.environ.get("AWS_EC2_METADATA_DISABLED")
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    options = {
        "key": S3_KEY,
        "secret": S3_SECRET,
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    fs = s3fs.S3FileSystem(**options)
    running = S3Server(endpoint, S3_BUCKET, S3_KEY, S3_SECRET, fs, options)
    running.make_bucket(S3_BUCKET)
    try:
        yield running
    finally:
        server.stop()
        if metadata is None:
            os.environ.pop("AWS_EC2_METADATA_DISABLED", None)
        else:
            os.environ["AWS_EC2_METADATA_DISABLED"] = metadata


@pytest.fixture(scope="session")
def s3(s3_server: S3Server) -> tuple[Any, dict[str, Any]]:
    """``(fs, storage_options)`` of the S3 server; its bucket ``ctflow-test`` exists."""
    return s3_server.fs, s3_server.options
