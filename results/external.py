"""The harness's records joined with other tools' per-sample logs, by the item they scored.

Every ``predictions`` row names its source item (``item``: ``<subject>/<row>`` for an
MMLU-style probe, ``<task>/<index>`` for a task), so the same question scored elsewhere can be
put beside it. lm-evaluation-harness logs one record per document with ``--log_samples``
(``samples_<task>_*.jsonl``, or ``simple_evaluate(..., log_samples=True)["samples"]``): its
``doc_id`` is the row of the document in the task's test split and its ``doc`` holds the
subject, so ``<subject>/<doc_id>`` is the harness's item.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from harness.data.mmlu import LETTERS


def lm_eval_samples(
    source: str | Path | Iterable[Mapping[str, Any]], task: str = ""
) -> pd.DataFrame:
    """lm-eval's per-sample records (a ``samples_*.jsonl`` file or the records themselves) of
    a multiple-choice task as a DataFrame: ``item`` (``<subject>/<doc_id>``), ``lm_eval_logliks``
    (each choice's log-likelihood), ``lm_eval_predicted`` (the arg-max choice's letter) and
    ``lm_eval_task``. The subject is the doc's ``subject`` field, else ``task`` with a leading
    ``mmlu_`` removed."""
    if isinstance(source, str | Path):
        with Path(source).open(encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    else:
        records = list(source)
    rows = []
    for r in records:
        doc = r.get("doc") or {}
        subject = doc.get("subject") or task.removeprefix("mmlu_")
        if not subject:
            raise ValueError(
                f"lm-eval record doc_id {r.get('doc_id')}: no subject in its doc; pass task="
            )
        if r.get("filtered_resps"):  # per choice: (log-likelihood, is greedy)
            lls = [float(x[0]) for x in r["filtered_resps"]]
        else:  # per choice: [(log-likelihood, is greedy)]
            lls = [float(x[0][0]) for x in r["resps"]]
        best = max(range(len(lls)), key=lls.__getitem__)
        rows.append(
            {
                "item": f"{subject}/{r['doc_id']}",
                "lm_eval_task": task or r.get("task_name"),
                "lm_eval_logliks": lls,
                "lm_eval_predicted": LETTERS[best],
            }
        )
    return pd.DataFrame(rows)


def join_lm_eval(predictions: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """The probe rows of ``predictions`` (one stage or many) beside lm-eval's records of the
    same items (:func:`lm_eval_samples`), with ``max_abs_diff``: the largest difference of a
    choice's log-likelihood between the two, and ``same_answer``. Items lm-eval did not score
    are left out."""
    probe = predictions[predictions["task"].str.startswith("probe:")]
    joined = probe.merge(samples, on="item", how="inner")
    joined["max_abs_diff"] = [
        max(abs(a - b) for a, b in zip(x, y, strict=True)) if x is not None else float("nan")
        for x, y in zip(joined["logliks"], joined["lm_eval_logliks"], strict=True)
    ]
    joined["same_answer"] = joined["predicted"] == joined["lm_eval_predicted"]
    return joined
