"""MetaImage (``.mhd`` + ``.raw``/``.zraw``, single-file ``.mha``) reader and writer in pure numpy.

MetaImage is ITK's own format and the one LUNA16 ships. A file is a short text header of
``Key = Value`` lines followed by (``ElementDataFile = LOCAL``, ``.mha``) or pointing to
(``.mhd``) the raw voxel bytes, x fastest, then y, then z. This package reads and writes it
without SimpleITK: voxels go straight from the file into a preallocated numpy array
(``readinto`` / ``zlib`` both release the GIL, so scans load in parallel on threads).

Geometry
--------
ITK writes ``TransformMatrix`` as its direction matrix in *column-major* order (the 3 numbers of
voxel axis x first, then y, then z) and reads it back the same way, so SimpleITK's row-major
direction tuple is the transpose of the header's numbers. ``ElementSpacing``, ``Offset`` and
``DimSize`` are (x, y, z); ctflow's :class:`~ctflow.geometry.Geometry` is (z, y, x). The
direction, spacing and origin of a scan read here are exactly what SimpleITK reports for the
same file, reordered to (z, y, x).

Voxel types
-----------
Integer files become int16 when all values fit (``MET_SHORT`` little-endian is read in place,
no conversion), otherwise float32 when that is exact (|v| <= 2**24), otherwise
:class:`~ctflow.errors.InvalidScanError`. Float files become float32; NaN or Inf voxels are
refused. The writer stores any of int8/16/32/64, uint8/16/32/64, float32/64 and bool (as
``MET_UCHAR``) little-endian, with the keys in the order ITK writes them, atomically (temporary
names in the target folder, then :func:`os.replace`).

The code lives in :mod:`~ctflow.io.metaimage.header` (the text header),
:mod:`~ctflow.io.metaimage.reader` (:func:`read_metaimage`) and
:mod:`~ctflow.io.metaimage.writer` (:func:`write_metaimage`); the voxel input it shares with
the NIfTI and NRRD readers is in :mod:`ctflow.io.voxels` (its names stay importable from here).

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> g = Geometry((2.5, 0.7, 0.7), (-300.0, -180.0, -170.0))
>>> p = write_metaimage(f"{tempfile.mkdtemp()}/scan.mhd", np.zeros((3, 4, 5), np.int16), g)
>>> scan = read_metaimage(p)
>>> scan.shape, scan.images.dtype.name, scan.geometry.origin.tolist()
((3, 4, 5), 'int16', [-300.0, -180.0, -170.0])
"""

from ctflow.io.metaimage.header import MET_TYPES
from ctflow.io.metaimage.reader import read_metaimage
from ctflow.io.metaimage.writer import write_metaimage
from ctflow.io.voxels import HEADER_MAX_BYTES
from ctflow.io.voxels import FileSource as FileSource
from ctflow.io.voxels import VoxelSource as VoxelSource
from ctflow.io.voxels import ZlibSource as ZlibSource
from ctflow.io.voxels import check_finite as check_finite
from ctflow.io.voxels import read_header_bytes as read_header_bytes
from ctflow.io.voxels import read_stored as read_stored
from ctflow.io.voxels import read_voxels as read_voxels
from ctflow.io.voxels import skip_bytes as skip_bytes
from ctflow.io.voxels import to_ct_dtype as to_ct_dtype

__all__ = [
    "HEADER_MAX_BYTES",
    "MET_TYPES",
    "read_metaimage",
    "write_metaimage",
]
