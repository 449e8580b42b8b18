"""mkdocs hook: the tutorials are the jupytext notebooks of ``notebooks/`` (percent-format
``.py`` files, kept as text). Each becomes the page ``notebooks/<name>/``, converted and
executed by the mkdocs-jupyter plugin; a cell that raises fails the build.

``RNADIFF_DOCS_EXECUTE=0`` (or ``false``/``no``/``off``) renders them without running them:
the pages show the code and text but no outputs (what ``tests/test_docs.py`` builds).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
OFF = {"0", "false", "no", "off"}
log = logging.getLogger("mkdocs.hooks.notebooks")


def execute() -> bool:
    return os.environ.get("RNADIFF_DOCS_EXECUTE", "1").strip().lower() not in OFF


def on_config(config):
    jupyter = config.plugins["mkdocs-jupyter"]
    jupyter.config["execute"] = execute()
    log.info("tutorials: %s", "executed" if execute() else "not executed (RNADIFF_DOCS_EXECUTE)")
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files turns them into notebook pages
def on_files(files, config):
    # src_dir is the repository: the page keeps the file's own path, notebooks/<name>.py
    # (mkdocs-jupyter's pages need a File with a real src_dir, not File.generated)
    for path in sorted((ROOT / "notebooks").glob("*.py")):
        files.append(
            File(
                f"notebooks/{path.name}",
                src_dir=str(ROOT),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files
