"""Everything the test modules share (pytest fixtures are in conftest.py, built from these):
tiny models and configs, a minimal benchmark in the real file layouts, a synthetic study on
disk, the landscape tests' model and batches, the cluster files, TensorBoard scalars."""

from __future__ import annotations

import dataclasses
import json
import random
import struct
from pathlib import Path

import numpy as np
import torch
import yaml

from harness.cache import cache_root
from harness.config import from_dict
from harness.core import TokenizedExample
from harness.hooks import Hook
from harness.landscape import EvalBatch
from harness.metrics import all_metrics
from harness.world.pretrain import PretrainConfig
from results.io import study_dir, write_records
from results.schema import KINDS

REPO = Path(__file__).resolve().parents[1]
"""The repository's root."""

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


def trials_on_rank(rank: int, port: int, trials: list[dict], errors) -> None:
    """A :func:`spawn_ranks` function: join the gloo group, then run each trial (config dicts)
    to completion on this rank; a failure is reported with its rank."""
    import traceback

    from harness.config import from_dict
    from harness.trial import run_trial

    join_gloo(rank, port)
    try:
        for d in trials:
            result = run_trial(from_dict(d))
            assert result.status == "completed", (d.get("trial_id"), result.summary["error"])
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise
    finally:
        torch.distributed.destroy_process_group()


def mini_config(root, out, **overrides):
    """A validated 3-task trial config on the mini benchmark of conftest (landscape_model model)."""
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


# -- the minimal benchmark (conftest's mini_root) ------------------------------------------

REAL_CACHE = cache_root()
"""The user's cache root, read before each test points GERE_CACHE_DIR at its own tmp dir: a
prepared real model (gere model prepare smollm2-135m) is found there."""

COLOURS = ["red", "blue", "green", "yellow"]
ANIMALS = ["cat", "dog", "owl", "fox"]


def write_task(
    root: Path, name: str, definition: str, labels: list[str], rows: list[tuple[str, str]]
):
    d = root / "long_sequence" / name
    d.mkdir(parents=True, exist_ok=True)
    half = len(rows) * 3 // 4
    for split, part in (("train", rows[:half]), ("test", rows[half:])):
        body = {
            "Definition": [definition],
            "Positive Examples": [],
            "Negative Examples": [],
            "Instances": [{"input": i, "output": o} for i, o in part],
        }
        (d / f"{split}.json").write_text(json.dumps(body))
    (d / "labels.json").write_text(json.dumps(labels))


def make_mini_benchmark(root: Path, seed: int = 0) -> Path:
    """Three learnable toy tasks, a general corpus, held-out text and a 4-choice probe."""
    rng = random.Random(seed)
    rows = []
    for _ in range(32):
        c = rng.choice(COLOURS[:2])
        rows.append((f"the sky is {c} today", "warm" if c == "red" else "cold"))
    write_task(root, "colour", "Is the colour warm or cold?", ["warm", "cold"], rows)
    rows = []
    for _ in range(32):
        a = rng.choice(ANIMALS)
        rows.append((f"I saw a {a} in the garden", "pet" if a in ("cat", "dog") else "wild"))
    write_task(root, "animal", "Is the animal a pet or wild?", ["pet", "wild"], rows)
    rows = []
    for _ in range(32):
        x, y = rng.randint(0, 9), rng.randint(0, 9)
        rows.append((f"{x} vs {y}", "more" if x > y else "less"))
    write_task(root, "compare", "", ["more", "less"], rows)
    general = root / "general"
    general.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 40), ("heldout", 12)):
        with (general / f"{split}.jsonl").open("w") as f:
            for i in range(n):
                a, c = rng.choice(ANIMALS), rng.choice(COLOURS)
                text = f"The {c} {a} number {i} lives near the river and sings at night."
                f.write(json.dumps({"text": text, "meta": {"source": "mini"}}) + "\n")
    test = root / "mmlu" / "test"
    test.mkdir(parents=True, exist_ok=True)
    lines = ["question,choice0,choice1,choice2,choice3,answer"]
    for i in range(8):
        lines.append(f"Which colour is number {i}?,red,blue,green,yellow,{i % 4}")
    (test / "mini_test.csv").write_text("\n".join(lines) + "\n")
    return root


