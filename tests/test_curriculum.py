"""The encoder pre-training stage (``dmpf pretrain-encoders``, the reference's fusion curriculum) and a DMPF run
that starts from it (``encoders.init_from``), in process: each stage run trains tiny encoders for two epochs."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from dmpf_cli.config import load_config
from dmpf_cli.model.dmpf import build_encoders, build_model
from dmpf_cli.recipes.datasets import open_data
from dmpf_cli.recipes.preflight import pretrained_encoders
from dmpf_cli.recipes.pretrain_encoders import pretrain_encoders
from dmpf_cli.recipes.runs import prepare_run_dir
from dmpf_cli.recipes.train import Trainer, World
from dmpf_cli.store.run import RunDir, RunError
from dmpf_cli.streams import STREAMS

from conftest import TINY, assert_done, error_line, one_line

CPU = [*TINY, "training.device=cpu"]


def tiny(*overrides: str):
    return load_config(overrides=[*CPU, *overrides])


def no_language_model(*args, **kwargs):
    raise AssertionError("the encoder pre-training stage loaded the language model or its tokenizer")


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    """One finished stage run with every stream, trained without any way to load a language model."""
    root = tmp_path_factory.mktemp("stage") / "encoders"
    with pytest.MonkeyPatch.context() as mp:
        for target in ("dmpf_cli.model.backbone_loader.load_backbone", "dmpf_cli.model.dmpf.load_backbone",
                       "dmpf_cli.model.tokenizer.load_tokenizer", "dmpf_cli.model.backbone_loader.load_tokenizer"):
            mp.setattr(target, no_language_model)
        pretrain_encoders(tiny(), root, overwrite=False, console=Console(quiet=True))
    return root


def stored_keys(run: RunDir) -> set[str]:
    return set(load_file(str(run.best)))


def expected_keys(cfg, dims) -> set[str]:
    encoders = {f"encoders.{k}" for k in build_encoders(cfg, dims).state_dict()}
    heads = {f"heads.{s.name}.{p}" for s in STREAMS if getattr(cfg.fusion, s.tokens_key) > 0 for p in ("weight", "bias")}
    return encoders | heads


# -- the stage ------------------------------------------------------------------------------------

def test_the_stage_writes_a_finished_run_of_encoders_and_heads(stage):
    cfg = tiny()
    run = RunDir(stage)
    status = run.read_status()
    assert status["status"] == "finished" and status["kind"] == "pretrain-encoders" and status["seed"] == 1111
    assert status["streams"] == [s.name for s in STREAMS] and status["versions"]["torch"] == torch.__version__
    data = open_data(cfg)
    assert status["dims"] == list(data.dims) and status["data"] == str(data.path)
    assert load_config(config=run.config) == cfg
    epochs = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1] and all(e["kind"] == "epoch" for e in epochs)
    assert set(epochs[0]["parts"]) == {s.name for s in STREAMS} and "MAE" in epochs[0]["valid"]

    assert stored_keys(run) == expected_keys(cfg, data.dims)  # the encoders and the heads, nothing else
    results = json.loads(run.results.read_text())
    assert set(results["test"]) == {s.name for s in STREAMS}
    for metrics in [*results["test"].values(), results["test_mean_of_heads"]]:
        assert set(metrics) == {"MAE", "Corr"} and all(math.isfinite(v) for v in metrics.values())
    assert results["best_epoch"] in (0, 1) and results["epochs"] == 2


def test_a_stream_without_tokens_has_no_encoder_and_no_head(tmp_path):
    cfg = tiny("fusion.n_v=0", "training.max_epochs=1")
    results = pretrain_encoders(cfg, tmp_path / "run", overwrite=False, console=Console(quiet=True))
    keys = stored_keys(RunDir(tmp_path / "run"))
    assert keys == expected_keys(cfg, open_data(cfg).dims)
    visual = next(s for s in STREAMS if s.tokens_key == "n_v").name
    assert not any(k.split(".")[1] == visual for k in keys)
    assert visual not in results["test"] and len(results["test"]) == len(STREAMS) - 1


def test_the_stage_refuses_a_finished_run_without_overwrite(stage, tmp_path, invoke, monkeypatch):
    monkeypatch.setenv("DMPF_PROGRESS_INTERVAL", "0")  # a progress line at every update
    copy = tmp_path / "copy"
    shutil.copytree(stage, copy)
    before = (copy / "results.json").read_text()
    result = invoke("pretrain-encoders", "--output", copy, *CPU)
    error_line(result.exit_code, result.stderr, "--output", "holds a finished run", "--overwrite")
    assert (copy / "results.json").read_text() == before
    result = invoke("pretrain-encoders", "--output", copy, "--overwrite", "--format", "json", *CPU,
                    "training.max_epochs=1")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["epochs"] == 1 and RunDir(copy).read_status()["status"] == "finished"
    assert_done(result.stderr, "epoch 1/1", "6", "batches")  # the progress: on stderr, never into the JSON


def test_the_stage_refuses_a_config_without_streams_before_any_directory(tmp_path, invoke):
    result = invoke("pretrain-encoders", "--output", tmp_path / "run", *CPU,
                    *(f"fusion.{s.tokens_key}=0" for s in STREAMS))
    error_line(result.exit_code, result.stderr, "fusion.", "no encoder to pre-train")
    assert not (tmp_path / "run").exists()


# -- a DMPF run from it ---------------------------------------------------------------------------

def trainer(cfg, root, *, resume=False) -> Trainer:
    run = RunDir(root)
    prepare_run_dir(run, cfg, 1111, resume=False, overwrite=False)
    return Trainer(cfg, run, 1111, Console(quiet=True), World(), resume=resume)


def test_a_dmpf_run_starts_from_the_stage_encoders_and_nothing_else(stage, tmp_path):
    cfg = tiny(f"encoders.init_from={stage}")
    started = trainer(cfg, tmp_path / "dmpf")
    assert started.encoders_from == stage.resolve()
    stored = load_file(str(RunDir(stage).best))
    encoders = {f"encoders.{k}": v for k, v in started.model.encoders.state_dict().items()}
    assert set(encoders) == {k for k in stored if k.startswith("encoders.")}
    for name, tensor in encoders.items():
        assert torch.equal(tensor, stored[name]), name
    # everything else is what the same seed builds without the stage (the stage's heads are not used)
    fresh, _ = build_model(tiny(), dims=started.data.dims, seed=1111)
    fresh_state = fresh.state_dict()
    others = {k: v for k, v in started.model.state_dict().items() if not k.startswith("encoders.")}
    assert others and all(torch.equal(v, fresh_state[k]) for k, v in others.items())
    assert not all(torch.equal(v, fresh_state[k]) for k, v in encoders.items())  # the stage moved them


def test_a_resumed_run_does_not_load_the_stage_again(stage, tmp_path):
    resumed = trainer(tiny(f"encoders.init_from={stage}"), tmp_path / "dmpf", resume=True)
    fresh, _ = build_model(tiny(), dims=resumed.data.dims, seed=1111)
    assert resumed.encoders_from is None
    for name, tensor in resumed.model.encoders.state_dict().items():
        assert torch.equal(tensor, fresh.encoders.state_dict()[name]), name


@pytest.fixture
def dmpf_run(tmp_path):
    """A finished DMPF run directory (made by the library; no training needed to be refused)."""
    run = RunDir(tmp_path / "dmpf-run")
    prepare_run_dir(run, tiny(), 1111, resume=False, overwrite=False)
    run.write_status(status="finished")
    return run.root


@pytest.fixture
def unfinished(stage, tmp_path):
    copy = tmp_path / "unfinished"
    shutil.copytree(stage, copy)
    RunDir(copy).write_status(status="running")
    return copy


@pytest.mark.parametrize("case, extra, fragment", [
    ("dmpf run", [], "is not an encoder pre-training run"),
    ("stage", ["encoders.audio.d=32"], "encoders.audio.d=16; this config has 32"),
    ("stage", ["fusion.n_av=0"], "pre-trained the audio, visual, audio-visual encoders; this config has the audio, visual"),
    ("unfinished", [], "is unfinished (status 'running')"),
    ("missing", [], "no such run directory"),
])
def test_init_from_refusals_are_one_line_before_any_run_directory(case, extra, fragment, request, tmp_path, invoke):
    init_from = {"dmpf run": lambda: request.getfixturevalue("dmpf_run"),
                 "stage": lambda: request.getfixturevalue("stage"),
                 "unfinished": lambda: request.getfixturevalue("unfinished"),
                 "missing": lambda: tmp_path / "nowhere"}[case]()
    output = tmp_path / "out"
    result = invoke("train", "--output", output, *CPU, f"encoders.init_from={init_from}", *extra)
    error_line(result.exit_code, result.stderr, "encoders.init_from", fragment)
    assert not output.exists()


def test_encoders_of_other_data_widths_are_refused_by_shape(stage):
    with pytest.raises(RunError) as exc:
        pretrained_encoders(tiny(f"encoders.init_from={stage}"), (10, 7))
    message = one_line(exc)
    assert "encoders.init_from" in message and "has shape" in message and "data dims" in message
    assert pretrained_encoders(tiny(), (10, 7)) is None  # unset: nothing to check
