"""The command line shared by every study script in studies/.

A study script describes itself in one :class:`Study` -- its question (docstring), its grid
and smoke grid, and, when its trials need settings beyond the preset's, ``settings`` and
``smoke_settings`` (dotted keys or nested dicts) -- and runs it (``studies.run(STUDY)``).
Everything else -- presets, overrides, validation of the whole grid on the driver, running it
on Ray, the summary table, the report -- lives here. tests/harness/test_presets.py reads every study's
``STUDY`` and validates its grids under every preset.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ConfigError, load_file, merge, option_types, read_override
from harness.config.schema import SaveModels
from harness.grid import Axis, axis, expand_grid
from harness.presets import PRESETS, base_config
from harness.tracking import TRACKERS
from harness.tune import run_study

__all__ = ["Study", "axis", "main", "study_base"]

log = logging.getLogger("harness.study")


def landscape_cost(configs) -> str:
    """One line: what the grid's landscape slices cost, in forward passes."""
    from harness.data.benchmark import ORDERS
    from harness.landscape import cost_forward_passes

    total, per = 0, set()
    for c in configs:
        spec = c.data.tasks.strip()
        n_tasks = len(ORDERS[spec]) if spec in ORDERS else len([t for t in spec.split(",") if t])
        n = cost_forward_passes(c.landscape, n_tasks) if c.landscape.enabled else 0
        total += n
        per.add(n)
    ls = configs[0].landscape
    return (
        f"landscape: {'/'.join(map(str, sorted(per)))} forward passes per trial, {total} in all "
        f"(each a batch of <= {ls.batch_size} x {ls.max_tokens} tokens, no backward)"
    )


def build_parser(
    name: str, doc: str | None, preset: str = "tiny", *, trials: bool = True
) -> argparse.ArgumentParser:
    """The study's options; ``trials=False``: a study of :class:`Jobs` (no preset, no trial
    settings)."""
    from harness.config.docs import plain_text

    p = argparse.ArgumentParser(
        prog=f"python studies/{name}.py",
        description=plain_text(doc or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="Tiny model, 2 tasks, a few steps, the SMOKE grid; 2 DeepSpeed ZeRO-2 workers "
        "per trial on CPU. Minutes on a laptop. (--preset smollm2-135m keeps its real model "
        "and ZeRO-3, on 2 tasks of a few examples.)"
        if trials
        else "The study's smallest form: a tiny model, a few steps. Minutes on a laptop.",
    )
    if not trials:
        return _common_options(p, trials=False)
    p.add_argument(
        "--preset",
        default=preset,
        choices=PRESETS,
        help=f"Model/data/scale preset (default: {preset}; smollm2-135m is a real model, "
        "prepared once with 'gere model prepare smollm2-135m'; llama-3.1-8b needs a GPU "
        "cluster).",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML or JSON of base settings for every trial (nested or dotted keys), applied "
        "after the preset and the study's own settings; --set wins over it.",
    )
    p.add_argument(
        "--tracker",
        choices=sorted(TRACKERS),
        default=None,
        help="Log every trial as a run of this experiment tracker through Ray Tune's own "
        "integration (settings as the run's config; the training curve every train.log_every "
        "steps; per-task metrics): mlflow (MLFLOW_TRACKING_URI), wandb (WANDB_PROJECT, "
        "WANDB_MODE=offline) or tensorboard (event files in the Ray storage).",
    )
    p.add_argument(
        "--generate-world",
        action="store_true",
        help="With --data-dir naming a directory that does not exist: generate the offline "
        "world there (without this flag a missing --data-dir is an error, so a typo never "
        "silently runs on generated data).",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace results stored under this study's trial ids although they come from "
        "other settings (by default refused before anything runs).",
    )
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="Override a base setting for every trial, e.g. --set train.epochs=2 (or bare: "
        "train.epochs=2).",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="Settings for every trial, as --set takes them: train.lr=1e-4 eval.predictions=false.",
    )
    p.add_argument(
        "--save-models",
        choices=typing.get_args(SaveModels),
        default=None,
        help="Keep each trial's fine-tuned model as a Hugging Face directory under "
        "<out>/study=<name>/_models/<trial_id>/stage=<k>/ (train.save_models; default none): "
        "after the last task, or after every task. About 16 GB per save at 8B (bfloat16).",
    )
    return _common_options(p, trials=True)


