"""Encoder pre-training, the first stage of the reference recipe's "fusion curriculum" (DeepMLF):
``dmpf pretrain-encoders``.

The A, V and AV encoders are trained alone, without the language model (none is loaded), each with its
own ``Linear(width, 1)`` head on the masked time-mean of its output, regressing the sentiment label; the
loss is the mean over the streams of their L1 terms. A DMPF run then starts its encoders from this run's
best checkpoint with ``encoders.init_from: DIR`` (checked and loaded by
:func:`dmpf_cli.recipes.preflight.pretrained_encoders`).

The encoders are the config's (the streams with fusion tokens), built exactly as DMPF builds them
(:func:`dmpf_cli.model.dmpf.build_encoders`), from the same seed. The recipe is DMPF's where it applies:
AdamW on ``optimizer.lr_encoders`` with decay on weight matrices only, warm-up then cosine per optimizer
step, gradient clipping, ``training.batch_size`` and ``max_epochs``, early stopping on the validation MAE
of the mean of the stream heads (``training.patience``), seed ``training.seeds[0]``. One process, no
gradient accumulation, no ``torch.compile``.

The run directory is a dmpf one (:class:`~dmpf_cli.store.run.RunDir`), with ``"kind":
"pretrain-encoders"`` in run.json; ``checkpoints/best.safetensors`` holds ``encoders.<stream>.*`` and
``heads.<stream>.*``; results.json has each stream head's test MAE and Corr from the best checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor, nn

from ..config import ExperimentConfig
from ..data.batches import EpochBatchSampler, SplitDataset, batch_loader, make_loader
from ..data.prepared import Split
from ..errors import DmpfError
from ..model.dmpf import build_encoders, masked_time_mean, resolve_device
from ..model.losses import l1
from ..progress import Progress
from ..store.checkpoints import load_weights, save_weights
from ..store.run import ENCODER_STAGE, RunDir, RunState
from ..streams import SPLITS, STREAM_BY_NAME, STREAMS
from .datasets import open_data
from .runs import clear_output, prepare_run_dir
from .runtime import autocast, evaluate, threads_text, to_device
from .schedule import build_optimizer, build_scheduler, clip_gradients
from .train import LoopState


class EncoderStage(nn.Module):
    """The config's encoders, each with a Linear(width → 1) head on its output's masked time-mean."""

    def __init__(self, cfg: ExperimentConfig, dims: tuple[int, ...]):
        super().__init__()
        self.encoders = build_encoders(cfg, dims)
        self.heads = nn.ModuleDict({name: nn.Linear(enc.out_dim, 1) for name, enc in self.encoders.items()})
        self.streams = [s for s in STREAMS if s.name in self.encoders]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each stream head's prediction, (B,), keyed by stream name."""
        preds = {}
        for s in self.streams:
            seq, lengths = self.encoders[s.name](*((batch[m.key], batch[m.lengths]) for m in s.inputs))  # (B, Lm, d)
            preds[s.name] = self.heads[s.name](masked_time_mean(seq, lengths)).squeeze(-1)  # (B,)
        return preds


@dataclass
class _Scores:
    score: Tensor  # (B,)


class _Scored(nn.Module):
    """The stage as :func:`dmpf_cli.recipes.runtime.evaluate` scores a model: one stream's head, or (``stream`` None)
    the mean of the heads, which early stopping watches."""

    def __init__(self, stage: EncoderStage, stream: str | None = None):
        super().__init__()
        self.stage, self.stream = stage, stream

    def forward(self, batch: dict[str, Tensor], drop_streams: tuple[str, ...] = ()) -> _Scores:
        preds = self.stage(batch)
        return _Scores(preds[self.stream] if self.stream else torch.stack(list(preds.values())).mean(dim=0))


class _NoText(SplitDataset):
    """A split's batches without tokenised text: the encoders read audio and vision only, so the stage
    needs no tokenizer (nor the backbone directory a pretrained one lives in)."""

    def __init__(self, split: Split):
        self.split = split
        self.text_ids = torch.zeros((len(split), 1), dtype=torch.long)  # (N, 1) placeholders, never read
        self.text_real = torch.ones((len(split), 1), dtype=torch.bool)


