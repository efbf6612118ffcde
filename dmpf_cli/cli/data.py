"""``dmpf prepare``: import an MMSA pickle or generate a synthetic dataset; ``--info`` shows a prepared one."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import DmpfError
from ..streams import MODALITIES
from .common import DatasetName, FormatOpt, OnError, OutputFormat, ThreadsOpt, make_console


def manifest_tables(manifest: dict, console) -> None:
    """The closing summary of a prepared dataset: splits, samples, dims, labels, what was repaired."""
    from rich.table import Table

    dims, padded = manifest["dims"], manifest["padded_length"]
    keys = [m.key for m in MODALITIES]
    shorts = "/".join(m.label.lower() for m in MODALITIES)
    table = Table("split", "samples", *keys, "labels min..max (mean)", f"inf/NaN→0 {shorts}",
                  "text bad/empty", title=f"{manifest['dataset']} (format v{manifest['format_version']})",
                  title_justify="left")
    for name, split in manifest["splits"].items():
        lab = split["labels"]
        replaced = split["replaced_nonfinite"]
        table.add_row(
            name, f"{split['samples']:,}", *(f"{padded[k]}×{dims[k]}" for k in keys),
            f"{lab['min']:.2f}..{lab['max']:.2f} ({lab['mean']:+.2f})" if lab else "–",
            " / ".join(f"{replaced.get(k, 0):,}" for k in keys),
            f"{split['text_undecodable']} / {split['text_empty']}",
        )
    console.print(table)
    source = manifest.get("source", {})
    published = f" — the published {source['published_as']}" if source.get("published_as") else ""
    console.print(f"source {source.get('path')} ({source.get('size', 0):,} bytes), sha256 {source.get('sha256', '?')}"
                  f"{published}")
    if manifest.get("aligned"):
        console.print("aligned: every stream at the text's length, word by word; the real lengths were read from "
                      "the frames (trailing all-zero frames are padding)")
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


def prepare(
    dataset: Annotated[
        Optional[DatasetName], typer.Option("--dataset", "-d", help="With --source: an MMSA file; synthetic: generated.")
    ] = None,
    source: Annotated[Optional[Path], typer.Option("--source", "-s", help="The MMSA processed pickle (.pkl).")] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Prepared directory (default: under $DMPF_DATA_DIR).")
    ] = None,
    size: Annotated[SyntheticSize, typer.Option("--size", help="Synthetic dataset size.")] = SyntheticSize.small,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Synthetic dataset seed.")] = 0,
    sha256: Annotated[
        bool, typer.Option("--sha256", help="Compare the source with the hash published for its file "
                                              "(unaligned or aligned).")
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
    media: Annotated[
        Optional[Path], typer.Option("--media", help="A folder of clips in MMSA-FET's layout (label.csv, "
                                     "Raw/VIDEO_ID/CLIP_ID.mp4): features extracted, a CH-SIMS-like dataset written.")
    ] = None,
    recipe: Annotated[str, typer.Option("--recipe", help="With --media: the feature recipe (sims, opensmile, …).")] = "sims",
    openface: Annotated[
        Optional[Path], typer.Option("--openface", help="With --media: a folder of OpenFace CSVs, VIDEO_ID/CLIP_ID.csv "
                                     "(default: CLIP_ID.csv or .npy beside each clip).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="With --media: clips extracted at once, one process each.")] = 1,
    on_error: Annotated[
        OnError, typer.Option("--on-error", help="With --media: a clip that cannot be used: skip it (listed at the end) "
                              "or stop.")
    ] = OnError.fail,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Import an MMSA pickle safely (or generate a synthetic one, or extract a folder of clips) into the memory-mapped
    prepared format."""
    from ..data.prepared import open_prepared
    from ..recipes.datasets import prepare, tokenize_preset

    console = make_console()
    if info is not None:
        manifest = open_prepared(info).manifest
        if format is OutputFormat.json:
            typer.echo(json.dumps(manifest, indent=2))
        else:
            manifest_tables(manifest, console)
        return
    work = make_console(stderr=True) if format is OutputFormat.json else console  # progress, never into the JSON
    if media is not None:
        return _prepare_media(media, dataset, source, output, recipe=recipe, openface=openface, jobs=jobs,
                              on_error=on_error.value, overwrite=overwrite, config=config, threads=threads,
                              format=format, console=console, work=work)
    for name, given in (("--recipe", recipe != "sims"), ("--openface", openface is not None), ("--jobs", jobs != 1),
                        ("--on-error", on_error is not OnError.fail)):
        if given:
            raise DmpfError(f"{name}: goes with --media (a folder of clips)")
    if dataset is None:
        from ..streams import DATASETS

        files = ", ".join(d.name for d in DATASETS.values() if not d.generated)
        raise DmpfError(f"--dataset: required ({files} with --source; or synthetic), or --info DIR")
    dataset = dataset.value
    from ..recipes.runtime import use_threads

    use_threads(threads)  # torch tokenises the text (a bad --threads is refused before a long import)
    preset = tokenize_preset(dataset)
    tokenize_for = None  # checked before the data: a bad --config must not cost a long import first
    if config is not None or preset:
        from ..recipes.preflight import resolve_config

        tokenize_for = (resolve_config(None if config else preset, config), str(config) if config else f"preset {preset}")
    result = prepare(dataset, source=source, output=output, size=size.value, seed=seed, overwrite=overwrite,
                     check_sha256=sha256, tokenize_for=tokenize_for, console=work)
    if format is OutputFormat.json:
        typer.echo(json.dumps({"output": str(result.output), "skipped": result.skipped,
                               "published_sha256_match": result.published_match,
                               "published_sha256_of": result.compared_with.path if result.compared_with else None,
                               "tokens": result.tokens,
                               "manifest": result.manifest}))
        return
    if result.skipped:
        console.print(f"[green]up to date[/green]: {result.output} was prepared from the same source; nothing to do")
    else:
        manifest_tables(result.manifest, console)
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
    if sha256:
        published_message(dataset, result, console)


