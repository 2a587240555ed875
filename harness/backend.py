"""Optimisation backends: plain PyTorch (one process) or DeepSpeed ZeRO (one rank per worker).

:class:`Backend` is the whole contract between a trial and its backend; no module outside this
one tests the ZeRO stage or the backend's type. What it covers:

* **who am I**: ``rank``, ``world_size``, ``is_main``; ``sharded`` says whether each rank holds
  only a shard of the weights (ZeRO-3), so whole weights cannot be read or rewritten in place;
* **the model**: :meth:`Backend.build_model` builds it (partitioned while it loads under
  ZeRO-3) and wraps it for training; ``module`` is the model for evaluation forwards,
  ``train_module`` the one training forwards go through;
* **optimisation**: ``start_task`` (a fresh optimiser state for every task in the stream),
  ``backward``, ``step(lr)``, ``min_step_items`` (the smallest effective batch every rank can
  take a micro-batch of);
* **rewriting weights between steps** (plasticity interventions): an intervention edits
  ``module``'s parameters in place, identically on every rank, then calls
  ``weights_edited(params)`` so the backend's own copies agree (DeepSpeed ZeRO-1/2 keeps an
  fp32 master partition per rank, which would undo the edit at the next step), and
  ``reset_optimizer_state`` to forget the moments of what it replaced; ``sum_across_ranks``
  pools statistics that every rank must decide on alike. :func:`rewrites_weights_problem`
  says where this is possible (not under ZeRO-3, whose ranks hold shards);
* **agreement**: ``all_true`` (every rank stops at the same step), ``gather``, ``barrier``;
* **keeping collectives in step**: when the weights are sharded every forward is a collective
  (ZeRO-3 gathers each layer's weights as it runs, and hooks every tensor a module returns to
  gather them again in backward), so every rank must make the same forward calls and
  backpropagate through the same outputs. :meth:`Backend.idle_frozen_forward` and
  :meth:`Backend.touch_outputs` are the two places the training loop asks for that;
* **checkpoints**: ``save_model`` (a Hugging Face-format directory, consolidated across ZeRO-3
  shards, that :meth:`Backend.build_model` can load) and ``barrier``.

Nothing here imports Ray; DeepSpeed is imported only when that backend is chosen.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import socket
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from harness.adam import AdamWPerElementStep
from harness.config import TrialConfig
from harness.config.scale import rewrites_weights_problem, shards_weights  # noqa: F401  (the rules it acts on)
from harness.core import device_of
from harness.models import Built, build, last_hidden_and_logits

log = logging.getLogger(__name__)


@runtime_checkable
class Backend(Protocol):
    """What a trial needs of its backend (see the module docstring)."""

    rank: int
    world_size: int
    sharded: bool
    """Each rank holds a shard of the weights (ZeRO-3): forwards are collectives, and whole
    weights cannot be read (plasticity diagnostics) or rewritten (landscape slices)."""
    step_skipped: bool
    """The last :meth:`step` applied no update by design: float16's dynamic loss scaling
    found an overflow and lowered the scale (the non-finite norm is not a divergence)."""
    module: nn.Module
    train_module: nn.Module

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes files."""
        ...

    def build_model(self, *, keep_reference: bool, weights: Path | None) -> Built: ...
    def start_task(self) -> None: ...
    def backward(self, loss: torch.Tensor, n_micro: int) -> None: ...
    def step(self, lr: float) -> float: ...
    def min_step_items(self, grad_accum: int) -> int: ...
    def all_true(self, flag: bool) -> bool: ...
    def gather(self, obj: object) -> list: ...
    def barrier(self) -> None: ...
    def reset_optimizer_state(
        self, params: list[nn.Parameter], index: torch.Tensor | None = None, dim: int = 0
    ) -> None: ...
    def weights_edited(self, params: list[nn.Parameter]) -> None: ...
    def sum_across_ranks(self, tensor: torch.Tensor) -> torch.Tensor: ...
    def idle_frozen_forward(self, built: Built, input_ids: torch.Tensor) -> None: ...
    def touch_outputs(self, loss: torch.Tensor, *outputs: torch.Tensor) -> torch.Tensor: ...
    def save_model(self, path: Path) -> None: ...


