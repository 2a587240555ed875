"""The summary row: one row per trial, the study's table of contents (the ``summary`` record
kind of :mod:`results.schema`): status, what ran, the CL metrics of its accuracy matrix,
general ability before and after, the config and its flattened settings, provenance."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from harness.config import TrialConfig
from harness.config.flat import flat_settings
from harness.metrics import METRICS, all_metrics, matrix_from_long


def summary_row(
    cfg: TrialConfig,
    *,
    status: str,
    error: str | None,
    diverged: tuple[int | None, int | None],
    wall_time_s: float,
    tasks: Sequence[str],
    n_stages: int,
    replay_size: int,
    accuracy: list[dict],
    general: list[dict],
    fingerprint: str | None,
    warnings: Sequence[str],
    harness_version: str,
    provenance: dict[str, Any],
    weight: float | str | None,
    model: tuple[str, str | None] | None = None,
) -> dict:
    """A trial's summary row from its accuracy and general records so far (``n_stages``
    stages trained of ``len(tasks)`` tasks; the metrics are NaN until every stage is scored).
    ``weight``: the replay weight the trial used (its method's default resolved); ``model``:
    the starting model's (stable id, local path), default (model.name, None)."""
    n = len(tasks)
    metrics = dict.fromkeys(METRICS, float("nan"))
    done = accuracy and len({r["stage"] for r in accuracy}) == n_stages + 1
    if done and n_stages == n and "single_task" not in cfg.cl:
        A, _ = matrix_from_long(pd.DataFrame(accuracy))
        metrics = all_metrics(A)
    elif done and "single_task" in cfg.cl:
        pass  # every task alone: only the diagonal means much (results.presentation.baselines: fwt_sapt)
    elif done:  # every task trained in one stage (multitask): only the final scores mean much
        final = [r["accuracy"] for r in accuracy if r["stage"] == n_stages]
        metrics["ap"] = sum(final) / len(final)
    return dict(
        status=status,
        error=error,
        diverged_stage=diverged[0],
        diverged_step=diverged[1],
        wall_time_s=wall_time_s,
        n_tasks=n,
        n_stages=n_stages,
        tasks=list(tasks),
        model=(model or (cfg.model.name, None))[0],
        model_path=(model or (cfg.model.name, None))[1],
        tuning=cfg.model.tuning,
        method=cfg.replay.method,
        replay_size=replay_size,
        replay_weight=str(cfg.replay.weight if cfg.replay.weight is not None else "default"),
        lr=cfg.train.lr,
        lr_multiplier=cfg.train.lr_multiplier,
        seed=cfg.seed,
        **metrics,
        general_acc_start=general[0]["accuracy"] if general else float("nan"),
        general_acc_final=general[-1]["accuracy"] if general else float("nan"),
        general_ppl_start=general[0]["ppl"] if general else float("nan"),
        general_ppl_final=general[-1]["ppl"] if general else float("nan"),
        config_json=json.dumps(cfg.to_dict(), sort_keys=True),
        data_fingerprint=fingerprint,
        data_warnings=list(warnings),
        harness_version=harness_version,
        **provenance,
        **flat_settings(cfg.to_dict(), weight),
    )
