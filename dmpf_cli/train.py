"""The training recipe (SPEC §6), read top to bottom: data → model → optimizer → loop → best checkpoint → test.

* AdamW, betas from the config, two learning-rate groups — the LM side (MM blocks, fusion tokens,
  heads) and the encoder side — with weight decay on weight matrices only (not biases, norms, gates,
  fusion tokens or type embeddings).
* Gradient accumulation that averages, gradient clipping, linear warm-up then cosine decay, per
  optimizer step.
* Early stopping on validation MAE (patience, max epochs); the best-validation checkpoint is tested once.
* bf16 autocast on CUDA when ``training.precision: bf16``; evaluation runs in the training precision.
* Resumable: a checkpoint holds the trainable weights, optimizer, scheduler, RNG and loop position, so
  a killed run resumed with ``--resume`` ends exactly where an uninterrupted one would.
* Distributed: under ``torchrun`` each rank trains on its share of every epoch's batches through DDP;
  rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

from .checkpoints import RunDir, RunError, atomic_write_text, load_resumable, load_weights, save_resumable, save_weights
from .config import ExperimentConfig, load_config, to_yaml
from .errors import DmpfError

SEEDS_FILE = "seeds.json"  # in the root of a multi-seed run: the seeds, so `--resume ROOT` can finish them all

LM_SIDE = ("lm.", "head.", "aux.")  # parameter name prefixes of the LM-side learning-rate group
NO_DECAY_NAMES = ("lm.tokens.", "type_emb")  # 2-D, but embeddings, not weight matrices


# -- distributed -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


# -- data ------------------------------------------------------------------------------------------

def open_data(cfg: ExperimentConfig, console: Console | None = None, *, prepare_missing: bool = True):
    """The prepared dataset ``cfg`` names; the synthetic one is generated on first use."""
    from .prepared import default_dir, open_prepared

    data = cfg.data
    if data.path:
        path = Path(data.path).expanduser()
    elif data.dataset == "synthetic":
        path = default_dir("synthetic", data.synthetic_size, data.synthetic_seed)
    else:
        path = default_dir(data.dataset)
    if data.dataset == "synthetic" and prepare_missing and not data.path:
        from .prepare import prepare_synthetic

        if console and not (path / "manifest.json").is_file():
            console.print(f"preparing the synthetic '{data.synthetic_size}' dataset in {path} (first use)")
        # a no-op when it is there and current; regenerated when the generator has changed since
        prepare_synthetic(data.synthetic_size, data.synthetic_seed, path, overwrite=False,
                          console=console or Console(quiet=True))
    elif not path.is_dir():
        how = (f"--size {data.synthetic_size} --seed {data.synthetic_seed}" if data.dataset == "synthetic"
               else "--source FILE.pkl")
        raise DmpfError(f"data.path: no prepared {data.dataset} dataset at {path}; run "
                        f"`dmpf prepare --dataset {data.dataset} {how} --output {path}` first")
    prepared = open_prepared(path)
    if prepared.dataset != data.dataset:
        raise DmpfError(f"data.path: {path} holds the {prepared.dataset} dataset, the config says {data.dataset}")
    if cfg.loss.unimodal_labels and not prepared.manifest.get("unimodal_labels"):
        raise DmpfError(f"loss.unimodal_labels: the {prepared.dataset} data in {path} has no unimodal labels "
                        "(CH-SIMS has T/A/V); set it to false")
    return prepared


def to_device(batch: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def unimodal_labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    labels = {k[-1]: batch[k] for k in ("labels_T", "labels_A", "labels_V") if k in batch}
    return labels or None


# -- optimizer and schedule ------------------------------------------------------------------------

def build_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.AdamW:
    """AdamW with four groups: {LM side, encoders} × {decay, no decay}."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        side = "lm" if name.startswith(LM_SIDE) else "encoders"
        decay = p.ndim >= 2 and not any(tag in name for tag in NO_DECAY_NAMES)
        groups.setdefault((side, decay), []).append(p)
    o = cfg.optimizer
    lr = {"lm": o.lr_lm, "encoders": o.lr_encoders}
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr[side], "weight_decay": o.weight_decay if decay else 0.0, "name": f"{side}/{'decay' if decay else 'no_decay'}"}
         for (side, decay), ps in sorted(groups.items())],
        betas=tuple(o.betas), eps=o.eps,
    )


