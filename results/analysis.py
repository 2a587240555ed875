"""Analysis tables: pure pandas functions from the record kinds of ``results.schema`` to tables.

Nothing here plots, trains or imports Ray, and importing it (or ``results.plots`` and
``results.report``, which build on these functions) imports no torch; the one exception is
:func:`method_order`, which reads the replay-method registry (``harness.replay``, hence torch)
the first time methods are sorted. Conventions shared by every function:

* **Trials are settings + outcomes.** A trial's settings (method, tuning, lr_multiplier,
  replay_size, seed, ...) live only in the ``summary`` kind; other kinds are joined to it on
  ``trial_id`` (and ``study`` when both carry it) by ``with_settings``.
* **Only completed trials are averaged.** Diverged and failed trials are *counted* per group
  (``n_diverged``, ``n_failed``) next to ``n`` (completed trials averaged), never averaged in and
  never silently dropped; a group whose trials all diverged still gets a row, with NaN means.
  Trials still ``running`` (in progress, or interrupted before they finished) are likewise left
  out of the means and counted in ``n_running``, a column added to the count tables only when
  some trial of the input is running (so finished studies keep their columns).
* **Spread is the sample standard deviation** (``ddof=1``, pandas' default) over the completed
  trials of a group, usually seeds; NaN when ``n < 2``.
* **NaN is not skipped.** If a metric is NaN in any completed trial of a group, the group's mean
  is NaN: averaging over fewer trials than ``n`` says would make groups incomparable (the same
  rule as ``harness.metrics``).
* **Units are the records' units:** accuracies are fractions in [0, 1]; ``format_mean_std``
  turns accuracy-scale metrics into percentages (points) for display.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from harness.config.replay_methods import REPLAY
from harness.metrics import METRICS, matrix_from_long

__all__ = [
    "BASELINE_ORDER",
    "PAPER_METRICS",
    "PERCENT_METRICS",
    "SETTINGS",
    "accuracy_matrix",
    "accuracy_matrix_difference",
    "adaptation_table",
    "baselines",
    "baselines_table",
    "format_mean_std",
    "forgetting_prevented",
    "general_drop",
    "group_stats",
    "hashable_settings",
    "interpolation_summary",
    "just_learned",
    "plasticity_table",
    "regimes",
    "lora_vs_full_table",
    "loss_type_table",
    "lr_robustness_table",
    "mean_accuracy_matrix",
    "method_order",
    "paper_table",
    "plasticity_over_tasks",
    "pooled_loss",
    "replay_size_curve",
    "representative_trials",
    "sort_groups",
    "status_counts",
    "task_boundaries",
    "training_curve_stats",
    "varying_settings",
    "with_settings",
]


@functools.cache
def method_order() -> tuple[str, ...]:
    """Display order of replay methods: the registry's (``harness.replay.method_names``:
    baseline first, GeRe's tm last of the built-ins, then newer methods). Methods the
    registry does not know (renamed, or from another checkout) sort after these, A-Z.

    The registry is torch-free (:mod:`harness.config.replay_methods`)."""
    return tuple(REPLAY.names())


def __getattr__(name: str) -> Any:
    if name == "METHOD_ORDER":  # the former constant, now the registry's order
        return method_order()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SETTINGS = (
    "method",
    "regime",
    "tuning",
    "lr_multiplier",
    "replay_size",
    "replay_weight",
    "lr",
    "model",
    "n_tasks",
    "tasks",
    "seed",
)
"""Summary columns that describe how a trial was run (as opposed to how it ended). ``regime``
(interventions / weight decay) is not stored: :func:`regimes` derives it from the config, and
the report adds it where it varies."""

PAPER_METRICS = ("general_acc_start", "general_acc_final", "ap", "bwt", "fwt", "forgetting")
"""The columns of the GeRe paper's main table, in its order."""

PERCENT_METRICS = frozenset(METRICS) | {"general_acc_start", "general_acc_final"}
"""Summary metrics on the accuracy scale (fractions); shown x100 as % / percentage points."""

_STATUSES = ("completed", "diverged", "failed", "running")
"""Every summary status. 'running' is written when a trial (re-)starts, before its records."""

_OPTIONAL_STATUSES = ("running",)
"""Statuses whose count columns ``group_stats``/``paper_table`` add only when they occur."""


def _counted(summary: pd.DataFrame) -> list[str]:
    """The count columns (besides ``n``) for the tables of ``summary``."""
    status = summary["status"] if "status" in summary else pd.Series(dtype=object)
    return [
        f"n_{s}" for s in _STATUSES[1:] if s not in _OPTIONAL_STATUSES or bool(status.eq(s).any())
    ]


