"""Active forgetting: reset the token embeddings (Chen et al. 2023, "Improving language
plasticity via pretraining with active forgetting").

    E ← ε,  ε ~ N(0, r²)      (r: the model's initializer_range)

for the input embedding matrix (and the output head with it when the two are tied: they are one
tensor), with the embeddings' optimiser moments forgotten. Chen et al. reset every K steps
while *pre-training*, which gives a "forgetful" model that relearns embeddings for a new language
far faster; here a trial can reset every ``every`` optimiser steps and/or before each task but
the first. Every other parameter is left as it is.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.interventions.base import Intervention, init_std


class EmbeddingReset(Intervention):
    name: ClassVar[str] = "embedding_reset"
    counters: ClassVar[tuple[str, ...]] = ("applied",)

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.interventions.EmbeddingResetSettings`
        self.applied = 0

    def before_task(self, trial, stage: int) -> None:
        if self.before_each_task and stage > 1:
            self.apply(trial, stage, trial.state.global_step)

    def after_step(self, trial, stage: int, step: int) -> None:
        if self.every is not None and step % self.every == 0:
            self.apply(trial, stage, step)

    @torch.no_grad()
    def apply(self, trial, stage: int, step: int) -> None:
        model = trial.backend.module
        weight = model.get_input_embeddings().weight
        g = self.generator(trial.cfg.seed, stage, step)
        eps = torch.randn(weight.shape, generator=g, dtype=torch.float32) * init_std(model)
        weight.copy_(eps.to(weight.dtype).to(weight.device))
        trial.backend.weights_edited([weight])
        trial.backend.reset_optimizer_state([weight])
        self.applied += 1
