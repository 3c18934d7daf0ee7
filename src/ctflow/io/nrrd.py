"""NRRD (``.nrrd``, detached ``.nhdr``) reader in pure numpy, with the geometry ITK reads.

A NRRD file is a text header (``NRRD000x`` magic, ``field: value`` lines, ``key:=value``
pairs, ``#`` comments) ended by an empty line, followed by the voxels (or a ``data file:``
field pointing to them). Sizes are listed fastest axis first (x y z). Voxels go straight from
the file into a preallocated numpy array (``readinto``, or zlib inflate for ``gzip`` encoding;
both release the GIL, so scans load in parallel on threads).

Geometry (what SimpleITK reports for the same file)
----------------------------------------------------
* With ``space`` (or ``space dimension``): ``space directions`` give, per axis, the world
  vector between neighbouring voxels: spacing = its length, direction = it normalised;
  ``space origin`` is the world position of voxel (0, 0, 0) (default 0). ITK converts to LPS:
  ``right-anterior-superior`` (RAS) flips the signs of x and y, ``left-anterior-superior``
  (LAS) of y; LPS, ``scanner-xyz``, ``3D-right/left-handed`` and a bare ``space dimension``
  are taken as they are. Time spaces (RAST ...) have 4 world axes: refused.
* Without a space: ``spacings`` give the spacing, the direction is the identity and the origin
  comes from ``axis mins`` (shifted by half a voxel for ``cell`` centering, the default, as
  teem's ``nrrdOriginCalculate`` does), else 0.

ctflow is stricter than ITK: a voxel size that is not given (no ``space directions`` and no
``spacings``), zero or negative spacing, and non-orthogonal space directions (which
:class:`~ctflow.geometry.Geometry` cannot represent) are errors; raw data longer than the header
says is an error too. Encodings ``raw`` and ``gzip`` are read; ``bzip2`` (which SimpleITK's NrrdIO
cannot read either), ``ascii``/``text`` and ``hex`` are refused, as are multi-component voxels
(a non-domain ``kinds`` axis), non-3-D images, ``LIST`` and ``%d`` data files.

Voxel values: integer data becomes int16 when it fits, else float32 when exact; float data
float32; NaN/Inf voxels are refused.

Examples
--------
>>> import numpy as np, tempfile
>>> d = tempfile.mkdtemp()
>>> header = ("NRRD0004\\ntype: short\\ndimension: 3\\nsizes: 4 3 2\\nendian: little\\n"
...           "encoding: raw\\nspace: RAS\\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,2)\\n"
...           "space origin: (10,20,30)\\n\\n")
>>> with open(f"{d}/a.nrrd", "wb") as f:
...     _ = f.write(header.encode() + np.zeros(24, "<i2").tobytes())
>>> scan = read_nrrd(f"{d}/a.nrrd")
>>> scan.shape, scan.geometry.spacing.tolist(), scan.geometry.origin.tolist()
((2, 3, 4), [2.0, 0.5, 0.5], [30.0, -20.0, -10.0])
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.metaimage import (
    HEADER_MAX_BYTES,
    MAX_VOXELS_BYTES,
    FileSource,
    VoxelSource,
    ZlibSource,
    read_header_bytes,
    read_voxels,
    skip_bytes,
)
from ctflow.io.scan import Scan

__all__ = ["HEADER_MAX_BYTES", "NRRD_TYPES", "read_nrrd"]

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

# space name (lower case) -> (canonical name, world dimension, sign flips to LPS or None)
_RAS = (-1.0, -1.0, 1.0)
_LAS = (1.0, -1.0, 1.0)
_SPACES: dict[str, tuple[str, int, tuple[float, float, float] | None]] = {
    **dict.fromkeys(["right-anterior-superior", "ras"], ("RAS", 3, _RAS)),
    **dict.fromkeys(["left-anterior-superior", "las"], ("LAS", 3, _LAS)),
    **dict.fromkeys(["left-posterior-superior", "lps"], ("LPS", 3, (1.0, 1.0, 1.0))),
    **dict.fromkeys(["right-anterior-superior-time", "rast"], ("RAST", 4, None)),
    **dict.fromkeys(["left-anterior-superior-time", "last"], ("LAST", 4, None)),
    **dict.fromkeys(["left-posterior-superior-time", "lpst"], ("LPST", 4, None)),
    "scanner-xyz": ("scanner-xyz", 3, None),
    "scanner-xyz-time": ("scanner-xyz-time", 4, None),
    "3d-right-handed": ("3D-right-handed", 3, None),
    "3d-left-handed": ("3D-left-handed", 3, None),
    "3d-right-handed-time": ("3D-right-handed-time", 4, None),
    "3d-left-handed-time": ("3D-left-handed-time", 4, None),
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
_VECTOR = re.compile(r"\(([^()]*)\)|(none)", re.IGNORECASE)


# -- header ------------------------------------------------------------------------------------
@dataclass
class _Header:
    path: Path
    fields: dict[str, tuple[str, str]]  # normalised name -> (name as written, value)
    data_offset: int | None  # first byte after the header (None: header ends at EOF)
    key_values: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> tuple[str, str] | None:
        return self.fields.get(name)

    def require(self, name: str) -> tuple[str, str]:
        found = self.fields.get(name)
        if found is None:
            raise InvalidScanError(f"{self.path}: NRRD header has no {name!r} field")
        return found

    def ints(self, name: str, n: int | None = None) -> list[int] | None:
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


def _vector(path: Path, key: str, text: str, n: int) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise InvalidScanError(
            f"{path}: NRRD field {key!r} needs vectors of {n} finite numbers; got ({text})"
        )
    return vals


def _vectors(path: Path, key: str, value: str, n: int) -> list[list[float] | None]:
    """Parse ``(a,b,c) (d,e,f) none ...``."""
    out: list[list[float] | None] = []
    rest = value.strip()
    pos = 0
    for m in _VECTOR.finditer(rest):
        if rest[pos : m.start()].strip():
            break
        out.append(None if m.group(2) else _vector(path, key, m.group(1), n))
        pos = m.end()
    if rest[pos:].strip() or not out:
        raise InvalidScanError(
            f"{path}: NRRD field {key!r} must be '(x,y,z)' vectors or 'none'; got {value!r}"
        )
    return out


def _read_header(path: Path) -> _Header:
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
        elif ":=" in line:
            k, _, v = line.partition(":=")
            key_values[k] = v
        else:
            raise CorruptFileError(
                f"{path}: NRRD header line {lineno} is not a known 'field: value' line or a "
                f"'key:=value' pair; got {line[:60]!r}"
            )
    return _Header(path, fields, None, key_values)


# -- geometry ----------------------------------------------------------------------------------
def _geometry(h: _Header, n_axes: int, info: dict[str, Any]) -> Geometry:
    p = h.path
    space_dim = 0
    flips: tuple[float, float, float] | None = None
    found = h.get("space")
    if found is not None:
        key = found[1].strip().lower()
        if key not in _SPACES:
            raise UnsupportedFormatError(
                f"{p}: unknown NRRD space {found[1]!r}; known: RAS, LAS, LPS (and their long "
                "names), scanner-xyz, 3D-right-handed, 3D-left-handed"
            )
        name, space_dim, flips = _SPACES[key]
        info["space"] = name
    dims = h.ints("spacedimension", 1)
    if dims is not None:
        if space_dim and dims[0] != space_dim:
            raise InvalidScanError(
                f"{p}: NRRD 'space dimension' {dims[0]} disagrees with space {info['space']}"
            )
        space_dim = dims[0]
        info.setdefault("space", f"{space_dim}-D (no named space)")
    if space_dim and space_dim != n_axes:
        raise UnsupportedFormatError(
            f"{p}: NRRD space has {space_dim} world axes but the image has {n_axes} domain axes "
            "(time spaces are not supported)"
        )
    if space_dim:
        if h.get("spacings") is not None:
            raise InvalidScanError(
                f"{p}: NRRD header has both 'space' and 'spacings'; with a space, the voxel "
                "size comes from 'space directions' only"
            )
        found = h.get("spacedirections")
        if found is None:
            raise InvalidScanError(
                f"{p}: NRRD header has a space but no 'space directions': the voxel size and "
                "orientation are unknown"
            )
        vecs = _vectors(p, found[0], found[1], space_dim)
        if len(vecs) != n_axes or any(v is None for v in vecs):
            raise InvalidScanError(
                f"{p}: NRRD 'space directions' must give one (x,y,z) vector per axis; got "
                f"{found[1]!r}"
            )
        cols = np.array(vecs, dtype=np.float64).T  # column j = world step of axis j
        if flips is not None:
            cols *= np.array(flips)[:, None]
        spacing_xyz = np.sqrt((cols * cols).sum(axis=0))
        if np.any(spacing_xyz <= 0):
            raise InvalidScanError(
                f"{p}: NRRD 'space directions' must be non-zero vectors (zero spacing); got "
                f"{found[1]!r}"
            )
        d_sitk = cols / spacing_xyz[None, :]
        origin_xyz = np.zeros(3)
        found = h.get("spaceorigin")
        if found is not None:
            vecs = _vectors(p, found[0], found[1], space_dim)
            vec = vecs[0]
            if len(vecs) != 1 or vec is None:
                raise InvalidScanError(
                    f"{p}: NRRD 'space origin' must be one (x,y,z) vector; got {found[1]!r}"
                )
            origin_xyz = np.array(vec, dtype=np.float64)
            if flips is not None:
                origin_xyz = origin_xyz * np.array(flips)
    else:
        spacings = h.floats("spacings", n_axes)
        if spacings is None or not all(math.isfinite(v) for v in spacings):
            raise InvalidScanError(
                f"{p}: NRRD header gives no voxel size (no 'space directions' and no finite "
                f"'spacings' for every axis; got {spacings})"
            )
        spacing_xyz = np.array(spacings, dtype=np.float64)
        d_sitk = np.eye(3)
        origin_xyz = _origin_from_mins(h, n_axes, spacing_xyz)
        info["space"] = None
    if np.any(spacing_xyz <= 0):
        raise InvalidScanError(
            f"{p}: NRRD spacing must be positive (x y z) in mm; got {spacing_xyz.tolist()}"
        )
    try:
        return Geometry(
            spacing_xyz[::-1], origin_xyz[::-1], direction_from_sitk(tuple(d_sitk.ravel()))
        )
    except InvalidScanError as exc:
        raise InvalidScanError(f"{p}: NRRD space directions: {exc}") from None


def _origin_from_mins(h: _Header, n_axes: int, spacing_xyz: NDArray[np.float64]) -> NDArray[Any]:
    """teem's nrrdOriginCalculate (cell centering by default); 0 without axis mins."""
    mins = h.floats("axismins", n_axes)
    if mins is None or not all(math.isfinite(v) for v in mins):
        return np.zeros(3)
    sizes = h.ints("sizes", n_axes)
    assert sizes is not None
    centers = h.words("centers", n_axes) or ["???"] * n_axes
    maxs = h.floats("axismaxs", n_axes)
    origin = np.zeros(3)
    for k in range(n_axes):
        cell = centers[k].lower() != "node"
        if maxs is not None and math.isfinite(maxs[k]):
            step = (maxs[k] - mins[k]) / (sizes[k] if cell else max(sizes[k] - 1, 1))
        else:
            step = float(spacing_xyz[k])
        origin[k] = mins[k] + (step / 2 if cell else 0.0)
    return origin


