"""The replay buffer: tokenised general texts replayed alongside every task.

GeRe replays ~1,000 general web texts truncated to at most 563 tokens. The buffer holds only
token ids (already truncated) so it is cheap to build, hash and ship to Ray workers; padding is
added per batch by :meth:`ReplayBuffer.collate`, right-padded so that, under a causal mask, the
real tokens of a row never attend to its padding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IGNORE_INDEX = -100
"""Label value that HF causal-LM losses skip (padding)."""


@dataclass(frozen=True)
class ReplayBuffer:
    """Tokenised replay texts; row ``i`` of any batch built from it is buffer index ``i``."""

    token_ids: tuple[tuple[int, ...], ...]
    """One tuple of token ids per replay text, already truncated (GeRe: <= 563 tokens)."""
    pad_id: int
    """Token id written at padding positions; they are masked, so its value never matters."""

    def __post_init__(self) -> None:
        # Coerce lists to tuples so the buffer is hashable and cannot be mutated under a cache.
        object.__setattr__(
            self, "token_ids", tuple(tuple(int(t) for t in s) for s in self.token_ids)
        )
        empty = [i for i, s in enumerate(self.token_ids) if not s]
        if empty:
            raise ValueError(
                f"ReplayBuffer texts {empty[:5]} are empty; every replay text needs >= 1 token "
                "(drop empty texts before building the buffer)."
            )

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Number of real (non-padding) tokens per text, int64 [N]."""
        return np.fromiter((len(s) for s in self.token_ids), dtype=np.int64, count=len(self))

    def fingerprint(self) -> str:
        """SHA-256 of the token ids, so caches built from this buffer can be checked for reuse.

        The pad id is left out on purpose: padding is masked everywhere, so buffers that differ
        only in it give the same activation states.
        """
        digest = hashlib.sha256()
        for seq in self.token_ids:
            digest.update(np.asarray(seq, dtype=np.int64).tobytes())
            digest.update(b"|")
        return digest.hexdigest()

    def collate(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Right-padded batch of the given buffer rows.

        Returns ``input_ids`` [R, L] long, ``attention_mask`` [R, L] long (1 at real tokens),
        ``labels`` [R, L] long (``input_ids`` with -100 at padding; the model shifts them) and
        ``index`` [R] long (the buffer indices, which the TM loss uses to find each row's states).
        L is the longest selected text.
        """
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("ReplayBuffer.collate got no indices; pass at least one row.")
        bad = [i for i in indices if not 0 <= i < len(self)]
        if bad:
            raise IndexError(
                f"Replay indices {bad[:5]} out of range for a buffer of {len(self)} texts."
            )
        length = max(len(self.token_ids[i]) for i in indices)
        input_ids = torch.full((len(indices), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(indices), length), dtype=torch.long)
        for row, i in enumerate(indices):
            seq = self.token_ids[i]
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "index": torch.tensor(indices, dtype=torch.long),
        }
