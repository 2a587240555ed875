"""The 8B path on one GPU: training step, TM prepare and evaluation, measured.

    python benchmarks/gpu_8b.py                        # Llama-3.1-8B's shape, on the GPU
    python benchmarks/gpu_8b.py --quick                # 4 measured steps, a fifth of the prompts
    python benchmarks/gpu_8b.py --shape small          # the same code on a tiny shape (CPU test)
    python benchmarks/gpu_8b.py --parts lora,prepare   # some parts only

No download: the model is a randomly initialised Llama built from Llama-3.1-8B's configuration
(``harness.models.llama_8b_config``: vocabulary 128,256, 32 layers, hidden 4,096) in bf16, and
the token ids are random. Random weights cost the same FLOPs as trained ones; what they change
is that greedy generation never stops early at EOS, so generation figures are the worst case
(every prompt decodes ``max_new_tokens``). The run is the single-process path
(``scale.backend=torch``): the harness's own ``build`` (gradient checkpointing, PEFT LoRA),
``TorchBackend`` and ``train_task``, the TM method's ``prepare``, and the scorers of
``harness.evaluate``. DeepSpeed (the 8B preset's ZeRO-3 over 8 GPUs) is not measured here.

Parts (``--parts``, default all):

* ``prepare``: TM's two passes of the frozen model over the replay buffer (1,000 texts of 563
  tokens): seconds, peak memory, the packed 2-bit states' size.
* ``lora``: ``train_task`` with LoRA (r=8, ``model.lora_target_modules``: the config default,
  PEFT's all-linear, unless ``--lora-targets``), gradient checkpointing, the preset's micro-batch
  (``train.batch_size=4``, ``grad_accum=2``, ``loss_weighting=per_sample``) and ``tm`` replay rows
  mixed in, then a bare PyTorch loop doing the same work on the same micro-batches (forward with
  hidden states, per-row CE, the TM term, backward, clip, AdamW). Per step: tokens/s (real,
  unpadded tokens), the median over the measured steps after warm-up; the ratio harness / bare;
  MFU; peak memory.
* ``full``: the same for full fine-tuning with ``TorchBackend``'s AdamW (moments in the weights'
  bf16: 2 + 2 + 4 = 8 bytes per parameter, ~64 GB for 8B). If it does not fit, the figure is the
  out-of-memory error and the memory in use, and full fine-tuning needs ZeRO-3 across GPUs
  (clusters/README.md, "Memory arithmetic").
* ``eval``: one checkpoint's evaluation with the new scorer (``candidate_logliks``): a 14-label
  task (500 prompts, the preset's ``max_test_per_task``) and 4-choice MMLU letters 5-shot (prompts
  of a subject share their 5-shot prefix, as lm_eval's do), prompts/s and tokens/s; the task by
  greedy generation (``generate_answers``, the preset's ``eval.scoring=exact_match``); held-out
  perplexity.

MFU is model FLOPs / (step time x the GPU's dense bf16 peak; ``--peak-tflops`` to override the
table below). Model FLOPs per trained token count N as every parameter but the input embedding
(a lookup, not a matmul; the LM head is counted) and add attention's 12 x layers x hidden x
sequence length (PaLM, appendix B). Full fine-tuning: 6N (forward 2N, backward 4N). LoRA:
4N + 6N_lora (the frozen weights need the forward and the input gradient, not a weight
gradient); ``mfu_6n`` also gives the conventional 6N figure, which overstates LoRA's work.
Gradient checkpointing's recomputed forward (another 2N) is hardware work, not model FLOPs,
and is not counted.

Each figure is printed as one line ``part.name  value unit  (how)``; ``--json PATH`` (default
``gpu_8b.json``) gets them all, with the device, versions and the command. For the 8B shape the
last lines derive what one 15-task trial of the 8B preset costs in GPU-hours from the measured
rates (``estimate.*``); the task rows' lengths are an assumption there (uniform 128-512 tokens:
the real prompts' lengths under Llama-3's tokenizer were not measured here).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from harness.backend import TorchBackend  # noqa: E402
from harness.config import from_dict  # noqa: E402
from harness.core import IGNORE, TokenizedExample, collate  # noqa: E402
from harness.evaluate import (  # noqa: E402
    candidate_logliks,
    generate_answers,
    perplexity,
    request_tokens,
)
from harness.models import TINY_SHAPE, build, last_hidden, llama_8b_config  # noqa: E402
from harness.replay import ReplayBuffer, get_method, tm_loss  # noqa: E402
from harness.train import micro_batches, plan_steps, rank_share, train_task  # noqa: E402

GEN_TOKENS = 50
"""New tokens per generated answer: the presets' eval.max_new_tokens (SAPT's 50)."""

PEAK_BF16_TFLOPS = {  # dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets
    "H200": 989.0,
    "H100 PCIe": 756.0,  # the more specific names first
    "H100": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
}


@dataclass(frozen=True)
class Shape:
    """Model shape and workload sizes of one run."""

    name: str
    config: object  # a transformers LlamaConfig
    task_len: tuple[int, int]  # task row lengths, uniform in [lo, hi] tokens (prompt + answer)
    replay_len: int  # replay text length (the preset's replay.max_tokens)
    replay_texts: int  # texts in the replay buffer (the preset's replay.size)
    task_train: int  # task examples the training part plans steps from
    eval_prompts: int  # test prompts of the 14-label task
    mmlu_questions: int
    mmlu_prefix: int  # tokens of a subject's shared 5-shot prefix
    heldout_texts: int
    batch_size: int = 4  # the preset's train.batch_size
    grad_accum: int = 2
    eval_batch: int = 16  # the preset's eval.batch_size
    dtype: str = "bfloat16"


def shapes() -> dict[str, Shape]:
    from transformers import LlamaConfig

    small = LlamaConfig(vocab_size=1024, **TINY_SHAPE)  # the tiny preset's shape
    return {
        "8b": Shape(
            "8b",
            llama_8b_config(),
            task_len=(128, 512),
            replay_len=563,
            replay_texts=1000,
            task_train=1000,
            eval_prompts=500,
            mmlu_questions=2000,
            mmlu_prefix=450,
            heldout_texts=500,
        ),
        "small": Shape(
            "small",
            small,
            task_len=(16, 48),
            replay_len=40,
            replay_texts=24,
            task_train=32,
            eval_prompts=20,
            mmlu_questions=24,
            mmlu_prefix=24,
            heldout_texts=8,
            eval_batch=8,
            dtype="float32",  # bf16 matmuls on a CPU are slow and exercise nothing extra
        ),
    }


class RandomIdTokenizer:
    """What the harness asks of a tokenizer, for random token ids (no vocabulary files)."""

    def __init__(self, vocab_size: int, eos: int) -> None:
        self.vocab_size = vocab_size
        self.eos_token_id = eos
        self.pad_token_id = eos  # Llama's convention in harness.models.load_tokenizer

    def __len__(self) -> int:
        return self.vocab_size

    def decode(self, ids, skip_special_tokens: bool = True, **_) -> str:
        return " ".join(str(int(t)) for t in ids)


class Figures:
    """Figures as they are measured: printed one per line, kept for the JSON file."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, part: str, name: str, value, unit: str, how: str = "") -> None:
        self.rows.append({"part": part, "name": name, "value": value, "unit": unit, "how": how})
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{part}.{name:24} {shown:>12} {unit:10} {how}", flush=True)

    def get(self, part: str, name: str):
        for r in self.rows:
            if r["part"] == part and r["name"] == name:
                return r["value"]
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def _add_peak(fig: Figures, part: str, device: torch.device) -> None:
    peak = _peak_gb(device)
    if peak is not None:
        fig.add(part, "peak_memory", peak, "GB", "torch.cuda.max_memory_allocated")


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    words = torch.cuda.get_device_name(device).replace("-", " ").split()
    for key, tflops in PEAK_BF16_TFLOPS.items():
        parts = key.split()
        if any(words[i : i + len(parts)] == parts for i in range(len(words))):
            return tflops * 1e12
    return None


