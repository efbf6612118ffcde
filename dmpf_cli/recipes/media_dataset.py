"""``dmpf prepare --media DIR``: a folder of clips in MMSA-FET's layout (:mod:`dmpf_cli.media.folder`) → an ordinary
prepared dataset (:mod:`dmpf_cli.data.prepared`), its features computed by a feature recipe (registry kind
``extractor``, :mod:`dmpf_cli.recipes.extract`).

Each clip is extracted into its own features file in a cache beside the output (``.NAME.clips/VIDEO_ID/CLIP_ID.npz``,
each written whole or not at all), over ``jobs`` processes. A killed run therefore resumes where it stopped: a clip
whose features file is there, made by the same recipe and version and newer than its media and visual features,
is kept. Once every clip is extracted, the dataset is written as ``dmpf prepare`` writes an MMSA file (a hidden
directory renamed into place when complete), padded to mean + 3·std of the clips' lengths per modality (as
CH-SIMS was; longer clips are cut there and counted in the manifest), and the cache moves into it as
``clips/``, where preparing it again (a corrected ``label.csv``, more clips) finds it.

The dataset is a CH-SIMS-like one (``dataset`` ``sims``: labels in [-1, 1], CH-SIMS's metrics, the unimodal
labels where ``label.csv`` has ``label_T/A/V``), ready for ``dmpf train --config sims data.path=DIR``; its manifest
records the recipe (``features``), so a run trained on it can score a new clip the same way.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from .. import registry
from ..data.mmsa import sha256_file
from ..data.prepared import (
    DataError,
    SplitReport,
    check_output,
    data_home,
    read_manifest,
    write_prepared,
)
from ..errors import DmpfError
from ..fileio import building
from ..media.audio import MediaError
from ..media.clipfile import load_clip
from ..media.folder import LABELS, Clip, read_folder
from ..progress import Progress
from ..streams import DATASETS, MODALITIES, SPLITS
from .extract import Job, run_jobs

DATASET = "sims"  # what a folder of clips becomes: CH-SIMS's label range and metrics
CLIPS = "clips"  # the clips' features files, inside a prepared dataset


@dataclass
class MediaPrepareResult:
    output: Path
    manifest: dict[str, Any]
    extracted: int = 0
    reused: int = 0  # features files kept from an earlier (or interrupted) run
    up_to_date: bool = False  # the dataset there was made from these clips, this label.csv and recipe: left as it was
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (clip, why), with on_error="skip"


def default_output(root: Path, recipe: str) -> Path:
    return data_home() / f"{Path(root).resolve().name}-{recipe}"


def padded_length(lengths: list[int]) -> int:
    """Mean + 3·std of the clips' lengths (population std), rounded up: the padded length CH-SIMS chose."""
    values = np.asarray(lengths, dtype=np.float64)
    return max(1, math.ceil(values.mean() + 3 * values.std()))


