"""Whole trials (harness.trial): records, divergence, bad input, resume, backends."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness import train as train_mod
from harness.config import from_dict, merge
from harness.data import DataError
from harness.hooks import Hook
from harness.trial import Trial, run_trial
from harness.trial_state import TrialState
from results.io import read_records, read_study
from results.schema import validate_table
from tests.fixtures import Crash, SaveThenCrash
from tests.fixtures import mini_config as _mini_config


def test_trial_end_to_end_writes_schema_valid_parquet_and_reruns_replace(mini_root, tmp_path):
    cfg = _mini_config(mini_root, tmp_path / "out")
    result = run_trial(cfg)
    assert result.status == "completed"
    tables = read_study(tmp_path / "out" / "study=engine")
    acc, gen, curve, summary = (tables[k] for k in ("accuracy", "general", "curve", "summary"))
    assert len(acc) == 4 * 3  # stages 0..3 x 3 tasks: future tasks included
    assert sorted(acc.stage.unique()) == [0, 1, 2, 3]
    assert len(gen) == 4 and gen.n_total.eq(8).all() and (gen.ppl > 1).all()
    assert len(curve) == 3 * 2 and curve.task.tolist()[:2] == ["colour", "colour"]
    assert len(summary) == 1 and summary.status.iloc[0] == "completed"
    assert np.isfinite(summary.ap.iloc[0]) and np.isfinite(summary.bwt.iloc[0])
    plast = tables["plasticity"]  # diagnostics at every stage, on the fixed probe batch
    assert sorted(plast.stage.unique()) == [0, 1, 2, 3]
    assert {"dormant_fraction", "effective_rank", "weight_distance"} <= set(plast.metric)
    dist = (
        plast[(plast.metric == "weight_distance") & (plast.layer == -1)].sort_values("stage").value
    )
    assert dist.iloc[0] == 0.0 and (dist.iloc[1:] > 0).all()
    import pyarrow.parquet as pq

    for kind, path in result.files.items():
        validate_table(kind, pq.read_table(path))
    run_trial(cfg)  # the same trial again: rows are replaced, not duplicated
    assert len(read_records(tmp_path / "out" / "study=engine", "accuracy")) == 12


def test_a_non_finite_loss_ends_the_trial_cleanly_as_diverged(mini_root, tmp_path, monkeypatch):
    real = train_mod.token_nll
    calls = {"n": 0}

    def exploding(logits, labels):
        calls["n"] += 1
        out = real(logits, labels)
        return out * float("nan") if calls["n"] >= 5 else out

    monkeypatch.setattr(train_mod, "token_nll", exploding)
    cfg = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none"})
    result = run_trial(cfg)
    assert result.status == "diverged"
    summary = read_records(tmp_path / "out" / "study=engine", "summary")
    row = summary.iloc[0]
    assert row.status == "diverged" and row.diverged_stage == 2 and row.diverged_step == 5
    acc = read_records(tmp_path / "out" / "study=engine", "accuracy")
    assert sorted(acc.stage.unique()) == [0, 1]  # what was measured before divergence is kept


def test_bad_data_fails_before_the_model_is_built(mini_root, tmp_path, monkeypatch):
    import harness.backend as backend_mod

    def never(*a, **k):
        raise AssertionError("model built despite bad data")

    monkeypatch.setattr(backend_mod, "build", never)
    with pytest.raises(DataError, match="nosuchtask"):
        run_trial(_mini_config(mini_root, tmp_path / "out", **{"data.tasks": "colour,nosuchtask"}))
    with pytest.raises(DataError):
        run_trial(_mini_config(mini_root, tmp_path / "out", **{"replay.size": 10_000}))


@pytest.mark.slow
def test_trial_on_real_long_sequence_tasks(shared_data, tmp_path):
    """3 real tasks, capped, tiny model: the whole pipeline on the real files."""
    cfg = from_dict(
        {
            "study": "real",
            "out": str(tmp_path / "out"),
            "data": {
                "root": str(shared_data),
                "tasks": "cb,rte,sst2",
                "max_train_per_task": 32,
                "max_test_per_task": 16,
                "max_seq_len": 192,
            },
            "replay": {"method": "tm", "size": 16, "max_tokens": 64},
            "train": {"lr": 1e-3, "batch_size": 4, "max_steps_per_task": 4, "log_every": 2},
            "eval": {
                "batch_size": 16,
                "probe_max_questions": 16,
                "heldout_max_texts": 8,
                "heldout_max_tokens": 64,
            },
        }
    )
    result = run_trial(cfg)
    assert result.status == "completed"
    tables = read_study(tmp_path / "out" / "study=real")
    acc = tables["accuracy"]
    assert len(acc) == 4 * 3 and set(acc.task) == {"cb", "rte", "sst2"}
    assert acc.n_total.eq(16).all()
    assert isinstance(tables["summary"], pd.DataFrame) and tables["summary"].n_tasks.iloc[0] == 3
    assert tables["general"].n_total.eq(16).all()


class SaveAt(Hook):
    """Checkpoints the trial into ``path`` after task ``stage``."""

    def __init__(self, path, stage):
        self.path, self.stage = path, stage

    def after_task(self, trial, stage):
        if stage == self.stage:
            trial.save(self.path)


def _curve_and_acc(out, trial_id):
    study = out / "study=engine"
    c = read_records(study, "curve")
    a = read_records(study, "accuracy")
    c, a = c[c.trial_id == trial_id], a[a.trial_id == trial_id]
    return c.loss.tolist(), a.sort_values(["stage", "task_position"]).accuracy.tolist()


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_a_trial_resumed_from_an_end_of_task_checkpoint_equals_an_uninterrupted_one(
    mini_root, tmp_path, tuning
):
    cfg = _mini_config(
        mini_root, tmp_path / "full_run", **{"model.tuning": tuning, "model.lora_r": 4}
    )
    run_trial(cfg)
    expected = _curve_and_acc(tmp_path / "full_run", cfg.id)

    crashed = _mini_config(
        mini_root, tmp_path / "crashed", **{"model.tuning": tuning, "model.lora_r": 4}
    )
    ckpt = tmp_path / "ckpt"

    with pytest.raises(Crash):
        run_trial(crashed, hooks=[SaveThenCrash(ckpt)])
    state = json.loads((ckpt / "state.json").read_text())
    assert state["finished_stage"] == 1
    assert (ckpt / "replay").is_dir()  # the TM states travel with the checkpoint
    assert (
        ckpt / "model" / ("adapter_model.safetensors" if tuning == "lora" else "model.safetensors")
    ).is_file()
    result = run_trial(crashed, resume_from=ckpt)
    assert result.status == "completed"
    assert _curve_and_acc(tmp_path / "crashed", crashed.id) == expected
    plast = {
        run: read_records(tmp_path / run / "study=engine", "plasticity").sort_values(
            ["stage", "layer", "metric", "tau"]
        )
        for run in ("full_run", "crashed")
    }
    assert plast["crashed"].value.tolist() == pytest.approx(
        plast["full_run"].value.tolist(), rel=1e-6, nan_ok=True
    )
    assert (
        len(read_records(tmp_path / "crashed" / "study=engine", "accuracy")) == 12
    )  # no duplicates


def test_resume_refuses_another_trials_checkpoint(mini_root, tmp_path):
    ckpt = tmp_path / "ckpt"
    cfg = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none"})
    run_trial(cfg, hooks=[SaveAt(ckpt, stage=1)])
    other = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none", "train.lr": 5e-4})
    with pytest.raises(ValueError, match="belongs to trial"):
        run_trial(other, resume_from=ckpt)


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_matches_the_plain_backend(mini_root, tmp_path, stage):
    """One-rank DeepSpeed ZeRO (gloo, CPU) gives the plain PyTorch losses and accuracies."""
    plain = _mini_config(
        mini_root, tmp_path / "out", **{"data.tasks": "colour,animal", "train.log_every": 1}
    )
    ds = _mini_config(
        mini_root,
        tmp_path / "out",
        **{
            "data.tasks": "colour,animal",
            "train.log_every": 1,
            "scale.backend": "deepspeed",
            "scale.zero_stage": stage,
        },
    )
    run_trial(plain)
    assert run_trial(ds).status == "completed"
    (loss_a, acc_a), (loss_b, acc_b) = (
        _curve_and_acc(tmp_path / "out", plain.id),
        _curve_and_acc(tmp_path / "out", ds.id),
    )
    assert loss_b == pytest.approx(loss_a, rel=1e-4)
    assert acc_b == acc_a


def test_trial_state_round_trips_and_reads_a_checkpoint_written_before_versioning():
    state = TrialState(trial_id="t", finished_stage=2, global_step=7, train_tokens=99)
    state.rows["accuracy"].append({"stage": 0, "accuracy": 0.5})
    d = state.to_dict()
    assert d["version"] == TrialState.VERSION and d["train_tokens"] == 99
    assert TrialState.from_dict(json.loads(json.dumps(d))) == state
    legacy = {k: v for k, v in d.items() if k != "version"}  # state.json before versioning
    legacy["rows"] = {k: v for k, v in legacy["rows"].items() if k != "landscape"}
    assert TrialState.from_dict(legacy) == state
    with pytest.raises(ValueError, match="version 99"):
        TrialState.from_dict({**d, "version": 99})


def test_hooks_are_called_at_every_stage_point_in_order(mini_root, tmp_path):
    calls = []

    class Recorder(Hook):
        def setup(self, trial):
            calls.append(("setup",))

        def before_first_task(self, trial):
            calls.append(("first",))

        def before_task(self, trial, stage):
            calls.append(("before", stage))

        def after_step(self, trial, stage, step):
            calls.append(("step", stage, step))

        def after_task(self, trial, stage):
            # The evaluation hook ran before this one: the stage's rows are there.
            assert {r["stage"] for r in trial.state.rows["accuracy"]} == set(range(stage + 1))
            calls.append(("after", stage))

        def at_end(self, trial, status):
            calls.append(("end", status))

    cfg = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none"})
    run_trial(cfg, hooks=[Recorder()])
    steps = [("step", s, 3 * (s - 1) + k) for s in (1, 2, 3) for k in (1, 2, 3)]
    expected = [("setup",), ("first",)]
    for s in (1, 2, 3):
        expected += [("before", s), *[c for c in steps if c[1] == s], ("after", s)]
    assert calls == [*expected, ("end", "completed")]


def test_a_hook_loss_term_is_added_to_the_training_loss(mini_root, tmp_path):
    """A hook's term reaches the gradient: pulling every weight to 0 with a huge weight makes
    the trained weights smaller than without it."""
    import torch

    class ShrinkToZero(Hook):
        def loss_term(self, trial, stage, batch):
            return 1e3 * sum(p.pow(2).sum() for p in trial.built.trainable_parameters())

    norms = {}
    for name, hooks in (("plain", []), ("shrunk", [ShrinkToZero()])):
        cfg = _mini_config(
            mini_root, tmp_path / name, **{"replay.method": "none", "data.tasks": "colour"}
        )
        trial = Trial(cfg, hooks)
        trial.run()
        with torch.no_grad():
            norms[name] = sum(float(p.norm()) for p in trial.built.trainable_parameters())
    assert norms["shrunk"] < 0.99 * norms["plain"]


def test_predictions_record_every_example_under_both_protocols(mini_root, tmp_path):
    for scoring in ("loglik", "exact_match"):
        cfg = _mini_config(
            mini_root,
            tmp_path / scoring,
            **{"replay.method": "none", "data.tasks": "colour", "eval.scoring": scoring},
        )
        if scoring == "exact_match":  # the probe's label: in the records, not in the trial id
            named = from_dict(merge(cfg.to_dict(), {"eval": {"probe_name": "world_quiz"}}))
            assert named.id == cfg.id and named.probe_label == "world_quiz"
            cfg = named
        run_trial(cfg)
        tables = read_study(tmp_path / scoring / "study=engine")
        preds, acc = tables["predictions"], tables["accuracy"]
        tasks = preds[preds.task == "colour"]
        assert len(tasks) == acc.n_total.sum()  # one row per scored example and stage
        per_stage = tasks.groupby("stage").correct.sum().tolist()
        assert per_stage == acc.sort_values("stage").n_correct.tolist()
        assert (tasks.scoring == scoring).all() and (acc.scoring == scoring).all()
        if scoring == "loglik":
            assert tasks.generated.isna().all()
            assert all(len(ll) == 2 for ll in tasks.logliks)  # colour has 2 labels
        else:
            assert tasks.generated.notna().all() and tasks.logliks.isna().all()
        label = "world_quiz" if scoring == "exact_match" else "mmlu"
        probe = preds[preds.task == f"probe:{label}"]
        assert len(probe) == 2 * 8 and probe.logliks.map(len).eq(4).all()
        assert tables["general"].probe.tolist() == [label, label]


def test_the_model_id_is_the_same_on_every_machine(tmp_path):
    """The summary's ``model`` groups trials across machines: two copies of one saved model in
    other places have one id (the local paths stay apart, in ``model_path``); changed weights
    or config give another."""
    import json as _json

    from harness.config import ModelConfig
    from harness.models import model_identity
    from tests.fixtures import saved_tiny

    a, b = (saved_tiny(tmp_path / where / "base") for where in ("machine_a", "machine_b"))
    (id_a, path_a), (id_b, path_b) = (model_identity(ModelConfig(name=p)) for p in (a, b))
    assert id_a == id_b and id_a.startswith("local:base@") and path_a != path_b
    cfg = tmp_path / "machine_b" / "base" / "config.json"
    cfg.write_text(_json.dumps({**_json.loads(cfg.read_text()), "rms_norm_eps": 1e-5}))
    assert model_identity(ModelConfig(name=b))[0] != id_a
    assert model_identity(ModelConfig(name="tiny")) == ("tiny", None)
    hub = model_identity(ModelConfig(name="meta-llama/Llama-3.1-8B", revision="abc123"))
    assert hub == ("meta-llama/Llama-3.1-8B@abc123", None)
    # unpinned: the name alone, as summaries written before the id held it
    assert model_identity(ModelConfig(name="llama-3.1-8b")) == ("meta-llama/Llama-3.1-8B", None)
    # another fine-tune of the same shape (same file sizes) is another model
    import torch
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "machine_a" / "base" / "model.safetensors"
    tensors = {k: v + 0.01 for k, v in load_file(str(weights)).items()}
    size = weights.stat().st_size
    save_file(tensors, str(weights), metadata={"format": "pt"})
    assert weights.stat().st_size == size and torch.is_tensor(next(iter(tensors.values())))
    assert model_identity(ModelConfig(name=a))[0] != id_a


def test_asking_for_models_after_a_trial_completed_runs_it_again_to_save_them(
    mini_root, tmp_path, caplog
):
    """train.save_models is not part of the trial id, so a completed trial counts as done
    only if the models it asks for are there; otherwise it runs again (saying why)."""
    from harness.saved_models import model_location
    from harness.trial import stored_completed

    cfg = _mini_config(mini_root, tmp_path, **{"replay.method": "none", "data.tasks": "colour"})
    run_trial(cfg)
    assert stored_completed(cfg) is not None
    wanting = from_dict(merge(cfg.to_dict(), {"train": {"save_models": "final"}}))
    assert wanting.id == cfg.id
    assert stored_completed(wanting) is None and "is not saved" in caplog.text
    run_trial(wanting)
    saved = model_location(wanting, 1)
    assert (saved / "gere_model.json").is_file() and (saved / "model.safetensors").is_file()
    assert stored_completed(wanting) is not None
    every = from_dict(merge(cfg.to_dict(), {"train": {"save_models": "every_task"}}))
    assert stored_completed(every) is not None  # one task: stage 1 is every stage
    # a summary written before n_stages existed (absent, or NaN beside newer ones): n_tasks
    from harness.saved_models import models_missing

    for old in ({"n_tasks": 1}, {"n_tasks": 1, "n_stages": float("nan")}):
        assert not models_missing(wanting, {"status": "completed", **old})
    assert models_missing(wanting, {"status": "completed", "n_tasks": 2, "n_stages": 2})
