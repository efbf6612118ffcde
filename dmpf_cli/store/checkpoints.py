"""Run directories and checkpoints.

A run directory holds everything one training run produced::

    DIR/config.yaml         the resolved config it ran with
    DIR/run.json            status (running / finished), seed, data, backbone (and its weights' fingerprint), versions
    DIR/metrics.jsonl       one record per optimizer step and per epoch
    DIR/checkpoints/last/weights.safetensors + state.pt   resumable: trainable weights; optimizer, scheduler, RNG, loop
    DIR/checkpoints/best.safetensors                     the best validation epoch's weights
    DIR/predictions.npz     the best checkpoint's scores on valid and test, with the sample ids and labels
    DIR/results.json        test metrics of the best checkpoint (written last)
    DIR/curves.png          training curves
    DIR/tensorboard/, DIR/wandb/   the event files of those metric loggers, when configured (training.loggers)

Beside it, ``PARENT/.DIR.lock``: held (``flock``) by the process training the run, so a second one (a grid run
again while its jobs still train, ``--resume`` twice) is refused instead of writing the same files; it sits outside
the directory, so ``--overwrite`` cannot remove it from under its holder.

Checkpoints hold the trainable state only (everything but the frozen backbone), as safetensors;
every file is written to a temporary name and renamed, so a killed run never leaves a torn file, and
the resumable pair is published as one directory, so its two files always belong to the same step.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from ..errors import DmpfError
from ..fileio import LockHeld, atomic_write_text, follow_umask, hold, temporary_name

BACKBONE_PREFIX = "lm.gpt2."


class RunError(DmpfError):
    """A run directory or checkpoint that cannot be used; one line."""


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()

    config = property(lambda self: self.root / "config.yaml")
    status = property(lambda self: self.root / "run.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.checkpoints / "last")
    best = property(lambda self: self.checkpoints / "best.safetensors")
    results = property(lambda self: self.root / "results.json")
    predictions = property(lambda self: self.root / "predictions.npz")
    curves = property(lambda self: self.root / "curves.png")

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

    def read_status(self) -> dict[str, Any]:
        """run.json ({} before the run has written one); a damaged one is a one-line :class:`RunError`."""
        try:
            record = json.loads(self.status.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.status}: unreadable ({exc})") from None
        if not isinstance(record, dict):
            raise RunError(f"{self.status}: damaged: expected a JSON object of the run's status, got "
                           f"{json.dumps(record)[:60]}")
        return record

    def write_status(self, **fields: Any) -> None:
        atomic_write_text(self.status, json.dumps({**self.read_status(), **fields}, indent=1))

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
        if not self.config.is_file() or not self.status.is_file():
            raise RunError(f"{option}: {self.root}: not a dmpf run directory (no config.yaml / run.json)")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Everything of the model but the frozen backbone: trainable weights and buffers (BatchNorm statistics)."""
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(BACKBONE_PREFIX)}


def save_predictions(path: Path, splits: dict[str, tuple[list[str], Any, Any]]) -> None:
    """Per split (ids, scores, labels) to ``path`` as ``{split}_ids``, ``{split}_pred``, ``{split}_label``,
    written atomically; what ``dmpf report``'s paired bootstrap resamples."""
    import numpy as np

    arrays = {}
    for split, (ids, scores, labels) in splits.items():
        arrays[f"{split}_ids"] = np.asarray([str(i) for i in ids], dtype=str)
        arrays[f"{split}_pred"] = np.asarray(scores, dtype=np.float32)
        arrays[f"{split}_label"] = np.asarray(labels, dtype=np.float32)
    tmp = temporary_name(path)
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """``predictions.npz`` as {split: {"ids", "pred", "label"}}; a damaged file is a one-line error."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise RunError(f"{path}: no stored predictions (a run from before dmpf stored them)") from None
    except Exception as exc:
        raise RunError(f"{path}: unreadable predictions ({type(exc).__name__})") from None
    splits = sorted({k.rsplit("_", 1)[0] for k in arrays})
    try:
        return {s: {"ids": arrays[f"{s}_ids"], "pred": arrays[f"{s}_pred"], "label": arrays[f"{s}_label"]}
                for s in splits}
    except KeyError as exc:
        raise RunError(f"{path}: incomplete predictions (no {exc.args[0]})") from None


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    state = {k: v.cpu() for k, v in trainable_state(model).items()}
    save_file(state, str(tmp), metadata=metadata or {})
    follow_umask(tmp)  # save_file creates its file 0600: a labmate could not read the run
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a checkpoint into ``model``; one that does not fit this config or is damaged is a one-line error."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise RunError(f"{path}: damaged checkpoint ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    expected = trainable_state(model)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' …' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, this config needs {tuple(expected[k].shape)}")
        raise RunError(f"{path}: checkpoint from another config: {'; '.join(parts)}")
    model.load_state_dict(state, strict=False)


def save_resumable(model: nn.Module, state: dict[str, Any], last: Path) -> None:
    """Weights and training state of one step, published together: build a new directory, then swap it in."""
    import shutil

    tmp = last.with_name(f".{last.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "weights.safetensors")
    torch.save(state, tmp / "state.pt")
    old = last.with_name(f"{last.name}.old")
    if last.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(last, old)  # a kill right here leaves last.old, which resuming falls back to
    os.replace(tmp, last)
    shutil.rmtree(old, ignore_errors=True)


def load_resumable(model: nn.Module, last: Path) -> dict[str, Any]:
    """Load the newest complete resumable checkpoint into ``model``; returns its training state."""
    folder = last if last.is_dir() else last.with_name(f"{last.name}.old")
    if not folder.is_dir():
        raise RunError(f"{last}: no resumable checkpoint in this run")
    load_weights(model, folder / "weights.safetensors")
    try:
        # tensors, numbers, lists and dicts only: weights_only refuses anything that could run code
        return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"{folder / 'state.pt'}: damaged training state "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
