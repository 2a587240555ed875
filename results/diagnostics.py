"""What happens during and between the stages: training-curve statistics and task boundaries,
loss-landscape barriers along interpolation paths (:func:`barrier`, the project's one
definition), and plasticity diagnostics across the task sequence. Conventions as in
:mod:`results.analysis`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from results.analysis import require_columns, sort_groups, with_settings

__all__ = [
    "barrier",
    "interpolation_summary",
    "plasticity_over_tasks",
    "pooled_loss",
    "task_boundaries",
    "training_curve_stats",
]


def _completed_curve(
    curve: pd.DataFrame, summary: pd.DataFrame, by: Sequence[str], where: str
) -> pd.DataFrame:
    require_columns(curve, ["trial_id", "stage", "step", "task_step"], f"{where}(curve)")
    require_columns(summary, ["trial_id", "status", *by], f"{where}(summary)")
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
    require_columns(rows, [quantity], "training_curve_stats(curve)")
    keys = [*by, "step"]
    cols = [*keys, "stage", "mean", "std", "n"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    g = rows.groupby(keys, dropna=False, sort=False)
    out = g[quantity].agg(["mean", "std", "size"]).rename(columns={"size": "n"})
    out["stage"] = g["stage"].min()
    out = out.reset_index()[cols]
    return sort_groups(out, keys).reset_index(drop=True)


def task_boundaries(curve: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Where each task's training begins on the global step axis: ``[*by, stage, task, step]``.

    ``step`` = the global step completed before the task's first step (``step - task_step``
    of its curve rows; 0 for the first task), the median over the trials of each ``by`` group
    (methods differ: replay rows lengthen a task, so a task starts later for ``tm`` than for
    ``none``); with no ``by``, the median over all trials.
    """
    by = list(by)
    require_columns(
        curve, [*by, "trial_id", "stage", "task", "step", "task_step"], "task_boundaries"
    )
    keys = [k for k in ("study", "trial_id") if k in curve]
    start = curve.assign(_start=curve["step"] - curve["task_step"])
    per = start.groupby([*by, *keys, "stage"], sort=False, dropna=False).agg(
        task=("task", "first"), s=("_start", "min")
    )
    out = (
        per.groupby([*by, "stage"], sort=False, dropna=False)
        .agg(task=("task", "first"), step=("s", "median"))
        .reset_index()
    )
    return out.sort_values([*by, "stage"]).reset_index(drop=True)


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
    require_columns(
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
    require_columns(
        plasticity, ["trial_id", "stage", "layer", "metric", "tau", "value"], "plasticity"
    )
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
