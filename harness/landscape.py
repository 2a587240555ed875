"""Loss-landscape slices: random-direction slices and interpolations between checkpoints.

Pure PyTorch, no Ray: the Ray layer shards a slice's points over workers by calling
:func:`evaluate_points` on disjoint :func:`shard` s of :func:`slice_points`, and the rows of the
shards, concatenated in shard order, equal a serial run's rows exactly.

Definitions (docs: /work/shared/notes/methods.md, "Optimisation-landscape slices"):

* **Random slices** (Li et al. 2018): ``L(theta + alpha*d1 [+ beta*d2])`` with Gaussian
  directions. ``filter`` normalisation rescales each row of each >=2-D weight (one output unit of
  a Linear, one token vector of an embedding) to the norm of the same row of theta; ``layer``
  rescales each tensor to the tensor's norm; ``none`` keeps N(0, 1) entries. 1-D tensors (norm
  weights, biases) get a zero direction in every mode, so all modes move the same weights.
* **Interpolation** (Goodfellow et al. 2015): ``L((1-alpha)*theta_A + alpha*theta_B)`` between
  consecutive checkpoints, alpha in [-0.5, 1.5]; :func:`barrier` is the largest excess over the
  straight line between the end points.

Cost control: one fixed evaluation batch per dataset for every point; directions are
regenerated from seeds (a seed per parameter name, so any process and any dict order gives the
same tensor), never stored; every point's weights are rebuilt from a pristine copy in float32
and cast once (never stepped in place: bf16 cannot resolve steps below ~1e-2 and accumulated
steps drift), so points can be evaluated in any order, on any worker, with identical results.

LoRA: in ``space="lora_merged"`` the coordinates are the adapted weights with the adapter
merged, ``W0 + delta_W`` with ``delta_W = B @ A * scale`` (:func:`merged_lora_params`);
:func:`lora_merged` evaluates such points on the PEFT model itself (adapters disabled, merged
weights written into the frozen base layers, W0 restored on exit). Interpolating two LoRA
checkpoints interpolates their merged ``delta_W``.

Every function returns rows of the ``landscape`` record kind (``results.schema``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from harness.config import LandscapeConfig, grid_points
from harness.train import IGNORE, TokenizedExample, collate, token_nll

SliceKind = Literal["interpolation", "random_1d", "random_2d"]
Space = Literal["full", "lora_merged"]
Normalisation = Literal["filter", "layer", "none"]

Params = dict[str, Tensor]
"""Parameter name (as in ``model.named_parameters()``) -> tensor."""
Coord = tuple[float, float | None]
"""A point of a slice: (alpha, beta); beta is None on 1-D slices and interpolations."""
PointKey = tuple[str, float, float | None]
"""(dataset, alpha, beta) — identifies one row of a slice (beta None on 1-D slices)."""


# --------------------------------------------------------------------------------------------
# Evaluation batches and losses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalBatch:
    """A fixed evaluation batch: right-padded ids, mask, labels (-100 where no loss)."""

    input_ids: Tensor
    attention_mask: Tensor
    labels: Tensor

    @classmethod
    def from_examples(
        cls, rows: Sequence[TokenizedExample], pad_id: int, *, max_tokens: int | None = None
    ) -> EvalBatch:
        """Collate examples (each cut to ``max_tokens``); prompt tokens carry no loss."""
        if max_tokens is not None:
            rows = [
                TokenizedExample(ids=r.ids[:max_tokens], n_prompt=min(r.n_prompt, max_tokens))
                for r in rows
            ]
        return cls(*collate(rows, pad_id))

    @property
    def tokens(self) -> int:
        """Predicted (label) tokens: what ``batch_loss`` sums over."""
        return int((self.labels[:, 1:] != IGNORE).sum())


def eval_batches(
    examples: Sequence[TokenizedExample],
    pad_id: int,
    *,
    batch_size: int,
    max_examples: int | None = None,
    max_tokens: int | None = None,
) -> list[EvalBatch]:
    """The first ``max_examples`` examples (pass a fixed, seeded sample) in batches."""
    examples = list(examples[:max_examples] if max_examples is not None else examples)
    return [
        EvalBatch.from_examples(examples[i : i + batch_size], pad_id, max_tokens=max_tokens)
        for i in range(0, len(examples), batch_size)
    ]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def batch_loss(model: nn.Module, batch: EvalBatch) -> tuple[float, int]:
    """(summed next-token NLL over label tokens, number of label tokens), in eval mode."""
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        logits = model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).logits
    finally:
        model.train(was_training)
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


# --------------------------------------------------------------------------------------------
# Weights: pristine copies, directions, points
# --------------------------------------------------------------------------------------------


def pristine(model: nn.Module, *, names: Iterable[str] | None = None) -> Params:
    """A detached copy of the model's parameters (all, or ``names``): a slice's origin."""
    params = dict(model.named_parameters())
    keep = params if names is None else {n: params[n] for n in names}
    return {n: p.detach().clone() for n, p in keep.items()}


def _name_seed(name: str, seed: int, axis: int) -> int:
    """A 63-bit generator seed from (seed, axis, parameter name): stable across processes."""
    digest = hashlib.sha256(f"{seed}|{axis}|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def random_direction(
    params: Mapping[str, Tensor],
    seed: int,
    *,
    normalisation: Normalisation = "filter",
    axis: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """A Gaussian direction shaped like ``params``, regenerated exactly from ``seed``.

    Each tensor is drawn on the CPU from its own generator seeded by (seed, axis, name), so
    the result does not depend on dict order, device or process. ``axis`` tells apart the two
    directions of a 2-D slice made from one seed. Scaling: see the module docstring; 1-D
    tensors are always zero. ``dtype``: storage type (bfloat16 halves memory on 8B models).
    """
    if normalisation not in ("filter", "layer", "none"):
        raise ValueError(f"normalisation {normalisation!r} is not one of 'filter', 'layer', 'none'")
    out: Params = {}
    for name, theta in params.items():
        if theta.dim() < 2:
            out[name] = torch.zeros(theta.shape, dtype=dtype, device=theta.device)
            continue
        gen = torch.Generator(device="cpu").manual_seed(_name_seed(name, seed, axis))
        d = torch.randn(theta.shape, generator=gen, dtype=torch.float32)
        ref = theta.detach().to("cpu", torch.float32)
        if normalisation == "filter":
            rows_d, rows_t = d.reshape(d.shape[0], -1), ref.reshape(ref.shape[0], -1)
            scale = rows_t.norm(dim=1) / rows_d.norm(dim=1).clamp_min(1e-30)
            d = (rows_d * scale[:, None]).reshape(theta.shape)
        elif normalisation == "layer":
            d = d * (ref.norm() / d.norm().clamp_min(1e-30))
        out[name] = d.to(theta.device, dtype)
    return out


def _write(model: nn.Module, terms: Sequence[tuple[float, Mapping[str, Tensor]]]) -> None:
    """Set each named parameter to sum(coef * tensor) over ``terms``, computed in float32.

    The first term names the parameters written; later terms may cover a subset (a direction
    without an entry adds nothing there). Coefficients of 0 are skipped, so the origin of a
    slice is the base weights bit for bit.
    """
    params = dict(model.named_parameters())
    first = terms[0][1]
    missing = [n for n in first if n not in params]
    if missing:
        raise KeyError(
            f"{len(missing)} weight name(s) not in the model, e.g. {missing[:3]}; build the "
            "base with pristine(model) (or lora_merged(...).weights() for a PEFT model)"
        )
    with torch.no_grad():
        for name in first:
            p = params[name]
            if any(name in tensors and tensors[name] is p for _, tensors in terms):
                raise ValueError(
                    f"{name}: the weights to write are the model's own parameters; pass a copy "
                    "(pristine(model)), or the first write would change them"
                )
            acc = None
            for coef, tensors in terms:
                if coef == 0 or name not in tensors:
                    continue
                t = tensors[name].to(p.device, torch.float32)  # may alias; never modified
                term = t if coef == 1 else coef * t
                acc = term if acc is None else acc + term
            p.copy_(acc.to(p.dtype) if acc is not None else torch.zeros_like(p))


@contextlib.contextmanager
def with_offset(
    model: nn.Module,
    base: Mapping[str, Tensor],
    offsets: Sequence[tuple[float, Mapping[str, Tensor]]],
) -> Iterator[nn.Module]:
    """Temporarily set the model's weights to ``base + sum(coef * d)``; restore ``base`` after.

    Each point is rebuilt from ``base`` (never stepped from the previous point), so points may
    be evaluated in any order with identical losses. Parameters not in ``base`` are untouched.
    """
    try:
        _write(model, [(1.0, base), *offsets])
        yield model
    finally:
        _write(model, [(1.0, base)])


# --------------------------------------------------------------------------------------------
# Slices: identity, grids, sharding, resume
# --------------------------------------------------------------------------------------------


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


def axis_grid(span: float, n: int) -> list[float]:
    """``n`` evenly spaced coordinates in [-span, span], rounded to 10 decimals (stable keys)."""
    return grid_points(-span, span, n)


def default_alphas(lo: float = -0.5, hi: float = 1.5, n: int = 21) -> list[float]:
    """Interpolation coefficients; rounded so 0 and 1 are exact when they are grid points."""
    return grid_points(lo, hi, n)


def slice_points(alphas: Sequence[float], betas: Sequence[float] | None = None) -> list[Coord]:
    """Every point of a slice in a fixed order (alpha-major), for sharding and resume."""
    if betas is None:
        return [(float(a), None) for a in alphas]
    return [(float(a), float(b)) for a in alphas for b in betas]


def shard(points: Sequence[Coord], n_shards: int, index: int) -> list[Coord]:
    """Contiguous share ``index`` of ``n_shards``: concatenating all shards gives ``points``."""
    if not 0 <= index < n_shards:
        raise ValueError(f"shard index {index} must be in [0, {n_shards})")
    bounds = np.linspace(0, len(points), n_shards + 1).round().astype(int)
    return list(points[bounds[index] : bounds[index + 1]])


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


def evaluate_slice(
    model: nn.Module,
    spec: SliceSpec,
    base: Mapping[str, Tensor],
    directions: Sequence[Mapping[str, Tensor]],
    batches: Batches,
    *,
    alphas: Sequence[float],
    betas: Sequence[float] | None = None,
    done: Iterable[PointKey] = (),
) -> list[dict]:
    """A whole random slice (grid ``alphas`` [x ``betas``]), computing only what ``done`` lacks."""
    return evaluate_points(
        model, spec, base, directions, slice_points(alphas, betas), batches, done=done
    )


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


def barrier(alphas: Sequence[float], losses: Sequence[float]) -> float:
    """Loss barrier: max over 0 <= alpha <= 1 of L(alpha) - ((1-alpha)L(0) + alpha L(1)).

    The signed maximum, not clipped: the excess is 0 at both end points (which must be among
    ``alphas``), so the value is >= 0, and exactly 0 when the path never rises above the
    straight line between the checkpoints (it may dip below it: a convex path). Points outside
    [0, 1] are ignored. Same definition as ``results.analysis.interpolation_summary``.
    """
    a = np.asarray(alphas, dtype=float)
    loss = np.asarray(losses, dtype=float)
    at0, at1 = np.flatnonzero(a == 0.0), np.flatnonzero(a == 1.0)
    if not len(at0) or not len(at1):
        raise ValueError("barrier needs the losses at alpha = 0 and alpha = 1; include both")
    l0, l1 = loss[at0[0]], loss[at1[0]]
    inside = (a >= 0.0) & (a <= 1.0)
    return float(np.max(loss[inside] - ((1 - a[inside]) * l0 + a[inside] * l1)))


def barriers(rows: Iterable[Mapping]) -> dict[tuple[str, str], float]:
    """:func:`barrier` per (slice, dataset) of interpolation rows (pooled over shards)."""
    pooled: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in rows:
        if r["slice_kind"] != "interpolation":
            continue
        acc = pooled.setdefault((r["slice"], r["dataset"]), {}).setdefault(r["alpha"], [0.0, 0])
        acc[0] += r["loss_sum"]
        acc[1] += r["tokens"]
    return {
        key: barrier(list(pts), [s / n if n else math.nan for s, n in pts.values()])
        for key, pts in pooled.items()
    }


# --------------------------------------------------------------------------------------------
# LoRA: the merged-update space
# --------------------------------------------------------------------------------------------


def _lora_modules(peft_model: nn.Module) -> dict[str, nn.Module]:
    """Base-layer weight name (in ``peft_model.named_parameters()``) -> its LoRA Linear."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, m in peft_model.named_modules():
        if not isinstance(m, LoraLayer):
            continue
        if not isinstance(m, LoraLinear):
            raise NotImplementedError(f"{name}: only LoRA on Linear layers is supported")
        if m.merged:
            raise ValueError(f"{name}: adapter is merged; call unmerge_adapter() first")
        if any(a in m.lora_variant for a in m.active_adapters):
            raise NotImplementedError(f"{name}: LoRA variants (e.g. DoRA) are not supported")
        out[f"{name}.base_layer.weight"] = m
    if not out:
        raise ValueError("no LoRA layers found; use space='full' for a plain model")
    return out


