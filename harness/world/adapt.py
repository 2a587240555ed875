"""Adapt a pretrained world base to a new language (Chen et al. 2023's protocol), and score it.

:func:`adapt` gives the base a tokenizer fitted to the new language's corpus and freshly drawn
token embeddings for it (N(0, r²), the output head tied to them), then trains on that corpus for
a budget of steps, either the embeddings only with the body frozen (``train="embeddings"``, as
Chen et al. adapt) or every parameter (``train="full"``). The loop, packing and schedule are the
pretraining's (:mod:`harness.world.pretrain`), with the budget in place of its step count.
:func:`ensure_adapted` caches the result by content hash (base, corpus, settings, code
version), like the base itself. :func:`probe_accuracy` scores a model directory on a data
root's cloze probe with the harness's own evaluator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Literal

import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from harness.world.pretrain import (
    SUMMARY_FILE,
    PretrainConfig,
    _blocks,
    _lr_lambda,
    build_cached,
    default_cache_root,
    read_texts,
    reset_embeddings,
    save_trained,
    train_steps,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

ADAPT_VERSION = 1
"""Bump when this module's output changes for the same inputs (cache key)."""

ADAPT_FILE = "adapt.json"


def base_config(base_dir: Path) -> PretrainConfig:
    """The pretraining settings a world base was made with (its ``pretrain.json``)."""
    summary = json.loads((Path(base_dir) / SUMMARY_FILE).read_text())
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    return PretrainConfig(**{k: v for k, v in summary["config"].items() if k in fields})


