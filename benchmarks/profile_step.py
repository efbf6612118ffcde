"""Where a training step's milliseconds go: torch.profiler over full steps at a config (default: the embedded
default's), fp32, eager attention backend as ``auto`` resolves it, optionally compiled.

    python benchmarks/profile_step.py [--config FILE] [--compile default] [--steps 20] [--top 25] [OVERRIDES...]

Prints the step time (median), then the operators by self CPU time, and the time per model part (``record_function``
scopes around the encoders, the fused LM, the heads, the loss, backward and the optimizer).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--compile", default="off")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from dmpf_cli.model.dmpf import build_model
    from dmpf_cli.model.losses import dmpf_loss
    from dmpf_cli.recipes.bench import make_batch
    from dmpf_cli.recipes.preflight import resolve_config
    from dmpf_cli.recipes.pretrain_lm import ensure_backbone
    from dmpf_cli.recipes.runtime import compiled
    from dmpf_cli.recipes.schedule import build_optimizer
    from dmpf_cli.streams import DATASETS

    cfg = resolve_config(config=args.config, overrides=["training.device=cpu", *args.overrides])
    ensure_backbone(cfg.backbone, None)
    dims = DATASETS[cfg.data.dataset].feature_dims
    model, _ = build_model(cfg, dims=dims, device="cpu")
    model.train()
    net = compiled(model, args.compile, "cpu")
    optimizer = build_optimizer(model, cfg)
    batch = make_batch(cfg, cfg.training.batch_size, dims, model.backbone.config.vocab_size, "cpu")
    scope = torch.profiler.record_function

    def step() -> None:
        with scope("forward"):
            out = net(batch)
        with scope("loss"):
            loss, _ = dmpf_loss(out.score.float(), {k: v.float() for k, v in out.aux.items()}, batch["labels"],
                                cfg.loss, None, batch["weight"], clm=out.clm)
        with scope("backward"):
            loss.backward()
        with scope("optimizer"):
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(f"{cfg.name}: backend {model.backend_on('cpu')}, compile {args.compile}, batch {cfg.training.batch_size}, "
          f"{torch.get_num_threads()} threads: median {statistics.median(times) * 1e3:.1f} ms/step "
          f"(min {min(times) * 1e3:.1f})")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.top))
    total = sum(e.self_cpu_time_total for e in averages)
    print("per part (ms/step, inclusive):")
    for name in ("forward", "loss", "backward", "optimizer"):
        event = next((e for e in averages if e.key == name), None)
        if event:
            print(f"  {name:10s} {event.cpu_time_total / args.steps / 1e3:8.2f}")
    print(f"  {'all ops':10s} {total / args.steps / 1e3:8.2f} (self time summed)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
