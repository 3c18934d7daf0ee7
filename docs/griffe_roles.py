"""Griffe extension for the API reference: Sphinx roles in docstrings become inline code.

ctflow's numpydoc docstrings use Sphinx roles (``:class:`~ctflow.geometry.Geometry```,
``:func:`read_scan```); mkdocstrings renders Markdown, where they would show as raw text. This
turns each role into inline code with the name as Sphinx would print it (``~`` keeps only the
last component).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _replace(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles in every docstring."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_replace, obj.docstring.value)
