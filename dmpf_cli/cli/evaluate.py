"""``dmpf eval`` (a run's metrics on a split, with the modality ablation) and ``dmpf predict`` (new samples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import FormatOpt, OnError, OutputFormat, Split, ThreadsOpt, make_console, metrics_table, warn_stderr

RUN_HELP = ("A run directory written by dmpf train, a model directory written by dmpf export, or a Hugging Face Hub "
            "id of one (ORG/NAME; the local Hugging Face cache first).")


def eval_command(
    run: Annotated[str, typer.Option("--run", help=RUN_HELP)],
    split: Annotated[Split, typer.Option("--split", help="The split to score.")] = Split.test,
    modality_ablation: Annotated[
        bool, typer.Option("--modality-ablation", help="Also remove each stream in turn and report each metric's drop.")
    ] = False,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Evaluate a run's best checkpoint (or an exported model) on a split (MMSA metrics)."""
    from ..recipes.evaluate import eval_run
    from ..recipes.runtime import use_threads

    use_threads(threads)

    # the progress on stderr, with the warnings: stdout holds the table or the JSON alone
    result = eval_run(run, split.value, modality_ablation, warn=warn_stderr, console=make_console(stderr=True))
    if format is OutputFormat.json:
        typer.echo(json.dumps(result, indent=2))
        return
    console = make_console()
    title = f"{result['run']}: {split.value} ({result['samples']} samples)"
    if result["run_status"] not in ("finished", "exported"):
        title += f" — unfinished run ({result['run_status']})"
    if "random" in result["backbone"]:
        title += " — random-init backbone"
    rows = {"full model": result["metrics"]}
    ablation = result.get("ablation", {})
    rows.update({f"w/o {stream}": entry["metrics"] for stream, entry in ablation.items()})
    console.print(metrics_table(title, rows))
    if ablation:
        drops = {f"w/o {stream}": entry["drop"] for stream, entry in ablation.items()}
        console.print(metrics_table("drop: how much worse each metric gets without the stream "
                                     "(positive = worse)", drops))
    planted = {stream: entry for stream, entry in ablation.items() if "planted" in entry}
    if planted:
        console.print(planted_table(planted))
        console.print("An ideal model's MAE drop is what no model can avoid without the stream. A measured drop "
                      "below it: the model leaves part of what only that stream carries unused; above it: the model "
                      "leans on that stream for what another stream carries too.")


def planted_table(planted: dict):
    """Beside each stream's measured MAE drop, what the synthetic data's planted structure says it carries."""
    from rich.table import Table

    table = Table("stream", "carries (planted terms)", "those terms alone: MAE", "MAE drop without it: measured",
                  "an ideal model's", title="what each stream carries, by the planted structure (test split)",
                  title_justify="left")
    for stream, entry in planted.items():
        p = entry["planted"]
        alone = "–" if p["mae_alone"] is None else f"{p['mae_alone']:.3f} ({p['reference_alone']})"
        table.add_row(stream, ", ".join(p["carries"]), alone, f"{entry['drop']['MAE']:+.4f}",
                      f"{p['mae_drop_ideal']:+.4f}")
    return table


def predict_command(
    run: Annotated[str, typer.Option("--run", help=RUN_HELP)],
    input: Annotated[
        Optional[Path], typer.Option("--input", "-i", help="A prepared directory, an MMSA .pkl, MMSA-FET's single-sample .pkl (run_single; with --transcript), or a .jsonl of samples (or a .json array of them).")
    ] = None,
    media: Annotated[
        Optional[list[Path]], typer.Option("--media", metavar="<path>", help="A clip (video or audio) to score instead of --input, or a directory of them; repeat it for several. Its features are extracted with the recipe the run's data was made with (dmpf extract's rules for transcripts and OpenFace CSVs beside each clip).")
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="FILE.csv or FILE.jsonl (default: CSV on stdout).")
    ] = None,
    on_error: Annotated[
        OnError, typer.Option("--on-error", help="A malformed JSONL sample, or one of several clips that cannot be used: skip it (with a warning) or fail.")
    ] = OnError.skip,
    transcript: Annotated[
        Optional[str], typer.Option("--transcript", help="What was said: in the one --media clip (default: CLIP.txt or .srt beside it), or in the clip of an MMSA-FET single-sample .pkl (its text features are not DMPF's input).")
    ] = None,
    openface: Annotated[
        Optional[Path], typer.Option("--openface", help="The one --media clip's visual features: OpenFace 2's CSV for it (or your own per-frame .npy); default CLIP.csv or CLIP.npy beside it.")
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Score samples or clips with a run's best checkpoint (or an exported model): id, score and the dataset's label
    bins."""
    from ..errors import DmpfError
    from ..recipes.runtime import use_threads

    if input is not None and media:
        raise DmpfError("--input and --media: give one (--input: samples or features; --media: clips to extract and "
                        "score)")
    if input is None and not media:
        raise DmpfError("--input or --media: give one (--input: samples or features; --media: clips)")
    if openface is not None and not media:
        raise DmpfError("--openface: goes with --media (a clip's OpenFace CSV)")
    use_threads(threads)

    console = make_console(stderr=True)  # the progress and messages: stdout may hold the CSV
    if media:
        from ..recipes.predict_media import predict_media

        count, text = predict_media(run, media, output, on_error.value, warn=warn_stderr, console=console,
                                    transcript=transcript, openface=openface)
    else:
        from ..recipes.evaluate import predict_run

        count, text = predict_run(run, input, output, on_error.value, warn=warn_stderr, console=console,
                                  transcript=transcript)
    if text is not None:
        typer.echo(text, nl=False)
    else:
        console.print(f"wrote {count} predictions to {output}")
