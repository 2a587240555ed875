"""Plasticity diagnostics of a checkpoint: dormant MLP units, representation rank, weight size.

Pure PyTorch. Definitions (after Sokar et al. 2023, "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", and Dohare et al. 2024, "Loss of plasticity in deep continual
learning"):

* The representation of decoder layer i is the input of its MLP down-projection,
  ``h = act(gate(x)) * up(x)`` — one column per MLP unit (``intermediate_size`` of them) and
  one row per non-padding token of a fixed probe batch.
* **Dormant fraction** (Sokar et al. 2023): unit i's score is ``s_i = E|h_i| / mean_k E|h_k|``
  (SiLU/GELU units are never exactly 0, so "dead" is relative); a unit is dormant when
  ``s_i <= tau`` (tau = 0, 0.025, 0.1). **Gate-dormant fraction**: share of units whose gate
  pre-activation is > 0 on fewer than 1% of the tokens (gated MLPs only).
* **Effective rank** (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_k = sigma_k / sum sigma``
  over the singular values of the (uncentred) token x unit matrix; **srank**: the smallest k
  whose top-k singular values hold >= 99% of their sum. Both need at least as many tokens as
  units to resolve every direction; with fewer they are capped by the token count (a warning
  is issued and ``n_tokens`` is recorded with every row).
* **Weights**: per decoder layer and for the whole model (layer -1): Frobenius norm, mean
  |theta| and the distance ``||theta - theta_0||`` from the starting weights. For a LoRA
  model the effective weights ``W0 + B @ A * scale`` are measured (adapter matrices
  themselves are not), so the distance from the start is the size of the merged update.

:func:`plasticity_rows` returns rows of the ``plasticity`` record kind (``results.schema``);
:class:`PlasticityHook` records them for a trial at every stage.
Activation statistics are reduced inside the hooks, so only one layer's activations are held
at a time.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from harness.core import EvalBatch, TokenizedExample, eval_mode, is_peft
from harness.hooks import Hook

DEFAULT_TAUS = (0.0, 0.025, 0.1)
"""Dormant-score thresholds (Sokar et al. 2023)."""
GATE_ON_SHARE = 0.01
"""A unit whose gate pre-activation is > 0 on fewer than this share of tokens is gate-dormant."""


# --------------------------------------------------------------------------------------------
# Metrics on an activation matrix [tokens, units]
# --------------------------------------------------------------------------------------------


def dormant_scores(acts: Tensor) -> Tensor:
    """s_i = E|a_i| / mean_k E|a_k| per unit (float64); all zeros if every unit is silent."""
    mean_abs = acts.detach().double().abs().mean(dim=0)
    avg = mean_abs.mean()
    return mean_abs / avg if avg > 0 else torch.zeros_like(mean_abs)


def dormant_fraction(acts: Tensor, tau: float) -> float:
    """Share of units with dormant score s_i <= tau."""
    return float((dormant_scores(acts) <= tau).double().mean())


def gate_dormant_fraction(gate_preacts: Tensor, share: float = GATE_ON_SHARE) -> float:
    """Share of units whose gate pre-activation is > 0 on fewer than ``share`` of the tokens."""
    on = (gate_preacts.detach() > 0).double().mean(dim=0)
    return float((on < share).double().mean())


def _check_tokens(acts: Tensor, what: str) -> None:
    n_tokens, n_units = acts.shape
    if n_tokens < n_units:
        warnings.warn(
            f"{what}: {n_tokens} tokens < {n_units} units; the rank is capped at {n_tokens}. "
            "Use a probe batch with at least as many tokens as units for comparable values",
            RuntimeWarning,
            stacklevel=3,
        )


def _singular_values(acts: Tensor) -> Tensor:
    return torch.linalg.svdvals(acts.detach().double())


def _effective_rank(sigma: Tensor) -> float:
    total = sigma.sum()
    if total <= 0:
        return 0.0
    p = sigma / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def _srank(sigma: Tensor, delta: float) -> int:
    total = sigma.sum()
    if total <= 0:
        return 0
    share = torch.cumsum(torch.sort(sigma, descending=True).values, 0) / total
    # A little slack so a share of exactly 1 - delta is not missed by rounding.
    return int((share < 1 - delta - 1e-12).sum()) + 1


def effective_rank(acts: Tensor) -> float:
    """exp(entropy(p)), p_k = sigma_k / sum sigma, of the [tokens, units] matrix (0 if all 0)."""
    _check_tokens(acts, "effective_rank")
    return _effective_rank(_singular_values(acts))


def srank(acts: Tensor, delta: float = 0.01) -> int:
    """Smallest k with (sum of the k largest sigma) / (sum sigma) >= 1 - delta (0 if all 0)."""
    _check_tokens(acts, "srank")
    return _srank(_singular_values(acts), delta)


# --------------------------------------------------------------------------------------------
# Finding layers and hooking the MLP
# --------------------------------------------------------------------------------------------


def decoder_layers(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """(qualified name, layers) of the decoder stack: the first ModuleList of blocks that each
    have ``mlp.down_proj`` (HF Llama/Mistral/Qwen; also inside a PEFT wrapper)."""
    for name, m in model.named_modules():
        if (
            isinstance(m, nn.ModuleList)
            and len(m)
            and all(hasattr(getattr(b, "mlp", None), "down_proj") for b in m)
        ):
            return name, list(m)
    raise ValueError(
        f"{type(model).__name__}: no decoder layers with mlp.down_proj found; plasticity "
        "diagnostics support gated-MLP decoders (Llama-style)"
    )


@contextlib.contextmanager
def _mlp_hooks(
    model: nn.Module,
    batch: EvalBatch,
    on_input: Callable[[int, Tensor], None],
    on_gate: Callable[[int, Tensor], None] | None = None,
    layers: Sequence[int] | None = None,
) -> Iterator[None]:
    """Call ``on_input(i, acts)`` with layer i's down-projection input [non-pad tokens, units]
    (and ``on_gate(i, preacts)`` with its gate pre-activations) during forwards in the block."""
    _, blocks = decoder_layers(model)
    keep = set(range(len(blocks)) if layers is None else layers)
    mask = batch.attention_mask.bool()
    handles = []

    def rows(t: Tensor) -> Tensor:
        return t[mask.to(t.device)]  # [B, L, units] -> [non-pad tokens, units]

    for i, block in enumerate(blocks):
        if i not in keep:
            continue
        handles.append(
            block.mlp.down_proj.register_forward_pre_hook(
                lambda _m, args, i=i: on_input(i, rows(args[0]))
            )
        )
        gate = getattr(block.mlp, "gate_proj", None)
        if on_gate is not None and gate is not None:
            handles.append(
                gate.register_forward_hook(lambda _m, _a, out, i=i: on_gate(i, rows(out)))
            )
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _forward(model: nn.Module, batch: EvalBatch) -> None:
    device = next(model.parameters()).device
    with eval_mode(model):
        model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))


def capture_mlp_inputs(
    model: nn.Module, batch: EvalBatch, *, layers: Sequence[int] | None = None
) -> dict[int, Tensor]:
    """Layer index -> down-projection input [non-padding tokens, units] (float32, detached).

    Holds every requested layer's activations; :func:`plasticity_rows` reduces them on the fly.
    """
    out: dict[int, Tensor] = {}
    with _mlp_hooks(
        model, batch, lambda i, a: out.__setitem__(i, a.detach().float().clone()), layers=layers
    ):
        _forward(model, batch)
    return out


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def _canonical(name: str, peft: bool) -> str:
    """The plain model's parameter name: PEFT's 'base_model.model.' and '.base_layer' removed."""
    if peft and name.startswith("base_model.model."):
        name = name[len("base_model.model.") :]
    return name.replace(".base_layer.", ".")


@torch.no_grad()
def effective_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(plain parameter name, effective weight) for every weight the model computes with.

    For a PEFT LoRA model, adapted weights are ``W0 + delta_W`` (float32) and the adapter
    matrices are skipped; other tensors are yielded as stored (no copy).
    """
    if not is_peft(model):
        for name, p in model.named_parameters():
            yield name, p.detach()
        return
    from harness.landscape.lora import merged_lora_params

    deltas = merged_lora_params(model)
    for name, p in model.named_parameters():
        if any(part.startswith("lora_") for part in name.split(".")):
            continue
        w = p.detach()
        if name in deltas:
            w = w.float() + deltas[name].to(w.device)
        yield _canonical(name, True), w


