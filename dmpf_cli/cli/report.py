"""``dmpf report``: run directories, multi-seed roots and grids → one table per config, with the difference to a
baseline under two paired tests; text (rich), Markdown, LaTeX, CSV or JSON (:mod:`dmpf_cli.experiments.report`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import DmpfError
from .common import PIPED_WIDTH, make_console, warn_stderr


class ReportFormat(str, Enum):
    text = "text"
    md = "md"
    latex = "latex"
    csv = "csv"
    json = "json"


def report_command(
    paths: Annotated[list[Path], typer.Argument(
        help="Run directories, multi-seed roots (dmpf train --seeds) and grid directories, in any mix.",
        metavar="PATH", show_default=False)],
    format: Annotated[ReportFormat, typer.Option(
        "--format", "-f", help="text for people; md and latex to paste; csv and json for machines.")
    ] = ReportFormat.text,
    metrics: Annotated[Optional[str], typer.Option(
        "--metrics", help="Comma-separated metric keys, e.g. MAE,Corr (default: the paper's table).")] = None,
    baseline: Annotated[Optional[str], typer.Option(
        "--baseline", help="The row the others are compared with (default: the grid's, else the first).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the rendering to this file instead of printing it.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output file.")] = False,
) -> None:
    """One table of configs: mean ± std over seeds per test metric, and each config's difference to the baseline
    with a paired t over seeds and a paired bootstrap over test samples."""
    if output is not None:  # before the work: a refusal costs nothing
        if output.is_dir():
            raise DmpfError(f"--output: {output} is a directory; give a file name")
        if output.exists() and not overwrite:
            raise DmpfError(f"--output: {output} exists; pass --overwrite to replace it")
        if not output.parent.is_dir():
            raise DmpfError(f"--output: {output.parent}: no such directory")
    from ..experiments.report import build_report
    from ..experiments.report_render import render

    wanted = None if metrics is None else [m for m in metrics.split(",")]
    report = build_report(paths, metrics=wanted, baseline=baseline)
    if report.runs_unfinished:
        warn_stderr(report.notes[0])
    if format is ReportFormat.text and output is None:
        print_report(report, make_console())
        return
    if format is ReportFormat.text:  # into a file: plain, as wide as a pipe's
        import io

        from rich.console import Console

        buffer = io.StringIO()
        print_report(report, Console(file=buffer, width=PIPED_WIDTH, color_system=None, highlight=False))
        text = buffer.getvalue()
    else:
        text = render(report, format.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    from ..fileio import atomic_write_text

    atomic_write_text(output, text)
    typer.echo(f"wrote {output} ({format.value})", err=True)


def print_report(report, console) -> None:
    """The two tables and their footnotes, drawn by rich (bold: the best mean of each column)."""
    from rich.table import Table
    from rich.text import Text

    from ..experiments.report_render import layout

    lay = layout(report, "text")
    for title, table in (("test results: mean ± std over seeds", lay.results),
                         (f"difference to the baseline ({report.baseline})", lay.differences)):
        if table is None:
            continue
        shown = Table(*table.header, title=title, title_justify="left")
        for column, align in zip(shown.columns, table.align):
            column.justify = "right" if align == "r" else "left"
        for i, row in enumerate(table.rows):
            shown.add_row(*(Text(c, style="bold" if (i, j) in table.bold else "") for j, c in enumerate(row)),
                          end_section=i + 1 in table.breaks)
        console.print(shown)
    for note in lay.footnotes:
        console.print(Text(note))
