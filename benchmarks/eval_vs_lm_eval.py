"""The harness's scorer against lm-evaluation-harness itself: same model, same requests, one
process, side by side.

    python benchmarks/eval_vs_lm_eval.py           # SmolLM2-135M on real MMLU and held-out text
    python benchmarks/eval_vs_lm_eval.py --quick   # a tiny saved Llama on generated data

Three workloads, each an lm-eval task that lm-eval itself builds (its prompts, few-shot
examples and requests):

1. **MMLU 5-shot, grouped by subject** as the presets sample it: 35 questions of each of 4
   subjects (``--per-subject``; the 8B preset's 2,000-question sample of MMLU's 14,042 holds
   35 per subject on average): lm-eval's own ``mmlu_<subject>`` configs (template, header,
   first-n dev shots), reading the subjects' CSVs from the data directory;
2. **0-shot multiple choice with multi-token answers**: lm-eval's ``mmlu_<subject>_continuation``
   (each choice text scored as the continuation of the question), 8 questions of each subject;
3. **held-out perplexity**: a wikitext-style task over ``general/heldout.jsonl``
   (``loglikelihood_rolling``).

The requests (lm-eval ``Instance`` objects) are built once and answered by lm-eval's ``HFLM``
(its defaults, ``batch_size=8``) and by the harness's scorer through its lm-eval adapter
(``harness.lm_eval_tasks.harness_lm`` over ``harness.evaluate.candidate_scores``, batch 8), on
the same model object, interleaved (lm-eval, harness, lm-eval, harness, ...) ``--repeats``
times; the medians are compared. The agreement check: every log-likelihood within
1e-4 + 1e-5 x its size of lm-eval's (a multi-token or whole-text sum carries float32 rounding:
HFLM sums float32 terms) and the same greedy flags, the largest differences printed; the script
exits 1 if any differs.

Each workload's line also counts the tokens each side pushed through the model (padding
included), which bounds what batching can win: on a CPU both run at the matmul's peak.

The last line is ``evaluation vs lm-eval: X.XX``: the geometric mean over the workloads of
lm-eval's time / the harness's time.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SUBJECTS = ("anatomy", "high_school_geography", "college_physics", "marketing")


def _mmlu_jsonl(root: Path | None, dest: Path, subjects, quick: bool) -> None:
    """The subjects' test and dev questions as cais/mmlu's columns (question, subject, choices,
    answer) in JSON lines: read from ``root``'s MMLU CSVs, or generated (``quick``)."""
    rng = random.Random(0)
    words = ["river", "stone", "ion", "cell", "mass", "wave", "bone", "heart", "force", "light"]
    for subject in subjects:
        for split in ("test", "dev"):
            if root is not None:
                path = root / "mmlu" / split / f"{subject}_{split}.csv"
                with path.open(newline="") as f:
                    body = list(csv.reader(f))[1:]
                rows = [(q, c, int(a)) for q, *c, a in body]
            else:
                n = 12 if split == "test" else 5
                rows = [
                    (
                        " ".join(rng.choices(words, k=12)) + "?",
                        [" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(4)],
                        rng.randrange(4),
                    )
                    for _ in range(n)
                ]
            with (dest / f"{subject}_{split}.jsonl").open("w") as out:
                for q, choices, a in rows:
                    row = {"question": q, "subject": subject, "choices": choices, "answer": a}
                    out.write(json.dumps(row) + "\n")


def _task_configs(dest: Path, subjects, heldout: Path) -> dict[str, list[str]]:
    """lm-eval task YAMLs that include lm-eval's own MMLU configs and change only where the data
    is read from; plus a wikitext-style rolling task over the held-out texts."""
    import lm_eval

    own = Path(lm_eval.__file__).parent / "tasks" / "mmlu"
    names: dict[str, list[str]] = {"mmlu_5shot": [], "mc_0shot": []}
    for subject in subjects:
        files = {s: str(dest / f"{subject}_{s}.jsonl") for s in ("test", "dev")}
        for group, folder, suffix in (
            ("mmlu_5shot", "default", ""),
            ("mc_0shot", "continuation", "_continuation"),
        ):
            name = f"bench_{group}_{subject}"
            config = {
                "include": str(own / folder / f"mmlu_{subject}.yaml"),
                "task": name,
                "tag": [],
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {"data_files": files},
            }
            if suffix:
                config["include"] = str(own / folder / f"mmlu_{subject}.yaml")
            (dest / f"{name}.yaml").write_text(json.dumps(config))
            names[group].append(name)
    (dest / "bench_heldout.yaml").write_text(
        json.dumps(
            {
                "task": "bench_heldout",
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(heldout)}},
                "test_split": "test",
                "output_type": "loglikelihood_rolling",
                "doc_to_text": "",
                "doc_to_target": "{{text}}",
                "metric_list": [{"metric": "word_perplexity"}],
            }
        )
    )
    names["perplexity"] = ["bench_heldout"]
    return names


