"""The ctflow exception hierarchy.

Every error ctflow raises on purpose derives from :class:`CTFlowError`, so callers can catch
ctflow's own complaints without catching programming errors.  Messages say what must be what,
what was got, and for which item or file, e.g.::

    unify_spacing: spacing must be 3 positive floats (z, y, x) in mm; got (0.0, 0.7, 0.7)

This module is a leaf: it imports nothing from ctflow.
"""

from __future__ import annotations

__all__ = [
    "CTFlowError",
    "CorruptFileError",
    "InvalidParameterError",
    "InvalidScanError",
    "MissingDependencyError",
    "UnsupportedFormatError",
    "describe",
]


class CTFlowError(Exception):
    """Base class of every error raised by ctflow on purpose."""


class InvalidScanError(CTFlowError, ValueError):
    """Scan data or geometry is bad or inconsistent (zero spacing, mixed shapes, NaN voxels ...)."""


class UnsupportedFormatError(CTFlowError, ValueError):
    """The source is of a format ctflow cannot read (or `fmt=` names an unknown format)."""


class CorruptFileError(CTFlowError, OSError):
    """A file exists but its content is truncated, inconsistent with its header, or unreadable."""


class InvalidParameterError(CTFlowError, ValueError):
    """An action, pipeline or dataset was given an argument outside its contract."""


class MissingDependencyError(CTFlowError, ImportError):
    """An optional dependency is needed; the message names the pip extra that installs it."""


def describe(error: BaseException, limit: int = 2000) -> str:
    """Return ``"ExceptionType: message"`` for a report, whatever the exception does.

    An exception whose ``__str__`` raises is described by its type name alone, so a run that
    skips failing items never fails itself while reporting one.

    Examples
    --------
    >>> describe(ValueError("bad spacing"))
    'ValueError: bad spacing'
    >>> class Odd(Exception):
    ...     def __str__(self):
    ...         raise RuntimeError("no")
    >>> describe(Odd())
    'Odd: <the message could not be printed>'
    """
    name = type(error).__name__
    try:
        text = str(error)
    except Exception:
        text = "<the message could not be printed>"
    if len(text) > limit:
        text = text[:limit] + " ..."
    return f"{name}: {text}" if text else name
