"""``dmpf predict``'s own input: JSONL lines (or one JSON array) of samples, read strictly; and the same samples
given in memory (:func:`from_memory`, the Python API's ``predict``).

A sample is ``{"id": ..., "raw_text": "...", "audio": [[...], ...] or "frames.npy", "vision": ...}``: one
frames entry per modality (nested lists or a path to an ``.npy`` file, relative to the input file). Ids
are non-empty strings or integers; feature values are finite numbers within float32's range (NaN,
infinities and booleans are refused, in ``.npy`` files too). Every problem is one line naming the file
and line; :func:`read_jsonl` skips or fails on it, as asked.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DmpfError
from ..streams import MODALITIES

F32_MAX = float(np.finfo(np.float32).max)


@dataclass
class Sample:
    id: str
    raw_text: str
    frames: dict[str, np.ndarray]  # per modality key: (length >= 1, width) float32


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
    if isinstance(value, np.ndarray) or (hasattr(value, "__array__") and not isinstance(value, (list, str))):
        arr = np.asarray(value)  # an array in memory (numpy, or a torch tensor on the CPU)
        where = key
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{key}: expected numbers, got {arr.dtype}")
    elif isinstance(value, str):
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
            except RecursionError:
                raise broken(pos, "an item nested too deeply") from None
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


def _sample(record: Any, number: int, dims: tuple[int, ...], base: Path) -> Sample:
    """One sample from a parsed JSON value, or a ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {_show(record)}")
    sample_id = record.get("id", f"line{number}")
    if isinstance(sample_id, bool) or not isinstance(sample_id, (str, int)) or not str(sample_id).strip():
        raise ValueError(f"id: expected a non-empty string or an integer, got {_show(sample_id)}")
    text = record.get("raw_text")
    if not isinstance(text, str):
        raise ValueError("raw_text: expected a string")
    for m in MODALITIES:
        if m.key not in record:
            raise ValueError(f"{m.key}: missing")
    return Sample(str(sample_id), text, {m.key: _frames(record[m.key], dim, m.key, base)
                                         for m, dim in zip(MODALITIES, dims)})


def read_jsonl(path: Path, dims: tuple[int, ...], on_error: str, warn) -> Iterator[Sample]:
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
                try:
                    item = json.loads(item.decode("utf-8-sig" if number == 1 else "utf-8"))
                except RecursionError:
                    raise ValueError("not a JSON object: nested too deeply") from None
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


def from_memory(samples: Any, dims: tuple[int, ...]) -> list[Sample]:
    """Samples given in memory: a list of dicts, or one dict of equal-length columns, each sample with ``text`` (or
    ``raw_text``), one frames array per modality (``audio``, ``vision``: (length >= 1, width), numpy arrays or nested
    lists) and an optional ``id`` (default: its position). Checked as :func:`read_jsonl` checks a file; the first
    problem is a one-line :class:`InputError` naming the sample (``samples[3]: audio: ...``)."""
    if isinstance(samples, dict):
        columns = {k: v for k, v in samples.items()}
        lengths = {k: len(v) for k, v in columns.items() if hasattr(v, "__len__") and not isinstance(v, str)}
        if len(lengths) != len(columns) or len(set(lengths.values())) > 1:
            raise InputError("samples: a dict of columns needs one sequence per key, all of the same length; got "
                             + ", ".join(f"{k}: {lengths.get(k, type(v).__name__)}" for k, v in columns.items()))
        n = next(iter(lengths.values()), 0)
        samples = [{k: columns[k][i] for k in columns} for i in range(n)]
    if isinstance(samples, (str, bytes)) or not hasattr(samples, "__iter__"):
        raise InputError(f"samples: expected a list of sample dicts or a dict of columns, got {type(samples).__name__}")
    out = []
    for i, record in enumerate(samples):
        where = f"samples[{i}]"
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a dict with text, {', '.join(m.key for m in MODALITIES)}, got "
                             f"{type(record).__name__}")
        record = dict(record)
        if "raw_text" not in record and "text" in record:
            record["raw_text"] = record.pop("text")
        record.setdefault("id", i)
        if isinstance(record["id"], np.integer):
            record["id"] = int(record["id"])
        if "raw_text" in record and not isinstance(record["raw_text"], str):
            raise InputError(f"{where}: text: expected a string, got {type(record['raw_text']).__name__}")
        try:
            out.append(_sample(record, i, dims, Path(".")))
        except ValueError as exc:
            raise InputError(f"{where}: {' '.join(str(exc).split())}") from None
    if not out:
        raise InputError("samples: nothing to score: no samples given")
    return out


FET_KEYS = {"audio": "audio", "video": "vision"}  # MMSA-FET run_single's keys → dmpf's modality keys


def is_fet_single(data: Any) -> bool:
    """Whether an unpickled object is MMSA-FET's ``run_single`` output: one sample's features, a dict with
    ``audio`` and/or ``video`` (and ``text``) arrays, no splits."""
    return isinstance(data, dict) and bool(data) and set(data) <= {"audio", "video", "text"} and \
        bool(set(data) & set(FET_KEYS))


def from_fet_single(data: dict[str, Any], path: Path, dims: tuple[int, ...], transcript: str | None,
                    trained_on: str) -> Sample:
    """The one sample of MMSA-FET's ``run_single`` pickle (``audio`` and ``video``: (frames, features) arrays;
    ``text``: text *features*, which DMPF cannot use — it reads the words through its own GPT-2 — so the transcript
    comes from ``transcript``, or from ``text`` where that is a string). Every mismatch is one line naming the
    file: a modality missing, a feature width other than the model's (``trained_on``: its dataset, for the message),
    no transcript."""
    frames = {}
    for fet_key, key in FET_KEYS.items():
        dim = dims[[m.key for m in MODALITIES].index(key)]
        if fet_key not in data:
            raise InputError(f"--input: {path}: no '{fet_key}' features (MMSA-FET's config had no {fet_key} extractor); "
                             f"the model needs {key} frames of {dim} features")
        value = np.asarray(data[fet_key])
        if value.ndim == 3 and value.shape[0] == 1:  # a batch of one
            value = value[0]
        if value.ndim != 2:
            raise InputError(f"--input: {path}: {fet_key}: expected (frames, features), got shape {tuple(value.shape)}")
        if value.shape[1] != dim:
            raise InputError(f"--input: {path}: {fet_key}: {value.shape[1]} features per frame, but the model was trained "
                             f"on {dim} ({trained_on}); extract with the same features as its training data")
        try:
            frames[key] = _frames(value, dim, fet_key, path.parent)
        except ValueError as exc:
            raise InputError(f"--input: {path}: {' '.join(str(exc).split())}") from None
    text = data.get("text")
    if transcript is None and isinstance(text, str):
        transcript = text
    if transcript is None:
        raise InputError(f"--input: {path}: MMSA-FET's text features cannot be read by DMPF, which reads the words "
                         "through its own language model; pass --transcript \"what was said\"")
    return Sample(path.stem, transcript, frames)
