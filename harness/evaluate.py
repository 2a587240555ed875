"""Score tasks and general ability. Pure functions of (model, tokenised inputs); no I/O.

How an answer is scored (``eval.scoring``):

* ``loglik`` (default): for every candidate label c, the summed log-probability of c's tokens
  after the prompt (:func:`candidate_logliks`, one forward per prompt); the prediction is the
  arg-max over the task's labels (labels.json). The model can only ever "answer" a valid label,
  so this measures what it prefers, not whether it has learnt the output format.
* ``exact_match``: the Long-Sequence papers' rule (SAPT): greedy decoding
  (:func:`generate_answers`) of ``eval.max_new_tokens`` tokens (50), the answer read after the
  last "Output:" of the decoded prompt + generation (:func:`sapt_answer`), compared after
  :func:`normalize_answer`.
* ``generate``: the same decoding, the stripped first line compared case-sensitively.

The multiple-choice probe always uses ``loglik`` over its choices (letters or choice texts,
``eval.probe_format``). Perplexity is exp(total NLL / total predicted tokens) over held-out texts,
with the NLL sum and token count kept so any aggregation can be redone. Every function takes
``forwards`` so the ranks of a sharded model can all make the same calls; the evaluation stage
itself (sharding, rows, the hook) is :mod:`harness.eval_stage`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.core import device_of, eval_mode, pad
from harness.models import decoder_and_head

Request = tuple[Sequence[int], Sequence[Sequence[int]]]
"""(prompt token ids, [candidate token ids, ...]) — one multiple-choice decision."""


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


MIN_SHARED_PREFIX = 64
"""Prompts that share at least this many leading tokens (the few-shot block of a probe
subject, a long task definition) have the shared part computed once (a KV cache)."""


def shared_prefixes(requests: Sequence[Request]) -> list[tuple[int, list[int]]]:
    """Groups of request indices as (shared prefix length, indices): prompts that agree on
    their first :data:`MIN_SHARED_PREFIX` tokens share their longest common prefix (at most
    the shortest prompt less one token: the last prompt token is scored from); the rest form
    one group with prefix 0. Deterministic: groups and members in first-seen order."""
    by_head: dict[tuple, list[int]] = {}
    alone: list[int] = []
    for i, (p, _) in enumerate(requests):
        if len(p) > MIN_SHARED_PREFIX:
            by_head.setdefault(tuple(p[:MIN_SHARED_PREFIX]), []).append(i)
        else:
            alone.append(i)
    groups = []
    for members in by_head.values():
        if len(members) < 2:
            alone += members
            continue
        first = requests[members[0]][0]
        n = min(len(requests[i][0]) for i in members) - 1
        for i in members[1:]:
            p = requests[i][0]
            k = MIN_SHARED_PREFIX
            while k < n and p[k] == first[k]:
                k += 1
            n = k
        if n < MIN_SHARED_PREFIX:
            alone += members
        else:
            groups.append((n, members))
    return ([(0, sorted(alone))] if alone else []) + groups


def _plan(requests: Sequence[Request], batch_size: int):
    """(prefix length, batches of request indices, packed suffix rows) per prefix group."""
    plan = []
    for plen, members in shared_prefixes(requests):
        packed = {i: _pack(requests[i][0][plen:], requests[i][1]) for i in members}
        order = sorted(members, key=lambda i: len(packed[i][0]))
        batches = length_batches([len(packed[i][0]) for i in order], order, batch_size)
        plan.append((plen, batches, packed))
    return plan


def candidate_forwards(requests: Sequence[Request], batch_size: int) -> int:
    """Forward calls :func:`candidate_logliks` makes for these requests (for ranks that must
    all make the same number of calls)."""
    return sum(int(plen > 0) + len(batches) for plen, batches, _ in _plan(requests, batch_size))


def request_tokens(requests: Sequence[Request], batch_size: int = 16) -> int:
    """Tokens :func:`candidate_logliks` pushes through the model for these requests."""
    return sum(
        plen + sum(len(packed[i][0]) for b in batches for i in b)
        for plen, batches, packed in _plan(requests, batch_size)
    )


def candidate_logliks(
    model: torch.nn.Module,
    requests: Sequence[Request],
    *,
    pad_id: int,
    batch_size: int,
    forwards: int | None = None,
) -> list[list[float]]:
    """Summed log-likelihood of every candidate continuation of every prompt, from one forward
    per prompt (:func:`candidate_scores` without the greedy flags)."""
    scores = candidate_scores(
        model, requests, pad_id=pad_id, batch_size=batch_size, forwards=forwards
    )
    return [[ll for ll, _ in row] for row in scores]


@torch.no_grad()
def candidate_scores(
    model: torch.nn.Module,
    requests: Sequence[Request],
    *,
    pad_id: int,
    batch_size: int,
    forwards: int | None = None,
) -> list[list[tuple[float, bool]]]:
    """``(log-likelihood, greedy)`` of every candidate continuation of every prompt: the
    candidate's summed log-likelihood, and whether each of its tokens is the model's arg-max
    at its position (lm-evaluation-harness's ``is_greedy``), from one forward per prompt.

    Each prompt is one row holding the prompt and all its candidates side by side (a packed
    row, :func:`_pack`): a block attention mask lets every candidate token see the prompt and
    the earlier tokens of its own candidate only, and position ids restart after the prompt for
    each candidate, so each candidate is scored exactly as if it followed the prompt alone.
    Single-token candidates (MMLU letters, most labels) cost no extra token: they are read at
    the prompt's last position. Prompts that share a long beginning (a probe subject's few-shot
    examples: :func:`shared_prefixes`) have it computed once, and their rows continue from its
    KV cache. The output head and the log-softmax run only at the positions that are scored.
    Rows are sorted by length so batches waste little padding. Equal to
    :func:`pairwise_logliks` up to float rounding (tests: 1e-4). ``forwards``: make at least
    this many forward calls (extra ones on a one-token dummy), so ranks that hold a shard of
    the weights each make the same calls (:func:`candidate_forwards` counts them).
    """
    import copy

    decoder, head = decoder_and_head(model)
    out = [[0.0] * len(cands) for _, cands in requests]
    greedy = [[True] * len(cands) for _, cands in requests]
    device = device_of(model)
    calls = 0
    with eval_mode(model):
        dtype = next(model.parameters()).dtype
        for plen, batches, packed in _plan(requests, batch_size):
            cache = None
            if plen:
                prefix = torch.tensor([requests[batches[0][0]][0][:plen]], device=device)
                cache = decoder(input_ids=prefix, use_cache=True).past_key_values
                calls += 1
            for chunk in batches:
                width = max(len(packed[i][0]) for i in chunk)
                ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
                pos = torch.zeros((len(chunk), width), dtype=torch.long)
                seg = torch.full((len(chunk), width), -2, dtype=torch.long)  # -2: padding
                for row, i in enumerate(chunk):
                    n = len(packed[i][0])
                    ids[row, :n] = torch.tensor(packed[i][0])
                    pos[row, :n] = torch.tensor(packed[i][1]) + plen
                    seg[row, :n] = torch.tensor(packed[i][2])
                past = None
                # At most one candidate's tokens in every row: causal attention is the block
                # mask (its positions run on from the prompt's), so the plain padding mask.
                plain = bool((seg.clamp(min=-1).amax(dim=1) <= 0).all())
                if cache is not None:
                    past = copy.deepcopy(cache)
                    past.batch_repeat_interleave(len(chunk))
                if plain:
                    mask = (seg != -2).long()
                    if cache is not None:
                        mask = torch.cat([torch.ones(len(chunk), plen, dtype=torch.long), mask], 1)
                    mask = mask.to(device)
                elif cache is not None:
                    block = _block_mask(seg, dtype)
                    seen = torch.zeros((*block.shape[:3], plen), dtype=dtype)
                    mask = torch.cat([seen, block], dim=-1).to(device)
                else:  # packed candidates: the block mask
                    mask = _block_mask(seg, dtype).to(device)
                hidden = decoder(
                    input_ids=ids.to(device),
                    attention_mask=mask,
                    position_ids=pos.to(device),
                    past_key_values=past,
                    use_cache=past is not None,
                ).last_hidden_state
                rows, cols, targets, owners = [], [], [], []
                for row, i in enumerate(chunk):
                    for j, (cand, readers) in enumerate(
                        zip(requests[i][1], packed[i][3], strict=True)
                    ):
                        rows += [row] * len(readers)
                        cols += readers
                        targets += list(cand)
                        owners += [(i, j)] * len(readers)
                logits = head(hidden[torch.tensor(rows), torch.tensor(cols)]).float()
                wanted = torch.tensor(targets, device=device)
                picked = logits.gather(1, wanted[:, None])[:, 0]
                logp = (picked - torch.logsumexp(logits, dim=-1)).tolist()
                best = (logits.argmax(dim=-1) == wanted).tolist()
                for (i, j), v, b in zip(owners, logp, best, strict=True):
                    out[i][j] += v
                    greedy[i][j] = greedy[i][j] and b
                calls += 1
        while forwards is not None and calls < forwards:
            _idle_decoder_forward(model, pad_id)
            calls += 1
    return [list(zip(o, g, strict=True)) for o, g in zip(out, greedy, strict=True)]


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


def _idle_decoder_forward(model: torch.nn.Module, pad_id: int) -> None:
    """A discarded one-token forward through the body and the head: the call a rank with
    fewer batches makes so every rank makes the same calls (sharded weights)."""
    decoder, head = decoder_and_head(model)
    one = torch.full((1, 1), pad_id, dtype=torch.long, device=device_of(model))
    head(decoder(input_ids=one, attention_mask=torch.ones_like(one)).last_hidden_state)


def normalize_answer(text: str) -> str:
    """The Long-Sequence papers' answer normalisation (SAPT's ``compute_metrics.py``, as O-LoRA:
    SQuAD v1.1's ``normalize_answer`` *without* removing articles): lower-case, punctuation
    removed, whitespace collapsed."""
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(text.split())


ANSWER_PREFIX = "Output:"
"""What the Long-Sequence prompts end with; SAPT's answer is what follows its last occurrence."""


