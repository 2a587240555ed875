"""Multitask: the upper bound every continual-learning row is read against -- one training run
on the union of all the tasks, instead of one task after another.

The trial has a single training stage: every task's training examples shuffled together, with
the same settings as a sequential run. Budget: the same ``train.epochs`` over the union, which
is the same number of optimiser steps as training the tasks one by one (up to rounding per
task), and ``train.max_steps_per_task`` is multiplied by the number of tasks. Every task is
scored before (stage 0) and after (stage 1) that run, so its accuracy records hold two stages;
the summary's ``n_stages`` is 1 and only ``ap`` (the mean final accuracy) is computed -- BWT,
FWT and forgetting have no meaning without an order. The analysis reads every other method's
AP against it (``results.presentation.baselines.baselines_table``: the gap to multitask).
"""

from __future__ import annotations

from typing import ClassVar

from harness.cl.base import CLMethod


class Multitask(CLMethod):
    name: ClassVar[str] = "multitask"

    def plan_stages(self, trial, n_tasks: int) -> list[tuple[int, ...]]:
        return [tuple(range(1, n_tasks + 1))]
