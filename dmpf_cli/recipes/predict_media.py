"""``dmpf predict --media``: new clips scored by a trained model, their features extracted with the recipe its
training data was made with (:mod:`dmpf_cli.recipes.feature_recipe`) and scored as ``dmpf predict`` scores
samples (one row per clip: id — the clip's file stem —, score, the dataset's label bins).

Each clip's transcript and visual features are found as ``dmpf extract`` finds them
(:func:`dmpf_cli.recipes.extract.clip_jobs`): ``--transcript``/``--openface`` for one clip, else ``CLIP.txt``/
``.srt`` and ``CLIP.csv`` (OpenFace) or ``CLIP.npy`` beside it. A model trained on features no recipe computes
(MOSEI's and MOSI's COVAREP/FACET, the synthetic data) is refused before any clip is read. A clip is kept whole,
however long: as with every sample ``dmpf predict`` scores, the model's encoders average its frames onto their
``max_len`` steps.

A recipe whose version differs from the one the training data was made with is a warning, not an error, as a
backbone whose weights changed is: the scores may be off, and the user decides (the version is bumped whenever a
recipe's features change, so the run's data would have to be prepared and trained again to match).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..data.samples import InputError, Sample, from_memory
from ..errors import DmpfError
from ..media.audio import MediaError
from ..media.extractors import Extractor
from ..progress import Progress
from ..streams import MODALITIES, STREAM_BY_NAME
from .evaluate import (
    TrainedModel,
    TrainedRecord,
    _batches_from_samples,
    _check_output,
    _score,
    _warn_stderr,
    deliver,
    load_trained,
    read_trained,
)
from .extract import Job, clip_features, clip_jobs


def recipe_for_clips(trained: TrainedRecord | TrainedModel, warn=_warn_stderr) -> Extractor:
    """The extractor that computes, from a new clip, the features ``trained`` was trained on; a one-line error where
    none can (MOSEI, MOSI, synthetic data), where it is not installed, or where its widths are not the model's. A
    version other than the recorded one is a warning."""
    recipe, source = trained.features_recipe, trained.source
    if recipe.name is None:
        raise DmpfError(f"--media: {source} was {recipe.why_none}; to score clips, train on clips prepared with "
                        "`dmpf prepare --media` or on CH-SIMS (the `sims` recipe), or pass features computed as its "
                        "training data's were with --input")
    try:
        extractor = registry.get("extractor", recipe.name).factory()
    except registry.RegistryError as exc:
        raise DmpfError(f"--media: {source} was trained on features of the '{recipe.name}' recipe, which is not "
                        f"installed here ({exc})") from None
    if recipe.version is not None and str(extractor.version) != recipe.version:
        warn(f"{source} was trained on features of the {recipe.name} recipe version {recipe.version}, this dmpf's is "
             f"version {extractor.version}: the clips' features may differ from the ones it learned on, and so may "
             "its scores")
    made = (extractor.audio_dim, extractor.vision_dim)
    if made != tuple(trained.dims):
        raise DmpfError(f"--media: the {recipe.name} recipe makes {_widths(made)} features per frame, but {source} "
                        f"was trained on {_widths(trained.dims)}")
    return extractor


def _widths(dims) -> str:
    return ", ".join(f"{m.key} {d}" for m, d in zip(MODALITIES, dims))


SIDECARS = {".txt", ".srt", ".csv", ".npy", ".npz", ".json", ".jsonl"}  # beside the clips, never clips themselves


def media_files(media: list[Path]) -> list[Path]:
    """``media`` with each directory replaced by the clips in it (its files, sorted, but the sidecars: transcripts,
    OpenFace CSVs, features); a directory without any is a one-line error."""
    out = []
    for path in (Path(m).expanduser() for m in media):
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() not in SIDECARS)
        if not found:
            raise InputError(f"--media: {path}: a directory without clips (only transcripts, OpenFace CSVs or "
                             "features)")
        out += found
    return out


def _needs(loaded: TrainedModel) -> set[str]:
    """The modalities the model's streams read (a model without visual streams ignores the visual features)."""
    groups = getattr(loaded.model, "_orig_mod", loaded.model).groups  # a compiled model wraps the DMPF
    return {m.key for g in groups for m in STREAM_BY_NAME[g].inputs}