def published_message(dataset: str, result, console) -> None:
    """``--sha256``: what the source's hash was compared with, and how it came out."""
    from ..streams import DATASETS

    who, compared = DATASETS[dataset].publisher[0], result.compared_with
    if result.published_match is False:
        console.print(f"[yellow]warning[/yellow]: the source's sha256 differs from the hash {who} publishes for its "
                      f"{dataset} file ({compared.path}): a different version or a damaged download")
    elif result.published_match:
        console.print(f"sha256 matches the hash {who} publishes for {compared.path}")
    elif compared is not None:
        console.print(f"[yellow]note[/yellow]: {who} publishes no sha256 for {compared.path}: nothing to compare "
                      "the source's with")
    else:
        kind = "an aligned" if result.manifest.get("aligned") else "an unaligned"
        console.print(f"[yellow]note[/yellow]: {who} publishes no {kind} {dataset} file: nothing to compare the "
                      "source's sha256 with")


def _prepare_media(media: Path, dataset, source, output, *, recipe, openface, jobs, on_error, overwrite, config,
                   threads, format, console, work) -> None:
    """``dmpf prepare --media DIR``: a folder of clips → a prepared CH-SIMS-like dataset."""
    from ..progress import Progress
    from ..recipes.datasets import pretokenize
    from ..recipes.media_dataset import DATASET, prepare_media
    from ..recipes.preflight import resolve_config
    from ..recipes.runtime import use_threads

    if source is not None:
        raise DmpfError("--source: not used with --media (the features are extracted from the clips)")
    if dataset is not None and dataset.value != DATASET:
        raise DmpfError(f"--dataset: a folder of clips becomes a CH-SIMS-like dataset ({DATASET}: labels in [-1, 1]); "
                        f"{dataset.value}'s features cannot be computed from clips")
    use_threads(threads)
    cfg = resolve_config(None if config else DATASET, config)  # a bad --config is refused before the extraction
    result = prepare_media(media, output, recipe=recipe, openface=openface, jobs=jobs, on_error=on_error,
                           overwrite=overwrite, console=work)
    with Progress(work) as bar:  # a no-op where the text is tokenised for this config already
        tokens = pretokenize(result.output, cfg, str(config) if config else f"preset {DATASET}", bar)
    if format is OutputFormat.json:
        typer.echo(json.dumps({"output": str(result.output), "up_to_date": result.up_to_date,
                               "extracted": result.extracted, "reused": result.reused,
                               "skipped": [{"clip": c, "error": e} for c, e in result.skipped], "tokens": tokens,
                               "manifest": result.manifest}))
    elif result.up_to_date:
        console.print(f"[green]up to date[/green]: {result.output} was prepared from the same clips, label.csv and "
                      f"{recipe} recipe; nothing to do")
    else:
        manifest_tables(result.manifest, console)
        lengths = result.manifest["media"]["lengths"]
        console.print("padded to mean + 3·std of the clips' lengths: " + ", ".join(
            f"{key} {s['padded']} frames (mean {s['mean']:.1f}, std {s['std']:.1f}, {s['clips_cut']} clip(s) cut)"
            for key, s in lengths.items()))
        console.print(f"[green]prepared[/green] {result.output}: {result.extracted} clip(s) extracted, "
                      f"{result.reused} kept from before ({recipe} recipe)")
        if not tokens["stored"]:
            console.print(f"[yellow]note[/yellow]: text not tokenised for {tokens['backbone']} ({tokens['config']}): "
                          f"{tokens['reason']} — the first run tokenises it instead")
        for _, error in result.skipped:
            console.print(f"[yellow]skipped[/yellow] {error}")
    if result.skipped:
        raise typer.Exit(1)
