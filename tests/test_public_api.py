"""The public names: what ``import ctflow`` and ``ctflow.actions`` offer is pinned here, so a
change to the contract is a deliberate edit of this file (and of ../shared/DESIGN.md's names)."""

from __future__ import annotations

import importlib

import pytest

import ctflow

CTFLOW = [
    "Action", "BatchAction", "CTBatch", "CTFlowError", "CTImagesBatch", "CTImagesMaskedBatch",
    "CTItem", "CorruptFileError", "DaskEngine", "Dataset", "Geometry", "InvalidParameterError",
    "InvalidScanError", "ItemAction", "MissingDependencyError", "Pipeline", "RunReport",
    "UnsupportedFormatError", "__version__", "action", "actions", "inbatch_parallel",
    "metrics", "read_annotations", "read_lidc", "read_scan", "replay",
]  # fmt: skip
ACTIONS = [
    "ACTIONS", "Action", "ActionMethods", "ApplyNoise", "Argmax", "BatchAction", "BinarizeMask",
    "Cache", "Call", "CentralCrop", "CreateMask", "Crop", "CropToLungs", "Cutout", "Dump",
    "FetchNodules", "FetchNodulesFromMask", "Flip", "GetPatches", "Invert", "ItemAction",
    "ItemFunction", "LidcMasks", "Load", "LoadFromPatches", "MakeXIP", "Method", "NormalizeHU",
    "OneHot", "Pad", "PredictOnScan", "RandomAffine", "RandomBiasField", "RandomBlur",
    "RandomContrast", "RandomElastic", "RandomFlip", "RandomGamma", "RandomNoise", "Reorient",
    "Resize", "Rotate", "SampleCrops", "SampleNodules", "Segment", "UnifySpacing",
    "action_from_record", "jsonable",
]  # fmt: skip
#: the action names of ../shared/DESIGN.md §4 (and §10 so far): pipelines and batches have them
DESIGN_ACTIONS = [
    "load", "dump", "reorient", "invert", "resize", "unify_spacing", "rotate", "flip",
    "central_crop", "crop", "pad", "normalize_hu", "apply_noise", "cutout", "segment",
    "crop_to_lungs", "make_xip", "fetch_nodules", "create_mask", "binarize_mask",
    "fetch_nodules_from_mask", "sample_nodules", "sample_crops", "get_patches",
    "load_from_patches", "predict_on_scan", "one_hot", "argmax", "lidc_masks",
    "random_flip", "random_affine", "random_elastic", "random_gamma", "random_contrast",
    "random_blur", "random_bias_field", "random_noise", "cache",
]  # fmt: skip


def test_ctflow_all_is_pinned_and_every_name_resolves():
    assert sorted(ctflow.__all__) == sorted(CTFLOW)
    for name in CTFLOW:
        assert getattr(ctflow, name) is not None


def test_actions_all_is_pinned_and_every_name_resolves():
    module = importlib.import_module("ctflow.actions")
    assert sorted(module.__all__) == sorted(ACTIONS)
    for name in ACTIONS:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("name", DESIGN_ACTIONS)
def test_design_actions_exist_on_pipelines_batches_and_in_the_registry(name):
    assert callable(getattr(ctflow.Pipeline(), name))
    assert callable(getattr(ctflow.CTBatch, name))
    assert name in ctflow.actions.ACTIONS
    assert name in ctflow.CTBatch.action_names()


def test_radio_names_still_work():
    assert ctflow.CTImagesBatch is ctflow.CTBatch
    assert ctflow.CTImagesMaskedBatch is ctflow.CTBatch
