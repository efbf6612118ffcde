"""Benchmark: how fast `dmpf extract` turns clips into features (clips/s, real-time factor, where the time goes).

    .venv/bin/python benchmarks/extract_throughput.py                        # 8 clips of 30 s, sims and opensmile, --jobs 1 and 2
    .venv/bin/python benchmarks/extract_throughput.py --clips 1 --seconds 2 --jobs 1 --short-seconds 0 --json
                                                                             # a quick check of the script itself

The clips are real speech: espeak-ng speaking a paragraph (different sentences in each clip), cut to ``--seconds``,
resampled to ``--rate`` Hz (48 kHz, as camera and film audio is: the recipes resample it) and muxed as AAC into an
mp4 under a generated 30 fps video track, with the paragraph in CLIP.txt and an OpenFace CSV of 30 frames a second
(the 709 CH-SIMS columns and the leading ones) in CLIP.csv beside it — so the vision path is measured too. They are
made before any timing (benchmarks/media_fixtures.py, which the tests use as well).

What is timed is ``dmpf_cli.recipes.extract.extract`` — the function ``dmpf extract`` runs — over all the clips, for
each recipe and ``--jobs`` value, after a warm-up: one clip extracted first in this process, which pays the one-off
costs (imports, numba compiling librosa's kernels or loading them from its cache) and is reported on its own line.
The worker processes of ``--jobs N`` are forked from this warmed-up process, as they are from a long-running
``dmpf extract`` after its first clips. Reported per configuration:

* clips/s, and audio seconds per wall second (``x real time``);
* the real-time factor RTF = wall time / audio duration (lower is faster: 0.03 means 30 s of audio in 0.9 s);
* CPU seconds per clip, of this process and the workers (it holds when other work shares the machine, where wall
  time does not), and whether the features are bit-identical to those of the first ``--jobs`` value;
* the projected wall time of 2,000 clips of ``--seconds`` and of ``--short-seconds`` (a second, measured set of
  short clips, CH-SIMS-like; 0 skips it).

A separate single-process pass times the stages of one clip (decode, resample, audio features, OpenFace CSV, writing
the features file) with the library's own functions, so the split is what the extraction spends its time on.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from media_fixtures import speech_clip  # noqa: E402

DATASET = 2000  # the size the projection is for


def make_clips(folder: Path, count: int, seconds: float, rate: int, offset: int = 0) -> list[Path]:
    """The clips, made here; ones a kept ``--workdir`` already holds (same length and rate) are reused."""
    folder = folder / f"{seconds:g}s-{rate}Hz"
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(count):
        name = f"clip{offset + i:04d}"
        if not all((folder / f"{name}{suffix}").is_file() for suffix in (".mp4", ".txt", ".csv")):
            speech_clip(folder, name, seconds=seconds, index=offset + i, rate=rate)
        made.append(folder / f"{name}.mp4")
    return made


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the pool's workers, once it shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_extract(media: list[Path], recipe: str, jobs: int, output: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one ``extract`` of ``media`` into a fresh ``output``."""
    from dmpf_cli.recipes.extract import extract

    shutil.rmtree(output, ignore_errors=True)
    cpu, start = cpu_seconds(), time.perf_counter()
    result = extract(media, recipe=recipe, output=output, jobs=jobs, overwrite=True)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if len(result.written) != len(media):
        sys.exit(f"extract wrote {len(result.written)} of {len(media)} clips: {result.failed}")
    return wall, cpu


def same_features(one: Path, other: Path) -> bool:
    """Whether two extractions of the same clips wrote bit-identical arrays."""
    from dmpf_cli.media.clipfile import load_clip

    for path in sorted(one.glob("*.npz")):
        a, b = load_clip(path), load_clip(other / path.name)
        for key in ("audio", "vision"):
            x, y = getattr(a, key), getattr(b, key)
            if (x is None) != (y is None) or (x is not None and x.tobytes() != y.tobytes()):
                return False
    return True


