"""A real pretrained model (SmolLM2-135M-Instruct, ``gere model prepare smollm2-135m``) on real
data (../shared/data) agrees with the tools the literature scores with, run as they run:

* MMLU: per-choice log-likelihoods equal lm-evaluation-harness's, its ``HFLM`` with its
  default settings (no forced BOS) and its own ``mmlu`` task config (``mmlu/default``, only
  the dataset pointed at local files with cais/mmlu's columns), 0- and 5-shot;
* exact match: equals SAPT's own ``skip_instructions`` + ``compute_metrics`` (circle-hit/SAPT,
  imported from a checkout named by $GERE_SAPT_SRC) on the same generated tokens;
* held-out perplexity: equals a plain transformers forward on the same texts.

Each skips with the reason when the model, the data, lm-eval or SAPT's code is absent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
import torch

from harness.config import from_dict
from harness.data import load_mc, load_task, special_prefix, tokenize_cached
from harness.evaluate import candidate_logliks, generate_answers, perplexity, read_answer
from harness.inputs import TrialData, probe_requests, tokenize_task
from harness.models import load_tokenizer_and_model

SUBJECTS = ("anatomy", "high_school_geography", "college_physics")
PER_SUBJECT = 5


@pytest.fixture
def real(smollm2):
    tok, model = load_tokenizer_and_model(smollm2, dtype=torch.float32, seed=0)
    return tok, model.eval()


def test_the_real_tokenizer_puts_nothing_before_a_text_and_stops_at_its_eos(real, shared_data):
    """SmolLM2's bos_token is the chat token <|im_start|>, which its tokenizer never puts
    before plain text: prompts, rows and replay texts start with the text itself; training
    rows end with its EOS (<|im_end|>, also its pad), which generation stops at."""
    tok, _ = real
    assert tok.bos_token == "<|im_start|>" and special_prefix(tok) == []
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    cfg = from_dict(
        {"data": {"root": str(shared_data), "tasks": "cb", "prompt_template": "long_sequence"}}
    )
    task = load_task(shared_data, "cb", max_train=4, max_test=4)
    tt = tokenize_task(task, tok, cfg, None)
    text = tok.decode(tt.prompts[0])
    assert tt.prompts[0][0] != tok.bos_token_id and text.endswith("\nOutput:")
    assert all(ex.ids[-1] == tok.eos_token_id for ex in tt.train)
    assert tt.items == [f"cb/{ex.index}" for ex in task.test]
    forced = from_dict({"data": {"root": str(shared_data), "tasks": "cb", "add_bos": "always"}})
    assert tokenize_task(task, tok, forced, None).prompts[0][0] == tok.bos_token_id


# --------------------------------------------------------------------------- lm-eval


def _mmlu_as_cais(root: Path, dest: Path) -> None:
    """The subjects' CSVs (read here with the csv module, not the harness's loader) as JSON
    lines with cais/mmlu's columns: question, subject, choices, answer."""
    for subject in SUBJECTS:
        for split in ("test", "dev"):
            with (root / "mmlu" / split / f"{subject}_{split}.csv").open(newline="") as f:
                rows = list(csv.reader(f))
            header, body = rows[0], rows[1:]
            assert header[0] == "question" and header[-1] == "answer"
            with (dest / f"{subject}_{split}.jsonl").open("w") as out:
                for q, *choices, answer in body:
                    row = {"question": q, "subject": subject, "choices": choices}
                    out.write(json.dumps({**row, "answer": int(answer)}) + "\n")


