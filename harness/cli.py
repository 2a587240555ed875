"""Command line: ``python -m harness run ...`` runs one trial in this process, without Ray.

Every config field is an option (``--train.lr 1e-4``), documented by the docstring under the
field in harness/config/; every setting of every replay method is one too
(``--replay.settings.k 1.5``), documented under its field in the method's settings dataclass
(:mod:`harness.config.replay_methods`). Precedence:
defaults < ``--config FILE`` < ``--set K=V`` < options.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from typing import Any

from harness.config import (
    LEGACY_REPLAY_SETTINGS,
    ConfigError,
    field_help,
    from_dict,
    iter_fields,
    iter_intervention_settings,
    iter_method_settings,
    load_file,
    merge,
    option_types,
    parse_typed,
    read_override,
    type_label,
)
from harness.suggest import did_you_mean

log = logging.getLogger("harness")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON trial config (nested keys).")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="Override one dotted key, e.g. --set train.lr=1e-4 (repeatable; or bare: "
        "train.lr=1e-4).",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Settings as --set takes them: train.lr=1e-4 eval.predictions=false.",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    fields = [*iter_fields(), *iter_method_settings(), *iter_intervention_settings()]
    for name, tp, default, doc in _after_settings(fields):
        section = name.split(".")[0] if "." in name else "trial"
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} settings")
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        names = [f"--{name}", *ALIASES.get(name, ())]
        text = f"{field_help(tp, doc)} [default: {shown}]".replace("%", "%%")
        if tp is bool:  # --x / --x true / --no-x
            groups[section].add_argument(
                *names, dest=f"cfg:{name}", nargs="?", action=BoolFlag, metavar="BOOL",
                default=argparse.SUPPRESS, help=f"{text} (--no-{name}: false)",
            )  # fmt: skip
            groups[section].add_argument(
                f"--no-{name}", dest=f"cfg:{name}", action="store_const", const="false",
                default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            )  # fmt: skip
            continue
        groups[section].add_argument(
            *names,
            dest=f"cfg:{name}",
            metavar=type_label(tp).replace(" ", ""),
            default=argparse.SUPPRESS,
            help=text,
        )


BARE = re.compile(r"^[A-Za-z_][\w.-]*=")
"""A bare override, ``section.key=value``."""


class BoolFlag(argparse.Action):
    """``--x`` (true), ``--x true|false``; a bare ``key=value`` right after the flag is not
    taken as its value (``--eval.predictions train.lr=1e-4``) but kept as an override."""

    def __call__(self, parser, namespace, values, option_string=None):
        if isinstance(values, str) and BARE.match(values):
            namespace.bare_after_flags = [*getattr(namespace, "bare_after_flags", []), values]
            values = None
        setattr(namespace, self.dest, "true" if values is None else values)


ALIASES = {"data.root": ("--data-dir",), "train.save_models": ("--save-models",)}
"""Second spellings of per-field options: the studies' --data-dir and --save-models."""


def _after_settings(fields: list) -> list:
    """The replay.settings.NAME options right after replay.settings, the rest in field order."""
    plain = [f for f in fields if not f[0].startswith("replay.settings.")]
    each = [f for f in fields if f[0].startswith("replay.settings.")]
    at = next((i + 1 for i, f in enumerate(plain) if f[0] == "replay.settings"), len(plain))
    return [*plain[:at], *each, *plain[at:]]


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None):
    """Build the validated TrialConfig from --config, --set and the per-field options."""
    data: dict[str, Any] = dict(base or {})
    if args.config:
        data = merge(data, load_file(args.config))
    overrides: dict[str, Any] = {}
    problems: list[str] = []
    types = option_types()
    bare = [*getattr(args, "overrides", []), *getattr(args, "bare_after_flags", [])]
    for item in [*bare, *args.set]:
        try:
            key, value = read_override(item, types)  # by the field's type, not as YAML
            overrides[key] = value
        except ConfigError as exc:
            problems.extend(exc.problems)
    for key, raw in vars(args).items():
        if key.startswith("cfg:"):
            try:
                overrides[key[4:]] = parse_typed(key[4:], raw, types[key[4:]])
            except ConfigError as exc:
                problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return from_dict(merge(data, overrides))


