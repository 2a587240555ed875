"""Work a study's trials share: the starting model's evaluation (stage 0), computed once per
study (harness.shared), and the accuracy cells a trial scores (eval.matrix)."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.config import from_dict, merge
from harness.cost import describe, grid_costs, trial_cost
from harness.eval_stage import scored_positions
from harness.hooks import Hook
from harness.metrics import all_metrics, matrix_from_long
from harness.trial import run_trial
from results.io import read_study
from tests.fixtures import mini_config

KINDS = ("accuracy", "general", "predictions")


class CountStartForwards(Hook):
    """Counts the model's forward calls (its decoder's: the scorer calls the decoder and the
    output head apart) while the evaluation hook scores the starting model (stage 0; other
    hooks' stage-0 measurements, such as the plasticity probe's, are their own)."""

    def __init__(self) -> None:
        self.start_forwards = None
        self.calls = 0

    def setup(self, trial) -> None:
        from harness.models import decoder_and_head

        def count(*_):
            self.calls += 1

        decoder, _ = decoder_and_head(trial.backend.module)
        self.handle = decoder.register_forward_pre_hook(count)

    def at_end(self, trial, status: str) -> None:
        self.handle.remove()


@pytest.fixture(autouse=True)
def _count_in_the_evaluation_hook(monkeypatch):
    from harness.eval_stage import EvaluationHook

    plain = EvaluationHook.before_first_task

    def counted(self, trial):
        counters = [h for h in trial.hooks if isinstance(h, CountStartForwards)]
        before = [c.calls for c in counters]
        plain(self, trial)
        for c, n in zip(counters, before, strict=True):
            c.start_forwards = c.calls - n

    monkeypatch.setattr(EvaluationHook, "before_first_task", counted)


def _rows(out, study, trial_id, stage=None):
    tables = read_study(out / f"study={study}")
    rows = {}
    for kind in KINDS:
        t = tables[kind]
        t = t[t.trial_id == trial_id]
        if stage is not None:
            t = t[t.stage == stage]
        drop = [c for c in ("study", "trial_id", "wall_time_s") if c in t]
        rows[kind] = t.drop(columns=drop).reset_index(drop=True)
    return rows


def test_a_study_s_trials_evaluate_the_starting_model_once_with_identical_rows(mini_root, tmp_path):
    """Two trials of one study that differ in what they train (replay method and learning
    rate) share stage 0: the second makes no forward before its first task, and its stage-0
    rows equal those of the same trial computed alone in another study (every column, every
    float). Other evaluation settings, or a hook that changes the start, compute their own."""
    common = {"data.tasks": "colour,animal", "eval.predictions": True}
    first = mini_config(mini_root, tmp_path, **{**common, "replay.method": "none"})
    second = mini_config(mini_root, tmp_path, **{**common, "replay.method": "tm", "train.lr": 5e-4})
    counts = []
    for cfg in (first, second):
        counter = CountStartForwards()
        run_trial(cfg, hooks=[counter])
        counts.append(counter.start_forwards)
    assert counts[0] > 0 and counts[1] == 0, counts
    stored = list((tmp_path / "study=engine" / "_shared" / "stage0").iterdir())
    assert [p.suffix for p in stored] == [".json"]  # one key; no lock left lying

    alone = from_dict(merge(second.to_dict(), {"study": "alone"}))
    counter = CountStartForwards()
    run_trial(alone, hooks=[counter])
    assert counter.start_forwards == counts[0]  # another study: computed, not shared
    shared, own = _rows(tmp_path, "engine", second.id, 0), _rows(tmp_path, "alone", alone.id, 0)
    for kind in KINDS:
        assert len(own[kind]) > 0
        pd.testing.assert_frame_equal(shared[kind], own[kind], check_exact=True, obj=kind)
    # later stages are the trial's own, computed after its own training
    assert len(_rows(tmp_path, "engine", first.id, 1)["accuracy"]) == 2

    # another evaluation setting, or a hook that changes the model first: not shared
    other_eval = mini_config(
        mini_root, tmp_path, **{**common, "replay.method": "none", "eval.heldout_max_texts": 3}
    )

    class EditsTheStart(CountStartForwards):
        changes_the_start = True

    for cfg, hook in ((other_eval, CountStartForwards()), (second, EditsTheStart())):
        run_trial(cfg, hooks=[hook], overwrite=True)
        assert hook.start_forwards == counts[0], type(hook).__name__
    assert len(list((tmp_path / "study=engine" / "_shared" / "stage0").iterdir())) == 3


def test_a_damaged_shared_file_is_computed_again(mini_root, tmp_path):
    cfg = mini_config(mini_root, tmp_path, **{"data.tasks": "colour", "replay.method": "none"})
    run_trial(cfg)
    (path,) = (tmp_path / "study=engine" / "_shared" / "stage0").iterdir()
    path.write_text("{not json")
    counter = CountStartForwards()
    twin = from_dict(merge(cfg.to_dict(), {"train": {"lr": 5e-4}}))
    run_trial(twin, hooks=[counter])  # would read the file; reads no rows from a damaged one
    assert counter.start_forwards > 0
    assert path.read_text().startswith('{"format": 1')


@pytest.mark.parametrize("n", [1, 2, 5])
def test_the_needed_matrix_holds_every_cell_the_metrics_read(n):
    """eval.matrix='needed' scores every task at the start, then the tasks trained so far and
    the next one; every CL metric computed from those cells alone equals the full matrix's
    (multitask's one stage scores every task)."""
    import numpy as np

    stages = [(k,) for k in range(1, n + 1)]
    rng = np.random.default_rng(n)
    full = rng.random((n + 1, n))
    needed = np.full_like(full, np.nan)
    for stage in range(n + 1):
        for p in scored_positions(stages, stage, "needed"):
            needed[stage, p - 1] = full[stage, p - 1]
    assert np.isnan(needed).sum() == (n - 1) * (n - 2) // 2
    assert all_metrics(needed) == pytest.approx(all_metrics(full), nan_ok=True)
    assert scored_positions([tuple(range(1, n + 1))], 1, "needed") == set(range(1, n + 1))
    assert scored_positions(stages, 1, "full") == set(range(1, n + 1))
    long = pd.DataFrame(
        [
            {"stage": s, "task_position": p, "task": f"t{p}", "accuracy": needed[s, p - 1]}
            for s in range(n + 1)
            for p in range(1, n + 1)
            if not np.isnan(needed[s, p - 1])
        ]
    )
    matrix, tasks = matrix_from_long(long)
    assert tasks == [f"t{p}" for p in range(1, n + 1)]
    assert np.array_equal(matrix, needed, equal_nan=True)


def test_a_needed_matrix_trial_writes_those_cells_and_its_cost_counts_them(mini_root, tmp_path):
    cfg = mini_config(mini_root, tmp_path, **{"replay.method": "none", "eval.matrix": "needed"})
    full = from_dict(merge(cfg.to_dict(), {"eval": {"matrix": "full"}, "out": str(tmp_path / "f")}))
    # other rows, so another id; 'full' (the default) keeps the id trials had before it
    before = mini_config(mini_root, tmp_path, **{"replay.method": "none"})
    assert cfg.id != full.id and full.id == before.id
    summary = run_trial(cfg).summary
    acc = read_study(tmp_path / "study=engine")["accuracy"]
    cells = sorted(zip(acc.stage, acc.task_position, strict=True))
    assert cells == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3)] + [
        (3, 1),
        (3, 2),
        (3, 3),
    ]
    full_summary = run_trial(full).summary
    for metric in ("ap", "bwt", "fwt", "forgetting"):
        assert summary[metric] == pytest.approx(full_summary[metric], nan_ok=True), metric
    from harness.inputs import load_data, tokenize_inputs
    from harness.models import byte_level_tokenizer

    inputs = tokenize_inputs(cfg, load_data(cfg), byte_level_tokenizer())
    a, b = trial_cost(cfg, inputs), trial_cost(full, inputs)
    assert a.evaluation < b.evaluation
    # the grid counts a shared stage 0 once: two trials of one study cost one stage 0 less
    # than twice one trial
    twin = from_dict(merge(cfg.to_dict(), {"train": {"lr": 5e-4}, "trial_id": "twin"}))
    costs = grid_costs([cfg, twin])
    total = sum(costs.values(), type(a)())
    assert costs[twin.id].evaluation == a.evaluation - a.stage0
    assert total.evaluation == 2 * a.evaluation - a.stage0
    assert any("stage 0 shared" in line for line in describe(costs))


