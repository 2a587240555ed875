"""Online EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural
networks"; the online form of Schwarz et al. 2018, "Progress & compress").

After task k is trained, the diagonal empirical Fisher of the trainable parameters on that
task's training data is

    F_k = 1/N * sum_n (d CE_n / d theta)^2        (CE_n: example n's token-mean CE on its answer,
                                                   N = min(fisher_samples, task size), seeded)

and the running importance and anchor become

    F <- gamma * F + F_k,        theta* <- theta (the weights after task k).

While training every later task, each micro-batch's loss gains

    lambda * sum_i F_i * (theta_i - theta*_i)^2.

Under LoRA the parameters are the adapters' (the base model is frozen anyway). Memory: two
fp32 copies of the trainable parameters (F and theta*). Under several ranks each rank takes a
share of the N examples and the sums are pooled. ZeRO-0/1/2 only: it reads whole parameters.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from harness.cl.base import WHOLE_PARAMETERS, CLMethod, register
from harness.core import IGNORE, collate, device_of, eval_mode, shard, token_nll


@register
class EWC(CLMethod):
    name: ClassVar[str] = "ewc"
    source: ClassVar[str] = "Kirkpatrick et al. 2017; online: Schwarz et al. 2018"
    zero_stages: ClassVar[tuple[int, ...]] = (0, 1, 2)
    zero3_reason: ClassVar[str] = WHOLE_PARAMETERS

    def __init__(self, *, lam: float = 5000.0, gamma: float = 1.0, fisher_samples: int = 64):
        """lam: lambda, the penalty's weight (>= 0).
        gamma: decay of the running Fisher before the new task's is added, in [0, 1] (1: the
        sum over tasks, classic EWC's total penalty around the latest weights).
        fisher_samples: training examples of each task the Fisher is estimated on (>= 1)."""
        if not lam >= 0:
            raise ValueError(f"ewc lam: {lam} must be >= 0")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"ewc gamma: {gamma} must be in [0, 1]")
        if fisher_samples < 1:
            raise ValueError(f"ewc fisher_samples: {fisher_samples} must be >= 1")
        self.lam, self.gamma, self.fisher_samples = float(lam), float(gamma), fisher_samples
        self.fisher: dict[str, torch.Tensor] = {}
        self.star: dict[str, torch.Tensor] = {}

    def setup(self, trial) -> None:
        self.params = {n: p for n, p in trial.backend.module.named_parameters() if p.requires_grad}

    def loss_term(self, trial, stage: int, batch) -> torch.Tensor | None:
        if not self.fisher or self.lam == 0:
            return None
        return self.lam * self.penalty()

    def penalty(self) -> torch.Tensor:
        """sum_i F_i (theta_i - theta*_i)^2 over the trainable parameters."""
        total = None
        for n, p in self.params.items():
            f, star = self.fisher[n], self.star[n]
            term = (f * (p.float() - star).pow(2)).sum()
            total = term if total is None else total + term
        return total

    def after_task(self, trial, stage: int) -> None:
        examples = [
            ex for pos in trial.stages[stage - 1] for ex in trial.inputs.tasks[pos - 1].train
        ]
        rng = np.random.default_rng([trial.cfg.seed, stage, 11])
        n = min(self.fisher_samples, len(examples))
        picked = [examples[i] for i in sorted(rng.choice(len(examples), n, replace=False))]
        new = self.fisher_of(trial, picked)
        for name, f in new.items():
            old = self.fisher.get(name)
            self.fisher[name] = f if old is None else self.gamma * old + f
        self.star = {n: p.detach().float().clone() for n, p in self.params.items()}
        super().after_task(trial, stage)

    def fisher_of(self, trial, examples) -> dict[str, torch.Tensor]:
        """The mean squared per-example gradient of each trainable parameter (every rank takes
        its share of ``examples``; the sums are pooled)."""
        backend = trial.backend
        mine = shard(list(examples), backend.world_size, backend.rank)
        names = list(self.params)
        sums = [torch.zeros_like(p, dtype=torch.float32) for p in self.params.values()]
        pad = trial.inputs.pad_id
        with eval_mode(backend.module) as model:
            device = device_of(model)
            for ex in mine:
                ids, mask, labels = (t.to(device) for t in collate([ex], pad))
                logits = model(input_ids=ids, attention_mask=mask).logits
                counted = (labels[:, 1:] != IGNORE).sum().clamp(min=1)
                ce = token_nll(logits, labels).sum() / counted
                grads = torch.autograd.grad(ce, list(self.params.values()), allow_unused=True)
                for s, g in zip(sums, grads, strict=True):
                    if g is not None:
                        s.add_(g.detach().float().pow(2))
        count = torch.tensor([float(len(mine))])
        if backend.world_size > 1:
            sums = [backend.sum_across_ranks(s) for s in sums]
            count = backend.sum_across_ranks(count)
        total = max(float(count[0]), 1.0)
        return {n: s / total for n, s in zip(names, sums, strict=True)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"fisher.{n}": f for n, f in self.fisher.items()}
        out.update({f"star.{n}": s for n, s in self.star.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = next(iter(self.params.values())).device
        self.fisher = {k[7:]: v.to(device) for k, v in state.items() if k.startswith("fisher.")}
        self.star = {k[5:]: v.to(device) for k, v in state.items() if k.startswith("star.")}
