"""dmpf sweep: space files checked whole before any trial, one-line errors for storages, the study's budget shared by
several workers (SQLite and a journal file), pruning recorded in Optuna and in the run, a killed worker's trial
failed and run again, best.yaml."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY, assert_done, dmpf, env, error_line

optuna = pytest.importorskip("optuna")

SPACE = {  # two searched keys on the tiny config; every trial trains in a second or two
    "name": "tiny",
    "overrides": [*TINY, "training.device=cpu"],
    "space": {"optimizer.lr_lm": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
              "mm.gate": {"choices": ["sigmoid", "tanh"]}},
    "pruner": {"kind": "none"},
    "sampler": {"seed": 0},
}


def write_space(tmp_path: Path, filename: str = "space.yaml", **changes) -> Path:
    data = {**SPACE, **changes}
    path = tmp_path / filename
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False),
                    encoding="utf-8")
    return path


def prepare_tiny_data() -> None:
    """Generate the tiny dataset once, before workers start side by side (each would otherwise make it)."""
    from dmpf_cli.config import load_config
    from dmpf_cli.recipes.datasets import open_data

    open_data(load_config(overrides=TINY))


def trials_of(storage, study: str = "tiny") -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def summary_of(stdout: str) -> dict:
    """The summary that ends `dmpf sweep --format json` (one JSON object per line: trial events, then it)."""
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events and events[-1]["event"] == "summary" and all("event" in e for e in events), stdout[-2000:]
    return events[-1]


def rdb(url: str):
    return optuna.storages.RDBStorage(url)


def journal(path: Path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


# -- the space file: checked whole, one line naming the file and the key ---------------------------

def test_the_demo_space_is_valid_and_packaged():
    from dmpf_cli.experiments.sweep import load_space

    spec = load_space("demo")  # configs/sweeps/demo.yaml by name, as `dmpf sweep demo`
    assert spec.path == ROOT / "configs" / "sweeps" / "demo.yaml"
    assert {d.key for d in spec.dims} >= {"optimizer.lr_lm", "fusion.n_av", "mm.gate", "head.dropout"}
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "sweeps/*.yaml" in project["tool"]["setuptools"]["package-data"]["dmpf_cli.configs"]
    assert any(r.startswith("optuna") for r in project["project"]["optional-dependencies"]["sweep"])


def test_a_space_file_parses_into_dimensions(tmp_path):
    from dmpf_cli.experiments.sweep import load_space

    spec = load_space(write_space(tmp_path, space={
        "optimizer.lr_lm": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "training.batch_size": {"low": 8, "high": 32, "step": 8},
        "head.dropout": {"low": 0.0, "high": 0.3, "step": 0.1},
        "mm.layers": {"choices": [[1], [0, 1]]}}))
    kinds = {d.key: d.kind for d in spec.dims}
    assert kinds == {"optimizer.lr_lm": "float", "training.batch_size": "int", "head.dropout": "float",
                     "mm.layers": "choice"}
    assert spec.name == "tiny" and spec.seed == 1111 and spec.heartbeat == 60
    # a list choice travels through Optuna as text and comes back as the list
    study = optuna.create_study()
    trial = study.ask()
    dim = next(d for d in spec.dims if d.key == "mm.layers")
    assert dim.suggest(trial) in ([1], [0, 1])
    assert dim.decode(trial.params["mm.layers"]) == dim.suggest(trial) and dim.decode("[0, 1]") == [0, 1]
    overrides = spec.trial_overrides({"optimizer.lr_lm": 1e-05, "mm.layers": [0, 1]})
    assert overrides[-2:] == ["optimizer.lr_lm=1.0e-05", "mm.layers=[0, 1]"]  # 1e-05 would read back as a string


BAD_SPACES = [
    ({"spcae": {}}, ["spcae: unknown key", "did you mean 'space'"]),
    ({"space": {"optimizer.lr_lm": {"low": 1e-4, "high": 1e-2, "lgo": True}}},
     ["space.optimizer.lr_lm.lgo: unknown key", "did you mean", "'log'"]),
    ({"space": {"optimizer.lr_lmm": {"low": 1e-4, "high": 1e-2}}},
     ["space: optimizer.lr_lmm: unknown key", "did you mean 'lr_lm'"]),
    ({"space": {"optimiser.lr_lm": {"low": 1e-4, "high": 1e-2}}}, ["optimiser: unknown key", "'optimizer'"]),
    ({"space": {"optimizer.lr_lm": {"low": 1e-2, "high": 1e-4}}}, ["space.optimizer.lr_lm", "expected low < high"]),
    ({"space": {"mm.gate": {"choices": []}}}, ["space.mm.gate.choices", "non-empty list"]),
    ({"space": {"head.dropout": {"low": 0.0, "high": 0.3, "log": True}}}, ["head.dropout", "log range needs low > 0"]),
    ({"space": {"head.dropout": {"low": 0.0, "high": 1.5}}}, ["space: head.dropout", "got 1.5"]),
    ({"space": {"mm.gate": {"choices": ["sigmoid", "tahn"]}}}, ["space: mm.gate", "'tahn'"]),
    ({"space": {"training.max_epochs": {"low": 1.5, "high": 3.0}}}, ["training.max_epochs", "integer"]),
    ({"space": {"head.dropout": {"low": 0.0, "high": 0.3, "step": 0.25}}}, ["multiple of step"]),
    ({"space": {}}, ["space: expected a mapping"]),
    ({"base": "defualt"}, ["base: defualt", "did you mean 'default'"]),
    ({"base": "missing.yaml"}, ["base", "missing.yaml: no such config file"]),
    ({"overrides": ["trainng.max_epochs=2"]}, ["overrides: override 'trainng.max_epochs=2'", "'training'"]),
    ({"pruner": {"kind": "medain"}}, ["pruner.kind: expected median or none"]),
    ({"pruner": {"kind": "median", "n_warmup_step": 1}}, ["pruner.n_warmup_step: unknown key", "'n_warmup_steps'"]),
    ({"sampler": {"sede": 1}}, ["sampler.sede: unknown key", "did you mean 'seed'"]),
    ({"trials": 0}, ["trials: expected an integer >= 1"]),
    ({"heartbeat": "soon"}, ["heartbeat: expected an integer >= 1"]),
    ({"name": "../x"}, ["name:"]),
    ({"seed": 2**70}, ["seed: expected an integer from 0 to 4294967295, got 1180591620717411303424"]),
    ({"seed": -1}, ["seed: expected an integer from 0 to 4294967295, got -1"]),
    ({"sampler": {"seed": 2**40}}, ["sampler.seed: expected an integer from 0 to 4294967295, got 1099511627776"]),
    ({"space": {"optimizer.lr_lm": {"low": 1e-4, "high": math.inf, "log": True}}},
     ["space.optimizer.lr_lm.high: expected a finite number, got Infinity"]),
    ({"space": {"head.dropout": {"low": math.nan, "high": 0.3}}}, ["space.head.dropout.low: expected a finite number"]),
    ({"space": {"head.dropout": {"low": 0.0, "high": 0.3, "step": math.inf}}},
     ["space.head.dropout.step: expected a positive finite number"]),
]


@pytest.mark.parametrize(("changes", "fragments"), BAD_SPACES, ids=[str(i) for i in range(len(BAD_SPACES))])
def test_a_bad_space_file_is_one_line_before_any_trial(invoke, tmp_path, changes, fragments):
    space = write_space(tmp_path, **changes)
    out = tmp_path / "out"
    result = invoke("sweep", space, "--output", out)
    error_line(result.exit_code, result.stderr, str(space), *fragments)
    assert not out.exists()


def test_every_mistake_in_a_space_file_is_its_own_line_naming_the_file_the_key_and_a_close_match(invoke, tmp_path):
    """The space file is a pydantic model checked as the configs are: all its problems at once, one line each."""
    from dmpf_cli.experiments.sweep import SweepError, load_space

    space = write_space(tmp_path, pruner={"kind": "median", "n_warmup_step": 1}, sampler={"sede": 1},
                        heartbeat="soon")
    with pytest.raises(SweepError) as err:
        load_space(space)
    assert str(err.value).splitlines() == [
        f"{space}: pruner.n_warmup_step: unknown key; did you mean 'n_warmup_steps'? expected one of: kind, "
        "n_startup_trials, n_warmup_steps",
        f"{space}: sampler.sede: unknown key; did you mean 'seed'? expected one of: seed, n_startup_trials",
        f"{space}: heartbeat: expected an integer >= 1, got 'soon'",
    ]
    result = invoke("sweep", space, "--output", tmp_path / "out")
    assert result.exit_code == 2 and result.stderr.count("error: ") == 3 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_space_file_takes_numbers_as_people_write_them(tmp_path):
    from dmpf_cli.config import load_config
    from dmpf_cli.experiments.sweep import load_space

    path = tmp_path / "space.yaml"
    path.write_text("overrides: [training.device=cpu]\nspace:\n  optimizer.lr_lm: {low: 3e-4, high: 1e-2, log: true}\n"
                    "  head.options: {choices: [{temperature: 5e-1}, {temperature: 2E0}]}\n", encoding="utf-8")
    lr, options = load_space(path).dims
    assert (lr.kind, lr.low, lr.high) == ("float", 3e-4, 1e-2)
    assert options.choices == ({"temperature": 0.5}, {"temperature": 2.0})
    overrides = load_space(path).trial_overrides({"optimizer.lr_lm": 3e-4, "head.options": {"temperature": 0.5}})
    cfg = load_config(overrides=overrides)  # what a trial trains with: the floats, not strings
    assert cfg.optimizer.lr_lm == 3e-4 and cfg.head.options == {"temperature": 0.5}


def test_a_yaml_alias_bomb_in_a_space_file_is_one_line(invoke, tmp_path):
    from test_yamlio import BILLION_LAUGHS

    laughs = "".join(f"      - {line.partition(': ')[2]}\n" for line in BILLION_LAUGHS.splitlines())
    path = tmp_path / "space.yaml"
    path.write_text(f"space:\n  head.options:\n    choices:\n{laughs}", encoding="utf-8")
    result = invoke("sweep", path, "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, f"{path}: its aliases expand it by", "a YAML alias bomb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("show", [False, True], ids=["sweep", "show"])
def test_another_programs_sqlite_database_is_refused_and_left_as_it_is(invoke, tmp_path, show):
    import sqlite3

    db = tmp_path / "notes.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
    connection.close()
    digest = sha256(db)
    result = invoke("sweep", write_space(tmp_path), "--storage", f"sqlite:///{db}", "--trials", "1",
                    "--output", tmp_path / "out", *(["--show"] if show else []))
    error_line(result.exit_code, result.stderr, f"--storage sqlite:///{db}: {db} is another program's SQLite "
                                                "database (tables notes), not an Optuna storage")
    assert sha256(db) == digest and not (tmp_path / "out").exists()


def test_a_file_that_is_no_storage_is_refused_and_left_as_it_is(invoke, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database " * 100)
    log = tmp_path / "server.log"
    log.write_text("12:00 started\nGET / 200\n", encoding="utf-8")
    digests = {junk: sha256(junk), log: sha256(log)}
    for storage, fragment in ((f"sqlite:///{junk}", f"{junk} is not an SQLite database"),
                              (str(log), f"{log} is not an Optuna journal file")):
        result = invoke("sweep", write_space(tmp_path), "--storage", storage, "--trials", "1",
                        "--output", tmp_path / "out")
        error_line(result.exit_code, result.stderr, f"--storage {storage}: ", fragment)
    assert {p: sha256(p) for p in digests} == digests and not (tmp_path / "out").exists()


def test_an_optuna_sqlite_storage_still_opens(tmp_path):
    from dmpf_cli.experiments.sweep import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(storage=url, study_name="s")
    assert [s.study_name for s in optuna.get_all_study_summaries(open_storage(url, must_exist=True))] == ["s"]


def test_a_missing_space_file_names_the_packaged_ones(invoke, tmp_path):
    result = invoke("sweep", "dmeo")
    error_line(result.exit_code, result.stderr, "dmeo: no such space file", "did you mean 'demo'")
    result = invoke("sweep", tmp_path)
    error_line(result.exit_code, result.stderr, "is a directory")


@pytest.mark.parametrize(("storage", "fragments"), [
    ("nosuch://x/y", ["--storage nosuch://x/y: cannot open"]),
    ("sqlite:////nonexistent-dir/deeper/study.db", ["cannot open", "unable to open database file"]),
    ("/nonexistent-dir/deeper/study.log", ["--storage /nonexistent-dir/deeper/study.log: cannot open"]),
    ("study.db", ["expected a database URL", "journal:PATH"]),
])
def test_a_storage_that_cannot_be_opened_is_one_line(invoke, tmp_path, storage, fragments):
    out = tmp_path / "out"
    result = invoke("sweep", write_space(tmp_path), "--storage", storage, "--output", out)
    error_line(result.exit_code, result.stderr, *fragments)
    assert not out.exists()


def test_a_storage_url_is_shown_without_its_password(invoke, tmp_path):
    result = invoke("sweep", write_space(tmp_path), "--storage", "postgresql://me:hunter2@127.0.0.1:1/db",
                    "--output", tmp_path / "out")
    line = error_line(result.exit_code, result.stderr, "--storage postgresql://me:***@127.0.0.1:1/db: cannot open")
    assert "hunter2" not in line


def test_a_machine_that_cannot_train_is_one_line_before_any_trial(invoke, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    space = write_space(tmp_path, overrides=[*TINY, "training.device=cuda"])
    result = invoke("sweep", space, "--storage", tmp_path / "study.log", "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, "cuda")
    assert trials_of(journal(tmp_path / "study.log")) == []  # no trial was spent on it


def test_show_before_any_sweep_is_one_line(invoke, tmp_path):
    space = write_space(tmp_path)
    result = invoke("sweep", space, "--show", "--output", tmp_path / "none")
    error_line(result.exit_code, result.stderr, "no sweep there yet")
    result = invoke("sweep", space, "--show", "--storage", f"journal:{tmp_path / 'none.log'}")
    error_line(result.exit_code, result.stderr, "no such journal file")


def test_an_output_directory_holds_one_study(invoke, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"study": "other"}), encoding="utf-8")
    result = invoke("sweep", write_space(tmp_path), "--output", out)
    error_line(result.exit_code, result.stderr, f"--output {out}: holds the trials of study 'other'")
    assert sorted(p.name for p in out.iterdir()) == ["sweep.json"]  # no study.db made either


@pytest.mark.parametrize("storage", ["journal:{tmp}/j.log", "sqlite:///{tmp}/s.db"], ids=["journal", "sqlite"])
def test_joining_a_study_of_another_space_is_refused(tmp_path, storage):
    """On both kinds of storage: the sqlite one also proves the sweep extra's sqlalchemy floor in the fast tier."""
    from dmpf_cli.experiments.sweep import SweepError, join_study, load_space, locate

    spec = load_space(write_space(tmp_path))
    where = locate(spec, storage.format(tmp=tmp_path), None, tmp_path / "out")
    join_study(spec, where)
    join_study(load_space(write_space(tmp_path, "same.yaml", trials=7, heartbeat=5)), where)  # budget, beat: fine
    other = load_space(write_space(tmp_path, "other.yaml", space={"mm.gate": {"choices": ["tanh"]}}))
    with pytest.raises(SweepError, match=r"another space \(space.* differ"):
        join_study(other, where)


