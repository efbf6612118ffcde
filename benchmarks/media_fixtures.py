"""Real media made on the spot, for the media tests (``tests/media_clips.py`` re-exports this module) and the
extraction benchmark (``benchmarks/extract_throughput.py``): sentences spoken by espeak-ng into WAV files, muxed
with PyAV into mp4 files with a generated video track, and OpenFace CSVs written with OpenFace's documented column
names. Nothing here imports pytest: a missing espeak-ng is :class:`MissingTool`, which the tests turn into a skip.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

SENTENCES = ("This film was a real pleasure to watch from start to finish.",
             "I found the plot dull and the acting worse.",
             "It was fine, nothing special.")

# the pool paragraphs are drawn from: a clip of several sentences says something different from its neighbours
PARAGRAPH = (*SENTENCES,
             "The opening scene promised far more than the rest of the story ever delivered.",
             "Honestly, the soundtrack carried every moment that the dialogue could not.",
             "I laughed more than I expected, although the ending felt rushed and a little cheap.",
             "Nobody in the theatre seemed to care what happened to the main character.",
             "The photography is beautiful, and the city at night looks like a painting.",
             "After twenty minutes I stopped checking my phone and simply enjoyed it.",
             "What a waste of a talented cast and a perfectly good idea.",
             "My friends disagreed with me, but I think it is the best film of the year.",
             "The second half drags, with long scenes in which nothing at all happens.",
             "It is not a masterpiece, yet it is warm, clever and worth an evening.",
             "I would not recommend it to anyone who values their time.")


class MissingTool(RuntimeError):
    """A program the media are made with is not installed (espeak-ng)."""


def speak(text: str, path: Path) -> Path:
    """``text`` spoken by espeak-ng into the WAV ``path`` (22,050 Hz mono, as espeak-ng writes)."""
    if not shutil.which("espeak-ng"):
        raise MissingTool("espeak-ng is not installed (.ci/run installs it with apt-get)")
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


def paragraph(index: int, sentences: int) -> str:
    """``sentences`` sentences of :data:`PARAGRAPH`, starting at a place and stride that depend on ``index``, so
    consecutive clips say different things."""
    stride = (1, 3, 5, 7, 9, 11, 13)[index % 7]  # each coprime with the pool's 15 sentences: no repeats within 15
    return " ".join(PARAGRAPH[(index + k * stride) % len(PARAGRAPH)] for k in range(sentences))


def speech_clip(folder: Path, name: str, *, seconds: float, index: int = 0, rate: int = 22050,
                vision: bool = True) -> dict[str, Path]:
    """One clip as ``dmpf extract`` finds it: ``NAME.mp4`` (espeak-ng speaking a paragraph, cut to exactly
    ``seconds`` s, resampled to ``rate`` Hz and encoded as AAC, under a generated 30 fps video track), the
    paragraph in ``NAME.txt`` and, with ``vision``, an OpenFace CSV ``NAME.csv`` of ``seconds`` × 30 frames.
    Returns the paths by kind (``media``, ``text``, ``vision``); the intermediate WAV is removed."""
    import soundfile

    folder = Path(folder)
    wav = folder / f"{name}.speech.wav"
    sentences = 1
    while True:  # espeak-ng speaks ~2.5 words a second: add sentences until the speech fills the clip
        text = paragraph(index, sentences)
        speak(text, wav)
        y, sr = soundfile.read(str(wav), dtype="float32")
        if len(y) >= seconds * sr or sentences >= 200:
            break
        sentences = max(sentences + 1, int(sentences * seconds * sr / max(len(y), 1)) + 1)
    y = np.pad(y, (0, max(0, int(seconds * sr) - len(y))))[: int(round(seconds * sr))]
    if rate != sr:
        import soxr  # librosa's resampler, without importing librosa (the benchmark times its first use)

        y = soxr.resample(y, sr, rate, quality="HQ").astype(np.float32)
    soundfile.write(str(wav), y, rate, subtype="FLOAT")
    made = {"media": mux(folder / f"{name}.mp4", wav, seconds=seconds), "text": folder / f"{name}.txt"}
    made["text"].write_text(text + "\n", encoding="utf-8")
    wav.unlink()
    if vision:
        made["vision"] = folder / f"{name}.csv"
        openface_csv(made["vision"], frames=int(round(seconds * 30)))
    return made
