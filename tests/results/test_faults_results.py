"""Faults in stored results: damaged files are named (and can be set aside), the report refuses
paths without results, and trials that are running or have incomplete records are flagged.

The study is the report tests' synthetic one (``tests.test_report.make_study``: 2 methods x 2
LR multipliers x 2 seeds on 3 tasks, one diverged trial), written through ``write_records``;
faults are then injected into its files on disk.
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from results import analysis as an
from results import schema
from results.io import (
    DamagedResultsError,
    damaged_files,
    read_records,
    read_study,
    read_trial_rows,
    record_path,
    trial_problems,
    write_records,
)
from results.report import build_report
from results.schema import KINDS
from results.trials import incomplete_trials
from tests.fixtures import STUDY, make_study

ROOT = Path(__file__).resolve().parents[2]
TRIAL = "tm-lr1-s0"  # a completed trial; tm's representative (AP closest to the median)
OTHER = "none-lr1-s0"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    make_study(tmp_path / "out", extra_kinds=False)
    return tmp_path / "out"


@pytest.fixture
def sdir(out: Path) -> Path:
    return out / f"study={STUDY}"


def _path(out: Path, kind: str, trial_id: str = TRIAL) -> Path:
    return record_path(out, kind, study=STUDY, trial_id=trial_id)


def truncate(path: Path) -> Path:
    """Cut a file to half its size (a copy or write interrupted half-way)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "results.report", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.fixture
