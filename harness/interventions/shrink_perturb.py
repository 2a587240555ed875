"""Shrink & perturb (Ash & Adams 2020, "On warm-starting neural network training").

    θ ← λ·θ + σ·ε      for every trainable weight matrix (ndim ≥ 2: linear layers, embeddings;
                        norm gains and biases are left alone)

with ε ~ N(0, r²), r = the model's initialisation std (``initializer_range``), or, with
``noise='scaled'``, ε ~ N(0, std(θ)²) per tensor. Applied before every task but the first (the
start of a warm-started round of training: the first task starts from the pretrained model as
it is), or, with ``every=k``, after every k-th optimiser step instead. Dohare et al. (2024) use
it as the baseline that slows loss of plasticity. Under LoRA the trainable matrices are the
adapters', so only they are shrunk and perturbed.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.interventions.base import Intervention, init_std


class ShrinkPerturb(Intervention):
    name: ClassVar[str] = "shrink_perturb"
    counters: ClassVar[tuple[str, ...]] = ("applied",)

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.interventions.ShrinkPerturbSettings`
        self.applied = 0

    def before_task(self, trial, stage: int) -> None:
        if self.every is None and stage > 1:
            self._apply(trial, stage, trial.state.global_step)

    def after_step(self, trial, stage: int, step: int) -> None:
        if self.every is not None and step % self.every == 0:
            self._apply(trial, stage, step)

    def _apply(self, trial, stage: int, step: int) -> None:
        edited = self.apply(trial.backend.module, trial.cfg.seed, stage, step)
        trial.backend.weights_edited(edited)

    @torch.no_grad()
    def apply(
        self, model: torch.nn.Module, seed: int, stage: int, step: int
    ) -> list[torch.nn.Parameter]:
        """θ ← λθ + σε on the model's trainable matrices, ε drawn for (seed, stage, step);
        returns the parameters it changed."""
        g = self.generator(seed, stage, step)
        r = init_std(model)
        edited = []
        for _, p in sorted(model.named_parameters()):
            if not p.requires_grad or p.ndim < 2:
                continue
            scale = r if self.noise == "init" else float(p.float().std())
            eps = torch.randn(p.shape, generator=g, dtype=torch.float32)
            p.mul_(self.shrink).add_((self.sigma * scale * eps).to(p.dtype).to(p.device))
            edited.append(p)
        self.applied += 1
        return edited
