"""Nodule annotation tables: LUNA16 CSV in, ctflow's world-mm nodule table out.

ctflow's nodule table (used by the whole library: ``CTBatch.nodules``, dumps, sampling) is a
pandas DataFrame with exactly the columns :data:`NODULE_COLUMNS` ``("id", "z", "y", "x",
"diameter")``, one row per nodule:

* ``id`` -- the item id, ``str`` (the column has pandas' default string dtype, ``dtype=str``:
  ``StringDtype`` on pandas >= 3, ``object`` before -- the same dtype pandas gives any column
  of Python strings, so tables built elsewhere concatenate and compare cleanly),
* ``z, y, x`` -- the nodule centre in world LPS millimetres (float64), the frame of
  :class:`~ctflow.geometry.Geometry`,
* ``diameter`` -- the diameter in mm (float64, > 0).

LUNA16's ``annotations.csv`` has :data:`LUNA_COLUMNS` ``seriesuid, coordX, coordY, coordZ,
diameter_mm`` in the same world frame, x first. :func:`read_annotations` accepts either layout
(a CSV path or a DataFrame) and always returns ctflow's; :func:`to_luna` converts back.

Errors
------
* a missing path, a directory, or a file pandas cannot parse as CSV -> ``CorruptFileError``
  (an ``OSError``: the *file* is the problem, not an argument's value);
* missing columns, missing ids, non-numeric / NaN / infinite coordinates, and non-positive
  diameters -> ``InvalidParameterError`` naming the source and the first bad row (0-based data
  row, and the 1-based line of the CSV file when read from a file).

Examples
--------
>>> import pandas as pd
>>> luna = pd.DataFrame({"seriesuid": ["s1"], "coordX": [-100.5], "coordY": [60.0],
...                      "coordZ": [-210.0], "diameter_mm": [6.2]})
>>> read_annotations(luna).values.tolist()
[['s1', -210.0, 60.0, -100.5, 6.2]]
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ctflow.errors import CorruptFileError, InvalidParameterError

__all__ = [
    "LUNA_COLUMNS",
    "NODULE_COLUMNS",
    "annotations_table",
    "empty_nodules",
    "read_annotations",
    "to_luna",
]

#: Columns of ctflow's nodule table: item id, world centre (z, y, x) in mm, diameter in mm.
NODULE_COLUMNS = ("id", "z", "y", "x", "diameter")
#: Columns of a LUNA16 ``annotations.csv`` (world mm, x first).
LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
_LUNA_TO_CTFLOW = {
    "seriesuid": "id",
    "coordZ": "z",
    "coordY": "y",
    "coordX": "x",
    "diameter_mm": "diameter",
}


def empty_nodules() -> pd.DataFrame:
    """Return an empty nodule table with the right columns and dtypes.

    Returns
    -------
    DataFrame
        Columns :data:`NODULE_COLUMNS`; ``id`` has dtype ``str``, the rest ``float64``.

    Examples
    --------
    >>> t = empty_nodules()
    >>> list(t.columns), len(t), str(t["z"].dtype)
    (['id', 'z', 'y', 'x', 'diameter'], 0, 'float64')
    """
    return _EMPTY_NODULES.copy()  # a copy of one template: cheaper than building it per batch


_EMPTY_NODULES = pd.DataFrame(
    {
        "id": pd.Series([], dtype=str),
        **{c: pd.Series([], dtype=np.float64) for c in NODULE_COLUMNS[1:]},
    }
)


def _read_csv(src: str | os.PathLike[str]) -> tuple[pd.DataFrame, str]:
    """Read a CSV of nodules, turning pandas' errors into ctflow's typed errors."""
    path = Path(src)
    name = str(path)
    if not path.exists():
        raise CorruptFileError(f"read_annotations: no such file {name}")
    if not path.is_file():
        raise CorruptFileError(f"read_annotations: {name} must be a CSV file; got a directory")
    try:
        # ids stay text: "001" must not become 1, a LUNA16 uid must not become a float
        raw = pd.read_csv(path, dtype={"seriesuid": str, "id": str})
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CorruptFileError(f"read_annotations: cannot read {name} as CSV ({exc})") from exc
    return raw, name


def read_annotations(src: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Read a LUNA16 annotations CSV (or a DataFrame) into ctflow's nodule table.

    Parameters
    ----------
    src : path or DataFrame
        A CSV file or a DataFrame with the LUNA16 columns (``seriesuid, coordX, coordY, coordZ,
        diameter_mm``) or ctflow's (``id, z, y, x, diameter``); when both sets are present the
        LUNA16 one is used. Other columns are dropped. The input DataFrame is not modified.

    Returns
    -------
    DataFrame
        Columns ``id, z, y, x, diameter`` (:data:`NODULE_COLUMNS`), a fresh 0..n-1 index; ``id``
        as ``str`` (column dtype ``str``), the rest ``float64``.

    Raises
    ------
    CorruptFileError
        The path does not exist, is a directory, or is not readable as CSV.
    InvalidParameterError
        ``src`` is of another type; columns are missing (they are named); or a row has a missing
        id, a non-numeric / non-finite coordinate or a non-positive diameter (the message names
        the source, the row and the value).

    Examples
    --------
    >>> import pandas as pd
    >>> read_annotations(pd.DataFrame({"id": ["a"], "z": [1], "y": [2], "x": [3], "diameter": [4]}))
      id    z    y    x  diameter
    0  a  1.0  2.0  3.0       4.0
    """
    table = annotations_table(src)
    return table.copy() if isinstance(src, str | os.PathLike) else table  # never the cached one


