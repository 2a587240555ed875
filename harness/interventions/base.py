"""What every plasticity intervention is: a stage hook with settings, in one registry.

An intervention changes the weights being trained at fixed points of a trial (before a task,
every k optimiser steps) to keep the network able to learn new tasks, where a replay method
adds a loss term to keep what it knew. A trial has one replay method and zero or more
interventions (``interventions: {name: {setting: value}}`` in the trial config); they run after
the measuring hooks, in the order given.

An intervention's settings are the keyword-only arguments of its ``__init__`` (documented there,
``name: text``), checked like every other setting (:func:`harness.replay.settings_spec` reads
them). Its randomness comes from a generator seeded by the trial seed and the step it acts at,
never from the global RNG, so a resumed trial draws the same noise as an uninterrupted one --
and every rank of a multi-rank trial draws the same: each rank edits its own whole copy of the
weights alike, and decisions from data (which units to replace) are taken on statistics pooled
over the ranks, then handed to ``Backend.weights_edited`` (DeepSpeed ZeRO-1/2's fp32 master
copy). ZeRO-3 is refused (:func:`harness.backend.rewrites_weights_problem`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from harness.core import add_to_registry
from harness.hooks import Hook

if TYPE_CHECKING:
    from harness.config import TrialConfig

log = logging.getLogger("harness.interventions")

REGISTRY: dict[str, type[Intervention]] = {}
"""Interventions by name; filled by the ``@register`` lines of their modules."""


class Intervention(Hook):
    """Base class: ``name``, ``problems(cfg)`` (rules on the trial it would join) and helpers."""

    name: ClassVar[str]
    source: ClassVar[str] = ""
    """The paper the method comes from (shown in --help)."""

    def settings(self) -> dict[str, Any]:
        from harness.replay import settings_spec

        return {s.name: getattr(self, s.name) for s in settings_spec(type(self))}

    lora: ClassVar[str | None] = None
    """Why the intervention cannot run under LoRA (None: it can)."""
    paper_defaults: ClassVar[dict[str, Any]] = {}
    """Settings whose reference value differs from the harness's default: what
    ``method_defaults: paper`` fills in where a trial leaves them unset (the docstring says
    where each value comes from)."""

    @classmethod
    def revision(cls, cfg: TrialConfig) -> int:
        """1, or higher where this method computes something else for ``cfg`` than the code
        that first derived trial ids did (it then enters the trial id:
        :func:`harness.config.schema.method_revisions`)."""
        return 1

    @classmethod
    def problems(cls, cfg: TrialConfig) -> list[str]:
        """Why this intervention cannot run in a trial with these settings ([] if it can)."""
        from harness.backend import rewrites_weights_problem

        p = rewrites_weights_problem(cfg.scale)
        out = [f"interventions.{cls.name}: {p}"] if p else []
        if cls.lora is not None and cfg.model.tuning == "lora":
            out.append(f"interventions.{cls.name}: {cls.lora}; use model.tuning=full")
        return out

    @staticmethod
    def generator(seed: int, *keys: int) -> torch.Generator:
        """A CPU generator for this trial seed and these keys (stage, step, ...)."""
        import numpy as np

        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0]))
        return g

    counters: ClassVar[tuple[str, ...]] = ()
    """Attributes counting what the intervention did (logged after every task)."""

    def after_task(self, trial, stage: int) -> None:
        if trial.backend.is_main and self.counters:
            done = ", ".join(f"{c} {getattr(self, c)}" for c in self.counters)
            log.info("%s after task %d: %s (so far)", self.name, stage, done)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


T = TypeVar("T", bound=type[Intervention])


def register(cls: T) -> T:
    """Class decorator adding an intervention to :data:`REGISTRY` under ``cls.name``."""
    add_to_registry(REGISTRY, cls, "Intervention")
    return cls


def intervention_names() -> list[str]:
    return sorted(REGISTRY)


def build_interventions(cfg: TrialConfig) -> list[Intervention]:
    """The interventions a (validated) config asks for, built with their settings."""
    return [REGISTRY[name](**dict(settings or {})) for name, settings in cfg.interventions.items()]


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
