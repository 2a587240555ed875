"""Plasticity interventions: exact updates, what they leave alone, composition, resume."""

from __future__ import annotations

import json

import pytest
import torch

from harness.config import ConfigError, from_dict
from harness.hooks import Hook
from harness.interventions import REGISTRY, Intervention, init_std
from harness.interventions.embedding_reset import EmbeddingReset
from harness.interventions.shrink_perturb import ShrinkPerturb
from harness.trial import Trial, run_trial
from results.io import read_records
from tests.fixtures import join_gloo, mini_config, spawn_ranks, tiny_built


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("noise", ["init", "scaled"])
def test_shrink_perturb_is_exactly_lambda_theta_plus_sigma_eps(noise) -> None:
    model = tiny_built().model
    before = _params(model)
    sp = ShrinkPerturb(shrink=0.7, sigma=0.05, noise=noise)
    sp.apply(model, seed=3, stage=2, step=11)
    g = sp.generator(3, 2, 11)  # the same draws, in the same (sorted-name) order
    r = init_std(model)
    after = _params(model)
    for name in sorted(before):
        p = before[name]
        if p.ndim < 2:
            assert torch.equal(after[name], p), name  # norm gains: untouched
            continue
        scale = r if noise == "init" else float(p.float().std())
        eps = torch.randn(p.shape, generator=g, dtype=torch.float32)
        torch.testing.assert_close(after[name], 0.7 * p + 0.05 * scale * eps, rtol=0, atol=1e-6)
    assert sp.applied == 1


