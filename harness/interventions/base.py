"""What every plasticity intervention is: a stage hook with settings, in one registry.

An intervention changes the weights being trained at fixed points of a trial (before a task,
every k optimiser steps) to keep the network able to learn new tasks, where a replay method
adds a loss term to keep what it knew. A trial has one replay method and zero or more
interventions (``interventions: {name: {setting: value}}`` in the trial config); they run after
the measuring hooks, in the order given.

An intervention's settings are a dataclass registered with it in
:mod:`harness.config.interventions` (field docs, checks), so the config validates them
without importing torch. Its randomness comes from a generator seeded by the trial seed and the step it acts at,
never from the global RNG, so a resumed trial draws the same noise as an uninterrupted one --
and every rank of a multi-rank trial draws the same: each rank edits its own whole copy of the
weights alike, and decisions from data (which units to replace) are taken on statistics pooled
over the ranks, then handed to ``Backend.weights_edited`` (DeepSpeed ZeRO-1/2's fp32 master
copy). ZeRO-3 is refused (:func:`harness.config.scale.rewrites_weights_problem`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from harness.config.interventions import INTERVENTIONS
from harness.hooks import MethodHook

if TYPE_CHECKING:
    from harness.config import TrialConfig

REGISTRY = INTERVENTIONS
"""Interventions by name (:data:`harness.config.interventions.INTERVENTIONS`)."""


class Intervention(MethodHook):
    """Base class of a plasticity intervention: ``name`` (its registry entry holds its
    settings, source and rules on a trial) and the helpers of :class:`MethodHook`."""

    name: ClassVar[str]
    registry = INTERVENTIONS


def intervention_names() -> list[str]:
    return INTERVENTIONS.names()


def build_interventions(cfg: TrialConfig) -> list[Intervention]:
    """The interventions a (validated) config asks for, built with their settings."""
    return [INTERVENTIONS.build(name, **dict(s or {})) for name, s in cfg.interventions.items()]


def init_std(model: torch.nn.Module) -> float:
    """The standard deviation a Hugging Face model initialises its weight matrices with."""
    config = getattr(model, "config", None)
    base = getattr(model, "base_model", None)
    if config is None and base is not None:
        config = getattr(base, "config", None)
    return float(getattr(config, "initializer_range", 0.02))


@torch.no_grad()
def reinit_units(backend, mlp: torch.nn.Module, idx: torch.Tensor, g: torch.Generator) -> None:
    """Give the MLP units ``idx`` fresh incoming weights (their rows of gate_proj and up_proj,
    drawn from N(0, r²), r the model's initializer_range) and zero outgoing weights (their
    columns of down_proj, so the output does not jump), and forget the optimiser moments of
    those rows and columns (continual backprop and ReDo replace units this way)."""
    r = init_std(backend.module)
    incoming = [mlp.gate_proj.weight, mlp.up_proj.weight]
    for w in incoming:
        fresh = torch.randn((len(idx), w.shape[1]), generator=g, dtype=torch.float32)
        w[idx.to(w.device)] = (fresh * r).to(w.dtype).to(w.device)
    down = mlp.down_proj.weight
    down[:, idx.to(down.device)] = 0
    backend.weights_edited([*incoming, down])
    backend.reset_optimizer_state(incoming, idx, dim=0)
    backend.reset_optimizer_state([down], idx, dim=1)
