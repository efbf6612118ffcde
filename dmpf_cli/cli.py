"""The ``dmpf`` command line.

Start-up stays light: torch, transformers and xformers are imported inside the commands that need
them, never at import time, so ``dmpf --help`` answers at once. Every user mistake ends as one line
``error: …`` on stderr with exit code 2 — no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import DmpfError


class _OneLineErrors(TyperGroup):
    """Runs the app in non-standalone mode so that every error becomes one line on stderr."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # noqa: D102
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # click's usage errors, as vendored by typer
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `dmpf` or `dmpf config`: help, success
                typer.echo(exc.format_message())
                rv = 0
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


app = typer.Typer(
    cls=_OneLineErrors,
    name="dmpf",
    help="DMPF: modality-preserving deep fusion for multimodal sentiment analysis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show, check and list experiment configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


# Options shared by every command that resolves a config.
DatasetOpt = Annotated[
    Optional[str], typer.Option("--dataset", "-d", help="Use the preset configs/NAME.yaml (mosei, sims, default).")
]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Use this YAML config file.")]
OverridesArg = Annotated[
    Optional[list[str]], typer.Argument(help="Overrides as key.sub=value, e.g. fusion.n_a=8 mm.layers=[1,2].")
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="text for people, json for machines.")]


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


MAX_MASK_POSITIONS = 4096  # inspect-mask renders an (L, L) mask: beyond this it is a memory hazard, not a picture
PIPED_WIDTH = 160  # tables' width in a log or a pipe (rich would use 80)


def _console(stderr: bool = False):
    """A rich console. Into a log or a pipe (and no COLUMNS set), text lines are not wrapped — a path or
    a command in a message stays whole, to be copied — and tables get PIPED_WIDTH columns."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPED_WIDTH
        console.soft_wrap = True
    return console


# --------------------------------------------------------------------------------------------
# config


@config_app.command("show")
def config_show(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Print the resolved config (preset or file, then the overrides)."""
    from .config import load_config, to_yaml

    cfg = load_config(dataset, config, overrides or [])
    if format is OutputFormat.json:
        typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    else:
        typer.echo(to_yaml(cfg), nl=False)


@config_app.command("validate")
def config_validate(
    file: Annotated[Path, typer.Argument(help="The YAML config to check.")],
    overrides: OverridesArg = None,
) -> None:
    """Check a config file: keys, types, values, component names, MM layers against the backbone."""
    from .config import load_config

    cfg = load_config(config=file, overrides=overrides or [])
    _console().print(f"[green]ok[/green] {file}: experiment '{cfg.name}' is valid")


@config_app.command("list")
def config_list() -> None:
    """List the presets in configs/ (select one with --dataset NAME)."""
    from rich.table import Table

    from .config import CONFIG_DIR, preset_names, read_yaml

    table = Table("preset", "description", title=f"presets in {CONFIG_DIR}", title_justify="left")
    for name in preset_names():
        table.add_row(name, str(read_yaml(CONFIG_DIR / f"{name}.yaml").get("description", "")))
    _console().print(table)


# --------------------------------------------------------------------------------------------
# plugins


@app.command("plugins")
def plugins(format: FormatOpt = OutputFormat.text) -> None:
    """List every registered component by kind, with its origin (built-in or the providing distribution)."""
    from . import registry

    rows = [
        {"kind": c.kind, "name": c.name, "origin": c.origin, "description": c.doc} for c in registry.components()
    ]
    if format is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("kind", "name", "origin", "description")
    for row in rows:
        origin = row["origin"] if row["origin"] == registry.BUILTIN else f"[cyan]{row['origin']}[/cyan]"
        table.add_row(row["kind"], row["name"], origin, row["description"])
    _console().print(table)


# --------------------------------------------------------------------------------------------
# inspect-mask


