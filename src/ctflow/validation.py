"""Validation of parameters and inputs: the one place ctflow checks what it is given.

Every public function, action constructor and reader checks its arguments with these helpers, so
a bad value fails at once — when an action is *written*, not after every scan was loaded — and
always in the same words: ``<where>: <what> must be <rule>; got <value>``. Bad parameters raise
:class:`~ctflow.errors.InvalidParameterError`; bad volumes :class:`~ctflow.errors.InvalidScanError`.

Examples
--------
>>> as_spacing(1.0)
(1.0, 1.0, 1.0)
>>> as_float("ten", "angle", "rotate")
Traceback (most recent call last):
...
ctflow.errors.InvalidParameterError: rotate: angle must be a finite number; got 'ten'
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError, InvalidScanError

__all__ = [
    "as_axes",
    "as_bool",
    "as_choice",
    "as_dtype",
    "as_float",
    "as_int",
    "as_item_id",
    "as_path",
    "as_plane",
    "as_shape",
    "as_spacing",
    "as_threads",
    "check_geometry",
    "check_path_text",
    "check_volume",
]

_PLANES = ((0, 1), (0, 2), (1, 2))


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def as_float(
    value: Any,
    what: str,
    where: str = "",
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    unit: str = "",
    lo_open: bool = False,
) -> float:
    """Return a finite real number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``).

    Examples
    --------
    >>> as_float(2, "sigma", "apply_noise", lo=0.0)
    2.0
    """
    v = float(value) if _is_number(value) else math.nan
    below = v <= lo if lo_open else v < lo
    if not math.isfinite(v) or below or v > hi:
        unit_text = f" {unit}" if unit else ""
        if math.isinf(lo) and math.isinf(hi):
            rule = "a finite number"
        elif math.isinf(hi):
            rule = f"a finite number {'>' if lo_open else '>='} {lo:g}"
        elif math.isinf(lo):
            rule = f"a finite number <= {hi:g}"
        else:
            rule = f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise InvalidParameterError(
            f"{_prefix(where)}{what} must be {rule}{unit_text}; got {value!r}"
        )
    return v


def as_int(
    value: Any, what: str, where: str = "", *, lo: int | None = None, hi: int | None = None
) -> int:
    """Return an integer (not a bool, not a float) in ``[lo, hi]``.

    Examples
    --------
    >>> as_int(3, "depth", "make_xip", lo=1)
    3
    """
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
        return int(value)
    if lo is not None and hi is not None:
        rule = f"an integer in [{lo}, {hi}]"
    elif lo is not None:
        rule = f"an integer >= {lo}"
    elif hi is not None:
        rule = f"an integer <= {hi}"
    else:
        rule = "an integer"
    raise InvalidParameterError(f"{_prefix(where)}{what} must be {rule}; got {value!r}")


def as_bool(value: Any, what: str, where: str = "") -> bool:
    """Return ``True`` or ``False`` (numpy bools too; not 0/1, not strings).

    Examples
    --------
    >>> as_bool(np.True_, "random", "rotate")
    True
    """
    if not isinstance(value, bool | np.bool_):
        raise InvalidParameterError(f"{_prefix(where)}{what} must be True or False; got {value!r}")
    return bool(value)


def as_choice(value: Any, choices: Sequence[Any], what: str, where: str = "") -> Any:
    """``value`` when it is one of ``choices``.

    Examples
    --------
    >>> as_choice("max", ("max", "min"), "mode", "make_xip")
    'max'
    """
    try:
        ok = any(value == c and type(value) is type(c) for c in choices)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = ", ".join(repr(c) for c in choices)
        raise InvalidParameterError(f"{_prefix(where)}{what} must be one of {shown}; got {value!r}")
    return value


def as_spacing(value: Any, *, what: str = "spacing", where: str = "") -> tuple[float, float, float]:
    """3 finite positive floats (z, y, x) in mm; a scalar is used for all three axes.

    Examples
    --------
    >>> as_spacing((2.5, 0.7, 0.7))
    (2.5, 0.7, 0.7)
    """
    try:
        arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,))
        ok = not isinstance(value, bool | str) and bool(np.all(np.isfinite(arr) & (arr > 0)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"{_prefix(where)}{what} must be 3 positive floats (z, y, x) in mm; got {value!r}"
        )
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def as_shape(
    value: Any, *, what: str = "shape", where: str = "", allow_none: bool = False
) -> tuple[Any, Any, Any]:
    """3 positive integers (z, y, x); a scalar is used for all three axes.

    With ``allow_none`` an axis may be ``None`` ("keep this axis").

    Examples
    --------
    >>> as_shape((32, 64, 64))
    (32, 64, 64)
    >>> as_shape((None, 384, 384), allow_none=True)
    (None, 384, 384)
    """
    rule = "3 positive integers (z, y, x)" + (" or None per axis" if allow_none else "")
    if isinstance(value, str | bool):
        raise InvalidParameterError(f"{_prefix(where)}{what} must be {rule}; got {value!r}")
    items: list[Any]
    if isinstance(value, Sequence | np.ndarray):
        items = list(value)
    else:
        items = [value] * 3
    if len(items) != 3:
        raise InvalidParameterError(f"{_prefix(where)}{what} must be {rule}; got {value!r}")
    out: list[Any] = []
    for v in items:
        if v is None and allow_none:
            out.append(None)
            continue
        if isinstance(v, bool | np.bool_):
            raise InvalidParameterError(f"{_prefix(where)}{what} must be {rule}; got {value!r}")
        if isinstance(v, float | np.floating) and float(v).is_integer():
            v = int(v)
        if not isinstance(v, int | np.integer) or v <= 0:
            raise InvalidParameterError(f"{_prefix(where)}{what} must be {rule}; got {value!r}")
        out.append(int(v))
    return (out[0], out[1], out[2])


def as_axes(value: Any, what: str = "axis", where: str = "") -> tuple[int, ...]:
    """One or several distinct array axes among 0 (z), 1 (y), 2 (x); negatives count back.

    Examples
    --------
    >>> as_axes((2, 0)), as_axes(-1)
    ((0, 2), (2,))
    """
    raw = list(value) if isinstance(value, Sequence | np.ndarray) else [value]
    ok = bool(raw) and all(
        isinstance(a, int | np.integer) and not isinstance(a, bool) and -3 <= a < 3 for a in raw
    )
    axes = sorted({int(a) % 3 for a in raw}) if ok else []
    if not ok or len(axes) != len(raw):
        raise InvalidParameterError(
            f"{_prefix(where)}{what} must be one or more distinct axes 0, 1, 2 (z, y, x); "
            f"got {value!r}"
        )
    return tuple(axes)


def as_plane(value: Any, what: str = "axes", where: str = "") -> tuple[int, int]:
    """Two different axes of a (z, y, x) volume, sorted: (0, 1), (0, 2) or (1, 2).

    Examples
    --------
    >>> as_plane((2, 1))
    (1, 2)
    """
    try:
        raw = list(value)
        ok = len(raw) == 2 and all(
            isinstance(a, int | np.integer) and not isinstance(a, bool) and -3 <= a < 3 for a in raw
        )
    except TypeError:
        ok = False
    pair = tuple(sorted(int(a) % 3 for a in raw)) if ok else ()
    if pair not in _PLANES:
        raise InvalidParameterError(
            f"{_prefix(where)}{what} must be two different axes of a (z, y, x) volume, one of "
            f"(0, 1), (0, 2), (1, 2) (negative allowed); got {value!r}"
        )
    return (pair[0], pair[1])


def as_dtype(
    value: Any, allowed: Sequence[Any], what: str = "dtype", where: str = "", *, none: bool = True
) -> np.dtype[Any] | None:
    """Return a numpy dtype among ``allowed`` (``None`` passes when ``none``).

    Examples
    --------
    >>> as_dtype("int16", [np.int16, np.float32])
    dtype('int16')
    """
    if value is None and none:
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    ok_types = [np.dtype(a) for a in allowed]
    if dt is None or dt not in ok_types or isinstance(value, bool):
        names = ", ".join(str(d) for d in ok_types)
        none_text = "None or " if none else ""
        raise InvalidParameterError(
            f"{_prefix(where)}{what} must be {none_text}one of {names}; got {value!r}"
        )
    out: np.dtype[Any] = dt
    return out


def as_threads(n_threads: Any, where: str = "") -> int:
    """Return a thread count: an integer >= 1.

    Examples
    --------
    >>> as_threads(2)
    2
    """
    return as_int(n_threads, "n_threads", where, lo=1)


#: Longest file or folder name most file systems take (bytes, UTF-8).
NAME_MAX = 255
#: Longest path ctflow accepts (bytes, UTF-8): Linux's PATH_MAX.
PATH_MAX = 4096


def as_item_id(value: Any, where: str = "") -> str:
    r"""Return an item id that is safe as a folder name (``dump`` writes ``<dst>/<id>/``).

    Refused: empty ids, NUL and control characters, path separators (``/``, ``\``), ``.``
    and ``..``, names starting with ``.`` (hidden folders, such as a dump's own staging folder
    ``.ctflow-tmp``), names over :data:`NAME_MAX` bytes. The one check of ids: the
    :class:`~ctflow.dataset.Dataset` runs it when it is built, ``dump`` /
    :func:`~ctflow.io.store.write_item` when an item is written.

    Examples
    --------
    >>> as_item_id("1.3.6.1.4.1.14519.5.2.1")
    '1.3.6.1.4.1.14519.5.2.1'
    >>> as_item_id("../etc", "dataset")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: dataset: item id '../etc' must not contain a path ...
    >>> as_item_id(".hidden", "dataset")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: dataset: item id '.hidden' must not start with '.' ...
    """
    text = str(value)
    prefix = _prefix(where)
    if not text or text in (".", ".."):
        raise InvalidParameterError(f"{prefix}item id must be a name, not {text!r}")
    if "/" in text or "\\" in text:
        raise InvalidParameterError(
            f"{prefix}item id {text!r} must not contain a path separator (slash or backslash)"
        )
    if text.startswith("."):
        raise InvalidParameterError(
            f"{prefix}item id {text!r} must not start with '.' (a hidden folder: dumps keep "
            "their staging folder there)"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidParameterError(
            f"{prefix}item id {text!r} must not contain NUL or other control characters"
        )
    if len(text.encode("utf-8")) > NAME_MAX:
        raise InvalidParameterError(
            f"{prefix}item id {text[:40]!r}... is {len(text.encode('utf-8'))} bytes long; a folder "
            f"name may have at most {NAME_MAX}"
        )
    return text


def as_path(value: Any, what: str = "path", where: str = "") -> str:
    """Return a file or folder path made absolute (against the current folder), or a URL as given.

    Absolute paths mean the same on every Dask worker and in every record, whatever their
    working folder. URLs (``scheme://...``) are left alone.

    Examples
    --------
    >>> as_path("s3://bucket/x")
    's3://bucket/x'
    """
    if isinstance(value, PurePath | os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise InvalidParameterError(
            f"{_prefix(where)}{what} must be a non-empty path or URL; got {value!r}"
        )
    check_path_text(value, what, where)
    if "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def check_path_text(value: str, what: str = "path", where: str = "") -> str:
    r"""Return ``value`` when it can be a path: no NUL byte, names and length within limits.

    Examples
    --------
    >>> check_path_text("/data/scan.mhd")
    '/data/scan.mhd'
    >>> check_path_text("scan\x00.mhd", "source")
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: source 'scan\x00.mhd' contains a NUL byte
    """
    prefix = _prefix(where)
    if "\x00" in value:
        raise InvalidParameterError(f"{prefix}{what} {value!r} contains a NUL byte")
    if len(value.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise InvalidParameterError(
            f"{prefix}{what} {value[:60]!r}... is longer than {PATH_MAX} bytes"
        )
    for part in value.replace("\\", "/").split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise InvalidParameterError(
                f"{prefix}{what} has a name of {len(part.encode('utf-8', 'surrogateescape'))} "
                f"bytes ({part[:40]!r}...); file systems allow at most {NAME_MAX}"
            )
    return value


def check_volume(image: Any, where: str) -> NDArray[Any]:
    """``image`` itself when it is a non-empty 3-D boolean / integer / float ndarray.

    Raises
    ------
    InvalidScanError
        Naming ``where`` and what is wrong.

    Examples
    --------
    >>> check_volume(np.zeros((1, 2, 2), np.int16), "op").shape
    (1, 2, 2)
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        got = f"shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InvalidScanError(f"{where}: image must be a 3-D (z, y, x) ndarray; got {got}")
    if image.dtype.kind not in "biuf" or image.size == 0:
        raise InvalidScanError(
            f"{where}: image must be a non-empty boolean, integer or float volume; "
            f"got dtype {image.dtype}, shape {image.shape}"
        )
    return image


def check_geometry(geometry: Any, where: str) -> Any:
    """``geometry`` itself when it is a :class:`ctflow.geometry.Geometry`.

    Examples
    --------
    >>> from ctflow.geometry import Geometry
    >>> check_geometry(Geometry((1, 1, 1)), "op").spacing.tolist()
    [1.0, 1.0, 1.0]
    """
    from ctflow.geometry import Geometry

    if not isinstance(geometry, Geometry):
        raise InvalidParameterError(
            f"{where}: geometry must be a ctflow Geometry; got {type(geometry).__name__}"
        )
    return geometry
