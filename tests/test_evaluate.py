"""Scoring functions (harness.evaluate) against manual computations on a tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from harness.config import ModelConfig
from harness.evaluate import candidate_logliks, perplexity
from harness.models import build


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
