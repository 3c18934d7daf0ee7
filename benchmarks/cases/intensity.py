"""HU normalisation: clip to [-1000, 400] and scale to [0, 1] float32.

The bandwidth bound counts 2 bytes read and 4 written per voxel. A new float32 output costs its
first-touch page faults on top (see the ``copy_fresh`` bandwidth of the machine section), so
ctflow is also timed writing into a reused buffer (``out=``), the way a pipeline that keeps its
buffers would run it.

TorchIO's own ``RescaleIntensity(in_min_max=...)`` took 3.5 s here (it still computes
percentiles of the volume), so its best composition is ``Clamp`` + a ``Lambda`` that scales.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.harness import Case, Contender, Runner, as_numpy, close, xyz_to_zyx
from benchmarks.peers import sitk_image, sitk_threads, tio_image, torch_threads

LO, HI = -1000.0, 400.0


def _inputs(data: Any) -> dict[str, Any]:
    s = data.scan()
    return {"images": s["images"], "geometry": s["geometry"]}


def _bytes(inp: dict[str, Any]) -> int:
    return 6 * int(inp["images"].size)


def _plain(out: Any) -> dict[str, np.ndarray]:
    return {"out": as_numpy(out)}


def _ctflow(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.intensity import normalize_hu

    return Runner(lambda: normalize_hu(inp["images"], LO, HI, n_threads=threads), _plain)


def _ctflow_out(inp: dict[str, Any], threads: int) -> Runner:
    from ctflow.ops.intensity import normalize_hu

    buf = np.empty(inp["images"].shape, np.float32)
    return Runner(lambda: normalize_hu(inp["images"], LO, HI, out=buf, n_threads=threads), _plain)


def _numpy(inp: dict[str, Any], threads: int) -> Runner:
    img = inp["images"]

    def run() -> np.ndarray:
        out = img.astype(np.float32)
        np.clip(out, LO, HI, out=out)
        out -= np.float32(LO)
        out /= np.float32(HI - LO)
        return out

    return Runner(run, _plain)


def _torch(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    img = inp["images"]

    def run() -> Any:
        t = torch.from_numpy(img).float()
        return t.clamp_(LO, HI).sub_(LO).div_(HI - LO)

    return Runner(run, _plain)


def _monai(inp: dict[str, Any], threads: int) -> Runner:
    torch = torch_threads(threads)
    from monai.transforms import ScaleIntensityRange

    op = ScaleIntensityRange(LO, HI, 0.0, 1.0, clip=True, dtype=torch.float32)
    t = torch.from_numpy(inp["images"])[None]
    return Runner(lambda: op(t), lambda out: {"out": as_numpy(out)[0]})


def _scale(t: Any) -> Any:
    """(x - LO) / (HI - LO) as float32, for TorchIO's Lambda."""
    return (t.float() - LO) / (HI - LO)


def _torchio(inp: dict[str, Any], threads: int) -> Runner:
    torch_threads(threads)
    import torchio as tio

    subject = tio.Subject(img=tio_image(inp["images"], inp["geometry"]))
    op = tio.Compose([tio.Clamp(LO, HI), tio.Lambda(_scale, types_to_apply=[tio.INTENSITY])])
    return Runner(lambda: op(subject)["img"].data, lambda out: {"out": xyz_to_zyx(out)})


def _sitk(inp: dict[str, Any], threads: int) -> Runner:
    sitk = sitk_threads(threads)
    image = sitk_image(inp["images"], inp["geometry"])

    def run() -> Any:
        return sitk.IntensityWindowing(sitk.Cast(image, sitk.sitkFloat32), LO, HI, 0.0, 1.0)

    return Runner(run, lambda out: {"out": sitk.GetArrayFromImage(out)})


NORMALIZE = Case(
    name="normalize_hu",
    title="Normalise HU: clip [-1000, 400] and scale to [0, 1] (int16 -> float32)",
    inputs=_inputs,
    contenders=[
        Contender("ctflow", "normalize_hu", 1, _ctflow),
        Contender("ctflow", "normalize_hu", 2, _ctflow),
        Contender("ctflow", "normalize_hu(out=reused buffer)", 1, _ctflow_out),
        Contender("ctflow", "normalize_hu(out=reused buffer)", 2, _ctflow_out),
        Contender("numpy", "astype + in-place clip, -, /", 1, _numpy),
        Contender("torch", "float + clamp_ / sub_ / div_", 2, _torch),
        Contender("MONAI", "ScaleIntensityRange(clip=True)", 2, _monai),
        Contender("TorchIO", "Clamp + Lambda(scale)", 2, _torchio),
        Contender("SimpleITK", "Cast + IntensityWindowing", 2, _sitk),
    ],
    check=close(max_mean=1e-6, max_p999=1e-6),
    bytes_moved=_bytes,
    reference="ctflow|normalize_hu|2",
)

CASES = [NORMALIZE]
