"""NIfTI (``.nii``, ``.nii.gz``) reader and writer in numpy, with the geometry ITK reads.

A NIfTI file is a fixed binary header (NIfTI-1: 348 bytes, NIfTI-2: 540 bytes), optional
extensions, then the voxels from byte ``vox_offset`` on, x fastest. ``.nii.gz`` is the same
bytes gzip-compressed (recognised by content, not by name). Voxels go straight from the file
into a preallocated numpy array (``readinto`` or zlib inflate, both with the GIL released), so
scans load in parallel on threads.

Geometry (what SimpleITK reports for the same file)
----------------------------------------------------
NIfTI stores RAS+ world coordinates; ctflow (like ITK and DICOM) uses LPS, so the x and y rows
of the NIfTI matrix change sign. Which matrix is used follows ITK 5.4's ``NiftiImageIO``:

* ``qform_code`` and ``sform_code`` both 0: origin 0, identity direction, spacing ``pixdim``.
* otherwise the sform (``srow_x/y/z``) is used when it is an invertible affine whose normalised
  columns are orthonormal (1e-4) AND one of: ``qform_code`` is 0; ``sform_code`` is 1
  (scanner anatomical); the sform and the qform are "very similar" (same singular values,
  rotations, offsets within 1e-4). If none holds, the qform is used (quaternion ``quatern_b/c/d``,
  ``qoffset_x/y/z``, ``qfac = sign(pixdim[0])``); no usable matrix at all is an error.
* the direction is the chosen matrix's columns, normalised; the origin its last column; the
  spacing is ``pixdim[1:4]`` (NOT the sform's column lengths, as in ITK: a disagreement above
  1e-3 mm is reported in ``info["warnings"]``). ``xyzt_units`` metres / microns scale spacing
  and origin to mm.
* NIfTI-1 matrices are single precision (as in niftilib): world positions equal ITK's to float
  rounding. NIfTI-2 (which SimpleITK cannot read) follows the same rules in double precision.

ctflow is stricter than ITK on bad input: ``pixdim`` <= 0 (ITK silently uses 1 or ``|pixdim|``),
data longer than the header says, and NaN/Inf voxels are errors. Analyze 7.5 files and NIfTI
``.hdr``/``.img`` pairs are refused (read them with ``fmt="sitk"``).

The code lives in :mod:`~ctflow.io.nifti.header` (the binary header),
:mod:`~ctflow.io.nifti.geometry` (ITK's choice of matrix), :mod:`~ctflow.io.nifti.reader`
(:func:`read_nifti`: voxels and scaling) and :mod:`~ctflow.io.nifti.writer`
(:func:`write_nifti`).

Voxel values
------------
``scl_slope``/``scl_inter`` are applied as ITK does (a slope of 0 or non-finite means "none").
Integer data with integral slope and intercept stays int16 when the result fits (CT stored as
uint16 with intercept -1024 reads as int16 HU); otherwise the result is float32, computed like
ITK as ``float32(float64(float32(v)) * slope + inter)``. Without scaling, integer data becomes
int16 when it fits (int32 CT volumes included), float32 when exact, and float data float32.

Examples
--------
>>> import numpy as np, tempfile
>>> from ctflow.geometry import Geometry
>>> g = Geometry((2.5, 0.75, 0.75), (-300.0, -180.0, -170.0))
>>> p = write_nifti(f"{tempfile.mkdtemp()}/scan.nii.gz", np.zeros((3, 4, 5), np.int16), g)
>>> scan = read_nifti(p)
>>> scan.shape, scan.images.dtype.name, scan.geometry.origin.tolist()
((3, 4, 5), 'int16', [-300.0, -180.0, -170.0])
"""

from ctflow.io.nifti.header import NIFTI_DATATYPES
from ctflow.io.nifti.reader import read_nifti
from ctflow.io.nifti.writer import write_nifti

__all__ = ["NIFTI_DATATYPES", "read_nifti", "write_nifti"]
