"""Figures: each function takes record DataFrames and returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas), never through
``pyplot``: nothing global is created, nothing needs closing, and no display is required.
Saving goes through :func:`save_figure` (PNG, PDF or SVG at a chosen dpi, fonts embedded
sensibly; the rcParams it needs are set only while it saves). The numbers come from
``results.analysis``, so a figure and the table beside it always agree; accuracies are shown in
percent (accuracy matrices: fractions), losses in nats per token. Titles name a trial or group
by the settings that vary (:func:`settings_label`), never by its trial id.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import CenteredNorm, LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from results import analysis as an

__all__ = [
    "DEFAULT_DPI",
    "FORMATS",
    "LABELS",
    "check_save_options",
    "method_colour",
    "method_label",
    "plot_accuracy_difference",
    "plot_accuracy_heatmap",
    "plot_adaptation",
    "plot_baselines",
    "plot_general_over_tasks",
    "plot_interpolation",
    "plot_just_learned",
    "plot_landscape_2d",
    "plot_lr_robustness",
    "plot_mean_accuracy_matrix",
    "plot_plasticity",
    "plot_replay_size",
    "plot_training_curves",
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


def _matrix_axes(T: int) -> tuple[Figure, object]:
    fig = Figure(
        figsize=(max(5.0, 0.75 * T + 3.0), max(3.5, 0.5 * (T + 1) + 2.2)),
        dpi=100,
        layout="constrained",
    )
    return fig, fig.subplots()


def _draw_matrix(
    fig: Figure,
    ax,
    values: np.ndarray,
    names: Sequence[str],
    *,
    text: Sequence[Sequence[str | None]],
    light: np.ndarray,
    cbar_label: str,
    outline: str = "white",
    **imshow,
) -> None:
    """A [T+1, T] matrix as an image: one annotation per cell (``text``; None = none), white
    text where ``light`` is False, the diagonal outlined in ``outline``, labelled ticks and a
    colour bar."""
    T = values.shape[1]
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", **imshow)
    size = "small" if T <= 8 else "x-small"
    for i in range(values.shape[0]):
        for j in range(T):
            if text[i][j] is not None:
                colour = "black" if light[i, j] else "white"
                ax.text(j, i, text[i][j], ha="center", va="center", fontsize=size, color=colour)
    for j in range(T):
        ax.add_patch(Rectangle((j - 0.5, j + 0.5), 1, 1, fill=False, ec=outline, lw=2))
    names = [str(n) for n in names]
    ax.set_xticks(
        range(T),
        [f"{j + 1}: {n}" for j, n in enumerate(names)],
        rotation=35 if T > 3 or max(map(len, names)) > 8 else 0,
        ha="right",
    )
    ax.set_yticks(
        range(values.shape[0]),
        ["start"] + [f"after {i}: {n}" for i, n in enumerate(names, 1)][: values.shape[0] - 1],
    )
    ax.set_xlabel("evaluated task (sequence order)")
    ax.set_ylabel("checkpoint (stage)")
    fig.colorbar(im, ax=ax, label=cbar_label)


def plot_accuracy_heatmap(
    accuracy: pd.DataFrame,
    trial_id: str,
    *,
    summary: pd.DataFrame | None = None,
    label: str | None = None,
) -> Figure:
    """One trial's accuracy matrix: rows = checkpoints (start, after task i), columns = tasks.

    Cells are annotated with the accuracy; outlined cells are the diagonal (each task just after
    training on it). Blank cells were not evaluated (or the trial stopped before that stage).
    The title names the trial by ``label``, else by its varying settings in ``summary``
    (:func:`trial_label`).
    """
    M = an.accuracy_matrix(accuracy, trial_id)
    values = M.to_numpy(float)
    fig, ax = _matrix_axes(M.shape[1])
    _draw_matrix(
        fig,
        ax,
        values,
        list(M.columns),
        text=[[f"{v:.2f}" if np.isfinite(v) else None for v in row] for row in values],
        light=np.nan_to_num(values) >= 0.6,
        cbar_label="accuracy (fraction correct)",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
    )
    label = label if label is not None else trial_label(summary, trial_id)
    ax.set_title(f"Accuracy matrix: {label}", fontsize="medium")
    return fig


def _one_group(table: pd.DataFrame, group: Mapping[str, object], where: str) -> pd.DataFrame:
    """The rows of ``table`` at the settings ``group`` (all of them; NaN matches NaN)."""
    mask = pd.Series(True, index=table.index)
    for col, v in group.items():
        same = table[col].isna() if pd.isna(v) else table[col] == v
        mask &= same
    rows = table[mask]
    if rows.empty:
        have = table[list(group)].drop_duplicates().to_dict("records")
        raise ValueError(f"{where}: no completed trial at {dict(group)}; groups: {have[:10]}")
    return rows


def _pivot(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    T = int(rows["task_position"].max())
    S = max(int(rows["stage"].max()), T)
    M = rows.pivot(index="stage", columns="task_position", values=column)
    M = M.reindex(index=range(S + 1), columns=range(1, T + 1))
    names = rows.drop_duplicates("task_position").set_index("task_position")["task"]
    return M.to_numpy(float), [str(names.get(p, f"task {p}")) for p in range(1, T + 1)]


def plot_mean_accuracy_matrix(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    group: Mapping[str, object],
    *,
    label: str | None = None,
    scoring: str | None = None,
) -> Figure:
    """The accuracy matrix of one group, averaged over its completed trials (seeds):
    ``analysis.mean_accuracy_matrix`` with ``by`` = the keys of ``group`` (e.g. ``{"method":
    "tm", "lr_multiplier": 1.0}``), drawn like :func:`plot_accuracy_heatmap`. A cell averaged
    over fewer trials than the group has shows its count in brackets. The title is ``label``,
    else the group's :func:`settings_label` with the number of seeds."""
    table = an.mean_accuracy_matrix(accuracy, summary, by=list(group), scoring=scoring)
    rows = _one_group(table, group, "plot_mean_accuracy_matrix")
    mean, names = _pivot(rows, "mean")
    n, _ = _pivot(rows, "n")
    full = int(np.nanmax(n))
    text = [
        [
            None
            if not np.isfinite(v)
            else f"{v:.2f}" + (f"\n({int(k)})" if np.isfinite(k) and k < full else "")
            for v, k in zip(mr, nr, strict=True)
        ]
        for mr, nr in zip(mean, n, strict=True)
    ]
    fig, ax = _matrix_axes(len(names))
    _draw_matrix(
        fig,
        ax,
        mean,
        names,
        text=text,
        light=np.nan_to_num(mean) >= 0.6,
        cbar_label="mean accuracy over seeds (fraction correct)",
        cmap="viridis",
        vmin=0.0,
        vmax=1.0,
    )
    label = label if label is not None else settings_label(group, n_seeds=full)
    ax.set_title(f"Accuracy matrix: {label}", fontsize="medium")
    return fig