# -- a synthetic study on disk (the report and results-fault tests) -------------------------

STUDY = "lr_demo"
TASKS = ["colour", "animal", "compare"]
HAS_EXTRA_KINDS = "landscape" in KINDS and "plasticity" in KINDS


def _accuracy_matrix(method: str, lr: float, seed: int) -> np.ndarray:
    """A[stage, task]: 0.3 before training, 0.9 when learned, then fading with later tasks."""
    T = len(TASKS)
    fade = (0.12 if method == "none" else 0.02) * lr
    A = np.full((T + 1, T), 0.3)
    for i in range(1, T + 1):
        for j in range(1, i + 1):
            A[i, j - 1] = max(0.0, 0.9 - fade * (i - j)) - 0.01 * seed
        if i < T:
            A[i, i] = 0.32  # zero-shot on the next task: a little transfer
    return A


def _general(method: str, lr: float, seed: int, stage: int) -> tuple[float, float]:
    """(probe accuracy, held-out perplexity) after ``stage`` tasks."""
    drop = (0.06 if method == "none" else 0.008) * lr
    acc = 0.60 - drop * stage + 0.004 * seed
    ppl = 10.0 * np.exp((0.15 if method == "none" else 0.01) * lr * stage)
    return acc, float(ppl)


def _landscape_rows(method: str) -> list[dict]:
    rows = []
    barrier = 0.5 if method == "none" else 0.1
    for a_stage in range(len(TASKS)):
        for dataset, (l0, l1) in (("general", (2.0, 2.3)), (TASKS[a_stage], (1.0, 1.4))):
            for alpha in np.linspace(-0.5, 1.5, 9):
                loss = (1 - alpha) * l0 + alpha * l1 + 4 * barrier * alpha * (1 - alpha)
                rows.append(
                    dict(
                        stage=a_stage + 1,
                        slice=f"interp:{a_stage}->{a_stage + 1}",
                        slice_kind="interpolation",
                        from_stage=a_stage,
                        to_stage=a_stage + 1,
                        alpha=alpha,
                        beta=np.nan,
                        dataset=dataset,
                        loss_sum=loss * 1000,
                        tokens=1000,
                        loss=loss,
                        direction_seed=None,
                        space="full",
                        normalisation="none",
                    )
                )
    T = len(TASKS)
    for alpha in np.linspace(-1, 1, 21):
        loss = 2.0 + 3.0 * alpha**2
        rows.append(
            dict(
                stage=T,
                slice="random1d:seed=0",
                slice_kind="random_1d",
                from_stage=T,
                to_stage=T,
                alpha=alpha,
                beta=np.nan,
                dataset="general",
                loss_sum=loss * 500,
                tokens=500,
                loss=loss,
                direction_seed=0,
                space="full",
                normalisation="filter",
            )
        )
        for beta in np.linspace(-1, 1, 11):
            loss = 2.0 + 3.0 * alpha**2 + 1.0 * beta**2 + 0.5 * alpha * beta
            rows.append(
                dict(
                    stage=T,
                    slice="random2d:seed=1",
                    slice_kind="random_2d",
                    from_stage=T,
                    to_stage=T,
                    alpha=alpha,
                    beta=beta,
                    dataset="general",
                    loss_sum=loss * 500,
                    tokens=500,
                    loss=loss,
                    direction_seed=1,
                    space="full",
                    normalisation="filter",
                )
            )
    return rows


