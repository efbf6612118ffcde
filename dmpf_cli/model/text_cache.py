"""The text rows' states before the first MM block, kept per text from one training step to the next.

The LM is frozen and text sees only text, so up to the first MM block the text rows of every block are a function
of the text alone (:func:`~dmpf_cli.model.fused.split_block_forward`): every epoch computes them again and gets
the same numbers. :class:`TextCache` keeps, per distinct text — its token ids and real-token mask — what the rest
of the step reads from them: each of those blocks' keys and values (the fusion tokens attend to them) and the text
rows after the last one. A training batch whose texts are all kept skips the text rows' computation there
(design.md §6); a batch with a text not kept yet computes them and keeps its texts.

It holds what the states were computed with (:meth:`TextCache.valid_for`: the backbone's weights, by storage and
version, the attention backend, dtypes and text length) and forgets everything when that changes. CPU only: its
keys are the ids' bytes, and on a GPU reading them would make the step wait for the device. Texts are kept up to
:data:`LIMIT_BYTES`; a training set with more gives the cache up (it empties and keeps nothing more), as a batch
is only served when every text in it is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

LIMIT_BYTES = 512 * 2**20  # the demo's ~6,000 training texts take ~185 MB
SLAB = 1024  # texts per block of memory: a few large allocations, not one small one per text


class TextCache:
    """Per text: a (S, T, D) tensor, the S states of :class:`~dmpf_cli.model.fused.FusedGPT2` stacked (each split
    block's keys and values, then the text rows after the last), held in slabs of :data:`SLAB` texts. (One small
    tensor per text instead fragments the allocator's heap: each step's large temporaries then come from fresh
    pages, and a training run spends more than the cache saves on page faults.)"""

    def __init__(self, limit_bytes: int = LIMIT_BYTES) -> None:
        self.limit_bytes = limit_bytes
        self.index: dict[bytes, int] = {}  # key → position in the slabs
        self.slabs: list[Tensor] = []
        self.full = False  # gave up: the texts seen did not fit
        self.signature: tuple | None = None

    @property
    def size(self) -> int:
        """Bytes held."""
        return sum(slab.numel() * slab.element_size() for slab in self.slabs)

    def valid_for(self, signature: tuple) -> bool:
        """Whether the cache may serve states computed under ``signature``; a new signature empties it."""
        if signature != self.signature:
            self.clear()
            self.signature = signature
        return not self.full

    def clear(self) -> None:
        self.index.clear()
        self.slabs.clear()
        self.full = False

    @staticmethod
    def keys(ids: Tensor, real: Tensor) -> list[bytes]:
        """One key per row of ``ids``/``real`` (B, T), on the CPU."""
        rows = torch.cat([ids, real.to(ids.dtype)], dim=1).numpy()
        return [row.tobytes() for row in rows]

    def lookup(self, keys: list[bytes]) -> Tensor | None:
        """The kept states of every key, (B, S, T, D), or None if one is not kept."""
        at = [self.index.get(key) for key in keys]
        if any(i is None for i in at):
            return None
        return torch.stack([self.slabs[i // SLAB][i % SLAB] for i in at])

    def store(self, keys: list[bytes], states: Tensor) -> None:
        """Keep ``states`` (B, S, T, D), row by row, for the keys not kept yet; past the limit, give up."""
        for key, row in zip(keys, states):
            if self.full or key in self.index:
                continue
            i = len(self.index)
            if i == len(self.slabs) * SLAB:
                if self.size + SLAB * row.numel() * row.element_size() > self.limit_bytes:
                    self.clear()
                    self.full = True
                    return
                self.slabs.append(row.new_empty((SLAB, *row.shape)))
            self.slabs[i // SLAB][i % SLAB].copy_(row)
            self.index[key] = i