def pretrain_encoders(cfg: ExperimentConfig, output: Path | None, *, overwrite: bool, console: Console) -> dict[str, Any]:
    """``dmpf pretrain-encoders``: train the encoders alone into a run directory; returns its results.

    Everything that can refuse the run (one process, a stream to train, the device, the data) is checked
    before the directory is made or, with ``overwrite``, emptied.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DmpfError("pretrain-encoders: runs in one process; start it without torchrun")
    streams = [s for s in STREAMS if getattr(cfg.fusion, s.tokens_key) > 0]
    if not streams:
        keys = ", ".join(f"fusion.{s.tokens_key}" for s in STREAMS)
        raise DmpfError(f"{keys}: all 0, so there is no encoder to pre-train; give a stream fusion tokens")
    device = resolve_device(cfg.training.device)
    data = open_data(cfg, console)  # the synthetic dataset is generated on first use
    seed = cfg.training.seeds[0]

    run = RunDir(Path(output) if output else Path("runs") / f"{cfg.name}-encoders-{time.strftime('%Y%m%d-%H%M%S')}")
    there = run.state  # what --output holds already
    clear_output(run.root, holds_run=there is not RunState.NEW, overwrite=overwrite,
                 what="a finished run" if there is RunState.FINISHED else "an unfinished run")
    prepare_run_dir(run, cfg, seed, resume=False, overwrite=overwrite)
    run.write_status(kind=ENCODER_STAGE, streams=[s.name for s in streams], data=str(data.path),
                     data_fingerprint=data.fingerprint, dims=list(data.dims), device=device,
                     threads=torch.get_num_threads())

    torch.manual_seed(seed)  # as build_model seeds DMPF: the encoders start as a DMPF run of this seed's would
    stage = EncoderStage(cfg, data.dims).to(device)
    console.print(f"[bold]{cfg.name}[/bold] encoder pre-training, seed {seed}: {cfg.data.dataset} data from "
                  f"{data.path}; {device}, {threads_text(torch.get_num_threads())}; the {', '.join(s.display for s in streams)} encoders, "
                  f"{sum(p.numel() for p in stage.parameters()):,} parameters; no language model")
    splits = {name: _NoText(data.split(name)) for name in SPLITS}
    pin = device == "cuda"
    loaders = {name: make_loader(splits[name], cfg.training.batch_size, shuffle=False,
                                 num_workers=cfg.data.num_workers, pin_memory=pin) for name in ("valid", "test")}
    with Progress(console) as bar:
        state = _fit(stage, cfg, splits["train"], loaders["valid"], run, seed, device, console, bar)

    load_weights(stage, run.best)
    scored = {s.name: evaluate(_Scored(stage, s.name), loaders["test"], cfg, device) for s in streams}
    mean = evaluate(_Scored(stage), loaders["test"], cfg, device)
    results = {"kind": ENCODER_STAGE, "run": str(run.root), "seed": seed, "dataset": cfg.data.dataset,
               "best_epoch": state.best_epoch, "epochs": state.epoch, "steps": state.step, "valid_mae": state.best_mae,
               "test": {name: {"MAE": m["MAE"], "Corr": m["Corr"]} for name, m in scored.items()},
               "test_mean_of_heads": {"MAE": mean["MAE"], "Corr": mean["Corr"]}}
    run.write_results(results)
    run.write_status(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return results


def _fit(stage: EncoderStage, cfg: ExperimentConfig, train: SplitDataset, valid, run: RunDir, seed: int,
         device: str, console: Console, progress: Progress) -> LoopState:
    """The loop: one optimizer step per batch, validation and early stopping per epoch, the best weights saved."""
    optimizer = build_optimizer(stage, cfg)  # every parameter is on the encoder side: optimizer.lr_encoders
    sampler = EpochBatchSampler(len(train), cfg.training.batch_size, shuffle=True, seed=seed)
    scheduler = build_scheduler(optimizer, cfg, len(sampler))
    st = LoopState()
    while not st.done and st.epoch < cfg.training.max_epochs:
        stage.train()
        sampler.set_epoch(st.epoch)
        sums = torch.zeros(len(stage.streams), device=device)  # per stream L1, summed over the epoch's batches
        batches = list(sampler)
        loader = batch_loader(train, batches, num_workers=cfg.data.num_workers, pin_memory=device == "cuda")
        for batch in progress.track(loader, f"epoch {st.epoch + 1}/{cfg.training.max_epochs}", len(batches)):
            batch = to_device(batch, device)
            with autocast(cfg, device):
                preds = stage(batch)
            # each head regresses the sentiment label; the fillers of a last batch weigh 0
            losses = torch.stack([l1(p.float(), batch["labels"], batch["weight"]) for p in preds.values()])
            losses.mean().backward()
            clip_gradients(optimizer, cfg)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            st.step += 1
            sums += losses.detach()
        parts = dict(zip((s.name for s in stage.streams), (sums / len(batches)).tolist()))
        valid_metrics = evaluate(_Scored(stage), valid, cfg, device)
        improved = valid_metrics["MAE"] < st.best_mae
        if improved:
            st.best_mae, st.best_epoch, st.bad_epochs = valid_metrics["MAE"], st.epoch, 0
            save_weights(stage, run.best, {"epoch": str(st.epoch), "valid_mae": f"{valid_metrics['MAE']:.6f}"})
        else:
            st.bad_epochs += 1
        with open(run.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": "epoch", "epoch": st.epoch, "step": st.step, "loss": sum(parts.values()) / len(parts),
                                "parts": parts, "lr_encoders": optimizer.param_groups[0]["lr"],
                                "valid": valid_metrics, "best": improved}) + "\n")
        console.print(f"epoch {st.epoch + 1}: train L1 {' '.join(f'{STREAM_BY_NAME[n].short} {v:.3f}' for n, v in parts.items())}; "
                      f"valid MAE (mean of heads) {valid_metrics['MAE']:.4f}"
                      + ("  [green]best[/green]" if improved else f"  (no gain for {st.bad_epochs})"))
        st.epoch += 1
        st.done = st.bad_epochs >= cfg.training.patience
        if st.done:
            console.print(f"early stop: no validation gain for {st.bad_epochs} epochs")
    return st