def plot_accuracy_difference(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    group: Mapping[str, object],
    *,
    baseline: str = "none",
    label: str | None = None,
    scoring: str | None = None,
) -> Figure:
    """One group's accuracy matrix minus the baseline's (``analysis.accuracy_matrix_difference``,
    seed-matched when the two share seeds, else mean − mean; the title says which): a diverging
    colour map centred at 0, blue = the method scores higher than ``baseline``, red = lower.
    ``group`` must name the method (``{"method": "tm", ...}``)."""
    table = an.accuracy_matrix_difference(
        accuracy, summary, by=list(group), baseline=baseline, scoring=scoring
    )
    if table.empty:
        raise ValueError(
            f"plot_accuracy_difference: no {baseline!r} trial to compare with at {dict(group)}"
        )
    rows = _one_group(table, group, "plot_accuracy_difference")
    diff, names = _pivot(rows, "difference")
    finite = np.abs(diff[np.isfinite(diff)])
    half = max(float(finite.max()) if finite.size else 0.0, 0.01)
    fig, ax = _matrix_axes(len(names))
    _draw_matrix(
        fig,
        ax,
        diff,
        names,
        text=[[f"{v:+.2f}" if np.isfinite(v) else None for v in row] for row in diff],
        light=np.abs(np.nan_to_num(diff)) < 0.6 * half,
        cbar_label=f"accuracy − {baseline} (fraction)",
        outline="black",
        cmap="RdBu",
        norm=CenteredNorm(vcenter=0.0, halfrange=half),
    )
    if rows["matched"].iloc[0] == "seed":
        how = f"seed-matched ({int(rows['n'].max())} seed(s))"
    else:
        how = f"mean − mean ({int(rows['n'].max())} vs {int(rows['n_baseline'].max())} trials)"
    others = {k: v for k, v in group.items() if k != "method"}
    shown = settings_label(others) if others else ""
    label = (
        label
        if label is not None
        else f"{group['method']} − {baseline}" + (f", {shown}" if shown else "")
    )
    ax.set_title(f"Accuracy difference: {label}\n{how}", fontsize="medium")
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
    fig, axes = _figure(1, 2, w=5.5, h=0.45 * len(stats) + 2.2)
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
        for i in np.flatnonzero(stats[f"{col}_mean"].isna().to_numpy()):  # no bar: say why
            alone = col == "ap" and names[i].startswith("single_task")
            text = "no AP: each task trained alone" if alone else "–"
            ax.text(0.02, y[i], text, va="center", transform=ax.get_yaxis_transform())
        if stats[f"{col}_mean"].isna().all():
            ax.set_xlim(0, 100)
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
    band (``analysis.training_curve_stats``); dashed vertical lines mark where each task's
    training begins (``analysis.task_boundaries``), numbered at the top. A quantity never
    recorded (all NaN) gets no panel. Lines are named by :func:`settings_label`.
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
    bounds = an.task_boundaries(shown)
    fig, axes = _figure(1, len(quantities), w=6.0, h=4.2)
    for ax, q in zip(axes.flat, quantities, strict=True):
        stats = an.training_curve_stats(curve, summary, by=by, quantity=q)
        styles: dict[object, int] = {}
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
        for b in bounds.itertuples(index=False):
            if b.stage > 1:
                ax.axvline(b.step, color="grey", ls="--", lw=0.8)
            ax.text(b.step, 0.98, f" {b.stage}", transform=trans, va="top", fontsize="x-small")
        values = shown[q].to_numpy(float)
        values = values[np.isfinite(values)]
        if len(values) and values.min() > 0 and values.max() / values.min() > 20:
            ax.set_yscale("log")
        ax.set_xlabel("optimiser step (dashed: start of task i)")
        ax.set_ylabel(_CURVE_LABELS.get(q, q.replace("_", " ")))
        ax.set_title(_CURVE_LABELS.get(q, q).split(",")[0].split(" (")[0], fontsize="medium")
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.suptitle("Training curves (completed trials, mean ± std over seeds)")
    return fig
