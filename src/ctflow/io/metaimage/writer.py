"""Write a (Z, Y, X) volume as MetaImage, the way ITK writes it, atomically.

The header has the keys in ITK's order and numbers with 17 significant digits; the voxels are
little-endian, zlib-compressed on request. Files are written under temporary names in the
target folder and renamed when complete (data file first, header last).
"""

from __future__ import annotations

import os
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry, direction_to_sitk
from ctflow.io.voxels import _IO_CHUNK

__all__ = ["write_metaimage"]


# numpy code -> the MET type ITK writes for it
_WRITE_TYPES: dict[str, str] = {
    "i1": "MET_CHAR",
    "u1": "MET_UCHAR",
    "i2": "MET_SHORT",
    "u2": "MET_USHORT",
    "i4": "MET_INT",
    "u4": "MET_UINT",
    "i8": "MET_LONG_LONG",
    "u8": "MET_ULONG_LONG",
    "f4": "MET_FLOAT",
    "f8": "MET_DOUBLE",
}


_COMPRESSION_LEVEL = 1


def _fmt(values: Any) -> str:
    """Format numbers as ITK prints them: 17 significant digits, ``-0.0`` as ``0``."""
    # "+ 0.0" turns -0.0 into 0
    return " ".join(f"{float(v) + 0.0:.17g}" for v in np.asarray(values, np.float64).ravel())


def _anatomical_orientation(direction_sitk: NDArray[np.float64]) -> str:
    """Return ITK's 3-letter code: for each voxel axis, the side it starts from (LPS world)."""
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = ""
    for j in range(3):
        col = direction_sitk[:, j]
        i = int(np.argmax(np.abs(col)))
        code += letters[i][0 if col[i] >= 0 else 1]
    return code


def _chunks(arr: NDArray[Any], le: np.dtype[Any]) -> Iterator[memoryview]:
    """Yield the little-endian bytes of ``arr`` (C order) in slabs; no copy when laid out so."""
    if arr.flags.c_contiguous and arr.dtype == le:
        yield arr.data.cast("B")
        return
    plane = max(1, arr.shape[1] * arr.shape[2] * le.itemsize)
    z_step = max(1, _IO_CHUNK // plane)
    for z0 in range(0, arr.shape[0], z_step):
        part = np.ascontiguousarray(arr[z0 : z0 + z_step], dtype=le)
        yield part.data.cast("B")


def _write_data(fh: BinaryIO, arr: NDArray[Any], le: np.dtype[Any], compress: bool) -> int:
    """Write the voxels (zlib-compressed when asked); return the number of bytes written."""
    n = 0
    if not compress:
        for mv in _chunks(arr, le):
            fh.write(mv)
            n += len(mv)
        return n
    comp = zlib.compressobj(_COMPRESSION_LEVEL)
    for mv in _chunks(arr, le):
        for k in range(0, len(mv), _IO_CHUNK):
            out = comp.compress(mv[k : k + _IO_CHUNK])
            fh.write(out)
            n += len(out)
    out = comp.flush()
    fh.write(out)
    return n + len(out)


def _header_text(
    shape_zyx: tuple[int, ...],
    geometry: Geometry,
    etype: str,
    data_file: str,
    compressed_size: int | None,
) -> str:
    """Return the header text, keys in the order ITK writes them (one per line)."""
    d_sitk = np.asarray(direction_to_sitk(geometry.direction), np.float64).reshape(3, 3)
    lines = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        f"CompressedData = {compressed_size is not None}",
    ]
    if compressed_size is not None:
        lines.append(f"CompressedDataSize = {compressed_size}")
    lines += [
        f"TransformMatrix = {_fmt(d_sitk.T)}",
        f"Offset = {_fmt(geometry.origin[::-1])}",
        "CenterOfRotation = 0 0 0",
        f"AnatomicalOrientation = {_anatomical_orientation(d_sitk)}",
        f"ElementSpacing = {_fmt(geometry.spacing[::-1])}",
        f"DimSize = {shape_zyx[2]} {shape_zyx[1]} {shape_zyx[0]}",
        f"ElementType = {etype}",
        f"ElementDataFile = {data_file}",
    ]
    return "\n".join(lines) + "\n"


