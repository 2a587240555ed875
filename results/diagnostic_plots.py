"""Figures of what happens during and between the stages: general ability after each task,
training curves, loss-landscape slices and plasticity diagnostics (numbers from
:mod:`results.analysis` and :mod:`results.diagnostics`; conventions as in :mod:`results.plots`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from results import analysis as an
from results import diagnostics
from results.plots import (
    axis_label,
    grid_shape,
    hide_unused,
    integer_xaxis,
    legend,
    method_colour,
    method_label,
    new_figure,
    settings_label,
    trial_label,
)

__all__ = [
    "plot_general_over_tasks",
    "plot_interpolation",
    "plot_landscape_2d",
    "plot_plasticity",
    "plot_training_curves",
]


def _completed_general(general: pd.DataFrame, summary: pd.DataFrame, probe: str | None):
    rows = an.with_settings(general, summary)
    rows = rows[rows["status"] == "completed"]
    probes = sorted(rows["probe"].dropna().unique())
    if probe is None and probes:
        probe = probes[0]
    return rows[rows["probe"] == probe], probe


def plot_general_over_tasks(
    general: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: str = "method",
    panel: str | None = None,
    probe: str | None = None,
) -> Figure:
    """General ability after each task: probe accuracy (top) and held-out perplexity (bottom).

    One line per method (mean ± std over completed trials); the dotted line is the starting
    model (stage 0). ``panel`` (e.g. "lr_multiplier") draws one column per value of that
    setting so that different settings are not averaged together. A row is left out when its
    quantity was not recorded (all NaN).
    """
    rows, probe = _completed_general(general, summary, probe)
    quantities = [
        (q, lab, s)
        for q, lab, s in (
            ("accuracy", f"general probe accuracy{f' ({probe})' if probe else ''} (%)", 100.0),
            ("ppl", "held-out general-text perplexity", 1.0),
        )
        if rows[q].notna().any()
    ]
    if not quantities:
        raise ValueError("plot_general_over_tasks: no completed trial has general accuracy or ppl")
    panels = sorted(rows[panel].dropna().unique()) if panel else [None]
    fig, axes = new_figure(len(quantities), len(panels), w=5.4, h=3.8, sharey="row")
    for c, value in enumerate(panels):
        sub = rows if value is None else rows[rows[panel] == value]
        for r, (q, ylabel, s) in enumerate(quantities):
            ax = axes[r, c]
            start = sub.loc[sub["stage"] == 0, q]
            if start.notna().any():
                ax.axhline(start.mean() * s, ls=":", color="black", lw=1.2, label="starting model")
            stats = sub.groupby([by, "stage"], sort=False)[q].agg(["mean", "std"]).reset_index()
            stats = an.sort_groups(stats, [by, "stage"])
            for group, g in stats.groupby(by, sort=False):
                ax.errorbar(
                    g["stage"],
                    g["mean"] * s,
                    yerr=g["std"].fillna(0) * s,
                    marker="o",
                    capsize=3,
                    color=method_colour(group),
                    label=method_label(group),
                )
            if q == "ppl" and sub[q].max() / max(sub[q].min(), 1e-12) > 10:
                ax.set_yscale("log")
            ax.set_ylabel(ylabel)
            ax.set_xlabel("stage (0 = starting model, i = after task i)")
            integer_xaxis(ax)
            ax.grid(alpha=0.3)
            if value is not None:
                shown = f"{value:g}×" if panel == "lr_multiplier" else value
                ax.set_title(f"{panel} = {shown}", fontsize="medium")
            legend(ax)
    fig.suptitle("General ability after each task (completed trials, mean ± std)")
    return fig


_CURVE_LABELS = {
    "loss": "training loss, back-propagated (nats/token)",
    "task_ce": "task cross-entropy (nats/token)",
    "replay_ce": "replay cross-entropy (nats/token)",
    "replay_term": "replay-loss term, unweighted",
    "grad_norm": "gradient norm (before clipping)",
    "lr": "learning rate",
}
_LINESTYLES = ("-", "--", ":", "-.")


def plot_training_curves(
    curve: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    quantities: Sequence[str] = ("loss", "task_ce"),
) -> Figure:
    """Training curves from the ``curve`` records: one panel per quantity (default the loss
    that was back-propagated and the task cross-entropy, which unlike the loss does not include
    the weighted replay term and so compares across methods), x = global optimiser step.

    One line per ``by`` group, the mean over its completed trials (seeds) with a ± 1 sample-std
    band (``diagnostics.training_curve_stats``); dashed vertical lines mark where each task's
    training begins (``diagnostics.task_boundaries``), numbered at the top. A quantity never
    recorded (all NaN) gets no panel. Lines are named by :func:`settings_label`. Where the
    groups' tasks start at different steps (replay lengthens a task), each group's boundaries
    are drawn in its line's colour and style.
    """
    by = list(by)
    done = summary[summary["status"] == "completed"]
    shown = an.with_settings(curve, done, columns=by, how="inner") if len(curve) else curve
    quantities = [q for q in quantities if q in shown and shown[q].notna().any()]
    if shown.empty or not quantities:
        raise ValueError(
            "plot_training_curves: no completed trial has curve records"
            + (f" with {list(quantities)}" if len(shown) else "")
        )
    bounds = diagnostics.task_boundaries(shown, by=by)
    shared = bool((bounds.groupby("stage")["step"].nunique() <= 1).all())
    fig, axes = new_figure(1, len(quantities), w=6.0, h=4.2)
    for ax, q in zip(axes.flat, quantities, strict=True):
        stats = diagnostics.training_curve_stats(curve, summary, by=by, quantity=q)
        styles: dict[object, int] = {}
        drawn: dict[tuple, tuple] = {}  # group -> (colour, line style)
        for key, g in stats.groupby(by, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            settings = dict(zip(by, key, strict=True))
            method = settings.get("method", settings.get("regime"))
            k = styles[method] = styles.get(method, -1) + 1
            colour = method_colour(method) if method is not None else None
            n = int(g["n"].max())
            (line,) = ax.plot(
                g["step"],
                g["mean"],
                color=colour,
                ls=_LINESTYLES[k % len(_LINESTYLES)],
                lw=1.2,
                label=settings_label(settings, n_seeds=n),
            )
            drawn[key] = (line.get_color(), line.get_linestyle())
            band = g["std"].notna()
            if band.any():
                ax.fill_between(
                    g.loc[band, "step"],
                    (g["mean"] - g["std"])[band],
                    (g["mean"] + g["std"])[band],
                    color=line.get_color(),
                    alpha=0.2,
                    lw=0,
                )
        trans = ax.get_xaxis_transform()
        if shared:  # every group's task i starts at the same step: one grey line each
            for b in bounds.drop_duplicates("stage").itertuples(index=False):
                if b.stage > 1:
                    ax.axvline(b.step, color="grey", ls="--", lw=0.8)
                ax.text(b.step, 0.98, f" {b.stage}", transform=trans, va="top", fontsize="x-small")
        else:
            for key, g in bounds.groupby(by, sort=False, dropna=False):
                key = key if isinstance(key, tuple) else (key,)
                colour, ls = drawn.get(key, ("grey", "--"))
                for b in g.itertuples(index=False):
                    if b.stage > 1:
                        ax.axvline(b.step, color=colour, ls=ls, lw=0.8, alpha=0.7)
                        ax.text(b.step, 0.98, f" {b.stage}", transform=trans, va="top",
                                fontsize="x-small", color=colour)  # fmt: skip
        values = shown[q].to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel(
            "optimiser step (vertical lines: start of task i"
            + ("" if shared else ", per group in its line's colour")
            + ")"
        )
        ax.set_ylabel(_CURVE_LABELS.get(q, q.replace("_", " ")))
        ax.set_title(_CURVE_LABELS.get(q, q).split(",")[0].split(" (")[0], fontsize="medium")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle("Training curves (completed trials, mean ± std over seeds)")
    return fig


def _trial_slices(landscape: pd.DataFrame, trial_id: str, kind: str) -> pd.DataFrame:
    rows = landscape[(landscape["trial_id"] == trial_id) & (landscape["slice_kind"] == kind)]
    if rows.empty:
        have = sorted(landscape.loc[landscape["trial_id"] == trial_id, "slice_kind"].unique())
        raise ValueError(f"no {kind!r} landscape rows for trial {trial_id!r}; it has {have}")
    return rows


def plot_interpolation(
    landscape: pd.DataFrame,
    trial_id: str,
    *,
    slice_kind: str = "interpolation",
    summary: pd.DataFrame | None = None,
    label: str | None = None,
) -> Figure:
    """Loss along each 1-D slice of one trial, one line per evaluation dataset.

    ``slice_kind="interpolation"`` (default): L((1-α) θ_from + α θ_to) between checkpoints, with
    vertical lines at α = 0 and 1 (the two checkpoints). ``"random_1d"``: L(θ + α d) along a
    filter-normalised random direction, vertical line at α = 0. Loss is pooled per point as
    sum(loss_sum) / sum(tokens), in nats per token. The title names the trial by ``label``, else
    by its varying settings in ``summary`` (:func:`trial_label`).
    """
    rows = _trial_slices(landscape, trial_id, slice_kind)
    # A slice name (random1d:seed=0) recurs at every sliced checkpoint: (slice, stage) is one.
    order = (
        ["from_stage", "to_stage", "slice"] if slice_kind == "interpolation" else ["stage", "slice"]
    )
    firsts = rows.groupby(["slice", "stage"], sort=False).first().reset_index().sort_values(order)
    n = len(firsts)
    nrows, ncols = grid_shape(n)
    fig, axes = new_figure(nrows, ncols, w=5.2, h=3.9)
    for ax, (_, sl) in zip(axes.flat, firsts.iterrows(), strict=False):
        pts = rows[(rows["slice"] == sl["slice"]) & (rows["stage"] == sl["stage"])]
        for dataset, d in pts.groupby("dataset", sort=True):
            curve = diagnostics.pooled_loss(d, ["alpha"])
            ax.plot(curve["alpha"], curve["loss"], marker=".", label=str(dataset))
        if slice_kind == "interpolation":
            a, b = int(sl["from_stage"]), int(sl["to_stage"])
            for x in (0.0, 1.0):
                ax.axvline(x, color="black", ls="--", lw=0.8)
            ax.set_xlabel(f"α (0 = stage {a}, 1 = stage {b})")
            ax.set_title(f"{sl['slice']}: stage {a} → {b}", fontsize="medium")
        else:
            ax.axvline(0.0, color="black", ls="--", lw=0.8)
            ax.set_xlabel("α along random direction (filter-normalised)")
            seed = sl.get("direction_seed")
            seed = "?" if seed is None or pd.isna(seed) else int(seed)  # NaN-able column: float
            ax.set_title(f"{sl['slice']} (stage {sl['stage']}, seed {seed})", fontsize="medium")
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        legend(ax, title="eval data")
    hide_unused(axes, n)
    what = "Linear interpolation" if slice_kind == "interpolation" else "Random 1-D slices"
    fig.suptitle(f"{what}: {label if label is not None else trial_label(summary, trial_id)}")
    return fig


def plot_landscape_2d(
    landscape: pd.DataFrame,
    trial_id: str,
    slice: str,
    stage: int | None = None,
    *,
    summary: pd.DataFrame | None = None,
    label: str | None = None,
) -> Figure:
    """Filled contours of L(θ + α d1 + β d2) for one 2-D slice, one panel per dataset.

    ``stage``: the checkpoint the slice is around (default: the last one sliced). The star
    marks the trained weights (α = β = 0). Levels are log-spaced when the loss spans more than
    a factor 20, so the basin is not flattened by a high rim. Titles as in
    :func:`plot_interpolation`.
    """
    rows = _trial_slices(landscape, trial_id, "random_2d")
    rows = rows[rows["slice"] == slice]
    if rows.empty:
        raise ValueError(f"no random_2d slice {slice!r} for trial {trial_id!r}")
    stages = sorted(rows["stage"].unique())
    stage = stages[-1] if stage is None else stage
    if stage not in stages:
        raise ValueError(f"slice {slice!r} of trial {trial_id!r} has stages {stages}, not {stage}")
    rows = rows[rows["stage"] == stage]
    datasets = sorted(rows["dataset"].unique())
    nrows, ncols = grid_shape(len(datasets), 2)
    fig, axes = new_figure(nrows, ncols, w=5.6, h=4.6)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        grid = diagnostics.pooled_loss(rows[rows["dataset"] == dataset], ["beta", "alpha"])
        Z = grid.pivot(index="beta", columns="alpha", values="loss")
        A, B = np.meshgrid(Z.columns.to_numpy(float), Z.index.to_numpy(float))
        z = Z.to_numpy(float)
        lo, hi = np.nanmin(z), np.nanmax(z)
        if lo > 0 and hi / lo > 20:
            levels, norm = np.geomspace(lo, hi, 16), LogNorm(lo, hi)
        else:
            levels, norm = np.linspace(lo, hi if hi > lo else lo + 1e-9, 16), None
        cs = ax.contourf(A, B, z, levels=levels, norm=norm, cmap="viridis")
        ax.contour(A, B, z, levels=levels, colors="white", linewidths=0.4, alpha=0.6)
        fig.colorbar(cs, ax=ax, label="loss (nats/token)")
        ax.plot(
            [0],
            [0],
            marker="*",
            ms=14,
            color="red",
            mec="white",
            ls="none",
            label="trained weights (α = β = 0)",
        )
        ax.set_xlabel("α along direction 1 (filter-normalised)")
        ax.set_ylabel("β along direction 2 (filter-normalised)")
        ax.set_title(f"eval data: {dataset}", fontsize="medium")
        ax.set_aspect("equal", adjustable="box")
        legend(ax, loc="upper right")
    hide_unused(axes, len(datasets))
    who = label if label is not None else trial_label(summary, trial_id)
    fig.suptitle(f"2-D loss landscape {slice} around stage {stage}: {who}")
    return fig


def plot_plasticity(
    plasticity: pd.DataFrame,
    summary: pd.DataFrame,
    metric: str,
    tau: float | None = None,
    *,
    layers: str = "auto",
) -> Figure:
    """A plasticity diagnostic after each task, one line per method (mean ± std over trials).

    ``layers`` as in ``diagnostics.plasticity_over_tasks``: the whole-model value when recorded,
    else the mean over layers.
    """
    rows = plasticity[plasticity["metric"] == metric]
    if layers == "auto":
        layers = "whole" if (rows["layer"] == -1).any() else "mean"
    data = diagnostics.plasticity_over_tasks(
        plasticity, metric, tau, summary=summary, layers=layers
    )
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    for method, g in data.groupby("method", sort=False):
        ax.errorbar(
            g["stage"],
            g["mean"],
            yerr=g["std"].fillna(0),
            marker="o",
            capsize=3,
            color=method_colour(method),
            label=method_label(method),
        )
    ax.set_xlabel("stage (0 = starting model, i = after task i)")
    ax.set_ylabel(axis_label(metric))
    integer_xaxis(ax)
    where = "whole model" if layers == "whole" else "mean over layers"
    t = f", τ = {tau:g}" if tau is not None else ""
    ax.set_title(f"{metric.replace('_', ' ')} over tasks ({where}{t})")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig
