"""A study's grid: axes of settings, their product as validated trial configs with readable ids,
and the helpers study scripts build axes with. No Ray and no torch: a grid is expanded and
checked on the driver in milliseconds, before anything runs."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.config import ConfigError, TrialConfig, from_dict, merge
from harness.suggest import did_you_mean

Axis = Sequence[Mapping[str, Any]]
"""One grid axis: a list of settings (dotted keys -> values). Settings that must change
together (a replay method and its buffer size) sit in one dict, so no invalid combination
is ever scheduled."""


def axis(key: str, values: Iterable[Any]) -> Axis:
    """A one-key axis: axis('train.lr_multiplier', [1, 2, 3])."""
    return [{key: v} for v in values]


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)) or "x"  # keeps signs: -2 and 2 differ


def point_id(point: Mapping[str, Any]) -> str:
    """A readable, deterministic trial id from a grid point: 'method=tm,lr_multiplier=2,seed=0'."""
    names = [k.split(".")[-1] for k in point]
    keys = [k.split(".")[-1] if names.count(k.split(".")[-1]) == 1 else k for k in point]
    return ",".join(f"{k}={_slug(v)}" for k, v in zip(keys, point.values(), strict=True)) or "base"


def expand_grid(study: str, base: Mapping[str, Any], grid: Sequence[Axis]) -> list[TrialConfig]:
    """Every grid point merged into ``base``, validated on the driver before anything runs.

    A value of an axis may carry a label: a key starting with '@' is not a setting but names
    that value in the trial id in place of its settings (``{"@regime": "redo",
    "interventions.redo": {}}`` reads ``regime=redo``), for values whose settings make a poor
    id. Raises one ConfigError listing every problem once, with the grid points it affects.
    """
    configs, problems = [], []
    by_problem: dict[str, list[str]] = {}
    n_points = 0
    for combo in itertools.product(*grid) if grid else [()]:
        point: dict[str, Any] = {}
        named: dict[str, Any] = {}
        for setting in combo:
            labels = {k[1:]: v for k, v in setting.items() if k.startswith("@")}
            point.update({k: v for k, v in setting.items() if not k.startswith("@")})
            named.update(labels or setting)
        tid = point_id(named)
        data = merge(dict(base), {**point, "study": study, "trial_id": tid})
        try:
            configs.append(from_dict(data))
        except ConfigError as exc:
            for p in exc.problems:
                by_problem.setdefault(p, []).append(tid)
        n_points += 1
    for p, tids in by_problem.items():  # one line per problem, not one per grid point
        where = (
            f"every grid point ({n_points})"
            if len(tids) == n_points and n_points > 1
            else f"grid point{'s' if len(tids) > 1 else ''} {', '.join(tids)}"
        )
        problems.append(f"{p} [{where}]")
    ids = [c.id for c in configs]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"grid has duplicate points {dupes}; make every axis value distinct")
    if problems:
        raise ConfigError(problems)
    return configs


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` as integers; ConfigError naming the value unless it gives at least one."""
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError([f"--seeds {text!r}: give comma-separated integers, e.g. 0,1,2"])
    return seeds


def method_axis(spec: str) -> list[dict]:
    """``--methods none,tm,tm:dynamic`` as one grid axis ('method:weight' sets replay.weight)."""
    points = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        name, _, weight = item.partition(":")
        points.append({"replay.method": name, **({"replay.weight": weight} if weight else {})})
    return points


def only(points: list[dict], label: str, wanted: str | None, option: str) -> list[dict]:
    """The points of a labelled axis (``{"@baseline": "tm", ...}``) that ``wanted`` names
    (comma-separated; all when empty), in the axis's order; ConfigError naming an unknown one."""
    names = [p[label] for p in points]
    picked = [r.strip() for r in (wanted or "").split(",") if r.strip()]
    unknown = [r for r in picked if r not in names]
    if unknown:
        raise ConfigError(
            [
                f"{option}: {unknown[0]!r} is not a row of the table"
                f"{did_you_mean(unknown[0], names)}; rows: {', '.join(names)}"
            ]
        )
    return [p for p in points if not picked or p[label] in picked]