@torch.no_grad()
def merged_lora_params(peft_model: nn.Module) -> Params:
    """delta_W = B @ A * scale (float32, summed over active adapters) per adapted weight.

    Keys are the frozen base weights' names in ``peft_model.named_parameters()``
    (``...q_proj.base_layer.weight``), so ``W0 + delta_W`` can be written straight into them.
    """
    out = {}
    for name, m in _lora_modules(peft_model).items():
        delta = None
        for adapter in m.active_adapters:
            if adapter in m.lora_A:
                d = m.get_delta_weight(adapter).float()
                delta = d if delta is None else delta + d
        out[name] = (
            delta
            if delta is not None
            else torch.zeros_like(m.get_base_layer().weight, dtype=torch.float32)
        )
    return out


@dataclass
class MergedLora:
    """A PEFT model viewed in its merged space (see :func:`lora_merged`)."""

    model: nn.Module
    """The PEFT model; adapters are disabled while the view is open."""
    w0: Params
    """The frozen base weights of the adapted layers (copies)."""
    delta: Params
    """The adapter's merged update at the time the view was opened."""

    def weights(self, delta: Mapping[str, Tensor] | None = None) -> Params:
        """W0 + delta_W (float32): the origin of a slice, or an interpolation end point."""
        delta = self.delta if delta is None else delta
        return {n: w.float() + delta[n].to(w.device, torch.float32) for n, w in self.w0.items()}


