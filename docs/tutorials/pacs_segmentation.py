"""Tutorial 6 — from the PACS and back: predict on a study, invert, store a DICOM SEG (STOW-RS).

Run it:  python docs/tutorials/pacs_segmentation.py [--url DICOMWEB_ROOT [--series UID]]
         [--out DIR] [--quick]

A PACS holds a CT study. ctflow lists its CT series by QIDO-RS (``Dataset.from_dicomweb``), a
pipeline loads the series by WADO-RS, brings it to a standard orientation and spacing,
normalises HU and runs a model over patches (``predict_on_scan``); ``invert`` puts the labels
back on the series' own grid. ``write_dicom_seg`` writes them as a DICOM SEG that references
the series' instances, and ``store_dicomweb`` stores it in the PACS by STOW-RS. The script then
checks the round trip: the PACS lists the new SEG series, and its labels, retrieved by WADO-RS
and read back, equal the prediction voxel for voxel.

The model is NOT a trained network: ``DensityModel`` labels voxels by density (HU thresholds
on a smoothed patch), a stand-in with the shape of a real segmentation network (patches in,
one score channel per label out). Put your network in its place.

Without ``--url`` the script starts a throwaway Orthanc (with its DICOMweb plugin) on a free
loopback port with its storage in a temporary folder, and stores a synthetic chest phantom in
it (written as DICOM by ``write_dicom_series``) as the study to segment. With ``--url`` it
works on that server (the first CT series it lists, or ``--series``) and STORES A SEG THERE:
use a test server.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ctflow as cf
from ctflow.io.dicom.seg import read_dicom_seg, write_dicom_seg
from ctflow.io.dicom_writer import write_dicom_series
from ctflow.io.dicomweb import list_series, retrieve_series, series_source, store_dicomweb
from ctflow.synthetic import make_phantom, phantom_labels

LABELS = {1: "body", 2: "lung"}  # 0 is air: outside the body
HU_WINDOW = (-1000.0, 400.0)  # normalize_hu: this window becomes [0, 1]
PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc/plugins/libOrthancDicomWeb.so*",
)


def hu(value: float) -> float:
    """Return a HU value on the scale normalize_hu gives the model."""
    lo, hi = HU_WINDOW
    return (value - lo) / (hi - lo)


class DensityModel(nn.Module):
    """Labels by density, not learned: 1 body above -400 HU, 2 lung from -950 to -400 HU.

    Each voxel's 3x3x3 mean decides (less noise). Lung-density voxels within 2 voxels of air
    (below -950 HU) are left as air: they are the blurred skin line, not lung. Gas in the
    bowel would pass for lung: a density rule knows no anatomy. Input ``(B, 1, z, y, x)``
    normalised HU; output ``(B, 3, z, y, x)`` one-hot scores, channel k for label k.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mean = nn.AvgPool3d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        smooth = self.mean(x)
        lowest_near = -nn.functional.max_pool3d(-x, 5, stride=1, padding=2)
        body = smooth >= hu(-400)
        lung = (smooth >= hu(-950)) & ~body & (lowest_near >= hu(-950))
        air = ~(body | lung)
        return torch.cat([air, body, lung], dim=1).float()


# ---------------------------------------------------------------------------- a PACS to try


def free_port() -> int:
    """Return a TCP port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def throwaway_orthanc() -> Iterator[str]:
    """Run Orthanc + DICOMweb on a free loopback port, storage in a temporary folder."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
    plugin = next((p for pattern in PLUGINS for p in sorted(glob.glob(pattern))), None)
    if binary is None or plugin is None:
        missing = "Orthanc" if binary is None else "its DICOMweb plugin (libOrthancDicomWeb.so)"
        raise SystemExit(
            f"{missing} is not installed: apt-get install orthanc orthanc-dicomweb, or pass "
            "--url of a DICOMweb server"
        )
    with tempfile.TemporaryDirectory(prefix="ctflow-orthanc-") as tmp:
        work, port = Path(tmp), free_port()
        config = {
            "Name": "ctflow-tutorial",
            "HttpPort": port,
            "DicomServerEnabled": False,
            "StorageDirectory": str(work / "storage"),
            "IndexDirectory": str(work / "storage"),
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "AuthenticationEnabled": False,
            "RemoteAccessAllowed": False,
        }
        (work / "orthanc.json").write_text(json.dumps(config))
        with (work / "orthanc.log").open("wb") as log:
            process = subprocess.Popen(
                [binary, str(work / "orthanc.json")], cwd=work, stdout=log, stderr=log
            )
        try:
            version = wait_until_up(f"http://127.0.0.1:{port}", process, work / "orthanc.log")
            print(f"throwaway Orthanc {version} on http://127.0.0.1:{port} (temporary storage)")
            yield f"http://127.0.0.1:{port}/dicom-web"
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_until_up(rest: str, process: subprocess.Popen[bytes], log: Path) -> str:
    """Wait until Orthanc answers; return its version."""
    system = f"{rest}/system"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"Orthanc exited ({process.returncode}): {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(system, timeout=2) as answer:
            return str(json.loads(answer.read())["Version"])
        time.sleep(0.1)
    raise SystemExit(f"Orthanc did not answer within 60 s: {log.read_text()[-2000:]}")


