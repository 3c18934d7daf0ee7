r"""NRRD (``.nrrd``, detached ``.nhdr``) reader in pure numpy, with the geometry ITK reads.

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

The code lives in :mod:`~ctflow.io.nrrd.header` (the text header),
:mod:`~ctflow.io.nrrd.geometry` (space fields to a Geometry) and :mod:`~ctflow.io.nrrd.reader`
(:func:`read_nrrd`); the voxel input is :mod:`ctflow.io.voxels`.

Examples
--------
>>> import numpy as np, tempfile
>>> d = tempfile.mkdtemp()
>>> header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nendian: little\n"
...           "encoding: raw\nspace: RAS\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,2)\n"
...           "space origin: (10,20,30)\n\n")
>>> with open(f"{d}/a.nrrd", "wb") as f:
...     _ = f.write(header.encode() + np.zeros(24, "<i2").tobytes())
>>> scan = read_nrrd(f"{d}/a.nrrd")
>>> scan.shape, scan.geometry.spacing.tolist(), scan.geometry.origin.tolist()
((2, 3, 4), [2.0, 0.5, 0.5], [30.0, -20.0, -10.0])
"""

from ctflow.io.nrrd.header import NRRD_TYPES
from ctflow.io.nrrd.reader import read_nrrd
from ctflow.io.voxels import HEADER_MAX_BYTES

__all__ = ["HEADER_MAX_BYTES", "NRRD_TYPES", "read_nrrd"]
