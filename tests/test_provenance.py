"""What produced a run (run.json's versions, components with their distributions, plugins, git commit)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from dmpf_cli.config import load_config
from dmpf_cli.store import provenance

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")


def test_every_selected_component_is_recorded_with_its_origin():
    record = provenance.record(load_config(overrides=["training.loggers=[jsonl, tensorboard]"]))
    keys = [(c["key"], c["kind"], c["name"], c["origin"]) for c in record["components"]]
    assert ("head.name", "head", "self-attention", "built-in") in keys
    assert ("backbone.name", "backbone", "gpt2-demo", "built-in") in keys
    assert ("training.loggers", "logger", "tensorboard", "built-in") in keys
    assert {c["key"] for c in record["components"]} == {
        "encoders.audio.name", "encoders.vision.name", "encoders.audio_visual.name", "backbone.name", "head.name",
        "fusion.mask", "training.loggers"}
    assert record["plugins"] == {} and record["versions"]["dmpf"]


@needs_git
def test_the_git_commit_of_a_checkout_and_whether_it_has_changes(tmp_path):
    def git(*args):
        return subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    assert provenance.git_revision(tmp_path) is None  # not a checkout: nothing recorded
    git("init", "-q")
    (tmp_path / "f.py").write_text("x = 1\n")
    git("add", "f.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert provenance.git_revision(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "f.py").write_text("x = 2\n")
    assert provenance.git_revision(tmp_path) == {"commit": head, "dirty": True}
    (tmp_path / "untracked.txt").write_text("")  # untracked files do not make a checkout dirty
    (tmp_path / "f.py").write_text("x = 1\n")
    assert provenance.git_revision(tmp_path) == {"commit": head, "dirty": False}
