"""A third-party task head for dmpf, registered only through the ``dmpf.plugins`` entry point.

``gated-sum`` projects each representation to a common width, weighs them with learned,
input-dependent softmax gates, and regresses the score from the weighted sum. Select it with
``head: {name: gated-sum}`` in a config, or ``dmpf config show head.name=gated-sum``.
"""

from __future__ import annotations

import torch
from torch import nn

from dmpf_cli.config import HeadConfig
from dmpf_cli.registry import register

__all__ = ["GatedSumHead"]


class GatedSumHead(nn.Module):
    def __init__(self, in_dims: dict[str, int], d: int, dropout: float, temperature: float):
        super().__init__()
        if not in_dims:
            raise ValueError("gated-sum head: needs at least one representation")
        self.names = list(in_dims)
        self.proj = nn.ModuleDict({name: nn.Linear(dim, d) for name, dim in in_dims.items()})
        self.gate = nn.Linear(d, 1)
        self.temperature = temperature
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Dropout(dropout), nn.Linear(d, 1))

    def forward(self, reps: dict[str, torch.Tensor]) -> torch.Tensor:
        h = torch.stack([torch.tanh(self.proj[n](reps[n])) for n in self.names], dim=1)  # (B, k, d)
        weights = torch.softmax(self.gate(h) / self.temperature, dim=1)  # (B, k, 1)
        return self.out((weights * h).sum(dim=1)).squeeze(-1)  # (B,)


@register("head", "gated-sum")
def gated_sum(cfg: HeadConfig, in_dims: dict[str, int]) -> GatedSumHead:
    """Softmax-gated sum of the representations (example plugin)."""
    options = dict(cfg.options)
    temperature = float(options.pop("temperature", 1.0))
    if options:
        raise ValueError(f"gated-sum head: unknown options {sorted(options)} (expected: temperature)")
    if temperature <= 0:
        raise ValueError(f"gated-sum head: options.temperature must be > 0, got {temperature}")
    return GatedSumHead(in_dims, cfg.d, cfg.dropout, temperature)
