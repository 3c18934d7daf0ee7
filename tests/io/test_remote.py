"""Sources and dumps on object storage, against a real S3 API server on loopback (moto).

The server is moto's S3 in server mode (a real HTTP endpoint; s3fs talks to it as to AWS).
References: the same pipeline on the same files on the local disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ctflow as cf
from ctflow.errors import CorruptFileError, CTFlowError
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.synthetic import make_dataset

s3fs = pytest.importorskip("s3fs", reason="s3fs is the [s3] extra (installed with dev)")

BUCKET = "ctflow-test"
SECRET = "not-a-real-secret-0123456789"


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    src = tmp_path_factory.mktemp("scans")
    return make_dataset(
        src, n_scans=3, shapes=[(20, 40, 48), (24, 48, 36), (16, 44, 44)],
        orientations=["LPS", "RAS", "LPS"], fmt=["mhd", "nifti", "mhd"], seed=5, labels=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def uploaded(s3: Any, local: tuple[list[Path], Path]) -> str:
    fs, _ = s3
    paths, _ = local
    root = f"{BUCKET}/scans"
    for p in paths:
        fs.put_file(str(p), f"{root}/{p.name}")
        if p.suffix == ".mhd":
            fs.put_file(str(p.with_suffix(".raw")), f"{root}/{p.with_suffix('.raw').name}")
    return f"s3://{root}"


def _remote(root: str, paths: list[Path], options: dict[str, Any]) -> cf.Dataset:
    return cf.Dataset.from_paths([f"{root}/{p.name}" for p in paths], storage_options=options)


def _prep() -> cf.Pipeline:
    return cf.Pipeline().load().reorient("LPS").unify_spacing((1.5, 1.5, 1.5)).normalize_hu()


def test_a_pipeline_from_s3_to_s3_and_back_equals_the_local_run(s3, local, uploaded, tmp_path):
    fs, options = s3
    paths, _ = local
    remote = _remote(uploaded, paths, options)
    local_ds = cf.Dataset.from_paths(paths)
    assert sorted(remote.ids) == sorted(local_ds.ids)
    mhd = cf.Dataset.from_glob(f"{uploaded}/*.mhd", storage_options=options)
    assert sorted(mhd.ids) == sorted(p.stem for p in paths if p.suffix == ".mhd")
    assert all(s.startswith("s3://") for s in remote.sources.values())
    report = (remote >> _prep().dump(f"s3://{BUCKET}/dumps")).run(batch_size=2)
    assert sorted(report.done) == sorted(local_ds.ids) and not report.failed
    (local_ds >> _prep().dump(tmp_path / "dumps")).run(batch_size=2)
    back = cf.Dataset.from_glob(f"s3://{BUCKET}/dumps/*", dirs=True, storage_options=options)
    assert sorted(back.ids) == sorted(local_ds.ids)
    got = back.create_batch(sorted(back.ids)).load()
    ref = cf.Dataset.from_glob(str(tmp_path / "dumps" / "*"), dirs=True)
    ref_batch = ref.create_batch(sorted(ref.ids)).load()
    for k in range(len(ref_batch)):
        np.testing.assert_array_equal(got[k].images, ref_batch[k].images)
        np.testing.assert_array_equal(got[k].origin, ref_batch[k].origin)
        np.testing.assert_array_equal(got[k].direction, ref_batch[k].direction)
    # the history says where the voxels came from: the URL, and nothing of the credentials
    assert got.history[0][0]["params"]["source"].startswith(f"s3://{BUCKET}/scans/")
    for item_id in back.ids:
        meta = fs.cat_file(f"{BUCKET}/dumps/{item_id}/meta.json").decode()
        assert SECRET not in meta and "testing" not in json.loads(meta).get("source", "")


def test_labels_on_s3_come_with_their_scans(s3, local, uploaded):
    fs, options = s3
    paths, _ = local
    labels_dir = paths[0].parent / "labels"
    for p in sorted(labels_dir.iterdir()):
        fs.put_file(str(p), f"{BUCKET}/labels/{p.name}")
    suffix = ".nii.gz"  # make_dataset writes dst/labels/<id>.nii.gz
    remote = cf.Dataset.from_glob(
        f"{uploaded}/*.mhd", masks=f"s3://{BUCKET}/labels/{{id}}{suffix}", storage_options=options
    )
    local_ds = cf.Dataset.from_glob(
        str(paths[0].parent / "*.mhd"), masks=str(labels_dir / f"{{id}}{suffix}")
    )
    ids = sorted(remote.ids)
    got = remote.create_batch(ids).load()
    ref = local_ds.create_batch(ids).load()
    for k in range(len(ids)):
        np.testing.assert_array_equal(got[k].masks, ref[k].masks)


def test_a_dicom_series_on_s3_reads_as_the_local_folder(s3, tmp_path):
    fs, options = s3
    rng = np.random.default_rng(2)
    vol = rng.integers(-1000, 1000, size=(6, 16, 20)).astype(np.int16)
    folder = tmp_path / "series"
    write_dicom_series(folder, vol, cf.Geometry((2.5, 0.7, 0.8), (1, 2, 3)))
    for p in sorted(folder.iterdir()):
        fs.put_file(str(p), f"{BUCKET}/dicom/series_a/{p.name}")
    remote = cf.Dataset.from_paths([f"s3://{BUCKET}/dicom/series_a"], storage_options=options)
    got = remote.create_batch(["series_a"]).load()
    ref = cf.Dataset.from_paths([folder]).create_batch(["series"]).load()
    np.testing.assert_array_equal(got[0].images, ref[0].images)
    np.testing.assert_allclose(got[0].origin, ref[0].origin)
    np.testing.assert_allclose(got[0].spacing, ref[0].spacing)


def test_dumps_to_s3_replace_items_whole_and_skip_complete_ones(s3, local, uploaded):
    fs, options = s3
    remote = _remote(uploaded, local[0], options)
    first = sorted(remote.ids)[0]
    dst = f"s3://{BUCKET}/redump"
    (remote >> cf.Pipeline().load().dump(dst)).run(batch_size=1)
    before = set(fs.ls(f"{BUCKET}/redump/{first}"))
    (remote >> cf.Pipeline().load().normalize_hu().dump(dst)).run(batch_size=1)
    after = set(fs.ls(f"{BUCKET}/redump/{first}"))
    assert len(after) == len(before)  # the old arrays are gone, the new ones in place
    assert {p for p in after if p.endswith(".b2nd")}.isdisjoint(before)
    batch = (remote >> cf.Pipeline().load().dump(dst, skip_existing=True)).next_batch(3)
    assert sorted(batch.skipped) == sorted(remote.ids)
    fs.invalidate_cache()
    assert set(fs.ls(f"{BUCKET}/redump/{first}")) == after  # nothing rewritten


def test_an_item_without_meta_json_is_not_an_item_and_errors_are_typed(s3, local, uploaded):
    fs, options = s3
    remote = _remote(uploaded, local[0], options)
    first = sorted(remote.ids)[0]
    (remote >> cf.Pipeline().load().dump(f"s3://{BUCKET}/partial")).run(batch_size=1)
    fs.rm(f"{BUCKET}/partial/{first}/meta.json")  # an upload that stopped before its manifest
    half = cf.Dataset.from_paths({first: f"s3://{BUCKET}/partial/{first}"}, storage_options=options)
    with pytest.raises(CTFlowError):
        half.create_batch([first]).load()
    missing = cf.Dataset.from_paths(
        {"nope": f"s3://{BUCKET}/scans/nope.nii.gz"}, storage_options=options
    )
    with pytest.raises(CorruptFileError, match=r"nope\.nii\.gz"):
        missing.create_batch(["nope"]).load()
    with pytest.raises(cf.InvalidParameterError, match="lazy=True reads ctflow dumps only"):
        (remote >> cf.Pipeline().load(lazy=True)).next_batch(1)


@pytest.mark.slow
def test_a_dask_cluster_reads_from_s3(s3, local, uploaded):
    distributed = pytest.importorskip("distributed")
    _, options = s3
    paths, _ = local
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="2GiB",
    )  # fmt: skip
    try:
        with distributed.Client(cluster) as client:
            remote = _remote(uploaded, paths, options)
            engine = cf.DaskEngine(client)
            got = {
                b.ids[0]: b.images
                for b in (remote >> _prep()).gen_batch(batch_size=1, engine=engine)
            }
    finally:
        cluster.close()
    ref = {b.ids[0]: b.images for b in (cf.Dataset.from_paths(paths) >> _prep()).gen_batch(1)}
    assert sorted(got) == sorted(ref)
    for key, images in got.items():
        np.testing.assert_array_equal(images, ref[key])


def test_a_datasets_options_reach_its_pipelines_destinations(s3, local, uploaded, tmp_path):
    """Local sources, a dump to S3: the dataset's options are set for the dump's protocol;
    a glob without options keeps the options set before."""
    from ctflow.io.remote import set_storage_options

    fs, options = s3
    paths, _ = local
    set_storage_options("s3", {})  # forget what earlier tests set
    ds = cf.Dataset.from_paths(paths[:1], storage_options=options)
    report = (ds >> cf.Pipeline().load().dump(f"s3://{BUCKET}/from-local")).run(batch_size=1)
    assert report.done == [paths[0].stem] and not report.failed
    assert fs.exists(f"{BUCKET}/from-local/{paths[0].stem}/meta.json")
    set_storage_options("s3", options)
    listed = cf.Dataset.from_glob(f"{uploaded}/*.mhd")  # no options given: the earlier ones
    assert sorted(listed.ids) == sorted(p.stem for p in paths if p.suffix == ".mhd")


def test_folders_fetch_from_file_systems_with_rooted_paths(tmp_path):
    """memory:// names objects '/bucket/key': a dump folder there is fetched whole."""
    import fsspec

    from ctflow.io.remote import fetch
    from ctflow.io.store import read_item, write_item

    item = write_item(
        tmp_path, "m", {"images": np.ones((2, 3, 4), np.int16)}, cf.Geometry((1, 1, 1))
    )
    mem = fsspec.filesystem("memory")
    for f in item.iterdir():
        mem.pipe(f"/rooted/m/{f.name}", f.read_bytes())
    with fetch("memory://rooted/m") as got:
        assert read_item(got).components["images"].sum() == 24
