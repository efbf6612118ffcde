"""The metric-logger contract: ``factory(cfg: ExperimentConfig, run: RunDir, *, resume_step: int | None) -> Logger``.

The logger (a :class:`~dmpf_cli.recipes.loggers.Logger`, or anything with its three methods) gets
``log(record)`` for every record of the training loop (``step``, ``epoch``, at the end ``test``; kinds it does
not know it ignores), ``image(tag, path)`` for a finished PNG, and ``close()`` once. ``resume_step`` is None
for a new run, the checkpoint's optimizer step for a resumed one. A factory may declare ``needs = (module,
extra)``: the package it imports, which ``dmpf train`` checks before a run directory is made.
"""

from __future__ import annotations

import copy
import importlib
import tempfile
from pathlib import Path
from typing import Any

from ..config import ExperimentConfig
from ..registry import Component
from ..store.run import RunDir
from .contract import Contract, Skip

logger_contract = Contract(
    "logger", "factory(cfg: ExperimentConfig, run: RunDir, *, resume_step: int | None) -> Logger")


def records(first_step: int = 1, steps: int = 2) -> list[dict[str, Any]]:
    """What a short run's loop hands its loggers: step records, an epoch record, the test record, and a kind that
    no logger knows yet (loggers must ignore it)."""
    out: list[dict[str, Any]] = []
    for step in range(first_step, first_step + steps):
        parts = {"total": 1.0 / step, "task": 0.8 / step}
        out.append({"kind": "step", "epoch": 0, "step": step, "loss": parts["total"], "parts": parts,
                    "grad_norm": 0.5, "lr_lm": 1e-3, "lr_encoders": 2e-3, "samples_per_s": 100.0,
                    "gates": {"block1/attn": 0.1, "block1/ffn": -0.2}})
    last = first_step + steps - 1
    out.append({"kind": "epoch", "epoch": 0, "step": last, "valid": {"MAE": 0.5, "Corr": 0.3}, "best": True})
    out.append({"kind": "test", "step": last, "test": {"MAE": 0.6, "Corr": 0.25}})
    out.append({"kind": "a-future-kind", "step": last, "note": "ignored by loggers that do not know it"})
    return out


def _needs(component: Component) -> None:
    """Skip when the factory's declared package is missing here (what ``dmpf train`` would refuse)."""
    needs = getattr(component.factory, "needs", None)
    if needs:
        module, extra = needs
        try:
            importlib.import_module(module)
        except ImportError:
            raise Skip(f"needs the {module} package, not installed here: pip install dmpf[{extra}]") from None


def _png(directory: Path) -> Path:
    from matplotlib.image import imsave

    path = directory / "curves.png"
    imsave(path, [[0.0, 0.5], [1.0, 0.25]])
    return path


def _session(component: Component, root: Path, resume_step: int | None, records_: list[dict[str, Any]],
             **config: Any) -> None:
    """Open the logger on run directory ``root``, hand it ``records_`` and a figure, and close it."""
    cfg = ExperimentConfig(**config)
    run = RunDir(root)
    logger = component.factory(cfg, run, resume_step=resume_step)
    missing = [m for m in ("log", "image", "close") if not callable(getattr(logger, m, None))]
    assert not missing, f"the factory returned {type(logger).__name__}, which has no {', '.join(missing)} method"
    try:
        for record in records_:
            logger.log(record)
        logger.image("curves", _png(root))
    finally:
        logger.close()


@logger_contract.check
def declares_needs(component: Component, **config: Any) -> None:
    """a declared needs is (module, extra), two names; the package it names is importable here (else: skip)"""
    needs = getattr(component.factory, "needs", None)
    if needs is not None:
        assert isinstance(needs, tuple) and len(needs) == 2 and all(isinstance(n, str) and n for n in needs), \
            f"needs is {needs!r}, expected (module, extra), e.g. ('wandb', 'wandb')"
    _needs(component)


@logger_contract.check
def logs_a_run(component: Component, **config: Any) -> None:
    """logs step, epoch and test records, ignores an unknown kind, takes a PNG, closes"""
    _needs(component)
    with tempfile.TemporaryDirectory(prefix="dmpf-logger-check-") as tmp:
        _session(component, Path(tmp), None, records(), **config)


@logger_contract.check
def leaves_records_alone(component: Component, **config: Any) -> None:
    """the records it is handed are unchanged afterwards (every logger gets the same dicts)"""
    _needs(component)
    given = records()
    kept = copy.deepcopy(given)
    with tempfile.TemporaryDirectory(prefix="dmpf-logger-check-") as tmp:
        _session(component, Path(tmp), None, given, **config)
    for before, after in zip(kept, given):
        assert before == after, f"the {before['kind']} record at step {before['step']} was changed: {after}"


@logger_contract.check
def resumes(component: Component, **config: Any) -> None:
    """opened again on the same run directory with resume_step, it logs the steps after it and closes"""
    _needs(component)
    with tempfile.TemporaryDirectory(prefix="dmpf-logger-check-") as tmp:
        _session(component, Path(tmp), None, records(1, 3), **config)
        _session(component, Path(tmp), 2, records(3, 2), **config)


@logger_contract.check
def closes_on_error(component: Component, **config: Any) -> None:
    """closed while an error unwinds the run (before any record), close() itself does not fail"""
    _needs(component)
    with tempfile.TemporaryDirectory(prefix="dmpf-logger-check-") as tmp:
        logger = component.factory(ExperimentConfig(**config), RunDir(Path(tmp)), resume_step=None)
        try:
            raise RuntimeError("the run stopped")
        except RuntimeError:
            logger.close()
