"""What every continual-learning baseline method is: a stage hook with settings, in one registry.

The classic rows of a continual-learning table -- task replay, EWC, LwF, O-LoRA, multitask --
act where a replay method cannot: they keep earlier tasks' examples (task replay), penalise
moving weights that mattered (EWC), distil the model as it was before the task (LwF), give
each task its own LoRA subspace (O-LoRA) or change what is trained at all (multitask). Each is
one module here and a stage hook (:mod:`harness.hooks`): it may add a loss term per
micro-batch (``loss_term``), add training rows (``extra_examples``) or plan the stages
(``stages``). A trial names the ones it uses in ``cl: {name: {setting: value}}``; they compose
with any general-replay method (``replay.method``) where the combination makes sense, and a
combination that does not is refused with the reason (:meth:`CLMethod.problems`).

Settings are the keyword-only arguments of ``__init__`` (documented ``name: text``), checked
like every other setting. Under DeepSpeed, ``zero_stages`` says which ZeRO stages a method
supports: EWC, LwF and O-LoRA read or replace whole parameters, which ZeRO-3 shards over the
ranks, so they run under ZeRO-0/1/2 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from harness.core import add_to_registry
from harness.interventions.base import Intervention

if TYPE_CHECKING:
    from harness.config import TrialConfig

REGISTRY: dict[str, type[CLMethod]] = {}
"""Continual-learning methods by name; filled by the ``@register`` lines of their modules."""


class CLMethod(Intervention):
    """Base class: a named hook with settings (the intervention machinery: ``settings()``,
    seeded ``generator``, ``counters`` logged after each task) and its rules on a trial."""

    zero_stages: ClassVar[tuple[int, ...]] = (0, 1, 2, 3)
    """DeepSpeed ZeRO stages the method runs under."""
    zero3_reason: ClassVar[str] = ""
    """Why it cannot run under ZeRO-3 (when 3 is not in ``zero_stages``)."""
    needs_lora: ClassVar[bool] = False
    """The method only exists for LoRA (O-LoRA)."""
    rewrites_weights: ClassVar[bool] = False
    """The method rewrites trained weights in place between steps (refused where the backend
    cannot: :func:`harness.backend.rewrites_weights_problem`)."""

    @classmethod
    def problems(cls, cfg: TrialConfig) -> list[str]:
        from harness.backend import rewrites_weights_problem

        out: list[str] = []
        where = f"cl.{cls.name}"
        scale = cfg.scale
        problem = rewrites_weights_problem(scale) if cls.rewrites_weights else None
        if problem:
            out.append(f"{where}: {problem}")
        if scale.backend == "deepspeed" and scale.zero_stage not in cls.zero_stages:
            out.append(
                f"{where}: runs under ZeRO stages {', '.join(map(str, cls.zero_stages))}, not "
                f"scale.zero_stage={scale.zero_stage} ({cls.zero3_reason}); use "
                "scale.zero_stage=2 (weights whole on every rank, gradients and optimizer "
                "states sharded)"
            )
        if cls.needs_lora and cfg.model.tuning != "lora":
            out.append(
                f"{where}: is defined for LoRA adapters only (a new adapter per task); set "
                "model.tuning=lora, or use ewc / lwf / task_replay for full fine-tuning"
            )
        return out


T = TypeVar("T", bound=type[CLMethod])


def register(cls: T) -> T:
    """Class decorator adding a method to :data:`REGISTRY` under ``cls.name``."""
    add_to_registry(REGISTRY, cls, "Continual-learning method")
    return cls


def cl_method_names() -> list[str]:
    return sorted(REGISTRY)


def build_cl_methods(cfg: TrialConfig) -> list[CLMethod]:
    """The methods a (validated) config asks for, built with their settings."""
    return [REGISTRY[name](**dict(settings or {})) for name, settings in cfg.cl.items()]


WHOLE_PARAMETERS = "it reads whole parameters on every rank, and ZeRO-3 holds a shard of each"
