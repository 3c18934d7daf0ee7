"""Crops straight from dumps: ``load(lazy=True)`` reads no voxels, and ``sample_nodules`` /
``sample_crops`` read each crop from the stored blocks — equal to crops of the loaded items.

The reference is the same pipeline with a plain ``load()`` (every voxel read), same seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ctflow as cf
from ctflow.errors import InvalidParameterError
from ctflow.history import replay
from ctflow.io.store import reader
from ctflow.lazy import slabs
from ctflow.synthetic import make_dataset

SHAPES = [(40, 64, 64), (36, 72, 60), (44, 56, 64)]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> cf.Dataset:
    src = tmp_path_factory.mktemp("src")
    out = tmp_path_factory.mktemp("dumps")
    paths, csv = make_dataset(src, n_scans=3, shapes=SHAPES, seed=2)
    pipe = cf.Pipeline().load().fetch_nodules(csv).segment(min_lung_ml=1).create_mask().dump(out)
    (cf.Dataset.from_paths(paths) >> pipe).run(batch_size=3)
    return cf.Dataset.from_glob(str(out / "*"), dirs=True)


SAMPLERS = {
    "nodules": lambda p: p.sample_nodules(8, (16, 24, 24), share=0.5),
    "nodules_padded": lambda p: p.sample_nodules(8, (48, 24, 24), share=1.0, pad_value=-1024),
    "uniform": lambda p: p.sample_crops(8, (16, 24, 24)),
    "larger_than_a_scan": lambda p: p.sample_crops(4, (48, 80, 24)),  # padded with the minimum
    "by_class": lambda p: p.sample_crops(8, (16, 24, 24), ratios={0: 1.0, 1: 1.0}),
}


def _crops(dumps: cf.Dataset, sampler: str, lazy: bool, seed: int = 3) -> cf.CTBatch:
    pipe = SAMPLERS[sampler](cf.Pipeline().load(lazy=lazy))
    return (dumps >> pipe).next_batch(3, seed=seed)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_lazy_crops_equal_crops_of_loaded_items(dumps, sampler):
    ref = _crops(dumps, sampler, lazy=False)
    got = _crops(dumps, sampler, lazy=True)
    assert got.ids == ref.ids
    for comp in ("images", "masks", "lungs"):
        assert got.has(comp) and ref.has(comp)
        for k in range(len(ref)):
            a, b = got[k], ref[k]
            np.testing.assert_array_equal(getattr(a, comp), getattr(b, comp))
            assert getattr(a, comp).dtype == getattr(b, comp).dtype
    for k in range(len(ref)):
        np.testing.assert_array_equal(got[k].origin, ref[k].origin)
        np.testing.assert_array_equal(got[k].spacing, ref[k].spacing)
        np.testing.assert_array_equal(got[k].direction, ref[k].direction)
        assert got.info[k] == ref.info[k]
        assert got.history[k] == ref.history[k]  # the dump's record, then the crop's start
    assert got.nodules.equals(ref.nodules)


def test_a_lazy_load_reads_no_voxels_and_crops_read_only_boxes(dumps, monkeypatch):
    calls: dict[str, int] = {"whole": 0, "box": 0}
    whole, box = reader._read_array, reader._read_box

    def count_whole(*args: Any, **kwargs: Any) -> Any:
        calls["whole"] += 1
        return whole(*args, **kwargs)

    def count_box(*args: Any, **kwargs: Any) -> Any:
        calls["box"] += 1
        return box(*args, **kwargs)

    monkeypatch.setattr(reader, "_read_array", count_whole)
    monkeypatch.setattr(reader, "_read_box", count_box)
    batch = (dumps >> cf.Pipeline().load(lazy=True)).next_batch(3)
    assert not batch.has("images") and calls == {"whole": 0, "box": 0}
    assert [tuple(s) for s in (b["lazy"]["components"]["images"]["shape"] for b in batch.info)]
    crops = batch.sample_nodules(6, (16, 24, 24), share=1.0, pad_value=-1024)
    assert calls["whole"] == 0  # no array read whole
    # one read per component per slab of planes under an item's crops (overlaps merged)
    depth = {i: int(info["lazy"]["components"]["images"]["shape"][0]) for i, info in
             zip(batch.ids, batch.info, strict=True)}  # fmt: skip
    ranges: dict[str, list[tuple[int, int]]] = {}
    for info in crops.info:
        z = info["start"][0]
        ranges.setdefault(info["parent"], []).append(
            (max(0, z), min(depth[info["parent"]], z + 16))
        )
    assert calls["box"] == 3 * sum(len(slabs(r)) for r in ranges.values())
    assert calls["box"] <= 3 * len(crops)
    assert len(batch.nodules) > 0 and len(crops.nodules) >= len(crops)


def test_replaying_a_lazy_crop_gives_the_same_crop(dumps):
    crops = _crops(dumps, "nodules", lazy=True)
    for k in (0, 5):
        again = replay(crops.history[k])  # from the original scan, through every action
        np.testing.assert_array_equal(again[0].images, crops[k].images)
        np.testing.assert_array_equal(again[0].masks, crops[k].masks)
        np.testing.assert_array_equal(again[0].origin, crops[k].origin)


def test_actions_that_need_voxels_refuse_a_lazy_batch_clearly(dumps, tmp_path: Path):
    batch = (dumps >> cf.Pipeline().load(lazy=True)).next_batch(3)
    for call in (
        lambda b: b.normalize_hu(),
        lambda b: b.unify_spacing((1.0, 1.0, 1.0)),
        lambda b: b.dump(tmp_path / "x"),
    ):
        with pytest.raises(InvalidParameterError, match=r"load\(lazy=True\)"):
            call(batch)
    full = batch.load()  # a plain load on the same batch reads the voxels
    assert full.has("images") and sorted(full.shapes.tolist()) == sorted(map(list, SHAPES))


def test_lazy_load_of_a_scan_file_or_a_forced_format_is_refused(dumps, tmp_path: Path):
    with pytest.raises(InvalidParameterError, match="fmt"):
        cf.Pipeline().load(fmt="mhd", lazy=True)
    paths, _ = make_dataset(tmp_path, n_scans=1, shape=(8, 16, 16), seed=0)
    with pytest.raises(InvalidParameterError, match="lazy=True reads ctflow dumps only"):
        (cf.Dataset.from_paths(paths) >> cf.Pipeline().load(lazy=True)).next_batch(1)


def test_components_chosen_at_a_lazy_load_are_the_crops_components(dumps):
    batch = (dumps >> cf.Pipeline().load(lazy=True, components=["images"])).next_batch(3)
    crops = batch.sample_crops(4, (8, 8, 8))
    assert crops.has("images") and not crops.has("masks") and not crops.has("lungs")
