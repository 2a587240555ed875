"""Named base configs for studies: where the model and data come from, and how a trial scales.

* ``tiny``: a random 2-layer Llama on the project's generated world (no download, seconds
  per trial) -- for smoke tests and laptops.
* ``world``: the project's small Llama *pretrained* on the generated world, so it has general
  ability to lose (built on first use and cached; see harness/world).
* ``llama-3.1-8b``: meta-llama/Llama-3.1-8B from the Hub, the 15-task Long-Sequence order 6
  read from ``data.root`` (``python -m harness data prepare long-sequence --dest
  DIR/long_sequence`` fetches it), SlimPajama replay texts (``hf:...#train``, held-out
  ``#validation``) and MMLU from the Hub, bf16, DeepSpeed ZeRO-3 on 8 GPUs per trial.
  It runs on a GPU cluster (see clusters/), not here. It scores the way the literature does,
  so its numbers can be put beside published ones: tasks with the O-LoRA/SAPT prompt
  ``"{Definition}\n{input}\nOutput: "`` (``data.prompt_template=long_sequence``) by greedy
  generation and exact match after their normalisation (``eval.scoring=exact_match``), and
  general ability as lm-evaluation-harness's 5-shot ``mmlu`` (``eval.probe_format=lm_eval``).
  It trains GeRe the way its reference code does: each sample's loss on its own, averaged over
  the effective batch (``train.loss_weighting=per_sample``), replay texts without BOS
  (``replay.add_bos=false``).
  Cost: not yet measured on a GPU. ``benchmarks/gpu_8b.py`` measures the training step, TM's
  prepare and evaluation of this shape on one GPU and derives the GPU-hours of one 15-task
  trial from the rates; as of 2026-12-02 no GPU has been lent to run it, so the estimates in
  the studies' docstrings and clusters/README.md are arithmetic, not measurements.

``smoke`` shrinks any preset to a run of seconds per trial with 2 Ray Train workers running
DeepSpeed ZeRO-2 on CPU, so every study's ``--smoke-test`` runs on a 2-core machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.config import merge
from harness.core import cache_root
from harness.suggest import did_you_mean

log = logging.getLogger(__name__)

PRESETS = ("tiny", "world", "llama-3.1-8b")


def world_dir(seed: int = 0, stream: int = 0) -> Path:
    """Where the generated world of this seed (with ``stream`` long-stream tasks) lives (its
    format version is in the name, so a newer generator never meets an old world)."""
    from harness.world.generate import WORLD_VERSION

    suffix = f"-stream{stream}" if stream else ""
    return cache_root() / f"world-v{WORLD_VERSION}-seed{seed}{suffix}"


def world_root(seed: int = 0) -> Path:
    """The generated world's data root (generated on first use)."""
    from harness.world.generate import generate_world

    return generate_world(world_dir(seed), seed=seed).root


def _world_base(data_dir: str | None) -> dict[str, Any]:
    from harness.world.generate import generate_world

    info = generate_world(Path(data_dir) if data_dir else world_dir(0), seed=0)
    return {
        "data": {
            "root": str(info.root),
            "tasks": ",".join(info.tasks),
            "max_train_per_task": 300,
            "max_test_per_task": 100,
            "max_seq_len": 128,
        },
        "replay": {"corpus": "general/train.jsonl", "size": 200, "max_tokens": 128},
        "train": {"lr": 3e-4, "batch_size": 16, "epochs": 3.0, "warmup_steps": 10, "log_every": 10},
        "eval": {
            "probe": "mmlu",
            "probe_format": "continuation",
            "probe_max_questions": 300,
            "heldout": "general/heldout.jsonl",
            "heldout_max_texts": 100,
            "heldout_max_tokens": 256,
            "batch_size": 32,
        },
    }


