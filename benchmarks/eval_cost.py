"""What does one checkpoint's evaluation cost, old scorer vs new? Side by side, one process.

    python benchmarks/eval_cost.py            # dbpedia (14 labels) + MMLU letters, data dir
    python benchmarks/eval_cost.py --quick    # fewer prompts and repeats: under a minute here

The old scorer (``harness.evaluate.pairwise_logliks``) runs one padded row per (prompt,
candidate) with a full-vocabulary log-softmax at every position; the new one
(``candidate_logliks``) runs one packed row per prompt and the output head only where a token
is scored. Both score the same requests on the same model (the harness's tiny preset unless
--model), interleaved (old, new, old, new, ...) so a noisy shared machine slows both alike;
the medians are compared. Without a data directory (no ../shared/data, no $GERE_DATA_DIR) a
synthetic 14-label task and 4-choice letter questions of similar lengths are generated.

The last line is ``evaluation speedup: X.XX`` (old wall time / new wall time).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness.config import from_dict
from harness.data import DataError, resolve_data_root
from harness.evaluate import candidate_logliks, pairwise_logliks, request_tokens
from harness.inputs import load_data, tokenize_inputs
from harness.models import build


def _synthetic(root: Path, n_test: int) -> Path:
    """A 14-label task in the Long-Sequence layout and an MMLU-format letter probe."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    labels = [f"Category {c}" for c in "ABCDEFGHIJKLMN"]
    d = root / "long_sequence" / "dbpedia"
    d.mkdir(parents=True)
    for split, n in (("train", 2), ("test", n_test)):
        rows = [
            {"input": " ".join(rng.choices(words, k=40)), "output": rng.choice(labels)}
            for _ in range(n)
        ]
        body = {"Definition": ["Pick the category of the text."], "Instances": rows}
        (d / f"{split}.json").write_text(json.dumps(body))
    (d / "labels.json").write_text(json.dumps(labels))
    for split in ("test", "dev"):
        m = root / "mmlu" / split
        m.mkdir(parents=True)
        lines = []  # the headerless form: question, four choices, answer letter
        for _ in range(max(n_test, 8)):
            q = " ".join(rng.choices(words, k=25))
            lines.append(f"{q},{','.join(' '.join(rng.choices(words, k=4)) for _ in range(4))},A")
        (m / f"synthetic_{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def _tokens(requests, pairwise: bool) -> int:
    if pairwise:
        return sum(len(p) + len(c) for p, cands in requests for c in cands)
    return request_tokens(requests)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-root", default=None, help="default: $GERE_DATA_DIR or ../shared/data")
    p.add_argument("--model", default="tiny", help="model.name (default: the tiny preset)")
    p.add_argument("--prompts", type=int, default=100, help="test prompts of the task")
    p.add_argument("--questions", type=int, default=100, help="MMLU questions")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="30 prompts, 30 questions, 2 repeats")
    args = p.parse_args()
    if args.quick:
        args.prompts, args.questions, args.repeats = 30, 30, 2
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            root = resolve_data_root(args.data_root)
            if not (root / "long_sequence" / "dbpedia").is_dir():
                raise DataError(f"{root} has no long_sequence/dbpedia")
            source = str(root)
        except DataError:
            root = _synthetic(Path(tmp) / "data", args.prompts)
            source = "synthetic"
        cfg = from_dict(
            {
                "model": {"name": args.model},
                "data": {
                    "root": str(root),
                    "tasks": "dbpedia",
                    "max_train_per_task": 1,
                    "max_test_per_task": args.prompts,
                    "max_seq_len": 256,
                    "cache_dir": tmp,
                },
                "replay": {"method": "none"},
                "eval": {
                    "probe": "mmlu",
                    "probe_format": "letter",
                    "probe_max_questions": args.questions,
                    "heldout": None,
                    "plasticity_texts": 0,
                },
            }
        )
        built = build(cfg.model, seed=0, keep_reference=False)
        inputs = tokenize_inputs(cfg, load_data(cfg), built.tokenizer)
    task = inputs.tasks[0]
    parts = {
        f"dbpedia ({len(task.candidates)} labels)": [(q, task.candidates) for q in task.prompts],
        "MMLU letters (4 choices)": inputs.probe[0],
    }
    scorers = {"old": pairwise_logliks, "new": candidate_logliks}
    times = {name: {s: [] for s in scorers} for name in parts}
    results = {}
    for _ in range(args.repeats):
        for name, requests in parts.items():
            for s, fn in scorers.items():
                t0 = time.perf_counter()
                results[name, s] = fn(
                    built.model, requests, pad_id=inputs.pad_id, batch_size=args.batch_size
                )
                times[name][s].append(time.perf_counter() - t0)
    print(
        f"one checkpoint's evaluation on {source}, model {args.model}, batch {args.batch_size}, "
        f"median of {args.repeats} interleaved runs:"
    )
    print(
        f"{'part':28} {'old s':>7} {'new s':>7} {'speedup':>8} {'token ratio':>12} {'max |dll|':>10}"
    )
    old_total = new_total = 0.0
    for name, requests in parts.items():
        old, new = (statistics.median(times[name][s]) for s in scorers)
        old_total, new_total = old_total + old, new_total + new
        diff = max(
            abs(a - b)
            for ra, rb in zip(results[name, "old"], results[name, "new"], strict=True)
            for a, b in zip(ra, rb, strict=True)
        )
        ratio = _tokens(requests, True) / _tokens(requests, False)
        print(f"{name:28} {old:7.2f} {new:7.2f} {old / new:8.2f} {ratio:12.2f} {diff:10.1e}")
    print(f"evaluation speedup: {old_total / new_total:.2f}")


if __name__ == "__main__":
    main()