def test_shrink_perturb_draws_depend_on_seed_and_step_only() -> None:
    a, b = tiny_built().model, tiny_built().model
    ShrinkPerturb().apply(a, seed=0, stage=1, step=5)
    ShrinkPerturb().apply(b, seed=0, stage=1, step=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    c = tiny_built().model
    ShrinkPerturb().apply(c, seed=0, stage=1, step=6)
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


class _Trial:
    """The little of a Trial an intervention reads (backend.module, cfg.seed, state)."""

    def __init__(self, model, backend):
        self.backend, self.cfg = backend, from_dict({"seed": 4})
        self.state = type("S", (), {"global_step": 0})()


def test_embedding_reset_redraws_the_embeddings_and_leaves_everything_else() -> None:
    from harness.backend import TorchBackend

    backend = TorchBackend(from_dict({"model": {"name": "tiny"}}))
    built = backend.build_model(keep_reference=False, weights=None)
    model = built.model
    backend.start_task()
    emb = model.get_input_embeddings().weight
    model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
    backend.step(1e-3)
    assert emb in backend.optimizer.state
    before = _params(model)
    reset = EmbeddingReset(every=1)
    reset.apply(_Trial(model, backend), stage=1, step=7)
    after = _params(model)
    name = next(n for n, p in model.named_parameters() if p is emb)
    g = reset.generator(4, 1, 7)
    want = torch.randn(emb.shape, generator=g, dtype=torch.float32) * init_std(model)
    assert torch.equal(after[name], want)
    for n in before:
        if n != name and not (model.config.tie_word_embeddings and "lm_head" in n):
            assert torch.equal(after[n], before[n]), n
    assert emb not in backend.optimizer.state  # its moments are forgotten, the others kept
    assert len(backend.optimizer.state) == sum(1 for p in model.parameters()) - 1


def test_interventions_are_validated_like_every_setting() -> None:
    assert set(REGISTRY) >= {"shrink_perturb", "embedding_reset"}
    bad = {
        "interventions.shrink_pertub": {"interventions": {"shrink_pertub": {}}},
        "did you mean 'shrink'": {"interventions": {"shrink_perturb": {"shrnk": 1}}},
        "must be a finite number": {"interventions": {"shrink_perturb": {"sigma": "inf"}}},
        "must be in (0, 1]": {"interventions": {"shrink_perturb": {"shrink": 1.5}}},
        "else it never acts": {"interventions": {"embedding_reset": {}}},
        "ZeRO-3 holds a shard of each": {
            "interventions": {"shrink_perturb": {}},
            "scale": {"backend": "deepspeed", "zero_stage": 3},
        },
        "offload_optimizer=false": {
            "interventions": {"redo": {}},
            "scale": {"backend": "deepspeed", "zero_stage": 2, "offload_optimizer": True},
        },
        "LoRA trains adapters": {
            "interventions": {"embedding_reset": {"every": 5}},
            "model": {"tuning": "lora"},
        },
    }
    for needle, data in bad.items():
        with pytest.raises(ConfigError) as err:
            from_dict(data)
        assert needle in str(err.value) or needle.split(".")[-1] in str(err.value), needle
    cfg = from_dict({"interventions": {"shrink_perturb": {"shrink": "0.8", "every": 4}}})
    assert cfg.interventions == {"shrink_perturb": {"shrink": 0.8, "every": 4}}
    for stage in (0, 1, 2):  # whole weights on every rank: allowed
        scale = {"backend": "deepspeed", "zero_stage": stage, "workers": 2}
        assert from_dict({"interventions": {"redo": {}}, "scale": scale}).scale.zero_stage == stage


SETTINGS = {
    "shrink_perturb": {"shrink": 0.9, "sigma": 0.01},
    "embedding_reset": {"every": 2, "before_each_task": True},
    "redo": {"every": 2, "tau": 0.1, "batch_texts": 4},
    "continual_backprop": {"rho": 0.02, "maturity": 2},
}


def test_every_intervention_composes_with_tm_replay_in_one_trial(mini_root, tmp_path) -> None:
    cfg = from_dict({**mini_config(mini_root, tmp_path).to_dict(), "interventions": SETTINGS})
    assert cfg.replay.method == "tm"
    trial = Trial(cfg)
    result = trial.run()
    assert result.status == "completed"
    used = {h.name: h for h in trial.hooks if isinstance(h, Intervention)}
    assert used["shrink_perturb"].applied == 2  # before tasks 2 and 3
    steps = trial.state.global_step
    assert used["embedding_reset"].applied == steps // 2 + 2  # every 2 steps + before 2 tasks
    assert used["redo"].scans == steps // 2
    assert used["continual_backprop"].replaced > 0  # ρ · 32 mature units · steps > 1


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_resumed_trial_with_an_intervention_equals_an_uninterrupted_one(
    mini_root, tmp_path, name
) -> None:
    def config(out):
        base = mini_config(mini_root, out).to_dict()
        return from_dict({**base, "interventions": {name: SETTINGS[name]}})

    full = config(tmp_path / "full")
    run_trial(full)
    ckpt = tmp_path / "ckpt"

    class SaveThenCrash(Hook):
        def after_task(self, trial, stage):
            if stage == 1:
                trial.save(ckpt)
            else:
                raise RuntimeError("worker lost")

    crashed = config(tmp_path / "crashed")
    with pytest.raises(RuntimeError):
        run_trial(crashed, hooks=[SaveThenCrash()])
    assert json.loads((ckpt / "state.json").read_text())["finished_stage"] == 1
    assert run_trial(crashed, resume_from=ckpt).status == "completed"

    def rows(out, kind, cols):
        df = read_records(out / "study=engine", kind)
        return df.sort_values(cols)[[*cols, "accuracy" if kind == "accuracy" else "loss"]]

    for kind, cols in (("accuracy", ["stage", "task_position"]), ("curve", ["step"])):
        a, b = rows(tmp_path / "full", kind, cols), rows(tmp_path / "crashed", kind, cols)
        assert a.values.ravel().tolist() == pytest.approx(b.values.ravel().tolist(), rel=1e-6)


def _trained_backend():
    from harness.backend import TorchBackend

    backend = TorchBackend(from_dict({"model": {"name": "tiny"}}))
    model = backend.build_model(keep_reference=False, weights=None).model
    backend.start_task()
    model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.sum().backward()
    backend.step(1e-3)  # every parameter now has Adam moments
    return backend, model


def test_redo_recycles_exactly_the_units_at_or_below_tau_and_nothing_else() -> None:
    from harness.core import EvalBatch, TokenizedExample
    from harness.interventions.redo import ReDo
    from harness.plasticity import capture_mlp_inputs, decoder_layers, dormant_scores

    backend, model = _trained_backend()
    _, blocks = decoder_layers(model)
    dead = torch.tensor([3, 7])
    with torch.no_grad():  # two silent units in layer 0: h = act(0) * 0 = 0
        blocks[0].mlp.gate_proj.weight[dead] = 0
        blocks[0].mlp.up_proj.weight[dead] = 0
    batch = EvalBatch.from_examples(
        [TokenizedExample(ids=tuple(range(5 + i, 30 + i)), n_prompt=0) for i in range(4)], 0
    )
    for tau in (0.0, 0.5):
        want = {
            i: torch.nonzero(dormant_scores(a) <= tau).flatten()
            for i, a in capture_mlp_inputs(model, batch).items()
        }
        redo = ReDo(tau=tau)
        assert {i: t.tolist() for i, t in redo.dormant(model, batch).items()} == {
            i: t.tolist() for i, t in want.items()
        }
    assert want[0].numel() > 2  # tau 0.5 picks more than the two silent units
    assert ReDo(tau=0.0).dormant(model, batch)[0].tolist() == [3, 7]

    before = _params(model)
    state = {
        n: {k: v.clone() for k, v in backend.optimizer.state[p].items() if torch.is_tensor(v)}
        for n, p in model.named_parameters()
    }
    picked = ReDo(tau=0.0).apply(backend, batch, seed=1, step=100)
    assert picked[0].tolist() == [3, 7] and all(not len(v) for k, v in picked.items() if k)
    after = _params(model)
    mlp = "model.layers.0.mlp."
    keep = torch.ones(before[mlp + "gate_proj.weight"].shape[0], dtype=torch.bool)
    keep[dead] = False
    for proj in ("gate_proj", "up_proj"):
        w0, w1 = before[mlp + proj + ".weight"], after[mlp + proj + ".weight"]
        assert torch.equal(w1[keep], w0[keep]) and (w1[dead] != 0).all()  # fresh inputs
        exp_avg = backend.optimizer.state[dict(model.named_parameters())[mlp + proj + ".weight"]]
        assert (exp_avg["exp_avg"][dead] == 0).all() and (exp_avg["exp_avg_sq"][dead] == 0).all()
        assert torch.equal(exp_avg["exp_avg"][keep], state[mlp + proj + ".weight"]["exp_avg"][keep])
    down0, down1 = before[mlp + "down_proj.weight"], after[mlp + "down_proj.weight"]
    assert (down1[:, dead] == 0).all() and torch.equal(down1[:, keep], down0[:, keep])
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {mlp + "gate_proj.weight", mlp + "up_proj.weight", mlp + "down_proj.weight"}


def test_redo_refuses_lora() -> None:
    with pytest.raises(ConfigError, match="under LoRA the MLP units' weights are frozen"):
        from_dict({"model": {"tuning": "lora"}, "interventions": {"redo": {}}})


def test_continual_backprop_replaces_exactly_the_lowest_utility_mature_units() -> None:
    from harness.interventions.continual_backprop import ContinualBackprop
    from harness.plasticity import decoder_layers

    backend, model = _trained_backend()
    _, blocks = decoder_layers(model)
    n_units = blocks[0].mlp.down_proj.weight.shape[1]
    cbp = ContinualBackprop(rho=0.05, maturity=0, decay=0.0)
    cbp.setup(_Trial(model, backend))
    seen: dict[int, torch.Tensor] = {}
    handles = [
        b.mlp.down_proj.register_forward_pre_hook(
            lambda _m, a, i=i: seen.__setitem__(i, a[0].detach().reshape(-1, a[0].shape[-1]))
        )
        for i, b in enumerate(blocks)
    ]
    model.train()
    model(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]])).logits.sum()  # a training forward
    for h in handles:
        h.remove()
    with torch.no_grad():
        model.eval()
        model(input_ids=torch.tensor([[11, 12]]))  # evaluation forwards are not observed
    utility = {
        i: seen[i].abs().double().mean(dim=0)
        * blocks[i].mlp.down_proj.weight.detach().abs().double().sum(dim=0)
        for i in seen
    }
    n = int(0.05 * n_units)
    before = _params(model)
    replaced = cbp.update_and_replace(step=1)
    after = _params(model)
    changed = set()
    for i, idx in replaced.items():
        want = torch.argsort(utility[i], stable=True)[:n].sort().values
        assert idx.tolist() == want.tolist(), i
        mlp = f"model.layers.{i}.mlp."
        keep = torch.ones(n_units, dtype=torch.bool)
        keep[idx] = False
        for proj in ("gate_proj", "up_proj"):
            w0, w1 = before[mlp + proj + ".weight"], after[mlp + proj + ".weight"]
            assert torch.equal(w1[keep], w0[keep]) and not torch.equal(w1[idx], w0[idx])
            st = backend.optimizer.state[dict(model.named_parameters())[mlp + proj + ".weight"]]
            assert (st["exp_avg"][idx] == 0).all() and (st["exp_avg_sq"][idx] == 0).all()
        assert (after[mlp + "down_proj.weight"][:, idx] == 0).all()
        assert torch.equal(
            after[mlp + "down_proj.weight"][:, keep], before[mlp + "down_proj.weight"][:, keep]
        )
        assert (cbp.utility[i, idx] == 0).all() and (cbp.age[i, idx] == 0).all()
        assert (cbp.age[i, keep] == 1).all()
        changed |= {mlp + p + ".weight" for p in ("gate_proj", "up_proj", "down_proj")}
    assert sorted(replaced) == list(range(len(blocks))) and cbp.replaced == n * len(blocks)
    assert {k for k in before if not torch.equal(before[k], after[k])} == changed
    # Nothing is mature with maturity 5: no replacement, the allowance does not grow.
    young = ContinualBackprop(rho=0.5, maturity=5)
    young.setup(_Trial(model, backend))
    assert young.update_and_replace(step=2) == {} and float(young.allowance.sum()) == 0.0
    cbp.at_end(None, "completed")
    young.at_end(None, "completed")


