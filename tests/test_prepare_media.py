"""``dmpf prepare --media``: a folder of real clips in MMSA-FET's layout (espeak-ng speech muxed into mp4 with a
generated video track, OpenFace CSVs beside them, label.csv) → a prepared dataset; resuming, bad clips, several
processes, and the dataset trained on."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from media_clips import SENTENCES, mux, openface_csv, speak

from conftest import error_line

pytest.importorskip("librosa")
pytest.importorskip("av")
pytestmark = pytest.mark.slow  # espeak-ng, PyAV and librosa (numba compiles on first use)

# (video_id, clip_id, mode, label, OpenFace frames): 8 train, 2 valid, 2 test, three videos; one clip's face track so
# long that mean + 3·std of the lengths cuts it (which takes at least 11 clips)
CLIPS = [("video_0001", "0001", "train", 0.8, 30), ("video_0001", "0002", "train", -0.6, 45),
         ("video_0001", "0003", "valid", 0.0, 20), ("video_0002", "0001", "train", 0.4, 60),
         ("video_0002", "0002", "train", -1.0, 25), ("video_0002", "0003", "valid", 0.2, 35),
         ("video_0002", "0004", "test", -0.2, 40), ("video_0002", "0005", "test", 1.0, 300),
         *(("video_0003", f"000{i}", "train", 0.1 * i, 24 + 2 * i) for i in range(1, 5))]


def write_labels(root, rows, unimodal=False):
    columns = ["video_id", "clip_id", "text", "label", *(["label_T", "label_A", "label_V"] if unimodal else []),
               "annotation", "mode"]
    with open(root / "label.csv", "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(columns)
        for video, clip, mode, label, _ in rows:
            out.writerow([video, clip, SENTENCES[int(clip) % 3], label,
                          *([label, -label, label / 2] if unimodal else []), "Positive", mode])


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """The three sentences spoken once (WAV)."""
    folder = tmp_path_factory.mktemp("speech")
    return [speak(text, folder / f"{i}.wav") for i, text in enumerate(SENTENCES)]


@pytest.fixture
def folder(tmp_path, speech):
    """MMSA-FET's layout: label.csv and Raw/VIDEO_ID/CLIP_ID.mp4 with CLIP_ID.csv (OpenFace) beside each clip."""
    root = tmp_path / "clips"
    for video, clip, _, _, frames in CLIPS:
        (root / "Raw" / video).mkdir(parents=True, exist_ok=True)
        mux(root / "Raw" / video / f"{clip}.mp4", speech[int(clip) % 3])
        openface_csv(root / "Raw" / video / f"{clip}.csv", frames=frames)
    write_labels(root, CLIPS, unimodal=True)
    return root


def prepare(invoke, *args):
    return invoke("prepare", "--media", *args)


