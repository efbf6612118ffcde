"""``dmpf bench``: the full DMPF training step, timed side by side for every backend × precision × compile mode.

Each row times the whole step — encoders, fused frozen GPT-2 with MM blocks, heads, loss, backward,
AdamW — on a batch in the config's shapes, after warm-up (compilation included there, not in the
timing), then the evaluation forward pass alone on the same batch. The first row is always the reference
recipe (fp32, eager attention, no compile), so every other row is a speed-up measured in the same run; with
``before``, each uncompiled row is preceded by its twin on the plain kernels and code paths the speed-ups
replace (design.md §6), timed in alternating rounds with it, and the first row is the reference's twin. FLOPs
per step come from torch's FLOP counter on the reference row; the matmul peak is measured here, on this
device, in each precision. Beside the rows: the training data loader's samples/s, and the scoring of the
validation split as ``dmpf eval`` and ``dmpf predict`` score (loader, model, gathering).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ExperimentConfig, token_counts
from ..data.prepared import Prepared
from ..progress import Progress
from ..streams import DATASETS, MODALITIES


@dataclass(frozen=True)
class Setup:
    backend: str
    precision: str
    compile: str
    speedups: bool = True  # False: the plain kernels the speed-ups replace (design.md §6)

    @property
    def label(self) -> str:
        return f"{self.precision} {self.backend} {self.compile}" + ("" if self.speedups else " (before)")


def padded_lengths(cfg: ExperimentConfig) -> tuple[int, ...]:
    """Each modality's padded length in the config's dataset (the synthetic sizes have their own)."""
    if DATASETS[cfg.data.dataset].generated:
        from ..data.synthetic import SIZES

        spec = SIZES[cfg.data.synthetic_size]
        return spec.audio_len, spec.vision_len
    return DATASETS[cfg.data.dataset].padded_lengths


def make_batch(cfg: ExperimentConfig, batch_size: int, dims: tuple[int, ...], vocab: int, device: str,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch in the config's shapes (text_len, each modality's padded length), with varied lengths."""
    g = torch.Generator().manual_seed(seed)
    T = cfg.data.text_len
    batch = {
        "text_ids": torch.randint(0, vocab, (batch_size, T), generator=g),
        "text_real": torch.arange(T)[None, :] < torch.randint(T // 2, T + 1, (batch_size, 1), generator=g),
    }
    for m, length, dim in zip(MODALITIES, padded_lengths(cfg), dims):
        batch[m.key] = torch.randn(batch_size, length, dim, generator=g)
        batch[m.lengths] = torch.randint(length // 3, length + 1, (batch_size,), generator=g)
    batch["labels"] = torch.rand(batch_size, generator=g) * 6 - 3
    batch["weight"] = torch.ones(batch_size)
    return {k: v.to(device) for k, v in batch.items()}


def matmul_peak(device: str, dtype: torch.dtype, size: int | None = None, repeats: int = 10) -> float:
    """Achieved TFLOP/s of a large square matmul in ``dtype``: the yardstick for the rows."""
    n = size or (8192 if device == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def setups(device: str, backends: list[str] | None, precisions: list[str] | None,
           compiles: list[str] | None, before: bool = False) -> tuple[list[Setup], list[str]]:
    """The rows to run (reference first; with ``before``, each uncompiled row preceded by its twin on the plain
    kernels) and notes on what is unavailable here."""
    from ..model.attention import xformers_problem

    notes = []
    backends = backends or ["xformers", "sdpa", "eager"]
    if "xformers" in backends and (problem := xformers_problem(device)):
        backends = [b for b in backends if b != "xformers"]
        notes.append(f"xformers: {problem}")
    precisions = precisions or ["fp32", "bf16"]
    compiles = compiles or (["off", "default", "reduce-overhead"] if device == "cuda" else ["off"])
    if device != "cuda" and "reduce-overhead" in compiles:
        compiles = [c for c in compiles if c != "reduce-overhead"]
        notes.append("reduce-overhead: CUDA graphs need a CUDA device")
    reference = Setup("eager", "fp32", "off")
    rows = [reference] + [Setup(b, p, c) for p in precisions for c in compiles for b in backends
                          if Setup(b, p, c) != reference]
    if before:
        rows = [twin for row in rows for twin in
                ((Setup(row.backend, row.precision, row.compile, speedups=False), row) if row.compile == "off" else (row,))]
    return rows, notes


class Runner:
    """One row's model, optimizer and batch, built and ready to take full training steps."""

    def __init__(self, cfg: ExperimentConfig, setup: Setup, batch: dict, device: str, dims: tuple[int, ...]):
        from ..model.dmpf import build_model
        from .runtime import compiled
        from .schedule import build_optimizer

        self.cfg, self.setup, self.batch, self.device = cfg, setup, batch, device
        self.model, _ = build_model(cfg, dims=dims, device=device, precision=setup.precision,
                                    speedups=setup.speedups)
        self.model.train()
        self.model.attention = setup.backend
        self.net = compiled(self.model, setup.compile, device)
        self.optimizer = build_optimizer(self.model, cfg, fused=setup.speedups)
        self.autocast = (torch.autocast(device, dtype=torch.bfloat16) if setup.precision == "bf16"
                         else contextlib.nullcontext())
        self.times: list[float] = []
        self.loss = float("nan")

    def step(self) -> torch.Tensor:
        from ..model.losses import dmpf_loss

        with self.autocast:
            out = self.net(self.batch)
        loss, _ = dmpf_loss(out.score.float(), {k: v.float() for k, v in out.aux.items()}, self.batch["labels"],
                            self.cfg.loss, None, self.batch["weight"], clm=out.clm)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def timed(self, n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            loss = self.step()
            _sync(self.device)
            self.times.append(time.perf_counter() - start)
        self.loss = float(loss)

    def result(self, steps: int, warmup: int, flops: float | None) -> dict[str, Any]:
        median = sorted(self.times)[len(self.times) // 2]
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.device == "cuda" else None
        return {"setup": self.setup.__dict__, "label": self.setup.label, "ms_per_step": median * 1e3,
                "samples_per_s": len(self.batch["labels"]) / median, "peak_memory_gib": peak,
                "flops_per_step": flops, "loss": self.loss,
                "eval_samples_per_s": eval_throughput(self.net, self.model, self.batch, self.autocast, self.device,
                                                      steps, warmup if self.setup.compile == "off" else max(warmup, 2))}


def run_setup(cfg: ExperimentConfig, setup: Setup, batch: dict, device: str, steps: int, warmup: int,
              dims: tuple[int, ...], count_flops: bool = False, twin: Setup | None = None) -> list[dict[str, Any]]:
    """Build the model for one row and time ``steps`` full training steps after ``warmup``.

    ``twin``: a second setup timed in the same stretch of time, in alternating rounds of steps, so that a
    machine's drift between rows (a tenth on a shared CPU) does not pass for a speed-up; its row comes first."""
    # every row compiles the same DMPF.forward: without a reset, rows past dynamo's recompile limit (8)
    # would silently run uncompiled, and earlier rows' CUDA graphs would count in this row's peak memory
    torch._dynamo.reset()
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    runners = [Runner(cfg, s, batch, device, dims) for s in ([twin] if twin else []) + [setup]]
    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            runners[0].step()
        flops = counter.get_total_flops()
    for runner in runners:
        for _ in range(max(warmup, 2) if setup.compile != "off" else warmup):  # never time the compiler
            runner.step()
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rounds = 5 if twin and steps >= 5 else 1
    for r in range(rounds):
        for runner in runners:
            runner.timed(steps // rounds + (1 if r < steps % rounds else 0))
    return [runner.result(steps, warmup, flops) for runner in runners]


def eval_throughput(net, model, batch: dict, autocast, device: str, steps: int, warmup: int) -> float:
    """Samples/s of the evaluation forward pass (eval mode, no autograd) on ``batch``: the median of ``steps``."""
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(warmup + steps):
            start = time.perf_counter()
            with autocast:
                net(batch)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    model.train()
    return len(batch["labels"]) / sorted(times)[len(times) // 2]


def loader_throughput(cfg: ExperimentConfig, batch_size: int, batches: int = 50, console=None,
                      prepared: Prepared | None = None) -> tuple[float | None, str | None]:
    """Samples/s of the training data loader over the prepared data (``prepared``, else opened here), or None and
    why not.

    The synthetic dataset is generated on first use, as ``dmpf train`` does; other datasets must have
    been prepared."""
    from ..data.batches import SplitDataset, make_loader
    from ..errors import DmpfError
    from ..model.tokenizer import load_tokenizer
    from .datasets import open_data

    try:
        prepared = prepared or open_data(cfg, console)
    except DmpfError as exc:
        return None, str(exc)
    dataset = SplitDataset(prepared.split("train"), load_tokenizer(cfg.backbone), cfg.data.text_len)
    loader = make_loader(dataset, batch_size, shuffle=True, num_workers=cfg.data.num_workers,
                         pin_memory=torch.cuda.is_available())
    start, seen = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        seen += len(batch["index"])
        if i + 1 >= batches:
            break
    return seen / (time.perf_counter() - start), None


def scoring_throughput(cfg: ExperimentConfig, prepared: Prepared, batch_size: int) -> float:
    """Samples/s of scoring the prepared validation split as ``dmpf eval`` and ``dmpf predict`` do
    (:func:`~dmpf_cli.recipes.runtime.predict`: the loader, the model in eval mode, the scores gathered), with a
    freshly initialised model of ``cfg``."""
    from ..data.batches import SplitDataset, make_loader
    from ..model.dmpf import build_model, resolve_device
    from .runtime import predict

    device = resolve_device(cfg.training.device)
    model, backbone = build_model(cfg, dims=prepared.dims, device=device)
    split = SplitDataset(prepared.split("valid"), backbone.tokenizer, cfg.data.text_len)
    loader = make_loader(split, batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                         pin_memory=device == "cuda")
    with torch.inference_mode():
        predict(model, loader, cfg, device)  # warm-up: the first pass pays for allocations and lazy inits
        start = time.perf_counter()
        scores, _, _ = predict(model, loader, cfg, device)
    return len(scores) / (time.perf_counter() - start)


def bench(cfg: ExperimentConfig, *, batch_size: int | None, steps: int, warmup: int, backends: list[str] | None,
          precisions: list[str] | None, compiles: list[str] | None, progress: Progress | None = None,
          console=None, before: bool = False) -> dict[str, Any]:
    from ..model.backbones import backbone_shapes
    from ..model.dmpf import resolve_device
    from .pretrain_lm import ensure_backbone

    device = resolve_device(cfg.training.device)
    ensure_backbone(cfg.backbone, console)  # the demo LM is pretrained on first use, as train does
    batch_size = batch_size or cfg.training.batch_size
    dims = DATASETS[cfg.data.dataset].feature_dims
    arch = backbone_shapes(cfg.backbone)
    batch = make_batch(cfg, batch_size, dims, arch.vocab_size, device)
    lengths = padded_lengths(cfg)
    rows, notes = setups(device, backends, precisions, compiles, before)
    peaks = {p: matmul_peak(device, torch.float32 if p == "fp32" else torch.bfloat16)
             for p in sorted({r.precision for r in rows})}
    results = []
    flops = None
    # a row on the plain kernels is timed together with the row after it, its twin on the fast ones
    groups = [rows[i:i + 2] if not rows[i].speedups else rows[i:i + 1]
              for i in range(len(rows)) if i == 0 or rows[i - 1].speedups]
    tracked = (progress or Progress(None)).track(groups, "benchmarking", unit="setups",
                                                 label=lambda g: g[-1].label)
    for i, group in enumerate(tracked):
        try:
            timed = run_setup(cfg, group[-1], batch, device, steps, warmup, dims, count_flops=i == 0,
                              twin=group[0] if len(group) == 2 else None)
        except Exception as exc:  # a row that cannot run here is reported, the others still run
            results += [{"setup": setup.__dict__, "label": setup.label,
                         "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"} for setup in group]
            continue
        for row in timed:
            flops = flops or row["flops_per_step"]
            seconds = row["ms_per_step"] / 1e3
            row["tflops"] = flops / seconds / 1e12 if flops else None
            row["fraction_of_peak"] = row["tflops"] / peaks[row["setup"]["precision"]] if flops else None
        if len(timed) == 2:
            timed[1]["speedup_over_plain"] = timed[0]["ms_per_step"] / timed[1]["ms_per_step"]
        results += timed
    reference = results[0].get("ms_per_step")
    for row in results:
        if "ms_per_step" in row and reference:
            row["speedup"] = reference / row["ms_per_step"]
    # the prepared data, opened once for the loader and the scoring (the synthetic set made on first use)
    from ..errors import DmpfError
    from .datasets import open_data

    try:
        prepared, data_note = open_data(cfg, console), None
    except DmpfError as exc:
        prepared, data_note = None, str(exc)
    loader, loader_note = (loader_throughput(cfg, batch_size, console=console, prepared=prepared) if prepared
                           else (None, data_note))
    scoring = scoring_throughput(cfg, prepared, batch_size) if prepared else None
    return {
        "config": cfg.name, "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "backbone": f"{cfg.backbone.name} ({arch.label})", "batch_size": batch_size,
        "shapes": {"text_len": cfg.data.text_len, "fusion_tokens": sum(token_counts(cfg).values()),
                   **{m.key: [length, dim] for m, length, dim in zip(MODALITIES, lengths, dims)}},
        "matmul_peak_tflops": peaks, "flops_per_step": flops, "rows": results, "notes": notes,
        "loader_samples_per_s": loader, "loader_not_measured": loader_note,
        "scoring_samples_per_s": scoring, "scoring_not_measured": data_note,
        "torch": torch.__version__,
    }