# -- the budget and lost trials, on an in-memory study (no training) -------------------------------

def test_lost_trials_are_failed_and_queued_again_once(tmp_path):
    from optuna.trial import TrialState

    from dmpf_cli.experiments.sweep import HEARTBEAT, RETRY_OF, Tally, fail_lost_trials, load_space

    spec = load_space(write_space(tmp_path, heartbeat=1))
    study = optuna.create_study()
    alive, lost = study.ask(), study.ask()
    for trial in (alive, lost):
        trial.suggest_categorical("mm.gate", ["sigmoid", "tanh"])
        trial.set_user_attr(HEARTBEAT, time.time())
    lost.set_user_attr(HEARTBEAT, time.time() - 10)
    assert fail_lost_trials(study, spec) == [lost.number]
    assert fail_lost_trials(study, spec) == []  # once
    trials = study.get_trials()
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.user_attrs[RETRY_OF] == lost.number
    assert retry.params == trials[lost.number].params
    tally = Tally.of(study)
    assert [t.number for t in tally.counted] == [alive.number, retry.number]  # the lost one is replaced
    # the retry is lost as well: failed, and not queued a third time
    again = study.ask()
    assert again.number == retry.number
    again.set_user_attr(HEARTBEAT, time.time() - 10)
    assert fail_lost_trials(study, spec) == [retry.number]
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.FAIL, TrialState.FAIL]
    assert Tally.of(study).counts() == {"complete": 0, "pruned": 0, "failed": 2, "running": 1, "waiting": 0,
                                        "retried": 1, "discarded": 0}


