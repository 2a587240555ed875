"""``tm``: GeRe's threshold-margin loss on the replay rows (arXiv 2508.04676).

``prepare`` runs the frozen starting model over the buffer once, computing per-dim thresholds
mu +/- k*sigma (population std) and each replay token's 2-bit activation state
(:mod:`harness.replay.states`); ``term`` penalises the current last hidden state only where it
leaves the interval its state allows, so no frozen-model forward is needed during training.
The reference default weight is 100.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torch import Tensor

from harness.replay.base import HiddenForward, Ranks, ReplayMethod, ReplayView
from harness.replay.buffer import ReplayBuffer
from harness.replay.states import TMStates, build_or_load, tm_loss


class TMReplay(ReplayMethod):
    """CE on replay rows + w * TM(h; states and thresholds of the frozen model)."""

    name: ClassVar[str] = "tm"
    needs_hidden: ClassVar[bool] = True

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.replay_methods.TMSettings`
        self.states: TMStates | None = None

    def prepare(
        self,
        forward: HiddenForward,
        buffer: ReplayBuffer,
        *,
        batch_size: int,
        cache_dir: Path | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        """Build (or reuse from ``cache_dir``, which must belong to this starting model) the
        states; with ``ranks`` the ranks build them together, each over its share."""
        if cache_dir is None:
            self.states = TMStates.build(
                forward, buffer, k=self.k, batch_size=batch_size, ranks=ranks
            )
        else:
            self.states = build_or_load(
                forward, buffer, k=self.k, batch_size=batch_size, cache_dir=cache_dir
            )

    def save_state(self, path: Path) -> bool:
        if self.states is None:
            return False
        self.states.save(path)
        return True

    def load_state(self, path: Path) -> None:
        self.states = TMStates.load(path)

    def term(self, view: ReplayView) -> Tensor | None:
        if self.states is None:
            raise RuntimeError("tm: call prepare() with the frozen starting model before term().")
        if view.hidden is None:
            raise ValueError(
                "tm needs view.hidden (needs_hidden=True); the training loop passed None."
            )
        codes = self.states.gather(view.index, view.hidden.shape[1], device=view.hidden.device)
        return tm_loss(view.hidden, codes, self.states.pos, self.states.neg, view.mask)
