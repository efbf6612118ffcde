"""Several dmpf processes on a fresh machine: what is built on first use (the synthetic data, the demo LM) is built
once, by one of them, while the others wait and say so; nobody fails.

The tests start real ``python -m dmpf_cli`` processes. To make them meet at the lock every time (not only when
their start-up happens to overlap), the test itself holds the target's lock while they start, as a third
process building it would, and lets go once both have said that they wait.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dmpf_cli.fileio import hold, lock_file

from conftest import TINY, dmpf, env

pytestmark = pytest.mark.slow

WAITING = "waiting for another dmpf process"


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dmpf_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**env(), "PYTHONUNBUFFERED": "1"})


def _contend(target: Path, *commands: list) -> list[tuple[int, str]]:
    """Start each ``dmpf COMMAND`` while this test holds ``target``'s lock; once all said they wait (or ended
    without), let go. Returns each process's (exit code, stdout + stderr)."""
    procs = [_start(*command) for command in commands]
    guard = threading.Timer(600, lambda: [p.kill() for p in procs])  # a hang fails the test instead of blocking it
    guard.start()
    try:
        heads = []
        with hold(target):
            for proc in procs:
                lines = []
                for line in proc.stdout:  # up to the waiting line; the rest is read below
                    lines.append(line)
                    if WAITING in line:
                        break
                heads.append("".join(lines))
        rests = [proc.communicate() for proc in procs]
    finally:
        guard.cancel()
        for proc in procs:
            proc.kill()
    return [(proc.returncode, head + out + err) for proc, head, (out, err) in zip(procs, heads, rests)]


def _all_waited(outputs: list[tuple[int, str]]) -> None:
    """Every process succeeded, and said that it waited, naming the holder (this test)."""
    for code, text in outputs:
        assert code == 0, text[-3000:]
        assert f"{WAITING} (pid {os.getpid()} on " in text, text


def _built_once(outputs: list[tuple[int, str]], built: str, found: str) -> None:
    _all_waited(outputs)
    said = [text for _, text in outputs]
    assert sum(built in text for text in said) == 1, said  # one built it ...
    assert sum(found in text for text in said) == 1, said  # ... and the other found it built when its turn came


@pytest.fixture(autouse=True)
def _fresh_machine(tmp_path, monkeypatch):
    """Nothing built yet: no prepared data, no demo LM (the session's shared directories may hold them)."""
    monkeypatch.setenv("DMPF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "models"))


def test_two_prepares_at_once_generate_the_synthetic_data_once(tmp_path):
    data = tmp_path / "data"
    target = data / "synthetic-tiny-seed0"
    prepare = ["prepare", "--dataset", "synthetic", "--size", "tiny"]
    outputs = _contend(target, prepare, prepare)
    _built_once(outputs, f"prepared {target}", "up to date")
    assert json.loads((target / "manifest.json").read_text())["synthetic"]["size"] == "tiny"
    # the lock sits beside the directory, never in it; no partial build is left
    assert lock_file(target) == data / ".synthetic-tiny-seed0.lock" and lock_file(target).is_file()
    assert not list(target.rglob("*.lock")) and not list(data.glob(".synthetic-tiny-seed0.partial-*"))


def test_two_builds_of_the_demo_lm_at_once_pretrain_it_once(tmp_path):
    models = tmp_path / "models"
    target = models / "gpt2-demo-tiny"
    outputs = _contend(target, ["pretrain-lm", "--size", "tiny"], ["pretrain-lm", "--size", "tiny"])
    _built_once(outputs, f"pretraining a language model in {target}", "up to date")
    assert (target / "dmpf.json").is_file() and (models / ".gpt2-demo-tiny.lock").is_file()
    assert not list(target.rglob("*.lock")) and not list(models.glob(".gpt2-demo-tiny.partial-*"))


def test_two_trainings_on_a_fresh_data_dir_both_finish(tmp_path):
    """Both want the synthetic data that is not there yet: both wait, one generates it, both train on it (and
    tokenise its text into the same token cache at once)."""
    data = tmp_path / "data"
    outputs = _contend(data / "synthetic-tiny-seed0", *(["train", "--output", tmp_path / f"run{i}", *TINY] for i in (1, 2)))
    _all_waited(outputs)
    runs = [json.loads((tmp_path / f"run{i}" / "run.json").read_text()) for i in (1, 2)]
    assert [r["status"] for r in runs] == ["finished", "finished"]
    assert runs[0]["data"] == runs[1]["data"] and runs[0]["data_fingerprint"] == runs[1]["data_fingerprint"]
    assert not list(data.glob(".*.partial-*"))
    dmpf("prepare", "--info", runs[0]["data"])  # whole and readable
