"""Files dmpf writes: whole or untouched, and readable by whoever the user's umask lets read them (a labmate on a
shared filesystem runs ``dmpf eval`` on your run)."""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest

from dmpf_cli.fileio import current_umask, follow_umask


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_the_umask_is_read_without_changing_it():
    with umask(0o027):
        assert current_umask() == 0o027
        assert current_umask() == 0o027


def test_follow_umask_gives_files_and_directories_the_modes_open_and_mkdir_would(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    os.chmod(tmp_path / "d" / "f", 0o600)
    with umask(0o002):
        follow_umask(tmp_path / "d")
    assert modes(tmp_path / "d") == {".": 0o775, "f": 0o664}


def test_checkpoints_follow_the_umask(tmp_path):
    """safetensors' save_file creates its file 0600: a labmate could not `dmpf eval` the run."""
    from dmpf_cli.store.checkpoints import save_resumable, save_weights

    from conftest import make_model

    model = make_model()
    with umask(0o027):
        save_weights(model, tmp_path / "best.safetensors")
        save_resumable(model, {"loop": {"step": 1}}, tmp_path / "last")
    assert stat.S_IMODE((tmp_path / "best.safetensors").stat().st_mode) == 0o640
    assert modes(tmp_path / "last") == {".": 0o750, "weights.safetensors": 0o640, "state.pt": 0o640}


@pytest.mark.slow
def test_a_pretrained_language_model_follows_the_umask(tmp_path):
    from dataclasses import replace

    from dmpf_cli.recipes.pretrain_lm import DEMO_SIZES, build

    with umask(0o007):
        build(replace(DEMO_SIZES["tiny"](), documents=200, steps=2), tmp_path / "lm")
    found = modes(tmp_path / "lm")
    assert "model.safetensors" in found
    assert found == {name: 0o770 if (tmp_path / "lm" / name).is_dir() else 0o660 for name in found}
