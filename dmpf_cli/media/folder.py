"""A dataset as a folder of clips, in MMSA-FET's layout::

    DIR/label.csv                      video_id, clip_id, text, label, mode [, label_T, label_A, label_V]
    DIR/Raw/VIDEO_ID/CLIP_ID.mp4       the clip (any container FFmpeg reads: .mp4, .avi, .mkv, .wav, …)
    DIR/Raw/VIDEO_ID/CLIP_ID.csv       its OpenFace 2 CSV (or CLIP_ID.npy, your own per-frame visual features),
                                       or under --openface ODIR as ODIR/VIDEO_ID/CLIP_ID.csv

:func:`read_folder` turns ``label.csv`` into one :class:`Clip` per row: its sample id (MMSA's
``VIDEO_ID$_$CLIP_ID``), split, labels, text, and the files it is made from. A problem with the file as a whole (no
``label.csv``, a missing column, a label that is not a number or is outside the dataset's range, an unknown mode, an
id that repeats or is not a plain name) is one :class:`MediaError` line naming ``label.csv`` and its line; a problem
with one clip (its media or visual features missing) is recorded on the clip, for the caller's ``--on-error``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .audio import MediaError
from .transcripts import read_label_csv

LABELS = "label.csv"
RAW = "Raw"
MEDIA_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".flv", ".mpg", ".mpeg", ".wav", ".flac", ".mp3", ".m4a",
                  ".aac", ".ogg", ".opus")
VISION_SUFFIXES = (".csv", ".npy")
MODES = ("train", "valid", "test")
UNIMODAL_COLUMNS = ("label_T", "label_A", "label_V")  # CH-SIMS's unimodal labels, where label.csv has them


@dataclass
class Clip:
    video_id: str
    clip_id: str
    split: str
    text: str
    label: float
    unimodal: dict[str, float]  # "T"/"A"/"V" -> label, where label.csv has those columns
    line: int  # in label.csv
    media: Path | None  # None: not found (``problem`` says so)
    vision: Path | None  # the OpenFace CSV or own .npy, where there is one
    problem: str | None = field(default=None)

    @property
    def id(self) -> str:
        """The sample id, as MMSA writes CH-SIMS's: ``VIDEO_ID$_$CLIP_ID``."""
        return f"{self.video_id}$_${self.clip_id}"

    @property
    def name(self) -> str:
        """How messages name the clip: its media file, or where it was expected."""
        return str(self.media) if self.media else f"{RAW}/{self.video_id}/{self.clip_id}"


def _plain(value: str, column: str, where: str) -> str:
    if not value or value in (".", "..") or any(c in value for c in "/\\\0") or value != value.strip():
        raise MediaError(f"{where}: {column} '{value}' is not a plain file name (it names the clip's folder or file "
                         f"under {RAW}/)")
    return value


def _number(value: str, column: str, where: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise MediaError(f"{where}: {column} '{value}' is not a number") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise MediaError(f"{where}: {column} {value} is outside the label range [{low:g}, {high:g}]")
    return number


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    return next((folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()), None)


def read_folder(root: Path, label_range: tuple[float, float], openface: Path | None = None) -> list[Clip]:
    """The clips ``root/label.csv`` lists, in its order (see the module's docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise MediaError(f"--media: {root}: {'not a directory' if root.exists() else 'no such directory'}; expected "
                         f"a folder with {LABELS} and {RAW}/VIDEO_ID/CLIP_ID.mp4")
    labels = root / LABELS
    if not labels.is_file():
        raise MediaError(f"--media: {root}: no {LABELS} (expected MMSA-FET's layout: {LABELS} with video_id, clip_id, "
                         f"text, label, mode, and the clips under {RAW}/VIDEO_ID/CLIP_ID.mp4)")
    if openface is not None and not Path(openface).is_dir():
        raise MediaError(f"--openface: {openface}: not a directory (with --media it is a folder of "
                         "VIDEO_ID/CLIP_ID.csv)")
    rows = read_label_csv(labels)
    if not rows:
        raise MediaError(f"{labels}: lists no clips")
    unimodal = all(c in rows[0] for c in UNIMODAL_COLUMNS)
    low, high = label_range
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        where = f"{labels}:{number}"
        video, clip = _plain(row["video_id"], "video_id", where), _plain(row["clip_id"], "clip_id", where)
        mode = row["mode"].lower()
        if mode not in MODES:
            raise MediaError(f"{where}: mode '{row['mode']}': expected one of {', '.join(MODES)}")
        item = Clip(video, clip, mode, " ".join(row["text"].split()), _number(row["label"], "label", where, low, high),
                    {c[-1]: _number(row[c], c, where, low, high) for c in UNIMODAL_COLUMNS} if unimodal else {},
                    number, None, None)
        if item.id in seen:
            raise MediaError(f"{where}: clip {video}/{clip} is listed twice (also on line {seen[item.id]})")
        seen[item.id] = number
        folder = root / RAW / video
        item.media = _find(folder, clip, MEDIA_SUFFIXES)
        if item.media is None:
            item.problem = (f"{folder / clip}.*: no media file for {LABELS} line {number} (expected "
                            f"{RAW}/{video}/{clip}.mp4, or another of {', '.join(MEDIA_SUFFIXES[1:6])}, …)")
        else:
            beside = _find(folder, clip, VISION_SUFFIXES)
            given = _find(Path(openface) / video, clip, (".csv",)) if openface is not None else None
            item.vision = given or beside
        clips.append(item)
    empty = [m for m in MODES if not any(c.split == m for c in clips)]
    if empty:
        raise MediaError(f"{labels}: no clips with mode {', '.join(empty)}: a dataset needs train, valid and test clips")
    return clips
