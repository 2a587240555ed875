"""The plasticity interventions the config knows: each one's settings dataclass and one
registration line (implementations: :mod:`harness.interventions`, imported when a trial builds
one), and the rules every stage-hook method (intervention or cl method) has on a trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.config.scale import rewrites_weights_problem, zero_stage_problem
from harness.registry import Entry, Registry, coerced


@dataclass(frozen=True)
class HookEntry(Entry):
    """A method that acts as a stage hook: a plasticity intervention or a cl method."""

    section: str = "interventions"
    """The config section that names it: ``interventions`` or ``cl``."""
    rewrites_weights: bool = False
    """It rewrites trained weights in place between steps (refused where the backend cannot:
    :func:`harness.config.scale.rewrites_weights_problem`)."""
    lora: str | None = None
    """Why it cannot run under LoRA (None: it can)."""
    zero_stages: tuple[int, ...] = (0, 1, 2, 3)
    """DeepSpeed ZeRO stages it runs under."""
    zero3_reason: str = ""
    """Why it cannot run under ZeRO-3 (when 3 is not in ``zero_stages``)."""
    needs_lora: bool = False
    """It only exists for LoRA (O-LoRA)."""
    diagonal_only: bool = False
    """Only its trial's diagonal a[k][k] is read (each task just after its own stage): under
    ``eval.matrix=needed`` each stage scores that stage's tasks alone (single_task)."""

    def problems(self, cfg: Any) -> list[str]:
        where = f"{self.section}.{self.name}"
        out = []
        problem = rewrites_weights_problem(cfg.scale) if self.rewrites_weights else None
        if problem:
            out.append(f"{where}: {problem}")
        if self.lora is not None and cfg.model.tuning == "lora":
            out.append(f"{where}: {self.lora}; use model.tuning=full")
        problem = zero_stage_problem(cfg.scale, self.zero_stages, self.zero3_reason)
        if problem:
            out.append(f"{where}: {problem}")
        if self.needs_lora and cfg.model.tuning != "lora":
            out.append(
                f"{where}: is defined for LoRA adapters only (a new adapter per task); set "
                "model.tuning=lora, or use ewc / lwf / task_replay for full fine-tuning"
            )
        return out + super().problems(cfg)


INTERVENTIONS: Registry[HookEntry] = Registry("intervention")
"""Plasticity interventions by name: the one list of them."""


@dataclass(frozen=True)
class ContinualBackpropSettings:
    rho: float = 1e-4
    """replacement rate ρ: the share of eligible units replaced per step (fractions
    accumulate across steps)."""
    maturity: int = 100
    """m, steps a unit must have lived before it can be replaced."""
    decay: float = 0.99
    """η, the decay of the running utility, in [0, 1)."""
    bias_correction: bool = True
    """rank units by u / (1 - η^age), as gnt.py (false: by the raw u, which makes a young unit
    look less useful than it is)."""
    mask_padding: bool = True
    """mean |h| over the non-padding positions only (false: every position)."""
    reset_adam_step: bool = True
    """restart Adam's step count of replaced rows and columns, as AdamGnT (the trial trains
    with a per-element step count); false: only their moments."""

    def __post_init__(self) -> None:
        coerced(self)
        if not 0.0 <= self.rho < 1.0:
            raise ValueError(f"continual_backprop rho: {self.rho} must be in [0, 1)")
        if self.maturity < 0:
            raise ValueError(f"continual_backprop maturity: {self.maturity} must be >= 0")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"continual_backprop decay: {self.decay} must be in [0, 1)")


CBP_REFERENCE_FIXES = ("bias_correction", "mask_padding", "reset_adam_step")
"""continual_backprop settings whose reference value (true) changed the computation on
2026-12-05."""


def _cbp_revision(cfg: Any) -> int:
    """2: as gnt.py from 2026-12-05 (bias-corrected ranking, padding masked, Adam step
    restarted), unless every one of those is switched off (the earlier computation)."""
    s = cfg.interventions.get("continual_backprop") or {}
    return 1 if all(s.get(k) is False for k in CBP_REFERENCE_FIXES) else 2


