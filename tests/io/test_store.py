"""The ctflow dump format: bit-identical round trips, atomic writes, resume with skip_existing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import blosc2
import numpy as np
import pandas as pd
import pytest

import ctflow as cf
from ctflow.io import store


def _array(folder: Path, name: str = "images") -> Path:
    """The file of a stored array, as the item's meta.json names it."""
    meta = json.loads((folder / "meta.json").read_text())
    return folder / meta["components"][name].get("file", f"{name}.b2nd")


def _as_format_1(folder: Path) -> None:
    """Turn an item into what format 1 wrote: ``<name>.b2nd``, no file names, no checksums."""
    meta = json.loads((folder / "meta.json").read_text())
    for name, spec in meta["components"].items():
        (folder / spec.pop("file")).rename(folder / f"{name}.b2nd")
        del spec["chunk_crc32"]
    meta["format_version"] = 1
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


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
    real = store.writer._write_array

    def failing(path, data, compression):
        if path.name == "masks.b2nd":
            raise OSError("disk full (simulated)")
        return real(path, data, compression)

    monkeypatch.setattr(store.writer, "_write_array", failing)
    with pytest.raises(OSError, match="disk full"):
        b.dump(tmp_path / "out")
    leftovers = list((tmp_path / "out").iterdir())
    assert leftovers == []  # no item folder and no temporary folder
    # an existing complete item survives a failed overwrite untouched
    monkeypatch.setattr(store.writer, "_write_array", real)
    b.dump(tmp_path / "out")
    before = store.read_item(tmp_path / "out" / "a").components["images"].copy()
    monkeypatch.setattr(store.writer, "_write_array", failing)
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
    with pytest.raises(cf.InvalidParameterError, match=r"dump: item id .*path separator"):
        store.write_item(
            tmp_path, "../evil", {"images": np.zeros((1, 1, 1))}, cf.Geometry((1, 1, 1))
        )


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dumps_are_byte_identical_whoever_writes_them(tmp_path, rng):
    b = _batch(rng)
    b.dump(tmp_path / "one")
    b.dump(tmp_path / "two")
    b.dump(tmp_path / "one")  # rewritten in place (a rerun of the same work)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    names = [re.sub(r"\.[0-9a-f]{16}\.", ".<hash>.", name) for name in sorted(one)]
    assert names == [
        "a/images.<hash>.b2nd", "a/masks.<hash>.b2nd", "a/meta.json",
        "b/images.<hash>.b2nd", "b/masks.<hash>.b2nd", "b/meta.json",
    ]  # fmt: skip
    assert one == two  # file names included
    # meta.json holds only what the item is: no time, host, pid or thread count
    meta = json.loads(one["b/meta.json"])
    assert set(meta) == {
        "format", "format_version", "ctflow_version", "id", "components", "spacing", "origin",
        "direction", "nodules", "source", "warnings", "history",
    }  # fmt: skip
    # and the bytes do depend on the data
    b.images[0, 0, 0] += 1
    b.dump(tmp_path / "three")
    old, new = _array(tmp_path / "one" / "a"), _array(tmp_path / "three" / "a")
    assert new.name != old.name and new.read_bytes() != old.read_bytes()
    # a rewrite with other content leaves only the new arrays
    b.dump(tmp_path / "one")
    assert _files(tmp_path / "one") == _files(tmp_path / "three")


def test_concurrent_writers_of_one_item_leave_one_whole_copy(tmp_path):
    n_writers, rounds = 4, 5
    barrier = threading.Barrier(n_writers)
    errors = []

    def writer(k):
        images = np.full((6, 40, 40), k, np.int16)
        masks = np.full((6, 40, 40), k, np.uint8)
        try:
            for _ in range(rounds):
                barrier.wait(timeout=20)
                store.write_item(
                    tmp_path, "same", {"images": images, "masks": masks},
                    cf.Geometry((1.0, 1.0, float(k + 1))), source=f"writer{k}",
                )  # fmt: skip
        except Exception as exc:  # reported below, with the writer's number
            errors.append((k, exc))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert os.listdir(tmp_path) == ["same"]  # one item, no staging or replaced copies left
    item = store.read_item(tmp_path / "same")
    k = int(item.source.removeprefix("writer"))
    # images, masks and meta all come from the same writer: never a mix
    assert (item.components["images"] == k).all() and (item.components["masks"] == k).all()
    assert item.geometry.spacing[2] == k + 1


