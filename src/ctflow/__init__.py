"""ctflow — fast, correct CT-scan preprocessing for deep learning.

Batches of scans stacked in one array (:class:`CTBatch`), lazy pipelines over whole datasets
(:class:`Pipeline`, :class:`Dataset`), item-parallel actions on numba ``nogil`` kernels
(:func:`action`, :func:`inbatch_parallel`), and world-millimetre geometry kept exact through
every action.

Examples
--------
>>> import ctflow as cf
>>> prep = cf.Pipeline().load().unify_spacing((1.0, 1.0, 1.0)).normalize_hu(-1000, 400)
>>> prep.action_names
['load', 'unify_spacing', 'normalize_hu']
"""

from __future__ import annotations

__version__ = "0.1.0"

from ctflow import actions, metrics
from ctflow.actions import Action, BatchAction, ItemAction
from ctflow.batch import CTBatch, CTImagesBatch, CTImagesMaskedBatch, CTItem
from ctflow.dataset import Dataset
from ctflow.engines.dask import DaskEngine
from ctflow.errors import (
    CorruptFileError,
    CTFlowError,
    InvalidParameterError,
    InvalidScanError,
    MissingDependencyError,
    UnsupportedFormatError,
)
from ctflow.geometry import Geometry
from ctflow.history import replay
from ctflow.io.annotations import read_annotations
from ctflow.io.lidc import read_lidc
from ctflow.io.reader import read_scan
from ctflow.parallel import action, inbatch_parallel
from ctflow.pipeline import Pipeline
from ctflow.runs import RunReport

__all__ = [
    "Action",
    "BatchAction",
    "CTBatch",
    "CTFlowError",
    "CTImagesBatch",
    "CTImagesMaskedBatch",
    "CTItem",
    "CorruptFileError",
    "DaskEngine",
    "Dataset",
    "Geometry",
    "InvalidParameterError",
    "InvalidScanError",
    "ItemAction",
    "MissingDependencyError",
    "Pipeline",
    "RunReport",
    "UnsupportedFormatError",
    "__version__",
    "action",
    "actions",
    "inbatch_parallel",
    "metrics",
    "read_annotations",
    "read_lidc",
    "read_scan",
    "replay",
]
