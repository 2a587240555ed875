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
from pathlib import Path

from harness.config import ConfigError, merge, parse_override
from harness.study import axis, main

NAME = "demo"

SETTINGS = {
    "data": {"max_train_per_task": 300, "max_test_per_task": 150, "max_seq_len": 160},
    "replay": {"corpus": "general/train.jsonl", "size": 200, "max_tokens": 128},
    # 3e-4 learns every task and erodes the probe step by step; at 1e-3 the base model's
    # knowledge is gone after the first task, which leaves replay nothing to protect.
    "train": {"lr": 3e-4, "batch_size": 16, "epochs": 10.0, "warmup_steps": 10, "log_every": 10},
    "eval": {
        "probe": "mmlu",
        "probe_format": "continuation",
        "probe_shots": 0,
        "probe_max_questions": 400,
        "heldout": "general/heldout.jsonl",
        "heldout_max_texts": 100,
        "heldout_max_tokens": 256,
        "batch_size": 32,
        "plasticity_texts": 16,
    },
    # 0.99 + the trial's 0.01 CPU: two trials side by side on a 2-core laptop (one thread each).
    "scale": {"workers": 1, "backend": "torch", "cpus_per_worker": 0.99},
}
"""Settings of the demo trials (the grid adds the method and the seed)."""
DEMO_BASE = SETTINGS

SMOKE_SETTINGS = {
    "data": {"max_train_per_task": 48, "max_test_per_task": 24, "max_seq_len": 128},
    "replay": {"size": 16, "max_tokens": 64},
    "train": {"epochs": 1.0, "max_steps_per_task": 3, "warmup_steps": 1, "log_every": 1},
    "eval": {"probe_max_questions": 24, "heldout_max_texts": 8, "heldout_max_tokens": 64},
}
"""--smoke-test: a few steps on small samples (the preset's tiny random model)."""


def options(p: argparse.ArgumentParser) -> None:
    from harness.replay import method_names

    p.add_argument(
        "--methods",
        default="none,tm",
        help=f"Replay methods to compare, comma-separated: {', '.join(method_names())}, "
        "optionally with a weight (tm:dynamic, kl:10). Default: none,tm (GeRe at its "
        "reference weight 100), the two trials side by side on 2 CPUs; add tm:dynamic or kl to "
        "see more of the trade-off (about 4-6 min more each on 2 cores).",
    )
    p.add_argument(
        "--seeds",
        default="0",
        help="Seeds, comma-separated; one trial per method and seed. Default: 0.",
    )
    p.add_argument(
        "--corpus",
        default=None,
        help="Pretrain the base (and draw replay texts) from this SlimPajama-style jsonl "
        "instead of the world's general text.",
    )
    p.add_argument(
        "--world-seed", type=int, default=0, help="Seed of the generated world. Default: 0."
    )


def method_axis(spec: str) -> list[dict]:
    """'none,tm,tm:dynamic' -> one grid axis; 'method:weight' sets replay.weight too."""
    points = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        name, _, weight = item.partition(":")
        points.append({"replay.method": name, **({"replay.weight": weight} if weight else {})})
    return points


def grid(args: argparse.Namespace) -> list:
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return [method_axis(args.methods), axis("seed", seeds)]


GRID = grid(argparse.Namespace(methods="none,tm", seeds="0"))
"""The grid of the default command (--methods none,tm --seeds 0)."""
SMOKE = [method_axis("none,tm")]


def prepare(args: argparse.Namespace, base: dict) -> dict:
    """The world of --world-seed and the base model pretrained on its text (or --corpus)."""
    from harness.presets import world_dir
    from harness.world.generate import generate_world
    from harness.world.pretrain import ensure_base_model

    where = Path(args.data_dir) if args.data_dir else world_dir(args.world_seed)
    info = generate_world(where, seed=args.world_seed)
    corpus = Path(args.corpus).resolve() if args.corpus else info.general_train
    if not corpus.is_file():
        raise ConfigError(
            [f'--corpus {str(corpus)!r} does not exist; give a jsonl file of {{"text": ...}} lines']
        )
    args.world = info
    print(f"world: {info.root}  tasks: {', '.join(info.tasks)}  probe chance: {info.chance:.3f}")
    world = {
        "data": {"root": str(info.root), "tasks": ",".join(info.tasks)},
        "replay": {"corpus": str(corpus)},
    }
    if not args.smoke_test:  # the smoke test keeps the preset's tiny random model
        world["model"] = {"name": str(ensure_base_model(corpus))}
    return merge(merge(base, world), dict(parse_override(s) for s in args.set))


def results_table(summary):
    """One row per method: general ability kept, tasks learned (means over seeds)."""
    from harness.replay import method_names

    cols = {
        "general_acc_start": "probe_start",
        "general_acc_final": "probe_final",
        "general_ppl_start": "ppl_start",
        "general_ppl_final": "ppl_final",
        "ap": "task_AP",
        "bwt": "BWT",
    }
    summary = summary.assign(
        method=[
            m if w == "default" else f"{m}:{w}"
            for m, w in zip(summary.method, summary.replay_weight, strict=True)
        ]
    )
    t = summary.groupby("method")[list(cols)].mean().rename(columns=cols)
    t.insert(0, "seeds", summary.groupby("method").size())
    if "none" in t.index:
        drop_none = t.loc["none", "probe_start"] - t.loc["none", "probe_final"]
        t["drop_prevented"] = (
            1 - (t["probe_start"] - t["probe_final"]) / drop_none if drop_none > 0 else float("nan")
        )
    rank = {m: i for i, m in enumerate(method_names())}
    return t.loc[sorted(t.index, key=lambda m: (rank.get(m.split(":")[0], len(rank)), m))]


def present(args: argparse.Namespace, summary) -> None:
    table = results_table(summary)
    print()
    print(
        "General ability (probe accuracy, held-out perplexity) before -> after the task sequence,"
    )
    print("task AP (mean final accuracy) and BWT, per replay method:")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(
        f"(probe chance = {args.world.chance:.3f}; "
        "drop_prevented = 1 - probe drop / probe drop of 'none')"
    )


def run(argv: list[str] | None = None) -> int:
    return main(
        NAME,
        __doc__,
        grid,
        SMOKE,
        argv,
        settings=SETTINGS,
        smoke_settings=SMOKE_SETTINGS,
        preset="world",
        options=options,
        prepare=prepare,
        present=present,
    )


if __name__ == "__main__":
    sys.exit(run())
