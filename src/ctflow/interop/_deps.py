"""Import an optional dependency, or fail with a MissingDependencyError that says what to do."""

from __future__ import annotations

import importlib
from typing import Any

from ctflow.errors import MissingDependencyError

__all__ = ["optional_import"]

_PIP = {"torch": "torch", "monai": "monai", "torchio": "torchio"}


def optional_import(name: str, purpose: str) -> Any:
    """``import name`` (a module, typed Any), or MissingDependencyError naming the pip package.

    Examples
    --------
    >>> optional_import("json", "the example").dumps([1])
    '[1]'
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        top = name.split(".")[0]
        package = _PIP.get(top, top)
        raise MissingDependencyError(
            f"{purpose} needs the optional package {top!r}, which is not installed "
            f"(pip install {package}, or pip install 'ctflow[bench]' for torch + MONAI + TorchIO)"
        ) from exc