@dataclass(frozen=True)
class EmbeddingResetSettings:
    every: int | None = None
    """reset after every this many optimiser steps (unset: never by steps)."""
    before_each_task: bool = False
    """reset before every task but the first."""

    def __post_init__(self) -> None:
        coerced(self)
        if self.every is not None and self.every < 1:
            raise ValueError(f"embedding_reset every: {self.every} must be >= 1 (or unset)")
        if self.every is None and not self.before_each_task:
            raise ValueError(
                "embedding_reset: set every (steps) or before_each_task=true, else it never acts"
            )


@dataclass(frozen=True)
class ReDoSettings:
    every: int = 100
    """look for dormant units after every this many optimiser steps."""
    tau: float = 0.025
    """a unit whose dormant score s_i is <= tau is recycled (Sokar et al.: 0.025-0.1)."""
    batch_texts: int = 16
    """the first this many training examples of the current task score the units."""

    def __post_init__(self) -> None:
        coerced(self)
        if self.every < 1:
            raise ValueError(f"redo every: {self.every} must be >= 1")
        if self.tau < 0:
            raise ValueError(f"redo tau: {self.tau} must be >= 0")
        if self.batch_texts < 1:
            raise ValueError(f"redo batch_texts: {self.batch_texts} must be >= 1")


@dataclass(frozen=True)
class ShrinkPerturbSettings:
    shrink: float = 0.9
    """λ in θ ← λθ + σε, in (0, 1]."""
    sigma: float = 0.01
    """σ, the scale of the noise ε (>= 0)."""
    noise: Literal["init", "scaled"] = "init"
    """'init': ε ~ N(0, r²) with r the model's initializer_range; 'scaled': ε ~ N(0, std(θ)²)
    per tensor."""
    every: int | None = None
    """apply after every this many optimiser steps; unset: before every task but the first."""

    def __post_init__(self) -> None:
        coerced(self)
        if not 0.0 < self.shrink <= 1.0:
            raise ValueError(f"shrink_perturb shrink: {self.shrink} must be in (0, 1]")
        if self.sigma < 0:
            raise ValueError(f"shrink_perturb sigma: {self.sigma} must be >= 0")
        if self.every is not None and self.every < 1:
            raise ValueError(f"shrink_perturb every: {self.every} must be >= 1 (or unset)")


_UNITS_UNDER_LORA = "under LoRA the MLP units' weights are frozen"

INTERVENTIONS.add(
    HookEntry(
        "continual_backprop",
        "harness.interventions.continual_backprop:ContinualBackprop",
        ContinualBackpropSettings,
        colour="tab:pink",
        source="Dohare et al. 2024",
        summary="Continual backprop: replace the least useful mature MLP units with fresh ones "
        "at a small rate every step (selective reinitialisation).",
        revision=_cbp_revision,
        rewrites_weights=True,
        lora=f"{_UNITS_UNDER_LORA} and an adapter has no units of its own to replace",
    )
)
INTERVENTIONS.add(
    HookEntry(
        "embedding_reset",
        "harness.interventions.embedding_reset:EmbeddingReset",
        EmbeddingResetSettings,
        source="Chen et al. 2023",
        summary="Active forgetting: reset the token embeddings to a fresh initialisation, "
        "every k steps or before each task.",
        rewrites_weights=True,
        lora="LoRA trains adapters, not the embeddings",
    )
)
INTERVENTIONS.add(
    HookEntry(
        "redo",
        "harness.interventions.redo:ReDo",
        ReDoSettings,
        colour="tab:green",
        source="Sokar et al. 2023",
        summary="ReDo: recycle dormant neurons (fresh incoming weights, zero outgoing).",
        paper_defaults={"every": 1000},
        rewrites_weights=True,
        lora=f"{_UNITS_UNDER_LORA}, so they cannot be recycled",
    )
)
INTERVENTIONS.add(
    HookEntry(
        "shrink_perturb",
        "harness.interventions.shrink_perturb:ShrinkPerturb",
        ShrinkPerturbSettings,
        colour="tab:cyan",
        source="Ash & Adams 2020",
        summary="Shrink & perturb: scale the weights down and add noise, θ ← λθ + σε.",
        paper_defaults={"shrink": 0.4, "sigma": 0.1},
        rewrites_weights=True,
    )
)
