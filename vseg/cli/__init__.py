"""The `vseg` command line: thin typer commands over plain functions.

Every command does its work through a function in the package; these modules only parse
options, show progress and print results. A :class:`~vseg.errors.VsegError` raised anywhere
below becomes one ``error: ...`` line on stderr and exit code 2 (see :func:`main`).

The commands live by kind: ``tools`` (doctor, eval, transcode, probe), ``vos`` (run, demo,
profile, export, build), ``train`` and ``data`` (synth-vos, synth-vss); ``common`` holds the apps and
the options several commands share. Importing a module registers its commands, so the imports
below give the order ``vseg --help`` lists them in.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from vseg.cli.common import app, err_console
from vseg.errors import VsegError

from vseg.cli import tools  # noqa: E402,F401  isort: skip (registration order)
from vseg.cli import vos  # noqa: E402,F401  isort: skip
from vseg.cli import train  # noqa: E402,F401  isort: skip
from vseg.cli import data  # noqa: E402,F401  isort: skip

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: user mistakes become one line and a non-zero exit, never a traceback."""
    try:
        app()
    except VsegError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