def upload_phantom(url: str, folder: Path, quick: bool) -> np.ndarray:
    """Store a chest phantom in the PACS as a DICOM CT series; return its true labels."""
    shape, spacing = ((24, 96, 96), (2.5, 0.8, 0.8)) if quick else ((80, 256, 256), (2.0, 0.7, 0.7))
    # a prone patient: rows run right to left and columns back to front (IOP -1 0 0 0 -1 0)
    scan, _ = make_phantom(shape, spacing, n_nodules=2, seed=6, direction=np.diag([1, -1, -1]))
    files = write_dicom_series(
        folder, scan.images, scan.geometry, patient_id="PHANTOM-6", description="Chest phantom"
    )
    stored = store_dicomweb(url, files)
    print(f"stored a phantom CT study: {len(stored)} instances by STOW-RS, {shape} voxels")
    return phantom_labels(scan)


# ---------------------------------------------------------------------------- the round trip


def pick_series(url: str, wanted: str | None) -> tuple[str, str]:
    """List the CT series (QIDO-RS); return (study UID, series UID) of the one to segment."""
    series = list_series(url)
    for s in series[:10]:
        n, text = s.get("NumberOfSeriesRelatedInstances"), s.get("SeriesDescription")
        print(f"CT series ...{s['SeriesInstanceUID'][-12:]}  {n} instances  {text!r}")
    if len(series) > 10:
        print(f"... and {len(series) - 10} more CT series")
    chosen = [s for s in series if wanted in (None, s["SeriesInstanceUID"])]
    if not chosen:
        raise SystemExit(f"no CT series {wanted} at {url}")
    return chosen[0]["StudyInstanceUID"], chosen[0]["SeriesInstanceUID"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a DICOMweb root; default: a throwaway Orthanc")
    parser.add_argument("--series", help="the SeriesInstanceUID to segment (with --url)")
    parser.add_argument("--out", default="tutorial_output/pacs", help="working folder")
    parser.add_argument("--quick", action="store_true", help="a small phantom (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    for name in ("phantom_dicom", "series", "seg", "seg_back"):  # a second run starts afresh
        shutil.rmtree(out / name, ignore_errors=True)
    torch.set_num_threads(1 if args.quick else 2)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(throwaway_orthanc())
        truth = None if args.url else upload_phantom(url, out / "phantom_dicom", args.quick)
        round_trip(url, args.series, out, truth)
    print(f"done in {time.perf_counter() - started:.1f} s")


def round_trip(url: str, wanted: str | None, out: Path, truth: np.ndarray | None) -> None:
    """List, predict, invert, store as SEG, and check what the PACS gives back."""
    # 1. the CT series of the PACS (QIDO-RS), as a dataset
    study, uid = pick_series(url, wanted)
    dataset = cf.Dataset.from_dicomweb(url, study, lambda s: s["SeriesInstanceUID"] == uid)
    source = dataset.sources[uid]
    print(f"segmenting {source}")

    # 2. load (WADO-RS), standard orientation and spacing, HU window, the model over patches
    model = DensityModel().eval()

    @torch.no_grad()
    def segment(patches: np.ndarray) -> torch.Tensor:
        """(B, pz, py, px) normalised patches -> (B, 3, pz, py, px) scores."""
        return model(torch.from_numpy(patches)[:, None])

    infer = (
        cf.Pipeline()
        .load()
        .reorient("LPS")
        .unify_spacing((2.0, 1.5, 1.5))
        .normalize_hu(*HU_WINDOW)
        .predict_on_scan(
            segment,
            (16, 32, 32),  # patches of 32 x 48 x 48 mm
            stride=(8, 16, 16),  # overlapping by half
            blend="gaussian",
            output="labels",  # the argmax of the 3 channels: uint8 0, 1, 2
        )
        .invert()  # the labels back on the grid load() read the series on
    )
    batch = next((dataset >> infer).gen_batch(batch_size=1))
    print(" -> ".join(step["action"] for step in batch.history[0]))
    labels, grid = batch[0].masks, batch.geometry(0)
    print(f"prediction {labels.shape} voxels on the series' grid, labels {np.unique(labels)}")
    if truth is not None:  # the phantom's own label map: how good is a density rule?
        lungs = cf.metrics.dice(labels == 2, np.isin(truth, (2, 3)), labels=[1])[1]
        body = cf.metrics.dice(labels > 0, truth > 0, labels=[1])[1]
        print(f"dice against the phantom's truth: body outline {body:.3f}, lungs {lungs:.3f}")

    # 3. a DICOM SEG referencing the series: write_dicom_seg reads the series' headers
    headers = retrieve_series(source, out / "series")
    seg = write_dicom_seg(
        out / "seg" / "prediction.dcm",
        labels,
        out / "series",
        names=LABELS,
        geometry=grid,  # a safety check: the labels must lie on the series' grid
        description="ctflow density model",
    )
    print(f"wrote {seg.relative_to(out)} referencing {len(headers)} CT instances")

    # 4. store it in the PACS (STOW-RS)
    stored = store_dicomweb(url, seg, study_uid=study)
    print(f"stored 1 SEG instance by STOW-RS: {stored[0].url}")

    # 5. the proof: the PACS lists the SEG series, and its labels read back are the prediction
    segs = list_series(url, study, modality="SEG")
    listed = [s["SeriesInstanceUID"] for s in segs]
    print(f"the PACS lists the SEG series: {stored[0].series_uid in listed}")
    back_files = retrieve_series(series_source(url, study, stored[0].series_uid), out / "seg_back")
    identical = back_files[0].read_bytes() == seg.read_bytes()
    print(f"the SEG the PACS gives back is the file sent: {identical}")
    back = read_dicom_seg(back_files[0], reference=out / "series")
    print(f"segments read back: {dict(zip((s.value for s in back.segments), back.names))}")
    same = back.labels.shape == labels.shape and bool(np.array_equal(back.labels, labels))
    print(f"labels read back equal the prediction: {same}")
    assert same


if __name__ == "__main__":
    main()
