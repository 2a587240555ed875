"""O-LoRA, orthogonal subspace learning (Wang et al. 2023, "Orthogonal Subspace Learning for
Language Model Continual Learning"): a new LoRA adapter per task, trained in a subspace
orthogonal to the earlier tasks' adapters.

Before every task but the first, the adapter trained on the previous task is frozen and kept
beside the base weights, and a fresh adapter (A from PEFT's Kaiming-uniform init, B = 0, so the
model does not change) is trained. As in O-LoRA's own code (cmnfriend/O-LoRA
``src/peft/tuners/lora.py``: ``lora_A``/``lora_B`` hold the earlier tasks' adapters,
``loranew_A``/``loranew_B`` the current one), the earlier adapters are computed in the forward,
never merged into the base weights: every LoRA layer adds

    s * B_old (A_old dropout(x)),     A_old = [A_1; ..; A_{k-1}]  [(k-1) r, in],
                                      B_old = [B_1, .., B_{k-1}]  [out, (k-1) r]

(s = lora_alpha / r) in float32, the adapters as trained. Merging W <- W + s B A instead is
exact in float32 but not in bfloat16 (the 8B preset): with weights of std 0.02 the rounding
loses 32% of an update of std 1e-4, and every later merge re-rounds the whole matrix. The
earlier adapters are buffers of the LoRA layers (``olora_A``/``olora_B``), so a copy of the
model's parameters and buffers (LwF's teacher) holds them, and PEFT's disabled-adapter model
stays the starting model (replay methods that compare with it, kl/l1/l2, are exact). In
training the kept adapters share one dropout draw and the live adapter has its own (the
reference applies one draw to both; the expectation is the same).

Every micro-batch adds

    lambda_orth * sum_layers sum_{t < k} | A_t A_k^T |_1  +  lambda_l2 * sum ||theta_k||_2

(the L1 norm of the [r, r] products of the earlier and the new down-projections, and the
L2 norms of the new adapter's matrices), as in the O-LoRA code's ``orthogonal_loss`` and
``l2_loss``. Defaults lambda_orth 0.5, lambda_l2 0 at every task; ``schedule=long_sequence``
takes both per task from the reference's 15-task script (``scripts/long.sh``: lamda_1 0.5 for
tasks 2-9 and 5 for 10-15; lamda_2 0, 0, 0, 0.1, 0.1, 0.3, 0, 0.1, 0, 0, 0.1, 0, 0.1, 0.3 for
tasks 2-15), by the stage's position. The reference's LoRA is r 8, alpha 32, dropout 0.1 on
q_proj and v_proj (PEFT's defaults for Llama; ``src/run_uie_lora.py``), which the
``paper-defaults`` config sets (``model.lora_*``).

The earlier adapters' A and B are the method's checkpoint state, so a resumed trial restores
them. LoRA only; ZeRO-0/1/2 (it replaces whole adapter weights).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from harness.cl.base import CLMethod
from harness.config.cl_methods import OLORA_LONG_SEQUENCE_SCHEDULE as LONG_SEQUENCE_SCHEDULE


def lora_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """PEFT LoRA layers of ``model`` by module name."""
    from peft.tuners.lora import LoraLayer

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer)}


class OLoRA(CLMethod):
    name: ClassVar[str] = "olora"
    counters: ClassVar[tuple[str, ...]] = ("kept",)

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.cl_methods.OLoRASettings`
        self.old: list[dict[str, tuple[torch.Tensor, torch.Tensor]]] = []
        """Per earlier task: module name -> (A [r, in], B [out, r]) as trained (float32)."""

    @property
    def kept(self) -> int:
        """Earlier tasks' adapters kept beside the base weights."""
        return len(self.old)

    def weights(self, stage: int) -> tuple[float, float]:
        """(lambda_orth, lambda_l2) while training task ``stage`` (1-based)."""
        if self.schedule == "long_sequence":
            return LONG_SEQUENCE_SCHEDULE[stage - 1]
        return self.lambda_orth, self.lambda_l2

    def setup(self, trial) -> None:
        self.trial = trial
        self.stage = 1
        self.layers = lora_layers(trial.backend.module)
        self._handles = []
        for layer in self.layers.values():
            a, b, _ = self._adapter(layer)
            # Empty until the first hand-over; present from the start, so a copy of the
            # model's buffers taken at any stage (LwF's teacher) says how many were kept.
            layer.register_buffer(
                "olora_A", torch.zeros(0, a.shape[1], device=a.device), persistent=False
            )
            layer.register_buffer(
                "olora_B", torch.zeros(b.shape[0], 0, device=b.device), persistent=False
            )
            self._handles.append(layer.register_forward_hook(_add_kept_adapters))

    def at_end(self, trial, status: str) -> None:
        for handle in getattr(self, "_handles", ()):
            handle.remove()

    def _adapter(self, layer) -> tuple[torch.nn.Parameter, torch.nn.Parameter, float]:
        key = layer.active_adapters[0]
        return layer.lora_A[key].weight, layer.lora_B[key].weight, float(layer.scaling[key])

    @torch.no_grad()
    def _keep(self) -> None:
        """Set every layer's kept-adapter buffers to the adapters in ``self.old``."""
        for name, layer in self.layers.items():
            a, b, _ = self._adapter(layer)
            layer.olora_A = torch.cat([old[name][0] for old in self.old]).to(a.device)
            layer.olora_B = torch.cat([old[name][1] for old in self.old], dim=1).to(b.device)

    def before_task(self, trial, stage: int) -> None:
        self.stage = stage
        if stage == 1:
            return
        trained = {}
        for name, layer in self.layers.items():
            a, b, _ = self._adapter(layer)
            trained[name] = (a.detach().float().cpu().clone(), b.detach().float().cpu().clone())
        self.old.append(trained)
        self._keep()
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
        orth, l2 = self.weights(stage)
        if (not self.old or orth == 0) and l2 == 0:
            return None
        return self.penalty(orth, l2)

    def orthogonality(self) -> torch.Tensor:
        """sum over layers and earlier tasks of |A_t A_new^T|_1."""
        total = torch.zeros(())
        for name, layer in self.layers.items():
            a, _, _ = self._adapter(layer)
            for old in self.old:
                a_old = old[name][0].to(a.device)
                total = total.to(a.device) + (a_old @ a.float().T).abs().sum()
        return total

    def penalty(self, lambda_orth: float | None = None, lambda_l2: float | None = None):
        """lambda_orth * orthogonality + lambda_l2 * the new adapter's L2 norms (the weights of
        the current stage by default)."""
        orth, l2 = self.weights(self.stage)
        orth = orth if lambda_orth is None else lambda_orth
        l2 = l2 if lambda_l2 is None else lambda_l2
        total = orth * self.orthogonality() if self.old else torch.zeros(())
        if l2:
            for layer in self.layers.values():
                a, b, _ = self._adapter(layer)
                total = total.to(a.device) + l2 * (a.float().norm() + b.float().norm())
        return total

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for t, adapters in enumerate(self.old):
            for name, (a, b) in adapters.items():
                out[f"A.{t}.{name}"], out[f"B.{t}.{name}"] = a, b
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the earlier adapters beside the freshly loaded base weights."""
        n = 1 + max(int(k.split(".", 2)[1]) for k in state)
        self.old = [{} for _ in range(n)]
        for key, value in state.items():
            which, t, name = key.split(".", 2)
            if which == "A":
                self.old[int(t)][name] = (value.float(), state[f"B.{t}.{name}"].float())
        self._keep()


def _add_kept_adapters(layer: torch.nn.Module, args: tuple, result: torch.Tensor):
    """Forward hook of a LoRA layer: add the earlier tasks' adapters, s * B_old (A_old x), in
    float32 (nothing while PEFT's adapters are disabled: that model is the starting one)."""
    kept_a, kept_b = layer.olora_A, layer.olora_B
    if kept_a.shape[0] == 0 or layer.disable_adapters:
        return None
    key = layer.active_adapters[0]
    x = layer.lora_dropout[key](args[0].to(kept_a.dtype))
    extra = torch.nn.functional.linear(torch.nn.functional.linear(x, kept_a), kept_b)
    return (result + extra * float(layer.scaling[key])).to(result.dtype)
