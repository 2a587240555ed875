"""Accuracy matrices: one trial's, the seed mean of a group's, and a group's difference to the
baseline method's (seed-matched where the two share seeds). Conventions as in
:mod:`results.analysis`: completed trials only, NaN not skipped, sample std (ddof=1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.metrics import matrix_from_long
from results.analysis import join_keys, require_columns, sort_groups, with_settings

__all__ = ["accuracy_matrix", "accuracy_matrix_difference", "mean_accuracy_matrix"]


def accuracy_matrix(
    accuracy: pd.DataFrame, trial_id: str, *, value: str = "accuracy", scoring: str | None = None
) -> pd.DataFrame:
    """One trial's accuracy matrix as a DataFrame: rows = stage 0..T (0 = starting model, i =
    after training task i), columns = task names in sequence (position) order.

    Built by ``harness.metrics.matrix_from_long`` (the same pivot the summary metrics use), with
    stages a trial never reached (diverged/failed) as NaN rows. ``scoring`` selects one scoring
    mode when a trial recorded several.
    """
    require_columns(accuracy, ["trial_id"], "accuracy_matrix")
    rows = accuracy[accuracy["trial_id"] == trial_id]
    if scoring is not None:
        rows = rows[rows["scoring"] == scoring]
    if rows.empty:
        raise ValueError(f"accuracy_matrix: no accuracy rows for trial {trial_id!r}")
    A, names = matrix_from_long(rows, value=value, allow_missing_stages=True)
    return pd.DataFrame(
        A,
        index=pd.RangeIndex(A.shape[0], name="stage"),
        columns=pd.Index(names, name="task"),
    )


def _accuracy_cells(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    by: Sequence[str],
    value: str,
    scoring: str | None,
    where: str,
) -> pd.DataFrame:
    """One row per (completed trial, stage, task position) with the trial's ``by`` settings
    and seed joined on; several rows for one cell (two scoring modes) are refused."""
    require_columns(
        accuracy, ["trial_id", "stage", "task_position", "task", value], f"{where}(accuracy)"
    )
    require_columns(summary, ["trial_id", "status", *by], f"{where}(summary)")
    rows = accuracy
    if scoring is not None:
        require_columns(accuracy, ["scoring"], f"{where}(accuracy)")
        rows = accuracy[accuracy["scoring"] == scoring]
    keys = join_keys(rows, summary)
    dup = rows.duplicated([*keys, "stage", "task_position"], keep=False)
    if dup.any():
        first = rows[dup].iloc[0]
        modes = sorted(rows.loc[dup, "scoring"].unique()) if "scoring" in rows else []
        raise ValueError(
            f"{where}: trial {first['trial_id']!r} has several rows for stage "
            f"{int(first['stage'])}, task {first['task']!r} (scoring modes {modes}); pass "
            "scoring= one of them"
        )
    done = summary[summary["status"] == "completed"]
    extra = ["seed"] if "seed" in summary and "seed" not in by else []
    return with_settings(rows, done, columns=[*by, *extra], how="inner")


def _first_task(cells: pd.DataFrame, keys: list[str], where: str) -> pd.Series:
    """The task name of each (group, position); a group mixing task sequences is refused."""
    names = cells.groupby(keys, dropna=False, sort=False)["task"].agg(["first", "nunique"])
    mixed = names[names["nunique"] > 1]
    if len(mixed):
        key = mixed.index[0]
        tasks = sorted(cells.set_index(keys).loc[[key], "task"].unique())
        raise ValueError(
            f"{where}: the trials of group {key} evaluated different tasks {tasks} at one task "
            "position (different task sequences); add 'tasks' to by= so that each matrix "
            "averages one sequence"
        )
    return names["first"]


def mean_accuracy_matrix(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    value: str = "accuracy",
    scoring: str | None = None,
) -> pd.DataFrame:
    """The accuracy matrix averaged over the completed trials (seeds) of each ``by`` group.

    Long form, one row per (group, cell): ``[*by, stage, task_position, task, mean, std, n]``
    where ``stage`` is the row of the matrix (0 = starting model, i = after training task i),
    ``task_position`` its column (1-based), ``mean``/``std`` the mean and sample std (ddof=1)
    over the trials that have the cell and ``n`` how many they are (a cell a trial lacks, e.g.
    an incomplete record, lowers ``n`` for that cell only). A NaN accuracy in any trial makes the
    cell's mean NaN, as everywhere in this module. Only completed trials enter; ``scoring``
    picks one scoring mode when trials recorded several. ``pivot(index="stage",
    columns="task_position", values="mean")`` gives one group's matrix.
    """
    by = list(by)
    cells = _accuracy_cells(accuracy, summary, by, value, scoring, "mean_accuracy_matrix")
    keys = [*by, "stage", "task_position"]
    cols = [*keys, "task", "mean", "std", "n"]
    if cells.empty:
        return pd.DataFrame(columns=cols)
    g = cells.groupby(keys, dropna=False, sort=False)[value]
    out = g.agg(
        mean=lambda s: s.mean(skipna=False),
        std=lambda s: s.std(ddof=1, skipna=False),
        n="size",
    )
    out["task"] = _first_task(cells, keys, "mean_accuracy_matrix")
    out = out.reset_index()[cols]
    return sort_groups(out, keys).reset_index(drop=True)


_NOT_MATCHED = ("method", "replay_size", "replay_weight")
"""Settings a method's matrix is not matched on when it is compared with the baseline's (the
baseline has no replay of its own); every other ``by`` setting must be equal."""


def accuracy_matrix_difference(
    accuracy: pd.DataFrame,
    summary: pd.DataFrame,
    *,
    by: Sequence[str] = ("method",),
    baseline: str = "none",
    value: str = "accuracy",
    scoring: str | None = None,
) -> pd.DataFrame:
    """Each group's accuracy matrix minus the ``baseline`` method's (method − none, cell by cell).

    ``by`` must contain ``method``; the baseline's trials are those of method ``baseline`` with
    the same values of the other ``by`` settings (replay_size and replay_weight excepted: the
    baseline has no replay). Only completed trials enter. Per group:

    * **seed-matched** (``matched="seed"``) when some seeds have completed trials in both: the
      difference of the two trials of each shared seed (the mean of the baseline's trials of
      that seed if several), then the mean and sample std of those differences per cell; other
      seeds are left out, and ``n`` = ``n_baseline`` = seeds paired in the cell;
    * **mean − mean** (``matched="mean"``) when no seed is shared: the group's mean matrix
      minus the baseline's; ``std`` is NaN, ``n`` and ``n_baseline`` count each side's trials.

    Long form: ``[*by, stage, task_position, task, difference, std, n, n_baseline, matched]``;
    > 0 means the method scores higher than the baseline. Groups of the baseline itself, and
    groups with no baseline trial at their settings, have no rows.
    """
    by = list(by)
    where = "accuracy_matrix_difference"
    if "method" not in by:
        raise ValueError(
            f"{where}: by={by} has no 'method'; the difference is method − {baseline}, so "
            "by= must name the method"
        )
    cells = _accuracy_cells(accuracy, summary, by, value, scoring, where)
    if "seed" not in cells:
        cells = cells.assign(seed=pd.NA)
    context = [c for c in by if c not in _NOT_MATCHED]
    cell = ["stage", "task_position", "task"]
    cols = [*by, *cell, "difference", "std", "n", "n_baseline", "matched"]
    base = cells[cells["method"] == baseline]
    if base.empty:
        have = sorted(map(str, cells["method"].unique()))
        raise ValueError(
            f"{where}: no completed trial of baseline method {baseline!r} has accuracy records; "
            f"methods with some: {have}; pass baseline= one of them"
        )
    base_by_ctx = dict(tuple(base.groupby(context, dropna=False, sort=False))) if context else None
    parts = []
    for key, grp in cells[cells["method"] != baseline].groupby(by, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        settings = dict(zip(by, key, strict=True))
        if base_by_ctx is None:
            b = base
        else:
            b = base_by_ctx.get(tuple(settings[c] for c in context))
            if b is None:
                continue
        shared = set(grp["seed"].dropna()) & set(b["seed"].dropna())
        if shared:
            mine = grp[grp["seed"].isin(shared)]
            theirs = b[b["seed"].isin(shared)].groupby(["seed", *cell], as_index=False)[value]
            theirs = theirs.mean().rename(columns={value: "_b"})
            pairs = mine.merge(theirs, on=["seed", *cell], how="inner")
            pairs["_d"] = pairs[value] - pairs["_b"]
            d = pairs.groupby(cell, sort=False)["_d"].agg(
                difference=lambda s: s.mean(skipna=False),
                std=lambda s: s.std(ddof=1, skipna=False),
                n="size",
            )
            d = d.reset_index().assign(n_baseline=lambda f: f["n"], matched="seed")
        else:

            def stats(rows: pd.DataFrame) -> pd.DataFrame:
                return rows.groupby(cell, sort=False)[value].agg(
                    mean=lambda s: s.mean(skipna=False), n="size"
                )

            m, bb = stats(grp), stats(b)
            d = m.join(bb, how="inner", rsuffix="_baseline")
            d = pd.DataFrame(
                {
                    "difference": d["mean"] - d["mean_baseline"],
                    "std": np.nan,
                    "n": d["n"],
                    "n_baseline": d["n_baseline"],
                    "matched": "mean",
                }
            ).reset_index()
        parts.append(d.assign(**settings))
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)[cols]
    return sort_groups(out, [*by, "stage", "task_position"]).reset_index(drop=True)
