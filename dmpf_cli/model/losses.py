"""The DMPF training loss (design.md §5), returned with its named parts for logging.

Loss = L1(task) + λ_a·L1(a) + λ_v·L1(v) + λ_av·L1(av) + λ_t·L1(text) + λ_tok·L1(fusion tokens) + γ·CLM, where
the auxiliary predictions come from Linear heads on each stream's encoder (a_enc, v_enc, av_enc), on
h_text and on the fusion-token spans (the token term averages the groups present); the terms follow
:data:`dmpf_cli.streams.STREAMS`. A term whose stream is ablated is absent. With ``loss.unimodal_labels``
and a dataset that has them (CH-SIMS: T, A, V), the text and single-modality terms regress those
instead of the sentiment label. CLM (``loss.clm`` = γ) is the model's causal-LM term on the text
(:meth:`dmpf_cli.model.fused.FusedGPT2.clm_loss`), in training only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import LossConfig
from ..streams import STREAMS, TEXT

# loss term (its weight is loss.<term>) -> the auxiliary predictions it averages over, and the unimodal
# label it prefers
TERMS: dict[str, tuple[tuple[str, ...], str | None]] = {
    **{s.prefix: ((s.enc,), s.label) for s in STREAMS},
    TEXT.loss_key: ((TEXT.representation,), TEXT.label),
    "tokens": (tuple(s.tok for s in STREAMS), None),
}


def l1(pred: Tensor, target: Tensor, sample_weight: Tensor | None) -> Tensor:
    """Mean absolute error; with ``sample_weight`` (B,) a weighted mean (fillers of a last batch weigh 0)."""
    error = (pred - target.to(pred.dtype)).abs()
    if sample_weight is None:
        return error.mean()
    return (error * sample_weight).sum() / sample_weight.sum().clamp(min=1)


def dmpf_loss(
    score: Tensor,
    aux: dict[str, Tensor],
    labels: Tensor,
    weights: LossConfig,
    unimodal: dict[str, Tensor] | None = None,
    sample_weight: Tensor | None = None,
    clm: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total loss and its parts (unweighted L1 per term, the causal-LM cross-entropy; detached), all scalars.

    ``unimodal``: the batch's unimodal labels, used only when ``weights.unimodal_labels`` is set. ``clm``: the
    model's causal-LM term (``DMPFOutput.clm``), weighted by ``weights.clm``; part ``clm`` where it is given.
    """
    if not weights.unimodal_labels:
        unimodal = None
    labels = labels.to(score.dtype)
    task = l1(score, labels, sample_weight)
    total = weights.task * task
    parts = {"task": task.detach()}
    for term, (names, label_key) in TERMS.items():
        preds = [aux[n] for n in names if n in aux]
        if not preds:
            continue
        target = (unimodal or {}).get(label_key, labels) if label_key else labels
        value = torch.stack([l1(p.to(score.dtype), target, sample_weight) for p in preds]).mean()
        parts[term] = value.detach()
        total = total + getattr(weights, term) * value
    if clm is not None:
        parts["clm"] = clm.detach()
        total = total + weights.clm * clm.to(total.dtype)
    parts["total"] = total.detach()
    return total, parts
