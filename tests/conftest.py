"""Shared fixtures: a CLI runner, the repository root, one tiny trained run for the tests that read one, and a real
single-node Slurm cluster (``slurm``) for the launcher tests of dmpf grid and dmpf sweep.

Tests marked ``slow`` run subprocesses, train end to end, compile or pip-install; ``pytest -m "not slow"`` is
the fast tier (every module, in well under a minute). A test that uses the ``trained`` fixture is slow.
"""

from __future__ import annotations

import os
import re
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
    "backbone.name=gpt2-tiny-random",  # the demo LM takes minutes to pretrain: tests/test_pretrain.py builds a tiny one
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)  # it reads a run that a subprocess trains


def hermetic_environment(base: Path) -> dict[str, str]:
    """The ``DMPF_*`` variables every test sees, whatever the user has set: prepared datasets and models under
    ``base`` (this session's temporary directory), and no other ``DMPF_*`` setting."""
    return {"DMPF_DATA_DIR": str(base / "dmpf-data"), "DMPF_MODEL_DIR": str(base / "dmpf-models")}


@pytest.fixture(scope="session", autouse=True)
def _hermetic_session(tmp_path_factory):
    """No test reads or writes the user's prepared datasets (~/.cache/dmpf/data) or models (~/.cache/dmpf/models),
    nor follows a ``DMPF_*`` variable of the user's: session-scoped, so module-scoped fixtures (which are set up
    before any function-scoped one) see the same directories as the tests that use them."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("DMPF_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(hermetic_environment(tmp_path_factory.getbasetemp()))
    yield
    for key in [k for k in os.environ if k.startswith("DMPF_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _isolated_data_home(tmp_path_factory, monkeypatch):
    """Each test starts from the session's directories, even after another test moved them."""
    for key, value in hermetic_environment(tmp_path_factory.getbasetemp()).items():
        monkeypatch.setenv(key, value)


LONGEST_TEST_PRETRAINING = 500  # optimizer steps; the demo LM's recipe takes 2000 (minutes)


@pytest.fixture(autouse=True)
def _no_progress_lines(monkeypatch):
    """No plain progress lines (dmpf_cli/progress.py) unless a test asks for them with ``DMPF_PROGRESS_INTERVAL=0``
    (a line at every update): whether work of a few seconds prints one would depend on this machine's speed."""
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", "1000000")


@pytest.fixture(autouse=True)
def _no_demo_lm_pretraining(monkeypatch):
    """An in-process test that reaches the demo LM's full pretraining (a command on the default backbone) fails at
    once, instead of spending minutes: it should pass TINY's backbone or build a tiny LM itself."""
    import dmpf_cli.recipes.pretrain_lm as pretrain

    real = pretrain.pretrain

    def guarded(texts, recipe, *args, **kwargs):
        if recipe.steps > LONGEST_TEST_PRETRAINING:
            pytest.fail(f"this test pretrains a language model for {recipe.steps} steps (the demo LM, minutes): "
                        "give it backbone.name=gpt2-tiny-random (conftest.TINY) or a tiny recipe")
        return real(texts, recipe, *args, **kwargs)

    monkeypatch.setattr(pretrain, "pretrain", guarded)


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


def one_line(exc_info: pytest.ExceptionInfo) -> str:
    """A raised user error's message, asserted to be one line of a DmpfError."""
    from dmpf_cli.errors import DmpfError

    message = str(exc_info.value)
    assert isinstance(exc_info.value, DmpfError)
    assert message and "\n" not in message and "Traceback" not in message
    return message


def env(pythonpath=()) -> dict[str, str]:
    """The environment of a subprocess: one OpenMP thread, ``pythonpath`` entries first on PYTHONPATH."""
    paths = [*map(str, pythonpath), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]
    return {**os.environ, "OMP_NUM_THREADS": "1", **({"PYTHONPATH": os.pathsep.join(paths)} if paths else {})}