@contextlib.contextmanager
def lora_merged(peft_model: nn.Module) -> Iterator[MergedLora]:
    """Evaluate a PEFT model's merged space in place, without copying the model.

    Inside the block the adapters are disabled, so the model computes with its base layers;
    write ``W0 + delta_W + offsets`` into them with :func:`evaluate_points` /
    :func:`evaluate_interpolation` using ``view.weights()`` as base. On exit W0 is restored
    and the adapters re-enabled. At the origin the loss equals the PEFT model's up to float
    rounding (merged vs. separate matmuls); in bf16 the merge loses updates below W0's
    resolution, so run LoRA landscapes in float32 where that matters.
    """
    modules = _lora_modules(peft_model)
    params = dict(peft_model.named_parameters())
    w0 = {n: params[n].detach().clone() for n in modules}
    view = MergedLora(model=peft_model, w0=w0, delta=merged_lora_params(peft_model))
    try:
        with peft_model.disable_adapter():
            yield view
    finally:
        _write(peft_model, [(1.0, w0)])


# --------------------------------------------------------------------------------------------
# Settings and cost
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Recording a checkpoint's slices inside a trial (sharded over ranks, resumable)
# --------------------------------------------------------------------------------------------

ROUND = 4
"""Points per rank between two gathers: the granularity at which progress is saved."""


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config")


