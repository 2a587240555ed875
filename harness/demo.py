"""The main job: the embedded default study, offline, on one machine.

    python -m harness demo                 # world -> pretrained base -> none vs tm -> table

1. Generate the world (general text about fictional people, a knowledge probe about them,
   downstream tasks) into the cache, unless it is there.
2. Pretrain the small base model on the world's general text, unless a base for exactly this
   corpus and settings is cached (content hash), with a progress bar.
3. Run a small study with Ray Tune on a local Ray started in-process: the base model
   fine-tuned on the task sequence with each replay method (default: none and tm), one
   trial per method and seed, Tune's progress table while it runs.
4. Print what each method kept of the base model's general ability, and where the Parquet
   files are.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.config import ConfigError, merge, parse_override
from harness.presets import world_dir

log = logging.getLogger("harness.demo")

STUDY = "demo"

DEMO_BASE = {
    "data": {"max_train_per_task": 300, "max_test_per_task": 150, "max_seq_len": 160},
    "replay": {"corpus": "general/train.jsonl", "size": 200, "max_tokens": 128},
    # 3e-4 learns every task and erodes the probe step by step; at 1e-3 the base model's
    # knowledge is gone after the first task, which leaves replay nothing to protect.
    "train": {"lr": 3e-4, "batch_size": 16, "epochs": 10.0, "warmup_steps": 10, "log_every": 10},
    "eval": {
        "probe": "mmlu",
        "probe_format": "continuation",
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
"""Settings of the demo trials (the study grid adds the method and the seed)."""


def build_parser(sub: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    kw = dict(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p = (
        sub.add_parser(
            "demo", help="The main job: the offline default study (world, base, none vs tm).", **kw
        )
        if sub
        else argparse.ArgumentParser(**kw)
    )
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
        "--out", default="runs", help="Results root; Parquet in <out>/study=demo/. Default: runs."
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
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="Override a trial setting, e.g. --set train.lr=3e-4 (see python -m harness run --help).",
    )
    p.add_argument(
        "--report", action="store_true", help="Also write the Markdown report with figures."
    )
    return p


def method_axis(spec: str) -> list[dict]:
    """'none,tm,tm:dynamic' -> one grid axis; 'method:weight' sets replay.weight too."""
    points = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        name, _, weight = item.partition(":")
        points.append({"replay.method": name, **({"replay.weight": weight} if weight else {})})
    return points


def demo_configs(args: argparse.Namespace):
    """The demo study's trial configs (world and base model are prepared here)."""
    from harness.tune import axis, expand_grid
    from harness.world.generate import generate_world
    from harness.world.pretrain import ensure_base_model

    info = generate_world(world_dir(args.world_seed), seed=args.world_seed)
    corpus = Path(args.corpus).resolve() if args.corpus else info.general_train
    if not corpus.is_file():
        raise ConfigError(
            [f'--corpus {str(corpus)!r} does not exist; give a jsonl file of {{"text": ...}} lines']
        )
    base = merge(
        DEMO_BASE,
        {
            "model": {"name": "tiny"},  # replaced by the pretrained base below
            "data": {"root": str(info.root), "tasks": ",".join(info.tasks)},
            "replay": {"corpus": str(corpus)},
            "out": args.out,
        },
    )
    base = merge(base, dict(parse_override(s) for s in args.set))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    grid = [method_axis(args.methods), axis("seed", seeds)]
    expand_grid(STUDY, base, grid)  # a typo fails here, in milliseconds, before pretraining
    base = merge(base, {"model": {"name": str(ensure_base_model(corpus))}})
    return expand_grid(STUDY, base, grid), info


def results_table(summary):
    """One row per method: general ability kept, tasks learned (means over seeds)."""
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
    from harness.replay import method_names

    rank = {m: i for i, m in enumerate(method_names())}
    return t.loc[sorted(t.index, key=lambda m: (rank.get(m.split(":")[0], len(rank)), m))]


def main(args: argparse.Namespace) -> int:
    from harness.data import DataError
    from harness.inputs import preflight
    from harness.tune import run_study
    from results.io import study_dir

    try:
        configs, info = demo_configs(args)
        preflight(configs)
    except (ConfigError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"world: {info.root}  tasks: {', '.join(info.tasks)}  probe chance: {info.chance:.3f}")
    summary = run_study(configs, storage_path=Path(args.out).resolve() / "ray")
    table = results_table(summary)
    print()
    print(
        "General ability (probe accuracy, held-out perplexity) before -> after the task sequence,"
    )
    print("task AP (mean final accuracy) and BWT, per replay method:")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(
        f"(probe chance = {info.chance:.3f}; drop_prevented = 1 - probe drop / probe drop of 'none')"
    )
    where = study_dir(args.out, STUDY)
    print(f"results: {where}   report: python -m results.report {where}")
    if args.report:
        from results.report import build_report

        print(f"report: {build_report(where, where / 'report')}")
    return 0
