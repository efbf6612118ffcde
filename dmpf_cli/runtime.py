"""Running a model, in training and in scoring alike: where (the device), in which precision, compiled or
not, and scoring it on batches (:func:`predict`, :func:`evaluate`) in the precision it trains in."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .config import ExperimentConfig
from .errors import DmpfError


def check_compile(mode: str, device: str, grad_accum: int = 1) -> None:
    """A one-line error where ``training.compile`` cannot run: CUDA graphs off CUDA, or with accumulation."""
    if mode == "reduce-overhead" and device != "cuda":
        raise DmpfError("training.compile: reduce-overhead captures CUDA graphs and needs a CUDA device; "
                        "use default or off here")
    if mode == "reduce-overhead" and grad_accum > 1:
        # each graph replay overwrites the gradient buffers the previous micro-batch left (pytorch#169545)
        raise DmpfError(f"training.compile: reduce-overhead cannot accumulate gradients (training.grad_accum is "
                        f"{grad_accum}); use compile=default, or grad_accum=1 with a larger training.batch_size")


def compiled(model: nn.Module, mode: str, device: str) -> nn.Module:
    """``training.compile``: the model itself, or torch.compile'd (reduce-overhead = CUDA graphs, CUDA only)."""
    check_compile(mode, device)
    return model if mode == "off" else torch.compile(model, mode=mode)


def autocast(cfg: ExperimentConfig, device: str):
    """bf16 autocast on CUDA with ``training.precision: bf16``; otherwise nothing (fp32)."""
    if device == "cuda" and cfg.training.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def predict(model: nn.Module, loader, cfg: ExperimentConfig, device: str, drop_streams: tuple[str, ...] = (),
            progress=None, what: str = "scoring") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores, labels, sample indices) over a loader, in the training precision; fillers dropped. ``progress``: a
    :class:`~dmpf_cli.progress.Progress` that shows the batches as the task ``what``."""
    model.eval()
    scores, labels, indices, weights = [], [], [], []
    batches = progress.track(loader, what, unit="batches") if progress else loader
    for batch in batches:  # results stay on the device: one copy back at the end, no sync per batch
        batch = to_device(batch, device)
        with autocast(cfg, device):
            out = model(batch, drop_streams=drop_streams)
        scores.append(out.score.float())
        labels.append(batch["labels"].float())
        indices.append(batch["index"])
        weights.append(batch["weight"])
    if not scores:
        return torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.long)
    real = torch.cat(weights).cpu() > 0  # drop the fillers of a last batch
    return torch.cat(scores).cpu()[real], torch.cat(labels).cpu()[real], torch.cat(indices).cpu()[real]


def evaluate(model, loader, cfg: ExperimentConfig, device: str, drop_streams: tuple[str, ...] = (), progress=None,
             what: str = "scoring") -> dict[str, float]:
    """The MMSA metrics of the model's scores over a loader (``drop_streams``: the modality ablation)."""
    from .metrics import compute_metrics

    scores, labels, _ = predict(model, loader, cfg, device, drop_streams, progress, what)
    return compute_metrics(scores, labels, cfg.data.dataset)