def _plasticity_rows(method: str, lr: float, stages: int) -> list[dict]:
    rows = []
    rate = (0.04 if method == "none" else 0.01) * lr
    for stage in range(stages + 1):
        after = "<start>" if stage == 0 else TASKS[stage - 1]
        for layer in (-1, 0, 1):
            common = dict(stage=stage, after_task=after, layer=layer, n_units=64, n_tokens=512)
            for tau in (0.025, 0.1):
                rows.append(
                    dict(
                        common,
                        metric="dormant_fraction",
                        tau=tau,
                        value=min(1.0, 0.02 + rate * stage + tau),
                    )
                )
            rows.append(
                dict(common, metric="effective_rank", tau=np.nan, value=50.0 - 30 * rate * stage)
            )
            rows.append(dict(common, metric="weight_distance", tau=np.nan, value=0.5 * lr * stage))
    return rows


STEPS_PER_TASK = 10
LOG_EVERY = 2


def _curve_rows(method: str, lr: float, seed: int, stages: int) -> list[dict]:
    """Training-curve rows: per task, task CE falls from 2.0 to 1.0 (+ 0.1 per seed); the
    back-propagated loss adds a replay term of 0.5 for replay methods."""
    rows = []
    for stage in range(1, stages + 1):
        for k in range(LOG_EVERY, STEPS_PER_TASK + 1, LOG_EVERY):
            ce = 2.0 - k / STEPS_PER_TASK + 0.1 * seed
            replay = 0.0 if method == "none" else 0.5
            rows.append(
                dict(
                    stage=stage,
                    task=TASKS[stage - 1],
                    step=(stage - 1) * STEPS_PER_TASK + k,
                    task_step=k,
                    loss=ce + replay,
                    task_ce=ce,
                    replay_ce=np.nan if method == "none" else 1.5,
                    replay_term=np.nan if method == "none" else replay,
                    replay_weight=1.0,
                    lr=1e-4 * lr,
                    grad_norm=1.0,
                    tokens=640,
                    pad_share=0.1,
                )
            )
    return rows


def make_study(out: Path, *, extra_kinds: bool = HAS_EXTRA_KINDS) -> Path:
    """Write the synthetic study under ``out``; returns its study directory."""
    T = len(TASKS)
    for method in ("none", "tm"):
        for lr in (1.0, 3.0):
            for seed in (0, 1):
                tid = f"{method}-lr{lr:g}-s{seed}"
                diverged = method == "none" and lr == 3.0 and seed == 1
                last = 1 if diverged else T
                A = _accuracy_matrix(method, lr, seed)
                acc_rows, gen_rows = [], []
                for stage in range(last + 1):
                    after = "<start>" if stage == 0 else TASKS[stage - 1]
                    for pos, task in enumerate(TASKS, 1):
                        a = float(A[stage, pos - 1])
                        acc_rows.append(
                            dict(
                                stage=stage,
                                after_task=after,
                                task=task,
                                task_position=pos,
                                accuracy=a,
                                n_correct=round(a * 100),
                                n_total=100,
                                scoring="loglik",
                            )
                        )
                    acc, ppl = _general(method, lr, seed, stage)
                    gen_rows.append(
                        dict(
                            stage=stage,
                            after_task=after,
                            probe="mmlu",
                            accuracy=acc,
                            n_correct=round(acc * 200),
                            n_total=200,
                            ppl=ppl,
                            nll_sum=np.log(ppl) * 4000,
                            ppl_tokens=4000,
                        )
                    )
                metrics = all_metrics(A) if not diverged else dict.fromkeys(all_metrics(A), np.nan)
                summary = dict(
                    status="diverged" if diverged else "completed",
                    error="loss is nan at step 41" if diverged else None,
                    diverged_stage=2 if diverged else None,
                    diverged_step=41 if diverged else None,
                    wall_time_s=12.5,
                    n_tasks=T,
                    n_stages=T,
                    tasks=",".join(TASKS),
                    model="tiny",
                    model_path=None,
                    tuning="full",
                    method=method,
                    replay_size=0 if method == "none" else 100,
                    replay_weight="default",
                    lr=1e-4,
                    lr_multiplier=lr,
                    seed=seed,
                    **metrics,
                    general_acc_start=gen_rows[0]["accuracy"],
                    general_acc_final=gen_rows[-1]["accuracy"],
                    general_ppl_start=gen_rows[0]["ppl"],
                    general_ppl_final=gen_rows[-1]["ppl"],
                    config_json="{}",
                    harness_version="test",
                )
                kw = dict(study=STUDY, trial_id=tid)
                write_records(out, "accuracy", acc_rows, **kw)
                write_records(out, "general", gen_rows, **kw)
                write_records(out, "summary", [summary], **kw)
                if extra_kinds:
                    write_records(out, "curve", _curve_rows(method, lr, seed, last), **kw)
                if extra_kinds and not diverged:
                    write_records(out, "landscape", _landscape_rows(method), **kw)
                    write_records(out, "plasticity", _plasticity_rows(method, lr, last), **kw)
    return study_dir(out, STUDY)


