"""``dmpf eval`` and ``dmpf predict``: a finished run's best checkpoint on a split, or on new samples."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .checkpoints import RunDir, RunError, load_weights
from .config import ExperimentConfig, load_config
from .errors import DmpfError

STREAM_NAMES = {"audio": "audio", "visual": "visual", "audio_visual": "audio-visual"}


@dataclass
class LoadedRun:
    run: RunDir
    cfg: ExperimentConfig
    model: nn.Module
    tokenizer: Any
    device: str
    dims: tuple[int, int]
    backbone_source: str


def load_run(root: Path) -> LoadedRun:
    """The run's config, model and best weights; a missing, foreign or damaged run is a one-line error."""
    from .model import build_model, resolve_device
    from .train import compiled

    run = RunDir(root)
    run.require()
    if not run.best.is_file():
        raise RunError(f"--run: {run.root}: no best checkpoint yet (checkpoints/best.safetensors)")
    cfg = load_config(config=run.config)
    status = run.read_status()
    dims = status.get("dims")
    if not dims:
        raise RunError(f"--run: {run.root}: run.json does not record the feature dims; train the run again")
    device = resolve_device(cfg.training.device)
    model, backbone = build_model(cfg, dims=(int(dims[0]), int(dims[1])), device=device)  # as trained
    load_weights(model, run.best)
    model.eval()
    return LoadedRun(run, cfg, compiled(model, cfg.training.compile, device), backbone.tokenizer, device,
                     (int(dims[0]), int(dims[1])), backbone.source)


def _drop(full: dict[str, float], ablated: dict[str, float]) -> dict[str, float]:
    """How much worse each metric gets (positive = worse), whichever direction is better."""
    from .metrics import LOWER_IS_BETTER

    return {k: (ablated[k] - full[k]) if k in LOWER_IS_BETTER else (full[k] - ablated[k]) for k in full}


def eval_run(root: Path, split: str = "test", modality_ablation: bool = False) -> dict[str, Any]:
    from .dataset import SplitDataset, make_loader
    from .train import evaluate, open_data

    if split not in ("test", "valid"):
        raise DmpfError(f"--split: expected test or valid, got '{split}'")
    loaded = load_run(root)
    cfg = loaded.cfg
    data_dir = loaded.run.read_status().get("data")
    if data_dir:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": data_dir})})
    prepared = open_data(cfg, prepare_missing=False)
    dataset = SplitDataset(prepared.split(split), loaded.tokenizer, cfg.data.text_len)
    loader = make_loader(dataset, cfg.training.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    full = evaluate(loaded.model, loader, cfg, loaded.device)
    result: dict[str, Any] = {"run": str(loaded.run.root), "split": split, "samples": len(dataset),
                              "backbone": loaded.backbone_source, "metrics": full}
    if modality_ablation:
        result["ablation"] = {}
        groups = getattr(loaded.model, "_orig_mod", loaded.model).groups  # a compiled model wraps the DMPF
        for group in groups:
            ablated = evaluate(loaded.model, loader, cfg, loaded.device, drop_streams=(group,))
            result["ablation"][STREAM_NAMES[group]] = {"metrics": ablated, "drop": _drop(full, ablated)}
    return result


# -- predict ---------------------------------------------------------------------------------------

@dataclass
class Sample:
    id: str
    raw_text: str
    audio: np.ndarray  # (La, Da)
    vision: np.ndarray  # (Lv, Dv)


class InputError(DmpfError):
    """A malformed prediction input (one line: file, line number, what is wrong)."""


def _frames(value: Any, dim: int, key: str, base: Path) -> np.ndarray:
    if isinstance(value, str):
        path = (base / value).expanduser() if not Path(value).is_absolute() else Path(value)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{key}: cannot read {path} ({' '.join(str(exc).split())})") from None
    else:
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a list of frames (lists of numbers) or a path to an .npy file") from None
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 1:
        raise ValueError(f"{key}: expected frames of shape (length >= 1, {dim}), got {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{key}: expected numbers, got {arr.dtype}")
    arr = arr.astype(np.float32)
    return np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)


