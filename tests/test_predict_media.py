"""``dmpf predict --media``: a new clip scored by a run trained on features a recipe computes (a small CH-SIMS-shaped
dataset written here, its manifest naming the ``sims`` recipe, as ``dmpf prepare --media`` will write one), on real
media (espeak-ng speech muxed into mp4, OpenFace CSVs); refused in one line for a run trained on MOSEI's, MOSI's or
the synthetic data's features, before any clip is read."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil

import numpy as np
import pytest

from conftest import TINY, dmpf, error_line

# -- which recipe made a dataset's features (fast) --------------------------------------------------


def test_the_recipe_comes_from_the_manifest_or_the_dataset():
    from dmpf_cli.recipes.feature_recipe import current_version, features_recipe, recorded_recipe

    clips = features_recipe({"dataset": "sims", "features": {"recipe": "opensmile", "recipe_version": "1"}}, "sims")
    assert (clips.name, clips.version, clips.why_none) == ("opensmile", "1", None)
    mmsa = features_recipe({"dataset": "sims"}, "sims")  # an MMSA CH-SIMS pickle: CH-SIMS's published recipe
    assert (mmsa.name, mmsa.version) == ("sims", current_version("sims")) and mmsa.version is not None
    for dataset, says in (("mosei", "MOSEI's COVAREP/FACET features"), ("mosi", "MOSI's COVAREP/FACET features"),
                          ("synthetic", "dmpf's generated synthetic features")):
        none = features_recipe({"dataset": dataset}, dataset)
        assert none.name is None and none.record() == {"recipe": None, "recipe_version": None}
        assert none.why_none == f"trained on {says}, which cannot be computed from a new clip"
        assert recorded_recipe(none.record(), dataset) == none  # what run.json records reads back the same
    # an older run or export, which recorded nothing: by its dataset
    assert recorded_recipe(None, "sims").name == "sims" and recorded_recipe(None, "mosei").name is None
    assert recorded_recipe({"recipe": "sims", "recipe_version": "1"}, "sims").record() == {"recipe": "sims",
                                                                                           "recipe_version": "1"}


def fake_run(root, dataset: str, dims, features=None):
    """A run directory whose files say what ``read_trained`` reads (its checkpoint is never loaded here)."""
    from dmpf_cli.config import load_config, to_yaml

    root.mkdir(parents=True)
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "best.safetensors").write_bytes(b"")
    (root / "config.yaml").write_text(to_yaml(load_config(overrides=[f"data.dataset={dataset}", *TINY])))
    record = {"status": "finished", "dims": list(dims), "data": None}
    if features is not None:
        record["features"] = features
    (root / "run.json").write_text(json.dumps(record))
    return root


@pytest.mark.parametrize("dataset, dims, says", [
    ("mosei", (74, 35), "MOSEI's COVAREP/FACET features"),
    ("mosi", (5, 20), "MOSI's COVAREP/FACET features"),
    ("synthetic", (74, 35), "dmpf's generated synthetic features"),
])
def test_a_run_on_features_no_recipe_computes_is_refused_before_any_clip_is_read(invoke, tmp_path, dataset, dims,
                                                                                  says):
    run = fake_run(tmp_path / "run", dataset, dims)  # an older run: no features record, its dataset says
    missing = tmp_path / "never-read.mp4"  # not there: the refusal comes first
    result = invoke("predict", "--run", run, "--media", missing, "--transcript", "x")
    line = error_line(result.exit_code, result.stderr, f"--media: {run} was trained on {says}, which cannot be "
                      "computed from a new clip", "dmpf prepare --media", "sims")
    assert str(missing) not in line


def test_a_recipe_whose_widths_are_not_the_runs_is_one_line(invoke, tmp_path):
    run = fake_run(tmp_path / "run", "sims", (74, 35), {"recipe": "sims", "recipe_version": "1"})
    result = invoke("predict", "--run", run, "--media", tmp_path / "a.mp4")
    error_line(result.exit_code, result.stderr, "--media: the sims recipe makes audio 33, vision 709 features per "
               f"frame, but {run} was trained on audio 74, vision 35")


def test_a_recipe_not_installed_is_one_line(invoke, tmp_path):
    run = fake_run(tmp_path / "run", "sims", (33, 709), {"recipe": "wav2vec9", "recipe_version": "1"})
    result = invoke("predict", "--run", run, "--media", tmp_path / "a.mp4")
    error_line(result.exit_code, result.stderr, "--media:", "'wav2vec9' recipe, which is not installed here")


@pytest.mark.parametrize("args, fragments", [
    (["--input", "x.jsonl", "--media", "a.mp4"], ["--input and --media: give one"]),
    ([], ["--input or --media: give one"]),
    (["--input", "x.jsonl", "--openface", "a.csv"], ["--openface: goes with --media"]),
    (["--media", "a.mp4", "--media", "b.mp4", "--transcript", "x"], ["--transcript/--openface: go with one media"]),
])
def test_the_options_are_checked_in_one_line(invoke, tmp_path, args, fragments):
    run = fake_run(tmp_path / "run", "sims", (33, 709))
    result = invoke("predict", "--run", run, *args)
    error_line(result.exit_code, result.stderr, *fragments)


# -- a run trained on sims-recipe features, and real clips (slow) -----------------------------------

def write_sims_data(output, seed: int = 0):
    """A small CH-SIMS-shaped prepared dataset (33 audio and 709 visual features per frame, random), its manifest
    naming the ``sims`` recipe as a dataset prepared from clips does."""
    from dmpf_cli.data.prepared import SplitReport, write_prepared
    from dmpf_cli.media.extractors import sims

    rng = np.random.default_rng(seed)
    recipe = sims()
    splits, reports = {}, {}
    for name, n in (("train", 32), ("valid", 16), ("test", 16)):
        labels = rng.uniform(-1, 1, n).astype(np.float32)
        splits[name] = {
            "audio": rng.standard_normal((n, 60, recipe.audio_dim)).astype(np.float32),
            "vision": rng.standard_normal((n, 12, recipe.vision_dim)).astype(np.float32),
            "audio_lengths": rng.integers(5, 61, n), "vision_lengths": rng.integers(2, 13, n),
            "regression_labels": labels, "raw_text": [f"clip number {i}" for i in range(n)],
            "id": [f"{name}-{i}" for i in range(n)],
            **{f"regression_labels_{k}": labels for k in "TAV"},
        }
        reports[name] = SplitReport(samples=n)
    write_prepared(output, "sims", splits, reports,
                   {"features": {"recipe": recipe.name, "recipe_version": recipe.version}}, overwrite=False)
    return output


@pytest.fixture(scope="module")
def sims_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("sims-run")
    data = write_sims_data(base / "data")
    run = base / "run"
    dmpf("train", "--output", run, *TINY, "data.dataset=sims", f"data.path={data}")
    return run


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """a.mp4 (a.txt, OpenFace a.csv beside it), b.mp4 (b.txt, own features b.npy), c.mp4 (c.txt, no visual
    features), silent.mp4 (no audio track, c.txt's words), broken.mp4 (a truncated a.mp4, its a.csv copied)."""
    pytest.importorskip("librosa")
    pytest.importorskip("av")
    from media_clips import SENTENCES, mux, openface_csv, speak

    folder = tmp_path_factory.mktemp("clips")
    made = {}
    for name, text in zip("abc", SENTENCES):
        made[name] = mux(folder / f"{name}.mp4", speak(text, folder / f"{name}.wav"))
        (folder / f"{name}.txt").write_text(text)
    openface_csv(folder / "a.csv", frames=40)
    np.save(folder / "b.npy", np.random.default_rng(1).standard_normal((30, 709)).astype(np.float32))
    made["silent"] = mux(folder / "silent.mp4", None, seconds=1.0)
    (folder / "silent.txt").write_text("nothing")
    shutil.copy(folder / "a.csv", folder / "silent.csv")
    made["broken"] = folder / "broken.mp4"
    made["broken"].write_bytes(made["a"].read_bytes()[:2000])
    (folder / "broken.txt").write_text("broken")
    shutil.copy(folder / "a.csv", folder / "broken.csv")
    made["texts"] = dict(zip("abc", SENTENCES))
    return made


def rows(stdout: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(stdout)))


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


