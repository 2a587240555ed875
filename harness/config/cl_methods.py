"""The continual-learning baselines the config knows: each one's settings dataclass, its rules
on a trial and one registration line (implementations: :mod:`harness.cl`, imported when a trial
builds one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from harness.config.interventions import HookEntry
from harness.config.tasks import named_tasks
from harness.registry import Registry, coerced

CL: Registry[HookEntry] = Registry("continual-learning method")
"""Continual-learning methods by name: the one list of them."""

WHOLE_PARAMETERS = "it reads whole parameters on every rank, and ZeRO-3 holds a shard of each"


@dataclass(frozen=True)
class EWCSettings:
    lam: float = 5000.0
    """lambda, the penalty's weight (>= 0)."""
    gamma: float = 1.0
    """decay of the running Fisher before the new task's is added, in [0, 1] (1: the sum over
    tasks around the latest weights); anchors='online' only."""
    fisher_samples: int | None = 64
    """training examples of each task the Fisher is estimated on (>= 1; unset: all of them)."""
    half: bool = False
    """the penalty is lambda/2 * sum F (theta - theta*)^2, as the paper writes it (false:
    lambda * ..., as avalanche)."""
    fisher_nll: Literal["token_mean", "sequence"] = "token_mean"
    """the NLL whose squared gradient is the Fisher: 'token_mean' (the answer tokens' mean) or
    'sequence' (their sum: the answer's log-likelihood)."""
    anchors: Literal["online", "per_task"] = "online"
    """'online': one running Fisher around the latest weights; 'per_task': each finished
    task's own Fisher and anchor (Kirkpatrick et al.)."""

    def __post_init__(self) -> None:
        coerced(self)
        if not self.lam >= 0:
            raise ValueError(f"ewc lam: {self.lam} must be >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"ewc gamma: {self.gamma} must be in [0, 1]")
        if self.fisher_samples is not None and self.fisher_samples < 1:
            raise ValueError(
                f"ewc fisher_samples: {self.fisher_samples} must be >= 1 (or unset: all)"
            )


def _ewc_rules(cfg: Any) -> list[str]:
    if "olora" in cfg.cl:
        return [
            "cl.ewc: with cl.olora every task trains a fresh adapter, so EWC would anchor "
            "task k's adapter to task k-1's values (another subspace); O-LoRA's own "
            "orthogonality term is what protects earlier tasks there: use one of the two"
        ]
    return []


@dataclass(frozen=True)
class LwFSettings:
    weight: float = 1.0
    """the distillation term's weight (>= 0)."""
    temperature: float = 2.0
    """softmax temperature T of both distributions (> 0)."""
    positions: Literal["all", "labels"] = "all"
    """'all': every non-padding position of the task rows; 'labels': only the positions that
    predict the answer tokens."""
    t2_scale: bool = True
    """multiply the term by T^2 (false: Li & Hoiem's and avalanche's term, a quarter of it at
    T 2)."""
    distil_first_task: bool = True
    """at task 1 distil the starting model (false: no term at task 1, as avalanche, which has
    no previous model there)."""

    def __post_init__(self) -> None:
        coerced(self)
        if not self.weight >= 0:
            raise ValueError(f"lwf weight: {self.weight} must be >= 0")
        if not self.temperature > 0:
            raise ValueError(f"lwf temperature: {self.temperature} must be > 0")


def _lwf_revision(cfg: Any) -> int:
    """2 beside other methods since 2026-12-05 (the teacher is taken before their
    before_task; it was taken in config order); alone it computes what it did."""
    return 2 if len(cfg.cl) + len(cfg.interventions) > 1 else 1


@dataclass(frozen=True)
class NoSettings:
    """A method without settings."""


def _multitask_rules(cfg: Any) -> list[str]:
    out = []
    if cfg.landscape.enabled:
        out.append(
            "cl.multitask: trains every task in one stage, so the landscape's per-task "
            "stages ('prev', 'new') do not exist; set landscape.enabled=false"
        )
    if "task_replay" in cfg.cl:
        out.append("cl.multitask: already trains on every task's data; drop cl.task_replay")
    return out


@dataclass(frozen=True)
class OLoRASettings:
    lambda_orth: float = 0.5
    """weight of the orthogonality penalty between the new adapter's A and the earlier tasks'
    (>= 0)."""
    lambda_l2: float = 0.0
    """weight of the L2 norm of the new adapter's matrices (>= 0)."""
    schedule: Literal["constant", "long_sequence"] = "constant"
    """'constant': lambda_orth and lambda_l2 at every task; 'long_sequence': both per task,
    from O-LoRA's 15-task script (scripts/long.sh; lambda_orth and lambda_l2 are then
    ignored)."""

    def __post_init__(self) -> None:
        coerced(self)
        if not self.lambda_orth >= 0:
            raise ValueError(f"olora lambda_orth: {self.lambda_orth} must be >= 0")
        if not self.lambda_l2 >= 0:
            raise ValueError(f"olora lambda_l2: {self.lambda_l2} must be >= 0")


OLORA_LONG_SEQUENCE_SCHEDULE: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (0.5, 0.0),
    (0.5, 0.0),
    (0.5, 0.0),
    (0.5, 0.1),
    (0.5, 0.1),
    (0.5, 0.3),
    (0.5, 0.0),
    (0.5, 0.1),
    (5.0, 0.0),
    (5.0, 0.0),
    (5.0, 0.1),
    (5.0, 0.0),
    (5.0, 0.1),
    (5.0, 0.3),
)
"""(lamda_1, lamda_2) of O-LoRA's ``scripts/long.sh`` for tasks 1-15, in its order (yelp, amazon,
MNLI, CB, COPA, QQP, RTE, IMDB, SST-2, dbpedia, agnews, yahoo, MultiRC, BoolQA, WiC)."""


