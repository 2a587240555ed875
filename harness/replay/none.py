"""``none``: sequential fine-tuning with no replay at all (the forgetting baseline)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from harness.replay.base import ReplayMethod, ReplayView


class NoReplay(ReplayMethod):
    """No replay rows in any batch; nothing to add to the task loss."""

    name: ClassVar[str] = "none"
    uses_replay: ClassVar[bool] = False

    def term(self, view: ReplayView) -> Tensor | None:
        return None
