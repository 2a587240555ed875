"""Faults and bad input, tried as a new user would (issue: nothing lost, nothing hung).

One test (or a few) per item of docs/faults.md, each failing on the code before it was fixed.
Bad input must fail with the value, the rule and the fix *before any model is built*
(``make_backend`` is replaced by a tripwire to prove it); faults must leave results that tell
the truth (a summary says 'completed' only over complete records). The damaged-file tests are
in tests/results/test_faults_results.py, the auth tests in tests/clusters/test_faults_auth.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import harness.trial as trial_mod
from harness.config import ConfigError, from_dict, iter_fields
from harness.data import DataError
from harness.grid import axis
from harness.inputs import load_data
from harness.train import plan_steps
from harness.trial import run_trial, stored_completed
from harness.tune import finished
from results.io import read_records, read_trial_rows, record_path, study_dir, write_records
from tests.fault_hooks import SummaryAtStart
from tests.fixtures import mini_config, write_task

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_model(monkeypatch):
    """Building a model (the expensive part) fails the test: errors must come before it."""

    def tripwire(cfg):
        raise AssertionError("a model was built before the bad input was reported")

    monkeypatch.setattr(trial_mod, "make_backend", tripwire)


# -- 6. non-finite numbers, negative seed, plans that never end --------------------------------


def _float_fields() -> list[str]:
    floats = []
    for name, tp, _default, _doc in iter_fields():
        if tp is float or float in typing.get_args(tp):
            floats.append(name)
    return floats


def test_every_float_setting_refuses_nan_and_inf() -> None:
    names = _float_fields()
    assert {"train.lr", "train.lr_multiplier", "train.epochs", "train.max_grad_norm"} <= set(names)
    assert {"replay.weight", "landscape.span", "scale.cpus_per_worker"} <= set(names)
    for name in names:
        for bad in ("nan", "inf", "-inf"):
            section, key = name.rsplit(".", 1) if "." in name else ("", name)
            data = {section: {key: bad}} if section else {key: bad}
            if section == "landscape":
                data["landscape"]["enabled"] = True
            with pytest.raises(ConfigError) as err:
                from_dict(data)
            assert name in str(err.value) and "finite" in str(err.value), (name, bad)
    for method, key in (("tm", "k"), ("kl", "temperature")):
        with pytest.raises(ConfigError, match=f"replay.settings.{key}.*finite"):
            from_dict({"replay": {"method": method, "size": 4, "settings": {key: "nan"}}})


def test_a_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match="seed: -1 must be >= 0"):
        from_dict({"seed": -1})


def test_a_huge_epoch_count_with_a_step_cap_plans_only_the_capped_steps() -> None:
    t0 = time.perf_counter()
    for per_batch in (None, 2):
        steps = plan_steps(
            n_task=50,
            n_replay=10,
            effective_batch=8,
            per_batch=per_batch,
            epochs=1e8,
            max_steps=2,
            rng=np.random.default_rng(0),
        )
        assert len(steps) == 2 and all(len(s) == 8 for s in steps)
    assert time.perf_counter() - t0 < 5  # planning 1e8 epochs first took minutes
    with pytest.raises(ConfigError, match="train.epochs: 1e.08 epochs per task"):
        from_dict({"train": {"epochs": 1e8}})
    assert from_dict({"train": {"epochs": 1e8, "max_steps_per_task": 2}}).train.epochs == 1e8


def test_a_cap_leaves_the_plan_of_a_single_epoch_unchanged() -> None:
    """The cap is applied while planning; shuffling task and replay texts together (the
    default), a capped plan of one epoch is the start of the uncapped one."""
    kw = dict(n_task=50, n_replay=10, effective_batch=8, per_batch=None, epochs=1.0)
    full = plan_steps(**kw, max_steps=None, rng=np.random.default_rng(3))
    capped = plan_steps(**kw, max_steps=3, rng=np.random.default_rng(3))
    assert capped == full[:3]
    kw["per_batch"] = 2
    capped = plan_steps(**kw, max_steps=3, rng=np.random.default_rng(3))
    assert len(capped) == 3 and all(sum(rep for rep, _ in s) == 2 for s in capped)


# -- 5. a sequence too short for a label ------------------------------------------------------


def test_a_sequence_length_shorter_than_a_label_fails_before_the_model(
    mini_root, tmp_path, no_model
) -> None:
    rows = [(f"case {i}", "entailment_of_the_premise" if i % 2 else "no") for i in range(16)]
    write_task(mini_root, "longlabel", "Entailed?", ["entailment_of_the_premise", "no"], rows)
    cfg = mini_config(mini_root, tmp_path / "out", **{"data.tasks": "longlabel,colour"})
    cfg = from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "max_seq_len": 16}})
    with pytest.raises(ConfigError) as err:
        run_trial(cfg)
    text = str(err.value)
    assert "data.max_seq_len: 16" in text and "'longlabel'" in text and "at least 19" in text
    assert not study_dir(cfg.out, cfg.study).exists()  # nothing written


# -- 7. errors that came late or unnamed ------------------------------------------------------


def test_an_out_that_is_a_file_or_unwritable_fails_before_the_model(
    mini_root, tmp_path, no_model
) -> None:
    afile = tmp_path / "results.txt"
    afile.write_text("not a directory")
    for out, rule in ((afile, "is a file"), (afile / "sub", "is a file")):
        with pytest.raises(ConfigError, match=rule):
            run_trial(mini_config(mini_root, out))
    assert afile.read_text() == "not a directory"
    if Path("/proc/self").exists():  # /proc refuses new directories even to root
        with pytest.raises(ConfigError, match="cannot be written"):
            run_trial(mini_config(mini_root, "/proc/gere-results"))


def test_lora_targets_the_model_lacks_fail_before_the_weights(
    mini_root, tmp_path, no_model
) -> None:
    cfg = mini_config(
        mini_root,
        tmp_path,
        **{"model.tuning": "lora", "model.lora_target_modules": ["q_proj", "v_projection"]},
    )
    with pytest.raises(ConfigError) as err:
        run_trial(cfg)
    text = str(err.value)
    assert "model.lora_target_modules: ['v_projection']" in text and "'v_proj'" in text


def test_non_utf8_data_files_are_named(mini_root, tmp_path) -> None:
    corpus = mini_root / "general" / "train.jsonl"
    corpus.write_bytes(b'{"text": "caf\xe9 au lait"}\n')
    with pytest.raises(DataError) as err:
        load_data(mini_config(mini_root, tmp_path))
    assert str(corpus) in str(err.value) and "not UTF-8" in str(err.value)
    make = mini_root / "general" / "train.jsonl"
    make.write_text('{"text": "fine text"}\n' * 20)
    csv = mini_root / "mmlu" / "test" / "mini_test.csv"
    csv.write_bytes(b"question,a,b,c,d,answer\nQu\xe9?,w,x,y,z,0\n")
    with pytest.raises(DataError) as err:
        load_data(mini_config(mini_root, tmp_path))
    assert str(csv) in str(err.value) and "byte" in str(err.value)


def _study_main(argv, tmp_path, capsys):
    from harness.study import Study, main

    grid = [axis("replay.method", ["none", "tm"])]
    code = main(Study("faults", "doc", grid, grid), [*argv, "--out", str(tmp_path / "runs")])
    return code, capsys.readouterr()


def test_a_study_refuses_set_of_a_grid_axis(tmp_path, capsys) -> None:
    code, out = _study_main(["--set", "replay.method=foo", "--dry-run"], tmp_path, capsys)
    assert code == 2
    assert "--set replay.method='foo': replay.method is an axis" in out.err
    code, out = _study_main(["--set", "train.epochs=2", "--dry-run"], tmp_path, capsys)
    assert code == 0, out.err  # a base setting the grid does not vary is fine


def test_a_missing_data_dir_is_an_error_unless_generation_is_asked(tmp_path, capsys) -> None:
    missing = tmp_path / "no" / "such" / "data"
    code, out = _study_main(["--data-dir", str(missing), "--dry-run"], tmp_path, capsys)
    assert code == 2 and "does not exist" in out.err and "--generate-world" in out.err
    assert not missing.exists()
    argv = ["--data-dir", str(missing), "--generate-world", "--dry-run"]
    code, out = _study_main(argv, tmp_path, capsys)
    assert code == 0, out.err
    assert (missing / "long_sequence").is_dir()


def test_a_trial_id_reused_with_other_settings_is_refused(mini_root, tmp_path) -> None:
    base = mini_config(mini_root, tmp_path).to_dict()
    first = from_dict({**base, "trial_id": "same"})
    assert run_trial(first).status == "completed"
    stored = read_records(study_dir(first.out, first.study), "accuracy")
    other = from_dict({**base, "trial_id": "same", "train": {**base["train"], "lr": 5e-3}})
    with pytest.raises(ConfigError) as err:
        run_trial(other)
    assert "'same'" in str(err.value) and "train.lr stored 0.001, now 0.005" in str(err.value)
    assert "--overwrite" in str(err.value)
    pd.testing.assert_frame_equal(
        read_records(study_dir(first.out, first.study), "accuracy"), stored
    )
    assert run_trial(other, overwrite=True).status == "completed"
    assert (
        json.loads(
            read_trial_rows(first.out, "summary", study=first.study, trial_id="same")[0][
                "config_json"
            ]
        )["train"]["lr"]
        == 5e-3
    )


# -- 3. divergence is a result, not a crash ---------------------------------------------------


def test_an_exploding_loss_ends_the_trial_diverged_with_its_rows(mini_root, tmp_path) -> None:
    cfg = mini_config(mini_root, tmp_path, **{"train.lr": 10.0, "train.max_steps_per_task": 8})
    result = run_trial(cfg)  # no exception
    assert result.status == "diverged"
    s = result.summary
    assert "diverged at task" in s["error"] and s["diverged_step"] >= 1
    assert "divergence_factor" in s["error"] or "non-finite" in s["error"]
    acc = read_trial_rows(cfg.out, "accuracy", study=cfg.study, trial_id=cfg.id)
    assert {r["stage"] for r in acc} >= {0}  # every stage measured before it is kept
    curve = read_trial_rows(cfg.out, "curve", study=cfg.study, trial_id=cfg.id)
    assert curve and curve[-1]["step"] == s["diverged_step"]  # the diverging steps are shown


def test_a_divergence_factor_at_or_below_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="train.divergence_factor: 1.0 must be > 1"):
        from_dict({"train": {"divergence_factor": 1}})
    assert from_dict({"train": {"divergence_factor": None}}).train.divergence_factor is None


def test_an_overflowing_perplexity_is_recorded_as_inf() -> None:
    from harness.evaluate import Perplexity

    p = Perplexity(nll_sum=1e6, tokens=10)
    assert math.isinf(p.ppl)


# -- 2. results that cannot lie ---------------------------------------------------------------


def test_a_rerun_marks_the_summary_running_before_it_rewrites_anything(mini_root, tmp_path):
    cfg = mini_config(mini_root, tmp_path)
    assert run_trial(cfg).status == "completed"
    probe = SummaryAtStart()
    run_trial(cfg, hooks=[probe])
    assert probe.seen == ["running"]


def test_the_completed_check_needs_every_record_to_agree(mini_root, tmp_path, caplog) -> None:
    cfg = mini_config(mini_root, tmp_path)
    assert run_trial(cfg).status == "completed"
    assert finished(cfg) is not None and stored_completed(cfg) is not None
    acc = record_path(cfg.out, "accuracy", study=cfg.study, trial_id=cfg.id)
    rows = read_trial_rows(cfg.out, "accuracy", study=cfg.study, trial_id=cfg.id)
    write_records(
        cfg.out, "accuracy", [r for r in rows if r["stage"] <= 1], study=cfg.study, trial_id=cfg.id
    )
    assert finished(cfg) is None and stored_completed(cfg) is None
    assert "stages [0, 1] stored" in caplog.text
    good = acc.read_bytes()
    acc.write_bytes(good[: len(good) // 2])  # a truncated file
    assert finished(cfg) is None and stored_completed(cfg) is None
    assert str(acc) in caplog.text
    acc.write_bytes(good)
    record_path(cfg.out, "curve", study=cfg.study, trial_id=cfg.id).unlink()
    assert finished(cfg) is None and "curve: no file" in caplog.text


def _cli(args: list[str], pre: str = "") -> subprocess.CompletedProcess:
    code = f"import sys\n{pre}\nfrom harness.cli import main\nsys.exit(main({args!r}))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_a_killed_cli_rerun_leaves_running_and_the_cli_resumes(mini_root, tmp_path) -> None:
    """Items 2 and 8: kill -9 a re-run of a finished trial after its first task: the summary
    says 'running' (not 'completed') over the partial files, no check counts it as done, and
    the same command then resumes after that task and ends with the uninterrupted results."""
    cfg = mini_config(mini_root, tmp_path / "out", **{"train.max_steps_per_task": 4})
    config = tmp_path / "trial.json"
    config.write_text(json.dumps(cfg.to_dict()))
    run = ["run", "--config", str(config), "--no-progress"]
    proc = _cli(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = read_trial_rows(cfg.out, "accuracy", study=cfg.study, trial_id=cfg.id)
    assert {r["stage"] for r in full} == {0, 1, 2, 3}

    die = (
        "import harness.trial as t\nfrom tests.fault_hooks import DieBefore\n"
        "_d = t.default_hooks\nt.default_hooks = lambda c: [*_d(c), DieBefore(2)]"
    )
    proc = _cli([*run, "--rerun"], pre=die)
    assert proc.returncode == 9, proc.stderr[-3000:]
    summary = read_trial_rows(cfg.out, "summary", study=cfg.study, trial_id=cfg.id)
    assert summary[0]["status"] == "running"
    partial = read_trial_rows(cfg.out, "accuracy", study=cfg.study, trial_id=cfg.id)
    assert {r["stage"] for r in partial} == {0, 1}
    assert stored_completed(cfg) is None and finished(cfg) is None
    ckpt = study_dir(cfg.out, cfg.study) / "_checkpoints" / cfg.id
    assert (ckpt / "state.json").is_file()

    proc = _cli(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trial {cfg.id} resumes after task 1" in proc.stderr
    resumed = read_trial_rows(cfg.out, "accuracy", study=cfg.study, trial_id=cfg.id)
    key = lambda r: (r["stage"], r["task"])  # noqa: E731
    assert [(key(r), r["accuracy"]) for r in sorted(resumed, key=key)] == [
        (key(r), r["accuracy"]) for r in sorted(full, key=key)
    ]
    assert not ckpt.exists()  # removed when the trial completed
    assert (
        read_trial_rows(cfg.out, "summary", study=cfg.study, trial_id=cfg.id)[0]["status"]
        == "completed"
    )

    proc = _cli(run)
    assert proc.returncode == 0 and "already completed with these settings" in proc.stderr


# -- a Ray cluster killed without `ray stop` ---------------------------------------------------


def test_a_stale_ray_address_starts_a_local_ray_instead_of_waiting_for_ever(
    monkeypatch, caplog
) -> None:
    import socket

    import ray
    import ray._private.utils as ray_utils

    from harness import tune

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    calls = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(tune.RAY_PREEMPTION_ENV, raising=False)
    monkeypatch.setattr(ray_utils, "read_ray_address", lambda temp_dir=None: dead)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    tune._init_ray()
    assert calls == [{"address": "local"}]
    assert dead in caplog.text and "without `ray stop`" in caplog.text
    # a Ray started here watches for no cloud's preemption notices (one process less a trial)
    assert os.environ[tune.RAY_PREEMPTION_ENV] == "0"
    monkeypatch.delenv(tune.RAY_PREEMPTION_ENV)
    monkeypatch.setattr(ray_utils, "read_ray_address", lambda temp_dir=None: None)
    tune._init_ray()
    assert calls[-1] == {}  # no address recorded: ray.init() as before
    assert os.environ[tune.RAY_PREEMPTION_ENV] == "0"
    monkeypatch.delenv(tune.RAY_PREEMPTION_ENV)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a cluster's: its watcher stays on
    tune._init_ray()
    assert calls[-1] == {} and tune.RAY_PREEMPTION_ENV not in os.environ


def test_a_model_name_that_is_no_preset_directory_or_hub_id_fails_before_the_model(
    mini_root, tmp_path, no_model
) -> None:
    for name, rule in (("tinyy", "did you mean 'tiny'"), (str(tmp_path), "without config.json")):
        cfg = from_dict({**mini_config(mini_root, tmp_path).to_dict(), "model": {"name": name}})
        with pytest.raises(ConfigError, match=rule):
            run_trial(cfg)
