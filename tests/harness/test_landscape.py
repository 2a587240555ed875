"""Loss-landscape slices: exact origins and end points, seeded directions, order-free points,
sharding and resume that reproduce a serial run bit for bit, LoRA's merged space."""

from __future__ import annotations

import math
import random

import pytest
import torch

from harness import landscape as L
from harness.config import ConfigError, LandscapeConfig, grid_points
from results.schema import to_table
from tests.fixtures import landscape_model, make_batch, perturbed


@pytest.fixture
def batches() -> dict[str, L.EvalBatch]:
    return {"general": make_batch(1), "taskA": make_batch(2)}


def by_key(rows):
    return {L.point_key(r["dataset"], r["alpha"], r["beta"]): r for r in rows}


def test_origin_is_the_models_own_loss_exactly(batches) -> None:
    model = landscape_model()
    own = {d: L.batch_loss(model, b) for d, b in batches.items()}
    base = L.pristine(model)
    for dims, betas in ((1, None), (2, [-0.5, 0.0, 0.5])):
        spec = L.random_slice(1, seed=0, dims=dims)
        dirs = L.slice_directions(base, spec)
        rows = L.evaluate_points(
            model, spec, base, dirs, L.slice_points([-0.5, 0.0, 0.5], betas), batches
        )
        at0 = [r for r in rows if r["alpha"] == 0.0 and (betas is None or r["beta"] == 0.0)]
        assert len(at0) == 2
        for r in at0:
            assert (r["loss_sum"], r["tokens"]) == own[r["dataset"]]
            assert r["loss"] == own[r["dataset"]][0] / own[r["dataset"]][1]
        off = [r for r in rows if r["alpha"] == 0.5]
        assert all(r["loss_sum"] != own[r["dataset"]][0] for r in off)
    # The model holds its weights again, bit for bit.
    for name, p in model.named_parameters():
        assert torch.equal(p, base[name]), name


def test_points_restore_the_base_and_refuse_live_parameters(batches) -> None:
    model = landscape_model()
    base = L.pristine(model)
    spec = L.random_slice(1, seed=0)
    dirs = L.slice_directions(base, spec)
    before = L.batch_loss(model, batches["general"])
    rows = L.evaluate_points(model, spec, base, dirs, [(0.3, None)], batches)
    assert all(r["loss_sum"] != before[0] for r in rows if r["dataset"] == "general")
    assert L.batch_loss(model, batches["general"]) == before
    live = dict(model.named_parameters())
    with pytest.raises(ValueError, match="pristine"):
        L.evaluate_points(model, spec, live, dirs, [(0.3, None)], batches)


def test_interpolation_end_points_reproduce_both_checkpoints(batches) -> None:
    a = landscape_model()
    b = perturbed(a)
    theta_a, theta_b = L.pristine(a), L.pristine(b)
    loss_a = {d: L.batch_loss(a, x) for d, x in batches.items()}
    loss_b = {d: L.batch_loss(b, x) for d, x in batches.items()}
    vessel = landscape_model(seed=5)  # any model of the same shape
    alphas = grid_points(-0.5, 1.5, 21)
    assert len(alphas) == 21 and alphas[0] == -0.5 and alphas[-1] == 1.5
    assert 0.0 in alphas and 1.0 in alphas
    rows = L.evaluate_interpolation(
        vessel, theta_a, theta_b, alphas, batches, from_stage=0, to_stage=1
    )
    assert len(rows) == 21 * 2
    keyed = by_key(rows)
    for d in batches:
        assert (keyed[(d, 0.0, None)]["loss_sum"], keyed[(d, 0.0, None)]["tokens"]) == loss_a[d]
        assert (keyed[(d, 1.0, None)]["loss_sum"], keyed[(d, 1.0, None)]["tokens"]) == loss_b[d]
        assert keyed[(d, 0.5, None)]["loss_sum"] not in (loss_a[d][0], loss_b[d][0])
    r = rows[0]
    assert (r["slice"], r["slice_kind"], r["stage"], r["from_stage"], r["to_stage"]) == (
        "interp:0->1",
        "interpolation",
        1,
        0,
        1,
    )
    assert r["direction_seed"] is None and math.isnan(r["beta"]) and r["normalisation"] == "none"
    # The vessel is left holding theta_b.
    assert all(torch.equal(p, theta_b[n]) for n, p in vessel.named_parameters())
    # interpolation_points gives the same weights at the ends.
    pts = dict(L.interpolation_points(theta_a, theta_b, [0.0, 1.0]))
    assert all(torch.equal(pts[0.0][n], theta_a[n]) for n in theta_a)
    assert all(torch.equal(pts[1.0][n], theta_b[n]) for n in theta_b)


