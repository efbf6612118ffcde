"""``dmpf eval`` and ``dmpf predict``: a run's best checkpoint on a split, or on new samples (an unfinished run's
with a warning)."""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .checkpoints import RunDir, RunError, load_weights
from .config import ExperimentConfig, load_config
from .errors import DmpfError
from .fileio import atomic_write_text, temporary_name

STREAM_NAMES = {"audio": "audio", "visual": "visual", "audio_visual": "audio-visual"}
F32_MAX = float(np.finfo(np.float32).max)


def _warn_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass
class LoadedRun:
    run: RunDir
    cfg: ExperimentConfig
    model: nn.Module
    tokenizer: Any
    device: str
    dims: tuple[int, int]
    backbone_source: str
    status: str  # run.json's status: "finished", or "running" for a run that was killed or is still training
    record: dict[str, Any]  # the whole run.json: data, data_fingerprint, dims, ...


def load_run(root: Path, warn=_warn_stderr) -> LoadedRun:
    """The run's config, model and best weights; a missing, foreign or damaged run is a one-line error.

    An unfinished run (killed, or still training) is scored with its best checkpoint so far, with a warning.
    """
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
    try:
        dims = (int(dims[0]), int(dims[1]))
    except (TypeError, ValueError, IndexError, KeyError):
        raise RunError(f"{run.status}: dims: expected two integers (audio, vision), got {dims!r}") from None
    state = str(status.get("status") or "unknown")
    if state != "finished":
        warn(f"{run.root} is unfinished (status {state}): scoring its best checkpoint so far")
    device = resolve_device(cfg.training.device)
    model, backbone = build_model(cfg, dims=dims, device=device)  # as trained
    if why := run.backbone_mismatch(backbone.fingerprint):
        warn(f"{why}: the scores are not the trained model's")
    load_weights(model, run.best)
    model.eval()
    return LoadedRun(run, cfg, compiled(model, cfg.training.compile, device), backbone.tokenizer, device, dims,
                     backbone.source, state, status)


def _drop(full: dict[str, float], ablated: dict[str, float]) -> dict[str, float]:
    """How much worse each metric gets (positive = worse), whichever direction is better."""
    from .metrics import LOWER_IS_BETTER

    return {k: (ablated[k] - full[k]) if k in LOWER_IS_BETTER else (full[k] - ablated[k]) for k in full}


def eval_run(root: Path, split: str = "test", modality_ablation: bool = False, warn=_warn_stderr) -> dict[str, Any]:
    from .dataset import SplitDataset, make_loader
    from .train import evaluate, open_data

    if split not in ("test", "valid"):
        raise DmpfError(f"--split: expected test or valid, got '{split}'")
    loaded = load_run(root, warn)
    cfg = loaded.cfg
    data_dir = loaded.record.get("data")
    if data_dir:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": data_dir})})
    prepared = open_data(cfg, prepare_missing=False)
    recorded = loaded.record.get("data_fingerprint")
    if recorded and recorded != prepared.fingerprint:
        warn(f"{prepared.path} was prepared again since {loaded.run.root} trained on it: the data may differ "
             "from what the run saw")
    dataset = SplitDataset(prepared.split(split), loaded.tokenizer, cfg.data.text_len)
    loader = make_loader(dataset, cfg.training.batch_size, shuffle=False, num_workers=cfg.data.num_workers)
    full = evaluate(loaded.model, loader, cfg, loaded.device)
    result: dict[str, Any] = {"run": str(loaded.run.root), "run_status": loaded.status, "split": split,
                              "samples": len(dataset), "backbone": loaded.backbone_source, "metrics": full}
    if modality_ablation:
        result["ablation"] = {}
        groups = getattr(loaded.model, "_orig_mod", loaded.model).groups  # a compiled model wraps the DMPF
        if not groups:
            warn(f"{loaded.run.root} is a text-only run: it has no audio or visual stream to remove")
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


