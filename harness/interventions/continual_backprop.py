"""Continual backprop (Dohare et al. 2024, "Loss of plasticity in deep continual learning"), as
its reference code trains it (shibhansh/loss-of-plasticity ``lop/algos/gnt.py`` with
``lop/utils/AdamGnT.py``).

For every MLP unit i of every decoder layer (h = act(gate(x)) * up(x), the down-projection
input), after every optimiser step, its age grows by one and its running *contribution
utility* and the bias-corrected utility that ranks it are

    u_i <- eta*u_i + (1 - eta)*mean|h_i| * sum_k |W_down[k, i]|,      u^_i = u_i / (1 - eta^age_i)

(mean|h_i| over the non-padding positions of the step's training forwards, pooled over the
ranks of a multi-rank trial; ``gnt.py``: ``bias_corrected_util = util / (1 - decay_rate **
ages)``, ages counted before the update). Units older than the maturity threshold m are
eligible; each step adds rho x (eligible units) to a per-layer allowance, and its whole part is
spent on replacing that many eligible units of lowest u^ (``gnt.py``'s ``accumulate=True``
form): their incoming weights (rows of gate_proj and up_proj) are drawn afresh from N(0, r^2)
(r: the model's initializer_range), their outgoing weights (columns of down_proj) are set to 0
so the network's output does not jump, their utility and age are reset, and the optimiser's
moments *and step count* of those rows and columns restart (``AdamGnT`` keeps Adam's step per
element; here :class:`harness.adam.AdamWPerElementStep`, which the trial then trains with, on
either backend and under ZeRO-1/2). Without the step restart a replaced row's first updates
are 3-6x an ordinary Adam step for ~100 steps. Utilities, ages and allowances travel with the
end-of-task checkpoint.

Where it differs from ``gnt.py``: Llama's MLP has no biases, so the reference's bias
correction of the next layer (``next_layer.bias += ...``) has nothing to act on; new incoming
weights are Gaussian at the model's initialisation scale (``gnt.py``: Kaiming-uniform bounds of
a small feed-forward net). ``bias_correction=false``, ``mask_padding=false`` and
``reset_adam_step=false`` give this harness's form before 2026-12-05 (raw utility ranking,
padding counted, Adam's step count kept), for comparing with results stored then.

Full fine-tuning only: under LoRA the units' weights are frozen (an adapter has no units of its
own to replace), so the config refuses it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from harness.interventions.base import Intervention, reinit_units


class ContinualBackprop(Intervention):
    name: ClassVar[str] = "continual_backprop"
    counters: ClassVar[tuple[str, ...]] = ("replaced",)

    def __init__(self, **settings) -> None:
        super().__init__(
            **settings
        )  # :class:`harness.config.interventions.ContinualBackpropSettings`
        self.replaced = 0
        """Units replaced so far (all layers)."""
        self.utility: torch.Tensor | None = None
        """[layers, units] running contribution utility."""
        self.age: torch.Tensor | None = None
        """[layers, units] optimiser steps since each unit was (re)initialised."""
        self.allowance: torch.Tensor | None = None
        """[layers] replacements owed (the fractional part carries over)."""

    @property
    def per_element_step(self) -> bool:
        """The trial trains with Adam's step count per element (read when it builds the
        backend)."""
        return self.reset_adam_step

    # -- hooks ----------------------------------------------------------------------------

    def setup(self, trial) -> None:
        from harness.plasticity import decoder_layers

        self.backend = trial.backend
        self.seed = trial.cfg.seed
        _, self.blocks = decoder_layers(trial.backend.module)
        n_layers, n_units = len(self.blocks), self.blocks[0].mlp.down_proj.weight.shape[1]
        if self.utility is None:
            self.utility = torch.zeros(n_layers, n_units, dtype=torch.float64)
            self.age = torch.zeros(n_layers, n_units, dtype=torch.int64)
            self.allowance = torch.zeros(n_layers, dtype=torch.float64)
        self._sums = torch.zeros(n_layers, n_units, dtype=torch.float64)
        self._counts = torch.zeros(n_layers, dtype=torch.float64)
        self._mask: torch.Tensor | None = None
        self._in_forward = False
        self._handles = [
            block.mlp.down_proj.register_forward_pre_hook(
                lambda m, args, i=i: self._observe(m, i, args[0])
            )
            for i, block in enumerate(self.blocks)
        ]
        # The attention mask of the forward under way (every forward, with or without the
        # output head, goes through the decoder body), for the MLP hooks to drop padding.
        from harness.models import decoder_and_head

        body, _ = decoder_and_head(trial.backend.module)
        self._handles += [
            body.register_forward_pre_hook(self._see_mask, with_kwargs=True),
            body.register_forward_hook(self._forget_mask),
        ]

    def _see_mask(self, module, args, kwargs) -> None:
        self._in_forward = True
        self._mask = kwargs.get("attention_mask") if self.mask_padding else None

    def _forget_mask(self, module, args, output) -> None:
        self._in_forward, self._mask = False, None

    def at_end(self, trial, status: str) -> None:
        for handle in getattr(self, "_handles", ()):
            handle.remove()

    def _observe(self, module: torch.nn.Module, i: int, h: torch.Tensor) -> None:
        # Training forwards only, each once: a gradient-checkpointed layer runs its forward
        # again during the backward, outside the body's forward, and is not counted twice.
        if module.training and torch.is_grad_enabled() and self._in_forward:
            flat = h.detach().reshape(-1, h.shape[-1])
            mask = self._mask
            if mask is not None and mask.numel() == flat.shape[0]:
                flat = flat[mask.reshape(-1).to(flat.device).bool()]
            self._sums[i] += flat.abs().double().sum(dim=0).cpu()
            self._counts[i] += flat.shape[0]

    def after_step(self, trial, stage: int, step: int) -> None:
        self.update_and_replace(step)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.utility is None:
            return {}
        return {"utility": self.utility, "age": self.age, "allowance": self.allowance}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.utility, self.age = state["utility"].clone(), state["age"].clone()
        self.allowance = state["allowance"].clone()

    # -- the method -----------------------------------------------------------------------

    def ranking(self, layer: int) -> torch.Tensor:
        """What units of ``layer`` are ranked by (lowest replaced first): u / (1 - η^age), or
        u with ``bias_correction=false``."""
        assert self.utility is not None and self.age is not None
        u = self.utility[layer]
        if not self.bias_correction:
            return u
        correction = 1.0 - self.decay ** self.age[layer].double()
        return torch.where(correction > 0, u / correction.clamp(min=1e-300), u)

    @torch.no_grad()
    def update_and_replace(self, step: int) -> dict[int, torch.Tensor]:
        """One step of the method from the activations seen since the last call; returns the
        replaced unit indices by layer."""
        assert self.utility is not None and self.age is not None and self.allowance is not None
        replaced: dict[int, torch.Tensor] = {}
        g = self.generator(self.seed, step)
        # Pooled over the ranks (each saw its own micro-batches), so every rank picks alike.
        sums = self.backend.sum_across_ranks(self._sums)
        counts = self.backend.sum_across_ranks(self._counts)
        for i, block in enumerate(self.blocks):
            mlp = block.mlp
            self.age[i] += 1  # gnt.py: ages first, then the utility and its bias correction
            if counts[i] > 0:
                mean_abs = sums[i] / counts[i]
                out_size = mlp.down_proj.weight.detach().abs().double().sum(dim=0).cpu()
                self.utility[i] = self.decay * self.utility[i] + (1 - self.decay) * (
                    mean_abs * out_size
                )
            eligible = torch.nonzero(self.age[i] > self.maturity).flatten()
            self.allowance[i] += self.rho * len(eligible)
            n = int(self.allowance[i])
            if n == 0 or not len(eligible):
                continue
            n = min(n, len(eligible))
            self.allowance[i] -= n
            order = torch.argsort(self.ranking(i)[eligible], stable=True)
            idx = eligible[order[:n]].sort().values
            reinit_units(self.backend, mlp, idx, g)
            self.utility[i, idx] = 0.0
            self.age[i, idx] = 0
            self.replaced += n
            replaced[i] = idx
        self._sums.zero_()
        self._counts.zero_()
        return replaced
