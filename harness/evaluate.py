"""Score tasks and general ability. Pure functions of (model, tokenised inputs); no I/O.

How an answer is scored (``eval.scoring``):

* ``loglik`` (default): for every candidate label c, the summed log-probability of c's tokens
  after the prompt; the prediction is the arg-max over the task's labels (labels.json). The model
  can only ever "answer" a valid label, so this measures what it prefers, not whether it has
  learnt the output format.
* ``generate``: greedy decoding of up to (longest label + 2) tokens; correct when the decoded
  text, stripped of whitespace and cut at the first newline, equals the gold label exactly.

The multiple-choice probe always uses ``loglik`` over its choices (letters or choice texts,
``eval.probe_format``). Perplexity is exp(total NLL / total predicted tokens) over held-out texts,
with the NLL sum and token count kept so any aggregation can be redone.

:class:`EvaluationHook` runs all of it for a trial: before the first task and after every task.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.core import device_of, eval_mode, pad
from harness.hooks import Hook

Request = tuple[Sequence[int], Sequence[Sequence[int]]]
"""(prompt token ids, [candidate token ids, ...]) — one multiple-choice decision."""


@dataclass(frozen=True)
class Scores:
    n_correct: int
    n_total: int

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_total if self.n_total else float("nan")


@torch.no_grad()
def pairwise_logliks(
    model: torch.nn.Module, requests: Sequence[Request], *, pad_id: int, batch_size: int
) -> list[list[float]]:
    """The reference scorer (slow): one right-padded row per (prompt, candidate) pair and a
    full-vocabulary log-softmax at every position. :func:`candidate_logliks` computes the
    same numbers from one forward per prompt; tests and ``benchmarks/eval_cost.py`` compare
    the two."""
    pairs = [(r, c) for r, (_, cands) in enumerate(requests) for c in range(len(cands))]
    seqs = [list(requests[r][0]) + list(requests[r][1][c]) for r, c in pairs]
    order = sorted(range(len(pairs)), key=lambda i: len(seqs[i]))
    out = [[0.0] * len(cands) for _, cands in requests]
    device = device_of(model)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad([seqs[i] for i in chunk], pad_id)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = F.log_softmax(logits, dim=-1)
            for row, i in enumerate(chunk):
                r, c = pairs[i]
                n_prompt, n = len(requests[r][0]), len(seqs[i])
                targets = ids[row, n_prompt:n]
                picked = logp[row, n_prompt - 1 : n - 1].gather(1, targets[:, None])
                out[r][c] = float(picked.sum())
    return out


def _decoder_and_head(model: torch.nn.Module):
    """The causal LM's transformer body and output head (through a PEFT wrapper), so hidden
    states are computed once and the head runs only at the positions that are scored."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def _pack(prompt: Sequence[int], cands: Sequence[Sequence[int]]):
    """One row for a prompt and all its candidates: the prompt, then each candidate without
    its last token (the last one is only ever predicted). Returns (ids, positions, segment of
    each token: -1 prompt, j candidate j) and, per candidate, the row index of the hidden
    state that predicts each of its tokens."""
    ids, pos, seg = list(prompt), list(range(len(prompt))), [-1] * len(prompt)
    readers = []
    for j, c in enumerate(cands):
        start = len(ids)
        ids += list(c[:-1])
        pos += range(len(prompt), len(prompt) + len(c) - 1)
        seg += [j] * (len(c) - 1)
        # token 0 is predicted by the prompt's last position, token k by candidate token k-1
        readers.append([len(prompt) - 1] + [start + k for k in range(len(c) - 1)])
    return ids, pos, seg, readers


