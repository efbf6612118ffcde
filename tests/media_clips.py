"""Real media made here for the media tests: sentences spoken by espeak-ng into WAV files, muxed with PyAV into mp4
files with a generated video track, and OpenFace CSVs written with OpenFace's documented column names.

The generator lives in ``benchmarks/media_fixtures.py``, which the extraction benchmark uses too; this module
re-exports it under the names the tests import, and turns a missing espeak-ng into a skip."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if _BENCHMARKS not in sys.path:
    sys.path.append(_BENCHMARKS)

import media_fixtures  # noqa: E402
from media_fixtures import PARAGRAPH, SENTENCES, MissingTool, mux, openface_csv, speech_clip  # noqa: E402, F401


def speak(text: str, path: Path) -> Path:
    """``text`` spoken by espeak-ng into the WAV ``path`` (22,050 Hz mono, as espeak-ng writes); skips the test
    where espeak-ng is not installed."""
    try:
        return media_fixtures.speak(text, path)
    except MissingTool as exc:
        pytest.skip(str(exc))
