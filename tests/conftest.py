"""Shared fixtures: a CLI runner and the repository root."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


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