def snapshot_weights(model: nn.Module, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """A copy of :func:`effective_weights` (e.g. at stage 0) to pass as ``initial_params``."""
    return {n: w.to(device, copy=True) for n, w in effective_weights(model)}


@torch.no_grad()
def weight_stats(
    model: nn.Module, initial_params: Mapping[str, Tensor] | None = None
) -> list[dict]:
    """Partial rows (layer, metric, value, n_units): weight_norm, mean_abs_weight and (with
    ``initial_params`` from :func:`snapshot_weights`) weight_distance, per decoder layer and for
    the whole model (layer -1: every weight, embeddings and head included)."""
    prefix, blocks = decoder_layers(model)
    prefix = _canonical(prefix + ".", is_peft(model))  # e.g. 'model.layers.'
    n_layers = len(blocks)
    keys = [*range(n_layers), -1]
    sq = dict.fromkeys(keys, 0.0)
    absum = dict.fromkeys(keys, 0.0)
    dist = dict.fromkeys(keys, 0.0)
    count = dict.fromkeys(keys, 0)
    for name, w in effective_weights(model):
        w64 = w.double()
        where = [-1]
        if name.startswith(prefix):
            where.append(int(name[len(prefix) :].split(".", 1)[0]))
        s, a, n = float((w64 * w64).sum()), float(w64.abs().sum()), w.numel()
        d = 0.0
        if initial_params is not None:
            if name not in initial_params:
                raise KeyError(
                    f"{name} is not in initial_params; take them with snapshot_weights(model) "
                    "from the same kind of model (plain or PEFT)"
                )
            d = float(((w64 - initial_params[name].to(w.device, torch.float64)) ** 2).sum())
        for k in where:
            sq[k] += s
            absum[k] += a
            dist[k] += d
            count[k] += n
    rows = []
    for k in keys:
        metrics = {"weight_norm": math.sqrt(sq[k]), "mean_abs_weight": absum[k] / count[k]}
        if initial_params is not None:
            metrics["weight_distance"] = math.sqrt(dist[k])
        for metric, value in metrics.items():
            rows.append({"layer": k, "metric": metric, "value": value, "n_units": count[k]})
    return rows


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


def plasticity_rows(
    model: nn.Module,
    probe_batch: EvalBatch,
    *,
    stage: int,
    after_task: str,
    initial_params: Mapping[str, Tensor] | None,
    taus: Sequence[float] = DEFAULT_TAUS,
    gate_share: float = GATE_ON_SHARE,
    srank_delta: float = 0.01,
) -> list[dict]:
    """Every diagnostic of one checkpoint as ``plasticity`` rows.

    Per decoder layer: dormant_fraction (one row per tau), gate_dormant_fraction (tau column =
    ``gate_share``), effective_rank, srank. Layer -1: dormant and gate-dormant fractions pooled
    over all layers' units (each unit scored within its own layer). Then weight_norm,
    mean_abs_weight and weight_distance (if ``initial_params``) per layer and for the model.
    """
    per_layer: dict[int, dict] = {}

    def on_input(i: int, acts: Tensor) -> None:
        scores = dormant_scores(acts)
        per_layer.setdefault(i, {}).update(
            scores=scores, sigma=_singular_values(acts), n_tokens=acts.shape[0]
        )

    def on_gate(i: int, pre: Tensor) -> None:
        per_layer.setdefault(i, {})["gate_on"] = (pre.detach() > 0).double().mean(dim=0)

    with _mlp_hooks(model, probe_batch, on_input, on_gate):
        _forward(model, probe_batch)

    n_tokens = int(probe_batch.attention_mask.sum())
    few = [i for i, s in per_layer.items() if s["n_tokens"] < len(s["scores"])]
    if few:
        units = len(per_layer[few[0]]["scores"])
        warnings.warn(
            f"plasticity probe: {n_tokens} tokens < {units} MLP units; effective_rank and srank "
            "are capped at the token count (recorded as n_tokens)",
            RuntimeWarning,
            stacklevel=2,
        )

    rows: list[dict] = []

    def add(layer: int, metric: str, tau: float, value: float, n_units: int, n_tok: int) -> None:
        rows.append(
            {
                "stage": stage,
                "after_task": after_task,
                "layer": layer,
                "metric": metric,
                "tau": tau,
                "value": float(value),
                "n_units": int(n_units),
                "n_tokens": int(n_tok),
            }
        )

    for i in sorted(per_layer):
        s = per_layer[i]
        units = len(s["scores"])
        for tau in taus:
            add(i, "dormant_fraction", tau, (s["scores"] <= tau).double().mean(), units, n_tokens)
        if "gate_on" in s:
            value = (s["gate_on"] < gate_share).double().mean()
            add(i, "gate_dormant_fraction", gate_share, value, units, n_tokens)
        add(i, "effective_rank", math.nan, _effective_rank(s["sigma"]), units, n_tokens)
        add(i, "srank", math.nan, _srank(s["sigma"], srank_delta), units, n_tokens)

    if per_layer:
        scores = torch.cat([s["scores"] for s in per_layer.values()])
        for tau in taus:
            add(-1, "dormant_fraction", tau, (scores <= tau).double().mean(), len(scores), n_tokens)
        gates = [s["gate_on"] for s in per_layer.values() if "gate_on" in s]
        if gates:
            on = torch.cat(gates)
            add(
                -1,
                "gate_dormant_fraction",
                gate_share,
                (on < gate_share).double().mean(),
                len(on),
                n_tokens,
            )

    for r in weight_stats(model, initial_params):
        add(r["layer"], r["metric"], math.nan, r["value"], r["n_units"], 0)
    return rows


class PlasticityHook(Hook):
    """Every diagnostic at every stage, on a fixed probe batch (the first
    ``eval.plasticity_texts`` held-out texts), distances measured from the starting weights.
    Off when the weights are sharded over ranks (they are read whole)."""

    kinds = ("plasticity",)

    def setup(self, trial) -> None:
        import logging

        cfg = trial.cfg
        if trial.backend.sharded:
            logging.getLogger(__name__).warning(
                "plasticity diagnostics skipped: ZeRO-3 shards the weights they read"
            )
            self.kinds = ()
            return
        rows = [
            TokenizedExample(ids=tuple(t), n_prompt=0)
            for t in trial.inputs.heldout[: cfg.eval.plasticity_texts]
        ]
        self.batch = EvalBatch.from_examples(rows, trial.inputs.pad_id)
        model = trial.built.model
        if not trial.resumed:
            self.initial = snapshot_weights(model)
            return
        # A resumed model is no longer the start: load the starting weights to measure from.
        from harness.models import load_tokenizer_and_model

        dtype = next(model.parameters()).dtype
        start = load_tokenizer_and_model(
            cfg.model.name, dtype=dtype, seed=cfg.seed, revision=cfg.model.revision
        )[1]
        self.initial = snapshot_weights(start)

    def before_first_task(self, trial) -> None:
        self._record(trial, 0, "<start>")

    def after_task(self, trial, stage: int) -> None:
        self._record(trial, stage, trial.stage_name(stage))

    def _record(self, trial, stage: int, after_task: str) -> None:
        if not self.kinds:
            return
        model = trial.built.model
        with eval_mode(model), torch.no_grad():
            trial.state.rows["plasticity"] += plasticity_rows(
                model, self.batch, stage=stage, after_task=after_task, initial_params=self.initial
            )
        trial.flush()