def test_filter_normalisation_matches_row_norms_and_zeroes_1d() -> None:
    params = L.pristine(landscape_model())
    d = L.random_direction(params, 3, normalisation="filter")
    assert d.keys() == params.keys()
    n_matrix = 0
    for name, theta in params.items():
        assert d[name].shape == theta.shape
        if theta.dim() == 1:
            assert torch.count_nonzero(d[name]) == 0, name
            continue
        n_matrix += 1
        torch.testing.assert_close(
            d[name].reshape(theta.shape[0], -1).norm(dim=1),
            theta.reshape(theta.shape[0], -1).norm(dim=1),
            rtol=1e-5,
            atol=0,
        )
        # A direction, not a rescaled copy of the weights.
        assert not torch.allclose(d[name], theta)
    assert n_matrix > 5
    layer = L.random_direction(params, 3, normalisation="layer")
    for name, theta in params.items():
        if theta.dim() > 1:
            torch.testing.assert_close(layer[name].norm(), theta.norm(), rtol=1e-5, atol=0)


def test_same_seed_same_direction_in_any_order_other_seed_differs() -> None:
    params = L.pristine(landscape_model())
    d0 = L.random_direction(params, 0)
    again = L.random_direction(dict(reversed(list(params.items()))), 0)
    subset = L.random_direction({k: params[k] for k in list(params)[3:6]}, 0)
    d1 = L.random_direction(params, 1)
    second_axis = L.random_direction(params, 0, axis=1)
    for name in params:
        assert torch.equal(d0[name], again[name])
        if name in subset:
            assert torch.equal(d0[name], subset[name])
        if params[name].dim() > 1:
            assert not torch.equal(d0[name], d1[name])
            assert not torch.equal(d0[name], second_axis[name])


def test_point_order_does_not_change_any_value(batches) -> None:
    model = landscape_model()
    base = L.pristine(model)
    spec = L.random_slice(2, seed=0, dims=2)
    dirs = L.slice_directions(base, spec)
    points = L.slice_points([-0.5, 0.0, 0.5], [-0.5, 0.25, 0.5])
    serial = L.evaluate_points(model, spec, base, dirs, points, batches)
    shuffled = list(points)
    random.Random(0).shuffle(shuffled)
    assert shuffled != points
    again = L.evaluate_points(model, spec, base, dirs, shuffled, batches)
    assert by_key(again) == by_key(serial)


def test_two_workers_equal_the_serial_slice_exactly(batches) -> None:
    model = landscape_model()
    base = L.pristine(model)
    spec = L.random_slice(1, seed=7, dims=2)
    dirs = L.slice_directions(base, spec)
    points = L.slice_points(grid_points(-0.5, 0.5, 3), grid_points(-0.5, 0.5, 3))
    serial = L.evaluate_points(model, spec, base, dirs, points, batches)
    parts = []
    for rank in range(2):
        worker = landscape_model(seed=9)  # its own copy; weights come from base
        worker.load_state_dict(model.state_dict())
        wbase = L.pristine(worker)
        wdirs = L.slice_directions(wbase, spec)  # regenerated from the seed, not shipped
        parts += L.evaluate_points(worker, spec, wbase, wdirs, L.shard(points, 2, rank), batches)
    assert L.shard(points, 2, 0) + L.shard(points, 2, 1) == points
    assert parts == serial


