"""The ``rnadiff`` command line: parse, call the public API, print. No logic of its own.

Every command reads and writes files by the same rules: inputs are read and never modified;
outputs are written atomically (a temporary file, then a rename), never over a folder or file of
the user's nor over an input of the same command; a user error is one line ``error: ...`` (in
the command line's words) with exit code 2.
"""

from __future__ import annotations

import inspect
import sys

import typer

from rnadiff._errors import RNADiffError
from rnadiff.cli._common import cli_words
from rnadiff.cli._design import design, rank
from rnadiff.cli._evaluate import demo, evaluate
from rnadiff.cli._sample import denoise, generate, predict
from rnadiff.cli._train import train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="rnadiff: perturbation-aware diffusion models of single-cell gene expression.",
)


def _reflowed(doc: str | None) -> str | None:
    """A command's docstring with each paragraph on one line: the help screen wraps it to the
    terminal (it would otherwise keep the source's line breaks inside its own wrapping)."""
    if doc is None:
        return None
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


for _command in (train, generate, predict, denoise, design, rank, evaluate, demo):
    app.command(help=_reflowed(_command.__doc__))(_command)


@app.callback()
def _start() -> None:
    # each command starts with no input files recorded (never replaced by its outputs)
    from rnadiff.data._io import forget_inputs

    forget_inputs()


def main() -> None:
    """Console entry point: user errors become one clear line and exit code 2."""
    try:
        app()
    except RNADiffError as err:
        typer.echo(f"error: {cli_words(str(err))}", err=True)
        sys.exit(2)


__all__ = ["app", "main"]
