"""Recording a checkpoint's slices inside a trial (sharded over ranks, resumable)."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from harness.config import ConfigError, LandscapeConfig
from harness.core import TokenizedExample, eval_batches, eval_mode, is_peft, shard
from harness.hooks import Hook
from harness.landscape.directions import Coord, Params, Space, pristine
from harness.landscape.lora import lora_merged, merged_lora_params
from harness.landscape.slices import (
    Batches,
    SliceSpec,
    done_keys,
    evaluate_interpolation,
    evaluate_points,
    interpolation_slice,
    point_key,
    random_slice,
    slice_directions,
    slice_points,
)

log = logging.getLogger(__name__)


ROUND = 4
"""Points per rank between two gathers: the granularity at which progress is saved."""


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
    with eval_mode(model):
        return _record(model, cfg, stage, batches, prev, list(done), rank, world, gather, on_rows)


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


class LandscapeHook(Hook):
    """A trial's loss-landscape recording: fixed evaluation batches, the stages to slice, and
    the previous checkpoint's weights for the interpolation. Its points are sharded over the
    trial's ranks; an interrupted stage recomputes only the points it had not saved."""

    kinds = ("landscape",)

    def setup(self, trial) -> None:
        from harness.inputs import landscape_stages

        cfg, inputs = trial.cfg, trial.inputs
        c = self.cfg = cfg.landscape
        self.stages = landscape_stages(cfg, inputs.data)
        self.names = [t.name for t in inputs.data.tasks]
        rng = random.Random(cfg.seed)

        def sample(n: int) -> list[int]:
            return sorted(rng.sample(range(n), min(n, c.examples_per_dataset)))

        def batches(examples):
            return eval_batches(
                examples, inputs.pad_id, batch_size=c.batch_size, max_tokens=c.max_tokens
            )

        # The loss of each task is that of its gold answers on a fixed sample of test prompts;
        # a prompt too long for max_tokens loses its left end (after BOS), never the answer.
        self.task_batches = {}
        for name, tt in zip(self.names, inputs.tasks, strict=True):
            examples = []
            for i in sample(len(tt.prompts)):
                prompt, answer = list(tt.prompts[i]), list(tt.candidates[tt.answers[i]])
                room = c.max_tokens - len(answer)
                if room < 2:
                    raise ConfigError(
                        [
                            f"landscape.max_tokens: {c.max_tokens} leaves no room for a prompt "
                            f"before task {name!r}'s {len(answer)}-token answer; raise it"
                        ]
                    )
                if len(prompt) > room:
                    prompt = prompt[:1] + prompt[len(prompt) - room + 1 :]
                examples.append(TokenizedExample(ids=tuple(prompt + answer), n_prompt=len(prompt)))
            self.task_batches[name] = batches(examples)
        heldout = inputs.heldout
        self.general = (
            batches(
                [TokenizedExample(ids=tuple(heldout[i]), n_prompt=0) for i in sample(len(heldout))]
            )
            if heldout
            else None
        )
        self.prev = None
        if trial.resumed:
            # Points of the interrupted stage were saved as they finished: keep them (read on
            # the main rank, shared with every rank so all skip the same points).
            after = trial.state.finished_stage
            rows = trial.read_stored("landscape") if trial.backend.is_main else []
            trial.state.rows["landscape"] += trial.backend.gather(
                [r for r in rows if r["stage"] > after]
            )[0]
            self._keep_for_next(trial.built.model, after)

    def before_first_task(self, trial) -> None:
        self._record(trial, 0)

    def after_task(self, trial, stage: int) -> None:
        self._record(trial, stage)

    def batches(self, stage: int) -> dict:
        """Dataset name -> fixed batches at checkpoint ``stage`` ('prev'/'new' resolve to the
        tasks before and at it; those that do not exist at this stage are left out)."""
        out = {}
        for d in self.cfg.datasets_at(stage, self.names):
            if d != "general":
                out[d] = self.task_batches[d]
            elif self.general is not None:
                out[d] = self.general
        return out

    def _record(self, trial, stage: int) -> None:
        """This checkpoint's slices (sharded over the ranks), then what the next one needs."""
        model, backend, rows = trial.built.model, trial.backend, trial.state.rows["landscape"]
        if stage in self.stages:
            t0, before = time.perf_counter(), len(rows)

            def saved(new_rows: list[dict]) -> None:
                rows.extend(new_rows)
                trial.flush()

            record_stage(
                model,
                self.cfg,
                stage,
                self.batches(stage),
                prev=self.prev if self.cfg.interpolation else None,
                done=[r for r in rows if r["stage"] == stage],
                rank=backend.rank,
                world=backend.world_size,
                gather=backend.gather,
                on_rows=saved if backend.is_main else None,
            )
            if backend.is_main:
                log.info(
                    "trial %s: landscape at stage %d: %d rows in %.1f s (%d ranks)",
                    trial.cfg.id,
                    stage,
                    len(rows) - before,
                    time.perf_counter() - t0,
                    backend.world_size,
                )
        self._keep_for_next(model, stage)

    def _keep_for_next(self, model, stage: int) -> None:
        """Hold this checkpoint's weights when the next stage interpolates from it."""
        need = self.cfg.interpolation and stage + 1 in self.stages
        self.prev = previous_weights(model) if need else None