def stage_specs(
    cfg: LandscapeConfig, stage: int, *, space: Space, interpolate: bool
) -> list[SliceSpec]:
    """The slices ``cfg`` records around checkpoint ``stage`` (interpolation from stage-1 when
    ``interpolate``, then per seed the 1-D and the 2-D random slice)."""
    specs = []
    if cfg.interpolation and interpolate and stage >= 1:
        specs.append(interpolation_slice(stage - 1, stage, space=space))
    for seed in cfg.seeds:
        for dims, n in ((1, cfg.random_1d_points), (2, cfg.random_2d_resolution)):
            if n:
                specs.append(
                    random_slice(
                        stage, seed, dims=dims, normalisation=cfg.normalisation, space=space
                    )
                )
    return specs


def previous_weights(model: nn.Module) -> Params:
    """What a later interpolation needs of the current checkpoint, in float32 on the CPU: all
    parameters of a plain model, the merged update delta_W of a PEFT model."""
    if is_peft(model):
        return {n: t.cpu() for n, t in merged_lora_params(model).items()}
    return {n: p.detach().to("cpu", torch.float32).clone() for n, p in model.named_parameters()}


def _interpolate_at(model, theta_a, theta_b, points: Sequence[Coord], **kw) -> list[dict]:
    """:func:`evaluate_interpolation` at the alphas of ``points`` (a shard of a slice)."""
    return evaluate_interpolation(model, theta_a, theta_b, [a for a, _ in points], **kw)