def test_concurrent_writers_of_many_items_share_the_staging_folder(tmp_path):
    # writers create and remove the shared staging folder all the time: none may trip on another
    n_writers, n_items = 4, 40
    errors = []

    def writer(k):
        try:
            for j in range(n_items):
                images = np.full((2, 4, 4), j, np.int16)
                store.write_item(
                    tmp_path, f"w{k}-{j:02d}", {"images": images}, cf.Geometry((1, 1, 1))
                )
        except Exception as exc:  # reported below
            errors.append((k, exc))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(f"w{k}-{j:02d}" for k in range(n_writers) for j in range(n_items))
    for name in names:
        j = int(name.split("-")[1])
        assert (store.read_item(tmp_path / name).components["images"] == j).all()


_WRITER_SCRIPT = """
import sys
import numpy as np
from ctflow.geometry import Geometry
from ctflow.io.store import write_item

dst = sys.argv[1]
images = np.random.default_rng(0).normal(0, 300, size=(128, 256, 256)).astype(np.float32)
print("READY", flush=True)
k = 0
while True:
    write_item(dst, f"item{k:04d}", {"images": images}, Geometry((1.0, 1.0, 1.0)))
    k += 1
"""


def _in_progress(staging: Path) -> bool:
    try:
        return any(any(p.iterdir()) for p in staging.iterdir())
    except FileNotFoundError:
        return False


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_writer_interrupted_mid_item_leaves_no_half_item(tmp_path, sig):
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(_WRITER_SCRIPT))
    dst = tmp_path / "dump"
    staging = dst / store.STAGING
    proc = subprocess.Popen(
        [sys.executable, str(script), str(dst)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        end = time.monotonic() + 60  # one whole item written, and the next one half way
        while time.monotonic() < end and not (
            dst.is_dir()
            and any(not p.name.startswith(".") for p in dst.iterdir())
            and _in_progress(staging)
        ):
            time.sleep(0.005)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    items = [p for p in dst.iterdir() if not p.name.startswith(".")]
    assert items, stderr
    expected = np.random.default_rng(0).normal(0, 300, size=(128, 256, 256)).astype(np.float32)
    for item in items:  # whatever looks like an item is whole
        np.testing.assert_array_equal(store.read_item(item).components["images"], expected)
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr
        assert not staging.exists()  # the writer cleaned up after itself
        return
    # a killed writer cannot clean up: its staging folder stays, hidden, until the next write
    # on this host sees that the process is gone
    left = os.listdir(staging)
    assert len(left) == 1 and f"~{proc.pid}~" in left[0]
    store.write_item(
        dst, "another", {"images": np.zeros((1, 2, 2), np.int16)}, cf.Geometry((1, 1, 1))
    )
    assert not staging.exists()
    assert store.is_item_dir(dst / "another")


def test_stale_writes_of_dead_processes_only_are_removed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(done.stdout)
    staging = tmp_path / store.STAGING
    host = store.staging._host()
    dead = staging / f"{host}~{dead_pid}~0123456789ab~x"
    alive = staging / f"{host}~{os.getpid()}~0123456789ab~y"
    elsewhere = staging / f"some-other-host~{dead_pid}~0123456789ab~z"
    for folder in (dead, alive, elsewhere):
        folder.mkdir(parents=True)
        (folder / "images.b2nd").write_bytes(b"half")
    store.write_item(
        tmp_path, "new", {"images": np.zeros((1, 2, 2), np.int16)}, cf.Geometry((1, 1, 1))
    )
    assert sorted(os.listdir(staging)) == sorted([alive.name, elsewhere.name])
    assert store.remove_stale_writes(tmp_path) == []  # nothing else provably dead
    removed = store.remove_stale_writes(tmp_path, all_writers=True)
    assert sorted(removed) == sorted([alive, elsewhere])
    assert os.listdir(tmp_path) == ["new"]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((70, 512, 512), np.int16), ((70, 300, 300), np.float32), ((33, 96, 80), np.uint8)],
)
def test_whole_plane_chunks_round_trip_exactly(tmp_path, rng, shape, dtype, compression):
    """Several chunks, the last one overhanging the volume; read back by chunks and by crops."""
    arr = rng.integers(-1000, 2000, size=shape).astype(dtype)
    store.write_item(
        tmp_path, "x", {"images": arr}, cf.Geometry((1, 1, 1)), compression=compression
    )
    stored = blosc2.open(str(_array(tmp_path / "x")))
    z, y, x = shape
    cz = stored.chunks[0]
    assert tuple(stored.chunks[1:]) == (y, x) and tuple(stored.blocks[1:]) == (y, x)
    assert cz % stored.blocks[0] == 0
    plane = y * x * np.dtype(dtype).itemsize
    assert cz * plane <= 8 * 2**20 or cz == stored.blocks[0]
    if shape[0] == 70:
        assert -(-z // cz) > 1 and z % cz != 0  # several chunks and an overhanging last one
    codec = {"lz4": blosc2.Codec.LZ4, "zstd": blosc2.Codec.ZSTD}[compression]
    assert stored.schunk.cparams.codec == codec
    back = store.read_item(tmp_path / "x").components["images"]
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)
    crop, _ = store.read_crop(tmp_path / "x", (cz - 3, 5, 7), (z - cz + 3, 20, 30))
    np.testing.assert_array_equal(crop, arr[cz - 3 :, 5:25, 7:37])


