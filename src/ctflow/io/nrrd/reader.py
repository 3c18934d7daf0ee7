"""Read a 3-D NRRD volume (``.nrrd``, or ``.nhdr`` + data file) into a Scan.

A detached header may name its data file anywhere; by default only files in the header's own
folder (or below, after symbolic links) are read (``allow_external_data=True`` lifts that), and
only regular files (a FIFO or device is refused at once instead of blocking).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.io.nrrd.geometry import _geometry
from ctflow.io.nrrd.header import _DOMAIN_KINDS, _ENCODINGS, _KINDS, NRRD_TYPES, _read_header
from ctflow.io.scan import Scan
from ctflow.io.voxels import (
    INFLATE_IN,
    FileSource,
    VoxelSource,
    ZlibSource,
    as_source_path,
    check_data_file,
    max_voxels_bytes,
    open_regular,
    read_voxels,
    skip_bytes,
)
from ctflow.validation import as_bool

__all__ = ["read_nrrd"]


def _skip_lines(fh: BinaryIO, n: int, path: Path, where: str) -> None:
    """Skip ``n`` lines of the data file (the header's ``line skip``).

    The file is scanned in pieces of :data:`~ctflow.io.voxels.INFLATE_IN` bytes (not byte by
    byte, and never a whole line in memory), then left just after the ``n``-th newline.
    """
    left = n
    while left > 0:
        pos = fh.tell()
        chunk = fh.read(INFLATE_IN)
        if not chunk:
            raise CorruptFileError(f"{path}: {where} ends inside its {n} skipped lines")
        found = chunk.count(b"\n")
        if found < left:
            left -= found
            continue
        end = -1
        for _ in range(left):
            end = chunk.index(b"\n", end + 1)
        fh.seek(pos + end + 1)
        left = 0


def read_nrrd(path: str | os.PathLike[str], *, allow_external_data: bool = False) -> Scan:
    """Read a 3-D NRRD volume (``.nrrd`` with attached data, or ``.nhdr`` + data file).

    The rules (geometry as ITK reads it, encodings, what is refused) are in the package
    docstring of :mod:`ctflow.io.nrrd`.

    Parameters
    ----------
    path : path
        The ``.nrrd`` file or the detached ``.nhdr`` header.
    allow_external_data : bool, default False
        Read the data file wherever ``data file:`` points. By default it must resolve (after
        symbolic links) inside the header's folder or a folder below it, so a header cannot
        make ctflow read other files (``/etc/passwd``, ``../x``); pass True only for headers
        you trust.

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
        Missing file or data file, a FIFO/socket/device instead of a file, not a NRRD file,
        unknown header lines, truncated data, data longer than the header says, corrupt gzip
        stream.
    InvalidParameterError
        ``path`` cannot name a file (NUL byte, over-long name), or ``allow_external_data`` is
        not a bool.
    InvalidScanError
        Missing required fields, bad sizes, unknown or non-positive voxel size,
        non-orthogonal directions, NaN/Inf voxels, a claimed volume over
        :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES`.
    UnsupportedFormatError
        Unknown element type, ``block`` type, encodings other than raw/gzip, multi-component
        voxels, non-3-D images, time spaces, ``LIST`` / pattern data files, a data file outside
        the header's folder (without ``allow_external_data``).

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
    p = as_source_path(path, "read_nrrd")
    as_bool(allow_external_data, "allow_external_data", "read_nrrd")
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
    limit = max_voxels_bytes()
    if n_bytes > limit:
        raise InvalidScanError(
            f"{p}: header claims {sizes[0]}x{sizes[1]}x{sizes[2]} {type_name} voxels = "
            f"{n_bytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {limit}"
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
    owner: Path | None = None  # the header, when the data lie in another file
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
        check_data_file(p, data_path, f"{found[0]}: {name}", allow_external_data)
        start, owner = 0, p
    info["data_file"] = str(data_path)
    where = "the data after the header" if data_path == p else f"data file {data_path.name}"
    dims_zyx = (sizes[2], sizes[1], sizes[0])
    label = f"its data file {data_path} ('data file')"
    fh, file_size = open_regular(data_path, "NRRD data file", owner=owner, label=label)
    try:
        with fh:
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
