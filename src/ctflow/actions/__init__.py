"""Actions as typed objects, grouped by family.

=============  ==========================================================================
family         actions
=============  ==========================================================================
io             :class:`Load`, :class:`Dump`, :class:`Cache`
geometry       :class:`Reorient`, :class:`UnifySpacing`, :class:`Resize`, :class:`Rotate`,
               :class:`Flip`, :class:`Crop`, :class:`CentralCrop`, :class:`Pad`,
               :class:`Invert` (the way back)
intensity      :class:`NormalizeHU`
augmentation   :class:`ApplyNoise`, :class:`Cutout`, :class:`RandomFlip`, :class:`RandomAffine`,
               :class:`RandomElastic`, :class:`RandomGamma`,
               :class:`RandomContrast`, :class:`RandomBlur`, :class:`RandomBiasField`,
               :class:`RandomNoise`
anatomy        :class:`Segment`, :class:`CropToLungs`
projections    :class:`MakeXIP`
annotations    :class:`FetchNodules`, :class:`CreateMask`, :class:`BinarizeMask`,
               :class:`FetchNodulesFromMask`, :class:`LidcMasks`
labels         :class:`OneHot`, :class:`Argmax`
sampling       :class:`SampleNodules`, :class:`SampleCrops`
patches        :class:`GetPatches`, :class:`LoadFromPatches`, :class:`PredictOnScan`
custom         :class:`Call`, :class:`Method`, :class:`ItemFunction`
=============  ==========================================================================

Each action's constructor checks its parameters (see :mod:`ctflow.actions.base` for what an
action is and how to write one); each module holds one family, and each action calls a
per-scan function of :mod:`ctflow.ops` (its kernel in :mod:`ctflow.kernels`).

Examples
--------
>>> from ctflow.actions import UnifySpacing, ACTIONS
>>> UnifySpacing(spacing=-1)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ctflow.errors.InvalidParameterError: unify_spacing: spacing must be 3 positive floats ...; got -1
>>> ACTIONS["flip"].__name__
'Flip'
"""

from __future__ import annotations

from ctflow.actions.anatomy import CropToLungs, Segment
from ctflow.actions.annotations import (
    BinarizeMask,
    CreateMask,
    FetchNodules,
    FetchNodulesFromMask,
    LidcMasks,
)
from ctflow.actions.augment_geometry import RandomAffine, RandomElastic, RandomFlip
from ctflow.actions.augmentation import ApplyNoise, Cutout
from ctflow.actions.augmentation_intensity import (
    RandomBiasField,
    RandomBlur,
    RandomContrast,
    RandomGamma,
    RandomNoise,
)
from ctflow.actions.base import (
    ACTIONS,
    Action,
    BatchAction,
    ItemAction,
    action_from_record,
    jsonable,
)
from ctflow.actions.cache import Cache
from ctflow.actions.custom import Call, ItemFunction, Method
from ctflow.actions.geometry import (
    CentralCrop,
    Crop,
    Flip,
    Pad,
    Reorient,
    Resize,
    Rotate,
    UnifySpacing,
)
from ctflow.actions.intensity import NormalizeHU
from ctflow.actions.inverse import Invert
from ctflow.actions.io import Dump, Load
from ctflow.actions.labels import Argmax, OneHot
from ctflow.actions.methods import ActionMethods
from ctflow.actions.patches import GetPatches, LoadFromPatches, PredictOnScan
from ctflow.actions.projections import MakeXIP
from ctflow.actions.sampling import SampleCrops, SampleNodules

__all__ = [
    "ACTIONS",
    "Action",
    "ActionMethods",
    "ApplyNoise",
    "Argmax",
    "BatchAction",
    "BinarizeMask",
    "Cache",
    "Call",
    "CentralCrop",
    "CreateMask",
    "Crop",
    "CropToLungs",
    "Cutout",
    "Dump",
    "FetchNodules",
    "FetchNodulesFromMask",
    "Flip",
    "GetPatches",
    "Invert",
    "ItemAction",
    "ItemFunction",
    "LidcMasks",
    "Load",
    "LoadFromPatches",
    "MakeXIP",
    "Method",
    "NormalizeHU",
    "OneHot",
    "Pad",
    "PredictOnScan",
    "RandomAffine",
    "RandomBiasField",
    "RandomBlur",
    "RandomContrast",
    "RandomElastic",
    "RandomFlip",
    "RandomGamma",
    "RandomNoise",
    "Reorient",
    "Resize",
    "Rotate",
    "SampleCrops",
    "SampleNodules",
    "Segment",
    "UnifySpacing",
    "action_from_record",
    "jsonable",
]
