"""The ctflow dump format: bit-identical round trips, atomic writes, resume with skip_existing."""

from __future__ import annotations

import json

import blosc2
import numpy as np
import pandas as pd
import pytest

import ctflow as cf
from ctflow.io import store


def _batch(rng):
    vols = [rng.integers(-1000, 2000, size=(z, 12, 10)).astype(np.int16) for z in (5, 7)]
    nod = pd.DataFrame({"id": ["b"], "z": [3.5], "y": [-2.25], "x": [4.0], "diameter": [6.5]})
    d = np.eye(3)
    d[:, 2] *= -1
    b = cf.CTBatch.from_arrays(
        vols,
        ids=["a", "b"],
        spacing=[(2.5, 0.7, 0.6), (1.25, 0.8, 0.8)],
        origin=[(-300.0, -150.5, 99.0), (1.0, 2.0, 3.0)],
        direction=[np.eye(3), d],
        nodules=nod,
    )
    return b.create_mask()


def test_dump_load_round_trip_is_bit_identical(tmp_path, rng):
    b = _batch(rng)
    b.dump(tmp_path / "out")
    assert sorted(b.dumped) == ["a", "b"]
    ds = cf.Dataset.from_glob(str(tmp_path / "out" / "*"), dirs=True)
    assert ds.ids == ["a", "b"]
    back = (ds >> cf.Pipeline().load()).next_batch(2)
    np.testing.assert_array_equal(back.images, b.images)
    assert back.images.dtype == np.int16
    np.testing.assert_array_equal(back.masks, b.masks)
    assert back.masks.dtype == np.uint8
    assert back.lungs is None
    np.testing.assert_array_equal(back.spacing, b.spacing)
    np.testing.assert_array_equal(back.origin, b.origin)
    np.testing.assert_array_equal(back.direction, b.direction)
    pd.testing.assert_frame_equal(back.nodules, b.nodules)
    meta = json.loads((tmp_path / "out" / "b" / "meta.json").read_text())
    assert meta["format"] == "ctflow" and meta["components"]["images"]["shape"] == [7, 12, 10]
    assert not any(p.name.startswith(".") for p in (tmp_path / "out").iterdir())


def test_float_images_and_component_selection(tmp_path, rng):
    b = _batch(rng).normalize_hu()
    b.dump(tmp_path / "o", components=["images"])
    item = store.read_item(tmp_path / "o" / "a")
    assert set(item.components) == {"images"}
    np.testing.assert_array_equal(item.components["images"], b[0].images)
    assert item.components["images"].dtype == np.float32


def test_crash_mid_dump_leaves_no_complete_looking_item(tmp_path, rng, monkeypatch):
    b = _batch(rng)
    real = blosc2.asarray

    def failing(arr, **kw):
        if kw.get("urlpath", "").endswith("masks.b2nd"):
            raise OSError("disk full (simulated)")
        return real(arr, **kw)

    monkeypatch.setattr(store.blosc2, "asarray", failing)
    with pytest.raises(OSError, match="disk full"):
        b.dump(tmp_path / "out")
    leftovers = list((tmp_path / "out").iterdir())
    assert leftovers == []  # no item folder and no temporary folder
    # an existing complete item survives a failed overwrite untouched
    monkeypatch.setattr(store.blosc2, "asarray", real)
    b.dump(tmp_path / "out")
    before = store.read_item(tmp_path / "out" / "a").components["images"].copy()
    monkeypatch.setattr(store.blosc2, "asarray", failing)
    b.images[:] = 0
    with pytest.raises(OSError):
        b.dump(tmp_path / "out")
    np.testing.assert_array_equal(
        store.read_item(tmp_path / "out" / "a").components["images"], before
    )


def test_half_written_folder_is_not_an_item(tmp_path):
    half = tmp_path / "x"
    half.mkdir()
    (half / "images.b2nd").write_bytes(b"partial")
    assert not store.is_item_dir(half)
    with pytest.raises(cf.UnsupportedFormatError, match="not a ctflow item folder"):
        store.read_item(half)


def test_skip_existing_resumes_an_interrupted_run(tmp_path, phantom_dir):
    paths, _ = phantom_dir
    ds = cf.Dataset.from_paths(paths)
    out = tmp_path / "dump"
    p = ds >> cf.Pipeline().load().dump(out, skip_existing=True)
    first = p.run(batch_size=2)
    assert sorted(first.done) == sorted(ds.ids) and first.skipped == []
    victim = out / ds.ids[1]
    stamp = {i: (out / i / "meta.json").stat().st_mtime_ns for i in ds.ids}
    import shutil

    shutil.rmtree(victim)
    second = p.run(batch_size=2)
    assert sorted(second.skipped) == sorted(i for i in ds.ids if i != ds.ids[1])
    assert store.is_item_dir(victim)
    for i in ds.ids:
        if i != ds.ids[1]:
            assert (out / i / "meta.json").stat().st_mtime_ns == stamp[i]


def test_read_crop_reads_a_box(tmp_path, rng):
    arr = rng.integers(-1000, 1000, size=(40, 300, 280)).astype(np.int16)
    store.write_item(
        tmp_path, "big", {"images": arr}, cf.Geometry((1.0, 0.5, 0.5), (10.0, 20.0, 30.0))
    )
    crop, geo = store.read_crop(tmp_path / "big", (17, 250, 3), (8, 40, 33))
    np.testing.assert_array_equal(crop, arr[17:25, 250:290, 3:36])
    np.testing.assert_allclose(geo.origin, [27.0, 145.0, 31.5])
    with pytest.raises(cf.InvalidParameterError, match="inside the stored volume"):
        store.read_crop(tmp_path / "big", (35, 0, 0), (8, 8, 8))


def test_bad_item_ids_rejected(tmp_path):
    with pytest.raises(cf.InvalidParameterError, match="folder name"):
        store.write_item(
            tmp_path, "../evil", {"images": np.zeros((1, 1, 1))}, cf.Geometry((1, 1, 1))
        )
