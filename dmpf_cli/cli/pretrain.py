"""``dmpf pretrain-lm``: pretrain a small GPT-2 (causal language modelling only) — the demo backbone, one of
another size, or one on a text corpus of yours — into an ordinary Hugging Face GPT-2 directory."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import FormatOpt, OutputFormat, ThreadsOpt, make_console


class LMSize(str, Enum):
    """dmpf_cli.recipes.pretrain_lm.DEMO_SIZES, spelled here so that ``--help`` answers without importing torch (a test keeps
    the two in step)."""

    small = "small"
    tiny = "tiny"


def pretrain_lm_command(
    size: Annotated[LMSize, typer.Option("--size", help="The recipe: small (gpt2-demo) or tiny (seconds, for tests).")]
    = LMSize.small,
    corpus: Annotated[Optional[Path], typer.Option(
        "--corpus", help="A UTF-8 text file of yours, one document per line (default: generated reviews).")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to save it (default: the demo backbone's directory for --size).")] = None,
    layers: Annotated[Optional[int], typer.Option("--layers", min=1, help="Transformer blocks.")] = None,
    width: Annotated[Optional[int], typer.Option("--width", min=8, help="Model width (n_embd).")] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", min=1, help="Attention heads.")] = None,
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", min=260, help="BPE vocabulary size.")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimizer steps.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a language model at --output (the demo LM: pretrain it here rather than install the one dmpf ships).")] = False,
    threads: ThreadsOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Pretrain a small GPT-2 with the causal language-modelling objective (never a label) and report its held-out
    LM loss against a unigram baseline; train on it with backbone.name=gpt2-demo (and backbone.path=DIR)."""
    from ..errors import DmpfError
    from ..recipes.pretrain_lm import make_lm
    from ..recipes.runtime import threads_text, use_threads

    use_threads(threads)

    changes = {key: value for key, value in (("n_layer", layers), ("n_embd", width), ("n_head", heads),
                                             ("vocab_size", vocab_size), ("steps", steps)) if value is not None}
    shape = {"n_embd": width, "n_head": heads}
    if shape["n_embd"] and shape["n_head"] and shape["n_embd"] % shape["n_head"]:
        raise DmpfError(f"--width, --heads: expected a width divisible by the heads, got {width} and {heads}")
    console = make_console(stderr=format is OutputFormat.json)
    directory, manifest, up_to_date = make_lm(size=size.value, corpus=corpus, output=output, changes=changes,
                                              overwrite=overwrite, console=console)
    if format is OutputFormat.json:
        typer.echo(json.dumps({"output": str(directory), "up_to_date": up_to_date, **manifest}, indent=2))
        return
    from rich.table import Table

    if up_to_date:
        console.print(f"[green]up to date[/green]: {directory} was built by this recipe already")
    recipe = manifest["recipe"]
    table = Table("", str(directory), title="language model", title_justify="left")
    table.add_row("held-out LM loss (nats/token)", f"{manifest['heldout_lm_loss']:.3f}")
    table.add_row("unigram baseline, same tokens", f"{manifest['heldout_unigram_loss']:.3f}")
    table.add_row("shape", f"{recipe['n_layer']} blocks, width {recipe['n_embd']}, {recipe['n_head']} heads, "
                           f"{manifest['vocab_size']} tokens, {manifest['parameters']:,} parameters")
    cpu = f", {threads_text(manifest['threads'])}" if "threads" in manifest else ""  # older LMs: not recorded
    table.add_row("trained on", f"{manifest['corpus']}: {manifest['train_tokens']:,} tokens, {recipe['steps']} steps "
                                f"({manifest['seconds']:.0f} s{cpu})")
    console.print(table)
    if manifest["heldout_lm_loss"] >= manifest["heldout_unigram_loss"]:
        console.print("[yellow]warning[/yellow]: it predicts held-out text no better than word frequencies: train "
                      "longer (--steps) or on more text before using it as a backbone")
    from ..model.backbones import demo_lm_dir

    if directory == demo_lm_dir():
        console.print("the embedded default trains on it: dmpf train (backbone.name=gpt2-demo)")
    else:
        console.print(f"use it: dmpf train backbone.name=gpt2-demo backbone.path={directory}")
