"""Scoring functions (harness.evaluate) against manual computations on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from harness.config import ModelConfig, from_dict
from harness.evaluate import candidate_logliks, pairwise_logliks, perplexity
from harness.inputs import load_data, tokenize_inputs
from harness.models import build
from tests.fixtures import tiny_built


def test_candidate_logliks_match_a_manual_computation():
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    model, tok = built.model.eval(), built.tokenizer
    prompt, cands = [0, 70, 71, 72], [[80], [81, 82]]
    got = candidate_logliks(model, [(prompt, cands)], pad_id=tok.pad_token_id, batch_size=2)[0]
    for c, value in zip(cands, got, strict=True):
        ids = torch.tensor([prompt + c])
        logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
        want = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(c))
        assert value == pytest.approx(want, abs=1e-4)


def test_perplexity_matches_a_manual_computation():
    built = build(ModelConfig(name="tiny"), seed=0, keep_reference=False)
    model = built.model.eval()
    texts = [[0, 50, 51, 52, 53], [0, 60, 61]]
    p = perplexity(model, texts, pad_id=built.tokenizer.pad_token_id, batch_size=2)
    nll = 0.0
    for t in texts:
        logp = torch.log_softmax(model(input_ids=torch.tensor([t])).logits[0], -1)
        nll -= sum(float(logp[k, t[k + 1]]) for k in range(len(t) - 1))
    assert p.tokens == 6
    assert p.nll_sum == pytest.approx(nll, rel=1e-4)
    assert p.ppl == pytest.approx(math.exp(nll / 6), rel=1e-4)


def test_candidate_logliks_packs_a_prompt_with_all_its_candidates():
    built = tiny_built()
    model = built.model
    reqs = [([0, 70, 71], [[80], [81, 82, 83], [84, 85]]), ([0, 5], [[9, 9], [7]])]
    want = pairwise_logliks(model, reqs, pad_id=built.tokenizer.pad_token_id, batch_size=4)
    for batch_size in (1, 2):
        got = candidate_logliks(
            model, reqs, pad_id=built.tokenizer.pad_token_id, batch_size=batch_size
        )
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=1e-4)


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_one_forward_per_prompt_equals_the_pairwise_scorer_on_every_real_task(
    shared_data, tmp_path, tuning
):
    """Every candidate of every task of ../shared/data (a sample of test prompts each), and the
    MMLU letter probe: log-likelihoods within 1e-4, predictions identical."""
    cfg = from_dict(
        {
            "model": {"tuning": tuning, "lora_r": 4},
            "data": {
                "root": str(shared_data),
                "tasks": ",".join(
                    sorted(p.name for p in (shared_data / "long_sequence").iterdir())
                ),
                "label_policy": "from_outputs",
                "max_train_per_task": 1,
                "max_test_per_task": 6,
                "max_seq_len": 160,
                "cache_dir": str(tmp_path),
            },
            "replay": {"method": "none"},
            "eval": {"probe": "mmlu", "probe_format": "letter", "probe_max_questions": 12},
        }
    )
    built = tiny_built(tuning=tuning, lora_r=4)
    if tuning == "lora":  # a LoRA update that is not zero, so the adapters matter
        for name, p in built.model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
    inputs = tokenize_inputs(cfg, load_data(cfg), built.tokenizer)
    pad = inputs.pad_id
    decisions = [[(p, tt.candidates) for p in tt.prompts] for tt in inputs.tasks]
    decisions.append(inputs.probe[0])
    assert len(decisions) == 12 and {len(tt.candidates) for tt in inputs.tasks} >= {2, 14}
    for requests in decisions:
        want = pairwise_logliks(built.model, requests, pad_id=pad, batch_size=8)
        got = candidate_logliks(built.model, requests, pad_id=pad, batch_size=8)
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=1e-4)
            assert max(range(len(g)), key=g.__getitem__) == max(range(len(w)), key=w.__getitem__)


def test_length_batches_cap_rows_and_padded_tokens():
    from harness.evaluate import length_batches

    lengths = [10] * 6 + [100]
    batches = length_batches(lengths, list(range(7)), batch_size=4)
    assert batches == [[0, 1, 2, 3], [4, 5], [6]]  # budget 4 x 10: the long row goes alone
    assert length_batches([5, 5, 5], ["a", "b", "c"], batch_size=8) == [["a", "b", "c"]]
    assert length_batches([], [], batch_size=4) == []


def test_normalize_answer_is_the_papers_lower_case_no_punctuation_collapsed():
    from harness.evaluate import normalize_answer

    assert normalize_answer("  The Entailment. ") == "the entailment"  # articles stay (SAPT)
    assert normalize_answer("not_entailment") == "notentailment"
    assert normalize_answer("Yes!\t") == normalize_answer("yes")


def test_prompts_with_a_long_shared_beginning_continue_from_its_kv_cache():
    from harness.evaluate import MIN_SHARED_PREFIX, request_tokens, shared_prefixes

    built = tiny_built()
    shots = list(range(3, 3 + MIN_SHARED_PREFIX + 10))  # a few-shot block, then questions
    reqs = [
        (shots + [90, 91], [[80], [81]]),
        (shots + [92, 93, 94], [[80], [81, 82]]),
        (shots, [[85], [86]]),  # the prefix itself: it keeps its last token to score from
        ([0, 7, 8], [[80], [81]]),
    ]
    groups = shared_prefixes(reqs)
    assert groups == [(0, [3]), (len(shots) - 1, [0, 1, 2])]
    assert request_tokens(reqs) < sum(len(p) for p, _ in reqs)
    pad = built.tokenizer.pad_token_id
    want = pairwise_logliks(built.model, reqs, pad_id=pad, batch_size=4)
    for batch_size in (1, 3):
        got = candidate_logliks(built.model, reqs, pad_id=pad, batch_size=batch_size)
        for g, w in zip(got, want, strict=True):
            assert g == pytest.approx(w, abs=1e-4)