@app.command("inspect-mask")
def inspect_mask(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    n_a: Annotated[Optional[int], typer.Option("--n-a", help="Audio fusion tokens (default: the config's).")] = None,
    n_v: Annotated[Optional[int], typer.Option("--n-v", help="Visual fusion tokens (default: the config's).")] = None,
    n_av: Annotated[
        Optional[int], typer.Option("--n-av", help="Audio-visual fusion tokens (default: the config's).")
    ] = None,
    text_len: Annotated[Optional[int], typer.Option("--text-len", help="Text positions (default: the config's).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Mask preset (default: the config's).")] = None,
    pad: Annotated[int, typer.Option("--pad", help="Mark the last K text positions as padding.")] = 0,
    format: FormatOpt = OutputFormat.text,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also draw the mask to this PNG file.")] = None,
) -> None:
    """Show the fusion attention mask: who may attend to whom inside the backbone."""
    from .config import load_config

    if output is not None and output.suffix.lower() != ".png":
        raise DmpfError(f"--output: expected a .png file name, got '{output}'")
    cfg = load_config(dataset, config, overrides or [])
    values = {
        "--n-a": cfg.fusion.n_a if n_a is None else n_a,
        "--n-v": cfg.fusion.n_v if n_v is None else n_v,
        "--n-av": cfg.fusion.n_av if n_av is None else n_av,
        "--text-len": cfg.data.text_len if text_len is None else text_len,
    }
    for option, value in values.items():
        if value < 0:
            raise DmpfError(f"{option}: expected an integer >= 0, got {value}")
    total = sum(values.values())
    if total > MAX_MASK_POSITIONS:  # a (L, L) mask: beyond this it is a memory hazard, not a picture
        raise DmpfError(f"--text-len + --n-a + --n-v + --n-av: expected at most {MAX_MASK_POSITIONS} positions "
                        f"(GPT-2 has 1024), got {total}")
    if not 0 <= pad <= values["--text-len"]:
        raise DmpfError(f"--pad: expected 0..{values['--text-len']} (the text length), got {pad}")

    from . import registry
    from .mask import FusionMask

    name = preset or cfg.fusion.mask
    try:
        registry.get("mask", name)
    except registry.RegistryError as exc:
        raise DmpfError(f"--preset: {exc}") from None
    try:
        mask = FusionMask(values["--text-len"], values["--n-a"], values["--n-v"], values["--n-av"], name)
    except ValueError as exc:
        raise DmpfError(str(exc)) from None
    if pad:
        mask = mask.with_right_padding(pad)

    if output is not None:
        from .mask_view import save_png

        save_png(mask, output)
    if format is OutputFormat.json:
        typer.echo(json.dumps(mask.to_json()))
        return
    from .mask_view import render

    console = _console()
    console.print(f"config [bold]{cfg.name}[/bold]: {cfg.description}" if cfg.description else f"config {cfg.name}")
    render(mask, console)
    if output is not None:
        console.print(f"wrote {output}")


# --------------------------------------------------------------------------------------------
# prepare


def _manifest_tables(manifest: dict, console) -> None:
    """The closing summary of a prepared dataset: splits, samples, dims, labels, what was repaired."""
    from rich.table import Table

    dims, padded = manifest["dims"], manifest["padded_length"]
    table = Table("split", "samples", "audio", "vision", "labels min..max (mean)", "inf/NaN→0 a/v",
                  "text bad/empty", title=f"{manifest['dataset']} (format v{manifest['format_version']})",
                  title_justify="left")
    for name, split in manifest["splits"].items():
        lab = split["labels"]
        replaced = split["replaced_nonfinite"]
        table.add_row(
            name, f"{split['samples']:,}", f"{padded['audio']}×{dims['audio']}", f"{padded['vision']}×{dims['vision']}",
            f"{lab['min']:.2f}..{lab['max']:.2f} ({lab['mean']:+.2f})" if lab else "–",
            f"{replaced.get('audio', 0):,} / {replaced.get('vision', 0):,}",
            f"{split['text_undecodable']} / {split['text_empty']}",
        )
    console.print(table)
    source = manifest.get("source", {})
    console.print(f"source {source.get('path')} ({source.get('size', 0):,} bytes), sha256 {source.get('sha256', '?')}")
    planted = manifest.get("synthetic")
    if planted:
        ref = Table("predictor (test split)", "MAE", "Corr", "what it is", title="what the planted structure allows",
                    title_justify="left")
        for name, row in planted.get("reference", {}).items():
            ref.add_row(name, f"{row['mae']:.3f}", f"{row['corr']:.3f}", str(row.get("note", row.get("explanation", ""))))
        console.print(ref)