def test_zstd_is_smaller_and_lz4_is_the_default(tmp_path):
    vol = cf.synthetic.make_phantom(shape=(48, 128, 128), seed=3)[0].images
    store.write_item(tmp_path / "l", "x", {"images": vol}, cf.Geometry((1, 1, 1)))
    store.write_item(
        tmp_path / "z", "x", {"images": vol}, cf.Geometry((1, 1, 1)), compression="zstd"
    )
    lz4 = _array(tmp_path / "l" / "x").stat().st_size
    zstd = _array(tmp_path / "z" / "x").stat().st_size
    codec = blosc2.open(str(_array(tmp_path / "l" / "x"))).schunk.cparams.codec
    assert codec == blosc2.Codec.LZ4
    assert zstd < lz4 < vol.nbytes
    with pytest.raises(cf.InvalidParameterError, match="compression must be one of"):
        store.write_item(tmp_path / "bad", "x", {"images": vol}, cf.Geometry((1, 1, 1)),
                         compression="gzip")  # fmt: skip
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_dumps_of_the_earlier_tiled_layout_still_load(tmp_path, rng):
    """Format version 1 files written with 256x256 in-plane tiles and ZSTD (before LZ4 planes)."""
    arr = rng.integers(-1000, 2000, size=(40, 300, 280)).astype(np.int16)
    store.write_item(tmp_path, "old", {"images": arr}, cf.Geometry((1, 1, 1)))
    _as_format_1(tmp_path / "old")
    path = tmp_path / "old" / "images.b2nd"
    path.unlink()
    blosc2.asarray(
        arr,
        urlpath=str(path),
        mode="w",
        chunks=(16, 256, 256),
        cparams=blosc2.CParams(codec=blosc2.Codec.ZSTD, clevel=1, filters=[blosc2.Filter.SHUFFLE]),
    )
    np.testing.assert_array_equal(store.read_item(tmp_path / "old").components["images"], arr)
    crop, _ = store.read_crop(tmp_path / "old", (10, 250, 250), (10, 50, 30))
    np.testing.assert_array_equal(crop, arr[10:20, 250:300, 250:280])