def _file_key(src: str | os.PathLike[str]) -> tuple[str, int, int]:
    """Return a file's identity for the cache: absolute path, modification time and size."""
    path = Path(src)
    try:
        st = path.stat()
    except OSError:
        return str(path), -1, -1  # not cached in effect: _parse raises the typed error
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=8)
def _read_file_cached(path: str, mtime_ns: int, size: int) -> pd.DataFrame:
    """Parse a CSV once per file version: every batch of a run asks for the same table."""
    return _parse(path)


def annotations_table(src: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    r"""Read annotations like :func:`read_annotations`, sharing one table per file version.

    The returned table is shared: do not modify it. A CSV is parsed once per (path,
    modification time, size): every batch of a run asks for the same table, and parsing it
    again per batch would hold the GIL each time.

    Parameters
    ----------
    src : path or DataFrame
        A CSV path (cached) or a DataFrame (converted each time), as in
        :func:`read_annotations`.

    Returns
    -------
    DataFrame
        ctflow's nodule table (:data:`NODULE_COLUMNS`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\ns1,1,2,3,4\n")
    >>> annotations_table(p) is annotations_table(str(p))
    True
    >>> annotations_table(p)["z"].tolist()
    [3.0]
    """
    if isinstance(src, str | os.PathLike):
        return _read_file_cached(*_file_key(src))
    return _parse(src)


def _parse(src: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Read and convert a CSV path or a DataFrame into ctflow's nodule table."""
    from_file = False
    if isinstance(src, pd.DataFrame):
        raw, name = src, "DataFrame"
    elif isinstance(src, str | os.PathLike):
        raw, name = _read_csv(src)
        from_file = True
    else:
        raise InvalidParameterError(
            "read_annotations: src must be a CSV path or a pandas DataFrame; "
            f"got {type(src).__name__}"
        )
    present = set(raw.columns)
    if present.issuperset(LUNA_COLUMNS):
        table = raw.loc[:, list(LUNA_COLUMNS)].rename(columns=_LUNA_TO_CTFLOW)
    elif present.issuperset(NODULE_COLUMNS):
        table = raw.loc[:, list(NODULE_COLUMNS)]
    else:
        # name the missing columns of the layout the input is closest to
        n_luna = len(present.intersection(LUNA_COLUMNS))
        n_ctflow = len(present.intersection(NODULE_COLUMNS))
        layout, cols = ("ctflow", NODULE_COLUMNS) if n_ctflow > n_luna else ("LUNA16", LUNA_COLUMNS)
        missing = [c for c in cols if c not in present]
        raise InvalidParameterError(
            f"read_annotations: {name} must have the LUNA16 columns {list(LUNA_COLUMNS)} or the "
            f"ctflow columns {list(NODULE_COLUMNS)}; missing {layout} columns {missing} "
            f"(got {[str(c) for c in raw.columns]})"
        )
    table = table.loc[:, list(NODULE_COLUMNS)].reset_index(drop=True)

    def where(row: int) -> str:
        line = f" (line {row + 2})" if from_file else ""  # header is line 1
        return f"{name} row {row}{line}"

    ids = table["id"]
    missing_id = ids.isna().to_numpy()
    if missing_id.any():
        row = int(np.flatnonzero(missing_id)[0])
        raise InvalidParameterError(
            f"read_annotations: {where(row)}: id must be a non-empty value; got {ids[row]!r}"
        )
    out = pd.DataFrame({"id": ids.astype(str)})
    for col in NODULE_COLUMNS[1:]:
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if col == "diameter":
            bad |= values <= 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            kind = "a finite positive number (mm)" if col == "diameter" else "a finite number (mm)"
            raise InvalidParameterError(
                f"read_annotations: {where(row)} (id {out['id'][row]!r}): {col} must be {kind}; "
                f"got {table[col][row]!r}"
            )
        out[col] = values
    return out


def to_luna(nodules: pd.DataFrame) -> pd.DataFrame:
    """Convert ctflow's nodule table back to LUNA16 columns (``seriesuid, coordX, ...``).

    Parameters
    ----------
    nodules : DataFrame
        A table with (at least) :data:`NODULE_COLUMNS`.

    Returns
    -------
    DataFrame
        A new table with exactly :data:`LUNA_COLUMNS`, in that order.

    Raises
    ------
    InvalidParameterError
        ``nodules`` is not a DataFrame or lacks some of :data:`NODULE_COLUMNS`.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"id": ["a"], "z": [1.0], "y": [2.0], "x": [3.0], "diameter": [4.0]})
    >>> to_luna(t).values.tolist()
    [['a', 3.0, 2.0, 1.0, 4.0]]
    """
    if not isinstance(nodules, pd.DataFrame):
        raise InvalidParameterError(
            f"to_luna: nodules must be a pandas DataFrame; got {type(nodules).__name__}"
        )
    missing = [c for c in NODULE_COLUMNS if c not in nodules.columns]
    if missing:
        raise InvalidParameterError(
            f"to_luna: nodules must have the columns {list(NODULE_COLUMNS)}; missing {missing}"
        )
    inverse = {v: k for k, v in _LUNA_TO_CTFLOW.items()}
    table = nodules.loc[:, list(NODULE_COLUMNS)].rename(columns=inverse)
    return table.loc[:, list(LUNA_COLUMNS)].reset_index(drop=True)
