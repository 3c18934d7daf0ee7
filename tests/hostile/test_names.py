"""Ids and paths that cannot be folder names or files: refused when the dataset is built, with
a typed error naming them (issue 16, cases 9 and 12)."""

from __future__ import annotations

import numpy as np
import pytest

import ctflow as cf

BAD_IDS = {
    "nul byte": "scan\x00one",
    "control character": "scan\nline",
    "slash": "a/b",
    "backslash": "a\\b",
    "dot": ".",
    "dot dot": "..",
    "empty": "",
    "over 255 bytes": "x" * 256,
    "over 255 bytes in UTF-8": "é" * 128,
    "leading dot": ".hidden",
    "the staging folder's name": ".ctflow-tmp",
}


@pytest.mark.parametrize("name", list(BAD_IDS))
def test_bad_ids_are_refused_when_the_dataset_is_built(name):
    bad = BAD_IDS[name]
    with pytest.raises(cf.InvalidParameterError, match="item id"):
        cf.Dataset({bad: "/data/scan.mhd"})
    with pytest.raises(cf.InvalidParameterError, match="item id"):
        cf.Dataset.from_paths({bad: "/data/scan.mhd"})


@pytest.mark.parametrize("name", list(BAD_IDS))
def test_bad_ids_are_refused_by_write_item_with_the_same_check(tmp_path, name):
    from ctflow.io.store import write_item

    with pytest.raises(cf.InvalidParameterError, match="dump: item id"):
        write_item(tmp_path, BAD_IDS[name], {"images": np.zeros((1, 2, 2))}, cf.Geometry((1, 1, 1)))
    assert list(tmp_path.iterdir()) == []


def test_a_hidden_file_is_refused_by_from_paths(tmp_path):
    with pytest.raises(cf.InvalidParameterError, match=r"item id '\.hidden' must not start"):
        cf.Dataset.from_paths([tmp_path / ".hidden.mhd"])


def test_an_id_of_255_bytes_and_dotted_uids_are_fine():
    ds = cf.Dataset({"x" * 255: "/d/a.mhd", "1.3.6.1.4.1.14519.5.2.1.6279": "/d/b.mhd"})
    assert len(ds) == 2


@pytest.mark.parametrize(
    "path",
    ["/data/scan\x00.mhd", "/data/" + "y" * 300 + ".mhd", "/" + "/".join(["d" * 200] * 25)],
    ids=["nul byte", "name over 255 bytes", "path over 4096 bytes"],
)
def test_bad_paths_are_typed_errors_naming_them(tmp_path, path):
    with pytest.raises(cf.InvalidParameterError, match=r"contains a NUL byte|bytes"):
        cf.Dataset({"a": path})
    with pytest.raises(cf.InvalidParameterError, match=r"contains a NUL byte|bytes"):
        cf.Dataset.from_paths([path])
    with pytest.raises(cf.InvalidParameterError, match=r"contains a NUL byte|bytes"):
        cf.Dataset.from_glob(path)
    with pytest.raises(cf.InvalidParameterError, match=r"contains a NUL byte|bytes"):
        cf.Pipeline().dump(path)
