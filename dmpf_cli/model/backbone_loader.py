"""The frozen GPT-2 a config selects, built or loaded from disk only (design.md §3).

:func:`check_available` finds a pretrained backbone's files (:mod:`dmpf_cli.model.backbone_files`) and its
tokenizer before a run starts; :func:`load_backbone` builds the model from what it found: random-init names in
the catalogue shapes from a seed (:func:`init_gpt2_`, dmpf's own draw), pretrained ones from their local
directory, never the network. torch and transformers are imported inside the functions, never at module level:
the CLI's --help and config validation must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import BackboneConfig
from ..errors import DmpfError, one_line
from .backbone_files import (
    BackboneError,
    Located,
    check_gpt2_config,
    check_weights,
    locate_pretrained,
    offline_and_quiet,
)
from .backbones import BackboneArch, backbone_shapes, registered_shapes
from .tokenizer import load_tokenizer, pretrained_tokenizer

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch/transformers load lazily
    from transformers import GPT2Model, PreTrainedTokenizerBase


@dataclass
class LoadedBackbone:
    model: "GPT2Model"  # eval mode, no parameter requires grad
    tokenizer: "PreTrainedTokenizerBase | None"  # None for a meta build
    arch: BackboneArch  # the real shapes, read back from the built model's config
    source: str  # where the weights came from, for printing next to results
    pad_id: int
    fingerprint: str | None = None  # weights_fingerprint of the fp32 weights as built; None for a meta build


_DEFAULT_PAD = {"gpt2-bpe": 50256, "bert-wordpiece": 0, "own-bpe": 0}  # <|endoftext|> / [PAD] / <|endoftext|>


def _arch_of(model: Any, base: BackboneArch) -> BackboneArch:
    c = model.config
    return replace(
        base, n_layer=int(c.n_layer), n_embd=int(c.n_embd), n_head=int(c.n_head),
        n_positions=int(c.n_positions), vocab_size=int(c.vocab_size),
    )


def _readable_shapes(cfg: BackboneConfig) -> BackboneArch:
    """:func:`backbone_shapes`, an unreadable ``config.json`` as a one-line :class:`BackboneError`."""
    try:
        return backbone_shapes(cfg)
    except ValueError as exc:  # an unreadable config.json; RegistryError (a DmpfError) passes through
        if isinstance(exc, DmpfError):
            raise
        raise BackboneError(one_line(exc)) from None


def freeze(model: Any) -> Any:
    """No parameter requires grad and the module is in eval mode; idempotent. Returns ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


def init_gpt2_(model: Any, seed: int, std: float = 0.02) -> Any:
    """GPT-2's initialisation, done by dmpf so that a random-init backbone is the same on every
    transformers version (5.0-5.14 skip the scaled residual init and draw other weights from the same
    seed). Weights N(0, std), the residual projections (``c_proj``) N(0, std/sqrt(2 n_layer)), LayerNorm
    scales 1, biases 0; each tensor from its own generator, seeded from ``seed`` and its name, so the
    weights depend on neither the parameter order nor what transformers drew. Returns ``model``."""
    import math
    import zlib

    import torch

    scaled = std / math.sqrt(2 * model.config.n_layer)
    generator = torch.Generator()
    with torch.no_grad():
        for name, p in model.named_parameters():
            module, kind = name.rsplit(".", 2)[-2:]
            if kind == "bias":
                p.zero_()
            elif module.startswith("ln_"):
                p.fill_(1.0)
            else:
                generator.manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
                p.normal_(0.0, scaled if module == "c_proj" else std, generator=generator)
    return model


