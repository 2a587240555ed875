"""Figures: each function takes record DataFrames and returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas), never through
``pyplot``: nothing global is created, nothing needs closing, and no display is required.
Saving is the caller's choice (``fig.savefig(path, dpi=100)``). The numbers come from
``results.analysis``, so a figure and the table beside it always agree; accuracies are shown in
percent, losses in nats per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from results import analysis as an

__all__ = [
    "LABELS",
    "method_colour",
    "method_label",
    "plot_accuracy_heatmap",
    "plot_general_over_tasks",
    "plot_interpolation",
    "plot_landscape_2d",
    "plot_lr_robustness",
    "plot_plasticity",
    "plot_replay_size",
]

LABELS = {
    "ap": "AP: mean final task accuracy (%)",
    "aia": "AIA: mean incremental accuracy (%)",
    "bwt": "BWT (percentage points)",
    "bwt_gem_code": "BWT, GEM code (percentage points)",
    "fwt": "FWT (percentage points)",
    "forgetting": "forgetting (percentage points)",
    "forgetting_incl_last": "forgetting incl. last (percentage points)",
    "forgetting_diag": "forgetting from diagonal (percentage points)",
    "general_acc_start": "general probe accuracy, start (%)",
    "general_acc_final": "general probe accuracy after last task (%)",
    "general_ppl_start": "general-text perplexity, start",
    "general_ppl_final": "general-text perplexity after last task",
    "dormant_fraction": "dormant units (fraction of MLP units)",
    "gate_dormant_fraction": "gate-dormant units (fraction of MLP units)",
    "effective_rank": "effective rank (exp entropy of singular values)",
    "srank": "srank (singular values for 99% of the sum)",
    "weight_norm": "weight norm ‖θ‖ (Frobenius)",
    "weight_distance": "distance from start ‖θ − θ₀‖ (Frobenius)",
    "mean_abs_weight": "mean |θ|",
}
"""Axis labels with units for summary metrics and plasticity diagnostics."""

_METHOD_COLOURS = {
    "none": "tab:gray",
    "ce": "tab:blue",
    "kl": "tab:purple",
    "l1": "tab:olive",
    "l2": "tab:brown",
    "tm": "tab:red",
    # plasticity regimes (studies/plasticity.py): interventions, weight decay, plain backprop
    "backprop": "black",
    "weight_decay": "tab:orange",
    "shrink_perturb": "tab:cyan",
    "continual_backprop": "tab:pink",
    "redo": "tab:green",
    # continual-learning baselines (studies/baselines.py)
    "task_replay": "goldenrod",
    "ewc": "teal",
    "lwf": "slateblue",
    "olora": "darkorange",
    "multitask": "black",
}
_METHOD_NAMES = {
    "none": "none (sequential FT)",
    "ce": "CE replay",
    "kl": "KL replay",
    "l1": "L1 replay",
    "l2": "L2 replay",
    "tm": "TM (GeRe)",
}
_OTHER_COLOURS = ["tab:green", "tab:orange", "tab:cyan", "tab:pink", "black"]


def method_colour(method: object) -> str:
    """A fixed colour per method, so the same method looks the same in every figure."""
    if method in _METHOD_COLOURS:
        return _METHOD_COLOURS[method]  # type: ignore[index]
    return _OTHER_COLOURS[sum(map(ord, str(method))) % len(_OTHER_COLOURS)]


def method_label(method: object) -> str:
    return _METHOD_NAMES.get(str(method), str(method))


def _label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " "))


def _scale(metric: str) -> float:
    return 100.0 if metric in an.PERCENT_METRICS else 1.0


def _figure(nrows: int = 1, ncols: int = 1, *, w: float = 6.4, h: float = 4.4, **kw):
    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _int_xaxis(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _multiplier_axis(ax, values: Sequence[float]) -> None:
    """Log x axis with a tick at every multiplier, labelled '3×'."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(values))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))


