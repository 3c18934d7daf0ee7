"""Tests of ctflow.io.annotations: LUNA16 CSV / DataFrame -> ctflow nodule table and back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctflow.errors import CorruptFileError, CTFlowError, InvalidParameterError
from ctflow.io.annotations import (
    LUNA_COLUMNS,
    NODULE_COLUMNS,
    empty_nodules,
    read_annotations,
    to_luna,
)

UID = "1.3.6.1.4.1.14519.5.2.1.6279.6001.100225287222365663678666836860"


def _luna_rows() -> list[dict[str, object]]:
    return [
        {
            "seriesuid": UID,
            "coordX": -128.6994211,
            "coordY": -175.3192718,
            "coordZ": -298.3875064,
            "diameter_mm": 5.651470635,
        },
        {
            "seriesuid": "007",
            "coordX": 103.7836509,
            "coordY": -211.9251487,
            "coordZ": -227.12125,
            "diameter_mm": 4.224708481,
        },
    ]


def _write(tmp_path, text: str, name: str = "annotations.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _assert_table_layout(table: pd.DataFrame) -> None:
    assert tuple(table.columns) == NODULE_COLUMNS
    assert table["id"].dtype == pd.Series(["a"], dtype=str).dtype  # pandas' string dtype
    assert all(isinstance(v, str) for v in table["id"])
    for col in ("z", "y", "x", "diameter"):
        assert table[col].dtype == np.float64
    assert list(table.index) == list(range(len(table)))


def test_luna_csv_file(tmp_path):
    rows = _luna_rows()
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm,extra"]
    lines += [
        f"{r['seriesuid']},{r['coordX']},{r['coordY']},{r['coordZ']},{r['diameter_mm']},junk"
        for r in rows
    ]
    table = read_annotations(_write(tmp_path, "\n".join(lines) + "\n"))
    _assert_table_layout(table)
    # ids stay text: the LUNA uid intact, "007" not turned into 7
    assert table["id"].tolist() == [UID, "007"]
    for k, r in enumerate(rows):
        assert table.loc[k, ["z", "y", "x", "diameter"]].tolist() == [
            r["coordZ"],
            r["coordY"],
            r["coordX"],
            r["diameter_mm"],
        ]


def test_str_path_and_pathlike(tmp_path):
    path = _write(tmp_path, "seriesuid,coordX,coordY,coordZ,diameter_mm\na,1,2,3,4\n")
    for src in (path, str(path)):
        assert read_annotations(src).values.tolist() == [["a", 3.0, 2.0, 1.0, 4.0]]


def test_luna_dataframe_not_modified():
    df = pd.DataFrame(_luna_rows())
    df["extra"] = 1
    before = df.copy()
    table = read_annotations(df)
    _assert_table_layout(table)
    pd.testing.assert_frame_equal(df, before)
    np.testing.assert_array_equal(table["x"].to_numpy(), df["coordX"].to_numpy())
    np.testing.assert_array_equal(table["z"].to_numpy(), df["coordZ"].to_numpy())


def test_ctflow_dataframe_with_ints_and_extra_columns():
    df = pd.DataFrame(
        {"diameter": [4, 6], "x": [3, 7], "y": [2, 6], "z": [1, 5], "id": [10, 11], "note": "n"},
        index=[5, 9],
    )
    table = read_annotations(df)
    _assert_table_layout(table)
    assert table.values.tolist() == [["10", 1.0, 2.0, 3.0, 4.0], ["11", 5.0, 6.0, 7.0, 6.0]]


def test_header_only_csv_gives_empty_table(tmp_path):
    table = read_annotations(_write(tmp_path, ",".join(LUNA_COLUMNS) + "\n"))
    assert len(table) == 0
    _assert_table_layout(table)


def test_empty_nodules_layout():
    table = empty_nodules()
    assert len(table) == 0
    _assert_table_layout(table)
    # concatenating with a read table keeps the dtypes
    full = read_annotations(pd.DataFrame(_luna_rows()))
    both = pd.concat([empty_nodules(), full], ignore_index=True)
    _assert_table_layout(both)


def test_to_luna_round_trip():
    df = pd.DataFrame(_luna_rows())
    back = to_luna(read_annotations(df))
    assert tuple(back.columns) == LUNA_COLUMNS
    pd.testing.assert_frame_equal(back, df.loc[:, list(LUNA_COLUMNS)])
    # and ctflow -> LUNA -> ctflow
    table = read_annotations(df)
    pd.testing.assert_frame_equal(read_annotations(to_luna(table)), table)


def test_to_luna_errors():
    with pytest.raises(InvalidParameterError, match=r"missing \['diameter'\]"):
        to_luna(pd.DataFrame({"id": ["a"], "z": [1.0], "y": [1.0], "x": [1.0]}))
    with pytest.raises(InvalidParameterError, match="DataFrame"):
        to_luna([1, 2])  # type: ignore[arg-type]


def test_missing_file_is_corrupt_file_error(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(CorruptFileError, match=r"nope\.csv") as info:
        read_annotations(missing)
    assert isinstance(info.value, CTFlowError)
    with pytest.raises(CorruptFileError, match="directory"):
        read_annotations(tmp_path)


def test_unparseable_file(tmp_path):
    with pytest.raises(CorruptFileError, match=r"empty\.csv"):
        read_annotations(_write(tmp_path, "", "empty.csv"))
    with pytest.raises(CorruptFileError, match=r"bad\.csv"):
        read_annotations(_write(tmp_path, 'seriesuid,coordX\n"a,1\n', "bad.csv"))


def test_missing_columns_are_named(tmp_path):
    path = _write(tmp_path, "seriesuid,coordX,coordY,diameter_mm\na,1,2,3\n")
    with pytest.raises(InvalidParameterError) as info:
        read_annotations(path)
    msg = str(info.value)
    assert "annotations.csv" in msg
    assert "['coordZ']" in msg
    # a table closer to ctflow's layout names ctflow's missing columns
    with pytest.raises(InvalidParameterError, match=r"ctflow columns \['diameter'\]"):
        read_annotations(pd.DataFrame({"id": ["a"], "z": [1], "y": [1], "x": [1]}))


@pytest.mark.parametrize("value", ["", "abc", "nan", "inf"])
@pytest.mark.parametrize(("column", "name"), [("coordX", "x"), ("coordY", "y"), ("coordZ", "z")])
def test_bad_coordinate_names_file_and_row(tmp_path, value, column, name):
    row = {"seriesuid": "c", "coordX": "1", "coordY": "2", "coordZ": "3", "diameter_mm": "4"}
    row[column] = value
    lines = [",".join(LUNA_COLUMNS), "a,1,2,3,4", "b,1,2,3,4", ",".join(row.values())]
    with pytest.raises(InvalidParameterError) as info:
        read_annotations(_write(tmp_path, "\n".join(lines) + "\n"))
    msg = str(info.value)
    assert "annotations.csv row 2 (line 4)" in msg
    assert "'c'" in msg
    assert f"{name} must be a finite number" in msg


@pytest.mark.parametrize("diameter", [0.0, -3.0, float("nan")])
def test_non_positive_diameter(diameter):
    df = pd.DataFrame(_luna_rows())
    df.loc[1, "diameter_mm"] = diameter
    with pytest.raises(InvalidParameterError, match=r"DataFrame row 1 \(id '007'\): diameter"):
        read_annotations(df)


def test_missing_id():
    df = pd.DataFrame(_luna_rows())
    df.loc[0, "seriesuid"] = None
    with pytest.raises(InvalidParameterError, match="row 0: id"):
        read_annotations(df)


def test_wrong_source_type():
    with pytest.raises(InvalidParameterError, match="CSV path or a pandas DataFrame"):
        read_annotations(42)  # type: ignore[arg-type]


def test_a_csv_is_parsed_once_per_version_and_rereads_after_a_change(tmp_path):
    import os

    import ctflow as cf
    from ctflow.io.annotations import annotations_table

    p = tmp_path / "ann.csv"
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\ns1,1,2,3,4\n")
    first = annotations_table(p)
    assert annotations_table(str(p)) is first  # the same parse serves every batch
    copy = cf.read_annotations(p)
    copy.loc[0, "z"] = 99.0  # the public reader hands out a copy: the cache is untouched
    assert annotations_table(p)["z"].tolist() == [3.0]
    p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\ns1,1,2,7,4\ns2,0,0,0,5\n")
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = annotations_table(p)
    assert again["z"].tolist() == [7.0, 0.0]
    b = cf.CTBatch.from_arrays([np.zeros((2, 2, 2), np.int16)], ids=["s2"]).fetch_nodules(p)
    assert b.nodules["diameter"].tolist() == [5.0]