@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_damaged_chunks_give_a_typed_error(tmp_path, rng, damage):
    arr = rng.integers(-1000, 1000, size=(70, 256, 256)).astype(np.int16)
    store.write_item(tmp_path, "a", {"images": arr}, cf.Geometry((1, 1, 1)))
    path = _array(tmp_path / "a")
    raw = path.read_bytes()
    third = len(raw) // 3
    path.write_bytes(
        raw[: len(raw) // 2]
        if damage == "truncate"
        else raw[:third] + bytes(1000) + raw[third + 1000 :]
    )
    with pytest.raises(cf.CorruptFileError, match=r"images\.[0-9a-f]{16}\.b2nd"):
        store.read_item(tmp_path / "a")


def _blosc2_frame(data, compression="lz4"):
    """The file blosc2 itself makes of a one-chunk array (the reference for crops)."""
    codec, clevel = store.COMPRESSIONS[compression]
    flags = {"codec": codec, "clevel": clevel, "filters": [blosc2.Filter.SHUFFLE]}
    blocks = store.arrays._layout(data.shape, data.itemsize)[1]
    flags = store.arrays._chunk_flags(data, flags)  # dense floats: stored as they are
    arr = blosc2.empty(data.shape, data.dtype, chunks=data.shape, blocks=blocks,
                       cparams=blosc2.CParams(nthreads=1, **flags))  # fmt: skip
    blocksize = int(np.prod(arr.blocks)) * data.itemsize
    arr.schunk.update_chunk(0, blosc2.compress2(
        data, typesize=data.itemsize, blocksize=blocksize, nthreads=1, **flags))  # fmt: skip
    return arr.schunk.to_cframe()


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_crop_files_are_exactly_what_blosc2_writes(tmp_path, rng, monkeypatch, compression):
    # crops (one-chunk arrays) are framed by ctflow from a frame learnt from blosc2 per layout;
    # every file must be byte for byte blosc2's own, whatever came before it
    crops = [
        rng.normal(0, 300, (16, 32, 32)).astype(np.float32),
        np.zeros((16, 32, 32), np.float32),  # a special chunk blosc2 keeps out of the data
        rng.normal(0, 300, (16, 32, 32)).astype(np.float32),
        np.full((16, 32, 32), 0.25, np.float32),  # a run of one value
        (rng.random((16, 32, 32)) > 0.9).astype(np.uint8),
        np.zeros((16, 32, 32), np.uint8),
        rng.integers(-1000, 400, (5, 7, 9)).astype(np.int16),
    ]
    geometry = cf.Geometry((1.0, 1.0, 1.0))
    monkeypatch.setattr(store.frames, "_crop_frames", {})
    for k, crop in enumerate(crops):
        store.write_item(tmp_path / "ours", f"c{k}", {"images": crop}, geometry,
                         compression=compression)  # fmt: skip
    assert all(v is not None for v in store.frames._crop_frames.values())  # the model held
    # where a layout's frame cannot be learnt, blosc2 frames every crop: same files
    monkeypatch.setattr(store.frames, "_crop_frames", {})
    monkeypatch.setattr(store.frames._CropFrame, "learn", classmethod(lambda cls, *a: None))
    for k, crop in enumerate(crops):
        store.write_item(tmp_path / "blosc2", f"c{k}", {"images": crop}, geometry,
                         compression=compression)  # fmt: skip
    for k, crop in enumerate(crops):
        ours = _array(tmp_path / "ours" / f"c{k}").read_bytes()
        assert ours == _blosc2_frame(crop, compression), f"crop {k}"
        assert ours == _array(tmp_path / "blosc2" / f"c{k}").read_bytes()
        arr = blosc2.open(str(_array(tmp_path / "ours" / f"c{k}")), mode="r")
        np.testing.assert_array_equal(arr[...], crop)  # blosc2's own reader


def _stored_as_is(path: Path) -> list[bool]:
    """Whether each chunk of an array file is kept uncompressed (blosc2's "memcpyed" flag)."""
    schunk = blosc2.open(str(path), mode="r").schunk
    return [bool(schunk.get_chunk(k)[2] & 0x2) for k in range(schunk.nchunks)]


def _normalised_ct(shape):
    """A phantom with HU windowed into [0, 1] float32, as a pipeline dumps it."""
    from ctflow.synthetic import make_phantom

    hu = make_phantom(shape=shape, seed=4)[0].images.astype(np.float32)
    return np.clip((hu + 1000.0) / 1400.0, 0.0, 1.0)


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_dense_float_chunks_are_stored_as_they_are_with_lz4(tmp_path, compression):
    # 3 chunks of 32 planes, the last one overhanging; the middle one empty, as a sparse
    # probability map is: LZ4 is worth it there, not on the noisy mantissas of a CT
    images = _normalised_ct((70, 256, 256))
    images[32:64] = 0.0
    crop = np.ascontiguousarray(images[:16, 40:104, 40:104])  # one chunk
    for item, arr in (("x", images), ("c", crop)):
        store.write_item(tmp_path, item, {"images": arr}, cf.Geometry((1, 1, 1)),
                         compression=compression)  # fmt: skip
        np.testing.assert_array_equal(store.read_item(tmp_path / item).components["images"], arr)
    if compression == "lz4":
        assert _stored_as_is(_array(tmp_path / "x")) == [True, False, True]
        assert _stored_as_is(_array(tmp_path / "c")) == [True]
    else:  # zstd is asked for small files: every chunk compressed
        assert _stored_as_is(_array(tmp_path / "x")) == [False, False, False]
    box, _ = store.read_crop(tmp_path / "x", (20, 5, 7), (40, 30, 20))  # across all three
    np.testing.assert_array_equal(box, images[20:60, 5:35, 7:27])
    arr = blosc2.open(str(_array(tmp_path / "x")), mode="r")
    np.testing.assert_array_equal(arr[...], images)  # blosc2's own reader


def test_uncompressed_arrays_are_written_from_memory_exactly_as_blosc2_writes(
    tmp_path, monkeypatch
):
    # an array whose chunks are all stored as they are is written in a frame learnt from
    # blosc2's first file of the layout and checked on the second: from the third on, no
    # chunk is copied, and every file is byte for byte what blosc2 writes
    monkeypatch.setattr(store.frames, "_raw_frames", {})
    geometry = cf.Geometry((1.0, 1.0, 1.0))
    scans = [_normalised_ct((70, 256, 256)) for _ in range(4)]  # last chunk overhangs
    for k, scan in enumerate(scans):
        scan[k::7] += np.float32(0.001 * k)  # different data every time
        store.write_item(tmp_path / "ours", f"s{k}", {"images": scan}, geometry)
    states = list(store.frames._raw_frames.values())
    assert [state for state, _ in states] == ["ready"]
    calls = []
    real = store.arrays._write_raw
    monkeypatch.setattr(store.arrays, "_write_raw", lambda *a: calls.append(1) or real(*a))
    store.write_item(tmp_path / "ours", "s3", {"images": scans[3]}, geometry)
    assert calls == [1]  # the frame was used
    # the reference: blosc2's frame code for every file
    monkeypatch.setattr(store.frames, "_raw_frames", {})
    monkeypatch.setattr(store.frames._RawFrame, "from_file", classmethod(lambda cls, *a: None))
    for k, scan in enumerate(scans):
        store.write_item(tmp_path / "blosc2", f"s{k}", {"images": scan}, geometry)
        ours = _array(tmp_path / "ours" / f"s{k}")
        assert ours.read_bytes() == _array(tmp_path / "blosc2" / f"s{k}").read_bytes()
        assert _stored_as_is(ours) == [True, True, True]
        meta = store.read_meta(tmp_path / "ours" / f"s{k}")
        theirs = store.read_meta(tmp_path / "blosc2" / f"s{k}")
        assert meta["components"] == theirs["components"]  # checksums and chunk places
        np.testing.assert_array_equal(
            store.read_item(tmp_path / "ours" / f"s{k}").components["images"], scan
        )
        np.testing.assert_array_equal(blosc2.open(str(ours), mode="r")[...], scan)


def test_a_frame_model_that_fails_its_check_is_never_used(tmp_path, monkeypatch):
    monkeypatch.setattr(store.frames, "_raw_frames", {})
    real = store.frames._RawFrame.from_file

    def wrong(cls, *args):
        model = real(*args)
        model.tail = model.tail[:-1] + bytes([model.tail[-1] ^ 1])
        return model

    monkeypatch.setattr(store.frames._RawFrame, "from_file", classmethod(wrong))
    scan = _normalised_ct((70, 256, 256))
    for k in range(3):
        store.write_item(tmp_path, f"s{k}", {"images": scan}, cf.Geometry((1, 1, 1)))
    assert [state for state, _ in store.frames._raw_frames.values()] == ["blosc2"]
    first = _array(tmp_path / "s0").read_bytes()
    assert all(_array(tmp_path / f"s{k}").read_bytes() == first for k in (1, 2))


def test_float_dumps_with_every_chunk_compressed_still_load(tmp_path, monkeypatch):
    # what ctflow wrote before dense float chunks were stored as they are: LZ4 + shuffle
    images = _normalised_ct((70, 256, 256))
    with monkeypatch.context() as m:
        m.setattr(store.arrays, "_chunk_flags", lambda chunk, flags: flags)
        store.write_item(tmp_path, "old", {"images": images}, cf.Geometry((1, 1, 1)))
    old = _array(tmp_path / "old")
    assert _stored_as_is(old) == [False, False, False]
    np.testing.assert_array_equal(store.read_item(tmp_path / "old").components["images"], images)
    box, _ = store.read_crop(tmp_path / "old", (30, 0, 0), (5, 256, 256))
    np.testing.assert_array_equal(box, images[30:35])
    store.write_item(tmp_path, "old", {"images": images}, cf.Geometry((1, 1, 1)))  # rewritten
    new = _array(tmp_path / "old")
    assert new.name != old.name and not old.exists()
    assert _stored_as_is(new) == [True, True, True]
    np.testing.assert_array_equal(store.read_item(tmp_path / "old").components["images"], images)


def test_damage_in_an_uncompressed_float_chunk_is_detected(tmp_path):
    images = _normalised_ct((70, 256, 256))
    store.write_item(tmp_path, "x", {"images": images}, cf.Geometry((1, 1, 1)))
    path = _array(tmp_path / "x")
    assert _stored_as_is(path) == [True, True, True]
    offset, size = blosc2.open(str(path), mode="r").schunk.get_chunk_range(1)
    raw = bytearray(path.read_bytes())
    raw[offset + size // 2] ^= 0x01  # one voxel's lowest mantissa bit: still a finite float
    path.write_bytes(bytes(raw))
    match = rf"{path.name}: chunk 1 of 3 is damaged"
    with pytest.raises(cf.CorruptFileError, match=match):
        store.read_item(tmp_path / "x")
    with pytest.raises(cf.CorruptFileError, match=match):
        store.read_crop(tmp_path / "x", (40, 0, 0), (1, 8, 8))
    back = store.read_item(tmp_path / "x", verify=False).components["images"]
    assert np.count_nonzero(back != images) == 1  # what an unchecked read would have returned


def test_sync_false_writes_the_same_item_without_fsync(tmp_path, rng, monkeypatch):
    """``sync=False``: the same files, byte for byte, and no fsync of files or folders."""
    import os as os_module

    arr = rng.random((20, 32, 24), dtype=np.float32)
    calls: list[int] = []
    real = os_module.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os_module, "fsync", counting)
    a = store.write_item(tmp_path / "a", "x", {"images": arr}, cf.Geometry((1, 1, 1)))
    synced = len(calls)
    b = store.write_item(tmp_path / "b", "x", {"images": arr}, cf.Geometry((1, 1, 1)), sync=False)
    assert synced >= 3 and len(calls) == synced  # files, the item's folder, its parent
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        assert p.read_bytes() == (b / p.name).read_bytes()
    # rewriting an item in place without sync keeps the one-step swap
    store.write_item(tmp_path / "b", "x", {"images": arr * 2}, cf.Geometry((1, 1, 1)), sync=False)
    np.testing.assert_array_equal(store.read_item(b).components["images"], arr * 2)
    assert len(calls) == synced
    with pytest.raises(cf.InvalidParameterError, match="sync"):
        cf.Pipeline().dump(tmp_path / "c", sync="no")


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
@pytest.mark.parametrize("fill", ["random", "zeros"])
def test_a_one_chunk_array_records_where_its_chunk_lies_as_blosc2_reads_it(
    tmp_path, rng, dtype, fill
):
    """A crop's frame is put together by ctflow: the place it records is blosc2's own."""
    from ctflow.io.store.frames import _chunk_places

    shape = (16, 32, 32)
    vol = np.zeros(shape, dtype) if fill == "zeros" else rng.integers(0, 100, shape).astype(dtype)
    b = cf.CTBatch.from_arrays([vol], ids=["crop"])
    b.dump(tmp_path)
    meta = json.loads((tmp_path / "crop" / "meta.json").read_text())
    spec = meta["components"]["images"]
    assert len(spec["chunk_crc32"]) == 1
    assert [spec["chunk_planes"], spec["chunk_ranges"]] == list(
        _chunk_places(_array(tmp_path / "crop"))
    )
    offset, size = spec["chunk_ranges"][0]
    if offset >= 0:  # the recorded bytes are the chunk blosc2 decompresses into the crop
        raw = _array(tmp_path / "crop").read_bytes()[offset : offset + size]
        assert np.array_equal(np.frombuffer(blosc2.decompress2(raw), dtype).reshape(shape), vol)
    assert np.array_equal(
        cf.Pipeline().load().execute(cf.CTBatch(["crop"], [tmp_path / "crop"]))[0].images, vol
    )