@pytest.mark.slow
def test_a_clip_scores_as_its_extracted_features_do(invoke, sims_run, clips, tmp_path):
    from dmpf_cli.media.clipfile import load_clip
    from dmpf_cli.metrics import label_bins

    record = json.loads((sims_run / "run.json").read_text())
    assert record["features"] == {"recipe": "sims", "recipe_version": "1"}
    said = clips["texts"]["a"]
    result = invoke("predict", "--run", sims_run, "--media", clips["a"], "--openface", clips["a"].with_suffix(".csv"),
                    "--transcript", said)
    assert result.exit_code == 0, result.stderr
    assert not warnings(result.stderr)
    [row] = rows(result.stdout)
    score = float(row["score"])
    assert row["id"] == "a" and math.isfinite(score)
    bins = label_bins(np.asarray([score], dtype=np.float32), "sims")
    assert {k: row[k] for k in bins} == {k: str(v[0]) for k, v in bins.items()}

    # the same clip through dmpf extract, then dmpf predict --input: the same score
    extracted = tmp_path / "features"
    done = invoke("extract", clips["a"], "--openface", clips["a"].with_suffix(".csv"), "--transcript", said,
                  "--output", extracted)
    assert done.exit_code == 0, done.stderr
    clip = load_clip(extracted / "a.npz")
    np.save(tmp_path / "audio.npy", clip.audio)
    np.save(tmp_path / "vision.npy", clip.vision)
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "a", "raw_text": clip.text, "audio": "audio.npy",
                                                  "vision": "vision.npy"}) + "\n")
    through = invoke("predict", "--run", sims_run, "--input", tmp_path / "a.jsonl")
    assert through.exit_code == 0, through.stderr
    assert rows(through.stdout) == [row]

    # the Python API scores it the same
    import dmpf_cli as dmpf

    model = dmpf.from_pretrained(sims_run)
    assert model.features_recipe == "sims"
    scores = model.predict_media(clips["a"], transcript=said, openface=clips["a"].with_suffix(".csv"))
    assert scores.dtype == np.float32 and scores.tolist() == pytest.approx([score], abs=1e-5)


