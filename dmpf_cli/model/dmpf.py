"""The DMPF model (design.md §1): encoders → fused frozen GPT-2 → task head over seven representations.

The streams are :data:`dmpf_cli.streams.STREAMS`. A stream is switched off by giving it zero fusion
tokens: ``fusion.n_a = 0`` removes the A token group, its cross-attention, the audio encoder and the
``a_tok``/``a_enc`` representations (audio still reaches the AV encoder when n_av > 0). So
n_a = n_v = n_av = 0 is a text-only model, and the 16-token single-group setting of the paper's capacity
ablation is ``n_a = n_v = 0, n_av = 16``.

In training, the reference's regularisers run: GPT-2's own dropouts at ``backbone.dropout`` (its weights
stay frozen) and SoftPerm (:mod:`~dmpf_cli.model.augment`) on the inputs ``augment.softperm_inputs``
lists; with ``loss.clm`` > 0 the output also carries the causal-LM term of the LM's own head on the text. The task and auxiliary heads always run in fp32, outside autocast: a bf16 score would sit on a
grid of 1/64 near ±3, and early stopping reads the validation MAE of those scores.

:func:`build_model` is the front door: the model a config describes, as training, evaluation and the
benchmark build it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .. import registry
from ..config import ExperimentConfig, token_counts
from ..errors import DmpfError
from ..streams import DATASETS, MODALITIES, REPRESENTATIONS, STREAMS, TEXT
from .attention import resolve_backend
from .augment import softperm
from .backbone_loader import FoundBackbone, LoadedBackbone, load_backbone
from .encoders import StreamEncoder, encode
from .fused import FusedGPT2
from .heads import AuxHeads, SelfAttentionHead


@dataclass
class DMPFOutput:
    score: Tensor  # (B,) the task head's prediction
    aux: dict[str, Tensor]  # auxiliary predictions, each (B,), keyed by representation
    reps: dict[str, Tensor]  # the representations, each (B, width)
    hidden: list[Tensor] = field(default_factory=list)  # per-block states (B, L, D) when asked for
    clm: Tensor | None = None  # the causal-LM term (a scalar), in training with loss.clm > 0


def masked_time_mean(seq: Tensor, lengths: Tensor) -> Tensor:
    """Mean over the real steps: seq (B, Lm, d), lengths (B,) → (B, d); a length-0 sample gives zeros."""
    real = torch.arange(seq.shape[1], device=seq.device)[None, :] < lengths[:, None]  # (B, Lm)
    total = (seq * real[..., None].to(seq.dtype)).sum(dim=1)
    return total / lengths.clamp(min=1)[:, None].to(seq.dtype)


def build_encoders(cfg: ExperimentConfig, dims: tuple[int, ...]) -> nn.ModuleDict:
    """One encoder per present stream (fusion tokens > 0), keyed by stream name, in stream order: DMPF's
    encoders, and the encoder pre-training stage's (:mod:`dmpf_cli.recipes.pretrain_encoders`), built the same way."""
    counts = token_counts(cfg)
    feature_dims = {m.key: d for m, d in zip(MODALITIES, dims)}
    encoders = nn.ModuleDict()
    for s in STREAMS:
        if counts[s.name] > 0:
            enc_cfg = getattr(cfg.encoders, s.encoder_key)
            encoders[s.name] = registry.create("encoder", enc_cfg.name, enc_cfg,
                                               tuple(feature_dims[m.key] for m in s.inputs))
    return encoders


