"""``dmpf report``'s tables: the cells text, Markdown and LaTeX share (:func:`layout`), and the renderings
(:func:`render`: Markdown, LaTeX, CSV, JSON; the command line draws text itself with rich).

**Units.** Accuracies and F1 scores are percentages in text, Markdown and LaTeX (the papers' convention;
their differences in percentage points) and fractions in CSV and JSON, as ``results.json`` holds them.

**Marks.** A row with runs on generated data (``synthetic``) is marked †, one with a random-init frozen
backbone ‡, with a footnote (and how many of its runs, when not all); CSV has ``synthetic`` and
``random_backbone`` columns (``yes``, ``no`` or ``mixed``), JSON both flags and counts.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any

from ..metrics import FRACTIONS, LOWER_IS_BETTER
from .report import Report
from .report_compare import BOOTSTRAP_SEED, BOOTSTRAP_TEST, LEVEL, RESAMPLES, T_TEST
from .report_rows import ReportError, Row

FORMATS = ("md", "latex", "csv", "json")  # render's; the CLI adds "text"


@dataclass
class Table:
    """A table's cells in the target's notation, the cells to set in bold, and the rows that start a group (a rule
    above them)."""

    header: list[str]
    rows: list[list[str]]
    align: str  # "l" or "r" per column
    bold: set[tuple[int, int]] = field(default_factory=set)
    breaks: set[int] = field(default_factory=set)


@dataclass
class Layout:
    """What text, Markdown and LaTeX show: the results table, the differences table (None without a row to
    compare), the footnotes."""

    results: Table
    differences: Table | None
    footnotes: list[str]


DASH = "–"  # a value that does not exist
# LaTeX for the characters the tables are written in, and its special characters; "†‡" first, as one superscript
_LATEX = [("†‡", "$^{\\dagger\\ddagger}$"), ("\\", "\\textbackslash{}"), ("_", "\\_"), ("%", "\\%"), ("&", "\\&"),
          ("#", "\\#"), ("$", "\\$"), ("{", "\\{"), ("}", "\\}"), ("~", "\\textasciitilde{}"),
          ("^", "\\textasciicircum{}"), ("−", "$-$"), ("±", "$\\pm$"), ("†", "$^\\dagger$"), ("‡", "$^\\ddagger$"),
          ("↑", "$\\uparrow$"), ("↓", "$\\downarrow$"), ("Δ", "$\\Delta$"), ("—", "---"), ("–", "--"),
          ("…", "\\ldots{}"), ("<", "$<$"), (">", "$>$")]


def _escape(text: str, style: str) -> str:
    """Unicode text as ``style`` needs it: LaTeX commands for LaTeX, ``\\|`` in a Markdown cell, text as it is."""
    if style == "md":
        return text.replace("|", "\\|")
    if style != "latex":
        return text
    out, i = [], 0
    while i < len(text):  # one pass, so no replacement is escaped again
        for char, latex in _LATEX:
            if text.startswith(char, i):
                out.append(latex)
                i += len(char)
                break
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _number(value: float | None, metric: str, sign: bool = False) -> str:
    """A value in the tables' units: accuracies and F1 in % with 2 decimals, MAE and Corr with 4; a true minus."""
    if value is None or math.isnan(value):
        return DASH
    scaled = value * 100.0 if metric in FRACTIONS else value
    text = f"{abs(scaled):.{2 if metric in FRACTIONS else 4}f}"
    if float(text) == 0:  # no sign on a zero as shown
        return text
    return ("−" if scaled < 0 else "+" if sign else "") + text


def _interval(test: dict[str, Any], metric: str) -> str:
    if test.get("low") is None:
        return f"n/a: {test.get('reason') or 'no interval'}"
    return f"[{_number(test['low'], metric)}, {_number(test['high'], metric)}]"


def _p(test: dict[str, Any]) -> str:
    p = test.get("p")
    return DASH if p is None else "<0.001" if p < 0.001 else f"{p:.3f}"


def _marks(row: Row) -> str:
    return ("†" if row.count("synthetic") else "") + ("‡" if row.count("random_backbone") else "")


def _compared(row: Row) -> str:
    seen = row.compared or {}
    if seen.get("paired"):
        n = len(seen["seeds"])
        return f"{n} paired seed{'' if n == 1 else 's'}"
    return f"unpaired: {len(seen.get('seeds', []))} vs {len(seen.get('baseline_seeds', []))} seeds"