def run_module(module: str, *args, check=True, pythonpath=(), timeout=600, **kw) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` in a subprocess; with ``check``, it must succeed."""
    result = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                            env=env(pythonpath), timeout=timeout, **kw)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def dmpf(*args, check=True, **kw) -> subprocess.CompletedProcess:
    """``dmpf ARGS`` in a subprocess (``python -m dmpf_cli``)."""
    return run_module("dmpf_cli", *args, check=check, **kw)


# -- the plain progress lines of long work in a pipe or a log (dmpf_cli/progress.py) ---------------

# DESCRIPTION: N/TOTAL UNIT (P%), RATE, (ELAPSED elapsed, ETA …| done in …)[, INFO]
LINE = re.compile(r"^(?P<what>.+?): (?P<n>[\d,.]+)/(?P<total>[\d,.]+) (?P<unit>\S+) \((?P<pct>\d+)%\)"
                  r"(?:, (?P<rate>[\d,.]+ \S+/(?:s|min|h)))?, (?:[^,]+ elapsed|done in [^,]+)")


def progress_lines(text: str, what: str) -> list[re.Match]:
    """The plain progress lines of task ``what`` in ``text``."""
    found = [LINE.match(line) for line in text.splitlines()]
    return [m for m in found if m and m["what"] == what]


def assert_done(text: str, what: str, total: str, unit: str) -> re.Match:
    """``what``'s last line says it is done: N/N UNIT (100%), a rate, the time it took."""
    lines = progress_lines(text, what)
    assert lines, f"no progress line for {what!r} in:\n{text}"
    last = lines[-1]
    assert (last["n"], last["total"], last["unit"], last["pct"]) == (total, total, unit, "100"), last[0]
    assert last["rate"] and "done in" in last[0], last[0]
    return last


# -- a tiny DMPF on a tiny random GPT-2, for the model, fast-path and xformers-op tests -------------

B, T = 3, 12
LENGTHS = [12, 7, 1]  # text lengths: full, right-padded, a single real token


def tiny_gpt2(seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=4, n_embd=32, n_head=4, n_positions=64, vocab_size=100,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2Model(config).requires_grad_(False).eval()


def make_model(*overrides: str, seed: int = 0):
    import torch

    from dmpf_cli.config import load_config
    from dmpf_cli.model.dmpf import DMPF

    cfg = load_config(overrides=[
        "encoders.audio.d=16", "encoders.vision.d=16", "encoders.audio_visual.d=16",
        "encoders.audio.max_len=6", "encoders.vision.max_len=6", "encoders.audio_visual.max_len=6",
        "fusion.n_a=3", "fusion.n_v=2", "fusion.n_av=4", "mm.layers=[1, 3]", "head.d=16",
        "training.attention=sdpa", *overrides,
    ])
    torch.manual_seed(seed)
    return DMPF(cfg, tiny_gpt2(seed), dims=(10, 7))


def make_batch(seed: int = 1) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    return {
        "text_ids": torch.randint(0, 100, (B, T), generator=g),
        "text_real": torch.arange(T)[None, :] < torch.tensor(LENGTHS)[:, None],
        "audio": torch.randn(B, 15, 10, generator=g),
        "audio_lengths": torch.tensor([15, 4, 0]),
        "vision": torch.randn(B, 9, 7, generator=g),
        "vision_lengths": torch.tensor([9, 9, 2]),
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run per test module, shared by its read-only tests."""
    root = tmp_path_factory.mktemp("runs") / "tiny"
    dmpf("train", "--output", root, *TINY)
    return root


@pytest.fixture(scope="session")
def slurm():
    """A real Slurm cluster on this machine, started by the test (Debian's packages, installed when missing);
    skipped where it cannot run: not root, or no apt-get. Stopped again if this test session started it."""
    import shutil

    pytest.importorskip("submitit")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("a local Slurm needs root and Debian's apt-get (tests/slurm_local.sh)")
    was_up = subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0 if shutil.which("sinfo") else False
    started = subprocess.run(["bash", str(ROOT / "tests" / "slurm_local.sh")], capture_output=True, text=True,
                             timeout=600)
    assert started.returncode == 0, started.stderr
    yield started.stdout.strip()
    if not was_up:
        subprocess.run(["bash", str(ROOT / "tests" / "slurm_local.sh"), "--stop"], capture_output=True, timeout=120)