def stages(media: list[Path], recipe: str, output: Path) -> dict[str, float]:
    """Mean seconds per clip of each stage of the recipe, in this process, with the library's own functions."""
    from dmpf_cli import registry
    from dmpf_cli.media.audio import decode_audio
    from dmpf_cli.media.clipfile import ClipFeatures, save_clip
    from dmpf_cli.media.features import OPENSMILE_RATE, SIMS_RATE, opensmile_audio, sims_audio

    rate, features = {"sims": (SIMS_RATE, sims_audio), "opensmile": (OPENSMILE_RATE, opensmile_audio)}[recipe]
    extractor = registry.get("extractor", recipe).factory()
    totals = dict.fromkeys(("decode", "resample", "audio features", "OpenFace CSV", "write"), 0.0)
    output.mkdir(parents=True, exist_ok=True)
    for path in media:
        t0 = time.perf_counter()
        y, sr = decode_audio(path)
        t1 = time.perf_counter()
        if sr != rate:
            import librosa

            y = librosa.resample(y, orig_sr=sr, target_sr=rate).astype("float32", copy=False)
        t2 = time.perf_counter()
        audio = features(y, rate)
        t3 = time.perf_counter()
        vision = extractor.vision(path.with_suffix(".csv"))
        t4 = time.perf_counter()
        save_clip(output / f"{path.stem}.npz", ClipFeatures("text", audio, vision, recipe, "1", path.name))
        t5 = time.perf_counter()
        for key, (a, b) in zip(totals, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5)]):
            totals[key] += b - a
    return {key: value / len(media) for key, value in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8, help="clips per measured set (default 8)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each clip in seconds (default 30)")
    parser.add_argument("--short-seconds", type=float, default=4.0,
                        help="length of the clips of a second, short set (CH-SIMS-like; default 4, 0: none)")
    parser.add_argument("--rate", type=int, default=48000, help="the clips' audio sampling rate (default 48000)")
    parser.add_argument("--recipes", default="sims,opensmile", help="comma-separated (default sims,opensmile)")
    parser.add_argument("--jobs", default="1,2", help="--jobs values to measure, comma-separated (default 1,2)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per configuration; the median is kept")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write (default: a temporary dir)")
    parser.add_argument("--cold", action="store_true",
                        help="warm up as on a fresh install: numba's cache in an empty temporary directory, so "
                             "librosa's kernels are compiled rather than loaded")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object instead")
    args = parser.parse_args()
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    jobs_values = [int(j) for j in args.jobs.split(",")]

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dmpf-extract-bench-"))
    if args.cold:
        if "numba" in sys.modules:
            sys.exit("--cold: numba is already imported")
        os.environ["NUMBA_CACHE_DIR"] = str(work / "numba-cache")
    try:
        start = time.perf_counter()
        warm = make_clips(work / "warmup", 1, min(args.seconds, 5.0), args.rate, offset=9000)
        sets = {args.seconds: make_clips(work / "long", args.clips, args.seconds, args.rate)}
        if args.short_seconds > 0:
            sets[args.short_seconds] = make_clips(work / "short", args.clips, args.short_seconds, args.rate,
                                                  offset=args.clips)
        made = time.perf_counter() - start

        t0 = time.perf_counter()
        import dmpf_cli.recipes.extract  # noqa: F401  (the import is part of the first use)

        warmup = {"import dmpf_cli.recipes.extract": time.perf_counter() - t0}
        for recipe in recipes:
            warmup[recipe] = timed_extract(warm, recipe, 1, work / "out" / "warmup")[0]

        rows = []
        for seconds, media in sets.items():
            for recipe in recipes:
                for jobs in jobs_values:
                    out = work / "out" / f"{recipe}-{seconds:g}s-jobs{jobs}"
                    runs = [timed_extract(media, recipe, jobs, out) for _ in range(args.repeats)]
                    wall = statistics.median(w for w, _ in runs)
                    cpu = statistics.median(c for _, c in runs)
                    audio = seconds * len(media)
                    first = work / "out" / f"{recipe}-{seconds:g}s-jobs{jobs_values[0]}"
                    rows.append({"recipe": recipe, "jobs": jobs, "clip_seconds": seconds, "clips": len(media),
                                 "wall_s": wall, "walls_s": [w for w, _ in runs], "cpu_s": cpu,
                                 "cpu_s_per_clip": cpu / len(media), "clips_per_s": len(media) / wall,
                                 "audio_s_per_wall_s": audio / wall, "rtf": wall / audio,
                                 "projected_2000_clips_h": DATASET * wall / len(media) / 3600,
                                 f"same_as_jobs_{jobs_values[0]}": same_features(first, out)})
        split = {recipe: stages(sets[args.seconds], recipe, work / "out" / f"stages-{recipe}") for recipe in recipes}
        load = os.getloadavg()
        report = {"clips": args.clips, "clip_seconds": args.seconds, "short_clip_seconds": args.short_seconds,
                  "rate": args.rate, "media_made_s": made, "cold": args.cold, "warmup_s": warmup, "rows": rows,
                  "stages_s_per_clip": split, "rtf_definition": "wall time / audio duration",
                  "cpus": os.cpu_count(), "loadavg_1_5_15_after": load, "python": sys.version.split()[0]}
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.clips} clips per set, audio at {args.rate} Hz; media made in {made:.1f} s (not timed)")
    print(f"warm-up ({'numba cache empty' if args.cold else 'numba cache as found'}; first use in this process, "
          "not in the rows): "
          + ", ".join(f"{name} {value:.1f} s" for name, value in warmup.items()))
    same = f"same_as_jobs_{jobs_values[0]}"
    print(f"\n{'recipe':<10} {'jobs':>4} {'clip s':>6} {'wall s':>7} {'clips/s':>8} {'x real time':>11} {'RTF':>7} "
          f"{'CPU s/clip':>10} {'2,000 clips':>11}  identical to --jobs {jobs_values[0]}")
    for r in rows:
        print(f"{r['recipe']:<10} {r['jobs']:>4} {r['clip_seconds']:>6g} {r['wall_s']:>7.2f} {r['clips_per_s']:>8.2f} "
              f"{r['audio_s_per_wall_s']:>11.1f} {r['rtf']:>7.4f} {r['cpu_s_per_clip']:>10.3f} "
              f"{r['projected_2000_clips_h'] * 60:>7.1f} min  {'yes' if r[same] else 'NO'}")
    print("RTF = wall time / audio duration (lower is faster); 2,000 clips: projected from clips/s; "
          f"load average after: {' '.join(f'{x:.1f}' for x in load)} on {os.cpu_count()} CPUs")
    print(f"\nmean seconds per {args.seconds:g}-s clip by stage (one process, the library's functions):")
    names = list(next(iter(split.values())))
    print(f"{'recipe':<10} " + " ".join(f"{n:>14}" for n in names) + f" {'total':>8}")
    for recipe, parts in split.items():
        print(f"{recipe:<10} " + " ".join(f"{parts[n]:>14.3f}" for n in names) + f" {sum(parts.values()):>8.3f}")


if __name__ == "__main__":
    main()