def random_model(shape: Shape, device: torch.device, seed: int, dtype: str):
    """A randomly initialised Llama of ``shape``, built on ``device`` in ``dtype``
    (transformers' ``from_config``: no weights are read)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(shape.config, dtype=getattr(torch, dtype))
    tok = RandomIdTokenizer(shape.config.vocab_size, eos=shape.config.eos_token_id or 1)
    return tok, model


def trial_config(shape: Shape, tuning: str, lora_targets: list[str] | None, steps: int, dtype: str):
    model = {
        "name": "llama-3.1-8b",  # not loaded (the model is preloaded); its settings apply
        "tuning": tuning,
        "dtype": dtype,
        "gradient_checkpointing": True,
        "lora_r": 8,
    }
    if lora_targets:
        model["lora_target_modules"] = lora_targets
    return from_dict(
        {
            "model": model,
            "replay": {"method": "tm", "size": shape.replay_texts, "max_tokens": shape.replay_len},
            "train": {
                "lr": 3e-6,
                "loss_weighting": "per_sample",
                "schedule": "cosine",
                "warmup_steps": 1,
                "batch_size": shape.batch_size,
                "grad_accum": shape.grad_accum,
                "max_steps_per_task": steps,
                "epochs": 3.0,
                "log_every": 10**6,
                "divergence_factor": None,
            },
        }
    )


def workload(shape: Shape, seed: int):
    """Random task rows (prompt + a 1-4-token answer) and replay texts of the shape's lengths."""
    rng = np.random.default_rng(seed)
    vocab = shape.config.vocab_size
    lo, hi = shape.task_len
    examples = []
    for _ in range(shape.task_train):
        n = int(rng.integers(lo, hi + 1))
        answer = int(rng.integers(1, 5))
        ids = tuple(int(t) for t in rng.integers(3, vocab, n))
        examples.append(TokenizedExample(ids=ids, n_prompt=n - answer))
    texts = [
        tuple(int(t) for t in rng.integers(3, vocab, shape.replay_len))
        for _ in range(shape.replay_texts)
    ]
    return examples, ReplayBuffer(token_ids=tuple(texts), pad_id=0)


