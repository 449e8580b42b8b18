"""mkdocs hook: checks of the rendered site that ``--strict`` does not make.

Some docstrings of :class:`rnadiff.RNADiffusion` are templates filled at import
(``rnadiff/model/_docs.py`` replaces lines like ``{sampler}``); the API reference renders the
filled text (``griffe_filled_docstrings.py``). A placeholder left on an API page fails the
build.
"""

from __future__ import annotations

import re

from mkdocs.exceptions import PluginError

# a placeholder line left in a docstring renders as an element holding only ``{name}`` (a
# paragraph, or a parameter's name in the Parameters table); ``top{n}`` inside a name is fine
PLACEHOLDER = re.compile(r">\s*(\{[A-Za-z_]\w*\})\s*<")


def on_page_content(html, page, config, files):
    if page.file.src_uri.startswith("api/"):
        found = sorted(set(PLACEHOLDER.findall(html)))
        if found:
            raise PluginError(
                f"{page.file.src_uri}: unfilled docstring placeholders {found} "
                "(see docs/hooks/griffe_filled_docstrings.py)"
            )
    return html