def sapt_answer(text: str) -> str:
    """The answer SAPT reads from a decoded prompt + generation (``cl_trainer.
    skip_instructions`` for decoder models): everything after the last "Output:", stripped;
    '' when the text holds none."""
    return text.split(ANSWER_PREFIX)[-1].strip() if ANSWER_PREFIX in text else ""


def first_line(text: str) -> str:
    """The stripped first line of a generation (the 'generate' rule)."""
    return text.strip().split("\n")[0].strip()


def new_token_budget(max_new_tokens: int | None, candidates: Sequence[Sequence[int]]) -> int:
    """Tokens generated per answer: ``eval.max_new_tokens``, or when it is unset the longest
    label (its tokens in ``candidates``) + 2."""
    return max_new_tokens or max(len(c) for c in candidates) + 2


@dataclass(frozen=True)
class Generation:
    """One greedy answer: the answer read from it, whether it matched, and the generated
    text itself (the new tokens decoded), so it can be read again by another rule."""

    text: str
    correct: bool
    generated: str = ""
    ids: tuple[int, ...] = ()
    """The generated token ids (up to and including EOS)."""


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    golds: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    rule: str = "generate",
    forwards: int | None = None,
    synced: bool = False,
) -> list[Generation]:
    """Greedy decoding (KV cache, stops at EOS or after ``max_new_tokens``), one result per
    prompt, the answer read and compared by ``rule``:

    * ``'exact_match'`` (SAPT's, as the Long-Sequence papers score): the prompt and the
      generation decoded together as SAPT does (``skip_special_tokens=True``,
      ``clean_up_tokenization_spaces=True``), the answer :func:`sapt_answer`, compared with
      the gold after :func:`normalize_answer` on both sides;
    * ``'generate'``: the stripped first line of the generation, compared exactly.

    ``forwards``: run at least this many generate calls (extra ones on a one-token dummy
    prompt), and ``synced``: keep decoding until every rank is done (transformers'
    ``synced_gpus``) — both for ranks that hold a shard of the weights each."""
    if rule not in ("exact_match", "generate"):
        raise ValueError(f"rule {rule!r}: use 'exact_match' or 'generate'")
    device = device_of(model)
    out: list[Generation] = []
    calls = 0
    eos = tokenizer.eos_token_id
    with eval_mode(model):
        batches = [
            list(range(i, min(i + batch_size, len(prompts))))
            for i in range(0, len(prompts), batch_size)
        ]
        while batches or (forwards is not None and calls < forwards):
            chunk = batches.pop(0) if batches else None
            rows = [prompts[i] for i in chunk] if chunk else [[tokenizer.pad_token_id]]
            ids, mask = pad(rows, tokenizer.pad_token_id, left=True)
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=eos,
                synced_gpus=synced,
            )
            calls += 1
            if not chunk:
                continue
            for row, i in enumerate(chunk):
                new = gen[row, ids.shape[1] :].tolist()
                if eos is not None and eos in new:  # what follows EOS is padding
                    new = new[: new.index(eos) + 1]
                out.append(read_answer(tokenizer, prompts[i], new, golds[i], rule))
    return out


