"""Pretrain a small Llama (and its tokenizer) on a general corpus, once, and cache it.

Forgetting can only be measured in a model that knows something. Downloadable checkpoints
need the network and know nothing about the generated world, so the default run builds its
own base: a byte-level BPE tokenizer trained on the corpus and a few-million-parameter
``LlamaForCausalLM`` pretrained on it for a few minutes on CPU. The result is saved with
``save_pretrained`` (model and tokenizer in one directory), so every other module loads it like
any Hub model, and it is cached under a hash of everything that determines it (corpus bytes,
settings, code version): a second run, or a second trial, reuses it.

Any SlimPajama-style jsonl corpus works (``{"text": ...}`` per line); the generated world's
``general/train.jsonl`` is the default one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from harness.cache import cache_root

logger = logging.getLogger(__name__)

PRETRAIN_VERSION = 1
"""Bump whenever this module's output changes for the same corpus and config (cache key)."""

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>", "<unk>")
"""BOS, EOS, padding, unknown (byte-level BPE never needs <unk>; loaders expect one)."""

SUMMARY_FILE = "pretrain.json"
"""Written next to the weights: config, corpus hash, losses and wall time, for provenance."""


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """Tokenizer, model shape and optimisation for the base model.

    The defaults are sized for the generated world on a 2-core CPU: a few minutes of training
    that leaves the model knowing most of the world's facts.
    """

    vocab_size: int = 2048
    """BPE vocabulary size (including special tokens). The world's corpus has under a thousand
    distinct words, so names and values become single tokens."""
    hidden_size: int = 128
    """Width of the residual stream. 128 learns the world's facts faster on CPU than 192
    (measured: 96% vs 82% probe accuracy after 400 vs 600 steps)."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads (no grouped-query attention at this size)."""
    intermediate_size: int = 384
    """Width of the SwiGLU MLP."""
    block_size: int = 128
    """Tokens per training sequence; documents are packed end to end into blocks."""
    max_position_embeddings: int = 512
    """Positions the saved config allows (prompts at fine-tuning time may exceed block_size)."""
    batch_size: int = 32
    """Sequences per optimiser step."""
    steps: int = 400
    """Optimiser steps (block_size * batch_size tokens each); ~24 epochs of the default world.
    Facts are learned late and abruptly: the default world's probe scores 54% after 300
    steps and 96% after 400."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to lr * min_lr_ratio."""
    warmup_steps: int = 30
    """Linear warm-up steps before the cosine decay."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices. Zero: the point is to memorise facts, and decay erodes
    rarely seen associations."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    seed: int = 0
    """Seeds initialisation and the order of documents."""
    embedding_reset_every: int = 0
    """Active forgetting (Chen et al. 2023): after every this many optimiser steps (but the
    last), redraw the token embeddings (and the tied output head) from N(0, r²), r the
    model's initializer_range, and zero their AdamW moments, so the body learns to work with
    embeddings it must relearn -- a "forgetful" base. 0: standard pretraining."""

    def __post_init__(self) -> None:
        problems = []
        if self.embedding_reset_every < 0:
            problems.append(
                f"embedding_reset_every={self.embedding_reset_every} must be >= 0 (0: never)"
            )
        if self.hidden_size % self.num_heads:
            problems.append(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        for name in ("vocab_size", "num_layers", "block_size", "batch_size", "steps"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.vocab_size < 256 + len(SPECIAL_TOKENS):
            problems.append(
                f"vocab_size={self.vocab_size} is below the byte alphabet plus specials "
                f"({256 + len(SPECIAL_TOKENS)})"
            )
        if self.max_position_embeddings < self.block_size:
            problems.append(
                f"max_position_embeddings={self.max_position_embeddings} < "
                f"block_size={self.block_size}"
            )
        if not 0 <= self.warmup_steps < self.steps:
            problems.append(f"warmup_steps={self.warmup_steps} must be in [0, steps)")
        if problems:
            raise ValueError("invalid PretrainConfig: " + "; ".join(problems))


def default_cache_root() -> Path:
    """``base/`` under the cache root (:func:`harness.cache.cache_root`)."""
    return cache_root() / "base"


def read_texts(corpus: Path) -> list[str]:
    """The non-empty ``text`` fields of a SlimPajama-style jsonl file."""
    texts = []
    with Path(corpus).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{corpus}:{number}: expected a JSON object with a 'text' field per line "
                    f"(SlimPajama form), got {line[:80]!r}"
                ) from err
            if text.strip():
                texts.append(text)
    if not texts:
        raise ValueError(f"{corpus} holds no texts; pretraining needs a non-empty corpus")
    return texts


def cache_key(corpus: Path, config: PretrainConfig) -> str:
    """sha256 of the corpus bytes, the settings and the code version."""
    digest = hashlib.sha256()
    digest.update(Path(corpus).read_bytes())
    fields = dataclasses.asdict(config)
    if not fields["embedding_reset_every"]:
        # Added later; at its default (off) the key stays that of the bases cached before it.
        del fields["embedding_reset_every"]
    settings = {"config": fields, "version": PRETRAIN_VERSION}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, *, model_max_length: int = 512
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer fitted to ``texts`` that prepends <s> like Llama's.

    Byte-level means any text (task inputs with unseen words included) encodes without
    <unk>; fitting on the corpus means the corpus's own names become single tokens.
    """
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=model_max_length,
    )


