"""Stage hooks: what runs around a trial's training, each owning its own setup and records.

A trial (:class:`harness.trial.Trial`) calls every hook at the same points, in the order the
hooks were given:

    setup(trial)                   once, after the model, backend and inputs exist (resumed
                                   trials too: ``trial.state.finished_stage`` says where it is)
    before_first_task(trial)       stage 0 of a fresh trial (the starting model)
    before_task(trial, stage)      before training task ``stage`` (1-based)
    after_step(trial, stage, step) after every optimiser step (``step``: the global step)
    loss_term(trial, stage, batch) inside every micro-batch, after its forward: an extra term
                                   added to the loss, or None (the default); ``batch`` is a
                                   :class:`harness.train.Batch` (ids, mask, labels, logits)

Two optional methods change what is trained (a hook without them changes nothing):

    plan_stages(trial, n_tasks)    the task positions trained at each stage, e.g. [(1, .., T)]
                                   for multitask; None: one task per stage (the first hook
                                   with a plan decides)
    extra_examples(trial, stage)   more training rows for this stage (task replay's buffer)
    after_task(trial, stage)       after task ``stage`` was trained
    at_end(trial, status)          once, when the trial ends ('completed', 'diverged', 'failed')

Optional attributes change how the trial treats a hook:

    reads_previous_model = True    its before_task runs before every other hook's, so it sees
                                   the model exactly as the previous task left it (LwF's
                                   teacher), whatever the order the config gave the hooks in
    per_element_step = True        the trial trains with Adam's step count per element
                                   (harness.adam; continual backprop restarts it for the units
                                   it replaces); read once, when the backend is built
    changes_the_start = True       its setup or before_first_task changes the model before
                                   the starting model is evaluated: the trial's stage-0 rows
                                   are then not shared with trials without it
                                   (harness.shared; no shipped hook does)

A hook with state of its own that a resumed trial needs (running statistics, counters) returns
it from ``state_dict()`` as named tensors; the trial's end-of-task checkpoint saves it
(safetensors) and a resumed trial hands it back to ``load_state_dict`` after ``setup``.

A hook contributes rows by appending them to ``trial.state.rows[kind]`` for each record kind it
names in ``kinds`` (``results.schema``); the trial writes those kinds' files after every stage
and keeps the rows in its checkpoints. ``trial.flush()`` writes them at once (a hook that works
for long, such as the landscape, calls it as it goes). Every rank calls every hook; only the
main rank (``trial.backend.is_main``) writes files. A hook that is off for this trial sets
``kinds = ()`` in ``setup``.

Subclass :class:`Hook` to inherit no-op methods and override only what you need:

    class CountSteps(Hook):
        def setup(self, trial):
            self.steps = 0
        def after_step(self, trial, stage, step):
            self.steps += 1
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from harness.registry import Configured

if TYPE_CHECKING:
    from torch import Tensor

    from harness.train import Batch
    from harness.trial import Trial


class Hook(Protocol):
    """One stage hook (see the module docstring); every method has a no-op default."""

    kinds: tuple[str, ...] = ()
    """Record kinds this hook adds rows to."""

    changes_the_start: bool = False
    """Whether setup changes the model before the starting model is evaluated."""

    def setup(self, trial: Trial) -> None:
        return None

    def before_first_task(self, trial: Trial) -> None:
        return None

    def before_task(self, trial: Trial, stage: int) -> None:
        return None

    def after_step(self, trial: Trial, stage: int, step: int) -> None:
        return None

    def after_log(self, trial: Trial, stage: int, row: dict) -> None:
        """A training-curve row was recorded (every ``train.log_every`` steps; the same steps
        on every rank): its step, loss terms, lr, grad norm (the ``curve`` record kind)."""
        return None

    def loss_term(self, trial: Trial, stage: int, batch: Batch) -> Tensor | None:
        return None

    def after_task(self, trial: Trial, stage: int) -> None:
        return None

    def at_end(self, trial: Trial, status: str) -> None:
        return None

    def state_dict(self) -> dict[str, Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        return None


class MethodHook(Configured, Hook):
    """What a plasticity intervention and a cl method share: a stage hook built from its
    registered settings (:class:`harness.registry.Configured`), with seeded randomness and
    counters of what it did, logged after every task. Its rules on a trial live with its
    registry entry (:class:`harness.config.interventions.HookEntry`), so the config checks
    them without importing it."""

    counters: tuple[str, ...] = ()
    """Attributes counting what the method did (logged after every task)."""

    @staticmethod
    def generator(seed: int, *keys: int):
        """A CPU ``torch.Generator`` for this trial seed and these keys (stage, step, ...)."""
        import numpy as np
        import torch

        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0]))
        return g

    def after_task(self, trial: Trial, stage: int) -> None:
        if trial.backend.is_main and self.counters:
            done = ", ".join(f"{c} {getattr(self, c)}" for c in self.counters)
            logging.getLogger("harness.interventions").info(
                "%s after task %d: %s (so far)", self.name, stage, done
            )
