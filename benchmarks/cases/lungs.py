"""Lung segmentation: ctflow against a RadIO-style scipy baseline and a SimpleITK composition.

Synthetic case (``segment_lungs``): the main scan on its 1 mm grid (as in the pipeline), with
the phantom's true lungs (its lung ellipsoids) for a Dice. Real case (``segment_lungs_real``):
the two real CTs of ``../shared/data/real`` that show lungs — the pyradiomics chest CT (no lung
ground truth; its 13.8 mm nodule must lie inside the mask) and the TotalSegmentator abdominal CT
whose lung bases have TotalSegmentator's lobe masks as a reference. The baselines are written
in :mod:`benchmarks.peers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, as_numpy, dice
from benchmarks.peers import lungs_scipy, lungs_sitk, sitk_image, sitk_threads

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
#: Dice between a contender's mask and ctflow's below which they are taken to disagree.
MIN_DICE = 0.9


def _inputs(data: Any) -> dict[str, Any]:
    s = data.scan_1mm()
    return {
        "scans": [(s["images"], s["geometry"])],
        "truth": s["lungs_true"],
        "min_ml": data.profile.min_lung_ml,
    }


def _finish(inp: dict[str, Any]) -> Any:
    def finish(out: list[Any]) -> dict[str, np.ndarray]:
        arrays = {f"mask{k}": np.asarray(as_numpy(m), np.uint8) for k, m in enumerate(out)}
        if "truth" in inp:
            arrays["truth"] = inp["truth"]
        for k, nodule in inp.get("nodule_labels", {}).items():
            arrays[f"nodule{k}"] = nodule
        return arrays

    return finish


def _ctflow(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.lungs import segment_lungs

    def run() -> list[Any]:
        return [
            segment_lungs(img, g, min_lung_ml=inp["min_ml"], n_threads=threads)
            for img, g in inp["scans"]
        ]

    return Runner(run, _finish(inp))


def _scipy(inp: dict[str, Any], threads: int) -> Runner:
    def run() -> list[Any]:
        return [lungs_scipy(img, g.spacing, inp["min_ml"]) for img, g in inp["scans"]]

    return Runner(run, _finish(inp))


def _sitk(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)
    images = [sitk_image(img, g) for img, g in inp["scans"]]

    def run() -> list[Any]:
        return [lungs_sitk(img, inp["min_ml"]) for img in images]

    return Runner(run, lambda out: _finish(inp)([sitk.GetArrayFromImage(m) for m in out]))


def _check(ref: Any, out: Any) -> tuple[bool, dict[str, Any]]:
    """Mask 0 must agree with ctflow's (Dice); the others (real abdomen) are scored on truth."""
    metrics: dict[str, Any] = {}
    ok = True
    k = 0
    while f"mask{k}" in ref:
        a, b = ref[f"mask{k}"], out[f"mask{k}"]
        if a.shape != b.shape:
            return False, {"shape": list(b.shape), "expected_shape": list(a.shape)}
        d = dice(a, b)
        metrics[f"dice_vs_ctflow{'' if k == 0 else k}"] = round(d, 4)
        ok = ok and (k > 0 or d >= MIN_DICE)
        k += 1
    if "truth" in ref:
        metrics["dice_vs_truth"] = round(dice(out[_truth_mask(ref)], ref["truth"]), 4)
    k = 0
    while f"nodule{k}" in ref:
        nod = ref[f"nodule{k}"] != 0
        inside = float(np.count_nonzero(out[f"mask{k}"][nod])) / max(int(nod.sum()), 1)
        metrics["nodule_inside"] = round(inside, 3)
        k += 1
    return ok, metrics


def _truth_mask(ref: Any) -> str:
    """Which mask the truth belongs to (the last scan of the case)."""
    k = 0
    while f"mask{k + 1}" in ref:
        k += 1
    return f"mask{k}"


def _contenders() -> list[Contender]:
    return [
        Contender("ctflow", "ops.lungs.segment_lungs", 1, _ctflow),
        Contender("ctflow", "ops.lungs.segment_lungs", 2, _ctflow),
        Contender("scipy.ndimage", "RadIO-style: label, 2 largest, closing, fill", 1, _scipy),
        Contender("SimpleITK", "ConnectedComponent, closing, BinaryFillhole", 2, _sitk),
    ]


SEGMENT = Case(
    name="segment_lungs",
    title="Lung segmentation of the 1 mm scan (int16 HU -> uint8 mask)",
    inputs=_inputs,
    contenders=_contenders(),
    check=_check,
    bytes_moved=None,
    note=(
        f"Agreement: Dice with ctflow's mask >= {MIN_DICE}; dice_vs_truth is against the "
        "phantom's lung ellipsoids."
    ),
)


def _real_inputs(data: Any) -> dict[str, Any]:
    import SimpleITK as sitk

    from ctflow.geometry import Geometry, direction_from_sitk

    def read(path: Path) -> tuple[np.ndarray, Geometry]:
        img = sitk.ReadImage(str(path))
        g = Geometry(
            img.GetSpacing()[::-1], img.GetOrigin()[::-1], direction_from_sitk(img.GetDirection())
        )
        return sitk.GetArrayFromImage(img), g

    chest, g_chest = read(REAL / "pyradiomics_lung" / "lung1_image.nrrd")
    nodule, _ = read(REAL / "pyradiomics_lung" / "lung1_label.nrrd")
    folder = REAL / "totalsegmentator_examples"
    abdomen, g_abd = read(folder / "example_ct_sm.nii.gz")
    truth = np.zeros(abdomen.shape, np.uint8)
    for lobe in sorted((folder / "example_seg_fast").glob("lung_*.nii.gz")):
        truth |= (read(lobe)[0] > 0).astype(np.uint8)
    return {
        "scans": [(chest.astype(np.int16), g_chest), (abdomen.astype(np.int16), g_abd)],
        "truth": truth,
        "nodule_labels": {0: (nodule > 0).astype(np.uint8)},
        "min_ml": 15.0,
    }


SEGMENT_REAL = Case(
    name="segment_lungs_real",
    title="Lung segmentation of the real CTs (pyradiomics chest CT + TotalSegmentator abdomen)",
    inputs=_real_inputs,
    contenders=_contenders(),
    check=_check,
    bytes_moved=None,
    items=2,
    note=(
        "One call segments both real scans. dice_vs_truth: against TotalSegmentator's lung lobes "
        "on the abdominal CT; nodule_inside: share of the chest CT's nodule label inside the mask."
    ),
)

CASES = [SEGMENT, *([SEGMENT_REAL] if REAL.is_dir() else [])]