class SyntheticSize(str, Enum):
    tiny = "tiny"
    small = "small"
    mosei_like = "mosei-like"


@app.command("prepare")
def prepare(
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", "-d", help="mosei, mosi, sims (with --source), or synthetic.")
    ] = None,
    source: Annotated[Optional[Path], typer.Option("--source", "-s", help="The MMSA processed pickle (.pkl).")] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Prepared directory (default: under $DMPF_DATA_DIR).")
    ] = None,
    size: Annotated[SyntheticSize, typer.Option("--size", help="Synthetic dataset size.")] = SyntheticSize.small,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Synthetic dataset seed.")] = 0,
    sha256: Annotated[
        bool, typer.Option("--sha256", help="Compare the source with the hash MMSA publishes for its file.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing prepared directory.")] = False,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="Store the text tokenised for this config's backbone and text_len "
                     "(default: the dataset's preset)."),
    ] = None,
    info: Annotated[
        Optional[Path], typer.Option("--info", help="Print the manifest of a prepared directory and exit.")
    ] = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Import an MMSA pickle safely (or generate a synthetic one) into the memory-mapped prepared format."""
    from .prepare import TOKENIZE_PRESET, prepare_file, prepare_synthetic, pretokenize
    from .prepared import open_prepared

    console = _console()
    if info is not None:
        manifest = open_prepared(info).manifest
        if format is OutputFormat.json:
            typer.echo(json.dumps(manifest, indent=2))
        else:
            _manifest_tables(manifest, console)
        return
    if dataset is None:
        raise DmpfError("--dataset: required (mosei, mosi, sims with --source; or synthetic), or --info DIR")
    tok_cfg = None  # checked before the data: a bad --config must not cost a long import first
    if config is not None or dataset in TOKENIZE_PRESET:
        from .config import load_config

        tok_cfg = load_config(None if config else TOKENIZE_PRESET[dataset], config)
    if dataset == "synthetic":
        if source is not None:
            raise DmpfError("--source: not used with --dataset synthetic (the data is generated)")
        result = prepare_synthetic(size.value, seed, output, overwrite=overwrite, console=console)
    else:
        if source is None:
            raise DmpfError(f"--source: required with --dataset {dataset} (the MMSA .pkl file you downloaded)")
        result = prepare_file(dataset, source, output, overwrite=overwrite, check_sha256=sha256, console=console)
    if tok_cfg is not None:
        with console.status("tokenising the text"):
            result.tokens = pretokenize(result.output, tok_cfg, str(config) if config else
                                        f"preset {TOKENIZE_PRESET[dataset]}")
    if format is OutputFormat.json:
        typer.echo(json.dumps({"output": str(result.output), "skipped": result.skipped,
                               "published_sha256_match": result.published_match, "tokens": result.tokens,
                               "manifest": result.manifest}))
        return
    if result.skipped:
        console.print(f"[green]up to date[/green]: {result.output} was prepared from the same source; nothing to do")
    else:
        _manifest_tables(result.manifest, console)
        console.print(f"[green]prepared[/green] {result.output}")
    tokens = result.tokens
    if tokens is None:
        console.print(f"text not tokenised yet (no preset for {dataset}): the first run does it, or pass --config")
    elif tokens["stored"]:
        console.print(f"text tokenised for {tokens['backbone']} at text_len {tokens['text_len']} ({tokens['config']}); "
                      f"{tokens['rows_at_text_len']} texts fill all {tokens['text_len']} positions (longer ones are cut)")
    else:
        console.print(f"[yellow]note[/yellow]: text not tokenised for {tokens['backbone']} ({tokens['config']}): "
                      f"{tokens['reason']} — the first run tokenises it instead")
    if result.published_match is False:
        console.print("[yellow]warning[/yellow]: the source's sha256 differs from the hash MMSA publishes for its "
                      f"{dataset} file: a different version or a damaged download")
    elif result.published_match:
        console.print("sha256 matches the hash MMSA publishes")


# --------------------------------------------------------------------------------------------
# train


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DmpfError(f"--seeds: expected comma-separated integers like 1111,1112, got '{text}'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise DmpfError(f"--seeds: expected distinct integers like 1111,1112, got '{text}'")
    return seeds


def _metrics_table(title: str, rows: dict[str, dict[str, float]]):
    """Metrics as a table: one column per row name (e.g. seeds, or test/valid), one row per metric."""
    from rich.table import Table

    table = Table("metric", *rows, title=title, title_justify="left")
    keys = list(next(iter(rows.values())))
    for key in keys:
        table.add_row(key, *(_fmt(r.get(key)) for r in rows.values()))
    return table


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, dict):  # mean ± std
        return f"{value['mean']:.4f} ± {value['std']:.4f}"
    return f"{value:.4f}"


@app.command("train")
def train_command(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Comma-separated seeds, e.g. 1111,1112,1113.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Run directory (default: runs/NAME-DATE-TIME).")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the interrupted run in this directory.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run directory.")] = False,
    attention: Annotated[
        Optional[str], typer.Option("--attention", help="auto, xformers, sdpa or eager (default: the config's).")
    ] = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Train DMPF (the SPEC §6 recipe), test the best-validation checkpoint, write a run directory."""
    from .config import load_config
    from .train import train

    if resume is not None and (dataset or config or overrides or seeds):
        raise DmpfError("--resume: continues a run with its own config; drop --dataset/--config/--seeds/overrides")
    extra = [f"training.attention={attention}"] if attention else []
    cfg = load_config(dataset, config, [*(overrides or []), *extra])
    console = _console(stderr=format is OutputFormat.json)
    if (resume is None and dataset is None and config is None and cfg.data.dataset == "synthetic"
            and cfg.backbone.name.endswith("-random")):
        console.print("[yellow]embedded default[/yellow]: a generated synthetic dataset and a tiny RANDOM-INIT GPT-2 "
                      "— a demonstration of the pipeline, not the paper's numbers")
    summary = train(cfg, output, _parse_seeds(seeds), resume=resume, overwrite=overwrite, console=console)
    if format is OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from .checkpoints import RunDir
    from .train import reference_scores

    for root, results in summary["runs"].items():
        if not results:  # a DDP rank other than 0: rank 0 reports
            continue
        rows = {"test": results["test"], "valid": results["valid"]}
        title = f"{root}: seed {results['seed']}, best epoch {results['best_epoch'] + 1} of {results['epochs']}"
        if "random" in results["backbone"]:
            title += " — random-init backbone"
        data = RunDir(Path(root)).read_status().get("data")
        ref = reference_scores(data)
        if ref:
            rows.update(ref)
        console.print(_metrics_table(title, rows))
        if ref:
            console.print(f"{', '.join(ref)}: what predictors that know the generator's planted structure score on "
                          f"this test split (`dmpf prepare --info {data}` explains each)")
        if results["epochs"] > 1 and results["best_epoch"] + 1 == results["epochs"] == cfg.training.max_epochs:
            console.print(f"[yellow]note[/yellow]: the best epoch is the last: validation was still improving when "
                          f"training.max_epochs ({cfg.training.max_epochs}) stopped the run; more epochs may do better")
    if "summary" in summary:
        console.print(_metrics_table("test, mean ± std over seeds", {"test": summary["summary"]}))


