"""lm-evaluation-harness, run with its defaults, agrees with the harness: the 'lm_eval' probe
format, lm-eval tasks scored inside a trial (eval.lm_eval_tasks) on 2 ZeRO-3 ranks, and the
model a trial saves (train.save_models).

The probe format:
A tiny model is saved to disk; MMLU-format CSV files are built here; lm-evaluation-harness
(a dev dependency) scores them through a local task config that is its own ``mmlu/default``
template (subject header, "<question>\\nA. ...\\nAnswer:", choices " A".." D", k-shot from
the dev split, first_n) pointed at the CSVs. Its per-question choice log-likelihoods must
equal the harness's to 1e-4. lm-eval's HFLM is run with ``add_bos_token=True``: the harness
always scores after BOS.
"""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest

from harness.config import from_dict
from harness.data import load_mc
from harness.evaluate import candidate_logliks
from harness.inputs import TrialData, probe_requests
from tests.fixtures import LM_EVAL_TASKS, tiny_built, write_lm_eval_tasks

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
    mine = {}
    for q, ll in zip(probe, ours, strict=True):
        want = theirs[(q.subject, index[q.subject])]
        mine[(f"local_mmlu_{q.subject}", index[q.subject])] = ll
        index[q.subject] += 1
        assert ll == pytest.approx(want, abs=1e-4), q.question

    # MMLU either way: the same task YAMLs as eval.lm_eval_tasks (lm-eval's prompts through the
    # harness's adapter; the tiny tokenizer puts BOS first by default) give the same numbers.
    from harness import lm_eval_tasks as L
    from harness.evaluate import candidate_scores

    names = [f"local_mmlu_{s}" for s in SUBJECTS]
    acfg = from_dict(
        {
            "eval": {
                "lm_eval_tasks": names,
                "lm_eval_include_path": str(tasks),
                "lm_eval_num_fewshot": shots,
            }
        }
    )
    tok = built.tokenizer
    lm = L.harness_lm(
        tok,
        lambda r: candidate_scores(built.model, r, pad_id=tok.pad_token_id, batch_size=4),
        L.max_length(built.model, tok),
    )
    adapted = _per_sample(L.evaluate(acfg, lm, L.task_manager(acfg)))
    assert adapted.keys() == mine.keys()
    for key, ll in mine.items():
        assert adapted[key] == pytest.approx(ll, abs=1e-4), key


