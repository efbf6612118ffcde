"""Progress of long work, on a terminal and in a log: one object that every long piece of dmpf reports to.

On an interactive terminal it is rich's live bar, redrawn in place and gone when the work is done. Anywhere else —
a pipe, ``nohup``, a Slurm or CI log, a dumb terminal — rich draws nothing until the end, so a log would show
nothing for minutes; there :class:`Progress` prints plain lines instead, at a steady pace and never a flood::

    pretraining: 12/120 steps (10%), 8.0 steps/s, 6.0 s elapsed, ETA 14 s, LM loss 6.170
    …
    pretraining: 120/120 steps (100%), 3.3 steps/s, done in 41 s, LM loss 3.487

The rate counts from a task's first update, so that what comes before its first unit (a tokenizer trained, a
model loaded) does not skew the ETA.

A task prints a line when it crosses a tenth of its total (but not more often than a tenth of the interval), when
the interval has passed since its last line (default 30 s; ``DMPF_PROGRESS_INTERVAL`` seconds, 0 for a line at
every update), and when it completes — that last line only if the task took at least a tenth of the interval or
printed before: work of a second or two says nothing, as rich's transient bar would leave nothing. So a task prints
at most about ten lines plus one per interval, and a stalled one prints nothing (lines come with updates, never
from a timer).

"Interactive" is rich's decision (:attr:`rich.console.Console.is_interactive`): a terminal that is not ``TERM=dumb``;
``FORCE_COLOR``, ``TTY_COMPATIBLE`` and ``TTY_INTERACTIVE`` override it as rich documents. The lines go to the
caller's console, so they land beside the command's other messages: stdout for text output, stderr where stdout
carries the result (``--format json``, ``dmpf eval``'s table, ``dmpf predict``'s CSV), so that stays clean.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .errors import DmpfError

INTERVAL_ENV = "DMPF_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between two lines of a task that moves slowly
STEPS = 10  # a line at every tenth of a task's total


def interval_from_env() -> float:
    """``DMPF_PROGRESS_INTERVAL`` in seconds (default 30); a bad value is a one-line error."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise DmpfError(f"{INTERVAL_ENV}: expected a number of seconds >= 0 between progress lines, got '{text}'")
    return value


@dataclass
class _Task:
    """What a plain line needs about one task, and when its last line was printed."""

    description: str
    total: float | None
    completed: float
    unit: str
    fields: dict[str, Any]
    start: float  # clock time of add_task
    start_completed: float  # a resumed task's rate counts from where it resumed
    first: tuple[float, float] | None = None  # (time, completed) at the first update: the rate counts from there
    last_line: float = 0.0
    last_step: int = 0  # the tenths of the total reported so far
    finished: bool = False  # it is complete: no more lines
    printed: bool = False  # it has printed a line


