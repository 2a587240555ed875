"""Small builders shared by several test modules (import them; fixtures are in conftest)."""

from __future__ import annotations

from harness.config import from_dict


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
