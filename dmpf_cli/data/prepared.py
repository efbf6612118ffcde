"""The prepared data format: what ``dmpf prepare`` writes and what training and evaluation read.

A prepared directory holds, per split, one ``.npy`` file per array (memory-mapped when read, so a
MOSEI-sized dataset never has to fit in memory), the texts and ids as JSON, and ``manifest.json``
(shapes, dims, counts, label statistics, the source file's hash, the format version)::

    DIR/manifest.json
    DIR/train/audio.npy  vision.npy  audio_lengths.npy  vision_lengths.npy  labels.npy  [labels_T/A/V.npy]
    DIR/train/raw_text.json  id.json
    DIR/valid/...  DIR/test/...

It is written into a hidden sibling directory and renamed into place only when complete, so an
interrupted prepare never leaves a directory that looks finished; the manifest is the last file
written. Preparing the same source again is a no-op (same path, size and modification time).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..errors import DmpfError
from ..fileio import atomic_write_text, move_into_place
from ..streams import DATASETS, MODALITIES, SPLITS, UNIMODAL_LABELS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 512  # samples per block when copying feature arrays: bounds the extra memory


class DataError(DmpfError):
    """A data file that cannot be used; one line naming the file and what is wrong."""


@dataclass
class SplitReport:
    """What the importer repaired in one split; recorded in the manifest."""

    samples: int = 0
    replaced: dict[str, int] = field(default_factory=dict)  # modality -> non-finite values set to 0
    text_undecodable: int = 0
    text_empty: int = 0


def clean_features(block: np.ndarray) -> tuple[np.ndarray, int]:
    """A float32 copy of ``block`` with −inf/+inf/NaN set to 0, and how many were replaced."""
    out = np.array(block, dtype=np.float32, copy=True)
    bad = ~np.isfinite(out)
    count = int(bad.sum())
    if count:
        out[bad] = 0.0
    return out, count


def data_home() -> Path:
    """Where prepared datasets live by default: ``$DMPF_DATA_DIR``, else ``~/.cache/dmpf/data``."""
    return Path(os.environ.get("DMPF_DATA_DIR") or Path.home() / ".cache" / "dmpf" / "data").expanduser()


def default_dir(dataset: str, size: str | None = None, seed: int | None = None) -> Path:
    if dataset == "synthetic":
        return data_home() / f"synthetic-{size}-seed{seed}"
    return data_home() / dataset


def _label_stats(labels: np.ndarray) -> dict[str, float]:
    return {"min": float(labels.min()), "max": float(labels.max()), "mean": float(labels.mean()),
            "std": float(labels.std())} if labels.size else {}


def source_stamp(source: Path) -> dict[str, Any]:
    st = source.stat()
    return {"path": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a complete prepared directory, or None where there is none."""
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{directory / MANIFEST}: unreadable manifest ({exc})") from None


def is_up_to_date(directory: Path, expect: dict[str, Any]) -> bool:
    """True when ``directory`` is a complete prepared dataset whose manifest matches ``expect`` (a subset)."""
    manifest = read_manifest(directory)
    if manifest is None or manifest.get("format_version") != FORMAT_VERSION:
        return False
    return all(manifest.get(key) == value for key, value in expect.items())


def check_output(output: Path) -> None:
    """Where a dataset is prepared must be new, empty, or a prepared dataset (only that may be replaced)."""
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: is a file, not a directory; choose another --output")
    if output.is_dir() and not (output / MANIFEST).is_file() and any(output.iterdir()):
        raise DataError(f"{output}: exists and is not a prepared dmpf dataset (no {MANIFEST}); nothing in it is "
                        "replaced, even with --overwrite: choose another --output")


