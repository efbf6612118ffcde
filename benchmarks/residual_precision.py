"""What the fp32 residual stream costs under bf16 (issue 13: keep it unless it costs more than 10% of the step).

Times the full bf16 training step (autocast, backbone stored in bf16) twice — the frozen LM's residual stream in
fp32 (what dmpf runs) and in bf16 (what a bf16 stream would cost) — with `dmpf bench`'s own step, and prints the
difference. Meant for a GPU; on a CPU it runs, but its numbers say nothing about a GPU.

    python benchmarks/residual_precision.py [--dataset mosei] [key=value ...] [--batch-size 32] [--steps 10]
    python benchmarks/residual_precision.py --dataset mosei backbone.name=gpt2-large-random     # the GPU check
"""

from __future__ import annotations

import argparse
import json

import torch

from dmpf_cli.config import load_config
from dmpf_cli.model.attention import resolve_backend
from dmpf_cli.model.backbones import backbone_shapes
from dmpf_cli.model.dmpf import resolve_device
from dmpf_cli.model.fused import FusedGPT2
from dmpf_cli.recipes.bench import Setup, make_batch, run_setup
from dmpf_cli.recipes.pretrain_lm import ensure_backbone
from dmpf_cli.streams import DATASETS

THRESHOLD = 0.10  # the issue's: above it, a bf16 stream would be worth its rounding


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = load_config(args.dataset, None, args.overrides)
    ensure_backbone(cfg.backbone)
    device = resolve_device(cfg.training.device)
    batch_size = args.batch_size or cfg.training.batch_size
    dims = DATASETS[cfg.data.dataset].feature_dims
    batch = make_batch(cfg, batch_size, dims, backbone_shapes(cfg.backbone).vocab_size, device)
    backend = resolve_backend("auto", device)
    rows = {}
    for name, dtype in (("fp32 stream", torch.float32), ("bf16 stream", torch.bfloat16)):
        FusedGPT2.stream_dtype = dtype
        try:
            rows[name] = run_setup(cfg, Setup(backend, "bf16", "off"), batch, device, args.steps, args.warmup, dims)[0]
        finally:
            FusedGPT2.stream_dtype = torch.float32
    fp32, bf16 = rows["fp32 stream"]["ms_per_step"], rows["bf16 stream"]["ms_per_step"]
    cost = fp32 / bf16 - 1
    print(json.dumps({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "backend": backend,
                      "batch_size": batch_size, "ms_per_step": {k: round(v["ms_per_step"], 2) for k, v in rows.items()},
                      "peak_memory_gib": {k: v["peak_memory_gib"] for k, v in rows.items()},
                      "fp32_stream_cost": round(cost, 4), "keep_fp32": cost <= THRESHOLD}, indent=1))


if __name__ == "__main__":
    main()
