"""Hostile and damaged ctflow dumps (issue 16, cases 1, 4, 5, 7, 8 and 10).

Each case must keep failing safely: a typed error naming the file, memory bounded before
anything is allocated (checked in a child under ``RLIMIT_AS``), a rewrite that readers see as
one step, and cleaning that never deletes anything outside ``dst``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blosc2
import numpy as np
import pytest

import ctflow as cf
from ctflow.actions.io import Load
from ctflow.io import store
from ctflow.io.store import writer
from ctflow.io.store.arrays import _chunk_crc
from ctflow.synthetic import make_phantom

GEOMETRY = cf.Geometry((1.0, 1.0, 1.0))


def _write(dst: Path, item_id: str = "x", **components: Any) -> Path:
    if "images" not in components:
        components["images"] = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8)
    store.write_item(dst, item_id, components, GEOMETRY)
    return dst / item_id


def _meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def _set_meta(folder: Path, meta: dict[str, Any]) -> None:
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _array(folder: Path, name: str = "images") -> Path:
    return folder / _meta(folder)["components"][name]["file"]


def _readers(folder: Path) -> dict[str, Callable[[], Any]]:
    """Every way to read an item: all of it, a crop, its meta.json."""
    return {
        "read_item": lambda: store.read_item(folder),
        "read_crop": lambda: store.read_crop(folder, (0, 0, 0), (1, 1, 1)),
        "read_meta": lambda: store.read_meta(folder),
    }


# -- case 1: a dump claiming a huge volume is refused before anything is allocated ----------

_HUGE = (2000, 2048, 2048)  # int16: 16 GB


def _huge_item(dst: Path, fmt: int) -> Path:
    """A tiny images array of zeros that is 2000 x 2048 x 2048 int16, with an agreeing meta.json."""
    folder = _write(dst, "huge")
    meta = _meta(folder)
    spec = meta["components"]["images"]
    _array(folder).unlink()
    file = f"images.{'0' * 16}.b2nd" if fmt == 2 else "images.b2nd"
    arr = blosc2.zeros(
        _HUGE, np.int16, chunks=(4, 2048, 2048), blocks=(1, 2048, 2048),
        urlpath=str(folder / file), mode="w",
    )  # fmt: skip
    spec["shape"] = list(_HUGE)
    if fmt == 2:
        spec["file"] = file
        spec["chunk_crc32"] = [
            _chunk_crc(arr.schunk.get_chunk(k)) for k in range(arr.schunk.nchunks)
        ]
    else:
        del spec["file"], spec["chunk_crc32"]
        meta["format_version"] = 1
    _set_meta(folder, meta)
    assert (folder / file).stat().st_size < 100_000
    return folder


_HUGE_READS = {
    "read_item": "store.read_item(path)",
    "read_crop": "store.read_crop(path, (0, 0, 0), (2000, 2048, 2048))",
    "read_crop of a small box": "store.read_crop(path, (5, 6, 7), (2, 2, 2))",
    "load": "(cf.Dataset.from_paths([path]) >> cf.Pipeline().load()).next_batch(1)",
}


@pytest.mark.parametrize("fmt", [2, 1], ids=["format 2", "format 1"])
@pytest.mark.parametrize("how", list(_HUGE_READS))
def test_a_dump_claiming_16_gb_is_refused_before_allocating(tmp_path, limited, how, fmt):
    folder = _huge_item(tmp_path, fmt)
    code = f"""
        import ctflow as cf
        from ctflow.io import store
        path = {str(folder)!r}
        {_HUGE_READS[how]}
    """
    res = limited(code, limit_mb=1024)  # well below the 16 GB a regression would ask for
    assert res.error_type == "InvalidScanError", (res.error_type, res.error, res.stderr[-2000:])
    assert "MAX_VOXELS_BYTES" in res.error and "meta.json" in res.error
    assert "2000x2048x2048 int16" in res.error
    assert res.peak_mb < 400


_SMALL = np.arange(4 * 8 * 8, dtype=np.int16).reshape(4, 8, 8) - 100  # 512 bytes


def _capped_source(folder: Path, fmt: str) -> tuple[dict[str, Callable[[], Any]], int]:
    """A 4 x 8 x 8 int16 volume in ``fmt``: the ways to read it, and the bytes it needs."""
    from ctflow.io.dicom import read_dicom_seg
    from ctflow.io.dicom.seg_write import write_dicom_seg
    from ctflow.io.dicom_writer import write_dicom_series
    from ctflow.io.writer import write_scan

    if fmt in ("mhd", "nii", "nii.gz"):
        path = write_scan(folder / f"a.{fmt}", _SMALL, GEOMETRY)
    elif fmt == "nrrd":
        path = folder / "a.nrrd"
        path.write_bytes(
            b"NRRD0004\ntype: short\ndimension: 3\nsizes: 8 8 4\nendian: little\n"
            b"encoding: raw\nspacings: 1 1 1\n\n" + _SMALL.astype("<i2").tobytes()
        )
    elif fmt in ("DICOM folder", "DICOM SEG"):
        path = write_dicom_series(folder / "dcm", _SMALL, GEOMETRY)[0].parent
        if fmt == "DICOM SEG":  # its label grid: uint8, 256 bytes
            labels = (_SMALL > 0).astype(np.uint8)
            seg = write_dicom_seg(folder / "seg.dcm", labels, path, omit_empty_frames=False)
            return {"read_dicom_seg": lambda: read_dicom_seg(seg)}, labels.nbytes
    else:  # a dump
        path = _write(folder, images=_SMALL)
        return {
            "read_item": lambda: store.read_item(path),
            "read_crop": lambda: store.read_crop(path, (0, 0, 0), (1, 1, 1)),
            "load": lambda: (cf.Dataset.from_paths([path]) >> cf.Pipeline().load()).next_batch(1),
        }, _SMALL.nbytes
    reads = {
        "read_scan": lambda: cf.read_scan(path),
        "load": lambda: (cf.Dataset.from_paths([path]) >> cf.Pipeline().load()).next_batch(1),
    }
    if fmt != "DICOM folder":  # (GDCM hands a series over as wider pixels than it stores)
        reads["read_scan sitk"] = lambda: cf.read_scan(path, "sitk")
    return reads, _SMALL.nbytes


@pytest.mark.parametrize(
    "fmt", ["mhd", "nii", "nii.gz", "nrrd", "DICOM folder", "DICOM SEG", "dump"]
)
def test_the_size_cap_is_one_knob_read_at_call_time(tmp_path, monkeypatch, fmt):
    """``ctflow.io.voxels.MAX_VOXELS_BYTES`` caps every format, set after the readers' import."""
    from ctflow.io import voxels

    reads, need = _capped_source(tmp_path, fmt)
    monkeypatch.setattr(voxels, "MAX_VOXELS_BYTES", need - 1)
    for read in reads.values():
        with pytest.raises(cf.InvalidScanError, match=f"MAX_VOXELS_BYTES = {need - 1}"):
            read()
    monkeypatch.setattr(voxels, "MAX_VOXELS_BYTES", need)  # exactly enough
    for read in reads.values():
        read()


