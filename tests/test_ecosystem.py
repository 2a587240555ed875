"""The harness among the tools researchers use: trackers, typed results, installs, the CLI.

(The study-level checks -- a smoke study tracked with MLflow, its dataset read by pandas,
pyarrow, DuckDB and polars -- are in tests/studies/test_studies.py, slow.)"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.config import ConfigError, from_dict
from harness.config.flat import flat_settings, settings_columns
from harness.tracking import check_tracker
from harness.trial import run_trial
from results import io, schema
from tests.fixtures import mini_config, tb_scalars

REPO = Path(__file__).resolve().parent.parent


def test_tracker_names_are_checked_before_anything_runs():
    check_tracker(None)
    check_tracker("mlflow")
    with pytest.raises(ConfigError, match=r"--tracker 'mlfow': not a tracker; choose one of"):
        check_tracker("mlfow")


def test_harness_run_logs_settings_and_the_per_step_curve_to_mlflow(
    mini_root, tmp_path, monkeypatch
):
    mlflow = pytest.importorskip("mlflow")
    from harness.tracking import TrackerHook

    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour,animal"})
    result = run_trial(cfg, hooks=[TrackerHook("mlflow")])
    assert result.status == "completed"
    client = mlflow.tracking.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("engine").experiment_id])
    assert run.info.run_name == cfg.id and run.info.status == "FINISHED"
    assert run.data.params["trial/train/lr"] == "0.001"
    curve = io.read_study(io.study_dir(cfg.out, cfg.study))["curve"].sort_values("step")
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == curve.step.tolist()  # every curve row, by global step
    assert [m.value for m in history] == pytest.approx(curve.loss.tolist())
    per_task = client.get_metric_history(run.info.run_id, "general_accuracy")
    assert len(per_task) == 2  # after each of the two tasks


def test_a_resumed_trial_logs_on_to_its_mlflow_run(mini_root, tmp_path, monkeypatch):
    """The run id travels in the trial's checkpoint: a crash closes the run as failed, the
    resumed trial reopens the same run (no second one) and ends it finished."""
    mlflow = pytest.importorskip("mlflow")
    from harness.tracking import TrackerHook
    from tests.fixtures import Crash, SaveThenCrash

    uri = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour,animal"})
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        run_trial(cfg, hooks=[TrackerHook("mlflow"), SaveThenCrash(ckpt)])
    client = mlflow.tracking.MlflowClient(uri)
    exp_id = client.get_experiment_by_name("engine").experiment_id
    (crashed,) = client.search_runs([exp_id])
    assert crashed.info.status == "FAILED"
    assert run_trial(cfg, resume_from=ckpt, hooks=[TrackerHook("mlflow")]).status == "completed"
    (run,) = client.search_runs([exp_id])
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    curve = io.read_study(io.study_dir(cfg.out, cfg.study))["curve"]
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert steps == set(curve.step)  # task 2's steps were logged again after the resume


def test_harness_run_writes_tensorboard_events_outside_the_dataset(mini_root, tmp_path):
    from harness.tracking import TrackerHook

    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour,animal"})
    assert run_trial(cfg, hooks=[TrackerHook("tensorboard")]).status == "completed"
    scalars = tb_scalars(tmp_path / "out" / "_tensorboard" / cfg.study / cfg.id)
    curve = io.read_study(io.study_dir(cfg.out, cfg.study))["curve"].sort_values("step")
    assert [s for s, _ in scalars["train/loss"]] == curve.step.tolist()
    assert [v for _, v in scalars["train/loss"]] == pytest.approx(curve.loss.tolist(), rel=1e-6)


def _wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (``run-<id>.wandb``): a 7-byte
    ':W&B' header, then LevelDB-log framing (32 KiB blocks of crc32, length, type records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if n == 0 and kind == 0:
            pos += left - 7
            continue
        buf += data[pos : pos + n]
        pos += n
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_harness_run_logs_to_wandb_offline(mini_root, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from harness.tracking import TrackerHook

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_PROJECT", "gere-test")
    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour,animal"})
    assert run_trial(cfg, hooks=[TrackerHook("wandb")]).status == "completed"
    (path,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(path)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group, run.project) == (cfg.id, "engine", "gere-test")
    config = {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in run.config.update}
    assert config["trial/train/lr"] == 0.001
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    logged = [(h["_step"], h["train/loss"]) for h in history if "train/loss" in h]
    curve = io.read_study(io.study_dir(cfg.out, cfg.study))["curve"].sort_values("step")
    assert [s for s, _ in logged] == curve.step.tolist()
    assert [v for _, v in logged] == pytest.approx(curve.loss.tolist())


def test_settings_columns_are_typed_and_null_where_they_do_not_apply():
    full = flat_settings(from_dict({"replay": {"method": "none"}}).to_dict())
    assert full["train.lr"] == 1e-5 and full["model.tuning"] == "full"
    assert full["model.lora_r"] is None and full["model.lora_target_modules"] is None
    assert full["replay.size"] is None and full["replay.weight_strategy"] is None
    lora = flat_settings(from_dict({"model": {"tuning": "lora"}}).to_dict(), 100.0)
    assert lora["model.lora_r"] == 8 and lora["model.lora_target_modules"] == ["all-linear"]
    assert lora["replay.weight"] == 100.0 and lora["replay.weight_strategy"] == "fixed"
    dyn = flat_settings(from_dict({"replay": {"weight": "dynamic"}}).to_dict(), "dynamic")
    assert dyn["replay.weight"] is None and dyn["replay.weight_strategy"] == "dynamic"
    assert json.loads(dyn["replay.settings"]) == {}
    names = [n for n, _k, _d in settings_columns()]
    assert len(names) == len(set(names)) and "train.lr" in names


def test_a_completed_trial_summary_carries_settings_and_provenance(mini_root, tmp_path):
    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour"})
    assert run_trial(cfg).status == "completed"
    s = io.read_study(io.study_dir(cfg.out, cfg.study))["summary"].iloc[0]
    assert list(s["tasks"]) == ["colour"]
    assert s["train.lr"] == 1e-3 and s["replay.size"] == 8 and pd.isna(s["model.lora_r"])
    assert s["torch_version"] == metadata.version("torch") and s["device"] == "cpu"
    assert s["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert s["started_at"].tzinfo is not None
    if not pd.isna(s["git_sha"]):  # this test runs from a checkout (CI's is a clone)
        assert s["harness_version"].startswith(f"0.1.0+g{s['git_sha'][:7]}")


def test_a_version_1_summary_is_read_in_version_2_form(tmp_path):
    """Results written before the schema went to 2 read with tasks as a list and the typed
    settings filled from config_json; the other kinds only change their version."""
    cfg = from_dict({"replay": {"method": "kl"}, "train": {"lr": 3e-4}})
    v2 = schema.schema_for("summary")
    old = [f for f in v2 if f.name not in schema.omissible("summary")]
    old = [pa.field("tasks", pa.string()) if f.name == "tasks" else f for f in old]
    row = {f.name: None for f in old}
    row.update(
        schema_version=1,
        study="s",
        trial_id="t",
        status="completed",
        wall_time_s=1.0,
        n_tasks=2,
        n_stages=2,
        tasks="a,b",
        model="tiny",
        tuning="full",
        method="kl",
        replay_size=4,
        replay_weight="default",
        lr=3e-4,
        lr_multiplier=1.0,
        seed=0,
        config_json=json.dumps(cfg.to_dict()),
        harness_version="0.1.0",
    )
    for f in old:
        if pa.types.is_floating(f.type) and row[f.name] is None:
            row[f.name] = float("nan")
    table = pa.Table.from_pylist([row], schema=pa.schema([f.with_nullable(True) for f in old]))
    path = io.study_dir(tmp_path, "s") / "summary" / "t.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    s = io.read_study(io.study_dir(tmp_path, "s"))["summary"].iloc[0]
    assert s["schema_version"] == schema.SCHEMA_VERSION == 3
    assert list(s["tasks"]) == ["a", "b"] and s["train.lr"] == 3e-4
    assert s["replay.add_bos"] == "tokenizer" and s["data.add_bos"] == "tokenizer"
    assert s["replay.method"] == "kl" and s["replay.weight_strategy"] == "fixed"
    assert s["replay.weight"] == 1.0  # 'default' resolved to KL's default weight
    assert s["train.loss_weighting"] == "microbatch_mean"  # added since, read at its default
    assert pd.isna(s["git_sha"]) and pd.isna(s["started_at"])


def test_a_study_reads_base_settings_from_a_config_file(tmp_path, capsys):
    from harness.study import Study, main

    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 2\n  warmup_steps: 0\n")
    argv = ["--smoke-test", "--dry-run", "--out", str(tmp_path), "--config", str(path)]
    assert main(Study("lr_robustness", None, [], []), argv) == 0
    path.write_text("train:\n  lr_multiplier: 3\n")
    from harness.grid import axis

    grid = [axis("train.lr_multiplier", [1, 10])]
    assert main(Study("lr_robustness", None, grid, grid), argv) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: train.lr_multiplier=3" in err and "axis of this study" in err
    # --set wins over the file, dotted keys in the file included.
    path.write_text("train:\n  epochs: 2\ntrain.lr: 1.0e-4\n")
    seen: dict = {}

    def prepare(args, base):
        seen.update(base)
        return base

    argv_set = [*argv, "--set", "train.lr=5e-5"]
    assert main(Study("lr_robustness", None, [], [], prepare=prepare), argv_set) == 0
    assert float(seen["train"]["lr"]) == 5e-5 and seen["train"]["epochs"] == 2
    path.write_text("trian:\n  lr: 1\n")
    assert main(Study("lr_robustness", None, [], []), argv) == 2
    assert "unknown key 'trian'" in capsys.readouterr().err


def test_package_metadata_states_the_supported_pythons_and_ranges():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    meta = metadata.metadata("gere-harness")
    spec = SpecifierSet(meta["Requires-Python"])
    assert spec == SpecifierSet(">=3.11") and ".".join(map(str, sys.version_info[:2])) in spec
    classifiers = [c for c in meta.get_all("Classifier") if c.startswith("Programming Language")]
    for minor in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {minor}" in classifiers
        assert minor in spec
    # Ranges, not pins (ruff excepted); every version CI installs satisfies them.
    lock = {}
    for line in (REPO / "requirements" / "ci-constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.split("#")[0].strip().partition("==")
            lock[name.lower().replace("_", "-")] = version
    for text in metadata.requires("gere-harness"):
        if 'extra == "trackers"' in text:
            continue  # optional trackers: CI installs only those dev needs
        req = Requirement(text.split(";")[0])
        name = req.name.lower().replace("_", "-")
        if name != "ruff":
            assert not str(req.specifier).startswith("=="), f"{req} is pinned"
        assert name in lock, f"{name} is missing from requirements/ci-constraints.txt"
        assert req.specifier.contains(lock[name], prereleases=True), (req, lock[name])


def test_console_script_and_the_study_subcommand():
    (ep,) = [e for e in metadata.entry_points(group="console_scripts") if e.name == "gere"]
    assert ep.value == "harness.cli:main"
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "study", "lr_robustnes"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "did you mean 'lr_robustness'" in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "study", "lr_robustness", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0 and "--tracker" in proc.stdout and "--config" in proc.stdout


def test_hub_models_take_a_revision_and_an_attention_kernel(monkeypatch):
    """model.revision and model.attn_implementation reach transformers' from_pretrained (for
    the tokenizer too); unset, nothing extra is passed (transformers' defaults)."""
    import transformers

    from harness import models

    seen: list[tuple[str, dict]] = []

    class Tok:
        pad_token_id, eos_token = 0, "</s>"

    def fake(kind):
        def from_pretrained(source, **kw):
            seen.append((kind, kw))
            return Tok() if kind == "tok" else torch_module()

        return from_pretrained

    def torch_module():
        import torch

        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake("tok"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake("model"))
    import torch

    models.load_tokenizer_and_model(
        "org/model", dtype=torch.float16, seed=0, revision="abc123", attn_implementation="eager"
    )
    assert seen == [
        ("tok", {"revision": "abc123"}),
        ("model", {"dtype": torch.float16, "revision": "abc123", "attn_implementation": "eager"}),
    ]
    seen.clear()
    models.load_tokenizer_and_model("org/model", dtype=torch.float32, seed=0)
    assert seen == [("tok", {}), ("model", {"dtype": torch.float32})]


def test_model_options_are_checked():
    with pytest.raises(ConfigError, match=r"float16 trains only under DeepSpeed on GPUs"):
        from_dict({"model": {"name": "org/m", "dtype": "float16"}})
    gpu = {"scale": {"backend": "deepspeed", "use_gpu": True}}
    assert from_dict({"model": {"name": "org/m", "dtype": "float16"}, **gpu}).model.dtype
    with pytest.raises(ConfigError, match=r"not loaded from the Hub"):
        from_dict({"model": {"revision": "main"}})  # the built-in tiny model
    with pytest.raises(ConfigError, match=r"'all-linear' stands alone"):
        from_dict({"model": {"tuning": "lora", "lora_target_modules": ["all-linear", "q_proj"]}})
    with pytest.raises(ConfigError, match=r"not a branch, tag or commit"):
        from_dict({"model": {"name": "org/m", "revision": "bad rev"}})


def test_lora_all_linear_adapts_every_linear_layer_but_the_head():
    from tests.fixtures import tiny_built

    built = tiny_built(tuning="lora")
    adapted = {
        n.split(".lora_A")[0].split(".")[-1]
        for n, _ in built.model.named_parameters()
        if "lora_A" in n
    }
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted
    assert not any("lm_head" in n and "lora" in n for n, _ in built.model.named_parameters())


def test_a_step_skipped_by_fp16_loss_scaling_is_not_a_divergence(mini_root, tmp_path, monkeypatch):
    """DeepSpeed's dynamic loss scaling skips an overflowing fp16 step and reports an inf
    norm (backend.step_skipped): training goes on; a real inf norm still stops it."""
    from harness.backend import TorchBackend

    real = TorchBackend.step
    calls = {"n": 0}

    def step(self, lr):
        calls["n"] += 1
        if calls["n"] == 1:  # the first step overflows: no update, scale lowered
            self.optimizer.zero_grad(set_to_none=True)
            self.step_skipped = True
            return float("inf")
        self.step_skipped = False
        return real(self, lr)

    monkeypatch.setattr(TorchBackend, "step", step)
    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour"})
    assert run_trial(cfg).status == "completed"
    curve = io.read_study(io.study_dir(cfg.out, cfg.study))["curve"]
    assert curve.step.max() == 3 and curve.grad_norm.notna().all()

    calls["n"] = 0
    monkeypatch.setattr(
        TorchBackend, "step", lambda self, lr: (setattr(self, "step_skipped", False), 1e400)[1]
    )
    cfg = mini_config(mini_root, tmp_path / "out2", **{"data.tasks": "colour"})
    assert run_trial(cfg).status == "diverged"


def test_a_version_2_summary_reads_its_bool_add_bos_as_the_rule_it_meant(tmp_path):
    """Version 2 stored replay.add_bos as a bool (true: the tokenizer's BOS, which every model
    run then put first; false: none) and had no data.add_bos; version 3 reads them as rules."""
    v3 = schema.schema_for("summary")
    fields = [f.with_nullable(True) for f in v3 if f.name != "data.add_bos"]
    fields = [pa.field(f.name, pa.bool_()) if f.name == "replay.add_bos" else f for f in fields]
    rows = []
    for trial, flag in (("t1", True), ("t2", False)):
        row = {f.name: None for f in fields}
        row.update(schema_version=2, study="s", trial_id=trial, status="completed", tasks=["a"])
        row["replay.add_bos"] = flag
        rows.append(row)
    path = io.study_dir(tmp_path, "s") / "summary" / "t.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), path)
    table = schema.upgrade("summary", pq.read_table(path))
    assert table.column("replay.add_bos").to_pylist() == ["tokenizer", "never"]
    assert set(table.column("schema_version").to_pylist()) == {3}
    assert "data.add_bos" in schema.with_added_columns("summary", table).column_names


def test_the_demo_alias_lists_its_grid(tmp_path):
    """``python -m harness demo`` (the README's first command) runs studies/demo.py's Study: a
    dry run of its smoke test lists the grid without training (the full run is in
    tests/studies/test_studies.py, slow)."""
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "demo",
        "--smoke-test",
        "--dry-run",
        "--out",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "study demo: 2 trials" in proc.stdout and "method=tm" in proc.stdout
