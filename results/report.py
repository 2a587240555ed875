"""Write a study's report: ``python -m results.report <study dir> [--report-dir DIR]
[--format png|pdf|svg] [--dpi N]``.

Reads every record kind through ``results.io.read_study`` and writes ``<report dir>/report.md``
with its figures beside it (PNG by default; PDF or SVG for a paper, at ``--dpi``, default 150).
The default report directory is ``<out>/_reports/<study>/`` for the study ``<out>/study=<study>``
(:func:`default_report_dir`): beside the dataset, not in it, and its leading underscore makes
``pyarrow.dataset`` and ``pandas.read_parquet`` skip it, so ``pd.read_parquet(<out>/study=<s>)``
and ``pyarrow.dataset.dataset(<out>, partitioning="hive")`` read the records only.

The report is meant for someone who did not run the study: it says what was varied, how many
trials finished, shows the paper-style table and every table and figure that applies to the
data present (seed-mean accuracy matrices and their difference to ``none``, training curves,
...), each with a line on how to read it, and defines every metric once, in its Glossary.
Figure titles name settings ("tm, lr 3×, seed mean (3)"), not trial ids. Sections whose records
are absent are left out; a figure that cannot be drawn from the data is replaced by a note
saying why, never by a crash.

Trials that did not complete (diverged, failed, still running) and completed trials whose
records are incomplete (accuracy stages missing, records without a summary row) are listed by
name under "Trials" with the reason, and marked wherever one of them is shown. A damaged
results file (not Parquet, truncated, another schema) stops the report with every such file
named (exit status 2); ``--skip-damaged`` writes the report from the other files and lists the
skipped ones in it. A path that does not exist or holds no summary records is an error too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from results import analysis as an
from results import plots, storage
from results.io import DamagedResultsError, NewerResultsError, read_study, safe_name
from results.schema import SCHEMA_VERSION
from results.storage import Location

__all__ = ["build_report", "default_report_dir", "main", "write_report"]

log = logging.getLogger(__name__)

HEADERS = {
    "ap": "AP (%)",
    "aia": "AIA (%)",
    "bwt": "BWT ÷(T−1), GEM (pp)",
    "bwt_gem_code": "BWT ÷T, SAPT (pp)",
    "fwt": "FWT zero-shot, GEM (pp)",
    "fwt_sapt": "FWT vs single task, SAPT (pp)",
    "just_learned": "just-learned (%)",
    "forgetting": "forgetting (pp)",
    "general_acc_start": "general acc. start (%)",
    "general_acc_final": "general acc. final (%)",
    "general_ppl_start": "general ppl start",
    "general_ppl_final": "general ppl final",
    "gap_to_multitask": "gap to multitask (pp)",
    "n": "n",
    "n_diverged": "diverged",
    "n_failed": "failed",
    "n_running": "running",
    "lr_multiplier": "LR ×",
    "replay_size": "replay size",
}

METRICS_HELP = (
    "Mean ± std over the completed trials (seeds) of each row; units, the count columns and "
    "every metric are defined once, in the [Glossary](#glossary)."
)
"""What the metric tables say about their cells: a pointer to the one glossary."""

GLOSSARY = [
    "**Table cells**: accuracies in %, BWT/FWT/forgetting and differences in percentage points "
    "(pp); mean ± sample std (ddof=1) over the completed trials (seeds) of the row; [±x] after "
    "the final general accuracy = mean 95% Wilson half-width of the trials' probe accuracy (the "
    "sampling uncertainty of one run, from its n_correct / n_total); `n` = completed trials "
    "averaged; `diverged`/`failed` (and `running`, when some trial is) = trials of that row "
    "left out of the means. Accuracy matrices show fractions (0.90 = 90%).",
    "**Stage**: checkpoint index; 0 = starting model, i = after training task i of T.",
    "**Accuracy matrix** a[i][j]: score on task j after training through task i.",
    "**AP** (average performance, GEM's ACC) = mean_j a[T][j]: accuracy over all tasks at the end.",
    "**AIA** (average incremental accuracy) = 1/T sum_i (1/i sum_{j<=i} a[i][j]): the mean, over "
    "stages, of the accuracy on the tasks seen so far.",
    "**BWT** (GEM's paper) = 1/(T-1) sum_{j<T} (a[T][j] - a[j][j]); negative = forgetting of "
    "learned tasks. **BWT ÷T** (GEM's code, SAPT's `score.py`, the Long-Sequence tables) = the "
    "same sum / T = (T-1)/T × BWT.",
    "**FWT** (GEM, zero-shot) = 1/(T-1) sum_{j>=2} (a[j-1][j] - a[0][j]): transfer to a task "
    "before training on it. **FWT vs single task** (SAPT) = 1/T sum_k a[k][k] - 1/T sum_k "
    "s[k][k], s the `single_task` trial of the same seed (every task trained alone from the "
    "starting model): did earlier tasks help learn later ones.",
    "**just-learned** = 1/T sum_k a[k][k]: accuracy on each task right after training it.",
    "**MMLU subsample**: the general-ability probe scores `eval.probe_max_questions` questions "
    "(a seeded sample, the same at every stage) of the probe's files, not lm-eval's full "
    "`mmlu` task of 14,042 questions (unless it is unset); compare with lm-eval's published "
    "numbers only as that subsample.",
    "**Gap to multitask** = a method's AP minus the multitask upper bound's mean AP (every task "
    "trained at once, the same epochs); 0 = as good as training on everything together.",
    "**forgetting** (Chaudhry) = mean over j<T of max_{j<=l<T} a[l][j] - a[T][j]; >= 0 is loss.",
    "**general acc.**: multiple-choice general-knowledge probe (e.g. MMLU: a seeded "
    "subsample, see *MMLU subsample*), of the starting model (start) and after the last task "
    "(final); "
    "**general ppl**: perplexity on held-out general text (lower is better).",
    "**forgetting prevented** = 1 - drop_method / drop_baseline with the baseline trial of the "
    "same seed and settings: 1 = no general-ability loss, 0 = as much loss as no replay.",
    "**Seed-mean accuracy matrix**: each cell's mean over the completed trials (seeds) of one "
    "setting; a bracketed count marks a cell averaged over fewer trials than the others.",
    "**Difference to none**: a method's accuracy matrix minus that of `none` (sequential "
    "fine-tuning) at the same settings; *seed-matched* = the mean over the shared seeds of the "
    "per-seed differences (a paired comparison), *mean − mean* = the difference of the two "
    "seed means when no seed is shared. > 0 (blue) = the method scores higher.",
    "**Training loss**: the loss that was back-propagated (task cross-entropy plus the weighted "
    "replay term), mean over each logged window; **task CE**: the cross-entropy on the task's "
    "own rows only, comparable across methods.",
    "**diverged**: training loss became non-finite or exploded; such trials are counted, not "
    "averaged. **failed**: the trial raised an error. **running**: the trial was started (or "
    "re-started) and has not finished, or was interrupted; counted, not averaged.",
    "**incomplete records**: a completed trial whose accuracy matrix lacks stages of 0..T (or "
    "cells) or whose general records lack stages, or records whose trial has no summary row; "
    "listed under Trials and marked where shown; re-run such a trial to restore its records.",
]
"""The report's one glossary (its last section); other sections link to it."""