_DISAGREEING = {
    "shape": lambda spec: spec.update(shape=[4, 8, 9]),
    "fewer planes": lambda spec: spec.update(shape=[3, 8, 8]),
    "dtype": lambda spec: spec.update(dtype="<f4"),
    "byte order": lambda spec: spec.update(dtype=">i2"),
}


@pytest.mark.parametrize("what", list(_DISAGREEING))
@pytest.mark.parametrize("how", ["read_item", "read_crop"])
def test_the_array_must_be_what_meta_json_says(tmp_path, what, how):
    folder = _write(tmp_path)
    meta = _meta(folder)
    _DISAGREEING[what](meta["components"]["images"])
    _set_meta(folder, meta)
    with pytest.raises(cf.CorruptFileError, match=r"images\.[0-9a-f]{16}\.b2nd: the array must"):
        _readers(folder)[how]()


# -- case 4: damage is detected; NaN, Inf and non-numeric dtypes are refused ----------------


def _chunk_bytes(path: Path) -> list[tuple[int, int]]:
    """Where the compressed chunks of an array file are: (offset, size) each."""
    schunk = blosc2.open(str(path), mode="r").schunk
    return [schunk.get_chunk_range(k) for k in range(schunk.nchunks)]


def _flip(path: Path, positions: np.ndarray) -> None:
    raw = bytearray(path.read_bytes())
    for p in positions:
        raw[p] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture()
