"""Project hygiene that users rely on: the README's quick start is what CI runs."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    commands = quick_start_commands()
    assert len(commands) == 2
    assert commands[0].startswith("bash scripts/setup.sh") and "dmpf" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1] in ci.splitlines()


def test_setup_never_pins_torch_in_the_package():
    """A user's own (CUDA) torch must satisfy the package; only setup.sh pins, and only when torch is missing."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    torch_reqs = [r for r in project["dependencies"] if re.match(r"torch\b", r)]
    assert torch_reqs == ["torch>=2.10"]
    assert 'torch==2.13.0' in (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
