"""``dmpf eval`` and ``dmpf predict``: a run's best checkpoint on a split, or on new samples (an unfinished run's
with a warning)."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from ..config import ExperimentConfig
from ..data.batches import SplitDataset, make_loader, tokenize
from ..data.mmsa import validate
from ..data.prepared import Split, open_prepared
from ..data.samples import InputError, Sample, from_fet_single, is_fet_single, read_jsonl
from ..errors import DmpfError
from ..fileio import atomic_write_text, temporary_name
from ..metrics import LOWER_IS_BETTER, label_bins
from ..model.backbones import demo_lm_dir
from ..model.dmpf import build_model, resolve_device
from ..progress import Progress
from ..store.checkpoints import load_weights
from ..store.exported import MANIFEST, WEIGHTS, is_exported, locate, read_exported
from ..store.run import RunDir, RunError, RunState
from ..streams import MODALITIES, SPLITS, STREAM_BY_NAME
from .datasets import open_data, read_source
from .feature_recipe import FeatureRecipe, recorded_recipe
from .preflight import resolve_config
from .pretrain_lm import ensure_backbone, names_demo_lm
from .runtime import autocast, compiled, evaluate


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class TrainedModel:
    """A trained model loaded for scoring: a run's best checkpoint, or an exported model's weights."""

    source: Path  # the run directory or the exported model's directory (a Hub id's snapshot in the cache)
    cfg: ExperimentConfig
    model: nn.Module
    tokenizer: Any
    device: str
    dims: tuple[int, ...]
    backbone_source: str
    status: str  # a run's run.json status (RunState's value): "finished", or "running" for a run killed or still
    # training; "exported" for an exported model
    record: dict[str, Any]  # a run's whole run.json (data, data_fingerprint, dims, ...); an exported model's dmpf.json
    run: RunDir | None = None  # the run directory, where the model is a run's

    @property
    def data_path(self) -> str | None:
        """Where the run's prepared data was (None for an exported model: its dataset's default place)."""
        return self.record.get("data") if self.run is not None else None

    @property
    def data_fingerprint(self) -> str | None:
        """The fingerprint of the prepared data the model was trained on, where recorded."""
        if self.run is not None:
            return self.record.get("data_fingerprint")
        return (self.record.get("data") or {}).get("fingerprint")

    @property
    def features_recipe(self) -> FeatureRecipe:
        """The feature recipe that made the data the model was trained on (``.name`` None with ``.why_none`` where
        none can compute them from a new clip): :func:`trained_recipe`."""
        return trained_recipe(self.cfg, self.record, self.run is not None)


def trained_recipe(cfg: ExperimentConfig, record: dict[str, Any], is_run: bool) -> FeatureRecipe:
    """The feature recipe a run (its run.json ``record``) or an exported model (its dmpf.json) was trained on; an
    older one that did not record it, by its dataset."""
    block = record.get("features") if is_run else (record.get("data") or {}).get("features")
    return recorded_recipe(block, cfg.data.dataset)


def _dims(value: Any, where: str) -> tuple[int, ...]:
    try:
        if isinstance(value, (str, bytes)) or len(value) != len(MODALITIES):
            raise ValueError
        return tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise RunError(f"{where}: expected {len(MODALITIES)} integers "
                       f"({', '.join(m.key for m in MODALITIES)}), got {value!r}") from None


@dataclass
class TrainedRecord:
    """What a trained model's files say, read without building the model (:func:`read_trained`)."""

    source: Path
    cfg: ExperimentConfig
    record: dict[str, Any]  # run.json, or dmpf.json
    dims: tuple[int, ...]
    run: RunDir | None
    state: RunState | None  # a run's; None for an exported model
    weights: Path
    fingerprint_then: str | None  # an exported model's backbone fingerprint

    @property
    def features_recipe(self) -> FeatureRecipe:
        return trained_recipe(self.cfg, self.record, self.run is not None)


