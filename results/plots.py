"""Figures: each function takes record DataFrames and returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas), never through
``pyplot``: nothing global is created, nothing needs closing, and no display is required.
Saving goes through :func:`save_figure` (PNG, PDF or SVG at a chosen dpi, fonts embedded
sensibly; the rcParams it needs are set only while it saves). The numbers come from
``results.analysis``, so a figure and the table beside it always agree; accuracies are shown in
percent (accuracy matrices: fractions), losses in nats per token. Titles name a trial or group
by the settings that vary (:func:`settings_label`), never by its trial id.

This module holds the saving, the labels and colours, the helpers every figure shares and the
figures of one varied setting (learning rate, replay size); the other generic figures are in
:mod:`results.matrix_plots` (accuracy matrices) and :mod:`results.diagnostic_plots`
(general ability per stage, training curves, loss landscape, plasticity diagnostics), and a
study's own figures in its presentation file (:mod:`results.presentation`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from harness.config.cl_methods import CL
from harness.config.interventions import INTERVENTIONS
from harness.config.replay_methods import REPLAY
from results import analysis as an

__all__ = [
    "DEFAULT_DPI",
    "FORMATS",
    "LABELS",
    "axis_label",
    "check_save_options",
    "grid_shape",
    "hide_unused",
    "integer_xaxis",
    "legend",
    "method_colour",
    "method_label",
    "new_figure",
    "plot_lr_robustness",
    "plot_replay_size",
    "save_figure",
    "settings_label",
    "trial_label",
]


FORMATS = ("png", "pdf", "svg")
"""File formats :func:`save_figure` writes (the file's suffix is the format)."""

DEFAULT_DPI = 150
"""Resolution of saved figures (raster formats; for PDF/SVG only of embedded images)."""

_SAVE_RC = {
    "pdf.fonttype": 42,  # TrueType fonts embedded whole (Type 3 is refused by some journals)
    "ps.fonttype": 42,
    "svg.fonttype": "none",  # text stays text (editable, searchable), not paths
    "svg.hashsalt": "results.plots",  # stable element ids: the same figure, the same file
}
_NO_DATE = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}
"""Metadata without a timestamp, so re-drawing unchanged data gives an identical file."""


def check_save_options(fmt: str, dpi: int) -> None:
    """Refuse a format other than ``FORMATS`` or a dpi that is not a positive integer."""
    if fmt not in FORMATS:
        raise ValueError(
            f"figure format {fmt!r} is not supported: use one of {', '.join(FORMATS)} "
            "(e.g. --format pdf for a paper)"
        )
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Integral) or dpi <= 0:
        raise ValueError(
            f"dpi {dpi!r} is not a positive integer: pass the resolution in dots per inch, "
            f"e.g. {DEFAULT_DPI} (screen) or 300 (print)"
        )


def save_figure(fig: Figure, path: str | Path, fmt: str = "png", dpi: int = DEFAULT_DPI) -> Path:
    """Save ``fig`` as ``<path>.<fmt>`` and return that path (the one place figures are saved).

    ``path`` is given without the format's suffix (a dot in the name, as in ``tau0.1``, is kept;
    a path that already ends in ``.<fmt>`` is used as it is, one ending in another format's
    suffix is refused). PDF embeds TrueType fonts (``pdf.fonttype=42``) and SVG keeps text as
    text (``svg.fonttype='none'``); those rcParams hold only while saving. No timestamp is
    written, so an unchanged figure saves to an identical file.
    """
    check_save_options(fmt, dpi)
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix in FORMATS and suffix != fmt:
        raise ValueError(
            f"save_figure: {path} ends in .{suffix} but the format is {fmt!r}; pass the path "
            f"without a suffix (or with .{fmt})"
        )
    if suffix != fmt:
        path = path.with_name(f"{path.name}.{fmt}")
    with matplotlib.rc_context(_SAVE_RC):
        fig.savefig(path, format=fmt, dpi=dpi, metadata=_NO_DATE[fmt])
    return path


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

_LABEL_COLOURS = {"backprop": "black", "weight_decay": "tab:orange"}
"""Colours of the plasticity study's two regimes that are no registered method (plain
backprop, weight decay); every method's colour and label come from its registry entry."""
_OTHER_COLOURS = ["tab:green", "tab:orange", "tab:cyan", "tab:pink", "black"]


