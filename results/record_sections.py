"""The report's sections on the records present, each shown wherever its records are (whatever
the study): general ability over tasks, the seed-mean accuracy matrices and their difference
to ``none``, one representative trial's matrix per method, training curves, the loss
landscape and the plasticity diagnostics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from results import analysis as an
from results import diagnostic_plots, matrix_plots, plots
from results.diagnostics import interpolation_summary
from results.io import safe_name
from results.matrices import accuracy_matrix_difference, mean_accuracy_matrix
from results.trials import flag_of, reference_subset, trained_stages
from results.writer import MAX_ROWS, Writer

__all__ = [
    "section_curves",
    "section_general",
    "section_heatmaps",
    "section_landscape",
    "section_mean_matrices",
    "section_plasticity",
]

_MAX_MATRICES = 12
"""Settings beyond which the seed-mean matrices are drawn at the reference settings only."""


def _spread(values: Sequence, k: int = 4) -> list:
    """At most k values spread over a sorted list (first, last and evenly between)."""
    values = sorted(values)
    if len(values) <= k:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))
    return [values[i] for i in idx]


def _panel_for(summary: pd.DataFrame, varying: list[str]) -> tuple[str | None, pd.DataFrame]:
    """Which setting to draw as separate panels (so it is not averaged over), and the rows."""
    for col in ("lr_multiplier", "tuning"):
        if col in varying:
            keep = _spread(summary[col].unique())
            return col, summary[summary[col].isin(keep)]
    return None, summary


def section_general(
    w: Writer, general: pd.DataFrame, summary: pd.DataFrame, varying: list[str]
) -> None:
    panel, rows = _panel_for(summary, varying)
    rows, note = reference_subset(rows, keep=(panel,) if panel else ())
    w.add("## General ability over tasks")
    if note:
        w.add(f"Trials at {note}.")
    w.figure(
        "general_over_tasks",
        "general ability over tasks",
        "x = stage (0 = starting model, i = after task i); top: general probe accuracy in % "
        "(higher is better), bottom: held-out perplexity (lower is better); dotted line = "
        "starting model; lines = mean ± std over completed trials of each method"
        + (f"; one column per {panel}" if panel else "")
        + ". A line falling away from the dotted one is general ability being eroded.",
        lambda: diagnostic_plots.plot_general_over_tasks(general, rows, panel=panel),
    )


def section_heatmaps(
    w: Writer,
    accuracy: pd.DataFrame,
    reps: pd.DataFrame,
    flagged: pd.DataFrame,
    summary: pd.DataFrame | None = None,
) -> None:
    w.add("## Accuracy matrices (one representative trial per method)")
    w.add(
        "Representative = the completed trial at the base setting whose AP is closest to its "
        "method's median (a trial with complete records where the method has one); a method "
        "with no such trial shows one of its others, marked incomplete with the reason."
    )
    why = flag_of(flagged)
    for _, rep in reps.iterrows():
        tid = rep["trial_id"]
        if not (accuracy["trial_id"] == tid).any():
            if (rep["study"], tid) in why:
                w.add(
                    f"### {plots.method_label(rep['method'])}: `{tid}`",
                    f"*(not drawn: no accuracy records; {why[(rep['study'], tid)]})*",
                )
            continue
        title = f"### {plots.method_label(rep['method'])}: `{tid}`"
        if trained_stages(rep) < int(rep["n_tasks"]):  # multitask: no sequence to draw
            w.add(
                title,
                "*(no matrix: every task was trained in one stage; its AP is the mean of the "
                "accuracies after that stage, in the tables above)*",
            )
            continue
        if (rep["study"], tid) in why:
            title += f" — **incomplete**: {why[(rep['study'], tid)]}"
        w.add(title)
        w.figure(
            f"accuracy_{rep['method']}",
            f"accuracy matrix {rep['method']}",
            "row = checkpoint (start, then after each task), column = evaluated task; cells "
            "below the outlined diagonal are earlier tasks after later training (fading = "
            "forgetting), cells above it are tasks not yet trained (zero-shot).",
            lambda tid=tid: matrix_plots.plot_accuracy_heatmap(
                accuracy, tid, summary=reps if summary is None else summary
            ),
        )


def _slug(settings: dict) -> str:
    """A file-name part from a group's values (``tm_1`` for method tm at lr 1×)."""
    parts = [f"{v:g}" if isinstance(v, float | np.floating) else str(v) for v in settings.values()]
    return safe_name("_".join(parts) or "all")