def layout(report: Report, style: str = "text") -> Layout:
    """The cells of the two tables and the footnotes, for ``style`` "text", "md" or "latex"."""
    arrows = {m: "↓" if m in LOWER_IS_BETTER else "↑" for m in report.metrics}
    results = Table(["config", "seeds", *(f"{m} {arrows[m]}" for m in report.metrics)], [],
                    "lr" + "r" * len(report.metrics))
    for row in report.rows:
        cells = [row.name + _marks(row) + (" (baseline)" if row.name == report.baseline else ""), str(len(row.runs))]
        for metric in report.metrics:
            summary = row.summary.get(metric)
            if summary is None:
                cells.append(DASH)
            elif len(row.runs) == 1:
                cells.append(_number(summary["mean"], metric))
            else:
                cells.append(f"{_number(summary['mean'], metric)} ± {_number(summary['std'], metric)}")
        results.rows.append(cells)
    for j, metric in enumerate(report.metrics):  # bold: the best mean as shown (ties too), with two rows or more
        shown = {i: _number(r.summary[metric]["mean"], metric) for i, r in enumerate(report.rows)
                 if metric in r.summary and not math.isnan(r.summary[metric]["mean"])}
        if len(shown) < 2:
            continue
        means = {i: report.rows[i].summary[metric]["mean"] for i in shown}
        best = (min if metric in LOWER_IS_BETTER else max)(means, key=means.__getitem__)
        results.bold |= {(i, 2 + j) for i, text in shown.items() if text == shown[best]}

    differences = None
    compared = [r for r in report.rows if r.comparison]
    if compared:
        level = f"{LEVEL:.0%}"
        differences = Table(["config", "metric", "Δ", f"{level} CI, t", "p, t", f"{level} CI, bootstrap"], [],
                            "llrrrr")
        for row in compared:
            differences.breaks.add(len(differences.rows))
            for k, metric in enumerate(report.metrics):
                c = row.comparison[metric]
                differences.rows.append([f"{row.name}{_marks(row)} ({_compared(row)})" if k == 0 else "",
                                         f"{metric} {arrows[metric]}", _number(c["diff"], metric, sign=True),
                                         _interval(c["paired_t"], metric), _p(c["paired_t"]),
                                         _interval(c["bootstrap"], metric)])
    for table in (results, differences):
        if table is not None:
            table.header = [_escape(c, style) for c in table.header]
            table.rows = [[_escape(c, style) for c in row] for row in table.rows]
    return Layout(results, differences, [_escape(line, style) for line in _footnotes(report)])


def _footnotes(report: Report) -> list[str]:
    base = report.row(report.baseline)
    level = f"{LEVEL:.0%}"
    lines = [
        "Test split; mean ± sample std over seeds (one seed: its value). Accuracies and F1 scores in %, their "
        "differences in percentage points; MAE and Corr as they are. ↑ higher is better, ↓ lower is better; bold: "
        "the best mean of each column.",
    ]
    if any(r.comparison for r in report.rows):
        lines.append(
            f"Δ: row − baseline ({base.name}), over the seeds both share (paired; the mean per-seed difference), "
            f"else over all seeds of each (unpaired). t: {T_TEST} — Student t on the per-seed differences (n − 1 "
            f"degrees of freedom), {level} interval and two-sided p; n/a below 2 shared seeds. bootstrap: "
            f"{BOOTSTRAP_TEST} — the test samples every compared run scored, paired by id; {RESAMPLES} resamples "
            f"with replacement (RNG seed {BOOTSTRAP_SEED}), every run scored on the same resample; {level} "
            f"percentile interval of the difference of seed means.")
    for mark, attr, what in (("†", "synthetic", "synthetic data generated by dmpf: a test bench, not a benchmark "
                              "result"), ("‡", "random_backbone", "a random-init frozen backbone, not a pretrained LM")):
        marked = [r for r in report.rows if r.count(attr)]
        if marked:
            partial = [f"{r.name}: {r.count(attr)} of {len(r.runs)} runs" for r in marked if r.count(attr) < len(r.runs)]
            lines.append(f"{mark} {what}" + (f" (in part — {'; '.join(partial)})" if partial else "") + ".")
    return lines + report.notes


# -- renderings ------------------------------------------------------------------------------------