def read_trained(source: Path | str, warn=_warn_stderr) -> TrainedRecord:
    """A run's or an exported model's config and records (:func:`load_trained`'s first half: nothing is built);
    a missing, foreign or damaged one is a one-line error naming ``--run``."""
    where = locate(source)
    if is_exported(where):
        config, record = read_exported(where)
        cfg, weights, state = resolve_config(config=config), where / WEIGHTS, None
        dims = _dims(record["feature_dims"], f"{where / MANIFEST}: feature_dims")
        fingerprint_then = (record.get("backbone") or {}).get("fingerprint")
        run = None
    else:
        run = RunDir(where)
        run.require()
        if not run.best.is_file():
            raise RunError(f"--run: {run.root}: no best checkpoint yet (checkpoints/best.safetensors)")
        cfg = resolve_config(config=run.config)
        record = run.read_status()
        if not record.get("dims"):
            raise RunError(f"--run: {run.root}: run.json does not record the feature dims; train the run again")
        dims = _dims(record["dims"], f"{run.status_file}: dims")
        if not isinstance(record.get("data"), (str, type(None))):
            raise RunError(f"{run.status_file}: data: expected the prepared data directory, got "
                           f"{json.dumps(record['data'])[:60]}")
        state = run.state
        if state is not RunState.FINISHED:
            warn(f"{run.root} is unfinished (status {state.value}): scoring its best checkpoint so far")
        weights, fingerprint_then = run.best, None
    return TrainedRecord(where, cfg, record, dims, run, state, weights, fingerprint_then)


def load_trained(source: Path | str | TrainedRecord, warn=_warn_stderr, console=None) -> TrainedModel:
    """A run's config, model and best weights, or an exported model's (a directory, or a Hub id: the Hugging Face
    cache first, offline; or what :func:`read_trained` read of one); a missing, foreign or damaged one is a one-line
    error naming ``--run``.

    An unfinished run (killed, or still training) is scored with its best checkpoint so far, with a warning.
    ``console`` shows the demo LM's pretraining, where it has to be built again first.
    """
    read = source if isinstance(source, TrainedRecord) else read_trained(source, warn)
    where, cfg, run, dims = read.source, read.cfg, read.run, read.dims
    device = resolve_device(cfg.training.device)
    if names_demo_lm(cfg.backbone) and not demo_lm_dir().is_dir():
        warn(f"the demo language model {where} trained on is not in {demo_lm_dir()}: pretraining it again first")
    ensure_backbone(cfg.backbone, console)
    model, backbone = build_model(cfg, dims=dims, device=device)  # as trained
    fingerprint_then = read.fingerprint_then
    if run is not None:
        why = run.backbone_mismatch(backbone.fingerprint)
    elif fingerprint_then and backbone.fingerprint and fingerprint_then != backbone.fingerprint:
        why = (f"the frozen backbone's weights differ from the ones {where} was trained with (fingerprint "
               f"{backbone.fingerprint} now, {fingerprint_then} then)")
    else:
        why = None
    if why:
        warn(f"{why}: the scores are not the trained model's")
    load_weights(model, read.weights)
    model.eval()
    return TrainedModel(where, cfg, compiled(model, cfg.training.compile, device), backbone.tokenizer, device, dims,
                        backbone.source, read.state.value if read.state else "exported", read.record, run)


def _drop(full: dict[str, float], ablated: dict[str, float]) -> dict[str, float]:
    """How much worse each metric gets (positive = worse), whichever direction is better."""
    return {k: (ablated[k] - full[k]) if k in LOWER_IS_BETTER else (full[k] - ablated[k]) for k in full}


def eval_run(root: Path | str, split: str = "test", modality_ablation: bool = False, warn=_warn_stderr,
             console=None) -> dict[str, Any]:
    """``dmpf eval``: the metrics of the run's best checkpoint (or an exported model) on ``split`` (and with each
    stream removed); the scoring passes show their progress on ``console``."""
    if split not in ("test", "valid"):
        raise DmpfError(f"--split: expected test or valid, got '{split}'")
    return eval_loaded(load_trained(root, warn, console), split, modality_ablation, warn, console)


