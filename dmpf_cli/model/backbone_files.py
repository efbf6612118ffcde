"""Where a pretrained backbone's files are, found offline (design.md §3).

Weights are only ever read from disk. A pretrained backbone comes from ``backbone.path`` (a local
directory) or from the local Hugging Face cache (``backbone.path`` unset, or set to a hub id),
found with huggingface_hub's offline look-up (``snapshot_download(local_files_only=True)``), which reads
only the one repository's folder: a shared lab cache is never scanned whole. transformers then only ever
sees a local directory and ``local_files_only=True``, and the hub client is held in offline mode
(:func:`offline_and_quiet`) while it loads: no code path can open a connection.

huggingface_hub and transformers are imported inside the functions, never at module level: the CLI's
--help and config validation import the backbone modules and must stay fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..config import BackboneConfig
from ..errors import DmpfError, one_line
from .backbones import BackboneArch, demo_lm_dir


class BackboneError(DmpfError):
    """The backbone cannot be built or loaded (missing directory, weights, cache entry ...); one line."""


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# The OpenAI checkpoints moved under openai-community/ on the hub; the old ids still redirect there,
# and the cache folder is named after the id that was asked for, so look under both.
_HUB_ALIASES = {name: f"openai-community/{name}" for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


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
class Located:
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


def locate_pretrained(cfg: BackboneConfig, arch: BackboneArch) -> Located:
    """The local directory that holds ``cfg``'s pretrained weights, or a one-line :class:`BackboneError`."""
    hub_id = arch.hub_id or cfg.name
    if cfg.path:
        given = cfg.path
        found = classify_path(given)
        if found.kind == "directory":
            return Located(found.path, f"backbone.path: {given}", _download_hint(hub_id, given),
                            f"pretrained from {found.path}")
        if found.kind == "file":
            raise BackboneError(f"backbone.path: {given} is a file, not a model directory; {_download_hint(hub_id, given)}")
        if found.kind == "uncached":
            raise BackboneError(
                f"backbone.path: {given} is neither a directory nor in the Hugging Face cache ({found.cache}) "
                f"and dmpf never downloads at run time; {_download_hint(given, None)}"
            )
        if found.kind == "cached":
            return Located(
                found.path, f"{given} in the Hugging Face cache ({found.path})", _download_hint(given, None),
                f"pretrained from the Hugging Face cache: {found.path}",
            )
        raise BackboneError(f"backbone.path: {given} does not exist; {_download_hint(hub_id, given)}")
    if arch.built_by_dmpf:
        directory = demo_lm_dir()
        hint = "`dmpf pretrain-lm` builds it (`dmpf train` does so on first use)"
        if not (directory / "dmpf.json").is_file():
            raise BackboneError(f"{cfg.name}: the demo language model is not built yet ({directory}); {hint}")
        return Located(directory, f"{cfg.name} ({directory})", hint,
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
    return Located(
        snap, f"{arch.hub_id} in the Hugging Face cache ({snap})", _download_hint(arch.hub_id, None),
        f"pretrained from the Hugging Face cache: {snap}",
    )


def check_gpt2_config(loc: Located, cfg: BackboneConfig) -> None:
    """A one-line :class:`BackboneError` unless ``loc`` holds a readable GPT-2 ``config.json``."""
    config_file = loc.directory / "config.json"
    if not config_file.is_file():
        raise BackboneError(f"{loc.where} has no config.json; {loc.hint}")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneError(f"{loc.where}: config.json is not readable JSON ({one_line(exc)})") from None
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != "gpt2":
        raise BackboneError(
            f"{loc.where}: config.json has model_type {model_type!r}, not 'gpt2'; "
            f"backbone '{cfg.name}' needs a GPT-2 checkpoint"
        )


def check_weights(loc: Located) -> None:
    """A one-line :class:`BackboneError` unless ``loc`` holds weight files."""
    has = any((loc.directory / f).is_file() for f in WEIGHT_FILES) or any(loc.directory.glob("*.safetensors"))
    if not has:
        raise BackboneError(f"{loc.where} has no weights (model.safetensors or pytorch_model.bin); {loc.hint}")


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
