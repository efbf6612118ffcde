"""Running a model, in training and in scoring alike: where (the device), with how many CPU threads, in which
precision, compiled or not, and scoring it on batches (:func:`predict`, :func:`evaluate`) in the precision it
trains in.

CPU threads: ``--threads N``, else ``OMP_NUM_THREADS``, else Slurm's ``SLURM_CPUS_PER_TASK``, else the CPUs this
process may run on (its affinity: ``taskset``, a cgroup's cpuset). torch alone takes a thread per physical core of
the machine, whatever share of it the process was given: on a lab machine two such runs side by side, or a Slurm
job without cgroups, crawl. :func:`cpu_threads` is the one place that decides the count, :func:`use_threads`
applies it; a grid's or sweep's local slots get their share of the cores through ``OMP_NUM_THREADS``
(:mod:`dmpf_cli.experiments.launch`; ``--threads N`` there: N each), which each slot's process then honours here.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ..config import ExperimentConfig
from ..errors import DmpfError


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
    from ..metrics import compute_metrics

    scores, labels, _ = predict(model, loader, cfg, device, drop_streams, progress, what)
    return compute_metrics(scores, labels, cfg.data.dataset)


# -- CPU threads ----------------------------------------------------------------------------------

THREAD_SOURCES = ("--threads", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")


def threads_text(n: int | str) -> str:
    """``"1 CPU thread"``, ``"4 CPU threads"``: how runs' headers and tables say it."""
    return f"{n} CPU thread{'' if int(n) == 1 else 's'}"


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one, else every CPU)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _positive(value: str, where: str) -> int:
    text = value.strip()
    if where == "OMP_NUM_THREADS":
        text = text.split(",")[0].strip()  # OpenMP's nested form "4,2": the outer level is ours
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        hint = "" if where == "--threads" else "; set it to one, or pass --threads N"
        raise DmpfError(f"{where}: expected a positive integer (CPU threads), got '{value}'{hint}")
    return n


def cpu_threads(option: str | int | None = None) -> tuple[int, str]:
    """(threads, where the number comes from): ``option`` (``--threads``) > ``OMP_NUM_THREADS`` >
    ``SLURM_CPUS_PER_TASK`` > the process's CPU affinity. An invalid value is a one-line error naming its source
    (an empty variable counts as unset)."""
    values = (None if option is None else str(option), os.environ.get("OMP_NUM_THREADS"),
              os.environ.get("SLURM_CPUS_PER_TASK"))
    for where, value in zip(THREAD_SOURCES, values):
        if value is not None and (where == "--threads" or value.strip()):
            return _positive(value, where), where
    return available_cpus(), "affinity"


_torch_default: int | None = None  # torch's own choice, before this process changed it


def use_threads(option: str | int | None = None) -> int:
    """Compute with :func:`cpu_threads`' count: torch's intra-op threads (and its inter-op threads where torch still
    allows it: once per process, before any parallel work). The affinity fallback never raises torch's own default
    (one thread per physical core: more, on hyper-threads, is slower). Returns the count torch uses now."""
    global _torch_default
    n, where = cpu_threads(option)
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    if where == "affinity":
        n = min(n, _torch_default)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # set already in this process, or parallel work has started: torch refuses
        pass
    return torch.get_num_threads()