def test_continual_backprop_ranks_by_gnt_bias_corrected_utility() -> None:
    """Failed before 2026-12-05 (ranked by the raw utility). A hand-built layer: unit 0 was
    replaced 100 steps ago (age 101 after this step), unit 1 is old; the young unit's running
    utility u is 0.64x the old one's but its bias-corrected u / (1 - 0.99^101) is larger, so
    gnt.py (``bias_corrected_util = util / (1 - decay_rate ** ages)``, ages counted first;
    ``topk(-bias_corrected_util[eligible])``) replaces unit 1, not unit 0."""
    from harness.interventions.continual_backprop import ContinualBackprop

    backend, model = _trained_backend()
    picks = {}
    for bias_correction in (True, False):
        cbp = ContinualBackprop(rho=0.01, maturity=50, decay=0.99, bias_correction=bias_correction)
        cbp.setup(_Trial(model, backend))
        n = cbp.utility.shape[1]
        cbp.utility[:] = 1.0  # every other unit clearly useful
        cbp.age[:] = 10_000
        cbp.utility[:, 0], cbp.age[:, 0] = 0.64 * 0.5, 100
        cbp.utility[:, 1], cbp.age[:, 1] = 0.5, 10_000
        cbp.allowance[:] = 1.0 - 0.01 * n + 1e-9  # exactly one replacement this step
        gnt = [float(cbp.utility[0, i]) / (1 - 0.99 ** (int(cbp.age[0, i]) + 1)) for i in (0, 1)]
        assert gnt[0] > gnt[1]  # the reference ranks the young unit above the old one
        replaced = cbp.update_and_replace(step=7)  # no forwards seen: utilities unchanged
        picks[bias_correction] = {i: t.tolist() for i, t in replaced.items()}
        cbp.at_end(None, "completed")
    assert all(p == [1] for p in picks[True].values()) and picks[True]
    assert all(p == [0] for p in picks[False].values()) and picks[False]