def lr_factor(step: int, warmup: int, total: int, kind: str, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` optimizer steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# -- evaluation ------------------------------------------------------------------------------------

def check_compile(mode: str, device: str, grad_accum: int = 1) -> None:
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
    if device == "cuda" and cfg.training.precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(model: nn.Module, loader, cfg: ExperimentConfig, device: str,
            drop_streams: tuple[str, ...] = ()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scores, labels, sample indices) over a loader, in the training precision."""
    model.eval()
    scores, labels, indices, weights = [], [], [], []
    for batch in loader:  # results stay on the device: one copy back at the end, no sync per batch
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


def evaluate(model, loader, cfg: ExperimentConfig, device: str, drop_streams: tuple[str, ...] = ()) -> dict[str, float]:
    from .metrics import compute_metrics

    scores, labels, _ = predict(model, loader, cfg, device, drop_streams)
    return compute_metrics(scores, labels, cfg.data.dataset)


# -- one run ---------------------------------------------------------------------------------------

@dataclass
class LoopState:
    """Where the loop is; saved with every resumable checkpoint."""

    epoch: int = 0  # the epoch in progress
    batch_in_epoch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps taken
    best_mae: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    records: int = 0  # lines in metrics.jsonl at this point
    done: bool = False


def shard(batches: list[list[int]], world: Dist) -> list[list[int]]:
    """This rank's share of an epoch's batches; every rank gets the same count (wrapping around)."""
    per_rank = math.ceil(len(batches) / world.world)
    return [batches[(i * world.world + world.rank) % len(batches)] for i in range(per_rank)]


class Run:
    """One training run of one seed in one directory."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir, seed: int, console: Console, world: Dist):
        from .dataset import EpochBatchSampler, SplitDataset, make_loader
        from .model import build_model, resolve_device

        self.cfg, self.run, self.seed, self.console, self.world = cfg, run, seed, console, world
        self.device = resolve_device(cfg.training.device)
        self.data = open_data(cfg, prepare_missing=False)  # train_one has prepared it (rank 0 only)
        model, backbone = build_model(cfg, dims=self.data.dims, seed=seed, device=self.device)
        self.backbone_source = backbone.source
        self.backbone_fingerprint = backbone.fingerprint
        self.model = model
        self.ddp = nn.parallel.DistributedDataParallel(model) if world.world > 1 else None
        self.net = compiled(self.ddp or model, cfg.training.compile, self.device)  # what train and eval call
        pin = self.device == "cuda"
        t = cfg.data.text_len
        self.splits = {name: SplitDataset(self.data.split(name), backbone.tokenizer, t) for name in ("train", "valid", "test")}
        self.sampler = EpochBatchSampler(len(self.splits["train"]), cfg.training.batch_size, shuffle=True, seed=seed)
        self.eval_loaders = {name: make_loader(self.splits[name], cfg.training.batch_size, shuffle=False,
                                               num_workers=cfg.data.num_workers, pin_memory=pin)
                             for name in ("valid", "test")}
        self.optimizer = build_optimizer(model, cfg)
        self.steps_per_epoch = math.ceil(math.ceil(len(self.sampler) / world.world) / cfg.training.grad_accum)
        s = cfg.schedule
        warmup = round(s.warmup_epochs * self.steps_per_epoch)
        total = cfg.training.max_epochs * self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, warmup, total, s.kind, s.min_lr_ratio))
        self.state = LoopState()

    # -- persistence ---------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Save the resumable state at an optimizer-step boundary (rank 0 only)."""
        if not self.world.main:
            return
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_resumable(self.model, {
            "loop": vars(self.state).copy(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng, "seed": self.seed,
        }, self.run.last)

    def restore(self) -> None:
        state = load_resumable(self.model, self.run.last)
        if state.get("seed") != self.seed:
            raise RunError(f"{self.run.last}: saved by seed {state.get('seed')}, not {self.seed}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["cpu"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.state = LoopState(**state["loop"])
        if self.world.main and self.run.metrics.exists():  # drop records written after the checkpoint
            lines = self.run.metrics.read_text(encoding="utf-8").splitlines(keepends=True)[: self.state.records]
            atomic_write_text(self.run.metrics, "".join(lines))

    def log(self, record: dict[str, Any]) -> None:
        if self.world.main:
            with open(self.run.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.state.records += 1

    # -- the loop ------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch; the loss parts stay on the device (no host sync)."""
        from .losses import dmpf_loss

        batch = to_device(batch, self.device)
        with autocast(self.cfg, self.device):
            out = self.net(batch)
        loss, parts = dmpf_loss(out.score.float(), {k: v.float() for k, v in out.aux.items()}, batch["labels"],
                                self.cfg.loss, unimodal_labels(batch), batch["weight"])
        (loss / self.cfg.training.grad_accum).backward()  # accumulation averages the micro-batch losses
        return parts

    def optimizer_step(self, micro_batches: int) -> torch.Tensor:
        """Step with the gradients of ``micro_batches`` accumulated micro-batches; returns the grad norm."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if micro_batches != self.cfg.training.grad_accum:  # a short last group: still an average
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(self.cfg.training.grad_accum / micro_batches)
        clip = self.cfg.optimizer.grad_clip
        norm = nn.utils.clip_grad_norm_(params, clip if clip else math.inf)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        return norm

    def epoch_batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch: a function of (seed, epoch) only."""
        self.sampler.set_epoch(self.state.epoch)
        return shard(list(self.sampler), self.world)

    def fit(self, progress=None) -> None:
        from .dataset import batch_loader

        cfg, st = self.cfg, self.state
        accum = cfg.training.grad_accum
        while not st.done and st.epoch < cfg.training.max_epochs:
            self.model.train()
            batches = self.epoch_batches()
            loader = batch_loader(self.splits["train"], batches[st.batch_in_epoch:], num_workers=cfg.data.num_workers,
                                  pin_memory=self.device == "cuda")
            task = progress.add_task(f"epoch {st.epoch + 1}/{cfg.training.max_epochs}", total=len(batches),
                                     completed=st.batch_in_epoch) if progress else None
            group: list[dict[str, torch.Tensor]] = []
            t0, seen = time.perf_counter(), 0
            for i, batch in enumerate(loader, start=st.batch_in_epoch):
                steps_now = len(group) + 1 == accum or i == len(batches) - 1
                # DDP: gradients are all-reduced once per optimizer step, not once per micro-batch
                with self.ddp.no_sync() if self.ddp is not None and not steps_now else contextlib.nullcontext():
                    parts = self.train_step(batch)
                group.append(parts)
                seen += len(batch["index"])  # fillers included: they cost the same compute
                last_of_epoch = i == len(batches) - 1
                if len(group) == accum or last_of_epoch:
                    norm = self.optimizer_step(len(group))
                    st.batch_in_epoch = i + 1
                    if st.step % cfg.training.log_every == 0 or last_of_epoch:  # the only host sync of a step
                        mean = {k: float(torch.stack([g[k] for g in group]).mean()) for k in group[0]}
                        rate = seen * self.world.world / max(time.perf_counter() - t0, 1e-9)
                        lrs = {f"lr_{g['name'].split('/')[0]}": g["lr"] for g in self.optimizer.param_groups}
                        self.log({"kind": "step", "epoch": st.epoch, "step": st.step, "loss": mean["total"],
                                  "parts": mean, "grad_norm": float(norm), **lrs, "samples_per_s": rate})
                        if progress:
                            progress.update(task, completed=i + 1, info=f"loss {mean['total']:.3f} "
                                            f"(task {mean['task']:.3f}) lr {lrs.get('lr_lm', 0):.1e} {rate:,.0f} samples/s")
                    group = []
                    every = cfg.training.checkpoint_every
                    if every and st.step % every == 0 and not last_of_epoch:
                        self.checkpoint()
            if progress:
                progress.remove_task(task)
            self.end_epoch()

    def end_epoch(self) -> None:
        st, cfg = self.state, self.cfg
        valid = evaluate(self.net, self.eval_loaders["valid"], cfg, self.device)
        improved = valid["MAE"] < st.best_mae
        if improved:
            st.best_mae, st.best_epoch, st.bad_epochs = valid["MAE"], st.epoch, 0
            if self.world.main:
                save_weights(self.model, self.run.best, {"epoch": str(st.epoch), "valid_mae": f"{valid['MAE']:.6f}"})
        else:
            st.bad_epochs += 1
        self.log({"kind": "epoch", "epoch": st.epoch, "step": st.step, "valid": valid, "best": improved})
        if self.world.main:
            self.console.print(f"epoch {st.epoch + 1}: valid MAE {valid['MAE']:.4f} Corr {valid['Corr']:.4f}"
                               + ("  [green]best[/green]" if improved else f"  (no gain for {st.bad_epochs})"))
        st.epoch += 1
        st.batch_in_epoch = 0
        if st.bad_epochs >= cfg.training.patience:
            st.done = True
            if self.world.main:
                self.console.print(f"early stop: no validation gain for {st.bad_epochs} epochs")
        self.checkpoint()

    def test(self) -> dict[str, Any]:
        load_weights(self.model, self.run.best)
        test = evaluate(self.net, self.eval_loaders["test"], self.cfg, self.device)
        valid = evaluate(self.net, self.eval_loaders["valid"], self.cfg, self.device)
        return {"seed": self.seed, "best_epoch": self.state.best_epoch, "epochs": self.state.epoch,
                "steps": self.state.step, "test": test, "valid": valid}

    def parameter_checksum(self) -> float:
        return float(sum(p.detach().double().sum() for p in self.model.parameters() if p.requires_grad))


# -- the command -----------------------------------------------------------------------------------

def clear_output(root: Path, *, holds_run: bool, what: str, overwrite: bool, hint: str = "") -> None:
    """Make ``root`` ready for a new run: missing or empty is fine; a run there (``what``) is removed with
    ``overwrite`` only; anything else is refused. One-line errors name --output."""
    if root.exists() and not root.is_dir():
        raise RunError(f"--output: {root} is a file, not a directory; choose another --output")
    if not (root.exists() and any(root.iterdir())):
        return
    if not holds_run:
        raise RunError(f"--output: {root} exists and is not a dmpf run directory; choose another --output")
    if not overwrite:
        raise RunError(f"--output: {root} holds {what}; pass --overwrite to replace it{hint}")
    shutil.rmtree(root)


def prepare_run_dir(run: RunDir, cfg: ExperimentConfig, seed: int, *, resume: bool, overwrite: bool) -> None:
    """Create (or check, for --resume) the run directory; never clobbers a finished run without --overwrite."""
    status = run.read_status() if run.status.exists() else {}
    if resume:
        run.require("--resume")
        if status.get("status") == "finished":
            raise RunError(f"--resume: {run.root} has already finished")
        return
    what = "a finished run" if status.get("status") == "finished" else "an unfinished run (use --resume)"
    clear_output(run.root, holds_run=bool(status), what=what, overwrite=overwrite)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, to_yaml(cfg))
    run.metrics.write_text("", encoding="utf-8")
    run.write_status(status="running", seed=seed, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), versions=_versions())


def _versions() -> dict[str, str]:
    """What produced a run: recorded in run.json so a result can be traced to its software."""
    import platform

    import transformers

    from . import __version__

    return {"dmpf": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": str(torch.version.cuda), "python": platform.python_version()}


def train_one(cfg: ExperimentConfig, run: RunDir, seed: int, *, resume: bool, overwrite: bool, console: Console,
              world: Dist) -> dict[str, Any]:
    """Train one seed into ``run`` (or resume it) and test its best checkpoint; returns the results."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if world.main:  # train() has checked everything that can refuse the run: only now is the directory touched
        prepare_run_dir(run, cfg, seed, resume=resume, overwrite=overwrite)
    if world.world > 1:
        dist.barrier()
    trainer = Run(cfg, run, seed, console, world)
    if resume:
        if why := run.backbone_mismatch(trainer.backbone_fingerprint):  # its checkpoints fit that backbone only
            raise RunError(f"--resume: {why}; resuming would train on another backbone")
        trainer.restore()
        if world.main:
            console.print(f"resuming {run.root} at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    if world.main:
        run.write_status(data=str(trainer.data.path), data_fingerprint=trainer.data.fingerprint,
                         dims=list(trainer.data.dims), backbone=trainer.backbone_source,
                         backbone_fingerprint=trainer.backbone_fingerprint, device=trainer.device)
        console.print(f"[bold]{cfg.name}[/bold] seed {seed}: {cfg.data.dataset} data from {trainer.data.path}; "
                      f"backbone {cfg.backbone.name} ({trainer.backbone_source}); {trainer.device}; "
                      f"{sum(p.numel() for p in trainer.model.parameters() if p.requires_grad):,} trainable parameters")
        if cfg.training.precision == "bf16" and trainer.device != "cuda":
            console.print("[yellow]note[/yellow]: training.precision bf16 applies on CUDA only; this run is fp32")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, console=console, transient=True, disable=not (world.main and console.is_terminal)) as bar:
        trainer.fit(progress=_ProgressAdapter(bar))
    ddp = None
    if world.world > 1:  # the ranks must end with the same weights; then rank 0 alone tests and writes
        sums = [None] * world.world
        dist.all_gather_object(sums, trainer.parameter_checksum())
        ddp = {"world_size": world.world, "parameter_checksums": sums,
               "ranks_agree": all(abs(s - sums[0]) <= 1e-9 * max(1.0, abs(sums[0])) for s in sums)}
        dist.barrier()
        if not world.main:
            return {}
    results = trainer.test()
    results["backbone"] = trainer.backbone_source
    results["dataset"] = cfg.data.dataset
    if ddp:
        results["ddp"] = ddp
    if world.main:
        atomic_write_text(run.results, json.dumps(results, indent=1))
        plot_curves(run)
        run.write_status(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return results


class _ProgressAdapter:
    """rich Progress with an ``info`` field on every task."""

    def __init__(self, bar):
        self.bar = bar

    def add_task(self, description: str, **kw):
        return self.bar.add_task(description, info="", **kw)

    def update(self, task, **kw):
        self.bar.update(task, **kw)

    def remove_task(self, task):
        self.bar.remove_task(task)


def plot_curves(run: RunDir) -> None:
    """Training loss per step and validation MAE per epoch, to ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in run.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    a.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="total")
    a.plot([r["step"] for r in steps], [r["parts"]["task"] for r in steps], lw=0.8, label="task (L1)")
    a.set_xlabel("optimizer step"), a.set_ylabel("training loss"), a.legend(frameon=False)
    b.plot([r["epoch"] + 1 for r in epochs], [r["valid"]["MAE"] for r in epochs], marker="o")
    b.set_xlabel("epoch"), b.set_ylabel("validation MAE")
    fig.suptitle(run.root.name)
    fig.tight_layout()
    tmp = run.curves.with_name(f".{run.curves.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, run.curves)


def reference_scores(data: str | Path | None) -> dict[str, dict[str, float]]:
    """For a synthetic dataset (its prepared directory, as a run's run.json records it): what the ideal and
    restricted predictors reach on test (MAE, Corr), to print beside a run."""
    from .prepared import read_manifest

    manifest = read_manifest(Path(data)) if data and Path(data).is_dir() else None
    reference = (manifest or {}).get("synthetic", {}).get("reference", {})
    names = {"ideal": "noise floor", "no_interaction": "no A×V", "text_only": "text only"}
    return {label: {"MAE": reference[key]["mae"], "Corr": reference[key]["corr"]}
            for key, label in names.items() if key in reference}


def summarize_seeds(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """mean ± std (sample std; 0 for one seed) of every test metric over the seeds."""
    keys = results[0]["test"].keys()
    out = {}
    for key in keys:
        values = torch.tensor([r["test"][key] for r in results], dtype=torch.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std()) if len(values) > 1 else 0.0,
                    "values": values.tolist()}
    return out


def train(
    cfg: ExperimentConfig, output: Path | None, seeds: list[int] | None, *, resume: Path | None = None,
    overwrite: bool = False, console: Console,
) -> dict[str, Any]:
    """``dmpf train``: every seed, one run directory each (``DIR`` itself for one seed, ``DIR/seed-N`` for several)."""
    from .attention import resolve_backend
    from .backbones import check_available
    from .model import resolve_device

    multi_seed_root = resume is not None and (Path(resume) / SEEDS_FILE).is_file()
    if resume is not None:  # a resumed run keeps its own config (a multi-seed root holds one beside its seeds)
        if not multi_seed_root:
            RunDir(resume).require("--resume")
        cfg = load_config(config=Path(resume) / "config.yaml")
    # everything that can refuse the run is checked before any run directory is made, written or (with
    # --overwrite) emptied: the device, compile mode and attention backend here, the data and backbone below
    device = resolve_device(cfg.training.device)
    check_compile(cfg.training.compile, device, cfg.training.grad_accum)
    resolve_backend(cfg.training.attention, device)
    if cfg.data.path and not Path(cfg.data.path).expanduser().is_absolute():
        # stored absolute in the run's config, so eval and predict find the data from any directory
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(
            update={"path": str(Path(cfg.data.path).expanduser().resolve())})})
    world = init_distributed(device)
    if world.main:  # the data is generated on first use here, once, before any rank reads it
        open_data(cfg, console)
        check_available(cfg.backbone)
    if resume is not None and not multi_seed_root:
        run = RunDir(resume)
        seed = int(run.read_status().get("seed", cfg.training.seeds[0]))
        results = train_one(cfg, run, seed, resume=True, overwrite=False, console=console, world=world)
        return {"runs": {str(run.root): results}}
    if multi_seed_root:  # finished seeds are kept, the others resumed or started
        root = Path(resume)
        try:
            seeds = [int(s) for s in json.loads((root / SEEDS_FILE).read_text(encoding="utf-8"))["seeds"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunError(f"--resume: {root / SEEDS_FILE}: unreadable ({exc})") from None
    else:
        seeds = seeds or cfg.training.seeds
        # the default directory is new for every run, so a finished run is never in the way (nor overwritten)
        root = Path(output) if output else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if root.exists() and not root.is_dir():
            raise RunError(f"--output: {root} is a file, not a directory; choose another --output")
    runs = {seed: RunDir(root if len(seeds) == 1 else root / f"seed-{seed}") for seed in seeds}
    if len(seeds) > 1 and resume is None and world.main:  # what --resume ROOT needs to finish every seed
        clear_output(root, holds_run=RunDir(root).status.is_file() or (root / SEEDS_FILE).is_file(), what="a run",
                     overwrite=overwrite, hint=f", or --resume {root} to finish an interrupted one")
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "config.yaml", to_yaml(cfg))
        atomic_write_text(root / SEEDS_FILE, json.dumps({"seeds": seeds}))
    all_results = {}
    for seed, run in runs.items():
        status = run.read_status().get("status") if resume is not None and run.status.is_file() else None
        if status == "finished" and run.results.is_file():
            if world.main:
                console.print(f"seed {seed}: finished already in {run.root}")
            all_results[str(run.root)] = json.loads(run.results.read_text(encoding="utf-8")) if world.main else {}
            continue
        all_results[str(run.root)] = train_one(cfg, run, seed, resume=status is not None, overwrite=overwrite,
                                               console=console, world=world)
    summary = {"runs": all_results}
    if len(seeds) > 1 and world.main:
        summary["summary"] = summarize_seeds(list(all_results.values()))
        atomic_write_text(root / "summary.json", json.dumps(summary, indent=1))
    if world.world > 1:
        dist.destroy_process_group()
    return summary
