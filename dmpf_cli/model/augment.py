"""SoftPerm: the reference implementation's "embedding augmentation" (training only, ``augment.*``).

For a sequence of embeddings or frames, a random subset of the feature dimensions takes its values from a
shuffled order of the sample's real time steps: for those dimensions the sequence is permuted in time,
the others stay where they are. It perturbs the temporal alignment of part of each feature vector while
keeping every value the sample had, so the model cannot lean on any one dimension's exact time course.
Padded steps take no part. The fraction of dimensions is drawn per sample, ``softperm`` + |N(0, std²)|
(at most 1). Everything is drawn from the torch global RNG, so a seeded run repeats itself.
"""

from __future__ import annotations

import torch
from torch import Tensor


def softperm(x: Tensor, lengths: Tensor, fraction: float, std: float = 0.0) -> Tensor:
    """x (B, L, D) with ``lengths`` (B,) real steps each (right-padded) → (B, L, D).

    Per sample b: a fraction a_b = min(1, fraction + |N(0, std²)|) of the dimensions is chosen (each
    dimension independently, with probability a_b, the same at every step) and one random permutation
    p_b of the real steps is drawn; then ``out[b, t, d] = x[b, p_b(t), d]`` for the chosen d at real t,
    and ``x[b, t, d]`` elsewhere. ``fraction`` 0 returns ``x`` itself and draws nothing. A gather and a
    where: differentiable w.r.t. ``x``, and padded values (even inf or NaN) never move.
    """
    if fraction <= 0:
        return x
    B, L, D = x.shape
    n = lengths.to(device=x.device, dtype=torch.long).clamp(0, L)  # (B,)
    real = torch.arange(L, device=x.device)[None, :] < n[:, None]  # (B, L)

    share = (fraction + std * torch.randn(B, device=x.device).abs()).clamp(max=1.0)  # (B,)
    chosen = torch.rand(B, 1, D, device=x.device) < share[:, None, None]  # (B, 1, D)

    # a uniform random order of the real steps: sort random keys, padded steps keyed +inf so that they
    # sort last, in place (stable), i.e. perm[b, t] = t for every padded t
    keys = torch.rand(B, L, device=x.device).masked_fill(~real, float("inf"))  # (B, L)
    perm = keys.argsort(dim=1, stable=True)  # (B, L)
    shuffled = x.gather(1, perm[..., None].expand(B, L, D))  # (B, L, D)
    return torch.where(chosen & real[..., None], shuffled, x)  # (B, L, D)
