"""Feeding a torch DataLoader: pinned tensors, metadata, worker sharding, the crop queue."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import ctflow as cf
import ctflow.interop.torch as cft
from ctflow.interop.torch import PipelineDataset
from ctflow.synthetic import make_dataset

CROP = (16, 16, 16)


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    paths, _ = make_dataset(tmp_path_factory.mktemp("feed"), n_scans=4, shape=(32, 64, 64))
    return cf.Dataset.from_paths(paths)


def _crops(n: int = 4) -> cf.Pipeline:
    return cf.Pipeline().load().normalize_hu().sample_crops(n, CROP).random_flip()


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()


def _scan(crop_id: str) -> str:
    return crop_id.rsplit("_", 2)[0]  # crops are "<scan>_<batch position>_<k>"


def _signature(batches) -> list[tuple[str, str]]:
    """(crop id, checksum of its voxels) of every crop handed out, in order."""
    return [
        (i, _digest(img)) for b in batches for i, img in zip(b["ids"], b["images"], strict=True)
    ]


def _loader(ds, num_workers: int, **kw) -> DataLoader:
    return DataLoader(ds, batch_size=None, num_workers=num_workers, **kw)


# ------------------------------------------------------------------------------ pinning
def test_pin_memory_is_a_no_op_without_cuda_and_pins_with_it(scans, monkeypatch):
    ds = PipelineDataset(scans >> _crops(), batch_size=2, seed=0, pin_memory=True)
    assert ds.pin_memory and "pin_memory=True" in repr(ds)
    batches = list(_loader(ds, 0))
    assert len(batches) == 2
    if torch.cuda.is_available():  # pragma: no cover - no GPU on the test machines
        assert ds.pins and all(b["images"].is_pinned() for b in batches)
        return
    assert not ds.pins  # CPU-only: no error, ordinary memory
    assert not any(b["images"].is_pinned() for b in batches)
    # the CUDA path: every tensor goes through Tensor.pin_memory, lists and ids left alone
    pinned: list[tuple[int, ...]] = []

    def fake_pin(self):
        pinned.append(tuple(self.shape))
        return self.clone()

    monkeypatch.setattr(cft, "_cuda_available", lambda: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    assert ds.pins
    batch = next(iter(ds))
    assert (4, 1, *CROP) in pinned and (4, 3) in pinned and (4, 3, 3) in pinned
    assert isinstance(batch["ids"], list) and isinstance(batch["history"], list)
    unpinned = next(iter(PipelineDataset(scans >> _crops(), batch_size=2, seed=0)))
    torch.testing.assert_close(batch["images"], unpinned["images"])
    with pytest.raises(cf.InvalidParameterError, match="pin_memory"):
        PipelineDataset(scans >> _crops(), pin_memory="yes")


# ----------------------------------------------------------------------------- metadata
def test_every_batch_and_item_carries_geometry_ids_and_history(scans):
    pipe = scans >> _crops()
    ref = pipe.next_batch(2, seed=0)
    batch = next(iter(_loader(PipelineDataset(pipe, batch_size=2, seed=0), 0)))
    assert batch["ids"] == ref.ids
    np.testing.assert_array_equal(batch["spacing"].numpy(), ref.spacing)
    np.testing.assert_array_equal(batch["origin"].numpy(), ref.origin)
    np.testing.assert_array_equal(batch["direction"].numpy(), ref.direction)
    assert tuple(batch["direction"].shape) == (4, 3, 3)
    assert batch["history"] == ref.history
    assert [h["action"] for h in batch["history"][0]][-2:] == ["sample_crops", "random_flip"]
    # items, collated by the default collate: every item keeps its own
    items = DataLoader(PipelineDataset(pipe, batch_size=2, seed=0, mode="item"), batch_size=3)
    first = next(iter(items))
    assert first["id"] == ref.ids[:3] and tuple(first["spacing"].shape) == (3, 3)
    assert tuple(first["origin"].shape) == (3, 3) and tuple(first["direction"].shape) == (3, 3, 3)
    assert [json.loads(h) for h in first["history"]] == ref.history[:3]


# ---------------------------------------------------------------- sharding, determinism
def test_crops_do_not_depend_on_the_number_of_workers(scans):
    def run(k, **kw):
        ds = PipelineDataset(scans >> _crops(), batch_size=1, seed=7, n_epochs=2, n_workers=1, **kw)
        return _signature(_loader(ds, k))

    shuffled = {k: run(k, shuffle=True) for k in (0, 1, 2)}
    assert len(shuffled[0]) == 4 * 4 * 2
    assert sorted(shuffled[0]) == sorted(shuffled[1]) == sorted(shuffled[2])
    assert Counter(_scan(i) for i, _ in shuffled[0]) == dict.fromkeys(scans.ids, 8)
    # without shuffling the loader's round robin even keeps the order of num_workers=0
    plain = {k: run(k) for k in (0, 2)}
    assert plain[0] == plain[2]
    # and another seed gives other crops
    other = PipelineDataset(scans >> _crops(), batch_size=1, seed=8, n_epochs=2, shuffle=True)
    assert sorted(_signature(_loader(other, 0))) != sorted(shuffled[0])


# ------------------------------------------------------------------------------ the queue
def test_the_queue_mixes_scans_and_uses_every_crop_once(scans):
    pipe = scans >> _crops()
    plain = _signature(PipelineDataset(pipe, batch_size=1, seed=1))
    ds = PipelineDataset(pipe, batch_size=1, seed=1, crops_per_batch=6, mix_scans=2)
    batches = list(_loader(ds, 0))
    # 16 crops: pools of 8 crops -> 6 | (2 left + 8) -> 6 | the last 4
    assert [tuple(b["images"].shape) for b in batches] == [(6, 1, *CROP)] * 2 + [(4, 1, *CROP)]
    assert sorted(_signature(batches)) == sorted(plain)  # each crop once, voxels unchanged
    assert all(len({_scan(i) for i in b["ids"]}) >= 2 for b in batches)
    for b in batches:  # metadata rows follow their crops
        assert len(b["history"]) == len(b["ids"]) == len(b["spacing"]) == len(b["direction"])
        assert [h[-2]["params"]["parent"] for h in b["history"]] == [_scan(i) for i in b["ids"]]
    again = list(_loader(ds, 0))
    assert _signature(again) == _signature(batches)  # seeded: the same training batches
    # one scan per pool: no mixing, still every crop once
    alone = list(PipelineDataset(pipe, batch_size=1, seed=1, crops_per_batch=4))
    assert all(len({_scan(i) for i in b["ids"]}) == 1 for b in alone)
    assert sorted(_signature(alone)) == sorted(plain)
    # with two workers: each mixes its own scans, the crops of the pass are the same
    two = list(_loader(ds, 2))
    assert sorted(_signature(two)) == sorted(plain)
    assert sum(len(b["ids"]) for b in two) == 16 and all(len(b["ids"]) <= 6 for b in two)


def test_bad_queue_parameters_and_mixed_shapes_are_refused(scans, tmp_path):
    pipe = scans >> _crops()
    for kw, match in [
        ({"crops_per_batch": 0}, "crops_per_batch must be a positive integer"),
        ({"crops_per_batch": 2.5}, "crops_per_batch must be a positive integer"),
        ({"crops_per_batch": 4, "mix_scans": 0}, "mix_scans must be a positive integer"),
        ({"crops_per_batch": 4, "mode": "item"}, "needs mode='batch'"),
        ({"crops_per_batch": 4, "mode": "list"}, "needs mode='batch'"),
    ]:
        with pytest.raises(cf.InvalidParameterError, match=match):
            PipelineDataset(pipe, **kw)
    paths, _ = make_dataset(tmp_path, n_scans=3, shape=(16, 40, 40), seed=6, mixed=True)
    mixed = cf.Dataset.from_paths(paths) >> cf.Pipeline().load()
    ds = PipelineDataset(mixed, batch_size=1, crops_per_batch=2, mix_scans=3)
    with pytest.raises(
        cf.InvalidParameterError, match=r"crops of one shape.*shape \(\d+, \d+, \d+"
    ):
        list(ds)


# ---------------------------------------------------------------------- cache + workers
class _Made:
    """Notes in a file which process made which item (the actions before cache())."""

    def __init__(self, path) -> None:
        self.path = str(path)

    def __call__(self, batch):
        with open(self.path, "a") as f:
            f.writelines(f"{os.getpid()} {i}\n" for i in batch.ids)
        return batch

    def __repr__(self) -> str:
        return "_Made()"


def test_each_worker_caches_its_own_shard(scans, tmp_path):
    log = tmp_path / "made.txt"
    pipe = (
        cf.Pipeline()
        .load()
        .call(_Made(log))
        .normalize_hu()
        .cache(ram_gb=0.5)
        .sample_crops(4, CROP)
        .random_flip()
    )
    ds = PipelineDataset(scans >> pipe, batch_size=1, seed=2, n_epochs=3, shuffle=True)
    got = _signature(_loader(ds, 2))
    made = [line.split() for line in log.read_text().splitlines()]
    assert sorted(i for _, i in made) == sorted(scans.ids)  # each item made once in 3 epochs
    by_worker: dict[str, set[str]] = {}
    for pid, item in made:
        by_worker.setdefault(pid, set()).add(item)
    assert len(by_worker) == 2 and all(len(v) == 2 for v in by_worker.values())
    assert str(os.getpid()) not in by_worker  # made in the worker processes
    # the same crops as one process without a cache
    plain = cf.Pipeline().load().normalize_hu().sample_crops(4, CROP).random_flip()
    ref = PipelineDataset(scans >> plain, batch_size=1, seed=2, n_epochs=3, shuffle=True)
    assert sorted(got) == sorted(_signature(ref)) and len(got) == 4 * 4 * 3
