"""Reading MMSA processed pickles safely, and checking them against design.md §7.

A pickle can run code when it is loaded. :func:`load_pickle` therefore uses a restricted unpickler
that admits only what the MMSA layout needs — builtin containers and scalars, numpy arrays and
dtypes — and refuses anything else before it is called: a hostile file is rejected and nothing in it
runs. dmpf never loads a pickle any other way. The big arrays are not read into memory: they come
back as :class:`~dmpf_cli.data.pickle_stream.LazyArray` (rows read from the file when sliced), so a
MOSEI-sized file is imported in a fraction of its size (:mod:`dmpf_cli.data.pickle_stream`).

:func:`validate` checks the layout (splits, keys, one N per split, feature widths, lengths, label
range) and cleans what MMSA files are known to contain: −inf/NaN features become 0, undecodable or
empty ``raw_text`` is repaired and counted. Every problem is one line naming the file, split and key.

**Aligned files.** MMSA's ``aligned_50.pkl`` (MOSI, MOSEI) has every stream word-aligned to the text: audio and
vision are padded to the text's length (50), and MMSA's loader reads no ``*_lengths`` there
(``src/MMSA/data_loader.py``: only ``if not need_data_aligned``). :func:`is_aligned` says whether a file is one:
by its hash when it is a published aligned file, otherwise by its layout — in the train split every stream is
padded to the text's length (``text`` (N, L, 768) or ``text_bert`` (N, 3, L)) and its lengths are absent or all
that length. Then every split must have every stream at its text's length, and the lengths are read from the
frames, not the file: frames after a sample's last frame with any non-zero value (in any stream) are padding,
as MMSA pads with zeros (its own ``data/getLengths.py`` derives the unaligned files' lengths from zero frames
the same way). Both streams get that length: they are aligned to the same words. A sample with no non-zero
frame gets length 0 (no real frames), never an invented one.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from ..streams import DATASETS, MODALITIES, SPLITS, UNIMODAL_LABELS, PublishedFile
from .pickle_stream import ArraySource, LazyArray, PickleTruncated, StreamingUnpickler
from .prepared import DataError, SplitReport

# the keys of an MMSA split (design.md §7), and CH-SIMS's unimodal labels
REQUIRED = ("raw_text", *(m.key for m in MODALITIES), *(m.lengths for m in MODALITIES), "regression_labels", "id")
REQUIRED_ALIGNED = tuple(k for k in REQUIRED if k not in {m.lengths for m in MODALITIES})  # lengths come from frames
UNIMODAL = tuple(f"regression_labels_{label}" for label in UNIMODAL_LABELS)


class UnsafePickleError(DataError):
    """The pickle asked for something outside the MMSA layout; it was refused before anything ran."""


# -- the restricted unpickler ----------------------------------------------------------------------

_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
             "bool", "slice", "range"}
_NUMPY = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}
_OTHER = {("_codecs", "encode"), ("collections", "OrderedDict")}  # protocol-2 bytes; ordered dicts


class _SafeUnpickler(StreamingUnpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (module == "builtins" and name in _BUILTINS) or (module, name) in _NUMPY or (module, name) in _OTHER
        if not allowed:
            hint = (" (MMSA-FET's return_type='pt' saves torch tensors: save with return_type='np')"
                    if module.split(".")[0] == "torch" else "")
            raise UnsafePickleError(
                f"refused to load {module}.{name}: an MMSA pickle holds only builtin containers and numpy arrays{hint}"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused a persistent reference: an MMSA pickle has none")


class _HashingReader(io.RawIOBase):
    """Reads through a file, hashing every byte and reporting progress (one pass for both)."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None] | None):
        self.raw, self.progress, self.sha256, self.position = raw, progress, hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.position += n
            if self.progress:
                self.progress(n)
        return n or 0


