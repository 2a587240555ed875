"""The Parquet contract: schema per kind, atomic one-file-per-trial writes, versioned reads."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from harness.metrics import METRICS
from results import io, schema
from results.schema import FILLED, KINDS, SCHEMA_VERSION

STUDY = "lr_robustness"


def sample_rows(kind: str, n: int = 3) -> list[dict]:
    """Valid rows for any kind, built from the schema so new columns are covered automatically.

    Values differ per row (and per column type) so a round trip that reorders or mixes up
    columns is caught.
    """
    rows = []
    for i in range(n):
        row: dict = {}
        for f in KINDS[kind]:
            if f.name in FILLED:
                continue
            allowed = schema._allowed(f)
            if allowed:
                row[f.name] = allowed[i % len(allowed)]
            elif pa.types.is_integer(f.type):
                row[f.name] = i + 1
            elif pa.types.is_floating(f.type):
                row[f.name] = 0.25 * (i + 1)
            elif pa.types.is_boolean(f.type):
                row[f.name] = i % 2 == 0
            elif pa.types.is_list(f.type) and pa.types.is_string(f.type.value_type):
                row[f.name] = [f"{f.name}-{i}-{k}" for k in range(i + 2)]
            elif pa.types.is_list(f.type) and pa.types.is_integer(f.type.value_type):
                row[f.name] = [k - i for k in range(i + 2)]
            elif pa.types.is_list(f.type):
                row[f.name] = [0.5 * k - i for k in range(i + 2)]
            elif pa.types.is_timestamp(f.type):
                row[f.name] = pd.Timestamp("2026-12-01T12:00:00Z") + pd.Timedelta(seconds=i)
            else:
                row[f.name] = f"{f.name}-{i}"
        rows.append(row)
    return rows


def _write(tmp_path: Path, kind: str, rows, trial_id: str = "t1") -> Path:
    return io.write_records(tmp_path, kind, rows, study=STUDY, trial_id=trial_id)


@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip_per_kind(tmp_path: Path, kind: str) -> None:
    rows = sample_rows(kind)
    path = _write(tmp_path, kind, rows)
    assert path == tmp_path / f"study={STUDY}" / kind / "t1.parquet"

    df = io.read_records(io.study_dir(tmp_path, STUDY), kind)
    assert list(df.columns) == KINDS[kind].names
    assert len(df) == len(rows)
    df = df.sort_values([c for c in df.columns if c not in FILLED][0]).reset_index(drop=True)
    for i, row in enumerate(rows):
        for name, value in row.items():
            got = df.loc[i, name]
            assert (list(got) if isinstance(value, list) else got) == value, (name, i)
    assert (df["schema_version"] == SCHEMA_VERSION).all()
    assert (df["study"] == STUDY).all()
    assert (df["trial_id"] == "t1").all()
    # Arrow types survive (int32 stays int32, not int64).
    table = pq.read_table(path)
    for field in KINDS[kind]:
        assert table.schema.field(field.name).type == field.type, field.name


def test_summary_has_one_float_column_per_metric() -> None:
    summary = KINDS["summary"]
    for name in METRICS:
        assert summary.field(name).type == pa.float64(), name


def test_every_column_is_documented() -> None:
    for kind, sch in KINDS.items():
        for field in sch:
            doc = (field.metadata or {}).get(b"doc", b"")
            assert len(doc) > 5, f"{kind}.{field.name} has no doc"


def test_rewriting_a_trial_replaces_its_rows(tmp_path: Path) -> None:
    _write(tmp_path, "accuracy", sample_rows("accuracy", 3))
    _write(tmp_path, "accuracy", sample_rows("accuracy", 3))  # a retried trial
    sdir = io.study_dir(tmp_path, STUDY)
    assert len(io.read_records(sdir, "accuracy")) == 3
    _write(tmp_path, "accuracy", sample_rows("accuracy", 2))  # replaced, not appended
    assert len(io.read_records(sdir, "accuracy")) == 2
    _write(tmp_path, "accuracy", sample_rows("accuracy", 3), trial_id="t2")
    df = io.read_records(sdir, "accuracy")
    assert df.groupby("trial_id").size().to_dict() == {"t1": 2, "t2": 3}


def test_empty_rows_write_a_zero_row_file_that_replaces(tmp_path: Path) -> None:
    _write(tmp_path, "curve", sample_rows("curve", 3))
    _write(tmp_path, "curve", [])
    df = io.read_records(io.study_dir(tmp_path, STUDY), "curve")
    assert len(df) == 0 and list(df.columns) == KINDS["curve"].names


def test_trial_ids_with_special_characters(tmp_path: Path) -> None:
    a = "method=tm,lr_multiplier=3"
    b = "method=tm_lr_multiplier=3"  # same after naive replacement of unsafe characters
    pa_ = _write(tmp_path, "summary", sample_rows("summary", 1), trial_id=a)
    pb_ = _write(tmp_path, "summary", sample_rows("summary", 1), trial_id=b)
    assert pa_ != pb_
    for p in (pa_, pb_):
        assert all(c.isalnum() or c in "._-" for c in p.stem)
        assert not p.name.startswith((".", "_"))
    assert io.safe_name(a) == io.safe_name(a)  # deterministic
    assert io.safe_name("plain-id_1.0") == "plain-id_1.0"  # safe ids unchanged
    assert not io.safe_name(".hidden").startswith(".")
    assert not io.safe_name("_hidden").startswith("_")
    df = io.read_records(io.study_dir(tmp_path, STUDY), "summary")
    assert sorted(df["trial_id"]) == sorted([a, b])  # the real ids, not the file names


def test_leftover_temp_file_is_ignored(tmp_path: Path) -> None:
    path = _write(tmp_path, "accuracy", sample_rows("accuracy", 3))
    # A writer killed mid-write leaves a dot-prefixed partial file behind.
    (path.parent / ".t2.parquet.1234-abcd.tmp").write_bytes(b"PAR1 truncated")
    (path.parent / ".t3.parquet").write_bytes(b"not parquet at all")
    df = io.read_records(io.study_dir(tmp_path, STUDY), "accuracy")
    assert len(df) == 3
    # The premise of the design: pyarrow.dataset skips dot files too.
    assert ds.dataset(path.parent, format="parquet").to_table().num_rows == 3


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = _write(tmp_path, "accuracy", sample_rows("accuracy", 3))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        _write(tmp_path, "accuracy", sample_rows("accuracy", 1))
    assert sorted(p.name for p in path.parent.iterdir()) == ["t1.parquet"]
    assert len(io.read_records(path.parent, "accuracy")) == 3


def test_wrong_schema_version_names_the_file(tmp_path: Path) -> None:
    table = schema.to_table("general", sample_rows("general"), study=STUDY, trial_id="old")
    idx = table.schema.get_field_index("schema_version")
    table = table.set_column(idx, "schema_version", pa.array([99] * len(table), pa.int32()))
    target = io.study_dir(tmp_path, STUDY) / "general" / "old.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(table, target)
    with pytest.raises(io.NewerResultsError, match=r"newer harness.*old\.parquet \(version 99\)"):
        io.read_records(io.study_dir(tmp_path, STUDY), "general")


def test_file_with_a_changed_column_is_refused_naming_file_and_column(tmp_path: Path) -> None:
    table = schema.to_table("curve", sample_rows("curve"), study=STUDY, trial_id="x")
    target = io.study_dir(tmp_path, STUDY) / "curve" / "x.parquet"
    target.parent.mkdir(parents=True)
    pq.write_table(table.drop_columns(["grad_norm"]), target)
    with pytest.raises(ValueError, match=r"x\.parquet.*grad_norm"):
        io.read_records(tmp_path / f"study={STUDY}", "curve")


def test_missing_column_is_named() -> None:
    rows = sample_rows("accuracy")
    for r in rows:
        del r["n_total"]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['n_total'\]"):
        schema.to_table("accuracy", rows, study=STUDY, trial_id="t")


def test_extra_column_is_named_with_a_suggestion() -> None:
    df = pd.DataFrame(sample_rows("accuracy")).rename(columns={"accuracy": "acuracy"})
    with pytest.raises(
        ValueError, match=r"unexpected column\(s\) \['acuracy'\] \(did you mean 'accuracy'\?\)"
    ):
        schema.to_table("accuracy", df, study=STUDY, trial_id="t")


def test_dataframe_read_back_can_be_rewritten_but_not_relabelled(tmp_path: Path) -> None:
    _write(tmp_path, "accuracy", sample_rows("accuracy"))
    df = io.read_records(io.study_dir(tmp_path, STUDY), "accuracy")
    assert schema.to_table("accuracy", df, study=STUDY, trial_id="t1").num_rows == 3
    with pytest.raises(ValueError, match="'trial_id'"):
        schema.to_table("accuracy", df, study=STUDY, trial_id="other")


def test_bad_values_are_named() -> None:
    rows = sample_rows("accuracy")
    rows[1]["scoring"] = "greedy"
    with pytest.raises(ValueError, match=r"'scoring'.*\['greedy'\]"):
        schema.to_table("accuracy", rows, study=STUDY, trial_id="t")
    rows = sample_rows("accuracy")
    rows[0]["task"] = None
    with pytest.raises(ValueError, match=r"'task' has 1 null"):
        schema.to_table("accuracy", rows, study=STUDY, trial_id="t")
    rows = sample_rows("accuracy")
    rows[0]["stage"] = "one"
    with pytest.raises(ValueError, match=r"column 'stage': cannot convert"):
        schema.to_table("accuracy", rows, study=STUDY, trial_id="t")
    rows = sample_rows("summary", 1)
    rows[0]["replay_weight"] = 100  # must be the string "100"
    with pytest.raises(ValueError, match="'replay_weight'"):
        schema.to_table("summary", rows, study=STUDY, trial_id="t")


def test_nan_floats_stay_nan_and_nullable_columns_take_null(tmp_path: Path) -> None:
    rows = sample_rows("summary", 1)
    rows[0].update(error=None, diverged_stage=None, diverged_step=None, bwt=float("nan"), fwt=None)
    _write(tmp_path, "summary", rows)
    table = pq.read_table(io.study_dir(tmp_path, STUDY) / "summary" / "t1.parquet")
    assert table.column("bwt").null_count == 0 and math.isnan(table.column("bwt")[0].as_py())
    assert math.isnan(table.column("fwt")[0].as_py())  # None -> NaN, floats are never null
    assert table.column("diverged_stage").null_count == 1
    df = io.read_records(io.study_dir(tmp_path, STUDY), "summary")
    assert pd.isna(df.loc[0, "error"])


def test_validate_table_names_type_mismatch() -> None:
    table = schema.to_table("curve", sample_rows("curve"), study=STUDY, trial_id="t")
    idx = table.schema.get_field_index("step")
    bad = table.set_column(idx, "step", table.column("step").cast(pa.float64()))
    with pytest.raises(ValueError, match=r"'step' has type double, expected int64"):
        schema.validate_table("curve", bad)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['lr'\]"):
        schema.validate_table("curve", table.drop_columns(["lr"]))
    schema.validate_table("curve", table)  # and the good one passes


def test_unknown_kind_suggests() -> None:
    with pytest.raises(ValueError, match=r"Unknown record kind 'sumary'.*did you mean 'summary'"):
        schema.schema_for("sumary")
    with pytest.raises(ValueError, match="Unknown record kind"):
        io.write_records("/nonexistent", "curves_", [], study=STUDY, trial_id="t")


def test_missing_kind_gives_empty_frame_missing_study_raises(tmp_path: Path) -> None:
    _write(tmp_path, "summary", sample_rows("summary", 1))
    sdir = io.study_dir(tmp_path, STUDY)
    df = io.read_records(sdir, "curve")
    assert df.empty and list(df.columns) == KINDS["curve"].names
    with pytest.raises(FileNotFoundError):
        io.read_records(tmp_path / "study=typo", "curve")


def test_read_study_and_other_entry_points(tmp_path: Path) -> None:
    for kind in KINDS:
        _write(tmp_path, kind, sample_rows(kind, 2))
    _write(tmp_path, "summary", sample_rows("summary", 1), trial_id="t2")
    sdir = io.study_dir(tmp_path, STUDY)
    frames = io.read_study(sdir)
    assert {k: len(v) for k, v in frames.items()} == {**{k: 2 for k in KINDS}, "summary": 3}
    assert len(io.read_records(sdir / "summary", "summary")) == 3  # the kind dir
    assert len(io.read_records(sdir / "summary" / "t2.parquet", "summary")) == 1  # one file
    io.write_records(tmp_path, "summary", sample_rows("summary", 1), study="other", trial_id="t")
    assert len(io.read_records(tmp_path, "summary")) == 4  # output root: every study


def test_docs_are_up_to_date() -> None:
    assert schema.DOCS_PATH.exists(), "run: python -m results.schema --write"
    assert schema.DOCS_PATH.read_text(encoding="utf-8") == schema.schema_markdown(), (
        "docs/results-schema.md is stale; run: python -m results.schema --write"
    )
    assert schema.main(["--check"]) == 0


def test_schema_markdown_documents_every_column() -> None:
    text = schema.schema_markdown()
    for kind, sch in KINDS.items():
        assert f"## `{kind}`" in text
        for name in sch.names:
            assert f"| `{name}` |" in text, (kind, name)


def test_results_imports_neither_torch_nor_ray() -> None:
    code = (
        "import sys, results.io, results.schema; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_sample_values_are_distinct_per_row() -> None:
    # Guards the round-trip test: identical rows could hide a column mix-up.
    rows = sample_rows("curve")
    assert len({tuple(r.values()) for r in rows}) == len(rows)
    assert np.unique([r["loss"] for r in rows]).size == len(rows)
