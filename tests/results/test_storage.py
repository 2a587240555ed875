"""Results on object storage: the same records, reads and checks with ``out`` an s3:// URI.

Against an S3-compatible server on localhost (moto's server mode, the ``s3`` fixture), with the
endpoint and credentials passed the standard way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from harness.config import ConfigError
from harness.trial import run_trial
from results import storage
from results.io import (
    DamagedResultsError,
    damaged_files,
    read_study,
    read_trial_rows,
    record_path,
    study_dir,
    trial_problems,
    write_records,
)
from results.ledger import check_output
from tests.fixtures import mini_config


def _keys(endpoint: str, prefix: str = "bucket") -> list[str]:
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
    infos = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def test_locations_keep_uris_as_strings_and_local_paths_as_paths(tmp_path) -> None:
    assert storage.join("s3://b/x/", "study=a", "summary") == "s3://b/x/study=a/summary"
    assert storage.join(tmp_path, "a") == tmp_path / "a"
    assert storage.location("file:///tmp/x") == Path("/tmp/x")
    assert not storage.is_uri("file:///tmp/x") and storage.is_uri("gs://b/p")
    assert (
        study_dir("s3://b/out", "my study")
        == "s3://b/out/study=my_study-" + (study_dir(tmp_path, "my study").name.split("-")[-1])
    )
    assert storage.name("s3://b/out/study=a") == "study=a"
    assert storage.parent("s3://b/out/study=a") == "s3://b/out"


def test_records_round_trip_through_s3_one_key_per_trial_and_kind(s3) -> None:
    out = "s3://bucket/gere"
    rows = [
        {
            "stage": s,
            "after_task": "t",
            "task": "t",
            "task_position": 1,
            "accuracy": 0.5,
            "n_correct": 1,
            "n_total": 2,
            "scoring": "loglik",
        }
        for s in (0, 1)
    ]
    for trial in ("a", "b"):
        where = write_records(out, "accuracy", rows, study="st", trial_id=trial)
        assert where == f"{out}/study=st/accuracy/{trial}.parquet"
    write_records(out, "accuracy", rows[:1], study="st", trial_id="a")  # a retry replaces
    assert _keys(s3) == [
        "bucket/gere/study=st/accuracy/a.parquet",
        "bucket/gere/study=st/accuracy/b.parquet",
    ]  # no temp keys, nothing renamed
    tables = read_study(f"{out}/study=st")
    assert sorted(tables["accuracy"].trial_id) == ["a", "b", "b"]
    assert len(read_study(out)["accuracy"]) == 3  # the output root, several studies
    assert read_trial_rows(out, "accuracy", study="st", trial_id="b")[1]["stage"] == 1
    assert trial_problems(out, study="st", trial_id="a", kinds=["accuracy"]) == []
    (missing,) = trial_problems(out, study="st", trial_id="a", kinds=["general"])
    assert missing == f"general: no file {out}/study=st/general/a.parquet"
    with pytest.raises(FileNotFoundError, match="s3://bucket/nothing"):
        read_study("s3://bucket/nothing")


def test_a_damaged_object_is_named_by_its_uri(s3) -> None:
    out = "s3://bucket/gere"
    bad = record_path(out, "summary", study="st", trial_id="broken")
    storage.write(bad, lambda f: f.write(b"not parquet"))
    with pytest.raises(DamagedResultsError) as e:
        read_study(study_dir(out, "st"))
    assert list(e.value.problems) == [bad] and bad in str(e.value)
    assert "11 bytes" in e.value.problems[bad]
    assert list(damaged_files(study_dir(out, "st"))) == [bad]
    assert read_study(study_dir(out, "st"), skip_damaged=True)["summary"].empty


def test_an_unreachable_bucket_is_refused_before_anything_runs(s3, tmp_path) -> None:
    cfg = mini_config(tmp_path, "s3://no-such-bucket/gere")
    with pytest.raises(ConfigError) as e:
        check_output(cfg)
    message = str(e.value)
    assert "out: 's3://no-such-bucket/gere': cannot write there" in message
    assert "NO_SUCH_BUCKET" in message  # the store's own reason, as it gave it
    check_output(mini_config(tmp_path, "s3://bucket/gere"))  # writable: the probe is gone
    assert _keys(s3) == []


def test_a_trial_writes_to_s3_summary_last_and_counts_as_completed_from_there(
    s3, mini_root, monkeypatch, capsys
) -> None:
    from harness.tune import finished
    from results.report import main as report

    writes: list[str] = []
    real = storage.write

    def spy(loc, fill):
        writes.append(storage.name(storage.parent(loc)))
        return real(loc, fill)

    monkeypatch.setattr(storage, "write", spy)
    out = "s3://bucket/gere"
    cfg = mini_config(mini_root, out, **{"train.save_models": "final"})
    result = run_trial(cfg)
    assert result.status == "completed"
    assert writes[-1] == "summary" and writes.count("summary") == 2  # 'running', then final
    assert set(writes[writes.index("summary") + 1 : -1]) >= {"accuracy", "general", "curve"}
    keys = _keys(s3)
    assert all(k.startswith("bucket/gere/study=engine/") for k in keys)
    # the final model, uploaded whole beside the results (a folder Parquet readers skip)
    saved = f"bucket/gere/study=engine/_models/{cfg.id}/stage=3/"
    assert {k.removeprefix(saved) for k in keys if k.startswith(saved)} >= {
        "config.json", "model.safetensors", "gere_model.json", "tokenizer.json"
    }  # fmt: skip
    assert not any(Path(k).name.startswith(".") for k in keys)
    tables = read_study(study_dir(out, "engine"))
    assert len(tables["summary"]) == 1 and len(tables["accuracy"]) == 4 * 3
    done = finished(cfg)  # the completed-trial check, read from the URI
    assert done is not None and done["status"] == "completed"

    monkeypatch.setattr(storage, "write", real)
    capsys.readouterr()  # the trial's output (saving a model imports DeepSpeed, which prints)
    assert report([study_dir(out, "engine")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == f"{out}/_reports/engine/report.md"
    with storage.open_input(printed) as f:
        markdown = f.read().decode()
    assert "# Study report: engine" in markdown
    figures = [k for k in _keys(s3, "bucket/gere/_reports/engine") if k.endswith(".png")]
    assert figures and all(Path(f).name in markdown for f in figures)
    assert not pd.isna(tables["summary"].ap.iloc[0])


def test_a_study_refuses_an_unwritable_storage_path_before_ray_starts(s3, tmp_path, capsys):
    from harness.grid import axis
    from harness.study import Study, main

    grid = [axis("replay.method", ["none"])]
    st = Study("st", "A study.", grid, grid)
    argv = ["--smoke-test", "--out", str(tmp_path / "runs"), "--dry-run"]
    bad = [*argv, "--storage-path", "s3://no-such-bucket/ray"]
    assert main(st, bad) == 2
    err = capsys.readouterr().err
    assert "--storage-path 's3://no-such-bucket/ray': cannot write there" in err
    assert main(st, [*argv, "--storage-path", "s3://bucket/ray"]) == 0


def test_the_report_names_an_unreachable_store_and_cli_checkpoints_stay_local(
    monkeypatch, tmp_path, capsys
) -> None:
    from harness.checkpoints import checkpoint_dir
    from results.report import main as report

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert report(["s3://some-bucket/gere/study=a"]) == 2
    assert "cannot read s3://some-bucket/gere/study=a (" in capsys.readouterr().err
    monkeypatch.setenv("GERE_CACHE_DIR", str(tmp_path / "cache"))
    from results.io import safe_name

    cfg = mini_config(tmp_path, "s3://some-bucket/gere")
    where = checkpoint_dir(cfg)
    assert where.is_relative_to(tmp_path / "cache" / "checkpoints")
    assert (where.parent.name, where.name) == ("engine", safe_name(cfg.id))


def test_a_write_that_fails_midway_leaves_the_object_as_it_was(s3) -> None:
    key = "s3://bucket/gere/study=st/summary/a.parquet"
    storage.write(key, lambda f: f.write(b"old"))

    def half(f):
        f.write(b"new, but ")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        storage.write(key, half)
    assert storage.read_bytes(key) == b"old"


def test_an_object_store_that_fails_to_answer_is_an_error_not_a_damaged_file(
    s3, monkeypatch
) -> None:
    """A damaged file makes a study re-run its trial; a store that does not answer must not."""
    out = "s3://bucket/gere"
    write_records(out, "summary", [], study="st", trial_id="a")

    def down(loc):
        raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation")

    monkeypatch.setattr(storage, "read_bytes", down)
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        read_study(study_dir(out, "st"), skip_damaged=True)


def test_a_study_s_trials_share_stage_0_and_tm_states_on_s3(s3, mini_root, monkeypatch):
    """On a bucket as on disk: the second TM trial of a study reads the first one's stage-0
    rows and TM states (no stage-0 evaluation, no pass over the buffer) from
    ``_shared/`` in the study's storage; the claims taken while computing are gone after."""
    from harness import eval_stage
    from harness.trial import Trial

    passes, evaluated = [], []
    prepare, rows = Trial._prepare_replay_here, eval_stage.EvaluationHook._rows

    def counted_prepare(self):
        passes.append(self.cfg.id)
        prepare(self)

    def counted_rows(self, trial, stage, after_task):
        evaluated.append((trial.cfg.id, stage))
        return rows(self, trial, stage, after_task)

    monkeypatch.setattr(Trial, "_prepare_replay_here", counted_prepare)
    monkeypatch.setattr(eval_stage.EvaluationHook, "_rows", counted_rows)
    out = "s3://bucket/gere"
    first = mini_config(mini_root, out, **{"data.tasks": "colour,animal"})
    second = mini_config(mini_root, out, **{"data.tasks": "colour,animal", "train.lr": 5e-4})
    for cfg in (first, second):
        assert run_trial(cfg).status == "completed"
    assert passes == [first.id]
    assert [s for t, s in evaluated if t == second.id] == [1, 2]  # stage 0 read, not scored
    keys = [k for k in _keys(s3) if "/_shared/" in k]
    assert len([k for k in keys if "/_shared/stage0/" in k]) == 1
    assert any(k.endswith("/shared.json") and "/_shared/replay/tm-" in k for k in keys)
    assert not any(k.endswith(".claim.json") for k in keys)
    acc = read_study(study_dir(out, "engine"))["accuracy"]
    start = [
        acc[(acc.trial_id == c.id) & (acc.stage == 0)]
        .drop(columns=["trial_id"])
        .reset_index(drop=True)
        for c in (first, second)
    ]
    pd.testing.assert_frame_equal(start[0], start[1], check_exact=True)


