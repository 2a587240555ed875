"""Optimisation backends: plain PyTorch (one process) or DeepSpeed ZeRO (one rank per worker).

Both expose the same small surface to the training loop: ``start_task`` (a fresh optimiser
state for every task in the stream), ``backward``, ``step(lr)``, ``all_true`` (agree on a flag
across ranks, so every rank stops at the same step) and ``save_model`` (a Hugging Face-format
directory, consolidated across ZeRO-3 shards, that :func:`harness.models.build` can load).

The learning rate is set by the training loop on every step rather than by a scheduler object:
one optimiser spans the whole task stream (DeepSpeed's ZeRO optimisers are not
``torch.optim.Optimizer`` instances, so LambdaLR cannot drive them), and each task restarts
its warm-up and decay. See :func:`lr_at`.

Nothing here imports Ray; DeepSpeed is imported only when that backend is chosen.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path

import torch

from harness.config import TrialConfig
from harness.models import Built

log = logging.getLogger(__name__)


def lr_at(step: int, total: int, *, peak: float, warmup: int, schedule: str) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of a task with ``total`` steps:
    linear warm-up to ``peak`` over ``warmup`` steps, then cosine/linear decay to 0, or constant."""
    warmup = min(warmup, total)
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if schedule == "constant":
        return peak
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return peak * max(0.0, 1.0 - progress)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class TorchBackend:
    """Plain PyTorch AdamW in this process (world size 1)."""

    rank = 0
    world_size = 1
    is_deepspeed = False

    def __init__(self, built: Built, cfg: TrialConfig):
        self.built, self.cfg = built, cfg
        self.module = self.train_module = built.model
        self.params = built.trainable_parameters()
        self.optimizer: torch.optim.Optimizer | None = None

    def start_task(self) -> None:
        # A new AdamW per task: moments from the previous task do not leak into the next.
        self.optimizer = torch.optim.AdamW(
            self.params, lr=0.0, weight_decay=self.cfg.train.weight_decay
        )

    def backward(self, loss: torch.Tensor, n_micro: int) -> None:
        (loss / n_micro).backward()

    def step(self, lr: float) -> float:
        """Clip, then apply the update unless the gradient is non-finite; returns the norm."""
        assert self.optimizer is not None, "start_task() first"
        clip = self.cfg.train.max_grad_norm
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip if clip else float("inf")))
        if math.isfinite(norm):
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def all_true(self, flag: bool) -> bool:
        return flag

    def gather(self, obj):
        """Every rank's ``obj``, in rank order (here: just this one)."""
        return [obj]

    def barrier(self) -> None:
        pass

    def save_model(self, path: Path) -> None:
        _save_pretrained(self.built, self.module, path)


class DeepSpeedBackend:
    """DeepSpeed ZeRO stage 0-3 (optionally offloading optimizer/parameters to the CPU).

    The DeepSpeed config is derived from the trial config (:func:`deepspeed_config`), never
    hand-written per study. torch.distributed must be initialised (Ray Train does it; for a
    single local process :func:`init_single_process` does).
    """

    is_deepspeed = True

    def __init__(self, built: Built, cfg: TrialConfig):
        import deepspeed

        self.built, self.cfg = built, cfg
        self.ds_config = deepspeed_config(cfg)
        params = built.trainable_parameters()
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=built.model, model_parameters=params, config=self.ds_config
        )
        self.train_module = self.engine  # training forwards go through the engine
        self.module = self.engine.module
        if built.reference is not None and cfg.scale.zero_stage == 3:
            # A full-size frozen copy per rank would defeat ZeRO-3: partition it too.
            ref_config = {k: v for k, v in self.ds_config.items() if k != "optimizer"}
            built.reference = deepspeed.initialize(model=built.reference, config=ref_config)[
                0
            ].module
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()

    def start_task(self) -> None:
        # Reset the innermost torch optimiser's moments; the ZeRO wrappers keep their
        # (fp32 master) partitions, which hold the current weights and must not be reset.
        inner = self.optimizer
        while not isinstance(inner, torch.optim.Optimizer) and hasattr(inner, "optimizer"):
            inner = inner.optimizer
        inner.state.clear()

    def backward(self, loss: torch.Tensor, n_micro: int) -> None:
        # DeepSpeed divides by gradient_accumulation_steps itself.
        self.engine.backward(loss)
        self._pending = getattr(self, "_pending", 0) + 1

    def step(self, lr: float) -> float:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        for _ in range(self._pending):
            self.engine.step()  # applies the update at the accumulation boundary only
        self._pending = 0
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def all_true(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=_device(self.module))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        torch.distributed.barrier()

    def gather(self, obj):
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        out = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def save_model(self, path: Path) -> None:
        """Consolidated weights on rank 0 (every rank must call this: ZeRO-3 gathers)."""
        import deepspeed

        params = (
            self.built.trainable_parameters()
            if self.cfg.model.tuning == "lora"
            else list(self.module.parameters())
        )
        if self.cfg.scale.zero_stage == 3:
            # Gather shards onto every rank for the save; for LoRA only the adapters.
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if self.rank == 0:
                    _save_pretrained(self.built, self.module, path)
        elif self.rank == 0:
            _save_pretrained(self.built, self.module, path)
        self.barrier()


def _save_pretrained(built: Built, module: torch.nn.Module, path: Path) -> None:
    """HF format: full weights (or PEFT adapter only) + tokenizer, loadable by models.build."""
    path.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(path), safe_serialization=True)
    built.tokenizer.save_pretrained(str(path))


def deepspeed_config(cfg: TrialConfig) -> dict:
    """The DeepSpeed config dict for a trial (offload keys live inside zero_optimization)."""
    sc, tr = cfg.scale, cfg.train
    zero: dict = {"stage": sc.zero_stage}
    if sc.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": sc.use_gpu}
    if sc.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": sc.use_gpu}
    if sc.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": tr.batch_size,
        "gradient_accumulation_steps": tr.grad_accum,
        "gradient_clipping": tr.max_grad_norm or 0.0,
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW unless offloaded (DeepSpeedCPUAdam then); no fused CUDA op needed.
            "params": {
                "lr": tr.lr * tr.lr_multiplier,
                "weight_decay": tr.weight_decay,
                "torch_adam": not sc.offload_optimizer,
                "adam_w_mode": True,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def init_single_process() -> None:
    """Initialise a one-rank gloo process group (DeepSpeed outside Ray, e.g. the CLI)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)


def make_backend(built: Built, cfg: TrialConfig):
    if cfg.scale.backend == "deepspeed":
        if not torch.distributed.is_initialized():
            init_single_process()
        return DeepSpeedBackend(built, cfg)
    return TorchBackend(built, cfg)


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device
