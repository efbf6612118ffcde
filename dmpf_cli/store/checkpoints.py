"""A run's checkpoints: its trainable weights (``checkpoints/best.safetensors``), its resumable state
(``checkpoints/last/``: weights and the optimizer, scheduler, RNG and loop state of one step) and its stored
predictions (``predictions.npz``). Where these files sit in a run directory is :class:`dmpf_cli.store.run.RunDir`'s.

Checkpoints hold the trainable state only (everything but the frozen backbone), as safetensors;
every file is written to a temporary name and renamed, so a killed run never leaves a torn file, and
the resumable pair is published as one directory, so its two files always belong to the same step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..fileio import follow_umask, temporary_name
from .run import RunError

BACKBONE_PREFIX = "lm.gpt2."


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


def resumable_folder(last: Path) -> Path | None:
    """The newest complete resumable checkpoint: ``last``, else the ``last.old`` a kill during its swap left; None
    when the run has none (it died before its first checkpoint)."""
    for folder in (last, last.with_name(f"{last.name}.old")):
        if folder.is_dir():
            return folder
    return None


def load_resumable(model: nn.Module, last: Path) -> dict[str, Any]:
    """Load the newest complete resumable checkpoint into ``model``; returns its training state."""
    folder = resumable_folder(last)
    if folder is None:
        raise RunError(f"{last}: no resumable checkpoint in this run")
    load_weights(model, folder / "weights.safetensors")
    try:
        # tensors, numbers, lists and dicts only: weights_only refuses anything that could run code
        return torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunError(f"{folder / 'state.pt'}: damaged training state "
                       f"({type(exc).__name__}: {' '.join(str(exc).split())})") from None
