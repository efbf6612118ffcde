"""File writing shared by every module (no torch here: ``dmpf prepare`` uses it too).

Every file dmpf writes follows the user's umask, as ``open()`` does, so a labmate on a shared filesystem can read a
run (``-rw-r--r--`` under the usual umask 022). Writers that create their files themselves with a fixed mode
(safetensors' ``save_file`` makes them ``-rw-------``) are put right by :func:`follow_umask`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temporary_name(path: Path) -> Path:
    """The hidden name a file is written under before it is renamed into place (one per process)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def current_umask() -> int:
    """The process's umask, read without changing it where Linux tells it (``/proc/self/status``, Linux ≥ 4.7);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give ``path`` — a file, or every file and directory under a directory — the mode ``open()`` and ``mkdir()``
    would have given it under the umask: for a library that wrote its files ``0600`` (safetensors does)."""
    mask = current_umask()
    path = Path(path)
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in paths:
        if p.is_symlink():
            continue
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


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