def _show(value: Any) -> str:
    """A JSON value as the user wrote it, kept short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _float32(arr: np.ndarray, where: str) -> np.ndarray:
    """``arr`` (2-D) as float32, or a ValueError naming the first value that is not finite or does not fit."""
    arr = arr.astype(np.float64, copy=False)
    for bad, what in ((~np.isfinite(arr), "expected a finite number"),
                      (np.abs(arr) > F32_MAX, f"expected a number within float32's range (±{F32_MAX:.4g})")):
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise ValueError(f"{where}: frame {i}, value {j}: {what}, got {arr[i, j]:g}")
    return arr.astype(np.float32)


def _frames(value: Any, dim: int, key: str, base: Path) -> np.ndarray:
    """A sample's frames, (length >= 1, dim) float32: finite numbers only (no booleans, NaN, infinity, overflow)."""
    if isinstance(value, str):
        path = (base / value).expanduser() if not Path(value).is_absolute() else Path(value)
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:  # an empty file is an EOFError
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ValueError(f"{key}: cannot read {path} ({reason})") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            raise ValueError(f"{key}: {path}: expected one array (.npy), got {type(arr).__name__}")
        where = f"{key}: {path}"
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{where}: expected numbers, got {arr.dtype}")
    else:
        where = key
        if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
            raise ValueError(f"{key}: expected a list of frames (lists of numbers) or a path to an .npy file")
        types: set[type] = set()
        for row in value:
            types.update(map(type, row))
        if not types <= {int, float}:  # bool is a subclass of int: compare types exactly
            i, j = next((i, j) for i, row in enumerate(value) for j, x in enumerate(row) if type(x) not in (int, float))
            raise ValueError(f"{key}: frame {i}, value {j}: expected a number, got {_show(value[i][j])}")
        lengths = sorted({len(row) for row in value})
        if len(lengths) > 1:
            raise ValueError(f"{key}: expected frames of {dim} numbers each, got frames of {lengths[0]} to "
                             f"{lengths[-1]} numbers")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except OverflowError:  # an integer beyond float64
            i, j = next((i, j) for i, row in enumerate(value) for j, x in enumerate(row) if abs(x) > F32_MAX)
            raise ValueError(f"{key}: frame {i}, value {j}: expected a number within float32's range "
                             f"(±{F32_MAX:.4g}), got {_show(value[i][j])}") from None
    if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 1:
        raise ValueError(f"{key}: expected frames of shape (length >= 1, {dim}), got {tuple(arr.shape)}")
    return _float32(arr, where)


_WS = re.compile(r"[ \t\n\r]*")


def _json_array(path: Path, text: str) -> list[tuple[int, Any]]:
    """(line, item) for each item of a top-level JSON array; a syntax error anywhere is a one-line error before
    any item is used (nothing after it can be trusted)."""
    decoder = json.JSONDecoder()
    items: list[tuple[int, Any]] = []

    def broken(at: int, what: str) -> InputError:
        return InputError(f"--input: {path}:{text.count(chr(10), 0, at) + 1}: not a valid JSON array ({what})")

    pos = _WS.match(text, _WS.match(text).end() + 1).end()  # past "["
    line, counted = 1, 0
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            line, counted = line + text.count("\n", counted, pos), pos
            try:
                item, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise broken(exc.pos, f"{exc.msg}, column {exc.colno}") from None
            items.append((line, item))
            pos = _WS.match(text, pos).end()
            if text.startswith("]", pos):
                pos += 1
                break
            if not text.startswith(",", pos):
                raise broken(pos, "expected ',' or ']' after an item")
            pos = _WS.match(text, pos + 1).end()
    pos = _WS.match(text, pos).end()
    if pos != len(text):
        raise broken(pos, "extra data after the array")
    return items


