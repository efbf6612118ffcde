"""Progress of long work: rich bars on a terminal; in a pipe or a log, plain lines at a steady pace that say what,
how far, how fast and how long yet (dmpf_cli/progress.py) — and never into the JSON or CSV a command prints."""

from __future__ import annotations

import io
import json
import pickle

import pytest
from rich.console import Console

from dmpf_cli.progress import Progress

from conftest import TINY, assert_done, dmpf, error_line, progress_lines


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def plain(interval: float = 30.0, **kw) -> tuple[Progress, Clock, io.StringIO]:
    out, clock = io.StringIO(), Clock()
    progress = Progress(Console(file=out, width=200), interval=interval, clock=clock, **kw)  # a file: no terminal
    return progress, clock, out


def run_task(progress: Progress, clock: Clock, seconds_per_item: float, total: int = 100) -> None:
    task = progress.add_task("work", total=total, unit="items")
    for _ in range(total):
        clock.now += seconds_per_item
        progress.advance(task)


def percents(out: io.StringIO) -> list[int]:
    return [int(m["pct"]) for m in progress_lines(out.getvalue(), "work")]


# -- the pacing, on a fake clock -------------------------------------------------------------------

def test_a_line_at_every_tenth_of_the_work_and_one_at_the_end():
    progress, clock, out = plain()
    run_task(progress, clock, 0.5)  # a tenth every 5 s: more than a tenth of the interval apart
    assert percents(out) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    lines = out.getvalue().splitlines()
    # the rate counts from the first update (what comes before it is start-up, not the work's pace)
    assert lines[4] == "work: 50/100 items (50%), 2.0 items/s, 25 s elapsed, ETA 25 s"
    assert lines[-1] == "work: 100/100 items (100%), 2.0 items/s, done in 50 s"


def test_slow_work_also_prints_at_the_interval():
    progress, clock, out = plain()
    run_task(progress, clock, 5.0)  # a tenth every 50 s: the 30 s interval comes first, then each tenth
    expected = [p for start in range(0, 100, 10) for p in (start + 6, start + 10)]
    assert percents(out) == expected  # 6% at 30 s, 10% at 50 s, 16% at 80 s, 20% at 100 s, …, nothing else
    assert out.getvalue().splitlines()[0] == "work: 6/100 items (6%), 12.0 items/min, 30 s elapsed, ETA 7m50s"


def test_quick_work_prints_a_line_every_tenth_of_the_interval_at_most_and_a_moment_of_work_nothing():
    progress, clock, out = plain()
    run_task(progress, clock, 1 / 16)  # done in 6.2 s: the tenths come 0.6 s apart, lines at least 3 s apart
    assert out.getvalue().splitlines() == ["work: 48/100 items (48%), 16.0 items/s, 3.0 s elapsed, ETA 3.2 s",
                                           "work: 96/100 items (96%), 16.0 items/s, 6.0 s elapsed, ETA 0.2 s",
                                           "work: 100/100 items (100%), 16.0 items/s, done in 6.2 s"]
    progress, clock, out = plain()
    run_task(progress, clock, 1 / 64)  # 1.6 s: under a tenth of the interval, where a transient bar leaves nothing
    assert out.getvalue() == ""


def test_interval_zero_prints_every_update_and_unknown_totals_print_at_the_interval():
    progress, clock, out = plain(interval=0)
    run_task(progress, clock, 0.01, total=5)
    assert percents(out) == [20, 40, 60, 80, 100]

    progress, clock, out = plain(interval=30)
    task = progress.add_task("open-ended", unit="bytes")
    for _ in range(100):
        clock.now += 1
        progress.advance(task, 2_000_000)
    assert out.getvalue().splitlines() == [
        "open-ended: 60.0 MB, 2.0 MB/s, 30 s elapsed", "open-ended: 120.0 MB, 2.0 MB/s, 1m00s elapsed",
        "open-ended: 180.0 MB, 2.0 MB/s, 1m30s elapsed"]


def test_a_resumed_task_counts_its_rate_from_where_it_resumed_and_info_follows():
    progress, clock, out = plain(interval=0)
    task = progress.add_task("epoch 3/4", total=10, completed=6, unit="batches")
    for i in (8, 10):
        clock.now += 2
        progress.update(task, completed=i, info=f"loss 0.{i}")
    assert out.getvalue().splitlines() == [
        "epoch 3/4: 8/10 batches (80%), 1.0 batches/s, 2.0 s elapsed, ETA 2.0 s, loss 0.8",  # 2 batches in 2 s
        "epoch 3/4: 10/10 batches (100%), 1.0 batches/s, done in 4.0 s, loss 0.10"]


# -- where the lines go, and where the bars do -----------------------------------------------------

def test_a_terminal_gets_the_rich_bar_and_no_plain_lines():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, force_interactive=True, width=120)
    with Progress(console, interval=0) as progress:
        assert progress.bar is not None and not progress.plain
        for _ in progress.track(range(50), "work", unit="items"):
            pass
    text = out.getvalue()
    assert "work" in text and "━" in text  # the bar was drawn
    assert "items/s" not in text and "(100%)" not in text and not progress_lines(text, "work")


