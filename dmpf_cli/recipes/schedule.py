"""The optimizer and its schedule, shared by every recipe that trains (DMPF, the encoder pre-training stage, the
demo LM): AdamW with {LM side, encoders} × {decay, no decay} groups, the warm-up and cosine schedule per optimizer
step, and gradient clipping — dmpf's choices by default, the reference's as options (design.md §6).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ExperimentConfig

LM_SIDE = ("lm.", "head.", "aux.")  # parameter name prefixes of the LM-side learning-rate group
NO_DECAY_NAMES = ("lm.tokens.", "type_emb")  # 2-D, but embeddings, not weight matrices


def decays(name: str, param: nn.Parameter, rule: str) -> bool:
    """Whether weight decay acts on a parameter (``optimizer.decay``): ``matrices`` — weight matrices only, not
    biases, norms, gates, fusion tokens or type embeddings (dmpf's); ``all-but-biases`` — everything whose name
    does not say bias (the reference's: norms, gates and fusion tokens decay too)."""
    if rule == "all-but-biases":
        return "bias" not in name.rsplit(".", 1)[-1]
    return param.ndim >= 2 and not any(tag in name for tag in NO_DECAY_NAMES)


def build_optimizer(model: nn.Module, cfg: ExperimentConfig, *, fused: bool = True) -> torch.optim.AdamW:
    """AdamW with four groups: {LM side, encoders} × {decay, no decay}.

    ``fused``: torch's fused AdamW kernel, one call per group and step, on CPU as on CUDA (:class:`FusedAdamW`) —
    torch's default on CPU is a Python loop of ~10 operations per parameter tensor (a few hundred tensors: a tenth
    of the embedded default's step). Its updates agree with the loop's to float32 rounding (design.md §6); False
    (``torch.optim.AdamW``'s loop) only to measure it (``dmpf bench --before``)."""
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        side = "lm" if name.startswith(LM_SIDE) else "encoders"
        groups.setdefault((side, decays(name, p, cfg.optimizer.decay)), []).append(p)
    o = cfg.optimizer
    lr = {"lm": o.lr_lm, "encoders": o.lr_encoders}
    kind = FusedAdamW if fused else torch.optim.AdamW
    return kind(
        [{"params": ps, "lr": lr[side], "weight_decay": o.weight_decay if decay else 0.0, "name": f"{side}/{'decay' if decay else 'no_decay'}"}
         for (side, decay), ps in sorted(groups.items())],
        betas=tuple(o.betas), eps=o.eps,
    )


class FusedAdamW(torch.optim.AdamW):
    """torch's fused AdamW with less work around its kernel: each step calls ``torch._fused_adamw_`` — the kernel
    ``torch.optim.AdamW(fused=True)`` calls — once per group, on the same tensors with the same arguments, so the
    updates are the same bit for bit and the state dict has the same entries.

    What differs is the per-parameter step counters: a group's counters are views of one tensor, so one addition
    counts a step where torch makes one per parameter tensor (with ``zero_grad``, 0.7 ms instead of 1.3 on 2 CPU
    cores for the embedded default's 228 tensors; design.md §6). Counters that are not such views yet (a loaded state dict, another set of parameters
    with gradients) are gathered into one tensor first. A group whose parameters span devices or dtypes steps
    through torch's own code. No AMP gradient scaling, no amsgrad, maximize, capturable or differentiable.
    """

    def __init__(self, params, **options) -> None:
        super().__init__(params, fused=True, **options)
        self._counters: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []
        for i, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            counters = self._counters_of(i, params, states)
            if counters is None or any(group[k] for k in ("amsgrad", "maximize", "capturable", "differentiable")):
                super().step()  # a case torch's own code handles: the whole step there
                return loss
            work.append((group, params, states, counters))
        for group, params, states, (counters, views) in work:
            counters += 1  # every parameter's counter, in one addition
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                                [s["exp_avg_sq"] for s in states], [], views, amsgrad=False, lr=group["lr"],
                                beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                maximize=False)
        return loss

    def _state(self, p: torch.Tensor) -> dict:
        """``p``'s state, created on its first step as torch creates it."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _counters_of(self, i: int, params: list[torch.Tensor],
                     states: list[dict]) -> tuple[torch.Tensor, list[torch.Tensor]] | None:
        """Group ``i``'s counters of its parameters with gradients (``params``, their ``states``): one tensor and
        each parameter's ``state["step"]`` as a view of it, gathered where they are not that yet; None where the
        parameters span devices or dtypes (no one tensor can hold their counters)."""
        cached = self._counters.get(i)
        if cached is not None and len(cached[1]) == len(states) and all(
                s["step"] is v for s, v in zip(states, cached[1])):
            return cached
        if len({(p.device, p.dtype) for p in params}) > 1:
            return None
        counters = torch.stack([s["step"] for s in states])
        views = list(counters.unbind())
        for s, v in zip(states, views):
            s["step"] = v
        self._counters[i] = (counters, views)
        return counters, views


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