def adapt(
    base_dir: Path,
    corpus: Path,
    out_dir: Path,
    *,
    steps: int,
    train: Literal["embeddings", "full"] = "embeddings",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Adapt the base at ``base_dir`` to the language of ``corpus``; save to ``out_dir``."""
    if train not in ("embeddings", "full"):
        raise ValueError(f"train={train!r}: must be 'embeddings' or 'full'")
    if steps < 1:
        raise ValueError(f"steps={steps}: the adaptation budget must be >= 1")
    start = time.perf_counter()
    base = base_config(base_dir)
    config = dataclasses.replace(
        base,
        steps=steps,
        warmup_steps=min(base.warmup_steps, steps // 10),
        seed=seed,
        embedding_reset_every=0,
    )
    texts = read_texts(corpus)
    tokenizer = train_tokenizer(
        texts, base.vocab_size, model_max_length=base.max_position_embeddings
    )
    docs = [ids + [tokenizer.eos_token_id] for ids in tokenizer(texts)["input_ids"]]
    torch.manual_seed(seed)
    model = LlamaForCausalLM.from_pretrained(base_dir)
    model.resize_token_embeddings(len(tokenizer))
    for key in ("bos", "eos", "pad"):
        setattr(model.config, f"{key}_token_id", getattr(tokenizer, f"{key}_token_id"))
    reset_embeddings(model, None, seed, 0)  # the new language's tokens: fresh embeddings
    embedding = model.get_input_embeddings().weight
    for p in model.parameters():
        p.requires_grad_(train == "full" or p is embedding)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.95), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    batches = _blocks(docs, config.block_size, config.batch_size, seed)
    losses = train_steps(
        model, optimizer, scheduler, batches, config, params, progress=progress, desc="adapt"
    )
    for p in model.parameters():
        p.requires_grad_(True)
    out_dir = Path(out_dir)
    summary = {
        "base": str(base_dir),
        "corpus": str(corpus),
        "steps": steps,
        "train": train,
        "seed": seed,
        "trainable_params": sum(p.numel() for p in params),
        **save_trained(model, tokenizer, out_dir, losses),
        "version": ADAPT_VERSION,
        "wall_s": time.perf_counter() - start,
    }
    (out_dir / ADAPT_FILE).write_text(json.dumps(summary, indent=1))
    logger.info(
        "adapted %s to %s (%s, %d steps) in %.0fs: loss %.3f -> %.3f",
        base_dir,
        corpus,
        train,
        steps,
        summary["wall_s"],
        summary["first_loss"],
        summary["final_loss"],
    )
    return summary


def ensure_adapted(
    base_dir: Path,
    corpus: Path,
    *,
    steps: int,
    train: Literal["embeddings", "full"] = "embeddings",
    seed: int = 0,
    cache_root: Path | None = None,
    progress: bool = True,
) -> Path:
    """The directory of this adaptation: cached (by a hash of the base's weights, the corpus
    bytes, the settings and the code version), else run now, written to a temporary sibling
    and renamed into place."""
    base_dir, corpus = Path(base_dir), Path(corpus)
    digest = hashlib.sha256()
    digest.update((base_dir / "model.safetensors").read_bytes())
    digest.update(corpus.read_bytes())
    settings = {"steps": steps, "train": train, "seed": seed, "version": ADAPT_VERSION}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    key = digest.hexdigest()[:20]
    root = Path(cache_root) if cache_root is not None else default_cache_root().parent / "adapted"
    final = root / key
    if not (final / ADAPT_FILE).is_file():
        build_cached(
            final,
            ADAPT_FILE,
            lambda tmp: adapt(
                base_dir, corpus, tmp, steps=steps, train=train, seed=seed, progress=progress
            ),
        )
    return final


@torch.no_grad()
def probe_accuracy(
    model_dir: Path, root: Path, *, max_questions: int | None = None, seed: int = 0
) -> tuple[int, int]:
    """(correct, total) of the model at ``model_dir`` on the cloze probe under ``root``
    (``mmlu/test``): each question's choices scored by summed log-likelihood after the
    question, as trials score the world's probe (``eval.probe_format=continuation``)."""
    from harness.data.mmlu import load_mc
    from harness.evaluate import candidate_logliks

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    questions = load_mc("mmlu", Path(root), max_questions=max_questions, seed=seed)
    requests = [
        (
            tok(q.question)["input_ids"],
            [tok(f" {c}", add_special_tokens=False)["input_ids"] for c in q.choices],
        )
        for q in questions
    ]
    lls = candidate_logliks(model, requests, pad_id=tok.pad_token_id, batch_size=32)
    correct = sum(int(max(range(len(ll)), key=ll.__getitem__) == q.answer)
                  for ll, q in zip(lls, questions, strict=True))  # fmt: skip
    return correct, len(questions)


# -- the active-forgetting study's runs (studies/active_forgetting.py) --------------------------

SMOKE_PRETRAIN = dict(
    vocab_size=512, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
    block_size=64, batch_size=8, steps=20, warmup_steps=2,
)  # fmt: skip
"""The smoke test's base: one layer, 20 pretraining steps."""


def prepare_bases(
    world_root: Path, *, smoke: bool, reset_every: int, language_seed: int, questions: int
) -> dict:
    """What every run of the active-forgetting study shares: the world at ``world_root``
    (generated unless it is there), its respelled language, and the standard and forgetful
    bases pretrained on its general text (cached by content). Returns the common part of a
    run's spec (:func:`adaptation_rows`), with ``bases`` (name -> (model dir, reset period))."""
    from harness.world.generate import generate_world
    from harness.world.language import render_language
    from harness.world.pretrain import ensure_base_model

    world = generate_world(world_root, seed=0)
    new = render_language(
        world.root, world.root.parent / f"{world.root.name}-language{language_seed}",
        seed=language_seed,
    )  # fmt: skip
    standard = PretrainConfig(**(SMOKE_PRETRAIN if smoke else {}))
    configs = {
        "standard": standard,
        "forgetful": dataclasses.replace(standard, embedding_reset_every=reset_every),
    }
    bases = {
        b: (str(ensure_base_model(world.general_train, config=c)), c.embedding_reset_every)
        for b, c in configs.items()
    }
    return dict(world=str(world.root), language=str(new), chance=1.0 / world.settings.n_choices,
                questions=questions, threads=torch.get_num_threads(), bases=bases)  # fmt: skip


def adaptation_rows(s: dict) -> list[dict]:
    """One run of the active-forgetting study (a Ray Tune trial): a base's probe in both
    languages (``adapt='none'``), or one adaptation of it and its probe in the new language;
    its rows of the ``adaptation`` record kind."""
    torch.set_num_threads(s["threads"])  # the driver's: the same numbers as in one process
    model, every = s["bases"][s["base"]]
    common = {"base": s["base"], "embedding_reset_every": every, "adapt": s["adapt"],
              "budget_steps": s["steps"], "seed": s["seed"], "chance": s["chance"]}  # fmt: skip
    if s["adapt"] == "none":
        probes = [("first", Path(model), s["world"]), ("new", Path(model), s["language"])]
        loss, wall = float("nan"), 0.0
    else:
        start = time.perf_counter()
        adapted = ensure_adapted(Path(model), Path(s["language"]) / "general" / "train.jsonl",
                                 steps=s["steps"], train=s["adapt"], seed=s["seed"])  # fmt: skip
        done = json.loads((adapted / "adapt.json").read_text())
        probes = [("new", adapted, s["language"])]
        loss, wall = done["final_loss"], done.get("wall_s", time.perf_counter() - start)
    rows = []
    for lang, path, root in probes:
        c, n = probe_accuracy(path, Path(root), max_questions=s["questions"])
        rows.append({**common, "language": lang, "probe_accuracy": c / n, "n_correct": c,
                     "n_total": n, "final_loss": loss, "wall_time_s": wall})  # fmt: skip
    return rows