def _common_options(p: argparse.ArgumentParser, *, trials: bool) -> argparse.ArgumentParser:
    """The options of every study: where results go, how many at once, the report."""
    p.add_argument(
        "--out",
        default=None,
        help="Results root, a directory or an object-store URI (s3://bucket/prefix, gs://...); "
        "Parquet lands in <out>/study=<name>/ (default: "
        + ("out of --set or --config, else runs)." if trials else "runs)."),
    )
    p.add_argument(
        "--storage-path",
        default=None,
        help="Ray Tune/Train storage for checkpoints (shared storage such as s3://bucket/gere "
        "or an NFS path on a multi-node cluster). Default: <out>/_ray (a folder Parquet "
        "readers skip, so <out> stays a pure dataset).",
    )
    p.add_argument(
        "--data-dir",
        "--data.root",
        dest="data_dir",
        default=None,
        help="Data root (long_sequence/, general/, mmlu/). Default: the preset's "
        "(the generated world for tiny/world; $GERE_DATA_DIR or ../shared/data for "
        "smollm2-135m and llama-3.1-8b)."
        if trials
        else "A generated world (default: the cached world of seed 0, generated on first use).",
    )
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="Trials at once (default: derived from the cluster's CPUs/GPUs)."
        if trials
        else "Runs at once (default: 1, one after another).",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="Validate and list the grid, run nothing."
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="Write the Markdown report (tables + figures) after the study, into "
        "<out>/_reports/<name>/ (outside the study's dataset folder).",
    )
    p.add_argument(
        "--figure-format",
        choices=("png", "pdf", "svg"),
        default="png",
        help="Figure format of the report (pdf/svg for papers; default png).",
    )
    p.add_argument(
        "--dpi", type=int, default=150, help="Figure resolution of the report (default 150)."
    )
    return p


