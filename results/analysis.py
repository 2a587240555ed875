"""Analysis tables: pure pandas functions from the record kinds of ``results.schema`` to tables.

This module holds the conventions and the tables of the summary kind (counts, group
statistics, the paper-style table, the tables of one varied setting); the other generic
analyses build on it: :mod:`results.matrices` (accuracy matrices), :mod:`results.forgetting`
(general-ability drop, forgetting prevented), :mod:`results.diagnostics` (training curves,
loss-landscape barriers, plasticity diagnostics) and :mod:`results.rescore`. A study's own
tables are in its presentation file (:mod:`results.presentation`).

Nothing here plots, trains or imports Ray, and importing it (or ``results.plots`` and
``results.report``, which build on these functions) imports no torch: :func:`method_order`
reads the torch-free replay-method registry. Conventions shared by every function:

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
from harness.metrics import METRICS

__all__ = [
    "PAPER_METRICS",
    "PERCENT_METRICS",
    "SETTINGS",
    "final_probe_ci",
    "format_mean_std",
    "format_percent",
    "group_stats",
    "hashable_settings",
    "join_keys",
    "lora_vs_full_table",
    "loss_type_table",
    "lr_robustness_table",
    "method_order",
    "paper_table",
    "replay_size_curve",
    "representative_trials",
    "require_columns",
    "sort_groups",
    "status_counts",
    "varying_settings",
    "wilson_interval",
    "with_settings",
    "with_wilson",
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
(interventions / weight decay) is not stored: the plasticity study's presentation
(``results.presentation.plasticity.regimes``) derives it from the config and adds it where it
varies."""

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


def require_columns(df: pd.DataFrame, columns: Iterable[str], where: str) -> None:
    """Refuse ``df`` without ``columns``, naming them and ``where`` (the caller)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; have {list(df.columns)}")


def join_keys(left: pd.DataFrame, right: pd.DataFrame) -> list[str]:
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
    keys = join_keys(df, summary)
    if columns is None:
        columns = [c for c in SETTINGS if c in summary.columns]
    require_columns(summary, [*keys, *columns], "with_settings(summary)")
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
    require_columns(summary, ["status", *by], "status_counts")
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
    require_columns(summary, ["status", metric, *by], "group_stats")
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
    require_columns(rows, ["n_correct", "n_total"], "with_wilson")
    lo, hi = wilson_interval(rows["n_correct"], rows["n_total"])
    return rows.assign(ci_low=lo, ci_high=hi)


def final_probe_ci(general: pd.DataFrame) -> pd.DataFrame:
    """Per trial: the Wilson half-width (95%) of its final probe accuracy, ``general_acc_final_ci95``."""
    require_columns(general, ["trial_id", "stage", "n_correct", "n_total"], "final_probe_ci")
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


def format_percent(df: pd.DataFrame) -> pd.DataFrame:
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


def representative_trials(summary: pd.DataFrame, *, by: str = "method") -> pd.DataFrame:
    """One trial per ``by`` value to show as an example (e.g. its accuracy heatmap).

    Among the group's completed trials at its smallest lr_multiplier (the base setting), the one
    whose AP is closest to the median AP (ties: lowest seed, then trial_id); a group with no
    completed trial falls back to its first trial. Returns the chosen summary rows.
    """
    require_columns(summary, ["trial_id", "status", by], "representative_trials")
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
