"""Write a study's report: ``python -m results.report <study dir> [--report-dir DIR]
[--format png|pdf|svg] [--dpi N]``.

Reads every record kind through ``results.io.read_study`` and writes ``<report dir>/report.md``
with its figures beside it (PNG by default; PDF or SVG for a paper, at ``--dpi``, default 150).
The default report directory is ``<out>/_reports/<study>/`` for the study ``<out>/study=<study>``
(:func:`default_report_dir`): beside the dataset, not in it, and its leading underscore makes
``pyarrow.dataset`` and ``pandas.read_parquet`` skip it, so ``pd.read_parquet(<out>/study=<s>)``
and ``pyarrow.dataset.dataset(<out>, partitioning="hive")`` read the records only.

The report is meant for someone who did not run the study: it says what was varied, how many
trials finished, shows the paper-style table and every table and figure that applies to the
data present (seed-mean accuracy matrices and their difference to ``none``, training curves,
...), each with a line on how to read it, and defines every metric once, in its Glossary.
Figure titles name settings ("tm, lr 3×, seed mean (3)"), not trial ids. Sections whose records
are absent are left out; a figure that cannot be drawn from the data is replaced by a note
saying why, never by a crash.

The sections are generic (:mod:`results.trials`, :mod:`results.setting_sections`,
:mod:`results.record_sections`), shown wherever their setting varies or their records are,
plus the study's own: the presentation module of the study's stored name
(:func:`results.presentation.for_study`), whose labels apply to every table and whose section
goes where it says (``PLACE``). A study without one gets the generic sections only.

Trials that did not complete (diverged, failed, still running) and completed trials whose
records are incomplete (accuracy stages missing, records without a summary row) are listed by
name under "Trials" with the reason, and marked wherever one of them is shown. A damaged
results file (not Parquet, truncated, another schema) stops the report with every such file
named (exit status 2); ``--skip-damaged`` writes the report from the other files and lists the
skipped ones in it. A path that does not exist or holds no summary records (nor records a
study writes itself, ``KINDS`` of its presentation) is an error too.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

import pandas as pd

from results import analysis as an
from results import plots, storage
from results.io import DamagedResultsError, NewerResultsError, read_study
from results.presentation import for_study
from results.record_sections import (
    section_curves,
    section_general,
    section_heatmaps,
    section_landscape,
    section_mean_matrices,
    section_plasticity,
)
from results.schema import SCHEMA_VERSION
from results.setting_sections import (
    section_lora,
    section_lr,
    section_main,
    section_methods,
    section_prevented,
    section_replay_size,
)
from results.storage import Location
from results.trials import (
    grouping,
    incomplete_trials,
    reference_subset,
    representatives,
    section_damaged,
    section_setup,
    section_trials,
)
from results.writer import GLOSSARY, Writer

__all__ = ["build_report", "default_report_dir", "main", "write_report"]


def default_report_dir(study_dir: Location) -> Location:
    """Where a study's report goes by default: ``<out>/_reports/<study>/`` for
    ``<out>/study=<study>`` — beside the dataset, not inside its hive partitions. The leading
    underscore matters: ``pyarrow.dataset`` (and so ``pandas.read_parquet``) skips paths
    starting with ``_`` or ``.``, so the report's Markdown and figures never break
    ``pyarrow.dataset.dataset(<out>, partitioning="hive")``. For an output root holding several
    studies: ``<root>/_reports/all/``; for one results file: ``<dir>/_reports/<file stem>/``.
    An object-store study (``s3://...``) gets the same layout in the same store.
    """
    study_dir = storage.location(study_dir)
    leaf, up = storage.name(study_dir), storage.parent(study_dir)
    if leaf.startswith("study="):
        return storage.join(up, "_reports", leaf.removeprefix("study="))
    if leaf.endswith(".parquet"):
        return storage.join(up, "_reports", leaf.removesuffix(".parquet"))
    return storage.join(study_dir, "_reports", "all")


def write_report(
    study_dir: Location,
    report_dir: Location | None = None,
    fmt: str = "png",
    dpi: int = plots.DEFAULT_DPI,
    *,
    skip_damaged: bool = False,
) -> Path:
    """Write ``<report_dir>/report.md`` and its figures for the study at ``study_dir``; return
    the path of ``report.md``.

    ``report_dir`` defaults to :func:`default_report_dir` (``<out>/_reports/<study>/``, outside
    the dataset). Figures are saved as ``fmt`` (``png``, ``pdf`` or ``svg``) at ``dpi``; a bad
    format or dpi raises ``ValueError`` before anything is read or written. Damaged results
    files raise ``DamagedResultsError`` naming all of them, before anything is written; with
    ``skip_damaged=True`` the report is built from the other files and lists the skipped ones.
    A study without summary records gets a report that says so.
    """
    plots.check_save_options(fmt, dpi)
    study_dir = storage.location(study_dir)
    data, skipped = _load(study_dir, skip_damaged=skip_damaged)
    return _write_report(study_dir, report_dir, data, skipped, fmt=fmt, dpi=dpi)


def build_report(
    study: str | Path,
    out: str | Path | None = None,
    *,
    skip_damaged: bool = False,
    fmt: str = "png",
    dpi: int = plots.DEFAULT_DPI,
) -> Path:
    """:func:`write_report` under its former name (``out`` = the report directory)."""
    return write_report(study, out, fmt, dpi, skip_damaged=skip_damaged)


def _load(
    study: Location, *, skip_damaged: bool
) -> tuple[dict[str, pd.DataFrame], dict[Location, str]]:
    """``read_study`` and the damaged files it skipped (read twice only when some are); the
    summary's list-valued settings (``tasks``) as strings (``analysis.hashable_settings``)."""
    try:
        data, skipped = read_study(study), {}
    except DamagedResultsError as e:
        if not skip_damaged:
            raise
        data, skipped = read_study(study, skip_damaged=True), e.problems
    return {**data, "summary": an.hashable_settings(data["summary"])}, skipped


def _write_report(
    study: Location,
    out: Location | None,
    data: dict[str, pd.DataFrame],
    skipped: dict[Location, str],
    *,
    fmt: str = "png",
    dpi: int = plots.DEFAULT_DPI,
) -> Location:
    """Write the report into ``out`` (default :func:`default_report_dir`); an object-store
    ``out`` gets it built in a local temp folder, then uploaded (report.md last)."""
    out = storage.location(out) if out is not None else default_report_dir(study)
    if isinstance(out, Path):
        return _write_report_into(study, out, data, skipped, fmt=fmt, dpi=dpi)
    with tempfile.TemporaryDirectory(prefix="gere-report-") as tmp:
        local = _write_report_into(study, Path(tmp), data, skipped, fmt=fmt, dpi=dpi)
        markdown = local.read_bytes()
        local.unlink()
        storage.upload_dir(Path(tmp), out)  # the figures first: report.md links to them
        return storage.write(storage.join(out, local.name), lambda f: f.write(markdown))


def _studies(data: Mapping[str, pd.DataFrame]) -> list[str]:
    """The study names the records carry (the ``study`` column of every kind), sorted."""
    names: set[str] = set()
    for df in data.values():
        if df is not None and len(df) and "study" in df:
            names.update(map(str, df["study"].unique()))
    return sorted(names)


def _presentations(data: Mapping[str, pd.DataFrame]) -> list[ModuleType]:
    """The presentation module of each study the records hold, by its stored name."""
    return [p for p in map(for_study, _studies(data)) if p is not None]


def _own_records(data: Mapping[str, pd.DataFrame], shown: list[ModuleType]) -> list[pd.DataFrame]:
    """The records of the kinds the shown studies write themselves (``KINDS``) present."""
    kinds = [k for p in shown for k in getattr(p, "KINDS", ())]
    return [data[k] for k in kinds if k in data and data[k] is not None and len(data[k])]


def _study_sections(
    w: Writer, shown: list[ModuleType], place: str, data: dict[str, pd.DataFrame]
) -> None:
    """The sections of the shown studies that go at ``place``."""
    for p in shown:
        if getattr(p, "PLACE", None) == place and hasattr(p, "section"):
            p.section(w, data)


def _write_report_into(
    study: Location,
    out: Path,
    data: dict[str, pd.DataFrame],
    skipped: dict[Location, str],
    *,
    fmt: str,
    dpi: int,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    shown = _presentations(data)
    for p in shown:  # the study's own labels (a method name, a regime), before any table
        if hasattr(p, "prepare"):
            data = p.prepare(data)
    summary = data["summary"]
    w = Writer(out, fmt, dpi)

    if len(summary):
        names = sorted(summary["study"].unique())
    else:  # a study reported from the records it writes itself
        own = _own_records(data, shown)
        names = sorted({s for df in own for s in df["study"].unique()}) or [storage.name(study)]
    w.add(
        f"# Study report: {', '.join(map(str, names))}",
        f"Source: `{study}` (results schema v{SCHEMA_VERSION}). Generated by "
        "`python -m results.report`; tables are computed by `results.analysis`, so they can be "
        "reproduced in a notebook from the same Parquet files. Metrics and units are defined "
        "once, in the [Glossary](#glossary) at the end.",
    )
    if skipped:
        section_damaged(w, study, skipped)
    before = len(w.lines)
    _study_sections(w, shown, "start", data)
    if summary.empty:
        if len(w.lines) == before:
            w.add(
                "No summary records found: no trial has finished yet, so there is nothing to "
                "tabulate."
            )
    else:
        flagged = incomplete_trials(data)
        varying = section_setup(w, summary)
        group = grouping(summary, varying)
        section_trials(w, summary, group, flagged)
        section_main(w, summary, group, data.get("general"), flagged)
        _study_sections(w, shown, "results", data)
        if "lr_multiplier" in varying:
            section_lr(w, summary)
        if "replay_size" in group:
            section_replay_size(w, summary)
        if "method" in varying:
            section_methods(w, summary)
        if "tuning" in varying:
            section_lora(w, summary)
        section_prevented(w, summary)

        base, _ = reference_subset(summary, keep=())
        reps = representatives(base, flagged)
        if len(data["general"]):
            section_general(w, data["general"], summary, varying)
        if len(data["accuracy"]):
            section_mean_matrices(w, data["accuracy"], summary, group)
            section_heatmaps(w, data["accuracy"], reps, flagged, summary)
        curve = data.get("curve")
        if curve is not None and len(curve):
            section_curves(w, curve, summary, group)
        land = data.get("landscape")
        if land is not None and len(land):
            section_landscape(w, land, summary, reps)
        _study_sections(w, shown, "figures", data)
        plast = data.get("plasticity")
        if plast is not None and len(plast):
            by_regime = summary.assign(method=summary["regime"]) if "regime" in varying else summary
            section_plasticity(w, plast, by_regime)

    w.add("## Glossary", *(f"- {g}" for g in GLOSSARY))
    path = out / "report.md"
    path.write_text("\n".join(w.lines).rstrip() + "\n", encoding="utf-8")
    return path


_LAYOUT = (
    "expected a study directory <out>/study=<name> holding <kind>/<trial_id>.parquet files "
    "(summary/, accuracy/, ...), or an output root <out> holding study=* directories"
)


def _positive_int(text: str) -> int:
    """argparse type of --dpi: a positive integer, else an error naming the value and the fix."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a positive integer; give the resolution in dots per inch, e.g. "
            f"--dpi {plots.DEFAULT_DPI} (screen) or --dpi 300 (print)"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the report and print its path.

    Exit status 2, with the reason on stderr and no report written, when the path does not
    exist, holds no summary records (nor records of a kind its study writes itself, ``KINDS``
    of its presentation, such as active_forgetting's adaptation runs), or holds damaged files
    (without ``--skip-damaged``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m results.report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "study",
        type=storage.location,
        help="study directory (<out>/study=<name>), local or an object-store URI "
        "(s3://bucket/prefix/study=<name>, gs://...)",
    )
    parser.add_argument(
        "--report-dir",
        "--out",
        dest="report_dir",
        type=storage.location,
        default=None,
        help="where report.md and its figures go (default: <out>/_reports/<name> for "
        "<out>/study=<name>, outside the dataset; --out is the former name)",
    )
    parser.add_argument(
        "--format",
        dest="fmt",
        type=str.lower,
        choices=plots.FORMATS,
        default="png",
        help="figure file format (default: png; pdf or svg for a paper, fonts embedded)",
    )
    parser.add_argument(
        "--dpi",
        type=_positive_int,
        default=plots.DEFAULT_DPI,
        help=f"figure resolution in dots per inch (default: {plots.DEFAULT_DPI})",
    )
    parser.add_argument(
        "--skip-damaged",
        action="store_true",
        help="report from the readable files, listing (and logging) the damaged ones it skipped "
        "(default: stop, naming every damaged file)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def fail(message: str) -> int:
        print(f"python -m results.report: error: {message}", file=sys.stderr)
        return 2

    try:
        found = storage.exists(args.study)
    except OSError as e:  # an object store that cannot be reached, or refuses the credentials
        return fail(
            f"cannot read {args.study} ({_first_line(e)}); check the bucket name and the credentials "
            "(results/storage.py lists the variables each store reads)"
        )
    if not found:
        return fail(f"{args.study} does not exist; {_LAYOUT}")
    try:
        data, skipped = _load(args.study, skip_damaged=args.skip_damaged)
    except (DamagedResultsError, NewerResultsError) as e:
        return fail(str(e))
    except OSError as e:  # an object store failing mid-read (network, permissions)
        return fail(f"cannot read {args.study}: {_first_line(e)}")
    if data["summary"].empty and not _own_records(data, _presentations(data)):
        others = sorted(k for k, df in data.items() if len(df))
        found = (
            f"records of {', '.join(others)} but no summary records"
            if others
            else "no results records"
        )
        if skipped:
            found += f" ({len(skipped)} damaged file(s) skipped)"
        return fail(f"{args.study} holds {found}, so there is nothing to report; {_LAYOUT}")
    try:
        path = _write_report(args.study, args.report_dir, data, skipped, fmt=args.fmt, dpi=args.dpi)
    except OSError as e:  # an unwritable --report-dir (a local folder or a bucket)
        where = args.report_dir or default_report_dir(args.study)
        return fail(f"cannot write the report to {where}: {_first_line(e)}")
    print(path)
    return 0


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
