"""Slices: their identity, grids, sharding over ranks, resume, evaluation and cost."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.config import LandscapeConfig
from harness.core import IGNORE, EvalBatch, device_of, eval_mode, token_nll
from harness.landscape.directions import (
    Coord,
    Normalisation,
    Params,
    PointKey,
    SliceKind,
    Space,
    _write,
    random_direction,
)


@torch.no_grad()
def batch_loss(model: nn.Module, batch: EvalBatch) -> tuple[float, int]:
    """(summed next-token NLL over label tokens, number of label tokens), in eval mode."""
    device = device_of(model)
    with eval_mode(model):
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).logits
    labels = batch.labels.to(device)
    nll = token_nll(logits, labels)
    return float(nll.double().sum()), int((labels[:, 1:] != IGNORE).sum())


def _dataset_loss(model: nn.Module, batches: EvalBatch | Sequence[EvalBatch]) -> tuple[float, int]:
    if isinstance(batches, EvalBatch):
        batches = [batches]
    total, tokens = 0.0, 0
    for b in batches:
        s, n = batch_loss(model, b)
        total, tokens = total + s, tokens + n
    return total, tokens


@dataclass(frozen=True, kw_only=True)
class SliceSpec:
    """The identity of one slice: the columns all of its rows share."""

    name: str
    """Stable slice name, e.g. 'interp:0->1', 'random1d:seed=0', 'random2d:seed=0'."""
    kind: SliceKind
    stage: int
    """The checkpoint the slice is around (an interpolation's later end)."""
    from_stage: int
    to_stage: int
    direction_seed: int | None
    """Seed of the direction(s); None for interpolations."""
    space: Space = "full"
    normalisation: Normalisation = "filter"

    @property
    def dims(self) -> int:
        return 2 if self.kind == "random_2d" else 1

    def row(self, dataset: str, coord: Coord, loss_sum: float, tokens: int) -> dict:
        """One ``landscape`` record."""
        alpha, beta = coord
        return {
            "stage": self.stage,
            "slice": self.name,
            "slice_kind": self.kind,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "alpha": float(alpha),
            "beta": math.nan if beta is None else float(beta),
            "dataset": dataset,
            "loss_sum": float(loss_sum),
            "tokens": int(tokens),
            "loss": loss_sum / tokens if tokens else math.nan,
            "direction_seed": self.direction_seed,
            "space": self.space,
            "normalisation": self.normalisation,
        }


def random_slice(
    stage: int,
    seed: int,
    *,
    dims: int = 1,
    normalisation: Normalisation = "filter",
    space: Space = "full",
) -> SliceSpec:
    """A 1-D or 2-D random-direction slice around checkpoint ``stage``."""
    if dims not in (1, 2):
        raise ValueError(f"dims={dims}: a random slice is 1-D or 2-D")
    return SliceSpec(
        name=f"random{dims}d:seed={seed}",
        kind="random_1d" if dims == 1 else "random_2d",
        stage=stage,
        from_stage=stage,
        to_stage=stage,
        direction_seed=seed,
        space=space,
        normalisation=normalisation,
    )


def interpolation_slice(from_stage: int, to_stage: int, *, space: Space = "full") -> SliceSpec:
    """The straight line from checkpoint ``from_stage`` (alpha 0) to ``to_stage`` (alpha 1)."""
    return SliceSpec(
        name=f"interp:{from_stage}->{to_stage}",
        kind="interpolation",
        stage=to_stage,
        from_stage=from_stage,
        to_stage=to_stage,
        direction_seed=None,
        space=space,
        normalisation="none",
    )


def slice_directions(params: Mapping[str, Tensor], spec: SliceSpec, **kw) -> list[Params]:
    """The 1 or 2 directions of a random slice, regenerated from its seed."""
    if spec.direction_seed is None:
        raise ValueError(f"slice {spec.name!r} has no directions (it is an interpolation)")
    return [
        random_direction(
            params, spec.direction_seed, normalisation=spec.normalisation, axis=a, **kw
        )
        for a in range(spec.dims)
    ]


def slice_points(alphas: Sequence[float], betas: Sequence[float] | None = None) -> list[Coord]:
    """Every point of a slice in a fixed order (alpha-major), for sharding and resume."""
    if betas is None:
        return [(float(a), None) for a in alphas]
    return [(float(a), float(b)) for a in alphas for b in betas]


def point_key(dataset: str, alpha: float, beta: float | None) -> PointKey:
    """Canonical key of a row (NaN beta -> None, so keys compare equal)."""
    if beta is not None and math.isnan(beta):
        beta = None
    return (dataset, float(alpha), None if beta is None else float(beta))


def done_keys(rows: Iterable[Mapping] | object, spec: SliceSpec | None = None) -> set[PointKey]:
    """Keys of the rows already computed (a list of row dicts or a DataFrame), optionally only
    those of slice ``spec`` (same name and stage), to pass as ``done=`` when resuming."""
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")  # a DataFrame
    out = set()
    for r in rows:
        if spec is not None and (r["slice"] != spec.name or int(r["stage"]) != spec.stage):
            continue
        out.add(point_key(r["dataset"], r["alpha"], r["beta"]))
    return out


Batches = Mapping[str, EvalBatch | Sequence[EvalBatch]]
"""Dataset name ('general' or a task) -> its fixed evaluation batch(es)."""


def _evaluate(
    model: nn.Module,
    spec: SliceSpec,
    points: Sequence[Coord],
    batches: Batches,
    done: Iterable[PointKey],
    terms_at,
) -> list[dict]:
    """Rows for every (point, dataset) not in ``done``; weights written once per point."""
    done = set(done)
    rows = []
    for coord in points:
        todo = [d for d in batches if point_key(d, *coord) not in done]
        if not todo:
            continue
        _write(model, terms_at(coord))
        for dataset in todo:
            loss_sum, tokens = _dataset_loss(model, batches[dataset])
            rows.append(spec.row(dataset, coord, loss_sum, tokens))
    return rows


def evaluate_points(
    model: nn.Module,
    spec: SliceSpec,
    base: Mapping[str, Tensor],
    directions: Sequence[Mapping[str, Tensor]],
    points: Sequence[Coord],
    batches: Batches,
    *,
    done: Iterable[PointKey] = (),
) -> list[dict]:
    """Evaluate ``points`` (e.g. one worker's :func:`shard`) of a random slice around ``base``.

    Points whose every dataset is in ``done`` are skipped, and only the missing datasets of a
    point are evaluated. The model holds ``base`` again afterwards.
    """
    if len(directions) != spec.dims:
        raise ValueError(
            f"slice {spec.name!r} needs {spec.dims} direction(s), got {len(directions)}"
        )

    def terms_at(coord: Coord):
        alpha, beta = coord
        if (beta is None) != (spec.dims == 1):
            raise ValueError(f"point {coord} does not fit the {spec.dims}-D slice {spec.name!r}")
        coefs = [alpha] if beta is None else [alpha, beta]
        return [(1.0, base), *zip(coefs, directions, strict=True)]

    try:
        return _evaluate(model, spec, points, batches, done, terms_at)
    finally:
        _write(model, [(1.0, base)])


def interpolation_points(
    theta_a: Mapping[str, Tensor], theta_b: Mapping[str, Tensor], alphas: Sequence[float]
) -> Iterator[tuple[float, Params]]:
    """Yield (alpha, (1-alpha)*theta_A + alpha*theta_B) lazily (float32, then theta_A's dtype).

    At alpha 0 and 1 the weights are theta_A and theta_B exactly.
    """
    for a in alphas:
        w = {}
        for n, ta in theta_a.items():
            acc = None
            for coef, t in ((1.0 - a, ta), (a, theta_b[n])):
                if coef:
                    term = coef * t.float()
                    acc = term if acc is None else acc + term
            w[n] = (acc if acc is not None else torch.zeros_like(ta, dtype=torch.float32)).to(
                ta.dtype
            )
        yield float(a), w


def evaluate_interpolation(
    model: nn.Module,
    theta_a: Mapping[str, Tensor],
    theta_b: Mapping[str, Tensor],
    alphas: Sequence[float],
    batches: Batches,
    *,
    from_stage: int,
    to_stage: int,
    space: Space = "full",
    done: Iterable[PointKey] = (),
) -> list[dict]:
    """Rows of L((1-alpha)*theta_A + alpha*theta_B) for each alpha (pass a subset to shard).

    ``theta_a``/``theta_b`` cover the same names (e.g. :func:`pristine` of two checkpoints, or
    ``lora_merged(...).weights(delta)`` of two LoRA checkpoints). The model is left holding
    ``theta_b`` — usually the weights it held (the newest checkpoint).
    """
    if set(theta_a) != set(theta_b):
        diff = sorted(set(theta_a) ^ set(theta_b))
        raise KeyError(f"checkpoints cover different weights, e.g. {diff[:3]}")
    spec = interpolation_slice(from_stage, to_stage, space=space)

    def terms_at(coord: Coord):
        a = coord[0]
        return [(1.0 - a, theta_a), (a, theta_b)]

    try:
        return _evaluate(model, spec, slice_points(alphas), batches, done, terms_at)
    finally:
        _write(model, [(1.0, theta_b)])


def cost_forward_passes(cfg: LandscapeConfig, n_tasks: int, n_datasets: int | None = None) -> int:
    """Forward passes a trial's landscape costs: points x datasets x batches per dataset.

    ``n_datasets`` defaults to the datasets that exist at each stage ('prev' from stage 2,
    'new' from stage 1). Each pass is one batch of up to ``batch_size`` x ``max_tokens``
    tokens, with no backward pass.
    """

    tasks = [f"task{i}" for i in range(1, n_tasks + 1)]

    def datasets_at(stage: int) -> int:
        return len(cfg.datasets_at(stage, tasks)) if n_datasets is None else n_datasets

    batches = math.ceil(cfg.examples_per_dataset / cfg.batch_size)
    return sum(cfg.points_per_stage(s) * datasets_at(s) * batches for s in cfg.stage_list(n_tasks))
