"""A multi-node Ray cluster on one machine: a worker node lost while a trial trains.

Ray's own test utility (``ray.cluster_utils.Cluster``) starts a head node and two worker nodes
as separate raylets with their own resources; the study's driver joins it (``RAY_ADDRESS``), as
``ray job submit`` does on a real cluster, and the storage path is a directory every "node"
sees, as NFS or an object store is on a real one. The head has no CPUs, so trials run on the
worker nodes only, like a cluster whose GPU workers are spot instances.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from results.io import read_study

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.ray]

# One trial, two tasks of 4 steps (2 Train workers, DeepSpeed ZeRO-2 on CPU: the smoke preset).
DRIVER = """
import sys
from harness.grid import axis
from harness.study import Study
from studies import run
from tests.fault_hooks import EventLog, WhereAndWhen
GRID = SMOKE = [axis("replay.method", ["tm"])]
hooks = [WhereAndWhen({events!r}, stage=2, pause_s={pause})]
sys.exit(run(Study("node_loss", "One trial.", GRID, SMOKE, hooks=hooks), [
    "--smoke-test", "--out", {out!r}, "--storage-path", {storage!r},
    "--set", "train.max_steps_per_task=4", "--max-concurrent", "1", *{extra!r},
]))
"""


def _driver(address: str, out, storage, events: Path, pause: float, *extra: str):
    code = DRIVER.format(
        events=str(events), out=str(out), storage=str(storage), pause=pause, extra=list(extra)
    )
    env = {
        **os.environ,
        "RAY_ADDRESS": address,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _why(output: str) -> str:
    """What a failed driver said: its error lines (Ray's own stack dumps left out), then its
    last lines."""
    lines = [x for x in output.splitlines() if "PlacementGroupCleaner" not in x]
    errors = [x for x in lines if "rror" in x or "Traceback" in x or "failed" in x]
    return "\n".join(errors[-40:] + ["-- last lines --"] + lines[-40:])


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same_rows(got, want, kind: str) -> None:
    """The kind's rows of both runs, equal to the last bit, but for what differs between any
    two runs (wall times, start times, provenance)."""
    import pandas as pd

    varying = {"wall_time_s", "train_seconds", "started_at", "work_s", "harness_version"}
    a, b = (t[kind].drop(columns=[c for c in t[kind] if c in varying]) for t in (got, want))
    keys = [c for c in a.columns if a[c].map(lambda v: isinstance(v, str | int)).all()]
    a, b = (x.sort_values(keys).reset_index(drop=True) for x in (a, b))
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.fixture
def new_cluster(s3):
    """Starts a cluster: head (no CPUs) + two 1-CPU worker nodes, after the S3 server so every
    node's processes see its endpoint and credentials (on a real cluster: the nodes' own
    environment); each is shut down at the end, or when the next one starts."""
    from ray.cluster_utils import Cluster

    started = []

    def start():
        for old in started:
            old.shutdown()
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        nodes = [c.add_node(num_cpus=1) for _ in range(2)]
        c.wait_for_nodes()
        started[:] = [c]
        return c, nodes

    try:
        yield start
    finally:
        for c in started:
            c.shutdown()


def test_a_worker_node_lost_inside_the_second_task_moves_the_trial_and_loses_no_row(
    new_cluster, tmp_path
):
    """Spot preemption: the node running a trial's workers goes away two steps into task 2.
    Ray Train restarts the workers on the other node from the end-of-task-1 checkpoint; the
    dataset ends with the rows of an uninterrupted run, each once. The uninterrupted run writes
    its results and its Ray checkpoints to S3 (an S3-compatible server on localhost), and a
    re-run of it finds its trial completed there and runs nothing."""
    c, nodes = new_cluster()
    events = tmp_path / "events.jsonl"
    proc = _driver(c.address, tmp_path / "runs", tmp_path / "shared", events, pause=2.0)
    lost_at = victim = None
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            steps = [e for e in _events(events) if e["event"] == "step" and e["rank"] == 0]
            if victim is None and len(steps) >= 2:  # inside task 2, two steps after its start
                victim = next(n for n in nodes if n.node_id == steps[-1]["node"])
                lost_at = time.time()
                c.remove_node(victim)
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    (tmp_path / "driver.log").write_text(output)
    assert victim is not None, _why(output)
    assert proc.returncode == 0, _why(output)
    log = _events(events)
    before = [e for e in log if e["t"] < lost_at]
    after = [e for e in log if e["t"] >= lost_at]
    # the trial trained task 2 on the lost node, then started again on the other one, from
    # its end-of-task-1 checkpoint
    assert {e["node"] for e in before if e["event"] == "step"} == {victim.node_id}
    restarts = [e for e in after if e["event"] == "start"]
    assert len(restarts) == 2 and {e["resumed_after_stage"] for e in restarts} == {1}
    assert {e["node"] for e in restarts} == {nodes[1 - nodes.index(victim)].node_id}
    repeated = sorted({e["step"] for e in before if e["event"] == "step"})
    redone = sorted({e["step"] for e in after if e["event"] == "step"})
    assert redone[: len(repeated)] == repeated  # the lost steps ran again, from the checkpoint
    back = min(e["t"] for e in restarts) - lost_at
    first_step = min(e["t"] for e in after if e["event"] == "step") - lost_at
    print(
        f"node lost after {len(repeated)} step(s) of task 2; trial set up again on the other "
        f"node {back:.1f} s later, first step {first_step:.1f} s later; "
        f"{len(repeated)} step(s) repeated"
    )

    for line in (
        "The actor died because its node has died.",  # Ray Train, naming the node
        "[FailurePolicy] RETRY",
        "trial method=tm resumes after task 1 from ",  # the harness, naming the checkpoint
    ):
        assert line in output, line

    # A fresh cluster for the reference, so nothing of the first job (its placement groups,
    # the lost node's clean-up) can touch it.
    c, nodes = new_cluster()

    # The same study, uninterrupted, with its results and checkpoints on S3.
    out, ray_storage = "s3://bucket/gere", "s3://bucket/gere/_ray"
    ref_events = tmp_path / "ref.jsonl"
    ref = _driver(c.address, out, ray_storage, ref_events, 0.0, "--report")
    ref_out, _ = ref.communicate(timeout=900)
    (tmp_path / "ref.log").write_text(ref_out)
    assert ref.returncode == 0, _why(ref_out)
    assert f"report: {out}/_reports/node_loss/report.md" in ref_out
    assert (
        "Checkpoint(filesystem=s3, path=bucket/gere/_ray/train-study=node_loss-trial_id=method=tm/"
        in ref_out
    )
    starts = len(_events(ref_events))
    again = _driver(c.address, out, ray_storage, ref_events, 0.0)
    again_out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, _why(again_out)
    assert "1 trials, 1 already completed" in again_out, _why(again_out)
    assert len(_events(ref_events)) == starts  # read from the bucket: nothing ran again
    got = read_study(tmp_path / "runs" / "study=node_loss")
    want = read_study(f"{out}/study=node_loss")
    for kind in ("accuracy", "general", "curve", "plasticity", "predictions"):
        assert len(got[kind]) == len(want[kind]) > 0, kind
        _same_rows(got, want, kind)  # every row once: the same rows as the uninterrupted run
    summary = got["summary"]
    assert len(summary) == 1 and summary.status.iloc[0] == "completed"
