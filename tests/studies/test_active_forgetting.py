"""Active forgetting: the forgetful pretraining, the world's second language, the adaptation to
it, and the table of the study."""

from __future__ import annotations

import dataclasses
import json
import math
import string
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness.world import generate as gen
from harness.world import pretrain as pt
from harness.world.adapt import adapt, base_config, ensure_adapted, probe_accuracy
from harness.world.language import cipher, render_language, translate
from results.presentation import active_forgetting as an
from tests.fixtures import SMALL_WORLD, tiny_pretrain

SMALL = SMALL_WORLD
TINY = tiny_pretrain(steps=6)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> gen.WorldInfo:
    return gen.generate_world(tmp_path_factory.mktemp("w") / "world", seed=3, **SMALL)


@pytest.fixture(scope="module")
def base(world: gen.WorldInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("base") / "standard"
    pt.pretrain(world.general_train, out, config=TINY, progress=False)
    return out


@pytest.fixture(scope="module")
def language(world: gen.WorldInfo) -> Path:
    return render_language(world.root, world.root.parent / "language", seed=1)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_an_embedding_reset_redraws_the_embeddings_zeroes_their_moments_and_nothing_else(
    world: gen.WorldInfo,
) -> None:
    from harness.interventions.base import Intervention, init_std

    tok = pt.train_tokenizer(pt.read_texts(world.general_train), TINY.vocab_size)
    torch.manual_seed(0)
    model = pt.build_model(TINY, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(
        input_ids=torch.tensor([[1, 5, 9, 12]]), labels=torch.tensor([[1, 5, 9, 12]])
    ).loss.backward()
    opt.step()
    before = _params(model)
    emb = model.get_input_embeddings().weight
    assert model.lm_head.weight is emb  # tied: the head is reset with it
    pt.reset_embeddings(model, opt, seed=7, step=30)
    g = Intervention.generator(7, 0, 30)
    want = torch.randn(emb.shape, generator=g) * init_std(model)
    assert torch.equal(emb, want)
    for name, p in model.named_parameters():
        if p is not emb:
            assert torch.equal(p, before[name]), name
    assert (opt.state[emb]["exp_avg"] == 0).all() and (opt.state[emb]["exp_avg_sq"] == 0).all()
    other = next(p for p in model.parameters() if p is not emb)
    assert opt.state[other]["exp_avg"].abs().sum() > 0  # other moments kept


def test_forgetful_pretraining_resets_every_k_steps_and_is_cached_apart(
    world: gen.WorldInfo, tmp_path: Path
) -> None:
    forgetful = dataclasses.replace(TINY, embedding_reset_every=2)
    summary = pt.pretrain(world.general_train, tmp_path / "f", config=forgetful, progress=False)
    assert summary["embedding_resets"] == [2, 4]  # not after the last step (6)
    standard = pt.pretrain(world.general_train, tmp_path / "s", config=TINY, progress=False)
    assert standard["embedding_resets"] == []
    assert standard["losses"][:2] == summary["losses"][:2]  # the same run until the reset
    assert standard["losses"][2] != summary["losses"][2]
    assert pt.cache_key(world.general_train, forgetful) != pt.cache_key(world.general_train, TINY)
    with pytest.raises(ValueError, match="embedding_reset_every=-1 must be >= 0"):
        dataclasses.replace(TINY, embedding_reset_every=-1)


def test_the_new_language_respells_every_word_and_keeps_facts_and_answers(
    world: gen.WorldInfo, language: Path, tmp_path: Path
) -> None:
    table = cipher(1)
    lower = {k: v for k, v in table.items() if k.islower()}
    assert sorted(lower.values()) == list(string.ascii_lowercase)  # a permutation
    assert all(k != v for k, v in lower.items())  # no letter kept: every word changes
    inverse = {v: k for k, v in table.items()}
    again = render_language(world.root, tmp_path / "again", seed=1)
    files = sorted(p.relative_to(language) for p in language.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:  # same world and seed: same bytes
        assert (language / rel).read_bytes() == (again / rel).read_bytes()
    first = [json.loads(x)["text"] for x in world.general_train.read_text().splitlines()]
    new = [
        json.loads(x)["text"] for x in (language / "general/train.jsonl").read_text().splitlines()
    ]
    assert len(first) == len(new) and all(
        translate(n, inverse) == f for f, n in zip(first, new, strict=True)
    )
    assert not set(first[0].split()) & set(new[0].split()) - set(string.punctuation)
    import csv

    subject = world.subjects[0]
    a = list(csv.reader((world.mmlu_dir / "test" / f"{subject}_test.csv").open()))
    b = list(csv.reader((language / "mmlu" / "test" / f"{subject}_test.csv").open()))
    assert a[0] == b[0] and [r[-1] for r in a] == [r[-1] for r in b]  # header, answers kept
    assert [[translate(c, inverse) for c in r[:-1]] for r in b[1:]] == [r[:-1] for r in a[1:]]
    with pytest.raises(FileExistsError, match="another world or seed"):
        render_language(world.root, language, seed=2)


def test_embedding_adaptation_trains_new_embeddings_only_and_full_trains_the_body(
    base: Path, language: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    corpus = language / "general" / "train.jsonl"
    emb = adapt(base, corpus, tmp_path / "emb", steps=3, train="embeddings", seed=0, progress=False)
    full = adapt(base, corpus, tmp_path / "full", steps=3, train="full", seed=0, progress=False)
    original = _params(LlamaForCausalLM.from_pretrained(base))
    for out, trains_body in ((tmp_path / "emb", False), (tmp_path / "full", True)):
        model = LlamaForCausalLM.from_pretrained(out)
        tok = AutoTokenizer.from_pretrained(out)
        assert model.config.vocab_size == len(tok) and tok.pad_token_id == model.config.pad_token_id
        body = {n: p for n, p in _params(model).items() if "embed" not in n and "lm_head" not in n}
        same = [torch.equal(p, original[n]) for n, p in body.items()]
        assert (not any(same)) if trains_body else all(same), out
    assert emb["trainable_params"] == base_config(base).vocab_size * TINY.hidden_size
    assert full["trainable_params"] > emb["trainable_params"]
    assert len(emb["losses"]) == 3
    c, n = probe_accuracy(tmp_path / "emb", language, max_questions=10)
    assert n == 10 and 0 <= c <= n
    cached = ensure_adapted(
        base, corpus, steps=3, seed=0, cache_root=tmp_path / "cache", progress=False
    )
    assert ensure_adapted(base, corpus, steps=3, seed=0, cache_root=tmp_path / "cache") == cached
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cached.name]
    with pytest.raises(ValueError, match="must be 'embeddings' or 'full'"):
        adapt(base, corpus, tmp_path / "x", steps=1, train="body")


def test_adaptation_table_is_the_probe_per_base_and_budget_over_seeds() -> None:
    rows = [
        dict(base="standard", adapt="none", budget_steps=0, seed=0, language="first", probe_accuracy=0.9),
        dict(base="forgetful", adapt="none", budget_steps=0, seed=0, language="first", probe_accuracy=0.8),
    ]  # fmt: skip
    for seed, (s, f) in enumerate([(0.2, 0.5), (0.4, 0.7)]):
        rows.append(dict(base="standard", adapt="embeddings", budget_steps=10, seed=seed,
                         language="new", probe_accuracy=s))  # fmt: skip
        rows.append(dict(base="forgetful", adapt="embeddings", budget_steps=10, seed=seed,
                         language="new", probe_accuracy=f))  # fmt: skip
    t = an.adaptation_table(pd.DataFrame(rows), formatted=False)
    assert list(t.index) == ["standard", "forgetful"]
    assert t.loc["standard", "embeddings_10_mean"] == pytest.approx(0.3)
    assert t.loc["forgetful", "embeddings_10_std"] == pytest.approx(math.sqrt(0.02))  # 0.5, 0.7
    assert t.loc["forgetful", "first_language_mean"] == pytest.approx(0.8)
    shown = an.adaptation_table(pd.DataFrame(rows))
    assert shown.loc["forgetful", "embeddings_10"] == "60.0 ± 14.1"
    assert shown.loc["standard", "first_language"] == "90.0" and (shown["seeds"] == 2).all()
