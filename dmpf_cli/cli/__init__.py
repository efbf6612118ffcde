"""The ``dmpf`` command line: this module wires the verbs, each of which lives in its own small module.

========================  =============================================
``cli/config.py``         ``dmpf config show | validate | list | cp``
``cli/data.py``           ``dmpf prepare``
``cli/train.py``          ``dmpf train``
``cli/evaluate.py``       ``dmpf eval``, ``dmpf predict``
``cli/bench.py``          ``dmpf bench``
``cli/inspect.py``        ``dmpf inspect-mask``, ``dmpf inspect-model``
``cli/plugins.py``        ``dmpf plugins``, ``dmpf plugins check``
``cli/pretrain.py``       ``dmpf pretrain-lm``
``cli/curriculum.py``     ``dmpf pretrain-encoders``
``cli/sweep.py``          ``dmpf sweep``
``cli/grid.py``           ``dmpf grid``
``cli/report.py``         ``dmpf report``
========================  =============================================

Each verb parses its options, calls the library and renders the result. Start-up stays light: torch,
transformers and xformers are imported inside the commands that need them, never at import time, so
``dmpf --help`` answers at once, and so does shell completion (``dmpf --install-completion``), which
only parses the command line. ``--help`` groups the verbs by what users do with them (``VERBS``).
Every user mistake ends as one line ``error: …`` on stderr with exit
code 2 — no traceback.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import DmpfError
from . import (
    bench,
    config,
    curriculum,
    data,
    evaluate,
    extract,
    grid,
    inspect,
    plugins,
    pretrain,
    report,
    share,
    sweep,
    train,
)


class OneLineErrors(TyperGroup):
    """Runs the app in non-standalone mode so that every error becomes one line on stderr."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # noqa: D102
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # click's usage errors, as vendored by typer
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `dmpf` or `dmpf config`: help, success
                typer.echo(exc.format_message())
                rv = 0
            elif choice := _bad_choice(exc):
                typer.echo(f"error: {choice}", err=True)
                rv = 2
            else:
                where = f"{ctx.command_path}: " if ctx is not None else ""
                message = " ".join(exc.format_message().split())
                typer.echo(f"error: {where}{message} (see --help)", err=True)
                rv = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            rv = 1
        except DmpfError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                typer.echo(f"error: {line}", err=True)
            rv = 2
        code = rv if isinstance(rv, int) else 0
        if not standalone_mode:
            return code
        sys.exit(code)


def _bad_choice(exc: Exception) -> str | None:
    """A value outside a choice option's enum, in dmpf's words: ``--split: expected test or valid, got 'x'``
    (from the parser's "'x' is not one of 'test', 'valid'.")."""
    found = re.search(r"'(.*)' is not one of ('.*')\.?$", str(getattr(exc, "message", "")))
    opts = getattr(getattr(exc, "param", None), "opts", None)
    if not (isinstance(exc, typer.BadParameter) and found and opts):
        return None
    choices = re.findall(r"'([^']*)'", found.group(2))
    expected = f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else "".join(choices)
    return f"{max(opts, key=len)}: expected {expected}, got '{found.group(1)}'"


app = typer.Typer(
    cls=OneLineErrors,
    name="dmpf",
    help="DMPF: modality-preserving deep fusion for multimodal sentiment analysis.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; completing runs no command (no torch)
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dmpf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """DMPF: modality-preserving deep fusion for multimodal sentiment analysis."""
    from ..progress import interval_from_env

    interval_from_env()  # a bad DMPF_PROGRESS_INTERVAL is refused before a command starts, not in its middle


# The verbs by what users do with them: `dmpf --help` shows one panel per group, in this order.
VERBS: dict[str, dict[str, Any]] = {
    "Data": {"prepare": data.prepare, "extract": extract.extract_command},
    "Train and evaluate": {"train": train.train_command, "eval": evaluate.eval_command,
                           "predict": evaluate.predict_command, "export": share.export_command},
    "Pretrain": {"pretrain-lm": pretrain.pretrain_lm_command,
                 "pretrain-encoders": curriculum.pretrain_encoders_command},
    "Experiments": {"grid": grid.grid_command, "sweep": sweep.sweep_command, "report": report.report_command,
                    "bench": bench.bench_command},
    "Inspect and configure": {"inspect-model": inspect.inspect_model, "inspect-mask": inspect.inspect_mask,
                              "plugins": plugins.app, "config": config.app},  # typer lists groups last
}
for panel, verbs in VERBS.items():
    for name, verb in verbs.items():
        if isinstance(verb, typer.Typer):
            app.add_typer(verb, name=name, rich_help_panel=panel)
        else:
            app.command(name, rich_help_panel=panel)(verb)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dmpf")