def test_resume_computes_only_missing_points_and_matches_a_full_run(batches) -> None:
    model = landscape_model()
    base = L.pristine(model)
    spec = L.random_slice(1, seed=0)
    dirs = L.slice_directions(base, spec)
    alphas = grid_points(-0.5, 0.5, 5)
    full = L.evaluate_points(model, spec, base, dirs, L.slice_points(alphas), batches)
    assert len(full) == 5 * 2
    first_half = full[: len(full) // 2 - 1]  # 4 rows: 2 whole points
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    rest = L.evaluate_points(
        model, spec, base, dirs, L.slice_points(alphas), batches, done=L.done_keys(first_half, spec)
    )
    handle.remove()
    assert len(calls) == len(full) - len(first_half) == len(rest)
    assert by_key(first_half + rest) == by_key(full)
    # A point with one dataset missing evaluates just that dataset; a different slice's rows
    # are not taken as done.
    other = L.random_slice(1, seed=1)
    done = L.done_keys(full[:-1], spec) | L.done_keys([{**full[-1], "slice": other.name}], spec)
    last = L.evaluate_points(model, spec, base, dirs, L.slice_points(alphas), batches, done=done)
    assert last == [full[-1]]


def tiny_peft():
    from peft import LoraConfig, get_peft_model

    base = landscape_model()
    peft = get_peft_model(
        base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:  # B starts at 0; make the adapter do something
                p.copy_(torch.randn(p.shape, generator=g))
    return peft.eval()


def test_merged_lora_params_are_b_at_a_times_scale() -> None:
    peft = tiny_peft()
    deltas = L.merged_lora_params(peft)
    assert len(deltas) == 2 * 2  # q and v in 2 layers
    name = next(iter(deltas))
    assert name.endswith("q_proj.base_layer.weight")
    module = peft.get_submodule(name.removesuffix(".base_layer.weight"))
    want = module.lora_B["default"].weight @ module.lora_A["default"].weight * (4 / 2)
    torch.testing.assert_close(deltas[name], want)
    assert want.abs().sum() > 0


def test_lora_merged_slice_origin_equals_the_peft_models_loss(batches) -> None:
    peft = tiny_peft()
    own = {d: L.batch_loss(peft, b) for d, b in batches.items()}
    with peft.disable_adapter():
        plain = {d: L.batch_loss(peft, b) for d, b in batches.items()}
    assert all(abs(own[d][0] - plain[d][0]) > 1e-3 * own[d][0] for d in batches)  # LoRA matters
    with L.lora_merged(peft) as view:
        spec = L.random_slice(1, seed=0, space="lora_merged")
        base = view.weights()
        dirs = L.slice_directions(base, spec)
        assert len(dirs) == 1 and set(dirs[0]) == set(L.merged_lora_params(peft))
        rows = L.evaluate_points(view.model, spec, base, dirs, L.slice_points([0.0, 0.5]), batches)
        # Interpolating the merged update from 0 (the base model) to the adapter's.
        zero = {n: torch.zeros_like(t) for n, t in view.delta.items()}
        interp = L.evaluate_interpolation(
            view.model,
            view.weights(zero),
            view.weights(),
            [0.0, 1.0],
            batches,
            from_stage=0,
            to_stage=1,
            space="lora_merged",
        )
    at0 = {r["dataset"]: r for r in rows if r["alpha"] == 0.0}
    for d in batches:
        assert at0[d]["tokens"] == own[d][1]
        assert at0[d]["loss_sum"] == pytest.approx(own[d][0], rel=1e-5)
        assert at0[d]["space"] == "lora_merged"
    ends = by_key(interp)
    for d in batches:
        assert ends[(d, 0.0, None)]["loss_sum"] == pytest.approx(plain[d][0], rel=1e-5)
        assert ends[(d, 1.0, None)]["loss_sum"] == pytest.approx(own[d][0], rel=1e-5)
    # Leaving the view restores the PEFT model exactly.
    assert {d: L.batch_loss(peft, b) for d, b in batches.items()} == own


def test_rows_validate_against_the_landscape_schema(batches) -> None:
    model = landscape_model()
    base = L.pristine(model)
    rows = []
    for dims, betas in ((1, None), (2, [0.0, 0.5])):
        spec = L.random_slice(1, seed=0, dims=dims, normalisation="layer")
        dirs = L.slice_directions(base, spec)
        rows += L.evaluate_points(
            model, spec, base, dirs, L.slice_points([0.0, 0.5], betas), batches
        )
    rows += L.evaluate_interpolation(
        model, base, L.pristine(perturbed(model)), [0.0, 1.0], batches, from_stage=0, to_stage=1
    )
    table = to_table("landscape", rows, study="s", trial_id="t")
    assert table.num_rows == len(rows) == 2 * 2 + 4 * 2 + 2 * 2
    df = table.to_pandas()
    assert df["direction_seed"].isna().sum() == 4
    assert set(df["slice_kind"]) == {"interpolation", "random_1d", "random_2d"}
    # done_keys reads a DataFrame (e.g. read back from Parquet) and keeps one slice's rows.
    one_d = L.random_slice(1, seed=0, dims=1, normalisation="layer")
    assert L.done_keys(df, one_d) == {(d, a, None) for d in batches for a in (0.0, 0.5)}


def test_config_cost_and_validation() -> None:
    cfg = LandscapeConfig(
        random_1d_points=21,
        random_2d_resolution=11,
        interpolation_points=21,
        stages="all",
        seeds=(0, 1),
        examples_per_dataset=16,
        batch_size=8,
    )
    # per stage: 2 seeds x (21 + 121) = 284 points, + 21 interpolation points; 3 stages
    assert L.cost_forward_passes(cfg, n_tasks=3, n_datasets=3) == (284 + 21) * 3 * 3 * 2
    last = LandscapeConfig(stages="last", random_1d_points=0, interpolation_points=9)
    assert L.cost_forward_passes(last, n_tasks=15) == 9 * 3 * 2
    # Stage 1 has no 'prev' task: by default only the datasets that exist are counted.
    first = LandscapeConfig(stages="1", random_1d_points=0, interpolation_points=9)
    assert L.cost_forward_passes(first, n_tasks=15) == 9 * 2 * 2
    assert LandscapeConfig(stages="0,2", interpolation=True).stage_list(3) == [0, 2]
    # Stage 0 has no predecessor to interpolate from.
    assert LandscapeConfig(stages="0").points_per_stage(0) == 21
    bad = LandscapeConfig(
        interpolation_range=(0.2, 1.5), span=0, stages="first", random_1d_points=1
    )
    with pytest.raises(ConfigError) as err:
        bad.check()
    msg = str(err.value)
    for part in ("interpolation_range", "span", "stages", "random_1d_points"):
        assert f"landscape.{part}" in msg
    # Grids must contain the checkpoints: alpha 0 and 1 on the line, 0 on random axes.
    with pytest.raises(ConfigError) as err:
        LandscapeConfig(interpolation_points=7, random_2d_resolution=10).check()
    msg = str(err.value)
    assert "miss alpha 0 or 1" in msg and "[5, 9, 13" in msg
    assert "random_2d_resolution: 10 is even" in msg and "use 11" in msg
    with pytest.raises(ConfigError, match="outside 0..3"):
        LandscapeConfig(stages="4").stage_list(3)