@pytest.mark.slow
def test_several_clips_take_their_sidecars(invoke, sims_run, clips, tmp_path):
    out = tmp_path / "scores.jsonl"
    result = invoke("predict", "--run", sims_run, "--media", clips["a"], "--media", clips["b"], "--output", out)
    assert result.exit_code == 0, result.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["a", "b"] and all(math.isfinite(r["score"]) for r in scored)
    single = invoke("predict", "--run", sims_run, "--media", clips["a"])  # a.txt and a.csv beside it
    assert float(rows(single.stdout)[0]["score"]) == pytest.approx(scored[0]["score"], abs=1e-6)

    folder = tmp_path / "folder"  # a directory: its clips, not their sidecars
    folder.mkdir()
    for name in ("b.mp4", "b.txt", "b.npy", "a.mp4", "a.txt", "a.csv"):
        shutil.copy(clips["a"].parent / name, folder / name)
    listed = invoke("predict", "--run", sims_run, "--media", folder, "--output", tmp_path / "folder.jsonl")
    assert listed.exit_code == 0, listed.stderr
    assert (tmp_path / "folder.jsonl").read_text() == out.read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("words")
    nothing = invoke("predict", "--run", sims_run, "--media", empty)
    error_line(nothing.exit_code, nothing.stderr, f"--media: {empty}: a directory without clips")


