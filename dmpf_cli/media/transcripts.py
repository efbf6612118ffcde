"""What was said in a clip: a plain ``.txt``, a SubRip ``.srt`` (the cue texts joined in order), or the ``text``
column of an MMSA-FET ``label.csv`` (``video_id, clip_id, text, label, mode``)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from .audio import MediaError

_TIMING = re.compile(r"^\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}\s*-->\s*\d{1,2}:\d{2}:\d{2}[,.]\d{1,3}")
_TAG = re.compile(r"<[^>]+>|\{\\[^}]*\}")  # <i>…</i> and {\an8}-style overrides


def _read(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MediaError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise MediaError(f"{path}: cannot read the transcript ({exc.strerror or exc})") from None


def read_transcript(path: Path) -> str:
    """The transcript in ``path`` (``.txt`` or ``.srt``) as one line of text; empty is a one-line error."""
    path = Path(path)
    text = _read(path)
    if path.suffix.lower() == ".srt":
        lines = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.isdigit() or _TIMING.match(line):
                continue
            lines.append(_TAG.sub("", line).strip())
        text = " ".join(part for part in lines if part)
    elif path.suffix.lower() != ".txt":
        raise MediaError(f"{path}: expected a transcript in a .txt or .srt file")
    text = " ".join(text.split())
    if not text:
        raise MediaError(f"{path}: the transcript is empty")
    return text


LABEL_COLUMNS = ("video_id", "clip_id", "text", "label", "mode")


def read_label_csv(path: Path) -> list[dict[str, str]]:
    """MMSA-FET's ``label.csv``: one dict per clip with ``video_id``, ``clip_id``, ``text``, ``label``, ``mode``.
    A missing column is a one-line error naming it."""
    path = Path(path)
    text = _read(path)
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    missing = [c for c in LABEL_COLUMNS if c not in fields]
    if missing:
        raise MediaError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(LABEL_COLUMNS)})")
    return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