def section_mean_matrices(
    w: Writer, accuracy: pd.DataFrame, summary: pd.DataFrame, group: list[str]
) -> None:
    """Seed-mean accuracy matrix per setting, and its difference to ``none``."""
    by = group or ["method"]
    rows, note = summary, ""
    if summary.groupby(by, dropna=False).ngroups > _MAX_MATRICES:
        rows, note = reference_subset(summary, keep=())
        by = [c for c in by if rows[c].nunique(dropna=False) > 1] or ["method"]
    sequential = np.array([trained_stages(r) >= int(r.n_tasks) for r in rows.itertuples()], bool)
    one_stage = sorted(map(str, rows.loc[~sequential, "method"].unique()))
    rows = rows[sequential]
    table = mean_accuracy_matrix(accuracy, rows, by=by)
    w.add("## Accuracy matrices (mean over seeds)")
    if table.empty:
        w.add("No completed trial has accuracy records.")
        return
    compare = "method" in by and (rows["method"] == "none").any() and rows["method"].nunique() > 1
    diff = accuracy_matrix_difference(accuracy, rows, by=by) if compare else table.iloc[:0]
    intro = (
        "Per setting, the accuracy matrix averaged over its completed seeds (see "
        "[Glossary](#glossary))"
        + (", then its difference to `none` at the same settings" if len(diff) else "")
        + ". Completed trials with incomplete records enter the cells they have."
    )
    if note:
        intro += f" Trials at {note} (the study has more settings than {_MAX_MATRICES})."
    if one_stage:
        intro += (
            f" {', '.join(one_stage)}: every task trained in one stage, so no matrix (its AP "
            "is in the tables above)."
        )
    w.add(intro)
    diffs = dict(tuple(diff.groupby(by, sort=False, dropna=False))) if len(diff) else {}
    for key, g in table.groupby(by, sort=False, dropna=False):
        settings = dict(zip(by, key, strict=True))
        label = plots.settings_label(settings, n_seeds=int(g["n"].max()))
        w.add(f"### {label}")
        w.figure(
            f"accuracy_mean_{_slug(settings)}",
            f"mean accuracy matrix {label}",
            "row = checkpoint (start, then after each task), column = evaluated task, cell = "
            "mean accuracy over seeds; below the outlined diagonal: earlier tasks after later "
            "training (fading = forgetting); above it: tasks not yet trained (zero-shot); a "
            "bracketed count = a cell with fewer seeds.",
            lambda settings=settings, label=label: matrix_plots.plot_mean_accuracy_matrix(
                accuracy, rows, settings, label=label
            ),
        )
        mine = diffs.get(key)
        if mine is None:
            continue
        if mine["matched"].iloc[0] == "seed":
            how = f"seed-matched over {int(mine['n'].max())} shared seed(s)"
        else:
            how = (
                f"mean − mean ({int(mine['n'].max())} vs {int(mine['n_baseline'].max())} "
                "trials: no seed shared)"
            )
        w.figure(
            f"accuracy_diff_{_slug(settings)}",
            f"accuracy difference to none {label}",
            f"this setting's matrix minus `none`'s, {how}; blue = higher than `none`, red = "
            "lower, white = equal; below the diagonal, blue is forgetting prevented.",
            lambda settings=settings: matrix_plots.plot_accuracy_difference(
                accuracy, rows, settings
            ),
        )


def section_curves(w: Writer, curve: pd.DataFrame, summary: pd.DataFrame, group: list[str]):
    """Training loss against the step, per method (and regime / replay weight)."""
    keep = tuple(c for c in group if c in ("regime", "replay_weight"))
    rows, note = reference_subset(summary, keep=keep)
    by = [c for c in group if rows[c].nunique(dropna=False) > 1] or ["method"]
    w.add("## Training curves")
    if note:
        w.add(f"Trials at {note}.")
    w.figure(
        "training_curves",
        "training curves",
        "x = optimiser step over the whole task sequence, dashed lines = where each task's "
        "training begins (task number at the top); left: the back-propagated loss, right: the "
        "task cross-entropy (see [Glossary](#glossary)); line = mean over completed seeds, "
        "band = ± 1 std. A jump at a dashed line is the new task's loss; a method whose task "
        "CE stays high is not learning the tasks.",
        lambda: diagnostic_plots.plot_training_curves(curve, rows, by=by),
    )