def read_answer(
    tokenizer, prompt: Sequence[int], new: Sequence[int], gold: str, rule: str
) -> Generation:
    """The answer in a generation (``new``: the generated ids after ``prompt``) and whether
    it matches ``gold``, by ``rule`` (see :func:`generate_answers`). SAPT decodes with
    ``clean_up_tokenization_spaces=True``; transformers 5 skips that clean-up for BPE
    tokenizers (it warns once), SAPT's transformers 4 applied it, which after the
    normalisation changes an answer only around contractions (" 's" -> "'s")."""
    generated = tokenizer.decode(list(new), skip_special_tokens=True)
    if rule == "exact_match":
        whole = tokenizer.decode(
            list(prompt) + list(new), skip_special_tokens=True, clean_up_tokenization_spaces=True
        )
        answer = sapt_answer(whole)
        ok = normalize_answer(answer) == normalize_answer(gold)
    else:
        answer = first_line(generated)
        ok = answer == gold
    return Generation(answer, ok, generated, tuple(new))


@dataclass(frozen=True)
class Perplexity:
    nll_sum: float
    tokens: int

    @property
    def ppl(self) -> float:
        if not self.tokens:
            return float("nan")
        try:
            return math.exp(self.nll_sum / self.tokens)
        except OverflowError:  # a diverged model: infinite perplexity is a result
            return float("inf")


