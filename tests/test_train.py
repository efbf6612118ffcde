"""Train, evaluate, predict end to end on the tiny config: run directories, resume, seeds, DDP, bad input."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, dmpf, env, error_line

pytestmark = pytest.mark.slow  # every test here trains end to end, most in a subprocess


@pytest.fixture(autouse=True)
def data_home(tmp_path_factory, monkeypatch):
    """Every test shares one generated tiny dataset (made on first use) outside the user's cache."""
    home = tmp_path_factory.getbasetemp() / "dmpf-data"
    monkeypatch.setenv("DMPF_DATA_DIR", str(home))
    return home


def test_run_directory_is_whole(trained):
    for name in ("config.yaml", "run.json", "metrics.jsonl", "results.json", "curves.png", "predictions.npz",
                 "checkpoints/last/weights.safetensors", "checkpoints/last/state.pt", "checkpoints/best.safetensors"):
        assert (trained / name).is_file(), name
    status = json.loads((trained / "run.json").read_text())
    assert status["status"] == "finished" and status["seed"] == 1111 and "random weights" in status["backbone"]
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 and len(steps) == 2 * 6  # 96 training samples / batch 16
    assert {"loss", "parts", "lr_lm", "lr_encoders", "samples_per_s", "grad_norm"} <= set(steps[0])
    assert {"task", "a", "v", "av", "text", "tokens", "total"} == set(steps[0]["parts"])
    results = json.loads((trained / "results.json").read_text())
    assert set(results["test"]) == {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5",
                                    "Mult_acc_7", "MAE", "Corr"}
    from safetensors.torch import load_file

    weights = load_file(str(trained / "checkpoints/best.safetensors"))
    assert weights and not any(k.startswith("lm.gpt2.") for k in weights)  # trainable state only
    assert any(k.startswith("lm.tokens.") for k in weights) and any(k.startswith("encoders.") for k in weights)


def test_run_json_records_what_produced_the_run(trained):
    status = json.loads((trained / "run.json").read_text())
    assert status["versions"]["torch"] == torch.__version__ and status["plugins"] == {}
    assert {"key": "head.name", "kind": "head", "name": "self-attention", "origin": "built-in"} in status["components"]
    if (ROOT / ".git").exists() and shutil.which("git"):  # run from this checkout: its commit
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert status["git"]["commit"] == head.strip() and isinstance(status["git"]["dirty"], bool)


def test_every_file_of_a_run_follows_the_umask(trained):
    """A labmate on a shared filesystem can read the run: no file is written 0600 (safetensors' default)."""
    import stat

    from dmpf_cli.fileio import current_umask

    mask = current_umask()  # the training subprocess inherited it
    wrong = {str(p.relative_to(trained)): oct(stat.S_IMODE(p.stat().st_mode)) for p in trained.rglob("*")
             if stat.S_IMODE(p.stat().st_mode) != (0o777 if p.is_dir() else 0o666) & ~mask}
    assert not wrong


def test_stored_predictions_give_the_results(trained, data_home):
    """predictions.npz holds every valid and test sample once, by id, and its scores give results.json's metrics."""
    from dmpf_cli.data.prepared import Prepared, read_manifest
    from dmpf_cli.metrics import compute_metrics
    from dmpf_cli.store.checkpoints import load_predictions
    from dmpf_cli.store.run import RunDir

    stored = load_predictions(RunDir(trained).predictions)
    results = json.loads((trained / "results.json").read_text())
    folder = Path(json.loads((trained / "run.json").read_text())["data"])
    data = Prepared(folder, read_manifest(folder))
    for split in ("valid", "test"):
        ids, pred, label = stored[split]["ids"], stored[split]["pred"], stored[split]["label"]
        truth = data.split(split)
        assert sorted(ids.tolist()) == sorted(truth.ids) and len(ids) == len(set(ids.tolist()))
        by_id = dict(zip(truth.ids, truth.labels.tolist()))
        assert label.tolist() == pytest.approx([by_id[i] for i in ids.tolist()])
        assert compute_metrics(torch.from_numpy(pred), torch.from_numpy(label), "synthetic") == pytest.approx(results[split])


