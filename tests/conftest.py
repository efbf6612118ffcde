"""Shared fixtures: a CLI runner and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


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
