"""Continual-learning baselines, one module each: task replay, EWC, LwF, O-LoRA, the multitask
upper bound, and single_task (each task alone: SAPT's FWT reference). Their names, settings and
rules on a trial are registered in :mod:`harness.config.cl_methods`; a module here is imported
only when a trial builds its method. A trial names the ones it uses in ``cl`` (see
:mod:`harness.cl.base`)."""

from harness.cl.base import REGISTRY, CLMethod, build_cl_methods, cl_method_names

__all__ = ["REGISTRY", "CLMethod", "build_cl_methods", "cl_method_names"]
