"""Small builders shared by several test modules (import them; fixtures are in conftest)."""

from __future__ import annotations

import dataclasses

from harness.config import from_dict
from harness.hooks import Hook
from harness.world.pretrain import PretrainConfig

SMALL_WORLD = dict(
    n_entities=24,
    mentions=5,
    n_choices=8,
    train_filler_docs=20,
    heldout_filler_docs=10,
    n_task_train=40,
    n_task_test=20,
)
"""generate_world settings of a world that generates in a fraction of a second."""

TINY_PRETRAIN = PretrainConfig(
    vocab_size=400,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    intermediate_size=64,
    block_size=32,
    max_position_embeddings=64,
    batch_size=4,
    steps=4,
    warmup_steps=1,
)
"""A pretraining config of a few seconds (a 1-layer Llama of width 32)."""


def tiny_pretrain(**changes) -> PretrainConfig:
    return dataclasses.replace(TINY_PRETRAIN, **changes)


# -- two gloo ranks in spawned processes ---------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_gloo(rank: int, port: int, world_size: int = 2, timeout_s: float = 60) -> None:
    """In a spawned rank: the environment DeepSpeed reads, one torch thread, and a gloo group
    whose collectives time out (a hang becomes an error naming the rank, not a stuck test)."""
    import datetime
    import os

    import torch

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def spawn_ranks(fn, *args, nprocs: int = 2) -> None:
    """Run ``fn(rank, port, *args, errors)`` in ``nprocs`` spawned processes; when one fails,
    fail the test with every rank's traceback (each rank puts its own into ``errors``)."""
    import pytest
    import torch.multiprocessing as mp

    errors = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(fn, args=(free_port(), *args, errors), nprocs=nprocs)
    except Exception as exc:
        found = []
        while not errors.empty():
            found.append(errors.get())
        pytest.fail(f"{exc}\n" + "\n".join(found))


def mini_config(root, out, **overrides):
    """A validated 3-task trial config on the mini benchmark of conftest (tiny model)."""
    base = {
        "study": "engine",
        "out": str(out),
        "data": {"root": str(root), "tasks": "colour,animal,compare", "max_seq_len": 64},
        "replay": {"method": "tm", "size": 8, "max_tokens": 32},
        "train": {
            "lr": 1e-3,
            "batch_size": 4,
            "max_steps_per_task": 3,
            "warmup_steps": 1,
            "log_every": 2,
        },
        "eval": {"batch_size": 16, "probe": "mmlu", "heldout": "general/heldout.jsonl"},
    }
    for key, value in overrides.items():
        if "." not in key:  # a whole section: cl={...}, interventions={...}
            base[key] = value
            continue
        section, name = key.split(".")
        base.setdefault(section, {})[name] = value
    return from_dict(base)


def tiny_model(vocab: int = 64, seed: int = 0, **shape: int):
    """A seeded, randomly initialised 2-layer Llama in eval mode (16 wide, 32 MLP units by
    default; ``shape`` overrides any LlamaConfig field)."""
    from harness.models import tiny_llama

    small = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return tiny_llama(vocab, seed=seed, **{**small, **shape}).eval()


def tiny_built(seed: int = 0, *, keep_reference: bool = False, **model: object):
    """The harness's own 'tiny' preset (byte-level tokenizer + model) as ``models.Built``."""
    from harness.config import ModelConfig
    from harness.models import build

    return build(ModelConfig(name="tiny", **model), seed=seed, keep_reference=keep_reference)


def saved_tiny(path) -> str:
    """The 'tiny' preset saved as a local model directory (float32 weights + tokenizer), which
    loads like any checkpoint, in any dtype; returns the directory."""
    built = tiny_built()
    built.model.save_pretrained(path)
    built.tokenizer.save_pretrained(path)
    return str(path)


def parity_examples(tok, n: int = 12):
    """``n`` task rows "<s>item i is" + " even"/" odd" (only the answer carries loss)."""
    from harness.core import TokenizedExample

    rows = []
    for i in range(n):
        prompt = tok(f"<s>item {i} is", add_special_tokens=False).input_ids
        target = tok(" even" if i % 2 == 0 else " odd", add_special_tokens=False).input_ids
        rows.append(TokenizedExample(ids=tuple(prompt + target), n_prompt=len(prompt)))
    return rows


class Crash(Exception):
    """A worker lost mid-trial (raised by :class:`SaveThenCrash`)."""


class SaveThenCrash(Hook):
    """A stage hook that checkpoints the trial into ``path`` after task 1 and raises
    :class:`Crash` after the next task (an interruption with an end-of-task checkpoint)."""

    def __init__(self, path):
        self.path = path

    def after_task(self, trial, stage):
        if stage == 1:
            trial.save(self.path)
        else:
            raise Crash("worker lost")
