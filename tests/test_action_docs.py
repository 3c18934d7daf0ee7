"""Every registered action documents every parameter in a numpydoc ``Parameters`` section.

A user parameter is a dataclass field of the action that ``__init__`` takes and whose name does
not start with ``_``. Its entry is a line ``name : type`` (or ``a, b : type``) at the section's
indentation, followed by an indented description.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from ctflow.actions import ACTIONS

_HEADER = re.compile(r"^(?P<title>[A-Z][A-Za-z ]*)\n-{3,}$", re.MULTILINE)
_ENTRY = re.compile(r"^(?P<names>\w+(?:\s*,\s*\w+)*)\s+:\s+(?P<type>\S.*)$")


def user_fields(cls: type) -> list[str]:
    """The parameters a user passes: init fields not starting with an underscore."""
    return [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


def sections(doc: str) -> dict[str, str]:
    """Return the body of every numpydoc section of ``doc`` (title -> text)."""
    text = inspect.cleandoc(doc)
    heads = list(_HEADER.finditer(text))
    out = {}
    for k, head in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        out[head["title"]] = text[head.end() : end]
    return out


def documented(doc: str) -> dict[str, str]:
    """Return ``{name: description}`` of the ``Parameters`` entries of ``doc``."""
    body = sections(doc).get("Parameters")
    if body is None:
        return {}
    out: dict[str, str] = {}
    names: list[str] = []
    for line in body.splitlines():
        match = _ENTRY.match(line)
        if match:
            names = [n.strip() for n in match["names"].split(",")]
            for name in names:
                assert name not in out, f"{name} is documented twice"
                out[name] = ""
        elif line.startswith((" ", "\t")) and line.strip() and names:
            for name in names:
                out[name] += line.strip() + " "
        elif line.strip():
            names = []  # prose at the section's indentation that is not an entry
    return {k: v.strip() for k, v in out.items()}


CLASSES = sorted(ACTIONS.items())


def test_the_registry_is_not_empty():
    assert len(CLASSES) >= 38


@pytest.mark.parametrize(("name", "cls"), CLASSES, ids=[n for n, _ in CLASSES])
def test_every_user_field_is_documented(name, cls):
    fields = user_fields(cls)
    doc = cls.__doc__ or ""
    if not fields:
        return  # nothing to document (e.g. fetch_nodules_from_mask)
    assert "Parameters" in sections(doc), f"{cls.__name__} ({name}) has no Parameters section"
    entries = documented(doc)
    missing = [f for f in fields if f not in entries]
    assert not missing, f"{cls.__name__} ({name}) does not document {missing}"
    empty = [f for f in fields if not entries[f]]
    assert not empty, f"{cls.__name__} ({name}) has no description for {empty}"


@pytest.mark.parametrize(("name", "cls"), CLASSES, ids=[n for n, _ in CLASSES])
def test_every_documented_parameter_is_a_field(name, cls):
    unknown = sorted(set(documented(cls.__doc__ or "")) - set(user_fields(cls)))
    assert not unknown, f"{cls.__name__} ({name}) documents parameters it has not: {unknown}"


def test_the_parser_reads_numpydoc_entries():
    doc = """Summary.

    Parameters
    ----------
    a : int, default 1
        The first.
    b, c : float
        Two at once.

    Examples
    --------
    >>> x : int = 1
    """
    assert documented(doc) == {"a": "The first.", "b": "Two at once.", "c": "Two at once."}
