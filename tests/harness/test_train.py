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
from tests.fixtures import parity_examples, tiny_built


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
        task_examples=parity_examples(tok, n_examples),
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


def test_per_sample_weighting_equals_the_mean_of_batch_one_losses():
    """GeRe's reference trains with a per-device batch of 1: per_sample on a micro-batch of 4
    (2 task rows, 2 replay rows of other lengths) gives the mean of the four batch-1 losses,
    value and gradient; the harness's microbatch_mean does not."""
    from harness.train import _micro_loss

    built = tiny_built()
    tok = built.tokenizer
    buffer = ReplayBuffer(
        token_ids=(tuple(tok("a river runs to the sea").input_ids), tuple(tok("hills").input_ids)),
        pad_id=tok.pad_token_id,
    )
    method = get_method("tm")
    method.prepare(
        lambda i, a: built.model(
            input_ids=i, attention_mask=a, output_hidden_states=True
        ).hidden_states[-1],
        buffer,
        batch_size=4,
    )
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move away from the start so TM is not 0
        for p in built.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    backend = TorchBackend(TrialConfig())
    backend.wrap(built)
    rows = parity_examples(tok, 2) + [
        TokenizedExample(ids=buffer.token_ids[j], n_prompt=0) for j in (0, 1)
    ]
    is_replay = torch.tensor([False, False, True, True])
    params = built.trainable_parameters()

    def loss_and_grad(rows, is_replay, index, scale):
        loss, stats, _ = _micro_loss(
            built, backend, rows, is_replay, index, method, 100.0, per_sample_scale=scale
        )
        return loss, torch.autograd.grad(loss, params), stats

    together, grad, stats = loss_and_grad(rows, is_replay, torch.tensor([0, 1]), 1 / 4)
    assert stats["replay_term"] > 0
    singles = [
        loss_and_grad(
            [rows[k]],
            is_replay[k : k + 1],
            torch.tensor([k - 2] if k >= 2 else [], dtype=torch.long),
            None,  # one row: the microbatch_mean of a batch of 1 is that row's own loss
        )
        for k in range(4)
    ]
    mean = sum(s[0] for s in singles) / 4
    assert float(together) == pytest.approx(float(mean), rel=1e-5)
    for k, gk in enumerate(grad):
        expected = sum(s[1][k] for s in singles) / 4
        assert (gk - expected).abs().max() <= 1e-4 * expected.abs().max() + 1e-6, k
    harness_loss, _, _ = loss_and_grad(rows, is_replay, torch.tensor([0, 1]), None)
    assert float(harness_loss) != pytest.approx(float(mean), rel=1e-2)


def test_per_sample_groups_rows_by_length_and_pads_less():
    built = tiny_built()
    tok = built.tokenizer
    long_texts = [" ".join(["general text about rivers and hills"] * (1 + i % 4)) for i in range(8)]
    buffer = ReplayBuffer(
        token_ids=tuple(tuple(tok(t).input_ids) for t in long_texts), pad_id=tok.pad_token_id
    )
    shares = {}
    for weighting in ("microbatch_mean", "per_sample"):
        method = get_method("ce")
        cfg = TrainConfig(
            lr=1e-4,
            batch_size=4,
            grad_accum=4,
            max_steps_per_task=3,
            epochs=3,
            log_every=1,
            loss_weighting=weighting,
        )
        backend = TorchBackend(TrialConfig(train=cfg))
        backend.wrap(tiny_built())
        out = train_task(
            backend.built,
            backend,
            task_examples=parity_examples(tok, 24),
            buffer=buffer,
            method=method,
            weight=1.0,
            cfg=cfg,
            per_batch=None,
            stage=1,
            task="t",
            global_step=0,
            seed=0,
        )
        shares[weighting] = sum(r["pad_share"] for r in out.curve) / len(out.curve)
        assert all(0 <= r["pad_share"] < 1 for r in out.curve)
    assert shares["per_sample"] < 0.75 * shares["microbatch_mean"], shares  # 0.31 vs 0.57


def test_replay_texts_start_with_bos_only_when_asked(mini_root, tmp_path):
    from harness.inputs import load_data, tokenize_inputs
    from harness.models import load_tokenizer
    from tests.fixtures import mini_config

    for add_bos in (True, False):
        cfg = mini_config(mini_root, tmp_path, **{"replay.add_bos": add_bos})
        tok = load_tokenizer(cfg.model.name)
        inputs = tokenize_inputs(cfg, load_data(cfg), tok)
        firsts = {ids[0] for ids in inputs.buffer.token_ids}
        assert (firsts == {tok.bos_token_id}) is add_bos