def _need(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")


def _join_keys(left: pd.DataFrame, right: pd.DataFrame) -> list[str]:
    """``trial_id``, plus ``study`` when both frames carry it (ids are unique per study)."""
    return ["study", "trial_id"] if "study" in left and "study" in right else ["trial_id"]


def _method_rank(values: pd.Series) -> pd.Series:
    order = {m: i for i, m in enumerate(method_order())}
    return values.map(lambda m: (order.get(m, len(order)), str(m)))


def sort_groups(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Sort rows by ``keys`` (columns), with methods in :func:`method_order` rather than A-Z."""
    keys = [k for k in keys if k in df.columns]
    if not keys:
        return df
    return df.sort_values(
        keys, key=lambda s: _method_rank(s) if s.name == "method" else s, kind="stable"
    )


def with_settings(
    df: pd.DataFrame,
    summary: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    how: Literal["left", "inner"] = "left",
) -> pd.DataFrame:
    """``df`` with the trial's settings (and ``status``) from ``summary`` joined on trial_id.

    ``columns`` defaults to the ``SETTINGS`` the summary has; columns named explicitly must
    exist. Columns ``df`` already has are not joined again.

    With ``how="left"`` rows whose trial has no summary row get NaN settings (a trial still
    running, or one that crashed before writing its summary) rather than disappearing; with
    ``how="inner"`` they are dropped (to restrict records to the trials of a filtered summary).
    """
    keys = _join_keys(df, summary)
    if columns is None:
        columns = [c for c in SETTINGS if c in summary.columns]
    _need(summary, [*keys, *columns], "with_settings(summary)")
    extra = [c for c in (*columns, "status") if c in summary.columns and c not in df.columns]
    right = summary[[*keys, *extra]].drop_duplicates(keys, keep="last")
    return df.merge(right, on=keys, how=how)


def _joined(v: object) -> object:
    if isinstance(v, str) or v is None or np.ndim(v) == 0:
        return v
    return ",".join(map(str, v))


def hashable_settings(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with list-valued ``SETTINGS`` cells (``tasks`` is a list of task names in
    results schema 2, a comma-joined string before) as comma-joined strings, so that settings
    can be grouped, compared and shown whichever schema wrote them. Other columns unchanged;
    the input itself is not modified."""
    lists = [
        c
        for c in SETTINGS
        if c in summary.columns
        and summary[c].dtype == object
        and summary[c].map(lambda v: not isinstance(v, str) and np.ndim(v) > 0).any()
    ]
    if not lists:
        return summary
    return summary.assign(**{c: summary[c].map(_joined) for c in lists})


def varying_settings(summary: pd.DataFrame, *, include_seed: bool = False) -> list[str]:
    """The settings in ``SETTINGS`` that take more than one value across the summary rows."""
    summary = hashable_settings(summary)
    out = []
    for col in SETTINGS:
        if col not in summary.columns or (col == "seed" and not include_seed):
            continue
        if summary[col].nunique(dropna=False) > 1:
            out.append(col)
    return out


def status_counts(summary: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Trials per group by how they ended: columns ``n_completed, n_diverged, n_failed,
    n_running, n_total``.

    With ``by=()`` a single row for the whole study. Unknown statuses count only in n_total.
    """
    summary = hashable_settings(summary)  # list-valued settings (tasks) as text
    _need(summary, ["status", *by], "status_counts")
    status = summary["status"].reset_index(drop=True)
    flags = pd.DataFrame({f"n_{s}": status.eq(s).astype("int64") for s in _STATUSES})
    flags["n_total"] = np.ones(len(flags), dtype="int64")
    if not by:
        return flags.sum().to_frame().T
    flags = pd.concat([summary[list(by)].reset_index(drop=True), flags], axis=1)
    out = flags.groupby(list(by), dropna=False, sort=False).sum().reset_index()
    return sort_groups(out, by).reset_index(drop=True)


def group_stats(summary: pd.DataFrame, by: Sequence[str], metric: str) -> pd.DataFrame:
    """One metric per group: ``[*by, mean, std, n, n_diverged, n_failed]`` (long form), plus
    ``n_running`` when some trial is still running.

    ``mean``/``std`` are over the group's completed trials (std with ddof=1; NaN when n < 2, and
    NaN when any completed trial's value is NaN); ``n`` counts them. Groups with no completed
    trial keep their row (n = 0, NaN mean) so their diverged/failed/running counts stay visible.
    """
    summary = hashable_settings(summary)  # list-valued settings (tasks) as text
    by = list(by)
    _need(summary, ["status", metric, *by], "group_stats")
    counts = status_counts(summary, by)
    done = summary[summary["status"] == "completed"]
    if by:
        grouped = done.groupby(by, dropna=False, sort=False)[metric]
        stats = grouped.agg(
            mean=lambda s: s.mean(skipna=False), std=lambda s: s.std(ddof=1, skipna=False)
        ).reset_index()
        out = counts.merge(stats, on=by, how="left")
    else:
        values = done[metric]
        out = counts.assign(
            mean=values.mean(skipna=False) if len(values) else np.nan,
            std=values.std(ddof=1, skipna=False) if len(values) else np.nan,
        )
    out = out.rename(columns={"n_completed": "n"})
    return out[[*by, "mean", "std", "n", *_counted(summary)]]


def wilson_interval(n_correct, n_total, *, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval (95% at z = 1.96) of an accuracy n_correct / n_total:
    ``(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; NaN where n_total is 0. Unlike
    p ± 1.96·sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at p = 0 or 1."""
    k, n = np.asarray(n_correct, dtype=float), np.asarray(n_total, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    bad = n <= 0
    lo, hi = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)  # rounding
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def with_wilson(rows: pd.DataFrame) -> pd.DataFrame:
    """``accuracy`` (or ``general``) rows with their 95% Wilson interval as ``ci_low`` and
    ``ci_high`` (from n_correct / n_total): the sampling uncertainty of each accuracy cell,
    beside the spread over seeds that the paper tables show."""
    _need(rows, ["n_correct", "n_total"], "with_wilson")
    lo, hi = wilson_interval(rows["n_correct"], rows["n_total"])
    return rows.assign(ci_low=lo, ci_high=hi)


def final_probe_ci(general: pd.DataFrame) -> pd.DataFrame:
    """Per trial: the Wilson half-width (95%) of its final probe accuracy, ``general_acc_final_ci95``."""
    _need(general, ["trial_id", "stage", "n_correct", "n_total"], "final_probe_ci")
    last = general.sort_values("stage").groupby("trial_id", sort=False).tail(1)
    lo, hi = wilson_interval(last["n_correct"], last["n_total"])
    return pd.DataFrame({"trial_id": last["trial_id"], "general_acc_final_ci95": (hi - lo) / 2})


def paper_table(
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    metrics: Sequence[str] = PAPER_METRICS,
    general: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The paper-style table: one row per group, mean and std of each metric over seeds.

    Layout (flat columns, chosen over a MultiIndex so the table survives CSV/Parquet): index =
    the ``by`` columns; then ``n`` (completed trials averaged), ``n_diverged``, ``n_failed``
    (and ``n_running`` when some trial is still running);
    then ``<metric>_mean`` and ``<metric>_std`` for each metric in order. Statistics follow
    ``group_stats`` (completed trials only, sample std ddof=1). Values keep the records' units
    (fractions); ``format_mean_std`` renders "60.7 ± 1.2" strings in percent. With the
    ``general`` records, ``general_acc_final_ci95`` is the mean over the group's trials of the
    Wilson half-width of the final probe accuracy (sampling uncertainty, beside the ± over
    seeds), rendered as "60.7 ± 1.2 [±2.1]".
    """
    summary = hashable_settings(summary)  # list-valued settings (tasks) as text
    by = list(by)
    if not metrics:
        raise ValueError("paper_table: metrics is empty")
    out = status_counts(summary, by).rename(columns={"n_completed": "n"})
    out = out[[*by, "n", *_counted(summary)]]
    for m in metrics:
        stats = group_stats(summary, by, m)[[*by, "mean", "std"]]
        stats = stats.rename(columns={"mean": f"{m}_mean", "std": f"{m}_std"})
        out = out.merge(stats, on=by, how="left") if by else out.join(stats)
    if general is not None and "general_acc_final" in metrics and len(general):
        done = summary[summary["status"] == "completed"] if "status" in summary else summary
        ci = done.merge(final_probe_ci(general), on="trial_id", how="inner")
        ci = ci.groupby(by, dropna=False)["general_acc_final_ci95"].mean().reset_index()
        out = out.merge(ci, on=by, how="left")
    return sort_groups(out, by).set_index(by) if by else out


def _format_percent(df: pd.DataFrame) -> pd.DataFrame:
    """``format_mean_std`` with every ``<m>_mean``/``<m>_std`` pair a fraction shown in %
    (for tables whose column names are not the summary's metrics)."""
    shown = df.copy()
    for col in shown.columns:
        if col.endswith(("_mean", "_std")):
            shown[col] = shown[col] * 100
    return format_mean_std(shown, percent=False)


def _fmt(x: float, digits: int) -> str:
    return "–" if pd.isna(x) else f"{x:.{digits}f}"


def format_mean_std(
    df: pd.DataFrame, *, digits: int = 1, percent: bool = True, sep: str = " ± "
) -> pd.DataFrame:
    """Collapse every ``<m>_mean``/``<m>_std`` column pair into one string column ``<m>``.

    "60.7 ± 1.2"; just "60.7" when the std is NaN (a single trial); "–" when the mean is NaN.
    With ``percent=True`` metrics in ``PERCENT_METRICS`` are multiplied by 100 (accuracies in
    %, BWT/FWT/forgetting in percentage points); others (perplexity) are shown as they are.
    Other columns (n, n_diverged, ...) and the index pass through unchanged.
    """
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col.endswith("_std") and f"{col[:-4]}_mean" in df.columns:
            continue
        if col.endswith("_ci95") and f"{col[:-5]}_mean" in df.columns:
            continue
        if col.endswith("_mean") and f"{col[:-5]}_std" in df.columns:
            name = col[:-5]
            scale = 100.0 if percent and name in PERCENT_METRICS else 1.0
            mean, std = df[col] * scale, df[f"{name}_std"] * scale
            out[name] = [
                _fmt(m, digits)
                if pd.isna(s) or pd.isna(m)
                else f"{m:.{digits}f}{sep}{s:.{digits}f}"
                for m, s in zip(mean, std, strict=True)
            ]
            if f"{name}_ci95" in df.columns:
                ci = df[f"{name}_ci95"] * scale
                out[name] = [
                    v if pd.isna(c) else f"{v} [±{c:.{digits}f}]"
                    for v, c in zip(out[name], ci, strict=True)
                ]
        else:
            out[col] = df[col]
    return out


def lr_robustness_table(
    summary: pd.DataFrame,
    metric: str = "general_acc_final",
    *,
    by: str = "method",
    stat: Literal["mean", "std", "n", "n_diverged", "n_failed", "n_running"] = "mean",
) -> pd.DataFrame:
    """``by`` (rows) x ``lr_multiplier`` (columns, ascending) of one statistic of ``metric``.

    Default: the mean over completed seeds. Pass ``stat="n_diverged"`` for the matching table
    of diverged-trial counts — a cell whose trials all diverged is NaN in the mean table.
    """
    stats = group_stats(summary, [by, "lr_multiplier"], metric)
    if stat == "n_running" and stat not in stats.columns:  # no trial running: all zero
        stats[stat] = 0
    if stat not in stats.columns:
        raise ValueError(f"lr_robustness_table: unknown stat {stat!r}; use one of {list(stats)}")
    table = stats.pivot(index=by, columns="lr_multiplier", values=stat)
    table = table.reindex(sorted(table.columns), axis=1)
    rows = sort_groups(table.index.to_frame(index=False), [by])[by]
    return table.loc[rows.to_list()]


def replay_size_curve(
    summary: pd.DataFrame, metric: str = "general_acc_final", *, by: Sequence[str] = ("method",)
) -> pd.DataFrame:
    """Metric against replay-buffer size: ``[*by, replay_size, mean, std, n, n_diverged,
    n_failed(, n_running)]``, sorted by group then size (``group_stats`` statistics)."""
    keys = [*by, "replay_size"]
    return sort_groups(group_stats(summary, keys, metric), keys).reset_index(drop=True)


def loss_type_table(
    summary: pd.DataFrame,
    *,
    metrics: Sequence[str] = (*PAPER_METRICS, "general_ppl_final"),
    by: Sequence[str] = ("method",),
) -> pd.DataFrame:
    """The replay-loss comparison (none, CE, KL, L1, L2, TM): ``paper_table`` per method, with
    the final general perplexity added."""
    return paper_table(summary, by=by, metrics=metrics)


def lora_vs_full_table(
    summary: pd.DataFrame,
    *,
    metrics: Sequence[str] = PAPER_METRICS,
    by: Sequence[str] = ("tuning", "method"),
) -> pd.DataFrame:
    """``paper_table`` with rows (tuning, method): LoRA vs full fine-tuning per method."""
    return paper_table(summary, by=by, metrics=metrics)


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
    _need(general, ["trial_id", "stage", "probe", "accuracy", "ppl"], "general_drop")
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
    _need(summary, ["trial_id", "status", "method", "seed"], "forgetting_prevented(summary)")
    summary = hashable_settings(summary)
    done = summary[summary["status"] == "completed"]
    context = [c for c in ("study", *_CONTEXT) if c in done.columns]
    if general is None:
        if measure == "accuracy":
            _need(done, ["general_acc_start", "general_acc_final"], "forgetting_prevented")
            drop = done["general_acc_start"] - done["general_acc_final"]
        else:
            _need(done, ["general_ppl_start", "general_ppl_final"], "forgetting_prevented")
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
        rel = rel.assign(drop=rel[col])[[*_join_keys(rel, done), "stage", "drop"]]
        keys = _join_keys(rel, done)
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


def accuracy_matrix(
    accuracy: pd.DataFrame, trial_id: str, *, value: str = "accuracy", scoring: str | None = None
) -> pd.DataFrame:
    """One trial's accuracy matrix as a DataFrame: rows = stage 0..T (0 = starting model, i =
    after training task i), columns = task names in sequence (position) order.

    Built by ``harness.metrics.matrix_from_long`` (the same pivot the summary metrics use), with
    stages a trial never reached (diverged/failed) as NaN rows. ``scoring`` selects one scoring
    mode when a trial recorded several.
    """
    _need(accuracy, ["trial_id"], "accuracy_matrix")
    rows = accuracy[accuracy["trial_id"] == trial_id]
    if scoring is not None:
        rows = rows[rows["scoring"] == scoring]
    if rows.empty:
        raise ValueError(f"accuracy_matrix: no accuracy rows for trial {trial_id!r}")
    A, names = matrix_from_long(rows, value=value, allow_missing_stages=True)
    return pd.DataFrame(
        A,
        index=pd.RangeIndex(A.shape[0], name="stage"),
        columns=pd.Index(names, name="task"),
    )


def _accuracy_cells(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    by: Sequence[str],
    value: str,
    scoring: str | None,
    where: str,
) -> pd.DataFrame:
    """One row per (completed trial, stage, task position) with the trial's ``by`` settings
    and seed joined on; several rows for one cell (two scoring modes) are refused."""
    _need(accuracy, ["trial_id", "stage", "task_position", "task", value], f"{where}(accuracy)")
    _need(summary, ["trial_id", "status", *by], f"{where}(summary)")
    rows = accuracy
    if scoring is not None:
        _need(accuracy, ["scoring"], f"{where}(accuracy)")
        rows = accuracy[accuracy["scoring"] == scoring]
    keys = _join_keys(rows, summary)
    dup = rows.duplicated([*keys, "stage", "task_position"], keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        modes = sorted(rows.loc[dup, "scoring"].unique()) if "scoring" in rows else []
        raise ValueError(
            f"{where}: trial {first['trial_id']!r} has several rows for stage "
            f"{int(first['stage'])}, task {first['task']!r} (scoring modes {modes}); pass "
            "scoring= one of them"
        )
    done = summary[summary["status"] == "completed"]
    extra = ["seed"] if "seed" in summary and "seed" not in by else []
    return with_settings(rows, done, columns=[*by, *extra], how="inner")


def _first_task(cells: pd.DataFrame, keys: list[str], where: str) -> pd.Series:
    """The task name of each (group, position); a group mixing task sequences is refused."""
    names = cells.groupby(keys, dropna=False, sort=False)["task"].agg(["first", "nunique"])
    mixed = names[names["nunique"] > 1]
    if len(mixed):
        key = mixed.index[0]
        tasks = sorted(cells.set_index(keys).loc[[key], "task"].unique())
        raise ValueError(
            f"{where}: the trials of group {key} evaluated different tasks {tasks} at one task "
            "position (different task sequences); add 'tasks' to by= so that each matrix "
            "averages one sequence"
        )
    return names["first"]


def mean_accuracy_matrix(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    value: str = "accuracy",
    scoring: str | None = None,
) -> pd.DataFrame:
    """The accuracy matrix averaged over the completed trials (seeds) of each ``by`` group.

    Long form, one row per (group, cell): ``[*by, stage, task_position, task, mean, std, n]``
    where ``stage`` is the row of the matrix (0 = starting model, i = after training task i),
    ``task_position`` its column (1-based), ``mean``/``std`` the mean and sample std (ddof=1)
    over the trials that have the cell and ``n`` how many they are (a cell a trial lacks, e.g.
    an incomplete record, lowers ``n`` for that cell only). A NaN accuracy in any trial makes the
    cell's mean NaN, as everywhere in this module. Only completed trials enter; ``scoring``
    picks one scoring mode when trials recorded several. ``pivot(index="stage",
    columns="task_position", values="mean")`` gives one group's matrix.
    """
    by = list(by)
    cells = _accuracy_cells(accuracy, summary, by, value, scoring, "mean_accuracy_matrix")
    keys = [*by, "stage", "task_position"]
    cols = [*keys, "task", "mean", "std", "n"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    g = cells.groupby(keys, dropna=False, sort=False)[value]
    out = g.agg(
        mean=lambda s: s.mean(skipna=False),
        std=lambda s: s.std(ddof=1, skipna=False),
        n="size",
    )
    out["task"] = _first_task(cells, keys, "mean_accuracy_matrix")
    out = out.reset_index()[cols]
    return sort_groups(out, keys).reset_index(drop=True)


_NOT_MATCHED = ("method", "replay_size", "replay_weight")
"""Settings a method's matrix is not matched on when it is compared with the baseline's (the
baseline has no replay of its own); every other ``by`` setting must be equal."""


def accuracy_matrix_difference(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    baseline: str = "none",
    value: str = "accuracy",
    scoring: str | None = None,
) -> pd.DataFrame:
    """Each group's accuracy matrix minus the ``baseline`` method's (method − none, cell by cell).

    ``by`` must contain ``method``; the baseline's trials are those of method ``baseline`` with
    the same values of the other ``by`` settings (replay_size and replay_weight excepted: the
    baseline has no replay). Only completed trials enter. Per group:

    * **seed-matched** (``matched="seed"``) when some seeds have completed trials in both: the
      difference of the two trials of each shared seed (the mean of the baseline's trials of
      that seed if several), then the mean and sample std of those differences per cell; other
      seeds are left out, and ``n`` = ``n_baseline`` = seeds paired in the cell;
    * **mean − mean** (``matched="mean"``) when no seed is shared: the group's mean matrix
      minus the baseline's; ``std`` is NaN, ``n`` and ``n_baseline`` count each side's trials.

    Long form: ``[*by, stage, task_position, task, difference, std, n, n_baseline, matched]``;
    > 0 means the method scores higher than the baseline. Groups of the baseline itself, and
    groups with no baseline trial at their settings, have no rows.
    """
    by = list(by)
    where = "accuracy_matrix_difference"
    if "method" not in by:
        raise ValueError(
            f"{where}: by={by} has no 'method'; the difference is method − {baseline}, so "
            "by= must name the method"
        )
    cells = _accuracy_cells(accuracy, summary, by, value, scoring, where)
    if "seed" not in cells:
        cells = cells.assign(seed=pd.NA)
    context = [c for c in by if c not in _NOT_MATCHED]
    cell = ["stage", "task_position", "task"]
    cols = [*by, *cell, "difference", "std", "n", "n_baseline", "matched"]
    base = cells[cells["method"] == baseline]
    if base.empty:
        have = sorted(map(str, cells["method"].unique()))
        raise ValueError(
            f"{where}: no completed trial of baseline method {baseline!r} has accuracy records; "
            f"methods with some: {have}; pass baseline= one of them"
        )
    base_by_ctx = dict(tuple(base.groupby(context, dropna=False, sort=False))) if context else None
    parts = []
    for key, grp in cells[cells["method"] != baseline].groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        settings = dict(zip(by, key, strict=True))
        if base_by_ctx is None:
            b = base
        else:
            b = base_by_ctx.get(tuple(settings[c] for c in context))
            if b is None:
                continue
        shared = set(grp["seed"].dropna()) & set(b["seed"].dropna())
        if shared:
            mine = grp[grp["seed"].isin(shared)]
            theirs = b[b["seed"].isin(shared)].groupby(["seed", *cell], as_index=False)[value]
            theirs = theirs.mean().rename(columns={value: "_b"})
            pairs = mine.merge(theirs, on=["seed", *cell], how="inner")
            pairs["_d"] = pairs[value] - pairs["_b"]
            d = pairs.groupby(cell, sort=False)["_d"].agg(
                difference=lambda s: s.mean(skipna=False),
                std=lambda s: s.std(ddof=1, skipna=False),
                n="size",
            )
            d = d.reset_index().assign(n_baseline=lambda f: f["n"], matched="seed")
        else:

            def stats(rows: pd.DataFrame) -> pd.DataFrame:
                return rows.groupby(cell, sort=False)[value].agg(
                    mean=lambda s: s.mean(skipna=False), n="size"
                )

            m, bb = stats(grp), stats(b)
            d = m.join(bb, how="inner", rsuffix="_baseline")
            d = pd.DataFrame(
                {
                    "difference": d["mean"] - d["mean_baseline"],
                    "std": np.nan,
                    "n": d["n"],
                    "n_baseline": d["n_baseline"],
                    "matched": "mean",
                }
            ).reset_index()
        parts.append(d.assign(**settings))
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    return sort_groups(out, [*by, "stage", "task_position"]).reset_index(drop=True)


def _completed_curve(
    curve: pd.DataFrame, summary: pd.DataFrame, by: Sequence[str], where: str
) -> pd.DataFrame:
    _need(curve, ["trial_id", "stage", "step", "task_step"], f"{where}(curve)")
    _need(summary, ["trial_id", "status", *by], f"{where}(summary)")
    done = summary[summary["status"] == "completed"]
    return with_settings(curve, done, columns=list(by), how="inner")


def training_curve_stats(
    curve: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    quantity: str = "loss",
) -> pd.DataFrame:
    """A training-curve quantity (``loss``, ``task_ce``, ...) per logged step, over the
    completed trials (seeds) of each ``by`` group: ``[*by, step, stage, mean, std, n]``.

    ``step`` is the global optimiser step at the end of the logged window, ``stage`` the task
    being trained; ``mean``/``std`` (ddof=1) over the trials that logged that step (``n``);
    trials of one group log the same steps when they share ``train.log_every``.
    """
    by = list(by)
    rows = _completed_curve(curve, summary, by, "training_curve_stats")
    _need(rows, [quantity], "training_curve_stats(curve)")
    keys = [*by, "step"]
    cols = [*keys, "stage", "mean", "std", "n"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    g = rows.groupby(keys, dropna=False, sort=False)
    out = g[quantity].agg(["mean", "std", "size"]).rename(columns={"size": "n"})
    out["stage"] = g["stage"].min()
    out = out.reset_index()[cols]
    return sort_groups(out, keys).reset_index(drop=True)


def task_boundaries(curve: pd.DataFrame) -> pd.DataFrame:
    """Where each task's training begins on the global step axis: ``[stage, task, step]``.

    ``step`` = the global step completed before the task's first step (``step - task_step``
    of its curve rows; 0 for the first task), the median over the trials in ``curve``.
    """
    _need(curve, ["trial_id", "stage", "task", "step", "task_step"], "task_boundaries")
    keys = [k for k in ("study", "trial_id") if k in curve]
    start = curve.assign(_start=curve["step"] - curve["task_step"])
    per = start.groupby([*keys, "stage"], sort=False).agg(
        task=("task", "first"), s=("_start", "min")
    )
    out = per.groupby("stage").agg(task=("task", "first"), step=("s", "median")).reset_index()
    return out.sort_values("stage").reset_index(drop=True)


def pooled_loss(points: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean loss per point, pooling rows (e.g. shards) as sum(loss_sum) / sum(tokens)."""
    g = points.groupby(list(keys), dropna=False, sort=True)[["loss_sum", "tokens"]].sum()
    g["loss"] = g["loss_sum"] / g["tokens"]
    return g.reset_index()


def barrier(alphas, losses, *, atol: float = 1e-9) -> dict[str, float]:
    """The loss barrier of one interpolation path (the project's one definition).

    ``max_{0 <= alpha <= 1} [L(alpha) - ((1 - alpha) L(0) + alpha L(1))]``: the signed largest
    excess over the straight line between the end points (Goodfellow et al. 2015), so >= 0
    (the excess is 0 at both ends) and exactly 0 for a path that never rises above the line.
    Points outside [0, 1] (extrapolation) are ignored; alphas within ``atol`` of 0 or 1 count
    as the end points. Returns loss_start (L(0)), loss_end (L(1)), barrier, alpha_at_barrier
    and n_points (alphas in [0, 1]); all but n_points are NaN when alpha 0 or 1 is missing.
    """
    a, loss = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    at0, at1 = np.isclose(a, 0.0, atol=atol), np.isclose(a, 1.0, atol=atol)
    inside = (a >= -atol) & (a <= 1 + atol)
    out = dict(loss_start=np.nan, loss_end=np.nan, barrier=np.nan, alpha_at_barrier=np.nan)
    if at0.any() and at1.any():
        l0, l1 = float(loss[at0][0]), float(loss[at1][0])
        excess = loss[inside] - ((1 - a[inside]) * l0 + a[inside] * l1)
        i = int(np.nanargmax(excess)) if np.isfinite(excess).any() else 0
        out.update(
            loss_start=l0,
            loss_end=l1,
            barrier=float(excess[i]),
            alpha_at_barrier=float(a[inside][i]),
        )
    return {**out, "n_points": int(inside.sum())}


def interpolation_summary(
    landscape: pd.DataFrame, *, summary: pd.DataFrame | None = None, atol: float = 1e-9
) -> pd.DataFrame:
    """Loss barrier of every linear interpolation, per (trial, slice, dataset).

    ``L(alpha) = sum(loss_sum) / sum(tokens)`` over the rows at that alpha (pooled, so sharded
    points average by token). The barrier is ``max_{0 <= alpha <= 1} [L(alpha) - ((1 - alpha)
    L(0) + alpha L(1))]``: the largest excess over the straight line between the end points
    (>= 0, since the excess is 0 at both ends; Goodfellow et al. 2015). Points outside [0, 1]
    (extrapolation) are ignored. NaN when alpha 0 or 1 was not evaluated.

    Columns: [study,] trial_id, slice, dataset, from_stage, to_stage, loss_start (L(0)),
    loss_end (L(1)), barrier, alpha_at_barrier, n_points (alphas in [0, 1]); with ``summary``
    the trial's settings are joined on.
    """
    _need(
        landscape,
        ["trial_id", "slice", "slice_kind", "dataset", "alpha", "loss_sum", "tokens"],
        "interpolation_summary",
    )
    rows = landscape[landscape["slice_kind"] == "interpolation"]
    keys = [k for k in ("study", "trial_id", "slice", "dataset") if k in rows.columns]
    stages = [c for c in ("from_stage", "to_stage") if c in rows.columns]
    out = []
    for key, grp in rows.groupby(keys, dropna=False, sort=True):
        pts = pooled_loss(grp, ["alpha"])
        rec = dict(zip(keys, key, strict=True))
        rec.update({c: grp[c].iloc[0] for c in stages})
        rec.update(barrier(pts["alpha"], pts["loss"], atol=atol))
        out.append(rec)
    cols = [*keys, *stages, "loss_start", "loss_end", "barrier", "alpha_at_barrier", "n_points"]
    table = pd.DataFrame(out, columns=cols)
    if summary is not None:
        table = with_settings(table, summary)
    return table


def plasticity_over_tasks(
    plasticity: pd.DataFrame,
    metric: str,
    tau: float | None = None,
    *,
    summary: pd.DataFrame | None = None,
    layers: Literal["auto", "whole", "mean", "each"] = "auto",
    by: Sequence[str] = ("method",),
) -> pd.DataFrame:
    """A plasticity diagnostic across the task sequence, per method.

    Rows of ``metric`` (and ``tau``, which must be given when the metric was recorded at several
    thresholds) are reduced per (trial, stage) by ``layers``: ``"whole"`` = the whole-model rows
    (layer -1); ``"mean"`` = the unweighted mean over per-layer rows (layer >= 0); ``"each"`` =
    keep every layer (adds a ``layer`` column: stage x layer); ``"auto"`` = whole if recorded,
    else mean. Then trials are averaged per ``by`` group from ``summary`` (joined on trial_id):
    columns ``[*by, stage, (layer), mean, std, n]`` (sample std over trials, ddof=1). Only
    trials present in ``summary`` count, so a filtered summary selects trials. Without a
    summary, each trial is its own group (``by`` = trial_id, std NaN, n = 1).
    """
    _need(plasticity, ["trial_id", "stage", "layer", "metric", "tau", "value"], "plasticity")
    rows = plasticity[plasticity["metric"] == metric]
    if rows.empty:
        have = sorted(plasticity["metric"].unique())
        raise ValueError(f"plasticity_over_tasks: no rows for metric {metric!r}; recorded: {have}")
    taus = sorted(rows["tau"].dropna().unique())
    if tau is not None:
        rows = rows[np.isclose(rows["tau"], tau)]
        if rows.empty:
            raise ValueError(f"plasticity_over_tasks: {metric} has no tau={tau}; recorded: {taus}")
    elif len(taus) > 1:
        raise ValueError(
            f"plasticity_over_tasks: {metric} was recorded at several tau {taus}; pass tau="
        )
    if layers == "auto":
        layers = "whole" if (rows["layer"] == -1).any() else "mean"
    keys = [k for k in ("study", "trial_id") if k in rows.columns]
    if layers == "whole":
        per = rows[rows["layer"] == -1]
        per = per.groupby([*keys, "stage"], as_index=False)["value"].mean()
        layer_cols: list[str] = []
    elif layers == "mean":
        per = rows[rows["layer"] >= 0]
        per = per.groupby([*keys, "stage"], as_index=False)["value"].mean()
        layer_cols = []
    elif layers == "each":
        per = rows.groupby([*keys, "stage", "layer"], as_index=False)["value"].mean()
        layer_cols = ["layer"]
    else:
        raise ValueError(
            f"plasticity_over_tasks: layers must be auto/whole/mean/each, got {layers!r}"
        )
    if per.empty:
        raise ValueError(
            f"plasticity_over_tasks: no {layers!r} rows for {metric}; try layers='each'"
        )

    if summary is None:
        by = ["trial_id"]
    else:
        by = list(by)
        per = with_settings(per, summary, columns=by, how="inner")
    g = per.groupby([*by, "stage", *layer_cols], dropna=False, sort=False)["value"]
    out = g.agg(mean="mean", std=lambda s: s.std(ddof=1), n="size").reset_index()
    return sort_groups(out, [*by, "stage", *layer_cols]).reset_index(drop=True)


def representative_trials(summary: pd.DataFrame, *, by: str = "method") -> pd.DataFrame:
    """One trial per ``by`` value to show as an example (e.g. its accuracy heatmap).

    Among the group's completed trials at its smallest lr_multiplier (the base setting), the one
    whose AP is closest to the median AP (ties: lowest seed, then trial_id); a group with no
    completed trial falls back to its first trial. Returns the chosen summary rows.
    """
    _need(summary, ["trial_id", "status", by], "representative_trials")
    picks = []
    for _, grp in summary.groupby(by, dropna=False, sort=False):
        pool = grp[grp["status"] == "completed"]
        if pool.empty:
            picks.append(grp.sort_values("trial_id").iloc[0])
            continue
        if "lr_multiplier" in pool:
            pool = pool[pool["lr_multiplier"] == pool["lr_multiplier"].min()]
        ap = pool["ap"] if "ap" in pool else pd.Series(0.0, index=pool.index)
        dist = (ap - ap.median()).abs().round(12).fillna(np.inf)  # round: float ties
        order = pool.assign(_d=dist).sort_values(
            ["_d", *(["seed"] if "seed" in pool else []), "trial_id"]
        )
        picks.append(order.drop(columns="_d").iloc[0])
    out = pd.DataFrame(picks)
    return sort_groups(out, [by]).reset_index(drop=True)


def rescore(predictions: pd.DataFrame, scoring: str) -> pd.DataFrame:
    """Re-score recorded ``predictions`` under another protocol, without re-running anything,
    where the records allow it: generated answers (``generated`` not null) can be scored by
    ``exact_match`` (the Long-Sequence normalisation on both sides) or ``generate`` (the
    stripped first line, case-sensitive); log-likelihood rows by ``loglik`` (arg-max of the
    recorded log-likelihoods). Returns accuracy rows (stage, task, accuracy, n_correct,
    n_total, scoring) per trial, like the ``accuracy`` kind (tasks and the probe).
    ``generated`` follows a prompt that ends in "Output:", so SAPT's answer (after the last
    "Output:" of prompt + generation) is read from "Output:" + generated.
    """
    # the one definition of each rule
    from harness.evaluate import ANSWER_PREFIX, first_line, normalize_answer, sapt_answer

    _need(predictions, ["trial_id", "stage", "task", "gold", "predicted", "generated"], "rescore")
    generated = predictions["generated"].notna()
    if scoring in ("exact_match", "generate"):
        if not generated.all():
            raise ValueError(
                f"rescore: {int((~generated).sum())} prediction(s) were scored by log-likelihood "
                f"and hold no generated text; {scoring!r} needs generated answers (run the trial "
                "with eval.scoring=exact_match or generate)"
            )
        if scoring == "exact_match":
            ok = [
                normalize_answer(g) == normalize_answer(sapt_answer(ANSWER_PREFIX + p))
                for g, p in zip(predictions["gold"], predictions["generated"], strict=True)
            ]
        else:
            ok = [
                first_line(p) == g
                for g, p in zip(predictions["gold"], predictions["generated"], strict=True)
            ]
    elif scoring == "loglik":
        if generated.any():
            raise ValueError(
                "rescore: generated answers carry no candidate log-likelihoods; 'loglik' needs "
                "trials run with eval.scoring=loglik"
            )
        ok = (predictions["predicted"] == predictions["gold"]).tolist()
    else:
        raise ValueError(f"rescore: {scoring!r} is not 'loglik', 'exact_match' or 'generate'")
    keys = [k for k in ("study", "trial_id", "stage", "after_task", "task") if k in predictions]
    out = (
        predictions.assign(correct=ok)
        .groupby(keys, sort=False)["correct"]
        .agg(n_correct="sum", n_total="size")
        .reset_index()
    )
    out["accuracy"] = out["n_correct"] / out["n_total"]
    return out.assign(scoring=scoring)


# -- loss of plasticity (studies/plasticity.py) ------------------------------------------------


REGIME_ORDER = ("backprop", "weight_decay", "shrink_perturb", "continual_backprop", "redo")
"""Display order of the plasticity study's regimes (others follow, sorted)."""


def regimes(summary: pd.DataFrame) -> pd.Series:
    """Each trial's plasticity regime, from its config: the names of its interventions in the
    order they run ('+'-joined), else 'weight_decay' when AdamW decay is on, else 'backprop'
    (plain fine-tuning). Indexed like ``summary``.

    Read from ``config_json`` (the summary has no interventions column), so it also labels
    trials of any other study.
    """
    import json

    _need(summary, ["config_json"], "regimes(summary)")

    def one(text: str) -> str:
        cfg = json.loads(text)
        names = list((cfg.get("interventions") or {}).keys())
        if names:
            return "+".join(names)
        return "weight_decay" if cfg.get("train", {}).get("weight_decay", 0.0) else "backprop"

    return summary["config_json"].map(one).rename("regime")


def _regime_rank(values: pd.Series) -> pd.Series:
    rank = {r: i for i, r in enumerate(REGIME_ORDER)}
    return values.map(lambda r: (rank.get(r, len(rank)), r))


def just_learned(accuracy: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy on each task right after training on it (the diagonal of A: stage = the task's
    position), the plasticity measure of the continual-learning literature: one row per
    (trial, task) with ``regime``, ``seed``, ``task_position``, ``task``, ``accuracy``.
    Completed trials only (a partial trial would bias the later positions)."""
    _need(accuracy, ["trial_id", "stage", "task_position", "task", "accuracy"], "accuracy")
    _need(summary, ["trial_id", "status", "seed", "config_json"], "summary")
    done = summary[summary["status"] == "completed"]
    done = done.assign(regime=regimes(done))[["trial_id", "regime", "seed"]]
    diag = accuracy[accuracy["stage"] == accuracy["task_position"]]
    out = diag.merge(done, on="trial_id", how="inner")
    return (
        out[["trial_id", "regime", "seed", "task_position", "task", "accuracy"]]
        .sort_values(
            ["regime", "seed", "task_position"],
            key=lambda c: _regime_rank(c) if c.name == "regime" else c,
        )
        .reset_index(drop=True)
    )


def plasticity_table(
    accuracy: pd.DataFrame, summary: pd.DataFrame, k: int = 5, *, formatted: bool = True
) -> pd.DataFrame:
    """Per regime: the mean just-learned accuracy of the first ``k`` and the last ``k`` tasks,
    their difference (last − first: negative = plasticity lost), and the trials' AP and
    forgetting after the whole stream -- each mean ± std over seeds (a seed's value is the mean
    over its k tasks). ``k`` is cut to half the stream when the stream is shorter than 2k.

    ``formatted=False`` returns the numbers (``<m>_mean``/``<m>_std`` columns, fractions)."""
    jl = just_learned(accuracy, summary)
    if jl.empty:
        raise ValueError("plasticity_table: no completed trial has accuracy rows")
    n_tasks = int(jl["task_position"].max())
    k = max(1, min(k, n_tasks // 2))
    per_seed = jl.groupby(["regime", "trial_id"]).apply(
        lambda g: pd.Series(
            {
                "first": g.loc[g.task_position <= k, "accuracy"].mean(),
                "last": g.loc[g.task_position > n_tasks - k, "accuracy"].mean(),
            }
        ),
        include_groups=False,
    )
    per_seed["last_minus_first"] = per_seed["last"] - per_seed["first"]
    done = summary[summary["status"] == "completed"].set_index("trial_id")
    for col in ("ap", "forgetting"):
        per_seed[col] = done.loc[per_seed.index.get_level_values("trial_id"), col].to_numpy()
    stats = per_seed.groupby(level="regime").agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    stats.insert(0, "seeds", per_seed.groupby(level="regime").size())
    stats = stats.loc[sorted(stats.index, key=lambda r: _regime_rank(pd.Series([r]))[0])]
    renamed = {
        f"{c}_{part}": f"{c}_{k}_{part}" for c in ("first", "last") for part in ("mean", "std")
    }
    stats = stats.rename(columns=renamed)
    if not formatted:
        return stats
    # AP, forgetting and the accuracies are fractions: shown in % / percentage points.
    return _format_percent(stats)


# -- active forgetting (studies/active_forgetting.py) ------------------------------------------


def adaptation_table(adaptation: pd.DataFrame, *, formatted: bool = True) -> pd.DataFrame:
    """One row per base (standard, forgetful): its probe accuracy in the first language as
    pretrained, then in the new language after each (adaptation, budget), mean ± std over the
    adaptation seeds (in %, formatted). Columns ``first_language`` and ``<adapt>_<steps>``."""
    _need(
        adaptation,
        ["base", "adapt", "budget_steps", "seed", "language", "probe_accuracy"],
        "adaptation",
    )
    if adaptation.empty:
        raise ValueError("adaptation_table: no adaptation rows")
    first = adaptation[(adaptation["adapt"] == "none") & (adaptation["language"] == "first")]
    new = adaptation[adaptation["language"] == "new"]
    cols: dict[str, pd.DataFrame] = {}
    cols["first_language"] = first.groupby("base")["probe_accuracy"].agg(["mean", "std"])
    order = {"none": 0, "embeddings": 1, "full": 2}
    keys = sorted(
        {(a, int(b)) for a, b in zip(new["adapt"], new["budget_steps"], strict=True)},
        key=lambda k: (order.get(k[0], 3), k[1]),
    )
    for adapt, steps in keys:
        g = new[(new["adapt"] == adapt) & (new["budget_steps"] == steps)]
        cols[f"{adapt}_{steps}"] = g.groupby("base")["probe_accuracy"].agg(["mean", "std"])
    out = pd.concat(
        {name: df.rename(columns=lambda c, n=name: f"{n}_{c}") for name, df in cols.items()},
        axis=1,
    )
    out.columns = out.columns.droplevel(0)
    out = out.loc[sorted(out.index, key=lambda b: (b != "standard", b))]
    seeds = new.groupby("base")["seed"].nunique()
    out.insert(0, "seeds", seeds.reindex(out.index).fillna(0).astype(int))
    if not formatted:
        return out
    return _format_percent(out)


# -- continual-learning baselines (studies/baselines.py) ---------------------------------------


BASELINE_ORDER = (
    "none",
    "none (lora)",
    "ce",
    "kl",
    "tm",
    "task_replay",
    "ewc",
    "lwf",
    "olora (lora)",
    "multitask",
    "single_task",
)
"""Display order of the baselines study's rows (others follow, sorted)."""


def baselines(summary: pd.DataFrame) -> pd.Series:
    """Each trial's method as a continual-learning table names it, from its config: the general
    replay method (unless 'none') and the ``cl`` methods, '+'-joined, else 'none'; ' (lora)'
    added for LoRA trials. Indexed like ``summary``."""
    import json

    _need(summary, ["config_json"], "baselines(summary)")

    def one(text: str) -> str:
        cfg = json.loads(text)
        replay = cfg.get("replay", {}).get("method", "tm")
        parts = ([replay] if replay != "none" else []) + list((cfg.get("cl") or {}).keys())
        name = "+".join(parts) or "none"
        return f"{name} (lora)" if cfg.get("model", {}).get("tuning") == "lora" else name

    return summary["config_json"].map(one).rename("baseline")


def _baseline_rank(name: str) -> tuple[int, str]:
    rank = {b: i for i, b in enumerate(BASELINE_ORDER)}
    return (rank.get(name, len(rank)), name)


BASELINE_COLUMNS = (
    "ap",
    "bwt",
    "bwt_gem_code",
    "fwt",
    "fwt_sapt",
    "just_learned",
    "forgetting",
    "general_acc_final",
    "general_ppl_final",
    "gap_to_multitask",
)
"""The table's columns: BWT both as GEM's paper (/(T-1)) and as SAPT's scorer and GEM's code
(/T), FWT both GEM's zero-shot and SAPT's (vs every task alone: needs a single_task row)."""

FROM_ACCURACY = ("fwt_sapt", "just_learned", "gap_to_multitask")
"""Columns computed here (from the accuracy records, or across rows), not read off the summary."""


def _just_learned_per_trial(accuracy: pd.DataFrame, summary: pd.DataFrame) -> pd.Series:
    """Each sequential trial's mean accuracy on a task right after training it (by trial_id);
    multitask trials (one stage) have none."""
    seq = summary[summary["n_stages"] == summary["n_tasks"]]
    acc = accuracy[accuracy["trial_id"].isin(seq["trial_id"])]
    diag = acc[acc["stage"] == acc["task_position"]]
    return diag.groupby("trial_id")["accuracy"].mean()


def baselines_table(
    summary: pd.DataFrame, accuracy: pd.DataFrame | None = None, *, formatted: bool = True
) -> pd.DataFrame:
    """The continual-learning table: per method (:func:`baselines`), over its completed trials,
    AP, BWT (GEM's paper: /(T-1); ``bwt_gem_code``: /T, as SAPT's scorer reports it), FWT (GEM's
    zero-shot; ``fwt_sapt``: the mean just-learned accuracy minus that of the ``single_task`` row
    of the same seed, SAPT's definition), the mean just-learned accuracy, forgetting, the final
    general-ability probe accuracy and held-out perplexity, and the gap to multitask (the
    method's AP minus multitask's mean AP; NaN without a multitask row) -- mean ± std over
    seeds (%, perplexity as is). Multitask has only AP: its BWT, FWT and forgetting have no
    task order to be read on; single_task has only its just-learned accuracy. ``accuracy``
    (the study's accuracy records) gives the just-learned and SAPT FWT columns (NaN without).

    ``formatted=False`` returns the numbers (``<m>_mean``/``<m>_std`` columns, fractions)."""
    read = [c for c in BASELINE_COLUMNS if c not in (*FROM_ACCURACY, "bwt_gem_code")]
    _need(summary, ["status", "config_json", "trial_id", "seed", *read], "baselines_table")
    done = summary[summary["status"] == "completed"].copy()
    if "bwt_gem_code" not in done:  # a summary of a caller that kept only the paper's BWT
        done["bwt_gem_code"] = float("nan")
    if done.empty:
        raise ValueError("baselines_table: no completed trial in the summary")
    done["baseline"] = baselines(done)
    multitask = done.loc[done["baseline"].str.startswith("multitask"), "ap"]
    done["gap_to_multitask"] = done["ap"] - (multitask.mean() if len(multitask) else float("nan"))
    done["just_learned"] = float("nan")
    done["fwt_sapt"] = float("nan")
    if accuracy is not None and not accuracy.empty and {"n_stages", "n_tasks"} <= set(done):
        _need(accuracy, ["trial_id", "stage", "task_position", "accuracy"], "accuracy")
        jl = _just_learned_per_trial(accuracy, done)
        done["just_learned"] = done["trial_id"].map(jl)
        single = done[done["baseline"].str.startswith("single_task")]
        alone = single.groupby("seed")["just_learned"].mean()
        is_seq = ~done["baseline"].str.startswith(("single_task", "multitask"))
        done.loc[is_seq, "fwt_sapt"] = done.loc[is_seq, "just_learned"] - done.loc[
            is_seq, "seed"
        ].map(alone)
    stats = done.groupby("baseline")[list(BASELINE_COLUMNS)].agg(["mean", "std"])
    stats.columns = [f"{m}_{s}" for m, s in stats.columns]
    stats.insert(0, "seeds", done.groupby("baseline").size())
    stats = stats.loc[sorted(stats.index, key=_baseline_rank)]
    if not formatted:
        return stats
    ppl = {c: stats.pop(c) for c in ("general_ppl_final_mean", "general_ppl_final_std")}
    shown = _format_percent(stats)
    ppl_text = [
        "–" if pd.isna(m) else f"{m:.2f}" + ("" if pd.isna(s) else f" ± {s:.2f}")
        for m, s in zip(ppl["general_ppl_final_mean"], ppl["general_ppl_final_std"], strict=True)
    ]
    shown.insert(len(shown.columns) - 1, "general_ppl_final", ppl_text)
    return shown