_MAX_MATRICES = 12
"""Settings beyond which the seed-mean matrices are drawn at the reference settings only."""

_MAX_ROWS = 40


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float | np.floating):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency); the index becomes columns."""
    if index and (df.index.name is not None or any(n is not None for n in df.index.names)):
        df = df.reset_index()
    cols = [HEADERS.get(str(c), str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _fmt_value(col: str, v: object) -> str:
    if col == "lr_multiplier" and isinstance(v, float | int | np.number):
        return f"{v:g}×"
    if isinstance(v, float | np.floating):
        return f"{v:g}"
    return str(v)


class _Writer:
    """Accumulates markdown and saves figures beside it (``plots.save_figure``)."""

    def __init__(self, out: Path, fmt: str = "png", dpi: int = plots.DEFAULT_DPI) -> None:
        self.out = out
        self.fmt = fmt
        self.dpi = dpi
        self.lines: list[str] = []
        self.figures: list[Path] = []

    def add(self, *text: str) -> None:
        self.lines.extend(text)
        self.lines.append("")

    def read(self, text: str) -> None:
        self.add(f"*How to read this:* {text}")

    def table(
        self, df: pd.DataFrame, how: str, *, index: bool = True, max_rows: int | None = _MAX_ROWS
    ) -> None:
        cut = max_rows is not None and len(df) > max_rows
        self.add(markdown_table(df.iloc[:max_rows] if cut else df, index=index))
        if cut:
            self.add(f"(first {max_rows} of {len(df)} rows shown)")
        self.read(how)

    def figure(self, name: str, alt: str, how: str, draw: Callable[[], Figure]) -> None:
        try:
            fig = draw()
        except ValueError as e:  # data that cannot be drawn: say so, keep the report going
            log.warning("figure %s skipped: %s", name, e)
            self.add(f"*(figure “{alt}” not drawn: {e})*")
            return
        path = plots.save_figure(fig, self.out / safe_name(name), self.fmt, self.dpi)
        self.figures.append(path)
        self.add(f"![{alt}]({path.name})")
        self.read(how)


def _pct(df: pd.DataFrame) -> pd.DataFrame:
    return an.format_mean_std(df, digits=1, percent=True)


def _reference_subset(summary: pd.DataFrame, keep: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """Trials at one reference value of every varying setting not in ``keep`` (nor seed).

    The base lr_multiplier (smallest), full fine-tuning if present, per method the largest
    replay size, otherwise the most common value. Returns the rows and a phrase naming the
    restriction ("" if none), so a table comparing methods does not average over settings.
    """
    rows, notes = summary, []
    for col in an.varying_settings(summary):
        if col in keep or col in ("method", "seed"):
            continue
        if col == "replay_size":
            if rows.groupby("method")["replay_size"].nunique().max() > 1:
                largest = rows.groupby("method")["replay_size"].transform("max")
                rows = rows[rows["replay_size"] == largest]
                notes.append("the largest replay size of each method")
            continue
        values = rows[col]
        if col == "lr_multiplier":
            ref = values.min()
        elif col == "tuning" and (values == "full").any():
            ref = "full"
        else:
            ref = values.mode().iloc[0]
        rows = rows[values == ref]
        notes.append(f"{col} = {_fmt_value(col, ref)}")
    return rows, ", ".join(notes)


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
    table.columns = [_fmt_value(columns, c) for c in table.columns]
    order = an.sort_groups(table.index.to_frame(index=False), [index])[index].to_list()
    return table.loc[order].reset_index().rename(columns={index: HEADERS.get(index, index)})


def _spread(values: Sequence, k: int = 4) -> list:
    """At most k values spread over a sorted list (first, last and evenly between)."""
    values = sorted(values)
    if len(values) <= k:
        return values
    idx = np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))
    return [values[i] for i in idx]


def _tied_to_method(summary: pd.DataFrame, col: str) -> bool:
    """True if every method ran at one value of ``col`` (e.g. replay size 0 for 'none')."""
    return "method" in summary and bool(summary.groupby("method")[col].nunique().max() <= 1)


def _grouping(summary: pd.DataFrame, varying: list[str]) -> list[str]:
    """Rows of the main tables: every varying setting except the seed and settings that merely
    follow the method (one replay size or weight per method is not a separate axis)."""
    return [
        c
        for c in varying
        if c != "seed"
        and not (c in ("replay_size", "replay_weight") and _tied_to_method(summary, c))
    ]


_STATUS_WHY = {
    "running": "still running, or interrupted before it finished (not in the means)",
    "failed": "failed (not in the means)",
}


def _stages_text(stages: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``"1–3, 5"``."""
    runs: list[list[int]] = []
    for s in sorted(stages):
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def _n_stages(r) -> int:
    """A summary row's training stages (n_stages; n_tasks in results written before it)."""
    n = getattr(r, "n_stages", None)
    return int(r.n_tasks) if n is None or pd.isna(n) else int(n)