def test_kl_without_t2_and_over_padding_as_the_reference_computes_it():
    from harness.replay.kl import kl_term

    g = torch.Generator().manual_seed(0)
    cur, ref = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    t = 2.0
    scaled = kl_term(cur, ref, mask, t)
    assert float(kl_term(cur, ref, mask, t, t2_scale=False)) == pytest.approx(float(scaled) / 4)
    p_ref, log_cur = torch.softmax(ref / t, -1), torch.log_softmax(cur / t, -1)
    every = (p_ref * (p_ref.log() - log_cur)).sum(-1).mean()  # calc_kl: all 10 positions
    unmasked = kl_term(cur, ref, mask, t, t2_scale=False, mask_padding=False)
    assert float(unmasked) == pytest.approx(float(every), rel=1e-5)


def _per_sample_run(
    backend_name: str, batch_size: int, workers: int, zero: int = 2, grad_accum: int = 1
):
    """Two steps of per_sample training of the tiny model on rows of unequal lengths (task and
    CE replay), the same seed and effective batch of 4; returns (losses, final weights)."""
    from harness.backend import make_backend
    from harness.config import from_dict

    cfg = from_dict(
        {
            "model": {"name": "tiny"},
            "scale": {"backend": backend_name, "zero_stage": zero, "workers": workers},
            "train": {"batch_size": batch_size, "grad_accum": grad_accum, "lr": 1e-3,
                      "warmup_steps": 0, "log_every": 1,
                      "max_steps_per_task": 2, "epochs": 2, "loss_weighting": "per_sample"},
        }
    )  # fmt: skip
    backend = make_backend(cfg)
    built = backend.build_model(keep_reference=False, weights=None)
    tok = built.tokenizer
    texts = [" ".join(["a long general text about rivers"] * (1 + i % 3)) for i in range(4)]
    buffer = ReplayBuffer(
        token_ids=tuple(tuple(tok(t).input_ids) for t in texts), pad_id=tok.pad_token_id
    )
    out = train_task(
        built, backend, task_examples=parity_examples(tok, 6), buffer=buffer, method=get_method("ce"),
        weight=1.0, cfg=cfg.train, per_batch=None, stage=1, task="t", global_step=0, seed=0,
    )  # fmt: skip
    weights = {n: p.detach().clone() for n, p in built.model.named_parameters()}
    return [r["loss"] for r in out.curve], weights


def _per_sample_rank(rank: int, port: int, out: str, zero: int, accum: int, errors) -> None:
    import traceback

    from tests.fixtures import join_gloo

    join_gloo(rank, port)
    try:
        losses, weights = _per_sample_run(
            "deepspeed", batch_size=2 // accum, workers=2, zero=zero, grad_accum=accum
        )
        torch.save({"losses": losses, "weights": weights}, f"{out}/rank{rank}.pt")
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("zero,accum", [(2, 1), (2, 2), (3, 2)])
def test_per_sample_on_two_zero_ranks_trains_like_one_process(tmp_path, zero, accum):
    """The step objective is the mean over the effective batch however its rows are dealt: 2
    DeepSpeed ZeRO ranks of 2 rows (each step's rows sorted by length and cut between the
    ranks; with gradient accumulation, 2 micro-batches of 1 row) reach the weights one process
    with 4 rows per micro-batch reaches. (Accumulation under ZeRO-2 once failed in
    DeepSpeed's step: the boundary is now set at each step's last backward.)"""
    from tests.fixtures import spawn_ranks

    spawn_ranks(_per_sample_rank, str(tmp_path), zero, accum)
    losses, expected = _per_sample_run("torch", batch_size=4, workers=1)
    start = {n: p.detach() for n, p in tiny_built().model.named_parameters()}
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    # each rank logs the mean over its own half of the step; together the step's mean
    for k, loss in enumerate(losses):
        assert (ranks[0]["losses"][k] + ranks[1]["losses"][k]) / 2 == pytest.approx(loss, rel=1e-4)
    assert ranks[0]["losses"][0] != pytest.approx(ranks[1]["losses"][0], rel=1e-6)  # other rows
    for got in ranks:
        for n, w in expected.items():
            moved = float((w - start[n]).abs().max())  # the two Adam steps: ~1.5e-3
            assert moved > 1e-4, n
            assert float((got["weights"][n] - w).abs().max()) <= 0.01 * moved, n