@app.command("eval")
def eval_command(
    run: Annotated[Path, typer.Option("--run", help="A run directory written by dmpf train.")],
    split: Annotated[str, typer.Option("--split", help="test or valid.")] = "test",
    modality_ablation: Annotated[
        bool, typer.Option("--modality-ablation", help="Also remove each stream in turn and report each metric's drop.")
    ] = False,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Evaluate a run's best checkpoint on a split (MMSA metrics)."""
    from .evaluate import eval_run

    result = eval_run(run, split, modality_ablation, warn=lambda m: typer.echo(f"warning: {m}", err=True))
    if format is OutputFormat.json:
        typer.echo(json.dumps(result, indent=2))
        return
    console = _console()
    title = f"{result['run']}: {split} ({result['samples']} samples)"
    if result["run_status"] != "finished":
        title += f" — unfinished run ({result['run_status']})"
    if "random" in result["backbone"]:
        title += " — random-init backbone"
    rows = {"full model": result["metrics"]}
    ablation = result.get("ablation", {})
    rows.update({f"w/o {stream}": entry["metrics"] for stream, entry in ablation.items()})
    console.print(_metrics_table(title, rows))
    if ablation:
        drops = {f"w/o {stream}": entry["drop"] for stream, entry in ablation.items()}
        console.print(_metrics_table("drop: how much worse each metric gets without the stream "
                                     "(positive = worse)", drops))


@app.command("predict")
def predict_command(
    run: Annotated[Path, typer.Option("--run", help="A run directory written by dmpf train.")],
    input: Annotated[
        Path, typer.Option("--input", "-i", help="A prepared directory, an MMSA .pkl, or a .jsonl of samples (or a .json array of them).")
    ],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="FILE.csv or FILE.jsonl (default: CSV on stdout).")
    ] = None,
    on_error: Annotated[
        str, typer.Option("--on-error", help="A malformed JSONL sample: skip it (with a warning) or fail.")
    ] = "skip",
) -> None:
    """Score samples with a run's best checkpoint: id, score and the dataset's label bins."""
    from .evaluate import predict_run

    count, text = predict_run(run, input, output, on_error, warn=lambda m: typer.echo(f"warning: {m}", err=True))
    if text is not None:
        typer.echo(text, nl=False)
    else:
        _console(stderr=True).print(f"wrote {count} predictions to {output}")


