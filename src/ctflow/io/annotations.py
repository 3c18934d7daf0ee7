"""Nodule annotation tables: LUNA16 CSV in, ctflow's world-mm nodule table out.

ctflow's nodule table is a pandas DataFrame with :data:`NODULE_COLUMNS`
``("id", "z", "y", "x", "diameter")``: item id (str), centre in world LPS mm (z, y, x),
diameter in mm. LUNA16's ``annotations.csv`` has ``seriesuid, coordX, coordY, coordZ,
diameter_mm`` in the same world frame, x first.

Examples
--------
>>> import pandas as pd
>>> luna = pd.DataFrame({"seriesuid": ["s1"], "coordX": [-100.5], "coordY": [60.0],
...                      "coordZ": [-210.0], "diameter_mm": [6.2]})
>>> read_annotations(luna).values.tolist()
[['s1', -210.0, 60.0, -100.5, 6.2]]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ctflow.errors import CorruptFileError, InvalidParameterError

__all__ = ["LUNA_COLUMNS", "NODULE_COLUMNS", "empty_nodules", "read_annotations", "to_luna"]

NODULE_COLUMNS = ("id", "z", "y", "x", "diameter")
LUNA_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
_LUNA_TO_CTFLOW = {
    "seriesuid": "id",
    "coordZ": "z",
    "coordY": "y",
    "coordX": "x",
    "diameter_mm": "diameter",
}


def empty_nodules() -> pd.DataFrame:
    """An empty nodule table with the right columns and dtypes."""
    return pd.DataFrame(
        {
            "id": pd.Series([], dtype=object),
            **{c: pd.Series([], dtype=np.float64) for c in NODULE_COLUMNS[1:]},
        }
    )


def read_annotations(src: str | os.PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Read a LUNA16 annotations CSV (or DataFrame) into ctflow's nodule table.

    Parameters
    ----------
    src : path or DataFrame
        LUNA16 columns (``seriesuid, coordX, coordY, coordZ, diameter_mm``) or ctflow columns
        (``id, z, y, x, diameter``); other columns are dropped.

    Returns
    -------
    DataFrame
        Columns ``id, z, y, x, diameter``; ``id`` as str, the rest float64.

    Raises
    ------
    CorruptFileError
        The file is missing or not a readable CSV.
    InvalidParameterError
        Columns are missing, or a row has a non-finite coordinate or a non-positive diameter
        (the message names the source and the row).

    Examples
    --------
    >>> import pandas as pd
    >>> read_annotations(pd.DataFrame({"id": ["a"], "z": [1], "y": [2], "x": [3], "diameter": [4]}))
      id    z    y    x  diameter
    0  a  1.0  2.0  3.0       4.0
    """
    name = "DataFrame"
    if isinstance(src, pd.DataFrame):
        raw = src
    else:
        path = Path(src)
        name = str(path)
        if not path.is_file():
            raise CorruptFileError(f"annotations: no such file {name}")
        try:
            raw = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise CorruptFileError(f"annotations: cannot read {name} as CSV ({exc})") from exc
    if all(c in raw.columns for c in LUNA_COLUMNS):
        table = raw.loc[:, list(LUNA_COLUMNS)].rename(columns=_LUNA_TO_CTFLOW)
    elif all(c in raw.columns for c in NODULE_COLUMNS):
        table = raw.loc[:, list(NODULE_COLUMNS)].copy()
    else:
        missing = [c for c in LUNA_COLUMNS if c not in raw.columns]
        raise InvalidParameterError(
            f"annotations: {name} must have LUNA16 columns {list(LUNA_COLUMNS)} or ctflow columns "
            f"{list(NODULE_COLUMNS)}; missing {missing} (got {list(raw.columns)})"
        )
    table = table.loc[:, list(NODULE_COLUMNS)].reset_index(drop=True)
    table["id"] = table["id"].astype(str).astype(object)
    for col in NODULE_COLUMNS[1:]:
        values = pd.to_numeric(table[col], errors="coerce").astype(np.float64)
        bad = ~np.isfinite(values.to_numpy())
        if col == "diameter":
            bad |= values.to_numpy() <= 0
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InvalidParameterError(
                f"annotations: {name} row {row} ({table['id'][row]}): {col} must be a finite "
                f"{'positive ' if col == 'diameter' else ''}number; got {table[col][row]!r}"
            )
        table[col] = values
    return table


def to_luna(nodules: pd.DataFrame) -> pd.DataFrame:
    """ctflow's nodule table back to LUNA16 columns (``seriesuid, coordX, ...``).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"id": ["a"], "z": [1.0], "y": [2.0], "x": [3.0], "diameter": [4.0]})
    >>> list(to_luna(t).columns)
    ['seriesuid', 'coordX', 'coordY', 'coordZ', 'diameter_mm']
    """
    inverse = {v: k for k, v in _LUNA_TO_CTFLOW.items()}
    return nodules.loc[:, list(NODULE_COLUMNS)].rename(columns=inverse).loc[:, list(LUNA_COLUMNS)]