# -- parts -------------------------------------------------------------------------------------


def part_prepare(fig, built, method, buffer, shape, device) -> None:
    part = "prepare"
    model = built.model
    was = model.training
    model.eval()
    _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    method.prepare(
        lambda i, a: last_hidden(model, i.to(device), a.to(device)),
        buffer,
        batch_size=shape.eval_batch,
    )
    _sync(device)
    seconds = time.perf_counter() - t0
    model.train(was)
    tokens = int(buffer.lengths.sum())
    how = f"{len(buffer)} texts x {shape.replay_len} tokens, batch {shape.eval_batch}, 2 passes"
    fig.add(part, "seconds", seconds, "s", how)
    fig.add(part, "tokens_per_s", 2 * tokens / seconds, "tok/s", "forward tokens (2 passes)")
    _add_peak(fig, part, device)
    states = method.states
    fig.add(part, "states_size", states.packed.nbytes / 1e6, "MB", "packed 2-bit codes")
    fig.add(part, "bits_per_entry", 8 * states.nbytes_per_entry(), "bits", "per (token, dim)")


def _plan(cfg, examples, buffer, seed):
    """The steps ``train_task`` plans (the same call, the same seed), each as micro-batches."""
    eff = cfg.train.batch_size * cfg.train.grad_accum
    steps = plan_steps(
        n_task=len(examples),
        n_replay=len(buffer),
        effective_batch=eff,
        per_batch=None,
        epochs=cfg.train.epochs,
        max_steps=cfg.train.max_steps_per_task,
        rng=np.random.default_rng([seed, 1]),
    )
    replay = [TokenizedExample(ids=t, n_prompt=0) for t in buffer.token_ids]

    def row(it):
        return replay[it[1]] if it[0] else examples[it[1]]

    planned = []
    for items in steps:
        share = rank_share(items, 1, 0, True, lambda it: len(row(it).ids))
        micro = micro_batches(share, cfg.train.grad_accum, True, lambda it: len(row(it).ids))
        planned.append([[(rep, i, row((rep, i))) for rep, i in m] for m in micro])
    return planned


