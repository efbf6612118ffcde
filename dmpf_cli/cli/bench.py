"""``dmpf bench``: the full training step timed per attention backend × precision × compile mode."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ..errors import DmpfError
from .common import ConfigOpt, DatasetOpt, FormatOpt, OutputFormat, OverridesArg, ThreadsOpt, make_console


def _csv_option(text: str | None, allowed: tuple[str, ...], option: str) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values or len(set(values)) != len(values):  # a repeated value would run its rows twice
        raise DmpfError(f"{option}: expected a comma-separated subset of {', '.join(allowed)}, each at most once, "
                        f"got '{text}'")
    return values


def bench_command(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Default: the config's.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per row (the median is reported).")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps per row (compilation happens here).")] = 3,
    backends: Annotated[Optional[str], typer.Option("--backends", help="e.g. sdpa,eager (default: all).")] = None,
    precisions: Annotated[Optional[str], typer.Option("--precisions", help="fp32,bf16 (default: both).")] = None,
    compile: Annotated[
        Optional[str], typer.Option("--compile", help="off,default,reduce-overhead (default: all on CUDA, off on CPU).")
    ] = None,
    before: Annotated[bool, typer.Option(
        "--before", help="Each uncompiled row preceded by its twin on the plain kernels the speed-ups replace, "
        "timed in alternating rounds with it.")] = False,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Time the full training step for each attention backend × precision × compile mode, reference first; then
    each row's evaluation forward pass, the data loader and the scoring of the validation split."""
    from ..progress import Progress
    from ..recipes.bench import bench
    from ..recipes.preflight import resolve_config
    from ..recipes.runtime import use_threads

    if steps < 1 or warmup < 0 or (batch_size is not None and batch_size < 1):
        raise DmpfError("--steps, --warmup, --batch-size: expected steps >= 1, warmup >= 0, batch size >= 1")
    compiles = _csv_option(compile, ("off", "default", "reduce-overhead"), "--compile")
    if warmup < 2 and compiles and any(c != "off" for c in compiles):
        # the first call compiles and CUDA graphs record on a later one: timing those would time the compiler
        raise DmpfError(f"--warmup: compiled rows need at least 2 warm-up steps, got {warmup}")
    use_threads(threads)
    cfg = resolve_config(dataset, config, overrides or [])
    console = make_console(stderr=True)
    with Progress(console) as bar:
        result = bench(cfg, batch_size=batch_size, steps=steps, warmup=warmup,
                       backends=_csv_option(backends, ("xformers", "sdpa", "eager"), "--backends"),
                       precisions=_csv_option(precisions, ("fp32", "bf16"), "--precisions"),
                       compiles=compiles, progress=bar, console=console, before=before)
    if format is OutputFormat.json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    out = make_console()
    shapes = result["shapes"]
    out.print(f"[bold]{result['config']}[/bold] on {result['device']}: {result['backbone']}, batch "
              f"{result['batch_size']}, text {shapes['text_len']} + {shapes['fusion_tokens']} fusion tokens, audio "
              f"{shapes['audio']}, vision {shapes['vision']}; the full training step (median)")
    table = Table("precision backend compile", "ms/step", "samples/s", "speed-up", "TFLOP/s", "of peak", "GiB",
                  "eval samples/s")
    for row in result["rows"]:
        if "error" in row:
            table.add_row(row["label"], f"[red]{row['error']}[/red]", "", "", "", "", "", "")
            continue
        table.add_row(row["label"], f"{row['ms_per_step']:.1f}", f"{row['samples_per_s']:,.0f}",
                      f"{row['speedup']:.2f}×", _opt(row["tflops"], "{:.3f}"), _opt(row["fraction_of_peak"], "{:.1%}"),
                      _opt(row["peak_memory_gib"], "{:.2f}"), f"{row['eval_samples_per_s']:,.0f}")
    out.print(table)
    plain = [f"{row['label']} {row['speedup_over_plain']:.2f}×" for row in result["rows"] if "speedup_over_plain" in row]
    if plain:
        out.print("the speed-ups over the plain kernels, each timed in alternating rounds with its (before) row: "
                  + ", ".join(plain))
    peaks = ", ".join(f"{k} {v:.2f}" for k, v in result["matmul_peak_tflops"].items())
    out.print(f"matmul peak measured here (TFLOP/s): {peaks}; FLOPs per step: {_opt(result['flops_per_step'], '{:.3e}')}")
    loader = result["loader_samples_per_s"]
    out.print(f"data loader: {loader:,.0f} samples/s over the prepared training split" if loader else
              f"data loader: not measured: {result['loader_not_measured']}")
    scoring = result["scoring_samples_per_s"]
    out.print(f"scoring the validation split (dmpf eval, dmpf predict): {scoring:,.0f} samples/s" if scoring else
              f"scoring: not measured: {result['scoring_not_measured']}")
    for note in result["notes"]:
        out.print(f"[yellow]not run[/yellow]: {note}")


def _opt(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)
