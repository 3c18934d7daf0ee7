"""Dataset: ids from globs and paths, split, create_batch with user batch classes."""

from __future__ import annotations

import pytest

import ctflow as cf


class MyBatch(cf.CTBatch):
    @cf.action
    def noop(self):
        return self


def test_from_glob_files_and_dirs(tmp_path):
    for name in ("b.mhd", "a.mhd", "c.nii.gz", "d.raw"):
        (tmp_path / name).write_text("")
    (tmp_path / "series1").mkdir()
    (tmp_path / "series2").mkdir()
    assert cf.Dataset.from_glob(str(tmp_path / "*.mhd")).ids == ["a", "b"]
    assert cf.Dataset.from_glob(str(tmp_path / "*.nii.gz")).ids == ["c"]
    dirs = cf.Dataset.from_glob(str(tmp_path / "series*"), dirs=True)
    assert dirs.ids == ["series1", "series2"]
    assert dirs.sources["series2"] == str(tmp_path / "series2")
    with pytest.raises(cf.InvalidParameterError, match="no files match"):
        cf.Dataset.from_glob(str(tmp_path / "*.nrrd"))


def test_duplicate_stems_are_an_error_naming_both(tmp_path):
    for sub in ("s1", "s2"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.mhd").write_text("")
    with pytest.raises(cf.InvalidParameterError, match="two sources have the id 'x'"):
        cf.Dataset.from_glob(str(tmp_path / "**" / "*.mhd"))


def test_from_paths_list_and_dict():
    ds = cf.Dataset.from_paths(["/d/x.mhd", "/d/y.mha"])
    assert ds.ids == ["x", "y"]
    ds = cf.Dataset.from_paths({"p1": "/d/x.mhd", "p2": "/d/x2.mhd"})
    assert ds.ids == ["p1", "p2"] and ds.sources["p2"] == "/d/x2.mhd"


def test_split_is_disjoint_complete_and_seeded():
    ds = cf.Dataset.from_paths({f"i{k}": f"/d/{k}.mhd" for k in range(20)})
    train, test = ds.split(0.8, seed=3)
    assert len(train) == 16 and len(test) == 4
    assert set(train.ids).isdisjoint(test.ids) and set(train.ids) | set(test.ids) == set(ds.ids)
    again, _ = ds.split(0.8, seed=3)
    assert again.ids == train.ids
    other, _ = ds.split(0.8, seed=4)
    assert other.ids != train.ids
    ordered, _ = ds.split(0.5)
    assert ordered.ids == ds.ids[:10]
    parts = ds.split([0.5, 0.25, 0.25], seed=0)
    assert [len(p) for p in parts] == [10, 5, 5]
    with pytest.raises(cf.InvalidParameterError, match="sum to at most 1"):
        ds.split([0.9, 0.2])


def test_create_batch_uses_the_batch_class():
    ds = cf.Dataset.from_paths({"a": "/d/a.mhd", "b": "/d/b.mhd"}, batch_class=MyBatch)
    b = ds.create_batch(["b"])
    assert type(b) is MyBatch and b.ids == ["b"] and b.sources == ["/d/b.mhd"]
    assert ds.split(0.5)[0].batch_class is MyBatch
    with pytest.raises(cf.InvalidParameterError, match="unknown ids"):
        ds.create_batch(["zz"])
    with pytest.raises(cf.InvalidParameterError, match="subclass"):
        cf.Dataset({"a": "x"}, batch_class=dict)  # type: ignore[arg-type]


def test_sources_are_absolute_so_every_engine_reads_the_same_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ds = cf.Dataset.from_paths({"a": "scans/a.mhd", "u": "s3://bucket/b.mhd"})
    assert ds.sources["a"] == str(tmp_path / "scans" / "a.mhd")
    assert ds.sources["u"] == "s3://bucket/b.mhd"


def test_subsets_and_splits_keep_the_storage_options():
    options = {"anon": True, "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    ds = cf.Dataset.from_paths({f"s{k}": f"s3://bucket/s{k}.nii.gz" for k in range(4)},
                               storage_options=options)  # fmt: skip
    train, test = ds.split(0.5, seed=1)
    assert train.storage_options == test.storage_options == options
    assert ds.subset(["s2"]).storage_options == options
