"""The evaluation stage of a trial: every task, the probe and held-out perplexity, sharded over
the trial's ranks, as the stage hook :class:`EvaluationHook`.

Each rank scores a contiguous share (:func:`harness.core.shard`) of every task's test set, of
the probe and of the held-out texts; the per-example results are gathered in rank order, so
they come out in the same order as on one rank, and the main rank writes the rows. When the
weights are sharded over the ranks (ZeRO-3) every forward is a collective: each rank first
counts the forward calls its share needs, and all make the largest count (the shorter shares
add one-token dummy calls), so the ranks' collectives stay in step.

With ``eval.lm_eval_tasks``, lm-evaluation-harness runs its tasks on the same sharded scorer
(:mod:`harness.lm_eval_tasks`), every rank running lm-eval alike.

Rows: ``accuracy`` (one per task), ``general`` (probe accuracy, perplexity), ``lm_eval`` (one per
lm-eval task and metric) and, with
``eval.predictions``, ``predictions`` (one per scored example: the gold and predicted answer,
whether it was correct, and the candidates' log-likelihoods or the generated text), from which
a study can be re-scored without re-running it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from harness.config.cl_methods import diagonal_only
from harness.core import shard
from harness.data.mmlu import LETTERS
from harness.evaluate import (
    Perplexity,
    candidate_forwards,
    candidate_scores,
    generate_answers,
    new_token_budget,
    perplexity,
    perplexity_forwards,
)
from harness.hooks import Hook


class EvaluationHook(Hook):
    """Scores every task (the accuracy matrix, future tasks included unless
    ``eval.matrix=needed``) and general ability
    (probe accuracy, held-out perplexity) of the starting model and after every task."""

    kinds = ("accuracy", "general", "predictions")

    def __init__(self, cfg=None) -> None:
        if cfg is not None:  # known before setup: what a stored trial must have written
            self.kinds = self.kinds_for(cfg)

    @staticmethod
    def kinds_for(cfg) -> tuple[str, ...]:
        """The record kinds a trial of ``cfg`` writes through this hook."""
        return (
            "accuracy",
            "general",
            *(("lm_eval",) if cfg.eval.lm_eval_tasks else ()),
            *(("predictions",) if cfg.eval.predictions else ()),
        )

    def setup(self, trial) -> None:
        cfg = trial.cfg
        self.kinds = self.kinds_for(cfg)
        self.lm_eval = None
        if cfg.eval.lm_eval_tasks:  # resolved now: an unknown task fails before any training
            from harness import lm_eval_tasks

            manager = lm_eval_tasks.task_manager(cfg)
            lm_eval_tasks.check_tasks(cfg, manager)
            self.lm_eval = manager

    def before_first_task(self, trial) -> None:
        """The starting model's rows: computed once per study for every trial that shares
        them (:func:`harness.shared.shared_stage0`)."""
        from harness.shared import shared_stage0

        self._add(trial, shared_stage0(trial, lambda: self._rows(trial, 0, "<start>")))

    def after_task(self, trial, stage: int) -> None:
        self._add(trial, self._rows(trial, stage, trial.stage_name(stage)))

    def _rows(self, trial, stage: int, after_task: str) -> dict[str, list[dict]]:
        acc, general, predictions = evaluate_checkpoint(trial, stage, after_task)
        rows = {"accuracy": acc, "general": general}
        if self.lm_eval is not None:
            rows["lm_eval"], docs = evaluate_lm_eval(trial, self.lm_eval, stage, after_task)
            predictions += docs
        if "predictions" in self.kinds:
            rows["predictions"] = predictions
        return rows

    def _add(self, trial, rows: dict[str, list[dict]]) -> None:
        for kind, part in rows.items():
            trial.state.rows[kind] += part
        trial.flush()


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


def on_shards(backend, items: Sequence, run: Callable, count: Callable) -> list:
    """``run(my_items, forwards)`` on this rank's contiguous share of ``items``, the results of
    every rank concatenated in rank order (so in ``items``' order). ``count(my_items)``: the
    forward calls a share needs; under sharded weights every rank makes the largest count."""
    world, rank = backend.world_size, backend.rank
    mine = shard(list(items), world, rank)
    forwards = max(backend.gather(count(mine))) if backend.sharded and world > 1 else None
    return [r for part in backend.gather(run(mine, forwards)) for r in part]


def sharded_scorer(trial) -> Callable:
    """``requests -> [[(log-likelihood, greedy), ...], ...]`` on the trial's model as it is
    now (:func:`harness.evaluate.candidate_scores`), the requests dealt over its ranks."""
    backend, pad, bs = trial.backend, trial.inputs.pad_id, trial.cfg.eval.batch_size
    model = backend.module

    def score(requests):
        return on_shards(
            backend,
            requests,
            lambda mine, f: candidate_scores(model, mine, pad_id=pad, batch_size=bs, forwards=f),
            lambda mine: candidate_forwards(mine, bs),
        )

    return score


def scored_positions(
    stages: Sequence[tuple[int, ...]], stage: int, matrix: str, diagonal: bool = False
) -> set[int]:
    """The task positions (1-based) scored at checkpoint ``stage`` (0: the start) of a trial
    that trains ``stages`` (:attr:`harness.trial.Trial.stages`): every task under
    ``eval.matrix=full`` and at the start; under 'needed', the tasks trained so far and the
    next stage's, or with ``diagonal`` (a method whose diagonal alone is read:
    :func:`harness.config.cl_methods.diagonal_only`) the stage's own."""
    every = {p for s in stages for p in s}
    if matrix == "full" or stage == 0:
        return every
    if diagonal:
        return set(stages[stage - 1])
    return {p for s in stages[: stage + 1] for p in s}


