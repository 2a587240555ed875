"""The main job: how much does fine-tuning make a small pretrained model forget, and does GeRe
replay prevent it? Offline, on one machine (``python -m harness demo`` runs this script).

Question: a base model that provably knows a world (a knowledge probe about fictional people,
95.8% at 8 choices) is fine-tuned on a sequence of tasks that look nothing like what it
learned. How much of the probe and of held-out perplexity does plain sequential fine-tuning
lose, and how much does each replay method keep?

Grid: replay.method in --methods (default none, tm; 'method:weight' sets replay.weight, e.g.
tm:dynamic, kl:10) x seed in --seeds (default 0), on the ``world`` preset: the generated world
(--world-seed) and the small Llama pretrained on its general text (or on --corpus), cached by
content hash. Smoke: none and tm on the tiny random model, a few steps.

Steps: 1. generate the world into the cache unless it is there; 2. pretrain the base model
unless a base for exactly this corpus and settings is cached, with a progress bar; 3. run the
trials with Ray Tune on a local Ray started in-process, side by side; 4. print what each
method kept of the base model's general ability, and where the Parquet files are.

Cost: on a 2-core CPU laptop, pretraining 2.7 min (first run only), then about 6 min for the
default two trials side by side; each further method or seed adds 4-6 min.

Commands:
    python -m harness demo
    python -m harness demo --methods none,ce,kl,l1,l2,tm,tm:dynamic --seeds 0,1,2
    python studies/demo.py --smoke-test
"""

from __future__ import annotations

import argparse
import sys

from harness.config import merge, parse_override
from harness.config.replay_methods import REPLAY
from harness.grid import axis, method_axis, seed_list
from harness.presets import DEMO_SETTINGS, DEMO_SMOKE_SETTINGS, world_study_base
from harness.study import Study
from results.presentation.demo import print_table
from studies import run


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--methods",
        default="none,tm",
        help=f"Replay methods to compare, comma-separated: {', '.join(REPLAY.names())}, "
        "optionally with a weight (tm:dynamic, kl:10). Default: none,tm (GeRe at its "
        "reference weight 100), the two trials side by side on 2 CPUs; add tm:dynamic or kl to "
        "see more of the trade-off (about 4-6 min more each on 2 cores).",
    )
    p.add_argument("--seeds", default="0", help="Seeds, comma-separated; one trial per method "
                   "and seed. Default: 0.")  # fmt: skip
    p.add_argument("--corpus", default=None, help="Pretrain the base (and draw replay texts) from "
                   "this SlimPajama-style jsonl instead of the world's general text.")  # fmt: skip
    p.add_argument(
        "--world-seed", type=int, default=0, help="Seed of the generated world. Default: 0."
    )


def grid(args: argparse.Namespace) -> list:
    return [method_axis(args.methods), axis("seed", seed_list(args.seeds))]


def prepare(args: argparse.Namespace, base: dict) -> dict:
    """The world of --world-seed and the base model pretrained on its text (or --corpus)."""
    base, args.world = world_study_base(
        base, data_dir=args.data_dir, seed=args.world_seed, corpus=args.corpus,
        replay_corpus=True, pretrain=not args.smoke_test,  # smoke: the tiny random model
    )  # fmt: skip
    print(f"world: {args.world.root}  tasks: {', '.join(args.world.tasks)}  "
          f"probe chance: {args.world.chance:.3f}")  # fmt: skip
    return merge(base, dict(parse_override(s) for s in args.set))


STUDY = Study(
    "demo", __doc__, grid, [method_axis("none,tm")], settings=DEMO_SETTINGS,
    smoke_settings=DEMO_SMOKE_SETTINGS, preset="world", options=options, prepare=prepare,
    present=lambda args, summary: print_table(summary, chance=args.world.chance),
)  # fmt: skip

if __name__ == "__main__":
    sys.exit(run(STUDY))