class _Once(logging.Filter):
    """Lets each (logger, level, message) through once."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextlib.contextmanager
def _each_message_once():
    """While the grid's inputs are checked, each log message is shown once (every trial of a
    grid loads the same tasks, so each data warning would repeat per distinct data setting)."""
    filters = {h: _Once() for h in logging.getLogger().handlers}  # one per handler
    for h, once in filters.items():
        h.addFilter(once)
    try:
        yield
    finally:
        for h, once in filters.items():
            h.removeFilter(once)


def default_storage(out: str) -> str:
    """Ray's storage when --storage-path is not given: ``<out>/_ray``. Parquet readers
    (pyarrow, pandas, DuckDB and polars globs) skip folders starting with '_', so ``<out>``
    stays a dataset they read whole."""
    from results import storage

    where = storage.location(out)  # file:///x is the local /x
    return str(storage.join(where if storage.is_uri(where) else Path(where).resolve(), "_ray"))


def study_base(
    preset: str,
    *,
    smoke: bool = False,
    data_dir: str | None = None,
    settings: dict | None = None,
    smoke_settings: dict | None = None,
    overrides: dict | None = None,
    resolve_model: bool = True,
) -> dict[str, Any]:
    """The base config of a study's trials (before its grid): the preset, then the study's
    ``settings``, then ``smoke_settings`` when ``smoke``, then ``overrides`` (--set)."""
    base = base_config(preset, data_dir=data_dir, smoke=smoke, resolve_model=resolve_model)
    base = merge(base, dict(settings or {}))
    if smoke:
        base = merge(base, dict(smoke_settings or {}))
    return merge(base, dict(overrides or {}))


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (mappings of free-form settings kept whole)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and name.count(".") < 1:
            out.update(_dotted(value, f"{name}."))
        else:
            out[name] = value
    return out


def _check_overrides(
    overrides: dict[str, Any], axes: Sequence[Axis], source: str = "--set"
) -> None:
    """ConfigError if --set (or --config) names a key the grid varies (the grid would
    silently win)."""
    varied: dict[str, list] = {}
    for ax in axes:
        for setting in ax:
            for key, value in setting.items():
                if not key.startswith("@"):  # a label, not a setting
                    varied.setdefault(key, []).append(value)
    clash = [k for k in overrides if k in varied]
    if clash:
        raise ConfigError(
            [
                f"{source} {k}={overrides[k]!r}: {k} is an axis of this study's grid (values "
                f"{', '.join(map(repr, dict.fromkeys(varied[k])))}), which would override it "
                "in every trial; drop it, or run a study whose grid does not vary it"
                for k in clash
            ]
        )


def _study_out(given: str | None, overrides: dict, from_file: dict, config: str | None) -> str:
    """The study's results root: --out, else ``out`` of --set, else of --config, else 'runs';
    ConfigError if --out and one of them disagree (one of the two would be ignored)."""
    others = [(f"--set out={overrides['out']}", overrides["out"])] if "out" in overrides else []
    if "out" in from_file:
        others.append((f"out: {from_file['out']} in --config {config}", from_file["out"]))
    for where, value in others:
        if given is not None and str(value) != given:
            raise ConfigError([f"--out {given} and {where} disagree; give the results root once"])
    if given is not None:
        return given
    return str(others[0][1]) if others else "runs"


Axes = Sequence[Axis] | Callable[[argparse.Namespace], Sequence[Axis]]
"""A grid: its axes, or a function of the parsed arguments giving them (a study's options)."""


@dataclass(frozen=True)
class Jobs:
    """The runs of a study that are not harness trials (the active-forgetting study's
    adaptations of a small pretrained model), each a Ray Tune trial
    (:func:`harness.tune.run_jobs`)."""

    kind: str
    """The record kind each run writes (one file per run)."""
    plan: Callable[[argparse.Namespace], list[tuple[str, dict]]]
    """``plan(args) -> [(run id, spec)]``; raises ValueError or ConfigError naming a bad
    option, before any work."""
    run: Callable[[dict], list[dict]]
    """``run(spec) -> rows`` (a module-level function: it runs in a Ray worker)."""
    prepare: Callable[[argparse.Namespace, list], list] | None = None
    """``prepare(args, planned) -> planned``: the driver's set-up after the plan was listed
    (e.g. pretraining the bases every run starts from); returns the runs with their specs."""
    cpus: float = 1.0
    """CPUs each run holds."""
    label: str = "the grid"
    """What a full run is, in the listing's first line (``smoke test`` otherwise)."""


@dataclass(frozen=True)
class Study:
    """What a study script declares; :func:`main` does the rest."""

    name: str
    """The study's name: its results folder ``study=<name>`` and its presentation
    (:mod:`results.presentation`)."""
    doc: str | None
    """The question, grid, cost and commands (the script's docstring; ``--help`` shows it)."""
    grid: Axes
    smoke: Axes
    """The grid of ``--smoke-test``."""
    settings: dict | None = None
    """Settings of every trial, on top of the preset."""
    smoke_settings: dict | None = None
    """On top of ``settings`` under ``--smoke-test``."""
    preset: str = "tiny"
    """The default --preset (a study that provides ``prepare`` resolves its model itself)."""
    options: Callable[[argparse.ArgumentParser], None] | None = None
    """Adds the study's own options to the parser."""
    prepare: Callable[[argparse.Namespace, dict], dict] | None = None
    """``prepare(args, base) -> base``: expensive set-up (a world, a pretrained base model)
    after the grid was validated, so a typo fails first."""
    present: Callable[[argparse.Namespace, Any], None] | None = None
    """``present(args, summary)`` prints the results instead of the summary table."""
    hooks: Sequence = ()
    """Extra stage hooks for every trial (:func:`harness.tune.run_study`)."""
    report: Callable[..., Any] | None = None
    """``report(study_dir, fmt=, dpi=) -> where`` writes the Markdown report (``--report``);
    ``studies.run`` gives :func:`results.report.write_report`."""
    jobs: Jobs | None = None
    """The study's runs when they are not harness trials (then ``grid``/``smoke`` are empty
    and ``present(args, study_dir)`` prints its table)."""


def _check_outputs(study: Study, args: argparse.Namespace) -> None:
    """--report and --dpi, for both kinds of study, before any work."""
    if args.report and study.report is None:
        raise ConfigError(["--report: this study has no report writer; run it with studies.run"])
    if args.dpi <= 0:
        raise ConfigError([f"--dpi {args.dpi}: must be a positive integer, e.g. 150 or 300"])


def _check_storage(storage_path: str | None) -> None:
    """A --storage-path on an object store must be writable, before any work."""
    from results.storage import check_writable, is_uri

    if storage_path and is_uri(storage_path):
        problem = check_writable(storage_path, "--storage-path")
        if problem:
            raise ConfigError([problem])


def main(study: Study, argv: Sequence[str] | None = None) -> int:
    """Run a study: the preset, then ``study.settings``, then ``study.smoke_settings`` under
    --smoke-test; ``--set`` wins over all of them."""
    name, grid, smoke, prepare = study.name, study.grid, study.smoke, study.prepare
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser(name, study.doc, study.preset, trials=study.jobs is None)
    if study.options is not None:
        study.options(parser)
    args = parser.parse_intermixed_args(argv)  # bare key=value before or after options
    if args.dry_run:  # the grid and its cost, not the progress of loading the data
        logging.getLogger().setLevel(logging.WARNING)
    if study.jobs is not None:
        return _main_jobs(study, study.jobs, args)
    from harness.data.release import how_to_get
    from harness.inputs import preflight
    from results.ledger import check_output

    try:
        if args.data_dir and Path(args.data_dir).is_file():
            raise ConfigError(
                [
                    f"--data-dir: {args.data_dir!r} is a file; give the directory that holds "
                    "long_sequence/, general/ and mmlu/"
                ]
            )
        if args.data_dir and not Path(args.data_dir).exists() and not args.generate_world:
            raise ConfigError(
                [
                    f"--data-dir: {args.data_dir!r} does not exist; give the directory that "
                    "holds long_sequence/, general/ and mmlu/, or add --generate-world to "
                    "generate the offline world there"
                    + (
                        f"; {how_to_get(Path(args.data_dir) / 'long_sequence')}"
                        if args.preset in ("llama-3.1-8b", "smollm2-135m")
                        else ""
                    )
                ]
            )
        _check_outputs(study, args)
        types = option_types()
        overrides = dict(read_override(item, types) for item in [*args.overrides, *args.set])
        if args.save_models is not None:
            overrides["train.save_models"] = args.save_models
        from_file = load_file(args.config) if args.config else {}
        args.out = _study_out(args.out, overrides, from_file, args.config)
        base = study_base(
            args.preset,
            smoke=args.smoke_test,
            data_dir=args.data_dir,
            settings=study.settings,
            smoke_settings=study.smoke_settings,
            # merge({}, ...) expands the file's own dotted keys, so --set wins over all of them
            overrides=merge(merge({}, from_file), {**overrides, "out": args.out}),
            resolve_model=prepare is None,
        )
        axes = smoke if args.smoke_test else grid
        axes = axes(args) if callable(axes) else axes
        _check_overrides(overrides, axes)
        _check_overrides(_dotted(from_file), axes, source=f"--config {args.config}:")
        configs = expand_grid(name, base, axes)  # a typo fails here, in milliseconds
        # where results and checkpoints go, before a study's own preparation (world bases)
        check_output(configs[0])
        storage = args.storage_path or default_storage(args.out)
        _check_storage(args.storage_path)
        if prepare is not None:
            configs = expand_grid(name, prepare(args, base), axes)
        with _each_message_once():  # the grid's configs load the same data: say things once
            preflight(configs)
    except (ConfigError, ValueError) as exc:  # DataError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"study {name}: {len(configs)} trials ({args.preset}{', smoke test' if args.smoke_test else ''})"
    )
    for c in configs:
        print(f"  {c.id}")
    if configs[0].landscape.enabled:
        print(landscape_cost(configs))
    if args.dry_run:
        from harness.cost import describe, grid_costs

        print("\n".join(describe(grid_costs(configs))))
        return 0
    from results.io import NewerResultsError

    try:
        summary = run_study(
            configs,
            storage_path=storage,
            max_concurrent=args.max_concurrent,
            hooks=study.hooks,
            overwrite=args.overwrite,
            tracker=args.tracker,
        )
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NewerResultsError as exc:  # results of a newer harness: never replaced
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if study.present is not None:
        study.present(args, summary)
    else:
        cols = [
            c
            for c in (
                "trial_id",
                "status",
                "ap",
                "bwt",
                "general_acc_start",
                "general_acc_final",
                "general_ppl_final",
                "wall_time_s",
            )
            if c in summary
        ]
        print(
            summary[cols]
            .sort_values("trial_id")
            .to_string(index=False, float_format=lambda x: f"{x:.3f}")
        )
    from results.io import study_dir

    where = study_dir(args.out, name)
    print(
        f"results: {where}  (python -c \"from results.io import read_study; read_study('{where}')\")"
    )
    if args.report:
        print(f"report: {study.report(where, fmt=args.figure_format, dpi=args.dpi)}")
    return 0


