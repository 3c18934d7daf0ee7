"""Parse a NRRD text header: the magic line, ``field: value`` lines and ``key:=value`` pairs.

The header ends at the first empty line (the data follow it in a ``.nrrd``) or at the end of a
detached ``.nhdr``. Field names are normalised as teem does (case, spaces and underscores
ignored); an unknown line is an error, ``#`` comments are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ctflow.errors import CorruptFileError, InvalidScanError
from ctflow.io.voxels import HEADER_MAX_BYTES, read_header_bytes

__all__ = ["NRRD_TYPES"]


#: NRRD type names (all of teem's spellings) -> numpy type code.
NRRD_TYPES: dict[str, str] = {
    **dict.fromkeys(["signed char", "int8", "int8_t"], "i1"),
    **dict.fromkeys(["uchar", "unsigned char", "uint8", "uint8_t"], "u1"),
    **dict.fromkeys(
        ["short", "short int", "signed short", "signed short int", "int16", "int16_t"], "i2"
    ),
    **dict.fromkeys(["ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"], "u2"),
    **dict.fromkeys(["int", "signed int", "int32", "int32_t"], "i4"),
    **dict.fromkeys(["uint", "unsigned int", "uint32", "uint32_t"], "u4"),
    **dict.fromkeys(
        [
            "longlong",
            "long long",
            "long long int",
            "signed long long",
            "signed long long int",
            "int64",
            "int64_t",
        ],
        "i8",
    ),
    **dict.fromkeys(
        [
            "ulonglong",
            "unsigned long long",
            "unsigned long long int",
            "uint64",
            "uint64_t",
        ],
        "u8",
    ),
    "float": "f4",
    "double": "f8",
}


_ENCODINGS = {
    "raw": "raw",
    "gzip": "gzip",
    "gz": "gzip",
    "bzip2": "bzip2",
    "bz2": "bzip2",
    "ascii": "ascii",
    "text": "ascii",
    "txt": "ascii",
    "hex": "hex",
    "zrl": "zrl",
}
_FIELDS = {
    "dimension",
    "type",
    "sizes",
    "spacings",
    "thicknesses",
    "axismins",
    "axismaxs",
    "centers",
    "centerings",
    "labels",
    "units",
    "kinds",
    "min",
    "max",
    "oldmin",
    "oldmax",
    "endian",
    "encoding",
    "lineskip",
    "byteskip",
    "content",
    "sampleunits",
    "datafile",
    "space",
    "spacedimension",
    "spaceunits",
    "spaceorigin",
    "spacedirections",
    "measurementframe",
    "blocksize",
    "number",
}
_DOMAIN_KINDS = {"domain", "space", "time", "???", "none", "(unknown_kind)"}
_KINDS = _DOMAIN_KINDS | {
    "list",
    "point",
    "vector",
    "covariant-vector",
    "normal",
    "stub",
    "scalar",
    "complex",
    "2-vector",
    "3-color",
    "rgb-color",
    "hsv-color",
    "xyz-color",
    "4-color",
    "rgba-color",
    "3-vector",
    "3-gradient",
    "3-normal",
    "4-vector",
    "quaternion",
    "2d-symmetric-matrix",
    "2d-masked-symmetric-matrix",
    "2d-matrix",
    "2d-masked-matrix",
    "3d-symmetric-matrix",
    "3d-masked-symmetric-matrix",
    "3d-matrix",
    "3d-masked-matrix",
}
_MAGIC = re.compile(rb"NRRD000[1-9]")


@dataclass
class _Header:
    """The fields (by normalised name) and ``key:=value`` pairs of one NRRD header."""

    path: Path
    fields: dict[str, tuple[str, str]]  # normalised name -> (name as written, value)
    data_offset: int | None  # first byte after the header (None: header ends at EOF)
    key_values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str, str] | None:
        """Return (name as written, value) of a field, or None when absent."""
        return self.fields.get(name)

    def require(self, name: str) -> tuple[str, str]:
        """Return (name as written, value) of a field; refuse a header without it."""
        found = self.fields.get(name)
        if found is None:
            raise InvalidScanError(f"{self.path}: NRRD header has no {name!r} field")
        return found

    def ints(self, name: str, n: int | None = None) -> list[int] | None:
        """Parse a field as (``n``) integers; None when absent."""
        found = self.get(name)
        if found is None:
            return None
        key, value = found
        try:
            vals = [int(v) for v in value.split()]
        except ValueError:
            vals = []
        if not vals or (n is not None and len(vals) != n):
            count = f"{n} integers" if n is not None else "integers"
            raise InvalidScanError(
                f"{self.path}: NRRD field {key!r} must be {count}; got {value!r}"
            )
        return vals

    def floats(self, name: str, n: int) -> list[float] | None:
        """Parse a field as ``n`` numbers (``nan`` parses too); None when absent."""
        found = self.get(name)
        if found is None:
            return None
        key, value = found
        try:
            vals = [float(v) for v in value.split()]
        except ValueError:
            vals = []
        if len(vals) != n:
            raise InvalidScanError(
                f"{self.path}: NRRD field {key!r} must be {n} numbers; got {value!r}"
            )
        return vals

    def words(self, name: str, n: int) -> list[str] | None:
        """Split a field into ``n`` words; None when absent."""
        found = self.get(name)
        if found is None:
            return None
        key, value = found
        vals = value.split()
        if len(vals) != n:
            raise InvalidScanError(
                f"{self.path}: NRRD field {key!r} must be {n} words; got {value!r}"
            )
        return vals


def _read_header(path: Path) -> _Header:
    """Parse the header of a ``.nrrd`` or ``.nhdr`` file (up to its empty line)."""
    buf, more = read_header_bytes(path, "NRRD file", "NRRD header")
    first_nl = buf.find(b"\n")
    first = buf[: first_nl if first_nl >= 0 else len(buf)].rstrip(b"\r")
    if not _MAGIC.fullmatch(first):
        raise CorruptFileError(
            f"{path}: not a NRRD file (the first line must be NRRD0001..NRRD0009; got "
            f"{first[:20]!r})"
        )
    fields: dict[str, tuple[str, str]] = {}
    key_values: dict[str, str] = {}
    pos = first_nl + 1 if first_nl >= 0 else len(buf)
    lineno = 1
    while pos < len(buf):
        nl = buf.find(b"\n", pos)
        if nl < 0 and more:
            raise CorruptFileError(
                f"{path}: NRRD header longer than {HEADER_MAX_BYTES} bytes (no empty line "
                "ends it): not a NRRD file or corrupt"
            )
        end = len(buf) if nl < 0 else nl + 1
        raw = buf[pos:end].rstrip(b"\r\n")
        pos = end
        lineno += 1
        if not raw:
            return _Header(path, fields, pos, key_values)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = raw.decode("latin-1")
        if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in line):
            raise CorruptFileError(
                f"{path}: NRRD header line {lineno} holds binary bytes (missing the empty line "
                "before the data?)"
            )
        if line.startswith("#"):
            continue
        name, sep, value = line.partition(": ")
        norm = name.strip().lower().replace(" ", "").replace("_", "")
        if sep and norm in _FIELDS:
            fields["centers" if norm == "centerings" else norm] = (name.strip(), value.strip())
            if norm == "datafile" and value.strip().upper().startswith("LIST"):
                return _Header(path, fields, None, key_values)  # file names follow, one a line
        elif ":=" in line:
            k, _, v = line.partition(":=")
            key_values[k] = v
        else:
            raise CorruptFileError(
                f"{path}: NRRD header line {lineno} is not a known 'field: value' line or a "
                f"'key:=value' pair; got {line[:60]!r}"
            )
    return _Header(path, fields, None, key_values)