def test_tm_states_are_prepared_once_per_study_and_train_alike(mini_root, tmp_path, monkeypatch):
    """Two TM trials of one study at other learning rates: the second loads the first one's
    states (no pass of the frozen model over the buffer) and every row it writes equals the
    same trial run alone in another study, which prepares its own."""
    from harness.trial import Trial

    passes = []
    plain = Trial._prepare_replay_here

    def counted(self):
        passes.append(self.cfg.id)
        plain(self)

    monkeypatch.setattr(Trial, "_prepare_replay_here", counted)
    common = {"data.tasks": "colour,animal", "replay.method": "tm"}
    first = mini_config(mini_root, tmp_path, **{**common, "train.lr": 1e-3})
    second = mini_config(mini_root, tmp_path, **{**common, "train.lr": 5e-4})
    alone = from_dict(merge(second.to_dict(), {"study": "alone"}))
    for cfg in (first, second, alone):
        run_trial(cfg)
    assert passes == [first.id, alone.id]
    (state,) = (tmp_path / "study=engine" / "_shared" / "replay").iterdir()
    assert state.name.startswith("tm-") and (state / "shared.json").is_file()
    tables = {s: read_study(tmp_path / f"study={s}") for s in ("engine", "alone")}
    for kind in ("curve", "accuracy", "general"):
        mine = tables["engine"][kind]
        mine = mine[mine.trial_id == second.id].drop(columns=["study", "trial_id"])
        theirs = tables["alone"][kind].drop(columns=["study", "trial_id"])
        drop = [c for c in mine if "time" in c or c.endswith("_s")]
        pd.testing.assert_frame_equal(
            mine.drop(columns=drop).reset_index(drop=True),
            theirs.drop(columns=drop).reset_index(drop=True),
            check_exact=True,
            obj=kind,
        )


