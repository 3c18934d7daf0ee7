"""Interoperability with PyTorch, MONAI and TorchIO (all optional: imported only when used).

* :mod:`ctflow.interop.torch` — :class:`~ctflow.interop.torch.PipelineDataset`, a
  ``torch.utils.data.IterableDataset`` over :meth:`ctflow.Pipeline.gen_batch`, so a pipeline feeds
  a training loop on the fly.
* :mod:`ctflow.interop.monai` — a batch item to / from a MONAI-style dict (``image``, ``label``,
  ``affine``), as MONAI's ``LoadImaged`` makes them.
* :mod:`ctflow.interop.torchio` — a batch item to / from a ``torchio.Subject``.
* :mod:`ctflow.interop.affine` — ctflow's (z, y, x) LPS geometry to / from the 4x4 RAS affine
  of (x, y, z)-ordered arrays that nibabel, MONAI and TorchIO use.

Masks keep their label values and dtype both ways ({0, 1, 2, 5} stays {0, 1, 2, 5}, uint16
stays uint16, float probabilities stay float), whatever dtype the peer's transforms hand them
back in (``ctflow.interop._labels``).

Importing ``ctflow`` or this package never imports torch, MONAI or TorchIO; a missing one
raises :class:`~ctflow.errors.MissingDependencyError` naming what to install.
"""

from __future__ import annotations

from ctflow.interop.affine import geometry_from_ras_affine, ras_affine

__all__ = ["geometry_from_ras_affine", "ras_affine"]
