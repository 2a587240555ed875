"""LwF, learning without forgetting (Li & Hoiem 2017), for a language model: distil the model as
it was before the current task on the current task's inputs.

Before task k the trainable parameters are copied (theta_{k-1}); every micro-batch then adds

    weight * T^2 * mean_positions KL( softmax(z_old / T) || softmax(z / T) )

with z the current model's next-token logits and z_old those of the model with theta_{k-1}
(computed under no_grad with ``torch.func.functional_call``, so the weights being trained are
never touched), over the task rows' non-padding positions (``positions='all'``) or only the
positions that predict the answer (``'labels'``). Replay rows are left to the replay method.
At task 1 the teacher is the starting model; at the first step of every task the term is 0.

Memory: one copy of the trainable parameters (the adapters under LoRA); one extra no-grad
forward per micro-batch. ZeRO-0/1/2 only: the copy is of whole parameters.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch.func import functional_call

from harness.cl.base import WHOLE_PARAMETERS, CLMethod, register
from harness.core import IGNORE
from harness.replay.kl import kl_term


@register
class LwF(CLMethod):
    name: ClassVar[str] = "lwf"
    source: ClassVar[str] = "Li & Hoiem 2017"
    zero_stages: ClassVar[tuple[int, ...]] = (0, 1, 2)
    zero3_reason: ClassVar[str] = WHOLE_PARAMETERS

    def __init__(
        self,
        *,
        weight: float = 1.0,
        temperature: float = 2.0,
        positions: Literal["all", "labels"] = "all",
    ):
        """weight: the distillation term's weight (>= 0).
        temperature: softmax temperature T of both distributions (> 0); the term is scaled
        by T^2.
        positions: 'all': every non-padding position of the task rows; 'labels': only the
        positions that predict the answer tokens."""
        if not weight >= 0:
            raise ValueError(f"lwf weight: {weight} must be >= 0")
        if not temperature > 0:
            raise ValueError(f"lwf temperature: {temperature} must be > 0")
        self.weight, self.temperature, self.positions = float(weight), float(temperature), positions
        self.teacher: dict[str, torch.Tensor] = {}

    def before_task(self, trial, stage: int) -> None:
        self.teacher = {
            n: p.detach().clone()
            for n, p in trial.backend.module.named_parameters()
            if p.requires_grad
        }

    def loss_term(self, trial, stage: int, batch) -> torch.Tensor | None:
        task = ~batch.is_replay
        if not self.teacher or self.weight == 0 or not task.any():
            return None
        ids, mask = batch.input_ids[task], batch.attention_mask[task]
        with torch.no_grad():
            old = functional_call(
                trial.backend.module,
                self.teacher,
                args=(),
                kwargs={"input_ids": ids, "attention_mask": mask},
                strict=False,
            ).logits
        keep = mask.bool()
        if self.positions == "labels":  # the positions whose next token is an answer token
            keep = torch.zeros_like(keep)
            keep[:, :-1] = batch.labels[task][:, 1:] != IGNORE
        return self.weight * kl_term(batch.logits[task], old, keep, self.temperature)
