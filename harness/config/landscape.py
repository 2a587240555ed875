"""The landscape section of a trial config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from harness.config.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class LandscapeConfig:
    """Which loss-landscape slices a trial records, where, and on how much data."""

    enabled: bool = False
    """Record loss-landscape slices (Parquet kind 'landscape') at the stages below. Each
    slice's points are sharded over the trial's workers. Needs scale.zero_stage <= 2 (every
    rank holds whole weights) and its cost is reported by harness.landscape.cost_forward_passes."""
    interpolation: bool = True
    """Interpolate between each recorded checkpoint and the one before it."""
    interpolation_points: int = 21
    """Alphas on the interpolation line (evenly spaced over interpolation_range)."""
    interpolation_range: tuple[float, float] = (-0.5, 1.5)
    """First and last alpha (0 and 1 are the two checkpoints)."""
    random_1d_points: int = 21
    """Points per 1-D random slice (0 = none); Li et al. use 21-51."""
    random_2d_resolution: int = 0
    """Points per axis of a 2-D random slice (0 = none; 11-51 is usual); cost grows as its
    square."""
    span: float = 0.5
    """Random slices cover [-span, span] along each direction: 0.5 is LLM practice, 1.0 is
    Li et al.'s."""
    stages: str = "last"
    """Checkpoints to slice: 'all' (every end-of-task checkpoint 1..T), 'last' (T), or a
    comma-separated list of stages ('0' = the starting model; interpolations need >= 1)."""
    datasets: tuple[str, ...] = ("prev", "new", "general")
    """Data each point is scored on: 'prev' = the task before the checkpoint's, 'new' = the
    checkpoint's own task, 'general' = general text, or explicit task names."""
    examples_per_dataset: int = 16
    """Evaluation examples per dataset (a fixed, seeded sample reused at every point)."""
    batch_size: int = 8
    """Examples per forward pass; batches per dataset = ceil(examples / batch_size)."""
    max_tokens: int = 256
    """Each evaluation example is cut to this many tokens."""
    seeds: tuple[int, ...] = (0,)
    """Direction seeds: one 1-D and/or one 2-D slice per seed and stage."""
    normalisation: Literal["filter", "layer", "none"] = "filter"
    """Direction scaling: 'filter' (per weight row), 'layer' (per tensor) or 'none'."""

    def problems(self) -> list[str]:
        """Every rule this config breaks (empty when valid); each names the value and fix."""
        p = []
        for name in ("interpolation_points", "random_1d_points", "random_2d_resolution"):
            v = getattr(self, name)
            if v < 0 or v == 1:
                p.append(f"landscape.{name}: {v} must be 0 (off) or >= 2")
        for name in ("random_1d_points", "random_2d_resolution"):
            v = getattr(self, name)
            if v >= 2 and v % 2 == 0:
                p.append(
                    f"landscape.{name}: {v} is even, so the trained weights (0) are not a grid "
                    f"point; use {v + 1}"
                )
        if self.interpolation and self.interpolation_points < 2:
            p.append("landscape.interpolation_points: need >= 2 when interpolation is on")
        lo, hi = self.interpolation_range
        if not lo <= 0.0 < 1.0 <= hi:
            p.append(
                f"landscape.interpolation_range: {self.interpolation_range} must contain [0, 1] "
                "(the two checkpoints) for the barrier"
            )
        elif self.interpolation and self.interpolation_points >= 2:
            alphas = self.alphas()
            if 0.0 not in alphas or 1.0 not in alphas:
                fits = [n for n in range(3, 52) if {0.0, 1.0} <= set(grid_points(lo, hi, n))]
                p.append(
                    f"landscape.interpolation_points: {self.interpolation_points} points over "
                    f"{self.interpolation_range} miss alpha 0 or 1 (the checkpoints, needed for "
                    f"the barrier); use one of {fits[:6]}"
                )
        if self.span <= 0:
            p.append(f"landscape.span: {self.span} must be > 0")
        for name in ("examples_per_dataset", "batch_size", "max_tokens"):
            if getattr(self, name) <= 0:
                p.append(f"landscape.{name}: {getattr(self, name)} must be > 0")
        if not self.datasets:
            p.append("landscape.datasets: empty; use e.g. ('prev', 'new', 'general')")
        if (self.random_1d_points or self.random_2d_resolution) and not self.seeds:
            p.append("landscape.seeds: empty but random slices are on; give e.g. (0,)")
        if self.stages not in ("all", "last"):
            try:
                [int(s) for s in self.stages.split(",") if s.strip()]
            except ValueError:
                p.append(f"landscape.stages: {self.stages!r} is not 'all', 'last' or e.g. '1,3'")
        return p

    def check(self) -> LandscapeConfig:
        """Raise ConfigError listing every problem; return self when valid."""
        if problems := self.problems():
            raise ConfigError(problems)
        return self

    def stage_list(self, n_tasks: int) -> list[int]:
        """The checkpoints to slice in a stream of ``n_tasks`` tasks."""
        self.check()
        if self.stages == "all":
            return list(range(1, n_tasks + 1))
        if self.stages == "last":
            return [n_tasks]
        stages = sorted({int(s) for s in self.stages.split(",") if s.strip()})
        bad = [s for s in stages if not 0 <= s <= n_tasks]
        if bad:
            raise ConfigError([f"landscape.stages: {bad} outside 0..{n_tasks} ({n_tasks} tasks)"])
        return stages

    def datasets_at(self, stage: int, tasks: Sequence[str]) -> list[str]:
        """The data scored at checkpoint ``stage`` of a stream of ``tasks``: 'prev' and 'new'
        resolve to the tasks before and at it, and are left out where there is none."""
        out = []
        for d in self.datasets:
            if d == "new":
                out += [tasks[stage - 1]] if stage >= 1 else []
            elif d == "prev":
                out += [tasks[stage - 2]] if stage >= 2 else []
            else:
                out.append(d)
        return out

    def alphas(self) -> list[float]:
        """The interpolation coefficients."""
        return grid_points(*self.interpolation_range, self.interpolation_points)

    def axis(self, n: int) -> list[float]:
        """``n`` coordinates along one random direction."""
        return grid_points(-self.span, self.span, n)

    def points_per_stage(self, stage: int) -> int:
        """Grid points sliced at one checkpoint (all slices, all seeds)."""
        n = len(self.seeds) * (self.random_1d_points + self.random_2d_resolution**2)
        if self.interpolation and stage >= 1:
            n += self.interpolation_points
        return n


def grid_points(lo: float, hi: float, n: int) -> list[float]:
    """``n`` evenly spaced values from ``lo`` to ``hi``, rounded to 10 decimals so that grid
    points such as 0 and 1 are exact and work as stable keys."""
    import numpy as np

    return [float(x) for x in np.round(np.linspace(lo, hi, n), 10)]
