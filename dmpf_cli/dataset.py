"""Batches for training and evaluation, read from a prepared split (memory-mapped).

Text is tokenised once, when the dataset is built, with the backbone's tokenizer (right padding to
``text_len``, a mask of real tokens). A batch gathers its samples' rows from the memory maps in index
order (sequential reads), so a MOSEI-sized split is never loaded whole. Shuffling is a function of
(seed, epoch) only: the same seed gives the same batches whatever the number of workers.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .prepared import Split


class SplitDataset(Dataset):
    """Indexed by a list of sample indices; returns one whole batch as a dict of tensors."""

    def __init__(self, split: Split, tokenizer: Any, text_len: int):
        from .backbones import tokenize

        self.split = split
        self.text_ids, self.text_real = tokenize(tokenizer, split.raw_text, text_len)  # (N, T) each

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.sort(np.asarray(indices, dtype=np.int64))  # ascending: sequential reads from the memory maps
        s = self.split
        batch = {
            "index": torch.from_numpy(idx),
            "text_ids": self.text_ids[idx],
            "text_real": self.text_real[idx],
            "audio": torch.from_numpy(np.ascontiguousarray(s.audio[idx])),  # (B, La, Da) float32
            "audio_lengths": torch.from_numpy(s.audio_lengths[idx]),
            "vision": torch.from_numpy(np.ascontiguousarray(s.vision[idx])),  # (B, Lv, Dv) float32
            "vision_lengths": torch.from_numpy(s.vision_lengths[idx]),
            "labels": torch.from_numpy(s.labels[idx]),
        }
        for key, labels in s.unimodal.items():
            batch[f"labels_{key}"] = torch.from_numpy(labels[idx])
        return batch


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices; shuffled by (seed, epoch) when ``shuffle``. Call :meth:`set_epoch` each epoch."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, drop_last: bool = False):
        self.n, self.batch_size, self.shuffle, self.seed, self.drop_last = n, batch_size, shuffle, seed, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.n)
        chunks = [order[start:start + self.batch_size].tolist() for start in range(0, self.n, self.batch_size)]
        if chunks and len(chunks[-1]) < self.batch_size:
            if self.drop_last:
                chunks.pop()
            elif len(chunks[-1]) == 1 and len(chunks) > 1:
                last = chunks.pop()
                chunks[-1] += last  # no batch of one: BatchNorm cannot train on it
        yield from chunks

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        if self.drop_last or not rest:
            return full
        return full if rest == 1 and full else full + 1


def make_loader(
    dataset: SplitDataset, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
    pin_memory: bool = False, drop_last: bool = False,
) -> DataLoader:
    """A DataLoader yielding whole batches built by :class:`SplitDataset` (workers gather from the memory maps)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
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
