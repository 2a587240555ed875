"""Does a "forgetful" base -- token embeddings reset every K steps while pretraining -- adapt
to a new language better, on a small budget, than a standard base?

Question: Chen et al. (2023, "Improving language plasticity via pretraining with active
forgetting") pretrain RoBERTa resetting the token embeddings every K updates, then adapt it to
a new language by relearning the embeddings with the body frozen. Reported: first language 85.1
(forgetful) vs 86.1 (standard); after adapting on ~5M tokens 62.7 vs 53.3; with the adaptation
cut from 125,000 to 5,000 steps, 57.8 vs 37.2. Here: the world base (a small Llama, 400
pretraining steps) pretrained two ways -- standard, and forgetful with the embeddings (and tied
head) redrawn every --reset-every steps (default 100: resets at 100, 200, 300) -- then adapted
to the world respelled by a letter cipher (``harness.world.language``: the same facts and
grammar, every word new) with a tokenizer fitted to the respelled corpus and fresh embeddings:
(a) embeddings only, the body frozen (Chen et al.'s protocol), and (b) every parameter. Scored:
the knowledge probe in the new language after adapting, and in the first language before.

Grid: base in {standard, forgetful} x adaptation in {embeddings, full} x budget in --budgets
(default 40 and 400 steps of 32 x 128 tokens; 400 = the base's own pretraining budget) x seed
in --seeds (default 0, 1, 2: the embedding draw and the batch order; each base is pretrained
once, with seed 0): 24 adaptations, plus each base's first-language probe. Smoke: a tiny base
(1 layer, 20 pretraining steps, reset every 5), budgets 2 and 5, seed 0.

Cost (2-core CPU): the forgetful base ~3 min (the standard base is the cached world base);
an adaptation ~0.3 s per step (40 steps: ~15 s; 400: ~2.5 min), the probe ~5 s: ~35 min for
the grid. Each base and each adaptation is cached by content hash (weights, corpus, settings,
code version); each run's row is written as it finishes, and a re-run skips the runs already
stored, so an interrupted study resumes. Measured 2026-12-01: 40 min for the grid (sharing the
2 cores with a running study). The runs execute in this process, one after another
(they are minutes each on one machine; no Ray).

Results: ``<out>/study=active_forgetting/adaptation/<run>.parquet`` (the ``adaptation`` record
kind of results/schema.py); ``--report`` writes the table and a figure.

Commands:
    python studies/active_forgetting.py --report           # the grid, here (~35 min)
    python studies/active_forgetting.py --smoke-test --report
    python studies/active_forgetting.py --budgets 20,100,400 --seeds 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from pathlib import Path

from harness.config import ConfigError

NAME = "active_forgetting"
RESET_EVERY = 100
BUDGETS = (40, 400)
LANGUAGE_SEED = 1
PROBE_QUESTIONS = 400

log = logging.getLogger("studies.active_forgetting")


def smoke_pretrain_config():
    from harness.world.pretrain import PretrainConfig

    return PretrainConfig(
        vocab_size=512,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        block_size=64,
        batch_size=8,
        steps=20,
        warmup_steps=2,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python studies/{NAME}.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--smoke-test", action="store_true", help="A tiny base, a few steps.")
    p.add_argument("--out", default="runs", help="Results root (default: runs).")
    p.add_argument("--seeds", default=None, help="Adaptation seeds (default: 0,1,2; smoke: 0).")
    p.add_argument(
        "--budgets",
        default=None,
        help=f"Adaptation budgets in steps, comma-separated (default: "
        f"{','.join(map(str, BUDGETS))}; smoke: 2,5).",
    )
    p.add_argument(
        "--reset-every",
        type=int,
        default=None,
        help=f"The forgetful base's embedding reset period in pretraining steps (default: "
        f"{RESET_EVERY}; smoke: 5).",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="A generated world (default: the cached world of seed 0, generated on first use).",
    )
    p.add_argument("--dry-run", action="store_true", help="List the runs, run nothing.")
    p.add_argument(
        "--report",
        action="store_true",
        help="Write the Markdown report after, into <out>/_reports/active_forgetting/.",
    )
    p.add_argument(
        "--figure-format", choices=("png", "pdf", "svg"), default="png", help="Report figures."
    )
    p.add_argument("--dpi", type=int, default=150, help="Report figure resolution.")
    return p


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--{what} {text!r}: give comma-separated non-negative integers")
    return values


def run_id(base: str, adapt: str, steps: int, seed: int) -> str:
    if adapt == "none":
        return f"base={base}"
    return f"base={base},adapt={adapt},steps={steps},seed={seed}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        seeds = _ints(args.seeds or ("0" if args.smoke_test else "0,1,2"), "seeds")
        budgets = _ints(
            args.budgets or ("2,5" if args.smoke_test else ",".join(map(str, BUDGETS))), "budgets"
        )
        if 0 in budgets:
            raise ValueError("--budgets: a budget must be >= 1 step")
        every = (
            args.reset_every
            if args.reset_every is not None
            else (5 if args.smoke_test else RESET_EVERY)
        )
        if every < 1:
            raise ValueError(f"--reset-every {every}: must be >= 1")
        if args.data_dir and not Path(args.data_dir, "world.json").is_file():
            raise ValueError(
                f"--data-dir {args.data_dir!r} is not a generated world (no world.json); "
                "omit it to use the cached default world"
            )
        from harness.config import TrialConfig
        from harness.trial import check_output

        check_output(TrialConfig(out=args.out))  # before any base model is pretrained
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runs = [("standard", "none", 0, 0), ("forgetful", "none", 0, 0)]
    runs += [
        (base, adapt, steps, seed)
        for base in ("standard", "forgetful")
        for adapt in ("embeddings", "full")
        for steps in budgets
        for seed in seeds
    ]
    print(f"study {NAME}: {len(runs)} runs ({'smoke test' if args.smoke_test else 'world base'})")
    for r in runs:
        print(f"  {run_id(*r)}")
    if args.dry_run:
        return 0

    from harness.presets import world_dir
    from harness.world.adapt import ensure_adapted, probe_accuracy
    from harness.world.generate import generate_world
    from harness.world.language import render_language
    from harness.world.pretrain import PretrainConfig, ensure_base_model
    from results import storage
    from results.io import record_path, study_dir, write_records

    world = generate_world(Path(args.data_dir) if args.data_dir else world_dir(0), seed=0)
    language = render_language(
        world.root, world.root.parent / f"{world.root.name}-language{LANGUAGE_SEED}",
        seed=LANGUAGE_SEED,
    )  # fmt: skip
    standard_cfg = smoke_pretrain_config() if args.smoke_test else PretrainConfig()
    configs = {
        "standard": standard_cfg,
        "forgetful": dataclasses.replace(standard_cfg, embedding_reset_every=every),
    }
    print(f"world: {world.root}  new language: {language}")
    bases = {b: ensure_base_model(world.general_train, config=c) for b, c in configs.items()}
    questions = 24 if args.smoke_test else PROBE_QUESTIONS
    corpus2 = language / "general" / "train.jsonl"
    t0 = time.perf_counter()
    for i, (base, adapt, steps, seed) in enumerate(runs, 1):
        rid = run_id(base, adapt, steps, seed)
        if storage.is_file(record_path(args.out, "adaptation", study=NAME, trial_id=rid)):
            log.info("[%d/%d] %s: stored, skipped", i, len(runs), rid)
            continue
        rows = []
        common = {
            "base": base,
            "embedding_reset_every": configs[base].embedding_reset_every,
            "adapt": adapt,
            "budget_steps": steps,
            "seed": seed,
            "chance": 1.0 / world.settings.n_choices,
        }
        if adapt == "none":
            for lang, root in (("first", world.root), ("new", language)):
                c, n = probe_accuracy(bases[base], root, max_questions=questions)
                rows.append(
                    {**common, "language": lang, "probe_accuracy": c / n, "n_correct": c,
                     "n_total": n, "final_loss": math.nan, "wall_time_s": 0.0}
                )  # fmt: skip
        else:
            start = time.perf_counter()
            model = ensure_adapted(bases[base], corpus2, steps=steps, train=adapt, seed=seed)
            summary = json.loads((model / "adapt.json").read_text())
            c, n = probe_accuracy(model, language, max_questions=questions)
            rows.append(
                {**common, "language": "new", "probe_accuracy": c / n, "n_correct": c,
                 "n_total": n, "final_loss": summary["final_loss"],
                 "wall_time_s": summary.get("wall_s", time.perf_counter() - start)}
            )  # fmt: skip
        write_records(args.out, "adaptation", rows, study=NAME, trial_id=rid)
        log.info(
            "[%d/%d] %s: new-language probe %.3f (%.0f s so far)",
            i,
            len(runs),
            rid,
            next(r["probe_accuracy"] for r in rows if r["language"] == "new"),
            time.perf_counter() - t0,
        )
    from results.analysis import adaptation_table
    from results.io import read_study

    where = study_dir(args.out, NAME)
    table = adaptation_table(read_study(where)["adaptation"])
    print()
    print("Knowledge probe (%, mean ± std over seeds): the first language as pretrained, and")
    print("the new language after adapting (embeddings only / full, at each budget in steps):")
    print(table.to_string())
    print(f"(chance = {100 / world.settings.n_choices:.1f}%)")
    print(f"results: {where}")
    if args.report:
        from results.report import write_report

        print(f"report: {write_report(where, fmt=args.figure_format, dpi=args.dpi)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
