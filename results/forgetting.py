"""General ability over the task sequence: each trial's drop from its starting model
(:func:`general_drop`) and the fraction of the no-replay baseline's drop that a method prevents
(:func:`forgetting_prevented`, the project's one definition of "forgetting prevented").
Conventions as in :mod:`results.analysis`."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from results.analysis import hashable_settings, join_keys, require_columns, sort_groups

__all__ = ["forgetting_prevented", "general_drop"]


def general_drop(general: pd.DataFrame) -> pd.DataFrame:
    """General ability at every stage relative to the same trial's stage 0 (the starting model).

    One row per (trial, probe, stage) with the record's ``accuracy`` and ``ppl``, their stage-0
    values ``accuracy_start``/``ppl_start``, and:

    * ``accuracy_drop = accuracy_start - accuracy`` (positive = lost ability; fraction);
    * ``accuracy_ratio = accuracy / accuracy_start``;
    * ``ppl_ratio = ppl / ppl_start`` and ``nll_increase = ln(ppl_ratio)`` (nats per token;
      positive = general text became less likely).

    A trial without a stage-0 row gets NaN relative values rather than being dropped.
    """
    require_columns(general, ["trial_id", "stage", "probe", "accuracy", "ppl"], "general_drop")
    keys = [k for k in ("study", "trial_id", "probe") if k in general.columns]
    start = general[general["stage"] == 0]
    dup = start.duplicated(keys)
    if dup.any():
        raise ValueError(
            f"general_drop: several stage-0 rows for {start.loc[dup, keys].iloc[0].to_dict()}"
        )
    start = start[[*keys, "accuracy", "ppl"]].rename(
        columns={"accuracy": "accuracy_start", "ppl": "ppl_start"}
    )
    cols = [*keys, "stage", *(["after_task"] if "after_task" in general else []), "accuracy", "ppl"]
    out = general[cols].merge(start, on=keys, how="left")
    out["accuracy_drop"] = out["accuracy_start"] - out["accuracy"]
    out["accuracy_ratio"] = out["accuracy"] / out["accuracy_start"]
    out["ppl_ratio"] = out["ppl"] / out["ppl_start"]
    out["nll_increase"] = np.log(out["ppl_ratio"])
    return out.sort_values([*keys, "stage"]).reset_index(drop=True)


_CONTEXT = ("model", "tuning", "lr", "lr_multiplier", "n_tasks", "tasks")
"""Settings a method trial and its baseline trial must share (besides the seed)."""


def forgetting_prevented(
    summary: pd.DataFrame,
    general: pd.DataFrame | None = None,
    *,
    baseline: str = "none",
    measure: Literal["accuracy", "ppl"] = "accuracy",
    probe: str | None = None,
    per_trial: bool = False,
) -> pd.DataFrame:
    """Fraction of the baseline's general-ability drop that each method prevents.

    Definition. A trial's *drop* is ``acc_start - acc_final`` (``measure="accuracy"``, from the
    summary's ``general_acc_*``) or ``ln(ppl_final / ppl_start)`` (``measure="ppl"``, nats per
    token). For a method trial m with drop d_m, its *baseline drop* d_b is the drop of the
    completed ``baseline`` trial with the same context (model, tuning, lr, lr_multiplier,
    n_tasks, tasks, study) **and the same seed** — mean over such trials if several; when no
    seed-matched baseline exists, the mean drop of the baseline's completed trials in that
    context (``matched="context"``). Then ``prevented = 1 - d_m / d_b``: 1 = lost nothing,
    0 = lost as much as the baseline, < 0 = lost more, > 1 = improved on the start. It is NaN
    when d_b <= 0 (the baseline lost nothing, so there was nothing to prevent) or no baseline
    exists in the context. Only completed trials enter.

    With ``general`` records the drops are taken at every stage >= 1 (``general_drop``), so the
    result has one row per stage; otherwise one row per group at the final stage (n_tasks).

    Returns one row per (method, varying context columns, replay_size/replay_weight when a method
    ran at several, stage): ``n`` (trials), ``n_seed_matched``,
    ``drop_mean``, ``baseline_drop_mean``, ``prevented_mean`` and ``prevented_std`` (mean/sample
    std over trials of the per-trial ratio) and ``prevented_pooled = 1 - drop_mean /
    baseline_drop_mean`` (ratio of means; steadier when a baseline seed barely dropped).
    Context columns that take one value are left out. ``per_trial=True`` returns the per-trial
    rows instead (drop, baseline_drop, matched, prevented).
    """
    if measure not in ("accuracy", "ppl"):
        raise ValueError(
            f"forgetting_prevented: measure must be 'accuracy' or 'ppl', got {measure!r}"
        )
    require_columns(
        summary, ["trial_id", "status", "method", "seed"], "forgetting_prevented(summary)"
    )
    summary = hashable_settings(summary)
    done = summary[summary["status"] == "completed"]
    context = [c for c in ("study", *_CONTEXT) if c in done.columns]
    if general is None:
        if measure == "accuracy":
            require_columns(
                done, ["general_acc_start", "general_acc_final"], "forgetting_prevented"
            )
            drop = done["general_acc_start"] - done["general_acc_final"]
        else:
            require_columns(
                done, ["general_ppl_start", "general_ppl_final"], "forgetting_prevented"
            )
            drop = np.log(done["general_ppl_final"] / done["general_ppl_start"])
        stage = done["n_tasks"] if "n_tasks" in done.columns else np.nan
        replay_cols = [c for c in ("replay_size", "replay_weight") if c in done.columns]
        trials = done[["trial_id", "method", "seed", *context, *replay_cols]].assign(
            stage=stage, drop=drop
        )
    else:
        rel = general_drop(general)
        if probe is not None:
            rel = rel[rel["probe"] == probe]
        elif rel["probe"].nunique() > 1:
            raise ValueError(
                f"forgetting_prevented: several probes {sorted(rel['probe'].unique())}; pass probe="
            )
        rel = rel[rel["stage"] >= 1]
        col = "accuracy_drop" if measure == "accuracy" else "nll_increase"
        rel = rel.assign(drop=rel[col])[[*join_keys(rel, done), "stage", "drop"]]
        keys = join_keys(rel, done)
        extra = [
            c for c in (*context, "replay_size", "replay_weight") if c in done and c not in keys
        ]
        settings = done[[*keys, "method", "seed", *extra]]
        trials = rel.merge(settings, on=keys, how="inner")

    base = trials[trials["method"] == baseline]
    if base.empty:
        have = sorted(trials["method"].unique()) if len(trials) else []
        raise ValueError(
            f"forgetting_prevented: no completed trials of baseline {baseline!r}; methods with "
            f"completed trials: {have}"
        )
    by_seed = base.groupby([*context, "seed", "stage"], dropna=False)["drop"].mean()
    by_ctx = base.groupby([*context, "stage"], dropna=False)["drop"].mean()
    trials = trials.merge(
        by_seed.rename("_b_seed").reset_index(), on=[*context, "seed", "stage"], how="left"
    ).merge(by_ctx.rename("_b_ctx").reset_index(), on=[*context, "stage"], how="left")
    seed_ok = trials["_b_seed"].notna()
    trials["baseline_drop"] = trials["_b_seed"].where(seed_ok, trials["_b_ctx"])
    trials["matched"] = np.where(
        seed_ok, "seed", np.where(trials["_b_ctx"].notna(), "context", "none")
    )
    b = trials["baseline_drop"]
    trials["prevented"] = (1.0 - trials["drop"] / b).where(b > 0)
    trials = trials.drop(columns=["_b_seed", "_b_ctx"])
    if per_trial:
        return sort_groups(trials, ["method", *context, "stage", "seed"]).reset_index(drop=True)

    varying = [c for c in context if trials[c].nunique(dropna=False) > 1]
    # Replay settings are not matched (the baseline has none) but do split the groups when a
    # method ran at several of them.
    replay = [
        c
        for c in ("replay_size", "replay_weight")
        if c in trials and trials.groupby("method")[c].nunique().max() > 1
    ]
    keys = ["method", *varying, *replay, "stage"]
    g = trials.assign(_seed=trials["matched"].eq("seed")).groupby(keys, dropna=False, sort=False)
    out = g.agg(
        n=("drop", "size"),
        n_seed_matched=("_seed", "sum"),
        drop_mean=("drop", "mean"),
        baseline_drop_mean=("baseline_drop", "mean"),
        prevented_mean=("prevented", lambda s: s.mean(skipna=False)),
        prevented_std=("prevented", lambda s: s.std(ddof=1, skipna=False)),
    ).reset_index()
    pooled = 1.0 - out["drop_mean"] / out["baseline_drop_mean"]
    out["prevented_pooled"] = pooled.where(out["baseline_drop_mean"] > 0)
    return sort_groups(out, keys).reset_index(drop=True)