# -- data --------------------------------------------------------------------------------------
def _skip_lines(fh: BinaryIO, n: int, path: Path, where: str) -> None:
    for _ in range(n):
        if not fh.readline():
            raise CorruptFileError(f"{path}: {where} ends inside its {n} skipped lines")


def read_nrrd(path: str | os.PathLike[str]) -> Scan:
    """Read a 3-D NRRD volume (``.nrrd`` with attached data, or ``.nhdr`` + data file).

    The rules (geometry as ITK reads it, encodings, what is refused) are in the module
    docstring of :mod:`ctflow.io.nrrd`.

    Parameters
    ----------
    path : path
        The ``.nrrd`` file or the detached ``.nhdr`` header.

    Returns
    -------
    Scan
        ``images`` (Z, Y, X) in stored orientation: int16 when integer values fit, float32
        otherwise; ``geometry`` in (z, y, x) LPS mm equal to SimpleITK's for the file;
        ``info`` with ``format``, ``type``, ``encoding``, ``space``, ``data_file`` and
        ``key_values``.

    Raises
    ------
    CorruptFileError
        Missing file or data file, not a NRRD file, unknown header lines, truncated data,
        data longer than the header says, corrupt gzip stream.
    InvalidScanError
        Missing required fields, bad sizes, unknown or non-positive voxel size,
        non-orthogonal directions, NaN/Inf voxels, a claimed volume over ``MAX_VOXELS_BYTES``.
    UnsupportedFormatError
        Unknown element type, ``block`` type, encodings other than raw/gzip, multi-component
        voxels, non-3-D images, time spaces, ``LIST`` / pattern data files.

    Examples
    --------
    >>> import numpy as np, tempfile, SimpleITK as sitk
    >>> d = tempfile.mkdtemp()
    >>> img = sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    >>> img.SetSpacing((0.5, 0.5, 2.0))
    >>> sitk.WriteImage(img, f"{d}/a.nrrd", useCompression=True)
    >>> scan = read_nrrd(f"{d}/a.nrrd")
    >>> int(scan.images[1, 2, 3]), scan.geometry.spacing.tolist(), scan.info["encoding"]
    (23, [2.0, 0.5, 0.5], 'gzip')
    """
    p = Path(path)
    h = _read_header(p)
    _, type_name = h.require("type")
    tkey = " ".join(type_name.lower().split())
    if tkey == "block":
        raise UnsupportedFormatError(f"{p}: NRRD type 'block' (opaque records) is not a CT volume")
    if tkey not in NRRD_TYPES:
        raise UnsupportedFormatError(
            f"{p}: unknown NRRD element type {type_name!r}; expected one of "
            "int8/uint8/int16/uint16/int32/uint32/int64/uint64/float/double (teem spellings)"
        )
    dims = h.ints("dimension", 1)
    if dims is None:
        h.require("dimension")
    assert dims is not None
    n_dim = dims[0]
    if not 1 <= n_dim <= 16:
        raise InvalidScanError(f"{p}: NRRD dimension must be 1..16; got {n_dim}")
    h.require("sizes")
    sizes = h.ints("sizes", n_dim)
    assert sizes is not None
    if min(sizes) <= 0:
        raise InvalidScanError(f"{p}: NRRD sizes must be positive integers; got {sizes}")
    kinds = h.words("kinds", n_dim)
    if kinds is not None:
        unknown = [k for k in kinds if k.lower() not in _KINDS]
        if unknown:
            raise InvalidScanError(f"{p}: unknown NRRD kinds {unknown}")
        ranged = [k for k in kinds if k.lower() not in _DOMAIN_KINDS]
        if ranged:
            raise UnsupportedFormatError(
                f"{p}: NRRD kinds {kinds} include non-domain axes {ranged} (multi-component "
                "voxels); ctflow reads scalar CT volumes"
            )
    if n_dim != 3:
        raise UnsupportedFormatError(
            f"{p}: expected a 3-D volume; got a {n_dim}-D NRRD image (sizes {sizes})"
        )
    _, enc_name = h.require("encoding")
    encoding = _ENCODINGS.get(enc_name.strip().lower())
    if encoding is None:
        raise UnsupportedFormatError(f"{p}: unknown NRRD encoding {enc_name!r}")
    if encoding not in ("raw", "gzip"):
        raise UnsupportedFormatError(
            f"{p}: NRRD encoding {encoding!r} is not supported (ctflow reads raw and gzip; "
            "SimpleITK's NrrdIO has no bzip2 either); convert the file, or read ascii/hex with "
            "fmt='sitk'"
        )
    code = NRRD_TYPES[tkey]
    itemsize = np.dtype(code).itemsize
    big = False
    found = h.get("endian")
    if found is not None:
        endian = found[1].strip().lower()
        if endian not in ("little", "big"):
            raise InvalidScanError(f"{p}: NRRD endian must be little or big; got {found[1]!r}")
        big = endian == "big"
    elif itemsize > 1:
        raise InvalidScanError(
            f"{p}: NRRD type {type_name!r} with {encoding} encoding needs an 'endian' field"
        )
    stored = np.dtype(code).newbyteorder(">" if big else "<")

    info: dict[str, Any] = {
        "format": "nrrd",
        "reader": "ctflow.io.nrrd",
        "type": type_name,
        "encoding": encoding,
        "key_values": dict(h.key_values),
    }
    geometry = _geometry(h, n_dim, info)
    n_bytes = sizes[0] * sizes[1] * sizes[2] * itemsize
    if n_bytes > MAX_VOXELS_BYTES:
        raise InvalidScanError(
            f"{p}: header claims {sizes[0]}x{sizes[1]}x{sizes[2]} {type_name} voxels = "
            f"{n_bytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {MAX_VOXELS_BYTES}"
        )
    line_skip = (h.ints("lineskip", 1) or [0])[0]
    byte_skip = (h.ints("byteskip", 1) or [0])[0]
    if line_skip < 0 or byte_skip < -1:
        raise InvalidScanError(
            f"{p}: NRRD line skip must be >= 0 and byte skip >= -1; got {line_skip}, {byte_skip}"
        )
    if byte_skip == -1 and encoding != "raw":
        raise InvalidScanError(f"{p}: NRRD byte skip -1 is only valid for raw encoding")

    found = h.get("datafile")
    if found is None:
        if h.data_offset is None:
            raise CorruptFileError(
                f"{p}: NRRD header has neither an empty line followed by data nor a "
                "'data file' field (a .nhdr needs 'data file:')"
            )
        data_path, start = p, h.data_offset
    else:
        name = found[1].strip()
        if not name or name.upper().startswith("LIST") or len(name.split()) > 1 or "%" in name:
            raise UnsupportedFormatError(
                f"{p}: NRRD 'data file' must name one file; got {name!r} (lists and file "
                "patterns are not supported)"
            )
        data_path = Path(name)
        if not data_path.is_absolute():
            data_path = p.parent / data_path
        if not data_path.is_file():
            raise CorruptFileError(f"{p}: its data file {data_path} ('data file') does not exist")
        start = 0
    info["data_file"] = str(data_path)
    where = "the data after the header" if data_path == p else f"data file {data_path.name}"
    dims_zyx = (sizes[2], sizes[1], sizes[0])
    try:
        file_size = data_path.stat().st_size
        with open(data_path, "rb", buffering=0) as fh:
            fh.seek(start)
            if line_skip:
                _skip_lines(fh, line_skip, p, where)
                start = fh.tell()
            src: VoxelSource
            if encoding == "raw":
                if byte_skip == -1:
                    start = file_size - n_bytes
                    if start < 0:
                        raise CorruptFileError(
                            f"{p}: {where} holds {file_size} bytes but the header needs "
                            f"{n_bytes} (truncated file)"
                        )
                else:
                    start += byte_skip
                    avail = file_size - start
                    if avail != n_bytes:
                        what = "truncated file" if avail < n_bytes else "sizes disagree"
                        raise CorruptFileError(
                            f"{p}: {where} holds {max(avail, 0)} bytes of voxel data but the "
                            f"header (sizes {' '.join(map(str, sizes))}, {type_name}) needs "
                            f"{n_bytes}: expected {n_bytes} bytes, got {max(avail, 0)} ({what})"
                        )
                fh.seek(start)
                src = FileSource(fh)
            else:
                what = "the header's sizes x type"
                src = ZlibSource(fh, file_size - start, p, data_path, multi_member=True, what=what)
                skip_bytes(src, byte_skip, p, where)
            images = read_voxels(src, dims_zyx, stored, p, where, f"NRRD {type_name}")
    except CTFlowError:
        raise
    except MemoryError:
        raise InvalidScanError(f"{p}: not enough memory for {n_bytes} bytes of voxels") from None
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot read {where} ({exc})") from exc
    return Scan(images, geometry, str(p), info)
