"""O-LoRA, orthogonal subspace learning (Wang et al. 2023, "Orthogonal Subspace Learning for
Language Model Continual Learning"): a new LoRA adapter per task, trained in a subspace
orthogonal to the earlier tasks' adapters.

Before every task but the first, the adapter trained on the previous task is frozen and merged
into the base weights (W <- W + s * B A, s = lora_alpha / r, exactly the function O-LoRA's
kept adapters compute), its A is kept, and a fresh adapter (A from PEFT's Kaiming-uniform init,
B = 0, so the model does not change) is trained. Every micro-batch adds

    lambda_orth * sum_layers sum_{t < k} | A_t A_k^T |_1  +  lambda_l2 * sum ||theta_k||_2

(the L1 norm of the [r, r] products of the earlier and the new down-projections, and the
L2 norms of the new adapter's matrices), as in the O-LoRA code's ``orthogonal_loss`` and
``l2_loss``; defaults lambda_orth 0.5, lambda_l2 0 (its Long-Sequence scripts).

The earlier adapters' A and B are the method's checkpoint state, so a resumed trial (the base
model loaded fresh, the current adapter from the checkpoint) merges them again. Merged adapters
change what PEFT's disabled-adapter model is, so replay methods that compare with the frozen
starting model on every step (kl, l1, l2) are refused; tm's thresholds come from the starting
model before training and are unaffected. LoRA only; ZeRO-0/1/2 (it replaces whole adapter
weights and edits the base weights in place).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from harness.cl.base import CLMethod, register


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """PEFT LoRA layers of ``model`` by module name."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@register
class OLoRA(CLMethod):
    name: ClassVar[str] = "olora"
    source: ClassVar[str] = "Wang et al. 2023 (O-LoRA)"
    needs_lora: ClassVar[bool] = True
    counters: ClassVar[tuple[str, ...]] = ("merged",)

    def __init__(self, *, lambda_orth: float = 0.5, lambda_l2: float = 0.0):
        """lambda_orth: weight of the orthogonality penalty between the new adapter's A and
        the earlier tasks' (>= 0).
        lambda_l2: weight of the L2 norm of the new adapter's matrices (>= 0)."""
        if not lambda_orth >= 0:
            raise ValueError(f"olora lambda_orth: {lambda_orth} must be >= 0")
        if not lambda_l2 >= 0:
            raise ValueError(f"olora lambda_l2: {lambda_l2} must be >= 0")
        self.lambda_orth, self.lambda_l2 = float(lambda_orth), float(lambda_l2)
        self.old: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        """Per earlier task: module name -> (A [r, in], B [out, r]) as trained."""

    @property
    def merged(self) -> int:
        return len(self.old)

    @classmethod
    def problems(cls, cfg) -> list[str]:
        from harness.backend import rewrites_weights_problem

        out = super().problems(cfg)
        p = rewrites_weights_problem(cfg.scale)
        if p:
            out.append(f"cl.olora: {p}")
        try:
            method = cfg.replay.build_method()
        except ValueError:
            method = None  # reported by the replay settings' check
        if method is not None and method.needs_reference:
            out.append(
                f"cl.olora: merges earlier adapters into the base weights, so the frozen "
                f"starting model that replay method {cfg.replay.method!r} compares with on every "
                "step no longer exists; use replay.method none, ce or tm"
            )
        return out

    def setup(self, trial) -> None:
        self.trial = trial
        self.layers = lora_layers(trial.backend.module)

    def _adapter(self, layer) -> tuple[torch.nn.Parameter, torch.nn.Parameter, float]:
        key = layer.active_adapters[0]
        return layer.lora_A[key].weight, layer.lora_B[key].weight, float(layer.scaling[key])

    @torch.no_grad()
    def _merge(self, adapters: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        for name, (a, b) in adapters.items():
            layer = self.layers[name]
            _, _, s = self._adapter(layer)
            w = layer.get_base_layer().weight
            w.add_((s * (b.float() @ a.float())).to(w.dtype).to(w.device))

    def before_task(self, trial, stage: int) -> None:
        if stage == 1:
            return
        trained = {}
        for name, layer in self.layers.items():
            a, b, _ = self._adapter(layer)
            trained[name] = (a.detach().float().cpu().clone(), b.detach().float().cpu().clone())
        self._merge(trained)
        self.old.append(trained)
        g = self.generator(trial.cfg.seed, stage)
        edited = []
        with torch.no_grad():
            for layer in self.layers.values():
                a, b, _ = self._adapter(layer)
                fresh = torch.empty(a.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=g)
                a.copy_(fresh.to(a.dtype))
                b.zero_()
                edited += [a, b]
        trial.backend.weights_edited(edited)

    def loss_term(self, trial, stage: int, batch) -> torch.Tensor | None:
        if not self.old and self.lambda_l2 == 0:
            return None
        return self.penalty()

    def orthogonality(self) -> torch.Tensor:
        """sum over layers and earlier tasks of |A_t A_new^T|_1."""
        total = torch.zeros(())
        for name, layer in self.layers.items():
            a, _, _ = self._adapter(layer)
            for old in self.old:
                a_old = old[name][0].to(a.device)
                total = total.to(a.device) + (a_old @ a.float().T).abs().sum()
        return total

    def penalty(self) -> torch.Tensor:
        total = self.lambda_orth * self.orthogonality() if self.old else torch.zeros(())
        if self.lambda_l2:
            for layer in self.layers.values():
                a, b, _ = self._adapter(layer)
                total = total.to(a.device) + self.lambda_l2 * (a.float().norm() + b.float().norm())
        return total

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for t, adapters in enumerate(self.old):
            for name, (a, b) in adapters.items():
                out[f"A.{t}.{name}"], out[f"B.{t}.{name}"] = a, b
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the earlier adapters and merge them into the freshly loaded base weights."""
        n = 1 + max(int(k.split(".", 2)[1]) for k in state)
        self.old = [{} for _ in range(n)]
        for key, value in state.items():
            which, t, name = key.split(".", 2)
            if which == "A":
                self.old[int(t)][name] = (value, state[f"B.{t}.{name}"])
        for adapters in self.old:
            self._merge(adapters)
