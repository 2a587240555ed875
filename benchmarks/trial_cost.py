"""What does each replay method cost? One 3-task tiny trial per method, side by side.

    python benchmarks/trial_cost.py                      # real tasks from the data dir
    python benchmarks/trial_cost.py --tasks cb,rte,sst2 --methods none,tm --repeats 2

Machines here are shared and noisy, so the methods run interleaved in one process (repeat r of
every method before repeat r+1) and the table reports each method's wall time as a ratio to
``none`` measured in the same run, not as absolute targets.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile

from harness.config import from_dict
from harness.trial import run_trial


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", default="cb,rte,sst2")
    p.add_argument("--methods", default="none,ce,kl,l1,l2,tm")
    p.add_argument(
        "--data-root",
        default=None,
        help="data directory (default: $GERE_DATA_DIR or ../shared/data)",
    )
    p.add_argument("--train", type=int, default=200, help="training instances per task")
    p.add_argument("--test", type=int, default=100, help="test instances per task")
    p.add_argument("--replay-size", type=int, default=200)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    methods = args.methods.split(",")
    times: dict[str, list[float]] = {m: [] for m in methods}
    train_s: dict[str, list[float]] = {m: [] for m in methods}
    tokens: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            for m in methods:
                cfg = from_dict(
                    {
                        "study": "cost",
                        "out": out,
                        "data": {
                            "root": args.data_root,
                            "tasks": args.tasks,
                            "max_train_per_task": args.train,
                            "max_test_per_task": args.test,
                            "max_seq_len": 256,
                        },
                        "replay": {"method": m, "size": args.replay_size, "max_tokens": 128},
                        "train": {"lr": 1e-3, "batch_size": 8, "epochs": 1},
                        "eval": {
                            "probe_max_questions": 100,
                            "heldout_max_texts": 50,
                            "heldout_max_tokens": 128,
                        },
                    }
                )
                r = run_trial(cfg)
                times[m].append(r.summary["wall_time_s"])
                train_s[m].append(r.train_seconds)
                tokens[m] = r.train_tokens
    base = statistics.median(times[methods[0]])
    print(
        f"3-task tiny trial ({args.tasks}; {args.train} train / {args.test} test per task; "
        f"replay {args.replay_size} texts), median of {args.repeats}:"
    )
    print(
        f"{'method':8} {'wall s':>8} {'train s':>8} {'train tok':>10} {'tok/s':>8} {'x ' + methods[0]:>8}"
    )
    for m in methods:
        w, t = statistics.median(times[m]), statistics.median(train_s[m])
        print(f"{m:8} {w:8.1f} {t:8.1f} {tokens[m]:10d} {tokens[m] / t:8.0f} {w / base:8.2f}")


if __name__ == "__main__":
    main()
