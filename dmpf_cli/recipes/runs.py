"""Runs on disk: a run directory made (never over a finished run), trained and finished; several seeds under
one root with their mean ± std; an interrupted run or root resumed. The recipe itself is :mod:`dmpf_cli.recipes.train`;
the files of a run directory are :mod:`dmpf_cli.store.run`'s, a multi-seed root's :mod:`dmpf_cli.store.roots`'.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console

from ..config import SEED_RANGE, ExperimentConfig, is_seed, to_yaml
from ..fileio import atomic_write_text
from ..metrics import mean_std
from ..model.dmpf import resolve_device
from ..progress import Progress
from ..store import provenance
from ..store.checkpoints import save_predictions
from ..store.roots import is_multi_seed_root, read_seeds, write_seeds
from ..store.run import RunDir, RunError, RunState
from . import preflight
from .feature_recipe import features_recipe
from .loggers import open_loggers
from .preflight import Ready
from .runtime import threads_text
from .train import Trainer, World, init_distributed


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
    state = run.state
    if resume:
        run.require("--resume")
        if state is RunState.FINISHED:
            raise RunError(f"--resume: {run.root} has already finished")
        return
    what = "a finished run" if state is RunState.FINISHED else "an unfinished run (use --resume)"
    clear_output(run.root, holds_run=state is not RunState.NEW, what=what, overwrite=overwrite)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, to_yaml(cfg))
    run.metrics.write_text("", encoding="utf-8")
    run.write_status(status="running", seed=seed, started=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance.record(cfg))


def train_one(cfg: ExperimentConfig, run: RunDir, seed: int, *, resume: bool, overwrite: bool, console: Console,
              world: World, epoch_hooks: tuple = (), ready: Ready | None = None) -> dict[str, Any]:
    """Train one seed into ``run`` (or resume it) and test its best checkpoint; returns the results.
    ``ready``: what rank 0's preflight opened (:func:`~dmpf_cli.recipes.preflight.check`); None: the Trainer opens
    it (another rank, once rank 0 has made it).
    ``epoch_hooks``: :attr:`Trainer.epoch_hooks` (a sweep's pruner). Rank 0 holds the run (:meth:`RunDir.claim`)
    from before it touches the directory until the run ends."""
    with run.claim() if world.main else nullcontext():
        return _train_one(cfg, run, seed, resume=resume, overwrite=overwrite, console=console, world=world,
                          epoch_hooks=epoch_hooks, ready=ready)


def _train_one(cfg: ExperimentConfig, run: RunDir, seed: int, *, resume: bool, overwrite: bool, console: Console,
               world: World, epoch_hooks: tuple, ready: Ready | None) -> dict[str, Any]:
    if world.main:  # train() has checked everything that can refuse the run: only now is the directory touched
        prepare_run_dir(run, cfg, seed, resume=resume, overwrite=overwrite)
    if world.size > 1:
        dist.barrier()
    trainer = Trainer(cfg, run, seed, console, world, resume=resume, ready=ready)
    trainer.epoch_hooks.extend(epoch_hooks)
    if resume:
        if why := run.backbone_mismatch(trainer.backbone_fingerprint):  # its checkpoints fit that backbone only
            raise RunError(f"--resume: {why}; resuming would train on another backbone")
        trainer.restore()
        if world.main:
            console.print(f"resuming {run.root} at epoch {trainer.state.epoch + 1}, step {trainer.state.step}")
    if world.main:
        run.write_status(data=str(trainer.data.path), data_fingerprint=trainer.data.fingerprint,
                         dims=list(trainer.data.dims),
                         features=features_recipe(trainer.data.manifest, cfg.data.dataset).record(),
                         backbone=trainer.backbone_source,
                         backbone_fingerprint=trainer.backbone_fingerprint, device=trainer.device,
                         threads=torch.get_num_threads(),
                         **({"encoders_from": str(trainer.encoders_from)} if trainer.encoders_from else {}))
        console.print(f"[bold]{cfg.name}[/bold] seed {seed}: {cfg.data.dataset} data from {trainer.data.path}; "
                      f"backbone {cfg.backbone.name} ({trainer.backbone_source}); {trainer.device}, "
                      f"{threads_text(torch.get_num_threads())}; "
                      f"{sum(p.numel() for p in trainer.model.parameters() if p.requires_grad):,} trainable parameters")
        if trainer.encoders_from:
            console.print(f"encoders start from the encoder pre-training run {trainer.encoders_from}")
        if cfg.training.precision == "bf16" and trainer.device != "cuda":
            console.print("[yellow]note[/yellow]: training.precision bf16 applies on CUDA only; this run is fp32")
        # the configured loggers, now that the step a resumed run continues from is known
        trainer.logger = open_loggers(cfg, run, resume_step=trainer.state.step if resume else None)
    with closing(trainer.logger):  # closed, their files flushed, also when the run stops with an error
        with Progress(console, enabled=world.main) as bar:
            trainer.fit(progress=bar)
        ddp = None
        if world.size > 1:  # the ranks must end with the same weights; then rank 0 alone tests and writes
            sums = [None] * world.size
            dist.all_gather_object(sums, trainer.parameter_checksum())
            ddp = {"world_size": world.size, "parameter_checksums": sums,
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
            save_predictions(run.predictions, trainer.predictions)
            run.write_results(results)
            trainer.logger.log({"kind": "test", "step": trainer.state.step, "test": results["test"]})
            plot_curves(run)
            trainer.logger.image("curves", run.curves)
    if world.main:
        run.write_status(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return results


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


def summarize_seeds(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """mean ± std (:func:`~dmpf_cli.metrics.mean_std`) of every test metric over the seeds."""
    return {key: mean_std([r["test"][key] for r in results]) for key in results[0]["test"]}


def _run_seed(run: RunDir, cfg: ExperimentConfig) -> int:
    """The seed a run directory trains with (run.json's; its config's first before it has one)."""
    seed = run.read_status().get("seed", cfg.training.seeds[0])
    if not is_seed(seed):
        raise RunError(f"{run.status_file}: seed: expected an integer {SEED_RANGE}, got {json.dumps(seed)[:60]}")
    return seed


def train(
    cfg: ExperimentConfig, output: Path | None, seeds: list[int] | None, *, resume: Path | None = None,
    overwrite: bool = False, console: Console, epoch_hooks: tuple = (), ready: Ready | None = None,
) -> dict[str, Any]:
    """``dmpf train``: every seed, one run directory each (``DIR`` itself for one seed, ``DIR/seed-N`` for several).
    ``epoch_hooks``: called after each epoch of each seed (:attr:`~dmpf_cli.recipes.train.Trainer.epoch_hooks`).
    ``ready``: :func:`~dmpf_cli.recipes.preflight.check`'s result, where the caller checked this config already (a
    grid's run in its process) or one that reads the same (a sweep's base config, for its trials): used as it is,
    nothing checked or opened twice (:func:`~dmpf_cli.recipes.preflight.reuse`)."""
    multi_seed_root = resume is not None and is_multi_seed_root(resume)
    if resume is not None:  # a resumed run keeps its own config (a multi-seed root holds one beside its seeds)
        if not multi_seed_root:
            RunDir(resume).require("--resume")
        cfg = preflight.resolve_config(config=Path(resume) / "config.yaml")
        try:  # its seeds, read (and checked) before anything is made
            seeds = read_seeds(Path(resume)) if multi_seed_root else [_run_seed(RunDir(resume), cfg)]
        except RunError as exc:
            raise RunError(f"--resume: {exc}") from None
    # one process: nothing to resolve yet (the preflight reports a bad device with every other problem)
    world = init_distributed(resolve_device(cfg.training.device)) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else World()
    checked, ready = ready, None
    if world.main:  # the data and the demo LM are made on first use here, once, before any rank reads them
        encoders = resume is None or multi_seed_root  # a resumed run has its encoders in its checkpoint
        ready = (preflight.check(cfg, console, encoders=encoders) if checked is None
                 else preflight.reuse(checked, cfg, console, encoders=encoders))
        cfg = ready.cfg
    if resume is not None and not multi_seed_root:
        run = RunDir(resume)
        results = train_one(cfg, run, seeds[0], resume=True, overwrite=False, console=console, world=world,
                            epoch_hooks=epoch_hooks, ready=ready)
        return {"runs": {str(run.root): results}}
    if multi_seed_root:  # finished seeds are kept, the others resumed or started
        root = Path(resume)
    else:
        seeds = seeds or cfg.training.seeds
        # the default directory is new for every run, so a finished run is never in the way (nor overwritten)
        root = Path(output) if output else Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if root.exists() and not root.is_dir():
            raise RunError(f"--output: {root} is a file, not a directory; choose another --output")
    runs = {seed: RunDir(root if len(seeds) == 1 else root / f"seed-{seed}") for seed in seeds}
    if len(seeds) > 1 and resume is None and world.main:  # what --resume ROOT needs to finish every seed
        clear_output(root, holds_run=RunDir(root).status_file.is_file() or is_multi_seed_root(root), what="a run",
                     overwrite=overwrite, hint=f", or --resume {root} to finish an interrupted one")
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "config.yaml", to_yaml(cfg))
        write_seeds(root, seeds)
    all_results = {}
    for seed, run in runs.items():
        state = run.state if resume is not None else RunState.NEW
        if state is RunState.FINISHED:
            if world.main:
                console.print(f"seed {seed}: finished already in {run.root}")
            all_results[str(run.root)] = run.read_results() if world.main else {}
            continue
        all_results[str(run.root)] = train_one(cfg, run, seed, resume=state is not RunState.NEW, overwrite=overwrite,
                                               console=console, world=world, epoch_hooks=epoch_hooks, ready=ready)
    summary = {"runs": all_results}
    if len(seeds) > 1 and world.main:
        summary["summary"] = summarize_seeds(list(all_results.values()))
        atomic_write_text(root / "summary.json", json.dumps(summary, indent=1))
    if world.size > 1:
        dist.destroy_process_group()
    return summary