def evaluate_checkpoint(trial, stage: int, after_task: str):
    """``accuracy`` rows (one per task), the ``general`` row and the ``predictions`` rows of the
    model as it is now (every rank calls this; every rank gets the same rows)."""
    cfg, inputs, backend = trial.cfg, trial.inputs, trial.backend
    model, tok, bs = backend.module, trial.built.tokenizer, cfg.eval.batch_size
    pad = inputs.pad_id
    acc_rows, pred_rows = [], []
    base = {"stage": stage, "after_task": after_task}

    score = sharded_scorer(trial)

    def choices(requests):
        return [[ll for ll, _ in row] for row in score(requests)]

    scored = scored_positions(trial.stages, stage, cfg.eval.matrix, diagonal_only(cfg))
    for pos, (task, tt) in enumerate(zip(inputs.data.tasks, inputs.tasks, strict=True), start=1):
        if pos not in scored:
            continue
        labels = task.labels
        if cfg.eval.scoring == "loglik":
            lls = choices([(p, tt.candidates) for p in tt.prompts])
            predicted = [labels[_argmax(ll)] for ll in lls]
            correct = [_argmax(ll) == a for ll, a in zip(lls, tt.answers, strict=True)]
            texts = [None] * len(lls)
        else:
            new_tokens = new_token_budget(cfg.eval.max_new_tokens, tt.candidates)
            gens = on_shards(
                backend,
                list(zip(tt.prompts, tt.golds, strict=True)),
                lambda mine, f, new_tokens=new_tokens: generate_answers(
                    model,
                    tok,
                    [p for p, _ in mine],
                    [g for _, g in mine],
                    max_new_tokens=new_tokens,
                    batch_size=bs,
                    rule=cfg.eval.scoring,
                    forwards=f,
                    synced=backend.sharded and backend.world_size > 1,
                ),
                lambda mine: -(-len(mine) // bs),
            )
            predicted = [g.text for g in gens]
            texts = [g.generated for g in gens]
            correct = [g.correct for g in gens]
            lls = [None] * len(gens)
        n, n_correct = len(correct), sum(correct)
        acc_rows.append(
            dict(
                **base,
                task=task.name,
                task_position=pos,
                accuracy=n_correct / n,
                n_correct=n_correct,
                n_total=n,
                scoring=cfg.eval.scoring,
            )
        )
        for i, (gold, pred, ok, ll, text, item) in enumerate(
            zip(tt.golds, predicted, correct, lls, texts, tt.items, strict=True)
        ):
            pred_rows.append(
                dict(
                    **base,
                    task=task.name,
                    example=i,
                    item=item,
                    gold=gold,
                    predicted=pred,
                    correct=bool(ok),
                    logliks=ll,
                    generated=text,
                    scoring=cfg.eval.scoring,
                )
            )
    general = dict(
        **base,
        probe=cfg.probe_label,
        accuracy=float("nan"),
        n_correct=0,
        n_total=0,
        ppl=float("nan"),
        nll_sum=float("nan"),
        ppl_tokens=0,
    )
    if inputs.probe is not None:
        requests, answers = inputs.probe
        lls = choices(requests)
        c = sum(int(_argmax(ll) == a) for ll, a in zip(lls, answers, strict=True))
        general.update(accuracy=c / len(answers), n_correct=c, n_total=len(answers))
        names = _probe_answers(cfg, inputs)
        for i, (ll, a, q) in enumerate(zip(lls, answers, inputs.data.probe, strict=True)):
            pred_rows.append(
                dict(
                    **base,
                    task=f"probe:{cfg.probe_label}",
                    example=i,
                    item=q.item,
                    gold=names[i][a],
                    predicted=names[i][_argmax(ll)],
                    correct=_argmax(ll) == a,
                    logliks=ll,
                    generated=None,
                    scoring="loglik",
                )
            )
    if inputs.heldout:
        parts = on_shards(
            backend,
            inputs.heldout,
            lambda mine, f: [perplexity(model, mine, pad_id=pad, batch_size=bs, forwards=f)],
            lambda mine: perplexity_forwards(mine, bs),
        )
        nll, tokens = sum(p.nll_sum for p in parts), sum(p.tokens for p in parts)
        general.update(ppl=Perplexity(nll, tokens).ppl, nll_sum=nll, ppl_tokens=tokens)
    return acc_rows, [general], pred_rows


def evaluate_lm_eval(trial, manager, stage: int, after_task: str):
    """``lm_eval`` rows and the documents' ``predictions`` rows of the configured lm-eval tasks
    on the model as it is now (every rank calls this; every rank gets the same rows)."""
    from harness import lm_eval_tasks

    tok = trial.built.tokenizer
    length = lm_eval_tasks.max_length(trial.built.model, tok)
    lm = lm_eval_tasks.harness_lm(tok, sharded_scorer(trial), length)
    out = lm_eval_tasks.evaluate(trial.cfg, lm, manager)
    return lm_eval_tasks.rows_of(out, {"stage": stage, "after_task": after_task})


def _probe_answers(cfg, inputs) -> list[list[str]]:
    """Each probe question's answers as recorded: letters, or the choice texts (cloze)."""
    if cfg.eval.probe_format in ("letter", "lm_eval"):
        return [list(LETTERS[: len(q.choices)]) for q in inputs.data.probe]
    return [list(q.choices) for q in inputs.data.probe]