def remove_stale_leftovers(output: Path) -> None:
    """Remove what a killed prepare left beside ``output``: partial directories and generated sources."""
    for stale in [*output.parent.glob(f".{output.name}.partial-*"), *output.parent.glob(f".{output.name}.source-*.pkl")]:
        pid = stale.name.removesuffix(".pkl").rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)) and (int(pid) != os.getpid() or not stale.is_dir()):
            continue  # another prepare is writing it right now (or this one is reading its source)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_prepared(
    output: Path,
    dataset: str,
    splits: dict[str, dict[str, Any]],
    reports: dict[str, SplitReport],
    extra: dict[str, Any],
    *,
    overwrite: bool,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the validated ``splits`` to ``output`` atomically; returns the manifest.

    Feature arrays (numpy or :class:`~dmpf_cli.data.pickle_stream.LazyArray`) are read, cleaned and written
    :data:`CHUNK` samples at a time.

    ``extra`` goes into the manifest (source stamp and hash, synthetic info, …). ``progress(split, done,
    total)`` is called while feature arrays are copied.
    """
    output = output.expanduser()
    check_output(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise DataError(f"{output}: already holds a prepared dataset; pass --overwrite to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_leftovers(output)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    spec = DATASETS[dataset]
    # the unimodal labels where every split carries them (MMSA's CH-SIMS file does; a folder of clips may)
    unimodal = all(f"regression_labels_{k}" in splits[name] for name in SPLITS for k in UNIMODAL_LABELS)
    try:
        manifest_splits = {}
        for name in SPLITS:
            split, report = splits[name], reports[name]
            folder = partial / name
            folder.mkdir()
            files: dict[str, Any] = {}
            n = report.samples
            for key in (m.key for m in MODALITIES):
                src = split[key]
                # written block by block with plain writes: a memory map's dirty pages would count as ours
                with open(folder / f"{key}.npy", "wb") as out:
                    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                               "fortran_order": False, "shape": tuple(src.shape)})
                    replaced = 0
                    for start in range(0, n, CHUNK):
                        block, count = clean_features(src[start:start + CHUNK])
                        out.write(np.ascontiguousarray(block).data)
                        replaced += count
                        if progress:
                            progress(f"{name}.{key}", min(start + CHUNK, n), n)
                report.replaced[key] = replaced
                files[key] = {"shape": list(src.shape), "dtype": "float32"}
            arrays = {**{m.lengths: split[m.lengths] for m in MODALITIES}, "labels": split["regression_labels"]}
            if unimodal:
                arrays.update({f"labels_{k}": split[f"regression_labels_{k}"] for k in UNIMODAL_LABELS})
            for key, arr in arrays.items():
                np.save(folder / f"{key}.npy", arr)
                files[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
            for key in ("raw_text", "id"):
                (folder / f"{key}.json").write_text(json.dumps(split[key], ensure_ascii=False), encoding="utf-8")
            manifest_splits[name] = {
                "samples": n,
                "labels": _label_stats(split["regression_labels"]),
                "replaced_nonfinite": report.replaced,
                "text_undecodable": report.text_undecodable,
                "text_empty": report.text_empty,
                "files": files,
            }
        first = splits["train"]
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "dmpf_version": __version__,
            "dims": {m.key: int(first[m.key].shape[2]) for m in MODALITIES},
            "padded_length": {m.key: int(first[m.key].shape[1]) for m in MODALITIES},
            "label_range": list(spec.label_range),
            "unimodal_labels": unimodal,
            "splits": manifest_splits,
            **extra,
        }
        atomic_write_text(partial / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1))  # last: a directory with a manifest is complete
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    move_into_place(partial, output)
    return manifest


# -- reading ---------------------------------------------------------------------------------------

@dataclass
class Split:
    """One split of a prepared dataset; feature arrays are read-only memory maps.

    ``arrays`` holds each modality's frames (N, L, D) float32 and lengths (N,) int64 under their MMSA keys,
    also readable as attributes: ``split.audio``, ``split.audio_lengths``.
    """

    name: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray  # (N,) float32
    unimodal: dict[str, np.ndarray]  # "T"/"A"/"V" -> (N,) float32 where the dataset has them
    raw_text: list[str]
    ids: list[str]
    folder: Path | None = None  # where a prepared split lives (token caches go beside it)

    def __getattr__(self, key: str) -> np.ndarray:
        arrays = self.__dict__.get("arrays", {})
        if key in arrays:
            return arrays[key]
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Prepared:
    path: Path
    manifest: dict[str, Any]

    @property
    def dataset(self) -> str:
        return self.manifest["dataset"]

    @property
    def fingerprint(self) -> str:
        """Changes whenever the data changes: the dataset, its source's hash, when it was written, its splits."""
        import hashlib

        m = self.manifest
        key = [m.get("dataset"), m.get("source", {}).get("sha256"), m.get("created"),
               {name: split.get("samples") for name, split in m.get("splits", {}).items()}]
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def dims(self) -> tuple[int, ...]:
        """The feature width of each modality (``streams.MODALITIES`` order)."""
        return tuple(self.manifest["dims"][m.key] for m in MODALITIES)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}': expected one of {', '.join(SPLITS)}")
        folder = self.path / name

        def array(key: str, mmap: bool = False) -> np.ndarray:
            try:
                return np.load(folder / f"{key}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{folder / (key + '.npy')}: unreadable ({type(exc).__name__}: {exc}); "
                                "prepare the dataset again") from None

        def listing(key: str) -> list[str]:
            try:
                return json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{folder / (key + '.json')}: unreadable ({exc}); prepare the dataset again") from None

        unimodal = {k: array(f"labels_{k}") for k in UNIMODAL_LABELS} if self.manifest.get("unimodal_labels") else {}
        arrays = {**{m.key: array(m.key, True) for m in MODALITIES}, **{m.lengths: array(m.lengths) for m in MODALITIES}}
        split = Split(name, arrays, array("labels"), unimodal, listing("raw_text"), listing("id"), folder)
        expected = self.manifest["splits"][name]["samples"]
        features = [arrays[m.key] for m in MODALITIES]
        if any(len(x) != expected for x in (*features, split.labels, split.raw_text, split.ids)):
            raise DataError(f"{folder}: arrays disagree with the manifest's {expected} samples; prepare again")
        return split


def open_prepared(path: Path) -> Prepared:
    """Open a prepared directory; a missing, incomplete or foreign one is a one-line :class:`DataError`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no prepared dataset here (run `dmpf prepare` first)")
    manifest = read_manifest(path)
    if manifest is None:
        raise DataError(f"{path}: has no {MANIFEST}: not a prepared dataset, or an incomplete one")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"{path}: prepared format version {version}, this dmpf reads {FORMAT_VERSION}; prepare again")
    return Prepared(path, manifest)

