"""lm-evaluation-harness tasks as general-ability probes (``eval.lm_eval_tasks``).

Any lm-eval task or group (ARC, HellaSwag, PIQA, Winogrande, BoolQ, MMLU ..., or a local task
YAML under ``eval.lm_eval_include_path``) is scored inside the trial, at every stage, by
lm-eval itself: its task building, prompts, few-shot sampling, metrics and aggregation, through
``lm_eval.simple_evaluate`` with its default settings. Only the model calls are the harness's:
:class:`HarnessLM` is an ``lm_eval.api.model.TemplateLM`` (lm-eval's documented extension point)
whose token-level scoring is the harness's one-forward scorer
(:func:`harness.evaluate.candidate_scores`) sharded over the trial's ranks.

How the ranks stay in step under ZeRO-3: every rank runs lm-eval as one process (lm-eval's
``world_size`` is 1 on each), so every rank builds the same requests; the scorer the trial
passes in deals them out (:func:`harness.eval_stage.on_shards`: contiguous shares, every rank
making the same number of forward calls) and gathers the results, so every rank gets every
score and lm-eval computes the same metrics on each. No ``accelerate`` object is needed.

Tokenisation is HFLM's with its defaults (``add_bos_token=None``: the tokenizer's own special
tokens; a string that already starts with BOS gets none added; an empty context is the BOS
token, else EOS), as are the left truncation to the model's length and the rolling windows of
``loglikelihood_rolling`` (lm-eval's own ``get_rolling_token_windows``), so the log-likelihoods
equal HFLM's on the same model (tests/harness/test_lm_eval.py). Generative tasks
(``generate_until``) are refused when the trial is set up, before any training.

lm-eval is an optional extra: ``pip install -e '.[lm-eval]'``.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

INSTALL = "pip install -e '.[lm-eval]' (or pip install 'lm-eval>=0.4.13')"

Scorer = Callable[[list[tuple[list[int], list[list[int]]]]], list[list[tuple[float, bool]]]]
"""[(context ids, [continuation ids, ...]), ...] -> [[(log-likelihood, is_greedy), ...], ...]."""


MIN_VERSION = (0, 4, 13)
"""The lm-eval release this adapter is tested with (its HFLM defaults: the tokenizer's own
BOS rule, ``resolve_max_length``, ``has_bos_prefix``); earlier ones differ."""


def require_lm_eval():
    """The ``lm_eval`` module, or an ImportError that says how to install it (a release
    older than :data:`MIN_VERSION` included)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        import lm_eval

        found = version("lm_eval")
    except (ImportError, PackageNotFoundError) as exc:
        raise ImportError(
            f"eval.lm_eval_tasks needs lm-evaluation-harness, which is not installed ({exc}). "
            f"Fix: {INSTALL}, or leave eval.lm_eval_tasks empty."
        ) from exc
    from packaging.version import Version

    if Version(found).release < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise ImportError(
            f"eval.lm_eval_tasks: lm-eval {found} is installed; the harness's adapter needs "
            f">= {wanted} (its HFLM defaults, which the scores must equal). Fix: pip install "
            f"'lm-eval>={wanted}'."
        )
    return lm_eval


def include_path(cfg) -> Path | None:
    """``eval.lm_eval_include_path`` resolved: absolute, or relative to ``data.root``."""
    raw = cfg.eval.lm_eval_include_path
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute() and cfg.data.root:
        path = Path(cfg.data.root).expanduser() / path
    return path


def task_manager(cfg):
    """lm-eval's ``TaskManager`` with the trial's include path (its task YAMLs beside lm-eval's)."""
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    path = include_path(cfg)
    if path is not None and not path.is_dir():
        raise FileNotFoundError(
            f"eval.lm_eval_include_path={cfg.eval.lm_eval_include_path!r}: no directory at "
            f"{path}. It must be a directory of lm-eval task YAMLs (absolute, or relative to "
            "data.root). Fix the path, or unset it to use lm-eval's own tasks only."
        )
    return TaskManager(include_path=str(path) if path else None)


def check_tasks(cfg, manager, *, build: bool = True) -> list[str]:
    """The configured task names, checked against what lm-eval knows, and (``build``: the
    tasks are built, which reads their datasets, from the Hub for most) every (sub)task's
    output type; raises ValueError naming each unknown or generative task and the fix."""
    from harness.suggest import did_you_mean

    names = list(cfg.eval.lm_eval_tasks)
    known = set(manager.all_tasks)
    unknown = [n for n in names if n not in known]
    if unknown:
        hints = "; ".join(f"{n!r}{did_you_mean(n, known)}" for n in unknown)
        raise ValueError(
            f"eval.lm_eval_tasks: lm-eval knows no task or group {hints}. Names are lm-eval's "
            "(`lm_eval ls tasks` lists them); a local task needs its YAML under "
            "eval.lm_eval_include_path."
        )
    if not build:
        return names
    generative = sorted(
        name
        for name, task in _leaves(manager.load_task_or_group(names))
        if task.OUTPUT_TYPE == "generate_until"
    )
    if generative:
        raise ValueError(
            f"eval.lm_eval_tasks: {generative} generate text (lm-eval output_type "
            "'generate_until'); the harness scores log-likelihood tasks (multiple_choice, "
            "loglikelihood, loglikelihood_rolling) inside a trial. Fix: drop them here and run "
            "them on a saved model (--save-models final, then the printed lm_eval command)."
        )
    return names