def _dodge(k: int, n: int, step: float = 1.03) -> float:
    """Multiplicative x offset of the k-th of n lines on a log axis, so error bars at the same
    x do not hide each other (a few percent; ticks stay at the true values)."""
    return step ** (k - (n - 1) / 2)


def _legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize="small", **kw)


def _mark_failures(ax, x: np.ndarray, k: np.ndarray, labelled: list[bool]) -> None:
    """'x' markers at the bottom of the axes where trials diverged or failed, with the count."""
    bad = k > 0
    if not bad.any():
        return
    trans = ax.get_xaxis_transform()  # x in data, y in axes fraction
    label = None if labelled[0] else "diverged/failed trials (count)"
    ax.scatter(
        x[bad],
        np.full(bad.sum(), 0.03),
        marker="x",
        color="black",
        transform=trans,
        label=label,
        zorder=5,
        clip_on=False,
    )
    for xi, ki in zip(x[bad], k[bad], strict=True):
        ax.annotate(
            f"{int(ki)}",
            (xi, 0.03),
            xycoords=trans,
            xytext=(4, 2),
            textcoords="offset points",
            fontsize="x-small",
        )
    labelled[0] = True


def plot_lr_robustness(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("general_acc_final", "ap"),
    *,
    by: str = "method",
) -> Figure:
    """Metric(s) against the learning-rate multiplier (log x), one line per method.

    Points are means over completed seeds with sample-std error bars; black 'x' marks at the
    bottom count diverged/failed trials at that multiplier (they are not in the means). For the
    general accuracy a dashed line marks the starting model's mean accuracy.
    """
    fig, axes = _figure(1, len(metrics))
    for ax, metric in zip(axes.flat, metrics, strict=True):
        stats = an.group_stats(summary, [by, "lr_multiplier"], metric)
        s = _scale(metric)
        labelled = [False]
        n_groups = stats[by].nunique()
        for k, (group, g) in enumerate(stats.groupby(by, sort=False)):
            g = g.sort_values("lr_multiplier")
            x = g["lr_multiplier"].to_numpy(float)
            ax.errorbar(
                x * _dodge(k, n_groups),
                g["mean"] * s,
                yerr=g["std"].fillna(0) * s,
                marker="o",
                capsize=3,
                color=method_colour(group),
                label=method_label(group),
            )
            _mark_failures(ax, x, (g["n_diverged"] + g["n_failed"]).to_numpy(), labelled)
        if metric == "general_acc_final" and "general_acc_start" in summary:
            done = summary[summary["status"] == "completed"]["general_acc_start"]
            if done.notna().any():
                ax.axhline(done.mean() * 100, ls="--", color="black", lw=1, label="starting model")
        _multiplier_axis(ax, stats["lr_multiplier"].to_numpy(float))
        ax.set_xlabel("learning-rate multiplier (× base lr, log scale)")
        ax.set_ylabel(_label(metric))
        ax.set_title(f"{_label(metric).split(' (')[0]} vs learning rate")
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.suptitle("Learning-rate robustness (mean ± std over seeds)")
    return fig


