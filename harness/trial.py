"""One continual-learning trial, end to end, in one process.

    load + validate all data  ->  build model  ->  tokenise (cached)  ->  replay prepare (TM)
    -> evaluate (stage 0) -> for each task: train, evaluate (stage i) -> metrics -> summary

Everything that can fail on bad input (unknown task, malformed file, a replay buffer larger than
the corpus) fails in :func:`load_data`, before any model is built. Results are written after
every stage (each trial's file replaced atomically), so a crash keeps what was measured.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness import __version__
from harness.config import ConfigError, TrialConfig
from harness.data import (
    MCQuestion,
    Task,
    format_mc_prompt,
    format_prompt,
    load_mc,
    load_task,
    load_texts,
    resolve_data_root,
    resolve_tasks,
    sample_texts,
    target_text,
    tokenize_cached,
)
from harness.data.mmlu import LETTERS
from harness.evaluate import candidate_logliks, generate_exact_match, perplexity
from harness.metrics import all_metrics, matrix_from_long
from harness.models import Built, build, last_hidden_and_logits
from harness.replay import ReplayBuffer, get_method
from harness.train import TokenizedExample, train_task

log = logging.getLogger(__name__)


@dataclass
class TrialData:
    """Every input of a trial, loaded and validated (text, not yet tokenised)."""

    root: Path | None
    tasks: list[Task]
    dropped_tasks: tuple[str, ...]
    probe: list[MCQuestion]
    shots: dict[str, list[MCQuestion]]
    heldout: list[str]
    replay: list[str]


def load_data(cfg: TrialConfig) -> TrialData:
    """Load and check every input the trial needs; raises DataError before expensive work."""
    root = resolve_data_root(cfg.data.root)
    names, dropped = resolve_tasks(
        cfg.data.tasks, root, restrict_to_available=cfg.data.restrict_to_available
    )
    if dropped:
        log.warning("tasks not in %s, dropped from the order: %s", root, ", ".join(dropped))
    tasks = [
        load_task(
            root,
            name,
            label_policy=cfg.data.label_policy,
            max_train=cfg.data.max_train_per_task,
            max_test=cfg.data.max_test_per_task,
            seed=cfg.seed,
        )
        for name in names
    ]
    for t in tasks:
        for note in t.notes:  # caps are routine; dropped or relabelled instances are not
            log.log(logging.INFO if "subsampled" in note else logging.WARNING, "%s", note)
    probe: list[MCQuestion] = []
    shots: dict[str, list[MCQuestion]] = {}
    if cfg.eval.probe:
        probe = load_mc(
            cfg.eval.probe, root, max_questions=cfg.eval.probe_max_questions, seed=cfg.seed
        )
        if cfg.eval.probe_shots:
            for q in load_mc(cfg.eval.probe, root, split="dev"):
                shots.setdefault(q.subject, []).append(q)
    heldout: list[str] = []
    if cfg.eval.heldout:
        heldout = load_texts(
            cfg.eval.heldout, root, max_texts=cfg.eval.heldout_max_texts, seed=cfg.seed
        )
    replay: list[str] = []
    if cfg.replay.method != "none":
        # A Hub corpus is streamed, so only a few times the buffer size is read before sampling.
        cap = 4 * cfg.replay.size if cfg.replay.corpus.startswith("hf:") else None
        texts = load_texts(cfg.replay.corpus, root, max_texts=cap, seed=cfg.seed)
        replay = sample_texts(texts, cfg.replay.size, cfg.seed)
    return TrialData(root, tasks, dropped, probe, shots, heldout, replay)


# --------------------------------------------------------------------------------------------
# Tokenisation: text -> ids, cached by content (harness.data.tokenize)
# --------------------------------------------------------------------------------------------


@dataclass
class TaskTokens:
    train: list[TokenizedExample]
    prompts: list[list[int]]
    candidates: list[list[int]]
    answers: list[int]
    golds: list[str]


def _tokenize_task(task: Task, tok, cfg: TrialConfig, cache: Path | None) -> TaskTokens:
    """Prompt + ' label' (+ EOS when training). Prompts that are too long lose their left end
    (after BOS), so the label and the text nearest to it survive."""
    max_len = cfg.data.max_seq_len
    label_ids = tokenize_cached(
        tok,
        [target_text(lb) for lb in task.labels],
        max_length=max_len,
        add_bos=False,
        cache_dir=cache,
    )
    label_of = dict(zip(task.labels, label_ids, strict=True))
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    longest = max(len(x) for x in label_ids) + len(eos)

    def prompts(examples) -> list[list[int]]:
        ids = tokenize_cached(
            tok,
            [format_prompt(task, ex.input) for ex in examples],
            max_length=10**9,
            cache_dir=cache,
        )
        budget = max_len - longest
        has_bos = tok.bos_token_id is not None
        return [
            p if len(p) <= budget else p[: int(has_bos)] + p[len(p) - budget + int(has_bos) :]
            for p in ids
        ]

    train = [
        TokenizedExample(ids=tuple(p + list(label_of[ex.output]) + eos), n_prompt=len(p))
        for p, ex in zip(prompts(task.train), task.train, strict=True)
    ]
    return TaskTokens(
        train=train,
        prompts=prompts(task.test),
        candidates=[list(x) for x in label_ids],
        answers=[task.labels.index(ex.output) for ex in task.test],
        golds=[ex.output for ex in task.test],
    )


def _probe_requests(cfg: TrialConfig, data: TrialData, tok, cache: Path | None):
    if cfg.eval.probe_format == "letter":
        texts = [
            format_mc_prompt(q, data.shots.get(q.subject, [])[: cfg.eval.probe_shots])
            for q in data.probe
        ]
        cands = [[f" {LETTERS[i]}" for i in range(len(q.choices))] for q in data.probe]
    else:
        texts = [q.question for q in data.probe]
        cands = [[f" {c}" for c in q.choices] for q in data.probe]
    prompts = tokenize_cached(tok, texts, max_length=10**9, cache_dir=cache)
    flat = sorted({c for cs in cands for c in cs})
    ids = dict(
        zip(
            flat,
            tokenize_cached(tok, flat, max_length=10**9, add_bos=False, cache_dir=cache),
            strict=True,
        )
    )
    requests = [(p, [ids[c] for c in cs]) for p, cs in zip(prompts, cands, strict=True)]
    return requests, [q.answer for q in data.probe]


# --------------------------------------------------------------------------------------------
# The trial
# --------------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    trial_id: str
    status: str
    summary: dict
    files: dict[str, Path] = field(default_factory=dict)
    train_tokens: int = 0
    train_seconds: float = 0.0


@dataclass
class StageEnd:
    """Handed to ``on_stage_end`` after every task (on every rank)."""

    stage: int
    task: str
    metrics: dict
    save: Callable[[Path], None]
    """Write a resumable checkpoint into a directory; every rank must call it (ZeRO-3
    gathers shards), rank 0 writes the files."""


def _argmax(xs: list[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


class _Evaluator:
    """Scores every task and general ability for one checkpoint of the model."""

    def __init__(
        self,
        cfg: TrialConfig,
        built: Built,
        tasks: list[Task],
        tok_tasks: list[TaskTokens],
        probe,
        heldout: list[list[int]],
    ):
        self.cfg, self.built, self.tasks, self.tok_tasks = cfg, built, tasks, tok_tasks
        self.probe, self.heldout = probe, heldout
        self.plasticity_batch, self.initial_params = None, None

    def __call__(self, stage: int, after_task: str) -> tuple[list[dict], list[dict]]:
        model, tok, bs = self.built.model, self.built.tokenizer, self.cfg.eval.batch_size
        acc_rows = []
        for pos, (task, tt) in enumerate(zip(self.tasks, self.tok_tasks, strict=True), start=1):
            if self.cfg.eval.scoring == "loglik":
                ll = candidate_logliks(
                    model,
                    [(p, tt.candidates) for p in tt.prompts],
                    pad_id=tok.pad_token_id,
                    batch_size=bs,
                )
                n_correct = sum(int(_argmax(s) == a) for s, a in zip(ll, tt.answers, strict=True))
            else:
                n_correct = generate_exact_match(
                    model,
                    tok,
                    tt.prompts,
                    tt.golds,
                    max_new_tokens=max(len(c) for c in tt.candidates) + 2,
                    batch_size=bs,
                ).n_correct
            n = len(tt.answers)
            acc_rows.append(
                dict(
                    stage=stage,
                    after_task=after_task,
                    task=task.name,
                    task_position=pos,
                    accuracy=n_correct / n,
                    n_correct=n_correct,
                    n_total=n,
                    scoring=self.cfg.eval.scoring,
                )
            )
        general = dict(
            stage=stage,
            after_task=after_task,
            probe=self.cfg.eval.probe or "",
            accuracy=float("nan"),
            n_correct=0,
            n_total=0,
            ppl=float("nan"),
            nll_sum=float("nan"),
            ppl_tokens=0,
        )
        if self.probe is not None:
            requests, answers = self.probe
            ll = candidate_logliks(model, requests, pad_id=tok.pad_token_id, batch_size=bs)
            c = sum(int(_argmax(s) == a) for s, a in zip(ll, answers, strict=True))
            general.update(accuracy=c / len(answers), n_correct=c, n_total=len(answers))
        if self.heldout:
            p = perplexity(model, self.heldout, pad_id=tok.pad_token_id, batch_size=bs)
            general.update(ppl=p.ppl, nll_sum=p.nll_sum, ppl_tokens=p.tokens)
        return acc_rows, [general], self.plasticity(stage, after_task)

    def plasticity(self, stage: int, after_task: str) -> list[dict]:
        if self.plasticity_batch is None:
            return []
        from harness.plasticity import plasticity_rows

        model = self.built.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return plasticity_rows(
                    model,
                    self.plasticity_batch,
                    stage=stage,
                    after_task=after_task,
                    initial_params=self.initial_params,
                )
        finally:
            model.train(was_training)


CHECKPOINT_STATE = "state.json"


def run_trial(
    cfg: TrialConfig,
    *,
    progress: bool = False,
    resume_from: Path | None = None,
    on_stage_end: Callable[[StageEnd], None] | None = None,
) -> TrialResult:
    """Run one trial (or resume it from an end-of-task checkpoint written by ``StageEnd.save``).

    Rank 0 writes accuracy/general/curve after every stage and the summary last. A resumed
    trial starts from the checkpoint's rows, so re-written files hold each row once.
    """
    from harness.backend import deepspeed_config, make_backend
    from results.io import write_records

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    trial_id = cfg.id
    data = load_data(cfg)
    if cfg.landscape.enabled:
        _Landscape.check(cfg, data)  # before the model is built
    state = json.loads((resume_from / CHECKPOINT_STATE).read_text()) if resume_from else None
    if state and state["trial_id"] != trial_id:
        raise ValueError(
            f"checkpoint {resume_from} belongs to trial {state['trial_id']!r}, not {trial_id!r}"
        )
    method = get_method(
        cfg.replay.method,
        **({"k": cfg.replay.tm_k} if cfg.replay.method == "tm" else {}),
        **({"temperature": cfg.replay.kl_temperature} if cfg.replay.method == "kl" else {}),
    )
    weight = cfg.replay.weight if cfg.replay.weight is not None else method.default_weight
    zero3 = (
        deepspeed_config(cfg)
        if cfg.scale.backend == "deepspeed" and cfg.scale.zero_stage == 3
        else None
    )
    built = build(
        cfg.model,
        seed=cfg.seed,
        keep_reference=method.needs_reference and cfg.model.tuning == "full",
        weights=resume_from / "model" if resume_from else None,
        zero3_config=zero3,
    )
    backend = make_backend(built, cfg)
    rank0 = backend.rank == 0
    tok = built.tokenizer
    cache = Path(cfg.data.cache_dir) / "tokens" if cfg.data.cache_dir else None
    tok_tasks = [_tokenize_task(t, tok, cfg, cache) for t in data.tasks]
    probe = _probe_requests(cfg, data, tok, cache) if data.probe else None
    heldout = (
        tokenize_cached(tok, data.heldout, max_length=cfg.eval.heldout_max_tokens, cache_dir=cache)
        if data.heldout
        else []
    )
    buffer = None
    if data.replay:
        ids = tokenize_cached(tok, data.replay, max_length=cfg.replay.max_tokens, cache_dir=cache)
        buffer = ReplayBuffer(token_ids=tuple(tuple(x) for x in ids), pad_id=tok.pad_token_id)
        if resume_from and (resume_from / "replay").exists():
            method.load_state(resume_from / "replay")
        else:
            # Before the first step the model being trained *is* the starting model.
            with _as_is(backend.module) as m:
                method.prepare(
                    lambda i, a, m=m: last_hidden_and_logits(m, i, a)[1],
                    buffer,
                    batch_size=cfg.eval.batch_size,
                )
    evaluate = _Evaluator(cfg, built, data.tasks, tok_tasks, probe, heldout)
    if cfg.eval.plasticity_texts and heldout:
        if cfg.scale.backend == "deepspeed" and cfg.scale.zero_stage == 3:
            log.warning("plasticity diagnostics skipped: ZeRO-3 shards the weights they read")
        else:
            evaluate.plasticity_batch, evaluate.initial_params = _plasticity_setup(
                cfg, built, heldout, resumed=state is not None
            )
    rows = (
        state["rows"] if state else {"accuracy": [], "general": [], "curve": [], "plasticity": []}
    )
    acc, general, curve = rows["accuracy"], rows["general"], rows["curve"]
    plasticity = rows.setdefault("plasticity", [])
    land = (
        _Landscape(cfg, data, tok_tasks, heldout, tok.pad_token_id)
        if cfg.landscape.enabled
        else None
    )
    landscape = rows.setdefault("landscape", [])
    if land is not None and state:
        # Points of the interrupted stage were saved as they finished: keep them.
        landscape += land.partial_rows(backend, cfg, trial_id, after_stage=state["finished_stage"])
    progress_state = {
        "global_step": state["global_step"] if state else 0,
        "tokens": state["train_tokens"] if state else 0,
        "train_seconds": state["train_seconds"] if state else 0.0,
    }
    first_stage = state["finished_stage"] + 1 if state else 1
    if state and "torch_rng" in state:
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    files: dict[str, Path] = {}

    def flush() -> None:
        if rank0:
            kinds = [("accuracy", acc), ("general", general), ("curve", curve)]
            if evaluate.plasticity_batch is not None:
                kinds.append(("plasticity", plasticity))
            if land is not None:
                kinds.append(("landscape", landscape))
            for kind, kind_rows in kinds:
                files[kind] = write_records(
                    cfg.out, kind, kind_rows, study=cfg.study, trial_id=trial_id
                )

    def write_summary(status, error, diverged) -> dict:
        summary = _summary(cfg, data, acc, general, status, error, diverged, start)
        if rank0:
            files["summary"] = write_records(
                cfg.out, "summary", [summary], study=cfg.study, trial_id=trial_id
            )
        return summary

    def save_checkpoint(stage: int, path: Path) -> None:
        backend.save_model(path / "model")
        if rank0:
            method.save_state(path / "replay")
            body = {
                "trial_id": trial_id,
                "finished_stage": stage,
                "rows": {
                    "accuracy": acc,
                    "general": general,
                    "curve": curve,
                    "plasticity": plasticity,
                    "landscape": landscape,
                },
                "global_step": progress_state["global_step"],
                "train_tokens": progress_state["tokens"],
                "train_seconds": progress_state["train_seconds"],
                "torch_rng": torch.get_rng_state().tolist(),
            }
            (path / CHECKPOINT_STATE).write_text(json.dumps(body))
        backend.barrier()

    def record_landscape(stage: int) -> None:
        """This checkpoint's slices (sharded over the ranks), then what the next one needs."""
        if land is None:
            return
        if stage in land.stages:
            t0 = time.perf_counter()
            before = len(landscape)

            def saved(new_rows: list[dict]) -> None:
                landscape.extend(new_rows)
                flush()

            land.record(built.model, stage, backend, done=landscape, on_rows=saved)
            if rank0:
                log.info(
                    "trial %s: landscape at stage %d: %d rows in %.1f s (%d ranks)",
                    trial_id,
                    stage,
                    len(landscape) - before,
                    time.perf_counter() - t0,
                    backend.world_size,
                )
        land.keep_for_next(built.model, stage)

    status, error, diverged = "completed", None, (None, None)
    try:
        if not state:
            a, g, pl = evaluate(0, "<start>")
            acc += a
            general += g
            plasticity += pl
            flush()
            record_landscape(0)
        elif land is not None:
            land.keep_for_next(built.model, state["finished_stage"])
        for stage, (task, tt) in enumerate(zip(data.tasks, tok_tasks, strict=True), start=1):
            if stage < first_stage:
                continue
            t0 = time.perf_counter()
            outcome = train_task(
                built,
                backend,
                task_examples=tt.train,
                buffer=buffer,
                method=method,
                weight=weight,
                cfg=cfg.train,
                per_batch=cfg.replay.per_batch,
                stage=stage,
                task=task.name,
                global_step=progress_state["global_step"],
                seed=cfg.seed,
                progress=progress,
            )
            progress_state["train_seconds"] += time.perf_counter() - t0
            progress_state["tokens"] += outcome.tokens
            progress_state["global_step"] += outcome.steps
            curve += outcome.curve
            if outcome.diverged_step is not None:
                status, diverged = "diverged", (stage, outcome.diverged_step)
                log.warning(
                    "trial %s diverged at task %d (%s), step %d",
                    trial_id,
                    stage,
                    task.name,
                    outcome.diverged_step,
                )
                break
            a, g, pl = evaluate(stage, task.name)
            acc += a
            general += g
            plasticity += pl
            flush()
            record_landscape(stage)
            if on_stage_end is not None:
                metrics = {
                    "stage": stage,
                    "task": task.name,
                    "task_accuracy": a[stage - 1]["accuracy"],
                    "mean_accuracy": sum(r["accuracy"] for r in a[:stage]) / stage,
                    "general_accuracy": g[0]["accuracy"],
                    "general_ppl": g[0]["ppl"],
                }
                on_stage_end(
                    StageEnd(stage, task.name, metrics, lambda p, s=stage: save_checkpoint(s, p))
                )
    except Exception as exc:  # record the failure, keep partial results, then re-raise
        status, error = "failed", f"{type(exc).__name__}: {exc}"
        flush()
        write_summary(status, error, diverged)
        raise
    flush()
    summary = write_summary(status, error, diverged)
    return TrialResult(
        trial_id, status, summary, files, progress_state["tokens"], progress_state["train_seconds"]
    )


