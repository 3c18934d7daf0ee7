"""Optional dependencies: import one, or fail with a MissingDependencyError that says what to do.

``pip install ctflow`` installs what every user needs (numpy, scipy, numba, pydicom with its
JPEG decoders, blosc2, pandas, tqdm, fsspec). The rest comes with extras, each named where it
is missing:

=================  =========================================================================
``ctflow[dask]``   the Dask engine (``dask.distributed``)
``ctflow[sitk]``   the SimpleITK fallback reader (``fmt="sitk"``) and NRRD writing in the CLI
``ctflow[viz]``    pictures (``batch.show``, ``ctflow show``, the demo's preview; matplotlib)
``ctflow[torch]``  PyTorch, MONAI and TorchIO interop (torch 2.13.0, CPU wheel)
``ctflow[s3]``     ``s3://`` URLs (s3fs)
``ctflow[seg]``    writing DICOM SEG (highdicom)
``ctflow[all]``    all of them
=================  =========================================================================

Examples
--------
>>> optional_import("json", "the example").dumps([1])
'[1]'
>>> try:
...     optional_import("SimpleITK_is_not_a_module", "an example")
... except ImportError as exc:
...     print(type(exc).__name__)
MissingDependencyError
"""

from __future__ import annotations

import importlib
from typing import Any

from ctflow.errors import MissingDependencyError

__all__ = ["EXTRAS", "optional_import"]

#: top-level module -> (pip package, the ctflow extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "SimpleITK": ("SimpleITK", "sitk"),
    "dask": ("dask[distributed]", "dask"),
    "distributed": ("dask[distributed]", "dask"),
    "matplotlib": ("matplotlib", "viz"),
    "torch": ("torch", "torch"),
    "monai": ("monai", "torch"),
    "torchio": ("torchio", "torch"),
    "s3fs": ("s3fs", "s3"),
    "highdicom": ("highdicom", "seg"),
}


def optional_import(name: str, purpose: str) -> Any:
    """``import name`` (a module, typed Any), or MissingDependencyError naming the pip line.

    Parameters
    ----------
    name : str
        The module to import (``"SimpleITK"``, ``"matplotlib.figure"``, ...).
    purpose : str
        What needs it, for the message (``"read_with_sitk"``, ``"the Dask engine"``).

    Raises
    ------
    MissingDependencyError
        The module (or one it imports) is not installed; the message names
        ``pip install 'ctflow[<extra>]'``.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        package, extra = EXTRAS.get(top, (top, ""))
        how = f"pip install 'ctflow[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"{purpose} needs the optional package {package!r}, which is not installed: {how}"
        ) from exc
