"""The store: a run directory's state decided in one place (and every reader agreeing with it), and the files of
the directories of many runs (seeds.json, grid.json) round-tripping through their one reader and writer."""

from __future__ import annotations

import json

import pytest
from test_report import LABELS, noise, write_run

from dmpf_cli.config import load_config
from dmpf_cli.experiments.job import Job
from dmpf_cli.recipes.runs import prepare_run_dir
from dmpf_cli.store.checkpoints import resumable_folder
from dmpf_cli.store.roots import (
    GRID_RECORD,
    SEEDS_FILE,
    is_grid_dir,
    is_multi_seed_root,
    read_grid_record,
    read_seeds,
    write_grid_record,
    write_seeds,
)
from dmpf_cli.store.run import RunDir, RunError, RunState

from conftest import error_line, one_line

# -- one run directory's state ---------------------------------------------------------------------


@pytest.mark.parametrize("status, state", [
    (None, RunState.NEW),
    ("running", RunState.RUNNING),
    ("finished", RunState.FINISHED),
    ("failed", RunState.FAILED),
    ("pruned", RunState.PRUNED),
])
def test_the_state_of_a_run_is_its_run_json_status(tmp_path, status, state):
    run = RunDir(tmp_path / "run")
    if status is not None:
        run.root.mkdir()
        run.write_status(status=status, seed=1)
    assert run.state is state
    assert run.finished is (state is RunState.FINISHED)


@pytest.mark.parametrize("record, got", [({"seed": 1}, "null"), ({"status": "done"}, '"done"'),
                                         ({"status": "new"}, '"new"'), ({"status": 1}, "1")])
def test_a_run_json_status_that_is_no_state_is_one_line(tmp_path, record, got):
    run = RunDir(tmp_path)
    run.status_file.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(RunError) as err:
        _ = run.state
    message = one_line(err)
    assert message.startswith(f"{run.status_file}: status: expected one of running, finished, failed, pruned")
    assert message.endswith(f"got {got}")


def test_every_reader_takes_a_finished_run_for_finished_even_without_its_results(tmp_path, invoke):
    """One meaning of "finished" (run.json's status): dmpf train refuses to resume it, a grid's job keeps it, and
    dmpf report reads its results — whose absence is then a one-line error, not a run silently skipped (nor a
    finished run trained again)."""
    run = RunDir(write_run(tmp_path / "run", 1, LABELS + noise(1)))
    run.results.unlink()
    assert run.state is RunState.FINISHED
    with pytest.raises(RunError, match="has already finished"):
        prepare_run_dir(run, load_config(), 1, resume=True, overwrite=False)
    assert Job("run", run.root, run.config, 1).state() == "finished"
    result = invoke("report", run.root)
    error_line(result.exit_code, result.stderr, f"{run.results}: missing")


def test_a_jobs_state_follows_the_run_and_its_resumable_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    job = Job("run", run.root, run.config, 1)
    assert job.state() == "new"
    run.root.mkdir()
    run.write_status(status="running")
    assert job.state() == "restart" and resumable_folder(run.last) is None
    run.last.with_name("last.old").mkdir(parents=True)  # a kill during the swap leaves last.old only
    assert job.state() == "resume" and resumable_folder(run.last) == run.last.with_name("last.old")
    run.last.mkdir()
    assert resumable_folder(run.last) == run.last


def test_results_round_trip_and_a_missing_or_damaged_one_is_one_line(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RunError) as err:
        run.read_results()
    assert one_line(err).startswith(f"{run.results}: missing")
    results = {"seed": 1, "test": {"MAE": 0.5, "Corr": None}}
    run.write_results(results)
    assert run.read_results() == results
    run.results.write_text('{"valid": {}}', encoding="utf-8")
    with pytest.raises(RunError) as err:
        run.read_results()
    assert one_line(err) == f"{run.results}: no test metrics"


# -- the directories of many runs ------------------------------------------------------------------

def test_seeds_json_round_trips(tmp_path):
    assert not is_multi_seed_root(tmp_path)
    write_seeds(tmp_path, [1111, 2, 0])
    assert is_multi_seed_root(tmp_path)
    assert json.loads((tmp_path / SEEDS_FILE).read_text()) == {"seeds": [1111, 2, 0]}
    assert read_seeds(tmp_path) == [1111, 2, 0]
    (tmp_path / SEEDS_FILE).write_text('{"seeds": [1, 1]}', encoding="utf-8")
    with pytest.raises(RunError) as err:
        read_seeds(tmp_path)
    assert one_line(err).startswith(f"{tmp_path / SEEDS_FILE}: expected")


def test_grid_json_round_trips(tmp_path):
    variants = {"full": {"overrides": [], "runs": {"1": "full/seed-1", "2": "full/seed-2"}},
                "text-only": {"overrides": ["fusion.n_a=0"], "runs": {"1": "text-only/seed-1"}}}
    assert not is_grid_dir(tmp_path)
    write_grid_record(tmp_path, name="demo", description=None, base="default", overrides=["training.max_epochs=1"],
                      baseline="full", variants=variants)
    assert is_grid_dir(tmp_path)
    record = read_grid_record(tmp_path)
    assert record == {"name": "demo", "description": None, "base": "default", "overrides": ["training.max_epochs=1"],
                      "baseline": "full", "variants": variants}
    assert list(record["variants"]) == ["full", "text-only"]  # in order
    (tmp_path / GRID_RECORD).write_text('{"variants": {"a": {"runs": {"x": "a"}}}}', encoding="utf-8")
    with pytest.raises(RunError) as err:
        read_grid_record(tmp_path)
    assert one_line(err).startswith(f"{tmp_path / GRID_RECORD}: damaged: expected")
