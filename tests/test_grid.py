"""`dmpf grid`: grid files read strictly, variants checked before any run, run directories finished (never
overwritten), the launchers (in process, a pool of local slots, submitit), and the report at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dmpf_cli.experiments.grid import GridError, plan, read_grid, variant_configs
from dmpf_cli.experiments.job import Job
from dmpf_cli.experiments.launch import JobError, Launch, launch, make_launch, parse_gpus

from conftest import ROOT, TINY, assert_done, dmpf, env, error_line, one_line


def write_grid(folder: Path, **fields) -> Path:
    tree = {"name": "tiny", "base": "default", "overrides": [*TINY, "training.device=cpu"], "seeds": [1, 2],
            "baseline": "full", "variants": {"full": [], "no-av": ["fusion.n_av=0"]}}
    tree.update(fields)
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


# -- the grid file -------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, fragments", [
    ({"varients": {}}, ["unknown key 'varients'", "did you mean 'variants'"]),
    ({"variants": {}}, ["variants: expected a mapping"]),
    ({"variants": {"full": "fusion.n_a=0"}}, ["variants.full: expected a list of key=value overrides"]),
    ({"variants": {"a/b": []}}, ["not a directory name"]),
    ({"baseline": "ful"}, ["baseline: 'ful' is not a variant", "did you mean 'full'"]),
    ({"seeds": [1, 1]}, ["seeds: expected a list of distinct integers"]),
    ({"seeds": "1,2"}, ["seeds: expected a list of distinct integers"]),
])
def test_grid_file_mistakes_are_one_line(tmp_path, fields, fragments):
    with pytest.raises(GridError) as err:
        read_grid(write_grid(tmp_path, **fields))
    message = one_line(err)
    assert str(tmp_path / "grid.yaml") in message
    for fragment in fragments:
        assert fragment in message


def test_every_mistake_in_a_grid_file_is_its_own_line_naming_the_file_and_the_key(tmp_path):
    """The grid file is a pydantic model checked as the configs are: all its problems at once, one line each."""
    path = write_grid(tmp_path, description=["a"], seeds=[1, 1], variants={"full": "fusion.n_a=0"})
    with pytest.raises(GridError) as err:
        read_grid(path)
    lines = str(err.value).splitlines()
    assert [line.partition(": ")[2].partition(":")[0] for line in lines] == ["description", "seeds", "variants.full"]
    assert all(line.startswith(f"{path}: ") for line in lines)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump({"basline": "full", "variants": {"full": []}}))
    with pytest.raises(GridError) as err:
        read_grid(path)
    assert one_line(err).startswith(f"{path}: unknown key 'basline': did you mean 'baseline' or 'base'? expected one of ")


def test_a_grid_file_that_is_not_text_is_one_line(invoke, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_bytes(b"variants: {full: []}\nname: \xff\xfe\n")
    result = invoke("grid", path, "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, f"{path}: cannot read")
    assert not (tmp_path / "out").exists()


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: what a refused command must leave as it found it."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


def bomb(key: str) -> str:
    """A grid file whose ``key`` holds a billion laughs (its anchors inside the variants, which take mappings)."""
    from test_yamlio import BILLION_LAUGHS

    laughs = "".join(f"  {line}\n" for line in BILLION_LAUGHS.splitlines())
    return f"variants:\n  full: []\n{laughs}{key}: *i\n"


HOSTILE_GRIDS = {  # id: (the grid file's fields or text, fragments of the one error line)
    "variant-grid.yaml": ({"variants": {"full": [], "grid.yaml": ["fusion.n_av=0"]}},
                          ["variants: the name 'grid.yaml' is reserved", "grid.json, report.md, report.json, logs"]),
    "variant-grid.json": ({"variants": {"full": [], "grid.json": []}}, ["the name 'grid.json' is reserved"]),
    "variant-report.md": ({"variants": {"full": [], "report.md": []}}, ["the name 'report.md' is reserved"]),
    "variant-report.json": ({"variants": {"full": [], "report.json": []}}, ["the name 'report.json' is reserved"]),
    "variant-logs": ({"variants": {"full": [], "logs": []}}, ["the name 'logs' is reserved"]),
    "variant-GRID.YAML": ({"variants": {"full": [], "GRID.YAML": []}}, ["the name 'GRID.YAML' is reserved"]),
    "variants-by-case": ({"variants": {"full": [], "Full": []}}, ["'full' and 'Full' differ only in case"]),
    "variant-newline": ({"variants": {"full": [], "no-av\n": ["fusion.n_av=0"]}},
                        ["the name 'no-av\\n' is not a directory name"]),
    "name-newline": ({"name": "tiny\n"}, ["name: expected letters, digits", "got 'tiny\\n'"]),
    "baseline-list": ({"baseline": ["full"]}, ['baseline: ["full"] is not a variant', "the variants are full, no-av"]),
    "baseline-mapping": ({"baseline": {"full": 1}}, ['baseline: {"full": 1} is not a variant']),
    "description-list": ({"description": ["a", "b"]}, ['description: expected a line of text, got ["a", "b"]']),
    "seed-beyond-64-bits": ({"seeds": [12345678901234567890123]},
                            ["seeds: expected a list of distinct integers from 0 to 4294967295",
                             "got [12345678901234567890123]"]),
    "seed-negative": ({"seeds": [-5]}, ["seeds: expected a list of distinct integers from 0", "got [-5]"]),
    "seed-true": ({"seeds": [True]}, ["seeds: expected a list of distinct integers", "got [true]"]),
    "alias-bomb-baseline": (bomb("baseline"), ["its aliases expand it by", "a YAML alias bomb"]),
    "alias-bomb-overrides": (bomb("overrides"), ["its aliases expand it by"]),
    "recursive-alias": ("variants: &v {full: [], other: *v}\n", ["an alias refers to a node that contains it"]),
    "deep-nesting": ("variants: " + "[" * 5000 + "]" * 5000 + "\n", ["invalid YAML: nested too deeply"]),
    "nul-character": ("name: a\x00b\nvariants: {full: []}\n", ["invalid YAML: character 8: special characters"]),
    "binary-tag": ("variants: {full: !!binary aGVsbG8=}\n", ["tag:yaml.org,2002:binary is not plain data"]),
}


@pytest.mark.parametrize("content, fragments", HOSTILE_GRIDS.values(), ids=HOSTILE_GRIDS)
def test_a_hostile_grid_file_is_one_line_and_writes_nothing(invoke, tmp_path, content, fragments):
    if isinstance(content, str):
        (tmp_path / "grid.yaml").write_text(content, encoding="utf-8")
    else:
        write_grid(tmp_path, **content)
    before = listing(tmp_path)
    result = invoke("grid", tmp_path / "grid.yaml", "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, f"{tmp_path / 'grid.yaml'}: ", *fragments)
    assert listing(tmp_path) == before


@pytest.mark.parametrize("command", ["grid", "train"])
@pytest.mark.parametrize("seeds", ["12345678901234567890123", "-3", "1,1", str(2**32)])
def test_seeds_out_of_range_on_the_command_line_are_refused_before_anything_is_written(invoke, tmp_path, command,
                                                                                       seeds):
    args = [write_grid(tmp_path)] if command == "grid" else [*TINY, "training.device=cpu"]
    before = listing(tmp_path)
    result = invoke(command, *args, "--seeds", seeds, "--output", tmp_path / "out")
    error_line(result.exit_code, result.stderr, "--seeds: expected comma-separated integers from 0 to 4294967295",
               f"got '{seeds}'")
    assert listing(tmp_path) == before


@pytest.mark.parametrize("record", ['{"variants": {', "[1]", '{"variants": [1]}', '{"variants": {"full": {"runs": [1]}}}',
                                    '{"variants": {"full": {"runs": {"1": 5}}}}', '{"baseline": ["full"], "variants": {}}'])
def test_a_damaged_grid_json_in_the_output_is_one_line_and_left_as_it_is(invoke, tmp_path, record):
    out = tmp_path / "out"
    out.mkdir()
    (out / "grid.json").write_text(record, encoding="utf-8")
    path = write_grid(tmp_path)
    before = listing(tmp_path)
    result = invoke("grid", path, "--output", out)
    error_line(result.exit_code, result.stderr, f"--output: {out / 'grid.json'}: ", "choose another --output")
    assert listing(tmp_path) == before


def test_a_damaged_run_json_in_a_grid_directory_is_one_line_before_anything_is_written(invoke, tmp_path):
    from dmpf_cli.experiments.grid import write_plan

    out = tmp_path / "out"
    write_plan(plan(read_grid(write_grid(tmp_path)), out))
    (out / "full" / "seed-1").mkdir()
    (out / "full" / "seed-1" / "run.json").write_text("[1]", encoding="utf-8")
    before = listing(tmp_path)
    result = invoke("grid", out)
    error_line(result.exit_code, result.stderr, f"{out / 'full' / 'seed-1' / 'run.json'}: damaged: expected a JSON "
                                                "object")
    assert listing(tmp_path) == before


def test_a_variant_with_a_bad_override_names_the_file_the_variant_and_the_key(tmp_path):
    path = write_grid(tmp_path, variants={"full": [], "bad": ["fusion.n_avv=0"]})
    with pytest.raises(GridError) as err:
        variant_configs(read_grid(path))
    message = one_line(err)
    assert "variant 'bad'" in message and "fusion.n_avv" in message and "n_av" in message


def test_a_bad_variant_is_refused_before_any_run_starts(invoke, tmp_path):
    path = write_grid(tmp_path, variants={"full": [], "bad": ["mm.gate=sigmod"]})
    out = tmp_path / "out"
    result = invoke("grid", path, "--output", out)
    error_line(result.exit_code, result.stderr, "variant 'bad'", "mm.gate")
    assert not out.exists()


def test_shipped_grids_resolve_and_their_variants_are_valid():
    demo = read_grid(Path("demo"))  # by name, like a preset
    assert demo.path == ROOT / "configs" / "grids" / "demo.yaml"
    assert demo.baseline == "full" and len(demo.seeds) == 2
    configs = variant_configs(demo)
    assert configs["text-only"].fusion.n_a == configs["text-only"].fusion.n_av == 0
    paper = read_grid(ROOT / "configs" / "grids" / "paper-ablations.yaml")
    configs = variant_configs(paper)
    assert paper.seeds == [1111, 1112, 1113, 1114, 1115] and configs["full"].data.dataset == "mosei"
    full = configs["full"].fusion
    assert (full.n_a, full.n_v, full.n_av, full.mask) == (10, 10, 12, "avseesall")
    assert configs["tokens-16-shared"].fusion.n_av == 16 and configs["tokens-16-shared"].fusion.n_a == 0
    t34 = configs["tokens-34-separate"].fusion
    assert t34.n_a + t34.n_v + t34.n_av == 34
    assert {c.fusion.mask for c in configs.values()} == {"avseesall", "original", "allcausal", "av_attends_only_av_a_v"}
    assert configs["concat-head"].head.name == "concat" and configs["gate-tanh"].mm.gate == "tanh"


def test_an_unknown_shipped_grid_suggests_the_close_ones():
    with pytest.raises(GridError) as err:
        read_grid(Path("dem"))
    assert "did you mean 'demo'" in one_line(err)


def test_plan_is_seed_major_and_refuses_a_directory_that_is_not_a_grid(tmp_path):
    grid = read_grid(write_grid(tmp_path))
    p = plan(grid, tmp_path / "out")
    assert [j.name for j in p.jobs] == ["full/seed-1", "no-av/seed-1", "full/seed-2", "no-av/seed-2"]
    assert all(j.state() == "new" for j in p.jobs) and p.jobs[0].max_epochs == 2
    p = plan(grid, tmp_path / "out", seeds=[7])
    assert [j.name for j in p.jobs] == ["full/seed-7", "no-av/seed-7"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(GridError) as err:
        plan(grid, tmp_path / "other")
    assert "not a grid directory" in one_line(err)
    with pytest.raises(GridError) as err:
        plan(grid, tmp_path / "fresh", resume=True)
    assert "--resume" in one_line(err)


# -- launch options ------------------------------------------------------------------------------

def test_launch_options(monkeypatch):
    assert parse_gpus("0,2", available=4) == ["0", "2"]
    for text, fragment in [("0,0", "distinct"), ("a", "GPU indices"), ("0,4", "no GPU 4")]:
        with pytest.raises(JobError) as err:
            parse_gpus(text, available=4)
        assert fragment in one_line(err)
    with pytest.raises(JobError) as err:
        parse_gpus("0", available=0)
    assert "--jobs" in one_line(err)
    assert make_launch().launcher == "in-process"
    # parallel local jobs share the cores: N processes with all-core thread pools would run many times slower
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert make_launch(jobs=3).slots == [{"OMP_NUM_THREADS": "2"}] * 3
    assert "3 jobs at a time, 2 CPU threads each" in make_launch(jobs=3).describe()
    assert make_launch(jobs=16).slots == [{"OMP_NUM_THREADS": "1"}] * 16
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's own setting is kept
    assert make_launch(jobs=3).slots == [{}, {}, {}]
    for kw, fragment in [({"gpus": "0", "jobs": 2}, "give one"), ({"launcher": "slurm", "jobs": 2}, "drop --gpus"),
                         ({"jobs": 0}, "positive"), ({"launcher": "pbs"}, "slurm or submitit-local")]:
        with pytest.raises(JobError) as err:
            make_launch(**kw)
        assert fragment in one_line(err)


# -- end to end ----------------------------------------------------------------------------------

def _finished(run: Path) -> bool:
    return json.loads((run / "run.json").read_text()).get("status") == "finished" and (run / "results.json").is_file()


@pytest.mark.slow
def test_a_grid_runs_every_variant_and_seed_then_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", "0")  # a progress line at every update, however fast the runs
    path = write_grid(tmp_path)
    out = tmp_path / "out"
    result = dmpf("grid", path, "--output", out, "--format", "json")
    events = [json.loads(line) for line in result.stdout.splitlines()]  # stdout: JSON lines only
    ends = [e for e in events if e["event"] == "end"]
    assert sorted(e["run"] for e in ends) == ["full/seed-1", "full/seed-2", "no-av/seed-1", "no-av/seed-2"]
    assert_done(result.stderr, "grid tiny", "4", "runs")  # the progress, paced, beside the other messages
    assert_done((out / "logs" / "full-seed-1.log").read_text(), "epoch 2/2", "6", "batches")  # each run's log
    assert all(e["ok"] for e in ends)
    for variant in ("full", "no-av"):
        for seed in (1, 2):
            run = out / variant / f"seed-{seed}"
            assert _finished(run) and (run / "predictions.npz").is_file()
            assert json.loads((run / "run.json").read_text())["seed"] == seed
            assert (out / "logs" / f"{variant}-seed-{seed}.log").is_file()
    record = json.loads((out / "grid.json").read_text())
    assert list(record["variants"]) == ["full", "no-av"] and record["baseline"] == "full"
    assert record["variants"]["no-av"]["runs"] == {"1": "no-av/seed-1", "2": "no-av/seed-2"}
    report = json.loads((out / "report.json").read_text())
    assert events[-1]["event"] == "report" and events[-1]["report"] == report
    assert (out / "report.md").read_text().count("|") > 10
    # running it again finishes nothing twice
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/results.json")}
    again = dmpf("grid", path, "--output", out)
    assert "4 finished and kept" in again.stderr + again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/results.json")} == stamps


@pytest.mark.slow
def test_an_in_process_grid_opens_each_variants_data_once(tmp_path, monkeypatch, invoke):
    """The variants are checked before the first run (their data opened); their runs in this process take what the
    check opened rather than checking and opening it again."""
    from dmpf_cli.recipes import datasets

    path = write_grid(tmp_path, overrides=[*TINY, "training.device=cpu", "training.max_epochs=1"])
    datasets.open_data(variant_configs(read_grid(path))["full"])  # made on first use before counting
    opened, real = [], datasets.open_prepared
    monkeypatch.setattr(datasets, "open_prepared", lambda folder: opened.append(folder) or real(folder))
    result = invoke("grid", path, "--output", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert all(_finished(tmp_path / "out" / v / f"seed-{s}") for v in ("full", "no-av") for s in (1, 2))
    assert len(opened) == 2  # full and no-av, once each, for their four runs


@pytest.mark.slow
def test_a_killed_grid_is_finished_by_running_it_again(tmp_path):
    path = write_grid(tmp_path, overrides=[*TINY, "training.device=cpu", "training.max_epochs=3"],
                      variants={"full": []}, seeds=[1, 2])
    out = tmp_path / "out"
    child = subprocess.Popen([sys.executable, "-m", "dmpf_cli", "grid", path, "--output", out], env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "full" / "seed-1"
    deadline = time.time() + 300
    while not (first / "checkpoints" / "last").is_dir() and time.time() < deadline:  # mid-run, resumable
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not _finished(first)
    p = plan(read_grid(path), out)
    assert [j.state() for j in p.jobs] == ["resume", "new"]
    result = dmpf("grid", path, "--output", out)
    assert "1 to resume" in result.stderr + result.stdout
    assert "resuming" in (out / "logs" / "full-seed-1.log").read_text()
    assert _finished(first) and _finished(out / "full" / "seed-2")


@pytest.mark.slow
def test_a_changed_variant_is_refused_and_new_ones_are_added(tmp_path, invoke):
    path = write_grid(tmp_path, variants={"full": []}, seeds=[1])
    out = tmp_path / "out"
    dmpf("grid", path, "--output", out)
    write_grid(tmp_path, variants={"full": ["mm.gate=tanh"]}, seeds=[1])
    result = invoke("grid", path, "--output", out)
    error_line(result.exit_code, result.stderr, "variant 'full' has changed", "mm.gate: 'sigmoid' then, 'tanh' now")
    write_grid(tmp_path, variants={"full": [], "tanh": ["mm.gate=tanh"]}, seeds=[1])
    dmpf("grid", out)  # the grid directory: its own copy of the grid file, the first one
    assert not (out / "tanh").exists()
    dmpf("grid", path, "--output", out)
    assert _finished(out / "tanh" / "seed-1")
    assert list(json.loads((out / "grid.json").read_text())["variants"]) == ["full", "tanh"]


@pytest.mark.slow
def test_local_slots_run_jobs_side_by_side_each_with_its_gpu(tmp_path):
    """--gpus 0,1 is a pool of two slots, one per GPU: exercised here on the CPU through the same pool, with each
    slot's CUDA_VISIBLE_DEVICES recorded in its job's log."""
    grid = read_grid(write_grid(tmp_path))
    p = plan(grid, tmp_path / "out")
    from dmpf_cli.experiments.grid import write_plan

    write_plan(p)
    starts = []
    how = Launch("local", slots=[{"CUDA_VISIBLE_DEVICES": g, "OMP_NUM_THREADS": "1"} for g in "01"])
    outcomes = launch(how).run(p.jobs, tmp_path / "out" / "logs", on_start=lambda job: starts.append(time.time()))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert starts[1] - starts[0] < 5  # the second slot did not wait for the first job
    devices = [(tmp_path / "out" / "logs" / f"{j.name.replace('/', '-')}.log").read_text().splitlines()[0]
               for j in p.jobs]
    assert sorted(d.rsplit("CUDA_VISIBLE_DEVICES=", 1)[1].split()[0] for d in devices) == ["0", "0", "1", "1"]
    assert all(_finished(j.run_dir) for j in p.jobs)


@pytest.mark.slow
def test_submitit_local_executor_runs_the_jobs(tmp_path):
    pytest.importorskip("submitit")
    path = write_grid(tmp_path, variants={"full": []}, seeds=[1])
    out = tmp_path / "out"
    dmpf("grid", path, "--output", out, "--launcher", "submitit-local", "--slurm-time", "10")
    assert _finished(out / "full" / "seed-1") and (out / ".submitit").is_dir()


def test_a_failed_job_is_reported_and_the_others_go_on(tmp_path):
    jobs = [Job("bad/seed-1", tmp_path / "bad", tmp_path / "missing.yaml", 1),
            Job("bad/seed-2", tmp_path / "bad2", tmp_path / "missing.yaml", 2)]
    ended = []
    outcomes = launch(Launch()).run(jobs, tmp_path / "logs", on_end=ended.append)
    assert len(outcomes) == len(ended) == 2 and not any(o.ok for o in outcomes)
    assert "missing.yaml" in outcomes[0].error and "log:" in outcomes[0].error


# -- a real single-node Slurm (tests/slurm_local.sh: slurmctld, slurmd, munge on localhost) ----------

@pytest.mark.slow
def test_a_grid_on_a_real_slurm_cluster(slurm, tmp_path, invoke):
    assert "ready (partition debug" in slurm
    path = write_grid(tmp_path, variants={"full": [], "no-av": ["fusion.n_av=0"]}, seeds=[1])
    out = tmp_path / "out"
    result = dmpf("grid", path, "--output", out, "--launcher", "slurm", "--slurm-partition", "debug",
                  "--gpus-per-job", "0", "--cpus-per-job", "1", "--slurm-time", "10", "--format", "json")
    ends = [json.loads(line) for line in result.stdout.splitlines() if '"end"' in line]
    assert sorted(e["run"] for e in ends) == ["full/seed-1", "no-av/seed-1"] and all(e["ok"] for e in ends)
    assert _finished(out / "full" / "seed-1") and _finished(out / "no-av" / "seed-1")
    submitted = list((out / ".submitit").glob("*_submission.sh"))
    assert len(submitted) == 2 and "#SBATCH --partition=debug" in submitted[0].read_text()
    # a GPU request this node cannot meet is refused by sbatch, in one line
    (tmp_path / "gpu").mkdir()
    more = write_grid(tmp_path / "gpu", variants={"full": []}, seeds=[5])
    result = invoke("grid", more, "--output", tmp_path / "gpu" / "out", "--launcher", "slurm", "--gpus-per-job", "1")
    error_line(result.exit_code, result.stderr, "--launcher slurm: submitting full/seed-5 failed", "gres")


@pytest.mark.slow
def test_a_job_of_several_tasks_on_slurm_is_one_ddp_run(slurm, tmp_path):
    """Each Slurm task of a job is a DDP rank (the torch.distributed environment exported from Slurm's, as torchrun
    would set it); the ranks take rank 0's view of the run directory, rank 0 writes. Here: 2 CPU ranks on gloo —
    the path of --gpus-per-job 2 on a GPU node, where a rank per GPU is the default."""
    from dmpf_cli.config import load_config, to_yaml

    config = tmp_path / "ddp.yaml"
    config.write_text(to_yaml(load_config(overrides=[*TINY, "training.device=cpu", "training.max_epochs=1"])),
                      encoding="utf-8")
    job = Job("ddp/seed-1", tmp_path / "run", config, 1, 1)
    how = Launch("slurm", slurm_partition="debug", slurm_time=10, gpus_per_job=0, tasks_per_job=2, cpus_per_job=2)
    [outcome] = launch(how).run([job], tmp_path / "logs", folder=tmp_path / ".submitit")
    assert outcome.ok, outcome.error
    results = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))
    assert results["ddp"]["world_size"] == 2 and results["ddp"]["ranks_agree"]
    assert "#SBATCH --ntasks-per-node=2" in next((tmp_path / ".submitit").glob("*_submission.sh")).read_text()
    assert "--kill-on-bad-exit=1" in next((tmp_path / ".submitit").glob("*_submission.sh")).read_text()
    # submitted again, the finished run is kept: every rank agrees there is nothing to do
    [again] = launch(how).run([job], tmp_path / "logs", folder=tmp_path / ".submitit")
    assert again.ok and again.results == outcome.results


@pytest.mark.slow
def test_ctrl_c_cancels_the_grids_slurm_jobs_and_leaves_the_runs_resumable(slurm, tmp_path):
    path = write_grid(tmp_path, overrides=[*TINY, "training.device=cpu", "training.max_epochs=200",
                                                 "training.patience=200"],
                      variants={"full": []}, seeds=[1])
    out = tmp_path / "out"
    parent = subprocess.Popen([sys.executable, "-m", "dmpf_cli", "grid", str(path), "--output", str(out),
                               "--launcher", "slurm", "--gpus-per-job", "0", "--slurm-time", "10"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(),
                              start_new_session=True)
    metrics = out / "full" / "seed-1" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and '"kind": "epoch"' in metrics.read_text(encoding="utf-8")):
        assert parent.poll() is None and time.monotonic() < deadline, parent.stderr.read() if parent.stderr else ""
        time.sleep(0.1)
    os.killpg(parent.pid, signal.SIGINT)
    _, stderr = parent.communicate(timeout=60)
    assert parent.returncode == 2 and "interrupted; its Slurm jobs are cancelled: the runs are resumable" in stderr
    deadline = time.monotonic() + 60
    while subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the grid's Slurm job still runs after Ctrl-C"
        time.sleep(0.5)
    assert Job("full/seed-1", out / "full" / "seed-1", out / "full" / "config.yaml", 1).state() == "resume"


def test_a_several_task_jobs_rendezvous_port_is_the_job_ids_and_outside_the_ephemeral_ports(monkeypatch):
    """Every rank of a Slurm job derives the same port from the job id, below Linux's ephemeral ports (where a
    client socket may hold it: rank 0 then failed with EADDRINUSE and the other ranks waited 30 minutes); a
    MASTER_PORT the user set is kept."""
    from dmpf_cli.experiments import job as job_module

    ports = {job_module.rendezvous_port(str(i)) for i in range(1000)}
    assert min(ports) >= 20000 and max(ports) < 32768 and len(ports) > 900
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(name, "")  # recorded, so that what the export sets is undone after the test
        monkeypatch.delenv(name)
    slurm = {"SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "200", "SLURM_JOB_NODELIST": "vm", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
             "SLURM_LOCALID": "1", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_STEP_NUM_TASKS": "2"}
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    job_module._export_distributed()
    assert os.environ["MASTER_PORT"] == str(job_module.rendezvous_port("200"))
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]) == ("1", "2", "vm")
    for name in ("MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("MASTER_PORT", "29511")
    job_module._export_distributed()
    assert os.environ["MASTER_PORT"] == "29511"