class PaddedClips:
    """One modality of a split's clips as the ``(N, L, D)`` array :func:`write_prepared` reads block by block: each
    block loaded from the clips' features files, cut or zero-padded to ``L``."""

    ndim, dtype = 3, np.dtype(np.float32)

    def __init__(self, files: list[Path], key: str, length: int, dim: int):
        self.files, self.key, self.shape = files, key, (len(files), length, dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        files = self.files[rows]
        block = np.zeros((len(files), *self.shape[1:]), dtype=np.float32)
        for i, path in enumerate(files):
            frames = getattr(load_clip(path), self.key)
            block[i, : len(frames)] = frames[: self.shape[1]]
        return block


def _fresh(target: Path, clip: Clip, recipe: str, version: str) -> bool:
    """Whether ``target`` holds this clip's features from this recipe version, made after its inputs last changed."""
    try:
        made = target.stat().st_mtime_ns
        if any(made < p.stat().st_mtime_ns for p in (clip.media, clip.vision) if p is not None):
            return False
        features = load_clip(target)
    except (OSError, MediaError):
        return False
    return (features.recipe, features.recipe_version) == (recipe, version)


def _up_to_date(manifest: dict[str, Any], clips: list[Clip], output: Path, labels_sha256: str, extractor) -> bool:
    """Whether the dataset at ``output`` was made from exactly these clips: the same ``label.csv``, recipe and version,
    none skipped, and every clip's features file there newer than its media and visual features."""
    return (manifest.get("source", {}).get("sha256") == labels_sha256 and not manifest.get("media", {}).get("skipped")
            and manifest.get("features") == {"recipe": extractor.name, "recipe_version": extractor.version}
            and all(c.problem is None and _fresh(output / CLIPS / c.video_id / f"{c.clip_id}.npz", c, extractor.name,
                                                 extractor.version) for c in clips))


def _adopt(cache: Path, output: Path) -> None:
    """Move the ``clips/`` of an earlier dataset at ``output`` into the cache (files the cache lacks)."""
    old = output / CLIPS
    if not old.is_dir():
        return
    for path in old.rglob("*.npz"):
        target = cache / path.relative_to(old)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def prepare_media(
    root: Path, output: Path | None, *, recipe: str = "sims", openface: Path | None = None, jobs: int = 1,
    on_error: str = "fail", overwrite: bool = False, console: Console,
) -> MediaPrepareResult:
    """``dmpf prepare --media ROOT``: see the module's docstring."""
    if on_error not in ("skip", "fail"):
        raise DmpfError(f"--on-error: expected skip or fail, got '{on_error}'")
    if jobs < 1:
        raise DmpfError(f"--jobs: expected a positive integer, got {jobs}")
    extractor = registry.get("extractor", recipe).factory()
    root = Path(root).expanduser()
    spec = DATASETS[DATASET]
    clips = read_folder(root, spec.label_range, Path(openface).expanduser() if openface else None)
    output = Path(output).expanduser() if output else default_output(root, recipe)
    check_output(output)
    with building(output, f"the dataset of {root} in {output}", console.print):
        check_output(output)
        existing = read_manifest(output) if output.is_dir() else None
        if existing is not None and not overwrite and existing.get("media", {}).get("root") != str(root.resolve()):
            raise DataError(f"--output: {output} already holds a prepared dataset ({existing.get('dataset')}); pass "
                            "--overwrite to replace it, or choose another --output")
        labels_sha256 = sha256_file(root / LABELS)
        if existing is not None and _up_to_date(existing, clips, output, labels_sha256, extractor):
            return MediaPrepareResult(output, existing, reused=len(clips), up_to_date=True)
        cache = output.parent / f".{output.name}.clips"
        cache.mkdir(parents=True, exist_ok=True)
        if existing is not None:
            _adopt(cache, output)
        return _prepare(root, clips, output, cache, extractor, labels_sha256, jobs=jobs, on_error=on_error,
                        console=console)


def _prepare(root: Path, clips: list[Clip], output: Path, cache: Path, extractor, labels_sha256: str, *, jobs: int,
             on_error: str, console: Console) -> MediaPrepareResult:
    result = MediaPrepareResult(output, {})
    targets = {clip.id: cache / clip.video_id / f"{clip.clip_id}.npz" for clip in clips}
    usable: list[Clip] = []
    for clip in clips:
        if clip.problem is None and clip.vision is None and extractor.vision_dim:
            clip.problem = (f"{clip.media}: no visual features: put {clip.clip_id}.csv (OpenFace 2) or "
                            f"{clip.clip_id}.npy beside it, or pass --openface DIR with {clip.video_id}/{clip.clip_id}.csv")
        if clip.problem is not None:
            if on_error == "fail":
                raise MediaError(clip.problem)
            result.skipped.append((clip.name, clip.problem))
        else:
            usable.append(clip)
    todo = [Job(c.media, targets[c.id], c.text, c.vision) for c in usable
            if not _fresh(targets[c.id], c, extractor.name, extractor.version)]
    result.reused = len(usable) - len(todo)
    with Progress(console) as bar:
        written, failed = run_jobs(todo, extractor.name, on_error=on_error, jobs=jobs, bar=bar)
    result.extracted = len(written)
    bad = {str(media) for media, _ in failed}
    result.skipped += [(str(media), why) for media, why in failed]
    kept = [c for c in usable if str(c.media) not in bad]
    empty = [m for m in SPLITS if not any(c.split == m for c in kept)]
    if empty:
        raise DataError(f"--media: no usable clips left with mode {', '.join(empty)} ({len(result.skipped)} skipped): "
                        "a dataset needs train, valid and test clips")

    real: dict[str, dict[str, int]] = {m.key: {} for m in MODALITIES}  # modality -> clip id -> frames
    for clip in kept:
        features = load_clip(targets[clip.id])
        for m in MODALITIES:
            real[m.key][clip.id] = len(getattr(features, m.key))
    frames = {key: list(values.values()) for key, values in real.items()}
    lengths = {key: padded_length(values) for key, values in frames.items()}
    dims = {m.key: getattr(extractor, f"{m.key}_dim") for m in MODALITIES}
    splits, reports = {}, {}
    for name in SPLITS:
        members = [c for c in kept if c.split == name]
        files = [targets[c.id] for c in members]
        split: dict[str, Any] = {"raw_text": [c.text for c in members], "id": [c.id for c in members],
                                 "regression_labels": np.asarray([c.label for c in members], dtype=np.float32)}
        for m in MODALITIES:
            split[m.key] = PaddedClips(files, m.key, lengths[m.key], dims[m.key])
            split[m.lengths] = np.minimum(np.asarray([real[m.key][c.id] for c in members], dtype=np.int64),
                                          lengths[m.key])
        if members and members[0].unimodal:
            for key in members[0].unimodal:
                split[f"regression_labels_{key}"] = np.asarray([c.unimodal[key] for c in members], dtype=np.float32)
        splits[name] = split
        reports[name] = SplitReport(samples=len(members), text_empty=sum(not c.text for c in members))
    cut = {key: int(sum(n > lengths[key] for n in values)) for key, values in frames.items()}
    stats = {key: {"mean": float(np.mean(v)), "std": float(np.std(v)), "max": int(max(v)), "padded": lengths[key],
                   "clips_cut": cut[key]} for key, v in frames.items()}
    labels = root / LABELS
    extra = {
        "source": {"path": str(labels.resolve()), "size": labels.stat().st_size, "kind": "media", "sha256": labels_sha256},
        "features": {"recipe": extractor.name, "recipe_version": extractor.version},
        "media": {"root": str(root.resolve()), "label_csv": str(labels.resolve()), "clips": len(kept),
                  "lengths": stats, "skipped": [{"clip": c, "why": why} for c, why in result.skipped]},
    }
    with Progress(console) as bar:
        task = bar.add_task("writing", total=len(kept) * len(MODALITIES), unit="clips")
        done: dict[str, int] = {}

        def on_write(key: str, n: int, total: int) -> None:
            bar.advance(task, n - done.get(key, 0))
            done[key] = n

        result.manifest = write_prepared(output, DATASET, splits, reports, extra, overwrite=True, progress=on_write)
    # the features files move into the dataset, where preparing it again finds them; the others (clips no longer
    # listed, or skipped) go
    final = output / CLIPS
    for clip in kept:
        target = final / clip.video_id / f"{clip.clip_id}.npz"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(targets[clip.id], target)
    shutil.rmtree(cache, ignore_errors=True)
    return result
