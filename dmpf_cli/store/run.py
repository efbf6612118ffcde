"""One run directory: where its files are, its ``run.json`` record, its state and its ``results.json``.

A run directory holds everything one training run produced::

    DIR/config.yaml         the resolved config it ran with
    DIR/run.json            status (running / finished / failed / pruned), seed, data, backbone (and its weights'
                            fingerprint), versions
    DIR/metrics.jsonl       one record per optimizer step and per epoch
    DIR/checkpoints/last/weights.safetensors + state.pt   resumable: trainable weights; optimizer, scheduler, RNG, loop
    DIR/checkpoints/best.safetensors                     the best validation epoch's weights
    DIR/predictions.npz     the best checkpoint's scores on valid and test, with the sample ids and labels
    DIR/results.json        test metrics of the best checkpoint
    DIR/curves.png          training curves
    DIR/tensorboard/, DIR/wandb/   the event files of those metric loggers, when configured (training.loggers)

Beside it, ``PARENT/.DIR.lock``: held (``flock``) by the process training the run, so a second one (a grid run
again while its jobs still train, ``--resume`` twice) is refused instead of writing the same files; it sits outside
the directory, so ``--overwrite`` cannot remove it from under its holder.

**State.** Whether a run is finished is decided here, once (:attr:`RunDir.state`), from run.json's ``status``
alone: a run writes ``results.json`` and its predictions before it writes ``status: finished``, so the status is the
run's last word. Everything that asks — ``dmpf train`` (refusing to clobber, ``--resume``, a multi-seed root's kept
seeds), a grid's jobs, ``dmpf report``, ``dmpf eval``, ``encoders.init_from`` — asks :attr:`RunDir.state`. A finished
run whose ``results.json`` has gone is a damaged run: :meth:`RunDir.read_results` says so in one line.

The weights and the resumable state are :mod:`dmpf_cli.store.checkpoints`'; seeds.json and grid.json, the files of
the directories of many runs, :mod:`dmpf_cli.store.roots`'.
"""

from __future__ import annotations

import json
from contextlib import ExitStack, contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from ..errors import DmpfError
from ..fileio import LockHeld, atomic_write_text, hold


class RunError(DmpfError):
    """A run directory, a directory of runs or a checkpoint that cannot be used; one line."""


class RunState(Enum):
    """Where a run directory stands; the value is run.json's ``status`` (``new``: it has no run.json yet)."""

    NEW = "new"  # no run.json: nothing has run there yet
    RUNNING = "running"  # training now, or killed (a crash, Ctrl-C, the end of a Slurm allocation): it may be resumed
    FINISHED = "finished"  # trained and tested: results.json and predictions.npz are there
    FAILED = "failed"  # a sweep trial that raised, or whose worker died (its error in run.json)
    PRUNED = "pruned"  # a sweep trial its pruner stopped early


WRITTEN = tuple(s.value for s in RunState if s is not RunState.NEW)  # the statuses a run.json may hold
ENCODER_STAGE = "pretrain-encoders"  # run.json "kind" of an encoder pre-training run (dmpf pretrain-encoders)


def read_json(path: Path) -> Any:
    """A JSON file of a run (or of a directory of runs); a missing or damaged one is a one-line :class:`RunError`."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON, bad UTF-8
        raise RunError(f"{path}: unreadable ({type(exc).__name__}: {' '.join(str(exc).split())})") from None


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()

    config = property(lambda self: self.root / "config.yaml")
    status_file = property(lambda self: self.root / "run.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.checkpoints / "last")
    best = property(lambda self: self.checkpoints / "best.safetensors")
    results = property(lambda self: self.root / "results.json")
    predictions = property(lambda self: self.root / "predictions.npz")
    curves = property(lambda self: self.root / "curves.png")

    # -- run.json -------------------------------------------------------------------------------------

    def read_status(self) -> dict[str, Any]:
        """run.json ({} before the run has written one); a damaged one is a one-line :class:`RunError`."""
        if not self.status_file.is_file():
            return {}
        record = read_json(self.status_file)
        if not isinstance(record, dict):
            raise RunError(f"{self.status_file}: damaged: expected a JSON object of the run's status, got "
                           f"{json.dumps(record)[:60]}")
        return record

    def write_status(self, **fields: Any) -> None:
        """Add ``fields`` to run.json (made when missing), atomically."""
        atomic_write_text(self.status_file, json.dumps({**self.read_status(), **fields}, indent=1))

    @property
    def state(self) -> RunState:
        """The run's state, from run.json's ``status``: the one place that decides it. A run.json whose status is
        none of :data:`WRITTEN` is a one-line :class:`RunError`."""
        if not self.status_file.is_file():
            return RunState.NEW
        status = self.read_status().get("status")
        if status not in WRITTEN:
            raise RunError(f"{self.status_file}: status: expected one of {', '.join(WRITTEN)}, got "
                           f"{json.dumps(status)[:60]}")
        return RunState(status)

    @property
    def finished(self) -> bool:
        return self.state is RunState.FINISHED

    # -- results.json ---------------------------------------------------------------------------------

    def read_results(self) -> dict[str, Any]:
        """results.json, a JSON object with the ``test`` metrics; missing or damaged: a one-line :class:`RunError`."""
        if not self.results.is_file():
            raise RunError(f"{self.results}: missing (the run wrote no results; train it again)")
        results = read_json(self.results)
        if not isinstance(results, dict) or not isinstance(results.get("test"), dict):
            raise RunError(f"{self.results}: no test metrics")
        return results

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_text(self.results, json.dumps(results, indent=1))

    # -- the directory --------------------------------------------------------------------------------

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the run for this process while it trains (its lock, :func:`dmpf_cli.fileio.hold`, let go when the
        process ends, however it ends); a run another process holds is a one-line error naming it."""
        with ExitStack() as stack:
            try:
                stack.enter_context(hold(self.root))
            except LockHeld as held:
                raise RunError(f"{self.root}: being trained by {held.holder or 'another process'}; wait for it to end, or stop it "
                               "(a killed run resumes)") from None
            yield

    def backbone_mismatch(self, fingerprint: str | None) -> str | None:
        """Why the frozen backbone built now is not the one this run trained with (None when it is, or
        when either side has no fingerprint: a run from before fingerprints, a meta build)."""
        record = self.read_status()
        then = record.get("backbone_fingerprint")
        if not then or not fingerprint or then == fingerprint:
            return None
        import transformers

        trained_with = (record.get("versions") or {}).get("transformers")
        versions = (f"; transformers {trained_with} then, {transformers.__version__} now"
                    if trained_with and trained_with != transformers.__version__ else "")
        return (f"the frozen backbone's weights differ from the ones {self.root} trained with (fingerprint "
                f"{fingerprint} now, {then} then{versions})")

    def require(self, option: str = "--run") -> None:
        """A one-line error (naming ``option``) unless this is a dmpf run directory."""
        if self.root.is_file():
            raise RunError(f"{option}: {self.root} is a file; pass the run directory that holds it (with "
                           "config.yaml and run.json)")
        if not self.root.is_dir():
            raise RunError(f"{option}: {self.root}: no such run directory")
        if not self.is_run():
            raise RunError(f"{option}: {self.root}: not a dmpf run directory (no config.yaml / run.json)")

    def is_run(self) -> bool:
        """Whether this looks like a run directory: its config and its run.json are there."""
        return self.config.is_file() and self.status_file.is_file()