def read_jsonl(path: Path, dims: tuple[int, int], on_error: str, warn) -> Iterator[Sample]:
    """Samples from a JSONL file: raw_text, audio, vision (nested lists or .npy paths), optional id."""
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--input: {path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
                text = record.get("raw_text")
                if not isinstance(text, str):
                    raise ValueError("raw_text: expected a string")
                for key in ("audio", "vision"):
                    if key not in record:
                        raise ValueError(f"{key}: missing")
                sample = Sample(str(record.get("id", f"line{number}")), text,
                                _frames(record["audio"], dims[0], "audio", path.parent),
                                _frames(record["vision"], dims[1], "vision", path.parent))
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                message = f"{path}:{number}: {' '.join(str(exc).split())}"
                if on_error == "fail":
                    raise InputError(message) from None
                warn(f"skipped {message}")
                continue
            yield sample


def _batches_from_samples(samples: list[Sample], tokenizer, text_len: int, size: int) -> Iterator[tuple[list[str], dict]]:
    from .backbones import tokenize

    for start in range(0, len(samples), size):
        chunk = samples[start:start + size]
        ids, real = tokenize(tokenizer, [s.raw_text for s in chunk], text_len)
        batch = {"text_ids": ids, "text_real": real}
        for key in ("audio", "vision"):
            frames = [getattr(s, key) for s in chunk]
            longest = max(f.shape[0] for f in frames)
            padded = np.zeros((len(chunk), longest, frames[0].shape[1]), dtype=np.float32)
            for i, f in enumerate(frames):
                padded[i, : f.shape[0]] = f
            batch[key] = torch.from_numpy(padded)
            batch[f"{key}_lengths"] = torch.tensor([f.shape[0] for f in frames])
        yield [s.id for s in chunk], batch


def _batches_from_split(split, tokenizer, text_len: int, size: int) -> Iterator[tuple[list[str], dict]]:
    from .dataset import SplitDataset, make_loader

    dataset = SplitDataset(split, tokenizer, text_len)
    for batch in make_loader(dataset, size, shuffle=False):
        real = batch["weight"] > 0
        batch = {k: v[real] for k, v in batch.items()}  # predictions for real samples only
        yield [f"{split.name}/{split.ids[i]}" for i in batch["index"].tolist()], batch


def _pickle_splits(path: Path, dataset: str):
    from .mmsa import load_pickle, validate
    from .prepared import Split

    data, _ = load_pickle(path)
    splits, _ = validate(data, dataset, path)
    for name, s in splits.items():
        for key in ("audio", "vision"):
            s[key] = np.nan_to_num(np.asarray(s[key], dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        yield Split(name, s["audio"], s["vision"], s["audio_lengths"], s["vision_lengths"], s["regression_labels"],
                    {}, s["raw_text"], s["id"])


def predict_run(root: Path, source: Path, output: Path | None, on_error: str, warn) -> tuple[int, str | None]:
    """Score every sample of ``source``; write CSV or JSONL (by ``output``'s suffix, CSV to stdout without one).

    Returns (number of samples scored, the text for stdout or None).
    """
    from .metrics import label_bins
    from .prepared import open_prepared
    from .train import autocast

    if on_error not in ("skip", "fail"):
        raise DmpfError(f"--on-error: expected skip or fail, got '{on_error}'")
    if output is not None and output.suffix.lower() not in (".csv", ".jsonl"):
        raise DmpfError(f"--output: expected a .csv or .jsonl file name, got '{output}'")
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"--input: {source}: no such file or directory")
    loaded = load_run(root)
    cfg = loaded.cfg
    size = cfg.training.batch_size
    if source.is_dir():
        prepared = open_prepared(source)
        if prepared.dims != loaded.dims:
            raise InputError(f"--input: {source} has feature dims {prepared.dims}, the run was trained on {loaded.dims}")
        batches = (b for name in ("train", "valid", "test")
                   for b in _batches_from_split(prepared.split(name), loaded.tokenizer, cfg.data.text_len, size))
    elif source.suffix.lower() == ".pkl":
        batches = (b for split in _pickle_splits(source, cfg.data.dataset)
                   for b in _batches_from_split(split, loaded.tokenizer, cfg.data.text_len, size))
    elif source.suffix.lower() in (".jsonl", ".json"):
        samples = list(read_jsonl(source, loaded.dims, on_error, warn))
        batches = _batches_from_samples(samples, loaded.tokenizer, cfg.data.text_len, size)
    else:
        raise InputError(f"--input: {source}: expected a prepared directory, an MMSA .pkl or a .jsonl file")

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
    text = _render(rows, "jsonl" if output is not None and output.suffix.lower() == ".jsonl" else "csv")
    if output is None:
        return len(rows), text
    tmp = output.with_name(f".{output.name}.tmp")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    return len(rows), None


def _render(rows: list[dict[str, Any]], kind: str) -> str:
    if kind == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()