def _simple_evaluate(model_dir, include, tasks=LM_EVAL_TASKS, **kwargs):
    """lm-eval on a saved model with its defaults (HFLM as ``lm_eval --model hf`` builds it)."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), device="cpu", **kwargs)
    return lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=TaskManager(include_path=str(include))
    )


def _per_sample(out) -> dict:
    """{(task, doc_id): [log-likelihood of each request]} of a simple_evaluate result."""
    return {
        (task, s["doc_id"]): [
            float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in s["resps"]
        ]
        for task, samples in out["samples"].items()
        for s in samples
    }


def test_lm_eval_tasks_through_the_harness_scorer_equal_lm_eval_itself(tmp_path):
    """Multiple choice (acc, acc_norm), one-continuation log-likelihood (perplexity, acc as
    the greedy flag) and rolling log-likelihood (word/byte perplexity, bits per byte): every
    document's log-likelihoods and every metric equal lm-eval's own HFLM on the same model."""
    from harness import lm_eval_tasks as L
    from harness.evaluate import candidate_scores

    include = write_lm_eval_tasks(tmp_path)
    built = tiny_built()
    model_dir = tmp_path / "model"
    built.model.save_pretrained(model_dir)
    built.tokenizer.save_pretrained(model_dir)
    theirs = _simple_evaluate(model_dir, include, batch_size=4)

    cfg = from_dict(
        {"eval": {"lm_eval_tasks": list(LM_EVAL_TASKS), "lm_eval_include_path": str(include)}}
    )
    manager = L.task_manager(cfg)
    assert L.check_tasks(cfg, manager) == list(LM_EVAL_TASKS)
    calls = []

    def score(requests):
        calls.append(len(requests))
        return candidate_scores(
            built.model, requests, pad_id=built.tokenizer.pad_token_id, batch_size=4
        )

    lm = L.harness_lm(built.tokenizer, score, L.max_length(built.model, built.tokenizer))
    ours = L.evaluate(cfg, lm, manager)
    a, b = _per_sample(theirs), _per_sample(ours)
    assert a.keys() == b.keys() and len(a) == 3 * 6
    for key in a:
        assert b[key] == pytest.approx(a[key], abs=1e-4), key
    for task in LM_EVAL_TASKS:
        for k, v in theirs["results"][task].items():
            if "," in k and isinstance(v, float):
                assert ours["results"][task][k] == pytest.approx(v, rel=1e-4), (task, k)
    # Requests that share a context are one request of several candidates (one forward): the
    # 4 choices of an ARC question. The texts' rolling windows all follow BOS alone: each is a
    # row of its own (a continuation longer than its context is not packed with others).
    assert calls == [6 + 6, 6]

    rows, docs = L.rows_of(ours, {"stage": 0, "after_task": "<start>"})
    got = {(r["task"], r["metric"]): r for r in rows}
    assert set(got) == {
        ("local_arc", "acc"), ("local_arc", "acc_norm"), ("local_cloze", "perplexity"),
        ("local_cloze", "acc"), ("local_wiki", "word_perplexity"),
        ("local_wiki", "byte_perplexity"), ("local_wiki", "bits_per_byte"),
    }  # fmt: skip
    assert got["local_arc", "acc"]["value"] == theirs["results"]["local_arc"]["acc,none"]
    assert got["local_arc", "acc"]["stderr"] > 0 and got["local_arc", "acc"]["n_samples"] == 6
    assert math.isnan(got["local_wiki", "word_perplexity"]["stderr"])  # lm-eval's "N/A"
    arc = [d for d in docs if d["task"] == "lm_eval:local_arc"]
    assert [d["example"] for d in arc] == list(range(6))
    assert sum(d["correct"] for d in arc) == round(6 * got["local_arc", "acc"]["value"])


def test_lm_eval_settings_fail_before_anything_runs(tmp_path):
    from harness import lm_eval_tasks as L
    from harness.config import ConfigError

    include = write_lm_eval_tasks(tmp_path)
    cfg = from_dict(
        {"eval": {"lm_eval_tasks": ["local_arcc"], "lm_eval_include_path": str(include)}}
    )
    with pytest.raises(
        ValueError, match=r"no task or group 'local_arcc'.*did you mean 'local_arc'"
    ):
        L.check_tasks(cfg, L.task_manager(cfg))
    (include / "gen.yaml").write_text(
        (include / "local_cloze.yaml")
        .read_text()
        .replace("local_cloze", "local_gen")
        .replace("output_type: loglikelihood", "output_type: generate_until")
    )
    cfg = from_dict(
        {"eval": {"lm_eval_tasks": ["local_gen"], "lm_eval_include_path": str(include)}}
    )
    with pytest.raises(ValueError, match=r"\['local_gen'\] generate text"):
        L.check_tasks(cfg, L.task_manager(cfg))
    missing = from_dict({"eval": {"lm_eval_tasks": ["x"], "lm_eval_include_path": "nowhere"}})
    with pytest.raises(FileNotFoundError, match="eval.lm_eval_include_path='nowhere'"):
        L.task_manager(missing)
    with pytest.raises(ConfigError, match="eval.lm_eval_limit: 0 must be >= 1"):
        from_dict({"eval": {"lm_eval_tasks": ["x"], "lm_eval_limit": 0}})
    with pytest.raises(ConfigError, match="set without eval.lm_eval_tasks"):
        from_dict({"eval": {"lm_eval_num_fewshot": 5}})


@pytest.mark.slow
def test_a_zero3_trial_scores_lm_eval_tasks_and_saves_a_model_lm_eval_scores_alike(
    mini_root, tmp_path, caplog
):
    """One 2-rank ZeRO-3 trial (gloo, no Ray) with lm-eval tasks as general ability and
    train.save_models=final. Its lm-eval rows and documents at every stage come from lm-eval
    run on every rank alike (sharded scorer); the saved directory loads in lm-eval's HFLM
    (``lm_eval --model hf --model_args pretrained=...``, transformers underneath), which
    scores every document of the tasks exactly as the trial's last evaluation did."""
    from results.io import read_study
    from tests.fixtures import mini_config, spawn_ranks, trials_on_rank

    include = write_lm_eval_tasks(tmp_path)
    cfg = mini_config(
        mini_root,
        tmp_path / "out",
        **{
            "replay.method": "none",
            "data.tasks": "colour,animal",
            "scale.backend": "deepspeed",
            "scale.zero_stage": 3,
            "scale.workers": 2,
            "eval.lm_eval_tasks": list(LM_EVAL_TASKS),
            "eval.lm_eval_include_path": str(include),
            "train.save_models": "final",
        },
    )
    spawn_ranks(trials_on_rank, [cfg.to_dict()])
    tables = read_study(tmp_path / "out" / "study=engine")
    assert tables["summary"].status.tolist() == ["completed"]
    rows = tables["lm_eval"]
    assert sorted(rows.stage.unique()) == [0, 1, 2]
    assert len(rows) == 3 * 7 and set(rows.task) == set(LM_EVAL_TASKS)
    docs = tables["predictions"][tables["predictions"].task.str.startswith("lm_eval:")]
    assert len(docs) == 3 * 3 * 6  # stages x tasks x documents, each once (not per rank)
    moved = rows.pivot_table(index=["task", "metric"], columns="stage", values="value")
    assert (moved[2] != moved[0]).any()  # training changed the model lm-eval scored

    saved = tmp_path / "out" / "study=engine" / "_models" / cfg.id / "stage=2"
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    about = json.loads((saved / "gere_model.json").read_text())
    assert about["trial_id"] == cfg.id and about["after_task"] == "animal"
    assert not list(saved.parent.glob("*.partial")) and [
        p.name for p in saved.parent.iterdir()
    ] == ["stage=2"]
    theirs = _simple_evaluate(saved, include)  # lm_eval's defaults: batch 1, the saved dtype
    last = docs[docs.stage == 2]
    ours = {
        (t.removeprefix("lm_eval:"), int(e)): list(ll)
        for t, e, ll in zip(last.task, last.example, last.logliks, strict=True)
    }
    a = _per_sample(theirs)
    assert a.keys() == ours.keys()
    for key in a:
        assert ours[key] == pytest.approx(a[key], abs=1e-4), key
    final = rows[rows.stage == 2].set_index(["task", "metric"])["value"]
    for task in LM_EVAL_TASKS:
        for k, v in theirs["results"][task].items():
            if "," in k and "_stderr" not in k:
                assert final[task, k.split(",")[0]] == pytest.approx(v, rel=1e-4), (task, k)


