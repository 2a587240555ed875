"""AdamW with a step count per element, so a reset element's bias correction starts again.

torch's AdamW keeps one step count per parameter tensor. When continual backprop replaces a
unit it zeroes that unit's moments (rows of ``gate_proj``/``up_proj``, a column of
``down_proj``), but with the tensor's step count at t the bias corrections 1 - beta^t are ~1,
so the zeroed moments are read as settled ones: the first updates of a fresh row are
(1 - beta1) / sqrt(1 - beta2) ~ 3.2x an ordinary Adam step for ~1/(1 - beta2) steps (3-6x
measured). The reference (shibhansh/loss-of-plasticity ``lop/utils/AdamGnT.py``, used by
``lop/algos/gnt.py``) keeps ``state['step']`` as a tensor of the parameter's shape and zeroes
the replaced rows' entries with their moments. This optimiser does the same:

    s <- s + 1 (element-wise);  m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2
    theta <- theta (1 - lr wd) - lr * (m / (1 - b1^s)) / (sqrt(v / (1 - b2^s)) + eps)

With no reset it is torch's AdamW (decoupled weight decay, same formula) up to float
rounding. The per-element count is one more fp32 tensor per trainable parameter. Its state
tensors all have the parameter's shape, so whatever zeroes a unit's moments (the backends'
``reset_optimizer_state``, under DeepSpeed ZeRO-1/2 on the fp32 partitions) zeroes its count.
"""

from __future__ import annotations

import torch


class AdamWPerElementStep(torch.optim.Optimizer):
    """AdamW whose ``state['step']`` is a float tensor of the parameter's shape."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ):
        if not lr >= 0:
            raise ValueError(f"lr: {lr} must be >= 0")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                s, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
                s.add_(1.0)
                p.mul_(1.0 - lr * wd)
                m.lerp_(g, 1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                c1 = 1.0 - torch.pow(b1, s)
                c2 = 1.0 - torch.pow(b2, s)
                denom = (v / c2).sqrt_().add_(eps)
                p.addcdiv_(m / c1, denom, value=-lr)
        return loss