class _Base:
    """What both backends share: building the model, and the single-rank defaults."""

    rank = 0
    world_size = 1
    sharded = False
    step_skipped = False

    def __init__(self, cfg: TrialConfig, *, per_element_step: bool = False):
        self.cfg = cfg
        self.per_element_step = per_element_step

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _build(self, *, keep_reference: bool, weights: Path | None, zero3: dict | None) -> Built:
        return build(
            self.cfg.model,
            seed=self.cfg.seed,
            keep_reference=keep_reference,
            weights=weights,
            zero3_config=zero3,
        )

    def min_step_items(self, grad_accum: int) -> int:
        return 1

    def idle_frozen_forward(self, built: Built, input_ids: torch.Tensor) -> None:
        """Called by a rank whose micro-batch needs no frozen-model forward: under sharded
        weights it runs a discarded one-token one, so every rank makes the same calls."""
        if self.sharded and self.world_size > 1:
            with torch.no_grad(), built.starting_model() as ref:
                one = input_ids[:1, :1]
                last_hidden_and_logits(ref, one, torch.ones_like(one))

    def touch_outputs(self, loss: torch.Tensor, *outputs: torch.Tensor) -> torch.Tensor:
        """``loss``, made to depend (with zero gradient) on ``outputs`` under sharded weights:
        a rank whose micro-batch leaves an output unused (no replay rows, so no term reads the
        hidden state) still backpropagates through it, firing the same ZeRO-3 hooks (and so
        the same all-gathers) as a rank whose loss reads it."""
        if self.sharded and self.world_size > 1:
            for t in outputs:
                loss = loss + 0.0 * t.sum()
        return loss


class TorchBackend(_Base):
    """Plain PyTorch AdamW in this process (world size 1)."""

    def build_model(self, *, keep_reference: bool, weights: Path | None = None) -> Built:
        built = self._build(keep_reference=keep_reference, weights=weights, zero3=None)
        self.wrap(built)
        return built

    def wrap(self, built: Built) -> None:
        """Train an already built model."""
        self.built = built
        self.module = self.train_module = built.model
        self.params = built.trainable_parameters()
        self.optimizer: torch.optim.Optimizer | None = None

    def start_task(self) -> None:
        # A new AdamW per task: moments from the previous task do not leak into the next.
        kind = AdamWPerElementStep if self.per_element_step else torch.optim.AdamW
        self.optimizer = kind(self.params, lr=0.0, weight_decay=self.cfg.train.weight_decay)

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

    def reset_optimizer_state(
        self, params: list[nn.Parameter], index: torch.Tensor | None = None, dim: int = 0
    ) -> None:
        """Forget the optimiser moments of ``params`` (they were just rewritten): all of them,
        or only the slices ``index`` along ``dim`` (reinitialised units)."""
        if self.optimizer is None:
            return
        for p in params:
            if index is None:
                self.optimizer.state.pop(p, None)
                continue
            for value in self.optimizer.state.get(p, {}).values():
                if torch.is_tensor(value) and value.shape == p.shape:
                    _forget_rows(value, index, dim)

    def weights_edited(self, params: list[nn.Parameter]) -> None:
        """Nothing to do: the optimiser updates the module's own tensors."""

    def sum_across_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def save_model(self, path: Path) -> None:
        _save_pretrained(self.built, self.module, path)