def _lm_eval_tasks(dest: Path) -> list[str]:
    """Task configs that include lm-eval's own mmlu_<subject>.yaml (its template, header,
    few-shot split and sampler) and change only where the dataset is read from."""
    import lm_eval

    own = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    names = []
    for subject in SUBJECTS:
        name = f"gere_mmlu_{subject}"
        files = {s: str(dest / f"{subject}_{s}.jsonl") for s in ("test", "dev")}
        config = {
            "include": str(own / f"mmlu_{subject}.yaml"),
            "task": name,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": files},
        }
        (dest / f"{name}.yaml").write_text(json.dumps(config))
        names.append(name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("shots", [0, 5])
def test_mmlu_logliks_equal_lm_evaluation_harness_with_its_defaults(
    real, smollm2, shared_data, tmp_path, shots
):
    pytest.importorskip("lm_eval", reason="lm-eval is a dev dependency (pip install -e .[dev])")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.models import _source

    tok, model = real
    _mmlu_as_cais(shared_data, tmp_path)
    names = _lm_eval_tasks(tmp_path)
    lm = HFLM(pretrained=_source(smollm2), device="cpu", batch_size=8)  # add_bos_token: default
    out = simple_evaluate(
        model=lm,
        tasks=names,
        num_fewshot=shots,
        limit=PER_SUBJECT,
        log_samples=True,
        task_manager=TaskManager(include_path=str(tmp_path)),
    )
    theirs = {
        f"{s}/{sample['doc_id']}": [r[0][0] for r in sample["resps"]]
        for s, name in zip(SUBJECTS, names, strict=True)
        for sample in out["samples"][name]
    }

    probe = [q for q in load_mc("mmlu", shared_data, subjects=SUBJECTS) if q.row < PER_SUBJECT]
    shot_pool: dict = {}
    for q in load_mc("mmlu", shared_data, split="dev", subjects=SUBJECTS):
        shot_pool.setdefault(q.subject, []).append(q)
    data = TrialData(shared_data, [], (), probe, shot_pool, [], [])

    def ours(add_bos: str) -> dict[str, list[float]]:
        cfg = from_dict(
            {
                "data": {"root": str(shared_data), "tasks": "unused", "add_bos": add_bos},
                "replay": {"method": "none"},
                "eval": {"probe": "mmlu", "probe_format": "lm_eval", "probe_shots": shots},
            }
        )
        requests, _ = probe_requests(cfg, data, tok, None)
        lls = candidate_logliks(model, requests, pad_id=tok.pad_token_id, batch_size=8)
        return {q.item: ll for q, ll in zip(probe, lls, strict=True)}  # joined by item

    mine = ours("tokenizer")
    assert sorted(mine) == sorted(theirs) and len(mine) == len(SUBJECTS) * PER_SUBJECT
    for item, ll in mine.items():
        assert ll == pytest.approx(theirs[item], abs=1e-4), item
    # The same through results.external, as a study's predictions rows would be joined.
    import pandas as pd

    from results.external import join_lm_eval, lm_eval_samples

    rows = [
        {"task": "probe:mmlu", "item": k, "logliks": v, "predicted": "ABCD"[v.index(max(v))]}
        for k, v in mine.items()
    ]
    samples = pd.concat(
        [lm_eval_samples(out["samples"][n], task=n) for n in names], ignore_index=True
    )
    joined = join_lm_eval(pd.DataFrame(rows), samples)
    assert len(joined) == len(rows) and joined["same_answer"].all()
    assert (joined["max_abs_diff"] <= 1e-4).all()
    # The check can fail: forcing BOS (the harness's behaviour before the tokenizer rule)
    # moves the log-likelihoods away from lm-eval's.
    forced = ours("always")
    worst = max(abs(a - b) for k in forced for a, b in zip(forced[k], theirs[k], strict=True))
    assert worst > 1e-2

    # The same lm-eval tasks as eval.lm_eval_tasks (lm-eval's prompts, few-shot sampling and
    # metrics; the harness's scorer through its TemplateLM): every document equal, and acc.
    from harness import lm_eval_tasks as L
    from harness.evaluate import candidate_scores
    from tests.fixtures import LM_EVAL_TASKS, write_lm_eval_tasks

    def adapter(tasks, include, **settings):
        cfg = from_dict(
            {"eval": {"lm_eval_tasks": tasks, "lm_eval_include_path": str(include), **settings}}
        )
        lm = L.harness_lm(
            tok,
            lambda r: candidate_scores(model, r, pad_id=tok.pad_token_id, batch_size=8),
            L.max_length(model, tok),
        )
        return L.evaluate(cfg, lm, L.task_manager(cfg))

    adapted = adapter(names, tmp_path, lm_eval_num_fewshot=shots, lm_eval_limit=PER_SUBJECT)
    for s, name in zip(SUBJECTS, names, strict=True):
        for sample in adapted["samples"][name]:
            got = [r[0][0] for r in sample["resps"]]
            assert got == pytest.approx(theirs[f"{s}/{sample['doc_id']}"], abs=1e-4)
        assert adapted["results"][name]["acc,none"] == out["results"][name]["acc,none"]
    if shots:
        return
    # Multiple choice with acc_norm, one-continuation and rolling log-likelihood tasks.
    include = write_lm_eval_tasks(tmp_path / "local")
    mine_all = adapter(list(LM_EVAL_TASKS), include)
    hf = simple_evaluate(
        model=lm, tasks=list(LM_EVAL_TASKS), task_manager=TaskManager(include_path=str(include))
    )
    for task in LM_EVAL_TASKS:
        for a, b in zip(hf["samples"][task], mine_all["samples"][task], strict=True):
            la = [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in a["resps"]]
            lb = [r[0][0] if isinstance(r[0], (list, tuple)) else r[0] for r in b["resps"]]
            # a whole text's summed log-likelihood (hundreds of tokens): HFLM sums float32
            assert a["doc_id"] == b["doc_id"] and lb == pytest.approx(la, rel=1e-6, abs=1e-4)
        for k, v in hf["results"][task].items():
            if "," in k and isinstance(v, float):
                assert mine_all["results"][task][k] == pytest.approx(v, rel=1e-4), (task, k)


# --------------------------------------------------------------------------- SAPT


def _sapt_src(tmp_path: Path) -> Path:
    """SAPT's ``src`` (and the GPT-2 tokenizer its compute_metrics loads) from
    $GERE_SAPT_SRC: a checkout of circle-hit/SAPT or its bare git directory."""
    where = os.environ.get("GERE_SAPT_SRC")
    if not where or not Path(where).exists():
        pytest.skip(
            "SAPT's code is not available: set GERE_SAPT_SRC to a checkout (or git directory) "
            "of https://github.com/circle-hit/SAPT"
        )
    root = Path(where)
    if (root / "src" / "compute_metrics.py").is_file():
        return root / "src"
    archive = subprocess.run(
        ["git", "--git-dir", str(root), "archive", "HEAD", "src", "data/gpt2tokenizer"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp_path / "sapt", filter="data")
    return tmp_path / "sapt" / "src"


def _sapt_definitions(src: Path, wanted: dict[str, set[str]]) -> dict:
    """The named top-level functions and assignments of SAPT's files, executed as written."""
    import ast

    import numpy as np

    ns: dict = {"np": np}
    for file, names in wanted.items():
        tree = ast.parse((src / file).read_text())
        keep = [
            n
            for n in tree.body
            if (isinstance(n, ast.FunctionDef) and n.name in names)
            or (isinstance(n, ast.Assign) and {getattr(t, "id", "") for t in n.targets} & names)
        ]
        assert len(keep) == len(names), f"{file}: {names} not all found"
        exec(compile(ast.Module(keep, []), file, "exec"), ns)
    return ns


@pytest.mark.slow
def test_exact_match_equals_sapts_compute_metrics_on_the_same_generations(
    real, shared_data, tmp_path, monkeypatch
):
    import numpy as np

    src = _sapt_src(tmp_path)
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.chdir(src)
    for mod in ("compute_metrics", "rouge"):
        sys.modules.pop(mod, None)
    import compute_metrics  # SAPT's own module, unmodified

    # cl_trainer and cl_collator star-import transformers internals that transformers 5 moved,
    # so their definitions that the scoring uses run from their source, unmodified:
    # skip_instructions, check_model, SUPPORTED_DECODER_MODELS and ANSWER_PREFIX.
    ns = _sapt_definitions(
        src,
        {
            "cl_dataset.py": {"ANSWER_PREFIX"},
            "cl_collator.py": {"SUPPORTED_DECODER_MODELS", "check_model"},
            "cl_trainer.py": {"skip_instructions"},
        },
    )

    tok, model = real
    cfg = from_dict(
        {
            "data": {"root": str(shared_data), "tasks": "sst2", "prompt_template": "long_sequence"},
            "eval": {"scoring": "exact_match"},
        }
    )
    forced = from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "add_bos": "always"}})
    prompts, golds = [], []
    for name in ("sst2", "mnli", "agnews"):
        task = load_task(shared_data, name, max_test=4, label_policy="from_outputs")
        # As the model is (it answers EOS at once) and with BOS forced (the chat token makes
        # it talk: a line break first, then text), so the rule meets real generations.
        for c in (cfg, forced):
            tt = tokenize_task(task, tok, c, None)
            prompts += tt.prompts
            golds += tt.golds
    gens = generate_answers(
        model, tok, prompts, golds, max_new_tokens=50, batch_size=8, rule="exact_match"
    )
    assert any(g.text for g in gens)  # some answers are not empty

    width = max(len(p) + len(g.ids) for p, g in zip(prompts, gens, strict=True))
    rows = np.full((len(prompts), width), -100)  # SAPT pads its outputs with -100
    for i, (p, g) in enumerate(zip(prompts, gens, strict=True)):
        seq = list(p) + list(g.ids)
        rows[i, : len(seq)] = seq

    class Named:  # skip_instructions reads model.config._name_or_path ('llama': a decoder)
        class config:
            _name_or_path = "smollm2-llama"

    theirs = ns["skip_instructions"](Named, rows, tok)
    assert [g.text for g in gens] == theirs
    # Golds as given, and each answer re-cased and re-punctuated: the normalisation decides.
    variants = [f"{t.upper()}!" if t else "x" for t in theirs]
    for refs in (golds, variants):
        ours = [
            read_answer(tok, p, g.ids, r, "exact_match").correct
            for p, g, r in zip(prompts, gens, refs, strict=True)
        ]
        want = [compute_metrics.exact_match_score(a, r) for a, r in zip(theirs, refs, strict=True)]
        assert ours == want
        score = compute_metrics.compute_metrics(theirs, refs)["exact_match"]
        assert round(100.0 * sum(ours) / len(ours), 4) == score
    assert ours == [bool(t) for t in theirs]  # every re-cased, re-punctuated answer matches


