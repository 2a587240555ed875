"""Landscape slices recorded by trials: settings, sharding over ranks, resume of an
interrupted stage, and consistency between the slices of consecutive checkpoints."""

from __future__ import annotations

import threading

import pytest

from harness import landscape as L
from harness.config import ConfigError, LandscapeConfig, from_dict
from harness.hooks import Hook
from harness.landscape import recording as R
from harness.trial import run_trial
from results.io import read_records
from tests.fixtures import landscape_model, make_batch, perturbed
from tests.fixtures import mini_config as _mini_config

SMALL = LandscapeConfig(
    enabled=True,
    interpolation_points=5,
    random_1d_points=5,
    random_2d_resolution=3,
    stages="all",
    examples_per_dataset=4,
    batch_size=2,
    max_tokens=12,  # shorter than the task prompts: they must lose their left end, not the answer
)


def key(r) -> tuple:
    return (r["slice"], r["stage"], *L.point_key(r["dataset"], r["alpha"], r["beta"]))


def test_record_stage_covers_every_slice_and_restores_the_model() -> None:
    model = landscape_model()
    batches = {"general": make_batch(1), "taskA": make_batch(2)}
    before = L.pristine(model)
    prev = L.previous_weights(perturbed(model))
    rows = L.record_stage(model, SMALL, 2, batches, prev=prev)
    by_slice = {}
    for r in rows:
        by_slice.setdefault(r["slice"], []).append(r)
    assert sorted(by_slice) == ["interp:1->2", "random1d:seed=0", "random2d:seed=0"]
    assert len(by_slice["interp:1->2"]) == 5 * 2
    assert len(by_slice["random1d:seed=0"]) == 5 * 2
    assert len(by_slice["random2d:seed=0"]) == 9 * 2
    assert len({key(r) for r in rows}) == len(rows)
    # The interpolation's alpha=1 end and every random slice's origin are the model itself.
    own = {d: L.batch_loss(model, b)[0] for d, b in batches.items()}
    at_model = [
        r
        for r in rows
        if (r["slice_kind"] == "interpolation" and r["alpha"] == 1.0)
        or (r["slice_kind"] == "random_1d" and r["alpha"] == 0.0)
        or (r["slice_kind"] == "random_2d" and r["alpha"] == 0.0 and r["beta"] == 0.0)
    ]
    assert len(at_model) == 3 * 2
    for r in at_model:
        assert r["loss_sum"] == own[r["dataset"]]
    after = L.pristine(model)
    assert all((before[n] == after[n]).all() for n in before)


def test_two_ranks_record_exactly_the_serial_rows() -> None:
    batches = {"general": make_batch(1), "taskA": make_batch(2)}
    prev = L.previous_weights(perturbed(landscape_model()))
    serial = L.record_stage(landscape_model(), SMALL, 1, batches, prev=prev)

    world, barrier, box = 2, threading.Barrier(2), {}
    lock = threading.Lock()

    def gather_for(rank):
        def gather(rows):
            with lock:
                box[rank] = rows
            barrier.wait()
            parts = [box[r] for r in range(world)]
            barrier.wait()  # nobody overwrites box before both have read it
            return parts

        return gather

    results, errors = {}, []
    models = [landscape_model() for _ in range(world)]  # built here: model init uses the global RNG

    def worker(rank):
        try:
            results[rank] = L.record_stage(
                models[rank],
                SMALL,
                1,
                batches,
                prev=prev,
                rank=rank,
                world=world,
                gather=gather_for(rank),
            )
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results[0] == results[1]  # every rank returns every row
    assert {key(r): r["loss_sum"] for r in results[0]} == {key(r): r["loss_sum"] for r in serial}
    assert len(results[0]) == len(serial)


def test_an_interrupted_stage_resumes_only_its_missing_points() -> None:
    batches = {"general": make_batch(1), "taskA": make_batch(2)}
    full = L.record_stage(landscape_model(), SMALL, 1, batches)
    saved: list[dict] = []

    class Lost(Exception):
        pass

    def save_then_die(rows):
        saved.extend(rows)
        if len(saved) >= 12:
            raise Lost

    with pytest.raises(Lost):
        L.record_stage(landscape_model(), SMALL, 1, batches, on_rows=save_then_die)
    assert 0 < len(saved) < len(full)
    rest = L.record_stage(landscape_model(), SMALL, 1, batches, done=saved)
    assert len(rest) == len(full) - len(saved)  # nothing computed twice
    assert {key(r) for r in saved} & {key(r) for r in rest} == set()
    assert {key(r): r["loss_sum"] for r in saved + rest} == {key(r): r["loss_sum"] for r in full}


def test_landscape_settings_are_validated_with_the_trial_config() -> None:
    with pytest.raises(ConfigError) as err:
        from_dict(
            {
                "landscape": {"enabled": True, "span": -1, "stages": "first"},
                "scale": {"backend": "deepspeed", "zero_stage": 3},
                "eval": {"heldout": None, "plasticity_texts": 0},
            }
        )
    msg = str(err.value)
    for part in ("landscape.span", "landscape.stages", "zero_stage=2", "'general'"):
        assert part in msg
    with pytest.raises(ConfigError, match="did you mean 'random_2d_resolution'"):
        from_dict({"landscape": {"random_2d_resolutoin": 5}})