def _plasticity_setup(cfg: TrialConfig, built: Built, heldout: list[list[int]], *, resumed: bool):
    """The fixed probe batch (first held-out texts) and the starting weights to measure from."""
    from harness.landscape import EvalBatch
    from harness.models import load_tokenizer_and_model
    from harness.plasticity import snapshot_weights

    rows = [
        TokenizedExample(ids=tuple(t), n_prompt=0) for t in heldout[: cfg.eval.plasticity_texts]
    ]
    batch = EvalBatch.from_examples(rows, built.tokenizer.pad_token_id)
    if not resumed:
        return batch, snapshot_weights(built.model)
    # A resumed model is no longer the start: load the starting weights again to measure from.
    dtype = next(built.model.parameters()).dtype
    start = load_tokenizer_and_model(cfg.model.name, dtype=dtype, seed=cfg.seed)[1]
    return batch, snapshot_weights(start)


class _Landscape:
    """A trial's loss-landscape recording: fixed evaluation batches, the stages to slice, and
    the previous checkpoint's weights for the interpolation."""

    def __init__(self, cfg: TrialConfig, data: TrialData, tok_tasks, heldout, pad_id: int):
        from harness.landscape import eval_batches

        self.cfg = cfg.landscape
        self.stages = self.check(cfg, data)
        self.names = names = [t.name for t in data.tasks]
        c = self.cfg
        rng = random.Random(cfg.seed)

        def sample(n: int) -> list[int]:
            return sorted(rng.sample(range(n), min(n, c.examples_per_dataset)))

        def batches(examples):
            return eval_batches(examples, pad_id, batch_size=c.batch_size, max_tokens=c.max_tokens)

        # The loss of each task is that of its gold answers on a fixed sample of test prompts;
        # a prompt too long for max_tokens loses its left end (after BOS), never the answer.
        self.task_batches = {}
        for name, tt in zip(names, tok_tasks, strict=True):
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
        self.general = (
            batches(
                [TokenizedExample(ids=tuple(heldout[i]), n_prompt=0) for i in sample(len(heldout))]
            )
            if heldout
            else None
        )
        self.prev = None

    @staticmethod
    def check(cfg: TrialConfig, data: TrialData) -> list[int]:
        """The stages to slice; ConfigError if a stage or dataset does not exist in this trial
        (run before the model is built, and on the driver by :func:`preflight`)."""
        names = [t.name for t in data.tasks]
        stages = cfg.landscape.stage_list(len(names))
        known = ("prev", "new", "general", *names)
        unknown = [d for d in cfg.landscape.datasets if d not in known]
        if unknown:
            raise ConfigError(
                [
                    f"landscape.datasets: {unknown} are neither 'prev', 'new', 'general' nor "
                    f"tasks of this trial ({', '.join(names)})"
                ]
            )
        return stages

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

    def record(self, model, stage: int, backend, *, done, on_rows) -> list[dict]:
        from harness.landscape import record_stage

        return record_stage(
            model,
            self.cfg,
            stage,
            self.batches(stage),
            prev=self.prev if self.cfg.interpolation else None,
            done=[r for r in done if r["stage"] == stage],
            rank=backend.rank,
            world=backend.world_size,
            gather=backend.gather,
            on_rows=on_rows if backend.rank == 0 else None,
        )

    def keep_for_next(self, model, stage: int) -> None:
        """Hold this checkpoint's weights when the next stage interpolates from it."""
        from harness.landscape import previous_weights

        need = self.cfg.interpolation and stage + 1 in self.stages
        self.prev = previous_weights(model) if need else None

    def partial_rows(self, backend, cfg: TrialConfig, trial_id: str, *, after_stage: int):
        """Rows of stages after the checkpoint, saved before the trial was interrupted (read
        on rank 0, shared with every rank so all skip the same points)."""
        from results.io import read_trial_rows

        rows = []
        if backend.rank == 0:
            stored = read_trial_rows(cfg.out, "landscape", study=cfg.study, trial_id=trial_id)
            rows = [r for r in stored if r["stage"] > after_stage]
        return backend.gather(rows)[0]


