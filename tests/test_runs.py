"""Run directories, checkpoints, the recipe's pieces and scoring a run, in process and fast.

End-to-end training (and what a finished run then reads back through the CLI) is tests/test_train.py; here
each piece is checked on its own: a run directory made by the library, one optimizer step of the recipe, a
checkpoint round trip, the schedule, and eval/predict on a run whose best checkpoint is the initial weights.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from rich.console import Console

from dmpf_cli.config import load_config
from dmpf_cli.model.dmpf import build_model
from dmpf_cli.recipes.datasets import open_data
from dmpf_cli.recipes.evaluate import eval_run, load_trained, predict_run
from dmpf_cli.recipes.runs import clear_output, plot_curves, prepare_run_dir, summarize_seeds
from dmpf_cli.recipes.schedule import build_optimizer, build_scheduler, clip_gradients, lr_factor
from dmpf_cli.recipes.train import Trainer, World, shard
from dmpf_cli.store.checkpoints import load_resumable, load_weights, save_resumable, save_weights
from dmpf_cli.store.run import RunDir, RunError
from dmpf_cli.streams import STREAMS

from conftest import TINY, error_line


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_config(overrides=[*TINY, "training.device=cpu"])


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, cfg):
    """A run directory as `dmpf train` leaves it, but made by the library with the initial weights as best."""
    run = RunDir(tmp_path_factory.mktemp("runs") / "untrained")
    prepare_run_dir(run, cfg, 1111, resume=False, overwrite=False)
    data = open_data(cfg)  # the tiny synthetic set, generated on first use
    model, backbone = build_model(cfg, dims=data.dims, seed=1111)
    save_weights(model, run.best)
    run.write_status(status="finished", data=str(data.path), data_fingerprint=data.fingerprint, dims=list(data.dims),
                     backbone=backbone.source, backbone_fingerprint=backbone.fingerprint, device="cpu")
    return run.root


# -- the run directory -----------------------------------------------------------------------------

def test_a_new_run_directory_holds_its_config_and_status(untrained, cfg):
    run = RunDir(untrained)
    run.require()
    assert load_config(config=run.config) == cfg
    status = run.read_status()
    assert status["seed"] == 1111 and status["status"] == "finished" and status["versions"]["torch"] == torch.__version__
    assert run.metrics.read_text() == ""


def test_require_and_clear_output_refuse_what_is_not_a_run(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep me")
    with pytest.raises(RunError, match="not a dmpf run directory"):
        RunDir(tmp_path / "notes").require("--resume")
    with pytest.raises(RunError, match="exists and is not a dmpf run directory"):
        clear_output(tmp_path / "notes", holds_run=False, what="a run", overwrite=True)
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file"):
        RunDir(tmp_path / "file").require()


def test_a_finished_run_is_replaced_only_with_overwrite(untrained, tmp_path, cfg):
    copy = RunDir(tmp_path / "copy")
    prepare_run_dir(copy, cfg, 1, resume=False, overwrite=False)
    copy.write_status(status="finished")
    with pytest.raises(RunError, match="holds a finished run; pass --overwrite"):
        prepare_run_dir(copy, cfg, 1, resume=False, overwrite=False)
    with pytest.raises(RunError, match="has already finished"):
        prepare_run_dir(copy, cfg, 1, resume=True, overwrite=False)
    prepare_run_dir(copy, cfg, 2, resume=False, overwrite=True)
    assert copy.read_status()["status"] == "running" and copy.read_status()["seed"] == 2


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = summarize_seeds([{"test": {"MAE": 1.0, "Corr": 0.5}}, {"test": {"MAE": 3.0, "Corr": 0.7}}])
    assert summary["MAE"]["mean"] == 2.0 and summary["MAE"]["std"] == pytest.approx(math.sqrt(2))
    assert summary["Corr"]["values"] == [0.5, 0.7]
    assert summarize_seeds([{"test": {"MAE": 1.0}}])["MAE"]["std"] == 0.0


def test_curves_are_drawn_from_the_metrics_file(tmp_path):
    run = RunDir(tmp_path)
    records = [{"kind": "step", "step": i, "loss": 1.0 / (i + 1), "parts": {"task": 0.5 / (i + 1)}} for i in range(3)]
    records.append({"kind": "epoch", "epoch": 0, "valid": {"MAE": 0.9}})
    run.metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    plot_curves(run)
    assert run.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- checkpoints -----------------------------------------------------------------------------------

def test_weights_round_trip_without_the_frozen_backbone(cfg, tmp_path):
    model, _ = build_model(cfg, seed=1)
    other, _ = build_model(cfg, seed=2)
    save_weights(model, tmp_path / "w.safetensors", {"epoch": "3"})
    load_weights(other, tmp_path / "w.safetensors")
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    from safetensors import safe_open

    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert not any(k.startswith("lm.gpt2.") for k in f.keys()) and f.metadata() == {"epoch": "3"}


def test_a_checkpoint_of_another_config_is_one_line(cfg, tmp_path):
    model, _ = build_model(cfg)
    save_weights(model, tmp_path / "w.safetensors")
    smaller, _ = build_model(load_config(overrides=[*TINY, "fusion.n_av=0"]))
    with pytest.raises(RunError, match="checkpoint from another config: unexpected"):
        load_weights(smaller, tmp_path / "w.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="damaged checkpoint"):
        load_weights(model, tmp_path / "bad.safetensors")


def test_resumable_state_is_published_whole(cfg, tmp_path):
    model, _ = build_model(cfg)
    save_resumable(model, {"loop": {"step": 7}}, tmp_path / "last")
    save_resumable(model, {"loop": {"step": 8}}, tmp_path / "last")  # replaces the first, leaves no .old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert load_resumable(model, tmp_path / "last")["loop"]["step"] == 8


# -- the recipe's pieces ---------------------------------------------------------------------------

def test_schedule_warms_up_linearly_then_decays_by_cosine():
    factors = [lr_factor(step, 4, 12, "cosine", 0.1) for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[8] == pytest.approx(0.55) and factors[12] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert lr_factor(9, 2, 12, "constant", 0.0) == 1.0


def test_two_learning_rate_groups_and_decay_on_weight_matrices_only(cfg):
    model, _ = build_model(cfg)
    groups = {g["name"]: g for g in build_optimizer(model, cfg).param_groups}
    assert sorted(groups) == ["encoders/decay", "encoders/no_decay", "lm/decay", "lm/no_decay"]
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for key in ("lm/no_decay", "encoders/no_decay") for p in groups[key]["params"]]
    assert all(groups[k]["weight_decay"] == 0.0 for k in ("lm/no_decay", "encoders/no_decay"))
    assert any(n.startswith("lm.tokens.") for n in no_decay) and any(n.endswith(".bias") for n in no_decay)
    assert any("gate" in n for n in no_decay)
    assert all(names[id(p)].startswith("encoders.") for p in groups["encoders/decay"]["params"])
    frozen = {id(p) for p in model.backbone.parameters()}
    assert not any(id(p) in frozen for g in groups.values() for p in g["params"])


def test_the_references_warm_up_starts_at_rate_zero_and_its_cosine_ends_past_the_run(cfg):
    assert [lr_factor(step, 4, 12, "cosine", 0.0, from_zero=True) for step in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]
    steps_per_epoch, epochs = 10, 10
    reference = cfg.model_copy(update={
        "schedule": cfg.schedule.model_copy(update={"warmup_epochs": 1.0, "min_lr_ratio": 0.0, "warmup_from_zero": True,
                                                    "cosine_extra_epochs": 1.0}),
        "training": cfg.training.model_copy(update={"max_epochs": epochs})})
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, reference, steps_per_epoch)
    rates = []
    for _ in range(epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])  # the rate of this optimizer step
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.0 and rates[steps_per_epoch] == 1.0
    # the cosine runs from the warm-up's end over the 10 epochs left of 11: the last step is at 89/100 of it
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 100)))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0245, abs=1e-3)  # where the run ends: 0.025x
    scheduler = build_scheduler(optimizer, cfg.model_copy(update={"training": reference.training}), steps_per_epoch)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1 / steps_per_epoch)  # dmpf's: 1/warm-up at step 0


def with_optimizer(cfg, **options):
    return cfg.model_copy(update={"optimizer": cfg.optimizer.model_copy(update=options)})


def test_the_references_decay_set_is_everything_but_biases(cfg):
    model, _ = build_model(cfg)
    reference = with_optimizer(cfg, decay="all-but-biases")
    groups = {g["name"]: g for g in build_optimizer(model, reference).param_groups}
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for key in ("lm/no_decay", "encoders/no_decay") for p in groups[key]["params"]}
    decay = {names[id(p)] for key in ("lm/decay", "encoders/decay") for p in groups[key]["params"]}
    assert no_decay and all(n.rsplit(".", 1)[-1].endswith("bias") for n in no_decay)
    # gates, norms and fusion tokens decay there (not in dmpf's set)
    assert any(n.startswith("lm.tokens.") for n in decay) and any("gate" in n for n in decay)
    assert any("norm" in n and n.endswith(".weight") for n in decay)
    assert groups["lm/decay"]["weight_decay"] == cfg.optimizer.weight_decay


@pytest.mark.parametrize("clip_by, clip_side", [("norm", "both"), ("norm", "lm"), ("value", "both"), ("value", "lm")])
def test_gradient_clipping_by_norm_or_value_on_both_sides_or_the_lm_side(cfg, clip_by, clip_side):
    model, _ = build_model(cfg)
    options = with_optimizer(cfg, grad_clip=0.5, clip_by=clip_by, clip_side=clip_side)
    optimizer = build_optimizer(model, options)
    torch.manual_seed(0)
    for g in optimizer.param_groups:
        for p in g["params"]:
            p.grad = torch.randn_like(p) * 3
    side = {s: [p for g in optimizer.param_groups if g["name"].startswith(s) for p in g["params"]]
            for s in ("lm/", "encoders/")}
    before = {s: [p.grad.clone() for p in ps] for s, ps in side.items()}
    norm = clip_gradients(optimizer, options)
    everything = [g for grads in before.values() for g in grads]
    assert float(norm) == pytest.approx(float(torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(g) for g in everything]))), rel=1e-5)  # the norm before clipping
    for s, ps in side.items():
        clipped = clip_side == "both" or s == "lm/"
        grads = [p.grad for p in ps]
        if not clipped:
            assert all(torch.equal(g, b) for g, b in zip(grads, before[s]))
        elif clip_by == "value":
            assert max(float(g.abs().max()) for g in grads) == pytest.approx(0.5)
            assert all(torch.equal(g, b.clamp(-0.5, 0.5)) for g, b in zip(grads, before[s]))
    if clip_by == "norm":
        clipped = [p.grad for s, ps in side.items() if clip_side == "both" or s == "lm/" for p in ps]
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in clipped]))
        assert float(total) == pytest.approx(0.5, rel=1e-4)


def test_each_rank_gets_an_equal_share_of_the_batches():
    batches = [[i] for i in range(5)]
    shares = [shard(batches, World(rank, 2)) for rank in range(2)]
    assert shares == [[[0], [2], [4]], [[1], [3], [0]]]
    assert shard(batches, World()) == batches


def test_one_optimizer_step_moves_the_trainable_weights_only(cfg, untrained, tmp_path):
    run = RunDir(tmp_path / "run")
    prepare_run_dir(run, cfg, 5, resume=False, overwrite=False)
    trainer = Trainer(cfg, run, 5, Console(quiet=True), World())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.model.train()
    parts = trainer.train_step(next(iter(trainer.eval_loaders["valid"])))
    assert set(parts) == {"task", *(s.prefix for s in STREAMS), "text", "tokens", "total"}
    assert math.isfinite(float(parts["total"])) and trainer.optimizer_step(1) > 0 and trainer.state.step == 1
    after = dict(trainer.model.named_parameters())
    moved = {n for n, p in before.items() if not torch.equal(p, after[n])}
    assert moved and not any(n.startswith("lm.gpt2.") for n in moved)
    trainer.checkpoint()
    restored = Trainer(cfg, run, 5, Console(quiet=True), World())
    restored.restore()
    assert restored.state.step == 1
    for name, p in restored.model.named_parameters():
        assert torch.equal(p, after[name]), name


# -- scoring a run ---------------------------------------------------------------------------------

def test_eval_scores_the_best_checkpoint_and_removes_each_stream(untrained):
    result = eval_run(untrained, "valid", modality_ablation=True, warn=pytest.fail)
    assert result["split"] == "valid" and result["samples"] == 32 and result["run_status"] == "finished"
    assert list(result["ablation"]) == [s.display for s in STREAMS]
    for entry in result["ablation"].values():
        assert entry["drop"]["MAE"] == pytest.approx(entry["metrics"]["MAE"] - result["metrics"]["MAE"])
        assert entry["drop"]["Corr"] == pytest.approx(result["metrics"]["Corr"] - entry["metrics"]["Corr"])


def test_predict_scores_jsonl_samples_into_csv_rows(untrained, tmp_path):
    rng = torch.Generator().manual_seed(0)
    lines = [json.dumps({"id": f"s{i}", "raw_text": "the film was great",
                         "audio": torch.randn(3, 74, generator=rng).tolist(),
                         "vision": torch.randn(2, 35, generator=rng).tolist()}) for i in range(3)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    count, text = predict_run(untrained, tmp_path / "in.jsonl", None, "fail", warn=pytest.fail)
    rows = text.splitlines()
    assert count == 3 and rows[0] == "id,score,bin2,bin7" and [r.split(",")[0] for r in rows[1:]] == ["s0", "s1", "s2"]


def test_a_run_without_a_best_checkpoint_is_one_line(invoke, tmp_path, cfg):
    run = RunDir(tmp_path / "fresh")
    prepare_run_dir(run, cfg, 1, resume=False, overwrite=False)
    with pytest.raises(RunError, match="no best checkpoint yet"):
        load_trained(run.root)
    result = invoke("eval", "--run", run.root)
    error_line(result.exit_code, result.stderr, "--run:", "no best checkpoint yet")


# -- damaged run directories: one line naming the file, nothing written ------------------------------

def _files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"" for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("run_json, fragments", [
    ("[1]", ["run.json: damaged: expected a JSON object of the run's status, got [1]"]),
    ('{"status": "fin', ["run.json: unreadable"]),
    ('{"status": "finished", "dims": [74, 35], "data": [1]}', ["run.json: data: expected the prepared data directory, "
                                                               "got [1]"]),
], ids=["a-list", "truncated", "data-a-list"])
def test_eval_of_a_damaged_run_json_is_one_line(invoke, untrained, tmp_path, run_json, fragments):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(untrained, run)
    (run / "run.json").write_text(run_json, encoding="utf-8")
    result = invoke("eval", "--run", run)
    error_line(result.exit_code, result.stderr, f"{run / 'run.json'}", *fragments)


@pytest.mark.parametrize("seeds_json, got", [
    ('{"seeds": [99999999999999999999]}', '{"seeds": [99999999999999999999]}'), ('{"seeds": [1e400]}', "Infinity"),
    ("[1, 2]", "got [1, 2]"), ('{"seeds": [1, 1]}', '{"seeds": [1, 1]}'), ('{"seeds": [-1]}', '{"seeds": [-1]}'),
])
def test_resume_refuses_damaged_seeds_before_anything_is_made(invoke, tmp_path, cfg, seeds_json, got):
    from dmpf_cli.config import to_yaml

    root = tmp_path / "root"
    root.mkdir()
    (root / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    (root / "seeds.json").write_text(seeds_json, encoding="utf-8")
    before = _files(tmp_path)
    result = invoke("train", "--resume", root)
    error_line(result.exit_code, result.stderr, f"--resume: {root / 'seeds.json'}: expected {{\"seeds\": [1111, ...]}}, "
                                                "distinct integers from 0 to 4294967295", got)
    assert _files(tmp_path) == before


def test_resume_refuses_a_run_json_seed_that_is_no_seed(invoke, untrained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(untrained, run)
    RunDir(run).write_status(status="running", seed="x")
    before = _files(tmp_path)
    result = invoke("train", "--resume", run)
    error_line(result.exit_code, result.stderr, f"--resume: {run / 'run.json'}: seed: expected an integer from 0 to "
                                                '4294967295, got "x"')
    assert _files(tmp_path) == before