def test_a_folder_of_clips_becomes_a_prepared_dataset(invoke, folder, tmp_path):
    from dmpf_cli.data.prepared import open_prepared
    from dmpf_cli.media.clipfile import load_clip
    from dmpf_cli.recipes.extract import Job, run_job

    out = tmp_path / "data"
    result = prepare(invoke, folder, "--output", out, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["extracted"] == len(CLIPS) and report["reused"] == 0 and report["skipped"] == []
    data = open_prepared(out)
    manifest = data.manifest
    assert manifest["dataset"] == "sims" and manifest["features"] == {"recipe": "sims", "recipe_version": "1"}
    assert manifest["dims"] == {"audio": 33, "vision": 709} and manifest["unimodal_labels"] is True
    assert {name: s["samples"] for name, s in manifest["splits"].items()} == {"train": 8, "valid": 2, "test": 2}
    # padded to mean + 3·std of the clips' lengths (population std), rounded up; the 300-frame clip is cut there
    vision_frames = np.array([c[4] for c in CLIPS])
    want = int(np.ceil(vision_frames.mean() + 3 * vision_frames.std()))
    assert manifest["padded_length"]["vision"] == want < 300
    assert manifest["media"]["lengths"]["vision"]["clips_cut"] == 1
    train = data.split("train")
    assert train.ids[:5] == ["video_0001$_$0001", "video_0001$_$0002", "video_0002$_$0001", "video_0002$_$0002",
                             "video_0003$_$0001"]
    assert train.raw_text[0] == SENTENCES[1] and train.labels[:4].tolist() == pytest.approx([0.8, -0.6, 0.4, -1.0])
    assert train.unimodal["A"][:4].tolist() == pytest.approx([-0.8, 0.6, -0.4, 1.0])
    # each sample's frames are exactly what `dmpf extract` computes for the clip, zero-padded
    first = load_clip(out / "clips" / "video_0001" / "0002.npz")
    alone = tmp_path / "alone.npz"
    run_job(Job(folder / "Raw" / "video_0001" / "0002.mp4", alone, "text", folder / "Raw" / "video_0001" / "0002.csv"),
            "sims")
    np.testing.assert_array_equal(load_clip(alone).audio, first.audio)
    n = len(first.audio)
    assert train.audio_lengths[1] == min(n, manifest["padded_length"]["audio"])
    np.testing.assert_array_equal(train.audio[1, : train.audio_lengths[1]], first.audio[: train.audio_lengths[1]])
    assert not train.audio[1, train.audio_lengths[1]:].any()
    np.testing.assert_array_equal(train.vision[1, :45], first.vision)
    test = data.split("test")
    assert test.vision_lengths.tolist() == [40, want]
    assert not (tmp_path / ".data.clips").exists()  # the cache moved into the dataset

    # the same again: nothing to do; a clip changed since: only it is extracted again
    again = json.loads(prepare(invoke, folder, "--output", out, "--format", "json").stdout)
    assert again["up_to_date"] and again["manifest"]["created"] == manifest["created"]
    openface_csv(folder / "Raw" / "video_0001" / "0002.csv", frames=44)
    again = json.loads(prepare(invoke, folder, "--output", out, "--format", "json").stdout)
    assert not again["up_to_date"] and (again["extracted"], again["reused"]) == (1, len(CLIPS) - 1)
    assert open_prepared(out).split("train").vision_lengths[1] == 44


def test_an_interrupted_preparation_resumes_and_a_bad_clip_is_one_line(invoke, folder, tmp_path):
    out = tmp_path / "data"
    # a truncated clip, a clip without an audio track, and a clip whose face was never found
    raw = folder / "Raw" / "video_0002"
    (raw / "0001.mp4").write_bytes((raw / "0001.mp4").read_bytes()[:300])
    mux(raw / "0002.mp4", None, seconds=1.0)
    openface_csv(raw / "0004.csv", frames=10, faces=False)
    result = prepare(invoke, folder, "--output", out)
    error_line(result.exit_code, result.stderr, str(raw / "0001.mp4"))
    assert not out.exists()
    # the clips extracted before the failure are kept in the cache beside the output
    cache = tmp_path / ".data.clips"
    kept = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*.npz"))
    assert kept and all(p.startswith("video_0001/") for p in kept)

    result = prepare(invoke, folder, "--output", out, "--on-error", "skip", "--format", "json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["reused"] == len(kept)
    why = {e["clip"].split("Raw/")[-1]: e["error"] for e in report["skipped"]}
    assert set(why) == {"video_0002/0001.mp4", "video_0002/0002.mp4", "video_0002/0004.mp4"}
    assert "no audio track" in why["video_0002/0002.mp4"]
    assert "no face was detected" in why["video_0002/0004.mp4"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] == 6 and len(manifest["media"]["skipped"]) == 3

    # preparing again (the same folder, no --overwrite needed) extracts nothing
    result = prepare(invoke, folder, "--output", out, "--on-error", "skip", "--format", "json")
    assert json.loads(result.stdout)["extracted"] == 0


def test_several_processes_extract_the_same_dataset(invoke, folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert prepare(invoke, folder, "--output", one).exit_code == 0
    assert prepare(invoke, folder, "--output", two, "--jobs", "2").exit_code == 0
    for name in ("audio", "vision"):
        for split in ("train", "valid", "test"):
            np.testing.assert_array_equal(np.load(one / split / f"{name}.npy"), np.load(two / split / f"{name}.npy"))


@pytest.mark.parametrize("problem, expect", [
    (lambda root: (root / "label.csv").unlink(), "no label.csv"),
    (lambda root: write_labels(root, [*CLIPS[:-1], ("video_0002", "0005", "test", 1.5, 9)]), "outside the label range"),
    (lambda root: write_labels(root, [*CLIPS[:-1], ("video_0002", "0005", "dev", 0.5, 9)]), "mode 'dev'"),
    (lambda root: write_labels(root, [*CLIPS[:-1], ("..", "0005", "test", 0.5, 9)]), "not a plain file name"),
    (lambda root: write_labels(root, [*CLIPS, CLIPS[0]]), "listed twice"),
    (lambda root: write_labels(root, [c for c in CLIPS if c[2] != "valid"]), "no clips with mode valid"),
    (lambda root: (root / "Raw" / "video_0002" / "0005.csv").unlink(), "no visual features"),
    (lambda root: (root / "Raw" / "video_0002" / "0005.mp4").unlink(), "no media file"),
    (lambda root: (root / "Raw" / "video_0002" / "0005.mp4").write_bytes(b""), "0005.mp4: not a readable media file"),
    (lambda root: openface_csv(root / "Raw" / "video_0002" / "0005.csv", 5, columns=("gaze_0_x",)), "OpenFace columns"),
])
def test_bad_folders_are_one_line_and_nothing_is_written(invoke, folder, tmp_path, problem, expect):
    problem(folder)
    out = tmp_path / "data"
    result = prepare(invoke, folder, "--output", out)
    error_line(result.exit_code, result.stderr, expect)
    assert not out.exists()


def test_options_that_go_with_media_only_and_datasets_clips_cannot_make(invoke, folder, tmp_path):
    result = invoke("prepare", "--dataset", "synthetic", "--jobs", "2", "--output", tmp_path / "x")
    error_line(result.exit_code, result.stderr, "--jobs: goes with --media")
    result = prepare(invoke, folder, "--dataset", "mosei", "--output", tmp_path / "x")
    error_line(result.exit_code, result.stderr, "cannot be computed from clips")
    other = tmp_path / "other"
    assert invoke("prepare", "--dataset", "synthetic", "--size", "tiny", "--output", other).exit_code == 0
    result = prepare(invoke, folder, "--output", other)
    error_line(result.exit_code, result.stderr, "--overwrite")


def test_a_killed_extraction_resumes_where_it_stopped(folder, tmp_path):
    """SIGKILL in the middle of the extraction: the clips finished are kept, nothing looks like a dataset, and the
    next run extracts only the rest."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import env, progress_lines

    out, cache = tmp_path / "data", tmp_path / ".data.clips"
    process = subprocess.Popen([sys.executable, "-m", "dmpf_cli", "prepare", "--media", str(folder), "--output",
                                str(out)], env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("*.npz"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(cache.rglob("*.npz")))
    assert 3 <= finished < len(CLIPS) and not out.exists()

    again = subprocess.run([sys.executable, "-m", "dmpf_cli", "prepare", "--media", str(folder), "--output", str(out),
                            "--format", "json"], env={**env(), "DMPF_PROGRESS_INTERVAL": "0"}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    report = json.loads(again.stdout)
    assert report["reused"] == finished and report["extracted"] == len(CLIPS) - finished
    assert progress_lines(again.stderr, "extracting (sims)")  # progress on stderr, the JSON alone on stdout
    assert not cache.exists() and len(list((out / "clips").rglob("*"))) == len(CLIPS) + 3  # 3 video folders


# the sims preset cut down to seconds: the tiny random backbone (4 blocks), small encoders, batches of 4
TINY_SIMS = ["backbone.name=gpt2-tiny-random", "mm.layers=[1, 3]", "data.text_len=24", "head.d=16",
             *(f"encoders.{e}.{k}" for e in ("audio", "vision") for k in ("d=16", "layers=1", "max_len=8")),
             "encoders.audio_visual.d=12", "encoders.audio_visual.layers=1", "encoders.audio_visual.max_len=8",
             "training.batch_size=4", "training.grad_accum=1", "training.max_epochs=2", "training.seeds=[1]"]


def test_the_prepared_clips_train_with_the_sims_preset_and_the_run_scores_a_new_clip(invoke, folder, tmp_path):
    """extract → prepare --media → train → predict --media, on real clips: the whole path a researcher takes."""
    out = tmp_path / "data"
    assert prepare(invoke, folder, "--output", out).exit_code == 0
    result = invoke("train", "--config", "sims", f"data.path={out}", "--output", tmp_path / "run", *TINY_SIMS)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["dims"] == [33, 709] and record["data"] == str(out)
    test = json.loads((tmp_path / "run" / "results.json").read_text())["test"]
    assert set(test) >= {"MAE", "Corr", "Mult_acc_2", "Mult_acc_3"} and np.isfinite(test["MAE"])  # CH-SIMS's metrics
    assert record["features"] == {"recipe": "sims", "recipe_version": "1"}

    # a clip of the dataset scored from its media equals its sample scored from the prepared data
    clip = folder / "Raw" / "video_0001" / "0001.mp4"  # its OpenFace CSV beside it
    result = invoke("predict", "--run", tmp_path / "run", "--media", clip, "--transcript", SENTENCES[1])
    assert result.exit_code == 0, result.output
    media_rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [row["id"] for row in media_rows] == ["0001"] and np.isfinite(float(media_rows[0]["score"]))
    result = invoke("predict", "--run", tmp_path / "run", "--input", out)
    prepared_rows = {row["id"]: row for row in csv.DictReader(result.stdout.splitlines())}
    assert float(media_rows[0]["score"]) == pytest.approx(float(prepared_rows["train/video_0001$_$0001"]["score"]), abs=1e-5)
