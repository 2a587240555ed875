"""Train one task of the stream: plain PyTorch, no Ray, no printing.

Each optimiser step sees one *effective batch* of task examples and (unless the method is
``none``) replay texts, split into ``grad_accum`` micro-batches. How the rows' losses are
weighted is ``train.loss_weighting``:

* ``microbatch_mean`` (the harness's first weighting): per micro-batch, one forward pass over
  task and replay rows together gives

      CE   = mean(CE_task, CE_replay)   (each a token mean; only the parts present)
      loss = CE + w * term              (term = the replay method's loss on the replay rows)

  so task and replay weigh half each whatever share of the batch they are.
* ``per_sample`` (what GeRe's reference code trains: a per-device batch of 1 with gradient
  accumulation): every row's CE is its own token mean, every replay row gets its own term, and
  the step's objective is the mean over the effective batch of

      L_i = CE_i (task row)      or      L_i = CE_i + w * term_i (replay row)

  i.e. (1 - f) * CE_task + f * (CE_replay + w * TM) with f the replay share. The objective no
  longer depends on how rows are grouped, so each step's rows are sorted by length before they
  are dealt to the ranks and cut into micro-batches (:func:`rank_share`,
  :func:`micro_batches`; less padding: ``pad_share`` in the curve records).

Terms from stage hooks (``extra_terms``: EWC's penalty, LwF's distillation) are added once
per micro-batch on top, after the weighting. A non-finite loss or gradient stops the task *before* the optimiser step and is
reported as divergence, so the weights stay finite and the trial can end cleanly. The
optimiser itself lives in a backend (harness.backend: plain PyTorch or DeepSpeed ZeRO).

The learning rate is set here on every step (:func:`lr_at`) rather than by a scheduler object:
each task restarts its warm-up and decay, and the same function must drive both the PyTorch and
the DeepSpeed optimiser (DeepSpeed's ZeRO optimisers are not ``torch.optim.Optimizer``
instances, so transformers' schedulers, which bind to one optimiser object, cannot).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.backend import Backend
from harness.config import TrainConfig
from harness.core import IGNORE, TokenizedExample, collate, device_of, token_nll
from harness.models import Built, last_hidden_and_logits
from harness.replay import ReplayBuffer, ReplayMethod, ReplayView, combine


def lr_at(step: int, total: int, *, peak: float, warmup: int, schedule: str) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a task with ``total`` steps:
    linear warm-up to ``peak`` over ``warmup`` steps, then cosine/linear decay to 0, or constant."""
    warmup = min(warmup, total)
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return peak * max(0.0, 1.0 - progress)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


Item = tuple[bool, int]
"""(is_replay, index): a task example index, or a replay-buffer index."""


def plan_steps(
    *,
    n_task: int,
    n_replay: int,
    effective_batch: int,
    per_batch: int | None,
    epochs: float,
    max_steps: int | None,
    rng: np.random.Generator,
) -> list[list[Item]]:
    """Assign examples to optimiser steps.

    Without batch interpolation the replay texts are shuffled into the task's training set
    (each epoch is a fresh permutation of task + replay items). With ``per_batch = n``, every
    step holds exactly n replay items (cycling through a permutation of the buffer) and
    ``effective_batch - n`` task items.
    """
    steps: list[list[Item]] = []
    if per_batch and n_replay:
        n_task_per_step = effective_batch - per_batch
        n_steps = math.ceil(epochs * n_task / n_task_per_step)
        if max_steps:  # never plan steps the cap drops (epochs=1e8 with a cap is fine)
            n_steps = min(n_steps, max_steps)
        task_stream = _stream(n_task, n_steps * n_task_per_step, rng)
        replay_stream = _stream(n_replay, n_steps * per_batch, rng)
        for s in range(n_steps):
            step = [
                (False, i) for i in task_stream[s * n_task_per_step : (s + 1) * n_task_per_step]
            ]
            step += [(True, j) for j in replay_stream[s * per_batch : (s + 1) * per_batch]]
            rng.shuffle(step)  # spread replay rows over the micro-batches
            steps.append(step)
    else:
        items = [(False, i) for i in range(n_task)] + [(True, j) for j in range(n_replay)]
        total = math.ceil(epochs * len(items))
        if max_steps:
            total = min(total, max_steps * effective_batch)
        order = _stream(len(items), total, rng)
        steps = [
            [items[k] for k in order[s : s + effective_batch]]
            for s in range(0, total, effective_batch)
        ]
    return steps[:max_steps] if max_steps else steps


