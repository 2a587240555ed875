"""``kl``: logit imitation of the frozen starting model on the replay rows.

Term = T^2 * KL(p_ref || p_cur), with p = softmax(logits / T), summed over the vocabulary and
averaged over non-padding positions. Direction: the frozen model's distribution is the target
(forward KL, as in Hinton et al.'s distillation), so the current model is pushed to cover every
token the reference gives mass to. The T^2 factor (Hinton scaling) keeps gradient magnitudes
comparable across temperatures. Full-vocabulary reference logits are too large to cache at
128k vocab, so they come from a frozen-model forward on each replay batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from harness.replay.base import ReplayMethod, ReplayView


def kl_term(
    logits: Tensor,
    ref_logits: Tensor,
    mask: Tensor,
    temperature: float,
    *,
    t2_scale: bool = True,
    mask_padding: bool = True,
) -> Tensor:
    """(T^2 *) mean over non-padding (or all) positions of KL(softmax(ref/T) || softmax(cur/T)),
    in float32."""
    keep = mask.to(logits.device, torch.bool)
    if not mask_padding:
        keep = torch.ones_like(keep)
    cur = torch.log_softmax(logits[keep].float() / temperature, dim=-1)  # [N, V]
    ref = torch.log_softmax(ref_logits.to(logits.device)[keep].float() / temperature, dim=-1)
    kl = (ref.exp() * (ref - cur)).sum(-1)
    return (temperature**2 if t2_scale else 1.0) * kl.mean()


class KLReplay(ReplayMethod):
    """CE on replay rows + KL to the frozen model's temperature-softened next-token distribution."""

    name: ClassVar[str] = "kl"
    needs_reference: ClassVar[bool] = True

    def term(self, view: ReplayView) -> Tensor | None:
        ref_logits, _ = view.reference()
        return kl_term(
            view.logits,
            ref_logits,
            view.mask,
            self.temperature,
            t2_scale=self.t2_scale,
            mask_padding=self.mask_padding,
        )