def test_a_trial_waits_for_the_one_computing_its_key_then_reads_it(tmp_path):
    """While another process holds the lock on a key, the trial waits (polling) and then reads
    what that process stored; a key nobody holds is computed; --rerun computes afresh."""
    import contextlib
    import fcntl
    import os
    import threading
    import time
    from types import SimpleNamespace

    from harness import shared

    backend = SimpleNamespace(is_main=True, world_size=1)
    trial = SimpleNamespace(
        backend=backend, rerun=False, overwrite=False, cfg=SimpleNamespace(id="t")
    )
    loc = tmp_path / "stage0" / "k.json"
    loc.parent.mkdir()
    lock = loc.with_name("k.json.lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)

    def finish():
        time.sleep(1.5)
        shared._write(loc, "k", {"accuracy": [{"stage": 0, "accuracy": 0.5}]})
        os.close(fd)  # the computing process ends: its lock goes

    threading.Thread(target=finish).start()
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        what, rows = shared._obtain(trial, loc, shared._read, stack)
    assert what == "read" and rows == {"accuracy": [{"stage": 0, "accuracy": 0.5}]}
    assert time.perf_counter() - t0 >= 1.0  # it waited for the holder
    other = tmp_path / "stage0" / "other.json"
    with contextlib.ExitStack() as stack:
        assert shared._obtain(trial, other, shared._read, stack)[0] == "compute"
        assert other.with_name("other.json.lock").exists()  # held while computing
    assert not other.with_name("other.json.lock").exists()  # and removed after
    trial.rerun = True
    with contextlib.ExitStack() as stack:
        assert shared._obtain(trial, loc, shared._read, stack)[0] == "compute"


def test_a_lock_taken_on_a_file_its_holder_just_removed_is_taken_again(tmp_path, monkeypatch):
    """The race a lock file has: B opens the lock file, A lets go (removes it, unlocks), B locks
    the removed file while C would lock a new one at the same path: two processes computing.
    The lock (shared results and trial claims alike) checks it holds the file at the path."""
    import os

    from harness import claim

    path = tmp_path / "states" / "key.lock"
    a = claim.try_file_lock(path)
    a.__enter__()
    real_open = os.open
    opened = []

    def open_then_a_lets_go(p, *args):
        fd = real_open(p, *args)
        opened.append(p)
        if len(opened) == 1:  # the first open: A's file, which A removes before B locks it
            a.__exit__(None, None, None)
        return fd

    monkeypatch.setattr(claim.os, "open", open_then_a_lets_go)
    b = claim.try_file_lock(path)
    monkeypatch.undo()
    assert b is not None and len(opened) == 2  # B got the lock, at its second open ...
    with b:
        assert path.exists() and claim.try_file_lock(path) is None  # ... so C waits
    assert not path.exists()
    assert claim.try_file_lock(path) is not None  # free again once B lets go


def test_the_dry_run_groups_trials_as_the_shared_keys_do(mini_root, tmp_path):
    """The dry run reads from the config alone which trials share stage 0 and a replay state
    (``harness.cost``); the trials compute the real keys from their inputs and model
    (``harness.shared``). Over settings that keep or break the sharing, both group alike."""
    from harness import cost, shared
    from harness.trial import Trial

    common = {"data.tasks": "colour,animal"}
    variants = {
        "none": {"replay.method": "none"},
        "lr": {"replay.method": "none", "train.lr": 5e-4},
        "loss weighting": {"replay.method": "none", "train.loss_weighting": "per_sample"},
        "needed matrix": {"replay.method": "none", "eval.matrix": "needed"},
        "ewc": {"replay.method": "none", "cl": {"ewc": {}}},
        "plasticity texts": {"replay.method": "none", "eval.plasticity_texts": 4},
        "tm": {"replay.method": "tm"},
        "tm lr": {"replay.method": "tm", "train.lr": 5e-4},
        "tm k": {"replay.method": "tm", "replay.settings": {"k": 2.0}},
        "tm size": {"replay.method": "tm", "replay.size": 4},
        "tm weight": {"replay.method": "tm", "replay.weight": 10.0},
        "held-out cap": {"replay.method": "none", "eval.heldout_max_texts": 3},
        "eval batch": {"replay.method": "tm", "eval.batch_size": 8},
        "seed": {"replay.method": "tm", "seed": 1},
        "lora": {"replay.method": "none", "model.tuning": "lora"},
    }
    keys = {}
    for name, over in variants.items():
        cfg = mini_config(mini_root, tmp_path / name.replace(" ", "_"), **{**common, **over})
        trial = Trial(cfg)
        trial.setup()
        replay = (
            (shared.replay_key(trial), cost._replay_key(cfg)) if cfg.replay.method == "tm" else None
        )
        keys[name] = ((shared.stage0_key(trial), cost._start_key(cfg)), replay)

    def groups(which: int, side: int) -> set[frozenset[str]]:
        by: dict[str, set[str]] = {}
        for name, k in keys.items():
            if k[which] is not None:
                by.setdefault(k[which][side], set()).add(name)
        return {frozenset(g) for g in by.values()}

    stage0 = groups(0, 0)
    assert groups(0, 1) == stage0
    assert frozenset({"none", "lr", "loss weighting", "needed matrix", "ewc", "plasticity texts",
                      "tm", "tm lr", "tm k", "tm size", "tm weight"}) in stage0  # fmt: skip
    assert groups(1, 1) == groups(1, 0)
    assert frozenset({"tm", "tm lr", "tm weight"}) in groups(1, 0)