def test_no_lines_when_disabled_and_no_live_bar_beside_machine_output():
    for console, kw in [(Console(file=io.StringIO()), {"enabled": False}),
                        (Console(file=io.StringIO(), force_terminal=True, force_interactive=True), {"live": False})]:
        with Progress(console, interval=0, **kw) as progress:
            run_task(progress, Clock(), 1.0, total=3)
        assert console.file.getvalue() == ""
    # not a terminal: live=False still prints the lines (a log under --format json)
    progress, clock, out = plain(interval=0, live=False)
    run_task(progress, clock, 1.0, total=2)
    assert percents(out) == [50, 100]


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_interval_is_one_line_before_the_command_starts(invoke, tmp_path, monkeypatch, value):
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", value)
    result = invoke("train", "--output", tmp_path / "run", *TINY)
    error_line(result.exit_code, result.stderr, "DMPF_PROGRESS_INTERVAL", "seconds", f"'{value}'")
    assert not (tmp_path / "run").exists()


# -- real commands through a pipe ----------------------------------------------------------------

@pytest.fixture
def every_update(monkeypatch):
    """A progress line at every update (``DMPF_PROGRESS_INTERVAL=0``): what is printed does not depend on speed."""
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", "0")


@pytest.mark.slow
def test_prepare_prints_progress_lines_into_a_pipe_and_keeps_its_json_clean(tmp_path, every_update):
    text = dmpf("prepare", "--dataset", "synthetic", "--size", "tiny", "--output", tmp_path / "a")
    out = text.stdout
    assert_done(out, "generating the synthetic 'tiny' dataset (seed 0)", "160", "samples")
    assert_done(out, "reading the generated data", "1.3", "MB")
    assert_done(out, "writing", "320", "rows")
    assert out.index("generating") < out.index("reading") < out.index("writing") < out.index("prepared")

    machine = dmpf("prepare", "--dataset", "synthetic", "--size", "tiny", "--output", tmp_path / "b", "--format", "json")
    assert json.loads(machine.stdout)["output"] == str(tmp_path / "b")  # stdout: the JSON object alone
    assert_done(machine.stderr, "writing", "320", "rows")

    from dmpf_cli.data.synthetic import generate

    source, config = tmp_path / "mosei.pkl", tmp_path / "tokens.yaml"
    source.write_bytes(pickle.dumps(generate("tiny")[0], protocol=5))
    config.write_text("backbone: {name: gpt2-tiny-random}\ndata: {text_len: 24}\n")  # a tokenizer on every machine
    imported = dmpf("prepare", "--dataset", "mosei", "--source", source, "--output", tmp_path / "c", "--config", config)
    assert_done(imported.stdout, "reading mosei.pkl", "1.3", "MB")
    assert_done(imported.stdout, "writing", "320", "rows")
    assert_done(imported.stdout, "tokenising the text", "160", "texts")


@pytest.mark.slow
def test_pretrain_lm_prints_every_step_into_a_pipe(tmp_path, every_update):
    result = dmpf("pretrain-lm", "--size", "tiny", "--steps", "20", "--output", tmp_path / "lm")
    lines = progress_lines(result.stdout, "pretraining")
    assert [m["n"] for m in lines] == [str(i) for i in range(1, 21)]
    assert all(m["total"] == "20" and m["unit"] == "steps" and "LM loss" in m.string for m in lines)
    assert all("ETA" in m.string for m in lines[1:-1]) and "done in" in lines[-1].string


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """A tiny run trained through a pipe: (its directory, the finished `dmpf train`)."""
    root = tmp_path_factory.mktemp("piped") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DMPF_PROGRESS_INTERVAL", "0")
        return root, dmpf("train", "--output", root, *TINY)


@pytest.mark.slow
def test_train_prints_each_epochs_progress_into_a_pipe(piped_run):
    _, result = piped_run
    for epoch in (1, 2):
        last = assert_done(result.stdout, f"epoch {epoch}/2", "6", "batches")  # 96 samples in batches of 16
        assert "loss" in last.string and "samples/s" in last.string
    out = result.stdout
    assert out.index("epoch 1/2:") < out.index("epoch 1: valid MAE") < out.index("epoch 2/2:")


@pytest.mark.slow
def test_eval_and_predict_print_progress_on_stderr_and_keep_stdout_for_results(piped_run, every_update):
    root, _ = piped_run
    result = dmpf("eval", "--run", root, "--modality-ablation", "--format", "json")
    assert json.loads(result.stdout)["samples"] == 32
    for what in ("scoring test", "scoring test without audio", "scoring test without visual",
                 "scoring test without audio-visual"):
        assert_done(result.stderr, what, "2", "batches")
    table = dmpf("eval", "--run", root)
    assert "MAE" in table.stdout and not progress_lines(table.stdout, "scoring test")
    assert_done(table.stderr, "scoring test", "2", "batches")

    data = json.loads((root / "run.json").read_text())["data"]
    predicted = dmpf("predict", "--run", root, "--input", data)
    rows = predicted.stdout.splitlines()
    assert rows[0] == "id,score,bin2,bin7" and len(rows) == 161  # the CSV alone
    assert_done(predicted.stderr, "scoring", "160", "samples")