def render(report: Report, fmt: str) -> str:
    """``report`` as Markdown ("md"), LaTeX ("latex"), CSV ("csv") or JSON ("json"); ends with a newline."""
    if fmt == "json":
        return json.dumps(report.to_json(), indent=1, ensure_ascii=False) + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "md":
        return _markdown(layout(report, "md"))
    if fmt == "latex":
        return _latex(report, layout(report, "latex"))
    raise ReportError(f"format {fmt!r}: expected one of {', '.join(FORMATS)} (text is the command line's)")


def _md_table(table: Table) -> list[str]:
    def cell(i: int, j: int, text: str) -> str:
        return f"**{text}**" if (i, j) in table.bold and text else text

    lines = ["| " + " | ".join(table.header) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in table.align) + "|"]
    lines += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(r)) + " |" for i, r in enumerate(table.rows)]
    return lines


def _markdown(lay: Layout) -> str:
    lines = _md_table(lay.results)
    if lay.differences is not None:
        lines += ["", *_md_table(lay.differences)]
    lines += [""] + [f"{note}  " for note in lay.footnotes]  # two spaces: a line break
    return "\n".join(lines).rstrip() + "\n"


def _latex_table(table: Table, caption: str, label: str, notes: list[str]) -> list[str]:
    def cell(i: int, j: int, text: str) -> str:
        return f"\\textbf{{{text}}}" if (i, j) in table.bold and text else text

    lines = ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             f"\\begin{{tabular}}{{{table.align}}}", "\\toprule", " & ".join(table.header) + " \\\\", "\\midrule"]
    for i, row in enumerate(table.rows):
        if i in table.breaks and i > 0:
            lines.append("\\midrule")
        lines.append(" & ".join(cell(i, j, c) for j, c in enumerate(row)) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    if notes:
        lines += ["\\par\\smallskip", "\\footnotesize", *(f"{note}\\par" for note in notes)]
    lines.append("\\end{table}")
    return lines


def _latex(report: Report, lay: Layout) -> str:
    """Two ``table`` floats (booktabs): the results, then the differences; captions name the tests and seeds."""
    counts = sorted({len(r.runs) for r in report.rows if r.runs})
    over = f"{counts[0]} seed{'s' if counts[0] != 1 else ''}" if len(counts) == 1 else "the seeds of column seeds"
    diff_note = 1 if lay.differences is not None else None
    first = [note for k, note in enumerate(lay.footnotes) if k != diff_note]
    lines = ["% dmpf report: needs \\usepackage{booktabs}"]
    lines += _latex_table(lay.results, _escape(f"Test results: mean ± std over {over}; accuracies and F1 scores "
                                               f"in %.", "latex"), "tab:dmpf-results", first)
    if lay.differences is not None:
        caption = (f"Differences to the baseline ({report.baseline}) with {LEVEL:.0%} intervals of two paired tests: "
                   f"t, {T_TEST}; bootstrap, {BOOTSTRAP_TEST} ({RESAMPLES} resamples).")
        lines += [""] + _latex_table(lay.differences, _escape(caption, "latex"), "tab:dmpf-differences",
                                     [lay.footnotes[1]])
    return "\n".join(lines) + "\n"


def _csv(report: Report) -> str:
    """One line per row; fractions, like results.json; an empty cell where a value does not exist."""
    def num(value) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))

    def flag(row: Row, attr: str) -> str:
        k = row.count(attr)
        return "no" if k == 0 else "yes" if k == len(row.runs) else "mixed"

    header = ["config", "baseline", "n_seeds", "seeds", "unfinished", "synthetic", "random_backbone"]
    for m in report.metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_diff", f"{m}_t_low", f"{m}_t_high", f"{m}_t_p", f"{m}_t_n",
                   f"{m}_boot_low", f"{m}_boot_high"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in report.rows:
        line = [row.name, "yes" if row.name == report.baseline else "no", len(row.runs),
                " ".join(str(s) for s in row.seeds), len(row.unfinished), flag(row, "synthetic"),
                flag(row, "random_backbone")]
        for m in report.metrics:
            s = row.summary.get(m, {})
            c = (row.comparison or {}).get(m)
            t, b = (c["paired_t"], c["bootstrap"]) if c else ({}, {})
            line += [num(s.get("mean")), num(s.get("std")), num(c["diff"] if c else None), num(t.get("low")),
                     num(t.get("high")), num(t.get("p")), t.get("n", "") if c else "", num(b.get("low")),
                     num(b.get("high"))]
        writer.writerow(line)
    return out.getvalue()
