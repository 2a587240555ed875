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

Settings are a dataclass registered with the method in :mod:`harness.config.cl_methods`
(field docs, checks). Under DeepSpeed, ``zero_stages`` says which ZeRO stages a method
supports: EWC, LwF and O-LoRA read or replace whole parameters, which ZeRO-3 shards over the
ranks, so they run under ZeRO-0/1/2 only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from harness.config.cl_methods import CL
from harness.hooks import MethodHook

if TYPE_CHECKING:
    from harness.config import TrialConfig

REGISTRY = CL
"""Continual-learning methods by name (:data:`harness.config.cl_methods.CL`)."""


class CLMethod(MethodHook):
    """Base class of a continual-learning method: ``name`` (its registry entry holds its
    settings, source, ZeRO stages and rules on a trial) and the helpers of
    :class:`MethodHook`."""

    name: ClassVar[str]
    registry = CL


def cl_method_names() -> list[str]:
    return CL.names()


def build_cl_methods(cfg: TrialConfig) -> list[CLMethod]:
    """The methods a (validated) config asks for, built with their settings."""
    return [CL.build(name, **dict(settings or {})) for name, settings in cfg.cl.items()]