def _step_tokens(step) -> int:
    return sum(len(ex.ids) for micro in step for _, _, ex in micro)


def _step_seq(step) -> float:
    rows = [len(ex.ids) for micro in step for _, _, ex in micro]
    return sum(r * r for r in rows) / sum(rows)  # token-weighted mean sequence length


def harness_steps(built, cfg, examples, buffer, method, device, seed) -> list[float]:
    """Seconds of each optimiser step of ``train_task`` (timed between its on_step calls)."""
    backend = TorchBackend(cfg)
    backend.wrap(built)
    stamps: list[float] = []

    def on_step(_step: int) -> None:
        _sync(device)
        stamps.append(time.perf_counter())

    _sync(device)
    stamps.append(time.perf_counter())
    train_task(
        built,
        backend,
        task_examples=examples,
        buffer=buffer,
        method=method,
        weight=100.0,
        cfg=cfg.train,
        per_batch=None,
        stage=1,
        task="bench",
        global_step=0,
        seed=seed,
        on_step=on_step,
    )
    backend.optimizer = None
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def bare_steps(model, planned, method, pad_id, device, clip: float) -> list[float]:
    """The same micro-batches through a plain loop: forward, per-row CE (+ w * TM on the
    replay rows), backward, clip, AdamW; seconds per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-6, weight_decay=0.0)
    states = method.states
    model.train()
    times = []
    for step in planned:
        _sync(device)
        t0 = time.perf_counter()
        n_rows = sum(len(m) for m in step)
        for micro in step:
            rows = [ex for _, _, ex in micro]
            ids, mask, labels = (t.to(device) for t in collate(rows, pad_id))
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            nll = F.cross_entropy(
                out.logits[:, :-1].transpose(1, 2).float(),
                labels[:, 1:],
                ignore_index=IGNORE,
                reduction="none",
            )
            counted = (labels[:, 1:] != IGNORE).float()
            per_row = nll.sum(1) / counted.sum(1).clamp(min=1)
            loss = per_row.sum()
            at = [k for k, (rep, _, _) in enumerate(micro) if rep]
            if at:
                buf_rows = torch.tensor([i for rep, i, _ in micro if rep])
                index = torch.tensor(at, device=device)
                h = out.hidden_states[-1][index]
                codes = states.gather(buf_rows, h.shape[1], device=device)
                term = tm_loss(h, codes, states.pos, states.neg, mask[index])
                loss = loss + 100.0 * term * len(at)
            (loss / n_rows).backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    del opt
    return times


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def count_params(model, lora: bool) -> tuple[int, int]:
    """(N: every parameter but the input embedding, N_trainable)."""
    n_all = n_emb = n_train = 0
    for name, p in model.named_parameters():
        n_all += p.numel()
        if "embed_tokens" in name:
            n_emb += p.numel()
        if p.requires_grad:
            n_train += p.numel()
    if lora:
        n_all -= n_train  # the adapters are counted apart (N_lora)
    return n_all - n_emb, n_train


def part_train(fig, part, built, cfg, examples, buffer, method, shape, device, args) -> None:
    model = built.model
    lora = cfg.model.tuning == "lora"
    planned = _plan(cfg, examples, buffer, args.seed)
    tokens = [_step_tokens(s) for s in planned]
    seq = statistics.mean(_step_seq(s) for s in planned)
    warm = args.warmup
    h_rates: list[float] = []
    b_rates: list[float] = []
    h_steps: list[float] = []
    h_peak = b_peak = None
    for _ in range(args.rounds):  # harness, bare, harness, bare: a drift slows both alike
        _reset_peak(device)
        h = harness_steps(built, cfg, examples, buffer, method, device, args.seed)
        if len(h) != len(planned):
            raise RuntimeError(f"train_task ran {len(h)} steps, the plan has {len(planned)}")
        h_peak = _max(h_peak, _peak_gb(device))
        _reset_peak(device)
        b = bare_steps(model, planned, method, built.tokenizer.pad_token_id, device, clip=1.0)
        b_peak = _max(b_peak, _peak_gb(device))
        h_rates += [t / s for t, s in zip(tokens[warm:], h[warm:], strict=True)]
        b_rates += [t / s for t, s in zip(tokens[warm:], b[warm:], strict=True)]
        h_steps += h[warm:]
    h_rate, b_rate = statistics.median(h_rates), statistics.median(b_rates)
    if h_peak is not None:
        fig.add(part, "peak_memory", h_peak, "GB", "torch.cuda.max_memory_allocated, train_task")
    rows = shape.batch_size * shape.grad_accum
    how = (
        f"median of {args.rounds} x {len(planned) - warm} steps after {warm} each, "
        f"{rows} rows/step, mean len {seq:.0f}"
    )
    fig.add(part, "harness_tokens_per_s", h_rate, "tok/s", "train_task, " + how)
    fig.add(part, "bare_tokens_per_s", b_rate, "tok/s", "plain loop, same micro-batches")
    fig.add(part, "ratio_harness_to_bare", h_rate / b_rate, "x", "target >= 0.95")
    fig.add(part, "step_seconds", statistics.median(h_steps), "s", "train_task, median")
    if b_peak is not None:
        fig.add(part, "bare_peak_memory", b_peak, "GB", "plain loop")
    n, n_train = count_params(model, lora)
    layers, hidden = shape.config.num_hidden_layers, shape.config.hidden_size
    attention = 12 * layers * hidden * seq
    per_token = (4 * n + 6 * n_train if lora else 6 * n) + attention
    fig.add(
        part, "N", n, "params", "all but the input embedding" + (" and adapters" if lora else "")
    )
    if lora:
        fig.add(part, "N_lora", n_train, "params", "trainable adapters")
    fig.add(
        part,
        "model_flops_per_token",
        float(per_token),
        "FLOP",
        ("4N + 6N_lora" if lora else "6N") + " + 12 x layers x hidden x seq",
    )
    peak = peak_flops(device, args.peak_tflops)
    if peak is not None and not args.peak_tflops and cfg.model.dtype != "bfloat16":
        peak = None  # the table holds bf16 peaks
    if peak is None:
        fig.add(part, "mfu", None, "", "no peak known for this device (--peak-tflops)")
    else:
        fig.add(part, "mfu", per_token * h_rate / peak, "", f"of {peak / 1e12:.0f} TFLOP/s bf16")
        if lora:
            fig.add(part, "mfu_6n", (6 * n + attention) * h_rate / peak, "", "conventional 6N")


def _requests(rng, vocab, n, lo, hi, n_cands, cand_len, prefix=None, group=35):
    out = []
    prefixes = {}
    for q in range(n):
        body = [int(t) for t in rng.integers(3, vocab, int(rng.integers(lo, hi + 1)))]
        if prefix:
            key = q // group
            if key not in prefixes:
                prefixes[key] = [int(t) for t in rng.integers(3, vocab, prefix)]
            body = prefixes[key] + body
        cands = [
            [
                int(t)
                for t in rng.integers(3, vocab, int(rng.integers(cand_len[0], cand_len[1] + 1)))
            ]
            for _ in range(n_cands)
        ]
        out.append((body, cands))
    return out


def part_eval(fig, built, shape, device, seed) -> None:
    part = "eval"
    model = built.model
    rng = np.random.default_rng([seed, 7])
    vocab = shape.config.vocab_size
    lo, hi = shape.task_len
    task = _requests(rng, vocab, shape.eval_prompts, lo, hi, 14, (1, 4))
    mmlu = _requests(
        rng, vocab, shape.mmlu_questions, lo // 2, hi // 2, 4, (1, 1), prefix=shape.mmlu_prefix
    )
    pad = built.tokenizer.pad_token_id
    model.eval()
    for name, requests, how in (
        ("task14", task, f"14 labels of 1-4 tokens, prompts {lo}-{hi} tokens"),
        ("mmlu", mmlu, f"4 letters, 5-shot prefix {shape.mmlu_prefix} shared by 35 questions"),
    ):
        candidate_logliks(
            model, requests[: shape.eval_batch], pad_id=pad, batch_size=shape.eval_batch
        )
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        candidate_logliks(model, requests, pad_id=pad, batch_size=shape.eval_batch)
        _sync(device)
        s = time.perf_counter() - t0
        fig.add(part, f"{name}_prompts_per_s", len(requests) / s, "prompts/s", how)
        fig.add(
            part,
            f"{name}_tokens_per_s",
            request_tokens(requests, shape.eval_batch) / s,
            "tok/s",
            "tokens the packed rows hold",
        )
        peak = _peak_gb(device)
        if peak is not None:
            fig.add(part, f"{name}_peak_memory", peak, "GB", "candidate_logliks")
    prompts = [p for p, _ in task]
    golds = ["x"] * len(prompts)
    generate_answers(
        model,
        built.tokenizer,
        prompts[: shape.eval_batch],
        golds,
        max_new_tokens=GEN_TOKENS,
        batch_size=shape.eval_batch,
        rule="exact_match",
    )
    _sync(device)
    t0 = time.perf_counter()
    generate_answers(
        model,
        built.tokenizer,
        prompts,
        golds,
        max_new_tokens=GEN_TOKENS,
        batch_size=shape.eval_batch,
        rule="exact_match",
    )
    _sync(device)
    s = time.perf_counter() - t0
    fig.add(
        part,
        "generate_prompts_per_s",
        len(prompts) / s,
        "prompts/s",
        f"greedy, {GEN_TOKENS} new tokens each (the preset's exact_match; random weights: no "
        "early EOS)",
    )
    texts = [
        [int(t) for t in rng.integers(3, vocab, shape.replay_len)]
        for _ in range(shape.heldout_texts)
    ]
    _sync(device)
    t0 = time.perf_counter()
    perplexity(model, texts, pad_id=pad, batch_size=shape.eval_batch)
    _sync(device)
    s = time.perf_counter() - t0
    fig.add(
        part, "heldout_texts_per_s", len(texts) / s, "texts/s", f"{shape.replay_len} tokens each"
    )


def estimate(fig: Figures, shape: Shape, task_len_mean: float) -> None:
    """GPU-hours of one 15-task trial of the 8B preset's workload, from the measured rates."""
    rate = fig.get("lora", "harness_tokens_per_s")
    if rate is None:
        return
    tasks, train, test, epochs = 15, 1000, 500, 3.0
    tokens_per_task = epochs * (train * task_len_mean + shape.replay_texts * shape.replay_len)
    train_h = tasks * tokens_per_task / rate / 3600
    fig.add(
        "estimate",
        "lora_train_gpu_hours",
        train_h,
        "GPU-h",
        "15 tasks x 3 epochs x (1000 task + 1000 replay rows)",
    )
    points = tasks + 1  # before the first task and after each
    gen = fig.get("eval", "generate_prompts_per_s")
    mmlu = fig.get("eval", "mmlu_prompts_per_s")
    ppl = fig.get("eval", "heldout_texts_per_s")
    if gen and mmlu and ppl:
        per_point = tasks * test / gen + 2000 / mmlu + 500 / ppl
        fig.add(
            "estimate",
            "eval_gpu_hours",
            points * per_point / 3600,
            "GPU-h",
            f"{points} evaluations x (15 x 500 generations + 2000 MMLU + 500 held-out)",
        )
    prep = fig.get("prepare", "seconds")
    if prep:
        fig.add("estimate", "prepare_gpu_hours", prep / 3600, "GPU-h", "once per trial")
    full = fig.get("full", "harness_tokens_per_s")
    if full:
        fig.add(
            "estimate",
            "full_train_gpu_hours_1gpu",
            tasks * tokens_per_task / full / 3600,
            "GPU-h",
            "torch AdamW in bf16 on one GPU (not the preset's ZeRO-3)",
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--shape", choices=("8b", "small"), default="8b")
    p.add_argument(
        "--parts", default="prepare,lora,full,eval", help="comma-separated (default: all)"
    )
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--steps", type=int, default=8, help="measured optimiser steps per loop")
    p.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    p.add_argument(
        "--rounds", type=int, default=2, help="harness/bare loops, alternated (default 2)"
    )
    p.add_argument("--quick", action="store_true", help="4 measured steps, a fifth of the prompts")
    p.add_argument("--lora-targets", default=None, help="comma-separated (default: all-linear)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's bf16 peak")
    p.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default=None,
        help="default: bfloat16 (8b), float32 (small)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="gpu_8b.json", help="where the figures go")
    args = p.parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    known = ("prepare", "lora", "full", "eval")
    bad = [x for x in parts if x not in known]
    if bad or not parts:
        p.error(f"--parts {args.parts!r}: unknown {bad}; choose from {', '.join(known)}")
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        p.error(
            "--steps and --rounds must be >= 1 and --warmup >= 0 "
            f"(got {args.steps}, {args.rounds}, {args.warmup})"
        )
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no GPU here; use --shape small --device cpu")
    shape = shapes()[args.shape]
    if args.quick:
        args.steps = min(args.steps, 4)
        shape = Shape(
            **{
                **shape.__dict__,
                "eval_prompts": max(shape.eval_prompts // 5, 8),
                "mmlu_questions": max(shape.mmlu_questions // 5, 8),
                "heldout_texts": max(shape.heldout_texts // 5, 4),
            }
        )
    total_steps = args.warmup + args.steps
    dtype = args.dtype or shape.dtype
    started = time.perf_counter()
    fig = Figures()
    gpu = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    print(
        f"shape {shape.name}, {dtype}, device {device} ({gpu}), torch {torch.__version__}, "
        f"parts {','.join(parts)}",
        flush=True,
    )

    examples, buffer = workload(shape, args.seed)
    lora_targets = args.lora_targets.split(",") if args.lora_targets else None
    method = get_method("tm")
    tok, base = random_model(shape, device, args.seed, dtype)
    base.config.use_cache = False
    lora_cfg = trial_config(shape, "lora", lora_targets, total_steps, dtype)
    built = build(lora_cfg.model, seed=args.seed, keep_reference=False, preloaded=(tok, base))
    if {"prepare", "lora", "full"} & set(parts):  # training's TM term needs the states
        _run(
            fig, "prepare", device, lambda: part_prepare(fig, built, method, buffer, shape, device)
        )
    if method.states is None and {"lora", "full"} & set(parts):
        for name in sorted({"lora", "full"} & set(parts)):
            fig.add(name, "skipped", True, "", "no TM states: prepare did not finish")
    if "lora" in parts and method.states is not None:
        _run(
            fig,
            "lora",
            device,
            lambda: part_train(
                fig, "lora", built, lora_cfg, examples, buffer, method, shape, device, args
            ),
        )
    if "eval" in parts:
        _run(fig, "eval", device, lambda: part_eval(fig, built, shape, device, args.seed))
    if "full" in parts:
        base = built.model.unload()  # the base model again, without the adapters
        del built
        gc.collect()
        base.requires_grad_(True)
        full_cfg = trial_config(shape, "full", None, total_steps, dtype)
        built = build(full_cfg.model, seed=args.seed, keep_reference=False, preloaded=(tok, base))
        if method.states is not None:
            _run(
                fig,
                "full",
                device,
                lambda: part_train(
                    fig, "full", built, full_cfg, examples, buffer, method, shape, device, args
                ),
            )
    if shape.name == "8b":
        estimate(fig, shape, statistics.mean(shape.task_len))
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "shape": shape.name,
        "dtype": dtype,
        "device": str(device),
        "gpu": gpu,
        "versions": _versions(),
        "seconds": time.perf_counter() - started,
        "figures": fig.rows,
    }
    Path(args.json).write_text(json.dumps(_finite(record), indent=2, allow_nan=False))
    print(f"figures written to {args.json} ({time.perf_counter() - started:.0f} s in all)")
    return 0


def _finite(x):
    """``x`` with every non-finite float as None (JSON has no NaN or inf)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "cuda": str(torch.version.cuda),
    }


def _run(fig: Figures, name: str, device: torch.device, fn) -> None:
    """Run one part; running out of GPU memory becomes that part's figure, and the rest go on."""
    try:
        fn()
    except torch.OutOfMemoryError as e:
        used = _peak_gb(device) or 0.0
        first = str(e).splitlines()[0][:120]
        fig.add(name, "out_of_memory", True, "", f"peak {used:.1f} GB: {first}")
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