def scan(tmp_path):
    """A 70 x 256 x 256 phantom (several chunks) dumped with LZ4."""
    images = make_phantom(shape=(70, 256, 256), seed=1)[0].images
    masks = (images > 0).astype(np.uint8)
    return _write(tmp_path, "scan", images=images, masks=masks), images


@pytest.mark.parametrize("seed", range(4))
def test_100_flipped_bytes_in_the_chunks_are_detected(scan, seed):
    folder, images = scan
    path = _array(folder)
    ranges = _chunk_bytes(path)
    rng = np.random.default_rng(seed)
    k = int(rng.integers(len(ranges)))  # all in one chunk, anywhere in it
    offset, size = ranges[k]
    _flip(path, offset + rng.choice(size, 100, replace=False))
    n = len(ranges)
    match = rf"{path.name}: chunk {k} of {n} is damaged"
    with pytest.raises(cf.CorruptFileError, match=match):
        store.read_item(folder)
    cz = blosc2.open(str(path)).chunks[0]
    with pytest.raises(cf.CorruptFileError, match=match):  # a crop touching the chunk
        store.read_crop(folder, (k * cz, 0, 0), (1, 10, 10))
    # another component, and crops of undamaged chunks, still read
    assert store.read_item(folder, ["masks"]).components["masks"].shape == images.shape
    z = ((k + 1) % n) * cz
    crop, _ = store.read_crop(folder, (z, 0, 0), (1, 256, 256))
    np.testing.assert_array_equal(crop, images[z : z + 1])
    # skipping the check is the caller's choice: no checksum error then
    try:
        store.read_item(folder, verify=False)
    except cf.CorruptFileError as exc:
        assert "CRC-32" not in str(exc)


@pytest.mark.parametrize("seed", range(6))
def test_100_flipped_bytes_anywhere_never_give_wrong_voxels_silently(scan, seed):
    folder, images = scan
    path = _array(folder)
    rng = np.random.default_rng(100 + seed)
    _flip(path, rng.choice(path.stat().st_size, 100, replace=False))
    try:
        item = store.read_item(folder)
    except cf.CorruptFileError as exc:
        assert path.name in str(exc)
    else:  # the flips all fell where nothing is read: the voxels are right
        np.testing.assert_array_equal(item.components["images"], images)


