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
