"""The rules on the scale settings that follow from the ZeRO stage: which stages shard the
weights, and what a trial whose weights are sharded cannot do.

The backend (:mod:`harness.backend`) acts on these rules and the config checks them before any
work starts; they live here, once, below both, so that checking a config never imports the
backend (torch, DeepSpeed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.config.schema import ScaleConfig, TrialConfig


def shards_weights(scale: ScaleConfig) -> bool:
    """Whether a trial with these scale settings holds only a shard of the weights per rank."""
    return scale.backend == "deepspeed" and scale.zero_stage == 3


def rewrites_weights_problem(scale: ScaleConfig) -> str | None:
    """Why a trial with these scale settings cannot have its trained weights rewritten in
    place between steps (plasticity interventions), or None if it can.

    The torch backend and DeepSpeed ZeRO-0/1/2 can (every rank holds whole weights; ZeRO keeps
    an fp32 master copy, partitioned over ranks under ZeRO-1/2, which
    :meth:`DeepSpeedBackend.weights_edited` rewrites). ZeRO-3 cannot: each rank holds a shard
    of every weight, and an intervention reads whole units (a row of one matrix, the column of
    another) and whole tensors' statistics."""
    if shards_weights(scale):
        return (
            "rewriting the weights being trained needs whole weights on every rank, and ZeRO-3 "
            "holds a shard of each; use scale.zero_stage=2 (weights replicated, gradients and "
            "optimizer states sharded; an 8B LoRA model fits one 80 GB GPU, full fine-tuning "
            "needs ~30 GB per GPU on 8 GPUs)"
        )
    if scale.backend == "deepspeed" and scale.offload_optimizer:
        return (
            "rewriting the weights being trained is not supported with "
            "scale.offload_optimizer=true (the fp32 master copy then lives in DeepSpeed's CPU "
            "optimizer, untested here); set scale.offload_optimizer=false"
        )
    return None


def scale_problems(cfg: TrialConfig) -> list[str]:
    """The ZeRO rules on a trial config (part of the config's validation)."""
    p: list[str] = []
    sc = cfg.scale
    if sc.zero_stage not in (0, 1, 2, 3):
        p.append(f"scale.zero_stage: {sc.zero_stage} must be 0, 1, 2 or 3")
    if sc.offload_params and sc.zero_stage != 3:
        p.append("scale.offload_params: parameter offload needs scale.zero_stage=3")
    if cfg.landscape.enabled and shards_weights(sc):
        p.append(
            "landscape.enabled: slices rewrite whole weight tensors, which ZeRO-3 shards "
            "over ranks; use scale.zero_stage=2 (an 8B LoRA model fits one 80 GB GPU) or "
            "landscape.enabled=false"
        )
    return p


def zero_stage_problem(scale: ScaleConfig, stages: tuple[int, ...], reason: str) -> str | None:
    """Why a method that runs under ZeRO ``stages`` only cannot run with these settings."""
    if scale.backend != "deepspeed" or scale.zero_stage in stages:
        return None
    return (
        f"runs under ZeRO stages {', '.join(map(str, stages))}, not "
        f"scale.zero_stage={scale.zero_stage} ({reason}); use scale.zero_stage=2 (weights whole "
        "on every rank, gradients and optimizer states sharded)"
    )
