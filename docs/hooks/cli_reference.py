"""mkdocs hook: the CLI reference (``docs/cli.md``) is rendered from the typer app itself,
so it can never drift from ``rnadiff <command> --help``: every command's usage, help text and
options (flags, type, default, help) replace the marker below."""

from __future__ import annotations

import html
import re

import typer
from mkdocs.exceptions import PluginError

MARKER = "<!-- rnadiff-cli-reference -->"


def _text(text: str | None) -> str:
    """Help text as inline Markdown: no HTML, no table breaks, no emphasis."""
    text = html.escape(" ".join((text or "").split()), quote=False)
    return text.replace("|", "\\|").replace("*", "\\*")


def _paragraphs(text: str | None) -> str:
    blocks = [b for b in (text or "").replace("\b", "").split("\n\n") if b.strip()]
    return "\n\n".join(_text(b) for b in blocks)


# Typer's commands and options are click's (typer vendors click since 0.22): read only what
# both have, so the reference renders with either.


def _default(param) -> str:
    if param.required:
        return "required"
    value = param.default
    if value is None or callable(value) or value == () or value == []:
        return ""
    if getattr(param, "is_flag", False):
        if param.secondary_opts:
            return f"`{(param.opts if value else param.secondary_opts)[0]}`"
        return ""
    return f"`{value}`"


def _kind(param) -> str:
    if getattr(param, "is_flag", False):
        return "flag"
    kind = param.bare_type() if hasattr(param, "bare_type") else param.type.name
    kind = re.sub(r"^list\[(.*)\]$", r"\1", str(kind))
    if getattr(param, "multiple", False):
        kind += ", repeatable"
    return kind


def command_markdown(group, ctx, name: str) -> str:
    cmd = group.get_command(ctx, name)
    sub = cmd.context_class(cmd, info_name=name, parent=ctx)
    usage = " ".join(cmd.collect_usage_pieces(sub))
    lines = [
        f"## `rnadiff {name}`",
        "",
        _paragraphs(cmd.help),
        "",
        "```text",
        f"rnadiff {name} {usage}",
        "```",
        "",
        "| option | type | default | description |",
        "|---|---|---|---|",
    ]
    for param in cmd.params:
        flags = param.opts + getattr(param, "secondary_opts", [])
        names = " / ".join(f"`{f}`" for f in flags) if flags else f"`{param.human_readable_name}`"
        help_text = getattr(param, "help", None)
        lines.append(f"| {names} | {_kind(param)} | {_default(param)} | {_text(help_text)} |")
    lines.append("| `--help` | flag | | Show the help and exit. |")
    return "\n".join(lines)


def render() -> str:
    from rnadiff.cli import app

    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="rnadiff")
    names = group.list_commands(ctx)
    overview = ["| command | what it does |", "|---|---|"]
    for name in names:
        short = group.get_command(ctx, name).get_short_help_str(limit=200)
        overview.append(f"| [`rnadiff {name}`](#rnadiff-{name}) | {_text(short)} |")
    return "\n\n".join(["\n".join(overview)] + [command_markdown(group, ctx, n) for n in names])


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "cli.md":
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/cli.md lost its marker {MARKER}")
    return markdown.replace(MARKER, render())
