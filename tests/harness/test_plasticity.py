"""Plasticity diagnostics: metric functions against hand-computed values, the MLP hook on a
padded batch, weight statistics (plain and LoRA), and rows that fit the results schema."""

from __future__ import annotations

import math
import random
import warnings

import pytest
import torch

from harness import plasticity as P
from harness.core import EvalBatch, TokenizedExample
from results.schema import to_table
from tests.fixtures import tiny_model

VOCAB = 64
PAD = 2
UNITS = 32


def tiny(seed: int = 0):
    return tiny_model(VOCAB, seed=seed, intermediate_size=UNITS)


def probe(lengths=(14, 9, 12, 6), seed: int = 0) -> EvalBatch:
    rng = random.Random(seed)
    rows = [
        TokenizedExample(ids=tuple(rng.randrange(3, VOCAB) for _ in range(n)), n_prompt=0)
        for n in lengths
    ]
    return EvalBatch.from_examples(rows, PAD)


def with_singular_values(sigma: list[float], n_tokens: int, seed: int = 0) -> torch.Tensor:
    """A [n_tokens, len(sigma)] matrix whose singular values are exactly ``sigma``."""
    g = torch.Generator().manual_seed(seed)
    k = len(sigma)
    u, _ = torch.linalg.qr(torch.randn(n_tokens, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T


def test_dormant_fraction_matches_known_unit_magnitudes() -> None:
    # Units with E|a| = 0, 0.02, 0.08, 3.9 (mean 1.0), signs alternating so |a| matters.
    signs = torch.tensor([1.0, -1.0] * 5)[:, None]
    acts = signs * torch.tensor([0.0, 0.02, 0.08, 3.9])
    torch.testing.assert_close(
        P.dormant_scores(acts), torch.tensor([0.0, 0.02, 0.08, 3.9], dtype=torch.float64)
    )
    assert P.dormant_fraction(acts, 0.0) == 0.25
    assert P.dormant_fraction(acts, 0.025) == 0.5
    assert P.dormant_fraction(acts, 0.1) == 0.75
    assert P.dormant_fraction(torch.zeros(5, 3), 0.0) == 1.0  # all silent: all dormant


def test_gate_dormant_fraction_counts_units_rarely_on() -> None:
    pre = -torch.ones(200, 4)
    pre[:1, 1] = 1.0  # on for 0.5% of tokens -> dormant
    pre[:2, 2] = 1.0  # on for exactly 1% -> not dormant (fewer than 1% is the rule)
    pre[:, 3] = 1.0
    assert P.gate_dormant_fraction(pre) == 0.5


def test_effective_rank_and_srank_match_hand_computed_values() -> None:
    acts = with_singular_values([3.0, 2.0, 1.0, 0.0], n_tokens=6)
    p = [1 / 2, 1 / 3, 1 / 6]
    assert P.effective_rank(acts) == pytest.approx(math.exp(-sum(x * math.log(x) for x in p)))
    assert P.effective_rank(with_singular_values([1.0] * 4, 5)) == pytest.approx(4.0)
    assert P.effective_rank(torch.zeros(6, 3)) == 0.0
    skewed = with_singular_values([90.0, 9.5, 0.5], n_tokens=8)  # shares 0.9, 0.995, 1
    assert P.srank(skewed) == 2
    assert P.srank(skewed, delta=0.001) == 3
    assert P.srank(skewed, delta=0.2) == 1
    assert P.srank(with_singular_values([1.0] * 4, 5)) == 4


def test_rank_warns_when_tokens_are_fewer_than_units() -> None:
    with pytest.warns(RuntimeWarning, match="3 tokens < 5 units"):
        P.effective_rank(torch.randn(3, 5))
    with pytest.warns(RuntimeWarning, match="tokens < "):
        P.srank(torch.randn(3, 5))


def test_hook_captures_exactly_the_non_padding_tokens() -> None:
    model = tiny()
    batch = probe()
    n_tokens = int(batch.attention_mask.sum())
    assert n_tokens < batch.attention_mask.numel()  # there is padding
    acts = P.capture_mlp_inputs(model, batch)
    assert sorted(acts) == [0, 1]
    for a in acts.values():
        assert a.shape == (n_tokens, UNITS)
    # Each sequence alone (no padding) gives the same rows, in order.
    alone = []
    for i in range(batch.input_ids.shape[0]):
        n = int(batch.attention_mask[i].sum())
        one = EvalBatch(
            batch.input_ids[i : i + 1, :n],
            batch.attention_mask[i : i + 1, :n],
            batch.labels[i : i + 1, :n],
        )
        alone.append(P.capture_mlp_inputs(model, one, layers=[1])[1])
    torch.testing.assert_close(acts[1], torch.cat(alone), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(acts[0], acts[1])


def test_dead_units_are_found_in_a_real_model() -> None:
    model = tiny()
    mlp = model.model.layers[0].mlp
    with torch.no_grad():
        mlp.up_proj.weight[:4] = 0.0  # units 0-3 output exactly 0
        mlp.gate_proj.weight[4:6] = 0.0  # units 4-5: gate pre-activation exactly 0, never > 0
    rows = P.plasticity_rows(model, probe(), stage=1, after_task="t", initial_params=None)
    got = {
        (r["layer"], r["metric"], r["tau"]): r["value"] for r in rows if "dormant" in r["metric"]
    }
    assert got[(0, "dormant_fraction", 0.0)] == 6 / UNITS
    assert got[(1, "dormant_fraction", 0.0)] == 0.0
    assert got[(0, "gate_dormant_fraction", 0.01)] == 2 / UNITS
    assert got[(-1, "dormant_fraction", 0.0)] == 6 / (2 * UNITS)  # pooled over both layers
    assert got[(0, "dormant_fraction", 0.1)] >= got[(0, "dormant_fraction", 0.0)]


def test_weight_distance_is_zero_at_start_and_measures_a_change() -> None:
    model = tiny()
    start = P.snapshot_weights(model)
    stats = {(r["layer"], r["metric"]): r for r in P.weight_stats(model, start)}
    assert all(stats[(k, "weight_distance")]["value"] == 0.0 for k in (0, 1, -1))
    params = dict(model.named_parameters())
    layer1 = [n for n in params if n.startswith("model.layers.1.")]
    want = math.sqrt(sum(float((params[n].detach().double() ** 2).sum()) for n in layer1))
    assert stats[(1, "weight_norm")]["value"] == pytest.approx(want)
    assert stats[(1, "weight_norm")]["n_units"] == sum(params[n].numel() for n in layer1)
    total = sum(p.numel() for p in params.values())
    mean_abs = sum(float(p.double().abs().sum()) for p in params.values()) / total
    assert stats[(-1, "mean_abs_weight")]["value"] == pytest.approx(mean_abs)
    with torch.no_grad():
        params["model.layers.1.mlp.up_proj.weight"][3, 5] += 0.5
    moved = {(r["layer"], r["metric"]): r["value"] for r in P.weight_stats(model, start)}
    assert moved[(0, "weight_distance")] == 0.0
    assert moved[(1, "weight_distance")] == pytest.approx(0.5)
    assert moved[(-1, "weight_distance")] == pytest.approx(0.5)


def test_lora_weights_are_the_merged_effective_weights() -> None:
    from peft import LoraConfig, get_peft_model

    plain_names = {n for n, _ in tiny().named_parameters()}
    peft = get_peft_model(tiny(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    start = P.snapshot_weights(peft)
    assert set(start) == plain_names  # adapter matrices excluded, PEFT prefixes removed
    assert P.weight_stats(peft, start)[-1]["value"] == 0.0  # B starts at 0
    q = peft.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        q.lora_B["default"].weight.fill_(0.1)
    delta = q.lora_B["default"].weight @ q.lora_A["default"].weight * 2.0
    moved = {(r["layer"], r["metric"]): r["value"] for r in P.weight_stats(peft, start)}
    assert moved[(0, "weight_distance")] == pytest.approx(float(delta.norm()), rel=1e-5)
    assert moved[(1, "weight_distance")] == 0.0


def test_rows_fit_the_plasticity_schema() -> None:
    model = tiny()
    start = P.snapshot_weights(model)
    batch = probe(lengths=(14, 9, 12, 6))  # 41 tokens >= 32 units: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        rows = P.plasticity_rows(model, batch, stage=0, after_task="<start>", initial_params=start)
    # per layer: 3 taus + gate + effective_rank + srank; layer -1: 3 taus + gate;
    # weights: 3 metrics x (2 layers + whole model)
    assert len(rows) == 2 * 6 + 4 + 3 * 3
    table = to_table("plasticity", rows, study="s", trial_id="t")
    df = table.to_pandas()
    assert set(df["metric"]) == {
        "dormant_fraction",
        "gate_dormant_fraction",
        "effective_rank",
        "srank",
        "weight_norm",
        "weight_distance",
        "mean_abs_weight",
    }
    act = df[df["metric"].isin(["effective_rank", "srank"])]
    assert (
        (act["n_tokens"] == 41).all()
        and (act["n_units"] == UNITS).all()
        and act["tau"].isna().all()
    )
    assert (act["value"] > 1).all() and (act["value"] <= UNITS).all()
    assert (df.loc[df["metric"] == "weight_norm", "n_tokens"] == 0).all()
    with pytest.warns(RuntimeWarning, match="tokens < 32 MLP units"):
        P.plasticity_rows(
            model, probe(lengths=(5, 4)), stage=0, after_task="x", initial_params=None
        )