class Progress:
    """The rich bar on an interactive console, plain paced lines on any other, nothing without one.

    The API is rich's subset that dmpf uses — :meth:`add_task`, :meth:`update`, :meth:`advance`,
    :meth:`remove_task`, :meth:`track`, a context manager (or :meth:`start`/:meth:`stop`) — so callers never branch.
    Each task has a ``unit`` (``"bytes"`` counts in kB/MB/GB) and an ``info`` field shown after it.

    ``enabled``: False draws and prints nothing (a DDP rank other than 0). ``live``: False draws no bar on an
    interactive console (where a live display would fight machine output on the same screen); plain lines still go
    to a console that is not interactive. ``transient``: the bar disappears when it stops (rich's meaning).
    ``interval`` and ``clock`` are for tests; by default the interval comes from ``DMPF_PROGRESS_INTERVAL``.
    """

    def __init__(self, console, *, enabled: bool = True, live: bool = True, transient: bool = True,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic):
        interactive = console is not None and console.is_interactive
        self.console = console if enabled and console is not None and not console.quiet else None
        self.bar = None
        if self.console is not None and interactive:
            if live:
                self.bar = _rich_progress(console, transient)
            else:
                self.console = None
        self.interval = interval_from_env() if interval is None else interval
        self.clock = clock
        self.tasks: dict[int, _Task] = {}
        self._next_id = 0

    @property
    def plain(self) -> bool:
        """Whether this prints plain lines (a console that is not interactive)."""
        return self.console is not None and self.bar is None

    # -- the context manager -----------------------------------------------------------------------

    def start(self) -> None:
        if self.bar is not None:
            self.bar.start()

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __enter__(self) -> Progress:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- tasks -------------------------------------------------------------------------------------

    def add_task(self, description: str, total: float | None = None, completed: float = 0, *, unit: str = "steps",
                 **fields: Any) -> int:
        fields.setdefault("info", "")
        if self.bar is not None:
            return self.bar.add_task(description, total=total, completed=completed, unit=unit, **fields)
        self._next_id += 1
        if self.plain:
            now = self.clock()
            self.tasks[self._next_id] = _Task(description, total, completed, unit, fields, now, completed,
                                              last_line=now, last_step=self._step(total, completed))
        return self._next_id

    def update(self, task: int, *, completed: float | None = None, advance: float | None = None,
               total: float | None = None, description: str | None = None, **fields: Any) -> None:
        if self.bar is not None:
            self.bar.update(task, completed=completed, advance=advance, total=total, description=description,
                            **fields)
            return
        t = self.tasks.get(task)
        if t is None:
            return
        if total is not None:
            t.total = total
        if completed is not None:
            t.completed = completed
        if advance is not None:
            t.completed += advance
        if description is not None:
            t.description = description
        t.fields.update(fields)
        if t.first is None:
            t.first = (self.clock(), t.completed)
        self._maybe_print(t)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def remove_task(self, task: int) -> None:
        if self.bar is not None:
            self.bar.remove_task(task)
        else:
            self.tasks.pop(task, None)

    def track(self, items: Iterable, description: str, total: float | None = None, *, unit: str = "batches",
              weight: Callable[[Any], float] | None = None, label: Callable[[Any], str] | None = None) -> Iterator:
        """Yield from ``items``, advancing a task by one (or by ``weight(item)``) after each; the task is removed at
        the end. ``total`` defaults to ``len(items)``; ``label(item)`` is the task's info while the item is worked
        on (and in the line that reports it done)."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)
        task = self.add_task(description, total=total, unit=unit)
        try:
            for item in items:
                if label:
                    self.update(task, info=label(item))
                yield item
                self.advance(task, weight(item) if weight else 1)
        finally:
            self.remove_task(task)

    # -- the plain lines ---------------------------------------------------------------------------

    @staticmethod
    def _step(total: float | None, completed: float) -> int:
        return int(STEPS * completed / total) if total else 0

    def _maybe_print(self, t: _Task) -> None:
        if t.finished:
            return
        now = self.clock()
        since = now - t.last_line
        step = self._step(t.total, t.completed)
        if t.total is not None and t.completed >= t.total > 0:
            t.finished = True
            if not (t.printed or now - t.start >= self.interval / STEPS):
                return
        elif not (since >= self.interval or (step > t.last_step and since >= self.interval / STEPS)):
            return
        t.last_line, t.last_step, t.printed = now, step, True
        self.console.print(_line(t, now), markup=False, highlight=False, emoji=False, soft_wrap=True)


def _line(t: _Task, now: float) -> str:
    """``DESCRIPTION: N/TOTAL UNIT (P%), RATE, ELAPSED, ETA, INFO`` (a finished task: ``done in ELAPSED``)."""
    elapsed = now - t.start
    since, base = t.first if t.first and now > t.first[0] and t.completed > t.first[1] else (t.start, t.start_completed)
    rate = (t.completed - base) / (now - since) if now > since and t.completed > base else None
    parts = [_amount(t.completed, t.total, t.unit)]
    if rate is not None:
        parts.append(_rate(rate, t.unit))
    if t.finished:
        parts.append(f"done in {_duration(elapsed)}")
    else:
        parts.append(f"{_duration(elapsed)} elapsed")
        if rate is not None and t.total is not None:
            parts.append(f"ETA {_duration(max(0.0, t.total - t.completed) / rate)}")
    info = str(t.fields.get("info") or "").strip()
    if info:
        parts.append(info)
    return f"{t.description.strip()}: {', '.join(parts)}"


def _amount(completed: float, total: float | None, unit: str) -> str:
    if unit == "bytes":
        size, suffix = _byte_unit(total or completed)
        text = f"{completed / size:.1f}" + (f"/{total / size:.1f}" if total is not None else "") + f" {suffix}"
    else:
        text = f"{completed:,.0f}" + (f"/{total:,.0f}" if total is not None else "") + f" {unit}"
    if total:
        text += f" ({math.floor(100 * completed / total)}%)"  # 100% only when it is all done
    return text


def _byte_unit(n: float) -> tuple[float, str]:
    for size, suffix in ((1e9, "GB"), (1e6, "MB")):
        if n >= size:
            return size, suffix
    return 1e3, "kB"


def _rate(per_second: float, unit: str) -> str:
    if unit == "bytes":
        size, suffix = _byte_unit(per_second)
        return f"{per_second / size:.1f} {suffix}/s"
    scale, per = next(((s, p) for s, p in ((1, "s"), (60, "min")) if per_second * s >= 1), (3600, "h"))
    value = per_second * scale
    return f"{value:,.1f} {unit}/{per}" if value < 100 else f"{value:,.0f} {unit}/{per}"


def _duration(seconds: float) -> str:
    """3.4 s, 42 s, 3m05s, 2h07m."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _rich_progress(console, transient: bool):
    from rich import progress as rp

    class Count(rp.ProgressColumn):
        """Bytes as kB/MB/GB, anything else as N/TOTAL."""

        def __init__(self):
            super().__init__()
            self.bytes, self.items = rp.DownloadColumn(), rp.MofNCompleteColumn()

        def render(self, task):
            return (self.bytes if task.fields.get("unit") == "bytes" else self.items).render(task)

    # what is printed meanwhile to the console's own stream goes above the bar; the other stream is left alone
    # (rich would move it onto the console's: a JSON line for stdout into a stderr console)
    return rp.Progress(rp.TextColumn("{task.description}"), rp.BarColumn(), Count(), rp.TimeElapsedColumn(),
                       rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[info]}"), console=console,
                       transient=transient, redirect_stdout=console.file is sys.stdout,
                       redirect_stderr=console.file is sys.stderr)
