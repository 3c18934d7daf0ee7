"""Tutorial 3 — train a PyTorch model on the fly: the pipeline feeds the training loop.

Run it:  python docs/tutorials/train_pytorch.py [--out DIR] [--quick]

No crops are written: each step loads scans, resamples them, samples nodule / random crops and
hands them to the network as tensors. ``ctflow.interop.torch.PipelineDataset`` wraps
``Pipeline.gen_batch`` in a ``torch.utils.data.IterableDataset``; ctflow does the batching and
the item-parallel work, so the DataLoader gets ``batch_size=None``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

import ctflow as cf
from ctflow.interop.torch import PipelineDataset
from ctflow.synthetic import make_dataset


class TinyNoduleNet(nn.Module):
    """Per-voxel nodule logits from a crop: a few 3-D convolutions (a stand-in for a U-Net)."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tutorial_output/train", help="working folder")
    parser.add_argument("--quick", action="store_true", help="tiny data, few steps (CI)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    torch.manual_seed(0)
    torch.set_num_threads(2)

    n_scans, shape, steps = (3, (32, 80, 80), 4) if args.quick else (8, (120, 256, 256), 200)
    make_dataset(out / "scans", n_scans=n_scans, shape=shape, seed=1)
    dataset = cf.Dataset.from_glob(str(out / "scans" / "*.mhd"))
    annotations = cf.read_annotations(out / "scans" / "annotations.csv")
    train, valid = dataset.split(0.67, seed=0) if len(dataset) > 2 else (dataset, dataset)

    crop = (16, 32, 32)
    prepare = (
        cf.Pipeline()
        .load()
        .fetch_nodules(annotations)
        .unify_spacing((1.0, 1.0, 1.0), shape=(None, *shape[1:]))
        .create_mask()
        .cache(ram_gb=2)  # the steps above run once per scan; later epochs start here
    )
    # random augmentation, drawn per crop from the run's seed (the record is in each history);
    # flips and the affine run as one resampling pass, masks follow with nearest neighbour
    augment = (
        prepare.random_noise(std_hu=(0.0, 20.0), p=0.5)  # in HU, before the window
        .normalize_hu(-1000, 400)
        .sample_nodules(batch_size=8, nodule_size=crop, share=0.5, variance=(4, 9, 9))
        .random_flip(axes=(1, 2))
        .random_affine(degrees=(15, 0, 0), scales=0.1, cval=0.0)  # air is 0 after the window
    )
    # validation: the same crops every time (fixed seed), no augmentation
    validate = prepare.normalize_hu(-1000, 400).sample_nodules(
        batch_size=8, nodule_size=crop, share=0.5
    )
    loader = DataLoader(
        PipelineDataset(train >> augment, batch_size=2, shuffle=True, n_epochs=None, seed=0),
        batch_size=None,  # ctflow made the batch
    )

    model = TinyNoduleNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(5.0))
    model.train()
    losses = []
    start, n_crops = time.perf_counter(), 0
    for step, batch in enumerate(loader):
        x = batch["images"]  # (8, 1, 16, 32, 32) float32 in [0, 1]
        y = batch["masks"].float()  # (8, 1, 16, 32, 32) nodule masks
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        n_crops += len(x)
        print(
            f"step {step:3d}  loss {losses[-1]:.4f}  crops {tuple(x.shape)}  "
            f"nodule voxels {int(y.sum())}"
        )
        if step + 1 >= steps:
            break  # n_epochs=None streams forever; the loop decides when to stop
    print(f"{n_crops / (time.perf_counter() - start):.1f} crops/s into the training loop")
    assert all(np.isfinite(losses))

    # validation: deterministic crops (fixed seed), no gradient
    model.eval()
    with torch.no_grad():
        for batch in DataLoader(
            PipelineDataset(valid >> validate, batch_size=2, seed=123), batch_size=None
        ):
            pred = torch.sigmoid(model(batch["images"])) > 0.5
            truth = batch["masks"].bool()
            dice = 2 * (pred & truth).sum() / max(int(pred.sum() + truth.sum()), 1)
            print(f"validation {batch['ids'][:2]}...: dice {float(dice):.3f}")
    torch.save(model.state_dict(), out / "tiny_nodule_net.pt")
    print(f"saved {out / 'tiny_nodule_net.pt'}")


if __name__ == "__main__":
    main()
