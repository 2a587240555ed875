"""studies/active_forgetting.py's presentation: does a base pretrained with active forgetting
(its embeddings reset every k steps) adapt to a new language faster than a standard one?

The study writes ``adaptation`` records itself (one per base, adaptation, budget and seed),
not CL trials: :func:`adaptation_table` is its table, :func:`plot_adaptation` its figure and
:func:`section` its report section, which opens the report.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from results.analysis import format_percent, require_columns
from results.io import read_study
from results.plots import legend, new_figure
from results.storage import Location
from results.writer import Writer, markdown_table

__all__ = [
    "KINDS",
    "PLACE",
    "STUDY",
    "adaptation_table",
    "plot_adaptation",
    "print_table",
    "section",
    "table",
]

STUDY = "active_forgetting"
PLACE = "start"
KINDS = ("adaptation",)


def adaptation_table(adaptation: pd.DataFrame, *, formatted: bool = True) -> pd.DataFrame:
    """One row per base (standard, forgetful): its probe accuracy in the first language as
    pretrained, then in the new language after each (adaptation, budget), mean ± std over the
    adaptation seeds (in %, formatted). Columns ``first_language`` and ``<adapt>_<steps>``."""
    require_columns(
        adaptation,
        ["base", "adapt", "budget_steps", "seed", "language", "probe_accuracy"],
        "adaptation",
    )
    if adaptation.empty:
        raise ValueError("adaptation_table: no adaptation rows")
    first = adaptation[(adaptation["adapt"] == "none") & (adaptation["language"] == "first")]
    new = adaptation[adaptation["language"] == "new"]
    cols: dict[str, pd.DataFrame] = {}
    cols["first_language"] = first.groupby("base")["probe_accuracy"].agg(["mean", "std"])
    order = {"none": 0, "embeddings": 1, "full": 2}
    keys = sorted(
        {(a, int(b)) for a, b in zip(new["adapt"], new["budget_steps"], strict=True)},
        key=lambda k: (order.get(k[0], 3), k[1]),
    )
    for adapt, steps in keys:
        g = new[(new["adapt"] == adapt) & (new["budget_steps"] == steps)]
        cols[f"{adapt}_{steps}"] = g.groupby("base")["probe_accuracy"].agg(["mean", "std"])
    out = pd.concat(
        {name: df.rename(columns=lambda c, n=name: f"{n}_{c}") for name, df in cols.items()},
        axis=1,
    )
    out.columns = out.columns.droplevel(0)
    out = out.loc[sorted(out.index, key=lambda b: (b != "standard", b))]
    seeds = new.groupby("base")["seed"].nunique()
    out.insert(0, "seeds", seeds.reindex(out.index).fillna(0).astype(int))
    if not formatted:
        return out
    return format_percent(out)


def table(data: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The study's table (:func:`adaptation_table`, formatted) from its records."""
    return adaptation_table(data["adaptation"])


def plot_adaptation(adaptation: pd.DataFrame) -> Figure:
    """New-language probe accuracy against the adaptation budget: one line per (base,
    adaptation), mean ± std over seeds."""
    new = adaptation[(adaptation["language"] == "new") & (adaptation["adapt"] != "none")]
    fig, axes = new_figure(1, 1)
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
    legend(ax)
    return fig


def section(w: Writer, data: Mapping[str, pd.DataFrame]) -> None:
    """The forgetful vs the standard base in a new language (:func:`adaptation_table` and its
    figure), first in the report: the study's runs are adaptations, not CL trials. Nothing
    without adaptation records."""
    adaptation = data.get("adaptation")
    if adaptation is None or not len(adaptation):
        return
    w.add("## Active forgetting: adapting to a new language")
    chance = float(adaptation["chance"].iloc[0])
    w.add(
        "Knowledge-probe accuracy in %, mean ± std over adaptation seeds: `first_language` = "
        "the base as pretrained, in the language it learned; `<adaptation>_<steps>` = in the "
        "new language (the world respelled) after adapting with a new tokenizer and fresh "
        "embeddings, training the embeddings only (body frozen) or every parameter, for that "
        f"many steps; `none_0` = the base on the new language without adapting. Chance = "
        f"{100 * chance:.1f}%."
    )
    table = adaptation_table(adaptation)
    w.add(markdown_table(table))
    w.export(table, "table_active_forgetting")
    w.figure(
        "adaptation",
        "new-language probe by budget",
        "new-language probe accuracy against the adaptation budget (log scale), one line per "
        "base and adaptation, mean ± std over seeds; dotted: chance.",
        lambda: plot_adaptation(adaptation),
    )


def print_table(where: Location, *, chance: float) -> None:
    """Print the study's table from its records in the study directory ``where``, with the
    probe's chance accuracy ``chance`` (a fraction; the end of
    ``python studies/active_forgetting.py``)."""
    print()
    print("Knowledge probe (%, mean ± std over seeds): the first language as pretrained, and")
    print("the new language after adapting (embeddings only / full, at each budget in steps):")
    print(table(read_study(where)).to_string())
    print(f"(chance = {100 * chance:.1f}%)")
