"""The public Python API (dmpf_cli.api): exported from the package, its docstring examples run; a model trained
through it with no console, exported, and loaded back (from a directory, from the Hugging Face cache offline, from
the command line) scores to the last bit as the run does."""

from __future__ import annotations

import doctest
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import dmpf_cli
from dmpf_cli import api
from dmpf_cli.errors import DmpfError

from conftest import TINY, dmpf, env, error_line, one_line


def test_the_package_exports_the_api():
    assert set(api.__all__) <= set(dmpf_cli.__all__)
    assert all(getattr(dmpf_cli, name) is getattr(api, name) for name in api.__all__)


def test_the_docstring_examples_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DMPF_MODEL_DIR", str(tmp_path / "models"))  # the demo LM they install stays out of the session's
    result = doctest.testmod(api, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5
    assert result.failed == 0


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Two seeds of the tiny config trained in this process through the API, with nothing printed."""
    root = tmp_path_factory.mktemp("api") / "tiny"
    cfg = dmpf_cli.load_config(None, TINY)
    return dmpf_cli.train(cfg, output=root, seeds=[1111, 1112])


def _samples(dims, n=5, seed=0):
    rng = np.random.default_rng(seed)
    texts = ["a wonderful film", "dull and too long", "fine", "the best I have seen this year", "not good"]
    return [{"id": f"s{i}", "text": texts[i % len(texts)], "audio": rng.standard_normal((3 + i, dims[0])),
             "vision": rng.standard_normal((9 - i, dims[1])).astype(np.float32)} for i in range(n)]


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_training_through_the_api_prints_nothing_and_returns_the_runs(two_seeds, capfd):
    result = two_seeds
    assert result.seeds == [1111, 1112]
    assert sorted(p.name for p in result.runs) == ["seed-1111", "seed-1112"]
    assert result.run == next(iter(result.runs)).parent
    for path, results in result.runs.items():
        assert json.loads((path / "results.json").read_text())["test"] == results["test"]
    assert result.test["MAE"] == pytest.approx(np.mean([r["test"]["MAE"] for r in result.runs.values()]))
    # a third, silent run of one seed: nothing on stdout or stderr
    capfd.readouterr()
    one = dmpf_cli.train(dmpf_cli.load_config(None, TINY), overrides=["training.max_epochs=1"],
                         output=result.run.parent / "one", seeds=[7])
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert one.run.name == "one" and one.runs[one.run]["epochs"] == 1


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_exported_models_predict_to_the_last_bit_as_the_run(two_seeds, tmp_path):
    valid = {path.name: r["valid"]["MAE"] for path, r in two_seeds.runs.items()}
    best = min(valid, key=valid.get)
    run_model = dmpf_cli.from_pretrained(two_seeds.run / best)
    samples = _samples(run_model.dims)
    expected = run_model.predict(samples)
    assert expected.dtype == np.float32 and expected.shape == (5,)

    out = dmpf_cli.export(two_seeds.run, tmp_path / "exported")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "dmpf.json", "model.safetensors"]
    model = dmpf_cli.from_pretrained(out)
    assert np.array_equal(model.predict(samples), expected)
    assert model.predict(samples, batch_size=2).tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    # the whole test split scores as the run's own test did
    assert model.evaluate("test") == two_seeds.runs[two_seeds.run / best]["test"]

    # records, ids and label bins, as `dmpf predict` writes rows; a dict of columns works as a list of dicts
    rows = model.predict(samples, records=True)
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(5)]
    assert [r["score"] for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)
    assert set(rows[0]) == {"id", "score", "bin2", "bin7"} and rows[0]["bin2"] in ("positive", "negative")
    columns = {key: [s[key] for s in samples] for key in ("text", "audio", "vision")}
    assert np.array_equal(model.predict(columns), expected)

    # save_pretrained of an exported model copies it; of a run, exports it
    assert np.array_equal(dmpf_cli.from_pretrained(model.save_pretrained(tmp_path / "copy")).predict(samples), expected)
    again = run_model.save_pretrained(tmp_path / "from-run")
    assert json.loads((again / "dmpf.json").read_text())["seeds"] == [int(best.split("-")[1])]


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_the_export_holds_the_config_the_card_and_no_backbone(two_seeds, tmp_path):
    out = dmpf_cli.export(two_seeds.run, tmp_path / "exported")
    manifest = json.loads((out / "dmpf.json").read_text())
    valid = {int(p.name.split("-")[1]): r["valid"]["MAE"] for p, r in two_seeds.runs.items()}
    assert manifest["weights_from_seed"] == min(valid, key=valid.get)
    assert manifest["seeds"] == [1111, 1112] and manifest["feature_dims"] == [74, 35]
    tests = [r["test"]["MAE"] for r in two_seeds.runs.values()]
    assert manifest["metrics"]["test"]["MAE"]["mean"] == pytest.approx(np.mean(tests))
    assert manifest["metrics"]["test"]["MAE"]["std"] == pytest.approx(np.std(tests, ddof=1))
    assert manifest["backbone"]["name"] == "gpt2-tiny-random" and manifest["backbone"]["fingerprint"]

    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "np") as f:
        assert f.keys() and not any(k.startswith("lm.gpt2.") for k in f.keys())  # the frozen LM is named, not copied

    # config.json is the resolved config, and `dmpf train --config config.json` reads it
    cfg = dmpf_cli.load_config(out / "config.json")
    trained = dmpf_cli.load_config(two_seeds.run / "config.yaml")
    assert cfg.model_dump()["encoders"] == trained.model_dump()["encoders"]
    assert cfg.data.path is None and cfg.training.seeds == [1111, 1112]

    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: dmpf" in front and "- synthetic-data" in front and "- random-backbone" in front
    assert "Demonstration only" in card
    assert f"{np.mean(tests):.4f} ± {np.std(tests, ddof=1):.4f}" in card
    assert "dmpf train --config config.json --seeds 1111,1112" in card


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_a_hub_id_loads_offline_from_the_hugging_face_cache(two_seeds, tmp_path, monkeypatch):
    from huggingface_hub import constants

    exported = dmpf_cli.export(two_seeds.run, tmp_path / "exported")
    # the cache's layout, as huggingface_hub writes it: blobs behind snapshots/REVISION, refs/main naming REVISION
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--my-lab--dmpf-tiny"
    shutil.copytree(exported, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = dmpf_cli.from_pretrained("my-lab/dmpf-tiny")
    assert model.source == repo / "snapshots" / revision
    samples = _samples(model.dims)
    assert np.array_equal(model.predict(samples), dmpf_cli.from_pretrained(exported).predict(samples))
    with pytest.raises(DmpfError) as missing:
        dmpf_cli.from_pretrained("my-lab/not-there")
    assert "HF_HUB_OFFLINE is set" in one_line(missing) and "my-lab/not-there" in one_line(missing)


class _RecordingHub:
    """Where the upload would go: records the calls huggingface_hub's HfApi would get, and what the folder held."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        from pathlib import Path

        files = sorted(p.name for p in Path(folder_path).iterdir())
        self.calls.append(("upload_folder", repo_id, files))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_push_to_hub_uploads_the_exported_folder(two_seeds, tmp_path, monkeypatch):
    """Everything up to the upload call (this machine has no Hub): a run is exported, its folder handed over."""
    import huggingface_hub

    hub = _RecordingHub()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: hub)
    model = dmpf_cli.from_pretrained(two_seeds.run / "seed-1111")
    url = model.push_to_hub("my-lab/dmpf-tiny", private=True)
    assert url == "https://huggingface.co/my-lab/dmpf-tiny/commit/abc"
    assert hub.calls[0] == ("create_repo", "my-lab/dmpf-tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    assert hub.calls[1] == ("upload_folder", "my-lab/dmpf-tiny", ["README.md", "config.json", "dmpf.json", "model.safetensors"])


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_bad_input_is_one_line(two_seeds, tmp_path):
    model = dmpf_cli.from_pretrained(two_seeds.run / "seed-1111")
    samples = _samples(model.dims)
    samples[2]["audio"] = samples[2]["audio"][:, :5]
    with pytest.raises(DmpfError) as wrong_width:
        model.predict(samples)
    assert one_line(wrong_width) == "samples[2]: audio: expected frames of shape (length >= 1, 74), got (5, 5)"
    with pytest.raises(DmpfError) as no_text:
        model.predict([{"audio": np.ones((2, 74)), "vision": np.ones((2, 35))}])
    assert "samples[0]: raw_text: expected a string" in one_line(no_text)
    samples = _samples(model.dims)
    samples[0]["vision"][1, 3] = np.nan
    with pytest.raises(DmpfError) as nan:
        model.predict(samples)
    assert "samples[0]: vision: frame 1, value 3: expected a finite number" in one_line(nan)
    with pytest.raises(DmpfError) as ragged:
        model.predict({"text": ["a", "b"], "audio": [np.ones((2, 74))], "vision": [np.ones((2, 35))] * 2})
    assert "same length" in one_line(ragged)
    with pytest.raises(DmpfError) as empty:
        model.predict([])
    assert "no samples" in one_line(empty)

    # an export never lands on something that is not an export, and replaces one only when asked
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DmpfError) as foreign:
        dmpf_cli.export(two_seeds.run, tmp_path / "notes")
    assert "is not an exported dmpf model" in one_line(foreign)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
    dmpf_cli.export(two_seeds.run, tmp_path / "out")
    with pytest.raises(DmpfError) as exists:
        dmpf_cli.export(two_seeds.run, tmp_path / "out")
    assert "pass --overwrite" in one_line(exists)
    dmpf_cli.export(two_seeds.run, tmp_path / "out", overwrite=True)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left

    # an unfinished run is not exported; a damaged export is not loaded
    unfinished = tmp_path / "unfinished"
    shutil.copytree(two_seeds.run / "seed-1111", unfinished)
    status = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps({**status, "status": "running"}))
    with pytest.raises(DmpfError) as running:
        dmpf_cli.export(unfinished, tmp_path / "x")
    assert "has not finished" in one_line(running)
    (tmp_path / "out" / "model.safetensors").unlink()
    with pytest.raises(DmpfError) as damaged:
        dmpf_cli.from_pretrained(tmp_path / "out")
    assert "not a complete exported dmpf model (no model.safetensors)" in one_line(damaged)