class DeepSpeedBackend(_Base):
    """DeepSpeed ZeRO stage 0-3 (optionally offloading optimizer/parameters to the CPU).

    The DeepSpeed config is derived from the trial config (:func:`deepspeed_config`), never
    hand-written per study. torch.distributed must be initialised (Ray Train does it; for a
    single local process :func:`init_single_process` does).
    """

    def __init__(self, cfg: TrialConfig, *, per_element_step: bool = False):
        super().__init__(cfg, per_element_step=per_element_step)
        import_deepspeed()
        if not torch.distributed.is_initialized():
            init_single_process(cfg.scale.collective_timeout_s)
        self.rank = torch.distributed.get_rank()
        self.world_size = torch.distributed.get_world_size()
        self.sharded = shards_weights(cfg.scale)
        self.ds_config = deepspeed_config(cfg, client_optimizer=per_element_step)

    def build_model(self, *, keep_reference: bool, weights: Path | None = None) -> Built:
        # Under ZeRO-3 Hub/local models are partitioned across ranks while they load.
        zero3 = self.ds_config if self.sharded else None
        built = self._build(keep_reference=keep_reference, weights=weights, zero3=zero3)
        self.wrap(built)
        return built

    def wrap(self, built: Built) -> None:
        """Hand an already built model to DeepSpeed."""
        import deepspeed

        self.built = built
        params = built.trainable_parameters()
        client = None
        if self.per_element_step:  # DeepSpeed wraps it (ZeRO-1/2: on its fp32 partitions)
            tr = self.cfg.train
            client = AdamWPerElementStep(
                params, lr=tr.lr * tr.lr_multiplier, weight_decay=tr.weight_decay
            )
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=built.model,
            model_parameters=params,
            optimizer=client,
            config=self.ds_config,
        )
        self.train_module = self.engine  # training forwards go through the engine
        self.module = self.engine.module
        if built.reference is not None and self.sharded:
            # A full-size frozen copy per rank would defeat ZeRO-3: partition it too.
            ref_config = {k: v for k, v in self.ds_config.items() if k != "optimizer"}
            built.reference = deepspeed.initialize(model=built.reference, config=ref_config)[
                0
            ].module

    def _inner_optimizer(self) -> torch.optim.Optimizer:
        inner = self.optimizer
        while not isinstance(inner, torch.optim.Optimizer) and hasattr(inner, "optimizer"):
            inner = inner.optimizer
        return inner

    def start_task(self) -> None:
        # Reset the innermost torch optimiser's moments; the ZeRO wrappers keep their
        # (fp32 master) partitions, which hold the current weights and must not be reset.
        # Zeroed in place, not cleared: ZeRO-1/2 links each parameter to its fragment of these
        # tensors once, at the first step (what weights_edited and reset_optimizer_state use),
        # and a fresh AdamW state is exactly zero moments and step 0.
        for state in self._inner_optimizer().state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    value.zero_()
                else:
                    state[key] = type(value)(0)

    def backward(self, loss: torch.Tensor, n_micro: int) -> None:
        # DeepSpeed divides by gradient_accumulation_steps itself. The step's last backward is
        # the accumulation boundary, where ZeRO-1/2 reduce the accumulated gradients: said
        # explicitly, since DeepSpeed's own counter only moves in step() (all backwards first,
        # then the steps, left ZeRO-2 with nothing reduced: KeyError 0 in its step).
        self._pending = getattr(self, "_pending", 0) + 1
        self.engine.set_gradient_accumulation_boundary(self._pending == n_micro)
        self.engine.backward(loss)

    def step(self, lr: float) -> float:
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.engine.set_gradient_accumulation_boundary(True)
        self.engine.step()  # one update for the step's micro-batches
        self._pending = 0
        # float16: an overflow makes DeepSpeed skip the update and lower the loss scale
        # (routine in the first steps, at scale 2^16); the norm it reports is then inf.
        self.step_skipped = self.cfg.model.dtype == "float16" and not self.engine.was_step_applied()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def min_step_items(self, grad_accum: int) -> int:
        # Every rank must run grad_accum micro-steps to reach DeepSpeed's step boundary.
        return self.world_size * grad_accum

    def all_true(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=device_of(self.module))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        torch.distributed.barrier()

    def _check_rewritable(self) -> None:
        problem = rewrites_weights_problem(self.cfg.scale)
        if problem:
            raise NotImplementedError(problem)

    def reset_optimizer_state(
        self, params: list[nn.Parameter], index: torch.Tensor | None = None, dim: int = 0
    ) -> None:
        """Zero the Adam moments of ``params`` (or of their slices ``index`` along ``dim``) in
        every rank's partition. A collective under ZeRO-1/2: every rank must call it with the
        same parameters in the same order."""
        self._check_rewritable()
        from deepspeed.utils import safe_get_full_optimizer_state, safe_set_full_optimizer_state

        inner = self._inner_optimizer().state
        if not inner:
            return  # no step yet in this task: there are no moments to forget
        first = next(iter(inner.values()))
        keys = [k for k, v in first.items() if torch.is_tensor(v) and v.ndim >= 1]
        for p in params:
            for key in keys:
                # ZeRO-1/2 (and bf16 at stage 0): this rank's fragment of the fp32 state,
                # assembled by an all-reduce; None: a plain optimiser, keyed by the parameter.
                full = safe_get_full_optimizer_state(p, key)
                own = full is None
                if own:
                    full = inner.get(p, {}).get(key)
                    if full is None:
                        continue
                _forget_rows(full, index, dim)
                if not own:
                    safe_set_full_optimizer_state(p, full, key)

    def weights_edited(self, params: list[nn.Parameter]) -> None:
        """Copy ``params``' new values (edited in place, alike on every rank) into DeepSpeed's
        fp32 master partitions, which the next step would otherwise copy back over them."""
        self._check_rewritable()
        from deepspeed.utils import safe_set_full_fp32_param  # a no-op without a master copy

        for p in params:
            safe_set_full_fp32_param(p, p.detach())

    def sum_across_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of every rank's ``tensor`` (on the model's device for the
        collective: NCCL reduces GPU tensors only), returned where ``tensor`` was."""
        out = tensor.to(device_of(self.module), copy=True)
        torch.distributed.all_reduce(out)
        return out.to(tensor.device)

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
        if self.sharded:
            # Gather shards onto every rank for the save; for LoRA only the adapters.
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                if self.rank == 0:
                    _save_pretrained(self.built, self.module, path)
        elif self.rank == 0:
            _save_pretrained(self.built, self.module, path)
        self.barrier()


def _forget_rows(moment: torch.Tensor, index: torch.Tensor | None, dim: int) -> None:
    """Zero an optimiser moment in place: all of it, or its slices ``index`` along ``dim``."""
    if index is None:
        moment.zero_()
    else:
        moment.index_fill_(dim, index.to(moment.device), 0.0)


def _save_pretrained(built: Built, module: torch.nn.Module, path: Path) -> None:
    """HF format: full weights (or PEFT adapter only) + tokenizer, loadable by models.build."""
    path.mkdir(parents=True, exist_ok=True)
    module.save_pretrained(str(path), safe_serialization=True)
    built.tokenizer.save_pretrained(str(path))


def deepspeed_config(cfg: TrialConfig, *, client_optimizer: bool = False) -> dict:
    """The DeepSpeed config dict for a trial (offload keys live inside zero_optimization).
    ``client_optimizer``: the backend hands DeepSpeed its own optimiser (no "optimizer"
    section; ZeRO accepts an optimiser it has not tested when told so)."""
    sc, tr = cfg.scale, cfg.train
    zero: dict = {"stage": sc.zero_stage}
    if sc.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": sc.use_gpu}
    if sc.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": sc.use_gpu}
    if sc.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    optimizer = {
        "type": "AdamW",
        # torch's AdamW unless offloaded (DeepSpeedCPUAdam then); no fused CUDA op needed.
        "params": {
            "lr": tr.lr * tr.lr_multiplier,
            "weight_decay": tr.weight_decay,
            "torch_adam": not sc.offload_optimizer,
            "adam_w_mode": True,
        },
    }
    return {
        "train_micro_batch_size_per_gpu": tr.batch_size,
        "gradient_accumulation_steps": tr.grad_accum,
        "gradient_clipping": tr.max_grad_norm or 0.0,
        **(
            {"zero_allow_untested_optimizer": True}
            if client_optimizer
            else {"optimizer": optimizer}
        ),
        "zero_optimization": zero,
        "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
        # fp16 weights train with DeepSpeed's dynamic loss scaling (loss_scale 0 = dynamic).
        "fp16": {"enabled": cfg.model.dtype == "float16", "loss_scale": 0},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def init_single_process(timeout_s: float = 900.0) -> None:
    """Initialise a one-rank gloo process group (DeepSpeed outside Ray, e.g. the CLI), its
    collectives timing out after ``timeout_s`` (``scale.collective_timeout_s``; under Ray
    Train the process group comes from ``TorchConfig(timeout_s=...)`` instead)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    torch.distributed.init_process_group(
        "gloo", rank=0, world_size=1, timeout=datetime.timedelta(seconds=timeout_s)
    )


