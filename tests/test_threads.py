"""How many CPU threads a dmpf process computes with: ``--threads N`` > ``OMP_NUM_THREADS`` > ``SLURM_CPUS_PER_TASK``
> the process's CPU affinity; a bad value is one line naming where it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dmpf_cli.experiments.launch import JobError, make_launch
from dmpf_cli.recipes.runtime import cpu_threads

from conftest import TINY, env, error_line


def _dmpf(*args, **variables: str | None) -> subprocess.CompletedProcess:
    """``dmpf ARGS`` in a subprocess whose environment has ``variables`` set (None: removed)."""
    environment = {**env(), **{k: v for k, v in variables.items() if v is not None}}
    for key in [k for k, v in variables.items() if v is None]:
        environment.pop(key, None)
    result = subprocess.run([sys.executable, "-m", "dmpf_cli", *map(str, args)], capture_output=True, text=True,
                            env=environment, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_count_comes_from_the_option_then_omp_then_slurm_then_the_affinity(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpu_threads() == (5, "affinity")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert cpu_threads() == (4, "SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # OpenMP's nested form: the outer level
    assert cpu_threads() == (3, "OMP_NUM_THREADS")
    assert cpu_threads("2") == (2, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # empty counts as unset
    assert cpu_threads() == (4, "SLURM_CPUS_PER_TASK")


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", ""])
def test_a_bad_threads_value_is_one_line(invoke, value):
    result = invoke("train", "--threads", value, *TINY)
    error_line(result.exit_code, result.stderr, f"--threads: expected a positive integer (CPU threads), got '{value}'")


def test_a_bad_variable_is_one_line_naming_it(invoke, monkeypatch, tmp_path):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "0")
    result = invoke("eval", "--run", tmp_path)
    error_line(result.exit_code, result.stderr, "SLURM_CPUS_PER_TASK: expected a positive integer", "--threads N")
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    result = invoke("eval", "--run", tmp_path)
    error_line(result.exit_code, result.stderr, "OMP_NUM_THREADS: expected a positive integer", "got 'many'")


def test_local_jobs_get_threads_each_and_slurm_jobs_refuse_it(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert make_launch(jobs=2, threads="3").slots == [{"OMP_NUM_THREADS": "3"}] * 2
    assert "2 jobs at a time, 3 CPU threads each" in make_launch(jobs=2, threads="3").describe()
    with pytest.raises(JobError) as err:
        make_launch(launcher="slurm", threads="2")
    assert "--threads" in str(err.value) and "--cpus-per-job" in str(err.value)


@pytest.mark.slow
def test_train_records_the_threads_it_used(tmp_path):
    """--threads beats OMP_NUM_THREADS: the run computes with 1 thread, says so in its header and in run.json."""
    run = tmp_path / "run"
    result = _dmpf("train", "--threads", "1", "--output", run, *TINY, OMP_NUM_THREADS="2")
    assert "cpu, 1 CPU thread;" in result.stdout
    assert json.loads((run / "run.json").read_text())["threads"] == 1


@pytest.mark.slow
@pytest.mark.parametrize(("variables", "option", "expected"), [
    ({"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "2"}, [], 3),
    ({"OMP_NUM_THREADS": None, "SLURM_CPUS_PER_TASK": "3"}, [], 3),
    ({"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "3"}, ["--threads", "2"], 2),
])
def test_pretraining_honours_omp_then_slurm(tmp_path, variables, option, expected):
    """A one-step LM records the threads it trained with (dmpf.json, and the json output)."""
    result = _dmpf("pretrain-lm", "--size", "tiny", "--steps", "1", "--output", tmp_path / "lm", *option,
                   "--format", "json", **variables)
    assert json.loads(result.stdout)["threads"] == expected
    assert json.loads((tmp_path / "lm" / "dmpf.json").read_text())["threads"] == expected
