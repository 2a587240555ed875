"""studies/plasticity.py's presentation: does fine-tuning on a long stream of tasks lose the
ability to learn new ones, and do the interventions (shrink & perturb, continual backprop,
ReDo) or weight decay keep it?

Each trial's regime (:func:`regimes`: its interventions, else weight decay, else plain backprop)
becomes a setting of every table where it varies (:func:`prepare`); :func:`plasticity_table`
is the study's table (just-learned accuracy of the first vs the last tasks),
:func:`plot_just_learned` its figure, :func:`section` its report section. The plasticity
diagnostics (dormant units, effective rank, ...) are the generic report's, drawn per regime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from results import analysis as an
from results.analysis import format_percent, require_columns
from results.io import read_study, study_dir
from results.plots import integer_xaxis, legend, method_colour, new_figure
from results.storage import Location
from results.writer import Writer, markdown_table

__all__ = [
    "PLACE",
    "REGIME_ORDER",
    "STUDY",
    "just_learned",
    "plasticity_table",
    "plot_just_learned",
    "prepare",
    "print_table",
    "regimes",
    "section",
    "table",
]

STUDY = "plasticity"
PLACE = "figures"


REGIME_ORDER = ("backprop", "weight_decay", "shrink_perturb", "continual_backprop", "redo")
"""Display order of the plasticity study's regimes (others follow, sorted)."""


def regimes(summary: pd.DataFrame) -> pd.Series:
    """Each trial's plasticity regime, from its config: the names of its interventions in the
    order they run ('+'-joined), else 'weight_decay' when AdamW decay is on, else 'backprop'
    (plain fine-tuning). Indexed like ``summary``.

    Read from ``config_json`` (the summary has no interventions column), so it also labels
    trials of any other study.
    """
    require_columns(summary, ["config_json"], "regimes(summary)")

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
    require_columns(
        accuracy, ["trial_id", "stage", "task_position", "task", "accuracy"], "accuracy"
    )
    require_columns(summary, ["trial_id", "status", "seed", "config_json"], "summary")
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
    return format_percent(stats)


def table(data: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The study's table (:func:`plasticity_table`, formatted) from its records."""
    return plasticity_table(data["accuracy"], data["summary"])


def prepare(data: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The records with each trial's ``regime`` (:func:`regimes`) where regimes vary: a
    setting of its own in every table, and the lines of the plasticity diagnostics."""
    summary = data["summary"]
    if "config_json" not in summary or regimes(summary).nunique() <= 1:
        return dict(data)
    return {**data, "summary": summary.assign(regime=regimes(summary))}


def plot_just_learned(accuracy: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Accuracy on each task right after training on it, against the task's position in the
    stream: one line per regime, mean ± std over seeds (:func:`just_learned`). A falling
    line is lost plasticity."""
    jl = just_learned(accuracy, summary)
    fig, axes = new_figure(1, 1, w=7.5)
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
    integer_xaxis(ax)
    ax.set_title("plasticity: how well each new task is learned")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def section(w: Writer, data: Mapping[str, pd.DataFrame]) -> None:
    """Is each new task learned as well as the first ones? The first vs the last tasks'
    just-learned accuracy per regime (:func:`plasticity_table`) and its figure, after the
    figures of the records; nothing without accuracy records or with one regime."""
    summary, accuracy = data["summary"], data.get("accuracy")
    if accuracy is None or not len(accuracy) or "regime" not in an.varying_settings(summary):
        return
    w.add("## Loss of plasticity")
    jl = just_learned(accuracy, summary)
    if jl.empty:
        w.add("No completed trial yet.")
        return
    n_tasks = int(jl["task_position"].max())
    k = max(1, min(5, n_tasks // 2))
    w.add(
        f"Plasticity is the accuracy on each task right after training on it (the diagonal of "
        f"the accuracy matrix). Per regime (interventions, or AdamW weight decay, else plain "
        f"backprop): the mean over the first {k} and the last {k} of {n_tasks} tasks, their "
        "difference (negative = later tasks learned worse), and AP / forgetting after the "
        "stream; mean ± std over seeds, in % (differences in points). Completed trials only."
    )
    table = plasticity_table(accuracy, summary, k)
    w.add(markdown_table(table))
    w.export(table, "table_plasticity")
    w.figure(
        "plasticity_just_learned",
        "just-learned accuracy by task",
        "accuracy on each task right after training on it, against its position in the stream; "
        "one line per regime, mean ± std over seeds (dodged sideways).",
        lambda: plot_just_learned(accuracy, summary),
    )


def print_table(out: Location) -> None:
    """Print the study's table from its records under the output root ``out`` (the end of
    ``python studies/plasticity.py``)."""
    print()
    print("Accuracy right after training on each task (plasticity), first vs last tasks, and")
    print("final AP / forgetting, per regime (mean ± std over seeds, %):")
    print(table(read_study(study_dir(out, STUDY))).to_string())
