"""Is GeRe better than the baselines every continual-learning table has?

Question: the Long-Sequence papers (O-LoRA, SAPT, InfLoRA, GeRe) put the same rows in every
table: sequential fine-tuning (full and LoRA), replay of earlier tasks' examples, EWC, LwF,
O-LoRA and the multitask upper bound that every other row is read against (GeRe's paper, on
Llama-3.1-8B: sequential fine-tuning AP 37.5, multitask 81.0). This study runs those rows and
the general-replay losses (ce, kl, tm) on one stream, and the report prints AP, BWT, FWT,
forgetting, general ability and each row's gap to multitask.

Grid: baseline in {none, none (LoRA), ce, kl, tm, task_replay, ewc, lwf, olora (LoRA),
multitask, single_task} x seed in --seeds (default 0, 1, 2). single_task trains every task
alone from the starting model: the reference of SAPT's FWT (the table's ``fwt_sapt``), beside
GEM's zero-shot FWT. Every method at its documented defaults (harness/cl and harness/replay;
task_replay keeps 50 examples per finished task, ewc lambda 5000, lwf weight 1 at T 2, olora
lambda_orth 0.5), not tuned here; ``--config configs/paper-defaults.yaml`` runs every method at
its reference's values instead (``method_defaults: paper``; the report says which). Every row trains with
GeRe's reference objective (``train.loss_weighting=per_sample``: each sample's loss on its
own, averaged over the effective batch) and replay texts without BOS, so tm is GeRe as its
reference trains it and the other rows share its objective. LoRA rows use the same learning
rate as the full rows. Multitask trains once on the union of the tasks for the same epochs
(the same number of steps as the sequence).

Settings: the demo's (``studies/demo.py``: the world preset's 3 tasks, 300 training
examples x 10 epochs at lr 3e-4, 200 general replay texts), so the rows sit beside the
demo's table. On ``--preset llama-3.1-8b`` it is the paper's table with every row (15 tasks,
order 6, exact match), run under ZeRO-2 (ewc, lwf and olora read whole parameters); memory
per GPU then holds the bf16 weights (16 GB) beside ewc's two fp32 copies of the trainable
parameters (64 GB for full fine-tuning: use LoRA, or a GPU with room) or lwf's teacher copy
(16 GB). Smoke: every row, one seed, 3 tasks of a few steps on the tiny random
model (2 DeepSpeed ZeRO-2 ranks per trial).

Cost: world preset on a 2-core CPU, two trials side by side (measured 2026-12-01): 24 min for
seed 0 (1,413 s), 42 min for seeds 1 and 2 (2,514 s); a trial with general replay takes 5-6.5
min, one without 2.5-4 min.

Commands:
    python studies/baselines.py --report                 # 3 seeds, here (~65 min)
    python studies/baselines.py --seeds 0 --report       # one seed (~24 min)
    python studies/baselines.py --smoke-test --report    # minutes
    # a real pretrained model (gere model prepare smollm2-135m; README "On a real model"):
    python studies/baselines.py --preset smollm2-135m --seeds 0 \
        --rows none,none_lora,ce,kl,tm,task_replay --report
"""

from __future__ import annotations

import argparse
import sys

from harness.config import merge, parse_override
from harness.study import axis, main, seed_list

NAME = "baselines"

BASELINES = [
    {"@baseline": "none", "replay.method": "none"},
    {"@baseline": "none_lora", "replay.method": "none", "model.tuning": "lora"},
    {"@baseline": "ce", "replay.method": "ce"},
    {"@baseline": "kl", "replay.method": "kl"},
    {"@baseline": "tm", "replay.method": "tm"},
    {"@baseline": "task_replay", "replay.method": "none", "cl.task_replay": {}},
    {"@baseline": "ewc", "replay.method": "none", "cl.ewc": {}},
    {"@baseline": "lwf", "replay.method": "none", "cl.lwf": {}},
    {"@baseline": "olora", "replay.method": "none", "model.tuning": "lora", "cl.olora": {}},
    {"@baseline": "multitask", "replay.method": "none", "cl.multitask": {}},
    {"@baseline": "single_task", "replay.method": "none", "cl.single_task": {}},
]
"""The table's rows; every method at its defaults."""


def _demo():
    """The demo study's module (studies/demo.py), so the two share one set of settings."""
    import runpy
    from pathlib import Path

    return runpy.run_path(str(Path(__file__).with_name("demo.py")), run_name="baselines_demo")


SETTINGS = {
    "train": {"loss_weighting": "per_sample"},
    "replay": {"add_bos": "never"},
    "scale": {"zero_stage": 2},  # ewc, lwf and olora read whole parameters: not ZeRO-3
}
"""What every trial of the study shares on any preset: GeRe's reference objective (each
sample's loss on its own, replay texts without BOS) and ZeRO-2."""

SMOKE_SETTINGS = {"train": {"max_steps_per_task": 2}}
"""--smoke-test, on top of the demo's smoke settings: two steps a task."""


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default="0,1,2", help="Seeds, comma-separated (default: 0,1,2).")
    names = [b["@baseline"] for b in BASELINES]
    p.add_argument(
        "--rows",
        default=None,
        metavar="A,B,...",
        help=f"Only these rows of the table (default: all: {','.join(names)}).",
    )
    p.add_argument(
        "--world-seed", type=int, default=0, help="Seed of the generated world. Default: 0."
    )


def rows(args: argparse.Namespace) -> list[dict]:
    """The table's rows that --rows names (all by default); ConfigError naming an unknown one."""
    from harness.config import ConfigError
    from harness.suggest import did_you_mean

    names = [b["@baseline"] for b in BASELINES]
    wanted = [r.strip() for r in (getattr(args, "rows", None) or "").split(",") if r.strip()]
    unknown = [r for r in wanted if r not in names]
    if unknown:
        raise ConfigError(
            [
                f"--rows: {unknown[0]!r} is not a row of the table{did_you_mean(unknown[0], names)}; "
                f"rows: {', '.join(names)}"
            ]
        )
    return [b for b in BASELINES if not wanted or b["@baseline"] in wanted]


def grid(args: argparse.Namespace) -> list:
    return [rows(args), axis("seed", seed_list(args.seeds))]


GRID = grid(argparse.Namespace(seeds="0,1,2"))


SMOKE = [BASELINES]


def smoke(args: argparse.Namespace) -> list:
    return [rows(args)]


def prepare(args: argparse.Namespace, base: dict) -> dict:
    """On the world preset (and the smoke test): the demo's settings, world and base model
    (the demo's own preparation), so the rows sit beside the demo's table. Other presets (the
    8B one) keep their own settings: the paper's table."""
    if args.preset != "world":
        return base
    demo = _demo()
    layers = [demo["SETTINGS"], SETTINGS]
    if args.smoke_test:
        layers += [demo["SMOKE_SETTINGS"], SMOKE_SETTINGS]
    layers.append(dict(parse_override(s) for s in args.set))
    for layer in layers:
        base = merge(base, layer)
    args.corpus = None
    return demo["prepare"](args, base)


def present(args: argparse.Namespace, summary) -> None:
    from results.analysis import baselines_table
    from results.io import read_study, study_dir

    tables = read_study(study_dir(args.out, NAME))
    print()
    print("The continual-learning table (mean ± std over seeds; %, perplexity as is):")
    print(baselines_table(tables["summary"], tables.get("accuracy")).to_string())


def run(argv: list[str] | None = None) -> int:
    return main(
        NAME,
        __doc__,
        grid,
        smoke,
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
