"""Metric loggers: where a run's records go besides the console (``training.loggers``), a registry kind.

A logger is made by a factory registered as kind ``logger``, ``(cfg, run, *, resume_step) -> Logger``, and
receives the records of the training loop:

* ``{"kind": "step", ...}`` and ``{"kind": "epoch", ...}``: exactly the lines of ``metrics.jsonl``, as the
  Trainer writes them (loss parts, learning rates, grad norm, samples/s and the MM gates' values per step;
  the validation metrics per epoch);
* once, at the end, ``{"kind": "test", "step": ..., "test": {...}}``: the best checkpoint's test metrics (also
  in ``results.json``). A logger ignores kinds it does not know, so more may come.

then ``image(tag, path)`` for a finished figure (``curves.png``), and ``close()`` — also when the run stops
with an error, so files are flushed. ``resume_step`` is None for a new run; for a resumed one it is the
optimizer step of the checkpoint it resumes from: the records up to and including that step were kept, and
everything after it is logged again, so a logger that keeps its own files drops what it had logged after it.
Every value is on the host: loggers never touch the device.

Built-ins: ``jsonl`` (``metrics.jsonl``, always on: it is the run's own record, which ``--resume`` and
``curves.png`` read), ``tensorboard`` (``RUN/tensorboard/``) and ``wandb`` (offline unless ``WANDB_MODE``
says otherwise, ``RUN/wandb/``). The last two need their package (``pip install dmpf[tensorboard]``,
``dmpf[wandb]``), which :func:`check_loggers` verifies before a run directory is made. A plugin adds one with
``@register("logger", "NAME")``; :func:`scalars` gives it the same flat tags the built-ins write.

The x-axis of every scalar is the optimizer step (the record's ``step``): validation metrics sit at the step of
their epoch's end, the test metrics and the curves at the last step. One axis for all, so a resumed run's
TensorBoard purge (by step, over every tag) and wandb's monotonic step both hold.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import DmpfError
from ..registry import register

if TYPE_CHECKING:
    from ..config import ExperimentConfig
    from ..store.run import RunDir

KEY = "training.loggers"
ALWAYS = "jsonl"  # the run's own record: on whatever training.loggers lists
RECORD_KINDS = ("step", "epoch")  # what metrics.jsonl holds


class LoggerError(DmpfError):
    """A logger that cannot run here (its package is missing, it failed to start); one line naming the key."""


class Logger:
    """What the Trainer hands records to. Subclasses override what they use; the defaults do nothing."""

    def log(self, record: dict[str, Any]) -> None:
        """One record (see the module docstring); values are plain floats, ints, strings, dicts of them."""

    def image(self, tag: str, path: Path) -> None:
        """A finished figure (a PNG file), at the last step logged."""

    def close(self) -> None:
        """Flush and release; called once, also when the run stops with an error."""


class Loggers(Logger):
    """Several loggers as one, in ``training.loggers`` order (``jsonl`` first); closing closes every one."""

    def __init__(self, loggers: list[Logger]):
        self.loggers = loggers

    def log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)

    def image(self, tag: str, path: Path) -> None:
        for logger in self.loggers:
            logger.image(tag, path)

    def close(self) -> None:
        errors = []
        for logger in self.loggers:  # one failing to close must not leave the others' files unflushed
            try:
                logger.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def logger_names(names: list[str]) -> list[str]:
    """The loggers a run opens: ``jsonl`` first, whether or not ``training.loggers`` lists it, then the others."""
    return [ALWAYS, *(n for n in names if n != ALWAYS)]


def check_loggers(names: list[str]) -> None:
    """Every logger's package is importable: ``dmpf train`` calls it before any run directory is made.

    Raises:
        LoggerError: ``training.loggers: 'tensorboard' needs the tensorboard package: pip install dmpf[tensorboard]``.
    """
    from .. import registry

    for name in logger_names(names):
        try:
            factory = registry.get("logger", name).factory
        except registry.RegistryError as exc:
            raise LoggerError(f"{KEY}: {exc}") from None
        needs = getattr(factory, "needs", None)
        if needs:
            _require(name, *needs)


def open_loggers(cfg: ExperimentConfig, run: RunDir, *, resume_step: int | None) -> Loggers:
    """The run's loggers (rank 0 only), opened in ``training.loggers`` order, ``jsonl`` first."""
    from .. import registry

    opened: list[Logger] = []
    try:
        for name in logger_names(cfg.training.loggers):
            opened.append(registry.create("logger", name, cfg, run, resume_step=resume_step))
    except BaseException:
        Loggers(opened).close()
        raise
    return Loggers(opened)