def eval_loaded(loaded: TrainedModel, split: str = "test", modality_ablation: bool = False, warn=_warn_stderr,
                console=None, data: Path | None = None) -> dict[str, Any]:
    """:func:`eval_run` on a model already loaded; ``data``: a prepared directory to score instead of the one the
    model was trained on (a run's recorded one, else its dataset's default place)."""
    if split not in ("test", "valid"):
        raise DmpfError(f"--split: expected test or valid, got '{split}'")
    cfg = loaded.cfg
    data_dir = str(data) if data is not None else loaded.data_path
    if data_dir:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": data_dir})})
    prepared = open_data(cfg, prepare_missing=False)
    recorded = loaded.data_fingerprint
    if recorded and recorded != prepared.fingerprint:
        warn(f"{prepared.path} was prepared again since {loaded.source} trained on it: the data may differ "
             "from what the run saw")
    dataset = SplitDataset(prepared.split(split), loaded.tokenizer, cfg.data.text_len)
    loader = make_loader(dataset, cfg.training.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    with Progress(console) as bar:
        full = evaluate(loaded.model, loader, cfg, loaded.device, progress=bar, what=f"scoring {split}")
        result: dict[str, Any] = {"run": str(loaded.source), "run_status": loaded.status, "split": split,
                                  "samples": len(dataset), "backbone": loaded.backbone_source, "metrics": full}
        if modality_ablation:
            result["ablation"] = {}
            groups = getattr(loaded.model, "_orig_mod", loaded.model).groups  # a compiled model wraps the DMPF
            if not groups:
                warn(f"{loaded.source} is a text-only run: it has no audio or visual stream to remove")
            planted = planted_drops(prepared.manifest, groups) if split == "test" else {}
            for group in groups:
                ablated = evaluate(loaded.model, loader, cfg, loaded.device, drop_streams=(group,), progress=bar,
                                   what=f"scoring {split} without {STREAM_BY_NAME[group].display}")
                entry = {"metrics": ablated, "drop": _drop(full, ablated)}
                if group in planted:
                    entry["planted"] = planted[group]
                result["ablation"][STREAM_BY_NAME[group].display] = entry
    return result


def planted_drops(manifest: dict[str, Any], streams: list[str]) -> dict[str, dict[str, Any]]:
    """On synthetic data: per stream of ``streams`` (the model's), the planted terms its inputs carry, what the
    ideal predictor of those terms alone reaches, and how much the ideal predictor's test MAE grows when the
    model loses that stream and keeps the others — the drop no model can avoid, since the other streams may carry
    the same terms (the AV stream carries audio and vision too; only it carries their interaction). Empty for
    other data, whose manifest has no planted structure."""
    from ..data.synthetic import reference_for

    reference = (manifest.get("synthetic") or {}).get("reference") or {}
    if not reference:
        return {}

    def terms(names) -> frozenset[str]:  # the planted terms the text and these streams' inputs can reach
        keys = [{m.key for m in STREAM_BY_NAME[name].inputs} for name in names]
        reached = {"text", *(key for inputs in keys for key in inputs)}
        if any(len(inputs) > 1 for inputs in keys):
            reached.add("interaction")  # only a stream that reads both modalities together reaches it
        return frozenset(reached)

    def ideal_mae(names) -> float | None:
        name = reference_for(terms(names))
        return reference[name]["mae"] if name in reference else None

    full = ideal_mae(streams)
    if full is None:
        return {}
    out = {}
    for stream in streams:
        without = ideal_mae([s for s in streams if s != stream])
        if without is None:
            continue
        carried = terms([stream]) - {"text"}  # what the stream's own inputs carry
        alone = reference_for(carried)
        out[stream] = {"carries": [t for t in ("audio", "vision", "interaction") if t in carried], "reference_alone": alone,
                       "mae_alone": reference[alone]["mae"] if alone in reference else None,
                       "mae_drop_ideal": round(without - full, 6)}
    return out


def _batches_from_samples(samples: list[Sample], tokenizer, text_len: int, size: int) -> Iterator[tuple[list[str], dict]]:
    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        ids, real = tokenize(tokenizer, [s.raw_text for s in chunk], text_len)
        batch = {"text_ids": ids, "text_real": real}
        for m in MODALITIES:
            frames = [s.frames[m.key] for s in chunk]
            longest = max(f.shape[0] for f in frames)
            padded = np.zeros((len(chunk), longest, frames[0].shape[1]), dtype=np.float32)
            for i, f in enumerate(frames):
                padded[i, : f.shape[0]] = f
            batch[m.key] = torch.from_numpy(padded)
            batch[m.lengths] = torch.tensor([f.shape[0] for f in frames])
        yield [s.id for s in chunk], batch


def _batches_from_split(split, tokenizer, text_len: int, size: int) -> Iterator[tuple[list[str], dict]]:
    dataset = SplitDataset(split, tokenizer, text_len)
    for batch in make_loader(dataset, size, shuffle=False):
        real = batch["weight"] > 0
        batch = {k: v[real] for k, v in batch.items()}  # predictions for real samples only
        yield [f"{split.name}/{split.ids[i]}" for i in batch["index"].tolist()], batch


def _pickle_splits(data: Any, path: Path, dataset: str) -> tuple[int, Iterator[Split]]:
    """An MMSA pickle's samples: how many, and its splits (each cleaned when it is reached)."""
    splits, reports = validate(data, dataset, path)
    return sum(r.samples for r in reports.values()), _cleaned(splits)


def _cleaned(splits: dict[str, dict]) -> Iterator[Split]:
    for name, s in splits.items():
        arrays = {}
        for m in MODALITIES:
            arrays[m.key] = np.nan_to_num(np.asarray(s[m.key], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
            arrays[m.lengths] = s[m.lengths]
        yield Split(name, arrays, s["regression_labels"], {}, s["raw_text"], s["id"])


def _check_output(output: Path) -> None:
    """A one-line error, before any work, unless ``output`` can be written: not a directory, and its folder
    (made if missing) takes a new file."""
    if output.is_dir():
        raise DmpfError(f"--output: {output}: is a directory; expected a .csv or .jsonl file name")
    if output.exists() and not output.is_file():
        raise DmpfError(f"--output: {output}: not a regular file")
    folder = next(p for p in (output.parent, *output.parent.parents) if p.exists())
    if not folder.is_dir():
        raise DmpfError(f"--output: {output}: {folder} is not a directory")
    tmp = temporary_name(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8"):
            pass
        tmp.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DmpfError(f"--output: {output}: cannot create a file in {output.parent} ({reason})") from None


def _write(output: Path, text: str) -> None:
    """Write ``text`` atomically (``output`` whole or untouched, no temporary left); an OSError is one line."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, text)
    except OSError as exc:
        raise DmpfError(f"--output: {output}: cannot write ({exc.strerror or exc})") from None


def predict_run(root: Path | str, source: Path, output: Path | None, on_error: str, warn,
                console=None, transcript: str | None = None) -> tuple[int, str | None]:
    """Score every sample of ``source``; write CSV or JSONL (by ``output``'s suffix, CSV to stdout without one),
    the progress on ``console``. ``source``: a prepared directory, an MMSA pickle (its splits), MMSA-FET's
    single-sample pickle (``run_single``'s, with ``transcript``), or a JSONL/JSON file of samples.

    Returns (number of samples scored, the text for stdout or None). Nothing to score is a one-line error, and
    then no file is written; an unwritable ``output`` is one before the run is loaded.
    """
    if on_error not in ("skip", "fail"):
        raise DmpfError(f"--on-error: expected skip or fail, got '{on_error}'")
    if output is not None and output.suffix.lower() not in (".csv", ".jsonl"):
        raise DmpfError(f"--output: expected a .csv or .jsonl file name, got '{output}'")
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"--input: {source}: no such file or directory")
    if not source.is_dir() and source.suffix.lower() not in (".pkl", ".jsonl", ".json"):
        raise InputError(f"--input: {source}: expected a prepared directory, an MMSA .pkl, or a .jsonl file "
                         "(or a .json array) of samples")
    if transcript is not None and (source.is_dir() or source.suffix.lower() != ".pkl"):
        raise InputError(f"--transcript: goes with MMSA-FET's single-sample .pkl (run_single's output); {source} holds "
                         "its samples' own text")
    if output is not None:
        output = Path(output).expanduser()
        if output.exists() and output.resolve() == source.resolve():
            raise DmpfError(f"--output: {output} is the --input file; choose another name")
        _check_output(output)
    loaded = load_trained(root, warn, console)
    cfg = loaded.cfg
    size = cfg.training.batch_size
    with Progress(console) as bar:
        if source.is_dir():
            prepared = open_prepared(source)
            if prepared.dims != loaded.dims:
                raise InputError(f"--input: {source} has feature dims {prepared.dims}, the run was trained on "
                                 f"{loaded.dims}")
            splits = [prepared.split(name) for name in SPLITS]
            count = sum(map(len, splits))
        elif source.suffix.lower() == ".pkl":
            data, _ = read_source(source, bar)
            if is_fet_single(data):  # MMSA-FET's run_single: one sample's features
                samples = [from_fet_single(data, source, loaded.dims, transcript, cfg.data.dataset)]
                count, splits = 1, None
            elif transcript is not None:
                raise InputError(f"--transcript: goes with MMSA-FET's single-sample .pkl (run_single's output); "
                                 f"{source} is a dataset pickle, whose samples carry their own text")
            else:
                count, splits = _pickle_splits(data, source, cfg.data.dataset)
        else:  # .jsonl or .json
            samples = list(read_jsonl(source, loaded.dims, on_error, warn))
            count, splits = len(samples), None
        batches = (_batches_from_samples(samples, loaded.tokenizer, cfg.data.text_len, size) if splits is None else
                   (b for split in splits for b in _batches_from_split(split, loaded.tokenizer, cfg.data.text_len, size)))
        rows = _score(loaded, bar.track(batches, "scoring", count, unit="samples", weight=lambda b: len(b[0])))
    if not rows:
        raise InputError(f"--input: {source}: nothing to score: it holds no samples")
    return deliver(rows, output)


def deliver(rows: list[dict[str, Any]], output: Path | None) -> tuple[int, str | None]:
    """``dmpf predict``'s rows as CSV or JSONL (by ``output``'s suffix), written to ``output``, or returned for stdout
    without one: (number of rows, the text for stdout or None)."""
    text = _render(rows, "jsonl" if output is not None and output.suffix.lower() == ".jsonl" else "csv")
    if output is None:
        return len(rows), text
    _write(output, text)
    return len(rows), None


def score_samples(loaded: TrainedModel, samples: list[Sample], batch_size: int | None = None) -> list[dict[str, Any]]:
    """A row per sample (id, score, the dataset's label bins), scored in batches of ``batch_size`` (default: the
    config's); the Python API's ``predict``."""
    size = batch_size or loaded.cfg.training.batch_size
    if size < 1:
        raise DmpfError(f"batch_size: expected a positive integer, got {size}")
    return _score(loaded, _batches_from_samples(samples, loaded.tokenizer, loaded.cfg.data.text_len, size))


def _score(loaded: TrainedModel, batches) -> list[dict[str, Any]]:
    """A row per sample of ``batches`` ((ids, batch) pairs): its id, score and label bins."""
    cfg = loaded.cfg
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for ids, batch in batches:
            batch = {k: v.to(loaded.device) for k, v in batch.items() if k not in ("index",)}
            with autocast(cfg, loaded.device):
                scores = loaded.model(batch).score.float().cpu().numpy()
            bins = label_bins(scores, cfg.data.dataset)
            for i, (sample_id, score) in enumerate(zip(ids, scores.tolist())):
                rows.append({"id": sample_id, "score": round(float(score), 6),
                             **{name: values[i] for name, values in bins.items()}})
    return rows


def _render(rows: list[dict[str, Any]], kind: str) -> str:
    if kind == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()

