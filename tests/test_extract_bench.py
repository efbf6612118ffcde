"""benchmarks/extract_throughput.py runs end to end on one short clip and reports what docs/speed.md quotes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("librosa")
pytest.importorskip("av")
pytestmark = pytest.mark.slow  # espeak-ng, PyAV and librosa in a subprocess

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "extract_throughput.py"


def test_the_extraction_benchmark_runs_on_one_short_clip(tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (.ci/run installs it with apt-get)")
    done = subprocess.run([sys.executable, str(SCRIPT), "--clips", "1", "--seconds", "2", "--short-seconds", "0",
                           "--jobs", "1", "--recipes", "sims", "--workdir", str(tmp_path), "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert {"warmup_s", "rows", "stages_s_per_clip", "rtf_definition", "media_made_s"} <= set(report)
    (row,) = report["rows"]
    assert (row["recipe"], row["jobs"], row["clips"], row["clip_seconds"]) == ("sims", 1, 1, 2.0)
    for key in ("clips_per_s", "audio_s_per_wall_s", "rtf", "cpu_s_per_clip", "projected_2000_clips_h"):
        assert row[key] > 0, key
    assert row["rtf"] == pytest.approx(row["wall_s"] / 2.0) and row["same_as_jobs_1"]
    assert set(report["stages_s_per_clip"]["sims"]) == {"decode", "resample", "audio features", "OpenFace CSV", "write"}
    # the clips the benchmark made are what dmpf extract finds: media, transcript and OpenFace CSV side by side
    assert sorted(p.suffix for p in (tmp_path / "long" / "2s-48000Hz").iterdir()) == [".csv", ".mp4", ".txt"]