# --------------------------------------------------------------------------------------------
# bench


def _csv_option(text: str | None, allowed: tuple[str, ...], option: str) -> list[str] | None:
    if text is None:
        return None
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad or not values or len(set(values)) != len(values):  # a repeated value would run its rows twice
        raise DmpfError(f"{option}: expected a comma-separated subset of {', '.join(allowed)}, each at most once, "
                        f"got '{text}'")
    return values


@app.command("bench")
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
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Time the full training step for each attention backend × precision × compile mode, reference first."""
    from .bench import bench
    from .config import load_config

    if steps < 1 or warmup < 0 or (batch_size is not None and batch_size < 1):
        raise DmpfError("--steps, --warmup, --batch-size: expected steps >= 1, warmup >= 0, batch size >= 1")
    compiles = _csv_option(compile, ("off", "default", "reduce-overhead"), "--compile")
    if warmup < 2 and compiles and any(c != "off" for c in compiles):
        # the first call compiles and CUDA graphs record on a later one: timing those would time the compiler
        raise DmpfError(f"--warmup: compiled rows need at least 2 warm-up steps, got {warmup}")
    cfg = load_config(dataset, config, overrides or [])
    console = _console(stderr=True)
    with console.status("benchmarking") as status:
        result = bench(cfg, batch_size=batch_size, steps=steps, warmup=warmup,
                       backends=_csv_option(backends, ("xformers", "sdpa", "eager"), "--backends"),
                       precisions=_csv_option(precisions, ("fp32", "bf16"), "--precisions"),
                       compiles=compiles,
                       progress=lambda text: status.update(f"benchmarking: {text}"), console=console)
    if format is OutputFormat.json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.table import Table

    out = _console()
    shapes = result["shapes"]
    out.print(f"[bold]{result['config']}[/bold] on {result['device']}: {result['backbone']}, batch "
              f"{result['batch_size']}, text {shapes['text_len']} + {shapes['fusion_tokens']} fusion tokens, audio "
              f"{shapes['audio']}, vision {shapes['vision']}; the full training step (median)")
    table = Table("precision backend compile", "ms/step", "samples/s", "speed-up", "TFLOP/s", "of peak", "GiB")
    for row in result["rows"]:
        if "error" in row:
            table.add_row(row["label"], f"[red]{row['error']}[/red]", "", "", "", "", "")
            continue
        table.add_row(row["label"], f"{row['ms_per_step']:.1f}", f"{row['samples_per_s']:,.0f}",
                      f"{row['speedup']:.2f}×", _opt(row["tflops"], "{:.3f}"), _opt(row["fraction_of_peak"], "{:.1%}"),
                      _opt(row["peak_memory_gib"], "{:.2f}"))
    out.print(table)
    peaks = ", ".join(f"{k} {v:.2f}" for k, v in result["matmul_peak_tflops"].items())
    out.print(f"matmul peak measured here (TFLOP/s): {peaks}; FLOPs per step: {_opt(result['flops_per_step'], '{:.3e}')}")
    loader = result["loader_samples_per_s"]
    out.print(f"data loader: {loader:,.0f} samples/s over the prepared training split" if loader else
              f"data loader: not measured: {result['loader_not_measured']}")
    for note in result["notes"]:
        out.print(f"[yellow]not run[/yellow]: {note}")


def _opt(value, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


# --------------------------------------------------------------------------------------------
# inspect-model


@app.command("inspect-model")
def inspect_model(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    attention: Annotated[
        Optional[str], typer.Option("--attention", help="auto, xformers, sdpa or eager (default: the config's).")
    ] = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Describe the model a config builds: parameters, attention backend, sequence layout, MM blocks."""
    from .config import load_config

    extra = [f"training.attention={attention}"] if attention else []
    cfg = load_config(dataset, config, [*(overrides or []), *extra])
    from .model import summarize

    info = summarize(cfg)
    if format is OutputFormat.json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    console = _console()
    bb = info["backbone"]
    console.print(f"[bold]{info['config']}[/bold]: backbone [bold]{bb['name']}[/bold] "
                  f"({bb['layers']} blocks, width {bb['width']}, {bb['heads']} heads) — "
                  + ("[yellow]random weights[/yellow]" if bb["weights"] == "random weights" else bb["source"]))
    table = Table("component", "parameters", title="parameters (shapes only: no weights were loaded)",
                  title_justify="left")
    for name, n in info["parameters"]["by_component"].items():
        table.add_row(name, f"{n:,}")
    p = info["parameters"]
    table.add_section()
    table.add_row("[bold]total[/bold]", f"{p['total']:,}")
    table.add_row("trainable", f"{p['trainable']:,}")
    table.add_row("frozen", f"{p['frozen']:,}")
    console.print(table)
    att = info["attention"]
    resolved = att.get("resolved") or f"[red]unavailable[/red]: {att['error']}"
    console.print(f"attention: {att['requested']} → {resolved} on {att['device']}")
    layout = " | ".join(f"{s['name']} {s['start']}..{s['start'] + s['length'] - 1}" if s["length"] else f"{s['name']} —"
                        for s in info["layout"])
    console.print(f"sequence: {layout}  ({info['positions']['used']} of {info['positions']['available']} positions), "
                  f"mask {info['mask_preset']}")
    mm = info["mm_layers"]
    console.print(f"MM blocks after backbone blocks {mm} ({info['gate']} gates)" if mm else "MM blocks: none (text only)")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dmpf")