def _requests(names, include: Path, shots: int, limit: int):
    """lm-eval's Instances for ``names`` (built by lm-eval's own task objects)."""
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(names, TaskManager(include_path=str(include)))
    instances = []
    for name in names:
        task = tasks[name]
        task.set_config(key="num_fewshot", value=shots)
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        instances += task.instances
    return instances


def _answer(lm, instances):
    kind = instances[0].request_type
    if kind == "loglikelihood_rolling":
        return [float(x) for x in lm.loglikelihood_rolling(instances, disable_tqdm=True)]
    return [(float(a), bool(b)) for a, b in lm.loglikelihood(instances, disable_tqdm=True)]


def _agree(theirs, mine) -> tuple[str | None, float, float]:
    """(the first disagreement or None, max |difference|, max relative difference): every
    log-likelihood within 1e-4 + 1e-5 x its size of lm-eval's (a sum over many float32 tokens,
    such as a whole text's, carries float32 rounding: HFLM sums float32 terms, the harness
    float64 ones), and the same greedy flags."""
    problem, worst, worst_rel = None, 0.0, 0.0
    for i, (a, b) in enumerate(zip(theirs, mine, strict=True)):
        (x, ga), (y, gb) = (a, b) if isinstance(a, tuple) else ((a, None), (b, None))
        diff = abs(x - y)
        worst, worst_rel = max(worst, diff), max(worst_rel, diff / max(abs(x), 1e-12))
        if problem is None and (diff > 1e-4 + 1e-5 * abs(x) or ga != gb):
            problem = f"request {i}: lm-eval {a}, harness {b}"
    return problem, worst, worst_rel


