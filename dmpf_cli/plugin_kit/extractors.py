"""The feature-recipe contract: ``factory() -> Extractor`` (:class:`dmpf_cli.media.extractors.Extractor`).

An extractor names itself and its version, declares its audio and visual widths, turns a media file into
(frames, audio_dim) finite float32 features — the same ones every time — and refuses a file it cannot read in one
line naming it. The checks make their own media: a second and a half of a generated voice-like signal in a WAV.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DmpfError
from ..registry import Component
from .contract import Contract, Skip

extractor_contract = Contract("extractor", "factory() -> Extractor")


def _build(component: Component):
    from ..media.extractors import Extractor

    made = component.factory()
    assert isinstance(made, Extractor), f"the factory returned {type(made).__name__}, expected an Extractor"
    return made


def _voice(path: Path, seconds: float = 1.5, sr: int = 22050) -> Path:
    """A voice-like test signal (a gliding harmonic tone with a syllable rhythm, and a little noise) as a WAV."""
    try:
        import soundfile
    except ImportError:
        raise Skip("needs soundfile (pip install dmpf[media])") from None
    t = np.arange(int(seconds * sr)) / sr
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    noise = np.random.default_rng(0).standard_normal(len(t)) * 0.01
    soundfile.write(str(path), (0.3 * voice + noise).astype(np.float32), sr)
    return path


@extractor_contract.check
def declares(component: Component, **config: Any) -> None:
    """an Extractor with the registered name, a version string, and positive audio and visual widths"""
    made = _build(component)
    assert made.name == component.name, f"the extractor is named '{made.name}', registered as '{component.name}'"
    assert isinstance(made.version, str) and made.version, "version: expected a non-empty string"
    for key in ("audio_dim", "vision_dim"):
        value = getattr(made, key)
        assert isinstance(value, int) and value > 0, f"{key}: expected a positive integer, got {value!r}"
    assert len(made.openface_columns) == made.vision_dim, (
        f"{len(made.openface_columns)} OpenFace columns for a vision_dim of {made.vision_dim}")


@extractor_contract.check
def extracts_audio(component: Component, **config: Any) -> None:
    """a WAV of a voice-like signal gives (frames >= 1, audio_dim) finite float32 features, the same twice"""
    made = _build(component)
    with tempfile.TemporaryDirectory() as tmp:
        wav = _voice(Path(tmp) / "voice.wav")
        try:
            first, second = made.audio(wav), made.audio(wav)
        except ImportError as exc:
            raise Skip(f"needs {exc.name} (pip install dmpf[media])") from None
    assert isinstance(first, np.ndarray) and first.dtype == np.float32, f"expected float32 numpy features, got {type(first).__name__}"
    assert first.ndim == 2 and first.shape[0] >= 1 and first.shape[1] == made.audio_dim, (
        f"expected (frames >= 1, {made.audio_dim}), got {first.shape}")
    assert np.isfinite(first).all(), "non-finite features"
    assert np.array_equal(first, second), "the same file gave different features"


@extractor_contract.check
def refuses_bad_media(component: Component, **config: Any) -> None:
    """an empty media file is refused in one line naming it (a DmpfError), not a traceback"""
    made = _build(component)
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "empty.mp4"
        bad.write_bytes(b"")
        try:
            made.audio(bad)
        except ImportError as exc:
            raise Skip(f"needs {exc.name} (pip install dmpf[media])") from None
        except DmpfError as exc:
            assert str(bad) in str(exc) and "\n" not in str(exc), f"the error does not name the file in one line: {exc}"
            return
    raise AssertionError("an empty file was accepted")