def running_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let summaries carry status 'running' (the harness writes it when a trial (re)starts).

    A no-op once results.schema lists 'running' among the allowed statuses; until then the
    summary schema is patched for the test, so the readers' handling of it is tested either way.
    """
    summary = KINDS["summary"]
    field = summary.field("status")
    allowed = schema._allowed(field)
    if "running" not in allowed:
        meta = {**field.metadata, b"allowed": ",".join([*allowed, "running"]).encode()}
        idx = summary.get_field_index("status")
        monkeypatch.setitem(KINDS, "summary", summary.set(idx, field.with_metadata(meta)))


def _rewrite_summary(out: Path, trial_id: str, **changes) -> None:
    rows = read_trial_rows(out, "summary", study=STUDY, trial_id=trial_id)
    write_records(out, "summary", [{**rows[0], **changes}], study=STUDY, trial_id=trial_id)


def _keep_stages(out: Path, trial_id: str, last: int) -> None:
    rows = read_trial_rows(out, "accuracy", study=STUDY, trial_id=trial_id)
    rows = [r for r in rows if r["stage"] <= last]
    write_records(out, "accuracy", rows, study=STUDY, trial_id=trial_id)


def _section(text: str, header: str) -> str:
    return text.split(f"\n{header}\n", 1)[1].split("\n## ", 1)[0]


# --- readers ------------------------------------------------------------------------------


def test_truncated_file_is_named_by_every_reader(out: Path, sdir: Path) -> None:
    bad = truncate(_path(out, "accuracy"))
    with pytest.raises(DamagedResultsError) as exc:
        read_study(sdir)
    err = exc.value
    assert isinstance(err, ValueError)
    assert list(err.problems) == [bad]
    assert "truncated or corrupt" in err.problems[bad]
    msg = str(err)
    assert str(bad) in msg
    assert "re-run those trials" in msg and "skip_damaged=True" in msg and "--skip-damaged" in msg
    for read in (
        lambda: read_records(sdir, "accuracy"),
        lambda: read_records(out, "accuracy"),  # the output root
        lambda: read_records(bad, "accuracy"),  # the file itself
        lambda: read_trial_rows(out, "accuracy", study=STUDY, trial_id=TRIAL),
    ):
        with pytest.raises(DamagedResultsError, match=r"tm-lr1-s0\.parquet"):
            read()
    # Kinds without damage still read; the error survives pickling (Ray ships exceptions).
    assert len(read_records(sdir, "summary")) == 8
    again = pickle.loads(pickle.dumps(err))
    assert again.problems == err.problems and str(again) == msg


def test_every_damaged_file_is_listed_across_kinds(out: Path, sdir: Path) -> None:
    truncated = truncate(_path(out, "accuracy"))
    garbage = _path(out, "summary", OTHER)
    garbage.write_text("not parquet at all\n")
    wrong = _path(out, "general", OTHER)  # a valid Parquet file of another kind
    pq.write_table(pq.read_table(_path(out, "accuracy", OTHER)), wrong)
    with pytest.raises(DamagedResultsError) as exc:
        read_study(sdir)
    problems = exc.value.problems
    assert set(problems) == {truncated, garbage, wrong}
    assert "missing column(s)" in problems[wrong]
    for p in (truncated, garbage, wrong):
        assert str(p) in str(exc.value)
    assert str(exc.value).startswith("3 damaged results file(s)")
    assert damaged_files(sdir) == problems
    assert damaged_files(sdir, kinds=["summary"]) == {garbage: problems[garbage]}
    assert damaged_files(sdir, kinds=["curve"]) == {}


def _set_version(path: Path, version: int) -> None:
    table = pq.read_table(path)
    idx = table.schema.get_field_index("schema_version")
    versions = pa.array([version] * len(table), pa.int32())
    pq.write_table(table.set_column(idx, "schema_version", versions), path)


def test_an_unknown_older_schema_version_is_a_damaged_file(out: Path, sdir: Path) -> None:
    path = _path(out, "general")
    _set_version(path, 0)
    problems = damaged_files(sdir)
    assert list(problems) == [path] and "schema_version [0]" in problems[path]


def test_a_newer_schema_version_is_refused_by_name_never_skipped(out: Path, sdir: Path) -> None:
    """Written by a newer harness: not damaged (which a study would re-run and overwrite) and
    not skipped by --skip-damaged; every reader names the file and says to upgrade."""
    from results.io import NewerResultsError

    path = _path(out, "general")
    _set_version(path, 99)
    for read in (damaged_files, read_study, lambda d: read_study(d, skip_damaged=True)):
        with pytest.raises(NewerResultsError) as exc:
            read(sdir)
        assert str(path) in str(exc.value) and "upgrade the harness" in str(exc.value)


def test_a_file_written_before_a_column_was_added_reads_with_it_null(out: Path, sdir: Path) -> None:
    """Results written before ``n_stages`` / ``data.add_bos`` / ``pad_share`` / the settings
    added since (``eval.matrix``, ``train.save_models``, the lm-eval settings, ...) existed are
    read, not refused; a file lacking any other column is still damaged."""
    from results.schema import ADDED_COLUMNS

    assert set(ADDED_COLUMNS) == {"summary", "curve", "predictions"}
    path = _path(out, "summary")
    pq.write_table(pq.read_table(path).drop_columns(list(ADDED_COLUMNS["summary"])), path)
    curve = _path(out, "curve")  # this study has no curves: write one the old way
    rows = [dict(stage=1, task="a", step=1, task_step=1, loss=1.0, task_ce=1.0, replay_ce=None,
                 replay_term=None, replay_weight=0.0, lr=1e-4, grad_norm=1.0, tokens=10)]  # fmt: skip
    curve.parent.mkdir(parents=True, exist_ok=True)
    full = [{**r, "pad_share": 0.5} for r in rows]
    from results.schema import to_table

    old = to_table("curve", full, study=STUDY, trial_id=TRIAL).drop_columns(["pad_share"])
    pq.write_table(old, curve)
    tables = read_study(sdir)
    assert tables["summary"]["n_stages"].isna().any()
    # settings added later read as what every earlier trial did: the full matrix, no saved
    # models, no lm-eval tasks
    old_row = tables["summary"].set_index("trial_id").loc[TRIAL]
    assert old_row["eval.matrix"] == "full" and old_row["train.save_models"] == "none"
    assert list(old_row["eval.lm_eval_tasks"]) == []
    assert pd.isna(old_row["model_path"]) and pd.isna(old_row["eval.probe_name"])
    assert tables["curve"]["pad_share"].isna().all() and len(tables["curve"]) == 1
    assert TRIAL not in set(incomplete_trials(tables).trial_id)  # n_stages null: T stages
    path = _path(out, "summary")
    pq.write_table(pq.read_table(path).drop_columns(["n_tasks"]), path)
    problems = damaged_files(sdir)
    assert list(problems) == [path] and "missing column(s) ['n_tasks']" in problems[path]


def test_skip_damaged_returns_the_rest_and_warns(
    out: Path, sdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = truncate(_path(out, "accuracy"))
    garbage = _path(out, "general", OTHER)
    garbage.write_bytes(b"PAR1")
    with caplog.at_level(logging.WARNING, logger="results.io"):
        data = read_study(sdir, skip_damaged=True)
    everyone = set(data["summary"]["trial_id"])
    assert len(everyone) == 8
    acc_trials = set(data["accuracy"]["trial_id"])
    assert acc_trials == everyone - {TRIAL}
    assert set(data["general"]["trial_id"]) == everyone - {OTHER}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert any(str(bad) in m and "truncated" in m for m in warned)
    assert any(str(garbage) in m for m in warned)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="results.io"):
        acc = read_records(sdir, "accuracy", skip_damaged=True)
    assert set(acc["trial_id"]) == acc_trials
    assert [str(bad) in r.getMessage() for r in caplog.records] == [True]


def test_trial_problems_names_missing_and_damaged_kinds(out: Path) -> None:
    kinds = ("summary", "accuracy", "general", "curve")
    key = dict(study=STUDY, trial_id=TRIAL)
    # make_study writes no curve records: that kind's file is missing for every trial.
    assert trial_problems(out, kinds=kinds[:3], **key) == []
    bad = truncate(_path(out, "accuracy"))
    _path(out, "general").unlink()
    found = trial_problems(out, kinds=kinds, **key)
    assert len(found) == 3, found
    acc, gen, curve = found
    assert acc.startswith("accuracy:") and str(bad) in acc and "truncated" in acc
    assert gen.startswith("general:") and "no file" in gen and str(_path(out, "general")) in gen
    assert curve.startswith("curve:") and "no file" in curve
    assert trial_problems(out, kinds=kinds[:3], study=STUDY, trial_id=OTHER) == []
    with pytest.raises(ValueError, match="Unknown record kind"):
        trial_problems(out, kinds=["acuracy"], **key)


# --- the report command -------------------------------------------------------------------


def test_report_cli_names_damaged_file_and_skip_damaged_reports_the_rest(
    out: Path, sdir: Path, tmp_path: Path
) -> None:
    bad = truncate(_path(out, "accuracy"))
    report_dir = tmp_path / "report"
    proc = _report_cli(str(sdir), "--out", str(report_dir))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert str(bad) in proc.stderr and "--skip-damaged" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (report_dir / "report.md").exists()

    proc = _report_cli(str(sdir), "--out", str(report_dir), "--skip-damaged")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(report_dir / "report.md")
    assert str(bad) in proc.stderr  # the warning naming the skipped file
    text = (report_dir / "report.md").read_text()
    damaged = _section(text, "## Damaged files (skipped)")
    assert f"accuracy/{TRIAL}.parquet" in damaged
    # The trial whose accuracy file was skipped is flagged, and not tm's heatmap.
    trials = _section(text, "## Trials")
    assert TRIAL in trials and "no accuracy records" in trials
    assert f"`{TRIAL}`" in _section(text, "## Main results (paper-style table)")
    assert f"### TM (GeRe): `{TRIAL}`" not in text
    assert "### TM (GeRe): `tm-lr1-s1`" in text


def test_report_cli_refuses_a_path_that_does_not_exist(tmp_path: Path) -> None:
    typo = tmp_path / "runs" / "study=lr_robustnes"
    proc = _report_cli(str(typo))
    assert proc.returncode == 2
    assert str(typo) in proc.stderr and "does not exist" in proc.stderr
    assert "<out>/study=<name>" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not typo.exists()  # no empty report written into a new directory
    with pytest.raises(FileNotFoundError):
        build_report(typo)
    assert not typo.exists()


def test_report_cli_refuses_a_directory_without_summary_records(tmp_path: Path) -> None:
    empty = tmp_path / "study=empty"
    empty.mkdir()
    proc = _report_cli(str(empty))
    assert proc.returncode == 2
    assert str(empty) in proc.stderr and "no results records" in proc.stderr
    assert "<out>/study=<name>" in proc.stderr
    assert list(empty.iterdir()) == []  # no report/ written
    # Records of other kinds but no summary row: still nothing to report.
    write_records(tmp_path, "general", [], study="empty", trial_id="t")
    proc = _report_cli(str(empty))
    assert proc.returncode == 2 and "no results records" in proc.stderr
    acc = {
        "stage": 0,
        "after_task": "<start>",
        "task": "a",
        "task_position": 1,
        "accuracy": 0.5,
        "n_correct": 1,
        "n_total": 2,
        "scoring": "loglik",
    }
    write_records(tmp_path, "accuracy", [acc], study="empty", trial_id="t")
    proc = _report_cli(str(empty))
    assert proc.returncode == 2
    assert "records of accuracy but no summary records" in proc.stderr


# --- incomplete trials --------------------------------------------------------------------


def test_running_trial_is_flagged_and_not_averaged(
    out: Path, sdir: Path, tmp_path: Path, running_allowed: None
) -> None:
    # A re-run marks the summary 'running' first; its old accuracy file is partial.
    _rewrite_summary(out, TRIAL, status="running")
    _keep_stages(out, TRIAL, last=1)
    data = read_study(sdir)
    c = an.status_counts(data["summary"]).iloc[0]
    assert c[["n_completed", "n_diverged", "n_failed", "n_running", "n_total"]].tolist() == [
        6,
        1,
        0,
        1,
        8,
    ]
    t = an.paper_table(data["summary"], by=("method", "lr_multiplier"), metrics=("ap",))
    assert list(t.columns) == ["n", "n_diverged", "n_failed", "n_running", "ap_mean", "ap_std"]
    assert t.loc[("tm", 1.0), ["n", "n_running"]].tolist() == [1, 1]
    only = data["summary"]["trial_id"] == "tm-lr1-s1"
    assert t.loc[("tm", 1.0), "ap_mean"] == pytest.approx(data["summary"].loc[only, "ap"].item())
    g = an.group_stats(data["summary"], ["method"], "ap")
    assert g.set_index("method").loc["tm", "n_running"] == 1
    lr = an.lr_robustness_table(data["summary"], "ap", stat="n_running")
    assert lr.loc["tm", 1.0] == 1 and lr.loc["none", 1.0] == 0
    reps = an.representative_trials(data["summary"]).set_index("method")["trial_id"]
    assert reps["tm"] != TRIAL

    text = build_report(sdir, tmp_path / "report").read_text()
    trials = _section(text, "## Trials")
    assert "8 trials: 6 completed, 1 diverged, 0 failed, 1 running." in trials
    assert "**Incomplete trials:**" in trials
    row = next(line for line in trials.splitlines() if line.startswith(f"| {TRIAL} |"))
    assert "| running |" in row and "still running" in row
    main = _section(text, "## Main results (paper-style table)")
    assert "1 running trial(s) are counted under `running`" in main
    header = next(line for line in main.splitlines() if line.startswith("| method |"))
    assert "| running |" in header
    tm1 = next(line for line in main.splitlines() if line.startswith("| tm | 1× |"))
    assert [c.strip() for c in tm1.strip("|").split("|")][2:6] == ["1", "0", "0", "1"]
    assert f"### TM (GeRe): `{TRIAL}`" not in text


def test_completed_trial_with_a_partial_accuracy_matrix_is_flagged(
    out: Path, sdir: Path, tmp_path: Path
) -> None:
    _keep_stages(out, TRIAL, last=1)
    rows = read_trial_rows(out, "accuracy", study=STUDY, trial_id=OTHER)
    rows = [r for r in rows if not (r["stage"] == 2 and r["task_position"] == 3)]
    write_records(out, "accuracy", rows, study=STUDY, trial_id=OTHER)
    rows = read_trial_rows(out, "general", study=STUDY, trial_id=OTHER)
    rows = [r for r in rows if r["stage"] != 3]
    write_records(out, "general", rows, study=STUDY, trial_id=OTHER)
    data = read_study(sdir)
    flagged = incomplete_trials(data).set_index("trial_id")
    assert set(flagged.index) == {TRIAL, OTHER, "none-lr3-s1"}  # + the diverged one
    assert flagged.loc[TRIAL, "status"] == "completed"
    assert "accuracy stages 2, 3 of 0–3 missing" in flagged.loc[TRIAL, "problem"]
    assert "cells missing at stage(s) 2" in flagged.loc[OTHER, "problem"]
    assert "general stages 3 of 0–3 missing" in flagged.loc[OTHER, "problem"]
    assert flagged.loc["none-lr3-s1", "status"] == "diverged"

    text = build_report(sdir, tmp_path / "report").read_text()
    trials = _section(text, "## Trials")
    assert "2 completed trial(s) have incomplete records" in trials
    row = next(line for line in trials.splitlines() if line.startswith(f"| {TRIAL} |"))
    assert "incomplete records: accuracy stages 2, 3 of 0–3 missing" in row
    main = _section(text, "## Main results (paper-style table)")
    assert f"`{TRIAL}`" in main and f"`{OTHER}`" in main
    # Heatmaps are drawn from the methods' complete seeds instead.
    heat = _section(text, "## Accuracy matrices (one representative trial per method)")
    assert "### TM (GeRe): `tm-lr1-s1`\n" in heat
    assert "### none (sequential FT): `none-lr1-s1`\n" in heat
    assert TRIAL not in heat and OTHER not in heat


def test_a_method_without_complete_records_has_its_heatmap_marked(
    out: Path, sdir: Path, tmp_path: Path
) -> None:
    for tid in (TRIAL, "tm-lr1-s1"):
        _keep_stages(out, tid, last=2)
    text = build_report(sdir, tmp_path / "report").read_text()
    heat = _section(text, "## Accuracy matrices (one representative trial per method)")
    title = next(line for line in heat.splitlines() if line.startswith("### TM (GeRe)"))
    assert f"`{TRIAL}`" in title
    assert "**incomplete**" in title and "accuracy stages 3 of 0–3 missing" in title
    assert "accuracy_tm.png" in heat  # still drawn, with its missing row blank


def test_records_without_a_summary_row_are_flagged(out: Path, sdir: Path, tmp_path: Path) -> None:
    rows = read_trial_rows(out, "accuracy", study=STUDY, trial_id=TRIAL)
    write_records(out, "accuracy", rows, study=STUDY, trial_id="tm-lr1-s9")
    flagged = incomplete_trials(read_study(sdir)).set_index("trial_id")
    assert flagged.loc["tm-lr1-s9", "status"] == "–"
    assert "no summary row (accuracy records only)" in flagged.loc["tm-lr1-s9", "problem"]
    text = build_report(sdir, tmp_path / "report").read_text()
    assert "1 trial(s) have records but no summary row" in _section(text, "## Trials")


def test_a_complete_study_flags_only_its_diverged_trial(sdir: Path) -> None:
    flagged = incomplete_trials(read_study(sdir))
    assert flagged[["trial_id", "status"]].values.tolist() == [["none-lr3-s1", "diverged"]]
    assert "diverged at task 2" in flagged["problem"].item()
