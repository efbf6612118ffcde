"""One clip's features on disk: ``CLIP.npz`` holding ``audio`` and ``vision`` (frames, features) float32 arrays where
the recipe has them, ``text`` (the transcript), and what made them: the recipe's name and version and the source
file's name. Written to a temporary name and renamed, so a killed extraction never leaves a half-written clip —
a finished clip is whole, which is what lets an interrupted extraction resume where it stopped."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import follow_umask, temporary_name
from .audio import MediaError

FORMAT, FORMAT_VERSION = "dmpf-clip-features", 1


@dataclass
class ClipFeatures:
    text: str
    audio: np.ndarray | None  # (frames, features) float32
    vision: np.ndarray | None
    recipe: str
    recipe_version: str
    source: str  # the media file's name


def save_clip(path: Path, clip: ClipFeatures) -> None:
    """Write ``clip`` to ``path`` (``.npz``) whole or not at all."""
    path = Path(path)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "recipe": clip.recipe,
            "recipe_version": clip.recipe_version, "source": clip.source}
    arrays = {"text": np.asarray(clip.text), "meta": np.asarray(json.dumps(meta))}
    for key in ("audio", "vision"):
        value = getattr(clip, key)
        if value is not None:
            arrays[key] = np.ascontiguousarray(value, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_clip(path: Path) -> ClipFeatures:
    """A clip's features; a file that is not one (or is damaged) is a one-line :class:`MediaError`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MediaError(f"{path}: not a readable clip features file ({type(exc).__name__})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError
    except (KeyError, ValueError, AttributeError):
        raise MediaError(f"{path}: not a dmpf clip features file (no '{FORMAT}' record)") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise MediaError(f"{path}: format_version {meta.get('format_version')}: this dmpf reads {FORMAT_VERSION}")
    return ClipFeatures(str(arrays.get("text", "")), arrays.get("audio"), arrays.get("vision"), meta.get("recipe", ""),
                        meta.get("recipe_version", ""), meta.get("source", ""))
