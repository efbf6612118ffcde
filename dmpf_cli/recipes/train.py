"""The training recipe (design.md §6), read top to bottom: data → model → optimizer → loop → best checkpoint → test.

* AdamW, betas from the config, two learning-rate groups — the LM side (MM blocks, fusion tokens,
  heads) and the encoder side — with weight decay on weight matrices only (not biases, norms, gates,
  fusion tokens or type embeddings), or on all but biases as the reference (``optimizer.decay``).
* Gradient accumulation that averages, gradient clipping (by norm on both sides, or by value on the LM side as
  the reference), linear warm-up then cosine decay, per optimizer step (``schedule``: the reference's rate-0
  first step and its cosine laid out one epoch past the run are options).
* Early stopping on validation MAE (patience, max epochs); the best-validation checkpoint is tested once.
* bf16 autocast on CUDA when ``training.precision: bf16``; evaluation runs in the training precision.
* Resumable: a checkpoint holds the trainable weights, optimizer, scheduler, RNG and loop position, so
  a killed run resumed with ``--resume`` ends exactly where an uninterrupted one would.
* Distributed: under ``torchrun`` each rank trains on its share of every epoch's batches through DDP;
  rank 0 alone writes files.
* ``encoders.init_from``: the encoders start from an encoder pre-training run's (``dmpf pretrain-encoders``,
  :mod:`dmpf_cli.recipes.pretrain_encoders`) instead of a random init; checked by :func:`~dmpf_cli.recipes.preflight.pretrained_encoders`.
* Records (per logged step: loss parts, learning rates, grad norm, samples/s, the MM gates' values; per epoch:
  validation metrics) go to the run's metric loggers (:mod:`dmpf_cli.recipes.loggers`), ``metrics.jsonl`` among them.

Where the run's directory comes from, several seeds and resuming them: :mod:`dmpf_cli.recipes.runs`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from rich.console import Console
from torch import nn

from ..config import ExperimentConfig
from ..data.batches import EpochBatchSampler, SplitDataset, batch_loader, make_loader, unimodal_labels
from ..fileio import atomic_write_text
from ..metrics import compute_metrics
from ..model.dmpf import build_model, resolve_device
from ..model.losses import dmpf_loss
from ..model.mm import Gate, MMBlock
from ..store.checkpoints import load_resumable, load_weights, save_resumable, save_weights
from ..store.run import RunDir, RunError
from ..streams import SPLITS, STREAM_BY_NAME
from .loggers import JsonlLogger, Logger
from .preflight import Ready, opened
from .runtime import autocast, compiled, predict, to_device
from .schedule import build_optimizer, build_scheduler, clip_gradients

# -- distributed -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class World:
    """This process's place among the ranks (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> World:
    """Join the torchrun process group when launched by torchrun; a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    info = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


# -- what the records show of the model ---------------------------------------------------------------

def model_gates(model: nn.Module) -> dict[str, Gate]:
    """Every MM block's gates by record key: ``block<i>/xattn_<stream>`` (each token group's cross-attention)
    and ``block<i>/ffn``, ``i`` the GPT-2 block the MM block follows (``mm.layers``)."""
    gates = {}
    for name, module in model.named_modules():
        if isinstance(module, MMBlock):
            block = f"block{name.rsplit('.', 1)[-1]}"
            gates.update({f"{block}/xattn_{STREAM_BY_NAME[g].prefix}": module.xgate[g] for g in module.groups})
            gates[f"{block}/ffn"] = module.ffn_gate
    return gates


@torch.no_grad()
def gate_values(gates: dict[str, Gate]) -> dict[str, float]:
    """The value each gate applies (sigmoid(α) or tanh(α)), copied to the host in one transfer."""
    if not gates:
        return {}
    return dict(zip(gates, torch.stack([g.value().float() for g in gates.values()]).tolist()))


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


def shard(batches: list[list[int]], world: World) -> list[list[int]]:
    """This rank's share of an epoch's batches; every rank gets the same count (wrapping around)."""
    per_rank = math.ceil(len(batches) / world.size)
    return [batches[(i * world.size + world.rank) % len(batches)] for i in range(per_rank)]


class Trainer:
    """The recipe for one seed: data, model, optimizer and schedule, the loop, early stopping, the test.

    Its files go to ``run`` (a :class:`~dmpf_cli.store.run.RunDir`): metrics.jsonl, the resumable and
    the best checkpoint. Making and finishing the directory is :mod:`dmpf_cli.recipes.runs`'s job. ``resume``: the
    run will be restored (:meth:`restore`), so ``encoders.init_from`` is not loaded: its checkpoint already
    holds the encoders it trained. ``ready``: the data, the backbone's files and the encoders' weights as the run's
    preflight opened them (:func:`dmpf_cli.recipes.preflight.check`), not opened again.
    """

    def __init__(self, cfg: ExperimentConfig, run: RunDir, seed: int, console: Console, world: World, *,
                 resume: bool = False, ready: Ready | None = None):

        self.cfg, self.run, self.seed, self.console, self.world = cfg, run, seed, console, world
        self.device = resolve_device(cfg.training.device)
        # what the run's preflight opened (rank 0); else opened now (another rank: rank 0 has made it)
        ready = ready or opened(cfg, encoders=not resume)
        self.data = ready.data
        model, backbone = build_model(cfg, dims=self.data.dims, seed=seed, device=self.device, found=ready.backbone)
        self.backbone_source = backbone.source
        self.backbone_fingerprint = backbone.fingerprint
        self.encoders_from: Path | None = None  # encoders.init_from, resolved, where it was loaded
        if not resume and ready.encoders:
            self.encoders_from, state = ready.encoders
            model.encoders.load_state_dict(state)
        self.model = model
        self.ddp = nn.parallel.DistributedDataParallel(model) if world.size > 1 else None
        self.net = compiled(self.ddp or model, cfg.training.compile, self.device)  # what train and eval call
        pin = self.device == "cuda"
        t = cfg.data.text_len
        self.splits = {name: SplitDataset(self.data.split(name), backbone.tokenizer, t) for name in SPLITS}
        self.sampler = EpochBatchSampler(len(self.splits["train"]), cfg.training.batch_size, shuffle=True, seed=seed)
        self.eval_loaders = {name: make_loader(self.splits[name], cfg.training.batch_size, shuffle=False,
                                               num_workers=cfg.data.num_workers, pin_memory=pin)
                             for name in ("valid", "test")}
        self.optimizer = build_optimizer(model, cfg)
        self.steps_per_epoch = math.ceil(math.ceil(len(self.sampler) / world.size) / cfg.training.grad_accum)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.state = LoopState()
        # called after every epoch's validation, record written and checkpoint saved, with (state, valid
        # metrics); a hook may raise to stop the run there (a sweep's pruner does), the run stays resumable
        self.epoch_hooks: list[Callable[[LoopState, dict[str, float]], None]] = []
        self.predictions: dict[str, tuple[list[str], torch.Tensor, torch.Tensor]] = {}  # test()'s, per split
        self.gates = model_gates(model)
        # where rank 0's records go: metrics.jsonl, until runs.train_one opens the configured loggers (after
        # restore(), once the step the run resumes from is known)
        self.logger: Logger = JsonlLogger(run)

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
        """Hand a step or epoch record to the loggers (rank 0), and count it: a checkpoint keeps the count, so
        :meth:`restore` can cut metrics.jsonl back to it."""
        if self.world.main:
            self.logger.log(record)
        self.state.records += 1

    # -- the loop ------------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward and backward of one micro-batch; the loss parts stay on the device (no host sync)."""
        batch = to_device(batch, self.device)
        with autocast(self.cfg, self.device):
            out = self.net(batch)
        loss, parts = dmpf_loss(out.score.float(), {k: v.float() for k, v in out.aux.items()}, batch["labels"],
                                self.cfg.loss, unimodal_labels(batch), batch["weight"], clm=out.clm)
        (loss / self.cfg.training.grad_accum).backward()  # accumulation averages the micro-batch losses
        return parts

    def optimizer_step(self, micro_batches: int) -> torch.Tensor:
        """Step with the gradients of ``micro_batches`` accumulated micro-batches; returns the grad norm."""
        if micro_batches != self.cfg.training.grad_accum:  # a short last group: still an average
            for p in (p for group in self.optimizer.param_groups for p in group["params"]):
                if p.grad is not None:
                    p.grad.mul_(self.cfg.training.grad_accum / micro_batches)
        norm = clip_gradients(self.optimizer, self.cfg)
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
        cfg, st = self.cfg, self.state
        accum = cfg.training.grad_accum
        while not st.done and st.epoch < cfg.training.max_epochs:
            self.model.train()
            batches = self.epoch_batches()
            loader = batch_loader(self.splits["train"], batches[st.batch_in_epoch:], num_workers=cfg.data.num_workers,
                                  pin_memory=self.device == "cuda")
            task = progress.add_task(f"epoch {st.epoch + 1}/{cfg.training.max_epochs}", total=len(batches),
                                     completed=st.batch_in_epoch, unit="batches") if progress else None
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
                        rate = seen * self.world.size / max(time.perf_counter() - t0, 1e-9)
                        lrs = {f"lr_{g['name'].split('/')[0]}": g["lr"] for g in self.optimizer.param_groups}
                        self.log({"kind": "step", "epoch": st.epoch, "step": st.step, "loss": mean["total"],
                                  "parts": mean, "grad_norm": float(norm), **lrs, "samples_per_s": rate,
                                  "gates": gate_values(self.gates)})
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
        valid = self.evaluate("valid")
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
        for hook in self.epoch_hooks:
            hook(st, valid)

    def evaluate(self, split: str, keep: bool = False) -> dict[str, float]:
        """The MMSA metrics on ``split``; ``keep``: remember the scores with their sample ids (``predictions``)."""
        scores, labels, index = predict(self.net, self.eval_loaders[split], self.cfg, self.device)
        if keep:
            ids = self.splits[split].split.ids
            self.predictions[split] = ([ids[i] for i in index.tolist()], scores, labels)
        return compute_metrics(scores, labels, self.cfg.data.dataset)

    def test(self) -> dict[str, Any]:
        load_weights(self.model, self.run.best)
        test, valid = self.evaluate("test", keep=True), self.evaluate("valid", keep=True)
        return {"seed": self.seed, "best_epoch": self.state.best_epoch, "epochs": self.state.epoch,
                "steps": self.state.step, "test": test, "valid": valid}

    def parameter_checksum(self) -> float:
        return float(sum(p.detach().double().sum() for p in self.model.parameters() if p.requires_grad))
