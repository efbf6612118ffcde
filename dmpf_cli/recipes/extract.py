"""``dmpf extract``: media files → one features file per clip (:mod:`dmpf_cli.media.clipfile`), by a feature recipe
(registry kind ``extractor``).

Each clip's transcript is ``--transcript`` (one clip) or a ``.txt``/``.srt`` of the same name beside it; its visual
features an OpenFace CSV (``--openface`` for one clip, else ``STEM.csv`` beside it) or the user's own per-frame
features (``STEM.npy``), or none. A clip whose features file is already in ``--output`` is kept as it is (an
interrupted extraction resumes; ``--overwrite`` makes them again). A clip that cannot be used is one line naming it
and why: with ``on_error="skip"`` the others go on and the bad ones are listed at the end, with ``"fail"`` the first
stops the run — either way nothing half-written is left.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import registry
from ..errors import DmpfError
from ..media.audio import MediaError, MissingLibrary
from ..media.clipfile import ClipFeatures, save_clip
from ..media.extractors import Extractor
from ..media.transcripts import read_transcript
from ..progress import Progress


@dataclass
class Job:
    media: Path
    output: Path | None  # where its features file goes (None: kept in memory, ``dmpf predict --media``)
    transcript: str | None  # the text itself, or None: read the sidecar
    vision: Path | None


@dataclass
class ExtractResult:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # already extracted: left as they were
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (media, the one-line reason)


def _sidecar(media: Path, suffixes: tuple[str, ...]) -> Path | None:
    return next((media.with_suffix(s) for s in suffixes if media.with_suffix(s).is_file()), None)


def clip_jobs(media: list[Path], *, transcript: str | None, openface: Path | None,
              option: str = "MEDIA") -> list[Job]:
    """A job per clip (no output yet): ``transcript``/``openface`` go with one clip; several take the sidecars
    beside each (the transcript is read when the clip is extracted, the visual features found now). ``option``:
    how the clips were given, for the messages."""
    if not media:
        raise DmpfError(f"{option}: give at least one media file")
    if len(media) > 1 and (transcript is not None or openface is not None):
        raise DmpfError("--transcript/--openface: go with one media file; for several, put CLIP.txt (or .srt) and "
                        "CLIP.csv (OpenFace) beside each clip")
    if openface is not None and not Path(openface).is_file():  # before any clip is decoded
        raise DmpfError(f"--openface: {openface}: {'not a file' if Path(openface).exists() else 'no such file'}; "
                        "expected the clip's OpenFace 2 CSV (or its own per-frame features, .npy)")
    return [Job(path, None, transcript, openface if openface is not None else _sidecar(path, (".csv", ".npy")))
            for path in media]


def plan(media: list[Path], output: Path, *, transcript: str | None, openface: Path | None,
         overwrite: bool) -> tuple[list[Job], list[Path]]:
    """The clips to extract and the ones already done (their features file exists and ``overwrite`` is off)."""
    clips = clip_jobs(media, transcript=transcript, openface=openface)
    stems = {}
    for path in media:
        if path.stem in stems:
            raise DmpfError(f"MEDIA: {path} and {stems[path.stem]} would both write {output / (path.stem + '.npz')}")
        stems[path.stem] = path
    jobs, kept = [], []
    for job in clips:
        target = output / f"{job.media.stem}.npz"
        if target.is_file() and not overwrite:
            kept.append(target)
            continue
        job.output = target
        jobs.append(job)
    return jobs, kept


def clip_features(job: Job, extractor: Extractor) -> ClipFeatures:
    """One clip's features by ``extractor``, its transcript the job's or its sidecar's; a :class:`MediaError`
    names the clip."""
    text = job.transcript
    if text is None:
        side = _sidecar(job.media, (".txt", ".srt"))
        if side is None:
            raise MediaError(f"{job.media}: no transcript: give --transcript, or put {job.media.stem}.txt (or .srt) "
                             "beside it")
        text = read_transcript(side)
    return extractor.extract(job.media, text=text, vision=job.vision)


def run_job(job: Job, recipe: str) -> Path:
    """Extract one clip to its features file; a :class:`MediaError` names the clip."""
    save_clip(job.output, clip_features(job, registry.get("extractor", recipe).factory()))
    return job.output


def _worker(job: Job, recipe: str) -> tuple[Path, str | None]:
    try:
        return run_job(job, recipe), None
    except MissingLibrary:
        raise  # not the clip's fault: it stops the run
    except DmpfError as exc:
        return job.media, str(exc)


def _one_thread() -> None:
    """A worker's thread pools at one thread: torch's, and the BLAS pools numpy and scipy loaded before the fork
    (OMP_NUM_THREADS only reaches the libraries loaded after it is set)."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits  # librosa's scikit-learn brings it
    except ImportError:
        return
    threadpool_limits(1)


def extract(media: list[Path], *, recipe: str, output: Path, transcript: str | None = None,
            openface: Path | None = None, on_error: str = "fail", overwrite: bool = False, jobs: int = 1,
            console=None) -> ExtractResult:
    """``dmpf extract``: see the module's docstring. ``jobs``: processes extracting at once (one thread each)."""
    if on_error not in ("skip", "fail"):
        raise DmpfError(f"--on-error: expected skip or fail, got '{on_error}'")
    if jobs < 1:
        raise DmpfError(f"--jobs: expected a positive integer, got {jobs}")
    registry.get("extractor", recipe)  # an unknown recipe is one line, before any work
    output = Path(output).expanduser()
    if output.exists() and not output.is_dir():
        raise DmpfError(f"--output: {output} is a file; expected a directory for the features files")
    todo, kept = plan([Path(m).expanduser() for m in media], output, transcript=transcript, openface=openface,
                      overwrite=overwrite)
    result = ExtractResult(kept=kept)
    output.mkdir(parents=True, exist_ok=True)
    with Progress(console) as bar:
        result.written, result.failed = run_jobs(todo, recipe, on_error=on_error, jobs=jobs, bar=bar)
    return result


def run_jobs(todo: list[Job], recipe: str, *, on_error: str, jobs: int, bar: Progress) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Extract ``todo`` with ``recipe`` over ``jobs`` processes (one thread each), counted on ``bar``; returns the
    features files written and the clips that failed with why. With ``on_error="fail"`` the first failure is raised
    (a :class:`MediaError`) once the clips being extracted have finished."""
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    task = bar.add_task(f"extracting ({recipe})", total=len(todo), unit="clips")
    if jobs == 1 or len(todo) <= 1:
        outcomes = (_worker(job, recipe) for job in todo)
        pool = None
    else:
        # The first clip is extracted here, before the workers are forked: numba compiles librosa's kernels once,
        # in this process, and the workers inherit them compiled. Several processes compiling them at once on a
        # fresh install race on numba's on-disk cache and can leave one's index beside another's code, which
        # crashes every later extraction with a segmentation fault.
        first = _worker(todo[0], recipe)
        pool = ProcessPoolExecutor(max_workers=jobs, initializer=_one_thread)
        outcomes = itertools.chain([first], pool.map(_worker, todo[1:], [recipe] * (len(todo) - 1)))
    try:
        for path, error in outcomes:
            bar.advance(task, 1)
            if error is None:
                written.append(path)
                continue
            if on_error == "fail":
                raise MediaError(error)
            failed.append((path, error))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return written, failed