# --------------------------------------------------------------------------- perplexity


def test_heldout_perplexity_equals_a_plain_transformers_forward(real, shared_data):
    tok, model = real
    texts = [
        json.loads(line)["text"] for line in (shared_data / "general" / "heldout.jsonl").open()
    ][:6]
    ids = tokenize_cached(tok, texts, max_length=96, cache_dir=None)
    assert all(seq[0] != tok.bos_token_id for seq in ids)  # the tokenizer's rule: no BOS
    got = perplexity(model, ids, pad_id=tok.pad_token_id, batch_size=4)
    nll, n = 0.0, 0
    with torch.no_grad():
        for seq in ids:
            x = torch.tensor([seq])
            loss = model(input_ids=x, labels=x).loss  # mean NLL of tokens 2..L
            nll += float(loss) * (len(seq) - 1)
            n += len(seq) - 1
    assert got.tokens == n
    assert got.nll_sum == pytest.approx(nll, rel=1e-4)
    assert got.ppl == pytest.approx(math.exp(nll / n), rel=1e-4)


# --------------------------------------------------------------------------- the preset


@pytest.mark.slow
@pytest.mark.ray
def test_the_preset_runs_on_two_zero3_ranks_under_ray_and_names_every_item(
    smollm2, shared_data, tmp_path
):
    """The smollm2-135m preset's smoke slice (2 tasks, a few examples) as a study: 2 Ray
    Train workers, DeepSpeed ZeRO-3 (the 8B preset's loading path), GeRe's tm replay; its
    rows, and every prediction traced back to its source item."""
    import pandas as pd

    from results.io import read_study

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "runs"
    cmd = [sys.executable, str(repo / "studies" / "baselines.py"), "--preset", "smollm2-135m"]
    cmd += ["--smoke-test", "--rows", "tm", "--set", "scale.zero_stage=3"]
    cmd += ["--data-dir", str(shared_data), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = read_study(out / "study=baselines")
    s = tables["summary"].iloc[0]
    assert s["status"] == "completed" and s["model.name"] == "smollm2-135m"
    config = json.loads(s["config_json"])
    assert config["scale"]["zero_stage"] == 3 and config["scale"]["workers"] == 2
    assert config["replay"]["add_bos"] == "never" and s["data.add_bos"] == "tokenizer"
    acc = tables["accuracy"]
    assert set(acc["scoring"]) == {"exact_match"} and len(acc) == 2 * 3  # 2 tasks x 3 stages
    general = tables["general"]
    assert len(general) == 3 and general["ppl"].map(math.isfinite).all()
    curve = tables["curve"]
    assert curve["replay_term"].notna().any()  # TM's term was computed on replay rows
    preds = tables["predictions"]
    assert preds["item"].notna().all()
    for _, p in preds[~preds["task"].str.startswith("probe:")].iterrows():
        task, index = p["item"].split("/")
        instances = json.loads((shared_data / "long_sequence" / task / "test.json").read_text())
        assert instances["Instances"][int(index)]["output"] == p["gold"]
    probe = preds[preds["task"].str.startswith("probe:")]
    for _, p in probe.iterrows():
        subject, row = p["item"].split("/")
        rows = pd.read_csv(shared_data / "mmlu" / "test" / f"{subject}_test.csv")
        assert "ABCD"[int(rows.iloc[int(row)]["answer"])] == p["gold"]
