"""Watching runs from the run directories they write: one progress line per active run, and an overall count.

The run directories are the truth for every launcher (:mod:`dmpf_cli.experiments.launch`): a run in this process, a
subprocess on a slot of this machine or a Slurm job all write ``run.json`` and ``metrics.jsonl``, so the display
shows the same thing whichever runs the job.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

from ..store.run import RunDir

if TYPE_CHECKING:  # pragma: no cover - launch imports this module
    from .job import Job, JobOutcome


class Monitor:
    """One progress line per active job, read from its run directory, and an overall count: live bars on a
    terminal, paced plain lines in a log (:class:`~dmpf_cli.progress.Progress`).

    The run directories are the truth for every launcher: the epoch and the latest validation MAE come from
    ``metrics.jsonl``, read incrementally (only what was appended since the last look). ``live``: False shows no
    bars on a terminal (``--format json``: they would take the screen the JSON lines go to); a log still gets lines.
    """

    def __init__(self, console, total: int, title: str, done: int = 0, live: bool = True, unit: str = "runs"):
        from ..progress import Progress

        self.progress = Progress(console, live=live, transient=False)
        self.overall = self.progress.add_task(title, total=total, completed=done, unit=unit)
        self.active: dict[str, tuple[Any, Job, list]] = {}  # name -> (task, job, what _latest has seen)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self.progress.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.progress.stop()

    def started(self, job: Job) -> None:
        with self.lock:
            task = self.progress.add_task(f"  {job.name}", total=job.max_epochs or None, unit="epochs", info="starting")
            self.active[job.name] = (task, job, [0])

    def ended(self, outcome: JobOutcome, count: bool = True) -> None:
        """The job's line goes; the overall count goes up by one unless ``count`` is False (then see :meth:`done`)."""
        with self.lock:
            task, _, _ = self.active.pop(outcome.job.name, (None, None, None))
            if task is not None:
                self.progress.remove_task(task)
            if count:
                self.progress.advance(self.overall)

    def done(self, completed: int) -> None:
        """Set the overall count (a sweep's, read from its study)."""
        with self.lock:
            self.progress.update(self.overall, completed=completed)

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            with self.lock:
                for task, job, seen in self.active.values():
                    info = _latest(RunDir(job.run_dir), seen)
                    if info:
                        self.progress.update(task, completed=info[0], info=info[1])


def _latest(run: RunDir, seen: list) -> tuple[int, str] | None:
    """(epochs done, a short line) from the records appended to ``metrics.jsonl`` since the last look; ``seen``
    holds [bytes read, epochs done, the latest validation MAE] between looks."""
    try:
        with open(run.metrics, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < seen[0]:  # a resumed run cut the records written after its checkpoint
                seen[0] = 0
            f.seek(seen[0])
            chunk = f.read()
    except OSError:
        return None
    end = chunk.rfind(b"\n") + 1
    if not end:
        return None
    seen[0] += end
    step = None
    for line in chunk[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "epoch":
            seen[1:] = [record["epoch"] + 1, record["valid"]["MAE"]]
        elif record.get("kind") == "step":
            step = record
    parts = [f"valid MAE {seen[2]:.4f}"] if len(seen) > 2 else []
    if step is not None:
        parts.insert(0, f"step {step['step']} loss {step['loss']:.3f}")
    return (seen[1] if len(seen) > 1 else 0), "  ".join(parts)