def _require(name: str, module: str, extra: str) -> Any:
    """Import ``module`` for logger ``name``, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LoggerError(f"{KEY}: '{name}' needs the {extra} package: pip install dmpf[{extra}]") from None


def _needs(module: str, extra: str) -> Callable[[Callable[..., Logger]], Callable[..., Logger]]:
    """Mark a factory with the module it imports and the extra that installs it (read by :func:`check_loggers`)."""

    def deco(factory):
        factory.needs = (module, extra)
        return factory

    return deco


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record as flat scalar tags: ``loss/<part>``, ``lr/<group>``, ``train/grad_norm``, ``train/samples_per_s``,
    ``gates/block<i>/<gate>`` per step; ``valid/<metric>`` per epoch; ``test/<metric>`` at the end."""
    kind = record.get("kind")
    if kind == "step":
        out = {f"loss/{part}": value for part, value in record["parts"].items()}
        out.update({f"lr/{key.removeprefix('lr_')}": value for key, value in record.items() if key.startswith("lr_")})
        out.update({"train/grad_norm": record["grad_norm"], "train/samples_per_s": record["samples_per_s"]})
        out.update({f"gates/{gate}": value for gate, value in record.get("gates", {}).items()})
        return out
    if kind in ("epoch", "test"):
        split = "valid" if kind == "epoch" else "test"
        return {f"{split}/{metric}": value for metric, value in record[split].items()}
    return {}


# -- built-ins -------------------------------------------------------------------------------------

class JsonlLogger(Logger):
    """``metrics.jsonl``: one line per step and epoch record, appended and closed at once, so a killed run's file
    ends at its last whole record. On resume the Trainer cuts it back to the checkpoint's record count
    (:meth:`~dmpf_cli.recipes.train.Trainer.restore`). Test records are not written: they are ``results.json``'s."""

    def __init__(self, run: RunDir):
        self.path = run.metrics

    def log(self, record: dict[str, Any]) -> None:
        if record.get("kind") in RECORD_KINDS:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


@register("logger", "jsonl")
def jsonl(cfg: ExperimentConfig, run: RunDir, *, resume_step: int | None) -> Logger:
    """metrics.jsonl, the run's own record (always on)."""
    return JsonlLogger(run)


class TensorBoardLogger(Logger):
    """TensorBoard event files in ``RUN/tensorboard/``; every scalar of :func:`scalars` at its optimizer step.

    A resumed run's writer starts with ``purge_step`` one past the checkpoint's step: TensorBoard then drops the
    killed run's events from that step on, which the resumed run logs again, so no step appears twice."""

    def __init__(self, run: RunDir, resume_step: int | None):
        tensorboard = _require("tensorboard", "torch.utils.tensorboard", "tensorboard")
        self.writer = tensorboard.SummaryWriter(
            log_dir=str(run.root / "tensorboard"), purge_step=None if resume_step is None else resume_step + 1)
        self.step = resume_step or 0

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        if not values:
            return
        self.step = record["step"]
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, self.step)

    def image(self, tag: str, path: Path) -> None:
        from matplotlib.image import imread

        self.writer.add_image(tag, imread(path)[..., :3], self.step, dataformats="HWC")  # RGB of the RGBA PNG

    def close(self) -> None:
        self.writer.close()


@register("logger", "tensorboard")
@_needs("torch.utils.tensorboard", "tensorboard")
def tensorboard(cfg: ExperimentConfig, run: RunDir, *, resume_step: int | None) -> Logger:
    """TensorBoard event files in RUN/tensorboard (tensorboard --logdir runs/)."""
    return TensorBoardLogger(run, resume_step)


class WandbLogger(Logger):
    """A Weights & Biases run in ``RUN/wandb/``: offline (``wandb sync`` uploads it later) unless ``WANDB_MODE``
    is set. Its id is kept in ``run.json`` (``wandb_id``), so a resumed dmpf run continues the same wandb run;
    steps the killed run had already sent are not sent again (wandb keeps steps monotonic), and a resumed run
    logs them with the same values anyway (resuming is exact)."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir, resume_step: int | None):
        wandb = _require("wandb", "wandb", "wandb")
        run_id = run.read_status().get("wandb_id")
        if not run_id:
            run_id = secrets.token_hex(4)
            run.write_status(wandb_id=run_id)
        try:
            self.run = wandb.init(
                id=run_id, resume="allow", dir=str(run.root), mode=None if os.environ.get("WANDB_MODE") else "offline",
                project=os.environ.get("WANDB_PROJECT", "dmpf"), group=cfg.name, name=run.root.name,
                config=cfg.model_dump(mode="json"), settings=wandb.Settings(console="off", silent=True))
        except Exception as exc:  # wandb's own errors (no API key online, a network failure): one line
            detail = " ".join(str(exc).split())
            raise LoggerError(f"{KEY}: wandb could not start: {type(exc).__name__}: {detail}") from None
        self.step = resume_step or 0
        self.wandb = wandb

    def log(self, record: dict[str, Any]) -> None:
        values = scalars(record)
        if values:
            self.step = record["step"]
            self.run.log({**values, "epoch": record["epoch"]} if "epoch" in record else values, step=self.step)

    def image(self, tag: str, path: Path) -> None:
        self.run.log({tag: self.wandb.Image(str(path))}, step=self.step)

    def close(self) -> None:
        # closed while an error (Ctrl-C, a pruned sweep trial) unwinds the run: wandb shows it as failed, not finished
        self.run.finish(exit_code=1 if sys.exc_info()[0] is not None else 0)


@register("logger", "wandb")
@_needs("wandb", "wandb")
def wandb(cfg: ExperimentConfig, run: RunDir, *, resume_step: int | None) -> Logger:
    """Weights & Biases, offline by default, in RUN/wandb (wandb sync to upload)."""
    return WandbLogger(cfg, run, resume_step)