@torch.no_grad()
def candidate_logliks(
    model: torch.nn.Module, requests: Sequence[Request], *, pad_id: int, batch_size: int
) -> list[list[float]]:
    """Summed log-likelihood of every candidate continuation of every prompt, from one forward
    per prompt.

    Each prompt is one row holding the prompt and all its candidates side by side (a packed
    row, :func:`_pack`): a block attention mask lets every candidate token see the prompt and
    the earlier tokens of its own candidate only, and position ids restart after the prompt for
    each candidate, so each candidate is scored exactly as if it followed the prompt alone.
    Single-token candidates (MMLU letters, most labels) cost no extra token: they are read at
    the prompt's last position. The output head and the log-softmax run only at the positions
    that are scored. Rows are sorted by length so batches waste little padding. Equal to
    :func:`pairwise_logliks` up to float rounding (tests: 1e-4).
    """
    decoder, head = _decoder_and_head(model)
    packed = [_pack(p, c) for p, c in requests]
    order = sorted(range(len(requests)), key=lambda i: len(packed[i][0]))
    out = [[0.0] * len(cands) for _, cands in requests]
    device = device_of(model)
    with eval_mode(model):
        dtype = next(model.parameters()).dtype
        for chunk in length_batches([len(packed[i][0]) for i in order], order, batch_size):
            width = max(len(packed[i][0]) for i in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            pos = torch.zeros((len(chunk), width), dtype=torch.long)
            seg = torch.full((len(chunk), width), -2, dtype=torch.long)  # -2: padding
            for row, i in enumerate(chunk):
                n = len(packed[i][0])
                ids[row, :n] = torch.tensor(packed[i][0])
                pos[row, :n] = torch.tensor(packed[i][1])
                seg[row, :n] = torch.tensor(packed[i][2])
            if bool((seg >= 0).any()):  # packed candidates: the block mask
                mask = _block_mask(seg, dtype).to(device)
            else:  # prompts only (single-token candidates): plain causal attention
                mask = (seg != -2).long().to(device)
            hidden = decoder(
                input_ids=ids.to(device), attention_mask=mask, position_ids=pos.to(device)
            ).last_hidden_state
            rows, cols, targets, owners = [], [], [], []
            for row, i in enumerate(chunk):
                for j, (cand, readers) in enumerate(zip(requests[i][1], packed[i][3], strict=True)):
                    rows += [row] * len(readers)
                    cols += readers
                    targets += list(cand)
                    owners += [(i, j)] * len(readers)
            logits = head(hidden[torch.tensor(rows), torch.tensor(cols)]).float()
            picked = logits.gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
            logp = (picked - torch.logsumexp(logits, dim=-1)).tolist()
            for (i, j), v in zip(owners, logp, strict=True):
                out[i][j] += v
    return out


def length_batches(lengths: Sequence[int], items: Sequence, batch_size: int) -> list[list]:
    """``items`` (sorted by their ``lengths``, ascending) in batches of at most ``batch_size``
    rows and at most ``batch_size`` x the median length in padded tokens, so a few very long
    rows are not padded together with many short ones (and a batch's memory stays near a
    typical batch's)."""
    if not items:
        return []
    budget = batch_size * max(1, int(statistics.median(lengths)))
    batches, cur = [], []
    for length, item in zip(lengths, items, strict=True):
        if cur and (len(cur) == batch_size or (len(cur) + 1) * length > budget):
            batches.append(cur)
            cur = []
        cur.append(item)
    return [*batches, cur] if cur else batches


def _block_mask(seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive [B, 1, L, L] mask: query q sees key k <= q when k is a prompt token or in q's
    own candidate; a padding position sees only itself."""
    q, k = seg[:, :, None], seg[:, None, :]
    idx = torch.arange(seg.shape[1])
    causal = idx[None, :, None] >= idx[None, None, :]
    allowed = causal & ((k == -1) | (k == q)) & (q != -2)
    allowed |= torch.eye(seg.shape[1], dtype=torch.bool)[None]
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def multiple_choice(
    model: torch.nn.Module,
    requests: Sequence[Request],
    answers: Sequence[int],
    *,
    pad_id: int,
    batch_size: int,
) -> Scores:
    """Accuracy of arg-max log-likelihood over each request's candidates."""
    ll = candidate_logliks(model, requests, pad_id=pad_id, batch_size=batch_size)
    correct = sum(
        int(max(range(len(s)), key=s.__getitem__) == a) for s, a in zip(ll, answers, strict=True)
    )
    return Scores(correct, len(answers))


@torch.no_grad()
def generate_exact_match(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    golds: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
) -> Scores:
    """Greedy decoding; exact match of the stripped first line with the gold label."""
    device = device_of(model)
    correct = 0
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids, mask = pad(chunk, tokenizer.pad_token_id, left=True)
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts = tokenizer.batch_decode(gen[:, ids.shape[1] :], skip_special_tokens=True)
            for text, gold in zip(texts, golds[start : start + batch_size], strict=True):
                correct += int(text.strip().split("\n")[0].strip() == gold)
    return Scores(correct, len(prompts))


@dataclass(frozen=True)
class Perplexity:
    nll_sum: float
    tokens: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll_sum / self.tokens) if self.tokens else float("nan")


@torch.no_grad()
def perplexity(
    model: torch.nn.Module, texts: Sequence[Sequence[int]], *, pad_id: int, batch_size: int
) -> Perplexity:
    """Token-level NLL of every text (each token predicted from its prefix)."""
    device = device_of(model)
    nll, count = 0.0, 0
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size] if len(texts[i]) > 1]
            if not chunk:
                continue
            ids, mask = pad(chunk, pad_id)
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            tok_nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            valid = mask[:, 1:].bool()
            nll += float(tok_nll[valid].sum())
            count += int(valid.sum())
    return Perplexity(nll, count)


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=xs.__getitem__)