def _accuracy_gaps(rows: pd.DataFrame, n_tasks: int, n_stages: int | None = None) -> str | None:
    """What a completed trial's accuracy records lack (stages 0..S, T tasks each; S = T
    unless every task was trained in one stage); None if all there."""
    if rows.empty:
        return "no accuracy records"
    n_stages = n_tasks if n_stages is None else n_stages
    have = rows.groupby("stage")["task_position"].nunique()
    missing = [s for s in range(n_stages + 1) if s not in have.index]
    short = [int(s) for s, k in have.items() if 0 <= s <= n_stages and k < n_tasks]
    parts = []
    if missing:
        parts.append(f"accuracy stages {_stages_text(missing)} of 0–{n_stages} missing")
    if short:
        parts.append(f"accuracy cells missing at stage(s) {_stages_text(short)}")
    return "; ".join(parts) or None


def incomplete_trials(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Trials that must not be read as complete: ``[study, trial_id, status, problem]``.

    Every summary row whose status is not 'completed' (diverged, failed, running); every
    completed trial whose accuracy matrix lacks stages 0..n_tasks or cells, or whose general
    records lack stages (each checked when the study has records of that kind at all); and
    every trial with records of some kind but no summary row (status '–': running, crashed
    before its summary, or its summary was damaged).
    """
    summary = data["summary"]
    accuracy = data.get("accuracy")
    out = []
    by_trial = (
        dict(tuple(accuracy.groupby(["study", "trial_id"], sort=False)))
        if accuracy is not None and len(accuracy)
        else None
    )
    general = data.get("general")
    gen_stages = (
        general.groupby(["study", "trial_id"], sort=False)["stage"].agg(set).to_dict()
        if general is not None and len(general)
        else None
    )
    for r in summary.itertuples(index=False):
        status = str(r.status)
        if status == "diverged":
            at = "" if pd.isna(r.diverged_stage) else f" at task {int(r.diverged_stage)}"
            out.append((r.study, r.trial_id, status, f"diverged{at} (not in the means)"))
        elif status != "completed":
            why = _STATUS_WHY.get(status, f"status {status!r} (not in the means)")
            out.append((r.study, r.trial_id, status, why))
        else:
            gaps = []
            if by_trial is not None:
                rows = by_trial.get((r.study, r.trial_id), accuracy.iloc[:0])
                gaps.append(_accuracy_gaps(rows, int(r.n_tasks), _n_stages(r)))
            if gen_stages is not None:
                have = gen_stages.get((r.study, r.trial_id), set())
                missing = sorted(set(range(_n_stages(r) + 1)) - have)
                if missing:
                    gaps.append(
                        f"general stages {_stages_text(missing)} of 0–{_n_stages(r)} missing"
                        if have
                        else "no general records"
                    )
            gap = "; ".join(g for g in gaps if g)
            if gap:
                out.append((r.study, r.trial_id, status, f"incomplete records: {gap}"))
    known = set(zip(summary["study"], summary["trial_id"], strict=True))
    orphans: dict[tuple[str, str], list[str]] = {}
    for kind, df in data.items():
        if kind == "summary" or df is None or df.empty:
            continue
        for key in df[["study", "trial_id"]].drop_duplicates().itertuples(index=False):
            if tuple(key) not in known:
                orphans.setdefault(tuple(key), []).append(kind)
    for (study, tid), kinds in sorted(orphans.items()):
        out.append(
            (
                study,
                tid,
                "–",
                f"no summary row ({', '.join(kinds)} records only): still running, crashed "
                "before writing its summary, or its summary file was damaged",
            )
        )
    return pd.DataFrame(out, columns=["study", "trial_id", "status", "problem"])


def _flag_of(flagged: pd.DataFrame) -> dict[tuple[str, str], str]:
    return {(r.study, r.trial_id): r.problem for r in flagged.itertuples(index=False)}


def _partial(summary: pd.DataFrame, flagged: pd.DataFrame) -> pd.Series:
    """Completed summary rows whose records are incomplete (flagged although completed)."""
    bad = set(
        zip(
            flagged.loc[flagged["status"] == "completed", "study"],
            flagged.loc[flagged["status"] == "completed", "trial_id"],
            strict=True,
        )
    )
    keys = zip(summary["study"], summary["trial_id"], strict=True)
    return pd.Series([k in bad for k in keys], index=summary.index, dtype=bool)


def _representatives(base: pd.DataFrame, flagged: pd.DataFrame) -> pd.DataFrame:
    """``an.representative_trials``, passing over completed trials with incomplete records
    while the method has a complete one."""
    partial = _partial(base, flagged)
    pool = base.assign(_status=base["status"])
    pool.loc[partial, "status"] = "incomplete"
    reps = an.representative_trials(pool)
    return reps.assign(status=reps["_status"]).drop(columns="_status")


def _section_setup(w: _Writer, summary: pd.DataFrame) -> list[str]:
    varying = an.varying_settings(summary)
    w.add("## What the study varied")
    lines = []
    for col in varying:
        vals = an.sort_groups(summary[[col]].drop_duplicates(), [col])[col]
        tied = col != "method" and _tied_to_method(summary, col)
        lines.append(
            f"- **{col}**: "
            + ", ".join(_fmt_value(col, v) for v in vals)
            + (" (one value per method)" if tied else "")
        )
    if "seed" in summary:
        seeds = sorted(summary["seed"].unique())
        lines.append(f"- **seed**: {', '.join(map(str, seeds))} ({len(seeds)} seed(s))")
    w.add(*(lines or ["- nothing: every trial used the same settings"]))
    fixed = [c for c in an.SETTINGS if c in summary and c not in varying and c != "seed"]
    if fixed:
        w.add(
            "Held fixed: "
            + "; ".join(f"{c} = {_fmt_value(c, summary[c].iloc[0])}" for c in fixed)
            + "."
        )
    return varying


def _status_line(c: pd.Series) -> str:
    line = (
        f"{int(c['n_total'])} trials: {int(c['n_completed'])} completed, "
        f"{int(c['n_diverged'])} diverged, {int(c['n_failed'])} failed"
    )
    if c.get("n_running", 0):
        line += f", {int(c['n_running'])} running"
    return line + "."


def _section_trials(
    w: _Writer, summary: pd.DataFrame, group: list[str], flagged: pd.DataFrame
) -> None:
    c = an.status_counts(summary).iloc[0]
    w.add("## Trials", _status_line(c))
    running = bool(c.get("n_running", 0))
    partial = flagged[flagged["status"] == "completed"]
    orphans = flagged[flagged["status"] == "–"]
    warn = []
    if running:
        warn.append(
            f"{int(c['n_running'])} trial(s) are still running or were interrupted: the tables "
            "leave them out; re-run the study to finish them"
        )
    if len(partial):
        warn.append(
            f"{len(partial)} completed trial(s) have incomplete records (their summary metrics "
            "are averaged, their accuracy matrices are shown incomplete)"
        )
    if len(orphans):
        warn.append(f"{len(orphans)} trial(s) have records but no summary row (not in any table)")
    if warn:
        w.add("**Incomplete trials:** " + "; ".join(warn) + ". They are listed below.")
    if group:
        counts = an.status_counts(summary, group)
        if not running:
            counts = counts.drop(columns="n_running")
        how = (
            "trials per setting by how they ended; only completed trials enter the means "
            "below, diverged, failed and running ones are counted in every table instead."
        )
        if len(counts) > _MAX_ROWS:  # long grids: only the settings where something went wrong
            counts = counts[counts["n_completed"] < counts["n_total"]]
            how += " Settings where every trial completed are not listed."
        for col in group:
            counts[col] = [_fmt_value(col, v) for v in counts[col]]
        if len(counts):
            names = {f"n_{s}": s for s in ("completed", "diverged", "failed", "running")}
            w.table(counts.rename(columns={**names, "n_total": "total"}), how, index=False)
    if len(flagged):
        listing = flagged.merge(summary, on=["study", "trial_id", "status"], how="left")
        cols = ["trial_id", "status", "problem", "diverged_stage", "error"]
        if listing["study"].nunique() > 1:
            cols.insert(0, "study")
        listing = listing[cols].copy()
        listing["error"] = listing["error"].fillna("").astype(str).str.slice(0, 100)
        w.table(
            listing,
            "trials that did not complete (left out of the means) and trials whose records "
            "are incomplete, with why: the task index at which the loss diverged, the "
            "(truncated) error message, or which records are missing. Re-run a trial to "
            "complete it.",
            index=False,
        )


def _section_damaged(w: _Writer, study: Location, skipped: dict[Location, str]) -> None:
    w.add(
        "## Damaged files (skipped)",
        f"**{len(skipped)} results file(s) could not be read and were left out** "
        "(`--skip-damaged`): their trials are missing from, or incomplete in, every table and "
        "figure below. Delete or re-run those trials to restore them.",
    )
    rows = []
    for path, reason in skipped.items():
        prefix = f"{study}/"
        shown = str(path).removeprefix(prefix) if str(path).startswith(prefix) else path
        rows.append({"file": f"`{shown}`", "reason": reason[:200]})
    w.table(
        pd.DataFrame(rows),
        f"one row per unreadable file (path relative to `{study}`) and why it was refused.",
        index=False,
        max_rows=None,
    )


def _section_main(
    w: _Writer,
    summary: pd.DataFrame,
    group: list[str],
    general: pd.DataFrame | None = None,
    flagged: pd.DataFrame | None = None,
) -> None:
    by = group or ["method"]
    table = an.paper_table(summary, by=by, general=general)
    shown = _pct(table).reset_index()
    for col in by:
        shown[col] = [_fmt_value(col, v) for v in shown[col]]
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
    w.table(shown, METRICS_HELP, index=False, max_rows=None)


def _section_lr(w: _Writer, summary: pd.DataFrame) -> None:
    w.add("## Learning-rate robustness")
    summary, note = _reference_subset(summary, keep=("lr_multiplier",))
    if note:
        w.add(f"Trials at {note}.")
    for metric in ("general_acc_final", "ap"):
        if summary[metric].notna().any():
            w.add(f"**{HEADERS[metric]}** by method (rows) and LR multiplier (columns):")
            w.table(
                _mean_std_cells(summary, "method", "lr_multiplier", metric),
                "each cell is mean ± std over completed seeds at lr = base lr × multiplier; a "
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


def _section_replay_size(w: _Writer, summary: pd.DataFrame) -> None:
    w.add("## Replay-buffer size")
    summary, note = _reference_subset(summary, keep=("replay_size",))
    if note:
        w.add(f"Trials at {note}.")
    for metric in ("general_acc_final", "ap"):
        if not summary[metric].notna().any():
            continue
        curve = an.replay_size_curve(summary, metric)
        curve = _pct(curve.rename(columns={"mean": f"{metric}_mean", "std": f"{metric}_std"}))
        w.add(f"**{HEADERS[metric]}** by replay-buffer size:")
        w.table(
            curve,
            "replay size = number of general samples mixed into training; mean ± std over "
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


def _section_methods(w: _Writer, summary: pd.DataFrame) -> None:
    rows, note = _reference_subset(summary, keep=())
    w.add("## Replay losses compared")
    if note:
        w.add(f"Trials at {note} (so that the methods are compared at one setting).")
    metrics = [m for m in (*an.PAPER_METRICS, "general_ppl_final") if m in rows]
    w.table(
        _pct(an.loss_type_table(rows, metrics=metrics)),
        "one row per replay loss: none = plain sequential fine-tuning, ce = replayed general "
        "text with cross-entropy only, kl = + logit imitation of the starting model, l1/l2 = + "
        "hidden-state imitation, tm = + GeRe's threshold-margin loss. Higher general acc. and "
        "AP, BWT closer to 0 and lower general ppl are better. " + METRICS_HELP,
    )


def _section_lora(w: _Writer, summary: pd.DataFrame) -> None:
    rows, note = _reference_subset(summary, keep=("tuning",))
    w.add("## LoRA vs full fine-tuning")
    if note:
        w.add(f"Trials at {note}.")
    w.table(
        _pct(an.lora_vs_full_table(rows)),
        "rows pair each method with the parameters trained (lora = low-rank adapters only, "
        "full = all weights); compare the same method across the two tunings. " + METRICS_HELP,
    )


def _section_prevented(w: _Writer, summary: pd.DataFrame) -> None:
    done = summary[summary["status"] == "completed"]
    if not (done["method"] == "none").any() or done["method"].nunique() < 2:
        return
    parts = []
    for measure, col in (("accuracy", "general_acc_final"), ("ppl", "general_ppl_final")):
        if not done[col].notna().any():
            continue
        t = an.forgetting_prevented(summary, measure=measure)
        t = t[t["method"] != "none"].drop(columns=["stage"])
        scale = 100.0 if measure == "accuracy" else 1.0
        unit = "pp" if measure == "accuracy" else "nats/token"
        shown = t[[c for c in t.columns if c == "method" or c in an.SETTINGS]].copy()
        for c in shown.columns:
            shown[c] = [_fmt_value(c, v) for v in shown[c]]
        shown[f"drop ({unit})"] = [f"{v * scale:.2f}" for v in t["drop_mean"]]
        shown[f"baseline drop ({unit})"] = [f"{v * scale:.2f}" for v in t["baseline_drop_mean"]]
        shown["prevented"] = [
            _cell(m) if pd.isna(sd) else f"{m:.2f} ± {sd:.2f}"
            for m, sd in zip(t["prevented_mean"], t["prevented_std"], strict=True)
        ]
        shown["prevented (pooled)"] = [_cell(v) for v in t["prevented_pooled"]]
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


def _panel_for(summary: pd.DataFrame, varying: list[str]) -> tuple[str | None, pd.DataFrame]:
    """Which setting to draw as separate panels (so it is not averaged over), and the rows."""
    for col in ("lr_multiplier", "tuning"):
        if col in varying:
            keep = _spread(summary[col].unique())
            return col, summary[summary[col].isin(keep)]
    return None, summary


def _section_general(
    w: _Writer, general: pd.DataFrame, summary: pd.DataFrame, varying: list[str]
) -> None:
    panel, rows = _panel_for(summary, varying)
    rows, note = _reference_subset(rows, keep=(panel,) if panel else ())
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
        lambda: plots.plot_general_over_tasks(general, rows, panel=panel),
    )


def _section_heatmaps(
    w: _Writer,
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
    why = _flag_of(flagged)
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
        if _n_stages(rep) < int(rep["n_tasks"]):  # multitask: no sequence to draw
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
            lambda tid=tid: plots.plot_accuracy_heatmap(
                accuracy, tid, summary=reps if summary is None else summary
            ),
        )


def _slug(settings: dict) -> str:
    """A file-name part from a group's values (``tm_1`` for method tm at lr 1×)."""
    parts = [f"{v:g}" if isinstance(v, float | np.floating) else str(v) for v in settings.values()]
    return safe_name("_".join(parts) or "all")


def _section_mean_matrices(
    w: _Writer, accuracy: pd.DataFrame, summary: pd.DataFrame, group: list[str]
) -> None:
    """Seed-mean accuracy matrix per setting, and its difference to ``none``."""
    by = group or ["method"]
    rows, note = summary, ""
    if summary.groupby(by, dropna=False).ngroups > _MAX_MATRICES:
        rows, note = _reference_subset(summary, keep=())
        by = [c for c in by if rows[c].nunique(dropna=False) > 1] or ["method"]
    sequential = np.array([_n_stages(r) >= int(r.n_tasks) for r in rows.itertuples()], bool)
    one_stage = sorted(map(str, rows.loc[~sequential, "method"].unique()))
    rows = rows[sequential]
    table = an.mean_accuracy_matrix(accuracy, rows, by=by)
    w.add("## Accuracy matrices (mean over seeds)")
    if table.empty:
        w.add("No completed trial has accuracy records.")
        return
    compare = "method" in by and (rows["method"] == "none").any() and rows["method"].nunique() > 1
    diff = an.accuracy_matrix_difference(accuracy, rows, by=by) if compare else table.iloc[:0]
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
            lambda settings=settings, label=label: plots.plot_mean_accuracy_matrix(
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
            lambda settings=settings: plots.plot_accuracy_difference(accuracy, rows, settings),
        )


def _section_curves(w: _Writer, curve: pd.DataFrame, summary: pd.DataFrame, group: list[str]):
    """Training loss against the step, per method (and regime / replay weight)."""
    keep = tuple(c for c in group if c in ("regime", "replay_weight"))
    rows, note = _reference_subset(summary, keep=keep)
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
        lambda: plots.plot_training_curves(curve, rows, by=by),
    )


