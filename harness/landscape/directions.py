"""Weights as points: pristine copies, seeded random directions, writing a point into a model."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

SliceKind = Literal["interpolation", "random_1d", "random_2d"]
Space = Literal["full", "lora_merged"]
Normalisation = Literal["filter", "layer", "none"]

Params = dict[str, Tensor]
"""Parameter name (as in ``model.named_parameters()``) -> tensor."""
Coord = tuple[float, float | None]
"""A point of a slice: (alpha, beta); beta is None on 1-D slices and interpolations."""
PointKey = tuple[str, float, float | None]
"""(dataset, alpha, beta) — identifies one row of a slice (beta None on 1-D slices)."""


def pristine(model: nn.Module, *, names: Iterable[str] | None = None) -> Params:
    """A detached copy of the model's parameters (all, or ``names``): a slice's origin."""
    params = dict(model.named_parameters())
    keep = params if names is None else {n: params[n] for n in names}
    return {n: p.detach().clone() for n, p in keep.items()}


def _name_seed(name: str, seed: int, axis: int) -> int:
    """A 63-bit generator seed from (seed, axis, parameter name): stable across processes."""
    digest = hashlib.sha256(f"{seed}|{axis}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_direction(
    params: Mapping[str, Tensor],
    seed: int,
    *,
    normalisation: Normalisation = "filter",
    axis: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """A Gaussian direction shaped like ``params``, regenerated exactly from ``seed``.

    Each tensor is drawn on the CPU from its own generator seeded by (seed, axis, name), so
    the result does not depend on dict order, device or process. ``axis`` tells apart the two
    directions of a 2-D slice made from one seed. Scaling: see the module docstring; 1-D
    tensors are always zero. ``dtype``: storage type (bfloat16 halves memory on 8B models).
    """
    if normalisation not in ("filter", "layer", "none"):
        raise ValueError(f"normalisation {normalisation!r} is not one of 'filter', 'layer', 'none'")
    out: Params = {}
    for name, theta in params.items():
        if theta.dim() < 2:
            out[name] = torch.zeros(theta.shape, dtype=dtype, device=theta.device)
            continue
        gen = torch.Generator(device="cpu").manual_seed(_name_seed(name, seed, axis))
        d = torch.randn(theta.shape, generator=gen, dtype=torch.float32)
        ref = theta.detach().to("cpu", torch.float32)
        if normalisation == "filter":
            rows_d, rows_t = d.reshape(d.shape[0], -1), ref.reshape(ref.shape[0], -1)
            scale = rows_t.norm(dim=1) / rows_d.norm(dim=1).clamp_min(1e-30)
            d = (rows_d * scale[:, None]).reshape(theta.shape)
        elif normalisation == "layer":
            d = d * (ref.norm() / d.norm().clamp_min(1e-30))
        out[name] = d.to(theta.device, dtype)
    return out


def _write(model: nn.Module, terms: Sequence[tuple[float, Mapping[str, Tensor]]]) -> None:
    """Set each named parameter to sum(coef * tensor) over ``terms``, computed in float32.

    The first term names the parameters written; later terms may cover a subset (a direction
    without an entry adds nothing there). Coefficients of 0 are skipped, so the origin of a
    slice is the base weights bit for bit.
    """
    params = dict(model.named_parameters())
    first = terms[0][1]
    missing = [n for n in first if n not in params]
    if missing:
        raise KeyError(
            f"{len(missing)} weight name(s) not in the model, e.g. {missing[:3]}; build the "
            "base with pristine(model) (or lora_merged(...).weights() for a PEFT model)"
        )
    with torch.no_grad():
        for name in first:
            p = params[name]
            if any(name in tensors and tensors[name] is p for _, tensors in terms):
                raise ValueError(
                    f"{name}: the weights to write are the model's own parameters; pass a copy "
                    "(pristine(model)), or the first write would change them"
                )
            acc = None
            for coef, tensors in terms:
                if coef == 0 or name not in tensors:
                    continue
                t = tensors[name].to(p.device, torch.float32)  # may alias; never modified
                term = t if coef == 1 else coef * t
                acc = term if acc is None else acc + term
            p.copy_(acc.to(p.dtype) if acc is not None else torch.zeros_like(p))