# -- the landscape tests' model and batches ------------------------------------------------

VOCAB = 64
PAD = 2


def landscape_model(seed: int = 0):
    return tiny_model(VOCAB, seed=seed, intermediate_size=32)


def make_batch(seed: int, n: int = 3) -> EvalBatch:
    rng = random.Random(seed)
    rows = [
        TokenizedExample(ids=tuple(rng.randrange(3, VOCAB) for _ in range(5 + 2 * i)), n_prompt=2)
        for i in range(n)
    ]
    return EvalBatch.from_examples(rows, PAD)


def perturbed(model, scale: float = 0.05, seed: int = 1):
    """A second 'checkpoint': the model with every weight moved a little."""
    g = torch.Generator().manual_seed(seed)
    other = landscape_model()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


# -- cluster files ---------------------------------------------------------------------------

CLUSTERS = REPO / "clusters"
AUTOSCALER = sorted(CLUSTERS.glob("*.yaml"))
KUBERAY = sorted((CLUSTERS / "kuberay").glob("*.yaml"))


def file_ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def write_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_manifests(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTERS / "kuberay" / name).read_text()))


# -- TensorBoard -------------------------------------------------------------------------------


def tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


LM_EVAL_TASKS = ("local_arc", "local_cloze", "local_wiki")
"""The local lm-eval tasks of :func:`write_lm_eval_tasks`: multiple choice with acc and acc_norm
(ARC's format), one-continuation log-likelihood (LAMBADA's: acc is the greedy flag) and a
rolling log-likelihood (wikitext's perplexities)."""

_LM_EVAL_YAML = {
    "local_arc": """task: local_arc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/arc.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""",
    "local_cloze": """task: local_cloze
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/cloze.jsonl
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{prefix}}}}"
doc_to_target: " {{{{word}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "local_wiki": """task: local_wiki
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/wiki.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
}


def write_lm_eval_tasks(root: Path, *, n: int = 6, seed: int = 0) -> Path:
    """Local lm-eval task YAMLs (:data:`LM_EVAL_TASKS`) and their seeded JSON-lines data under
    ``root``; returns the YAML directory (lm-eval's ``include_path``)."""
    import json
    import random

    rng = random.Random(seed)
    words = ["river", "stone", "ion", "cell", "mass", "wave", "bone", "heart", "force", "light"]
    data, tasks = root / "lm_eval_data", root / "lm_eval_tasks"
    data.mkdir(parents=True, exist_ok=True)
    tasks.mkdir(parents=True, exist_ok=True)

    def phrase(k: int) -> str:
        return " ".join(rng.choices(words, k=k))

    docs = {
        "arc": [
            {
                "question": phrase(5) + "?",
                "choices": {
                    "text": [phrase(rng.randint(1, 3)) for _ in range(4)],
                    "label": ["A", "B", "C", "D"],
                },
                "answerKey": rng.choice("ABCD"),
            }
            for _ in range(n)
        ],  # fmt: skip
        "cloze": [{"prefix": phrase(6), "word": rng.choice(words)} for _ in range(n)],
        "wiki": [
            {"text": ". ".join(phrase(8) for _ in range(rng.randint(1, 4)))} for _ in range(n)
        ],
    }
    for name, rows in docs.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name, text in _LM_EVAL_YAML.items():
        (tasks / f"{name}.yaml").write_text(text.format(data=data))
    return tasks
