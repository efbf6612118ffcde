"""Real media made here for the media tests: sentences spoken by espeak-ng into WAV files, muxed with PyAV into mp4
files with a generated video track, and OpenFace CSVs written with OpenFace's documented column names."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SENTENCES = ("This film was a real pleasure to watch from start to finish.",
             "I found the plot dull and the acting worse.",
             "It was fine, nothing special.")


def speak(text: str, path: Path) -> Path:
    """``text`` spoken by espeak-ng into the WAV ``path`` (22,050 Hz mono, as espeak-ng writes)."""
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (.ci/run installs it with apt-get)")
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def mux(path: Path, wav: Path | None, *, seconds: float | None = None, video: bool = True, stereo: bool = False,
        codec: str = "aac") -> Path:
    """An mp4 (or another container, by ``path``'s suffix) with a generated 64×48 video track at 30 fps and
    ``wav``'s samples as its audio track (mono, or stereo with the right channel at half amplitude)."""
    import av
    import soundfile

    y, sr = soundfile.read(str(wav), dtype="float32") if wav else (None, 22050)
    seconds = seconds or (len(y) / sr if y is not None else 1.0)
    out = av.open(str(path), "w")
    if video:
        vs = out.add_stream("mpeg4", rate=30)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
    if y is not None:
        stream = out.add_stream(codec, rate=sr)
        stream.layout = "stereo" if stereo else "mono"
        data = np.stack([y, y * 0.5]) if stereo else y[None]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=stream.layout.name)
        frame.sample_rate = sr
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    if video:
        for i in range(int(seconds * 30)):
            image = np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    out.close()
    return path


def openface_csv(path: Path, frames: int = 12, *, columns=None, faces: bool = True, extra=("AU28_r_extra",)) -> np.ndarray:
    """An OpenFace 2 FeatureExtraction CSV (", " between names, as OpenFace writes) with ``columns`` (default: the
    709 of CH-SIMS's recipe) plus ``extra`` ones; returns the recipe's columns' values, (frames, 709)."""
    from dmpf_cli.media.openface import LEADING, SIMS_COLUMNS

    columns = list(SIMS_COLUMNS if columns is None else columns)
    names = [*LEADING, *columns[:300], *extra, *columns[300:]]
    rng = np.random.default_rng(frames)
    values = rng.standard_normal((frames, len(columns))).astype(np.float32)
    lines = [", ".join(names)]
    for i in range(frames):
        lead = [str(i + 1), "0", f"{i / 30:.3f}", "0.98" if faces else "0", "1" if faces else "0"]
        row = [*lead, *[repr(float(v)) for v in values[i, :300]], *["0.5"] * len(extra),
               *[repr(float(v)) for v in values[i, 300:]]]
        lines.append(", ".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return values
