"""The documentation builds (mkdocs --strict: broken links, missing pages or snippets fail)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(300)


def _nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out.extend(_nav_pages(value) if isinstance(value, list) else [value])
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built from a copy of docs/ + mkdocs.yml (the source tree is not touched)."""
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "docs", work / "docs")
    shutil.copy(ROOT / "mkdocs.yml", work / "mkdocs.yml")
    (work / "src").symlink_to(ROOT / "src")
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(work / "site")],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return work / "site"


def test_every_page_is_in_the_nav_and_built(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_pages(config["nav"]))
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages - nav == set(), "pages missing from the nav"
    assert nav - pages == set(), "nav entries without a page"
    for page in nav:
        folder = page.removesuffix("index.md") if page.endswith("index.md") else page[:-3]
        built = site / folder / "index.html"
        assert built.is_file(), page


def test_tutorial_pages_show_the_scripts_ci_runs(site):
    scripts = sorted((ROOT / "docs" / "tutorials").glob("*.py"))
    included = {}
    for md in (ROOT / "docs" / "tutorials").glob("*.md"):
        for name in re.findall(r'--8<-- "tutorials/([\w.]+\.py)"', md.read_text()):
            included[name] = md.stem
    assert sorted(included) == [s.name for s in scripts]
    for script in scripts:
        html = (site / "tutorials" / included[script.name] / "index.html").read_text()
        first_line = script.read_text().splitlines()[0].strip('"')
        assert first_line.split(" — ")[0] in html  # the script's title line made it in
        assert "main</span><span" in html or 'def</span> <span class="nf">main' in html


def test_api_reference_is_generated_from_docstrings(site):
    html = (site / "api" / "actions" / "index.html").read_text()
    assert 'id="ctflow.actions.geometry.UnifySpacing"' in html
    assert "Resample every item to exactly" in html  # the docstring's summary line
    assert 'id="ctflow.actions.methods.ActionMethods.unify_spacing"' in html
    batch = (site / "api" / "batch" / "index.html").read_text()
    assert 'id="ctflow.batch.CTBatch.run_items"' in batch
    for page in (site / "api").rglob("index.html"):
        text = page.read_text()
        assert ":class:`" not in text and ":func:`" not in text, page  # roles were rewritten
    viz = (site / "api" / "viz" / "index.html").read_text()
    assert 'id="ctflow.viz.show_scan"' in viz
    interop = (site / "api" / "interop" / "index.html").read_text()
    assert 'id="ctflow.interop.monai.to_monai"' in interop