def _main_jobs(study: Study, jobs: Jobs, args: argparse.Namespace) -> int:
    """:func:`main` for a study of :class:`Jobs`: plan, list, prepare, run, present, report."""
    from harness.config import TrialConfig
    from harness.tune import run_jobs
    from results.io import study_dir
    from results.ledger import check_output

    args.out = args.out or "runs"
    try:
        _check_outputs(study, args)
        _check_storage(args.storage_path)
        planned = jobs.plan(args)
        check_output(TrialConfig(out=args.out))  # the results root, before any preparation
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"study {study.name}: {len(planned)} runs ({'smoke test' if args.smoke_test else jobs.label})"
    )
    for run_id, _ in planned:
        print(f"  {run_id}")
    if args.dry_run:
        return 0
    if jobs.prepare is not None:
        planned = jobs.prepare(args, planned)
    storage = args.storage_path or default_storage(args.out)
    try:
        run_jobs(study.name, args.out, jobs.kind, planned, jobs.run, storage_path=storage,
                 max_concurrent=args.max_concurrent or 1, cpus=jobs.cpus)  # fmt: skip
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    where = study_dir(args.out, study.name)
    if study.present is not None:
        study.present(args, where)
    print(f"results: {where}")
    if args.report:
        print(f"report: {study.report(where, fmt=args.figure_format, dpi=args.dpi)}")
    return 0