def _entry(method: object):
    for registry in (REPLAY, INTERVENTIONS, CL):
        entry = registry.get(str(method))
        if entry is not None:
            return entry
    return None


def method_colour(method: object) -> str:
    """A fixed colour per method, so the same method looks the same in every figure."""
    entry = _entry(method)
    if entry is not None and entry.colour:
        return entry.colour
    if method in _LABEL_COLOURS:
        return _LABEL_COLOURS[method]  # type: ignore[index]
    return _OTHER_COLOURS[sum(map(ord, str(method))) % len(_OTHER_COLOURS)]


def method_label(method: object) -> str:
    entry = REPLAY.get(str(method))
    return entry.label if entry is not None and entry.label else str(method)


def _short_value(col: str, v: object) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        v = int(v)
    if isinstance(v, float | np.floating):
        v = f"{v:g}"
    text = str(v)
    if col in ("method", "regime", "tuning"):
        return text
    if col == "lr_multiplier":
        return f"lr {text}×"
    if col == "seed":
        return f"seed {text}"
    if col == "tasks" and len(text) > 24:
        text = text[:23] + "…"
    short = {"replay_weight": "w", "replay_size": "size", "n_tasks": "T"}
    return f"{short.get(col, col)}={text}"


def settings_label(settings: Mapping[str, object], *, n_seeds: int | None = None) -> str:
    """A short title naming a trial or group by its settings, e.g. ``"tm, w=100, seed mean
    (3)"``: pass the settings that vary across the study (``analysis.varying_settings``), in
    order; method, regime and tuning are shown by value, ``lr_multiplier`` as ``lr 3×``,
    replay_weight as ``w=``, replay_size as ``size=``, a seed as ``seed 0``. ``n_seeds`` adds
    ``seed mean (n)`` (``n`` trials averaged). Missing values (NaN) are left out."""
    parts = [
        _short_value(col, v)
        for col, v in settings.items()
        if not (v is None or (isinstance(v, float) and math.isnan(v)))
    ]
    if n_seeds is not None:
        parts.append(f"seed mean ({n_seeds})" if n_seeds != 1 else "1 seed")
    return ", ".join(parts) or "all trials"


def trial_label(summary: pd.DataFrame | None, trial_id: str) -> str:
    """:func:`settings_label` of one trial: its method and the settings that vary across
    ``summary`` (seed included; a replay size or weight only where a method ran at several),
    at that trial's values; ``trial <id>`` when the summary does not know it."""
    if summary is None or "trial_id" not in summary:
        return f"trial {trial_id}"
    row = summary[summary["trial_id"] == trial_id]
    if row.empty:
        return f"trial {trial_id}"
    varying = an.varying_settings(summary, include_seed=True)
    if "method" in summary:
        if "method" not in varying:
            varying = ["method", *varying]
        # a replay size or weight that follows the method (none at 0) says nothing more
        by_method = summary.groupby("method", dropna=False)
        varying = [
            c
            for c in varying
            if c not in ("replay_size", "replay_weight") or by_method[c].nunique().max() > 1
        ]
    return settings_label({c: row[c].iloc[0] for c in varying})


def axis_label(metric: str) -> str:
    return LABELS.get(metric, metric.replace("_", " "))


def _scale(metric: str) -> float:
    return 100.0 if metric in an.PERCENT_METRICS else 1.0


def new_figure(nrows: int = 1, ncols: int = 1, *, w: float = 6.4, h: float = 4.4, **kw):
    fig = Figure(figsize=(w * ncols, h * nrows), dpi=100, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def integer_xaxis(ax) -> None:
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


def legend(ax, **kw) -> None:
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
    fig, axes = new_figure(1, len(metrics))
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
        ax.set_ylabel(axis_label(metric))
        ax.set_title(f"{axis_label(metric).split(' (')[0]} vs learning rate")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle("Learning-rate robustness (mean ± std over seeds)")
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
    fig, axes = new_figure(1, len(metrics))
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
        ax.set_ylabel(axis_label(metric))
        ax.set_title(f"{axis_label(metric).split(' (')[0]} vs replay size")
        ax.grid(alpha=0.3)
        legend(ax)
    fig.suptitle("Replay-buffer size (mean ± std over seeds)")
    return fig
