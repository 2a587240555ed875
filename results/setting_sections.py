"""The report's sections on the settings a study varied, each shown wherever its setting varies
(whatever the study): the paper-style table, learning-rate robustness, replay-buffer size,
the replay losses compared, LoRA vs full fine-tuning, and the forgetting prevented relative
to no replay."""

from __future__ import annotations

import pandas as pd

from results import analysis as an
from results import plots
from results.forgetting import forgetting_prevented
from results.trials import reference_subset
from results.writer import HEADERS, METRICS_HELP, Writer, cell, fmt_value, pct

__all__ = [
    "section_lora",
    "section_lr",
    "section_main",
    "section_methods",
    "section_prevented",
    "section_replay_size",
]


def _mean_std_cells(summary: pd.DataFrame, index: str, columns: str, metric: str) -> pd.DataFrame:
    """index x columns table of "mean ± std" strings (percent), with "(k div.)" notes."""
    stats = an.group_stats(summary, [index, columns], metric)
    s = 100.0 if metric in an.PERCENT_METRICS else 1.0

    def cell(r: pd.Series) -> str:
        text = "–" if pd.isna(r["mean"]) else f"{r['mean'] * s:.1f}"
        if pd.notna(r["mean"]) and pd.notna(r["std"]):
            text += f" ± {r['std'] * s:.1f}"
        bad = int(r["n_diverged"] + r["n_failed"])
        text += f" ({bad} div./failed)" if bad else ""
        running = int(r.get("n_running", 0))
        return text + (f" ({running} running)" if running else "")

    stats["cell"] = stats.apply(cell, axis=1)
    table = stats.pivot(index=index, columns=columns, values="cell")
    table = table.reindex(sorted(table.columns), axis=1)
    table.columns = [fmt_value(columns, c) for c in table.columns]
    order = an.sort_groups(table.index.to_frame(index=False), [index])[index].to_list()
    return table.loc[order].reset_index().rename(columns={index: HEADERS.get(index, index)})


def section_main(
    w: Writer,
    summary: pd.DataFrame,
    group: list[str],
    general: pd.DataFrame | None = None,
    flagged: pd.DataFrame | None = None,
) -> None:
    by = group or ["method"]
    table = an.paper_table(summary, by=by, general=general)
    shown = pct(table).reset_index()
    for col in by:
        shown[col] = [fmt_value(col, v) for v in shown[col]]
    w.add("## Main results (paper-style table)")
    if flagged is not None and len(flagged):
        running = int((flagged["status"] == "running").sum())
        orphans = int((flagged["status"] == "–").sum())
        partial = flagged.loc[flagged["status"] == "completed", "trial_id"].tolist()
        notes = []
        if running:
            notes.append(f"{running} running trial(s) are counted under `running`, not averaged")
        if orphans:
            notes.append(f"{orphans} trial(s) with records but no summary row are not in it")
        if partial:
            notes.append(
                "completed trial(s) with incomplete records are averaged from their summary "
                "rows: "
                + ", ".join(f"`{t}`" for t in partial[:10])
                + (f" and {len(partial) - 10} more" if len(partial) > 10 else "")
            )
        if notes:
            w.add("**Incomplete trials (see Trials):** " + "; ".join(notes) + ".")
    w.table(shown, METRICS_HELP, index=False, max_rows=None, name="table_main", raw=table)


def section_lr(w: Writer, summary: pd.DataFrame) -> None:
    w.add("## Learning-rate robustness")
    summary, note = reference_subset(summary, keep=("lr_multiplier",))
    if note:
        w.add(f"Trials at {note}.")
    for metric in ("general_acc_final", "ap"):
        if summary[metric].notna().any():
            w.add(f"**{HEADERS[metric]}** by method (rows) and LR multiplier (columns):")
            w.table(
                _mean_std_cells(summary, "method", "lr_multiplier", metric),
                name=f"table_lr_{metric}",
                how="each cell is mean ± std over completed seeds at lr = base lr × multiplier; a "
                "method is robust if its row stays flat as the multiplier grows; "
                "'div./failed' counts trials that did not finish (not in the mean).",
                index=False,
            )
    w.figure(
        "lr_robustness",
        "learning-rate robustness",
        "x = learning-rate multiplier (log scale), y = accuracy in %; error bars = std over "
        "seeds; the dashed line is the starting model's general accuracy; black x marks count "
        "diverged/failed trials.",
        lambda: plots.plot_lr_robustness(summary),
    )


