"""Training, evaluation and whole trials on tiny models built in-process."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from harness import train as train_mod
from harness.backend import TorchBackend
from harness.config import ModelConfig, TrainConfig, TrialConfig, from_dict
from harness.data import DataError
from harness.evaluate import candidate_logliks, perplexity
from harness.models import build
from harness.replay import ReplayBuffer, get_method
from harness.train import TokenizedExample, plan_steps, train_task
from harness.trial import run_trial
from results.io import read_records, read_study
from results.schema import validate_table


def _examples(tok, n=12):
    rows = []
    for i in range(n):
        prompt = tok(f"<s>item {i} is", add_special_tokens=False).input_ids
        target = tok(" even" if i % 2 == 0 else " odd", add_special_tokens=False).input_ids
        rows.append(TokenizedExample(ids=tuple(prompt + target), n_prompt=len(prompt)))
    return rows


def _buffer(tok, n=6):
    texts = [f"general text number {i} about rivers" for i in range(n)]
    return ReplayBuffer(
        token_ids=tuple(tuple(tok(t).input_ids) for t in texts), pad_id=tok.pad_token_id
    )


def _train(
    built,
    method_name="none",
    *,
    seed=0,
    steps=4,
    lr=1e-3,
    buffer=None,
    per_batch=None,
    log_every=1,
    n_examples=12,
    schedule="cosine",
):
    method = get_method(method_name)
    tok = built.tokenizer
    if method.uses_replay and buffer is None:
        buffer = _buffer(tok)
    if method_name == "tm":
        method.prepare(
            lambda i, a: built.model(
                input_ids=i, attention_mask=a, output_hidden_states=True
            ).hidden_states[-1],
            buffer,
            batch_size=4,
        )
    cfg = TrainConfig(
        lr=lr,
        batch_size=4,
        warmup_steps=0,
        max_steps_per_task=steps,
        log_every=log_every,
        epochs=steps,
        schedule=schedule,
    )
    backend = TorchBackend(built, TrialConfig(train=cfg))
    return train_task(
        built,
        backend,
        task_examples=_examples(tok, n_examples),
        buffer=buffer,
        method=method,
        weight=method.default_weight,
        cfg=cfg,
        per_batch=per_batch,
        stage=1,
        task="t",
        global_step=0,
        seed=seed,
    )


def test_plan_steps_shuffles_replay_into_the_task_set():
    rng = np.random.default_rng(0)
    steps = plan_steps(
        n_task=10, n_replay=4, effective_batch=4, per_batch=None, epochs=1, max_steps=None, rng=rng
    )
    flat = [it for s in steps for it in s]
    assert sorted(flat) == sorted([(False, i) for i in range(10)] + [(True, j) for j in range(4)])
    assert [len(s) for s in steps] == [4, 4, 4, 2]


def test_batch_interpolation_puts_exactly_n_replay_samples_in_every_step():
    rng = np.random.default_rng(0)
    steps = plan_steps(
        n_task=10, n_replay=3, effective_batch=4, per_batch=1, epochs=2, max_steps=None, rng=rng
    )
    assert len(steps) == math.ceil(2 * 10 / 3)
    assert all(sum(rep for rep, _ in s) == 1 and len(s) == 4 for s in steps)
    task_seen = [i for s in steps for rep, i in s if not rep]
    assert sorted(task_seen[:10]) == list(range(10))  # each epoch is a permutation


def test_training_overfits_one_batch():
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    out = _train(
        built, steps=40, lr=3e-3, n_examples=4, schedule="constant"
    )  # 4 examples = one batch
    assert out.curve[-1]["task_ce"] < 0.1 * out.curve[0]["task_ce"]


def test_fixed_seed_reproduces_losses_exactly():
    curves = []
    for _ in range(2):
        built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
        curves.append([r["loss"] for r in _train(built, "tm", steps=5).curve])
    assert curves[0] == curves[1]
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    assert [r["loss"] for r in _train(built, "tm", steps=5, seed=1).curve] != curves[0]


def test_lora_trains_only_adapter_parameters():
    built = build(ModelConfig(name="tiny", tuning="lora", lora_r=4), seed=0, keep_reference=False)
    before = {n: p.detach().clone() for n, p in built.model.named_parameters()}
    _train(built, "kl", steps=3, lr=1e-2)
    changed = {n for n, p in built.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all("lora_" in n for n in changed), sorted(changed)
    assert any("lora_B" in n for n in changed)


def test_tm_term_is_zero_at_the_first_step_in_the_training_loop():
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    out = _train(built, "tm", steps=3, lr=1e-2)
    # Same weights as when the thresholds were computed; only batch padding differs.
    assert out.curve[0]["replay_term"] == pytest.approx(0.0, abs=1e-5)
    assert out.curve[-1]["replay_term"] > 1e-4


@pytest.mark.parametrize("method", ["ce", "kl", "l1", "l2", "tm"])
def test_every_replay_method_trains_with_replay_rows(method):
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=method in ("kl", "l1", "l2"))
    out = _train(built, method, steps=2, per_batch=1)
    assert all(np.isfinite(r["replay_ce"]) for r in out.curve)
    if method != "ce":
        assert all(np.isfinite(r["replay_term"]) for r in out.curve)


def test_candidate_logliks_match_a_manual_computation():
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    model, tok = built.model.eval(), built.tokenizer
    prompt, cands = [0, 70, 71, 72], [[80], [81, 82]]
    got = candidate_logliks(model, [(prompt, cands)], pad_id=tok.pad_token_id, batch_size=2)[0]
    for c, value in zip(cands, got, strict=True):
        ids = torch.tensor([prompt + c])
        logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        want = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(c))
        assert value == pytest.approx(want, abs=1e-4)


def test_perplexity_matches_a_manual_computation():
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    model = built.model.eval()
    texts = [[0, 50, 51, 52, 53], [0, 60, 61]]
    p = perplexity(model, texts, pad_id=built.tokenizer.pad_token_id, batch_size=2)
    nll = 0.0
    for t in texts:
        logp = torch.log_softmax(model(input_ids=torch.tensor([t])).logits[0], -1)
        nll -= sum(float(logp[k, t[k + 1]]) for k in range(len(t) - 1))
    assert p.tokens == 6
    assert p.nll_sum == pytest.approx(nll, rel=1e-4)
    assert p.ppl == pytest.approx(math.exp(nll / 6), rel=1e-4)


def _mini_config(root, out, **overrides):
    base = {
        "study": "engine",
        "out": str(out),
        "data": {"root": str(root), "tasks": "colour,animal,compare", "max_seq_len": 64},
        "replay": {"method": "tm", "size": 8, "max_tokens": 32},
        "train": {
            "lr": 1e-3,
            "batch_size": 4,
            "max_steps_per_task": 3,
            "warmup_steps": 1,
            "log_every": 2,
        },
        "eval": {"batch_size": 16, "probe": "mmlu", "heldout": "general/heldout.jsonl"},
    }
    for key, value in overrides.items():
        section, name = key.split(".")
        base.setdefault(section, {})[name] = value
    return from_dict(base)


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
    import harness.trial as trial_mod

    def never(*a, **k):
        raise AssertionError("model built despite bad data")

    monkeypatch.setattr(trial_mod, "build", never)
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

    class Crash(Exception):
        pass

    def save_then_crash(end):
        if end.stage == 1:
            end.save(ckpt)
        else:
            raise Crash("worker lost")

    with pytest.raises(Crash):
        run_trial(crashed, on_stage_end=save_then_crash)
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
    run_trial(cfg, on_stage_end=lambda end: end.save(ckpt) if end.stage == 1 else None)
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
