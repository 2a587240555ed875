"""Recorded predictions re-scored under another protocol (:func:`rescore`), by the rules of
:mod:`harness.evaluate` (the one definition of each; importing this module imports torch,
unlike the rest of ``results``'s analysis)."""

from __future__ import annotations

import pandas as pd

from harness.evaluate import ANSWER_PREFIX, first_line, normalize_answer, sapt_answer
from results.analysis import require_columns

__all__ = ["rescore"]


def rescore(predictions: pd.DataFrame, scoring: str) -> pd.DataFrame:
    """Re-score recorded ``predictions`` under another protocol, without re-running anything,
    where the records allow it: generated answers (``generated`` not null) can be scored by
    ``exact_match`` (the Long-Sequence normalisation on both sides) or ``generate`` (the
    stripped first line, case-sensitive); log-likelihood rows by ``loglik`` (arg-max of the
    recorded log-likelihoods). Returns accuracy rows (stage, task, accuracy, n_correct,
    n_total, scoring) per trial, like the ``accuracy`` kind (tasks and the probe).
    ``generated`` follows a prompt that ends in "Output:", so SAPT's answer (after the last
    "Output:" of prompt + generation) is read from "Output:" + generated.
    """
    require_columns(
        predictions, ["trial_id", "stage", "task", "gold", "predicted", "generated"], "rescore"
    )
    generated = predictions["generated"].notna()
    if scoring in ("exact_match", "generate"):
        if not generated.all():
            raise ValueError(
                f"rescore: {int((~generated).sum())} prediction(s) were scored by log-likelihood "
                f"and hold no generated text; {scoring!r} needs generated answers (run the trial "
                "with eval.scoring=exact_match or generate)"
            )
        if scoring == "exact_match":
            ok = [
                normalize_answer(g) == normalize_answer(sapt_answer(ANSWER_PREFIX + p))
                for g, p in zip(predictions["gold"], predictions["generated"], strict=True)
            ]
        else:
            ok = [
                first_line(p) == g
                for g, p in zip(predictions["gold"], predictions["generated"], strict=True)
            ]
    elif scoring == "loglik":
        if generated.any():
            raise ValueError(
                "rescore: generated answers carry no candidate log-likelihoods; 'loglik' needs "
                "trials run with eval.scoring=loglik"
            )
        ok = (predictions["predicted"] == predictions["gold"]).tolist()
    else:
        raise ValueError(f"rescore: {scoring!r} is not 'loglik', 'exact_match' or 'generate'")
    keys = [k for k in ("study", "trial_id", "stage", "after_task", "task") if k in predictions]
    out = (
        predictions.assign(correct=ok)
        .groupby(keys, sort=False)["correct"]
        .agg(n_correct="sum", n_total="size")
        .reset_index()
    )
    out["accuracy"] = out["n_correct"] / out["n_total"]
    return out.assign(scoring=scoring)