def load_pickle(path: Path, progress: Callable[[int], None] | None = None) -> tuple[Any, str]:
    """Unpickle ``path`` with the restricted unpickler; returns (object, sha256 of the file).

    Arrays of :data:`~dmpf_cli.data.pickle_stream.LARGE` bytes or more come back as lazy arrays that read
    ``path`` when sliced; they refuse to once the file has changed.
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected an MMSA .pkl file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with raw:
        reader = _HashingReader(raw, progress)
        try:
            source = ArraySource.of(path, os.fstat(raw.fileno()))
            obj = _SafeUnpickler(io.BufferedReader(reader, buffer_size=1 << 22), source).load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{path}: {exc}") from None
        except PickleTruncated as exc:
            raise DataError(f"{path}: the file ends too early (truncated or damaged pickle): {exc}") from None
        except (EOFError, struct.error):  # struct.error: a fixed-size field cut short by the end of the file
            raise DataError(f"{path}: the file ends too early (truncated or empty pickle)") from None
        except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, OverflowError) as exc:
            raise DataError(f"{path}: not a readable pickle ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
        buffer = bytearray(1 << 22)
        while reader.readinto(buffer):  # the hash covers the whole file, whatever trails the pickle
            pass
    return obj, reader.sha256.hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- validation ------------------------------------------------------------------------------------

def _as_text(value: Any) -> tuple[str, bool, bool]:
    """(text, was_undecodable, is_empty) for one raw_text entry."""
    undecodable = False
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            value, undecodable = bytes(value).decode("utf-8", errors="replace"), True
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates from a bad decode upstream
            value, undecodable = value.encode("utf-8", errors="replace").decode("utf-8"), True
    elif value is None or (isinstance(value, float) and math.isnan(value)):
        value = ""
    else:
        value = str(value)
    return value, undecodable, not value.strip()


def text_length(split: Any) -> int | None:
    """The text's padded length in an MMSA split: from its BERT features ``text`` (N, L, 768) or its token ids
    ``text_bert`` (N, 3, L); None where it has neither."""
    if not isinstance(split, dict):
        return None
    text, bert = split.get("text"), split.get("text_bert")
    if getattr(text, "ndim", None) == 3:
        return int(text.shape[1])
    if getattr(bert, "ndim", None) == 3:
        return int(bert.shape[2])
    return None


def is_aligned(data: Any, published: PublishedFile | None = None) -> bool:
    """Whether ``data`` is an aligned MMSA file (every stream at the text's length; see the module's docstring).

    ``published``: the published file whose hash the source has, which decides; else the train split's layout.
    """
    if published is not None:
        return published.aligned
    train = data.get("train") if isinstance(data, dict) else None
    length = text_length(train)
    if length is None:
        return False
    for m in MODALITIES:
        frames = train.get(m.key)
        if getattr(frames, "ndim", None) != 3 or frames.shape[1] != length:
            return False
        if m.lengths in train:
            try:
                lengths = np.asarray(train[m.lengths])
                if lengths.ndim != 1 or not np.all(lengths == length):
                    return False
            except (TypeError, ValueError):
                return False
    return True


def aligned_lengths(frames: list[Any], n: int, chunk: int = 512) -> np.ndarray:
    """Per sample, 1 + the index of its last frame with any non-zero value in any of ``frames`` (N, L, D) —
    the frames after it are zero padding — or 0 where there is none. Read ``chunk`` samples at a time."""
    lengths = np.zeros(n, dtype=np.int64)
    for start in range(0, n, chunk):
        real = None
        for arr in frames:
            block = np.asarray(arr[start:start + chunk])
            nonzero = np.any(block != 0, axis=2)  # (B, L): NaN and ±inf count as values, not padding
            real = nonzero if real is None else real | nonzero
        assert real is not None
        last = real.shape[1] - np.argmax(real[:, ::-1], axis=1)  # 1 + the last real frame's index
        lengths[start:start + chunk] = np.where(real.any(axis=1), last, 0)
    return lengths


def validate(data: Any, dataset: str, source: Path, *, aligned: bool | None = None,
             ) -> tuple[dict[str, dict[str, Any]], dict[str, SplitReport]]:
    """Check ``data`` against the dataset's layout; returns the cleaned splits and a report per split.

    Feature arrays are returned as they are, lazy or not (non-finite values are replaced while writing,
    see :func:`~dmpf_cli.data.prepared.clean_features`), texts and ids as lists of str.

    ``aligned``: whether the file is an aligned one (:func:`is_aligned`; None: decided from its layout). An aligned
    file needs no ``*_lengths``: they are read from its frames (:func:`aligned_lengths`).
    """
    spec = DATASETS[dataset]
    if aligned is None:
        aligned = is_aligned(data)

    def fail(where: str, what: str) -> DataError:
        return DataError(f"{source}: {where}: {what}")

    if not isinstance(data, dict):
        raise fail("top level", f"expected a dict with splits {', '.join(SPLITS)}, got {type(data).__name__}")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise fail("top level", f"missing split(s) {', '.join(missing)} (found: {', '.join(map(str, data)) or 'none'})")

    splits, reports = {}, {}
    dims: dict[str, int] = {}
    for name in SPLITS:
        split = data[name]
        if not isinstance(split, dict):
            raise fail(name, f"expected a dict of arrays, got {type(split).__name__}")
        required = (REQUIRED_ALIGNED if aligned else REQUIRED) + (UNIMODAL if spec.unimodal_labels else ())
        absent = [k for k in required if k not in split]
        if absent:
            raise fail(name, f"missing key(s) {', '.join(absent)}")

        n = _length(split["regression_labels"], fail(f"{name}.regression_labels", "expected an array"))
        for key in required:
            found = _length(split[key], fail(f"{name}.{key}", f"expected an array, got {type(split[key]).__name__}"))
            if found != n:
                raise fail(f"{name}.{key}", f"has {found} samples, expected {n} (as regression_labels)")

        out: dict[str, Any] = {}
        length = text_length(split) if aligned else None
        for modality, width in zip(MODALITIES, spec.feature_dims):
            key, expected_dim = modality.key, None if spec.generated else width
            arr = split[key]
            if not isinstance(arr, (np.ndarray, LazyArray)) or arr.ndim != 3 or not np.issubdtype(arr.dtype, np.number):
                raise fail(f"{name}.{key}", f"expected a numeric array (N, length, features), got "
                                            f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}")
            want = expected_dim if expected_dim is not None else dims.get(key, arr.shape[2])
            if arr.shape[2] != want:
                raise fail(f"{name}.{key}", f"feature width {arr.shape[2]}, expected {want} for {dataset}")
            dims[key] = want
            out[key] = arr
            if aligned:
                if length is None:
                    length = arr.shape[1]  # a published aligned file without its text: the first stream's length
                if arr.shape[1] != length:
                    raise fail(f"{name}.{key}", f"padded to {arr.shape[1]} frames, expected {length} (an aligned "
                                                "file has every stream at the text's length)")
                continue
            lengths = np.asarray(split[modality.lengths])
            if lengths.ndim != 1 or not (np.issubdtype(lengths.dtype, np.integer) or np.issubdtype(lengths.dtype, np.floating)):
                raise fail(f"{name}.{modality.lengths}", f"expected integers, got {lengths.dtype} {lengths.shape}")
            if np.issubdtype(lengths.dtype, np.floating) and not np.all(np.isfinite(lengths) & (lengths == np.round(lengths))):
                raise fail(f"{name}.{modality.lengths}", "expected whole numbers")
            lengths = lengths.astype(np.int64)
            bad = np.flatnonzero((lengths < 0) | (lengths > arr.shape[1]))
            if bad.size:
                raise fail(f"{name}.{modality.lengths}", f"{bad.size} length(s) outside 0..{arr.shape[1]} (the padded "
                                                    f"length), first at index {bad[0]}: {lengths[bad[0]]}")
            out[modality.lengths] = lengths

        if aligned:
            shared = aligned_lengths([out[m.key] for m in MODALITIES], n)
            out.update({m.lengths: shared.copy() for m in MODALITIES})

        lo, hi = spec.label_range
        for key in ("regression_labels",) + (UNIMODAL if spec.unimodal_labels else ()):
            labels = np.asarray(split[key])
            if not np.issubdtype(labels.dtype, np.number):
                raise fail(f"{name}.{key}", f"expected numbers, got {labels.dtype}")
            labels = labels.astype(np.float32).reshape(n)
            bad = np.flatnonzero(~np.isfinite(labels) | (labels < lo) | (labels > hi))
            if bad.size:
                raise fail(f"{name}.{key}", f"{bad.size} label(s) outside [{lo:g}, {hi:g}], first at index "
                                            f"{bad[0]}: {labels[bad[0]]}")
            out[key] = labels

        report = SplitReport(samples=n)
        texts = []
        for value in list(split["raw_text"]):
            text, undecodable, empty = _as_text(value)
            report.text_undecodable += undecodable
            report.text_empty += empty
            texts.append(text)
        out["raw_text"] = texts
        ids = [_as_text(v)[0] for v in list(split["id"])]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise fail(f"{name}.id", f"ids must be unique, '{dup}' repeats")
        out["id"] = ids
        splits[name], reports[name] = out, report
    return splits, reports


def _length(value: Any, error: DataError) -> int:
    try:
        return len(value)
    except TypeError:
        raise error from None