class EvaluationHook(Hook):
    """Scores every task (the accuracy matrix, future tasks included) and general ability
    (probe accuracy, held-out perplexity) of the starting model and after every task."""

    kinds = ("accuracy", "general")

    def before_first_task(self, trial) -> None:
        self._record(trial, 0, "<start>")

    def after_task(self, trial, stage: int) -> None:
        self._record(trial, stage, trial.inputs.data.tasks[stage - 1].name)

    def _record(self, trial, stage: int, after_task: str) -> None:
        acc, general = evaluate_checkpoint(trial, stage, after_task)
        trial.state.rows["accuracy"] += acc
        trial.state.rows["general"] += general
        trial.flush()


def evaluate_checkpoint(trial, stage: int, after_task: str) -> tuple[list[dict], list[dict]]:
    """``accuracy`` rows (one per task) and the ``general`` row of the model as it is now."""
    cfg, inputs = trial.cfg, trial.inputs
    model, tok, bs = trial.built.model, trial.built.tokenizer, cfg.eval.batch_size
    acc_rows = []
    for pos, (task, tt) in enumerate(zip(inputs.data.tasks, inputs.tasks, strict=True), start=1):
        if cfg.eval.scoring == "loglik":
            ll = candidate_logliks(
                model, [(p, tt.candidates) for p in tt.prompts], pad_id=inputs.pad_id, batch_size=bs
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
                scoring=cfg.eval.scoring,
            )
        )
    general = dict(
        stage=stage,
        after_task=after_task,
        probe=cfg.eval.probe or "",
        accuracy=float("nan"),
        n_correct=0,
        n_total=0,
        ppl=float("nan"),
        nll_sum=float("nan"),
        ppl_tokens=0,
    )
    if inputs.probe is not None:
        requests, answers = inputs.probe
        ll = candidate_logliks(model, requests, pad_id=inputs.pad_id, batch_size=bs)
        c = sum(int(_argmax(s) == a) for s, a in zip(ll, answers, strict=True))
        general.update(accuracy=c / len(answers), n_correct=c, n_total=len(answers))
    if inputs.heldout:
        p = perplexity(model, inputs.heldout, pad_id=inputs.pad_id, batch_size=bs)
        general.update(ppl=p.ppl, nll_sum=p.nll_sum, ppl_tokens=p.tokens)
    return acc_rows, [general]