@pytest.mark.parametrize("damage", ["byte", "truncated", "zeroed chunk", "swapped chunks"])
def test_damaged_arrays_are_typed_errors_through_load(scan, damage):
    folder, _ = scan
    path = _array(folder)
    raw = bytearray(path.read_bytes())
    (o0, s0), (o1, s1) = _chunk_bytes(path)[:2]
    if damage == "byte":
        raw[o1 + s1 // 2] ^= 1
    elif damage == "truncated":
        raw = raw[: o1 + s1 // 2]
    elif damage == "zeroed chunk":
        raw[o0 : o0 + s0] = bytes(s0)
    else:  # the starts of two chunks swapped: each still begins with a valid chunk header
        n = min(s0, s1)
        raw[o0 : o0 + n], raw[o1 : o1 + n] = raw[o1 : o1 + n], raw[o0 : o0 + n]
    path.write_bytes(bytes(raw))
    ds = cf.Dataset.from_paths([folder])
    with pytest.raises(cf.CorruptFileError, match=path.name):
        (ds >> cf.Pipeline().load()).next_batch(1)


def test_load_verify_is_checked_and_can_be_turned_off(scan):
    folder, images = scan
    with pytest.raises(cf.InvalidParameterError, match="load: verify must be True or False"):
        Load(verify="no")
    batch = cf.Dataset.from_paths([folder]).create_batch(["scan"])
    np.testing.assert_array_equal(Load(verify=False)(batch).images, images)
    np.testing.assert_array_equal(Load()(batch).images, images)


def test_dumps_without_checksums_still_load(scan):
    folder, images = scan
    meta = _meta(folder)
    for name, spec in meta["components"].items():  # what format 1 wrote
        (folder / spec.pop("file")).rename(folder / f"{name}.b2nd")
        del spec["chunk_crc32"]
    meta["format_version"] = 1
    _set_meta(folder, meta)
    np.testing.assert_array_equal(store.read_item(folder).components["images"], images)
    crop, _ = store.read_crop(folder, (3, 4, 5), (6, 7, 8))
    np.testing.assert_array_equal(crop, images[3:9, 4:11, 5:13])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("shape", [(4, 8, 8), (70, 256, 256)], ids=["one chunk", "chunks"])
def test_nan_and_inf_voxels_are_refused_like_the_file_readers_do(
    tmp_path, monkeypatch, value, shape
):
    images = np.zeros(shape, np.float32)
    images[-1, 3, 2] = value
    # such dumps are no longer written (see below), but earlier versions and other tools wrote them
    monkeypatch.setattr(writer, "_all_finite", lambda data: True)
    folder = _write(tmp_path, images=images)
    monkeypatch.undo()
    match = rf"{_array(folder).name}: float32 volume holds 1 NaN or Inf voxel"
    with pytest.raises(cf.InvalidScanError, match=match):
        store.read_item(folder)
    with pytest.raises(cf.InvalidScanError, match=match):
        store.read_crop(folder, (shape[0] - 1, 0, 0), (1, 8, 8))
    assert store.read_crop(folder, (0, 0, 0), (1, 8, 8))[0].sum() == 0  # a clean box reads


@pytest.mark.parametrize(
    "dtype", ["<U2", "|S4", "|O", "<c8", "|V4", "<M8[s]", "(2,)<i2", "xx", "<i16", "int16"]
)
def test_non_numeric_dtypes_in_a_dump_are_refused(tmp_path, dtype):
    folder = _write(tmp_path)
    meta = _meta(folder)
    meta["components"]["images"]["dtype"] = dtype
    _set_meta(folder, meta)
    for read in _readers(folder).values():
        with pytest.raises(cf.CorruptFileError, match=r"meta\.json.*dtype must be a numeric"):
            read()


@pytest.mark.parametrize("dtype", ["U2", "O", "c8", "V4", "M8[s]"])
def test_non_numeric_arrays_are_not_dumped(tmp_path, dtype):
    with pytest.raises(cf.InvalidParameterError, match="must be of a numeric dtype"):
        _write(tmp_path, images=np.zeros((2, 2, 2), dtype))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<f2"])
@pytest.mark.parametrize("where", ["first voxel", "last voxel", "masks"])
def test_nan_and_inf_arrays_are_not_dumped(tmp_path, value, dtype, where):
    """Every read would refuse them: refused when written, naming the item and component."""
    images = np.zeros((70, 64, 64), dtype)
    arrays = {"images": images}
    name = "images"
    if where == "masks":
        name = "masks"
        arrays["masks"] = np.zeros(images.shape, dtype)
        arrays["masks"][35, 7, 9] = value
    else:
        images[(0, 0, 0) if where == "first voxel" else (-1, -1, -1)] = value
    with pytest.raises(
        cf.InvalidScanError, match=rf"dump: item 'x' component '{name}' holds 1 NaN or Inf"
    ):
        store.write_item(tmp_path, "x", arrays, GEOMETRY)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no staging left


def test_a_pipeline_dumping_nan_fails_naming_the_item(tmp_path):
    from ctflow.io.writer import write_scan

    (tmp_path / "in").mkdir()
    src = write_scan(tmp_path / "in" / "x.mhd", np.zeros((4, 8, 8), np.float32), GEOMETRY)

    def poison(batch: Any) -> None:
        batch[0].images[1, 2, 3] = np.nan

    pipe = cf.Dataset.from_paths([src]) >> cf.Pipeline().load().call(poison).dump(tmp_path / "out")
    with pytest.raises(cf.InvalidScanError, match=r"item 'x' component 'images' holds 1 NaN"):
        pipe.run(batch_size=1)
    assert not (tmp_path / "out" / "x").exists()


# -- case 5: a rewrite is one step as readers see it ----------------------------------------


def _version(k: int, shape: tuple[int, int, int], masks: bool = True) -> dict[str, np.ndarray]:
    """Version ``k`` of an item: images (and masks) all ``k``."""
    out = {"images": np.full(shape, k, np.int16 if masks else np.float32)}
    if masks:
        out["masks"] = np.full(shape, k, np.uint8)
    return out


_VERSIONS = {  # each version has its own shape, and spacing (k, 1, 1)
    "same components": {1: _version(1, (6, 40, 40)), 2: _version(2, (9, 30, 30))},
    "masks come and go": {1: _version(1, (6, 40, 40)), 2: _version(2, (70, 64, 64), masks=False)},
}


def _check_version(item: store.StoredItem, versions: dict[int, dict[str, np.ndarray]]) -> int:
    """The version an item read back is; fails on any mix."""
    k = int(item.geometry.spacing[0])
    want = versions[k]
    assert sorted(item.components) == sorted(want), (k, sorted(item.components))
    for name, arr in want.items():
        got = item.components[name]
        assert got.shape == arr.shape and got.dtype == arr.dtype and (got == k).all(), (k, name)
    assert item.source == f"v{k}"
    return k


@pytest.mark.timeout(300)
@pytest.mark.parametrize("change", list(_VERSIONS))
def test_readers_see_the_old_or_the_new_item_during_rewrites(tmp_path, change):
    versions = _VERSIONS[change]
    dst, rounds = tmp_path / "dump", 40
    folder = dst / "item"

    def write(k: int) -> None:
        store.write_item(
            dst, "item", versions[k], cf.Geometry((float(k), 1.0, 1.0)), source=f"v{k}"
        )

    write(1)
    done = threading.Event()
    seen: dict[str, set[int]] = {"read_item": set(), "read_crop": set(), "load": set()}
    errors: list[tuple[str, BaseException]] = []
    counts = dict.fromkeys(seen, 0)

    def reader(how: str) -> None:
        try:
            while not done.is_set() or counts[how] < 5:
                if how == "read_item":
                    k = _check_version(store.read_item(folder), versions)
                elif how == "read_crop":
                    crop, geo = store.read_crop(folder, (1, 2, 3), (4, 5, 6))
                    k = int(geo.spacing[0])
                    assert crop.dtype == versions[k]["images"].dtype and (crop == k).all()
                else:
                    batch = cf.Dataset.from_paths([folder]).create_batch(["item"])
                    k = int(Load()(batch).spacing[0][0])
                seen[how].add(k)
                counts[how] += 1
        except BaseException as exc:  # reported below
            errors.append((how, exc))

    threads = [threading.Thread(target=reader, args=(how,)) for how in seen]
    for t in threads:
        t.start()
    try:
        for r in range(rounds):
            write(2 if r % 2 == 0 else 1)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
    assert errors == [], errors
    assert all(counts[how] >= 5 for how in seen), counts
    assert set().union(*seen.values()) == {1, 2}  # the readers did see both versions
    # the item is whole, and holds only what its meta.json names
    files = sorted(os.listdir(folder))
    named = sorted(spec["file"] for spec in _meta(folder)["components"].values())
    assert files == sorted([*named, "meta.json"])
    assert os.listdir(dst) == ["item"]  # no staging folder left


_REWRITER = """
import sys
import numpy as np
from ctflow.geometry import Geometry
from ctflow.io.store import write_item

dst, k, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
images = np.full((5, 32, 32), k, np.int16)
masks = np.full((5, 32, 32), k, np.uint8)
for _ in range(rounds):
    write_item(dst, "item", {"images": images, "masks": masks}, Geometry((float(k), 1, 1)),
               source=f"v{k}")
"""


@pytest.mark.timeout(300)
def test_rewriters_in_two_processes_never_break_the_item(tmp_path):
    script = tmp_path / "rewriter.py"
    script.write_text(textwrap.dedent(_REWRITER))
    dst = tmp_path / "dump"
    versions = {k: _version(k, (5, 32, 32)) for k in (1, 2)}
    store.write_item(dst, "item", versions[1], cf.Geometry((1.0, 1, 1)), source="v1")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(dst), str(k), "30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    reads = 0
    try:
        while any(p.poll() is None for p in procs) or reads < 5:
            _check_version(store.read_item(dst / "item"), versions)
            reads += 1
    finally:
        for p in procs:
            _, err = p.communicate(timeout=240)
            assert p.returncode == 0, err[-3000:]
    _check_version(store.read_item(dst / "item"), versions)
    named = sorted(spec["file"] for spec in _meta(dst / "item")["components"].values())
    assert sorted(os.listdir(dst / "item")) == sorted([*named, "meta.json"])


def test_an_interrupted_rewrite_leaves_the_old_item_and_the_next_one_cleans_up(
    tmp_path, monkeypatch
):
    folder = _write(tmp_path, images=np.full((3, 4, 4), 1, np.int16))
    before = _meta(folder)

    def killed(tmp, final, files, sync=True):  # the arrays are moved in, then the writer dies
        for name in files:
            os.replace(tmp / name, final / name)
        raise KeyboardInterrupt

    monkeypatch.setattr(store.staging, "_replace_in_place", killed)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, images=np.full((3, 4, 4), 2, np.int16))
    monkeypatch.undo()
    assert _meta(folder) == before and len(os.listdir(folder)) == 3  # an orphan array
    assert (store.read_item(folder).components["images"] == 1).all()
    _write(tmp_path, images=np.full((3, 4, 4), 3, np.int16))
    assert len(os.listdir(folder)) == 2
    assert (store.read_item(folder).components["images"] == 3).all()


def test_a_format_1_item_is_rewritten_as_format_2(tmp_path):
    folder = _write(tmp_path, images=np.full((3, 4, 4), 1, np.int16))
    meta = _meta(folder)
    spec = meta["components"]["images"]
    (folder / spec.pop("file")).rename(folder / "images.b2nd")
    del spec["chunk_crc32"]
    meta["format_version"] = 1
    _set_meta(folder, meta)
    _write(tmp_path, images=np.full((3, 4, 4), 2, np.int16))
    assert _meta(folder)["format_version"] == store.FORMAT_VERSION == 2
    assert sorted(os.listdir(folder)) == sorted([_array(folder).name, "meta.json"])


# -- case 7: component names and file names are never paths ---------------------------------

_BAD_NAMES = ["../victim/images", "/tmp/images", "images/../masks", "masks2", "", "IMAGES"]
_BAD_FILES = [
    "../victim/images.0123456789abcdef.b2nd",
    "/etc/passwd",
    "images.0123456789abcdef.b2nd/../../x",
    "masks.0123456789abcdef.b2nd",  # another component's file
    "images.0123456789ABCDEF.b2nd",
    "images.b2nd.npy",
    "meta.json",
    7,
]


@pytest.mark.parametrize("name", _BAD_NAMES)
def test_component_names_are_not_paths(tmp_path, name):
    victim = _write(tmp_path, "victim", images=np.full((4, 8, 8), 7, np.int16))
    folder = _write(tmp_path, "x")
    meta = _meta(folder)
    meta["components"][name] = dict(meta["components"]["images"])
    _set_meta(folder, meta)
    for read in _readers(folder).values():
        with pytest.raises(cf.CorruptFileError, match=r"meta\.json: component .* must be one of"):
            read()
    assert (store.read_item(victim).components["images"] == 7).all()


@pytest.mark.parametrize("file", _BAD_FILES)
def test_array_file_names_are_not_paths(tmp_path, file):
    _write(tmp_path, "victim", images=np.full((4, 8, 8), 7, np.int16))
    folder = _write(tmp_path, "x")
    meta = _meta(folder)
    meta["components"]["images"]["file"] = file
    _set_meta(folder, meta)
    for read in _readers(folder).values():
        with pytest.raises(cf.CorruptFileError, match=r"meta\.json: component 'images': file must"):
            read()


# -- case 8: cleaning never deletes outside dst ---------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout)


def _precious(root: Path) -> Path:
    """Folders that look like leftovers of writers, and a file, outside ``dst``."""
    precious = root / "precious"
    host, pid = store.staging._host(), _dead_pid()
    for name in (f"{host}~{pid}~0123456789ab~x", f"other-host~{pid}~0123456789ab~y", "z"):
        (precious / name).mkdir(parents=True)
        (precious / name / "data.txt").write_text("keep me")
    (precious / "notes.txt").write_text("keep me")
    return precious


def _snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _a_write(dst: Path) -> list[Path]:
    """A write into ``dst``, which removes what dead writers left (nothing is reported)."""
    store.staging._scanned.clear()  # it looks at once
    _write(dst, "new")
    assert store.is_item_dir(dst / "new")
    return []


_CLEANERS = {
    "all writers": lambda dst: store.remove_stale_writes(dst, all_writers=True),
    "dead writers": lambda dst: store.remove_stale_writes(dst),
    "a write": _a_write,
}


@pytest.mark.parametrize("cleaner", list(_CLEANERS))
def test_a_symlinked_staging_folder_is_never_followed(tmp_path, cleaner):
    precious = _precious(tmp_path)
    before = _snapshot(precious)
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / store.STAGING).symlink_to(precious, target_is_directory=True)
    assert _CLEANERS[cleaner](dst) == []
    assert _snapshot(precious) == before
    assert (precious / "z" / "data.txt").read_text() == "keep me"


