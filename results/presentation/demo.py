"""studies/demo.py's presentation: how much does fine-tuning make a small pretrained model
forget, and how much of it does each replay method prevent?

The demo's report is the generic one; :func:`table` is the table its script prints at the end,
whose ``drop_prevented`` is the report's "forgetting prevented"
(:func:`results.forgetting.forgetting_prevented`: seed-matched against ``none``).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from results import analysis as an
from results.forgetting import forgetting_prevented

__all__ = ["COLUMNS", "STUDY", "method_labels", "print_table", "table"]

STUDY = "demo"

COLUMNS = {
    "general_acc_start": "probe_start",
    "general_acc_final": "probe_final",
    "general_ppl_start": "ppl_start",
    "general_ppl_final": "ppl_final",
    "ap": "task_AP",
    "bwt": "BWT",
}
"""Summary metrics of the table (means over completed trials) and their column names."""


def method_labels(summary: pd.DataFrame) -> pd.Series:
    """Each trial's replay method, with its weight where that is not the default
    (``tm:dynamic``, ``kl:10``): how ``--methods`` names it. Indexed like ``summary``."""
    return pd.Series(
        [
            m if w == "default" else f"{m}:{w}"
            for m, w in zip(summary["method"], summary["replay_weight"], strict=True)
        ],
        index=summary.index,
        name="method",
    )


def _label_rank(label: str) -> tuple[int, str]:
    """Labels in the registry's order of their methods (``analysis.method_order``), then A-Z."""
    order = an.method_order()
    method = label.split(":")[0]
    return (order.index(method) if method in order else len(order), label)


def table(data: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per replay method (:func:`method_labels`): ``seeds`` (completed trials), the
    probe accuracy and held-out perplexity before and after the task sequence, task AP and
    BWT -- means over the completed trials as in the report's main table
    (:func:`results.analysis.paper_table`; fractions, perplexity as is) -- and
    ``drop_prevented``: the mean over trials of each trial's forgetting prevented on the
    probe, ``1 - drop / drop of the 'none' trial of the same seed and settings``
    (:func:`results.forgetting.forgetting_prevented`'s ``prevented_mean``, the report's
    "prevented"; 0 for ``none`` itself, NaN without a completed ``none`` trial or when it lost
    nothing). ``data`` needs only its ``summary``."""
    summary = an.hashable_settings(data["summary"])
    summary = summary.assign(method=method_labels(summary))
    stats = an.paper_table(summary, by=["method"], metrics=list(COLUMNS))
    out = pd.DataFrame({"seeds": stats["n"]}, index=stats.index)
    for metric, name in COLUMNS.items():
        out[name] = stats[f"{metric}_mean"]
    try:
        prevented = forgetting_prevented(summary).set_index("method")["prevented_mean"]
    except ValueError:  # no completed 'none' trial: nothing to compare with
        prevented = pd.Series(dtype=float)
    if prevented.index.has_duplicates:
        raise ValueError(
            "demo table: the methods ran at several settings besides the seed "
            f"({sorted(set(prevented.index[prevented.index.duplicated()]))}); use the report"
        )
    out["drop_prevented"] = prevented.reindex(out.index)
    return out.loc[sorted(out.index, key=_label_rank)]


def print_table(summary: pd.DataFrame, *, chance: float) -> None:
    """Print :func:`table` of the study's ``summary`` records, with the probe's chance
    accuracy ``chance`` (a fraction; the end of ``python studies/demo.py``)."""
    print()
    print(
        "General ability (probe accuracy, held-out perplexity) before -> after the task sequence,"
    )
    print("task AP (mean final accuracy) and BWT, per replay method:")
    print(table({"summary": summary}).to_string(float_format=lambda x: f"{x:.3f}"))
    print(
        f"(probe chance = {chance:.3f}; drop_prevented = mean over seeds of 1 - probe drop / "
        "probe drop of 'none' at the same seed)"
    )
