"""How much of what the model computes in training is padding, under each loss weighting?

    python benchmarks/padding.py                          # the llama-3.1-8b preset's geometry
    python benchmarks/padding.py --tokenizer DIR          # exact lengths with that tokenizer

One trial's training steps are planned with the harness's own code (``harness.train.
plan_steps``, ``micro_batches``) at the 8B preset's geometry -- micro-batch 4, gradient
accumulation 2, 8 ranks, 1,000 training examples per task, 1,000 replay texts cut at 563 tokens
shuffled into every task's training set -- on the Long-Sequence tasks of the data directory
(../shared/data or $GERE_DATA_DIR) and its general corpus, and every micro-batch's padded width
is counted. ``microbatch_mean`` deals the step's rows to the ranks and micro-batches strided;
``per_sample`` sorts the step's rows by length and cuts contiguous runs (its objective does not
depend on the grouping).

Token lengths come from ``--tokenizer`` (a Hugging Face tokenizer directory, e.g. a local copy
of Llama-3.1-8B's) when given; otherwise they are APPROXIMATED as UTF-8 bytes / 4 (about
Llama-3's rate on English text), and the output says so. The last line is
``computed / real tokens: microbatch_mean X, per_sample Y``.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from harness.data import format_prompt, load_task, load_texts, resolve_data_root, target_text
from harness.data.paths import DataError
from harness.train import micro_batches, plan_steps, rank_share

ORDER6 = "yelp,amazon,mnli,cb,copa,qqp,rte,imdb,sst2,dbpedia,agnews,yahoo,multirc,boolq,wic"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=None, help="Data root (default: ../shared/data).")
    p.add_argument("--tokenizer", default=None, help="HF tokenizer directory (exact lengths).")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--train-per-task", type=int, default=1000)
    p.add_argument("--replay", type=int, default=1000)
    p.add_argument("--replay-tokens", type=int, default=563)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--epochs", type=float, default=3.0)
    args = p.parse_args(argv)
    try:
        root = resolve_data_root(args.data_dir)
    except DataError as exc:
        print(f"needs a data directory: {exc}", file=sys.stderr)
        return 2
    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)

        def length(text: str) -> int:
            return len(tok(text, add_special_tokens=False).input_ids)

        how = f"lengths from the tokenizer {args.tokenizer}"
    else:

        def length(text: str) -> int:
            return max(1, math.ceil(len(text.encode()) / 4))

        how = "lengths APPROXIMATED as UTF-8 bytes / 4 (pass --tokenizer for exact ones)"
    present = [t for t in ORDER6.split(",") if (root / "long_sequence" / t).is_dir()]
    texts = load_texts("general/train.jsonl", root, max_texts=args.replay, seed=0)
    replay = [min(args.replay_tokens, length(t)) for t in texts]
    eff = args.batch_size * args.grad_accum * args.workers
    totals = {"microbatch_mean": [0, 0], "per_sample": [0, 0]}  # real, computed
    for name in present:
        task = load_task(
            root, name, label_policy="from_outputs", max_train=args.train_per_task, seed=0
        )
        rows = [
            min(
                args.max_seq_len,
                1
                + length(format_prompt(task, ex.input, "long_sequence"))
                + length(target_text(ex.output))
                + 1,
            )
            for ex in task.train
        ]
        steps = plan_steps(
            n_task=len(rows),
            n_replay=len(replay),
            effective_batch=eff,
            per_batch=None,
            epochs=args.epochs,
            max_steps=None,
            rng=np.random.default_rng([0, 1]),
        )

        def size(item, rows=rows) -> int:
            return replay[item[1]] if item[0] else rows[item[1]]

        for step in steps:
            for rank in range(args.workers):
                for weighting, by_length in (("microbatch_mean", False), ("per_sample", True)):
                    share = rank_share(step, args.workers, rank, by_length, size)
                    for m in micro_batches(share, args.grad_accum, by_length, size):
                        lengths = [size(it) for it in m]
                        totals[weighting][0] += sum(lengths)
                        totals[weighting][1] += max(lengths) * len(lengths)
    print(f"{len(present)} Long-Sequence tasks in {root}: {', '.join(present)}")
    print(
        f"geometry: micro-batch {args.batch_size} x accumulation {args.grad_accum} x "
        f"{args.workers} ranks = {eff} rows per step; {args.replay} replay texts <= "
        f"{args.replay_tokens} tokens; {args.train_per_task} examples per task; {how}"
    )
    for weighting, (real, computed) in totals.items():
        print(
            f"{weighting:16s} real tokens {real / 1e6:7.2f}M  computed {computed / 1e6:7.2f}M  "
            f"padding share {1 - real / computed:.3f}"
        )
    r = {w: c / r for w, (r, c) in totals.items()}
    print(
        f"computed / real tokens: microbatch_mean {r['microbatch_mean']:.2f}, "
        f"per_sample {r['per_sample']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
