"""Every study's --smoke-test through its real entry point: Tune fans out, each trial runs
2 Ray Train workers with DeepSpeed ZeRO-2 on CPU; a killed trial resumes; ray job submit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from results.diagnostics import interpolation_summary
from results.io import read_study

REPO = Path(__file__).resolve().parents[2]
SMOKE_TRIALS = {
    "lr_robustness": 4,
    "replay_size": 4,
    "loss_types": 6,
    "lora_vs_full": 4,
    "landscape": 4,
}
N_TASKS = 2  # smoke runs train on the first 2 tasks of the generated world

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _study(name: str, out: Path, *extra: str, env: dict | None = None):
    cmd = [
        sys.executable,
        str(REPO / "studies" / f"{name}.py"),
        "--smoke-test",
        "--out",
        str(out),
        *extra,
    ]
    t0 = time.perf_counter()
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=1500)
    # The study logs its own parallel efficiency; pytest -rP shows this line.
    eff = [
        ln.split("harness.tune: ")[-1]
        for ln in proc.stderr.splitlines()
        if "parallel efficiency" in ln
    ]
    print(f"{name} smoke: {time.perf_counter() - t0:.0f} s wall (whole command); {' '.join(eff)}")
    return proc


def _check_dataset(out: Path, name: str) -> dict:
    tables = read_study(out / f"study={name}")  # validates the schema version of every file
    n = SMOKE_TRIALS[name]
    summary = tables["summary"]
    assert len(summary) == n and summary.status.eq("completed").all(), summary[
        ["trial_id", "status", "error"]
    ]
    acc = tables["accuracy"]
    assert len(acc) == n * (N_TASKS + 1) * N_TASKS  # stages 0..T x tasks, once each
    assert not acc.duplicated(["trial_id", "stage", "task"]).any()
    assert len(tables["general"]) == n * (N_TASKS + 1)
    assert tables["curve"].groupby("trial_id").size().min() >= N_TASKS
    return tables


@pytest.mark.parametrize("name", ["replay_size", "loss_types"])
def test_study_smoke_test_writes_a_schema_valid_dataset(name, tmp_path, monkeypatch):
    if name == "replay_size":  # also: tracked with MLflow, read by every Parquet reader
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this test's own client
        return _replay_size_tracked_with_mlflow(tmp_path)
    proc = _study(name, tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = _check_dataset(tmp_path / "runs", name)
    assert sorted(tables["summary"].method) == ["ce", "kl", "l1", "l2", "none", "tm"]


def _replay_size_tracked_with_mlflow(tmp_path):
    """--tracker mlflow: every trial is an MLflow run (read back with MLflow's own client)
    with its own settings as params and the training curve per step; each trial's Tune
    config is its own (params.json < 3 KB); <out> is a dataset that pandas, pyarrow, DuckDB
    and polars read whole (Ray's storage and checkpoints sit in <out>/_ray, which they skip)."""
    mlflow = pytest.importorskip("mlflow")
    out, uri = tmp_path / "runs", f"file://{tmp_path / 'mlruns'}"
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true"}
    proc = _study("replay_size", out, "--tracker", "mlflow", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = _check_dataset(out, "replay_size")
    summary = tables["summary"]
    assert sorted(summary.replay_size) == [0, 4, 8, 16]
    # Typed settings: a number where it applies, null where not (no LoRA, no replay for none).
    assert summary["train.lr"].gt(0).all() and summary["model.lora_r"].isna().all()
    none = summary[summary.method == "none"].iloc[0]
    assert pd.isna(none["replay.weight_strategy"]) and list(none["tasks"]) == list(
        tables["accuracy"].task.drop_duplicates()
    )
    assert summary["torch_version"].notna().all() and summary["device"].eq("cpu x 2").all()

    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("replay_size")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(runs) == sorted(summary.trial_id)
    curve = tables["curve"]
    for tid, run in runs.items():
        assert run.info.status == "FINISHED"
        assert float(run.data.params["trial/train/lr"]) == pytest.approx(
            summary.set_index("trial_id").loc[tid, "train.lr"]
        )
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == sorted(curve[curve.trial_id == tid].step), tid  # every curve row
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        mine = curve[curve.trial_id == tid].sort_values("step").loss.tolist()
        assert [m.value for m in losses] == pytest.approx(mine)
        assert client.get_metric_history(run.info.run_id, "general_accuracy")  # per task

    # TensorBoard: Tune's TBX logger writes each trial's event file beside its params.json.
    from tests.fixtures import tb_scalars

    for tid in summary.trial_id:
        folder = out / "_ray" / "tune-study=replay_size" / f"trial_id={tid}"
        steps = [s for s, _ in tb_scalars(folder)["ray/tune/train/loss"]]
        assert steps == sorted(curve[curve.trial_id == tid].step), tid

    params = list((out / "_ray" / "tune-study=replay_size").glob("*/params.json"))
    # Tune's params: the trial's own settings (about 3.1 KB), never data or the whole grid
    assert len(params) == 4 and max(p.stat().st_size for p in params) < 4000, [
        p.stat().st_size for p in params
    ]
    assert "Reporting training result" not in proc.stderr  # Ray's per-report line, silenced

    _read_whole_with_every_reader(out, "replay_size", summary)


def _read_whole_with_every_reader(out, name, summary):
    import duckdb
    import pandas as pd
    import polars as pl
    import pyarrow.dataset as ds

    n = len(summary)
    # The results root as one hive-partitioned dataset (study=<name>), the summary kind.
    files = sorted((out / f"study={name}" / "summary").glob("*.parquet"))
    assert len(files) == n
    whole = ds.dataset(out, format="parquet", partitioning="hive")  # every kind, every study
    assert "study" in whole.schema.names and whole.files
    assert all(f.endswith(".parquet") for f in whole.files), whole.files  # nothing else there
    table = ds.dataset(out / f"study={name}" / "summary", format="parquet").to_table()
    assert sorted(table.column("trial_id").to_pylist()) == sorted(summary.trial_id)
    assert len(pd.read_parquet(out / f"study={name}" / "summary")) == n
    glob = str(out / "**" / "summary" / "*.parquet")
    con = duckdb.connect()
    got = con.execute(
        f'SELECT count(*), count(DISTINCT trial_id), min("train.lr") FROM '
        f"read_parquet('{glob}', hive_partitioning = true) WHERE study = '{name}'"
    ).fetchone()
    assert got[:2] == (n, n) and got[2] == pytest.approx(summary["train.lr"].min())
    frame = pl.read_parquet(glob, hive_partitioning=True)
    assert frame.height == n and frame["tasks"].dtype == pl.List(pl.String)


def test_landscape_smoke_records_every_slice_and_reports_it(tmp_path):
    proc = _study("landscape", tmp_path / "runs", "--report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "landscape: 205 forward passes per trial, 820 in all" in proc.stdout
    tables = _check_dataset(tmp_path / "runs", "landscape")
    land = tables["landscape"]
    # Per trial: stage 1 scores (new, general), stage 2 (prev, new, general); each stage has
    # an interpolation (9 alphas), a 1-D (7) and a 2-D (5 x 5) slice: 41 points.
    assert land.groupby("trial_id").size().tolist() == [41 * 2 + 41 * 3] * 4
    assert not land.duplicated(["trial_id", "slice", "stage", "dataset", "alpha", "beta"]).any()
    assert set(land[land.trial_id.str.contains("lora")].space) == {"lora_merged"}
    assert set(land[~land.trial_id.str.contains("lora")].space) == {"full"}
    assert land.loss.notna().all() and (land.tokens > 0).all()
    barriers = interpolation_summary(land)
    assert len(barriers) == 4 * (2 + 3) and barriers.barrier.notna().all()
    assert (barriers.barrier >= 0).all()
    report_dir = tmp_path / "runs" / "_reports" / "landscape"
    report = (report_dir / "report.md").read_text()
    for section in ("## Loss landscape", "## Plasticity diagnostics"):
        assert section in report
    figures = {p.name for p in report_dir.glob("*.png")}
    for prefix in ("interpolation_", "landscape2d_", "plasticity_", "accuracy_"):
        assert any(f.startswith(prefix) for f in figures), (prefix, sorted(figures))
    for png in report_dir.glob("*.png"):
        assert f"]({png.name})" in report  # every figure is shown in the report


def test_plasticity_smoke_runs_every_intervention_on_two_zero2_ranks_and_reports_it(tmp_path):
    """Five regimes (plain backprop, weight decay, shrink & perturb, continual backprop, ReDo)
    on the long stream's first 3 tasks, 2 DeepSpeed ZeRO-2 ranks per trial under Ray."""
    out = tmp_path / "runs"
    proc = _study("plasticity", out, "--report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first_1" in proc.stdout and "continual_backprop" in proc.stdout  # the table
    tables = read_study(out / "study=plasticity")
    summary = tables["summary"]
    regimes = ["backprop", "continual_backprop", "redo", "shrink_perturb", "weight_decay"]
    assert sorted(summary.trial_id) == [f"regime={r}" for r in regimes]
    assert summary.status.eq("completed").all(), summary[["trial_id", "error"]]
    assert {tuple(t) for t in summary.tasks} == {("stream01", "stream02", "stream03")}
    assert len(tables["accuracy"]) == 5 * 4 * 3  # stages 0..3 x 3 tasks
    # Every intervention changed the weights the ranks trained (the same data and seed
    # otherwise): the whole-model weight norm after the last task differs from backprop's.
    plast = tables["plasticity"]
    norm = plast[(plast.metric == "weight_norm") & (plast.layer == -1) & (plast.stage == 3)]
    final = norm.groupby("trial_id").value.mean()
    for r in regimes[1:]:
        assert final[f"regime={r}"] != pytest.approx(final["regime=backprop"], rel=1e-7), r
    report_dir = out / "_reports" / "plasticity"
    report = (report_dir / "report.md").read_text()
    assert "## Loss of plasticity" in report and "| regime |" in report
    assert (report_dir / "plasticity_just_learned.png").is_file()
    assert "](plasticity_just_learned.png)" in report


def test_baselines_smoke_runs_every_row_on_two_zero2_ranks_and_reports_the_table(tmp_path):
    """Every row of the continual-learning table (none full and LoRA, ce, kl, tm, task replay,
    EWC, LwF, O-LoRA, multitask, single_task) with GeRe's reference objective, 2 DeepSpeed
    ZeRO-2 ranks per trial under Ray; the report tables them against multitask and with SAPT's
    FWT against single_task."""
    out = tmp_path / "runs"
    proc = _study("baselines", out, "--report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gap_to_multitask" in proc.stdout and "olora (lora)" in proc.stdout
    tables = read_study(out / "study=baselines")
    summary = tables["summary"]
    assert summary.status.eq("completed").all(), summary[["trial_id", "error"]]
    assert len(summary) == 11
    multitask = summary[summary.trial_id == "baseline=multitask"].iloc[0]
    assert multitask.n_stages == 1 and summary[summary.n_stages == 3].shape[0] == 10
    acc = tables["accuracy"]
    assert len(acc) == 10 * 4 * 3 + 2 * 3  # sequential: stages 0..3; multitask: 0..1
    from results.presentation.baselines import baselines_table

    table = baselines_table(summary, acc, formatted=False)
    assert table["fwt_sapt_mean"].drop(["multitask", "single_task"]).notna().all()
    config = json.loads(summary.config_json.iloc[0])
    assert config["train"]["loss_weighting"] == "per_sample"
    assert config["replay"]["add_bos"] == "never"
    # the rows differ from plain sequential fine-tuning where a method acts in 2 steps a task
    curve = tables["curve"].groupby("trial_id").loss.sum()
    for row in ("ewc", "lwf", "task_replay", "tm"):
        assert curve[f"baseline={row}"] != pytest.approx(curve["baseline=none"], rel=1e-9), row
    assert tables["curve"].pad_share.between(0, 1).all()
    report = (out / "_reports" / "baselines" / "report.md").read_text()
    assert "## Continual-learning baselines" in report and "| olora (lora) |" in report
    assert "| single_task |" in report and "FWT vs single task, SAPT (pp)" in report
    assert "no matrix: every task was trained in one stage" in report
    assert "](baselines.png)" in report


def test_active_forgetting_smoke_adapts_both_bases_resumes_and_reports(tmp_path):
    out = tmp_path / "runs"
    proc = _study("active_forgetting", out, "--report")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "first_language" in proc.stdout and "embeddings_5" in proc.stdout
    rows = read_study(out / "study=active_forgetting")["adaptation"]
    # 2 bases x (first + new language unadapted) + 2 bases x 2 adaptations x 2 budgets x 1 seed
    assert len(rows) == 4 + 8 and rows.trial_id.nunique() == 2 + 8
    assert set(rows.base) == {"standard", "forgetful"}
    assert set(rows[rows.base == "forgetful"].embedding_reset_every) == {5}
    assert rows.probe_accuracy.between(0, 1).all() and (rows.n_total == 24).all()
    report = (out / "_reports" / "active_forgetting" / "report.md").read_text()
    assert "## Active forgetting" in report and "](adaptation.png)" in report
    again = _study("active_forgetting", out)  # everything stored: nothing runs again
    assert again.returncode == 0 and again.stderr.count("stored, skipped") == 10


def _study_with_hooks(name: str, out: Path, hooks: str, *argv: str):
    """A study's --smoke-test through harness.study.main with extra stage hooks (the test's
    fault injection: ``hooks`` is Python building a list from tests.fault_hooks). The
    repository goes on PYTHONPATH so the Ray Train workers import the hooks' module."""
    code = (
        "import sys\n"
        "import dataclasses\n"
        f"import studies.{name} as s\n"
        "from studies import run\n"
        "from tests.fault_hooks import CrashOnce, EventLog, FailAt, HangOnRank\n"
        f"sys.exit(run(dataclasses.replace(s.STUDY, hooks={hooks}), "
        f"['--smoke-test', '--out', {str(out)!r}, *{list(argv)!r}]))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def test_killed_hung_and_buggy_trials_of_one_study_and_a_rerun_that_finishes_the_failed(
    tmp_path,
):
    """One lr_robustness smoke, four trials, three faults (one study run checks them all):

    * a trial whose worker processes are killed inside its second task resumes from its last
      end-of-task checkpoint (both ranks restart once, after task 1) and completes;
    * a rank that sleeps in a collective fails its trial within scale.collective_timeout_s,
      recorded as 'failed' with the rank, the wait and what it was doing;
    * a trial's own error is recorded and not retried (one start per rank);
    * the fourth trial completes untouched.

    Re-running the command (no faults) runs only the two failed trials, which now complete; the
    completed ones start no worker and keep their rows."""
    events = tmp_path / "events.jsonl"
    crashed, hung = "lr_multiplier=1,method=tm", "lr_multiplier=10,method=tm"
    buggy, clean = "lr_multiplier=1,method=none", "lr_multiplier=10,method=none"
    hooks = (
        f"[EventLog({str(events)!r}), CrashOnce({str(events)!r}, {crashed!r}, 1), "
        f"HangOnRank({str(events)!r}, {hung!r}, 1, 1, 60), "
        f"FailAt({str(events)!r}, {buggy!r}, 1)]"
    )
    t0 = time.perf_counter()
    out = tmp_path / "runs"
    proc = _study_with_hooks("lr_robustness", out, hooks, "--set", "scale.collective_timeout_s=15")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "2 trial(s) of study 'lr_robustness' failed" in proc.stderr
    assert time.perf_counter() - t0 < 900
    summary = read_study(out / "study=lr_robustness")["summary"]
    status = dict(zip(summary.trial_id, summary.status, strict=True))
    assert status == {crashed: "completed", clean: "completed", hung: "failed", buggy: "failed"}
    errors = dict(zip(summary.trial_id, summary.error, strict=True))
    assert (
        "rank 0 waited 15 s (scale.collective_timeout_s) in a collective during " in (errors[hung])
    ), errors[hung]
    assert "training task 2" in errors[hung]
    assert "injected bug" in errors[buggy]

    log = [json.loads(line) for line in events.read_text().splitlines()]

    def starts(trial_id, entries):
        return sorted(
            e["resumed_after_stage"]
            for e in entries
            if e["event"] == "start" and e["trial_id"] == trial_id
        )

    assert {e["trial_id"] for e in log if e["event"] == "crash"} == {crashed}
    assert starts(crashed, log) == [0, 0, 1, 1]  # 2 ranks fresh, then both resumed after task 1
    for trial_id in (clean, hung, buggy):  # one start per rank: no retry of a failure
        assert starts(trial_id, log) == [0, 0], trial_id

    before = read_study(out / "study=lr_robustness")
    proc = _study_with_hooks("lr_robustness", out, f"[EventLog({str(events)!r})]")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 already completed" in proc.stderr
    again = [json.loads(line) for line in events.read_text().splitlines()][len(log) :]
    assert {e["trial_id"] for e in again if e["event"] == "start"} == {hung, buggy}
    assert all(len(starts(t, again)) == 2 for t in (hung, buggy))
    _check_dataset(out, "lr_robustness")  # all four completed, each cell once
    after = read_study(out / "study=lr_robustness")
    for kind in ("accuracy", "curve"):
        kept = [
            t[t.trial_id.isin([crashed, clean])].reset_index(drop=True)
            for t in (before[kind], after[kind])
        ]
        pd.testing.assert_frame_equal(kept[0], kept[1], obj=kind)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_against_a_local_head_node(tmp_path):
    """The documented cluster path: ray start --head (token auth on), then ray job submit."""
    port, dash = _free_port(), _free_port()
    # The README's way: a token made for this cluster (never one left by an earlier run).
    token = tmp_path / "auth_token"
    made = subprocess.run(
        ["ray", "get-auth-token", "--generate"],
        # Ray 2.52-2.58 generate a token only in token mode (2.59+ in any mode)
        env={**os.environ, "HOME": str(tmp_path), "RAY_AUTH_MODE": "token"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr[-2000:]
    token.write_text((tmp_path / ".ray" / "auth_token").read_text())
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    start = subprocess.run(
        [
            "ray",
            "start",
            "--head",
            "--num-cpus",
            "2",
            "--port",
            str(port),
            "--dashboard-port",
            str(dash),
            "--include-dashboard",
            "true",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        out = tmp_path / "runs"
        submit = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--address",
                f"http://127.0.0.1:{dash}",
                "--working-dir",
                str(REPO),
                "--",
                "python",
                "studies/lora_vs_full.py",
                "--smoke-test",
                "--out",
                str(out),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=1500,
        )
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
        assert "succeeded" in submit.stdout + submit.stderr
        tables = _check_dataset(out, "lora_vs_full")
        assert sorted(tables["summary"].tuning) == ["full", "full", "lora", "lora"]
    finally:
        subprocess.run(["ray", "stop", "--force"], capture_output=True, timeout=120)


def test_the_demo_alias_runs_the_demo_study_smoke_test(tmp_path):
    """python -m harness demo is studies/demo.py: its smoke test through the alias prints the
    demo's table and writes the study's dataset."""
    cmd = [sys.executable, "-m", "harness", "demo", "--smoke-test", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "General ability (probe accuracy, held-out perplexity)" in proc.stdout
    assert "probe chance = 0.125" in proc.stdout
    summary = read_study(tmp_path / "study=demo")["summary"]
    assert sorted(summary.method) == ["none", "tm"] and summary.status.eq("completed").all()