def test_a_worker_that_loses_the_race_for_the_last_slot_discards_its_trial():
    """Two workers count 1 of 2 trials started and both ask: the second trial's place is past the budget."""
    from optuna.trial import TrialState

    from dmpf_cli.experiments.sweep import Tally, claim_trial

    study = optuna.create_study()
    study.ask()  # this worker's counted trial, started
    other = study.ask()  # another worker's ask, after this worker counted
    assert claim_trial(study, budget=2) is None
    discarded = study.get_trials()[-1]
    assert discarded.state == TrialState.FAIL and discarded.user_attrs["discarded"] and not discarded.params
    assert [t.number for t in Tally.of(study).counted] == [0, other.number]
    assert claim_trial(study, budget=3).number == 3  # with room left, a trial as usual


# -- workers, end to end ------------------------------------------------------------------------------

def _check_trials_ran_once(trials, out: Path, epochs: int) -> None:
    """Every counted trial has its own run directory, trained once by the worker the study names."""
    runs = sorted(p for p in out.iterdir() if p.name.startswith("trial-"))
    counted = [t for t in trials if not t.user_attrs.get("discarded")]
    assert sorted(Path(t.user_attrs["run_dir"]) for t in counted) == [r.resolve() for r in runs]
    for t in counted:
        run = Path(t.user_attrs["run_dir"])
        assert run.name == f"trial-{t.number:04d}"
        status = json.loads((run / "run.json").read_text(encoding="utf-8"))
        assert status["status"] == "finished"
        assert status["sweep"] == {"study": "tiny", "trial": t.number, "worker": t.user_attrs["worker"]}
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [r["epoch"] for r in records if r["kind"] == "epoch"] == list(range(epochs))
        assert t.value == pytest.approx(json.loads((run / "results.json").read_text(encoding="utf-8"))["valid"]["MAE"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_run_the_budget_between_them_once_each(tmp_path, kind):
    from optuna.trial import TrialState

    from dmpf_cli.config import load_config

    prepare_tiny_data()
    space, out = write_space(tmp_path, heartbeat=30), tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.log")
    args = [sys.executable, "-m", "dmpf_cli", "sweep", str(space), "--storage", storage, "--output", str(out),
            "--trials", "4", "--format", "json"]
    workers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
               for _ in range(2)]
    results = [w.communicate(timeout=300) for w in workers]
    for worker, (_, stderr) in zip(workers, results):
        assert worker.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    summaries = [summary_of(stdout) for stdout, _ in results]
    for stdout, summary in zip((stdout for stdout, _ in results), summaries):  # each worker's events: its trials
        events = [json.loads(line) for line in stdout.splitlines()[:-1]]
        assert [e["trial"] for e in events if e["event"] == "start"] == summary["worker"]["trials"]
        assert [(e["trial"], e["state"]) for e in events if e["event"] == "end"] == [
            (n, "complete") for n in summary["worker"]["trials"]]
    trials = trials_of(rdb(storage) if kind == "sqlite" else journal(Path(storage)))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4  # exactly the budget, all workers together
    assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("discarded") for t in trials), trials
    assert sorted(n for s in summaries for n in s["worker"]["trials"]) == [t.number for t in complete]
    _check_trials_ran_once(trials, out, epochs=2)
    # best.yaml: the best trial's config, exactly, and loadable by dmpf train --config
    best = min(complete, key=lambda t: t.value)
    assert all(s["best"]["trial"] == best.number for s in summaries)
    best_yaml = out / "best.yaml"
    assert best_yaml.read_text(encoding="utf-8") == (Path(best.user_attrs["run_dir"]) / "config.yaml").read_text(
        encoding="utf-8")
    assert load_config(config=best_yaml) == load_config(config=Path(best.user_attrs["run_dir"]) / "config.yaml")
    assert load_config(config=best_yaml).mm.gate == best.params["mm.gate"]
    # a second run of the same command finds the budget spent and trains nothing
    again = dmpf("sweep", space, "--storage", storage, "--output", out, "--trials", "4", "--format", "json")
    assert summary_of(again.stdout)["worker"]["trials"] == []