def base_config(
    name: str,
    *,
    data_dir: str | None = None,
    smoke: bool = False,
    resolve_model: bool = True,
) -> dict[str, Any]:
    """The nested config dict of a preset (validated later, with the study's grid).

    ``resolve_model=False`` puts the placeholder 'world' (which no trial can load) where the
    'world' preset has the path of its pretrained base, trained on first use (minutes): for
    validating configs without building anything."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}{did_you_mean(name, PRESETS)}. Available: {', '.join(PRESETS)}"
        )
    if name == "llama-3.1-8b":
        base = {
            "model": {"name": "llama-3.1-8b", "dtype": "bfloat16", "gradient_checkpointing": True},
            "data": {
                "root": data_dir,
                "tasks": "order6",
                "label_policy": "from_outputs",
                "max_train_per_task": 1000,
                "max_test_per_task": 500,
                "max_seq_len": 512,
                "prompt_template": "long_sequence",
            },
            "replay": {
                "corpus": "hf:cerebras/SlimPajama-627B#train",
                "size": 1000,
                "max_tokens": 563,
                "add_bos": False,  # GeRe's reference: add_special_tokens=False
            },
            "train": {
                "lr": 3e-6,
                # GeRe's reference objective (its per-device batch of 1), rows grouped by length
                "loss_weighting": "per_sample",
                "schedule": "cosine",
                "warmup_steps": 10,
                "epochs": 3.0,
                "batch_size": 4,
                "grad_accum": 2,
                "log_every": 10,
            },
            "eval": {
                "scoring": "exact_match",
                "probe": "hf:cais/mmlu",
                "probe_format": "lm_eval",
                "probe_shots": 5,
                "probe_max_questions": 2000,
                "heldout": "hf:cerebras/SlimPajama-627B#validation",
                "heldout_max_texts": 500,
                "batch_size": 16,
            },
            "scale": {
                "backend": "deepspeed",
                "zero_stage": 3,
                "workers": 8,
                "use_gpu": True,
                "cpus_per_worker": 4,
                "gpus_per_worker": 1,
            },
        }
    else:
        base = _world_base(data_dir)
        if name == "world":
            model = world_base_model(Path(base["data"]["root"])) if resolve_model else "world"
            base["model"] = {"name": str(model)}
    if smoke:
        base = merge(
            base,
            {
                "model": {"name": "tiny", "dtype": "float32", "gradient_checkpointing": False},
                "data": {"max_train_per_task": 48, "max_test_per_task": 24, "max_seq_len": 128},
                "replay": {"size": 16, "max_tokens": 64},
                "train": {
                    "batch_size": 4,
                    "grad_accum": 1,
                    "epochs": 1.0,
                    "max_steps_per_task": 3,
                    "warmup_steps": 1,
                    "log_every": 1,
                    "lr": 1e-3,
                },
                "eval": {
                    "probe_max_questions": 24,
                    "heldout_max_texts": 8,
                    "heldout_max_tokens": 64,
                    "batch_size": 32,
                    "probe_shots": 0,
                },
                "scale": {
                    "backend": "deepspeed",
                    "zero_stage": 2,
                    "workers": 2,
                    "use_gpu": False,
                    "cpus_per_worker": 0.45,
                    "gpus_per_worker": 1,
                    "max_failures": 1,
                },
            },
        )
        if name == "llama-3.1-8b":
            # The 8B preset's data lives on the cluster; the smoke run uses the generated world.
            base = merge(base, {k: v for k, v in _world_base(data_dir).items() if k != "train"})
            base = merge(
                base,
                {
                    "data": {"max_train_per_task": 48, "max_test_per_task": 24},
                    "eval": {"probe_max_questions": 24, "heldout_max_texts": 8, "probe_shots": 0},
                },
            )
        tasks = base["data"]["tasks"].split(",")
        base["data"]["tasks"] = ",".join(tasks[:2])
    return base


def world_base_model(world: Path) -> Path:
    """The pretrained world base model (trained on first use, then cached by content)."""
    from harness.world.pretrain import ensure_base_model

    return ensure_base_model(world / "general" / "train.jsonl")
