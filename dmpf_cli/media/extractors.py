"""Feature recipes (registry kind ``extractor``): how a clip becomes the per-frame arrays a dataset holds.

A recipe is an :class:`Extractor`: its name and version (recorded in every clip's features file), the width of its
audio and visual features, the function that turns a media file into audio features, and the OpenFace columns its
visual features are (read from OpenFace 2's CSV for the clip, which users run themselves, or taken from the user's
own per-frame features of the same width, ``.npy`` or ``.csv``). A plugin registers another
(``@register("extractor", "wav2vec2")``); its contract is :mod:`dmpf_cli.plugin_kit.extractors`.

Built in: ``sims`` (CH-SIMS's published recipe, design notes §7 and :mod:`~dmpf_cli.media.features`) and
``opensmile`` (openSMILE eGeMAPS v02 low-level descriptors for audio, the same OpenFace columns for vision).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..registry import register
from .audio import MediaError, load_audio
from .clipfile import ClipFeatures
from .features import OPENSMILE_RATE, SIMS_RATE, opensmile_audio, sims_audio
from .openface import SIMS_COLUMNS, read_openface


@dataclass(frozen=True)
class Extractor:
    name: str
    version: str  # bumped whenever the features it computes change: a dataset records it per clip
    audio_dim: int
    vision_dim: int
    audio: Callable[[Path], np.ndarray]  # a media file → (frames, audio_dim) float32
    openface_columns: tuple[str, ...]  # the visual features: these OpenFace CSV columns, in the CSV's order
    description: str = ""

    def vision(self, path: Path) -> np.ndarray:
        """(frames, vision_dim) float32 from an OpenFace CSV (its columns checked by name), or the user's own
        per-frame features: an ``.npy`` array or a headerless ``.csv`` of ``vision_dim`` numbers per row."""
        path = Path(path)
        if path.suffix.lower() == ".csv" and _is_openface(path):
            return read_openface(path, self.openface_columns)
        try:
            frames = (np.load(path, allow_pickle=False) if path.suffix.lower() == ".npy"
                      else np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64))
        except (OSError, ValueError) as exc:
            raise MediaError(f"{path}: cannot read per-frame visual features ({' '.join(str(exc).split())[:100]})") from None
        if frames.ndim != 2 or frames.shape[1] != self.vision_dim or not len(frames):
            raise MediaError(f"{path}: expected per-frame visual features of shape (frames >= 1, {self.vision_dim}) for "
                             f"the {self.name} recipe, got {tuple(frames.shape)}")
        if not np.isfinite(frames).all():
            raise MediaError(f"{path}: per-frame visual features hold NaN or infinity")
        return frames.astype(np.float32)

    def extract(self, media: Path, *, text: str, vision: Path | None) -> ClipFeatures:
        """One clip's features: its audio from ``media``, its visual features from ``vision`` (None: no visual
        features), and ``text`` (the transcript)."""
        audio = self.audio(Path(media))
        frames = self.vision(vision) if vision is not None else None
        return ClipFeatures(text, audio, frames, self.name, self.version, Path(media).name)


def _is_openface(path: Path) -> bool:
    """Whether a CSV is OpenFace's (its header starts with ``frame``) rather than the user's headerless frames."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readline().lstrip("\ufeff").strip().startswith("frame")
    except OSError as exc:
        raise MediaError(f"{path}: cannot read ({exc.strerror or exc})") from None


@register("extractor", "sims")
def sims() -> Extractor:
    """CH-SIMS's published recipe: librosa at 22,050 Hz (MFCC 20, zero-crossing rate, chroma CQT; 33 columns) and
    OpenFace 2's 709 columns (gaze, pose, landmarks, PDM, AUs)."""
    return Extractor("sims", "1", 33, len(SIMS_COLUMNS), lambda path: sims_audio(load_audio(path, SIMS_RATE)),
                     SIMS_COLUMNS, "CH-SIMS: librosa MFCC+ZCR+chroma CQT at 22,050 Hz (33); OpenFace 2 (709)")


@register("extractor", "opensmile")
def opensmile() -> Extractor:
    """openSMILE's eGeMAPS v02 low-level descriptors at 16 kHz (25 columns per 10 ms) and OpenFace 2's 709 columns."""
    return Extractor("opensmile", "1", 25, len(SIMS_COLUMNS),
                     lambda path: opensmile_audio(load_audio(path, OPENSMILE_RATE)), SIMS_COLUMNS,
                     "openSMILE eGeMAPS v02 LLDs at 16 kHz (25); OpenFace 2 (709)")
