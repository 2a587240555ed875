"""Is GeRe better than the baselines every continual-learning table has?

Question: the Long-Sequence papers (O-LoRA, SAPT, InfLoRA, GeRe) put the same rows in every
table: sequential fine-tuning (full and LoRA), replay of earlier tasks' examples, EWC, LwF,
O-LoRA and the multitask upper bound (GeRe's paper, Llama-3.1-8B: sequential AP 37.5,
multitask 81.0). This study runs those rows and the general-replay losses (ce, kl, tm) on one
stream; the report prints AP, BWT, FWT, forgetting, general ability and each row's gap to
multitask.

Grid: baseline in {none, none (LoRA), ce, kl, tm, task_replay, ewc, lwf, olora (LoRA),
multitask, single_task (SAPT's FWT reference)} x seed in --seeds (default 0, 1, 2); every
method at its documented defaults, not tuned here (``--config configs/paper-defaults.yaml``:
its reference's values). Every row trains with GeRe's reference objective (per-sample loss,
replay texts without BOS) under ZeRO-2 (ewc, lwf and olora read whole parameters). On the
world preset the demo's settings and base model (rows beside the demo's table); on
--preset llama-3.1-8b the paper's table (memory per GPU: the bf16 weights, 16 GB, beside ewc's
two fp32 copies of the trainable parameters, 64 GB for full fine-tuning -- use LoRA -- or lwf's
teacher copy, 16 GB). Smoke: every row, one seed, a few steps.

Cost: world preset, 2-core CPU, two trials side by side: 24 min for seed 0, 42 min for seeds
1 and 2 (measured 2026-12-01; docs/findings.md).

Commands:
    python studies/baselines.py --report                 # 3 seeds, here (~65 min)
    python studies/baselines.py --smoke-test --report    # minutes
    python studies/baselines.py --preset smollm2-135m --seeds 0 \
        --rows none,none_lora,ce,kl,tm,task_replay --report   # a real model (docs/findings.md)
"""

from __future__ import annotations

import argparse
import sys

from harness.config import merge, parse_override
from harness.grid import axis, only, seed_list
from harness.presets import DEMO_SETTINGS, DEMO_SMOKE_SETTINGS, world_study_base
from harness.study import Study
from results.presentation.baselines import print_table
from studies import run

B = "@baseline"
BASELINES = [
    {B: "none", "replay.method": "none"},
    {B: "none_lora", "replay.method": "none", "model.tuning": "lora"},
    {B: "ce", "replay.method": "ce"},
    {B: "kl", "replay.method": "kl"},
    {B: "tm", "replay.method": "tm"},
    {B: "task_replay", "replay.method": "none", "cl.task_replay": {}},
    {B: "ewc", "replay.method": "none", "cl.ewc": {}},
    {B: "lwf", "replay.method": "none", "cl.lwf": {}},
    {B: "olora", "replay.method": "none", "model.tuning": "lora", "cl.olora": {}},
    {B: "multitask", "replay.method": "none", "cl.multitask": {}},
    {B: "single_task", "replay.method": "none", "cl.single_task": {}},
]
"""The table's rows; every method at its defaults."""

SETTINGS = {  # GeRe's reference objective on any preset, and ZeRO-2 (ewc, lwf, olora)
    "train": {"loss_weighting": "per_sample"},
    "replay": {"add_bos": "never"},
    "scale": {"zero_stage": 2},
}
SMOKE_SETTINGS = {"train": {"max_steps_per_task": 2}}


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0,1,2", help="Seeds, comma-separated (default: 0,1,2).")
    p.add_argument("--rows", default=None, metavar="A,B,...", help="Only these rows of the "
                   f"table (default: all: {','.join(b[B] for b in BASELINES)}).")  # fmt: skip
    p.add_argument(
        "--world-seed", type=int, default=0, help="Seed of the generated world. Default: 0."
    )


def prepare(args: argparse.Namespace, base: dict) -> dict:
    """On the world preset (and the smoke test): the demo's settings, world and base model,
    so the rows sit beside the demo's table. Other presets keep theirs: the paper's table."""
    if args.preset != "world":
        return base
    layers = [DEMO_SETTINGS, SETTINGS]
    layers += [DEMO_SMOKE_SETTINGS, SMOKE_SETTINGS] if args.smoke_test else []
    for layer in [*layers, dict(parse_override(s) for s in args.set)]:
        base = merge(base, layer)
    base, args.world = world_study_base(base, data_dir=args.data_dir, seed=args.world_seed,
                                        replay_corpus=True, pretrain=not args.smoke_test)  # fmt: skip
    print(f"world: {args.world.root}  tasks: {', '.join(args.world.tasks)}  "
          f"probe chance: {args.world.chance:.3f}")  # fmt: skip
    return merge(base, dict(parse_override(s) for s in args.set))


STUDY = Study(
    "baselines", __doc__,
    lambda args: [only(BASELINES, B, args.rows, "--rows"), axis("seed", seed_list(args.seeds))],
    lambda args: [only(BASELINES, B, args.rows, "--rows")],
    settings=SETTINGS, smoke_settings=SMOKE_SETTINGS, preset="world", options=options,
    prepare=prepare, present=lambda args, summary: print_table(args.out),
)  # fmt: skip

if __name__ == "__main__":
    sys.exit(run(STUDY))
