"""The 'lm_eval' probe format agrees with lm-evaluation-harness itself.

A tiny model is saved to disk; MMLU-format CSV files are built here; lm-evaluation-harness
(a dev dependency) scores them through a local task config that is its own ``mmlu/default``
template (subject header, "<question>\\nA. ...\\nAnswer:", choices " A".." D", k-shot from
the dev split, first_n) pointed at the CSVs. Its per-question choice log-likelihoods must
equal the harness's to 1e-4. lm-eval's HFLM is run with ``add_bos_token=True``: the harness
always scores after BOS.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from harness.config import from_dict
from harness.data import load_mc
from harness.evaluate import candidate_logliks
from harness.inputs import TrialData, probe_requests
from tests.fixtures import tiny_built

lm_eval = pytest.importorskip(
    "lm_eval", reason="lm-eval is a dev dependency (pip install -e .[dev])"
)

SUBJECTS = ("anatomy", "high_school_physics")

TASK = """task: local_mmlu_{subject}
dataset_path: csv
dataset_kwargs:
  data_files:
    test: {root}/mmlu/test/{subject}_test.csv
    dev: {root}/mmlu/dev/{subject}_dev.csv
  column_names: [question, A, B, C, D, answer]
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {spaced}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{A}}}}\\nB. {{{{B}}}}\\nC. {{{{C}}}}\\nD. {{{{D}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A', 'B', 'C', 'D'].index(answer)}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _write_mmlu(root: Path) -> None:
    rng = random.Random(0)
    words = ["river", "stone", "ion", "cell", "mass", "wave", "bone", "heart", "force", "light"]
    for subject in SUBJECTS:
        for split, n in (("test", 5), ("dev", 3)):
            d = root / "mmlu" / split
            d.mkdir(parents=True, exist_ok=True)
            with (d / f"{subject}_{split}.csv").open("w", newline="") as f:
                w = csv.writer(f)
                for _ in range(n):
                    q = " ".join(rng.choices(words, k=6)) + "?"
                    choices = [" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(4)]
                    w.writerow([q, *choices, rng.choice("ABCD")])


@pytest.mark.parametrize("shots", [0, 2])
def test_lm_eval_probe_format_matches_lm_evaluation_harness(tmp_path, shots):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    built = tiny_built()
    model_dir = tmp_path / "model"
    built.model.save_pretrained(model_dir)
    built.tokenizer.save_pretrained(model_dir)
    root = tmp_path / "data"
    _write_mmlu(root)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for s in SUBJECTS:
        text = TASK.format(subject=s, root=root, spaced=s.replace("_", " "))
        (tasks / f"{s}.yaml").write_text(text)

    lm = HFLM(pretrained=str(model_dir), batch_size=4, device="cpu", add_bos_token=True)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[f"local_mmlu_{s}" for s in SUBJECTS],
        num_fewshot=shots,
        log_samples=True,
        task_manager=TaskManager(include_path=str(tasks)),
    )
    theirs = {
        (s, sample["doc_id"]): [r[0][0] for r in sample["resps"]]
        for s in SUBJECTS
        for sample in out["samples"][f"local_mmlu_{s}"]
    }

    cfg = from_dict(
        {
            "data": {"root": str(root), "tasks": "unused"},
            "replay": {"method": "none"},
            "eval": {"probe": "mmlu", "probe_format": "lm_eval", "probe_shots": shots},
        }
    )
    probe = load_mc("mmlu", root)
    dev: dict = {}
    for q in load_mc("mmlu", root, split="dev"):
        dev.setdefault(q.subject, []).append(q)
    data = TrialData(root, [], (), probe, dev, [], [])
    requests, _ = probe_requests(cfg, data, built.tokenizer, None)
    ours = candidate_logliks(
        built.model, requests, pad_id=built.tokenizer.pad_token_id, batch_size=4
    )
    index = {s: 0 for s in SUBJECTS}
    assert len(ours) == len(theirs) == 10
    for q, ll in zip(probe, ours, strict=True):
        want = theirs[(q.subject, index[q.subject])]
        index[q.subject] += 1
        assert ll == pytest.approx(want, abs=1e-4), q.question
