"""Batches for training and evaluation, read from a prepared split (memory-mapped).

Text is tokenised once per tokenizer and text length (:func:`tokenize`: right padding to ``text_len``,
a mask of real tokens), and stored beside the prepared split. A batch gathers its samples' rows from
the memory maps in index order (sequential reads), so a MOSEI-sized split is never loaded whole. Shuffling is a function of
(seed, epoch) only: the same seed gives the same batches whatever the number of workers.

Every batch has the same shape: the last, partial batch of an epoch is filled up with repeated
samples whose ``weight`` is 0, so the loss and the metrics ignore them and no sample is dropped —
static shapes are what lets a training step be compiled or captured as a CUDA graph. In a sampler's
index lists a filler is written ``-(i + 1)`` for sample ``i``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..streams import MODALITIES
from .prepared import Split


class SplitDataset(Dataset):
    """Indexed by a list of sample indices; returns one whole batch as a dict of tensors."""

    def __init__(self, split: Split, tokenizer: Any, text_len: int):
        self.split = split
        self.text_ids, self.text_real = cached_tokens(split, tokenizer, text_len)  # (N, T) each

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        marked = np.asarray(indices, dtype=np.int64)
        real = marked >= 0
        source = np.where(real, marked, -marked - 1)
        order = np.argsort(source, kind="stable")  # ascending: sequential reads from the memory maps
        idx, real = source[order], real[order]
        s = self.split
        batch = {
            "index": torch.from_numpy(idx),
            "weight": torch.from_numpy(real.astype(np.float32)),  # 0 for the fillers of a last batch
            "text_ids": self.text_ids[idx],
            "text_real": self.text_real[idx],
        }
        for m in MODALITIES:
            batch[m.key] = torch.from_numpy(np.ascontiguousarray(s.arrays[m.key][idx]))  # (B, L, D) float32
            batch[m.lengths] = torch.from_numpy(s.arrays[m.lengths][idx])  # (B,)
        batch["labels"] = torch.from_numpy(s.labels[idx])
        for key, labels in s.unimodal.items():
            batch[f"labels_{key}"] = torch.from_numpy(labels[idx])
        return batch


def unimodal_labels(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """A batch's unimodal labels ("T"/"A"/"V" -> (B,)), where its dataset has them."""
    labels = {k.removeprefix("labels_"): v for k, v in batch.items() if k.startswith("labels_")}
    return labels or None


def tokenize(tokenizer: Any, texts: list[str], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``ids`` (B, text_len) long and ``real`` (B, text_len) bool, right-padded and truncated to ``text_len``.

    The tokenizer's own special tokens are kept (GPT-2 adds none; the Chinese GPT-2's BERT tokenizer
    wraps the text in ``[CLS] ... [SEP]``). A text that yields no token at all (GPT-2 and an empty
    string) is encoded as one real end-of-text token (eos, else [SEP], else the pad token), so every
    row has at least one real token and ``real.sum(1) - 1`` is always the index of the last one.
    """
    if text_len < 1:
        raise ValueError(f"text_len must be at least 1, got {text_len}")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got {type(text).__name__}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    end_id = next(i for i in (tokenizer.eos_token_id, tokenizer.sep_token_id, pad_id) if i is not None)

    ids = torch.full((len(texts), text_len), int(pad_id), dtype=torch.long)
    real = torch.zeros((len(texts), text_len), dtype=torch.bool)
    if not texts:
        return ids, real
    encoded = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=text_len)["input_ids"]
    for row, seq in enumerate(encoded):
        seq = list(seq)[:text_len] or [end_id]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        real[row, : len(seq)] = True
    return ids, real


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash that changes whenever the tokenizer would encode text differently."""
    probe = "Hello world, it was great! 你好，很好看。 café"
    ids = tokenizer(probe)["input_ids"]
    key = [type(tokenizer).__name__, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, ids]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:12]


def token_cache_dir(prepared_dir: Path, tokenizer: Any, text_len: int) -> Path:
    """Where a prepared dataset keeps its text tokenised by ``tokenizer`` at ``text_len``."""
    return Path(prepared_dir) / "tokens" / f"{tokenizer_fingerprint(tokenizer)}-T{text_len}"


def cached_tokens(split: Split, tokenizer: Any, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and the real-token mask of a split, computed once per tokenizer and text length.

    For a prepared split they are stored beside it (``DIR/tokens/<tokenizer>-T<len>/<split>.npz``, written
    atomically); later runs read them instead of tokenising again.
    """
    path = None
    if split.folder is not None:
        path = token_cache_dir(split.folder.parent, tokenizer, text_len) / f"{split.name}.npz"
        if path.is_file():
            try:
                with np.load(path) as cached:
                    ids, real = torch.from_numpy(cached["ids"]), torch.from_numpy(cached["real"])
                if ids.shape == (len(split), text_len):
                    return ids, real
            except (OSError, ValueError, KeyError):
                pass  # damaged: tokenise again and replace it
    ids, real = tokenize(tokenizer, split.raw_text, text_len)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
            np.savez(tmp, ids=ids.numpy(), real=real.numpy())
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only dataset directory: tokenise each time
    return ids, real


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices; shuffled by (seed, epoch) when ``shuffle``. Call :meth:`set_epoch` each epoch."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        chunks = [order[start:start + self.batch_size].tolist() for start in range(0, self.n, self.batch_size)]
        if chunks and len(chunks[-1]) < self.batch_size:  # fill up with fillers (weight 0), cyclically from the start
            missing = self.batch_size - len(chunks[-1])
            chunks[-1] += [-(int(order[i % self.n]) + 1) for i in range(missing)]
        yield from chunks

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest else 0)


def make_loader(
    dataset: SplitDataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader yielding whole batches built by :class:`SplitDataset` (workers gather from the memory maps)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, generator=_own_generator())


def batch_loader(dataset: SplitDataset, batches: list[list[int]], *, num_workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """A DataLoader over a fixed list of batches (one epoch's, possibly resumed mid-way)."""
    return DataLoader(dataset, sampler=batches, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      generator=_own_generator())


def _own_generator() -> torch.Generator:
    """Each DataLoader iterator draws a worker seed; from its own generator it leaves the global RNG alone,
    so dropout draws do not depend on how many loaders were started (which a resumed run changes)."""
    return torch.Generator().manual_seed(0)
