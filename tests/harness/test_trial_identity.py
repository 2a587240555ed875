"""A trial is what it ran on (issue 26): one id for equivalent spellings, a data fingerprint
that keeps changed data from resuming or counting as completed, one writer per trial id, and
no checkpoint that outlives its trial. Each test failed on the code before the fix."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import harness.trial as trial_mod
from harness import checkpoints
from harness.checkpoints import LocalCheckpointHook
from harness.claim import ClaimedError, claimed
from harness.config import ConfigError, from_dict
from harness.hooks import Hook
from harness.trial import run_trial
from harness.trial_state import CHECKPOINT_CONFIG
from results.io import read_trial_rows, study_dir
from tests.fixtures import mini_config, write_task

REPO = Path(__file__).resolve().parents[2]


def _cli(args: list[str]) -> tuple[int, str]:
    """``python -m harness`` in a fresh process: (exit code, stderr + stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return proc.returncode, proc.stderr + proc.stdout


@pytest.fixture
def no_model(monkeypatch):
    def tripwire(cfg, **kw):
        raise AssertionError("a model was built")

    monkeypatch.setattr(trial_mod, "make_backend", tripwire)


# -- one spelling, one id -------------------------------------------------------------------


def test_equivalent_spellings_are_one_trial(mini_root) -> None:
    root = str(mini_root)
    base = {"data": {"root": root, "tasks": "colour,animal"}, "replay": {"size": 8}}
    ids = {from_dict(base).id}
    for data in (
        {"root": root, "tasks": "colour, animal"},
        {"root": root, "tasks": "colour,animal,"},
        {"root": root + "/", "tasks": " colour ,animal"},
        {"root": root + "//", "tasks": "colour,,animal"},
    ):
        ids.add(from_dict({**base, "data": data}).id)
    absolute = {**base, "replay": {"size": 8, "corpus": f"{root}/general/train.jsonl"}}
    absolute["eval"] = {"heldout": f"{root}/general/heldout.jsonl", "probe": f"{root}/mmlu"}
    cfg = from_dict(absolute)
    ids.add(cfg.id)
    assert len(ids) == 1, ids
    assert (cfg.replay.corpus, cfg.eval.heldout, cfg.eval.probe) == (
        "general/train.jsonl",
        "general/heldout.jsonl",
        "mmlu",
    )
    # a path outside the data root, a Hub source and a URI are kept as written
    outside = from_dict({**base, "replay": {"size": 8, "corpus": "/elsewhere/c.jsonl"}})
    assert outside.replay.corpus == "/elsewhere/c.jsonl"
    hub = from_dict({**base, "replay": {"size": 8, "corpus": "hf:a/b@main"}})
    assert hub.replay.corpus == "hf:a/b@main"


# -- the data fingerprint -------------------------------------------------------------------


def _change_a_test_answer(root: Path) -> None:
    path = root / "long_sequence" / "colour" / "test.json"
    if not path.exists():
        path = root / "colour" / "test.json"
    data = json.loads(path.read_text())
    first = data["Instances"][0]
    first["output"] = "cold" if first["output"] == "warm" else "warm"
    path.write_text(json.dumps(data))


def test_changed_data_is_neither_completed_nor_resumed(mini_root, tmp_path) -> None:
    """The summary stores the fingerprint; after the data changes, a completed trial is not
    taken as done (the CLI refuses, naming both fingerprints; --rerun replaces it), and a
    checkpoint saved on the old data is refused instead of mixing old and new test sets."""
    cfg = mini_config(mini_root, tmp_path / "out")
    first = run_trial(cfg)
    stored = read_trial_rows(cfg.out, "summary", study=cfg.study, trial_id=cfg.id)[0]
    assert len(stored["data_fingerprint"]) == 16 and isinstance(stored["data_warnings"], list)
    assert stored["data_fingerprint"] == first.summary["data_fingerprint"]
    config = tmp_path / "trial.json"
    config.write_text(json.dumps(cfg.to_dict()))
    code, text = _cli(["run", "--config", str(config), "--no-progress"])
    assert code == 0 and "already completed" in text

    _change_a_test_answer(mini_root)
    code, text = _cli(["run", "--config", str(config), "--no-progress"])
    assert code == 2, text[-2000:]
    assert "other data" in text and stored["data_fingerprint"] in text and "--rerun" in text
    assert "Traceback" not in text
    with pytest.raises(ConfigError, match="other data"):  # the library refuses as well
        run_trial(cfg)

    class Stop(Hook):  # a crash after task 1, its checkpoint saved
        def after_task(self, trial, stage):
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run_trial(cfg, hooks=[LocalCheckpointHook(), Stop()], rerun=True)
    resume = checkpoints.resumable(cfg)
    assert resume is not None
    _change_a_test_answer(mini_root)  # the data changes back: the checkpoint's data is gone
    with pytest.raises(ConfigError, match="saved on other data.*--rerun"):
        run_trial(cfg, resume_from=resume, rerun=True)


def test_a_checkpoint_of_other_settings_under_the_same_trial_id_is_not_resumed(
    mini_root, tmp_path, caplog
) -> None:
    """Two studies in one storage shared a point id (the demo's and loss_types' 'method=none'),
    so Ray Train resumed one study's trial from the other's checkpoint: the settings a
    checkpoint was saved with are now checked, and a foreign one is ignored with a warning (the
    trial starts over, as the CLI's checkpoints always did); Train runs are named by study."""
    cfg = dataclasses.replace(mini_config(mini_root, tmp_path / "out"), trial_id="method=none")

    class Stop(Hook):  # a crash after task 1, its checkpoint saved
        def after_task(self, trial, stage):
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run_trial(cfg, hooks=[LocalCheckpointHook(), Stop()])
    resume = checkpoints.resumable(cfg)
    assert resume is not None and (resume / CHECKPOINT_CONFIG).is_file()
    other = from_dict(
        {**cfg.to_dict(), "study": "demo", "train": {**cfg.to_dict()["train"], "lr": 1e-3}}
    )
    assert other.id == cfg.id  # the same explicit id, other settings
    with pytest.raises(ConfigError, match="saved with other settings"):
        trial_mod.Trial(other).load(resume)  # never loaded into another trial
    with caplog.at_level("INFO", logger="harness.trial"):
        done = run_trial(other, resume_from=resume)  # Ray Train hands it over: ignored
    assert done.status == "completed" and "saved with other settings" in caplog.text
    assert "resumes after task" not in caplog.text  # started over, from task 1
    caplog.clear()
    with caplog.at_level("INFO", logger="harness.trial"):
        assert run_trial(cfg, resume_from=resume).status == "completed"  # its own trial
    assert "resumes after task 1" in caplog.text


def test_a_study_refuses_a_completed_trial_whose_data_changed(mini_root, tmp_path) -> None:
    from harness.tune import finished, id_conflicts, stored_summaries

    cfg = mini_config(mini_root, tmp_path / "out")
    run_trial(cfg)
    stored = stored_summaries(cfg.out, cfg.study)
    assert id_conflicts([cfg], stored) == [] and finished(cfg) is not None
    _change_a_test_answer(mini_root)
    import harness.inputs

    harness.inputs._FINGERPRINTS.clear()  # a new driver process
    problems = id_conflicts([cfg], stored)
    assert len(problems) == 1 and "other data" in problems[0] and "--overwrite" in problems[0]
    assert finished(cfg) is None


# -- data that makes a measurement meaningless -----------------------------------------------


def test_data_that_makes_a_measurement_meaningless_is_refused_before_the_model(
    mini_root, tmp_path, no_model
) -> None:
    from harness.data import DataError

    rows = [(f"case {i}", "yes") for i in range(8)]
    write_task(mini_root, "onelabel", "Always yes", ["yes"], rows)
    with pytest.raises(DataError, match="'onelabel': one label only"):
        run_trial(mini_config(mini_root, tmp_path / "o", **{"data.tasks": "onelabel,colour"}))
    (mini_root / "mmlu" / "dev").mkdir()
    lines = ["question,a,b,c,d,answer", "Q?,a,b,c,d,0", "R?,a,b,c,d,1"]
    (mini_root / "mmlu" / "dev" / "mini_dev.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="probe_shots: 5 few-shot.*mini \\(2\\).*at most 2"):
        run_trial(
            mini_config(
                mini_root, tmp_path / "o", **{"eval.probe_shots": 5, "eval.probe_format": "letter"}
            )
        )
    same = {"eval.heldout": "general/train.jsonl"}
    with pytest.raises(DataError, match="same file.*disjoint"):
        run_trial(mini_config(mini_root, tmp_path / "o", **same))
    assert not (tmp_path / "o" / "study=engine").exists()


def test_doubtful_test_sets_are_warned_about_in_the_summary(mini_root, tmp_path) -> None:
    rows = [(f"item {i}", "a" if i % 2 else "b") for i in range(12)]  # the training split
    rows += [("item 0", "b"), ("item 0", "b"), ("item 5", "a"), ("new", "a")]  # the test split
    write_task(mini_root, "copied", "Copied", ["a", "b"], rows)
    cfg = mini_config(mini_root, tmp_path / "o", **{"data.tasks": "copied"})
    result = run_trial(cfg)
    warnings = result.summary["data_warnings"]
    assert any("repeat an input" in w for w in warnings), warnings
    assert any("also training inputs" in w for w in warnings), warnings
    stored = read_trial_rows(cfg.out, "summary", study=cfg.study, trial_id=cfg.id)[0]
    assert stored["data_warnings"] == warnings


def test_lengths_beyond_the_models_context_are_refused_before_the_model(
    mini_root, tmp_path, no_model
) -> None:
    run_trial_cfg = mini_config(mini_root, tmp_path / "o", **{"data.max_seq_len": 10000})
    with pytest.raises(AssertionError, match="a model was built"):  # short tasks: fine
        run_trial(run_trial_cfg)
    write_task(
        mini_root, "long", "Long", ["a", "b"], [("word " * 2000, "ab"[i % 2]) for i in range(8)]
    )
    cfg = mini_config(
        mini_root, tmp_path / "o", **{"data.max_seq_len": 10000, "data.tasks": "long"}
    )
    with pytest.raises(ConfigError, match="task 'long' has sequences of 100.. tokens.*8192"):
        run_trial(cfg)
    long = "word " * 2000
    (mini_root / "mmlu" / "test" / "long_test.csv").write_text(
        f"question,a,b,c,d,answer\n{long}?,a,b,c,d,0\n"
    )
    with pytest.raises(ConfigError, match="1 of 9 probe prompts are longer than.*8192"):
        run_trial(mini_config(mini_root, tmp_path / "o"))


def test_settings_that_measure_nothing_are_refused() -> None:
    with pytest.raises(ConfigError, match="heldout_max_tokens: 1 token.*NaN"):
        from_dict({"eval": {"heldout_max_tokens": 1}})
    with pytest.raises(ConfigError, match="replay.max_tokens: 1 token.*replay does nothing"):
        from_dict({"replay": {"method": "tm", "max_tokens": 1}})


# -- one writer per trial id ----------------------------------------------------------------


_HOLD = """
import sys, time
from harness.config import from_dict
from harness.claim import claimed
cfg = from_dict({"out": sys.argv[1], "trial_id": "same"})
with claimed(cfg):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_second_writer_of_a_trial_id_is_refused_while_the_first_runs(tmp_path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out), "30"],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = from_dict({"out": str(out), "trial_id": "same", "train": {"lr": 5e-3}})
        with pytest.raises(
            ClaimedError,
            match=f"process {holder.pid} on .* is being run|being run by process {holder.pid}",
        ):
            with claimed(cfg):
                pass
    finally:
        holder.kill()
        holder.wait()
    with claimed(cfg):  # kill -9 releases it: the next run goes ahead
        with claimed(cfg):  # and a process may re-enter its own claim
            pass
    assert not (study_dir(cfg.out, cfg.study) / "_claims").exists()


@pytest.mark.slow
def test_two_runs_of_one_trial_id_with_other_settings_cannot_both_exit_0(
    mini_root, tmp_path
) -> None:
    """The issue's case: two `harness run` with one --trial_id and different settings,
    started together. Before: both exited 0 and one silently replaced the other's rows."""
    cfg = mini_config(mini_root, tmp_path / "out", **{"trial_id": "same"})
    config = tmp_path / "trial.json"
    config.write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "harness", "run", "--config", str(config), "--no-progress",
             "--train.lr", lr],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for lr in ("1e-3", "5e-3")
    ]  # fmt: skip
    results = [(p.wait(timeout=600), p.stdout.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(text for code, text in results if code == 2)
    assert "being run by process" in refused or "other settings" in refused
    assert "Traceback" not in refused


def test_an_object_store_claim_refuses_a_second_writer(s3, monkeypatch) -> None:
    import harness.claim as claim

    monkeypatch.setattr(claim, "SETTLE_S", 0.1)
    cfg = from_dict({"out": "s3://bucket/runs", "trial_id": "same"})
    key = claim.claim_path(cfg)
    with claim.object_claim(cfg, key):
        with pytest.raises(ClaimedError, match="being run by process"):
            with claim.object_claim(cfg, key):
                pass
    from results import storage

    assert not storage.exists(key)  # released
    stale = {"host": "gone", "pid": 1, "since": 0, "beat": time.time() - 2 * claim.STALE_S}
    storage.write(key, lambda f: f.write(json.dumps(stale).encode()))
    with claim.object_claim(cfg, key):  # a claim left by a killed run goes stale
        pass
    fresh = {**stale, "beat": time.time(), "owner": "tune:t1"}
    storage.write(key, lambda f: f.write(json.dumps(fresh).encode()))
    with pytest.raises(ClaimedError, match="expires at"):
        with claim.object_claim(cfg, key, owner="tune:t2"):
            pass
    with claim.object_claim(cfg, key, owner="tune:t1"):  # a retry of the same Tune trial
        pass


# -- checkpoints never outlive their trial --------------------------------------------------


def test_no_checkpoints_removes_the_stale_checkpoint_of_a_killed_run(mini_root, tmp_path) -> None:
    cfg = mini_config(mini_root, tmp_path / "out")
    stale = checkpoints.checkpoint_dir(cfg)
    (stale / "model").mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    config = tmp_path / "trial.json"
    config.write_text(json.dumps(cfg.to_dict()))
    code, text = _cli(["run", "--config", str(config), "--no-progress", "--no-checkpoints"])
    assert code == 0, text[-2000:]
    assert "removing the checkpoint of an earlier, interrupted run" in text
    assert not stale.exists()