def _model(quick: bool, tmp: Path):
    """(tokenizer, model, description): the prepared SmolLM2-135M, or a tiny Llama."""
    from harness.models import byte_level_tokenizer, load_tokenizer_and_model, tiny_llama
    from harness.prepared_models import is_prepared

    if not quick and is_prepared("smollm2-135m"):
        tok, model = load_tokenizer_and_model("smollm2-135m", dtype=torch.float32, seed=0)
        return tok, model.eval(), "SmolLM2-135M-Instruct (fp32)"
    tok = byte_level_tokenizer()
    model = tiny_llama(vocab_size=len(tok), hidden_size=64, intermediate_size=128).eval()
    return tok, model, "a tiny 2-layer Llama, byte-level tokenizer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, generated data")
    parser.add_argument("--data-dir", default=None, help="holds mmlu/ and general/")
    parser.add_argument(
        "--per-subject", type=int, default=None, help="5-shot MMLU questions per subject"
    )
    parser.add_argument("--heldout", type=int, default=None, help="held-out texts")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for name in ("lm_eval", "lm-eval", "datasets", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)

    from lm_eval.models.huggingface import HFLM

    from harness import lm_eval_tasks as L
    from harness.data import DataError, resolve_data_root
    from harness.evaluate import candidate_scores

    root = None
    if not args.quick:
        try:
            root = resolve_data_root(args.data_dir)
        except DataError:
            root = None
        if root is not None and not (root / "mmlu" / "test").is_dir():
            root = None
    quick = args.quick or root is None
    per_subject = args.per_subject or (4 if quick else 35)
    per_subject_mc = 4 if quick else 8
    n_heldout = args.heldout or (4 if quick else 16)
    repeats = args.repeats or (1 if quick else 3)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="gere-bench-") as d:
        tmp = Path(d)
        tok, model, about = _model(quick, tmp)
        _mmlu_jsonl(root, tmp, SUBJECTS, quick)
        heldout = tmp / "heldout.jsonl"
        if root is not None:
            texts = [json.loads(x)["text"] for x in (root / "general" / "heldout.jsonl").open()]
        else:
            rng = random.Random(1)
            texts = [" ".join(rng.choices("abcdefgh ", k=400)) for _ in range(n_heldout)]
        with heldout.open("w") as f:
            for t in texts[:n_heldout]:
                f.write(json.dumps({"text": t}) + "\n")
        names = _task_configs(tmp, SUBJECTS, heldout)
        work = {
            "mmlu_5shot": _requests(names["mmlu_5shot"], tmp, 5, per_subject),
            "mc_0shot": _requests(names["mc_0shot"], tmp, 0, per_subject_mc),
            "perplexity": _requests(names["perplexity"], tmp, 0, n_heldout),
        }
        theirs = HFLM(pretrained=model, tokenizer=tok, batch_size=8, device="cpu")
        length = L.max_length(model, tok)
        mine = L.harness_lm(
            tok,
            lambda r: candidate_scores(model, r, pad_id=tok.pad_token_id, batch_size=8),
            length,
        )
        print(f"model: {about}; data: {'generated' if root is None else root}")
        print(
            f"MMLU: {len(SUBJECTS)} subjects x {per_subject} questions (5-shot), x "
            f"{per_subject_mc} (0-shot); held-out: {n_heldout} texts; {repeats} interleaved "
            "repeats; batch 8 for both"
        )
        tokens = [0]

        def count(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            tokens[0] += ids.numel()

        decoder = model.get_decoder()
        hook = decoder.register_forward_pre_hook(count, with_kwargs=True)
        ratios, failed = [], False
        for name, instances in work.items():
            times: dict[str, list[float]] = {"lm-eval": [], "harness": []}
            answers, pushed = {}, {}
            for _ in range(repeats):
                for who, lm in (("lm-eval", theirs), ("harness", mine)):
                    tokens[0] = 0
                    t0 = time.perf_counter()
                    answers[who] = _answer(lm, instances)
                    times[who].append(time.perf_counter() - t0)
                    pushed[who] = tokens[0]
            problem, worst, rel = _agree(answers["lm-eval"], answers["harness"])
            failed |= problem is not None
            a, b = statistics.median(times["lm-eval"]), statistics.median(times["harness"])
            ratios.append(a / b)
            print(
                f"{name}: {len(instances)} requests; lm-eval {a:.2f} s, harness {b:.2f} s "
                f"({a / b:.2f}x); tokens through the model {pushed['lm-eval']} vs "
                f"{pushed['harness']} ({pushed['lm-eval'] / max(1, pushed['harness']):.2f}x); "
                f"log-likelihoods {'agree' if problem is None else 'DIFFER'} "
                f"(max |diff| {worst:.1e}, relative {rel:.1e})"
                + (f": {problem}" if problem else "")
            )
        hook.remove()
    x = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(
        "agreement: "
        + ("FAILED" if failed else "every log-likelihood within 1e-4 + 1e-5 x |log-likelihood|")
    )
    print(f"evaluation vs lm-eval: {x:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
