"""Plasticity interventions, one module each: continual backprop, embedding reset (active
forgetting), ReDo and shrink & perturb change the weights being trained to keep the network
able to learn new tasks. Their names, settings and rules on a trial are registered in
:mod:`harness.config.interventions`; a module here is imported only when a trial builds its
intervention. A trial names the ones it uses in ``interventions`` (see
:mod:`harness.interventions.base`)."""

from harness.interventions.base import (
    REGISTRY,
    Intervention,
    build_interventions,
    init_std,
    intervention_names,
)

__all__ = ["REGISTRY", "Intervention", "build_interventions", "init_std", "intervention_names"]
