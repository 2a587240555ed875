"""``ce``: replay the general texts with plain next-token cross-entropy ("label fitting").

The replay rows' CE is part of the batch CE the training loop already computes, so this
method adds no extra term; it is GeRe's replay without the TM loss.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from harness.replay.base import ReplayMethod, ReplayView


class CEReplay(ReplayMethod):
    """Replay rows get CE only."""

    name: ClassVar[str] = "ce"

    def term(self, view: ReplayView) -> Tensor | None:
        return None
