"""What every `vseg` command shares: the typer apps, the consoles, the options declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    help="vseg: efficient video segmentation from training to TensorRT.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Make synthetic datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

# Options shared by several commands, declared once.
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the result as JSON to this file.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same output.")]


def write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        from vseg.jsonio import write_json as write

        console.print(f"wrote {write(path, payload)}")


def progress():
    """A progress bar for long work (shown on stderr so stdout stays parseable)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)