def plot_accuracy_heatmap(
    accuracy: pd.DataFrame, trial_id: str, *, summary: pd.DataFrame | None = None
) -> Figure:
    """One trial's accuracy matrix: rows = checkpoints (start, after task i), columns = tasks.

    Cells are annotated with the accuracy; outlined cells are the diagonal (each task just after
    training on it). Blank cells were not evaluated (or the trial stopped before that stage).
    """
    M = an.accuracy_matrix(accuracy, trial_id)
    T = M.shape[1]
    fig = Figure(
        figsize=(max(5.0, 0.75 * T + 3.0), max(3.5, 0.5 * (T + 1) + 2.2)),
        dpi=100,
        layout="constrained",
    )
    ax = fig.subplots()
    values = np.ma.masked_invalid(M.to_numpy(float))
    im = ax.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    size = "small" if T <= 8 else "x-small"
    for i in range(M.shape[0]):
        for j in range(T):
            v = M.iat[i, j]
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=size,
                    color="white" if v < 0.6 else "black",
                )
    for j in range(T):
        ax.add_patch(Rectangle((j - 0.5, j + 0.5), 1, 1, fill=False, ec="white", lw=2))
    names = list(M.columns)
    ax.set_xticks(
        range(T),
        [f"{j + 1}: {n}" for j, n in enumerate(names)],
        rotation=35 if T > 3 or max(map(len, names)) > 8 else 0,
        ha="right",
    )
    ax.set_yticks(range(T + 1), ["start"] + [f"after {i}: {n}" for i, n in enumerate(names, 1)])
    ax.set_xlabel("evaluated task (sequence order)")
    ax.set_ylabel("checkpoint (stage)")
    fig.colorbar(im, ax=ax, label="accuracy (fraction correct)")
    title = f"Accuracy matrix, trial {trial_id}"
    if summary is not None and "method" in summary:
        row = summary[summary["trial_id"] == trial_id]
        if len(row):
            title = f"Accuracy matrix: {method_label(row['method'].iloc[0])}\ntrial {trial_id}"
    ax.set_title(title, fontsize="medium")
    return fig


def _trial_slices(landscape: pd.DataFrame, trial_id: str, kind: str) -> pd.DataFrame:
    rows = landscape[(landscape["trial_id"] == trial_id) & (landscape["slice_kind"] == kind)]
    if rows.empty:
        have = sorted(landscape.loc[landscape["trial_id"] == trial_id, "slice_kind"].unique())
        raise ValueError(f"no {kind!r} landscape rows for trial {trial_id!r}; it has {have}")
    return rows


def plot_interpolation(
    landscape: pd.DataFrame, trial_id: str, *, slice_kind: str = "interpolation"
) -> Figure:
    """Loss along each 1-D slice of one trial, one line per evaluation dataset.

    ``slice_kind="interpolation"`` (default): L((1-α) θ_from + α θ_to) between checkpoints, with
    vertical lines at α = 0 and 1 (the two checkpoints). ``"random_1d"``: L(θ + α d) along a
    filter-normalised random direction, vertical line at α = 0. Loss is pooled per point as
    sum(loss_sum) / sum(tokens), in nats per token.
    """
    rows = _trial_slices(landscape, trial_id, slice_kind)
    # A slice name (random1d:seed=0) recurs at every sliced checkpoint: (slice, stage) is one.
    order = (
        ["from_stage", "to_stage", "slice"] if slice_kind == "interpolation" else ["stage", "slice"]
    )
    firsts = rows.groupby(["slice", "stage"], sort=False).first().reset_index().sort_values(order)
    n = len(firsts)
    nrows, ncols = _grid(n)
    fig, axes = _figure(nrows, ncols, w=5.2, h=3.9)
    for ax, (_, sl) in zip(axes.flat, firsts.iterrows(), strict=False):
        pts = rows[(rows["slice"] == sl["slice"]) & (rows["stage"] == sl["stage"])]
        for dataset, d in pts.groupby("dataset", sort=True):
            curve = an.pooled_loss(d, ["alpha"])
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
        _legend(ax, title="eval data")
    _hide_unused(axes, n)
    what = "Linear interpolation" if slice_kind == "interpolation" else "Random 1-D slices"
    fig.suptitle(f"{what}, trial {trial_id}")
    return fig


