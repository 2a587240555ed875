"""Accuracy-matrix figures: one trial's matrix, a group's seed mean and its difference to the
baseline method's (numbers from :mod:`results.matrices`; conventions as in :mod:`results.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import CenteredNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from results.matrices import accuracy_matrix, accuracy_matrix_difference, mean_accuracy_matrix
from results.plots import settings_label, trial_label

__all__ = ["plot_accuracy_difference", "plot_accuracy_heatmap", "plot_mean_accuracy_matrix"]


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
    M = accuracy_matrix(accuracy, trial_id)
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
    if np.isnan(values).any():  # eval.matrix=needed, or a trial that stopped early
        ax.set_xlabel("evaluated task (sequence order); blank: not scored")
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
    ``matrices.mean_accuracy_matrix`` with ``by`` = the keys of ``group`` (e.g. ``{"method":
    "tm", "lr_multiplier": 1.0}``), drawn like :func:`plot_accuracy_heatmap`. A cell averaged
    over fewer trials than the group has shows its count in brackets. The title is ``label``,
    else the group's :func:`settings_label` with the number of seeds."""
    table = mean_accuracy_matrix(accuracy, summary, by=list(group), scoring=scoring)
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
    """One group's accuracy matrix minus the baseline's (``matrices.accuracy_matrix_difference``,
    seed-matched when the two share seeds, else mean − mean; the title says which): a diverging
    colour map centred at 0, blue = the method scores higher than ``baseline``, red = lower.
    ``group`` must name the method (``{"method": "tm", ...}``)."""
    table = accuracy_matrix_difference(
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
