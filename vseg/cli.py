"""The `vseg` command line: thin typer commands over plain functions.

Every command does its work through a function in the package; this module only parses
options, shows progress and prints results. A :class:`~vseg.errors.VsegError` raised anywhere
below becomes one ``error: ...`` line on stderr and exit code 2 (see :func:`main`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vseg.errors import VsegError

app = typer.Typer(
    help="vseg: efficient video segmentation from training to TensorRT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make synthetic datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

# Options shared by several commands, declared once.
JsonOut = Annotated[Optional[Path], typer.Option("--json", help="Also write the result as JSON to this file.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same output.")]


def write_json(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    from vseg.data.palette import atomic_save

    text = json.dumps(payload, indent=2, default=str).encode()
    atomic_save(path, lambda f: f.write(text))
    console.print(f"wrote {path}")


def progress():
    """A progress bar for long work (shown on stderr so stdout stays parseable)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True)


@app.command()
def doctor(json_out: JsonOut = None) -> None:
    """Report what this machine can run (torch, devices, ONNX Runtime, PyAV, TensorRT, our libraries)."""
    from vseg.doctor import as_json, run_checks

    rows = run_checks()
    table = Table(show_header=True, header_style="bold")
    for col in ("check", "", "detail"):
        table.add_column(col)
    for r in rows:
        mark = "[green]ok[/]" if r.ok else ("[red]MISSING[/]" if r.required else "[yellow]no[/]")
        table.add_row(escape(r.name), mark, escape(r.detail))
    console.print(table)
    write_json(json_out, as_json(rows))
    if not as_json(rows)["ok"]:
        raise typer.Exit(1)


def main() -> None:
    """Entry point: user mistakes become one line and a non-zero exit, never a traceback."""
    try:
        app()
    except VsegError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