def section_landscape(w: Writer, land: pd.DataFrame, summary: pd.DataFrame, reps) -> None:
    kinds = set(land["slice_kind"].unique())
    w.add("## Loss landscape")
    base, note = reference_subset(summary, keep=())
    if note:
        w.add(f"Trials at {note}.")
    if "interpolation" in kinds:
        barriers = interpolation_summary(land, summary=base)
        barriers = barriers[barriers["trial_id"].isin(base["trial_id"])]
        keys = ["method", "from_stage", "to_stage", "dataset"]
        over = "trials"
        if barriers.groupby(keys).ngroups > MAX_ROWS:  # long streams: pool the transitions
            barriers = barriers.assign(
                dataset=np.where(barriers["dataset"] == "general", "general", "task data")
            )
            keys, over = ["method", "dataset"], "transitions and trials"
        agg = (
            barriers.groupby(keys, dropna=False, sort=False)["barrier"]
            .agg(barrier_mean="mean", barrier_std="std", n="size")
            .reset_index()
        )
        agg = an.sort_groups(agg, keys)
        w.add("**Interpolation barriers** (nats/token):")
        w.table(
            an.format_mean_std(agg, digits=3, percent=False),
            "barrier = the largest excess of the loss on the straight line between two "
            "consecutive checkpoints over the linear mix of its end values; ~0 means the two "
            "solutions sit in one linearly connected basin, large means a ridge between them. "
            f"Mean ± std over {over}; n = slices averaged.",
            index=False,
        )
    for _, rep in reps.iterrows():
        tid, method = rep["trial_id"], rep["method"]
        mine = land[land["trial_id"] == tid]
        if mine.empty:
            continue
        have = set(mine["slice_kind"])
        if "interpolation" in have:
            w.figure(
                f"interpolation_{method}",
                f"interpolation {method}",
                f"{plots.method_label(method)}, trial `{tid}`: loss (nats/token) along the line "
                "from one checkpoint (α = 0) to the next (α = 1), on each evaluation set; "
                "dashed lines mark the two checkpoints.",
                lambda tid=tid: diagnostic_plots.plot_interpolation(land, tid, summary=summary),
            )
        if "random_1d" in have:
            w.figure(
                f"random1d_{method}",
                f"random 1-D slices {method}",
                f"{plots.method_label(method)}: loss along filter-normalised random directions "
                "through the trained weights (α = 0); a wide flat curve is a flat minimum.",
                lambda tid=tid: diagnostic_plots.plot_interpolation(
                    land, tid, slice_kind="random_1d", summary=summary
                ),
            )
        if "random_2d" in have:
            first = sorted(mine.loc[mine["slice_kind"] == "random_2d", "slice"].unique())[0]
            w.figure(
                f"landscape2d_{method}",
                f"2-D landscape {method}",
                f"{plots.method_label(method)}, slice `{first}` around the last sliced "
                "checkpoint: loss contours over two random filter-normalised directions; the "
                "star is the trained model; wider low regions mean flatter minima.",
                lambda tid=tid, first=first: diagnostic_plots.plot_landscape_2d(
                    land, tid, first, summary=summary
                ),
            )


_PLASTICITY_HELP = {
    "dormant_fraction": "share of MLP units whose mean |activation| is at most τ times the "
    "layer's average (units that stopped contributing; rising = lost plasticity)",
    "gate_dormant_fraction": "share of MLP units whose gate pre-activation is positive on "
    "fewer than τ of the tokens (units that almost never fire)",
    "effective_rank": "exp(entropy) of the normalised singular values of the MLP "
    "representation (how many directions it uses; falling = collapse)",
    "srank": "number of singular values needed for 99% of their sum",
    "weight_norm": "Frobenius norm of the weights (growing norms make later learning harder)",
    "weight_distance": "Frobenius distance from the starting weights",
    "mean_abs_weight": "mean absolute weight value",
}


def section_plasticity(w: Writer, plast: pd.DataFrame, summary: pd.DataFrame) -> None:
    w.add("## Plasticity diagnostics")
    summary, note = reference_subset(summary, keep=())
    if note:
        w.add(f"Trials at {note}.")
    known = list(_PLASTICITY_HELP)
    metrics = sorted(
        plast["metric"].unique(), key=lambda m: (known.index(m) if m in known else len(known), m)
    )
    for metric in metrics:
        taus = sorted(plast.loc[plast["metric"] == metric, "tau"].dropna().unique())
        for tau in _spread(taus, 3) or [None]:
            suffix = f"_tau{tau:g}" if tau is not None else ""
            w.figure(
                f"plasticity_{metric}{suffix}",
                f"plasticity {metric}{suffix}",
                f"{_PLASTICITY_HELP.get(metric, metric)}; x = stage, one line per method, "
                "mean ± std over trials.",
                lambda metric=metric, tau=tau: diagnostic_plots.plot_plasticity(
                    plast, summary, metric, tau
                ),
            )