def test_shared_contexts_are_packed_within_the_model_length():
    """Pairs that share a context are one request (one forward) while each continuation is no
    longer than the context and the row stays within length + 1 tokens: the rolling windows of
    many documents all follow BOS alone and must not become one row."""
    from harness import lm_eval_tasks as L

    seen = []

    def score(requests):
        seen.extend(requests)
        return [[(-float(len(c)), True) for c in cands] for _, cands in requests]

    pairs = [([0, 1, 2], [5] * 3)] * 3 + [([0], [5] * 3)] * 2 + [([0, 7], [9])]
    got = L.score_pairs(score, pairs, length=7)
    assert got == [(-3.0, True)] * 5 + [(-1.0, True)]
    assert [(ctx, [len(c) for c in cands]) for ctx, cands in seen] == [
        ([0, 1, 2], [3]), ([0, 1, 2], [3]), ([0, 1, 2], [3]), ([0], [3]), ([0], [3]),
        ([0, 7], [1]),
    ]  # fmt: skip
    seen.clear()  # short continuations of a long context: packed, up to length + 1 tokens
    L.score_pairs(score, [([0, 1, 2, 3], [5, 6])] * 3, length=8)
    assert [len(cands) for _, cands in seen] == [2, 1]
    assert all(len(ctx) + sum(map(len, cands)) <= 9 for ctx, cands in seen)
    # left truncation as HFLM's: the last length + 1 tokens of context + continuation
    seen.clear()
    L.score_pairs(score, [(list(range(10)), [42, 43])], length=5)
    assert seen == [([6, 7, 8, 9], [[42, 43]])]


def test_prediction_rows_take_lm_eval_s_own_per_document_verdict():
    """Winogrande's choices differ in their contexts, not their continuations, and its target
    is not an index into them: the row says which choice by index, and 'correct' is lm-eval's
    own per-document acc. A document scored under two filters is one row."""
    from harness import lm_eval_tasks as L

    wino = {
        "doc_id": 4, "target": "2", "arguments": [("a _", " x"), ("b _", " x")],
        "resps": [[(-3.0, False)], [(-1.0, True)]], "acc": 1.0, "filter": "none",
    }  # fmt: skip
    out = {"results": {}, "samples": {"wino": [wino, {**wino, "filter": "other"}]}}
    _, rows = L.rows_of(out, {"stage": 1, "after_task": "t"})
    assert len(rows) == 1
    row = rows[0]
    assert (row["predicted"], row["gold"], row["correct"]) == ("1", "2", True)
    assert row["item"] == "wino/4" and row["logliks"] == [-3.0, -1.0]
    # multiple choice scored by another metric (no per-document acc): the arg-max is the target
    norm = {"doc_id": 0, "target": 1, "arguments": [("q", " a"), ("q", " b")],
            "resps": [[(-2.0, False)], [(-1.0, False)]], "acc_norm": 1.0}  # fmt: skip
    _, rows = L.rows_of(
        {"results": {}, "samples": {"t": [norm, {**norm, "doc_id": 1, "target": 0}]}}, {}
    )
    assert [(r["gold"], r["predicted"], r["correct"]) for r in rows] == [
        ("b", "b", True), ("a", "b", False)
    ]  # fmt: skip
