"""Several layers of the same shapes, each on its own input, as one batched computation (design.md §6).

The layers' weights are stacked at forward time (``torch.stack``, whose backward hands each layer its own
gradient), so the parameters, their names and the checkpoint stay per layer. Inputs and outputs carry the
layers in a leading dimension K: ``x`` (K, ..., in) → (K, ..., out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def stacked_linear(x: Tensor, weights: list[Tensor], biases: list[Tensor]) -> Tensor:
    """K linear layers, layer i on ``x[i]`` (…, in), as one batched matrix product: (K, …, out). Each layer's rows
    are laid out as ``F.linear`` lays them out (flattened in order), so each layer's product is the one
    ``F.linear`` computes."""
    w, b = torch.stack(weights), torch.stack(biases)  # (K, out, in), (K, out)
    y = torch.baddbmm(b[:, None, :], x.reshape(x.shape[0], -1, x.shape[-1]), w.transpose(1, 2))
    return y.view(*x.shape[:-1], w.shape[1])


def stacked_norm(x: Tensor, norms: list[nn.LayerNorm]) -> Tensor:
    """K LayerNorms, norm i on ``x[i]``: one call each (a LayerNorm's weight gradient sums over its rows, and
    one call over all K would sum them in another order)."""
    return torch.stack([F.layer_norm(xi, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                        for xi, norm in zip(x.unbind(0), norms)])  # unbind: its backward is one stack