def record_stage(
    model: nn.Module,
    cfg: LandscapeConfig,
    stage: int,
    batches: Batches,
    *,
    prev: Params | None = None,
    done: Iterable[Mapping] = (),
    rank: int = 0,
    world: int = 1,
    gather=None,
    on_rows=None,
) -> list[dict]:
    """Every slice ``cfg`` asks for around the model's current weights (checkpoint ``stage``).

    ``prev``: :func:`previous_weights` of checkpoint ``stage - 1`` (None: no interpolation).
    ``done``: rows already recorded (e.g. read back from Parquet): their points are skipped,
    so an interrupted stage computes only its missing points. Work is split over ``world``
    ranks: every rank calls this with the same arguments and its ``rank``; each evaluates its
    :func:`shard` of a round of points, ``gather(rows) -> [rows of rank 0, rank 1, ...]``
    (e.g. ``torch.distributed.all_gather_object``) collects them, and ``on_rows(new_rows)``
    is called after every round (rank 0 saves them). Returns every new row, on every rank.
    The model holds its own weights again afterwards.
    """
    gather = gather or (lambda rows: [rows])
    was_training = model.training
    model.eval()
    try:
        return _record(model, cfg, stage, batches, prev, list(done), rank, world, gather, on_rows)
    finally:
        model.train(was_training)


def _record(model, cfg, stage, batches, prev, done, rank, world, gather, on_rows) -> list[dict]:
    peft = is_peft(model)
    space: Space = "lora_merged" if peft else "full"
    out: list[dict] = []
    with lora_merged(model) if peft else contextlib.nullcontext() as view, torch.no_grad():
        base = view.weights() if peft else pristine(model)
        for spec in stage_specs(cfg, stage, space=space, interpolate=prev is not None):
            have = done_keys(done, spec)
            # Each job evaluates a shard of points and leaves the model holding ``base``.
            if spec.kind == "interpolation":
                points = slice_points(cfg.alphas())
                job = functools.partial(
                    _interpolate_at,
                    model,
                    view.weights(prev) if peft else prev,
                    base,
                    batches=batches,
                    from_stage=spec.from_stage,
                    to_stage=spec.to_stage,
                    space=space,
                    done=have,
                )
            else:
                n = cfg.random_1d_points if spec.dims == 1 else cfg.random_2d_resolution
                points = slice_points(cfg.axis(n), cfg.axis(n) if spec.dims == 2 else None)
                directions = slice_directions(base, spec)
                job = functools.partial(
                    evaluate_points, model, spec, base, directions, batches=batches, done=have
                )
            todo = [c for c in points if any(point_key(d, *c) not in have for d in batches)]
            for start in range(0, len(todo), ROUND * world):
                mine = shard(todo[start : start + ROUND * world], world, rank)
                new = [r for part in gather(job(mine)) for r in part]
                out += new
                if on_rows is not None:
                    on_rows(new)
    return out