def summary_table(result, cfg) -> str:
    """The final human-readable summary of a trial: accuracy matrix, general ability, metrics."""
    import pandas as pd

    from results import storage
    from results.io import read_records, record_path, study_dir
    from results.schema import schema_for

    def own(kind: str) -> pd.DataFrame:  # this trial's file only: others may be damaged
        path = record_path(cfg.out, kind, study=cfg.study, trial_id=result.trial_id)
        return (
            read_records(path, kind)
            if storage.is_file(path)
            else schema_for(kind).empty_table().to_pandas()
        )

    study = study_dir(cfg.out, cfg.study)
    acc, gen = own("accuracy"), own("general")
    lines = []
    if len(acc):
        mat = acc.pivot_table(
            index=["stage", "after_task"], columns="task", values="accuracy", sort=False
        )
        mat = mat[acc.sort_values("task_position").task.unique()]
        g = gen.set_index(["stage", "after_task"])[["accuracy", "ppl"]].rename(
            columns={"accuracy": "general_acc", "ppl": "general_ppl"}
        )
        lines.append(
            "Accuracy after each stage (rows) on each task (columns), with general ability:"
        )
        lines.append(mat.join(g).to_string(float_format=lambda x: f"{x:.3f}"))
    s = result.summary
    metrics = {k: s[k] for k in ("ap", "aia", "bwt", "fwt", "forgetting") if k in s}
    lines.append("")
    lines.append(
        f"status={s['status']}  method={s['method']}  tuning={s['tuning']}  "
        + "  ".join(f"{k}={v:.3f}" for k, v in metrics.items())
        + f"  wall={s['wall_time_s']:.1f}s"
    )
    if result.train_seconds:
        lines.append(
            f"training: {result.train_tokens} tokens in {result.train_seconds:.1f}s "
            f"({result.train_tokens / result.train_seconds:.0f} tokens/s)"
        )
    lines.append(f"results: {study}")
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.checkpoints import LocalCheckpointHook
    from harness.data import DataError
    from results.ledger import check_output

    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    log.info("trial %s: %s", cfg.id, json.dumps(cfg.to_dict(), sort_keys=True))
    t0 = time.perf_counter()
    hooks = [] if args.no_checkpoints else [LocalCheckpointHook()]
    if args.tracker:
        from harness.tracking import TrackerHook, check_tracker

        try:
            check_tracker(args.tracker)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        hooks.append(TrackerHook(args.tracker))
    from harness.claim import claimed

    try:  # a bad --out is reported before anything is read from it or any model is built
        check_output(cfg)
        from harness.inputs import lm_eval_problem

        if problem := lm_eval_problem(cfg):
            raise ConfigError([problem])
        with claimed(cfg):  # one run of a trial id at a time: its results and checkpoint
            return _run_claimed(args, cfg, hooks, t0)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_claimed(args: argparse.Namespace, cfg, hooks: list, t0: float) -> int:
    from harness import checkpoints
    from harness.trial import run_trial, stored_completed
    from harness.trial_state import TrialResult
    from results.io import study_dir

    if args.rerun or args.overwrite:
        checkpoints.remove(cfg)
    elif (done := stored_completed(cfg)) is not None:
        from results.ledger import data_changed, stored_fingerprint

        if stored_fingerprint(done) is not None:  # the same settings, but the same data?
            from harness.data import DataError
            from harness.inputs import fingerprint_for

            try:
                mine = fingerprint_for(cfg)
            except DataError as exc:  # results here, data not: report them, say so
                log.warning("trial %s: its data cannot be read to compare (%s)", cfg.id, exc)
                mine = None
            if changed := data_changed(cfg, done, mine):
                raise ConfigError([changed])
        log.info(
            "trial %s already completed with these settings (results in %s): nothing to "
            "do; pass --rerun to run it again",
            cfg.id,
            study_dir(cfg.out, cfg.study),
        )
        print(summary_table(TrialResult(cfg.id, done["status"], done), cfg))
        return 0
    if args.no_checkpoints and checkpoints.checkpoint_dir(cfg).exists():
        log.warning(
            "trial %s: removing the checkpoint of an earlier, interrupted run (%s): with "
            "--no-checkpoints this run starts over and would leave it behind for ever",
            cfg.id,
            checkpoints.checkpoint_dir(cfg),
        )
        checkpoints.remove(cfg)
    resume = None if args.no_checkpoints else checkpoints.resumable(cfg)
    result = run_trial(
        cfg,
        progress=not args.no_progress,
        resume_from=resume,
        hooks=hooks,
        overwrite=args.overwrite,
        rerun=args.rerun,
    )
    print(summary_table(result, cfg))
    log.info("done in %.1fs", time.perf_counter() - t0)
    return 0 if result.status == "completed" else 1


def _version() -> str:
    """The harness's version with its git revision where it runs from a checkout (no torch)."""
    from harness.provenance import version_string

    return f"gere-harness {version_string()}"


