"""Audio from any media file: decoded with PyAV, mixed to mono, resampled as ``librosa.load`` resamples.

``load_audio(path, sr)`` equals ``librosa.load(path, sr=sr)`` for the files librosa reads itself (WAV, FLAC, OGG):
the decoded samples are the same floats (integer PCM scaled by ``1 / 2**(bits - 1)``), channels are averaged as
``librosa.to_mono`` averages them, and the resampling is librosa's own (``librosa.resample``, its default
``soxr_hq``). Unlike librosa, it also reads the audio track of a video container (mp4, mkv, webm, …).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DmpfError


class MediaError(DmpfError):
    """A media file that cannot be used: one line naming the file and why."""


class MissingLibrary(MediaError, ImportError):
    """A library a feature recipe needs is not installed: one line naming it and the extra that installs it. It stops
    the whole extraction (every clip would fail alike), whatever ``--on-error`` says."""


def need(module: str, extra: str = "media"):
    """``import module``, or a :class:`MissingLibrary` line saying which extra of dmpf installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingLibrary(f"{module} is not installed, and the feature recipes need it: pip install "
                             f"'dmpf[{extra}]' (or bash scripts/setup.sh --dev)", name=module) from None


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track of ``path`` as mono float32 samples at its own sampling rate: (samples, rate).

    A missing or unreadable file, a file without an audio track, and a track without samples are
    :class:`MediaError` lines naming the file."""
    av = need("av")

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: not a readable media file ({' '.join(str(exc).split())[:120]})") from None
    with container:
        if not container.streams.audio:
            raise MediaError(f"{path}: no audio track")
        stream = container.streams.audio[0]
        rate = stream.rate or stream.codec_context.sample_rate
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks.append(_planar_float(frame))
        except (av.error.FFmpegError, ValueError) as exc:
            if not chunks:
                raise MediaError(f"{path}: the audio track cannot be decoded ({' '.join(str(exc).split())[:120]})") from None
            # a truncated file: what decoded before the damage is kept only if the caller accepts it
            raise MediaError(f"{path}: the audio track is damaged or truncated after "
                             f"{sum(c.shape[1] for c in chunks) / rate:.2f} s") from None
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise MediaError(f"{path}: the audio track holds no samples")
    audio = np.concatenate(chunks, axis=1)  # (channels, samples)
    return np.mean(audio, axis=0, dtype=np.float32) if audio.shape[0] > 1 else audio[0], int(rate)


def _planar_float(frame) -> np.ndarray:
    """One decoded frame as float32 (channels, samples), integers scaled to [-1, 1) as libsndfile scales them."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # interleaved: (1, samples * channels)
        data = data.reshape(-1, channels).T
    kind = frame.format.name.rstrip("p")
    if kind in ("s16", "s32", "u8", "s64"):
        bits = {"u8": 8, "s16": 16, "s32": 32, "s64": 64}[kind]
        data = data.astype(np.float64 if bits > 16 else np.float32)
        if kind == "u8":
            data = data - 128.0
        data = (data / float(2 ** (bits - 1))).astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def load_audio(path: Path, sr: int) -> np.ndarray:
    """``path``'s audio as mono float32 at ``sr`` Hz, resampled as ``librosa.load(path, sr=sr)`` resamples."""
    audio, rate = decode_audio(path)
    if rate == sr:
        return audio
    return need("librosa").resample(audio, orig_sr=rate, target_sr=sr).astype(np.float32, copy=False)
