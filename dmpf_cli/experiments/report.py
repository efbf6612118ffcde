"""``dmpf report``: finished runs → one table of configs, each with its mean ± std over seeds and its difference
to a baseline under two paired tests, as text, Markdown, LaTeX, CSV or JSON.

API (stable; ``dmpf grid`` writes ``DIR/report.md`` and ``DIR/report.json`` with it)::

    report = build_report([Path("runs/grid")], metrics=None, baseline=None)   # -> Report
    report.to_json()            # the JSON-ready dict that render(report, "json") dumps
    # dmpf_cli.experiments.report_render:
    render(report, "md")        # also "latex", "csv", "json"; the CLI renders "text" itself (rich)
    layout(report, "text")      # the cells and footnotes the text, Markdown and LaTeX tables share

Errors are :class:`~dmpf_cli.experiments.report_rows.ReportError` (a ``DmpfError``: one line).

The parts: which paths are read and how their runs group into rows, :mod:`dmpf_cli.experiments.report_rows`; the
numbers and the paired tests, :mod:`dmpf_cli.experiments.report_compare`; the tables in each format,
:mod:`dmpf_cli.experiments.report_render`. Here: the report itself — its metrics (the paper's table for the runs'
metric family unless asked), its baseline (``baseline`` if given, else the (first) grid's, else the first row),
its notes — and its JSON form.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import did_you_mean
from ..metrics import LOWER_IS_BETTER, METRIC_KEYS
from ..store.run import RunDir
from ..streams import DATASETS
from .report_compare import BOOTSTRAP_SEED, BOOTSTRAP_TEST, LEVEL, RESAMPLES, T_TEST, Predictions, compare, seed_summary
from .report_rows import SPLIT, ReportError, Row, collect_rows

# The paper's table, per metric family (streams.Dataset.metrics): the default --metrics
PAPER_METRICS = {
    "mosei": ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_7", "MAE", "Corr"),
    "sims": ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"),
}


@dataclass
class Report:
    """A report: its rows (``rows[i].summary``, ``.comparison``), the metrics, the baseline's name, notes."""

    rows: list[Row]
    metrics: list[str]
    family: str
    baseline: str
    runs_total: int
    notes: list[str] = field(default_factory=list)

    @property
    def runs_unfinished(self) -> int:
        return sum(len(r.unfinished) for r in self.rows)

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (fractions, not percentages; ``null`` where a value does not exist)."""
        return {
            "format": "dmpf-report/1",
            "split": SPLIT,
            "metrics": self.metrics,
            "family": self.family,
            "baseline": self.baseline,
            "units": "accuracies and F1 scores are fractions in [0, 1]; MAE and Corr as they are",
            "lower_is_better": [m for m in self.metrics if m in LOWER_IS_BETTER],
            "tests": {
                "diff": "row − baseline over the seeds both share (the mean per-seed difference), else over all "
                        "seeds of each (the difference of the means); see each row's compared",
                "paired_t": f"{T_TEST}: Student t on the per-seed differences of the runs that share a seed number "
                            f"with the baseline, {LEVEL:.0%} interval, two-sided p",
                "bootstrap": f"{BOOTSTRAP_TEST}: samples paired by id, {RESAMPLES} resamples with replacement (RNG "
                             f"seed {BOOTSTRAP_SEED}), every run scored on the same resample, statistic = difference "
                             f"of the seed means, {LEVEL:.0%} percentile interval",
            },
            "runs": {"total": self.runs_total, "finished": self.runs_total - self.runs_unfinished,
                     "unfinished": self.runs_unfinished},
            "rows": [_row_json(r, r.name == self.baseline) for r in self.rows],
            "notes": self.notes,
        }


def _row_json(row: Row, baseline: bool) -> dict[str, Any]:
    n = len(row.runs)
    return {
        "name": row.name,
        "baseline": baseline,
        "sources": row.sources,
        "grid": row.grid,
        "overrides": row.overrides,
        "n_seeds": n,
        "seeds": row.seeds,
        "runs": [str(r.path) for r in row.runs],
        "unfinished": [str(p) for p in row.unfinished],
        "datasets": sorted({r.dataset for r in row.runs}),
        "backbones": sorted({str(r.results.get("backbone")) for r in row.runs}),
        "synthetic": n > 0 and row.count("synthetic") > 0,
        "synthetic_runs": row.count("synthetic"),
        "random_backbone": n > 0 and row.count("random_backbone") > 0,
        "random_backbone_runs": row.count("random_backbone"),
        "metrics": _clean(row.summary),
        "compared": row.compared,
        "vs_baseline": _clean(row.comparison),
    }


def _clean(value):
    """NaN (a metric with nothing to score) as JSON's null, inside lists and dicts too."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# -- metrics and baseline --------------------------------------------------------------------------

