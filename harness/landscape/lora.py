"""LoRA: a PEFT model's merged-update space ``W0 + B @ A * scale``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.landscape.directions import Params, _write


def _lora_modules(peft_model: nn.Module) -> dict[str, nn.Module]:
    """Base-layer weight name (in ``peft_model.named_parameters()``) -> its LoRA Linear."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, m in peft_model.named_modules():
        if not isinstance(m, LoraLayer):
            continue
        if not isinstance(m, LoraLinear):
            raise NotImplementedError(f"{name}: only LoRA on Linear layers is supported")
        if m.merged:
            raise ValueError(f"{name}: adapter is merged; call unmerge_adapter() first")
        if any(a in m.lora_variant for a in m.active_adapters):
            raise NotImplementedError(f"{name}: LoRA variants (e.g. DoRA) are not supported")
        out[f"{name}.base_layer.weight"] = m
    if not out:
        raise ValueError("no LoRA layers found; use space='full' for a plain model")
    return out


@torch.no_grad()
def merged_lora_params(peft_model: nn.Module) -> Params:
    """delta_W = B @ A * scale (float32, summed over active adapters) per adapted weight.

    Keys are the frozen base weights' names in ``peft_model.named_parameters()``
    (``...q_proj.base_layer.weight``), so ``W0 + delta_W`` can be written straight into them.
    """
    out = {}
    for name, m in _lora_modules(peft_model).items():
        delta = None
        for adapter in m.active_adapters:
            if adapter in m.lora_A:
                d = m.get_delta_weight(adapter).float()
                delta = d if delta is None else delta + d
        out[name] = (
            delta
            if delta is not None
            else torch.zeros_like(m.get_base_layer().weight, dtype=torch.float32)
        )
    return out


@dataclass
class MergedLora:
    """A PEFT model viewed in its merged space (see :func:`lora_merged`)."""

    model: nn.Module
    """The PEFT model; adapters are disabled while the view is open."""
    w0: Params
    """The frozen base weights of the adapted layers (copies)."""
    delta: Params
    """The adapter's merged update at the time the view was opened."""

    def weights(self, delta: Mapping[str, Tensor] | None = None) -> Params:
        """W0 + delta_W (float32): the origin of a slice, or an interpolation end point."""
        delta = self.delta if delta is None else delta
        return {n: w.float() + delta[n].to(w.device, torch.float32) for n, w in self.w0.items()}


@contextlib.contextmanager
def lora_merged(peft_model: nn.Module) -> Iterator[MergedLora]:
    """Evaluate a PEFT model's merged space in place, without copying the model.

    Inside the block the adapters are disabled, so the model computes with its base layers;
    write ``W0 + delta_W + offsets`` into them with :func:`evaluate_points` /
    :func:`evaluate_interpolation` using ``view.weights()`` as base. On exit W0 is restored
    and the adapters re-enabled. At the origin the loss equals the PEFT model's up to float
    rounding (merged vs. separate matmuls); in bf16 the merge loses updates below W0's
    resolution, so run LoRA landscapes in float32 where that matters.
    """
    modules = _lora_modules(peft_model)
    params = dict(peft_model.named_parameters())
    w0 = {n: params[n].detach().clone() for n in modules}
    view = MergedLora(model=peft_model, w0=w0, delta=merged_lora_params(peft_model))
    try:
        with peft_model.disable_adapter():
            yield view
    finally:
        _write(peft_model, [(1.0, w0)])
