"""LUNA16-like synthetic chest CT phantoms with nodule annotations, written to real files.

:func:`make_phantom` builds one int16 HU volume: air outside an elliptic body, a subcutaneous
fat layer, soft tissue, two ellipsoidal lungs with branching vessels, ribs and a spine, and
spherical nodules strictly inside the lungs, plus gaussian noise. :func:`make_dataset` writes
several of them as ``.mhd/.raw``, ``.mha`` or ``.nii.gz`` files with a LUNA16
``annotations.csv`` — the fixture of the tests, the benchmarks and the ``ctflow demo``. With
``mixed=True`` (or per-scan ``shapes``, ``orientations`` and ``fmt``) the folder looks like real
mixed data: different matrix sizes and slice counts, LPS- and RAS-stored arrays, MetaImage and
NIfTI files side by side.

Realism where it matters for preprocessing code
-----------------------------------------------
* HU levels of each tissue (:data:`~ctflow.synthetic_anatomy.TISSUE_HU`), noise ``sigma`` =
  :data:`~ctflow.synthetic_anatomy.NOISE_SIGMA_HU`; the anatomy is drawn by
  :class:`ctflow.synthetic_anatomy.Phantom`.
* Nodule diameters follow the LIDC-IDRI LUNA16-like histogram and the number of nodules per
  scan the LUNA16-like per-scan distribution (:mod:`ctflow.synthetic_stats`).
* Geometry: anisotropic spacing, a LUNA-like non-zero origin, any direction matrix; annotations
  are world LPS millimetres (``coordX, coordY, coordZ``) computed through
  :meth:`~ctflow.geometry.Geometry.voxel_to_world`, so they are right for any direction.
* Stored orientation: a code such as ``"LPS"`` (identity direction, as DICOM/MetaImage) or
  ``"RAS"`` (x and y reversed, as many NIfTI files) flips the stored array and its direction
  columns together, so every voxel keeps its world position and the table stays right.

The anatomy is laid out in fractions of the field of view, so it fits any shape and spacing.
Everything is drawn from one ``numpy.random.Generator``: a seed gives the same volume and table
on every machine. Building is slab-wise int16 (no float volume). :func:`make_phantom` and
:func:`phantom_labels` are in :mod:`ctflow.synthetic_phantom`; they, and the constants and
samplers of :mod:`ctflow.synthetic_anatomy` and :mod:`ctflow.synthetic_stats`, are importable
from here too.

Examples
--------
>>> scan, nodules = make_phantom((40, 96, 96), (2.5, 0.7, 0.7), n_nodules=2, seed=1)
>>> scan.images.dtype.name, scan.shape, len(nodules)
('int16', (40, 96, 96), 2)
>>> list(nodules.columns)
['seriesuid', 'coordX', 'coordY', 'coordZ', 'diameter_mm']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ctflow.errors import InvalidParameterError
from ctflow.geometry import Geometry
from ctflow.io.metaimage import write_metaimage
from ctflow.io.nifti import write_nifti
from ctflow.io.scan import Scan
from ctflow.synthetic_anatomy import NOISE_SIGMA_HU, TISSUE_HU
from ctflow.synthetic_phantom import (
    _MIN_SHAPE,
    ANNOTATION_COLUMNS,
    PHANTOM_LABELS,
    _series_uid,
    make_phantom,
    phantom_labels,
)
from ctflow.synthetic_stats import (
    NODULE_DIAMETER_BINS_MM,
    NODULE_DIAMETER_COUNTS,
    NODULES_PER_SCAN_COUNTS,
    as_generator,
    sample_nodule_counts,
    sample_nodule_diameters,
)
from ctflow.validation import as_bool, as_choice, as_int, as_shape, as_spacing

__all__ = [
    "ANNOTATION_COLUMNS",
    "DATASET_FORMATS",
    "NODULES_PER_SCAN_COUNTS",
    "NODULE_DIAMETER_BINS_MM",
    "NODULE_DIAMETER_COUNTS",
    "NOISE_SIGMA_HU",
    "PHANTOM_LABELS",
    "TISSUE_HU",
    "make_dataset",
    "make_phantom",
    "phantom_labels",
    "sample_nodule_counts",
    "sample_nodule_diameters",
]

_DZ_SPACINGS = (0.7, 1.0, 1.25, 2.0, 2.5)

#: ``make_dataset`` formats and the file suffix each writes.
DATASET_FORMATS: dict[str, str] = {"mhd": ".mhd", "mha": ".mha", "nifti": ".nii.gz"}
# orientation code letters: (letter kept = no flip, letter flipped), for array axes x, y, z
_CODE_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
# mixed=True: Z and in-plane sizes scaled by one of these; in-plane pairs differ by <= 0.25
_MIXED_FACTORS = (0.75, 0.875, 1.0, 1.125, 1.25)
_MIXED_ORIENTATIONS = ("LPS", "RAS")
_MIXED_SEED_TAG = 0x6D69786564  # "mixed": the mixed plan has its own random stream


def _orientation_flips(code: object, where: str) -> tuple[str, tuple[int, ...]]:
    """Validate an orientation code; return it upper-cased and the ctflow axes it flips.

    Letter 0 is about array axis x (ctflow axis 2), letter 1 about y (axis 1), letter 2 about z
    (axis 0), in DICOM's convention ("L": x increases toward the patient's left).
    """
    valid = "3 letters, one of L/R then P/A then S/I (e.g. 'LPS', 'RAS')"
    if not isinstance(code, str) or len(code) != 3:
        raise InvalidParameterError(f"{where}: an orientation code must be {valid}; got {code!r}")
    up = code.upper()
    flips = []
    for i, (letter, pair) in enumerate(zip(up, _CODE_LETTERS)):
        if letter not in pair:
            raise InvalidParameterError(
                f"{where}: orientation code {code!r}: letter {i + 1} must be {' or '.join(pair)} "
                f"(codes are {valid}; axis permutations are not supported)"
            )
        if letter == pair[1]:
            flips.append(2 - i)
    return up, tuple(sorted(flips))


def _store_flipped(scan: Scan, axes: tuple[int, ...]) -> Scan:
    """Store the same scan with the array reversed along ``axes`` (ctflow axis numbers).

    The direction columns of those axes change sign and the origin moves to the new first
    voxel, so every voxel keeps its world position.
    """
    if not axes:
        return scan
    g = scan.geometry
    corner = np.zeros(3)
    for a in axes:
        corner[a] = scan.shape[a] - 1
    origin = g.voxel_to_world(corner[None, :])[0]
    direction = np.array(g.direction, np.float64)
    direction[:, list(axes)] *= -1.0
    images = np.ascontiguousarray(np.flip(scan.images, axis=axes))
    return Scan(images, Geometry(g.spacing, origin, direction), scan.source, scan.info)


def _per_scan(value: Any, n: int, what: str) -> list[Any] | None:
    """``None`` for a single value, else the list of per-scan values (length checked)."""
    if isinstance(value, str) or value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        raise InvalidParameterError(
            f"make_dataset: {what} must be a string or a sequence of {n} strings; got {value!r}"
        ) from None
    if len(items) != n:
        raise InvalidParameterError(
            f"make_dataset: {what} must have one entry per scan (n_scans={n}); got {len(items)}"
        )
    return items


def _mixed_shapes(
    shape: tuple[int, int, int], n: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """Per-scan shapes around ``shape``: Z and (Y, X) scaled by factors in ``_MIXED_FACTORS``.

    (Y, X) pairs are drawn without replacement while distinct pairs remain (so up to at least 4
    scans all differ in-plane); the Y factor is the X factor or up to 0.25 below it (a square or
    a front-to-back cropped field of view).
    """
    lo = _MIN_SHAPE

    def scaled(size: int, f: float, axis: int) -> int:
        return max(round(size * f), lo[axis])

    pairs = sorted(
        {
            (scaled(shape[1], fy, 1), scaled(shape[2], fx, 2))
            for fy in _MIXED_FACTORS
            for fx in _MIXED_FACTORS
            if fx - 0.25 - 1e-9 <= fy <= fx  # chests are wider than deep: crops trim Y
        }
    )
    order = [int(i) for i in rng.permutation(len(pairs))]
    if n > len(order):
        order += [int(i) for i in rng.integers(0, len(pairs), size=n - len(order))]
    zs = rng.choice(np.asarray(_MIXED_FACTORS), size=n)
    return [(scaled(shape[0], float(zs[k]), 0), *pairs[order[k]]) for k in range(n)]


def make_dataset(
    dst: str | os.PathLike[str],
    n_scans: int = 4,
    shape: ArrayLike = (120, 256, 256),
    *,
    seed: int = 0,
    spacing: ArrayLike | None = None,
    fmt: str | Sequence[str] = "mhd",
    shapes: Sequence[ArrayLike] | None = None,
    orientations: str | Sequence[str] | None = None,
    mixed: bool = False,
    labels: bool = False,
) -> tuple[list[Path], Path]:
    """Write ``n_scans`` phantoms (MetaImage or NIfTI files) plus a LUNA16 ``annotations.csv``.

    By default every scan has the same ``shape``, is stored LPS (identity direction) and
    written as ``fmt``. ``shapes``, ``orientations`` and a sequence ``fmt`` set these per scan;
    ``mixed=True`` makes a folder that looks like real mixed data (what is given explicitly
    wins): shapes drawn around ``shape``, stored orientations alternating ``"LPS"``/``"RAS"``,
    formats alternating in pairs between ``fmt`` and NIfTI (``"mhd"`` when ``fmt`` is
    ``"nifti"``). Spacings, uids and nodules are drawn as without ``mixed``; the stored
    orientation never moves anything in world space, so the table is right for every scan.

    Parameters
    ----------
    dst : path
        Folder (created if needed).
    n_scans : int
        Number of scans.
    shape : 3 ints
        (Z, Y, X) of every scan, or the centre of the drawn shapes with ``mixed=True``; ignored
        when ``shapes`` is given.
    seed : int
        Seed of the whole dataset (spacings, uids, anatomy, nodules, mixed shapes).
    spacing : 3 floats, optional
        Common (z, y, x) spacing; drawn per scan when omitted (z from 0.7, 1.0, 1.25, 2.0,
        2.5 mm; in-plane uniform in [0.6, 0.8] mm).
    fmt : {"mhd", "mha", "nifti"} or sequence of them
        ``.mhd`` + ``.raw`` pairs, single ``.mha`` files or gzip NIfTI-1 ``.nii.gz`` (written
        by :func:`ctflow.io.nifti.write_nifti`, read alike by SimpleITK and nibabel); one
        format for all scans or one per scan.
    shapes : sequence of (Z, Y, X), optional
        One shape per scan (``len(shapes) == n_scans``), each at least (4, 16, 16).
    orientations : str or sequence of str, optional
        Stored orientation code of every scan (one code) or of each scan: 3 letters, L/R then
        P/A then S/I, about array axes x, y, z in DICOM's convention: ``"LPS"`` is the identity
        direction, ``"RAS"`` stores x and y reversed (SimpleITK direction diag(-1, -1, 1)),
        ``"LPI"`` reverses z, etc. A reversed axis flips the array and negates its direction
        column, and the origin is the new first voxel.
    mixed : bool
        Draw a realistic mix (see above). Shapes: Z and the in-plane sizes each scaled by a
        factor in {0.75, 0.875, 1, 1.125, 1.25} (the Y factor equal to the X one or up to 0.25
        below: square or cropped front to back), every scan a distinct (Y, X) while enough
        distinct pairs exist (always for ``n_scans <= 4``).
    labels : bool
        Also write each scan's label map (:func:`phantom_labels`: body, right and left lung,
        nodules) to ``dst/labels/<seriesuid>.nii.gz``, stored RAS whatever the scan's stored
        orientation (as many segmentation tools write them), so ``load`` must put it on the
        scan's grid: ``Dataset.from_glob(..., masks="dst/labels/{id}.nii.gz")``.

    Returns
    -------
    paths : list of pathlib.Path
        The scan files, named ``<seriesuid>.<ext>`` (LUNA-like dotted uids; ext ``mhd``,
        ``mha`` or ``nii.gz``).
    annotations : pathlib.Path
        ``dst/annotations.csv`` with columns ``seriesuid,coordX,coordY,coordZ,diameter_mm``
        (world LPS mm). When ``n_scans >= 1`` at least one scan has a nodule.

    Raises
    ------
    InvalidParameterError
        Bad ``n_scans``, ``shape``/``shapes`` (or a per-scan sequence whose length is not
        ``n_scans``), unknown orientation code or format, bad ``spacing`` or ``seed``. All
        arguments are checked before any file is written.

    Examples
    --------
    >>> import tempfile
    >>> paths, csv = make_dataset(tempfile.mkdtemp(), n_scans=2, shape=(24, 48, 48), seed=0)
    >>> len(paths), paths[0].suffix, csv.name
    (2, '.mhd', 'annotations.csv')

    A mixed folder: four in-plane sizes, LPS and RAS storage, MetaImage and NIfTI.

    >>> import SimpleITK as sitk
    >>> paths, csv = make_dataset(
    ...     tempfile.mkdtemp(), n_scans=4, shape=(24, 64, 64), seed=0, mixed=True
    ... )
    >>> for p in paths:
    ...     image = sitk.ReadImage(str(p))  # size is (X, Y, Z) in SimpleITK
    ...     kind = "nii.gz" if p.name.endswith(".nii.gz") else p.suffix[1:]
    ...     print(image.GetSize(), image.GetDirection()[::4], kind)
    (72, 72, 24) (1.0, 1.0, 1.0) mhd
    (80, 64, 18) (-1.0, -1.0, 1.0) mhd
    (80, 72, 21) (1.0, 1.0, 1.0) nii.gz
    (48, 48, 27) (-1.0, -1.0, 1.0) nii.gz
    """
    where = "make_dataset"
    n = as_int(n_scans, "n_scans", where, lo=0)
    mixed = as_bool(mixed, "mixed", where)
    rng = as_generator(seed, where)

    # -- formats -------------------------------------------------------------------------------
    known = tuple(DATASET_FORMATS)
    fmt_list = _per_scan(fmt, n, "fmt")
    for f in [fmt] if fmt_list is None else fmt_list:
        as_choice(f, known, "fmt", where)
    if fmt_list is None:
        assert isinstance(fmt, str)
        other = "mhd" if fmt == "nifti" else "nifti"
        fmts = [(fmt, other)[(k // 2) % 2] if mixed else fmt for k in range(n)]
    else:
        fmts = list(fmt_list)

    # -- orientations --------------------------------------------------------------------------
    code_list = _per_scan(orientations, n, "orientations")
    if code_list is not None:
        flips = [_orientation_flips(c, where)[1] for c in code_list]
    elif orientations is not None:
        flips = [_orientation_flips(orientations, where)[1]] * n
    else:
        codes = [_MIXED_ORIENTATIONS[k % 2] if mixed else "LPS" for k in range(n)]
        flips = [_orientation_flips(c, where)[1] for c in codes]

    # -- shapes --------------------------------------------------------------------------------
    def checked(value: ArrayLike, what: str) -> tuple[int, int, int]:
        shp = as_shape(value, what=what, where=where)
        if any(s < m for s, m in zip(shp, _MIN_SHAPE)):
            raise InvalidParameterError(
                f"make_dataset: {what} must be at least {_MIN_SHAPE}; got {shp}"
            )
        return shp

    shps: list[tuple[int, int, int]] | None = None
    if shapes is not None:
        shape_items = None if isinstance(shapes, str) else _per_scan(shapes, n, "shapes")
        if shape_items is None:
            raise InvalidParameterError(
                f"make_dataset: shapes must be a sequence of (Z, Y, X); got {shapes!r}"
            )
        shps = [checked(v, f"shapes[{k}]") for k, v in enumerate(shape_items)]
        base = shps[0] if shps else _MIN_SHAPE
    else:
        base = checked(shape, "shape") if mixed else as_shape(shape, where=where)
    fixed = None if spacing is None else as_spacing(spacing, where=where)

    # -- random draws: the same stream as without shapes/orientations/mixed --------------------
    counts = sample_nodule_counts(n, seed=rng)
    if n >= 1 and counts.sum() == 0:
        counts[int(rng.integers(n))] = 1
    spacings: list[ArrayLike] = []
    children: list[np.random.Generator] = []
    for _ in range(n):
        if fixed is None:
            inplane = round(float(rng.uniform(0.6, 0.8)), 3)
            spacings.append((float(rng.choice(_DZ_SPACINGS)), inplane, inplane))
        else:
            spacings.append(fixed)
        children.append(np.random.default_rng(int(rng.integers(0, 2**63))))
    if shps is None:
        if mixed:  # its own stream: the scans' spacings, uids and nodules stay the same
            if isinstance(seed, np.random.Generator):
                plan = np.random.default_rng(int(rng.integers(0, 2**63)))
            else:
                plan = np.random.default_rng([_MIXED_SEED_TAG, int(seed)])
            shps = _mixed_shapes(base, n, plan)
        else:
            shps = [base] * n

    labels = as_bool(labels, "labels", where)
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    if labels:
        (out / "labels").mkdir(exist_ok=True)
    paths: list[Path] = []
    tables: list[pd.DataFrame] = []
    uids: set[str] = set()
    for k in range(n):
        child = children[k]
        scan, table = make_phantom(shps[k], spacings[k], n_nodules=int(counts[k]), seed=child)
        uid = scan.info["seriesuid"]
        while uid in uids:  # practically never: 30 random digits
            uid = _series_uid(child)
            table["seriesuid"] = uid
        uids.add(uid)
        if labels:
            lab = Scan(phantom_labels(scan), scan.geometry, "", {})
            lab = _store_flipped(lab, _orientation_flips("RAS", where)[1])
            write_nifti(out / "labels" / f"{uid}.nii.gz", lab.images, lab.geometry)
        scan = _store_flipped(scan, flips[k])
        target = out / f"{uid}{DATASET_FORMATS[fmts[k]]}"
        if fmts[k] == "nifti":
            paths.append(write_nifti(target, scan.images, scan.geometry))
        else:
            paths.append(write_metaimage(target, scan.images, scan.geometry))
        tables.append(table)
    frames = [t for t in tables if len(t)]
    annotations = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    annotations = annotations.reindex(columns=ANNOTATION_COLUMNS)
    csv = out / "annotations.csv"
    tmp = out / ".annotations.csv.tmp"
    annotations.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    return paths, csv