def import_deepspeed():
    """``import deepspeed``, less two costs of every rank of every trial for code the harness
    never runs (measured with ``python -X importtime`` and py-spy):

    * its autotuner's optional MLflow import (1.1 s of the 1.3 s ``import deepspeed``; MLflow
      stays importable afterwards, for the tracker in the driver);
    * ``torch.compile`` of its Muon optimiser's kernels, which ``deepspeed.initialize`` imports
      to list the optimisers ZeRO supports (compiling at import loads TorchDynamo and
      Inductor, ~1 s): they are compiled when first called instead, as they would be anyway.
    """
    import sys

    if "deepspeed" in sys.modules or "mlflow" in sys.modules:
        import deepspeed
    else:
        sys.modules["mlflow"] = None  # ``import mlflow`` raises ImportError while this stands
        try:
            import deepspeed
        finally:
            if sys.modules.get("mlflow", False) is None:
                del sys.modules["mlflow"]
    from deepspeed.runtime import compiler

    compiler.compile = _compile_on_first_call
    return deepspeed


def _compile_on_first_call(**options):
    """DeepSpeed's ``compiler.compile()`` decorator (``torch.compile``), compiling when the
    function is first called rather than when its module is imported."""
    import functools

    def decorate(fn):
        compiled = None

        @functools.wraps(fn)
        def run(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = torch.compile(fn, **options)
            return compiled(*args, **kwargs)

        return run

    return decorate


def make_backend(cfg: TrialConfig, *, per_element_step: bool = False) -> Backend:
    """The backend a trial config asks for (its model is built by ``build_model``).

    ``per_element_step``: train with :class:`harness.adam.AdamWPerElementStep` (Adam's step
    count per element, restarted with the moments of reset rows: what continual backprop's
    reference uses) instead of torch's AdamW."""
    if cfg.scale.backend == "deepspeed":
        return DeepSpeedBackend(cfg, per_element_step=per_element_step)
    return TorchBackend(cfg, per_element_step=per_element_step)