def test_continual_backprop_leaves_padding_out_of_mean_activation() -> None:
    """Failed before 2026-12-05: padded positions counted in mean |h|. A right-padded row
    gives the statistics of the same row unpadded (the model is causal)."""
    from harness.interventions.continual_backprop import ContinualBackprop

    backend, model = _trained_backend()
    stats = []
    for ids, mask in (
        (torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.long)),
        (torch.tensor([[5, 6, 7, 8, 2, 2, 2]]), torch.tensor([[1, 1, 1, 1, 0, 0, 0]])),
    ):
        cbp = ContinualBackprop()
        cbp.setup(_Trial(model, backend))
        model.train()
        model(input_ids=ids, attention_mask=mask)
        stats.append((cbp._sums.clone(), cbp._counts.clone()))
        cbp.at_end(None, "completed")
    assert stats[0][1].tolist() == stats[1][1].tolist() == [4.0] * len(stats[0][1])
    torch.testing.assert_close(stats[1][0], stats[0][0], rtol=1e-5, atol=1e-7)
    # Gradient checkpointing reruns each layer's forward in the backward: counted once.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cbp = ContinualBackprop()
    cbp.setup(_Trial(model, backend))
    model.train()
    model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits.sum().backward()
    assert cbp._counts.tolist() == [4.0] * len(stats[0][1])
    torch.testing.assert_close(cbp._sums, stats[0][0], rtol=1e-5, atol=1e-7)
    cbp.at_end(None, "completed")