def test_warmup_then_cosine_in_the_log(trained):
    steps = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr_lm"] for r in steps if r["kind"] == "step"]
    warmup = 6  # one epoch of optimizer steps
    assert lrs[: warmup] == sorted(lrs[: warmup]) and lrs[warmup - 1] == pytest.approx(1e-3, rel=1e-6)
    assert lrs[warmup:] == sorted(lrs[warmup:], reverse=True) and lrs[-1] < lrs[warmup]


def test_never_overwrites_a_finished_run(trained):
    result = dmpf("train", "--output", trained, *TINY, check=False)
    assert result.returncode == 2 and "holds a finished run; pass --overwrite" in result.stderr
    assert json.loads((trained / "run.json").read_text())["status"] == "finished"


def test_killed_mid_epoch_and_resumed_ends_like_an_uninterrupted_run(trained, tmp_path):
    target = tmp_path / "interrupted"
    overrides = [*TINY, "training.max_epochs=3"]
    reference = tmp_path / "reference"
    dmpf("train", "--output", reference, *overrides)
    proc = subprocess.Popen([sys.executable, "-m", "dmpf_cli", "train", "--output", str(target), *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    state = target / "checkpoints" / "last" / "state.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        records = (target / "metrics.jsonl").read_text().splitlines() if (target / "metrics.jsonl").exists() else []
        if state.exists() and len([r for r in records if '"kind": "step"' in r]) >= 9:  # inside epoch 2
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((target / "run.json").read_text())["status"] == "running"
    dmpf("train", "--resume", target)
    resumed = json.loads((target / "results.json").read_text())
    expected = json.loads((reference / "results.json").read_text())
    assert resumed["test"] == expected["test"] and resumed["valid"] == expected["valid"]
    assert resumed["steps"] == expected["steps"] == 18
    lines = (target / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len((reference / "metrics.jsonl").read_text().splitlines())  # no duplicated records


def test_a_run_another_process_trains_is_refused_and_untouched(trained, invoke, tmp_path):
    """Two processes never train one run directory (a grid run again while its jobs still train, --resume twice):
    while one holds the run, another is refused — with --overwrite too — and nothing of the run is touched."""
    fcntl = pytest.importorskip("fcntl")
    root = tmp_path / "held"
    shutil.copytree(trained, root)
    status = json.loads((root / "run.json").read_text())
    (root / "run.json").write_text(json.dumps({**status, "status": "running"}))
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with open(tmp_path / ".held.lock", "a+", encoding="utf-8") as held:  # what a training process holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on node7")
        held.flush()
        for args in (["--resume", root], ["--output", root, "--overwrite", *TINY]):
            result = invoke("train", *args)
            error_line(result.exit_code, result.stderr, f"{root}: being trained by pid 4242 on node7; wait for it "
                       "to end, or stop it")
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    # let go (the holder ended): the run resumes, and the lock file beside it names the last holder
    dmpf("train", "--resume", root)
    assert json.loads((root / "run.json").read_text())["status"] == "finished"
    assert (tmp_path / ".held.lock").read_text().startswith("pid ")


def test_resume_refuses_another_backbone(trained, invoke, tmp_path):
    """Checkpoints hold the trainable weights only: resuming over other frozen weights (a transformers
    whose init differs, another local copy of the pretrained model) would mix two models."""
    status = json.loads((trained / "run.json").read_text())
    assert status["backbone_fingerprint"] == "cb22dbd65577217d"  # the pinned gpt2-tiny-random
    root = tmp_path / "other"
    shutil.copytree(trained, root)
    status.update(status="running", backbone_fingerprint="0123456789abcdef")
    (root / "run.json").write_text(json.dumps(status))
    before = {f: (root / f).read_bytes() for f in ("run.json", "metrics.jsonl")}
    result = invoke("train", "--resume", root)
    error_line(result.exit_code, result.stderr, f"--resume: the frozen backbone's weights differ from the ones {root} "
               "trained with (fingerprint cb22dbd65577217d now, 0123456789abcdef then)", "another backbone")
    assert before == {f: (root / f).read_bytes() for f in before}  # nothing touched


def test_several_seeds_summarised(tmp_path):
    root = tmp_path / "seeds"
    result = dmpf("train", "--output", root, "--seeds", "1,2", *TINY, "training.max_epochs=1", "--format", "json")
    summary = json.loads(result.stdout)
    assert set(summary["runs"]) == {str(root / "seed-1"), str(root / "seed-2")}
    on_disk = json.loads((root / "summary.json").read_text())["summary"]
    mae = [summary["runs"][str(root / f"seed-{s}")]["test"]["MAE"] for s in (1, 2)]
    assert on_disk["MAE"]["mean"] == pytest.approx(sum(mae) / 2)
    assert on_disk["MAE"]["std"] == pytest.approx(float(np.std(mae, ddof=1)))

    # an interrupted multi-seed run: seed 2 never finished. --resume ROOT keeps seed 1 and redoes seed 2
    shutil.rmtree(root / "seed-2")
    (root / "summary.json").unlink()
    seed_1 = (root / "seed-1" / "results.json").stat().st_mtime_ns
    resumed = dmpf("train", "--resume", root, "--format", "json")
    again = json.loads((root / "summary.json").read_text())["summary"]
    assert again["MAE"]["values"] == pytest.approx(on_disk["MAE"]["values"])  # training is deterministic
    assert (root / "seed-1" / "results.json").stat().st_mtime_ns == seed_1  # seed 1 was not trained again
    assert "finished already" in resumed.stderr + resumed.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seeds", "1,x"], "--seeds: expected comma-separated integers"),
        (["--resume", "/nonexistent/run"], "no such run directory"),
        (["training.max_epochs=0"], "training.max_epochs: expected an integer >= 1"),
    ],
)
def test_train_bad_input(invoke, args, fragment):
    result = invoke("train", *args)
    error_line(result.exit_code, result.stderr, fragment)


def test_unimodal_labels_need_a_dataset_that_has_them(invoke, tmp_path):
    result = invoke("train", "--output", tmp_path / "r", "loss.unimodal_labels=true", "data.synthetic_size=tiny")
    error_line(result.exit_code, result.stderr, "loss.unimodal_labels", "synthetic", "no unimodal labels")
    assert not (tmp_path / "r").exists()  # refused before a run directory was made


def test_refusals_come_before_the_run_directory(invoke, trained, tmp_path, monkeypatch):
    """A run that cannot start touches nothing: no new directory, and --overwrite keeps the old run."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    if not torch.cuda.is_available():
        result = invoke("train", "--output", tmp_path / "r", "training.device=cuda")
        error_line(result.exit_code, result.stderr, "training.device: cuda requested")
        assert not (tmp_path / "r").exists()
    old = tmp_path / "old"
    shutil.copytree(trained, old)
    result = invoke("train", "--output", old, "--overwrite", *TINY, "backbone.name=gpt2", "mm.layers=[1]")
    error_line(result.exit_code, result.stderr, "gpt2 is not in the Hugging Face cache")
    assert (old / "results.json").is_file() and (old / "checkpoints" / "best.safetensors").is_file()
    (tmp_path / "file").write_text("x")
    result = invoke("train", "--output", tmp_path / "file", *TINY)
    error_line(result.exit_code, result.stderr, "--output", "is a file, not a directory")
    snapshot = {p.relative_to(old): p.read_bytes() for p in sorted(old.rglob("*")) if p.is_file()}
    if not torch.cuda.is_available():  # the attention backend is resolved before the directory is emptied
        result = invoke("train", "--output", old, "--overwrite", *TINY, "--attention", "xformers")
        error_line(result.exit_code, result.stderr, "attention backend 'xformers' cannot run here")
        result = invoke("train", "--output", tmp_path / "new", *TINY, "--attention", "xformers")
        error_line(result.exit_code, result.stderr, "attention backend 'xformers' cannot run here")
        assert not (tmp_path / "new").exists()
    # several seeds: the root's config.yaml and seeds.json are written only once the run can start
    result = invoke("train", "--output", old, "--seeds", "1,2", *TINY, f"data.path={tmp_path / 'no-data'}")
    error_line(result.exit_code, result.stderr, "data.path: no prepared synthetic dataset")
    result = invoke("train", "--output", tmp_path / "seeds", "--seeds", "1,2", *TINY, f"data.path={tmp_path / 'no-data'}")
    error_line(result.exit_code, result.stderr, "data.path: no prepared synthetic dataset")
    assert not (tmp_path / "seeds").exists()
    result = invoke("train", "--output", old, "--seeds", "1,2", *TINY)  # a seeds root is not written into a run
    error_line(result.exit_code, result.stderr, f"--output: {old} holds a run; pass --overwrite")
    assert snapshot == {p.relative_to(old): p.read_bytes() for p in sorted(old.rglob("*")) if p.is_file()}


def test_relative_data_path_is_stored_absolute_and_recorded(tmp_path, data_home):
    dmpf("prepare", "--dataset", "synthetic", "--size", "tiny", "--output", tmp_path / "syn")
    dmpf("train", "--output", tmp_path / "run", *TINY, "training.max_epochs=1", "data.path=syn", cwd=tmp_path)
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert f"path: {tmp_path / 'syn'}" in config
    status = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(status["data_fingerprint"]) == 16
    assert status["versions"]["torch"] == torch.__version__ and status["versions"]["dmpf"]
    quiet = dmpf("eval", "--run", tmp_path / "run", cwd="/")  # found from anywhere, and unchanged: no warning
    assert "warning" not in quiet.stderr
    dmpf("prepare", "--dataset", "synthetic", "--size", "tiny", "--seed", "3", "--output", tmp_path / "syn",
         "--overwrite")
    changed = dmpf("eval", "--run", tmp_path / "run")
    assert "was prepared again since" in changed.stderr


def test_clm_is_logged_as_its_own_loss_part_and_a_term_that_trains_nothing_is_warned(invoke, tmp_path, data_home):
    result = invoke("train", "--output", tmp_path / "clm", *TINY, "training.max_epochs=1", "loss.clm=1.0")
    assert result.exit_code == 0, result.stderr
    steps = [json.loads(line) for line in (tmp_path / "clm" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert all(math.isfinite(r["parts"]["clm"]) and r["parts"]["clm"] > 0 for r in steps)
    assert "trains nothing" not in result.stdout + result.stderr
    text_only = invoke("train", "--output", tmp_path / "text", *TINY, "training.max_epochs=1", "loss.clm=1.0",
                       "fusion.n_a=0", "fusion.n_v=0", "fusion.n_av=0")
    assert text_only.exit_code == 0, text_only.stderr
    assert "warning: loss.clm=1 trains nothing: there are no MM blocks" in " ".join(
        (text_only.stdout + text_only.stderr).split())


def test_real_dataset_must_be_prepared_first(invoke, tmp_path):
    result = invoke("train", "--dataset", "sims", "--output", tmp_path / "r", f"data.path={tmp_path / 'none'}",
                    *TINY[-1:], "mm.layers=[1]")
    error_line(result.exit_code, result.stderr, f"data.path: no prepared sims dataset at {tmp_path / 'none'}; get "
               "MMSA's unaligned_39.pkl (published with MMSA, https://github.com/thuiar/MMSA, as "
               "SIMS/Processed/unaligned_39.pkl; sha256 c9e20c13ec04",
               f"then run `dmpf prepare --dataset sims --source unaligned_39.pkl --sha256 --output {tmp_path / 'none'}`")


def test_every_problem_before_a_run_is_reported_at_once(invoke, tmp_path, monkeypatch):
    """A fresh machine: no MOSEI pickle and no gpt2-large weights are one round trip, each one line."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("DMPF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    args = ["train", "--dataset", "mosei"]
    if not torch.cuda.is_available():
        args.append("training.device=cuda")
    result = invoke(*args)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in result.stderr
    assert any(line.startswith(f"error: data.path: no prepared mosei dataset at {tmp_path / 'data' / 'mosei'}; get "
                               "MMSA's unaligned_50.pkl") and "MOSEI/Processed/unaligned_50.pkl" in line
               and "sha256 ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f" in line for line in lines)
    assert any(line.startswith("error: gpt2-large is not in the Hugging Face cache") for line in lines)
    assert len(lines) == (2 if torch.cuda.is_available() else 3)
    if not torch.cuda.is_available():
        assert lines[0].startswith("error: training.device: cuda requested")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing made: no runs/, no data directory


def test_mosi_preset_asks_for_the_mosi_data(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setenv("DMPF_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "--dataset", "mosi")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"error: data.path: no prepared mosi dataset at {tmp_path / 'data' / 'mosi'}; get "
                               "MMSA's unaligned_50.pkl") and "MOSI/Processed/unaligned_50.pkl" in line
               and "dmpf prepare --dataset mosi --source unaligned_50.pkl" in line for line in lines), lines
    assert any(line.startswith("error: gpt2-medium is not in the Hugging Face cache") for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- eval ----------------------------------------------------------------------------------------

def test_eval_reproduces_the_results(trained):
    out = json.loads(dmpf("eval", "--run", trained, "--format", "json").stdout)
    results = json.loads((trained / "results.json").read_text())
    assert out["metrics"] == pytest.approx(results["test"])
    valid = json.loads(dmpf("eval", "--run", trained, "--split", "valid", "--format", "json").stdout)
    assert valid["metrics"] == pytest.approx(results["valid"]) and valid["samples"] == 32


def test_eval_modality_ablation(trained):
    out = json.loads(dmpf("eval", "--run", trained, "--modality-ablation", "--format", "json").stdout)
    assert set(out["ablation"]) == {"audio", "visual", "audio-visual"}
    for stream, entry in out["ablation"].items():
        assert entry["drop"]["MAE"] == pytest.approx(entry["metrics"]["MAE"] - out["metrics"]["MAE"])
        assert entry["drop"]["Corr"] == pytest.approx(out["metrics"]["Corr"] - entry["metrics"]["Corr"])
        assert entry["metrics"] != out["metrics"], f"removing {stream} changed nothing"
    # synthetic data: beside each drop, what the planted structure says the stream carries
    data = Path(json.loads((trained / "run.json").read_text())["data"])
    reference = json.loads((data / "manifest.json").read_text())["synthetic"]["reference"]
    planted = {stream: entry["planted"] for stream, entry in out["ablation"].items()}
    assert planted["audio-visual"]["carries"] == ["audio", "vision", "interaction"]
    assert planted["audio"]["carries"] == ["audio"] and planted["visual"]["carries"] == ["vision"]
    # only the AV stream carries the interaction; the A and V terms survive in it without their own streams
    assert planted["audio-visual"]["mae_drop_ideal"] == pytest.approx(
        reference["no_interaction"]["mae"] - reference["ideal"]["mae"], abs=1e-6)
    assert planted["audio"]["mae_drop_ideal"] == 0 and planted["visual"]["mae_drop_ideal"] == 0
    assert planted["audio-visual"]["mae_alone"] == reference["audio_vision"]["mae"]
    text = " ".join(dmpf("eval", "--run", trained, "--modality-ablation").stdout.split())
    assert "w/o audio-visual" in text and "drop: how much worse" in text
    assert "what each stream carries, by the planted structure" in text and "audio, vision, interaction" in text


def test_planted_drops_follow_what_the_remaining_streams_still_reach():
    from dmpf_cli.data.synthetic import make_info
    from dmpf_cli.recipes.evaluate import planted_drops

    info = make_info("tiny", 0)
    reference = info["reference"]
    # audio and vision without the AV stream: nothing reaches the interaction, each stream is alone with its term
    drops = planted_drops({"synthetic": info}, ["audio", "visual"])
    assert drops["audio"]["mae_drop_ideal"] == pytest.approx(
        reference["text_vision"]["mae"] - reference["no_interaction"]["mae"], abs=1e-6)
    assert drops["visual"]["mae_drop_ideal"] == pytest.approx(
        reference["text_audio"]["mae"] - reference["no_interaction"]["mae"], abs=1e-6)
    assert drops["audio"]["reference_alone"] == "audio_only" and drops["audio"]["mae_alone"] == reference["audio_only"]["mae"]
    assert planted_drops({"source": "mosei"}, ["audio", "visual"]) == {}  # real data plants nothing


def test_eval_bad_input(trained, tmp_path):
    def error(*args):
        result = dmpf(*args, check=False)
        return error_line(result.returncode, result.stderr)

    assert "no such run directory" in error("eval", "--run", tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    assert "not a dmpf run directory" in error("eval", "--run", tmp_path / "foreign")
    assert "--split: expected test or valid" in error("eval", "--run", trained, "--split", "train2")
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    best = broken / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    assert "damaged checkpoint" in error("eval", "--run", broken)
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    config = other / "config.yaml"
    config.write_text(config.read_text().replace("n_a: 4", "n_a: 6"))
    assert "checkpoint from another config" in error("eval", "--run", other)


# -- predict -------------------------------------------------------------------------------------

def test_predict_on_a_prepared_directory(trained, data_home, tmp_path):
    prepared = next(data_home.glob("synthetic-tiny-*"))
    out = tmp_path / "preds.csv"
    dmpf("predict", "--run", trained, "--input", prepared, "--output", out)
    lines = out.read_text().splitlines()
    assert lines[0] == "id,score,bin2,bin7" and len(lines) == 1 + 96 + 32 + 32
    assert lines[1].split(",")[3] in {"highly negative", "negative", "weakly negative", "neutral", "weakly positive",
                                       "positive", "highly positive"}


def test_predict_jsonl_skips_or_fails_on_malformed_lines(trained, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.normal(size=(5, 35)).astype(np.float32))
    good = {"id": "a", "raw_text": "the film was great", "audio": rng.normal(size=(7, 74)).tolist(), "vision": "v.npy"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "b", "audio": rng.normal(size=(3, 70)).tolist()}),
        json.dumps({"id": "c", "audio": good["audio"], "vision": "v.npy"}),
        json.dumps({**good, "id": "d", "raw_text": "awful and dull", "vision": "missing.npy"}),
        json.dumps({**good, "id": "e", "raw_text": ""}),
    ]
    source = tmp_path / "samples.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = dmpf("predict", "--run", trained, "--input", source, "--output", tmp_path / "p.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "e"] and set(rows[0]) == {"id", "score", "bin2", "bin7"}
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert [w.split(":")[2] for w in warnings] == ["2", "3", "4", "5"]
    assert "expected frames of shape (length >= 1, 74), got (3, 70)" in warnings[1]
    assert "raw_text: expected a string" in warnings[2]
    failed = dmpf("predict", "--run", trained, "--input", source, "--on-error", "fail", check=False)
    assert failed.returncode == 2 and f"{source}:2:" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