def test_both_kinds_of_study_refuse_bad_output_options_before_any_work(s3, tmp_path, capsys):
    """A grid of trials and a study of jobs share the --report, --dpi and --storage-path
    checks: each is refused with exit 2, naming the option, before the plan (nothing runs)."""
    from harness.grid import axis
    from harness.study import Jobs, Study, main

    planned = []

    def plan(args):
        planned.append(args)
        return [("only", {})]

    grid = [axis("replay.method", ["none"])]
    trials = Study("st", "A study.", grid, grid)
    jobs = Study("sj", "Jobs.", [], [], jobs=Jobs("adaptation", plan, run=dict))
    argv = ["--smoke-test", "--out", str(tmp_path / "runs"), "--dry-run"]
    for bad, want in (
        (["--dpi", "0"], "--dpi 0: must be a positive integer"),
        (["--report"], "--report: this study has no report writer"),
        (["--storage-path", "s3://no-such-bucket/ray"], "'s3://no-such-bucket/ray': cannot write"),
    ):
        for study in (trials, jobs):
            assert main(study, [*argv, *bad]) == 2, (study.name, bad)
            assert want in capsys.readouterr().err, (study.name, bad)
    assert planned == []  # the jobs' plan did not run
    assert main(jobs, argv) == 0 and len(planned) == 1
