"""Train one task of the stream: plain PyTorch, no Ray, no printing.

Each optimiser step sees one *effective batch* of task examples and (unless the method is
``none``) replay texts, split into ``grad_accum`` micro-batches. Per micro-batch, one forward
pass over task and replay rows together gives

    CE   = mean(CE_task, CE_replay)   (each a token mean; only the parts present)
    loss = CE + w * term              (term = the replay method's loss on the replay rows)

as in GeRe. A non-finite loss or gradient stops the task *before* the optimiser step and is
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


class _Window:
    """Running means of the logged quantities between two curve rows."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.tokens = 0

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
    extra_terms: Callable[[], Sequence[torch.Tensor | None]] | None = None,
) -> TaskOutcome:
    """Fine-tune on one task (fresh optimiser state and LR schedule), mixing in replay.

    With several data-parallel ranks every rank plans the same steps (same seed) and takes
    every world_size-th item of each effective batch; a final step too small to give each
    rank ``grad_accum`` items is dropped, so all ranks run the same number of micro-steps.

    ``on_step(global_step)`` runs after every optimiser step; ``extra_terms()`` returns loss
    terms (or None) added to every micro-batch's loss (the stage hooks' ``loss_term``).
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
    for k, step_items in enumerate(bar, start=1):
        share = step_items[rank::world]
        micro = [share[i :: cfg.grad_accum] for i in range(cfg.grad_accum)]
        micro = [m for m in micro if m]
        finite = True
        step_ce: list[float] = []
        for items in micro:
            rows = [replay_rows[i] if rep else task_examples[i] for rep, i in items]
            is_replay = torch.tensor([rep for rep, _ in items])
            index = torch.tensor([i for rep, i in items if rep], dtype=torch.long)
            loss, stats = _micro_loss(built, backend, rows, is_replay, index, method, weight)
            for extra in extra_terms() if extra_terms else ():
                if extra is not None:
                    loss = loss + extra
            # Every rank must agree before anyone calls backward (collectives under ZeRO).
            if not backend.all_true(bool(torch.isfinite(loss))):
                finite = False
                break
            backend.backward(loss, len(micro))
            step_ce += [v for key in ("task_ce", "replay_ce") if (v := stats[key]) is not None]
            for key, v in stats.items():
                if key == "tokens":
                    window.tokens += int(v)
                else:
                    window.add(key, v)
        lr_now = lr_at(k - 1, len(steps), peak=peak, warmup=cfg.warmup_steps, schedule=cfg.schedule)
        grad_norm = backend.step(lr_now) if finite else float("nan")
        ce = sum(step_ce) / len(step_ce) if step_ce else float("nan")
        if first_ce is None and math.isfinite(ce):
            first_ce = ce
        limit = cfg.divergence_factor * max(first_ce or 0.0, 1.0) if cfg.divergence_factor else None
        exploded = limit is not None and ce > limit
        if not finite or not backend.all_true(math.isfinite(grad_norm) and not exploded):
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
                window = _Window()
            break
        window.add("grad_norm", grad_norm)
        out.steps = k
        if on_step is not None:
            on_step(global_step + k)
        if k % cfg.log_every == 0 or k == len(steps):
            out.curve.append(_curve_row(window, stage, task, global_step + k, k, lr_now))
            out.tokens += window.tokens
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
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """Loss of one micro-batch (task and replay rows in one forward pass) and its parts.

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
    ces: dict[str, torch.Tensor] = {}
    for name, rows_mask in (("task_ce", ~is_replay), ("replay_ce", is_replay)):
        rows_mask = rows_mask.to(device)
        n_tok = counted[rows_mask].sum()
        if n_tok > 0:
            ces[name] = nll[rows_mask].sum() / n_tok
    ce = torch.stack(list(ces.values())).mean()
    term = None
    if is_replay.any():
        r = is_replay.to(device)
        r_ids, r_mask = input_ids[r], attention_mask[r]

        def reference() -> tuple[torch.Tensor, torch.Tensor]:
            with torch.no_grad(), built.starting_model() as ref:
                return last_hidden_and_logits(ref, r_ids, r_mask)

        view = ReplayView(
            logits=logits[r],
            hidden=hidden[r] if hidden is not None else None,
            mask=r_mask.bool(),
            index=index,
            reference=reference,
        )
        term = method.term(view)
    elif method.needs_reference:
        backend.idle_frozen_forward(built, input_ids)
    loss, w = combine(ce, term, weight)
    if hidden is not None and term is None:
        loss = backend.touch_outputs(loss, hidden)
    return loss, {
        "loss": float(loss.detach()),
        "task_ce": float(ces["task_ce"].detach()) if "task_ce" in ces else None,
        "replay_ce": float(ces["replay_ce"].detach()) if "replay_ce" in ces else None,
        "replay_term": float(term.detach()) if term is not None else None,
        "replay_weight": float(w),
        "tokens": int(attention_mask.sum()),
    }


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
    }