@pytest.mark.parametrize("cleaner", ["all writers", "dead writers"])
def test_symlinks_in_the_staging_folder_are_removed_not_followed(tmp_path, cleaner):
    precious = _precious(tmp_path)
    before = _snapshot(precious)
    dst = tmp_path / "dst"
    staging = dst / store.STAGING
    staging.mkdir(parents=True)
    links = {}
    for entry in precious.iterdir():  # a link to each precious folder, under the same name
        links[entry.name] = staging / entry.name
        links[entry.name].symlink_to(entry)
    removed = _CLEANERS[cleaner](dst)
    assert _snapshot(precious) == before  # nothing behind the links was touched
    for path in removed:  # what is reported is gone, and only that
        assert not os.path.lexists(path)
    left = {p.name for p in staging.iterdir()} if staging.exists() else set()
    assert left == set(links) - {p.name for p in removed}
    if cleaner == "all writers":
        assert sorted(removed) == sorted(links.values()) and not staging.exists()
    else:  # only the dead writer of this host
        assert [p.name for p in removed] == [
            n for n in links if n.startswith(store.staging._host())
        ]


# -- case 10: hostile meta.json ------------------------------------------------------------


def _mutate(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(meta: dict[str, Any]) -> None:
        node = meta
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return apply


_DELETE = object()
_IMAGES = ("components", "images")
_HOSTILE_META: dict[str, Callable[[dict[str, Any]], None]] = {
    "format_version abc": _mutate(("format_version",), "abc"),
    "format_version 1.5": _mutate(("format_version",), 1.5),
    "format_version true": _mutate(("format_version",), True),
    "format_version -1": _mutate(("format_version",), -1),
    "components a list": _mutate(("components",), [{"shape": [4, 8, 8], "dtype": "<i2"}]),
    "components a string": _mutate(("components",), "images"),
    "components empty": _mutate(("components",), {}),
    "component a list": _mutate(_IMAGES, [4, 8, 8]),
    "dtype xx": _mutate((*_IMAGES, "dtype"), "xx"),
    "dtype a number": _mutate((*_IMAGES, "dtype"), 2),
    "nodules a string": _mutate(("nodules",), "three nodules"),
    "nodule strings": _mutate(("nodules",), ["z=1 y=2 x=3"]),
    "nodule string values": _mutate(("nodules",), [{"z": "1", "y": 2, "x": 3, "diameter": 4}]),
    "nodule missing value": _mutate(("nodules",), [{"z": 1, "y": 2, "x": 3}]),
    "nodule negative label": _mutate(
        ("nodules",), [{"z": 1, "y": 2, "x": 3, "diameter": 4, "label": -1}]
    ),
    "nodule float label": _mutate(
        ("nodules",), [{"z": 1, "y": 2, "x": 3, "diameter": 4, "label": 1.5}]
    ),
    "shape negative": _mutate((*_IMAGES, "shape"), [-4, 8, 8]),
    "shape zero": _mutate((*_IMAGES, "shape"), [0, 8, 8]),
    "shape non-integer": _mutate((*_IMAGES, "shape"), [4.5, 8, 8]),
    "shape strings": _mutate((*_IMAGES, "shape"), ["4", "8", "8"]),
    "shape booleans": _mutate((*_IMAGES, "shape"), [True, 8, 8]),
    "shape of 2": _mutate((*_IMAGES, "shape"), [4, 8]),
    "shape a dict": _mutate((*_IMAGES, "shape"), {"z": 4}),
    "spacing a string": _mutate(("spacing",), "1 1 1"),
    "spacing zero": _mutate(("spacing",), [0, 1, 1]),
    "origin missing": _mutate(("origin",), _DELETE),
    "direction 1x1": _mutate(("direction",), [[1]]),
    "id a number": _mutate(("id",), 5),
    "source a list": _mutate(("source",), ["a"]),
    "warnings a string": _mutate(("warnings",), "careful"),
    "history of numbers": _mutate(("history",), [1, 2]),
    "checksums missing": _mutate((*_IMAGES, "chunk_crc32"), _DELETE),
    "checksums empty": _mutate((*_IMAGES, "chunk_crc32"), []),
    "checksum negative": _mutate((*_IMAGES, "chunk_crc32"), [-1]),
    "checksum too large": _mutate((*_IMAGES, "chunk_crc32"), [2**32]),
    "checksums a string": _mutate((*_IMAGES, "chunk_crc32"), "abc"),
    "file missing": _mutate((*_IMAGES, "file"), _DELETE),
    "not ctflow": _mutate(("format",), "other"),
}
_HOSTILE_TEXT = {
    "100k-deep nesting": '{"format": "ctflow", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "100k-deep components": '{"format": "ctflow", "components": ' + '{"a":' * 100_000 + "1"
    + "}" * 100_001,
    "not JSON": "{format: ctflow}",
    "not UTF-8": b'{"format": "ctflow", "id": "\xff\xfe"}',
    "empty": "",
    "a list": "[]",
    "null": "null",
}  # fmt: skip


@pytest.mark.parametrize("case", list(_HOSTILE_META) + list(_HOSTILE_TEXT))
def test_hostile_meta_json_is_a_corrupt_file_error_naming_it(tmp_path, case):
    folder = _write(tmp_path)
    if case in _HOSTILE_META:
        meta = _meta(folder)
        _HOSTILE_META[case](meta)
        _set_meta(folder, meta)
    else:
        text = _HOSTILE_TEXT[case]
        (folder / "meta.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    for how, read in _readers(folder).items():
        with pytest.raises(cf.CorruptFileError, match=r"x[/\\]meta\.json: ") as info:
            read()
        assert len(str(info.value)) < 1000, how  # a short message, whatever the file holds


def test_a_newer_format_is_unsupported_not_corrupt(tmp_path):
    folder = _write(tmp_path)
    meta = _meta(folder)
    meta["format_version"] = store.FORMAT_VERSION + 1
    _set_meta(folder, meta)
    for read in _readers(folder).values():
        with pytest.raises(cf.UnsupportedFormatError, match=r"meta\.json: written by a newer"):
            read()


def test_a_1_gb_meta_json_is_refused_before_it_is_parsed(tmp_path, limited):
    folder = _write(tmp_path)
    with open(folder / "meta.json", "r+b") as fh:  # sparse: no gigabyte on disk
        fh.seek(0, os.SEEK_END)
        fh.truncate(2**30)
    code = f"""
        from ctflow.errors import CorruptFileError
        from ctflow.io import store
        path = {str(folder)!r}
        crop = lambda p: store.read_crop(p, (0, 0, 0), (1, 1, 1))
        for read in (store.read_item, store.read_meta, crop):
            try:
                read(path)
            except CorruptFileError as exc:  # anything else ends the child with its type
                error = exc
            else:
                raise AssertionError("a 1 GB meta.json was read")
        raise error
    """
    res = limited(code, limit_mb=1024)
    assert res.error_type == "CorruptFileError", (res.error_type, res.error)
    assert "meta.json" in res.error and "META_MAX_BYTES" in res.error
    assert res.peak_mb < 400


def test_a_folder_of_leftovers_stays_quiet(tmp_path):
    # things that are no item keep being told apart from damaged items
    (tmp_path / "empty").mkdir()
    with pytest.raises(cf.UnsupportedFormatError, match="not a ctflow item folder"):
        store.read_item(tmp_path / "empty")
    with pytest.raises(cf.CorruptFileError, match="no such ctflow item folder"):
        store.read_item(tmp_path / "missing")
    folder = _write(tmp_path)
    _array(folder).unlink()
    with pytest.raises(cf.CorruptFileError, match=r"images\.[0-9a-f]{16}\.b2nd: no such file"):
        store.read_item(folder)