def rank_share(
    step: Sequence[Item], world: int, rank: int, by_length: bool, length: Callable[[Item], int]
) -> list[Item]:
    """The items of one optimiser step that rank ``rank`` of ``world`` trains on: every
    world-th item, or, ``by_length`` (``per_sample``), a contiguous run of the step sorted by
    ``length`` -- the shares' sizes differ by at most one either way, so the ranks' averaged
    gradients are the mean over the step's rows alike."""
    if not by_length:
        return list(step[rank::world])
    return list(_split(sorted(step, key=length), world)[rank])


def micro_batches(
    share: Sequence[Item], grad_accum: int, by_length: bool, length: Callable[[Item], int]
) -> list[list[Item]]:
    """A rank's items of one step cut into (at most) ``grad_accum`` non-empty micro-batches:
    strided (``share[i::grad_accum]``), or, ``by_length`` (the ``per_sample`` weighting, whose
    objective does not depend on the grouping), sorted by ``length`` and cut into contiguous
    runs, so each micro-batch pads to rows of similar length."""
    if by_length:
        ordered = sorted(share, key=length)
        micro = [list(m) for m in _split(ordered, grad_accum)]
    else:
        micro = [list(share[i::grad_accum]) for i in range(grad_accum)]
    return [m for m in micro if m]


