"""Continual-learning baseline methods (one module each): task replay, EWC, LwF, O-LoRA and the
multitask upper bound, and single_task (each task alone: SAPT's FWT reference). Importing this package registers every method in :data:`REGISTRY`; a
trial names the ones it uses in ``cl`` (see :mod:`harness.cl.base`)."""

from harness.cl import (  # noqa: F401  (registration)
    ewc,
    lwf,
    multitask,
    olora,
    single_task,
    task_replay,
)
from harness.cl.base import REGISTRY, CLMethod, build_cl_methods, cl_method_names, register

__all__ = ["REGISTRY", "CLMethod", "build_cl_methods", "cl_method_names", "register"]
