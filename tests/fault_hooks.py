"""Stage hooks that inject faults into trials, for the resume tests (never used by the library).

They run inside Ray Train workers, which import this module by name: the test puts the
repository on PYTHONPATH so ``tests.fault_hooks`` resolves there.
"""

from __future__ import annotations

import json
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
    """Makes trial ``trial_id`` fail once on every rank, right after the checkpoint of task
    ``stage`` was reported (as if its node had been lost). Put it after the checkpoint hook."""

    def __init__(self, path: str | Path, trial_id: str, stage: int):
        super().__init__(path)
        self.trial_id, self.stage = trial_id, stage

    def setup(self, trial) -> None:
        return None

    def after_task(self, trial, stage: int) -> None:
        if trial.cfg.id != self.trial_id or stage != self.stage:
            return
        lines = Path(self.path).read_text().splitlines() if Path(self.path).exists() else []
        if any(
            json.loads(x)["event"] == "crash" and json.loads(x)["trial_id"] == self.trial_id
            for x in lines
        ):
            return  # fail once only
        self.write(trial, "crash", stage=stage)
        raise RuntimeError(f"injected failure in trial {self.trial_id} after task {stage}")