def plot_landscape_2d(
    landscape: pd.DataFrame, trial_id: str, slice: str, stage: int | None = None
) -> Figure:
    """Filled contours of L(θ + α d1 + β d2) for one 2-D slice, one panel per dataset.

    ``stage``: the checkpoint the slice is around (default: the last one sliced). The star
    marks the trained weights (α = β = 0). Levels are log-spaced when the loss spans more than
    a factor 20, so the basin is not flattened by a high rim.
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
    nrows, ncols = _grid(len(datasets), 2)
    fig, axes = _figure(nrows, ncols, w=5.6, h=4.6)
    for ax, dataset in zip(axes.flat, datasets, strict=False):
        grid = an.pooled_loss(rows[rows["dataset"] == dataset], ["beta", "alpha"])
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
        _legend(ax, loc="upper right")
    _hide_unused(axes, len(datasets))
    fig.suptitle(f"2-D loss landscape {slice} around stage {stage}, trial {trial_id}")
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

    ``layers`` as in ``analysis.plasticity_over_tasks``: the whole-model value when recorded,
    else the mean over layers.
    """
    rows = plasticity[plasticity["metric"] == metric]
    if layers == "auto":
        layers = "whole" if (rows["layer"] == -1).any() else "mean"
    data = an.plasticity_over_tasks(plasticity, metric, tau, summary=summary, layers=layers)
    fig, axes = _figure(1, 1)
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
    ax.set_ylabel(_label(metric))
    _int_xaxis(ax)
    where = "whole model" if layers == "whole" else "mean over layers"
    t = f", τ = {tau:g}" if tau is not None else ""
    ax.set_title(f"{metric.replace('_', ' ')} over tasks ({where}{t})")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def plot_just_learned(accuracy: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Accuracy on each task right after training on it, against the task's position in the
    stream: one line per regime, mean ± std over seeds (``analysis.just_learned``). A falling
    line is lost plasticity."""
    jl = an.just_learned(accuracy, summary)
    fig, axes = _figure(1, 1, w=7.5)
    ax = axes[0, 0]
    regimes = list(dict.fromkeys(jl["regime"]))
    for i, (regime, g) in enumerate(jl.groupby("regime", sort=False)):
        stats = g.groupby("task_position")["accuracy"].agg(["mean", "std", "size"])
        x = stats.index.to_numpy(dtype=float) + (i - (len(regimes) - 1) / 2) * 0.08
        ax.errorbar(
            x,
            stats["mean"] * 100,
            yerr=stats["std"].fillna(0) * 100,
            marker="o",
            ms=3,
            capsize=2,
            color=method_colour(regime),
            label=f"{regime} ({int(stats['size'].max())} seeds)",
        )
    ax.set_xlabel("task position in the stream")
    ax.set_ylabel("accuracy right after training on the task (%)")
    _int_xaxis(ax)
    ax.set_title("plasticity: how well each new task is learned")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def plot_adaptation(adaptation: pd.DataFrame) -> Figure:
    """New-language probe accuracy against the adaptation budget: one line per (base,
    adaptation), mean ± std over seeds (``studies/active_forgetting.py``)."""
    new = adaptation[(adaptation["language"] == "new") & (adaptation["adapt"] != "none")]
    fig, axes = _figure(1, 1)
    ax = axes[0, 0]
    styles = {"embeddings": "-", "full": "--"}
    colours = {"standard": "tab:blue", "forgetful": "tab:red"}
    for (base, adapt), g in new.groupby(["base", "adapt"], sort=True):
        stats = g.groupby("budget_steps")["probe_accuracy"].agg(["mean", "std"])
        ax.errorbar(
            stats.index,
            stats["mean"] * 100,
            yerr=stats["std"].fillna(0) * 100,
            marker="o",
            capsize=3,
            ls=styles.get(adapt, ":"),
            color=colours.get(base, "black"),
            label=f"{base} base, {adapt}" + (" (dashed)" if adapt == "full" else ""),
        )
    ax.axhline(100 * float(adaptation["chance"].iloc[0]), ls=":", color="grey")
    ax.set_xscale("log")
    budgets = sorted(int(b) for b in new["budget_steps"].unique())
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel("new-language probe accuracy (%)")
    ax.set_title("adapting to a new language: forgetful vs standard base")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


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
    fig, axes = _figure(len(quantities), len(panels), w=5.4, h=3.8, sharey="row")
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
            _int_xaxis(ax)
            ax.grid(alpha=0.3)
            if value is not None:
                shown = f"{value:g}×" if panel == "lr_multiplier" else value
                ax.set_title(f"{panel} = {shown}", fontsize="medium")
            _legend(ax)
    fig.suptitle("General ability after each task (completed trials, mean ± std)")
    return fig


def plot_replay_size(
    summary: pd.DataFrame,
    metrics: Sequence[str] = ("general_acc_final", "ap"),
    *,
    by: str = "method",
) -> Figure:
    """Metric(s) against the replay-buffer size (symlog x), one line per method.

    A method run at a single buffer size (e.g. ``none`` at 0) is drawn as a horizontal dashed
    reference line. Means over completed seeds with sample-std error bars.
    """
    fig, axes = _figure(1, len(metrics))
    sizes = summary["replay_size"].to_numpy(float)
    positive = sizes[sizes > 0]
    for ax, metric in zip(axes.flat, metrics, strict=True):
        curve = an.replay_size_curve(summary, metric, by=[by])
        s = _scale(metric)
        labelled = [False]
        n_groups = curve[by].nunique()
        for k, (group, g) in enumerate(curve.groupby(by, sort=False)):
            colour, label = method_colour(group), method_label(group)
            if len(g) == 1:
                size = int(g["replay_size"].iloc[0])
                ax.axhline(
                    g["mean"].iloc[0] * s, ls="--", color=colour, label=f"{label} (size {size})"
                )
                continue
            x = g["replay_size"].to_numpy(float)
            ax.errorbar(
                x * _dodge(k, n_groups),
                g["mean"] * s,
                yerr=g["std"].fillna(0) * s,
                marker="o",
                capsize=3,
                color=colour,
                label=label,
            )
            _mark_failures(ax, x, (g["n_diverged"] + g["n_failed"]).to_numpy(), labelled)
        ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
        ticks = sorted(set(summary["replay_size"].astype(int)))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("replay-buffer size (general samples, symlog scale)")
        ax.set_ylabel(_label(metric))
        ax.set_title(f"{_label(metric).split(' (')[0]} vs replay size")
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.suptitle("Replay-buffer size (mean ± std over seeds)")
    return fig


def plot_baselines(summary: pd.DataFrame) -> Figure:
    """The continual-learning table as a picture: per method (``analysis.baselines``), the
    task AP and the final general-ability probe accuracy side by side, mean ± std over seeds,
    with multitask's AP (the upper bound) and the starting probe accuracy as reference lines."""
    stats = an.baselines_table(summary, formatted=False)
    fig, axes = _figure(1, 2, w=5.5, h=0.45 * len(stats) + 1.6)
    names = list(stats.index)
    y = np.arange(len(names))
    for ax, col, title in (
        (axes[0, 0], "ap", "task AP (mean final accuracy)"),
        (axes[0, 1], "general_acc_final", "general ability after the last task (probe)"),
    ):
        ax.barh(
            y,
            stats[f"{col}_mean"] * 100,
            xerr=stats[f"{col}_std"].fillna(0) * 100,
            color=[method_colour(n.split(" ")[0]) for n in names],
            capsize=3,
        )
        ax.set_yticks(y, [f"{n} ({int(k)})" for n, k in zip(names, stats["seeds"], strict=True)])
        ax.invert_yaxis()
        ax.set_xlabel(f"{title} (%)")
        ax.grid(alpha=0.3, axis="x")
    if "multitask" in stats.index:
        axes[0, 0].axvline(
            stats.loc["multitask", "ap_mean"] * 100, ls="--", color="black", label="multitask"
        )
        _legend(axes[0, 0])
    done = summary[summary["status"] == "completed"]
    if len(done) and done["general_acc_start"].notna().any():
        axes[0, 1].axvline(
            done["general_acc_start"].mean() * 100, ls=":", color="black", label="at the start"
        )
        _legend(axes[0, 1])
    axes[0, 0].set_title("what each method learned of the tasks")
    axes[0, 1].set_title("what it kept of what the model knew")
    return fig