# -- distributed ---------------------------------------------------------------------------------

def test_ddp_two_cpu_processes(tmp_path):
    root = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "dmpf_cli", "train", "--output", str(root), *TINY, "training.max_epochs=1", "training.device=cpu",
         "training.grad_accum=2"],
        capture_output=True, text=True, env=env(), timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    assert results["ddp"]["world_size"] == 2 and results["ddp"]["ranks_agree"]
    assert json.loads((root / "run.json").read_text())["status"] == "finished"
    steps = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    # 6 batches shared by 2 ranks, 2 micro-batches per step (synced once, on the second), then the last one
    assert len([r for r in steps if r["kind"] == "step"]) == 2
    assert not list(root.glob("**/.*tmp*")), "a rank left temporary files behind"


def test_predict_on_an_mmsa_pickle(trained, tmp_path):
    import pickle

    from dmpf_cli.data.synthetic import generate

    data, _ = generate("tiny", seed=3)
    data["test"]["audio"][0, 0, 0] = -np.inf  # COVAREP-style: zeroed by the importer, not a NaN score
    source = tmp_path / "unaligned.pkl"
    source.write_bytes(pickle.dumps(data, protocol=4))
    result = dmpf("predict", "--run", trained, "--input", source)
    lines = result.stdout.splitlines()
    assert lines[0] == "id,score,bin2,bin7" and len(lines) == 1 + 160
    assert lines[1].startswith("train/") and all(",nan," not in line for line in lines)