def test_a_trial_records_slices_that_agree_between_checkpoints(mini_root, tmp_path) -> None:
    cfg = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none"})
    cfg = from_dict({**cfg.to_dict(), "landscape": {**SMALL.__dict__, "seeds": [0]}})
    run_trial(cfg)
    land = read_records(tmp_path / "out" / "study=engine", "landscape")
    assert sorted(land.stage.unique()) == [1, 2, 3]
    assert (land.tokens > 0).all() and land.loss.notna().all()
    assert (land.tokens <= 4 * 12).all()
    assert set(land.slice) == {
        "interp:0->1",
        "interp:1->2",
        "interp:2->3",
        "random1d:seed=0",
        "random2d:seed=0",
    }
    # 'prev' and 'new' resolve to the tasks before and at each checkpoint.
    assert set(land[land.stage == 1].dataset) == {"colour", "general"}
    assert set(land[land.stage == 3].dataset) == {"animal", "compare", "general"}
    loss = {
        (r.slice, r.stage, r.dataset, r.alpha, None if r.beta != r.beta else r.beta): r.loss_sum
        for r in land.itertuples()
    }
    compared = 0
    for stage in (1, 2):
        for d in ("general", "animal"):
            # theta_stage is alpha=1 of the interpolation into it, alpha=0 of the one out of it
            # and the origin of its random slices: the same weights on the same batch.
            end = loss.get((f"interp:{stage - 1}->{stage}", stage, d, 1.0, None))
            start = loss.get((f"interp:{stage}->{stage + 1}", stage + 1, d, 0.0, None))
            origin = loss.get(("random1d:seed=0", stage, d, 0.0, None))
            got = [v for v in (end, start, origin) if v is not None]
            if len(got) >= 2:
                assert got == pytest.approx([got[0]] * len(got), rel=1e-5)
                compared += len(got)
    assert compared == 3 + 3 + 3  # general at 1 and 2, animal at 2: three records each
    summary = read_records(tmp_path / "out" / "study=engine", "summary")
    assert summary.status.tolist() == ["completed"]


def test_a_trial_interrupted_inside_a_slice_resumes_its_missing_points(
    mini_root, tmp_path, monkeypatch
) -> None:
    cfg = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none"})
    cfg = from_dict({**cfg.to_dict(), "landscape": {**SMALL.__dict__, "stages": "2"}})
    ckpt = tmp_path / "ckpt"

    class KeepStage1(Hook):
        def after_task(self, trial, stage):
            if stage == 1:
                trial.save(ckpt)

    reference = from_dict({**cfg.to_dict(), "out": str(tmp_path / "ref")})
    run_trial(reference)
    expected = read_records(tmp_path / "ref" / "study=engine", "landscape")

    calls = {"n": 0}
    real = R.evaluate_points  # one call per round of random-slice points

    def dies_on_third_round(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("node lost")
        return real(*args, **kw)

    monkeypatch.setattr(R, "evaluate_points", dies_on_third_round)
    with pytest.raises(RuntimeError, match="node lost"):
        run_trial(cfg, hooks=[KeepStage1()])
    partial = read_records(tmp_path / "out" / "study=engine", "landscape")
    assert 0 < len(partial) < len(expected)

    evaluated = []
    monkeypatch.setattr(
        R,
        "evaluate_points",
        lambda model, spec, base, dirs, pts, **kw: (
            evaluated.extend(pts) or real(model, spec, base, dirs, pts, **kw)
        ),
    )
    run_trial(cfg, resume_from=ckpt)
    got = read_records(tmp_path / "out" / "study=engine", "landscape")
    assert len(got) == len(expected)  # every point once
    done_before = {
        (r.slice, r.alpha, None if r.beta != r.beta else r.beta)
        for r in partial.itertuples()
        if r.slice_kind != "interpolation"
    }
    assert len(evaluated) == 5 + 9 - len(done_before)  # only the missing random points
    cols = ["slice", "stage", "dataset", "alpha", "beta"]
    a = got.sort_values(cols).reset_index(drop=True)
    b = expected.sort_values(cols).reset_index(drop=True)
    assert a[cols].equals(b[cols])
    assert a.loss_sum.tolist() == pytest.approx(b.loss_sum.tolist(), rel=1e-6)


def test_landscape_settings_that_do_not_fit_the_tasks_fail_before_any_work(
    mini_root, tmp_path, monkeypatch
) -> None:
    from harness import backend as B
    from harness import inputs as T

    cfg = _mini_config(mini_root, tmp_path / "out", **{"replay.method": "none"})
    bad = from_dict(
        {
            **cfg.to_dict(),
            "landscape": {**SMALL.__dict__, "stages": "4", "datasets": ["new", "colur"]},
        }
    )
    monkeypatch.setattr(B, "build", lambda *a, **k: pytest.fail("model built before the check"))
    with pytest.raises(ConfigError, match="outside 0..3"):
        run_trial(bad)
    bad = from_dict({**bad.to_dict(), "landscape": {**SMALL.__dict__, "datasets": ["colur"]}})
    with pytest.raises(ValueError, match=r"\['colur'\] are neither"):
        T.preflight([bad])