def _leaves(tree: dict) -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value)
        else:
            yield getattr(key, "group_name", key) if not isinstance(key, str) else key, value


def max_length(model, tokenizer) -> int:
    """The context length lm-eval's HFLM gives this model by default."""
    from lm_eval.models.utils import resolve_max_length

    return resolve_max_length(model.config, tokenizer, default=2048)


def harness_lm(tokenizer, score: Scorer, length: int):
    """A :class:`HarnessLM` (built here so lm-eval is imported only when it is used)."""
    require_lm_eval()
    from lm_eval.api.model import TemplateLM

    class HarnessLM(TemplateLM):
        """lm-eval's model interface over the harness's scorer: log-likelihoods of
        (context, continuation) pairs, contexts shared by several continuations in one
        forward, and rolling log-likelihoods, all through ``score``."""

        def __init__(self) -> None:
            super().__init__()
            self.tokenizer = tokenizer
            self._max_length = length

        @property
        def eot_token_id(self) -> int:
            return self.tokenizer.eos_token_id

        @property
        def prefix_token_id(self) -> int:
            bos = self.tokenizer.bos_token_id
            return bos if bos is not None else self.tokenizer.eos_token_id

        @property
        def max_length(self) -> int:
            return self._max_length

        def tok_encode(
            self,
            string: str,
            add_special_tokens: bool | None = None,
            left_truncate_len: int | None = None,
            **kwargs,
        ) -> list[int]:
            from lm_eval.models.utils import has_bos_prefix

            special = (
                {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            )
            if add_special_tokens is None and has_bos_prefix(
                string, self.tokenizer.decode(self.prefix_token_id)
            ):
                special["add_special_tokens"] = False
            ids = self.tokenizer.encode(string, **special)
            return ids[-left_truncate_len:] if left_truncate_len else ids

        def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
            return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            return score_pairs(score, [(c, x) for _, c, x in requests], self.max_length)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            from lm_eval import utils

            windows, owner = [], []
            for i, (text,) in enumerate(req.args for req in requests):
                for w in utils.get_rolling_token_windows(
                    token_list=self.tok_encode(text),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ):
                    windows.append(utils.make_disjoint_window(w))
                    owner.append(i)
            totals = [0.0] * len(requests)
            for i, (ll, _) in zip(owner, score_pairs(score, windows, self.max_length), strict=True):
                totals[i] += ll
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            raise NotImplementedError(
                "generate_until: the harness scores log-likelihood tasks only (see "
                "harness.lm_eval_tasks.check_tasks)"
            )

    return HarnessLM()


def score_pairs(
    score: Scorer, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], length: int
) -> list[tuple[float, bool]]:
    """``(log-likelihood, is_greedy)`` of each (context ids, continuation ids): contexts longer
    than the model's length lose their left end as in HFLM (the last ``length + 1`` tokens of
    context + continuation are kept), and pairs with the same context are one request of
    several candidates (one forward), up to ``length + 1`` tokens per request."""
    groups: dict[tuple[int, ...], list[list[tuple[int, list[int]]]]] = {}
    for i, (context, continuation) in enumerate(pairs):
        cont = list(continuation)
        if len(cont) > length:
            raise ValueError(
                f"an lm-eval continuation of {len(cont)} tokens exceeds the model's length "
                f"{length}; the harness does not truncate continuations"
            )
        keep = (list(context) + cont)[-(length + 1) :]
        ctx = tuple(keep[: len(keep) - len(cont)])
        chunks = groups.setdefault(ctx, [[]])
        # A packed row holds the context and its continuations side by side: it saves
        # recomputing the context, and its attention grows with the square of its length. A
        # continuation longer than its context gets a row of its own (documents that merely
        # share a short context, BOS alone, are not one long row), and no row holds more than
        # length + 1 tokens.
        used = len(ctx) + sum(len(c) for _, c in chunks[-1])
        if chunks[-1] and (used + len(cont) > length + 1 or len(cont) > len(ctx)):
            chunks.append([])
        chunks[-1].append((i, cont))
    rows = [(ctx, members) for ctx, chunks in groups.items() for members in chunks]
    requests = [(list(ctx), [c for _, c in members]) for ctx, members in rows]
    out: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
    for (_, members), scores in zip(rows, score(requests), strict=True):
        for (i, _), (ll, greedy) in zip(members, scores, strict=True):
            out[i] = (float(ll), bool(greedy))
    return out


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    """Leave Python's, NumPy's and torch's global random states as they were: simple_evaluate
    seeds them (its defaults: 0, 1234, 1234), which must not change the trial's training."""
    import numpy as np
    import torch

    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def _as_one_process() -> Iterator[None]:
    """simple_evaluate returns its results only where ``LOCAL_RANK`` is 0 (under torchrun it
    takes the other ranks for tensor-parallel followers); here every rank is a whole lm-eval
    process over the sharded scorer, so each must get them (and each runs in one process)."""
    import os

    # DISABLE_MULTIPROC: lm-eval's bootstrap standard errors (perplexity metrics) would fork a
    # pool of every CPU on each rank, inside a multi-threaded Ray/NCCL process; its one-process
    # path uses the same seeds, so the numbers are the same.
    set_now = {"LOCAL_RANK": "0", "DISABLE_MULTIPROC": "1"}
    before = {k: os.environ.get(k) for k in set_now}
    os.environ.update(set_now)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def evaluate(cfg, lm, manager) -> dict:
    """``lm_eval.simple_evaluate`` of the configured tasks on ``lm`` with lm-eval's defaults
    (its seeds, bootstrap and few-shot sampling), keeping the caller's random state."""
    lm_eval = require_lm_eval()
    with kept_rng(), _as_one_process():
        return lm_eval.simple_evaluate(
            model=lm,
            tasks=list(cfg.eval.lm_eval_tasks),
            num_fewshot=cfg.eval.lm_eval_num_fewshot,
            limit=cfg.eval.lm_eval_limit,
            log_samples=True,
            task_manager=manager,
        )


