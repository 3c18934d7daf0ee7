"""A pipeline runs a run of item actions item by item (each item through all of them, then one
assembly) — and the result is exactly what the same actions give action by action.

The reference is the action-by-action path: the same action objects called on the batch one
after another (``action(batch)``), from the same seed and batch position.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

import ctflow as cf
from ctflow import ragged
from ctflow.actions.base import ItemAction
from ctflow.execution import execute
from ctflow.ragged import Ragged
from ctflow.synthetic import make_dataset

SHAPES = [(20, 40, 48), (24, 48, 36), (16, 56, 56), (18, 44, 40)]


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    dst = tmp_path_factory.mktemp("mixed")
    return make_dataset(
        dst, n_scans=4, shapes=SHAPES, orientations=["LPS", "RAS", "RAS", "LPS"], seed=4
    )


@pytest.fixture(scope="module")
def mixed(mixed_files: tuple[list[Path], Path]) -> cf.Dataset:
    return cf.Dataset.from_paths(mixed_files[0])


def _actions() -> list[Any]:
    pipe = (
        cf.Pipeline()
        .load()
        .reorient("LPS")
        .unify_spacing((1.5, 1.5, 1.5), dtype="int16")
        .random_flip(axes=(0, 1, 2), p=0.5)
        .random_affine(degrees=10, scales=0.1, p=1.0)
        .random_noise(std_hu=(5.0, 20.0), p=1.0)
        .normalize_hu(-1000.0, 400.0)  # a batch action: ends the run of item actions
        .central_crop((8, 12, 12))
    )
    return list(pipe.actions)


def _action_by_action(
    ds: cf.Dataset, actions: Sequence[Any], seed: int, position: int = 7
) -> cf.CTBatch:
    batch = ds.create_batch(ds.ids, n_workers=2)
    batch.set_random_state(seed, position)
    for action in actions:
        batch = action(batch)
    return batch


def test_item_by_item_equals_action_by_action(mixed):
    actions = _actions()
    ref = _action_by_action(mixed, actions, seed=11)
    batch = mixed.create_batch(mixed.ids, n_workers=2)
    outcome = execute(batch, actions, position=7, seed=11)
    assert outcome.error is None and outcome.done == list(mixed.ids)
    got = outcome.batch
    assert got.ids == ref.ids
    for k in range(len(ref)):
        np.testing.assert_array_equal(got[k].images, ref[k].images)
        np.testing.assert_allclose(got[k].spacing, ref[k].spacing, rtol=0, atol=0)
        np.testing.assert_allclose(got[k].origin, ref[k].origin, rtol=0, atol=0)
        np.testing.assert_allclose(got[k].direction, ref[k].direction, rtol=0, atol=0)
        assert got.history[k] == ref.history[k]  # the same draws, recorded the same way
    assert got.images.shape == (4 * 8, 12, 12)  # one skyscraper again after the run
    # every action is timed once per item or batch; item actions summed over the items
    assert set(outcome.timings) == {a.label for a in actions}


def test_the_same_whatever_the_threads(mixed):
    actions = _actions()[:6]
    runs = []
    for workers in (1, 2, 3):
        batch = mixed.create_batch(mixed.ids, n_workers=workers)
        runs.append(execute(batch, actions, position=2, seed=5).batch)
    for other in runs[1:]:
        for k in range(len(mixed.ids)):
            np.testing.assert_array_equal(other[k].images, runs[0][k].images)


def test_fetch_nodules_joins_the_run_and_gives_what_it_gives_on_the_batch(mixed, mixed_files):
    """A batch action whose result for an item depends on that item only (``fetch_nodules``)
    runs item by item inside the run: load is no longer a run of its own, whose items were read
    apart and then copied into one buffer before the next action."""
    actions = list(
        cf.Pipeline()
        .load()
        .fetch_nodules(mixed_files[1])
        .unify_spacing((2.0, 2.0, 2.0), dtype="int16")
        .create_mask()
        .actions
    )
    calls: list[int] = []
    fetch = actions[1]
    run = type(fetch).run

    def counted(self: Any, batch: cf.CTBatch) -> cf.CTBatch:
        calls.append(len(batch))
        return run(self, batch)

    ref = _action_by_action(mixed, actions, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(fetch), "run", counted)
        got = execute(mixed.create_batch(mixed.ids, n_workers=2), actions, seed=3, position=7)
    assert calls == [1, 1, 1, 1]  # once per item, inside the run
    assert got.error is None
    batch = got.batch
    assert sum(int(batch[k].masks.sum()) for k in range(len(batch))) > 0  # nodules drawn
    for k in range(len(ref)):
        np.testing.assert_array_equal(batch[k].images, ref[k].images)
        np.testing.assert_array_equal(batch[k].masks, ref[k].masks)
        assert batch.history[k] == ref.history[k]
    key = ["id", "z", "y", "x", "diameter"]
    by_id = ref.nodules[key].sort_values(key).reset_index(drop=True)
    assert batch.nodules[key].sort_values(key).reset_index(drop=True).equals(by_id)


def test_a_releasing_concat_frees_each_components_items_before_the_next_buffer(monkeypatch):
    """The run's final assembly (``concat_batches(..., release=True)``): each component's item
    arrays go back to the pool once copied, so the next component's buffer may reuse them; the
    peak is the items plus one component's buffer, not plus every component's."""
    from ctflow import memory
    from ctflow.batch_build import concat_batches

    monkeypatch.setattr(memory, "_pool", memory._Pool(512 * 2**20))
    shapes = [(40, 256, 256), (30, 256, 256)]  # 5 and 3.75 MiB of int16 ...
    monkeypatch.setattr(memory, "MIN_BYTES", 2**20)  # ... pooled
    parts, item_addresses = [], set()
    for k, shape in enumerate(shapes):
        images = memory.empty(shape, np.int16)
        images.fill(k)
        masks = memory.empty(shape, np.uint8)
        masks.fill(1)
        item_addresses.add(images.ctypes.data)
        parts.append(cf.CTBatch.from_arrays([images], ids=[f"s{k}"], masks=[masks]))
        del images, masks
    idle_when_asked: list[set[int]] = []
    take = memory._pool.take

    def traced(nbytes: int) -> Any:
        idle_when_asked.append({buf.addr for buf in memory._pool.idle})
        return take(nbytes)

    monkeypatch.setattr(memory._pool, "take", traced)
    out = concat_batches(cf.CTBatch, parts, release=True)
    assert len(idle_when_asked) == 2  # images, then masks
    assert not idle_when_asked[0] & item_addresses  # the items' images in use while copied ...
    assert item_addresses <= idle_when_asked[1]  # ... and idle before the masks' buffer is cut
    assert not any(p.has("images") or p.has("masks") for p in parts)  # the parts are emptied
    for k, shape in enumerate(shapes):
        assert out[k].images.shape == shape
        assert (out[k].images == k).all() and (out[k].masks == 1).all()
    halves = [out.select([0], copy=False), out.select([1], copy=False)]
    kept = concat_batches(cf.CTBatch, halves)  # by default the batches keep their arrays
    assert kept.has("images") and all(h.has("images") and h.has("masks") for h in halves)


def test_a_failing_item_fails_alone_mid_run_under_skip(mixed):
    bad = mixed.ids[1]

    class FailOn(ItemAction):
        name = ""  # not registered
        item_id: str = ""

        def apply(self, item: Any, params: Any) -> Any:
            if item.id == self.item_id:
                raise ValueError("broken on purpose")
            return None

    actions = [*_actions()[:3], FailOn(item_id=bad), *_actions()[3:5]]
    batch = mixed.create_batch(mixed.ids, n_workers=2)
    outcome = execute(batch, actions, position=0, seed=1, on_error="skip")
    assert outcome.done == [i for i in mixed.ids if i != bad]
    assert [i for i, _ in outcome.failed] == [bad]
    assert "FailOn" in outcome.failed[0][1] and "broken on purpose" in outcome.failed[0][1]
    assert outcome.batch.ids == outcome.done
    same = [*_actions()[:3], FailOn(item_id="nobody"), *_actions()[3:5]]  # the same draws
    ref = _action_by_action(mixed, same, seed=1, position=0)
    for k, item_id in enumerate(outcome.batch.ids):
        np.testing.assert_array_equal(outcome.batch[k].images, ref[item_id].images)
    raised = execute(mixed.create_batch(mixed.ids), actions, position=0, seed=1)
    assert isinstance(raised.error, ValueError) and raised.batch is None
    assert any(repr(bad) in note for note in raised.error.__notes__)  # the item is named


def test_an_item_action_that_must_see_the_batch_can_opt_out(mixed):
    seen: list[int] = []

    class Counting(ItemAction):
        name = ""
        item_by_item: ClassVar[bool] = False

        def __call__(self, batch: cf.CTBatch) -> cf.CTBatch:
            seen.append(len(batch))
            return super().__call__(batch)

        def apply(self, item: Any, params: Any) -> Any:
            return None

    class CountingPerItem(Counting):
        item_by_item: ClassVar[bool] = True

    batch = mixed.create_batch(mixed.ids)
    execute(batch, [_actions()[0], Counting(), CountingPerItem(), CountingPerItem()], seed=0)
    assert seen == [4] + [1] * 8  # the run of two goes item by item
    seen.clear()
    execute(mixed.create_batch(mixed.ids), [_actions()[0], Counting(), CountingPerItem()], seed=0)
    assert seen == [4, 4]  # a lone item action runs on the batch (its items side by side)


def test_stopping_mid_run_reports_unfinished_items_as_interrupted(mixed):
    asked = {"n": 0}

    def should_stop() -> bool:
        asked["n"] += 1
        return asked["n"] > 6  # a few actions of some items have run

    batch = mixed.create_batch(mixed.ids, n_workers=1)
    outcome = execute(batch, _actions()[:5], position=0, seed=0, should_stop=should_stop)
    assert outcome.interrupted  # some items never finished ...
    assert set(outcome.done).isdisjoint(outcome.interrupted)
    assert set(outcome.done) | set(outcome.interrupted) == set(mixed.ids)
    assert outcome.batch.ids == outcome.done  # ... and are not handed on half-done


def test_dump_inside_the_run_writes_every_item(mixed, tmp_path: Path):
    out = tmp_path / "out"
    pipe = mixed >> cf.Pipeline().load().reorient("RAS").dump(out)
    report = pipe.run(batch_size=4, n_workers=2)
    assert sorted(report.done) == sorted(mixed.ids)
    back = cf.Dataset.from_glob(str(out / "*"), dirs=True)
    assert sorted(back.ids) == sorted(mixed.ids)
    loaded = back.create_batch(back.ids).load()
    ref = mixed.create_batch(back.ids).load().reorient("RAS")
    for k in range(len(ref)):
        np.testing.assert_array_equal(loaded[k].images, ref[k].images)


@pytest.mark.parametrize("dtype", [None, np.float32])
def test_parallel_copy_into_one_buffer_equals_a_plain_concatenation(monkeypatch, dtype):
    monkeypatch.setattr(ragged, "PARALLEL_COPY_BYTES", 1)
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(-1000, 1000, size=s).astype(np.int16)
        for s in [(30, 70, 50), (1, 3, 3), (45, 64, 64), (0, 5, 5), (20, 33, 41)]
    ]
    r = Ragged.from_items(arrays, dtype=dtype)
    ref = np.concatenate([a.reshape(-1) for a in arrays]).astype(dtype or np.int16)
    assert r.buffer.dtype == ref.dtype
    np.testing.assert_array_equal(r.buffer, ref)
    for k, a in enumerate(arrays):
        np.testing.assert_array_equal(r.item(k), a)
