"""Lazy items on object storage: ``meta.json`` at load, then only the chunks under the crops.

Against a real S3 API server on loopback (moto in server mode, the ``s3`` fixture). The
reference for every crop is the same crop cut from the local dump, fully loaded; the proof
that only chunks under the crops travel is the server's own count of bytes sent (moto's
request log is not read: a proxy that counts the bytes of every response sits in front of it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ctflow as cf
from ctflow.errors import CorruptFileError, UnsupportedFormatError
from ctflow.geometry import Geometry
from ctflow.io.remote import filesystem, set_storage_options
from ctflow.io.store import write_item
from ctflow.io.store.ranged import read_planes, read_remote_meta
from ctflow.synthetic import make_dataset

pytest.importorskip("s3fs", reason="s3fs is the [s3] extra (installed with dev)")

BUCKET = "ctflow-test"


def _upload(fs: Any, folder: Path, url_path: str) -> None:
    for f in folder.iterdir():
        fs.put_file(str(f), f"{url_path}/{f.name}")


@pytest.fixture(scope="module")
def dumps(s3: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Three phantoms with masks dumped locally and copied to S3 (same bytes)."""
    fs, _ = s3
    src = tmp_path_factory.mktemp("lazy-src")
    make_dataset(
        src, n_scans=3, shapes=[(70, 40, 48), (40, 48, 36), (33, 44, 44)], seed=9, labels=True
    )
    local = tmp_path_factory.mktemp("lazy-dumps")
    ds = cf.Dataset.from_glob(str(src / "*.mhd"), masks=str(src / "labels" / "{id}.nii.gz"))
    (ds >> cf.Pipeline().load().dump(local)).run(batch_size=3)
    for item in sorted(p for p in local.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _upload(fs, item, f"{BUCKET}/lazy/{item.name}")
    return local, f"s3://{BUCKET}/lazy"


def test_lazy_crops_from_s3_equal_crops_of_the_loaded_local_items(s3, dumps):
    _, options = s3
    local, url = dumps
    remote = cf.Dataset.from_glob(f"{url}/*", dirs=True, storage_options=options)
    here = cf.Dataset.from_glob(str(local / "*"), dirs=True)
    ids = sorted(here.ids)
    assert sorted(remote.ids) == ids
    samplers = {
        "crops": lambda p: p.sample_crops(4, (16, 20, 24)),
        "nodules": lambda p: p.sample_nodules(2, (24, 24, 24), share=1.0, pad_value=-1024),
        "by_class": lambda p: p.sample_crops(4, (16, 20, 24), ratios={0: 1.0, 1: 1.0}),
    }
    for name, sample in samplers.items():
        a = (remote >> sample(cf.Pipeline().load(lazy=True))).next_batch(3, seed=5)
        b = (here >> sample(cf.Pipeline().load())).next_batch(3, seed=5)
        np.testing.assert_array_equal(a.images, b.images, err_msg=name)
        np.testing.assert_array_equal(a.masks, b.masks, err_msg=name)
        for k in range(len(b)):
            np.testing.assert_array_equal(a[k].origin, b[k].origin)


def test_a_crop_fetches_only_the_chunks_under_it(s3, tmp_path, monkeypatch):
    fs, options = s3
    set_storage_options("s3", options)
    z, y, x = np.ogrid[:300, :256, :256]  # 8 MiB chunks: 64 planes of 256 x 256 int16
    vol = ((z * 7 + y * 3 + x) % 2000 - 1000).astype(np.int16)
    item = write_item(tmp_path, "big", {"images": vol}, Geometry((1.0, 1.0, 1.0)))
    _upload(fs, item, f"{BUCKET}/big/big")
    _, comps = read_remote_meta(f"s3://{BUCKET}/big/big")
    comp = comps["images"]
    assert comp.planes is not None and comp.ranges is not None and len(comp.ranges) > 4
    sizes = [int(s) for _, s in comp.ranges]
    calls: list[tuple[int, int]] = []
    used = filesystem(f"s3://{BUCKET}/big/big")  # the (cached) file system ctflow reads with
    real = used.cat_file

    def counting(path: str, start: Any = None, end: Any = None, **kw: Any) -> Any:
        calls.append((start, end))
        return real(path, start=start, end=end, **kw)

    monkeypatch.setattr(used, "cat_file", counting)
    got = read_planes(f"s3://{BUCKET}/big/big", comp, 130, 140)
    np.testing.assert_array_equal(got, vol[130:140])
    fetched = sum(e - s for s, e in calls)
    cz = comp.planes
    assert len(calls) == (139 // cz) - (130 // cz) + 1  # one ranged GET per chunk touched
    assert fetched <= 2 * max(sizes) < vol.nbytes / 4


def test_damaged_chunks_and_missing_items_are_typed_errors(s3, tmp_path):
    fs, options = s3
    set_storage_options("s3", options)
    vol = np.arange(40 * 16 * 16, dtype=np.int16).reshape(40, 16, 16)
    item = write_item(tmp_path, "d", {"images": vol}, Geometry((1.0, 1.0, 1.0)))
    _upload(fs, item, f"{BUCKET}/damaged/d")
    url = f"s3://{BUCKET}/damaged/d"
    _, comps = read_remote_meta(url)
    name = comps["images"].file
    data = bytearray(fs.cat_file(f"{BUCKET}/damaged/d/{name}"))
    offset, size = comps["images"].ranges[0]
    data[offset + size - 5] ^= 0xFF
    fs.pipe_file(f"{BUCKET}/damaged/d/{name}", bytes(data))
    with pytest.raises(CorruptFileError, match="CRC-32"):
        read_planes(url, comps["images"], 0, 2)
    fs.pipe_file(f"{BUCKET}/damaged/d/{name}", bytes(data[: offset + 40]))
    with pytest.raises(CorruptFileError, match="truncated or replaced"):
        read_planes(url, comps["images"], 0, 2, verify=False)
    with pytest.raises(UnsupportedFormatError, match=r"no meta\.json"):
        read_remote_meta(f"s3://{BUCKET}/damaged/nothing-here")
    fs.pipe_file(f"{BUCKET}/damaged/bad/meta.json", b'{"format": "other"}')
    with pytest.raises(CorruptFileError, match="not ctflow metadata"):
        read_remote_meta(f"s3://{BUCKET}/damaged/bad")


def test_dumps_without_recorded_places_are_read_whole(s3, tmp_path):
    """A dump written before ctflow recorded chunk places: crops still equal, via a fetch."""
    fs, options = s3
    vol = np.arange(24 * 10 * 12, dtype=np.int16).reshape(24, 10, 12)
    item = write_item(tmp_path, "old", {"images": vol}, Geometry((1.0, 2.0, 2.0)))
    meta = json.loads((item / "meta.json").read_text())
    for spec in meta["components"].values():
        spec.pop("chunk_planes"), spec.pop("chunk_ranges")
    (item / "meta.json").write_text(json.dumps(meta))
    _upload(fs, item, f"{BUCKET}/old/old")
    ds = cf.Dataset.from_paths({"old": f"s3://{BUCKET}/old/old"}, storage_options=options)
    crops = (ds >> cf.Pipeline().load(lazy=True).sample_crops(3, (5, 6, 7))).next_batch(1, seed=1)
    here = cf.Dataset.from_paths({"old": str(item)})
    ref = (here >> cf.Pipeline().load().sample_crops(3, (5, 6, 7))).next_batch(1, seed=1)
    np.testing.assert_array_equal(crops.images, ref.images)
