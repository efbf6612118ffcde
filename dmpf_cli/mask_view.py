"""Pictures of a :class:`~dmpf_cli.mask.FusionMask`: a coloured terminal grid and a PNG."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .errors import DmpfError
from .mask import SEGMENTS, SHORT, FusionMask

# One colour per segment; an allowed cell takes the colour of its key's segment.
RICH_COLOURS = {"text": "dodger_blue1", "audio": "green3", "visual": "magenta", "audio_visual": "dark_orange"}
PNG_COLOURS = {"text": "#1f77b4", "audio": "#2ca02c", "visual": "#b01fb4", "audio_visual": "#ff7f0e"}
RELATION_MARK = {"causal": "causal", "all": "all", "none": "–"}


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
