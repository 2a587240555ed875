"""Does fine-tuning a language model on a long stream of tasks make it learn new tasks worse,
and do the plasticity interventions keep it able to learn?

Question: Dohare et al. (Nature 2024) find that with plain backprop a network trained on a long
sequence of tasks learns each new one worse and worse, while its dormant units grow, its weights
grow and its representation's effective rank falls; L2 / weight decay and shrink & perturb slow
this, continual backprop keeps plasticity -- on vision and RL nets, not on language models. Here
the world base model (a small pretrained Llama) is fine-tuned on the world's long stream: 20
label-permuted variants of the world's tasks (``harness.world.tasks.stream_task``: the same kind
of text, a new mapping from classes to colour words each task), each learnable on its own. The
measure of plasticity is the accuracy on each task right after training on it; the report plots
it against the task index, with the dormant fraction, effective rank and weight norm, and tables
the first 5 against the last 5 tasks.

Grid: regime in {backprop (plain fine-tuning), weight_decay (AdamW decay 0.1), shrink_perturb
(λ 0.9, σ 0.01 before every task), continual_backprop (ρ 1e-4, maturity 100, η 0.99), redo
(every 100 steps, τ 0.025)} x seed in --seeds (default 0, 1, 2): 15 trials. Every
intervention at its documented default (harness/interventions), not tuned here. No replay:
the question is learning, not keeping. Each task: 200 training examples x 5 epochs at lr 1e-3
(63 steps of 16), 50 test examples. Smoke: the five regimes, seed 0, 3 tasks of a few steps
on the tiny random model (2 DeepSpeed ZeRO-2 ranks per trial), interventions set to act
within those steps.

Cost: world preset on a 2-core CPU, two trials side by side: 8 min per pair of trials (20
tasks x ~9 s of training each, every task scored after every task), about 1-2 h for the grid
(measured 2026-12-01: 110 min, the 2 cores shared with other work for part of it). On the
llama-3.1-8b preset the stream is the same generated world (the interventions need
scale.zero_stage=2, which this study sets).

Commands:
    python studies/plasticity.py --report                  # the grid, here (1-2 h)
    python studies/plasticity.py --smoke-test --report     # minutes
    python studies/plasticity.py --stream-tasks 30 --seeds 0,1
"""

from __future__ import annotations

import argparse
import sys

from harness.config import ConfigError, merge, parse_override
from harness.grid import axis, seed_list
from harness.presets import world_study_base
from harness.study import Study
from results.presentation.plasticity import print_table
from studies import run

STREAM = 20

REGIMES = [
    {"@regime": "backprop", "train.weight_decay": 0.0},
    {"@regime": "weight_decay", "train.weight_decay": 0.1},
    {"@regime": "shrink_perturb", "interventions.shrink_perturb": {}},
    {"@regime": "continual_backprop", "interventions.continual_backprop": {}},
    {"@regime": "redo", "interventions.redo": {}},
]
"""The five regimes; every intervention at its defaults (documented in harness/interventions)."""

SMOKE_REGIMES = [
    {"@regime": "backprop", "train.weight_decay": 0.0},
    {"@regime": "weight_decay", "train.weight_decay": 0.1},
    {"@regime": "shrink_perturb", "interventions.shrink_perturb": {}},
    {
        "@regime": "continual_backprop",
        "interventions.continual_backprop": {"rho": 0.05, "maturity": 1},
    },
    {"@regime": "redo", "interventions.redo": {"every": 1, "tau": 0.5, "batch_texts": 4}},
]
"""The smoke test's regimes: the same methods, set to act within its few steps."""


def stream_tasks(n: int) -> str:
    return ",".join(f"stream{k:02d}" for k in range(1, n + 1))


SETTINGS = {
    "data": {
        "tasks": stream_tasks(STREAM),
        "max_train_per_task": 200,
        "max_test_per_task": 50,
        "max_seq_len": 128,
    },
    "replay": {"method": "none"},
    "train": {"lr": 1e-3, "batch_size": 16, "epochs": 5.0, "warmup_steps": 5, "log_every": 10},
    "eval": {
        "probe": "mmlu",
        "probe_name": "world_quiz",
        "probe_format": "continuation",
        "probe_shots": 0,
        "probe_max_questions": 100,
        "heldout": "general/heldout.jsonl",
        "heldout_max_texts": 20,
        "heldout_max_tokens": 256,
        "batch_size": 32,
        "plasticity_texts": 16,
    },
    "scale": {"zero_stage": 2},  # interventions rewrite whole weights: not ZeRO-3
}
"""Settings of every trial (the grid adds the regime and the seed)."""

SMOKE_SETTINGS = {
    "data": {"tasks": stream_tasks(3), "max_train_per_task": 24, "max_test_per_task": 12},
    "train": {"epochs": 1.0, "max_steps_per_task": 3, "warmup_steps": 1, "log_every": 1},
    "eval": {
        "probe_max_questions": 24,
        "heldout_max_texts": 8,
        "heldout_max_tokens": 64,
        "plasticity_texts": 4,
    },
}
"""--smoke-test: 3 tasks of a few steps on small samples (the preset's tiny random model)."""


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0,1,2", help="Seeds, comma-separated (default: 0,1,2).")
    p.add_argument("--stream-tasks", type=int, default=STREAM, help="Tasks of the long stream "
                   f"(default: {STREAM}; the smoke test uses 3).")  # fmt: skip
    p.add_argument(
        "--world-seed", type=int, default=0, help="Seed of the generated world. Default: 0."
    )


def prepare(args: argparse.Namespace, base: dict) -> dict:
    """The world with its long stream, and (world preset) the base model pretrained on it."""
    n = 3 if args.smoke_test else args.stream_tasks
    if not 1 <= n <= 99:
        raise ConfigError([f"--stream-tasks {n}: must be in 1..99"])
    pretrain = args.preset == "world" and not args.smoke_test  # smoke: the tiny random model
    base, args.world = world_study_base(
        base, data_dir=args.data_dir, seed=args.world_seed, stream=n, pretrain=pretrain
    )
    print(f"world: {args.world.root}  stream: {n} tasks ({args.world.stream[0]} .. "
          f"{args.world.stream[n - 1]})")  # fmt: skip
    if args.preset != "llama-3.1-8b" and not args.smoke_test:  # two trials side by side on 2 cores
        base = merge(base, {"scale": {"cpus_per_worker": 0.99}})
    return merge(base, dict(parse_override(s) for s in args.set))


STUDY = Study(
    "plasticity", __doc__, lambda args: [REGIMES, axis("seed", seed_list(args.seeds))],
    [SMOKE_REGIMES], settings=SETTINGS, smoke_settings=SMOKE_SETTINGS, preset="world",
    options=options, prepare=prepare, present=lambda args, summary: print_table(args.out),
)  # fmt: skip

if __name__ == "__main__":
    sys.exit(run(STUDY))
