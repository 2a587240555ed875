"""Single task: every task trained alone from the starting model -- the reference row behind
SAPT's forward transfer.

Before every task but the first, the trainable parameters (the adapters under LoRA) are put
back to the starting model's and the optimiser starts afresh, so the model that is scored after
task k has seen task k only. The accuracy matrix's diagonal a[k][k] is then "task k fine-tuned
alone", which SAPT's FWT compares a continual learner's just-learned accuracy with
(circle-hit/SAPT ``score.py``: FWT = 1/T sum_k a_CL[k][k] - 1/T sum_k a_single[k][k];
:func:`harness.metrics.fwt_sapt`, and the baselines table's ``fwt_sapt`` column for the trials
of the same seed). The O-LoRA, SAPT and GeRe tables report this row as "SeqFT per task" /
"single-task". The trial's AP, BWT, FWT and forgetting have no meaning (nothing carries over
between tasks), so its summary leaves them NaN; the diagonal is what it is for.

Memory: one fp32 copy of the trainable parameters (the starting values), kept in the
end-of-task checkpoint too so a resumed trial restarts from the same start. Not with other
``cl`` methods (they carry something from one task to the next); ZeRO-0/1/2 (it rewrites whole
parameters).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.cl.base import CLMethod


class SingleTask(CLMethod):
    name: ClassVar[str] = "single_task"

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.cl_methods.NoSettings`
        self.start: dict[str, torch.Tensor] = {}

    def setup(self, trial) -> None:
        self.params = {n: p for n, p in trial.backend.module.named_parameters() if p.requires_grad}
        if trial.state.finished_stage == 0 and not self.start:
            self.start = {n: p.detach().float().cpu().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def before_task(self, trial, stage: int) -> None:
        if stage == 1:
            return
        for n, p in self.params.items():
            p.copy_(self.start[n].to(p.dtype).to(p.device))
        # The optimiser starts afresh anyway: the backend's start_task, at every task.
        trial.backend.weights_edited(list(self.params.values()))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.start)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.start = {n: v.float().cpu() for n, v in state.items()}
