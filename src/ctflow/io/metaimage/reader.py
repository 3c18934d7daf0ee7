"""Read a MetaImage scan (``.mhd`` + data file, or ``.mha``) into a Scan.

The header is checked key by key, the geometry is taken as ITK takes it, and the voxels are
read by :func:`~ctflow.io.voxels.read_voxels` after their size is checked against the file.
A ``.mhd`` may name its data file anywhere; by default only files in the header's own folder (or
below, after symbolic links) are read (``allow_external_data=True`` lifts that), and only
regular files (a FIFO or device is refused at once instead of blocking).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ctflow.errors import CorruptFileError, CTFlowError, InvalidScanError, UnsupportedFormatError
from ctflow.geometry import Geometry, direction_from_sitk
from ctflow.io.metaimage.header import MET_TYPES, _read_header
from ctflow.io.scan import Scan
from ctflow.io.voxels import (
    FileSource,
    VoxelSource,
    ZlibSource,
    as_source_path,
    check_data_file,
    max_voxels_bytes,
    open_regular,
    read_voxels,
)
from ctflow.validation import as_bool

__all__ = ["read_metaimage"]


def read_metaimage(path: str | os.PathLike[str], *, allow_external_data: bool = False) -> Scan:
    """Read a MetaImage scan (``.mhd`` + ``.raw``/``.zraw``, or single-file ``.mha``).

    Parameters
    ----------
    path : path
        The header file (``.mhd``) or the single-file image (``.mha``).
    allow_external_data : bool, default False
        Read the data file wherever ``ElementDataFile`` points. By default it must resolve
        (after symbolic links) inside the header's folder or a folder below it, so a header
        cannot make ctflow read other files (``/etc/passwd``, ``../x``); pass True only for
        headers you trust.

    Returns
    -------
    Scan
        ``images`` (Z, Y, X): int16 for integer data that fits (``MET_SHORT`` without a
        copy), float32 otherwise; ``geometry`` in (z, y, x) LPS mm exactly as SimpleITK reports
        it for the file; ``source`` the path; ``info`` with ``format``, ``element_type``,
        ``data_file``, ``compressed``, ``byte_order_msb`` and ``anatomical_orientation``.

    Raises
    ------
    CorruptFileError
        Missing file or data file, a FIFO/socket/device instead of a file, not a text header,
        data shorter or longer than the header says, corrupt zlib stream.
    InvalidParameterError
        ``path`` cannot name a file (NUL byte, over-long name), or ``allow_external_data`` is
        not a bool.
    InvalidScanError
        Missing header keys, NDims != 3, sizes <= 0, bad spacing/origin/direction, NaN/Inf
        voxels, a claimed volume larger than :data:`~ctflow.io.voxels.MAX_VOXELS_BYTES`.
    UnsupportedFormatError
        Unknown ``ElementType``, several channels, ASCII data, slice-list data files, a data
        file outside the header's folder (without ``allow_external_data``), or a text file that
        is not a MetaImage header.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.metaimage import write_metaimage
    >>> arr = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    >>> p = write_metaimage(f"{tempfile.mkdtemp()}/a.mha", arr, Geometry((2.0, 1.0, 0.5)))
    >>> scan = read_metaimage(p)
    >>> bool((scan.images == arr).all()), scan.geometry.spacing.tolist()
    (True, [2.0, 1.0, 0.5])
    """
    p = as_source_path(path, "read_metaimage")
    as_bool(allow_external_data, "allow_external_data", "read_metaimage")
    hdr = _read_header(p)

    obj = hdr.get("ObjectType")
    if obj is not None and obj[1].strip().lower() != "image":
        raise UnsupportedFormatError(f"{p}: ObjectType must be Image for a scan; got {obj[1]!r}")
    key, value = hdr.require("NDims")
    ndims = hdr.ints(key, value, 1)[0]
    if ndims != 3:
        raise InvalidScanError(f"{p}: NDims must be 3 (a 3-D volume); got {ndims}")
    key, value = hdr.require("DimSize")
    dims_xyz = hdr.ints(key, value, 3)
    if min(dims_xyz) <= 0:
        raise InvalidScanError(f"{p}: DimSize must be 3 positive integers (x y z); got {value!r}")
    key, value = hdr.require("ElementSpacing", "ElementSize")
    spacing_xyz = hdr.floats(key, value, 3)
    if np.any(spacing_xyz <= 0):
        raise InvalidScanError(
            f"{p}: {key} must be 3 positive numbers (x y z) in mm; got {value!r}"
        )
    found = hdr.get("Offset", "Origin", "Position")
    origin_xyz = np.zeros(3) if found is None else hdr.floats(found[0], found[1], 3)
    found = hdr.get("TransformMatrix", "Rotation", "Orientation")
    if found is None:
        direction = np.eye(3)
    else:
        cols = hdr.floats(found[0], found[1], 9).reshape(3, 3)
        # ITK writes column j (world vector of voxel axis j) as the j-th triple
        if np.abs(cols).max() > 2.0:  # axis cosines are at most 1 (refused before any overflow)
            raise InvalidScanError(
                f"{p}: {found[0]} must hold axis cosines (3 unit vectors, |value| <= 1); got "
                f"{found[1]!r}"
            )
        direction = direction_from_sitk(tuple(cols.T.ravel()))

    key, value = hdr.require("ElementType")
    etype = value.strip().upper()
    if etype not in MET_TYPES:
        raise UnsupportedFormatError(
            f"{p}: ElementType must be one of {', '.join(MET_TYPES)}; got {value!r}"
        )
    found = hdr.get("ElementNumberOfChannels")
    if found is not None and hdr.ints(found[0], found[1], 1)[0] != 1:
        raise UnsupportedFormatError(
            f"{p}: ElementNumberOfChannels must be 1 (a scalar CT volume); got {found[1]!r}"
        )
    if not hdr.flag(("BinaryData",), True):
        raise UnsupportedFormatError(f"{p}: BinaryData = False (ASCII voxels) is not supported")
    msb = hdr.flag(("BinaryDataByteOrderMSB", "ElementByteOrderMSB"), False)
    compressed = hdr.flag(("CompressedData",), False)
    comp_size: int | None = None
    found = hdr.get("CompressedDataSize")
    if compressed and found is not None:
        comp_size = hdr.ints(found[0], found[1], 1)[0]
        if comp_size <= 0:
            raise InvalidScanError(f"{p}: CompressedDataSize must be positive; got {found[1]!r}")
    header_size = 0
    found = hdr.get("HeaderSize")
    if found is not None:
        header_size = hdr.ints(found[0], found[1], 1)[0]
        if header_size < -1:
            raise InvalidScanError(f"{p}: HeaderSize must be -1 or >= 0; got {found[1]!r}")
    anatomical = hdr.get("AnatomicalOrientation")

    try:
        geometry = Geometry(spacing_xyz[::-1], origin_xyz[::-1], direction)
    except InvalidScanError as exc:
        raise InvalidScanError(f"{p}: {exc}") from None

    stored = np.dtype(MET_TYPES[etype]).newbyteorder(">" if msb else "<")
    dims_zyx = (dims_xyz[2], dims_xyz[1], dims_xyz[0])
    n_bytes = dims_xyz[0] * dims_xyz[1] * dims_xyz[2] * stored.itemsize
    limit = max_voxels_bytes()
    if n_bytes > limit:
        raise InvalidScanError(
            f"{p}: header claims {dims_xyz[0]}x{dims_xyz[1]}x{dims_xyz[2]} {etype} voxels = "
            f"{n_bytes} bytes; refusing volumes larger than MAX_VOXELS_BYTES = {limit}"
        )

    _, data_name = hdr.require("ElementDataFile")
    data_name = data_name.strip()
    owner: Path | None = None  # the header, when the data lie in another file
    if data_name.upper() == "LOCAL":
        data_path, start = p, hdr.data_offset
    else:
        if data_name.upper().startswith("LIST") or "%" in data_name or not data_name:
            raise UnsupportedFormatError(
                f"{p}: ElementDataFile must name one data file or LOCAL; got {data_name!r} "
                "(slice lists and file patterns are not supported)"
            )
        data_path = Path(data_name)
        if not data_path.is_absolute():
            data_path = p.parent / data_path
        check_data_file(p, data_path, f"ElementDataFile = {data_name}", allow_external_data)
        start, owner = 0, p
    where = "the data after the header" if data_path == p else f"data file {data_path.name}"
    label = f"its data file {data_path} (ElementDataFile)"
    fh, file_size = open_regular(data_path, "MetaImage data file", owner=owner, label=label)
    try:
        with fh:
            if header_size > 0:
                start = header_size
            avail = file_size - start
            if compressed:
                n_in = avail if comp_size is None else comp_size
                if avail <= 0:
                    raise CorruptFileError(
                        f"{p}: {where} holds no compressed data: the file has {file_size} "
                        f"bytes and the data would start at byte {start} (truncated file or "
                        "bad HeaderSize)"
                    )
                if avail != n_in:
                    raise CorruptFileError(
                        f"{p}: {where} holds {avail} compressed bytes but CompressedDataSize "
                        f"says {n_in} ({'truncated file' if avail < n_in else 'sizes disagree'})"
                    )
            else:
                if header_size == -1:
                    start = file_size - n_bytes
                    ok = avail >= n_bytes
                else:
                    ok = avail == n_bytes
                if not ok:
                    what = "truncated file" if avail < n_bytes else "sizes disagree"
                    raise CorruptFileError(
                        f"{p}: {where} holds {max(avail, 0)} bytes of voxel data but the header "
                        f"(DimSize {' '.join(map(str, dims_xyz))}, {etype}) needs {n_bytes}: "
                        f"expected {n_bytes} bytes, got {max(avail, 0)} ({what})"
                    )
            fh.seek(start)
            src: VoxelSource
            if compressed:
                src = ZlibSource(fh, n_in, p, data_path, what="the header's DimSize x ElementType")
            else:
                src = FileSource(fh)
            images = read_voxels(src, dims_zyx, stored, p, where, etype)
    except CTFlowError:
        raise
    except MemoryError:
        raise InvalidScanError(f"{p}: not enough memory for {n_bytes} bytes of voxels") from None
    except OSError as exc:
        raise CorruptFileError(f"{p}: cannot read {where} ({exc})") from exc
    info: dict[str, Any] = {
        "format": "mhd",
        "reader": "ctflow.io.metaimage",
        "element_type": etype,
        "data_file": str(data_path),
        "compressed": compressed,
        "byte_order_msb": msb,
        "anatomical_orientation": None if anatomical is None else anatomical[1],
    }
    return Scan(images, geometry, str(p), info)
