"""Continual-learning metrics on the accuracy matrix: pure numpy, every variant under its own name.

Convention (used by every function here)
-----------------------------------------
``A`` is a float array of shape ``[T+1, T]`` for a stream of ``T`` tasks:

* row 0 holds the starting model's score on every task, ``b[j] = A[0, j-1]``;
* row ``i`` (1..T) holds the scores after training through task ``i``, ``a[i][j] = A[i, j-1]``;
* column ``j-1`` is task ``j`` in sequence order (tasks are 1-based in every formula below).

NaN marks a score that was not evaluated. Every metric uses exactly the entries its formula
names and returns NaN if any of them is NaN: averaging silently over fewer tasks would make two
trials' numbers incomparable. Entries a formula does not name (for example the upper triangle
for BWT) may be NaN freely. Quantities that need at least two tasks (BWT, FWT, forgetting)
return NaN for ``T == 1`` instead of raising, so a one-task smoke run still yields a summary row.

Sources disagree on normalisation and index ranges (Lopez-Paz & Ranzato 2017, "Gradient Episodic
Memory"; Chaudhry et al. 2018, "Riemannian Walk"; the O-LoRA/SAPT papers' AP), so each variant
is a separate function and a separate column; none of them is "the" forgetting. SAPT's scorer
(circle-hit/SAPT ``score.py``) reports ``bwt_gem_code`` (its BWT divides by T) and
:func:`fwt_sapt` (against every task trained alone), not ``bwt`` and GEM's zero-shot ``fwt``.
Sign convention: transfer metrics (BWT, FWT) are positive when the later score is higher;
forgetting metrics are positive when the model lost accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "all_metrics",
    "average_incremental_accuracy",
    "average_performance",
    "bwt",
    "bwt_gem_code",
    "forgetting",
    "forgetting_diag",
    "forgetting_incl_last",
    "fwt",
    "fwt_sapt",
    "just_learned",
    "matrix_from_long",
]


def _as_matrix(A: np.ndarray) -> tuple[np.ndarray, int]:
    """Return ``A`` as float64 and ``T``; reject shapes that are not ``[T+1, T]``.

    Checked here because a transposed or row-0-less matrix would otherwise produce plausible
    but wrong numbers rather than an error.
    """
    M = np.asarray(A, dtype=np.float64)
    if M.ndim != 2 or M.shape[1] < 1 or M.shape[0] != M.shape[1] + 1:
        raise ValueError(
            f"accuracy matrix must have shape [T+1, T] with T >= 1 (row 0 = starting model, "
            f"row i = after task i); got shape {M.shape}. Build it with matrix_from_long()."
        )
    return M, M.shape[1]


def _a(M: np.ndarray, i: int, j: int) -> float:
    """a[i][j] with 1-based task ``j`` (row ``i`` is already 0 = start, 1..T = after task i)."""
    return float(M[i, j - 1])


def average_performance(A: np.ndarray) -> float:
    """AP / ACC (GEM, Lopez-Paz & Ranzato 2017): mean final score over all tasks.

    ``AP = 1/T * sum_{j=1..T} a[T][j]``. Defined for ``T >= 1``.
    """
    M, T = _as_matrix(A)
    return float(np.mean(M[T, :]))


def average_incremental_accuracy(A: np.ndarray) -> float:
    """AIA (Rebuffi et al. 2017, iCaRL): mean over stages of the mean score on tasks seen so far.

    ``AIA = 1/T * sum_{k=1..T} ( 1/k * sum_{j=1..k} a[k][j] )``. Uses the lower triangle
    including the diagonal; row 0 is not a stage. Defined for ``T >= 1``.
    """
    M, T = _as_matrix(A)
    per_stage = [np.mean(M[k, :k]) for k in range(1, T + 1)]
    return float(np.mean(per_stage))


def bwt(A: np.ndarray) -> float:
    """BWT as in the GEM paper: mean change on earlier tasks from just-learned to final.

    ``BWT = 1/(T-1) * sum_{j=1..T-1} (a[T][j] - a[j][j])``. Negative = forgetting.
    NaN for ``T == 1`` (no earlier task exists).
    """
    M, T = _as_matrix(A)
    if T < 2:
        return float("nan")
    diffs = [_a(M, T, j) - _a(M, j, j) for j in range(1, T)]
    return float(np.sum(diffs) / (T - 1))


def bwt_gem_code(A: np.ndarray) -> float:
    """BWT as GEM's released code computes it: same sum as ``bwt`` divided by T, not T-1.

    ``BWT_code = 1/T * sum_{j=1..T-1} (a[T][j] - a[j][j])`` (the code averages over all T tasks,
    the last one contributing a[T][T] - a[T][T] = 0), so ``BWT_code = (T-1)/T * BWT``.
    NaN for ``T == 1``: the code would print 0, but with no earlier task there is nothing to
    transfer to and NaN keeps the T=1 row consistent with ``bwt``.
    """
    M, T = _as_matrix(A)
    if T < 2:
        return float("nan")
    diffs = [_a(M, T, j) - _a(M, j, j) for j in range(1, T)]
    return float(np.sum(diffs) / T)


def fwt(A: np.ndarray) -> float:
    """FWT as in the GEM paper (zero-shot): score on a task just before training on it, minus
    the starting model's score on it.

    ``FWT = 1/(T-1) * sum_{j=2..T} (a[j-1][j] - b[j])``. Needs the upper off-diagonal
    ``a[j-1][j]`` (tasks evaluated before they are trained); NaN if those were not evaluated,
    and NaN for ``T == 1``. (GEM's released code divides this sum by T as well; not computed.)
    """
    M, T = _as_matrix(A)
    if T < 2:
        return float("nan")
    diffs = [_a(M, j - 1, j) - _a(M, 0, j) for j in range(2, T + 1)]
    return float(np.sum(diffs) / (T - 1))


def just_learned(A: np.ndarray) -> float:
    """Mean accuracy on each task right after training it: ``1/T * sum_k a[k][k]``."""
    M, T = _as_matrix(A)
    return float(np.mean([_a(M, k, k) for k in range(1, T + 1)]))


def fwt_sapt(A: np.ndarray, A_single: np.ndarray) -> float:
    """FWT as SAPT computes it (circle-hit/SAPT ``score.py``): the continual learner's mean
    just-learned accuracy minus that of every task fine-tuned alone from the starting model
    (the ``single_task`` trial's diagonal): ``1/T sum_k a[k][k] - 1/T sum_k s[k][k]``. Positive:
    earlier tasks helped learn later ones. Not GEM's zero-shot :func:`fwt`."""
    return just_learned(A) - just_learned(A_single)


def forgetting(A: np.ndarray) -> float:
    """Forgetting (Chaudhry et al. 2018, RWalk), maximum taken only after the task was learned.

    ``F = 1/(T-1) * sum_{j=1..T-1} ( max_{l=j..T-1} a[l][j] - a[T][j] )``.
    Chaudhry writes the max over ``l in 1..T-1``; we start at ``l = j`` because rows before
    task j was trained hold zero-shot scores, which measure transfer, not knowledge that could
    be forgotten (for an LLM the zero-shot score can exceed the trained one). The final row is
    excluded (that is ``forgetting_incl_last``). Positive = lost accuracy. NaN for ``T == 1``.
    """
    M, T = _as_matrix(A)
    if T < 2:
        return float("nan")
    terms = [np.max(M[j:T, j - 1]) - _a(M, T, j) for j in range(1, T)]
    return float(np.mean(terms))


def forgetting_incl_last(A: np.ndarray) -> float:
    """Forgetting with the max over rows including the final one (as some codes compute it).

    ``F_incl = 1/(T-1) * sum_{j=1..T-1} ( max_{l=j..T} a[l][j] - a[T][j] )``. Same tasks
    (j < T) and denominator as ``forgetting`` so the two differ only in the max's range;
    consequently every term is >= 0 and ``F_incl >= forgetting``. NaN for ``T == 1``.
    """
    M, T = _as_matrix(A)
    if T < 2:
        return float("nan")
    terms = [np.max(M[j : T + 1, j - 1]) - _a(M, T, j) for j in range(1, T)]
    return float(np.mean(terms))


def forgetting_diag(A: np.ndarray) -> float:
    """Forgetting measured from the just-learned score, without a max.

    ``F_diag = 1/(T-1) * sum_{j=1..T-1} (a[j][j] - a[T][j])``, which equals ``-bwt(A)``;
    kept under its own name because papers report it as "forgetting". NaN for ``T == 1``.
    """
    M, T = _as_matrix(A)
    if T < 2:
        return float("nan")
    terms = [_a(M, j, j) - _a(M, T, j) for j in range(1, T)]
    return float(np.mean(terms))


METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "ap": average_performance,
    "aia": average_incremental_accuracy,
    "bwt": bwt,
    "bwt_gem_code": bwt_gem_code,
    "fwt": fwt,
    "forgetting": forgetting,
    "forgetting_incl_last": forgetting_incl_last,
    "forgetting_diag": forgetting_diag,
}
"""Every named metric; the results schema has one summary column per key, in this order."""


def all_metrics(A: np.ndarray) -> dict[str, float]:
    """Every metric in ``METRICS`` on one matrix, keyed by name (the summary row's columns)."""
    _as_matrix(A)  # fail once, with the shape message, rather than inside the first metric
    return {name: fn(A) for name, fn in METRICS.items()}


def matrix_from_long(
    df: pd.DataFrame, *, value: str = "accuracy", allow_missing_stages: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Pivot one trial's long-form accuracy records into ``A`` ([T+1, T]) and the task names.

    ``df`` needs columns ``stage`` (0..T), ``task``, ``task_position`` (1..T) and ``value`` —
    the "accuracy" record kind of ``results.schema``. ``T`` is the largest task position; every
    position 1..T must appear (with one task name each) and every stage 0..T must appear, since
    a missing stage or task means a truncated or mixed-up record, not an unevaluated cell.
    Within a present stage, an absent (stage, task) pair becomes NaN (not evaluated).

    ``allow_missing_stages=True`` turns absent stages into NaN rows instead of an error — for
    trials that diverged or failed before the last task, whose metrics then come out NaN where
    they need the missing rows.
    """
    need = ["stage", "task", "task_position", value]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise ValueError(f"matrix_from_long: missing column(s) {absent}; have {list(df.columns)}")
    if "trial_id" in df.columns and df["trial_id"].nunique() > 1:
        raise ValueError(
            "matrix_from_long: rows from several trials "
            f"({sorted(df['trial_id'].unique())[:5]}...); filter to one trial_id first"
        )
    if df.empty:
        raise ValueError("matrix_from_long: no rows")
    if df[["stage", "task_position"]].isna().any().any():
        raise ValueError("matrix_from_long: stage/task_position contain missing values")

    positions = df["task_position"].astype("int64")
    stages = df["stage"].astype("int64")
    T = int(positions.max())
    if positions.min() < 1:
        raise ValueError(f"matrix_from_long: task_position must be >= 1, got {positions.min()}")

    names: list[str] = []
    missing_tasks = []
    for p in range(1, T + 1):
        at_p = df.loc[positions == p, "task"].unique()
        if len(at_p) == 0:
            missing_tasks.append(p)
        elif len(at_p) > 1:
            raise ValueError(f"matrix_from_long: task_position {p} has several tasks {list(at_p)}")
        else:
            names.append(str(at_p[0]))
    if missing_tasks:
        raise ValueError(
            f"matrix_from_long: no rows for task position(s) {missing_tasks} of 1..{T}; "
            "every task must be evaluated at least once"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"matrix_from_long: a task name appears at two positions: {names}")

    bad_stages = sorted(set(stages) - set(range(T + 1)))
    if bad_stages:
        raise ValueError(f"matrix_from_long: stage(s) {bad_stages} outside 0..{T} (T={T} tasks)")
    missing_stages = sorted(set(range(T + 1)) - set(stages))
    if missing_stages and not allow_missing_stages:
        raise ValueError(
            f"matrix_from_long: no rows for stage(s) {missing_stages} of 0..{T} "
            "(0 = starting model, i = after task i); pass allow_missing_stages=True for a "
            "trial that stopped early"
        )

    dup = pd.DataFrame({"s": stages, "p": positions}).duplicated()
    if dup.any():
        first = df.loc[dup.to_numpy()].iloc[0]
        raise ValueError(
            f"matrix_from_long: duplicate rows for stage {first['stage']}, task "
            f"{first['task']!r}; filter to one trial (and one scoring mode) first"
        )

    A = np.full((T + 1, T), np.nan)
    A[stages.to_numpy(), positions.to_numpy() - 1] = df[value].astype("float64").to_numpy()
    return A, names