def test_adamw_per_element_step_is_adamw_and_restarts_reset_rows() -> None:
    """Without resets it is torch's AdamW; after a row's state is zeroed (as
    ``reset_optimizer_state`` does for replaced units), that row's next update is a fresh
    Adam's first step (lr * g / (|g| + eps) ~ lr), not the 3x of a zeroed moment read with
    the tensor's step count (failed before 2026-12-05: the step count was kept)."""
    from harness.adam import AdamWPerElementStep
    from harness.backend import _forget_rows

    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(6, 4, generator=g)
    grads = [torch.randn(6, 4, generator=g) for _ in range(40)]
    a, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(w0.clone())
    ours = AdamWPerElementStep([a], lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW([b], lr=1e-2, weight_decay=0.1)
    for grad in grads:
        for p, opt in ((a, ours), (b, ref)):
            p.grad = grad.clone()
            opt.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    rows = torch.tensor([1, 4])
    for value in ours.state[a].values():
        _forget_rows(value, rows, 0)
    assert ours.state[a]["step"][rows].eq(0).all() and ours.state[a]["step"][0].eq(40).all()
    before = a.detach().clone()
    grad = torch.randn(6, 4, generator=g)
    a.grad = grad
    ours.step()
    moved = (before * (1 - 1e-2 * 0.1) - a.detach())[rows]
    fresh = 1e-2 * grad[rows] / (grad[rows].abs() + 1e-8)  # Adam's first step
    torch.testing.assert_close(moved, fresh, rtol=1e-4, atol=1e-7)


def test_continual_backprop_trains_with_a_per_element_adam_step(mini_root, tmp_path) -> None:
    from harness.adam import AdamWPerElementStep

    seen = {}

    class Peek(Hook):
        def after_step(self, trial, stage, step):
            seen["optimizer"] = type(trial.backend.optimizer)

    cfg = mini_config(
        mini_root,
        tmp_path,
        **{"replay.method": "none", "interventions": {"continual_backprop": {"maturity": 1}}},
    )
    assert run_trial(cfg, hooks=[Peek()]).status == "completed"
    assert seen["optimizer"] is AdamWPerElementStep
    cfg = mini_config(
        mini_root,
        tmp_path / "kept",
        **{"replay.method": "none",
           "interventions": {"continual_backprop": {"reset_adam_step": False}}},
    )  # fmt: skip
    assert run_trial(cfg, hooks=[Peek()]).status == "completed"
    assert seen["optimizer"] is torch.optim.AdamW


def test_continual_backprop_refuses_lora_and_bad_settings() -> None:
    with pytest.raises(ConfigError, match="adapter has no units of its own"):
        from_dict({"model": {"tuning": "lora"}, "interventions": {"continual_backprop": {}}})
    with pytest.raises(ConfigError, match="decay: 1.0 must be in"):
        from_dict({"interventions": {"continual_backprop": {"decay": 1}}})


# -- ZeRO-2 on two ranks ------------------------------------------------------------------------


def _zero2_rank(rank: int, port: int, out: str, errors) -> None:
    """One rank: train a step, edit with every intervention, then check the edits reached
    DeepSpeed's fp32 master partitions and optimiser states, survive a step at lr 0, and are
    the same on both ranks."""
    import traceback

    join_gloo(rank, port)
    try:
        from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

        from harness.backend import DeepSpeedBackend
        from harness.interventions.base import reinit_units
        from harness.interventions.continual_backprop import ContinualBackprop
        from harness.plasticity import decoder_layers

        cfg = from_dict(
            {"model": {"name": "tiny"}, "scale": {"backend": "deepspeed", "zero_stage": 2,
             "workers": 2}, "train": {"batch_size": 1}}
        )  # fmt: skip
        backend = DeepSpeedBackend(cfg, per_element_step=True)  # continual backprop's Adam
        model = backend.build_model(keep_reference=False, weights=None).model
        _, blocks = decoder_layers(model)
        named = dict(model.named_parameters())

        def step(lr: float, tokens: list[int]) -> None:
            model.train()
            loss = backend.train_module(input_ids=torch.tensor([tokens])).logits.square().mean()
            backend.backward(loss, 1)
            backend.step(lr)

        backend.start_task()
        step(1e-2, [5 + rank, 6, 7, 8])  # each rank its own data: moments everywhere
        mlp = blocks[1].mlp
        idx = torch.tensor([2, 9, 17])
        # Continual backprop on statistics pooled over the ranks: the same picks on both.
        cbp = ContinualBackprop(rho=0.1, maturity=0, decay=0.0)
        cbp.setup(_Trial(model, backend))
        step(1e-2, [9, 10 + 3 * rank, 11])
        picks = cbp.update_and_replace(step=2)
        reinit_units(backend, mlp, idx, cbp.generator(0, 1))
        edited = ShrinkPerturb(shrink=0.5, sigma=0.1).apply(model, seed=0, stage=2, step=3)
        backend.weights_edited(edited)
        emb = _Trial(model, backend)
        EmbeddingReset(every=1).apply(emb, stage=2, step=3)
        want = {n: p.detach().clone() for n, p in named.items()}
        master = {n: safe_get_full_fp32_param(p) for n, p in named.items()}
        moments = {
            k: safe_get_full_optimizer_state(w, k)
            for w in (mlp.gate_proj.weight,)
            for k in ("exp_avg", "exp_avg_sq")
        }
        moments["down"] = safe_get_full_optimizer_state(mlp.down_proj.weight, "exp_avg")
        moments["step"] = safe_get_full_optimizer_state(mlp.gate_proj.weight, "step")
        moments["emb"] = safe_get_full_optimizer_state(
            model.get_input_embeddings().weight, "exp_avg"
        )
        step(0.0, [12, 13, 14 + rank])  # lr 0: the step copies the master back into the model
        after = {n: p.detach().clone() for n, p in named.items()}
        result = {
            "master_equal": all(torch.equal(master[n], want[n]) for n in want),
            "kept_after_step": all(torch.equal(after[n], want[n]) for n in want),
            "rows_zero": all(
                bool((moments[k][idx] == 0).all()) for k in ("exp_avg", "exp_avg_sq", "step")
            ),
            "steps_kept": bool((moments["step"] == 2).sum() > len(idx)),
            "others_kept": bool((moments["exp_avg"].abs().sum(dim=1) > 0).sum() > len(idx)),
            "down_zero": bool((moments["down"][:, idx] == 0).all()),
            "emb_zero": bool((moments["emb"] == 0).all()),
            "picks": {i: t.tolist() for i, t in picks.items()},
            "checksum": [float(p.double().sum()) for p in after.values()],
        }
        torch.save(result, f"{out}/rank{rank}.pt")
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_interventions_edit_the_zero2_master_copy_alike_on_two_ranks(tmp_path) -> None:
    spawn_ranks(_zero2_rank, str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for r in (r0, r1):
        assert r["master_equal"] and r["kept_after_step"], r
        assert r["rows_zero"] and r["others_kept"] and r["down_zero"] and r["emb_zero"], r
        assert r["steps_kept"], r  # per-element Adam steps: reset rows 0, the others 2
        assert sum(map(len, r["picks"].values())) > 0
    assert r0["picks"] == r1["picks"]
    assert r0["checksum"] == r1["checksum"]  # one model, two ranks


def test_a_method_whose_computation_changed_gets_a_new_trial_id() -> None:
    """Ids derived before 2026-12-05 (pinned): continual backprop now computes as gnt.py, so
    its trials get new ids and a stored result of the old computation is never reused; LwF
    alone and O-LoRA in float32 compute what they did and keep theirs."""
    assert from_dict({"interventions": {"continual_backprop": {}}}).id != "tm-641b6d8190"
    assert from_dict({"cl": {"lwf": {}}}).id == "tm-b7d85873a3"
    from harness.config.schema import method_revisions

    both = from_dict({"cl": {"lwf": {}}, "interventions": {"shrink_perturb": {}}})
    assert method_revisions(both) == {"cl.lwf": 2}
    assert method_revisions(from_dict({"cl": {"lwf": {}}})) == {}


def test_replacing_units_restarts_their_adam_step_on_the_torch_backend() -> None:
    from harness.backend import TorchBackend
    from harness.interventions.base import reinit_units
    from harness.plasticity import decoder_layers

    backend = TorchBackend(from_dict({"model": {"name": "tiny"}}), per_element_step=True)
    model = backend.build_model(keep_reference=False, weights=None).model
    backend.start_task()
    for _ in range(3):
        model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits.sum().backward()
        backend.step(1e-3)
    mlp = decoder_layers(model)[1][0].mlp
    idx = torch.tensor([1, 5])
    reinit_units(backend, mlp, idx, torch.Generator().manual_seed(0))
    gate = backend.optimizer.state[mlp.gate_proj.weight]["step"]
    down = backend.optimizer.state[mlp.down_proj.weight]["step"]
    assert gate[idx].eq(0).all() and down[:, idx].eq(0).all()
    keep = torch.ones(gate.shape[0], dtype=torch.bool)
    keep[idx] = False
    assert gate[keep].eq(3).all()
