"""``dmpf extract`` on real media made here: espeak-ng speech muxed into mp4 with a generated video track, OpenFace
CSVs and transcripts beside the clips; resuming, skipping bad clips, several processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from media_clips import SENTENCES, mux, openface_csv, speak

from conftest import error_line

pytest.importorskip("librosa")
pytest.importorskip("av")
pytestmark = pytest.mark.slow  # espeak-ng, PyAV and librosa (numba compiles on first use)


@pytest.fixture
def clips(tmp_path):
    """Three mp4 clips: a.mp4 with a.txt and an OpenFace a.csv beside it, b.mp4 with b.srt, c.mp4 with nothing."""
    made = {}
    for name, text in zip("abc", SENTENCES):
        made[name] = mux(tmp_path / f"{name}.mp4", speak(text, tmp_path / f"{name}.wav"))
    (tmp_path / "a.txt").write_text(SENTENCES[0])
    (tmp_path / "b.srt").write_text(f"1\n00:00:00,000 --> 00:00:02,000\n{SENTENCES[1]}\n")
    made["a_vision"] = openface_csv(tmp_path / "a.csv", frames=40)
    return made


def test_extract_writes_one_features_file_per_clip(clips, tmp_path, invoke):
    from dmpf_cli.media.audio import load_audio
    from dmpf_cli.media.clipfile import load_clip
    from dmpf_cli.media.features import sims_audio

    out = tmp_path / "features"
    result = invoke("extract", clips["a"], clips["b"], clips["c"], "--output", out, "--on-error", "skip")
    assert result.exit_code == 1  # one clip skipped
    assert "2 clip(s) extracted" in result.stderr
    assert f"skipped {clips['c']}: no transcript: give --transcript, or put c.txt (or .srt) beside it" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.npz", "b.npz"]
    a, b = load_clip(out / "a.npz"), load_clip(out / "b.npz")
    assert (a.text, a.recipe, a.recipe_version, a.source) == (SENTENCES[0], "sims", "1", "a.mp4")
    assert np.array_equal(a.audio, sims_audio(load_audio(clips["a"], 22050))) and a.audio.shape[1] == 33
    assert np.array_equal(a.vision, clips["a_vision"]) and a.vision.shape == (40, 709)
    assert b.text == SENTENCES[1] and b.vision is None

    # again: the finished clips are kept as they are; --overwrite makes them again
    stamp = (out / "a.npz").stat().st_mtime_ns
    again = invoke("extract", clips["a"], clips["b"], "--output", out, "--format", "json")
    assert again.exit_code == 0 and json.loads(again.stdout)["kept"] == [str(out / "a.npz"), str(out / "b.npz")]
    assert (out / "a.npz").stat().st_mtime_ns == stamp
    assert invoke("extract", clips["a"], "--output", out, "--overwrite").exit_code == 0
    assert (out / "a.npz").stat().st_mtime_ns != stamp


def test_several_processes_extract_the_same_features(clips, tmp_path, invoke):
    from dmpf_cli.media.clipfile import load_clip

    (tmp_path / "c.txt").write_text(SENTENCES[2])
    media = [clips[k] for k in "abc"]
    assert invoke("extract", *media, "--output", tmp_path / "one").exit_code == 0
    assert invoke("extract", *media, "--output", tmp_path / "two", "--jobs", "2").exit_code == 0
    for k in "abc":
        one, two = load_clip(tmp_path / "one" / f"{k}.npz"), load_clip(tmp_path / "two" / f"{k}.npz")
        assert np.array_equal(one.audio, two.audio) and one.text == two.text


def test_on_a_fresh_install_the_first_clip_compiles_in_this_process_before_the_workers_fork(clips, tmp_path):
    """Workers compiling librosa's numba kernels at once race on numba's on-disk cache and can leave it corrupt, and
    every later extraction then dies with a segmentation fault (seen here on a fresh clone: 2 of 6 cold `--jobs 2`
    runs). So the first clip is extracted by the parent, which the workers are forked from with the kernels
    compiled. Each run below starts from an empty numba cache; the second run reads what the first one wrote."""
    import subprocess
    import sys

    from conftest import env

    (tmp_path / "c.txt").write_text(SENTENCES[2])
    media = [str(clips[k]) for k in "abc"]
    for attempt in range(2):
        cache = {**env(), "NUMBA_CACHE_DIR": str(tmp_path / f"numba-{attempt}")}
        for jobs in ("2", "1"):
            run = subprocess.run([sys.executable, "-m", "dmpf_cli", "extract", *media, "--output",
                                  str(tmp_path / f"out-{attempt}-{jobs}"), "--jobs", jobs], env=cache,
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, (attempt, jobs, run.returncode, run.stderr[-2000:])


def _recording_worker(job, recipe):
    """The extraction worker, writing which process extracted each clip into $PID_DIR (module level: the pool pickles
    it by name, and the forked workers find it)."""
    import os

    from dmpf_cli.recipes import extract as module

    (Path(os.environ["PID_DIR"]) / job.media.stem).write_text(str(os.getpid()))
    return module._plain_worker(job, recipe)


def test_the_first_clip_of_several_processes_is_extracted_by_the_parent(clips, tmp_path, monkeypatch):
    import os

    from dmpf_cli.progress import Progress
    from dmpf_cli.recipes import extract as module

    (tmp_path / "c.txt").write_text(SENTENCES[2])
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv("PID_DIR", str(pids))
    monkeypatch.setattr(module, "_plain_worker", module._worker, raising=False)
    monkeypatch.setattr(module, "_worker", _recording_worker)  # the forked workers inherit it
    todo, _ = module.plan([clips[k] for k in "abc"], tmp_path / "out", transcript=None, openface=None,
                          overwrite=False)
    written, failed = module.run_jobs(todo, "sims", on_error="fail", jobs=2, bar=Progress(None))
    assert len(written) == 3 and not failed
    assert (pids / "a").read_text() == str(os.getpid())
    assert {(pids / k).read_text() for k in "bc"}.isdisjoint({str(os.getpid())})


def test_extract_refuses_in_one_line(clips, tmp_path, invoke):
    out = tmp_path / "features"
    failed = invoke("extract", clips["a"], clips["c"], "--output", out)  # --on-error fail: the default
    error_line(failed.exit_code, failed.stderr, f"{clips['c']}: no transcript")
    assert [p.name for p in out.iterdir()] == ["a.npz"]  # the finished clip stays; nothing half-written
    (tmp_path / "broken.mp4").write_bytes(clips["a"].read_bytes()[:2000])
    broken = invoke("extract", tmp_path / "broken.mp4", "--output", out, "--transcript", "x")
    error_line(broken.exit_code, broken.stderr, str(tmp_path / "broken.mp4"))
    unknown = invoke("extract", clips["a"], "--output", out, "--recipe", "simz")
    error_line(unknown.exit_code, unknown.stderr, "simz", "sims")
    missing = invoke("extract", clips["a"], "--output", out, "--overwrite", "--openface", tmp_path / "nope.csv")
    error_line(missing.exit_code, missing.stderr, f"--openface: {tmp_path / 'nope.csv'}: no such file")
    two = invoke("extract", clips["a"], clips["b"], "--output", out, "--transcript", "x")
    error_line(two.exit_code, two.stderr, "--transcript/--openface: go with one media file")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_missing_library_stops_the_extraction_in_one_line(clips, tmp_path, invoke, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "opensmile", None)  # `import opensmile` now raises ImportError
    for on_error in ("skip", "fail"):
        result = invoke("extract", clips["a"], clips["b"], "--output", tmp_path / "out", "--recipe", "opensmile",
                        "--on-error", on_error)
        error_line(result.exit_code, result.stderr, "opensmile is not installed", "pip install 'dmpf[opensmile]'")
    assert not list((tmp_path / "out").glob("*.npz"))