def build_parser() -> argparse.ArgumentParser:
    from harness.tracking import TRACKERS  # the one list of trackers

    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Continual-learning trials: how much does fine-tuning make a causal LM forget, "
        "and which replay methods prevent it?",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="Run one trial in this process (no Ray): evaluate, then train on each task and "
        "re-evaluate; write Parquet results.",
        description="Run one continual-learning trial in this process, without Ray. Before the "
        "first task and after every task it scores every task and general ability, and writes "
        "Parquet records under <out>/study=<study>/ (see docs/results-schema.md). "
        "Precedence: defaults < --config < --set < the per-field options below.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_config_options(run)
    run.add_argument(
        "--print-config", action="store_true", help="Print the validated config and exit."
    )
    run.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    run.add_argument(
        "--tracker",
        choices=sorted(TRACKERS),
        default=None,
        help="Log the trial as a run of this experiment tracker (settings as params, the "
        "training curve every train.log_every steps, each task's scores): mlflow "
        "(MLFLOW_TRACKING_URI), wandb (WANDB_PROJECT, WANDB_MODE=offline) or tensorboard "
        "(event files in <out>/_tensorboard/<study>/<trial id>).",
    )
    run.add_argument(
        "--rerun",
        action="store_true",
        help="Run the trial again although it already completed with these settings (by "
        "default that is reported and nothing runs), ignoring any checkpoint.",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace the results stored under this trial id although they come from other "
        "settings (by default refused before anything is built).",
    )
    run.add_argument(
        "--no-checkpoints",
        action="store_true",
        help="Save no end-of-task checkpoint (by default one is kept beside the results, at "
        "<out>/study=<study>/_checkpoints/<trial_id>/, so re-running the same command after a "
        "crash or kill resumes after the last finished task; removed when the trial ends).",
    )
    run.set_defaults(func=cmd_run)
    sub.add_parser(
        "demo",
        add_help=False,
        help="The main job: the offline default study (world, base, none vs tm); an alias for "
        "python studies/demo.py (its options: python -m harness demo --help).",
    )
    sub.add_parser(
        "study",
        add_help=False,
        help="Run a study script of studies/ by name: gere study lr_robustness [options] = "
        "python studies/lr_robustness.py [options] (also from an installed package).",
    )
    from harness.data.prepare import add_data_parser  # data prepare long-sequence

    add_data_parser(sub)
    from harness.prepared_models import add_model_parser  # model prepare smollm2-135m

    add_model_parser(sub)
    return parser


def _study(argv: list[str]) -> int:
    """``gere study NAME [options]`` = ``python studies/NAME.py [options]``."""
    import importlib.util
    import pkgutil
    import runpy

    import studies

    names = sorted(m.name for m in pkgutil.iter_modules(studies.__path__))
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in names:
        given = f"unknown study {argv[0]!r}{did_you_mean(argv[0], names)}; " if argv else ""
        stream = sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr
        print(
            f"{given}usage: gere study NAME [options]  (NAME one of {', '.join(names)}; "
            "gere study NAME --help shows its options)",
            file=stream,
        )
        return 0 if stream is sys.stdout else 2
    assert importlib.util.find_spec(f"studies.{argv[0]}") is not None
    sys.argv = [f"studies/{argv[0]}.py", *argv[1:]]
    try:
        runpy.run_module(f"studies.{argv[0]}", run_name="__main__")
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


def _subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _unknown_option(option: str, known: list[str]) -> str:
    option = option.split("=")[0]
    legacy = option.removeprefix("--replay.")
    if option.startswith("--replay.") and legacy in LEGACY_REPLAY_SETTINGS:
        method, setting = LEGACY_REPLAY_SETTINGS[legacy]
        return (
            f"unknown option {option!r}: it is now '--replay.settings.{setting}' (a setting of "
            f"replay method {method!r})"
        )
    return f"unknown option {option!r}{did_you_mean(option, known)}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo is a study with options of its own
        from harness.demo import main as demo

        return demo(argv[1:])
    if argv[:1] == ["study"]:  # a study script of studies/, also from an installed package
        return _study(argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "run":  # bare key=value after an option: argparse leaves them over
        bare = [u for u in unknown if BARE.match(u)]
        args.overrides = [*args.overrides, *bare]
        unknown = [u for u in unknown if not BARE.match(u)]
    if unknown:
        known = [o for a in _subcommand(parser, args.command)._actions for o in a.option_strings]
        msgs = [_unknown_option(u, known) for u in unknown if u.startswith("--")]
        parser.error(
            "; ".join(msgs or [f"unexpected arguments: {' '.join(unknown)}"]) + "; see --help"
        )
    return args.func(args)
