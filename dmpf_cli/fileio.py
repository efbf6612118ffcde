"""File writing shared by every module (no torch here: ``dmpf prepare`` uses it too)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed into place (one per process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` under a temporary name, then rename: ``path`` is whole or untouched; no temporary is left."""
    tmp = temporary_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def move_into_place(partial: Path, output: Path) -> None:
    """Rename the complete directory ``partial`` to ``output``, replacing any directory there: ``output`` is the old
    one or the new one, never a mix. On failure ``partial`` is removed and the error raised."""
    try:
        if output.exists():
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            os.replace(output, old)
            os.replace(partial, output)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, output)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
