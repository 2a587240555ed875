"""The report's view of the trials: which did not complete or whose records are incomplete
(:func:`incomplete_trials`), which trials a section shows (:func:`reference_subset`, the
representative trial per method), the rows of the main tables (:func:`grouping`), and the
sections on them: what the study varied, Trials, and the damaged files skipped."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from results import analysis as an
from results.storage import Location
from results.writer import MAX_ROWS, Writer, fmt_value

__all__ = [
    "flag_of",
    "grouping",
    "incomplete_trials",
    "trained_stages",
    "reference_subset",
    "representatives",
    "section_damaged",
    "section_setup",
    "section_trials",
    "tied_to_method",
]


def reference_subset(summary: pd.DataFrame, keep: Sequence[str]) -> tuple[pd.DataFrame, str]:
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
        notes.append(f"{col} = {fmt_value(col, ref)}")
    return rows, ", ".join(notes)


def tied_to_method(summary: pd.DataFrame, col: str) -> bool:
    """True if every method ran at one value of ``col`` (e.g. replay size 0 for 'none')."""
    return "method" in summary and bool(summary.groupby("method")[col].nunique().max() <= 1)


def grouping(summary: pd.DataFrame, varying: list[str]) -> list[str]:
    """Rows of the main tables: every varying setting except the seed and settings that merely
    follow the method (one replay size or weight per method is not a separate axis)."""
    return [
        c
        for c in varying
        if c != "seed"
        and not (c in ("replay_size", "replay_weight") and tied_to_method(summary, c))
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


def trained_stages(r) -> int:
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
                gaps.append(_accuracy_gaps(rows, int(r.n_tasks), trained_stages(r)))
            if gen_stages is not None:
                have = gen_stages.get((r.study, r.trial_id), set())
                missing = sorted(set(range(trained_stages(r) + 1)) - have)
                if missing:
                    gaps.append(
                        f"general stages {_stages_text(missing)} of 0–{trained_stages(r)} missing"
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


def flag_of(flagged: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(study, trial_id) -> why the trial is flagged (:func:`incomplete_trials`)."""
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


def representatives(base: pd.DataFrame, flagged: pd.DataFrame) -> pd.DataFrame:
    """``an.representative_trials``, passing over completed trials with incomplete records
    while the method has a complete one."""
    partial = _partial(base, flagged)
    pool = base.assign(_status=base["status"])
    pool.loc[partial, "status"] = "incomplete"
    reps = an.representative_trials(pool)
    return reps.assign(status=reps["_status"]).drop(columns="_status")


def section_setup(w: Writer, summary: pd.DataFrame) -> list[str]:
    varying = an.varying_settings(summary)
    w.add("## What the study varied")
    lines = []
    for col in varying:
        vals = an.sort_groups(summary[[col]].drop_duplicates(), [col])[col]
        tied = col != "method" and tied_to_method(summary, col)
        lines.append(
            f"- **{col}**: "
            + ", ".join(fmt_value(col, v) for v in vals)
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
            + "; ".join(f"{c} = {fmt_value(c, summary[c].iloc[0])}" for c in fixed)
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


def section_trials(
    w: Writer, summary: pd.DataFrame, group: list[str], flagged: pd.DataFrame
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
        if len(counts) > MAX_ROWS:  # long grids: only the settings where something went wrong
            counts = counts[counts["n_completed"] < counts["n_total"]]
            how += " Settings where every trial completed are not listed."
        for col in group:
            counts[col] = [fmt_value(col, v) for v in counts[col]]
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


def section_damaged(w: Writer, study: Location, skipped: dict[Location, str]) -> None:
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
