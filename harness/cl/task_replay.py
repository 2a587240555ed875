"""Task replay (experience replay, e.g. Chaudhry et al. 2019, "On tiny episodic memories in
continual learning"): keep a small buffer of earlier tasks' training examples and train on it
together with each new task.

After task k is trained, examples of task k enter the buffer:

* ``policy='quota'``: ``size`` examples of every finished task (a seeded sample), so the buffer
  grows by ``size`` per task;
* ``policy='reservoir'``: one buffer of ``size`` examples over every finished task's examples
  (reservoir sampling, Vitter's algorithm R, over the stream of examples in task order), so
  every example seen so far is in it with the same probability.

Training task k+1 then uses its own examples plus the buffer's, shuffled together (the buffer's
rows count as task rows: their CE joins the task CE); an epoch covers both. Only finished
tasks' examples are ever in the buffer. It composes with general replay (``replay.method``) and
runs under every ZeRO stage (it only adds rows).

A stated choice: this is data-mixing rehearsal, so a task's steps grow with the buffer (an
epoch covers task and buffer rows). Chaudhry et al.'s experience replay (ER) instead draws a
fixed-size buffer batch beside every task batch, keeping the steps per task fixed; compare
the two only at equal steps.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from harness.cl.base import CLMethod


class TaskReplay(CLMethod):
    name: ClassVar[str] = "task_replay"
    counters: ClassVar[tuple[str, ...]] = ("buffered",)

    def __init__(self, **settings) -> None:
        super().__init__(**settings)  # :class:`harness.config.cl_methods.TaskReplaySettings`
        self.buffer: list[tuple[int, int]] = []
        """(task position, example index) of every buffered example."""
        self.seen = 0
        """Examples offered to the reservoir so far."""

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    def extra_examples(self, trial, stage: int) -> list:
        return [trial.inputs.tasks[pos - 1].train[i] for pos, i in self.buffer]

    def after_task(self, trial, stage: int) -> None:
        for pos in trial.stages[stage - 1]:
            self.add_task(pos, len(trial.inputs.tasks[pos - 1].train), trial.cfg.seed)
        super().after_task(trial, stage)

    def add_task(self, pos: int, n: int, seed: int) -> None:
        """Offer the ``n`` training examples of the task at position ``pos`` to the buffer."""
        rng = np.random.default_rng([seed, pos, 7])
        if self.policy == "quota":
            pick = sorted(rng.choice(n, size=min(self.size, n), replace=False).tolist())
            self.buffer += [(pos, i) for i in pick]
            return
        for i in range(n):  # algorithm R
            if len(self.buffer) < self.size:
                self.buffer.append((pos, i))
            else:
                j = int(rng.integers(0, self.seen + 1))
                if j < self.size:
                    self.buffer[j] = (pos, i)
            self.seen += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.buffer:
            return {}
        return {
            "buffer": torch.tensor(self.buffer, dtype=torch.long),
            "seen": torch.tensor([self.seen], dtype=torch.long),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.buffer = [(int(p), int(i)) for p, i in state["buffer"].tolist()]
        self.seen = int(state["seen"][0])
