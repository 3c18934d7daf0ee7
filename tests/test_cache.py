"""cache(): what precedes it runs once per item, later epochs start from the cached items."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import ctflow as cf
from ctflow.synthetic import make_dataset


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    paths, _ = make_dataset(tmp_path_factory.mktemp("scans"), n_scans=4, shape=(32, 64, 64))
    return cf.Dataset.from_paths(paths)


class Counter:
    """Counts the items the actions before cache() see (a plain function in the pipeline)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, batch):
        self.seen.extend(batch.ids)
        return batch


def _pipe(counter, dir, spacing=1.0, ram_gb=1.0):
    return (
        cf.Pipeline()
        .load()
        .call(counter)
        .unify_spacing(spacing)
        .normalize_hu()
        .cache(ram_gb=ram_gb, dir=dir)
        .central_crop((16, 32, 32))
    )


def _epochs(ds, pipe, n=3, **kw):
    return [
        [np.array(b.images) for b in (ds >> pipe).gen_batch(batch_size=2, seed=0, **kw)]
        for _ in range(n)
    ]


def test_later_epochs_start_from_the_cache_and_equal_the_uncached_run(scans, tmp_path):
    counter = Counter()
    runs = _epochs(scans, _pipe(counter, tmp_path / "c"))
    assert sorted(counter.seen) == sorted(scans.ids)  # each item made once, in the first epoch
    plain = cf.Pipeline(_pipe(Counter(), None).actions[:4]).central_crop((16, 32, 32))
    ref = _epochs(scans, plain, n=1)[0]
    for epoch in runs:
        for a, b in zip(epoch, ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_changed_action_before_the_cache_is_a_miss(scans, tmp_path):
    first, second = Counter(), Counter()
    _epochs(scans, _pipe(first, tmp_path / "c"), n=2)
    _epochs(scans, _pipe(second, tmp_path / "c", spacing=1.5), n=2)
    assert len(first.seen) == len(second.seen) == len(scans)  # the 1.5 mm run made its own


def test_items_beyond_the_ram_budget_spill_to_the_folder(scans, tmp_path):
    from ctflow.actions import Cache

    counter = Counter()
    budget = 2e-4  # ~200 KiB: room for one item of this size, not four
    pipe = _pipe(counter, tmp_path / "spill", ram_gb=budget)
    runs = _epochs(scans, pipe)
    store = Cache(budget, tmp_path / "spill").store()
    assert store.ram_used <= budget * 2**30
    assert store.spilled >= 2 and len(list((tmp_path / "spill").iterdir())) >= 2
    assert len(counter.seen) == len(scans)  # spilled items are read back, not made again
    for a, b in zip(runs[0], runs[2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_without_a_folder_items_that_do_not_fit_are_made_again(scans, tmp_path):
    counter = Counter()
    _epochs(scans, _pipe(counter, None, ram_gb=0.0), n=2)
    assert len(counter.seen) == 2 * len(scans)


def test_prefetch_and_threads_give_the_same_batches(scans, tmp_path):
    pipe = _pipe(Counter(), tmp_path / "c").random_flip()
    one = _epochs(scans, pipe, n=2, prefetch=0, n_workers=1)
    two = _epochs(scans, pipe, n=2, prefetch=2, n_workers=2)
    flat = lambda runs: [b for epoch in runs for b in epoch]  # noqa: E731
    for a, b in zip(flat(one), flat(two), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_record_shows_the_cache(scans, tmp_path):
    b = (scans >> _pipe(Counter(), tmp_path / "c")).next_batch(1, seed=0)
    assert [h["action"] for h in b.history[0]] == [
        "load",
        "call",
        "unify_spacing",
        "normalize_hu",
        "cache",
        "central_crop",
    ]


def test_cache_after_actions_that_make_new_items_is_refused(scans, tmp_path):
    pipe = cf.Pipeline().load().sample_crops(2, (8, 8, 8)).cache(dir=tmp_path)
    with pytest.raises(cf.InvalidParameterError, match="put cache"):
        (scans >> pipe).next_batch(1, seed=0)


def test_bad_values_are_refused_when_written():
    with pytest.raises(cf.InvalidParameterError, match="cache: ram_gb"):
        cf.Pipeline().cache(ram_gb=-1)


# -- a cache on object storage (the S3 server of tests/conftest.py) ------------------------------


@pytest.fixture(scope="module")
def s3_scans(s3_server, scans):
    """The scans uploaded to S3 (.mhd + .raw), as a dataset with the server's options."""
    fs = s3_server.fs
    urls = {}
    for item_id, path in scans.sources.items():
        for p in (Path(path), Path(path).with_suffix(".raw")):
            fs.put_file(str(p), f"{s3_server.bucket}/cache-scans/{p.name}")
        urls[item_id] = f"s3://{s3_server.bucket}/cache-scans/{Path(path).name}"
    return cf.Dataset.from_paths(urls, storage_options=s3_server.options)


def _objects(fs, prefix):
    fs.invalidate_cache()
    return sorted(fs.find(prefix))


def test_a_cache_on_s3_is_read_back_by_the_next_run_and_holds_no_secret(
    s3_server, scans, s3_scans, caplog
):
    from ctflow.actions import Cache

    caplog.set_level(logging.DEBUG)
    fs, bucket = s3_server.fs, s3_server.bucket
    url = f"s3://{bucket}/item-cache"
    counter = Counter()
    pipe = _pipe(counter, url, ram_gb=0.0)  # nothing fits in RAM: every item goes to S3
    first = _epochs(s3_scans, pipe, n=1)[0]
    assert sorted(counter.seen) == sorted(scans.ids)
    objects = _objects(fs, f"{bucket}/item-cache")
    keys = sorted({o.split("/")[2] for o in objects})
    assert len(keys) == len(scans)  # one dump folder per item, each with its manifest
    for key in keys:
        names = [o.rsplit("/", 1)[1] for o in objects if o.split("/")[2] == key]
        assert "meta.json" in names and any(n.startswith("images.") for n in names), names
    store = Cache(0.0, url).store()
    assert store.url == url and store.spilled == len(scans) and store.ram_used == 0
    before = store.read_back
    second = _epochs(s3_scans, pipe, n=1)[0]
    assert len(counter.seen) == len(scans)  # the actions before cache() did not run again
    assert store.read_back - before == len(scans)  # every item came back from the bucket
    # the same arrays, and the same as the uncached pipeline on the local files
    plain = cf.Pipeline(_pipe(Counter(), None).actions[:4]).central_crop((16, 32, 32))
    reference = _epochs(scans, plain, n=1)[0]
    for a, b, c in zip(first, second, reference, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    # the credentials are in no object, the record names the source URL
    for obj in objects:
        assert s3_server.secret.encode() not in fs.cat_file(obj), obj
    meta = json.loads(fs.cat_file(f"{bucket}/item-cache/{keys[0]}/meta.json"))
    assert meta["source"].startswith(f"s3://{bucket}/cache-scans/")
    assert s3_server.secret not in caplog.text and s3_server.secret not in repr(pipe)


def test_an_item_without_meta_json_on_s3_is_made_again(s3_server, s3_scans):
    fs, bucket = s3_server.fs, s3_server.bucket
    url = f"s3://{bucket}/half-cache"
    counter = Counter()
    pipe = _pipe(counter, url, spacing=1.25, ram_gb=0.0)
    first = _epochs(s3_scans, pipe, n=1)[0]
    keys = sorted({o.split("/")[2] for o in _objects(fs, f"{bucket}/half-cache")})
    fs.rm(f"{bucket}/half-cache/{keys[0]}/meta.json")  # an upload that stopped before it
    again = _epochs(s3_scans, pipe, n=1)[0]
    assert len(counter.seen) == len(s3_scans) + 1  # that item only, made and uploaded again
    assert fs.exists(f"{bucket}/half-cache/{keys[0]}/meta.json")
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_missing_bucket_or_unknown_scheme_is_a_typed_error_naming_it(s3_server, s3_scans):
    missing = cf.Pipeline().load().cache(ram_gb=0, dir="s3://no-such-bucket-here/cache")
    with pytest.raises(cf.InvalidParameterError, match=r"no-such-bucket-here.*does not exist") as e:
        (s3_scans >> missing).next_batch(1, seed=0)
    assert s3_server.secret not in str(e.value)
    unknown = cf.Pipeline().load().cache(ram_gb=0, dir="nosuchfs://bucket/cache")
    with pytest.raises(cf.InvalidParameterError, match="cache: dir nosuchfs://bucket/cache"):
        (s3_scans >> unknown).next_batch(1, seed=0)
    report = (s3_scans >> missing).run(batch_size=2, on_error="skip")
    assert sorted(i for i, _ in report.failed) == sorted(s3_scans.ids)
    assert "no-such-bucket-here" in report.summary()
    with pytest.raises(cf.InvalidParameterError, match="read-only"):
        cf.Pipeline().cache(dir="https://example.org/cache")