def _close(name: str, known: list[str]) -> str:
    hint = did_you_mean(name, known).strip()
    return f" ({hint})" if hint else ""


def _family(rows: list[Row]) -> str:
    families: dict[str, list[str]] = {}
    for row in rows:
        for run in row.runs:
            if run.dataset not in DATASETS:
                raise ReportError(f"{RunDir(run.path).results}: unknown dataset {run.dataset!r}")
            names = families.setdefault(DATASETS[run.dataset].metrics, [])
            if row.name not in names:
                names.append(row.name)
    if len(families) > 1:
        parts = "; ".join(f"{family} family: {', '.join(names)}" for family, names in families.items())
        raise ReportError(f"the rows are on datasets of different metric families ({parts}); report one at a time")
    return next(iter(families))


def _choose_metrics(rows: list[Row], family: str, wanted: list[str] | None, notes: list[str]) -> list[str]:
    order = next(keys for name, keys in METRIC_KEYS.items() if DATASETS[name].metrics == family)
    held = [m for m in order if all(m in run.results[SPLIT] for row in rows for run in row.runs)]
    if wanted is None:
        missing = [m for m in PAPER_METRICS[family] if m not in held]
        if missing:
            notes.append(f"{', '.join(missing)}: not in every run's results: left out")
        return [m for m in PAPER_METRICS[family] if m in held]
    wanted = list(dict.fromkeys(m.strip() for m in wanted if m.strip()))
    if not wanted:
        raise ReportError("--metrics: no metric named; e.g. --metrics MAE,Corr")
    for metric in wanted:
        if metric not in held:
            raise ReportError(f"--metrics: unknown metric {metric!r}{_close(metric, held)}; the runs hold: "
                              f"{', '.join(held)}")
    return wanted


def _choose_baseline(rows: list[Row], asked: str | None, grid_baseline: str | None) -> str:
    names = [r.name for r in rows]
    if asked is None:
        return grid_baseline or names[0]
    if asked not in names:
        raise ReportError(f"--baseline: no row named {asked!r}{_close(asked, names)}; the rows: {', '.join(names)}")
    return asked


def build_report(paths: list[Path], metrics: list[str] | None = None, baseline: str | None = None) -> Report:
    """The report of ``paths`` (run directories, multi-seed roots, grid directories; see the module docstring).

    ``metrics``: the metric keys to show (default: the paper's table for the runs' metric family), each held by
    every finished run. ``baseline``: a row's name (default: the grid's, else the first row). Raises
    :class:`ReportError` for a path that is none of the three, no finished run, datasets of two metric
    families, an unknown metric or baseline, or one seed twice in a row.
    """
    if not paths:
        raise ReportError("no paths: give run directories, multi-seed roots or grid directories")
    rows, grid_baseline = collect_rows(list(paths))
    total = sum(len(r.runs) + len(r.unfinished) for r in rows)
    if not any(r.runs for r in rows):
        raise ReportError(f"no finished runs in {', '.join(map(str, paths))}: {total} of {total} runs unfinished")
    notes: list[str] = []
    family = _family(rows)
    chosen = _choose_metrics(rows, family, metrics, notes)
    base_name = _choose_baseline(rows, baseline, grid_baseline)
    for row in rows:
        row.summary = seed_summary(row, chosen)
    base = next(r for r in rows if r.name == base_name)
    cache = Predictions(chosen, notes)
    for row in rows:
        if row is not base and row.runs:
            row.comparison = compare(row, base, cache)
    report = Report(rows, chosen, family, base_name, total, notes)
    if report.runs_unfinished:
        skipped = [str(p) for r in rows for p in r.unfinished]
        listed = ", ".join(skipped[:4]) + (f", … ({len(skipped) - 4} more)" if len(skipped) > 4 else "")
        notes.insert(0, f"{report.runs_unfinished} of {total} runs unfinished: skipped ({listed})")
    for row in rows:
        if not row.runs:
            notes.append(f"{row.name}: no finished runs")
    return report
