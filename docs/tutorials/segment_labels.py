"""Tutorial 4 — segmentation with label maps: train on crops by class, predict, invert, score.

Run it:  python docs/tutorials/segment_labels.py [--out DIR] [--quick]

Every scan comes with a label file (``labels/<id>.nii.gz``: 0 background, 1 body, 2 right
lung, 3 left lung, 4 nodule). Training crops are centred on voxels of each class in chosen
shares (``sample_crops``) and a small 3-D CNN with one output channel per class learns from
them. On a held-out scan the network runs over overlapping patches (``predict_on_scan``:
gaussian blending, labels out), ``invert`` puts the labels back on the grid the scan was loaded
with, and ``export`` writes them as a NIfTI file that overlays the scan in any viewer. The
score is each label's Dice against the original label file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn
from torch.utils.data import DataLoader

import ctflow as cf
from ctflow.interop.torch import PipelineDataset
from ctflow.synthetic import PHANTOM_LABELS, make_dataset

N_CLASSES = len(PHANTOM_LABELS)  # 0 background, 1 body, 2 right lung, 3 left lung, 4 nodule


def block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3x3 convolutions, each with instance normalisation and a ReLU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.ReLU(),
        nn.Conv3d(c_out, c_out, 3, padding=1),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.ReLU(),
    )


class TinyUNet(nn.Module):
    """A two-level 3-D U-Net: per-voxel logits of ``n_classes`` classes (sides divisible by 4)."""

    def __init__(self, n_classes: int = N_CLASSES, width: int = 4) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = block(1, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.dec2, self.dec1 = block(6 * w, 2 * w), block(3 * w, w)
        self.pool = nn.MaxPool3d(2)
        self.up = nn.Upsample(scale_factor=2, mode="trilinear")
        self.head = nn.Conv3d(w, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        d2 = self.dec2(torch.cat([e2, self.up(e3)], dim=1))
        d1 = self.dec1(torch.cat([e1, self.up(d2)], dim=1))
        return self.head(d1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tutorial_output/segment", help="working folder")
    parser.add_argument("--quick", action="store_true", help="tiny data, few steps (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    # --quick runs on shared CI machines: torch's OpenMP threads spin while they wait for each
    # other, and two of them on a busy 2-core machine can be many times slower than one
    torch.set_num_threads(1 if args.quick else 2)

    # 1. NIfTI scans stored LPS or RAS, and their label maps (always stored RAS)
    if args.quick:  # the mechanics, on tiny phantoms
        n_scans, shape, crop, steps = 3, (32, 80, 80), (16, 24, 24), 60
    else:
        n_scans, shape, crop, steps = 8, (80, 192, 192), (24, 48, 48), 300
    folder = out / "scans"
    stored = [("RAS", "LPS")[k % 2] for k in range(n_scans)]  # as in a mixed collection
    make_dataset(folder, n_scans, shape, seed=4, fmt="nifti", orientations=stored, labels=True)
    dataset = cf.Dataset.from_glob(folder / "*.nii.gz", masks=f"{folder}/labels/{{id}}.nii.gz")
    train, held_out = dataset.split(1 - 1 / n_scans)  # the last scan is never trained on
    print(f"{len(train)} training scans, {len(held_out)} held out; labels {PHANTOM_LABELS}")

    # 2. the same preparation for training and inference; crops by class for training
    prep = (
        cf.Pipeline()
        .load()  # the label file lands in `masks`, put on the scan's grid
        .reorient("LPS")  # the right lung on the same side of every array the network sees
        .unify_spacing((2.0, 2.0, 2.0))  # images linear, labels nearest: values stay 0..4
        .normalize_hu(-1000, 400)
    )
    # crops centred on voxels of every class, one share each
    sampling = prep.sample_crops(8, crop, ratios=dict.fromkeys(PHANTOM_LABELS, 1.0))
    print(sampling)
    loader = DataLoader(
        PipelineDataset(train >> sampling, batch_size=2, shuffle=True, n_epochs=None, seed=0),
        batch_size=None,  # ctflow made the batch
    )

    # 3. train: cross-entropy of the class logits against the crops' label maps
    model = TinyUNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    # a crop centred on a nodule is still mostly something else: rare classes weigh more
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.0, 3.0, 3.0, 10.0]))
    model.train()
    for step, batch in enumerate(loader):
        x = batch["images"]  # (8, 1, *crop) float32 in [0, 1]
        y = batch["masks"][:, 0].long()  # (8, *crop) labels 0..4
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step + 1 == steps:
            share = np.bincount(y.numpy().ravel(), minlength=N_CLASSES) / y.numel()
            shares = " ".join(f"{v:.2f}" for v in share)
            print(f"step {step:3d}  loss {loss.item():.4f}  share of voxels per label {shares}")
        if step + 1 >= steps:
            break  # n_epochs=None streams forever; the loop decides when to stop
    model.eval()

    @torch.no_grad()
    def segment(patches: np.ndarray) -> torch.Tensor:
        """(B, pz, py, px) normalised patches -> (B, 5, pz, py, px) class probabilities."""
        return torch.softmax(model(torch.from_numpy(patches)[:, None]), dim=1)

    # 4. the held-out scans as at inference: images only, no label file
    infer = prep.predict_on_scan(
        segment,
        crop,
        stride=tuple(s // 2 for s in crop),  # patches overlap by half
        batch_size=4,
        blend="gaussian",  # a patch's centre counts more than its edges
        output="labels",  # the argmax over the 5 channels, uint8
    ).invert()  # one resampling back onto the grid the scan was loaded with
    sources = {uid: held_out.sources[uid] for uid in held_out.ids}
    (folder / "predictions").mkdir(exist_ok=True)
    for batch in (cf.Dataset.from_paths(sources) >> infer).gen_batch(batch_size=1):
        uid, source = batch.ids[0], sources[batch.ids[0]]
        print(f"{uid[-12:]}: {' -> '.join(h['action'] for h in batch.history[0])}")
        predicted = batch.export(0, folder / "predictions" / f"{uid}.nii.gz", component="masks")
        print(f"exported {predicted.relative_to(out)}")

        # 5. check it as a viewer would (SimpleITK): the prediction lies on the scan's grid ...
        image, pred = sitk.ReadImage(source), sitk.ReadImage(str(predicted))
        on_grid = (
            pred.GetSize() == image.GetSize()
            and np.allclose(pred.GetSpacing(), image.GetSpacing(), rtol=0, atol=1e-6)
            and np.allclose(pred.GetOrigin(), image.GetOrigin(), rtol=0, atol=1e-4)
            and np.allclose(pred.GetDirection(), image.GetDirection(), rtol=0, atol=1e-6)
        )
        code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
        print(f"scan stored {code}, {image.GetSize()[::-1]} voxels (z, y, x)")
        print(f"prediction on the scan's grid: {on_grid}")
        assert on_grid

        # ... and each label's Dice against the label file, put on the scan's grid the same way
        label_file = sitk.ReadImage(str(folder / "labels" / f"{uid}.nii.gz"))
        truth = sitk.GetArrayFromImage(
            sitk.Resample(label_file, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        )
        labels = sitk.GetArrayFromImage(pred)
        scores = cf.metrics.dice(labels, truth, labels=range(1, N_CLASSES))
        lungs = cf.metrics.dice(np.isin(labels, (2, 3)), np.isin(truth, (2, 3)), labels=[1])[1]
        for label, value in scores.items():
            print(f"dice {PHANTOM_LABELS[label]:<10}  {value:.3f}")
        print(f"dice lungs, either side  {lungs:.3f}")
        assert scores[1] > 0


if __name__ == "__main__":
    main()
