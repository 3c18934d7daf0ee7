"""cache(): what precedes it runs once per item, later epochs start from the cached items."""

from __future__ import annotations

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
