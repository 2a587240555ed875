"""Compact cache of GeRe's activation states, and the threshold-margin (TM) loss.

GeRe's reference code keeps the frozen model's raw fp32 last hidden state h0 for every replay
token (~9 GB for 1,000 x 563 tokens x 4,096 dims). The TM loss needs far less: per hidden dim
the thresholds ``pos = mu + k*sigma`` and ``neg = mu - k*sigma``, and per (token, dim) which of
three states h0 was in. We store that state in 2 bits, four entries per byte (~577 MB at 8B,
1/16 of fp32), ragged over samples (only real tokens; ``offsets`` locates each sample), and
optionally as a ``np.memmap`` so workers share one page-cached copy.

Codes: 0 neutral (neg < h0 < pos), 1 positive (h0 >= pos), 2 negative (h0 <= neg), 3 reserved
(padding in gathered batches). Positive is tested first, so with sigma = 0 (or k = 0) an entry
at ``h0 == mu`` is positive.

The loss from the cache is bitwise identical to the loss from raw h0 (tests prove it with
``torch.equal``) because the states are computed with the same float32 comparisons the raw path
uses, and the loss itself only reads thresholds and states.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import Tensor

from harness.core import shard

if TYPE_CHECKING:
    from harness.replay.base import Ranks
    from harness.replay.buffer import ReplayBuffer

log = logging.getLogger(__name__)

NEUTRAL, POSITIVE, NEGATIVE, MASKED = 0, 1, 2, 3
"""The 2-bit state codes."""
_SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)
_PACKED_FILE, _STATS_FILE, _META_FILE = "packed.u8", "stats.npz", "meta.json"
FORMAT_VERSION = 1


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack codes (values 0..3) [T, D] into uint8 [T, ceil(D/4)], entry j in bits 2*(j%4).

    Dims are padded to a multiple of 4 with code 0, so packing costs exactly 2 bits per entry
    when D % 4 == 0 (every real model) and ``ceil(D/4)*4/D * 2`` bits otherwise.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"pack_codes expects [tokens, dims], got shape {codes.shape}.")
    if codes.size and (codes.min() < 0 or codes.max() > 3):
        raise ValueError("pack_codes: codes must be in 0..3.")
    t, d = codes.shape
    padded = np.zeros((t, -(-d // 4) * 4), dtype=np.uint8)
    padded[:, :d] = codes
    quads = padded.reshape(t, -1, 4) << _SHIFTS
    return np.bitwise_or.reduce(quads, axis=-1).astype(np.uint8)


def unpack_codes(packed: np.ndarray, d: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: uint8 [T, ceil(D/4)] -> uint8 codes [T, d]."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != -(-d // 4):
        raise ValueError(f"unpack_codes: packed shape {packed.shape} does not hold {d} dims.")
    codes = (packed[:, :, None] >> _SHIFTS) & 3
    return codes.reshape(packed.shape[0], -1)[:, :d]


def _unpack_torch(packed: Tensor, d: int) -> Tensor:
    """:func:`unpack_codes` in torch on [..., ceil(D/4)] uint8, so it runs on the GPU after
    moving the 4x smaller packed bytes there."""
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8, device=packed.device)
    codes = (packed.unsqueeze(-1) >> shifts) & 3
    return codes.flatten(-2)[..., :d].to(torch.int8)


def _states(h0: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """State codes (uint8) of float h0 [..., D] against float32 thresholds [D]."""
    h0 = h0.float()
    codes = torch.full(h0.shape, NEUTRAL, dtype=torch.uint8, device=h0.device)
    codes[h0 <= neg] = NEGATIVE
    codes[h0 >= pos] = POSITIVE  # after NEGATIVE: positive wins when pos == neg
    return codes


def _reduce(loss: Tensor, eps: float) -> Tensor:
    """GeRe's reduction: sum over entries / (number of non-zero entries + eps), i.e. the mean
    over violating entries; the count carries no gradient."""
    count = (loss > 0).sum().to(loss.dtype)
    return loss.sum() / (count + eps)


def tm_loss(
    h: Tensor, codes: Tensor, pos: Tensor, neg: Tensor, mask: Tensor, eps: float = 1e-8
) -> Tensor:
    """TM loss of current hidden ``h`` [R, L, D] given cached state ``codes`` [R, L, D].

    Each state allows an interval and the loss is the distance outside it: positive
    [pos, inf) -> relu(pos - h); negative (-inf, neg] -> relu(h - neg); neutral [neg, pos] ->
    relu(h - pos) + relu(neg - h). Padding (``mask`` False) is dropped before the reduction,
    computed in float32 whatever h's dtype (bf16 -> f32 is exact, so step 0 stays exactly 0).
    """
    mask = mask.to(h.device, torch.bool)
    h = h[mask].float()  # [N, D]; selecting first makes padding invisible to the sums
    codes = codes.to(h.device)[mask]
    if (codes == MASKED).any():
        raise ValueError(
            "tm_loss: a non-padding token has no cached state (code 3); the batch's rows do not "
            "match the buffer the states were built from."
        )
    pos, neg = pos.to(h.device, torch.float32), neg.to(h.device, torch.float32)
    above = torch.relu(h - pos)
    below = torch.relu(neg - h)
    loss = torch.where(
        codes == POSITIVE,
        torch.relu(pos - h),
        torch.where(codes == NEGATIVE, torch.relu(h - neg), above + below),
    )
    return _reduce(loss, eps)


def tm_loss_raw(
    h: Tensor, h0: Tensor, pos: Tensor, neg: Tensor, mask: Tensor, eps: float = 1e-8
) -> Tensor:
    """The TM loss written directly from raw h0, as GeRe's reference code computes it.

    Kept separate from :func:`tm_loss` (its own masks, its own arithmetic) so tests can show
    the 2-bit cache changes nothing.
    """
    mask = mask.to(h.device, torch.bool)
    h, h0 = h[mask].float(), h0.to(h.device)[mask].float()
    pos, neg = pos.to(h.device, torch.float32), neg.to(h.device, torch.float32)
    is_pos = h0 >= pos
    is_neg = (h0 <= neg) & ~is_pos
    is_neu = ~is_pos & ~is_neg
    loss = (
        torch.relu(pos - h) * is_pos
        + torch.relu(h - neg) * is_neg
        + (torch.relu(neg - h) + torch.relu(h - pos)) * is_neu
    )
    return _reduce(loss, eps)


def _batches(n: int, batch_size: int) -> list[list[int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


@dataclass
class TMStates:
    """Per-dim thresholds of the frozen model plus 2-bit activation states of every replay token."""

    mean: Tensor
    """[D] float32 mean of h0 over all real replay tokens (accumulated in float64)."""
    var: Tensor
    """[D] float32 population variance (ddof=0) of h0."""
    std: Tensor
    """[D] float32 sqrt(var)."""
    pos: Tensor
    """[D] float32 positive threshold mean + k*std (computed in float64, then rounded)."""
    neg: Tensor
    """[D] float32 negative threshold mean - k*std."""
    k: float
    """Threshold width in standard deviations (GeRe: 1)."""
    packed: np.ndarray
    """uint8 [total_tokens, ceil(D/4)] packed codes, rows of sample i at offsets[i]:offsets[i+1];
    may be a np.memmap."""
    offsets: np.ndarray
    """int64 [N + 1] token offsets of each sample into ``packed``."""

    std_definition: ClassVar[str] = "population"
    """Which std the thresholds use (saved with the cache; ddof=0)."""

    @property
    def hidden_size(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_samples(self) -> int:
        return len(self.offsets) - 1

    def nbytes_per_entry(self) -> float:
        """Packed bytes per (token, dim) entry: 0.25 (2 bits) when D % 4 == 0."""
        return self.packed.nbytes / (self.n_tokens * self.hidden_size)

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        forward: Callable[[Tensor, Tensor], Tensor],
        buffer: ReplayBuffer,
        *,
        k: float,
        batch_size: int,
        path: Path | None = None,
        ranks: Ranks | None = None,
    ) -> TMStates:
        """Two passes over the buffer with the frozen model: statistics, then states.

        Never materialises all h0 (only one batch at a time), so memory stays bounded at any
        model size. With ``path`` the packed array is written straight into a memmap file there
        (plus stats and metadata beside it); otherwise it lives in RAM. With ``ranks`` each rank
        runs its contiguous share of the batches: the partial statistics are gathered and merged
        in rank order, then each rank's states, so every rank ends with the same states after
        1/world of the forwards (a rank with one batch fewer makes one idle forward per pass).
        """
        batches = _batches(len(buffer), batch_size)
        mine = batches if ranks is None else shard(batches, ranks.world, ranks.rank)
        most = (
            len(batches)
            if ranks is None
            else max(len(shard(batches, ranks.world, r)) for r in range(ranks.world))
        )
        # Pass 1: per-dim mean and population variance, merging batches with Chan et al.'s
        # pairwise update in float64 (no E[x^2] - E[x]^2 cancellation).
        stats = None
        for rows in mine:
            h0 = _hidden(forward, buffer, rows).double()
            mean_b = h0.mean(0)
            stats = _merge(stats, (h0.shape[0], mean_b, ((h0 - mean_b) ** 2).sum(0)))
        if ranks is not None:
            for _ in range(most - len(mine)):
                ranks.idle()
            parts = ranks.gather(None if stats is None else tuple(_cpu(x) for x in stats))
            stats = None
            for part in parts:
                if part is not None:
                    stats = _merge(stats, part)
        assert stats is not None  # buffer is never empty
        count, mean, m2 = stats
        var = m2 / count
        std = var.sqrt()
        pos32 = (mean + k * std).float().cpu()
        neg32 = (mean - k * std).float().cpu()

        # Pass 2: states against the float32 thresholds the loss will use.
        d = int(mean.shape[0])
        offsets = np.concatenate([[0], np.cumsum(buffer.lengths)]).astype(np.int64)
        shape = (int(offsets[-1]), -(-d // 4))
        if path is None:
            packed: np.ndarray = np.empty(shape, dtype=np.uint8)
        else:
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            packed = np.memmap(path / _PACKED_FILE, dtype=np.uint8, mode="w+", shape=shape)
        done = []
        for rows in mine:
            h0 = _hidden(forward, buffer, rows)
            codes = pack_codes(_states(h0, pos32.to(h0.device), neg32.to(h0.device)).cpu().numpy())
            start, end = offsets[rows[0]], offsets[rows[-1] + 1]  # rows are contiguous
            packed[start:end] = codes
            done.append((int(start), codes))
        if ranks is not None:
            for _ in range(most - len(mine)):
                ranks.idle()
            for part in ranks.gather(done):
                for start, codes in part:
                    packed[start : start + len(codes)] = codes
        states = cls(
            mean=mean.float().cpu(),
            var=var.float().cpu(),
            std=std.float().cpu(),
            pos=pos32,
            neg=neg32,
            k=float(k),
            packed=packed,
            offsets=offsets,
        )
        if path is not None:
            states.save(path)
        return states

    def save(self, path: Path) -> None:
        """Write ``packed.u8`` (raw bytes, memmap-able), ``stats.npz`` and ``meta.json`` into
        directory ``path``; meta.json is written last, so its presence marks a complete cache."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        target = path / _PACKED_FILE
        if (
            isinstance(self.packed, np.memmap)
            and Path(self.packed.filename).resolve() == target.resolve()
        ):
            self.packed.flush()
        else:
            np.ascontiguousarray(self.packed).tofile(target)
        np.savez(
            path / _STATS_FILE,
            **{name: getattr(self, name).numpy() for name in ("mean", "var", "std", "pos", "neg")},
            offsets=self.offsets,
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "k": self.k,
            "std_definition": self.std_definition,
            "hidden_size": self.hidden_size,
            "n_tokens": self.n_tokens,
            "n_samples": self.n_samples,
            "codes": {
                "neutral": NEUTRAL,
                "positive": POSITIVE,
                "negative": NEGATIVE,
                "masked": MASKED,
            },
        }
        (path / _META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path, mmap: bool = True) -> TMStates:
        """Read a cache written by :meth:`save`; ``mmap`` keeps the packed codes on disk."""
        path = Path(path)
        meta_file = path / _META_FILE
        if not meta_file.exists():
            raise FileNotFoundError(f"No complete TM state cache at {path} ({_META_FILE} missing).")
        meta = json.loads(meta_file.read_text())
        if (
            meta.get("format_version") != FORMAT_VERSION
            or meta.get("std_definition") != cls.std_definition
        ):
            raise ValueError(
                f"TM state cache at {path} has format {meta.get('format_version')} / std "
                f"{meta.get('std_definition')!r}; expected {FORMAT_VERSION} / {cls.std_definition!r}. "
                "Delete it to rebuild."
            )
        shape = (int(meta["n_tokens"]), -(-int(meta["hidden_size"]) // 4))
        if mmap:
            packed = np.memmap(path / _PACKED_FILE, dtype=np.uint8, mode="r", shape=shape)
        else:
            packed = np.fromfile(path / _PACKED_FILE, dtype=np.uint8).reshape(shape)
        with np.load(path / _STATS_FILE) as stats:
            tensors = {
                n: torch.from_numpy(stats[n].copy()) for n in ("mean", "var", "std", "pos", "neg")
            }
            offsets = stats["offsets"].astype(np.int64)
        return cls(**tensors, k=float(meta["k"]), packed=packed, offsets=offsets)

    def gather(
        self, index: Tensor, length: int, device: torch.device | str | None = None
    ) -> Tensor:
        """int8 codes [R, length, D] of these buffer rows, right-padded with 3 (masked).

        Packed bytes are assembled first (padding byte 0xFF = four 3-codes) and unpacked on
        ``device`` (default CPU), so only a quarter of a byte per entry crosses to the GPU.
        """
        rows = [int(i) for i in index.tolist()]
        out = np.full((len(rows), length, self.packed.shape[1]), 0xFF, dtype=np.uint8)
        for r, i in enumerate(rows):
            start, end = int(self.offsets[i]), int(self.offsets[i + 1])
            if end - start > length:
                raise ValueError(
                    f"Replay row {i} has {end - start} cached tokens but the batch is only {length} "
                    "long; collate replay rows with ReplayBuffer.collate (no extra truncation)."
                )
            out[r, : end - start] = self.packed[start:end]
        packed = torch.from_numpy(out)
        if device is not None:
            packed = packed.to(device)
        return _unpack_torch(packed, self.hidden_size)


def _merge(a, b):
    """Chan et al.'s pairwise merge of (count, mean, M2) statistics (``a`` may be None)."""
    if a is None:
        return b
    (n_a, mean_a, m2_a), (n_b, mean_b, m2_b) = a, b
    mean_b, m2_b = mean_b.to(mean_a.device), m2_b.to(m2_a.device)
    delta, total = mean_b - mean_a, n_a + n_b
    return total, mean_a + delta * (n_b / total), m2_a + m2_b + delta**2 * (n_a * n_b / total)


def _cpu(x):
    return x.cpu() if isinstance(x, Tensor) else x


def _hidden(
    forward: Callable[[Tensor, Tensor], Tensor], buffer: ReplayBuffer, rows: list[int]
) -> Tensor:
    """Frozen last hidden state of the real tokens of ``rows``, flattened to [tokens, D] in
    row-major (sample, position) order, which is the order of ``packed``."""
    batch = buffer.collate(rows)
    hidden = forward(batch["input_ids"], batch["attention_mask"])
    mask = batch["attention_mask"].bool().to(hidden.device)
    return hidden[mask]


def build_or_load(
    forward: Callable[[Tensor, Tensor], Tensor],
    buffer: ReplayBuffer,
    *,
    k: float,
    batch_size: int,
    cache_dir: Path,
) -> TMStates:
    """Reuse a cache under ``cache_dir`` keyed by buffer fingerprint and k, or build one.

    The key cannot include the model, so a found cache is spot-checked: the first batch is
    recomputed and must give the same states (>= 99.9% agreement, allowing for kernels that are
    not bitwise deterministic); otherwise it is rebuilt. Builds go to a temporary directory
    renamed into place, so a crashed or concurrent build never leaves a half-written cache.
    """
    key = f"tm_states-k{k:g}-{buffer.fingerprint()[:16]}"
    target = Path(cache_dir) / key
    if (target / _META_FILE).exists():
        states = TMStates.load(target)
        if states.n_samples == len(buffer) and _spot_check(states, forward, buffer, batch_size):
            log.info("Loaded TM states from %s", target)
            return states
        log.warning("TM state cache %s does not match this model/buffer; rebuilding.", target)
        shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        built = TMStates.build(forward, buffer, k=k, batch_size=batch_size, path=tmp)
        del built  # release the writable memmap before moving its file
        os.rename(tmp, target)
    except OSError:
        if not (target / _META_FILE).exists():
            raise
        # another worker finished first: use theirs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("Built TM states at %s", target)
    return TMStates.load(target)


@torch.no_grad()
def _spot_check(
    states: TMStates,
    forward: Callable[[Tensor, Tensor], Tensor],
    buffer: ReplayBuffer,
    batch_size: int,
) -> bool:
    rows = list(range(min(batch_size, len(buffer))))
    if int(states.offsets[rows[-1] + 1]) != int(buffer.lengths[: rows[-1] + 1].sum()):
        return False
    h0 = _hidden(forward, buffer, rows)
    if h0.shape[-1] != states.hidden_size:
        return False
    fresh = _states(h0, states.pos.to(h0.device), states.neg.to(h0.device)).cpu().numpy()
    cached = unpack_codes(states.packed[: h0.shape[0]], states.hidden_size)
    return float((fresh == cached).mean()) >= 0.999