def weights_fingerprint(model: Any, samples: int = 256) -> str:
    """A short digest of a model's weights: every parameter's name, shape and ``samples`` evenly spaced
    values. Cheap even for gpt2-large; any different initialisation or checkpoint changes it."""
    import hashlib

    import torch

    digest = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            flat = p.detach().reshape(-1)
            n = min(samples, flat.numel())
            picks = torch.arange(n) * (flat.numel() - 1) // max(n - 1, 1)  # integer steps: exact at any size
            digest.update(f"{name}{tuple(p.shape)}".encode())
            digest.update(flat[picks].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _gpt2_config(arch: BackboneArch) -> Any:
    from transformers import GPT2Config

    # GPT-2's <|endoftext|> id where the vocabulary has it; a smaller one (dmpf's own BPE) has no such id here
    special = 50256 if arch.vocab_size > 50256 else None
    return GPT2Config(
        n_layer=arch.n_layer, n_embd=arch.n_embd, n_head=arch.n_head, n_positions=arch.n_positions,
        vocab_size=arch.vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=special, eos_token_id=special,
    )


@dataclass(frozen=True)
class FoundBackbone:
    """What :func:`check_available` found: :func:`load_backbone` given it builds from it without looking again."""

    arch: BackboneArch  # the catalogue shapes
    located: Located | None = None  # where the pretrained files are; None for a random-init name
    tokenizer: "PreTrainedTokenizerBase | None" = None  # a pretrained backbone's, loaded from its directory


def check_available(cfg: BackboneConfig) -> FoundBackbone:
    """A one-line :class:`BackboneError` now if :func:`load_backbone` would miss files; reads no weights. Returns
    what it found (the directory, the tokenizer) for :func:`load_backbone`."""
    arch = registered_shapes(cfg)
    if arch.random_init:
        return FoundBackbone(arch)
    loc = locate_pretrained(cfg, arch)
    check_gpt2_config(loc, cfg)
    check_weights(loc)
    return FoundBackbone(arch, loc, pretrained_tokenizer(loc, arch))


def load_backbone(cfg: BackboneConfig, *, seed: int = 0, meta: bool = False,
                  found: FoundBackbone | None = None) -> LoadedBackbone:
    """Build or load the frozen GPT-2 that ``cfg`` selects.

    * random-init names: built in the catalogue shapes from ``seed`` (the global RNG is left as it
      was), with the offline GPT-2 BPE tokenizer;
    * pretrained names: read from ``cfg.path`` or the local hub cache only (see :func:`locate_pretrained`);
      weights are loaded as float32 on the CPU;
    * ``meta=True``: the architecture on the meta device: no weights, no memory, no tokenizer, and
      no need for the weights to be present (pretrained shapes come from :func:`backbone_shapes`).

    ``found``: what :func:`check_available` found for ``cfg`` (a run's preflight), not looked for again.
    Every failure is a one-line :class:`BackboneError`.
    """
    if meta:
        import torch
        from transformers import GPT2Model

        local = Path(cfg.path).expanduser() if cfg.path else None
        if local is not None and (local / "config.json").is_file() and not registered_shapes(cfg).random_init:
            check_gpt2_config(Located(local, f"backbone.path: {cfg.path}", "", ""), cfg)
        arch = _readable_shapes(cfg)
        with torch.device("meta"):
            model = GPT2Model(_gpt2_config(arch))
        return LoadedBackbone(
            freeze(model), None, _arch_of(model, arch),
            f"architecture only ({cfg.name} on the meta device, no weights)",
            _DEFAULT_PAD.get(arch.tokenizer, arch.vocab_size - 1),
        )
    arch = found.arch if found else registered_shapes(cfg)  # a pretrained model's real shapes are read back from the load
    if arch.random_init:
        import torch
        from transformers import GPT2Model

        config = _gpt2_config(arch)
        with torch.device("meta"):  # shapes only: transformers' own init (13 s for gpt2-large) is skipped
            model = GPT2Model(config)
        if any(True for _ in model.buffers()):  # to_empty would leave a buffer uninitialised: build it for real
            with torch.random.fork_rng(devices=[]):  # CPU generator only; restored on exit
                model = GPT2Model(config)
        else:
            model = model.to_empty(device="cpu")
        init_gpt2_(model, seed)  # dmpf's own draw: the same weights whatever transformers' init does
        tokenizer = load_tokenizer(cfg, arch)
        return LoadedBackbone(
            freeze(model), tokenizer, _arch_of(model, arch),
            f"random weights ({cfg.name}, seed {seed})", tokenizer.pad_token_id, weights_fingerprint(model),
        )

    found = found or check_available(cfg)
    loc, tokenizer = found.located, found.tokenizer

    import torch
    from transformers import GPT2Model

    try:
        with offline_and_quiet():
            model, info = GPT2Model.from_pretrained(
                str(loc.directory), local_files_only=True, output_loading_info=True, dtype=torch.float32,
            )
    except Exception as exc:  # corrupt or mismatched checkpoints: say what and where, in one line
        raise BackboneError(f"{loc.where}: could not load the weights ({type(exc).__name__}: {one_line(exc)})") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise BackboneError(
            f"{loc.where}: the checkpoint lacks {len(missing)} GPT-2 weight(s) ({shown}); they would be "
            f"random, so dmpf refuses it; {loc.hint}"
        )
    real_arch = _arch_of(model, arch)
    if len(tokenizer) > real_arch.vocab_size:
        raise BackboneError(
            f"{loc.where}: the tokenizer has {len(tokenizer)} tokens but the model only {real_arch.vocab_size} embeddings"
        )
    return LoadedBackbone(freeze(model), tokenizer, real_arch, loc.source, tokenizer.pad_token_id,
                          weights_fingerprint(model))
