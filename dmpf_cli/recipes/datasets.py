"""The data a run reads: ``dmpf prepare`` (an MMSA pickle, yours or a generated synthetic one → the prepared
format, its text tokenised for the dataset's preset), and :func:`open_data`, the prepared dataset a config
names (the synthetic one generated on first use).

Both import paths go through the same importer: the restricted unpickler and the validation of design.md §7
(:mod:`dmpf_cli.data.mmsa`), and the atomic writer of :mod:`dmpf_cli.data.prepared`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from ..config import ExperimentConfig
from ..data.mmsa import is_aligned, load_pickle, validate
from ..data.prepared import (
    MANIFEST,
    DataError,
    Prepared,
    check_output,
    default_dir,
    is_up_to_date,
    open_prepared,
    read_manifest,
    remove_stale_leftovers,
    source_stamp,
    write_prepared,
)
from ..errors import DmpfError
from ..fileio import building
from ..progress import Progress
from ..streams import DATASETS, MODALITIES, SPLITS, PublishedFile


@dataclass
class PrepareResult:
    output: Path
    manifest: dict[str, Any]
    skipped: bool  # already prepared from the same source: nothing was done
    published_match: bool | None = None  # --sha256: whether the file matches the published hash (None: none published)
    compared_with: PublishedFile | None = None  # --sha256: the published file whose hash it was compared with
    tokens: dict[str, Any] | None = None  # what pretokenize() stored, or why it stored nothing


def pretokenize(output: Path, cfg: Any, origin: str, progress: Progress | None = None) -> dict[str, Any]:
    """Tokenise every split's text for ``cfg``'s backbone and ``data.text_len``, stored beside the data.

    Training, evaluation and the benchmark then read the stored ids (:func:`dmpf_cli.data.batches.cached_tokens`)
    instead of tokenising. A tokenizer that is not on this machine yet (a pretrained backbone not yet
    downloaded) is not an error: the result says so, and the first run tokenises and stores instead.
    """
    from ..data.batches import cached_tokens, token_cache_dir
    from ..model.backbone_files import BackboneError
    from ..model.tokenizer import load_tokenizer

    prepared = open_prepared(output)
    info: dict[str, Any] = {"config": origin, "backbone": cfg.backbone.name, "text_len": cfg.data.text_len}
    try:
        tokenizer = load_tokenizer(cfg.backbone)
    except BackboneError as exc:
        return {**info, "stored": False, "reason": str(exc)}
    truncated = 0
    splits = [prepared.split(name) for name in SPLITS]
    for split in (progress or Progress(None)).track(splits, "tokenising the text", sum(map(len, splits)),
                                                    unit="texts", weight=len):
        _, real = cached_tokens(split, tokenizer, cfg.data.text_len)
        truncated += int(real[:, -1].sum())  # rows that fill text_len: some were cut there
    return {**info, "stored": True, "directory": str(token_cache_dir(prepared.path, tokenizer, cfg.data.text_len)),
            "rows_at_text_len": truncated}


def read_source(source: Path, progress: Progress, what: str | None = None) -> tuple[Any, str]:
    """:func:`~dmpf_cli.data.mmsa.load_pickle` of ``source``, its bytes counted on ``progress`` as reading ``what``
    (default: the file's name)."""
    task = progress.add_task(f"reading {what or source.name}", total=source.stat().st_size, unit="bytes")
    data, sha256 = load_pickle(source, progress=lambda n: progress.advance(task, n))
    progress.remove_task(task)
    return data, sha256


def import_pickle(
    dataset: str, source: Path, output: Path, *, overwrite: bool, console: Console, extra: dict[str, Any] | None = None,
    generated: bool = False,
) -> dict[str, Any]:
    """Load (restricted), validate, and write ``source`` to ``output``; returns the manifest.

    ``generated``: the source is a temporary file made by dmpf, recorded as such rather than by path.
    """
    size = source.stat().st_size if source.exists() else 0
    with Progress(console) as bar:
        data, sha256 = read_source(source, bar, "the generated data" if generated else None)
        published = DATASETS[dataset].published_file(sha256)
        aligned = is_aligned(data, published)
        splits, reports = validate(data, dataset, source, aligned=aligned)
        del data  # the validated splits keep what is needed
        done: dict[str, int] = {}
        write_task = bar.add_task("writing", total=sum(r.samples for r in reports.values()) * len(MODALITIES),
                                  unit="rows")

        def on_write(key: str, n: int, total: int) -> None:
            bar.update(write_task, advance=n - done.get(key, 0), info=key)
            done[key] = n

        stamp = {"path": "(generated)", "size": size} if generated else source_stamp(source)
        # which published file it is (by its hash), where it is one; aligned: every stream at the text's length
        recorded = {**stamp, "sha256": sha256, **({"published_as": published.path} if published else {})}
        manifest = write_prepared(output, dataset, splits, reports,
                                  {"source": recorded, "aligned": aligned, **(extra or {})},
                                  overwrite=overwrite, progress=on_write)
    return manifest


def prepare_file(
    dataset: str, source: Path, output: Path | None, *, overwrite: bool, check_sha256: bool, console: Console,
) -> PrepareResult:
    """``dmpf prepare --dataset mosei|mosi|sims|simsv2 --source FILE.pkl`` (unaligned or aligned)."""
    if dataset not in DATASETS or DATASETS[dataset].generated:
        files = ", ".join(d.name for d in DATASETS.values() if not d.generated)
        raise DataError(f"--dataset: expected one of {files} with --source, got '{dataset}'")
    source = Path(source).expanduser()
    if not source.is_file():
        raise DataError(f"--source: {source}: no such file" if not source.exists() else f"--source: {source}: not a file")
    output = Path(output).expanduser() if output else default_dir(dataset)
    check_output(output)  # before the (long) import
    stamp = source_stamp(source)
    # under the lock: a second prepare of the same file into the same directory waits, then finds it up to date
    with building(output, f"the {dataset} dataset in {output}", console.print):
        check_output(output)
        manifest = read_manifest(output) if output.is_dir() else None
        if manifest and is_up_to_date(output, {"dataset": dataset}) and all(
            manifest.get("source", {}).get(k) == v for k, v in stamp.items()
        ):
            result = PrepareResult(output, manifest, skipped=True)
        else:
            if manifest is not None and manifest.get("source", {}).get("path") == stamp["path"]:
                overwrite = True  # the same file, changed since: refreshing it is what the user asked for
            result = PrepareResult(output, import_pickle(dataset, source, output, overwrite=overwrite,
                                                         console=console), skipped=False)
    if check_sha256:
        result.compared_with, result.published_match = compare_published(dataset, result.manifest)
    return result


def compare_published(dataset: str, manifest: dict[str, Any]) -> tuple[PublishedFile | None, bool | None]:
    """``--sha256``: the published file a prepared source is compared with, and whether its hash matches.

    A source whose hash is a published file's matches it; any other is compared with the published file of its
    kind (aligned or not, as the manifest records): it differs from that one's hash. None for the match where
    that file has no published hash; (None, None) where the dataset publishes no file of that kind.
    """
    source, files = manifest.get("source", {}), DATASETS[dataset].files
    if source.get("sha256") and (same := DATASETS[dataset].published_file(source["sha256"])):
        return same, True
    kind = next((f for f in files if f.aligned == bool(manifest.get("aligned"))), None)
    if kind is None or kind.sha256 is None:
        return kind, None
    return kind, False


def prepare_synthetic(
    size: str, seed: int, output: Path | None, *, overwrite: bool, console: Console,
) -> PrepareResult:
    """``dmpf prepare --dataset synthetic``: generate an MMSA pickle with planted structure, then import it."""
    from ..data.synthetic import GENERATOR, SIZES

    if size not in SIZES:
        raise DataError(f"--size: expected one of {', '.join(SIZES)}, got '{size}'")
    output = Path(output).expanduser() if output else default_dir("synthetic", size, seed)
    check_output(output)  # before the (long) generation

    def current() -> dict[str, Any] | None:
        """The manifest there when it is this dataset from this generator already."""
        existing = read_manifest(output) if output.is_dir() else None
        planted = (existing or {}).get("synthetic", {})
        fits = (planted.get("size"), planted.get("seed"), planted.get("generator")) == (size, seed, GENERATOR)
        return existing if fits and is_up_to_date(output, {"dataset": "synthetic"}) else None

    if existing := current():
        return PrepareResult(output, existing, skipped=True)
    # one process generates it; another one that wants it at the same time waits, then finds it up to date
    with building(output, f"the synthetic '{size}' dataset (seed {seed}) in {output}", console.print):
        if existing := current():
            return PrepareResult(output, existing, skipped=True)
        return _generate(size, seed, output, overwrite=overwrite, console=console)


def _generate(size: str, seed: int, output: Path, *, overwrite: bool, console: Console) -> PrepareResult:
    """Generate the synthetic dataset into ``output`` (its lock held)."""
    from ..data.synthetic import SIZES, generate

    check_output(output)
    existing = read_manifest(output) if output.is_dir() else None
    # regenerating the same synthetic dataset (an older generator) loses nothing; a different size or
    # seed, or anything else there, would change what runs trained on it see, so it needs --overwrite
    planted = (existing or {}).get("synthetic", {})
    overwrite = overwrite or (existing is not None and existing.get("dataset") == "synthetic"
                              and (planted.get("size"), planted.get("seed")) == (size, seed))
    if existing is not None and not overwrite:
        what = (f"the synthetic '{planted.get('size')}' dataset with seed {planted.get('seed')}"
                if existing.get("dataset") == "synthetic" else f"a prepared {existing.get('dataset')} dataset")
        raise DataError(f"--output: {output} holds {what}; pass --overwrite to replace it, or choose another --output")
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(output)
    pkl = output.parent / f".{output.name}.source-{os.getpid()}.pkl"
    try:
        with Progress(console) as bar:
            task = bar.add_task(f"generating the synthetic '{size}' dataset (seed {seed})",
                                total=sum(SIZES[size].splits.values()), unit="samples")
            data, info = generate(size, seed, progress=lambda n: bar.advance(task, n))
            with open(pkl, "wb") as f:
                pickle.dump(data, f, protocol=5)  # protocol 5 writes array buffers without copying them
            del data
        manifest = import_pickle("synthetic", pkl, output, overwrite=overwrite, console=console,
                                 extra={"synthetic": info}, generated=True)
    finally:
        pkl.unlink(missing_ok=True)
    return PrepareResult(output, manifest, skipped=False)


def prepare(dataset: str, *, source: Path | None, output: Path | None, size: str, seed: int, overwrite: bool,
            check_sha256: bool, tokenize_for: tuple[ExperimentConfig, str] | None, console: Console) -> PrepareResult:
    """``dmpf prepare``: an MMSA file imported (:func:`prepare_file`) or a synthetic dataset generated
    (:func:`prepare_synthetic`), then its text tokenised for ``tokenize_for`` (a config and where it came from;
    :func:`pretokenize`) where given."""
    if dataset == "synthetic":
        if source is not None:
            raise DmpfError("--source: not used with --dataset synthetic (the data is generated)")
        result = prepare_synthetic(size, seed, output, overwrite=overwrite, console=console)
    else:
        if source is None:
            raise DmpfError(f"--source: required with --dataset {dataset} (the MMSA .pkl file you downloaded)")
        result = prepare_file(dataset, source, output, overwrite=overwrite, check_sha256=check_sha256, console=console)
    if tokenize_for is not None:
        with Progress(console) as bar:
            result.tokens = pretokenize(result.output, *tokenize_for, bar)
    return result


def tokenize_preset(dataset: str) -> str | None:
    """The preset whose tokenizer and text length ``dmpf prepare`` tokenises ``dataset``'s text for."""
    return DATASETS[dataset].preset if dataset in DATASETS else None


def data_dir(cfg: ExperimentConfig) -> Path:
    """Where the prepared dataset ``cfg`` names lives (``data.path``, else its default directory)."""
    data = cfg.data
    if data.path:
        return Path(data.path).expanduser()
    if data.dataset == "synthetic":
        return default_dir("synthetic", data.synthetic_size, data.synthetic_seed)
    return default_dir(data.dataset)


def missing_data(cfg: ExperimentConfig, *, generated_on_first_use: bool = True) -> str | None:
    """Why the prepared dataset ``cfg`` names is not on this machine — one line saying which file to get, where it
    is published and what to run — or None. The default synthetic dataset is not missing where it is generated on
    first use (``generated_on_first_use``)."""
    data, path = cfg.data, data_dir(cfg)
    if path.is_dir() or (generated_on_first_use and data.dataset == "synthetic" and not data.path):
        return None
    facts = DATASETS[data.dataset]
    if facts.generated:
        return (f"data.path: no prepared {data.dataset} dataset at {path}; run `dmpf prepare --dataset {data.dataset} "
                f"--size {data.synthetic_size} --seed {data.synthetic_seed} --output {path}` first")
    return (f"data.path: no prepared {data.dataset} dataset at {path}; get {facts.where_to_get()}, then run "
            f"`dmpf prepare --dataset {data.dataset} --source {facts.file} --sha256 --output {path}`")


def open_data(cfg: ExperimentConfig, console: Console | None = None, *, prepare_missing: bool = True) -> Prepared:
    """The prepared dataset ``cfg`` names; the synthetic one is generated on first use."""
    data = cfg.data
    path = data_dir(cfg)
    if data.dataset == "synthetic" and prepare_missing and not data.path:
        if console and not (path / MANIFEST).is_file():
            console.print(f"preparing the synthetic '{data.synthetic_size}' dataset in {path} (first use)")
        # a no-op when it is there and current; regenerated when the generator has changed since
        prepare_synthetic(data.synthetic_size, data.synthetic_seed, path, overwrite=False,
                          console=console or Console(quiet=True))
    elif problem := missing_data(cfg, generated_on_first_use=False):
        raise DmpfError(problem)
    prepared = open_prepared(path)
    if prepared.dataset != data.dataset:
        raise DmpfError(f"data.path: {path} holds the {prepared.dataset} dataset, the config says {data.dataset}")
    if cfg.loss.unimodal_labels and not prepared.manifest.get("unimodal_labels"):
        raise DmpfError(f"loss.unimodal_labels: the {prepared.dataset} data in {path} has no unimodal labels "
                        "(CH-SIMS has T/A/V); set it to false")
    return prepared


def reference_scores(data: str | Path | None) -> dict[str, dict[str, float]]:
    """For a synthetic dataset (its prepared directory, as a run's run.json records it): what the ideal and
    restricted predictors reach on test (MAE, Corr), to print beside a run."""
    manifest = read_manifest(Path(data)) if data and Path(data).is_dir() else None
    reference = (manifest or {}).get("synthetic", {}).get("reference", {})
    names = {"ideal": "noise floor", "no_interaction": "no A×V", "text_only": "text only"}
    return {label: {"MAE": reference[key]["mae"], "Corr": reference[key]["corr"]}
            for key, label in names.items() if key in reference}