def _items(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, raw line as bytes) of a JSONL file, or (line number, item) of a file holding one JSON array."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"--input: {path}: cannot read ({exc.strerror or exc})") from None
    with handle:
        while (head := handle.read(65536)) and not head.strip():
            pass
        if head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\n\r")[:1] == b"[":  # a JSON array of samples, pretty or not
            handle.seek(0)
            try:
                text = handle.read().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InputError(f"--input: {path}: not UTF-8 text (byte {exc.start})") from None
            yield from _json_array(path, text)
            return
        handle.seek(0)
        yield from enumerate(handle, start=1)


def _sample(record: Any, number: int, dims: tuple[int, int], base: Path) -> Sample:
    """One sample from a parsed JSON value, or a ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {_show(record)}")
    sample_id = record.get("id", f"line{number}")
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)) or not str(sample_id).strip():
        raise ValueError(f"id: expected a non-empty string or an integer, got {_show(sample_id)}")
    text = record.get("raw_text")
    if not isinstance(text, str):
        raise ValueError("raw_text: expected a string")
    for key in ("audio", "vision"):
        if key not in record:
            raise ValueError(f"{key}: missing")
    return Sample(str(sample_id), text, _frames(record["audio"], dims[0], "audio", base),
                  _frames(record["vision"], dims[1], "vision", base))


def read_jsonl(path: Path, dims: tuple[int, int], on_error: str, warn) -> Iterator[Sample]:
    """Samples from a JSONL file (or one JSON array of sample objects): raw_text, audio, vision (nested lists or
    .npy paths), optional id (a non-empty string or an integer).

    A malformed sample is skipped with a warning or, with ``on_error="fail"``, a one-line error (file:line);
    repeated ids get one warning; a file that yields no sample at all is a one-line error.
    """
    first_line: dict[str, int] = {}
    repeats: list[tuple[str, int]] = []
    skipped = 0
    for number, item in _items(path):
        try:
            if isinstance(item, bytes):
                if not item.strip():
                    continue
                item = json.loads(item.decode("utf-8-sig" if number == 1 else "utf-8"))
            sample = _sample(item, number, dims, path.parent)
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors too
            message = f"{path}:{number}: {' '.join(str(exc).split())}"
            if on_error == "fail":
                raise InputError(message) from None
            warn(f"skipped {message}")
            skipped += 1
            continue
        if sample.id in first_line:
            repeats.append((sample.id, number))
        else:
            first_line[sample.id] = number
        yield sample
    if repeats:
        sample_id, number = repeats[0]
        warn(f"{path}: {len(repeats)} sample(s) repeat an earlier id, the first '{sample_id}' (line {number} repeats "
             f"line {first_line[sample_id]}); every row is scored, so ids in the output are not unique")
    if not first_line:
        why = (f"every sample is malformed ({skipped} skipped, see the warnings above)" if skipped
               else "it holds no samples")
        raise InputError(f"--input: {path}: nothing to score: {why}")


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


def predict_run(root: Path, source: Path, output: Path | None, on_error: str, warn) -> tuple[int, str | None]:
    """Score every sample of ``source``; write CSV or JSONL (by ``output``'s suffix, CSV to stdout without one).

    Returns (number of samples scored, the text for stdout or None). Nothing to score is a one-line error, and
    then no file is written; an unwritable ``output`` is one before the run is loaded.
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
    if not source.is_dir() and source.suffix.lower() not in (".pkl", ".jsonl", ".json"):
        raise InputError(f"--input: {source}: expected a prepared directory, an MMSA .pkl, or a .jsonl file "
                         "(or a .json array) of samples")
    if output is not None:
        output = Path(output).expanduser()
        if output.exists() and output.resolve() == source.resolve():
            raise DmpfError(f"--output: {output} is the --input file; choose another name")
        _check_output(output)
    loaded = load_run(root, warn)
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
    else:  # .jsonl or .json
        samples = list(read_jsonl(source, loaded.dims, on_error, warn))
        batches = _batches_from_samples(samples, loaded.tokenizer, cfg.data.text_len, size)

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
    if not rows:
        raise InputError(f"--input: {source}: nothing to score: it holds no samples")
    text = _render(rows, "jsonl" if output is not None and output.suffix.lower() == ".jsonl" else "csv")
    if output is None:
        return len(rows), text
    _write(output, text)
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