def build_model(config: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A randomly initialised Llama of the configured shape (seeded by the caller)."""
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(model_config)


def _blocks(
    docs: Sequence[list[int]], block_size: int, batch_size: int, seed: int
) -> Iterator[torch.Tensor]:
    """Endless batches of packed blocks; each epoch reshuffles documents, then blocks.

    Reshuffling before packing puts every fact in new neighbours each epoch, and packing
    wastes no compute on padding.
    """
    epoch = 0
    while True:
        rng = random.Random(f"{seed}-{epoch}")
        order = list(range(len(docs)))
        rng.shuffle(order)
        stream = [t for i in order for t in docs[i]]
        n = len(stream) // block_size
        if n < batch_size:
            raise ValueError(
                f"the corpus packs into {n} blocks of {block_size} tokens, fewer than one "
                f"batch of {batch_size}; use a larger corpus or smaller block_size/batch_size"
            )
        blocks = torch.tensor(stream[: n * block_size]).view(n, block_size)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for start in range(0, n - batch_size + 1, batch_size):
            yield blocks[perm[start : start + batch_size]]
        epoch += 1


def _lr_lambda(config: PretrainConfig):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine

    return factor


def train_steps(
    model: LlamaForCausalLM,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Iterator[torch.Tensor],
    config: PretrainConfig,
    params: list[torch.nn.Parameter],
    *,
    progress: bool,
    desc: str,
    after_step=None,
) -> list[float]:
    """``config.steps`` steps of next-token prediction on packed ``batches`` (clipped to
    ``config.grad_clip`` over ``params``); ``after_step(step)`` after each (1-based). The
    losses, one per step."""
    model.train()
    losses: list[float] = []
    bar = tqdm(range(config.steps), desc=desc, disable=not progress, mininterval=1.0)
    for step in bar:
        batch = next(batches)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        if after_step is not None:
            after_step(step + 1)
    bar.close()
    return losses


def save_trained(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path, losses: list[float]
) -> dict:
    """Save model and tokenizer to ``out_dir`` (Hugging Face format); return the losses'
    summary: ``first_loss``, ``final_loss`` (mean over the last 5% of steps), ``losses``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-max(1, len(losses) // 20) :]
    return {"first_loss": losses[0], "final_loss": sum(tail) / len(tail), "losses": losses}


@torch.no_grad()
def reset_embeddings(
    model: LlamaForCausalLM, optimizer: torch.optim.Optimizer | None, seed: int, step: int
) -> None:
    """Active forgetting's reset: the input embeddings (the output head too, when tied: one
    tensor) redrawn from N(0, r²) by a generator seeded with (seed, step), their AdamW moments
    zeroed. The same formula as the trial intervention ``embedding_reset``."""
    from harness.interventions.base import Intervention, init_std

    weight = model.get_input_embeddings().weight
    g = Intervention.generator(seed, 0, step)
    fresh = torch.randn(weight.shape, generator=g, dtype=torch.float32) * init_std(model)
    weight.copy_(fresh.to(weight.dtype))
    state = optimizer.state.get(weight, {}) if optimizer is not None else {}
    for value in state.values():
        if torch.is_tensor(value) and value.shape == weight.shape:
            value.zero_()


def pretrain(
    corpus: Path, out_dir: Path, *, config: PretrainConfig = PretrainConfig(), progress: bool = True
) -> dict:
    """Train tokenizer and model on ``corpus`` and save both to ``out_dir``; return a summary."""
    start = time.perf_counter()
    texts = read_texts(corpus)
    tokenizer = train_tokenizer(
        texts, config.vocab_size, model_max_length=config.max_position_embeddings
    )
    eos = tokenizer.eos_token_id
    # The tokenizer prepends <s>; </s> closes each document so packed blocks mark boundaries.
    docs = [ids + [eos] for ids in tokenizer(texts)["input_ids"]]
    n_tokens = sum(map(len, docs))

    torch.manual_seed(config.seed)
    model = build_model(config, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = config.batch_size * config.block_size
    logger.info(
        "pretraining on %s: %d docs, %d tokens, vocab %d; model %.2fM params; %d steps x %d "
        "tokens = %.1f epochs",
        corpus,
        len(docs),
        n_tokens,
        len(tokenizer),
        n_params / 1e6,
        config.steps,
        tokens_per_step,
        config.steps * tokens_per_step / n_tokens,
    )

    # Decay matrices only: norms and (tied) embeddings hold little capacity to regularise.
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    batches = _blocks(docs, config.block_size, config.batch_size, config.seed)

    resets: list[int] = []
    every = config.embedding_reset_every

    def forget(step: int) -> None:
        if every and step % every == 0 and step < config.steps:
            reset_embeddings(model, optimizer, config.seed, step)
            resets.append(step)

    losses = train_steps(
        model,
        optimizer,
        scheduler,
        batches,
        config,
        list(model.parameters()),
        progress=progress,
        desc="pretrain",
        after_step=forget,
    )

    model.eval()
    summary = {
        "config": dataclasses.asdict(config),
        "version": PRETRAIN_VERSION,
        "corpus": str(corpus),
        "corpus_docs": len(docs),
        "corpus_tokens": n_tokens,
        "params": n_params,
        **save_trained(model, tokenizer, Path(out_dir), losses),
        "embedding_resets": resets,
        "wall_s": time.perf_counter() - start,
    }
    (Path(out_dir) / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    logger.info(
        "pretrained in %.0fs: loss %.3f -> %.3f; saved to %s",
        summary["wall_s"],
        summary["first_loss"],
        summary["final_loss"],
        out_dir,
    )
    return summary


def ensure_base_model(
    corpus: Path,
    *,
    config: PretrainConfig = PretrainConfig(),
    cache_root: Path | None = None,
    progress: bool = True,
) -> Path:
    """The directory of a base model pretrained on ``corpus``: cached, else trained now.

    The directory name is a hash of corpus bytes, settings and code version, so a changed
    corpus or setting never reuses a stale model. Training writes to a temporary sibling
    that is renamed into place, so an interrupted run leaves nothing that looks finished.
    """
    corpus = Path(corpus)
    if not corpus.is_file():
        raise FileNotFoundError(
            f"corpus {corpus} does not exist; pass a SlimPajama-style jsonl file "
            f"(one {{'text': ...}} per line), e.g. <world>/general/train.jsonl"
        )
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    final = root / cache_key(corpus, config)[:20]
    if (final / SUMMARY_FILE).is_file():
        logger.info("base model cache hit: %s", final)
        return final
    logger.info("base model cache miss (%s); pretraining", final)
    if not build_cached(
        final, SUMMARY_FILE, lambda tmp: pretrain(corpus, tmp, config=config, progress=progress)
    ):
        logger.info("another process cached %s first; using it", final)
    return final


def build_cached(final: Path, marker: str, build: Callable[[Path], object]) -> bool:
    """Make the cache entry ``final`` by ``build(tmp)`` into a temporary sibling renamed into
    place, so an interrupted build leaves nothing that looks finished (``final / marker`` is
    written last). True if this call built it; False if a concurrent one finished first (its
    entry, holding ``marker``, is kept). Errors of ``build`` propagate; the temporary is
    always removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build(tmp)
        tmp.rename(final)
    except OSError:
        if (final / marker).is_file():
            return False
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
