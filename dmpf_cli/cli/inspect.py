"""``dmpf inspect-mask`` (the fusion mask as a coloured grid, JSON or a PNG) and ``dmpf inspect-model``
(parameters, attention backend, sequence layout, MM blocks), with their renderers."""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import DmpfError
from ..streams import COLOURS, SEGMENTS, SHORT, STREAMS
from .common import AttentionOpt, ConfigOpt, DatasetOpt, FormatOpt, OutputFormat, OverridesArg, make_console

if TYPE_CHECKING:  # torch loads only when a mask is drawn
    from ..model.mask import FusionMask

# One colour per segment; an allowed cell takes the colour of its key's segment.
RICH_COLOURS = {segment: colours[0] for segment, colours in COLOURS.items()}
PNG_COLOURS = {segment: colours[1] for segment, colours in COLOURS.items()}
RELATION_MARK = {"causal": "causal", "all": "all", "none": "–"}
MAX_MASK_POSITIONS = 4096  # inspect-mask renders an (L, L) mask: beyond this it is a memory hazard, not a picture


def _layout(mask: FusionMask):
    """(allowed (L, L) bool tensor of the first sample, segment name per position, padded text positions)."""
    allowed = mask.allowed()
    if allowed.dim() == 3:
        allowed = allowed[0]
    owner = [seg.name for seg in mask.segments for _ in range(seg.length)]
    padded = set() if mask.text_padding is None else {
        i for i, real in enumerate(mask.text_padding[0].tolist()) if not real
    }
    return allowed, owner, padded


def render(mask: FusionMask, console: Console) -> None:
    """Print the grid (rows = queries, columns = keys), a legend and a who-sees-whom summary."""
    allowed, owner, padded = _layout(mask)
    rows = allowed.tolist()
    L = mask.seq_len
    label_w = 4

    console.print(
        f"[bold]fusion mask[/bold] preset [bold]{mask.preset}[/bold]: "
        + " | ".join(f"{SHORT[s.name]} {s.length}" for s in mask.segments)
        + f"  ({L} positions" + (f", last {len(padded)} text positions padding)" if padded else ")")
    )
    # Column header: the segment's short name at its first column.
    header = Text(" " * label_w)
    for seg in mask.segments:
        if seg.length:
            tag = SHORT[seg.name][: seg.length].ljust(seg.length)
            header.append(tag, style=f"bold {RICH_COLOURS[seg.name]}")
    if L + label_w > console.width:
        console.print(
            f"[yellow]the grid is {L} columns wide and the terminal {console.width}: lines are cut; "
            "use --output mask.png for the whole picture[/yellow]"
        )
    console.print(header, no_wrap=True, overflow="crop", crop=True)
    for q in range(L):
        line = Text()
        first = q == 0 or owner[q] != owner[q - 1]
        line.append((SHORT[owner[q]] if first else "").ljust(label_w), style=f"bold {RICH_COLOURS[owner[q]]}")
        for k in range(L):
            if rows[q][k]:
                line.append("█", style=RICH_COLOURS[owner[k]])
            elif k in padded:
                line.append("░", style="red")
            else:
                line.append("·", style="grey50")
        console.print(line, no_wrap=True, overflow="crop", crop=True)

    legend = Text("legend: ")
    for seg in SEGMENTS:
        legend.append("█", style=RICH_COLOURS[seg]).append(f" sees {SHORT[seg]}  ")
    legend.append("·", style="grey50").append(" masked  ")
    if padded:
        legend.append("░", style="red").append(" padding key (masked)")
    console.print(legend)

    table = Table(title="who sees whom (rows = queries, columns = keys)", title_justify="left")
    table.add_column("query \\ key")
    present = mask.segments
    for seg in present:
        table.add_column(f"{SHORT[seg.name]} ({seg.length})", style=RICH_COLOURS[seg.name])
    table.add_column("keys seen per query")
    relations = mask.relations()
    for q in present:
        seen = [sum(rows[i]) for i in range(q.start, q.stop)]
        span = "–" if not seen else (str(seen[0]) if min(seen) == max(seen) else f"{min(seen)}–{max(seen)}")
        table.add_row(
            Text(f"{SHORT[q.name]} ({q.length})", style=f"bold {RICH_COLOURS[q.name]}"),
            *(RELATION_MARK[relations[(q.name, k.name)]] for k in present),
            span,
        )
    console.print(table)


