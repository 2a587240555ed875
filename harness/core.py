"""The ground floor: token rows, batches and small model helpers every other module shares.

Nothing here knows about tasks, replay methods, backends or Ray; everything above imports from
here (never the other way round), so following a training step never climbs back up.

* :class:`TokenizedExample`, :func:`collate`, :func:`pad`: rows of token ids into tensors;
* :func:`token_nll`: per-position next-token NLL, the one definition of "the loss of a token";
* :class:`EvalBatch`, :func:`eval_batches`: fixed evaluation batches (landscape, plasticity);
* :func:`eval_mode`, :func:`device_of`, :func:`is_peft`: the model helpers;
* :func:`shard`: a rank's contiguous share of a list;
* :func:`cache_root`: where caches live (``$GERE_CACHE_DIR``, else ``~/.cache/gere-harness``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100
"""Label of a position that carries no loss (prompt, padding)."""


@dataclass(frozen=True)
class TokenizedExample:
    """A training sequence; ``n_prompt`` leading tokens carry no loss."""

    ids: tuple[int, ...]
    n_prompt: int


def pad(seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool = False) -> tuple[Tensor, Tensor]:
    """(ids, attention mask) of ``seqs`` padded to the longest, on the right or the left."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, sl] = torch.tensor(list(s), dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def collate(rows: Sequence[TokenizedExample], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded (input_ids, attention_mask, labels); labels are -100 on prompt and pad."""
    ids, mask = pad([r.ids for r in rows], pad_id)
    labels = torch.full_like(ids, IGNORE)
    for i, r in enumerate(rows):
        labels[i, r.n_prompt : len(r.ids)] = ids[i, r.n_prompt : len(r.ids)]
    return ids, mask, labels


def token_nll(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-position next-token NLL [B, L-1] (0 where the label is ignored)."""
    return F.cross_entropy(
        logits[:, :-1].transpose(1, 2).float(), labels[:, 1:], ignore_index=IGNORE, reduction="none"
    )


@dataclass(frozen=True)
class EvalBatch:
    """A fixed evaluation batch: right-padded ids, mask, labels (-100 where no loss)."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    @classmethod
    def from_examples(
        cls, rows: Sequence[TokenizedExample], pad_id: int, *, max_tokens: int | None = None
    ) -> EvalBatch:
        """Collate examples (each cut to ``max_tokens``); prompt tokens carry no loss."""
        if max_tokens is not None:
            rows = [
                TokenizedExample(ids=r.ids[:max_tokens], n_prompt=min(r.n_prompt, max_tokens))
                for r in rows
            ]
        return cls(*collate(rows, pad_id))

    @property
    def tokens(self) -> int:
        """Predicted (label) tokens: what a batch loss sums over."""
        return int((self.labels[:, 1:] != IGNORE).sum())


def eval_batches(
    examples: Sequence[TokenizedExample],
    pad_id: int,
    *,
    batch_size: int,
    max_examples: int | None = None,
    max_tokens: int | None = None,
) -> list[EvalBatch]:
    """The first ``max_examples`` examples (pass a fixed, seeded sample) in batches."""
    examples = list(examples[:max_examples] if max_examples is not None else examples)
    return [
        EvalBatch.from_examples(examples[i : i + batch_size], pad_id, max_tokens=max_tokens)
        for i in range(0, len(examples), batch_size)
    ]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode for the block; its previous mode is restored even on error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


def shard(items: Sequence, n_shards: int, index: int) -> list:
    """Contiguous share ``index`` of ``n_shards`` (sizes differ by at most one): concatenating
    all shards in order gives ``items``. How ranks split evaluation and landscape points."""
    if not 0 <= index < n_shards:
        raise ValueError(f"shard index {index} must be in [0, {n_shards})")
    bounds = [round(k * len(items) / n_shards) for k in range(n_shards + 1)]
    return list(items[bounds[index] : bounds[index + 1]])


def is_peft(model: nn.Module) -> bool:
    """A PEFT-wrapped model (LoRA adapters)."""
    return hasattr(model, "peft_config")


def add_to_registry(registry: dict[str, type], cls: type, what: str) -> None:
    """Put ``cls`` in ``registry`` under its ``name`` class attribute (the one rule of every
    registry here: a non-empty name that no other class holds). ``what`` names the registry
    in errors ('replay method', 'intervention')."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a class attribute `name: ClassVar[str]`.")
    if name in registry and registry[name] is not cls:
        raise ValueError(
            f"{what} name {name!r} is taken by {registry[name].__qualname__}; pick another "
            f"name for {cls.__qualname__}."
        )
    registry[name] = cls
