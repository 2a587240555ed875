"""LwF, learning without forgetting (Li & Hoiem 2017), for a language model: distil the model as
it was at the end of the previous task on the current task's inputs.

Before task k the trainable parameters and the model's buffers are copied (theta_{k-1}: the
model exactly as task k-1 left it -- LwF's ``before_task`` runs before every other hook's,
whatever the config's order, so neither O-LoRA's adapter hand-over nor a ``before_task``
intervention such as shrink & perturb reaches the teacher); every micro-batch then adds

    weight * T^2 * mean_positions KL( softmax(z_old / T) || softmax(z / T) )

with z the current model's next-token logits and z_old those of the model with theta_{k-1}
(computed under no_grad with ``torch.func.functional_call``, so the weights being trained are
never touched), over the task rows' non-padding positions (``positions='all'``) or only the
positions that predict the answer (``'labels'``). Replay rows are left to the replay method.
At the first step of every task the term is 0.

Variants, each a setting (defaults first; ``paper-defaults`` takes the reference's):
``t2_scale`` true multiplies by T^2 (Hinton et al.'s gradient-scale convention), which makes
"weight 1 at T 2" four times the term of Li & Hoiem's loss and of avalanche's ``LwFPlugin``
(``training/plugins/lwf.py``: alpha * KL at temperature T, no T^2); ``distil_first_task`` true
distils the starting (pretrained) model at task 1, where avalanche has no previous model and
adds nothing; ``positions`` 'all' distils every position of the task rows (avalanche distils
every output of its classifier; for a language model the prompt positions are the analogue).

Memory: one copy of the trainable parameters (the adapters under LoRA); one extra no-grad
forward per micro-batch. ZeRO-0/1/2 only: the copy is of whole parameters.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.func import functional_call

from harness.cl.base import CLMethod
from harness.core import IGNORE
from harness.replay.kl import kl_term


class LwF(CLMethod):
    name: ClassVar[str] = "lwf"
    reads_previous_model: ClassVar[bool] = True
    """Its ``before_task`` runs before every other hook's (:meth:`harness.trial.Trial.train_stage`)."""

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.cl_methods.LwFSettings`
        self.teacher: dict[str, torch.Tensor] = {}

    def before_task(self, trial, stage: int) -> None:
        self.teacher = {}
        if stage == 1 and not self.distil_first_task:
            return
        module = trial.backend.module
        self.teacher = {
            n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad
        }
        # Buffers too (small): what the model computes beyond its parameters, e.g. O-LoRA's
        # earlier adapters, as the previous task left them.
        self.teacher.update({n: b.detach().clone() for n, b in module.named_buffers()})

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
        return self.weight * kl_term(
            batch.logits[task], old, keep, self.temperature, t2_scale=self.t2_scale
        )