def section_replay_size(w: Writer, summary: pd.DataFrame) -> None:
    w.add("## Replay-buffer size")
    summary, note = reference_subset(summary, keep=("replay_size",))
    if note:
        w.add(f"Trials at {note}.")
    for metric in ("general_acc_final", "ap"):
        if not summary[metric].notna().any():
            continue
        curve = an.replay_size_curve(summary, metric)
        curve = pct(curve.rename(columns={"mean": f"{metric}_mean", "std": f"{metric}_std"}))
        w.add(f"**{HEADERS[metric]}** by replay-buffer size:")
        w.table(
            curve,
            name=f"table_replay_size_{metric}",
            how="replay size = number of general samples mixed into training; mean ± std over "
            "completed seeds.",
            index=False,
        )
    w.figure(
        "replay_size",
        "replay-buffer size",
        "x = replay-buffer size (symlog), y = accuracy in %; a method run at one size only "
        "(e.g. no replay) is a dashed horizontal reference line.",
        lambda: plots.plot_replay_size(summary),
    )


def section_methods(w: Writer, summary: pd.DataFrame) -> None:
    rows, note = reference_subset(summary, keep=())
    w.add("## Replay losses compared")
    if note:
        w.add(f"Trials at {note} (so that the methods are compared at one setting).")
    metrics = [m for m in (*an.PAPER_METRICS, "general_ppl_final") if m in rows]
    losses = an.loss_type_table(rows, metrics=metrics)
    w.table(
        pct(losses),
        name="table_replay_losses",
        raw=losses,
        how="one row per replay loss: none = plain sequential fine-tuning, ce = replayed general "
        "text with cross-entropy only, kl = + logit imitation of the starting model, l1/l2 = + "
        "hidden-state imitation, tm = + GeRe's threshold-margin loss. Higher general acc. and "
        "AP, BWT closer to 0 and lower general ppl are better. " + METRICS_HELP,
    )


def section_lora(w: Writer, summary: pd.DataFrame) -> None:
    rows, note = reference_subset(summary, keep=("tuning",))
    w.add("## LoRA vs full fine-tuning")
    if note:
        w.add(f"Trials at {note}.")
    lora = an.lora_vs_full_table(rows)
    w.table(
        pct(lora),
        name="table_lora_vs_full",
        raw=lora,
        how="rows pair each method with the parameters trained (lora = low-rank adapters only, "
        "full = all weights); compare the same method across the two tunings. " + METRICS_HELP,
    )


def section_prevented(w: Writer, summary: pd.DataFrame) -> None:
    done = summary[summary["status"] == "completed"]
    if not (done["method"] == "none").any() or done["method"].nunique() < 2:
        return
    parts = []
    for measure, col in (("accuracy", "general_acc_final"), ("ppl", "general_ppl_final")):
        if not done[col].notna().any():
            continue
        t = forgetting_prevented(summary, measure=measure)
        t = t[t["method"] != "none"].drop(columns=["stage"])
        scale = 100.0 if measure == "accuracy" else 1.0
        unit = "pp" if measure == "accuracy" else "nats/token"
        shown = t[[c for c in t.columns if c == "method" or c in an.SETTINGS]].copy()
        for c in shown.columns:
            shown[c] = [fmt_value(c, v) for v in shown[c]]
        shown[f"drop ({unit})"] = [f"{v * scale:.2f}" for v in t["drop_mean"]]
        shown[f"baseline drop ({unit})"] = [f"{v * scale:.2f}" for v in t["baseline_drop_mean"]]
        shown["prevented"] = [
            cell(m) if pd.isna(sd) else f"{m:.2f} ± {sd:.2f}"
            for m, sd in zip(t["prevented_mean"], t["prevented_std"], strict=True)
        ]
        shown["prevented (pooled)"] = [cell(v) for v in t["prevented_pooled"]]
        shown["n"] = t["n"].to_numpy()
        shown["n_seed_matched"] = t["n_seed_matched"].to_numpy()
        parts.append((measure, shown))
    if not parts:
        return
    w.add("## Forgetting prevented (relative to no replay)")
    for measure, t in parts:
        what = "general probe accuracy" if measure == "accuracy" else "log general perplexity"
        w.add(f"**On {what}:**")
        w.table(
            t,
            "drop = start - final general accuracy (or ln of the final/start perplexity ratio); "
            "prevented (see [Glossary](#glossary)) per trial against the no-replay trial of "
            "the same seed and settings, mean ± std over trials (< 0 = worse than no replay); "
            "pooled = 1 - mean drop / mean baseline drop; n_seed_matched = trials that had a "
            "same-seed baseline.",
            index=False,
        )