class DMPF(nn.Module):
    """``dims``: the width of each modality's features (``MODALITIES`` order), e.g. (74, 35) for MOSEI."""

    def __init__(self, cfg: ExperimentConfig, gpt2: nn.Module, dims: tuple[int, ...], *, speedups: bool = True):
        super().__init__()
        self.attention = cfg.training.attention  # requested; resolved per device by backend_on
        counts = token_counts(cfg)
        self.streams = [s for s in STREAMS if counts[s.name] > 0]
        self.groups = [s.name for s in self.streams]

        self.encoders = build_encoders(cfg, dims)
        encoder_dims = {g: self.encoders[g].out_dim for g in self.groups}
        # the modalities some present stream reads, and SoftPerm's (fraction, std) for those it augments
        self.modalities = [m for m in MODALITIES if any(m in s.inputs for s in self.streams)]
        aug = cfg.augment
        perm = (aug.softperm, aug.softperm_std) if aug.softperm > 0 else None
        self.frame_softperm = {m.key: perm for m in self.modalities if perm and m.key in aug.softperm_inputs}

        self.lm = FusedGPT2(gpt2, counts, encoder_dims, cfg.mm.layers, cfg.fusion.mask, cfg.mm.gate, cfg.mm.dropout,
                            cfg.mm.ffn, lm_dropout=cfg.backbone.dropout,
                            text_softperm=perm if TEXT.name in aug.softperm_inputs else None, speedups=speedups)

        D = gpt2.config.n_embd
        widths = {TEXT.representation: D}
        for s in self.streams:
            widths[s.tok] = D
            widths[s.enc] = encoder_dims[s.name]
        self.rep_dims = {n: widths[n] for n in REPRESENTATIONS if n in widths}
        self.head = registry.create("head", cfg.head.name, cfg.head, dict(self.rep_dims))
        for module in self.modules():  # the built-in modules' fast paths (design.md §6); FusedGPT2 sets its MM blocks'
            if isinstance(module, (StreamEncoder, SelfAttentionHead)):
                module.fast = speedups
        self.aux = AuxHeads(self.rep_dims)
        # the causal-LM term is computed in training only where its weight is not 0 (loss.clm)
        self.clm = cfg.loss.clm > 0
        if self.clm and getattr(gpt2.config, "tie_word_embeddings", True) is False:
            raise DmpfError(f"loss.clm: backbone '{cfg.backbone.name}' has an LM head of its own (untied from its "
                            "token embeddings), which dmpf does not load; set loss.clm=0 for it")

    @property
    def backbone(self) -> nn.Module:
        return self.lm.gpt2

    def train(self, mode: bool = True) -> "DMPF":
        """The frozen LM follows ``mode`` only where its dropouts act (``backbone.dropout`` > 0); its weights
        never train either way, and in eval mode it is deterministic."""
        super().train(mode)
        self.backbone.train(mode and self.lm.lm_dropout > 0)
        return self

    def frames(self, batch: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
        """Each modality's (frames (B, L, D), lengths (B,)) as the encoders read them: in training,
        SoftPerm'd where ``augment.softperm_inputs`` lists it (once, so the AV encoder reads the same)."""
        out = {}
        for m in self.modalities:
            x, lengths = batch[m.key], batch[m.lengths]
            if self.training and m.key in self.frame_softperm:
                x = softperm(x, lengths, *self.frame_softperm[m.key])
            out[m.key] = (x, lengths)
        return out

    @property
    def attention(self) -> str:
        """The requested attention backend (``training.attention``: auto, xformers, sdpa or eager)."""
        return self._attention

    @attention.setter
    def attention(self, requested: str) -> None:
        self._attention = requested
        self._backends: dict[str, str] = {}

    def backend_on(self, device: torch.device | str) -> str:
        """The backend that runs on ``device``, resolved once per device (``auto``'s probe runs eagerly there, by
        :func:`build_model`, never inside a compiled forward)."""
        key = torch.device(device).type  # the choice is the same on every GPU of a machine
        if key not in self._backends:
            self._backends[key] = resolve_backend(self.attention, device)
        return self._backends[key]

    def forward(self, batch: dict[str, Tensor], *, return_hidden: bool = False,
                drop_streams: tuple[str, ...] = ()) -> DMPFOutput:
        """batch: text_ids, text_real (B, T); per modality its frames (B, L, D) and lengths (B,) (``audio``,
        ``audio_lengths``, ``vision``, ``vision_lengths``).

        ``drop_streams``: streams (by name) whose encoder output is replaced by nothing (zeros, length 0) —
        the modality ablation of ``dmpf eval``.
        """
        frames = self.frames(batch)
        contexts = encode(self.encoders, {s.name: [frames[m.key] for m in s.inputs] for s in self.streams})
        for s in self.streams:  # contexts[name]: (seq (B, Lm, d), lengths (B,))
            if s.name in drop_streams:
                seq, lengths = contexts[s.name]
                contexts[s.name] = (torch.zeros_like(seq), torch.zeros_like(lengths))

        ids, real = batch["text_ids"], batch["text_real"]
        backend = self.backend_on(ids.device)
        H, hidden = self.lm(ids, real, contexts, backend, return_hidden=return_hidden)  # (B, L, D)

        # H cut once into its segments (text, then each token group): a split's backward is one concatenation,
        # where each slice's would fill a zero tensor of H's size (design.md §6)
        segments = self.lm.layout(ids.shape[1]).segments
        parts = dict(zip([seg.name for seg in segments], H.split([seg.length for seg in segments], dim=1)))
        last = (real.long().sum(dim=1) - 1).clamp(min=0)  # (B,) the last real text token
        reps = {TEXT.representation: parts[TEXT.name][torch.arange(ids.shape[0], device=ids.device), last].float()}
        for s in self.streams:
            reps[s.tok] = parts[s.name].mean(dim=1).float()  # (B, D)
            seq, lengths = contexts[s.name]
            reps[s.enc] = masked_time_mean(seq.float(), lengths)  # (B, d)
        reps = {n: reps[n] for n in REPRESENTATIONS if n in reps}
        # fp32 heads on fp32 representations, whatever autocast says: the score, the auxiliary predictions
        # and so the loss and the validation MAE are not rounded to bf16
        with torch.autocast(ids.device.type, enabled=False):
            score, aux = self.head(reps), self.aux(reps)
        clm = self.lm.clm_loss(H, ids, real) if self.clm and self.training else None
        return DMPFOutput(score, aux, reps, hidden, clm)


def build_model(
    cfg: ExperimentConfig, *, dims: tuple[int, ...] | None = None, seed: int = 0, device: str = "cpu",
    precision: str | None = None, meta: bool = False, found: FoundBackbone | None = None, speedups: bool = True,
) -> tuple[DMPF, LoadedBackbone]:
    """The model for ``cfg``, as training, evaluation and benchmarks all build it.

    Args:
        cfg: the experiment config (encoders, backbone, fusion, MM blocks, head).
        dims: the feature width of each modality (default: the dataset's, ``streams.DATASETS``).
        seed: initialises the trainable parts. The frozen backbone is the same for every seed (a random
            one is drawn from seed 0).
        device: where the model goes; with ``precision`` (default: the config's) bf16 on CUDA, the frozen
            backbone is stored in bf16 rather than cast every step.
        meta: shapes only, on the meta device: no weights, no memory (``dmpf inspect-model``).
        found: where the backbone's files are, as a run's preflight found them (not looked for again).
        speedups: the fused kernels that compute what the plain ones do (:class:`~dmpf_cli.model.fused.FusedGPT2`);
            False only to measure them (``dmpf bench --before``).

    Returns:
        The model and the loaded backbone (its tokenizer, source and weights' fingerprint).

    Raises:
        BackboneError: the backbone's weights or tokenizer are not on this machine.

    Example:
        >>> model, backbone = build_model(load_config("default"))  # doctest: +SKIP
    """
    backbone = load_backbone(cfg.backbone, seed=0, meta=meta, found=found)
    torch.manual_seed(seed)
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = DMPF(cfg, backbone.model, dims or DATASETS[cfg.data.dataset].feature_dims, speedups=speedups)
    if not meta:
        model.to(device)
        model.backend_on(torch.device(device))  # before any torch.compile: xformers' probe runs eagerly
        if device == "cuda" and (precision or cfg.training.precision) == "bf16":
            model.backbone.to(torch.bfloat16)
    return model, backbone


def resolve_device(requested: str) -> str:
    """``auto`` → cuda where available, else cpu; ``cuda`` where there is none is a one-line error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        why = "this torch has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        raise DmpfError(f"training.device: cuda requested, but {why} (torch {torch.__version__}); use auto or cpu")
    return requested


def model_summary(cfg: ExperimentConfig) -> dict:
    """Parameter counts by component, attention backend, sequence layout and MM blocks — no weights loaded."""

    model, backbone = build_model(cfg, meta=True)

    def count(module, trainable_only=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    components = {"backbone (frozen)": model.backbone}
    components.update({f"encoder {g}": enc for g, enc in model.encoders.items()})
    rows = {name: count(m) for name, m in components.items()}
    rows["fusion tokens"] = sum(p.numel() for p in model.lm.tokens.parameters())
    rows["mm blocks"] = count(model.lm.mm)
    rows[f"head {cfg.head.name}"] = count(model.head)
    rows["aux heads"] = count(model.aux)
    total, trainable = count(model), count(model, trainable_only=True)

    attention = {"requested": cfg.training.attention, "device": cfg.training.device}
    try:
        device = resolve_device(cfg.training.device)
        attention["device"] = device
        attention["resolved"] = resolve_backend(cfg.training.attention, device)
    except DmpfError as exc:  # a config for another machine can still be inspected here
        attention["error"] = str(exc)
    mask = model.lm.layout(cfg.data.text_len)
    return {
        "config": cfg.name,
        "backbone": {"name": cfg.backbone.name, "weights": backbone.arch.label, "source": backbone.source,
                     "layers": backbone.arch.n_layer, "width": backbone.arch.n_embd, "heads": backbone.arch.n_head},
        "parameters": {"total": total, "trainable": trainable, "frozen": total - trainable, "by_component": rows},
        "attention": attention,
        "layout": [{"name": s.name, "start": s.start, "length": s.length} for s in mask.segments],
        "positions": {"used": mask.seq_len, "available": backbone.arch.n_positions},
        "mm_layers": sorted(cfg.mm.layers) if model.groups else [],
        "gate": cfg.mm.gate,
        "mask_preset": cfg.fusion.mask,
    }
