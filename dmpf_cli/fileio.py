"""File writing shared by every module (no torch here: ``dmpf prepare`` uses it too), and the one lock on a
directory that several dmpf processes may want to write at once (:func:`hold`, :func:`building`).

Every file dmpf writes follows the user's umask, as ``open()`` does, so a labmate on a shared filesystem can read a
run (``-rw-r--r--`` under the usual umask 022). Writers that create their files themselves with a fixed mode
(safetensors' ``save_file`` makes them ``-rw-------``) are put right by :func:`follow_umask`.

A lock is an exclusive ``flock`` on ``PARENT/.NAME.lock``, beside the directory it guards and never inside it, so
the atomic swap that publishes a rebuilt directory (:func:`move_into_place`) or ``--overwrite`` cannot remove it
from under its holder. The kernel lets go of a ``flock`` when its process ends, however it ends (``kill -9``
included): a crash never leaves a lock held. The file itself stays: removing it would let a later process lock a
new file while an earlier one still holds the old. ``flock`` works on local filesystems, on NFSv4 (Linux emulates it
with NFS byte-range locks) and on Lustre mounted with ``flock``; where the filesystem refuses locks altogether
(``ENOLCK``, ``EOPNOTSUPP``: NFSv3 without lockd, some FUSE mounts) and on Windows, dmpf goes on unguarded.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Callable, Iterator


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


class LockHeld(Exception):
    """:func:`hold` without waiting found the lock taken; ``holder`` says by whom ("pid N on HOST"; "" when the
    holder has not written it yet)."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def lock_file(target: Path) -> Path:
    """The lock of ``target``: ``PARENT/.NAME.lock``, beside it (see the module docstring)."""
    return target.parent / f".{target.name}.lock"


@contextmanager
def hold(target: Path, wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold ``target``'s lock for the with-block. Another process holding it: without ``wait``, raise
    :class:`LockHeld`; with it, call ``wait(holder)`` once and block until the holder lets go."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file(target), "a+", encoding="utf-8") as f:
        locked = True
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            if wait is None:
                raise LockHeld(holder) from None
            wait(holder)
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            locked = False  # a filesystem without locks: unguarded
        if locked:
            f.truncate(0)
            f.write(f"pid {os.getpid()} on {socket.gethostname()}")
            f.flush()
        yield


def building(target: Path, what: str, say: Callable[[str], None] | None) -> AbstractContextManager[None]:
    """Hold ``target``'s lock while building it; if another process is building it, ``say`` one line and wait.

    The caller checks again, once it holds the lock, whether ``target`` is up to date now (double-checked
    locking): what the other process built is then used, not built a second time."""
    def waiting(holder: str) -> None:
        if say is not None:
            say(f"waiting for another dmpf process{f' ({holder})' if holder else ''} building {what} ...")

    return hold(target, wait=waiting)
