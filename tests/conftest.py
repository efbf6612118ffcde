"""Shared fixtures: a CLI runner, the repository root, and one tiny trained run for the tests that read one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent

# overrides that make a training run take seconds on the tiny generated dataset
TINY = [
    "data.synthetic_size=tiny", "data.text_len=24",
    "encoders.audio.d=16", "encoders.vision.d=16", "encoders.audio_visual.d=16",
    "encoders.audio.layers=1", "encoders.vision.layers=1", "encoders.audio_visual.layers=1",
    "encoders.audio.max_len=8", "encoders.vision.max_len=8", "encoders.audio_visual.max_len=8",
    "head.d=16", "training.batch_size=16", "training.max_epochs=2", "training.patience=5",
    "training.checkpoint_every=1", "optimizer.lr_lm=1e-3", "optimizer.lr_encoders=1e-3",
]


@pytest.fixture(autouse=True)
def _isolated_data_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's prepared datasets (~/.cache/dmpf/data)."""
    monkeypatch.setenv("DMPF_DATA_DIR", str(tmp_path_factory.getbasetemp() / "dmpf-data"))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run ``dmpf ARGS`` in-process; returns the click Result (stdout and stderr kept apart)."""
    from dmpf_cli.cli import app

    def run(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return run


def error_line(exit_code: int, stderr: str, *fragments: str) -> str:
    """Assert a user error: exit code 2 and exactly one ``error: …`` line holding every fragment; return it."""
    assert exit_code == 2, (exit_code, stderr)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def dmpf(*args, check=True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "dmpf_cli", *map(str, args)], capture_output=True, text=True,
                            env=env(), timeout=600, **kw)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run per test module, shared by its read-only tests."""
    root = tmp_path_factory.mktemp("runs") / "tiny"
    os.environ.setdefault("DMPF_DATA_DIR", str(tmp_path_factory.getbasetemp() / "dmpf-data"))
    dmpf("train", "--output", root, *TINY)
    return root