def _olora_revision(cfg: Any) -> int:
    """2 in bfloat16/float16 since 2026-12-05 (earlier adapters kept, not merged: the merge
    rounded them); float32 computes what it did."""
    return 1 if cfg.model.dtype == "float32" else 2


def _olora_rules(cfg: Any) -> list[str]:
    settings = dict(cfg.cl.get("olora") or {})
    n = len(named_tasks(cfg.data.tasks))
    steps = len(OLORA_LONG_SEQUENCE_SCHEDULE)
    if settings.get("schedule") == "long_sequence" and n > steps:
        return [
            f"cl.olora: schedule 'long_sequence' gives weights for {steps} tasks, not {n}; "
            "use schedule constant"
        ]
    return []


def diagonal_only(cfg: Any) -> bool:
    """Whether the trial's ``cl`` methods read its diagonal only (:attr:`HookEntry.diagonal_only`:
    ``eval.matrix=needed`` then scores each stage's own tasks)."""
    return any(CL.entry(name).diagonal_only for name in cfg.cl)


def _single_task_rules(cfg: Any) -> list[str]:
    others = sorted(set(cfg.cl) - {"single_task"})
    if others:
        return [
            f"cl.single_task: trains every task alone from the starting model, so "
            f"{', '.join(others)} (which carry something from one task to the next) would "
            "act on nothing; run them as trials of their own"
        ]
    return []


@dataclass(frozen=True)
class TaskReplaySettings:
    size: int = 50
    """examples kept per finished task ('quota') or in all ('reservoir'); >= 1."""
    policy: Literal["quota", "reservoir"] = "quota"
    """'quota': size examples of every finished task; 'reservoir': one buffer of size examples
    over all finished tasks (reservoir sampling)."""

    def __post_init__(self) -> None:
        coerced(self)
        if self.size < 1:
            raise ValueError(f"task_replay size: {self.size} must be >= 1")


CL.add(
    HookEntry(
        "ewc",
        "harness.cl.ewc:EWC",
        EWCSettings,
        section="cl",
        colour="teal",
        source="Kirkpatrick et al. 2017; online: Schwarz et al. 2018",
        summary="EWC: penalise moving the weights that mattered for earlier tasks (diagonal "
        "Fisher), online by default.",
        paper_defaults={
            "half": True,
            "fisher_nll": "sequence",
            "anchors": "per_task",
            "fisher_samples": None,
        },
        rules=_ewc_rules,
        zero_stages=(0, 1, 2),
        zero3_reason=WHOLE_PARAMETERS,
    )
)
CL.add(
    HookEntry(
        "lwf",
        "harness.cl.lwf:LwF",
        LwFSettings,
        section="cl",
        colour="slateblue",
        source="Li & Hoiem 2017",
        summary="LwF, learning without forgetting: distil the model as it was at the end of "
        "the previous task on the current task's inputs.",
        paper_defaults={"t2_scale": False, "distil_first_task": False},
        revision=_lwf_revision,
        zero_stages=(0, 1, 2),
        zero3_reason=WHOLE_PARAMETERS,
    )
)
CL.add(
    HookEntry(
        "multitask",
        "harness.cl.multitask:Multitask",
        NoSettings,
        section="cl",
        colour="black",
        source="the upper bound of the O-LoRA and GeRe tables",
        summary="Multitask: the upper bound every continual-learning row is read against -- one "
        "training run on the union of all the tasks, instead of one task after another.",
        rules=_multitask_rules,
    )
)
CL.add(
    HookEntry(
        "olora",
        "harness.cl.olora:OLoRA",
        OLoRASettings,
        section="cl",
        colour="darkorange",
        source="Wang et al. 2023 (O-LoRA)",
        summary="O-LoRA, orthogonal subspace learning: a new LoRA adapter per task, trained "
        "orthogonal to the earlier tasks' adapters.",
        paper_defaults={"schedule": "long_sequence"},
        rules=_olora_rules,
        revision=_olora_revision,
        rewrites_weights=True,
        needs_lora=True,
    )
)
CL.add(
    HookEntry(
        "single_task",
        "harness.cl.single_task:SingleTask",
        NoSettings,
        section="cl",
        source="the per-task reference of SAPT's FWT (Zhao et al. 2024)",
        summary="Single task: every task trained alone from the starting model -- the "
        "reference row behind SAPT's forward transfer.",
        rules=_single_task_rules,
        rewrites_weights=True,
        diagonal_only=True,  # SAPT's FWT reads a[k][k]; the rest of its matrix means little
    )
)
CL.add(
    HookEntry(
        "task_replay",
        "harness.cl.task_replay:TaskReplay",
        TaskReplaySettings,
        section="cl",
        colour="goldenrod",
        source="Chaudhry et al. 2019 (experience replay)",
        summary="Task replay (experience replay): keep examples of the finished tasks and mix "
        "them into the next tasks' batches.",
    )
)