def write_metaimage(
    path: str | os.PathLike[str],
    images: NDArray[Any],
    geometry: Geometry,
    *,
    compress: bool = False,
) -> Path:
    """Write a (Z, Y, X) volume as MetaImage: ``.mhd`` + ``.raw``/``.zraw``, or one ``.mha``.

    The header has the keys in the order ITK writes them, numbers with 17 significant digits
    (round trips exactly), little-endian data. Files are first written under temporary names
    in the target folder and then renamed (data file first, header last), so a crash never
    leaves a header pointing at half-written data.

    Parameters
    ----------
    path : path
        Target ``*.mhd`` (data goes beside it as ``<stem>.raw``, or ``<stem>.zraw`` when
        compressed) or ``*.mha`` (single file, ``ElementDataFile = LOCAL``).
    images : ndarray (Z, Y, X)
        int8/16/32/64, uint8/16/32/64, float32/64 or bool (written as ``MET_UCHAR``).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x).
    compress : bool
        zlib-compress the voxels (``CompressedData = True``), as SimpleITK's
        ``useCompression=True``.

    Returns
    -------
    pathlib.Path
        The header (``.mhd``) or image (``.mha``) path.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> d = tempfile.mkdtemp()
    >>> p = write_metaimage(f"{d}/s.mhd", np.ones((2, 3, 4), np.int16), Geometry((1, 1, 1)),
    ...                     compress=True)
    >>> sorted(f.name for f in p.parent.iterdir())
    ['s.mhd', 's.zraw']
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".mhd", ".mha"):
        raise InvalidParameterError(
            f"write_metaimage: path must end with .mhd or .mha; got {str(path)!r}"
        )
    if not isinstance(geometry, Geometry):
        raise InvalidParameterError(
            f"write_metaimage: geometry must be a ctflow Geometry; got {type(geometry).__name__}"
        )
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.size == 0:
        raise InvalidParameterError(
            f"write_metaimage: images must be a non-empty (Z, Y, X) array; got shape {arr.shape}"
        )
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    code = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    if code not in _WRITE_TYPES:
        raise InvalidParameterError(
            f"write_metaimage: images dtype must be one of int8/16/32/64, uint8/16/32/64, "
            f"float32/64 or bool; got {arr.dtype}"
        )
    etype = _WRITE_TYPES[code]
    le = np.dtype(code).newbyteorder("<")
    if not p.parent.is_dir():
        raise InvalidParameterError(f"write_metaimage: folder {p.parent} does not exist")

    token = uuid.uuid4().hex[:12]
    temps: list[Path] = []

    def temp_for(final: Path) -> Path:
        t = final.with_name(f".{final.name}.{token}.tmp")
        temps.append(t)
        return t

    try:
        if suffix == ".mhd":
            data_final = p.with_suffix(".zraw" if compress else ".raw")
            data_tmp = temp_for(data_final)
            with open(data_tmp, "wb") as fh:
                n = _write_data(fh, arr, le, compress)
            text = _header_text(
                arr.shape, geometry, etype, data_final.name, n if compress else None
            )
            hdr_tmp = temp_for(p)
            hdr_tmp.write_text(text, encoding="utf-8")
            os.replace(data_tmp, data_final)
            os.replace(hdr_tmp, p)
        else:
            out_tmp = temp_for(p)
            if compress:
                comp_tmp = temp_for(p.with_suffix(".zraw"))
                with open(comp_tmp, "w+b") as cf:
                    n = _write_data(cf, arr, le, True)
                    cf.seek(0)
                    with open(out_tmp, "wb") as fh:
                        fh.write(_header_text(arr.shape, geometry, etype, "LOCAL", n).encode())
                        while block := cf.read(_IO_CHUNK):
                            fh.write(block)
            else:
                with open(out_tmp, "wb") as fh:
                    fh.write(_header_text(arr.shape, geometry, etype, "LOCAL", None).encode())
                    _write_data(fh, arr, le, False)
            os.replace(out_tmp, p)
    finally:
        for t in temps:
            if t.exists():
                t.unlink()
    return p
