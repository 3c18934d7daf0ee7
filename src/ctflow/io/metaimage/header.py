"""Parse a MetaImage text header: ``Key = Value`` lines up to ``ElementDataFile``.

Keys are case-insensitive; the header ends with the ``ElementDataFile`` line (the voxels of an
``.mha`` follow it in the same file). A file that is not a text header, or a header longer
than :data:`~ctflow.io.voxels.HEADER_MAX_BYTES`, is refused with a typed error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, InvalidScanError, UnsupportedFormatError
from ctflow.io.voxels import HEADER_MAX_BYTES, read_header_bytes

__all__ = ["MET_TYPES"]


#: MetaIO element types and their numpy codes (sizes as in MetaIO's ``MET_ValueTypeSize``).
MET_TYPES: dict[str, str] = {
    "MET_CHAR": "i1",
    "MET_UCHAR": "u1",
    "MET_SHORT": "i2",
    "MET_USHORT": "u2",
    "MET_INT": "i4",
    "MET_UINT": "u4",
    "MET_LONG": "i4",
    "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8",
    "MET_ULONG_LONG": "u8",
    "MET_FLOAT": "f4",
    "MET_DOUBLE": "f8",
}


_KNOWN_KEYS = {
    "objecttype",
    "objectsubtype",
    "ndims",
    "dimsize",
    "elementspacing",
    "elementsize",
    "offset",
    "origin",
    "position",
    "transformmatrix",
    "rotation",
    "orientation",
    "centerofrotation",
    "anatomicalorientation",
    "elementtype",
    "elementdatafile",
    "binarydata",
    "binarydatabyteordermsb",
    "elementbyteordermsb",
    "compresseddata",
    "compresseddatasize",
    "headersize",
    "elementnumberofchannels",
}


class _Header:
    """Parsed ``Key = Value`` pairs (keys case-insensitive) of one MetaImage header."""

    def __init__(self, path: Path, fields: dict[str, tuple[str, str]], data_offset: int) -> None:
        self.path = path
        self.fields = fields  # lower-case key -> (key as written, value)
        self.data_offset = data_offset  # first byte after the header

    def get(self, *keys: str) -> tuple[str, str] | None:
        """Return (key as written, value) of the first of ``keys`` present, or None."""
        for key in keys:
            if key.lower() in self.fields:
                return self.fields[key.lower()]
        return None

    def require(self, *keys: str) -> tuple[str, str]:
        """Return (key as written, value) of the first of ``keys``; refuse a header without."""
        found = self.get(*keys)
        if found is None:
            names = " or ".join(keys)
            raise InvalidScanError(f"{self.path}: MetaImage header has no {names} line")
        return found

    def ints(self, key: str, value: str, n: int) -> list[int]:
        """Parse ``value`` as ``n`` integers (the error names ``key``)."""
        try:
            vals = [int(v) for v in value.split()]
        except ValueError:
            vals = []
        if len(vals) != n:
            raise InvalidScanError(f"{self.path}: {key} must be {n} integers; got {value!r}")
        return vals

    def floats(self, key: str, value: str, n: int) -> NDArray[np.float64]:
        """Parse ``value`` as ``n`` finite numbers (the error names ``key``)."""
        try:
            arr = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            arr = np.empty(0)
        if arr.shape != (n,) or not np.all(np.isfinite(arr)):
            raise InvalidScanError(f"{self.path}: {key} must be {n} finite numbers; got {value!r}")
        return arr

    def flag(self, keys: tuple[str, ...], default: bool) -> bool:
        """Parse the first of ``keys`` as a boolean (True/False, 1/0, yes/no), else ``default``."""
        found = self.get(*keys)
        if found is None:
            return default
        key, value = found
        v = value.strip().lower()
        if v in ("true", "1", "yes"):
            return True
        if v in ("false", "0", "no"):
            return False
        raise InvalidScanError(f"{self.path}: {key} must be True or False; got {value!r}")


def _read_header(path: Path) -> _Header:
    """Parse the header of a ``.mhd`` or ``.mha`` file (up to its ``ElementDataFile`` line)."""
    buf, more = read_header_bytes(path, "MetaImage header file", "MetaImage header")
    if not buf:
        raise CorruptFileError(f"{path}: empty file; expected a MetaImage text header")
    fields: dict[str, tuple[str, str]] = {}
    pos = 0
    lineno = 0
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        end = len(buf) if nl < 0 else nl + 1
        raw = buf[pos:end]
        pos = end
        lineno += 1
        if nl < 0 and more:
            raise CorruptFileError(
                f"{path}: not a MetaImage file: no ElementDataFile line in the first "
                f"{HEADER_MAX_BYTES} bytes"
            )
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        line = line.rstrip("\r\n")
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in line):
            raise CorruptFileError(
                f"{path}: not a MetaImage text header (line {lineno} holds binary bytes)"
            )
        if not line.strip():
            continue
        if "=" not in line:
            raise CorruptFileError(
                f"{path}: not a MetaImage header: line {lineno} is not 'Key = Value'; "
                f"got {line[:60]!r}"
            )
        key, value = (s.strip() for s in line.split("=", 1))
        if not key:
            raise CorruptFileError(f"{path}: line {lineno} of the MetaImage header has no key")
        fields[key.lower()] = (key, value)
        if key.lower() == "elementdatafile":
            return _Header(path, fields, end)
    if not _KNOWN_KEYS.intersection(fields):
        raise UnsupportedFormatError(
            f"{path}: not a MetaImage header (none of NDims, DimSize, ElementType, "
            "ElementDataFile ... found)"
        )
    raise InvalidScanError(f"{path}: MetaImage header has no ElementDataFile line")
