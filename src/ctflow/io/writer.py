"""Write one volume with its geometry to a file a viewer opens: MetaImage or NIfTI.

==========  ==========================================  ======================================
fmt         files                                       geometry
==========  ==========================================  ======================================
"mhd"       ``*.mhd`` + ``.raw``/``.zraw``, or ``*.mha``  exact (17 significant digits)
"nifti"     ``*.nii``, ``*.nii.gz`` (gzip)               float32 in the file (~1e-5 relative)
==========  ==========================================  ======================================

The format follows from the suffix (``fmt=`` only checks it). Files are written under
temporary names and renamed when complete; SimpleITK reads them back to the same world
positions (LPS mm) as ``geometry`` gives. :func:`export_component` writes one component of a
batch's item (``CTBatch.export``): one channel of a (C, Z, Y, X) array, parent folders created.

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> d = tempfile.mkdtemp()
>>> write_scan(f"{d}/s.nii.gz", np.zeros((2, 3, 4), np.int16), Geometry((2.0, 0.5, 0.5))).name
's.nii.gz'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry

__all__ = ["WRITE_FORMATS", "export_component", "write_scan"]

WRITE_FORMATS = ("mhd", "nifti")

_SUFFIXES = {".mhd": "mhd", ".mha": "mhd", ".nii": "nifti", ".nii.gz": "nifti"}


def _format_of(path: Path) -> str | None:
    """Return the format a path's extension names, or None for an unknown extension."""
    name = path.name.lower()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return _SUFFIXES[suffix]
    return None


def write_scan(
    path: str | os.PathLike[str],
    image: NDArray[Any],
    geometry: Geometry,
    fmt: str | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Write a (Z, Y, X) volume and its geometry as ``.mhd``/``.mha`` or ``.nii``/``.nii.gz``.

    Parameters
    ----------
    path : path
        Target file; its suffix chooses the format.
    image : ndarray (Z, Y, X)
        int8/16/32/64, uint8/16/32/64, float32/64 or bool (written as uint8).
    geometry : Geometry
        Spacing, origin and direction in (z, y, x), LPS mm.
    fmt : {"mhd", "nifti"}, optional
        Must agree with the suffix when given.
    compress : bool
        MetaImage only: zlib-compressed ``.zraw`` data (``.nii.gz`` is always gzip and ``.nii``
        never is).

    Returns
    -------
    pathlib.Path
        The written file (the header for ``.mhd``).

    Raises
    ------
    InvalidParameterError
        Unknown suffix or ``fmt``, a mismatch between them, bad image or geometry, a missing
        target folder.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> from ctflow.io.reader import read_scan
    >>> d = tempfile.mkdtemp()
    >>> g = Geometry((2.0, 0.5, 0.5), (-100.0, 20.0, 30.0))
    >>> p = write_scan(f"{d}/s.mhd", np.ones((2, 3, 4), np.int16), g, compress=True)
    >>> read_scan(p).geometry == g
    True
    """
    p = Path(path)
    kind = _format_of(p)
    if fmt is not None and fmt not in WRITE_FORMATS:
        raise InvalidParameterError(f"write_scan: fmt must be one of {WRITE_FORMATS}; got {fmt!r}")
    if kind is None:
        raise InvalidParameterError(
            f"write_scan: {p.name!r} must end with .mhd, .mha, .nii or .nii.gz"
        )
    if fmt is not None and fmt != kind:
        raise InvalidParameterError(
            f"write_scan: fmt={fmt!r} does not match the suffix of {p.name!r} ({kind})"
        )
    if kind == "mhd":
        from ctflow.io.metaimage import write_metaimage

        return write_metaimage(p, image, geometry, compress=compress)
    if compress:
        raise InvalidParameterError(
            f"write_scan: compress applies to MetaImage; for NIfTI use the .nii.gz suffix "
            f"(got {p.name!r})"
        )
    from ctflow.io.nifti import write_nifti

    return write_nifti(p, image, geometry)


def export_component(
    arr: NDArray[Any] | None,
    geometry: Geometry,
    path: str | os.PathLike[str],
    *,
    component: str,
    key: int | str,
    channel: int | None,
) -> Path:
    """Write one item's component for a viewer: the work of ``CTBatch.export``.

    Parameters
    ----------
    arr : ndarray (Z, Y, X) or (C, Z, Y, X), or None
        The component of the item (None: not loaded).
    geometry : Geometry
        The item's geometry.
    path : path
        Target file; its suffix chooses the format (see :func:`write_scan`). Missing parent
        folders are created.
    component : str
        The component's name (for messages).
    key : int or str
        The item's position or id (for messages).
    channel : int, optional
        The channel to write of a (C, Z, Y, X) array; required for one.

    Returns
    -------
    pathlib.Path
        The written file (the header for ``.mhd``).

    Raises
    ------
    InvalidParameterError
        The component is not loaded, a missing or bad ``channel``, or :func:`write_scan`'s.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from ctflow.geometry import Geometry
    >>> masks = np.zeros((2, 3, 4, 5), np.uint8)
    >>> d = tempfile.mkdtemp()
    >>> p = export_component(masks, Geometry((1.0, 1.0, 1.0)), f"{d}/new/m.nii.gz",
    ...                      component="masks", key=0, channel=1)
    >>> p.parent.name, p.name
    ('new', 'm.nii.gz')
    >>> export_component(masks, Geometry((1.0, 1.0, 1.0)), f"{d}/m.mha",
    ...                  component="masks", key=0, channel=None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ctflow.errors.InvalidParameterError: export: the masks of item 0 hold 2 channels; ...
    """
    if arr is None:
        raise InvalidParameterError(f"export: component {component!r} is not loaded")
    if arr.ndim == 4:
        if channel is None:
            raise InvalidParameterError(
                f"export: the {component} of item {key!r} hold {arr.shape[0]} channels; "
                f"give channel=0..{arr.shape[0] - 1}, or call argmax() first"
            )
        if not 0 <= int(channel) < arr.shape[0]:
            raise InvalidParameterError(
                f"export: channel {channel} is not one of 0..{arr.shape[0] - 1}"
            )
        arr = arr[int(channel)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # as dump creates its folder
    return write_scan(path, arr, geometry)
