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
  :mod:`dmpf_cli.recipes.pretrain_encoders`) instead of a random init; checked by :func:`pretrained_encoders`.
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
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist
from pydantic import ValidationError
from rich.console import Console
from torch import nn

from ..config import ConfigError, ExperimentConfig, read_yaml
from ..data.batches import EpochBatchSampler, SplitDataset, batch_loader, make_loader, unimodal_labels
from ..fileio import atomic_write_text
from ..metrics import compute_metrics
from ..model.dmpf import build_encoders, build_model, resolve_device
from ..model.losses import dmpf_loss
from ..model.mm import Gate, MMBlock
from ..store.checkpoints import load_resumable, load_weights, save_resumable, save_weights
from ..store.run import RunDir, RunError, RunState
from ..streams import SPLITS, STREAM_BY_NAME, STREAMS
from .loggers import JsonlLogger, Logger
from .runtime import autocast, compiled, predict, to_device

if TYPE_CHECKING:  # pragma: no cover - preflight imports this module
    from .preflight import Ready

LM_SIDE = ("lm.", "head.", "aux.")  # parameter name prefixes of the LM-side learning-rate group
NO_DECAY_NAMES = ("lm.tokens.", "type_emb")  # 2-D, but embeddings, not weight matrices
ENCODER_STAGE = "pretrain-encoders"  # run.json "kind" of an encoder pre-training run (dmpf_cli.recipes.pretrain_encoders)
REGULARISATION = ("dropout", "p_mask", "whole_modality_dropout")  # encoder keys that may differ from the stage's


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


# -- optimizer and schedule ------------------------------------------------------------------------

def decays(name: str, param: nn.Parameter, rule: str) -> bool:
    """Whether weight decay acts on a parameter (``optimizer.decay``): ``matrices`` — weight matrices only, not
    biases, norms, gates, fusion tokens or type embeddings (dmpf's); ``all-but-biases`` — everything whose name
    does not say bias (the reference's: norms, gates and fusion tokens decay too)."""
    if rule == "all-but-biases":
        return "bias" not in name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and not any(tag in name for tag in NO_DECAY_NAMES)


def build_optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.AdamW:
    """AdamW with four groups: {LM side, encoders} × {decay, no decay}."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        side = "lm" if name.startswith(LM_SIDE) else "encoders"
        groups.setdefault((side, decays(name, p, cfg.optimizer.decay)), []).append(p)
    o = cfg.optimizer
    lr = {"lm": o.lr_lm, "encoders": o.lr_encoders}
    return torch.optim.AdamW(
        [{"params": ps, "lr": lr[side], "weight_decay": o.weight_decay if decay else 0.0, "name": f"{side}/{'decay' if decay else 'no_decay'}"}
         for (side, decay), ps in sorted(groups.items())],
        betas=tuple(o.betas), eps=o.eps,
    )


def lr_factor(step: int, warmup: int, total: int, kind: str, min_ratio: float, *, from_zero: bool = False) -> float:
    """Linear warm-up over ``warmup`` optimizer steps, then cosine decay to ``min_ratio`` at ``total``.

    ``from_zero``: step 0 runs at rate 0 and the peak is reached at step ``warmup`` (the reference's); otherwise
    step 0 runs at 1/``warmup`` of the peak and step ``warmup - 1`` at the peak.
    """
    if warmup and step < warmup:
        return (step if from_zero else step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The ``schedule`` section per optimizer step: warm-up over ``warmup_epochs``, then a cosine that reaches
    ``min_lr_ratio`` ``cosine_extra_epochs`` after the run's last epoch (0: at its last step)."""
    s = cfg.schedule
    warmup = round(s.warmup_epochs * steps_per_epoch)
    horizon = round((cfg.training.max_epochs + s.cosine_extra_epochs) * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, horizon, s.kind, s.min_lr_ratio, from_zero=s.warmup_from_zero))


