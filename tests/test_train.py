"""The training loop (harness.train) on tiny models built in-process."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.backend import TorchBackend
from harness.config import ModelConfig, TrainConfig, TrialConfig
from harness.models import build
from harness.replay import ReplayBuffer, get_method
from harness.train import TokenizedExample, plan_steps, train_task
from tests.helpers import tiny_built


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
    backend = TorchBackend(TrialConfig(train=cfg))
    backend.wrap(built)
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


def test_a_model_loaded_in_eval_mode_trains_in_training_mode():
    """from_pretrained (Hub models, the world base, resumed checkpoints) returns a model in
    eval mode; training must switch it to training mode (dropout, HF gradient checkpointing)."""
    built = tiny_built()
    built.model.eval()  # as from_pretrained leaves it
    modes = []
    handle = built.model.register_forward_pre_hook(lambda m, a: modes.append(m.training))
    _train(built, "none", steps=2)
    handle.remove()
    assert modes and all(modes)
