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
2 cores with a running study). The bases are pretrained in this process; each run (a base's
probes, or one adaptation and its probe) is a Ray Tune trial, one at a time by default
(--max-concurrent).

Results: ``<out>/study=active_forgetting/adaptation/<run>.parquet`` (the ``adaptation`` record
kind of results/schema.py); ``--report`` writes the table and a figure.

Commands:
    python studies/active_forgetting.py --report           # the grid, here (~35 min)
    python studies/active_forgetting.py --smoke-test --report
    python studies/active_forgetting.py --budgets 20,100,400 --seeds 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.study import Jobs, Study
from results.presentation.active_forgetting import print_table
from studies import run

RESET_EVERY, BUDGETS, LANGUAGE_SEED, PROBE_QUESTIONS = 100, (40, 400), 1, 400


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", default=None, help="Adaptation seeds (default: 0,1,2; smoke: 0).")
    p.add_argument("--budgets", default=None, help="Adaptation budgets in steps, comma-separated "
                   f"(default: {','.join(map(str, BUDGETS))}; smoke: 2,5).")  # fmt: skip
    p.add_argument("--reset-every", type=int, default=None, help="The forgetful base's embedding "
                   f"reset period in pretraining steps (default: {RESET_EVERY}; smoke: 5).")  # fmt: skip


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--{what} {text!r}: give comma-separated non-negative integers")
    return values


def plan(args: argparse.Namespace) -> list[tuple[str, dict]]:
    smoke = args.smoke_test
    seeds = _ints(args.seeds or ("0" if smoke else "0,1,2"), "seeds")
    budgets = _ints(args.budgets or ("2,5" if smoke else ",".join(map(str, BUDGETS))), "budgets")
    if 0 in budgets:
        raise ValueError("--budgets: a budget must be >= 1 step")
    args.every = args.reset_every if args.reset_every is not None else (5 if smoke else RESET_EVERY)
    if args.every < 1:
        raise ValueError(f"--reset-every {args.every}: must be >= 1")
    if args.data_dir and not Path(args.data_dir, "world.json").is_file():
        raise ValueError(f"--data-dir {args.data_dir!r} is not a generated world (no world.json); "
                         "omit it to use the cached default world")  # fmt: skip
    runs = [dict(base=b, adapt="none", steps=0, seed=0) for b in ("standard", "forgetful")]
    runs += [dict(base=b, adapt=a, steps=n, seed=s) for b in ("standard", "forgetful")
             for a in ("embeddings", "full") for n in budgets for s in seeds]  # fmt: skip
    return [(f"base={r['base']}" + ("" if r["adapt"] == "none" else
             f",adapt={r['adapt']},steps={r['steps']},seed={r['seed']}"), r) for r in runs]  # fmt: skip


def prepare(args: argparse.Namespace, planned: list) -> list:
    """The world, its respelled language and both bases (pretrained here, cached by content)."""
    from harness.presets import world_dir
    from harness.world.adapt import prepare_bases

    root = Path(args.data_dir) if args.data_dir else world_dir(0)
    common = prepare_bases(root, smoke=args.smoke_test, reset_every=args.every,
                           language_seed=LANGUAGE_SEED,
                           questions=24 if args.smoke_test else PROBE_QUESTIONS)  # fmt: skip
    args.chance = common["chance"]
    print(f"world: {common['world']}  new language: {common['language']}")
    return [(run_id, {**spec, **common}) for run_id, spec in planned]


def adaptation_rows(spec: dict) -> list[dict]:
    """One run, in a Ray worker (torch is imported there, not for --help)."""
    from harness.world.adapt import adaptation_rows

    return adaptation_rows(spec)


STUDY = Study(
    "active_forgetting", __doc__, [], [], options=options,
    jobs=Jobs("adaptation", plan, adaptation_rows, prepare=prepare, label="world base"),
    present=lambda args, where: print_table(where, chance=args.chance),
)  # fmt: skip

if __name__ == "__main__":
    sys.exit(run(STUDY))