def _sample(job: Job, extractor: Extractor, loaded: TrainedModel, needs: set[str]) -> Sample:
    """One clip as a sample, or a :class:`MediaError` naming it."""
    vision_dim = loaded.dims[[m.key for m in MODALITIES].index("vision")]
    if job.vision is None and "vision" in needs:
        raise MediaError(f"{job.media}: no visual features, which {loaded.source} reads ({vision_dim} per frame): "
                         f"give --openface with OpenFace 2's CSV for the clip, or put {job.media.stem}.csv (OpenFace) "
                         f"or {job.media.stem}.npy beside it")
    clip = clip_features(job, extractor)
    frames = {"audio": clip.audio, "vision": clip.vision}
    for m, dim in zip(MODALITIES, loaded.dims):
        if frames[m.key] is None:  # a stream the model does not read: one empty frame
            frames[m.key] = np.zeros((1, dim), dtype=np.float32)
        elif frames[m.key].ndim != 2 or frames[m.key].shape[1] != dim:
            raise MediaError(f"{job.media}: the {extractor.name} recipe made {m.key} features of shape "
                             f"{tuple(frames[m.key].shape)}, the model takes {dim} per frame")
    try:
        return from_memory([{"id": job.media.stem, "text": clip.text, **frames}], loaded.dims)[0]
    except InputError as exc:
        raise MediaError(f"{job.media}: {str(exc).removeprefix('samples[0]: ')}") from None


def _check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "fail"):
        raise DmpfError(f"--on-error: expected skip or fail, got '{on_error}'")


def _jobs(media: list[Path], transcript: str | None, openface: Path | None) -> list[Job]:
    """A job per clip of ``media`` (files, or directories of them): ``dmpf extract``'s rules for the sidecars."""
    return clip_jobs(media_files(media), transcript=transcript,
                     openface=Path(openface).expanduser() if openface is not None else None, option="--media")


def score_media(loaded: TrainedModel, media: list[Path], *, transcript: str | None = None,
                openface: Path | None = None, on_error: str = "fail", warn=_warn_stderr, progress: Progress | None = None,
                batch_size: int | None = None) -> list[dict[str, Any]]:
    """A row per clip of ``media`` (files, or directories of them; id: its file stem, score, the dataset's label
    bins), each extracted with the model's recipe (:func:`recipe_for_clips`). A clip that cannot be used is one line
    naming it: skipped with a warning (``on_error="skip"``, where there are several) or raised. ``progress``: shows
    the extraction and scoring."""
    _check_on_error(on_error)
    return _score_clips(loaded, recipe_for_clips(loaded, warn), _jobs(media, transcript, openface), on_error=on_error,
                        warn=warn, progress=progress, batch_size=batch_size)


def _score_clips(loaded: TrainedModel, extractor: Extractor, jobs: list[Job], *, on_error: str, warn,
                 progress: Progress | None, batch_size: int | None) -> list[dict[str, Any]]:
    size = batch_size or loaded.cfg.training.batch_size
    if size < 1:
        raise DmpfError(f"batch_size: expected a positive integer, got {size}")
    needs, samples, skipped, seen = _needs(loaded), [], 0, {}
    bar = progress or Progress(None)
    for job in bar.track(jobs, f"extracting ({extractor.name})", len(jobs), unit="clips"):
        try:
            samples.append(_sample(job, extractor, loaded, needs))
        except MediaError as exc:
            if on_error == "fail" or len(jobs) == 1:
                raise
            warn(f"skipped {exc}")
            skipped += 1
            continue
        if job.media.stem in seen:
            warn(f"{job.media} and {seen[job.media.stem]} share the id '{job.media.stem}': both are scored, so ids in "
                 "the output are not unique")
        seen.setdefault(job.media.stem, job.media)
    if not samples:
        raise InputError(f"--media: nothing to score: every clip failed ({skipped} skipped, see the warnings above)")
    batches = _batches_from_samples(samples, loaded.tokenizer, loaded.cfg.data.text_len, size)
    return _score(loaded, bar.track(batches, "scoring", len(samples), unit="clips", weight=lambda b: len(b[0])))


def predict_media(root: Path | str, media: list[Path], output: Path | None, on_error: str, warn=_warn_stderr,
                  console=None, transcript: str | None = None, openface: Path | None = None) -> tuple[int, str | None]:
    """``dmpf predict --media``: score each clip; write CSV or JSONL (by ``output``'s suffix, CSV to stdout without
    one). A model whose training features no recipe computes is refused before it is built or any clip read.
    Returns (number of clips scored, the text for stdout or None)."""
    _check_on_error(on_error)
    if output is not None and output.suffix.lower() not in (".csv", ".jsonl"):
        raise DmpfError(f"--output: expected a .csv or .jsonl file name, got '{output}'")
    jobs = _jobs(media, transcript, openface)
    if output is not None:
        output = Path(output).expanduser()
        if any(output.exists() and output.resolve() == job.media.resolve() for job in jobs if job.media.exists()):
            raise DmpfError(f"--output: {output} is a --media file; choose another name")
        _check_output(output)
    read = read_trained(root, warn)
    extractor = recipe_for_clips(read, warn)  # refused before the model is built
    loaded = load_trained(read, warn, console)
    with Progress(console) as bar:
        rows = _score_clips(loaded, extractor, jobs, on_error=on_error, warn=warn, progress=bar, batch_size=None)
    return deliver(rows, output)
