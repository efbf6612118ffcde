"""The result of a sweep: ``--show``, the summary every worker ends with, and ``DIR/best.yaml``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ...store.roots import write_best_config
from .heartbeat import last_beat
from .space import SweepError, SweepSpec, _close
from .study import (
    CONFIG,
    ERROR,
    PRUNED_AT,
    RETRY_OF,
    RUN_DIR,
    STUDY_TRIALS,
    WORKER,
    Tally,
    Where,
    _optuna,
    _why,
    locate,
    open_storage,
)


def show(spec: SweepSpec, storage_url: str | None, study_name: str | None, output: Path | str | None) -> dict:
    """``--show``: the study as it stands (nothing is trained); writes ``DIR/best.yaml`` when there is a best."""
    optuna = _optuna()
    where = locate(spec, storage_url, study_name, output)
    if storage_url is None and not where.output.is_dir():
        raise SweepError(f"--output {where.output}: no sweep there yet; run `dmpf sweep {spec.path}` first")
    storage = open_storage(where.storage, must_exist=True)
    try:
        study = optuna.load_study(study_name=where.study, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise SweepError(f"--study {where.study}: no such study in {where.shown}"
                         + (f"; {_close(where.study, names)}" if names else " (it holds none)")) from None
    except Exception as exc:
        raise SweepError(f"--storage {where.shown}: cannot open: {_why(exc)}") from None
    return study_summary(study, spec, where, study.user_attrs.get(STUDY_TRIALS))


def study_summary(study, spec: SweepSpec, where: Where, budget: int | None) -> dict[str, Any]:
    """Every trial (the complete ones ranked by value), counts per state, the best — written to DIR/best.yaml."""
    from optuna.trial import TrialState

    tally = Tally.of(study)
    complete = sorted((t for t in tally.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    rank = {t.number: i + 1 for i, t in enumerate(complete)}
    dims = {d.key: d for d in spec.dims}

    def params(trial) -> dict[str, Any]:
        return {k: dims[k].decode(v) if k in dims else v for k, v in trial.params.items()}

    rows = []
    for t in sorted(tally.trials, key=lambda t: (rank.get(t.number, len(rank) + 1), t.number)):
        row = {"rank": rank.get(t.number), "trial": t.number, "state": _state_name(t, tally),
               "value": t.value, "params": params(t), "run_dir": t.user_attrs.get(RUN_DIR)}
        for key in (PRUNED_AT, ERROR, RETRY_OF, WORKER):
            if key in t.user_attrs:
                row[key] = t.user_attrs[key]
        if t.state == TrialState.RUNNING:
            row["heartbeat_age_s"] = round(time.time() - last_beat(t), 1)
        rows.append(row)
    best = _write_best(complete, where.output)
    if best:
        best["params"] = params(next(t for t in complete if t.number == best["trial"]))
    return {"study": where.study, "storage": where.shown, "output": str(where.output),
            "trials": budget, "done": tally.done(), "counts": tally.counts(), "best": best, "rows": rows}


def _state_name(trial, tally: Tally) -> str:
    name = trial.state.name.lower().replace("fail", "failed")
    if trial.number in tally.retried:
        return "failed (lost, retried)"
    if trial.number in tally.discarded:
        return "discarded"
    return name


def _write_best(complete: list, output: Path) -> dict[str, Any] | None:
    """The best complete trial; its run's config.yaml (as recorded in the study, so any machine can write it)
    becomes DIR/best.yaml, atomically. None when no trial has completed."""
    for trial in complete:
        text = trial.user_attrs.get(CONFIG)
        if text is None:
            run_dir = trial.user_attrs.get(RUN_DIR)
            config = Path(run_dir) / "config.yaml" if run_dir else None
            text = config.read_text(encoding="utf-8") if config and config.is_file() else None
        if text is None:
            continue
        best = write_best_config(output, text)
        return {"trial": trial.number, "value": trial.value, "params": trial.params,
                "run_dir": trial.user_attrs.get(RUN_DIR), "config": str(best)}
    return None