def rows_of(out: dict, base: dict) -> tuple[list[dict], list[dict]]:
    """``lm_eval`` rows (one per task or group, metric and filter) and ``predictions`` rows
    (one per scored document, keyed by lm-eval's ``doc_id``) of a simple_evaluate result."""
    groups = set(out.get("groups") or {})
    shots = out.get("n-shot") or {}
    counts = out.get("n-samples") or {}
    rows = []
    for task, metrics in out["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append(
                dict(
                    **base,
                    task=task,
                    metric=metric,
                    filter=filt,
                    value=_number(value),
                    stderr=_number(stderr),
                    n_samples=_count(counts.get(task), out, task),
                    num_fewshot=_shots(shots.get(task)),
                    is_group=task in groups,
                )
            )
    predictions = []
    for task, samples in (out.get("samples") or {}).items():
        first = samples[0].get("filter") if samples else None  # one row per document
        for s in sorted(samples, key=lambda s: s["doc_id"]):
            if s.get("filter") == first:
                predictions.append(dict(**base, **_prediction(task, s)))
    return rows, predictions


def _prediction(task: str, s: dict) -> dict:
    """One document's predictions row: every request's log-likelihood; ``correct`` is lm-eval's
    own per-document ``acc`` where the task has it (the arg-max choice is the target; for a
    one-continuation task, the continuation is the greedy one)."""
    lls = [float(r[0][0]) if isinstance(r[0], list | tuple) else float(r[0]) for r in s["resps"]]
    conts = [a[1] if len(a) > 1 else "" for a in s["arguments"]]
    target = s.get("target")
    gold, predicted = (str(target) if target is not None else ""), ""
    if len(lls) > 1:  # multiple choice: choices are told apart by their text, else by index
        best = max(range(len(lls)), key=lls.__getitem__)
        distinct = len(set(conts)) == len(conts)
        predicted = conts[best].strip() if distinct else str(best)
        if isinstance(target, int) and 0 <= target < len(conts) and distinct:
            gold = conts[target].strip()
    if "acc" in s:
        correct = bool(s["acc"])
    elif len(lls) > 1:  # multiple choice scored by other metrics: the arg-max is the target
        correct = isinstance(target, int) and best == target
    else:
        first = s["resps"][0][0]
        correct = bool(first[1]) if isinstance(first, list | tuple) and len(first) > 1 else False
    return dict(
        task=f"lm_eval:{task}",
        example=int(s["doc_id"]),
        item=f"{task}/{s['doc_id']}",
        gold=gold,
        predicted=predicted,
        correct=correct,
        logliks=lls,
        generated=None,
        scoring="lm_eval",
    )


def _number(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):  # lm-eval writes "N/A" for a stderr it did not compute
        return math.nan
    return x


def _count(entry: Any, out: dict, task: str) -> int | None:
    if isinstance(entry, dict) and "effective" in entry:
        return int(entry["effective"])
    samples = (out.get("samples") or {}).get(task)
    return len(samples) if samples is not None else None


def _shots(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