HEAD_CHUNK = 1024
"""Positions per output-head call in :func:`perplexity`: the fp32 logits held at once are
HEAD_CHUNK x vocabulary (0.5 GB at Llama-3's 128,256), not batch x length x vocabulary."""


def perplexity_forwards(texts: Sequence[Sequence[int]], batch_size: int) -> int:
    """Forward calls :func:`perplexity` makes for these texts."""
    n = sum(1 for t in texts if len(t) > 1)
    return -(-n // batch_size)


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    texts: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int,
    forwards: int | None = None,
) -> Perplexity:
    """Token-level NLL of every text (each token predicted from its prefix); texts sorted by
    length; the head and the log-softmax run on HEAD_CHUNK positions at a time.
    ``forwards``: make at least this many forward calls (see :func:`candidate_logliks`)."""
    device = device_of(model)
    decoder, head = decoder_and_head(model)
    nll, count = 0.0, 0
    order = sorted((i for i in range(len(texts)) if len(texts[i]) > 1), key=lambda i: len(texts[i]))
    calls = 0
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = [texts[i] for i in order[start : start + batch_size]]
            ids, mask = pad(chunk, pad_id)
            ids, mask = ids.to(device), mask.to(device)
            hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
            valid = mask[:, 1:].bool()
            h, targets = hidden[valid], ids[:, 1:][valid]
            for k in range(0, len(h), HEAD_CHUNK):
                logits = head(h[k : k + HEAD_CHUNK]).float()
                part = F.cross_entropy(logits, targets[k : k + HEAD_CHUNK], reduction="none")
                nll += float(part.double().sum())
            count += int(valid.sum())
            calls += 1
        while forwards is not None and calls < forwards:
            _idle_decoder_forward(model, pad_id)
            calls += 1
    return Perplexity(nll, count)