def _section_landscape(w: _Writer, land: pd.DataFrame, summary: pd.DataFrame, reps) -> None:
    kinds = set(land["slice_kind"].unique())
    w.add("## Loss landscape")
    base, note = _reference_subset(summary, keep=())
    if note:
        w.add(f"Trials at {note}.")
    if "interpolation" in kinds:
        barriers = an.interpolation_summary(land, summary=base)
        barriers = barriers[barriers["trial_id"].isin(base["trial_id"])]
        keys = ["method", "from_stage", "to_stage", "dataset"]
        over = "trials"
        if barriers.groupby(keys).ngroups > _MAX_ROWS:  # long streams: pool the transitions
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
                lambda tid=tid: plots.plot_interpolation(land, tid, summary=summary),
            )
        if "random_1d" in have:
            w.figure(
                f"random1d_{method}",
                f"random 1-D slices {method}",
                f"{plots.method_label(method)}: loss along filter-normalised random directions "
                "through the trained weights (α = 0); a wide flat curve is a flat minimum.",
                lambda tid=tid: plots.plot_interpolation(
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
                lambda tid=tid, first=first: plots.plot_landscape_2d(
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


def _section_plasticity(w: _Writer, plast: pd.DataFrame, summary: pd.DataFrame) -> None:
    w.add("## Plasticity diagnostics")
    summary, note = _reference_subset(summary, keep=())
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
                lambda metric=metric, tau=tau: plots.plot_plasticity(plast, summary, metric, tau),
            )


def _section_adaptation(w: _Writer, adaptation: pd.DataFrame) -> None:
    """studies/active_forgetting.py: the forgetful vs the standard base in a new language."""
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
    w.add(markdown_table(an.adaptation_table(adaptation)))
    w.figure(
        "adaptation",
        "new-language probe by budget",
        "new-language probe accuracy against the adaptation budget (log scale), one line per "
        "base and adaptation, mean ± std over seeds; dotted: chance.",
        lambda: plots.plot_adaptation(adaptation),
    )


def _section_baselines(w: _Writer, summary: pd.DataFrame, accuracy: pd.DataFrame | None) -> None:
    """studies/baselines.py: every row of a continual-learning table, read against multitask."""
    w.add("## Continual-learning baselines")
    try:
        table = an.baselines_table(summary, accuracy)
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
    w.figure(
        "baselines",
        "continual-learning baselines",
        "per method, the task AP (left; dashed: multitask, the upper bound) and the general-"
        "ability probe accuracy after the last task (right; dotted: the starting model), mean ± "
        "std over seeds (seeds in brackets).",
        lambda: plots.plot_baselines(summary),
    )


def _section_plasticity_study(w: _Writer, accuracy: pd.DataFrame, summary: pd.DataFrame) -> None:
    """studies/plasticity.py: is each new task learned as well as the first ones?"""
    w.add("## Loss of plasticity")
    jl = an.just_learned(accuracy, summary)
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
    w.add(markdown_table(an.plasticity_table(accuracy, summary, k)))
    w.figure(
        "plasticity_just_learned",
        "just-learned accuracy by task",
        "accuracy on each task right after training on it, against its position in the stream; "
        "one line per regime, mean ± std over seeds (dodged sideways).",
        lambda: plots.plot_just_learned(accuracy, summary),
    )


def default_report_dir(study_dir: Location) -> Location:
    """Where a study's report goes by default: ``<out>/_reports/<study>/`` for
    ``<out>/study=<study>`` — beside the dataset, not inside its hive partitions. The leading
    underscore matters: ``pyarrow.dataset`` (and so ``pandas.read_parquet``) skips paths
    starting with ``_`` or ``.``, so the report's Markdown and figures never break
    ``pyarrow.dataset.dataset(<out>, partitioning="hive")``. For an output root holding several
    studies: ``<root>/_reports/all/``; for one results file: ``<dir>/_reports/<file stem>/``.
    An object-store study (``s3://...``) gets the same layout in the same store.
    """
    study_dir = storage.location(study_dir)
    leaf, up = storage.name(study_dir), storage.parent(study_dir)
    if leaf.startswith("study="):
        return storage.join(up, "_reports", leaf.removeprefix("study="))
    if leaf.endswith(".parquet"):
        return storage.join(up, "_reports", leaf.removesuffix(".parquet"))
    return storage.join(study_dir, "_reports", "all")


def write_report(
    study_dir: Location,
    report_dir: Location | None = None,
    fmt: str = "png",
    dpi: int = plots.DEFAULT_DPI,
    *,
    skip_damaged: bool = False,
) -> Path:
    """Write ``<report_dir>/report.md`` and its figures for the study at ``study_dir``; return
    the path of ``report.md``.

    ``report_dir`` defaults to :func:`default_report_dir` (``<out>/_reports/<study>/``, outside
    the dataset). Figures are saved as ``fmt`` (``png``, ``pdf`` or ``svg``) at ``dpi``; a bad
    format or dpi raises ``ValueError`` before anything is read or written. Damaged results
    files raise ``DamagedResultsError`` naming all of them, before anything is written; with
    ``skip_damaged=True`` the report is built from the other files and lists the skipped ones.
    A study without summary records gets a report that says so.
    """
    plots.check_save_options(fmt, dpi)
    study_dir = storage.location(study_dir)
    data, skipped = _load(study_dir, skip_damaged=skip_damaged)
    return _write_report(study_dir, report_dir, data, skipped, fmt=fmt, dpi=dpi)


def build_report(
    study: str | Path,
    out: str | Path | None = None,
    *,
    skip_damaged: bool = False,
    fmt: str = "png",
    dpi: int = plots.DEFAULT_DPI,
) -> Path:
    """:func:`write_report` under its former name (``out`` = the report directory)."""
    return write_report(study, out, fmt, dpi, skip_damaged=skip_damaged)


def _load(
    study: Location, *, skip_damaged: bool
) -> tuple[dict[str, pd.DataFrame], dict[Location, str]]:
    """``read_study`` and the damaged files it skipped (read twice only when some are); the
    summary's list-valued settings (``tasks``) as strings (``analysis.hashable_settings``)."""
    try:
        data, skipped = read_study(study), {}
    except DamagedResultsError as e:
        if not skip_damaged:
            raise
        data, skipped = read_study(study, skip_damaged=True), e.problems
    return {**data, "summary": an.hashable_settings(data["summary"])}, skipped


def _write_report(
    study: Location,
    out: Location | None,
    data: dict[str, pd.DataFrame],
    skipped: dict[Location, str],
    *,
    fmt: str = "png",
    dpi: int = plots.DEFAULT_DPI,
) -> Location:
    """Write the report into ``out`` (default :func:`default_report_dir`); an object-store
    ``out`` gets it built in a local temp folder, then uploaded (report.md last)."""
    out = storage.location(out) if out is not None else default_report_dir(study)
    if isinstance(out, Path):
        return _write_report_into(study, out, data, skipped, fmt=fmt, dpi=dpi)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gere-report-") as tmp:
        local = _write_report_into(study, Path(tmp), data, skipped, fmt=fmt, dpi=dpi)
        markdown = local.read_bytes()
        local.unlink()
        storage.upload_dir(Path(tmp), out)  # the figures first: report.md links to them
        return storage.write(storage.join(out, local.name), lambda f: f.write(markdown))


def _write_report_into(
    study: Location,
    out: Path,
    data: dict[str, pd.DataFrame],
    skipped: dict[Location, str],
    *,
    fmt: str,
    dpi: int,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    summary = data["summary"]
    w = _Writer(out, fmt, dpi)

    names = sorted(summary["study"].unique()) if len(summary) else [storage.name(study)]
    if summary.empty and len(data.get("adaptation", [])):
        names = sorted(data["adaptation"]["study"].unique())
    w.add(
        f"# Study report: {', '.join(map(str, names))}",
        f"Source: `{study}` (results schema v{SCHEMA_VERSION}). Generated by "
        "`python -m results.report`; tables are computed by `results.analysis`, so they can be "
        "reproduced in a notebook from the same Parquet files. Metrics and units are defined "
        "once, in the [Glossary](#glossary) at the end.",
    )
    if skipped:
        _section_damaged(w, study, skipped)
    adaptation = data.get("adaptation")
    adapted = adaptation is not None and len(adaptation) > 0
    if adapted:  # studies/active_forgetting.py: adaptation runs, no CL trials
        _section_adaptation(w, adaptation)
    if summary.empty:
        if not adapted:
            w.add(
                "No summary records found: no trial has finished yet, so there is nothing to "
                "tabulate."
            )
    else:
        baseline_study = (
            "config_json" in summary
            and summary["config_json"].map(lambda c: bool(json.loads(c).get("cl"))).any()
        )
        if baseline_study:
            # Continual-learning baselines (harness/cl): each row is named by its method as a
            # CL table names it (ewc, olora (lora), multitask), in every table and figure.
            summary = summary.assign(method=an.baselines(summary))
            data = {**data, "summary": summary}
        if "config_json" in summary and an.regimes(summary).nunique() > 1:
            # Interventions / weight decay varied: a setting of its own in every table.
            summary = summary.assign(regime=an.regimes(summary))
            data = {**data, "summary": summary}
        flagged = incomplete_trials(data)
        varying = _section_setup(w, summary)
        group = _grouping(summary, varying)
        _section_trials(w, summary, group, flagged)
        _section_main(w, summary, group, data.get("general"), flagged)
        if baseline_study:
            _section_baselines(w, summary, data.get("accuracy"))
        if "lr_multiplier" in varying:
            _section_lr(w, summary)
        if "replay_size" in group:
            _section_replay_size(w, summary)
        if "method" in varying:
            _section_methods(w, summary)
        if "tuning" in varying:
            _section_lora(w, summary)
        _section_prevented(w, summary)

        base, _ = _reference_subset(summary, keep=())
        reps = _representatives(base, flagged)
        if len(data["general"]):
            _section_general(w, data["general"], summary, varying)
        if len(data["accuracy"]):
            _section_mean_matrices(w, data["accuracy"], summary, group)
            _section_heatmaps(w, data["accuracy"], reps, flagged, summary)
        curve = data.get("curve")
        if curve is not None and len(curve):
            _section_curves(w, curve, summary, group)
        land = data.get("landscape")
        if land is not None and len(land):
            _section_landscape(w, land, summary, reps)
        plast = data.get("plasticity")
        if "regime" in varying and len(data["accuracy"]):
            _section_plasticity_study(w, data["accuracy"], summary)
        if plast is not None and len(plast):
            by_regime = summary.assign(method=summary["regime"]) if "regime" in varying else summary
            _section_plasticity(w, plast, by_regime)

    w.add("## Glossary", *(f"- {g}" for g in GLOSSARY))
    path = out / "report.md"
    path.write_text("\n".join(w.lines).rstrip() + "\n", encoding="utf-8")
    return path


_LAYOUT = (
    "expected a study directory <out>/study=<name> holding <kind>/<trial_id>.parquet files "
    "(summary/, accuracy/, ...), or an output root <out> holding study=* directories"
)


def _positive_int(text: str) -> int:
    """argparse type of --dpi: a positive integer, else an error naming the value and the fix."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive integer; give the resolution in dots per inch, e.g. "
            f"--dpi {plots.DEFAULT_DPI} (screen) or --dpi 300 (print)"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the report and print its path.

    Exit status 2, with the reason on stderr and no report written, when the path does not
    exist, holds no summary (or adaptation) records, or holds damaged files (without ``--skip-damaged``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m results.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "study",
        type=storage.location,
        help="study directory (<out>/study=<name>), local or an object-store URI "
        "(s3://bucket/prefix/study=<name>, gs://...)",
    )
    parser.add_argument(
        "--report-dir",
        "--out",
        dest="report_dir",
        type=storage.location,
        default=None,
        help="where report.md and its figures go (default: <out>/_reports/<name> for "
        "<out>/study=<name>, outside the dataset; --out is the former name)",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        type=str.lower,
        choices=plots.FORMATS,
        default="png",
        help="figure file format (default: png; pdf or svg for a paper, fonts embedded)",
    )
    parser.add_argument(
        "--dpi",
        type=_positive_int,
        default=plots.DEFAULT_DPI,
        help=f"figure resolution in dots per inch (default: {plots.DEFAULT_DPI})",
    )
    parser.add_argument(
        "--skip-damaged",
        action="store_true",
        help="report from the readable files, listing (and logging) the damaged ones it skipped "
        "(default: stop, naming every damaged file)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def fail(message: str) -> int:
        print(f"python -m results.report: error: {message}", file=sys.stderr)
        return 2

    try:
        found = storage.exists(args.study)
    except OSError as e:  # an object store that cannot be reached, or refuses the credentials
        return fail(
            f"cannot read {args.study} ({_first_line(e)}); check the bucket name and the credentials "
            "(results/storage.py lists the variables each store reads)"
        )
    if not found:
        return fail(f"{args.study} does not exist; {_LAYOUT}")
    try:
        data, skipped = _load(args.study, skip_damaged=args.skip_damaged)
    except (DamagedResultsError, NewerResultsError) as e:
        return fail(str(e))
    except OSError as e:  # an object store failing mid-read (network, permissions)
        return fail(f"cannot read {args.study}: {_first_line(e)}")
    if data["summary"].empty and data["adaptation"].empty:
        others = sorted(k for k, df in data.items() if len(df))
        found = (
            f"records of {', '.join(others)} but no summary records"
            if others
            else "no results records"
        )
        if skipped:
            found += f" ({len(skipped)} damaged file(s) skipped)"
        return fail(f"{args.study} holds {found}, so there is nothing to report; {_LAYOUT}")
    try:
        path = _write_report(args.study, args.report_dir, data, skipped, fmt=args.fmt, dpi=args.dpi)
    except OSError as e:  # an unwritable --report-dir (a local folder or a bucket)
        where = args.report_dir or default_report_dir(args.study)
        return fail(f"cannot write the report to {where}: {_first_line(e)}")
    print(path)
    return 0


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
