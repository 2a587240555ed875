"""``l1``: feature imitation, mean |h - h0| of the last hidden state (after the final norm).

Averaged over every non-padding (position, dim) entry; h0 comes from a frozen-model forward on
each replay batch (caching raw h0 would cost ~9 GB at 8B, see states.py).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from harness.replay.base import ReplayMethod, ReplayView


def feature_difference(view: ReplayView) -> Tensor:
    """h - h0 at non-padding tokens, [N, D] float32; shared by l1 and l2."""
    if view.hidden is None:
        raise ValueError("Feature replay needs view.hidden (the method sets needs_hidden=True).")
    mask = view.mask.to(view.hidden.device, torch.bool)
    _, ref_hidden = view.reference()
    return view.hidden[mask].float() - ref_hidden.to(view.hidden.device)[mask].float()


class L1Replay(ReplayMethod):
    """CE on replay rows + mean absolute deviation from the frozen hidden states."""

    name: ClassVar[str] = "l1"
    needs_hidden: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True

    def term(self, view: ReplayView) -> Tensor | None:
        return feature_difference(view).abs().mean()