@pytest.mark.slow
def test_a_pruned_trial_is_recorded_in_the_study_and_in_its_run(tmp_path):
    """Two enqueued trials: a sane learning rate completes; 5.0 diverges (validation MAE in the tens after one
    epoch, against about 1) and the median pruner stops it after its first epoch."""
    import torch
    from optuna.trial import TrialState
    from rich.console import Console

    from dmpf_cli.experiments.sweep import load_space, run_worker

    prepare_tiny_data()
    space = write_space(tmp_path, space={"optimizer.lr_lm": {"choices": [1.0e-3, 5.0]},
                                         "optimizer.lr_encoders": {"choices": [1.0e-3, 5.0]}},
                        pruner={"kind": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
                        overrides=[*TINY, "training.device=cpu", "training.max_epochs=3"])
    storage = f"journal:{tmp_path / 'study.log'}"
    study = optuna.create_study(study_name="tiny", storage=journal(tmp_path / "study.log"))
    study.enqueue_trial({"optimizer.lr_lm": 1.0e-3, "optimizer.lr_encoders": 1.0e-3})
    study.enqueue_trial({"optimizer.lr_lm": 5.0, "optimizer.lr_encoders": 5.0})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess tests (conftest.env): two threads on a busy machine crawl
    try:
        summary = run_worker(load_space(space), storage, None, 2, tmp_path / "out", Console(quiet=True))
    finally:
        torch.set_num_threads(threads)
    good, bad = trials_of(journal(tmp_path / "study.log"))
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert bad.intermediate_values[0] > 5 * good.intermediate_values[0]  # the premise: clearly worse
    assert bad.user_attrs["pruned_at_epoch"] == 1 and list(bad.intermediate_values) == [0]  # steps from 0
    assert list(good.intermediate_values) == [0, 1, 2]
    status = json.loads((Path(bad.user_attrs["run_dir"]) / "run.json").read_text(encoding="utf-8"))
    assert status["status"] == "pruned" and status["pruned_at_epoch"] == 1
    assert summary["counts"]["pruned"] == 1 and summary["best"]["trial"] == good.number


@pytest.mark.slow
def test_a_workers_trials_take_what_its_base_config_check_opened(tmp_path, monkeypatch):
    """The base config is checked once per worker; its trials (the learning rate and the gate sampled) open
    neither the data nor the backbone again."""
    import torch
    from rich.console import Console

    import dmpf_cli.recipes.datasets as datasets
    from dmpf_cli.experiments.sweep import load_space, run_worker

    prepare_tiny_data()
    opened, real = [], datasets.open_prepared
    monkeypatch.setattr(datasets, "open_prepared", lambda folder: opened.append(folder) or real(folder))
    space = write_space(tmp_path, overrides=[*TINY, "training.device=cpu", "training.max_epochs=1"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_worker(load_space(space), None, None, 2, tmp_path / "out", Console(quiet=True))
    finally:
        torch.set_num_threads(threads)
    assert summary["counts"]["complete"] == 2 and len(opened) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("trial-")) == [
        "trial-0000", "trial-0001"]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["study"] == "tiny"
    assert (tmp_path / "out" / "best.yaml").is_file()


@pytest.mark.slow
def test_a_killed_worker_leaves_a_usable_study(tmp_path):
    """SIGKILL in the middle of a trial: the next worker fails it once its heartbeat is stale (and marks its run
    failed), runs its parameters again and the rest of the budget; --show reads the study."""
    from optuna.trial import TrialState

    prepare_tiny_data()
    space = write_space(tmp_path, heartbeat=1, overrides=[*TINY, "training.device=cpu", "training.max_epochs=3"])
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "dmpf_cli", "sweep", str(space), "--output", str(out),
                              "--trials", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    metrics = out / "trial-0000" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text(encoding="utf-8").strip()):
        assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    storage = rdb(f"sqlite:///{out / 'study.db'}")
    assert [t.state for t in trials_of(storage)] == [TrialState.RUNNING]

    second = dmpf("sweep", space, "--output", out, "--format", "json")
    assert "trial 0: lost" in second.stderr and "Traceback" not in second.stderr
    trials = trials_of(rdb(f"sqlite:///{out / 'study.db'}"))
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    lost, retry = trials[0], next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.params == lost.params
    status = json.loads((out / "trial-0000" / "run.json").read_text(encoding="utf-8"))
    assert status["status"] == "failed" and "heartbeat" in status["error"]

    shown = dmpf("sweep", space, "--output", out, "--show", "--format", "json")
    counts = json.loads(shown.stdout)["counts"]
    assert counts == {"complete": 2, "pruned": 0, "failed": 1, "running": 0, "waiting": 0, "retried": 1,
                      "discarded": 0}
    text = dmpf("sweep", space, "--output", out, "--show")
    assert "2 complete" in text.stdout and "best.yaml" in text.stdout


# -- where the workers run: local slots, and a real Slurm cluster ----------------------------------

def _check_parallel_sweep(out: Path, stdout: str, budget: int, workers: int) -> list:
    from optuna.trial import TrialState

    summary = summary_of(stdout)
    assert summary["done"] == budget and summary["best"] is not None
    trials = trials_of(rdb(f"sqlite:///{out / 'study.db'}"))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget
    assert len({t.user_attrs["worker"] for t in complete}) == workers  # every worker ran trials of the one study
    events = [json.loads(line) for line in stdout.splitlines()[:-1]]
    assert sorted(e["trial"] for e in events if e["event"] == "start") == [t.number for t in complete]
    assert sorted(e["trial"] for e in events if e["event"] == "end") == [t.number for t in complete]
    assert sorted(p.name for p in (out / "logs").iterdir()) == [f"worker-{i + 1}.log" for i in range(workers)]
    _check_trials_ran_once(trials, out, epochs=2)
    return trials


@pytest.mark.slow
def test_jobs_runs_several_workers_of_one_study_here(tmp_path, monkeypatch):
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", "0")  # a progress line at every update, however fast the trials
    space, out = write_space(tmp_path, heartbeat=30), tmp_path / "out"
    result = dmpf("sweep", space, "--output", out, "--trials", "4", "--jobs", "2", "--format", "json")
    assert "2 workers (2 jobs at a time" in result.stderr and "Traceback" not in result.stderr
    _check_parallel_sweep(out, result.stdout, budget=4, workers=2)
    assert_done(result.stderr, "sweep tiny", "4", "trials")  # progress on stderr; stdout stays JSON lines
    assert_done((out / "logs" / "worker-1.log").read_text(), "epoch 2/2", "6", "batches")
    # the same command again: the budget is spent, the workers train nothing and say so
    again = dmpf("sweep", space, "--output", out, "--trials", "4", "--jobs", "2", "--format", "json")
    assert summary_of(again.stdout)["done"] == 4 and [ln for ln in again.stdout.splitlines()][:-1] == []


def test_launch_options_are_checked_before_anything_starts(invoke, tmp_path):
    space, out = write_space(tmp_path), tmp_path / "out"
    result = invoke("sweep", space, "--output", out, "--show", "--jobs", "2")
    error_line(result.exit_code, result.stderr, "--show: trains nothing; drop --gpus/--jobs/--launcher")
    result = invoke("sweep", space, "--output", out, "--gpus", "0,1", "--jobs", "2")
    error_line(result.exit_code, result.stderr, "--gpus and --jobs: give one")
    result = invoke("sweep", space, "--output", out, "--launcher", "submitit-local", "--jobs", "0")
    error_line(result.exit_code, result.stderr, "--jobs: expected a positive integer, got 0")
    assert not out.exists()


@pytest.mark.slow
def test_a_sweep_on_a_real_slurm_cluster(slurm, tmp_path):
    space, out = write_space(tmp_path, heartbeat=30), tmp_path / "out"
    result = dmpf("sweep", space, "--output", out, "--trials", "3", "--launcher", "slurm", "--jobs", "2",
                  "--slurm-partition", "debug", "--gpus-per-job", "0", "--cpus-per-job", "1", "--slurm-time", "10",
                  "--format", "json")
    assert "Traceback" not in result.stderr
    _check_parallel_sweep(out, result.stdout, budget=3, workers=2)
    submitted = sorted((out / ".submitit").glob("*_submission.sh"))
    assert len(submitted) == 2 and "#SBATCH --partition=debug" in submitted[0].read_text()


@pytest.mark.slow
def test_ctrl_c_queues_the_workers_trials_and_the_same_command_finishes_the_study(tmp_path):
    """Ctrl-C on `dmpf sweep --jobs 2` interrupts each worker once: their trials are failed as interrupted and
    queued again at once (no waiting for a heartbeat); the same command then runs each queued trial exactly once
    (two workers popping queued trials from one SQLite file must not both get the same one)."""
    from optuna.trial import TrialState

    prepare_tiny_data()
    space, out = write_space(tmp_path, heartbeat=30), tmp_path / "out"
    args = [sys.executable, "-m", "dmpf_cli", "sweep", str(space), "--output", str(out), "--trials", "4",
            "--jobs", "2"]
    parent = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(),
                              start_new_session=True)
    deadline = time.monotonic() + 120
    while not all((out / f"trial-000{i}" / "metrics.jsonl").is_file() for i in range(2)):
        assert parent.poll() is None and time.monotonic() < deadline, parent.stderr.read() if parent.stderr else ""
        time.sleep(0.05)
    os.killpg(parent.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, stderr = parent.communicate(timeout=60)
    assert parent.returncode == 2 and "interrupted: the workers' trials are queued again" in stderr, stderr[-2000:]
    trials = trials_of(rdb(f"sqlite:///{out / 'study.db'}"))
    assert [(t.state, t.user_attrs.get("error")) for t in trials[:2]] == [(TrialState.FAIL, "interrupted")] * 2
    assert sorted(t.user_attrs.get("retry_of") for t in trials[2:]) == [0, 1]
    assert all(t.state == TrialState.WAITING for t in trials[2:])

    again = dmpf("sweep", space, "--output", out, "--trials", "4", "--jobs", "2", "--format", "json")
    assert "Traceback" not in again.stderr and "Traceback" not in "".join(
        p.read_text() for p in (out / "logs").iterdir())
    assert summary_of(again.stdout)["done"] == 4
    trials = trials_of(rdb(f"sqlite:///{out / 'study.db'}"))
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    assert sorted(retries) == [0, 1] and all(t.state == TrialState.COMPLETE for t in retries.values())
    assert all(retries[n].params == trials[n].params for n in (0, 1))
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