@pytest.mark.slow
def test_the_commands_take_an_exported_model_and_a_cached_hub_id(two_seeds, tmp_path):
    """`dmpf export`, then `dmpf eval` and `dmpf predict` on the export and on its Hub id (HF cache, offline) print
    what they print for the run."""
    valid = {p.name: r["valid"]["MAE"] for p, r in two_seeds.runs.items()}
    best = two_seeds.run / min(valid, key=valid.get)
    out = tmp_path / "exported"
    done = dmpf("export", "--run", two_seeds.run, "--output", out)
    assert f"exported {two_seeds.run} to {out}" in done.stdout
    again = dmpf("export", "--run", two_seeds.run, "--output", out, check=False)
    error_line(again.returncode, again.stderr, "--output:", "pass --overwrite")

    revision = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--my-lab--dmpf-tiny"
    shutil.copytree(out, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    hub_env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}

    def command(*args, **extra):
        result = subprocess.run([sys.executable, "-m", "dmpf_cli", *map(str, args)], capture_output=True, text=True,
                                env={**env(), **extra}, timeout=600)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def metrics(source, **extra):
        return json.loads(command("eval", "--run", source, "--format", "json", **extra))["metrics"]

    assert metrics(out) == metrics(best) == metrics("my-lab/dmpf-tiny", **hub_env)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"id": s["id"], "raw_text": s["text"], "audio": s["audio"].tolist(),
                                           "vision": s["vision"].tolist()}) + "\n" for s in _samples((74, 35))))
    predicted = {src: command("predict", "--run", src, "--input", samples, **extra)
                 for src, extra in ((best, {}), (out, {}), ("my-lab/dmpf-tiny", hub_env))}
    assert len(set(predicted.values())) == 1 and predicted[best].count("\n") == 6