class _as_is:
    """Yields the model itself in eval mode (restoring its mode afterwards)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was)


def _summary(cfg, data: TrialData, acc, general, status, error, diverged, start) -> dict:
    import pandas as pd

    from harness.metrics import METRICS

    metrics = dict.fromkeys(METRICS, float("nan"))
    n = len(data.tasks)
    if acc and len({r["stage"] for r in acc}) == n + 1:
        A, _ = matrix_from_long(pd.DataFrame(acc))
        metrics = all_metrics(A)
    return dict(
        status=status,
        error=error,
        diverged_stage=diverged[0],
        diverged_step=diverged[1],
        wall_time_s=time.perf_counter() - start,
        n_tasks=n,
        tasks=",".join(t.name for t in data.tasks),
        model=cfg.model.name,
        tuning=cfg.model.tuning,
        method=cfg.replay.method,
        replay_size=len(data.replay),
        replay_weight=str(cfg.replay.weight if cfg.replay.weight is not None else "default"),
        lr=cfg.train.lr,
        lr_multiplier=cfg.train.lr_multiplier,
        seed=cfg.seed,
        **metrics,
        general_acc_start=general[0]["accuracy"] if general else float("nan"),
        general_acc_final=general[-1]["accuracy"] if general else float("nan"),
        general_ppl_start=general[0]["ppl"] if general else float("nan"),
        general_ppl_final=general[-1]["ppl"] if general else float("nan"),
        config_json=json.dumps(cfg.to_dict(), sort_keys=True),
        harness_version=__version__,
    )


def preflight(configs: list[TrialConfig]) -> None:
    """Load every distinct data setting of a grid on the driver before anything is scheduled,
    so a missing task, a malformed file or a replay buffer larger than its corpus fails in
    seconds, naming the grid point. Hub sources (hf:...) are left to the trials."""
    from harness.data import DataError

    seen: dict[str, str] = {}
    problems: dict[str, list[str]] = {}  # message -> grid points
    for cfg in configs:
        d = cfg.to_dict()
        key = json.dumps(
            [
                d["data"],
                d["replay"]["method"],
                d["replay"]["corpus"],
                d["replay"]["size"],
                d["eval"],
                d["seed"],
                d["landscape"],
            ],
            sort_keys=True,
        )
        if key in seen or "hf:" in key:
            continue
        seen[key] = cfg.id
        try:
            data = load_data(cfg)
            if cfg.landscape.enabled:
                _Landscape.check(cfg, data)
        except (DataError, ConfigError) as exc:
            problems.setdefault(str(exc), []).append(cfg.id)
    if problems:
        raise DataError(
            "\n".join(f"grid point(s) {', '.join(ids)}: {msg}" for msg, ids in problems.items())
        )
