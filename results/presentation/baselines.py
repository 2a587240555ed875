"""studies/baselines.py's presentation: every row of a continual-learning table (sequential
fine-tuning, replay, EWC, LwF, O-LoRA, multitask, each task alone), read against multitask.

Each trial is named by its method as a CL table names it (:func:`baselines`: replay and ``cl``
methods '+'-joined, ' (lora)' for LoRA trials), in every table and figure of the report
(:func:`prepare`); :func:`baselines_table` is the study's table, :func:`plot_baselines` its
figure, :func:`section` its report section (after the main results).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from results.analysis import format_percent, require_columns
from results.io import read_study, study_dir
from results.plots import legend, method_colour, new_figure
from results.storage import Location
from results.writer import Writer, markdown_table

__all__ = [
    "BASELINE_COLUMNS",
    "BASELINE_ORDER",
    "PLACE",
    "STUDY",
    "baselines",
    "baselines_table",
    "plot_baselines",
    "print_table",
    "prepare",
    "section",
    "table",
]

STUDY = "baselines"
PLACE = "results"


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
    require_columns(summary, ["config_json"], "baselines(summary)")

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
    require_columns(
        summary, ["status", "config_json", "trial_id", "seed", *read], "baselines_table"
    )
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
        require_columns(accuracy, ["trial_id", "stage", "task_position", "accuracy"], "accuracy")
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
    shown = format_percent(stats)
    ppl_text = [
        "–" if pd.isna(m) else f"{m:.2f}" + ("" if pd.isna(s) else f" ± {s:.2f}")
        for m, s in zip(ppl["general_ppl_final_mean"], ppl["general_ppl_final_std"], strict=True)
    ]
    shown.insert(len(shown.columns) - 1, "general_ppl_final", ppl_text)
    return shown


def table(data: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The study's table (:func:`baselines_table`, formatted) from its records."""
    return baselines_table(data["summary"], data.get("accuracy"))


def prepare(data: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The records with each trial's ``method`` as a CL table names it (:func:`baselines`:
    ewc, olora (lora), multitask, ...), so every table and figure of the report shows it."""
    summary = data["summary"]
    if "config_json" not in summary:
        return dict(data)
    return {**data, "summary": summary.assign(method=baselines(summary))}


def plot_baselines(summary: pd.DataFrame) -> Figure:
    """The continual-learning table as a picture: per method (:func:`baselines`), the
    task AP and the final general-ability probe accuracy side by side, mean ± std over seeds,
    with multitask's AP (the upper bound) and the starting probe accuracy as reference lines."""
    stats = baselines_table(summary, formatted=False)
    fig, axes = new_figure(1, 2, w=5.5, h=0.45 * len(stats) + 2.2)
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
        legend(axes[0, 0])
    done = summary[summary["status"] == "completed"]
    if len(done) and done["general_acc_start"].notna().any():
        axes[0, 1].axvline(
            done["general_acc_start"].mean() * 100, ls=":", color="black", label="at the start"
        )
        legend(axes[0, 1])
    axes[0, 0].set_title("what each method learned of the tasks")
    axes[0, 1].set_title("what it kept of what the model knew")
    return fig


def section(w: Writer, data: Mapping[str, pd.DataFrame]) -> None:
    """Every row of a continual-learning table, read against multitask: the table of
    :func:`baselines_table` and its figure, after the main results."""
    summary, accuracy = data["summary"], data.get("accuracy")
    w.add("## Continual-learning baselines")
    try:
        table = baselines_table(summary, accuracy)
    except ValueError as exc:
        w.add(f"No table yet: {exc}.")
        return
    defaults = sorted(
        {json.loads(c).get("method_defaults", "harness") for c in summary["config_json"]}
    )
    w.add(
        "Per method (harness/cl and harness/replay, each at its "
        + (
            "reference's values (method_defaults: paper)"
            if defaults == ["paper"]
            else "documented defaults"
            if defaults == ["harness"]
            else "defaults: " + " and ".join(defaults) + " (mixed)"
        )
        + "): AP; BWT as GEM's paper (÷(T−1)) and as SAPT's scorer reports it (÷T); FWT as "
        "GEM's zero-shot transfer and as SAPT's (the mean just-learned accuracy minus that of "
        "the single_task row, each task trained alone, same seed; – without one); the mean "
        "just-learned accuracy; forgetting; the general-ability probe accuracy (on the probe's "
        "sampled questions, not lm-eval's full task: see the settings) and held-out perplexity "
        "after the last task; the gap to multitask (how far below the upper bound it ends); "
        "mean ± std over seeds, in % (perplexity as is); every column is defined in the "
        "[Glossary](#glossary). Multitask trains every task at once, so it has no BWT, FWT or "
        "forgetting. Completed trials only."
    )
    w.add(markdown_table(table))
    w.export(table, "table_baselines")
    w.figure(
        "baselines",
        "continual-learning baselines",
        "per method, the task AP (left; dashed: multitask, the upper bound) and the general-"
        "ability probe accuracy after the last task (right; dotted: the starting model), mean ± "
        "std over seeds (seeds in brackets).",
        lambda: plot_baselines(summary),
    )


def print_table(out: Location) -> None:
    """Print the study's table from its records under the output root ``out`` (the end of
    ``python studies/baselines.py``)."""
    print()
    print("The continual-learning table (mean ± std over seeds; %, perplexity as is):")
    print(table(read_study(study_dir(out, STUDY))).to_string())