def save_png(mask: FusionMask, path: Path) -> None:
    """Draw the mask: allowed cells in the key segment's colour, block boundaries, labelled axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    allowed, owner, padded = _layout(mask)
    allowed = allowed.numpy()
    L = mask.seq_len

    image = np.ones((L, L, 3))
    key_colours = np.array([to_rgb(PNG_COLOURS[o]) for o in owner])  # (L, 3)
    image[allowed] = np.broadcast_to(key_colours[None, :, :], (L, L, 3))[allowed]
    for k in padded:  # padded keys: pale red where masked
        column = ~allowed[:, k]
        image[column, k] = (1.0, 0.85, 0.85)

    side = min(max(4.0, L * 0.12), 16.0)
    fig, ax = plt.subplots(figsize=(side + 2.2, side + 0.8), dpi=110)
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks(np.arange(-0.5, L, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, L, 1), minor=True)
    if L <= 120:
        ax.grid(which="minor", color="#dddddd", linewidth=0.3)
    ax.tick_params(which="minor", length=0)
    centres, names = [], []
    for seg in mask.segments:
        if seg.length:
            centres.append(seg.start + seg.length / 2 - 0.5)
            names.append(f"{SHORT[seg.name]}\n({seg.length})")
        if 0 < seg.stop < L:
            ax.axhline(seg.stop - 0.5, color="black", linewidth=1.2)
            ax.axvline(seg.stop - 0.5, color="black", linewidth=1.2)
    ax.set_xticks(centres, names)
    ax.set_yticks(centres, [n.replace("\n", " ") for n in names])
    ax.xaxis.tick_top()
    ax.set_xlabel("keys (attended to)")
    ax.set_ylabel("queries (attending)")
    pad_note = f", last {len(padded)} text positions padding" if padded else ""
    ax.set_title(f"DMPF fusion mask '{mask.preset}' — {L} positions{pad_note}", pad=30)
    handles = [Patch(color=PNG_COLOURS[s], label=f"sees {SHORT[s]}") for s in SEGMENTS]
    handles.append(Patch(facecolor="white", edgecolor="#999999", label="masked"))
    if padded:
        handles.append(Patch(color=(1.0, 0.85, 0.85), label="padding key"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError as exc:
        raise DmpfError(f"--output: cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _with_token_options(command):
    """Give ``command`` one ``--n-…`` option per stream (``--n-a --n-v --n-av``, from streams.STREAMS), each
    inserted before its ``text_len`` parameter and handed to it as ``tokens={"n_a": value or None, …}``."""
    signature = inspect.signature(command, eval_str=True)
    options = [
        inspect.Parameter(s.tokens_key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Optional[int], typer.Option(f"--{s.tokens_key.replace('_', '-')}",
                                        help=f"{s.display.capitalize()} fusion tokens (default: the config's).")])
        for s in STREAMS
    ]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in signature.parameters.values() if p.name != "tokens"]
    at = [p.name for p in params].index("text_len")

    @functools.wraps(command)
    def wrapper(**kwargs):
        return command(tokens={s.tokens_key: kwargs.pop(s.tokens_key) for s in STREAMS}, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params[:at] + options + params[at:])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper


@_with_token_options
def inspect_mask(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    tokens: Optional[dict[str, Optional[int]]] = None,
    text_len: Annotated[Optional[int], typer.Option("--text-len", help="Text positions (default: the config's).")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Mask preset (default: the config's).")] = None,
    pad: Annotated[int, typer.Option("--pad", help="Mark the last K text positions as padding.")] = 0,
    format: FormatOpt = OutputFormat.text,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also draw the mask to this PNG file.")] = None,
) -> None:
    """Show the fusion attention mask: who may attend to whom inside the backbone."""
    from ..recipes.preflight import resolve_config

    if output is not None and output.suffix.lower() != ".png":
        raise DmpfError(f"--output: expected a .png file name, got '{output}'")
    cfg = resolve_config(dataset, config, overrides or [])
    counts = {f"--{key.replace('_', '-')}": getattr(cfg.fusion, key) if value is None else value
              for key, value in (tokens or {}).items()}
    values = {**counts, "--text-len": cfg.data.text_len if text_len is None else text_len}
    for option, value in values.items():
        if value < 0:
            raise DmpfError(f"{option}: expected an integer >= 0, got {value}")
    total = sum(values.values())
    if total > MAX_MASK_POSITIONS:  # a (L, L) mask: beyond this it is a memory hazard, not a picture
        raise DmpfError(f"{' + '.join(['--text-len', *counts])}: expected at most {MAX_MASK_POSITIONS} positions "
                        f"(GPT-2 has 1024), got {total}")
    if not 0 <= pad <= values["--text-len"]:
        raise DmpfError(f"--pad: expected 0..{values['--text-len']} (the text length), got {pad}")

    from .. import registry
    from ..model.mask import FusionMask

    name = preset or cfg.fusion.mask
    try:
        registry.get("mask", name)
    except registry.RegistryError as exc:
        raise DmpfError(f"--preset: {exc}") from None
    try:
        mask = FusionMask(values["--text-len"], *counts.values(), preset=name)
    except ValueError as exc:
        raise DmpfError(str(exc)) from None
    if pad:
        mask = mask.with_right_padding(pad)

    if output is not None:
        save_png(mask, output)
    if format is OutputFormat.json:
        typer.echo(json.dumps(mask.to_json()))
        return
    console = make_console()
    console.print(f"config [bold]{cfg.name}[/bold]: {cfg.description}" if cfg.description else f"config {cfg.name}")
    render(mask, console)
    if output is not None:
        console.print(f"wrote {output}")




def inspect_model(
    overrides: OverridesArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    attention: AttentionOpt = None,
    format: FormatOpt = OutputFormat.text,
) -> None:
    """Describe the model a config builds: parameters, attention backend, sequence layout, MM blocks."""
    from ..recipes.preflight import resolve_config

    extra = [f"training.attention={attention}"] if attention else []
    cfg = resolve_config(dataset, config, [*(overrides or []), *extra])
    from ..model.dmpf import model_summary

    info = model_summary(cfg)
    if format is OutputFormat.json:
        typer.echo(json.dumps(info, indent=2))
        return
    from rich.table import Table

    console = make_console()
    bb = info["backbone"]
    console.print(f"[bold]{info['config']}[/bold]: backbone [bold]{bb['name']}[/bold] "
                  f"({bb['layers']} blocks, width {bb['width']}, {bb['heads']} heads) — "
                  + ("[yellow]random weights[/yellow]" if bb["weights"] == "random weights"
                     else f"{bb['weights']}; {bb['source']}"))
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