@pytest.mark.slow
def test_a_clip_without_visual_features_is_one_line(invoke, sims_run, clips):
    alone = invoke("predict", "--run", sims_run, "--media", clips["c"])
    error_line(alone.exit_code, alone.stderr, f"{clips['c']}: no visual features", "--openface", "c.csv", "c.npy")
    given = invoke("predict", "--run", sims_run, "--media", clips["c"], "--openface", clips["c"].with_suffix(".csv"))
    error_line(given.exit_code, given.stderr, f"--openface: {clips['c'].with_suffix('.csv')}: no such file")
    failed = invoke("predict", "--run", sims_run, "--media", clips["a"], "--media", clips["c"], "--on-error", "fail")
    error_line(failed.exit_code, failed.stderr, f"{clips['c']}: no visual features")
    skipped = invoke("predict", "--run", sims_run, "--media", clips["a"], "--media", clips["c"])  # skip: the default
    assert skipped.exit_code == 0, skipped.stderr
    assert [r["id"] for r in rows(skipped.stdout)] == ["a"]
    assert warnings(skipped.stderr) == [f"warning: skipped {clips['c']}: no visual features, which {sims_run} reads "
                                        "(709 per frame): give --openface with OpenFace 2's CSV for the clip, or put "
                                        "c.csv (OpenFace) or c.npy beside it"]


@pytest.mark.slow
@pytest.mark.parametrize("bad, why", [("silent", "no audio track"), ("broken", "")])
def test_a_bad_clip_is_one_line_or_skipped(invoke, sims_run, clips, bad, why):
    alone = invoke("predict", "--run", sims_run, "--media", clips[bad])
    error_line(alone.exit_code, alone.stderr, f"{clips[bad]}: {why}")
    failed = invoke("predict", "--run", sims_run, "--media", clips[bad], "--media", clips["a"], "--on-error", "fail")
    error_line(failed.exit_code, failed.stderr, f"{clips[bad]}: {why}")
    skipped = invoke("predict", "--run", sims_run, "--media", clips[bad], "--media", clips["a"], "--on-error", "skip")
    assert skipped.exit_code == 0, skipped.stderr
    assert [r["id"] for r in rows(skipped.stdout)] == ["a"]
    [warning] = warnings(skipped.stderr)
    assert warning.startswith(f"warning: skipped {clips[bad]}: {why}")
    both = invoke("predict", "--run", sims_run, "--media", clips[bad], "--media", clips["c"])
    error_line(both.exit_code, both.stderr.replace(warnings(both.stderr)[0], "").replace(warnings(both.stderr)[1], ""),
               "--media: nothing to score: every clip failed (2 skipped")


@pytest.mark.slow
def test_an_export_carries_the_recipe_and_an_older_one_is_read_by_its_dataset(invoke, sims_run, clips, tmp_path):
    import dmpf_cli as dmpf

    exported = tmp_path / "exported"
    dmpf.export(sims_run, exported)
    manifest = json.loads((exported / "dmpf.json").read_text())
    assert manifest["data"]["features"] == {"recipe": "sims", "recipe_version": "1"}
    assert "`sims` feature recipe version 1" in (exported / "README.md").read_text()
    result = invoke("predict", "--run", exported, "--media", clips["a"])
    assert result.exit_code == 0, result.stderr
    direct = invoke("predict", "--run", sims_run, "--media", clips["a"])
    assert rows(result.stdout) == rows(direct.stdout)

    del manifest["data"]["features"]  # an export from before the record: sims data is CH-SIMS's recipe
    (exported / "dmpf.json").write_text(json.dumps(manifest))
    assert dmpf.from_pretrained(exported).features_recipe == "sims"


@pytest.mark.slow
def test_another_recipe_version_is_a_warning(invoke, sims_run, clips, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sims_run, run)
    record = json.loads((run / "run.json").read_text())
    record["features"]["recipe_version"] = "0"
    (run / "run.json").write_text(json.dumps(record))
    result = invoke("predict", "--run", run, "--media", clips["a"])
    assert result.exit_code == 0, result.stderr
    assert warnings(result.stderr) == [f"warning: {run} was trained on features of the sims recipe version 0, this "
                                       "dmpf's is version 1: the clips' features may differ from the ones it learned "
                                       "on, and so may its scores"]
    assert len(rows(result.stdout)) == 1
