"""An exported model: a trained DMPF as a directory that travels (Hugging Face's model-repository conventions).

``dmpf export`` writes one from a run; ``from_pretrained`` (:mod:`dmpf_cli.api`), ``dmpf eval --run`` and
``dmpf predict --run`` read one from a path or a Hub id::

    DIR/config.json        the resolved experiment config the run trained with (``dmpf train --config`` reads it)
    DIR/model.safetensors  the trainable weights of the run's best checkpoint; never the frozen backbone, which
                           is named in dmpf.json (its Hub id, or dmpf's demo LM) with its weights' fingerprint
    DIR/dmpf.json          what loading and the model card need: the format, the feature widths, the backbone, the
                           data the run saw (its fingerprint), the seeds and their test metrics
    DIR/README.md          the model card: Hub card metadata, what it is, the scores, the command that reproduces it

The directory is written whole or not at all (built under a temporary name beside it, then renamed). A Hub id
is looked up in the Hugging Face cache first (offline), then downloaded unless ``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text, move_into_place
from .run import RunError, read_json

FORMAT = "dmpf-model"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, MANIFEST, CARD = "config.json", "model.safetensors", "dmpf.json", "README.md"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_exported(directory: Path) -> bool:
    """Whether ``directory`` holds an exported model (its dmpf.json says so)."""
    manifest = Path(directory) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def looks_like_hub_id(text: str) -> bool:
    """``org/name``: a Hub model id (a path that exists is always taken as a path first)."""
    return bool(_HUB_ID.fullmatch(text))


def write_exported(output: Path, *, config: dict[str, Any], weights: Path, manifest: dict[str, Any], card: str,
                   overwrite: bool) -> None:
    """Write an exported model to ``output``, whole or not at all. An existing non-empty ``output`` is refused unless
    it is an exported model and ``overwrite`` is given (then it is replaced)."""
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise RunError(f"--output: {output} is a file; expected a directory for the exported model")
    if output.is_dir() and any(output.iterdir()):
        if not is_exported(output):
            raise RunError(f"--output: {output} exists and is not an exported dmpf model; choose another --output")
        if not overwrite:
            raise RunError(f"--output: {output} holds an exported model; pass --overwrite to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        shutil.copyfile(weights, tmp / WEIGHTS)
        atomic_write_text(tmp / CONFIG, json.dumps(config, indent=1) + "\n")
        atomic_write_text(tmp / MANIFEST, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **manifest},
                                                     indent=1) + "\n")
        atomic_write_text(tmp / CARD, card)
        move_into_place(tmp, output)
    except OSError as exc:
        raise RunError(f"--output: {output}: cannot write ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def copy_exported(source: Path, output: Path, *, overwrite: bool) -> None:
    """Copy the exported model in ``source`` to ``output`` (as :func:`write_exported` writes one)."""
    if Path(output).expanduser().resolve() == Path(source).resolve():
        return
    _, manifest = read_exported(source)
    write_exported(output, config=read_json(source / CONFIG), weights=source / WEIGHTS,
                   manifest={k: v for k, v in manifest.items() if k not in ("format", "format_version")},
                   card=(source / CARD).read_text(encoding="utf-8") if (source / CARD).is_file() else "", overwrite=overwrite)


def read_exported(directory: Path, option: str = "--run") -> tuple[Path, dict[str, Any]]:
    """(the config file, dmpf.json) of an exported model; anything missing or damaged is a one-line error."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS, MANIFEST):
        if not (directory / name).is_file():
            raise RunError(f"{option}: {directory}: not a complete exported dmpf model (no {name})")
    manifest = read_json(directory / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RunError(f"{directory / MANIFEST}: not an exported dmpf model (format: expected '{FORMAT}')")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise RunError(f"{directory / MANIFEST}: format_version {json.dumps(version)[:20]}: this dmpf reads "
                       f"{FORMAT_VERSION}; upgrade dmpf")
    dims = manifest.get("feature_dims")
    if not (isinstance(dims, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
        raise RunError(f"{directory / MANIFEST}: feature_dims: expected positive integers, got {json.dumps(dims)[:60]}")
    return directory / CONFIG, manifest


def locate(source: str | Path, option: str = "--run") -> Path:
    """The local directory of ``source``: a path as it is, else a Hub id's snapshot (the Hugging Face cache first,
    offline; then the Hub, unless ``HF_HUB_OFFLINE`` is set). Neither is a one-line error."""
    path = Path(source).expanduser()
    if path.exists() or not looks_like_hub_id(str(source)):
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(source), local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise RunError(f"{option}: {source}: no such run directory or exported model, and no such model in the Hugging "
                       f"Face cache ({_cache_dir()}; HF_HUB_OFFLINE is set, so the Hub was not asked)")
    try:
        return Path(snapshot_download(str(source)))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        reason = " ".join(str(exc).split()).split(" An error happened")[0][:120]
        raise RunError(f"{option}: {source}: no such run directory or exported model, no such model in the Hugging Face "
                       f"cache ({_cache_dir()}), and none on the Hub ({reason})") from None


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
