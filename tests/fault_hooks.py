"""Stage hooks that inject faults into trials, for the resume tests (never used by the library).

They run inside Ray Train workers, which import this module by name: the test puts the
repository on PYTHONPATH so ``tests.fault_hooks`` resolves there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.hooks import Hook


class EventLog(Hook):
    """Appends one JSON line per worker start (with the stage it resumed after) to ``path``."""

    def __init__(self, path: str | Path):
        self.path = str(path)

    def setup(self, trial) -> None:
        after = trial.state.finished_stage if trial.resumed else 0
        self.write(trial, "start", resumed_after_stage=after)

    def write(self, trial, event: str, **fields) -> None:
        line = {"trial_id": trial.cfg.id, "rank": trial.backend.rank, "event": event, **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


class CrashOnce(EventLog):
    """Kills the worker processes of trial ``trial_id`` once, at the first optimiser step of
    the task after ``stage`` (as if its node had been lost inside that task).

    It first waits a few seconds: Ray Train registers a reported checkpoint only when its
    controller consumes the report (it polls the workers every 2 s), so a worker that dies
    right after ``ray.train.report`` can lose that checkpoint and resume from the one before.
    """

    def __init__(self, path: str | Path, trial_id: str, stage: int, wait_s: float = 6.0):
        super().__init__(path)
        self.trial_id, self.stage, self.wait_s = trial_id, stage, wait_s

    def setup(self, trial) -> None:
        return None

    def after_step(self, trial, stage: int, step: int) -> None:
        if trial.cfg.id != self.trial_id or stage != self.stage + 1:
            return
        lines = Path(self.path).read_text().splitlines() if Path(self.path).exists() else []
        mine = (self.trial_id, trial.backend.rank)
        if any(
            json.loads(x)["event"] == "crash"
            and (json.loads(x)["trial_id"], json.loads(x)["rank"]) == mine
            for x in lines
        ):
            return  # every rank dies once only
        self.write(trial, "crash", stage=stage, step=step)
        time.sleep(self.wait_s)
        os._exit(1)  # the worker process dies, as on a lost node: Ray Train restarts the run


class FailAt(EventLog):
    """Raises (a bug that would fail the same way every time) in trial ``trial_id`` after task
    ``stage``, logging a 'fail' event each time."""

    def __init__(self, path: str | Path, trial_id: str, stage: int):
        super().__init__(path)
        self.trial_id, self.stage = trial_id, stage

    def setup(self, trial) -> None:
        return None  # only EventLog itself logs starts

    def after_task(self, trial, stage: int) -> None:
        if trial.cfg.id == self.trial_id and stage == self.stage:
            self.write(trial, "fail", stage=stage)
            raise ValueError(f"injected bug in trial {self.trial_id} after task {stage}")


class HangOnRank(EventLog):
    """Makes rank ``rank`` of trial ``trial_id`` sleep ``seconds`` after task ``stage``, so the
    other ranks wait in their next collective until the process group's timeout fails them."""

    def __init__(self, path: str | Path, trial_id: str, stage: int, rank: int, seconds: float):
        super().__init__(path)
        self.trial_id, self.stage, self.rank, self.seconds = trial_id, stage, rank, seconds

    def setup(self, trial) -> None:
        return None

    def after_task(self, trial, stage: int) -> None:
        hit = (trial.cfg.id, stage, trial.backend.rank) == (self.trial_id, self.stage, self.rank)
        if hit:
            self.write(trial, "hang", stage=stage, seconds=self.seconds)
            time.sleep(self.seconds)


class DieBefore(Hook):
    """Kills the process (``kill -9``-like: no clean-up runs) before task ``stage`` starts,
    i.e. after task ``stage - 1`` was scored, flushed and checkpointed."""

    def __init__(self, stage: int):
        self.stage = stage

    def before_task(self, trial, stage: int) -> None:
        if stage == self.stage:
            os._exit(9)


class SummaryAtStart(Hook):
    """Records the stored summary's status when the first evaluation starts (a re-run must
    have replaced 'completed' by then)."""

    def __init__(self):
        self.seen: list[str] = []

    def before_first_task(self, trial) -> None:
        rows = trial.read_stored("summary")
        self.seen.append(rows[0]["status"] if rows else "none")


class WhereAndWhen(EventLog):
    """Logs every worker start and every optimiser step of task ``stage`` with the Ray node it
    runs on, the process and the time, and sleeps ``pause_s`` after each of those steps, so a
    test can take the node away while the task is running (tests/clusters/test_cluster.py)."""

    def __init__(self, path: str | Path, stage: int, pause_s: float):
        super().__init__(path)
        self.stage, self.pause_s = stage, pause_s

    def write(self, trial, event: str, **fields) -> None:
        import ray

        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        super().write(trial, event, node=node, pid=os.getpid(), t=time.time(), **fields)

    def after_step(self, trial, stage: int, step: int) -> None:
        if stage == self.stage:
            self.write(trial, "step", stage=stage, step=step)
            time.sleep(self.pause_s)
