"""``l2``: feature imitation, mean (h - h0)^2 of the last hidden state (after the final norm).

Averaged over every non-padding (position, dim) entry, like ``l1`` (a mean, not a sum or a norm,
so the weight means the same at any hidden size).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from harness.replay.base import ReplayMethod, ReplayView
from harness.replay.l1 import feature_difference


class L2Replay(ReplayMethod):
    """CE on replay rows + mean squared deviation from the frozen hidden states."""

    name: ClassVar[str] = "l2"
    needs_hidden: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True

    def term(self, view: ReplayView) -> Tensor | None:
        return feature_difference(view).pow(2).mean()
