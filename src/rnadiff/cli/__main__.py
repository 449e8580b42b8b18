"""``python -m rnadiff.cli``: the command line."""

from rnadiff.cli import main

main()
