"""EWC (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in neural networks"), online
by default (the online form of Schwarz et al. 2018, "Progress & compress").

After task k is trained, the diagonal empirical Fisher of the trainable parameters on that
task's training data is

    F_k = 1/N * sum_n (d NLL_n / d theta)^2     (NLL_n: example n's NLL of its answer tokens,
                                                 their mean (default) or sum; N =
                                                 min(fisher_samples, task size), seeded)

``anchors='online'`` (default): the running importance and anchor become

    F <- gamma * F + F_k,        theta* <- theta (the weights after task k),

and while training every later task each micro-batch's loss gains

    c * lambda * sum_i F_i * (theta_i - theta*_i)^2.

``anchors='per_task'`` (Kirkpatrick et al.'s form) keeps every task's own Fisher and anchor
and adds c * lambda * sum_{t<k} sum_i F_t,i (theta_i - theta*_t,i)^2 (memory grows by two
copies of the trainable parameters per task; gamma does not apply).

Variants, each a setting (defaults first; ``paper-defaults`` takes the reference's): c = 1
(``half=false``, as avalanche's ``EWCPlugin``, so lambda here is lambda_paper / 2) or c = 1/2
(``half=true``, the paper's lambda/2); the per-token-mean NLL (``fisher_nll='token_mean'``,
which scales a k-token answer's Fisher by 1/k^2) or the answer's summed NLL, its
log-likelihood (``'sequence'``); 64 examples or every training example
(``fisher_samples`` unset) for the Fisher; gamma = 1 online EWC (one penalty around the latest
weights) or per-task anchors.

Under LoRA the parameters are the adapters' (the base model is frozen anyway). Memory: two
fp32 copies of the trainable parameters (F and theta*) online, two per finished task per_task.
Under several ranks each rank takes a share of the N examples and the sums are pooled.
ZeRO-0/1/2 only: it reads whole parameters. Not with O-LoRA: each task there trains a fresh
adapter, so the penalty would anchor task k's adapter to task k-1's values.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from harness.cl.base import CLMethod
from harness.core import IGNORE, collate, device_of, eval_mode, shard, token_nll


class EWC(CLMethod):
    name: ClassVar[str] = "ewc"

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.cl_methods.EWCSettings`
        self.fisher: dict[str, torch.Tensor] = {}
        self.star: dict[str, torch.Tensor] = {}
        self.tasks: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = []
        """anchors='per_task': (Fisher, anchor) of every finished task."""

    def setup(self, trial) -> None:
        self.params = {n: p for n, p in trial.backend.module.named_parameters() if p.requires_grad}

    def loss_term(self, trial, stage: int, batch) -> torch.Tensor | None:
        if not (self.fisher or self.tasks) or self.lam == 0:
            return None
        return (0.5 if self.half else 1.0) * self.lam * self.penalty()

    def penalty(self) -> torch.Tensor:
        """sum_i F_i (theta_i - theta*_i)^2 over the trainable parameters (per_task: summed
        over the finished tasks' Fishers and anchors)."""
        pairs = self.tasks if self.anchors == "per_task" else [(self.fisher, self.star)]
        total = None
        for fisher, star in pairs:
            for n, p in self.params.items():
                term = (fisher[n] * (p.float() - star[n]).pow(2)).sum()
                total = term if total is None else total + term
        return total

    def after_task(self, trial, stage: int) -> None:
        examples = [
            ex for pos in trial.stages[stage - 1] for ex in trial.inputs.tasks[pos - 1].train
        ]
        rng = np.random.default_rng([trial.cfg.seed, stage, 11])
        n = (
            len(examples)
            if self.fisher_samples is None
            else min(self.fisher_samples, len(examples))
        )
        picked = [examples[i] for i in sorted(rng.choice(len(examples), n, replace=False))]
        new = self.fisher_of(trial, picked)
        star = {n: p.detach().float().clone() for n, p in self.params.items()}
        if self.anchors == "per_task":
            self.tasks.append((new, star))
        else:
            for name, f in new.items():
                old = self.fisher.get(name)
                self.fisher[name] = f if old is None else self.gamma * old + f
            self.star = star
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
                nll = token_nll(logits, labels).sum()
                if self.fisher_nll == "token_mean":
                    nll = nll / (labels[:, 1:] != IGNORE).sum().clamp(min=1)
                ce = nll
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
        for t, (fisher, star) in enumerate(self.tasks):
            out.update({f"task{t}.fisher.{n}": f for n, f in fisher.items()})
            out.update({f"task{t}.star.{n}": s for n, s in star.items()})
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = next(iter(self.params.values())).device
        self.fisher = {k[7:]: v.to(device) for k, v in state.items() if k.startswith("fisher.")}
        self.star = {k[5:]: v.to(device) for k, v in state.items() if k.startswith("star.")}
        n = len({k.split(".", 1)[0] for k in state if k.startswith("task")})
        self.tasks = []
        for t in range(n):
            parts = []
            for kind in ("fisher", "star"):
                prefix = f"task{t}.{kind}."
                parts.append(
                    {
                        k[len(prefix) :]: v.to(device)
                        for k, v in state.items()
                        if k.startswith(prefix)
                    }
                )
            self.tasks.append((parts[0], parts[1]))
