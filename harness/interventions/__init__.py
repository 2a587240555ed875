"""Plasticity interventions (one module each): changes to the weights being trained that keep a
network able to learn new tasks. Importing this package registers every intervention in
:data:`REGISTRY`; a trial names the ones it uses in ``interventions`` (see
:mod:`harness.interventions.base`)."""

from harness.interventions import (  # noqa: F401  (registration)
    continual_backprop,
    embedding_reset,
    redo,
    shrink_perturb,
)
from harness.interventions.base import (
    REGISTRY,
    Intervention,
    build_interventions,
    init_std,
    intervention_names,
    register,
)

__all__ = [
    "REGISTRY",
    "Intervention",
    "build_interventions",
    "init_std",
    "intervention_names",
    "register",
]
