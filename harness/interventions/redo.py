"""ReDo: recycle dormant neurons (Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning").

Every ``every`` optimiser steps, on a fixed batch of the current task's training examples, each
MLP unit i of every decoder layer gets the dormant score (the diagnostic of
:mod:`harness.plasticity`)

    s_i = E|h_i| / mean_k E|h_k|,      h = act(gate(x)) * up(x)  (the down-projection input)

and every unit with ``s_i <= tau`` is recycled: its incoming weights (its row of ``gate_proj``
and ``up_proj``) are drawn afresh from N(0, r²) (r: the model's initializer_range), its outgoing
weights (its column of ``down_proj``) are set to 0 — so the network's function is unchanged at
that moment — and the optimiser moments of those rows and columns are forgotten. Full
fine-tuning only: under LoRA the units' weights are frozen.

Variants: the reference recycles every 1,000 gradient steps (google/dopamine
``labs/redo/weight_recyclers.py``, ``reset_period``; Sokar et al.'s Atari runs), scored on a
batch of the replay buffer; the harness's default is every 100 steps (a task of a few hundred
steps would otherwise see none) on the current task's first ``batch_texts`` examples.
``method_defaults: paper`` sets every=1000.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.interventions.base import Intervention, reinit_units


class ReDo(Intervention):
    name: ClassVar[str] = "redo"
    counters: ClassVar[tuple[str, ...]] = ("scans", "recycled")

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.interventions.ReDoSettings`
        self.recycled = 0
        """Units recycled so far (all layers)."""
        self.scans = 0
        """Times the units were scored."""

    def after_step(self, trial, stage: int, step: int) -> None:
        if step % self.every:
            return
        from harness.core import EvalBatch

        rows = trial.inputs.tasks[stage - 1].train[: self.batch_texts]
        batch = EvalBatch.from_examples(rows, trial.inputs.pad_id)
        self.apply(trial.backend, batch, seed=trial.cfg.seed, step=step)

    def dormant(self, model: torch.nn.Module, batch) -> dict[int, torch.Tensor]:
        """Layer -> indices of its units whose dormant score on ``batch`` is <= tau."""
        from harness.plasticity import _forward, _mlp_hooks, dormant_scores

        out: dict[int, torch.Tensor] = {}

        def on_input(i: int, acts: torch.Tensor) -> None:
            out[i] = torch.nonzero(dormant_scores(acts) <= self.tau).flatten()

        with _mlp_hooks(model, batch, on_input):
            _forward(model, batch)
        return out

    @torch.no_grad()
    def apply(self, backend, batch, *, seed: int, step: int) -> dict[int, torch.Tensor]:
        """Recycle the dormant units of every layer; returns the recycled indices by layer."""
        from harness.plasticity import decoder_layers

        model = backend.module
        # Every rank scores the same batch with the same weights; rank 0's picks are used by
        # all, so float noise between processes can never make their copies of the weights part.
        picked = backend.gather(self.dormant(model, batch))[0]
        self.scans += 1
        _, blocks = decoder_layers(model)
        g = self.generator(seed, step)
        for i, block in enumerate(blocks):
            idx = picked.get(i)
            if idx is not None and len(idx):
                reinit_units(backend, block.mlp, idx, g)
                self.recycled += len(idx)
        return picked
