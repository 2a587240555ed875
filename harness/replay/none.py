"""``none``: sequential fine-tuning with no replay at all (the forgetting baseline)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from harness.replay.base import ReplayMethod, ReplayView, register


@register
class NoReplay(ReplayMethod):
    """No replay rows in any batch; nothing to add to the task loss."""

    name: ClassVar[str] = "none"
    display_order: ClassVar[int] = 0
    uses_replay: ClassVar[bool] = False

    def term(self, view: ReplayView) -> Tensor | None:
        return None