def _fet_pickle(path, audio=(11, 74), video=(23, 35), text="features", torch_tensors=False):
    """A pickle as MMSA-FET's ``run_single(out_file=...)`` writes one: a dict of one clip's feature arrays ('audio',
    'video', 'text'), numpy by default (librosa's float32, OpenFace's float64), no splits."""
    import pickle

    rng = np.random.default_rng(1)
    data = {}
    if audio:
        data["audio"] = rng.standard_normal(audio).astype(np.float32)
    if video:
        data["video"] = rng.standard_normal(video)
    if text == "features":
        data["text"] = rng.standard_normal((9, 768)).astype(np.float32)  # e.g. BERT's per-token features
    elif text is not None:
        data["text"] = text
    if torch_tensors:
        import torch

        data = {k: torch.from_numpy(np.asarray(v)) for k, v in data.items() if not isinstance(v, str)}
    path.write_bytes(pickle.dumps(data))
    return data


@pytest.mark.slow  # trains two tiny seeds in this process (a few seconds)
def test_predict_scores_an_mmsa_fet_single_sample_pickle(two_seeds, tmp_path, invoke):
    run = two_seeds.run / "seed-1111"
    model = dmpf_cli.from_pretrained(run)
    clip = tmp_path / "clip_0001.pkl"
    data = _fet_pickle(clip)
    said = "I really liked how it ended"
    result = invoke("predict", "--run", run, "--input", clip, "--transcript", said)
    assert result.exit_code == 0, result.stderr
    header, row = result.stdout.strip().splitlines()
    assert header == "id,score,bin2,bin7" and row.startswith("clip_0001,")
    expected = model.predict([{"text": said, "audio": data["audio"], "vision": data["video"]}])[0]
    assert float(row.split(",")[1]) == pytest.approx(float(expected), abs=1e-6)

    # a transcript stored as text in the pickle is used as it is
    _fet_pickle(tmp_path / "spoken.pkl", text=said)
    spoken = invoke("predict", "--run", run, "--input", tmp_path / "spoken.pkl")
    assert spoken.exit_code == 0 and spoken.stdout.strip().splitlines()[1].split(",")[1:] == row.split(",")[1:]

    def refused(path, *fragments, extra=()):
        result = invoke("predict", "--run", run, "--input", path, *extra)
        return error_line(result.exit_code, result.stderr, *fragments)

    refused(clip, f"--input: {clip}: MMSA-FET's text features cannot be read by DMPF", "--transcript")
    _fet_pickle(tmp_path / "librosa24.pkl", audio=(11, 24))
    refused(tmp_path / "librosa24.pkl", "audio: 24 features per frame, but the model was trained on 74 (synthetic)",
            extra=("--transcript", said))
    _fet_pickle(tmp_path / "wide.pkl", video=(23, 709))
    refused(tmp_path / "wide.pkl", "video: 709 features per frame, but the model was trained on 35", extra=("--transcript", said))
    _fet_pickle(tmp_path / "noface.pkl", video=None)
    refused(tmp_path / "noface.pkl", "no 'video' features", extra=("--transcript", said))
    _fet_pickle(tmp_path / "pt.pkl", torch_tensors=True)
    refused(tmp_path / "pt.pkl", "refused to load torch.", "save with return_type='np'", extra=("--transcript", said))
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({"raw_text": "x", "audio": [[0.0] * 74], "vision": [[0.0] * 35]}) + "\n")
    refused(samples, "--transcript: goes with MMSA-FET's single-sample .pkl", extra=("--transcript", said))