def _split(items: Sequence, n: int) -> list[Sequence]:
    """``items`` cut into ``n`` contiguous parts of sizes differing by at most one."""
    q, r = divmod(len(items), n)
    bounds = [0]
    for i in range(n):
        bounds.append(bounds[-1] + q + (i < r))
    return [items[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _stream(n: int, length: int, rng: np.random.Generator) -> list[int]:
    """``length`` indices from back-to-back fresh permutations of range(n)."""
    out: list[int] = []
    while len(out) < length:
        out.extend(rng.permutation(n).tolist())
    return out[:length]


@dataclass
class TaskOutcome:
    """What training one task produced."""

    curve: list[dict] = field(default_factory=list)
    steps: int = 0
    diverged_step: int | None = None
    """Global step at which the loss or gradient became non-finite, or the loss exploded past
    ``train.divergence_factor`` times its start (training stopped)."""
    diverged_reason: str | None = None
    tokens: int = 0


@dataclass
class Batch:
    """One training micro-batch as a stage hook's ``loss_term`` sees it (after the forward)."""

    input_ids: torch.Tensor
    """[B, L] right-padded token ids (task rows and replay rows)."""
    attention_mask: torch.Tensor
    labels: torch.Tensor
    """[B, L] the ids at positions that carry loss, -100 elsewhere (prompt, padding)."""
    logits: torch.Tensor
    """[B, L, V] the current model's logits (with gradient)."""
    is_replay: torch.Tensor
    """[B] bool: the row is a general replay text (not a task example)."""


class _Window:
    """Running means of the logged quantities between two curve rows."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.tokens = 0
        self.positions = 0
        """Token positions the forward passes computed (tokens + padding)."""

    def add(self, key: str, value: float | None) -> None:
        if value is None:
            return
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key: str) -> float:
        return self.sums[key] / self.counts[key] if self.counts.get(key) else float("nan")


def train_task(
    built: Built,
    backend: Backend,
    *,
    task_examples: Sequence[TokenizedExample],
    buffer: ReplayBuffer | None,
    method: ReplayMethod,
    weight: float | str,
    cfg: TrainConfig,
    per_batch: int | None,
    stage: int,
    task: str,
    global_step: int,
    seed: int,
    progress: bool = False,
    on_step: Callable[[int], object] | None = None,
    on_log: Callable[[dict], object] | None = None,
    extra_terms: Callable[[Batch], Sequence[torch.Tensor | None]] | None = None,
) -> TaskOutcome:
    """Fine-tune on one task (fresh optimiser state and LR schedule), mixing in replay.

    With several data-parallel ranks every rank plans the same steps (same seed) and takes
    every world_size-th item of each effective batch; a final step too small to give each
    rank ``grad_accum`` items is dropped, so all ranks run the same number of micro-steps.

    ``on_step(global_step)`` runs after every optimiser step, ``on_log(row)`` after each
    curve row is recorded (every ``log_every`` steps and at the end; the same steps on every
    rank); ``extra_terms(batch)`` returns
    loss terms (or None) added to every micro-batch's loss (the stage hooks' ``loss_term``).
    ``task_examples`` may hold more than the task's own examples (task replay adds earlier
    tasks' examples); they all count as task rows.
    """
    replay_rows: list[TokenizedExample] = []
    if method.uses_replay and buffer is not None:
        replay_rows = [TokenizedExample(ids=tuple(t), n_prompt=0) for t in buffer.token_ids]
    world, rank = backend.world_size, backend.rank
    eff = cfg.batch_size * cfg.grad_accum * world
    steps = plan_steps(
        n_task=len(task_examples),
        n_replay=len(replay_rows),
        effective_batch=eff,
        per_batch=per_batch,
        epochs=cfg.epochs,
        max_steps=cfg.max_steps_per_task,
        rng=np.random.default_rng([seed, stage]),
    )
    steps = [s for s in steps if len(s) >= backend.min_step_items(cfg.grad_accum)]
    # Training mode: a model loaded with from_pretrained (a Hub model, the world base, a resumed
    # checkpoint) starts in eval mode, which would switch off dropout and HF's gradient
    # checkpointing (it only applies while training).
    backend.train_module.train()
    backend.start_task()
    out = TaskOutcome()
    window = _Window()
    peak = cfg.lr * cfg.lr_multiplier
    bar = tqdm(
        steps,
        desc=f"task {stage} {task}",
        disable=not progress or rank != 0,
        leave=False,
        unit="step",
    )
    first_ce: float | None = None  # this task's first-step LM loss (the divergence baseline)
    per_sample = cfg.loss_weighting == "per_sample"

    def row(item: Item) -> TokenizedExample:
        return replay_rows[item[1]] if item[0] else task_examples[item[1]]

    for k, step_items in enumerate(bar, start=1):
        share = rank_share(step_items, world, rank, per_sample, lambda it: len(row(it).ids))
        micro = micro_batches(share, cfg.grad_accum, per_sample, lambda it: len(row(it).ids))
        finite = True
        step_ce: list[float] = []
        for items in micro:
            rows = [row(it) for it in items]
            is_replay = torch.tensor([rep for rep, _ in items])
            index = torch.tensor([i for rep, i in items if rep], dtype=torch.long)
            # per_sample: this micro-batch's share of the mean over the rank's rows, times the
            # number of micro-batches (the backend divides by it)
            scale = len(micro) / len(share) if per_sample else None
            loss, stats, batch = _micro_loss(
                built, backend, rows, is_replay, index, method, weight, per_sample_scale=scale
            )
            for extra in extra_terms(batch) if extra_terms else ():
                if extra is not None:
                    loss = loss + extra
            # Every rank must agree before anyone calls backward (collectives under ZeRO).
            if not backend.all_true(bool(torch.isfinite(loss))):
                finite = False
                break
            backend.backward(loss, len(micro))
            step_ce += [v for key in ("task_ce", "replay_ce") if (v := stats[key]) is not None]
            for key, v in stats.items():
                if key in ("tokens", "positions"):
                    setattr(window, key, getattr(window, key) + int(v))
                else:
                    window.add(key, v)
        lr_now = lr_at(k - 1, len(steps), peak=peak, warmup=cfg.warmup_steps, schedule=cfg.schedule)
        grad_norm = backend.step(lr_now) if finite else float("nan")
        skipped = finite and getattr(backend, "step_skipped", False)  # fp16 loss-scale overflow
        ce = sum(step_ce) / len(step_ce) if step_ce else float("nan")
        if first_ce is None and math.isfinite(ce):
            first_ce = ce
        limit = cfg.divergence_factor * max(first_ce or 0.0, 1.0) if cfg.divergence_factor else None
        exploded = limit is not None and ce > limit
        norm_ok = math.isfinite(grad_norm) or skipped
        if not finite or not backend.all_true(norm_ok and not exploded):
            out.diverged_step = global_step + k
            out.diverged_reason = (
                "non-finite loss"
                if not finite
                else f"loss {ce:.4g} > train.divergence_factor {cfg.divergence_factor:g} x "
                f"max(first-step loss {first_ce:.4g}, 1)"
                if exploded
                else "non-finite gradient (on this or another rank)"
            )
            if window.counts:  # the steps up to the divergence stay on the curve
                out.curve.append(_curve_row(window, stage, task, global_step + k, k, lr_now))
                out.tokens += window.tokens
                if on_log is not None:
                    on_log(out.curve[-1])
                window = _Window()
            break
        if not skipped:
            window.add("grad_norm", grad_norm)
        out.steps = k
        if on_step is not None:
            on_step(global_step + k)
        if k % cfg.log_every == 0 or k == len(steps):
            out.curve.append(_curve_row(window, stage, task, global_step + k, k, lr_now))
            out.tokens += window.tokens
            if on_log is not None:
                on_log(out.curve[-1])
            bar.set_postfix(loss=f"{window.mean('loss'):.3f}")
            window = _Window()
    bar.close()
    out.tokens += window.tokens
    return out


def _micro_loss(
    built: Built,
    backend: Backend,
    rows: Sequence[TokenizedExample],
    is_replay: torch.Tensor,
    index: torch.Tensor,
    method: ReplayMethod,
    weight: float | str,
    *,
    per_sample_scale: float | None = None,
) -> tuple[torch.Tensor, dict[str, float | None], Batch]:
    """Loss of one micro-batch (task and replay rows in one forward pass), its parts, and the
    batch as the hooks' ``loss_term`` sees it.

    ``per_sample_scale`` set: the ``per_sample`` weighting, each row's loss on its own, their
    sum times this factor (see the module docstring); unset: ``microbatch_mean``.

    A micro-batch without replay rows still lets the backend keep the ranks in step: it runs
    the frozen-model forward the other ranks run (``idle_frozen_forward``) and backpropagates
    through the hidden state the other ranks' terms read (``touch_outputs``).
    """
    module = backend.train_module
    input_ids, attention_mask, labels = collate(rows, built.tokenizer.pad_token_id)
    device = device_of(module)
    input_ids, attention_mask, labels = (
        input_ids.to(device),
        attention_mask.to(device),
        labels.to(device),
    )
    if method.needs_hidden:
        logits, hidden = last_hidden_and_logits(module, input_ids, attention_mask)
    else:
        logits = module(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = None
    nll = token_nll(logits, labels)
    counted = (labels[:, 1:] != IGNORE).float()
    replay_dev = is_replay.to(device)
    view = None
    if is_replay.any():
        r_ids, r_mask = input_ids[replay_dev], attention_mask[replay_dev]
        cached: list[tuple[torch.Tensor, torch.Tensor]] = []

        def reference() -> tuple[torch.Tensor, torch.Tensor]:
            if not cached:  # one frozen forward per micro-batch, also when cut per sample
                with torch.no_grad(), built.starting_model() as ref:
                    cached.append(last_hidden_and_logits(ref, r_ids, r_mask))
            return cached[0]

        view = ReplayView(
            logits=logits[replay_dev],
            hidden=hidden[replay_dev] if hidden is not None else None,
            mask=r_mask.bool(),
            index=index,
            reference=reference,
        )
    elif method.needs_reference:
        backend.idle_frozen_forward(built, input_ids)
    if per_sample_scale is None:
        loss, stats = _mean_loss(nll, counted, is_replay.to(device), view, method, weight)
    else:
        loss, stats = _per_sample_loss(nll, counted, is_replay, view, method, weight)
        loss = loss * per_sample_scale
    if hidden is not None and stats["replay_term"] is None:
        loss = backend.touch_outputs(loss, hidden)
    stats["tokens"] = int(attention_mask.sum())
    stats["positions"] = int(attention_mask.numel())
    batch = Batch(input_ids, attention_mask, labels, logits, replay_dev)
    return loss, stats, batch


def _mean_loss(nll, counted, replay, view, method, weight):
    """``microbatch_mean``: mean(CE_task, CE_replay) + w * term over the replay rows."""
    ces: dict[str, torch.Tensor] = {}
    for name, rows_mask in (("task_ce", ~replay), ("replay_ce", replay)):
        n_tok = counted[rows_mask].sum()
        if n_tok > 0:
            ces[name] = nll[rows_mask].sum() / n_tok
    ce = torch.stack(list(ces.values())).mean()
    term = method.term(view) if view is not None else None
    loss, w = combine(ce, term, weight)
    return loss, {
        "loss": float(loss.detach()),
        "task_ce": float(ces["task_ce"].detach()) if "task_ce" in ces else None,
        "replay_ce": float(ces["replay_ce"].detach()) if "replay_ce" in ces else None,
        "replay_term": float(term.detach()) if term is not None else None,
        "replay_weight": float(w),
    }


def _per_sample_loss(nll, counted, is_replay, view, method, weight):
    """``per_sample``: sum over rows of CE_i (+ w * term_i on replay rows), each row's CE its
    own token mean and each replay row's term computed on that row alone (GeRe's batch of 1);
    a row with no target token adds nothing. Logged values are means over the rows."""
    row_ce = nll.sum(1) / counted.sum(1).clamp(min=1)
    losses: list[torch.Tensor] = []
    task_ce, replay_ce, terms, weights = [], [], [], []
    j = 0  # position among the replay rows
    for i, rep in enumerate(is_replay.tolist()):
        ce_i = row_ce[i]
        if not rep:
            losses.append(ce_i)
            task_ce.append(float(ce_i.detach()))
            continue
        term_i = method.term(_row_view(view, j)) if view is not None else None
        j += 1
        total, w = combine(ce_i, term_i, weight)
        losses.append(total)
        replay_ce.append(float(ce_i.detach()))
        if term_i is not None:
            terms.append(float(term_i.detach()))
            weights.append(float(w))

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    loss = torch.stack(losses).sum()
    return loss, {
        "loss": float(loss.detach()) / len(losses),
        "task_ce": mean(task_ce),
        "replay_ce": mean(replay_ce),
        "replay_term": mean(terms),
        "replay_weight": mean(weights) if weights else 0.0,
    }


def _row_view(view: ReplayView, j: int) -> ReplayView:
    """Replay row ``j`` of ``view`` alone (its reference forward shared with the others)."""
    one = slice(j, j + 1)

    def reference() -> tuple[torch.Tensor, torch.Tensor]:
        ref_logits, ref_hidden = view.reference()
        return ref_logits[one], ref_hidden[one]

    return ReplayView(
        logits=view.logits[one],
        hidden=view.hidden[one] if view.hidden is not None else None,
        mask=view.mask[one],
        index=view.index[one],
        reference=reference,
    )


def _curve_row(
    window: _Window, stage: int, task: str, step: int, task_step: int, lr: float
) -> dict:
    return {
        "stage": stage,
        "task": task,
        "step": step,
        "task_step": task_step,
        "loss": window.mean("loss"),
        "task_ce": window.mean("task_ce"),
        "replay_ce": window.mean("replay_ce"),
        "replay_term": window.mean("replay_term"),
        "replay_weight": window.mean("replay_weight"),
        "lr": lr,
        "grad_norm": window.mean("grad_norm"),
        "tokens": window.tokens,
        "pad_share": 1.0 - window.tokens / window.positions if window.positions else float("nan"),
    }