def clip_gradients(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig) -> torch.Tensor:
    """Clip as ``optimizer.grad_clip``/``clip_by``/``clip_side`` say; returns the global gradient norm before any
    clipping (what the records show), without a host sync."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    o = cfg.optimizer
    clipped = [p for g in optimizer.param_groups if o.clip_side == "both" or g["name"].startswith("lm/")
               for p in g["params"]]
    if not o.grad_clip or o.clip_by == "value":
        norm = nn.utils.clip_grad_norm_(params, math.inf)  # measures only
        if o.grad_clip:
            nn.utils.clip_grad_value_(clipped, o.grad_clip)
        return norm
    if o.clip_side == "both":
        return nn.utils.clip_grad_norm_(params, o.grad_clip)
    norm = nn.utils.clip_grad_norm_(params, math.inf)
    nn.utils.clip_grad_norm_(clipped, o.grad_clip)
    return norm


# -- starting from pre-trained encoders --------------------------------------------------------------

def pretrained_encoders(cfg: ExperimentConfig, dims: tuple[int, ...]) -> tuple[Path, dict[str, torch.Tensor]] | None:
    """The encoder weights ``encoders.init_from`` names, keyed as in ``model.encoders``, and the run's absolute
    path; None when it is unset. ``dmpf train`` calls it before any run directory is made, the Trainer to load.

    The run must be a finished encoder pre-training run whose encoders fit this config and data: the same
    streams, the same encoder sections (regularisation aside: dropout, p_mask, whole_modality_dropout may change)
    and the same tensor shapes.

    Raises:
        RunError: one line naming ``encoders.init_from`` and what does not fit.
    """
    if not cfg.encoders.init_from:
        return None
    key = "encoders.init_from"
    run = RunDir(Path(cfg.encoders.init_from).expanduser().resolve())
    run.require(key)
    status = run.read_status()
    if status.get("kind") != ENCODER_STAGE:
        raise RunError(f"{key}: {run.root} is not an encoder pre-training run; make one with `dmpf pretrain-encoders`")
    if run.state is not RunState.FINISHED or not run.best.is_file():
        raise RunError(f"{key}: {run.root} is unfinished (status {status.get('status')!r}); run "
                       "`dmpf pretrain-encoders` to the end first")
    try:
        then = ExperimentConfig.model_validate(read_yaml(run.config))
    except (ConfigError, ValidationError):
        raise RunError(f"{key}: {run.config}: not a config this dmpf reads") from None
    from safetensors.torch import load_file

    try:
        state = {k.removeprefix("encoders."): v for k, v in load_file(str(run.best)).items() if k.startswith("encoders.")}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise RunError(f"{key}: {run.best}: damaged checkpoint ({type(exc).__name__})") from None

    with torch.device("meta"):  # shapes only
        expected = build_encoders(cfg, dims)
    here, there = list(expected), [s.name for s in STREAMS if any(k.startswith(f"{s.name}.") for k in state)]
    if here != there:
        here, there = (", ".join(STREAM_BY_NAME[n].display for n in names) or "no" for names in (here, there))
        raise RunError(f"{key}: {run.root} pre-trained the {there} encoders; this config has the {here} encoders "
                       "(the streams with fusion tokens)")
    for name in here:
        section = STREAM_BY_NAME[name].encoder_key
        now, before = (getattr(c.encoders, section).model_dump(exclude=set(REGULARISATION)) for c in (cfg, then))
        for field, value in now.items():
            if before.get(field) != value:
                raise RunError(f"{key}: {run.root} trained encoders.{section}.{field}={before.get(field)!r}; this "
                               f"config has {value!r}")
    shapes = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    dims_then = (f" (data dims {tuple(status['dims'])} there, {tuple(dims)} here)"
                 if status.get("dims") and list(status["dims"]) != list(dims) else "")
    for k in sorted(set(shapes) | set(state)):
        if k not in state or k not in shapes:
            raise RunError(f"{key}: {run.best} {'lacks' if k not in state else 'has an unexpected'} encoders.{k}: "
                           "an encoder of another kind or version")
        if tuple(state[k].shape) != shapes[k]:
            raise RunError(f"{key}: {run.best}: encoders.{k} has shape {tuple(state[k].shape)}, this config "
                           f"needs {shapes[k]}{dims_then}")
    return run.root, state


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
        from .preflight import opened

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
        params = [p for p in self.model.parameters() if p.requires_grad]
        if micro_batches != self.cfg.training.grad_accum:  # a short last group: still an average
            for p in params:
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
