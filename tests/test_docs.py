"""The documentation site builds with ``mkdocs build --strict``: every page, link and anchor,
the API reference from the docstrings (with the filled shared parameter texts) and the CLI
reference from the typer app. Tutorials are rendered without running them
(``RNADIFF_DOCS_EXECUTE=0``); ``make docs`` executes them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("mkdocs_jupyter")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "RNADIFF_DOCS_EXECUTE": "0", "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


def _text(path: Path) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", path.read_text()))


def test_every_section_is_built(site):
    pages = ["index", "guide/data", "guide/drugs", "architecture", "cli", "changelog"]
    for page in [*pages, "benchmarks/kang", "benchmarks/drugs"]:
        assert (site / page / "index.html").is_file() or (site / f"{page}.html").is_file(), page
    tutorials = sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))
    assert len(tutorials) == 5
    for name in tutorials:
        assert (site / "notebooks" / name / "index.html").is_file(), name


def test_model_page_shows_the_filled_shared_docstrings(site):
    html = (site / "api" / "model" / "index.html").read_text()
    assert "{sampler}" not in html and "{transfer}" not in html
    text = _text(site / "api" / "model" / "index.html")
    # the shared description of `sampler` reaches generate, predict and design
    assert text.count("one network call per step") >= 3
    assert ":func:" not in text and ":meth:" not in text  # Sphinx roles became links


def test_cli_reference_lists_every_command_and_option(site):
    import typer

    from rnadiff.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="rnadiff")
    text = _text(site / "cli" / "index.html")
    for name in group.list_commands(ctx):
        assert f"rnadiff {name}" in text
        for param in group.get_command(ctx, name).params:
            for flag in param.opts:
                assert flag in text, (name, flag)
