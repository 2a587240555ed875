"""One trial = one frozen, typed config.

Configs are plain frozen dataclasses grouped by concern. They cross process boundaries (Ray,
files, the command line) as nested dicts and are rebuilt with :func:`from_dict`, which checks
every key and value and raises one :class:`ConfigError` listing *every* problem, with a
"did you mean" hint for misspelt keys. Training code only ever sees a validated
:class:`TrialConfig`, never a raw dict.

The docstring under each field is the documentation: ``python -m harness run --help`` prints it.
Replay method names and their settings (``replay.settings``) come from the method registry,
:mod:`harness.replay`, which documents each setting in the method's ``__init__`` docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml

from harness.suggest import did_you_mean

if TYPE_CHECKING:
    from harness.replay import ReplayMethod


class ConfigError(ValueError):
    """A config problem (or several). The message lists every problem found, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            f"{len(problems)} config problem(s):\n" + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class Choices:
    """Marks a ``str`` field whose valid values come from a registry rather than a Literal:
    ``Annotated[str, Choices(names)]``. ``names()`` is called when a value is checked or the
    help is printed, so the registry is imported only then."""

    names: Callable[[], Sequence[str]]
    describe: Callable[[], dict[str, str]] | None = None
    """One line per name, for --help."""


def _replay_registry() -> dict[str, type[ReplayMethod]]:
    from harness.replay import REGISTRY  # torch: imported when a config is checked, not here

    return REGISTRY


def _replay_method_names() -> list[str]:
    from harness.replay import method_names

    return method_names()


def _replay_method_lines() -> dict[str, str]:
    registry = _replay_registry()
    return {
        name: (inspect.getdoc(registry[name]) or "").split("\n\n")[0].replace("\n", " ")
        for name in _replay_method_names()
    }


ReplayMethodName = Annotated[str, Choices(_replay_method_names, _replay_method_lines)]
"""A method registered in harness.replay (its REGISTRY is the one list of names)."""

LEGACY_REPLAY_SETTINGS = {"tm_k": ("tm", "k"), "kl_temperature": ("kl", "temperature")}
"""Former flat ReplayConfig fields -> (the method they belonged to, its setting's name).
Stored configs (``config_json``) still hold them; :func:`computed_settings` reads them."""


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which causal LM to fine-tune, and how (LoRA or all weights)."""

    name: str = "tiny"
    """A preset ('tiny', 'world', 'llama-3.1-8b'), a Hugging Face model id, or a local directory
    saved with save_pretrained. 'tiny' is a randomly initialised 2-layer Llama with a byte-level
    tokenizer, built offline (for tests); 'world' is the project's pretrained base for the
    generated world (built on first use)."""
    tuning: Literal["full", "lora"] = "full"
    """'full' trains every weight; 'lora' trains only PEFT LoRA adapters."""
    lora_r: int = 8
    """LoRA rank (tuning='lora' only)."""
    lora_alpha: int = 16
    """LoRA scaling numerator; the update is scaled by lora_alpha / lora_r."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA branch input."""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names that receive adapters (Llama attention projections by default)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weight dtype. bfloat16 is for GPUs; CPU runs stay in float32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on long sequences)."""


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the benchmark comes from and how much of it a trial uses."""

    root: str | None = None
    """Data directory (holding long_sequence/, general/, mmlu/). Unset: $GERE_DATA_DIR, else
    ../shared/data next to the repository when it exists."""
    tasks: str = "order6"
    """The task sequence: a standard order by name (order4, order5, order6, or
    long-sequence-yelp-first etc.) or a comma-separated list of task names, trained in order."""
    restrict_to_available: bool = False
    """Run a named order restricted to the tasks present in the data directory (the dropped
    tasks are logged and recorded). Off: a missing task is an error."""
    label_policy: Literal["strict", "drop_unknown", "from_outputs"] = "strict"
    """What to do when an instance's label is not in labels.json: 'strict' fails naming the task,
    file and labels; 'drop_unknown' drops such instances; 'from_outputs' takes the label set from
    the train outputs when labels.json matches none of them (qqp), then drops test instances
    outside it (mnli's '-')."""
    max_train_per_task: int | None = 1000
    """Cap on training instances per task (seeded sample); None = all."""
    max_test_per_task: int | None = 200
    """Cap on test instances per task (seeded sample); None = all."""
    max_seq_len: int = 256
    """Token budget for a task example (prompt + label); longer prompts are cut from the left
    so the label is always kept."""
    cache_dir: str | None = None
    """Token cache directory. Unset: $GERE_CACHE_DIR/tokens or ~/.cache/gere-harness/tokens."""


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """The anti-forgetting method: which replay loss, on which general texts."""

    method: ReplayMethodName = "tm"
    """The replay method, by its name in harness.replay (one module per method; its docstring
    gives the exact loss)."""
    corpus: str = "general/train.jsonl"
    """General corpus: a jsonl path (absolute or relative to data.root) or 'hf:<dataset>'."""
    size: int = 1000
    """Number of replay texts (GeRe: 1,000). Ignored when method='none'."""
    max_tokens: int = 563
    """Each replay text is truncated to this many tokens (GeRe: 563)."""
    weight: float | Literal["dynamic"] | None = None
    """Weight w of the replay-loss term in L = CE + w*term: a number, 'dynamic'
    (w = CE/term, both detached), or unset = the method's default (tm: 100, others: 1)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The method's own settings, by name (the keyword arguments of its class; each one is
    listed below as --replay.settings.NAME). Unset ones take the method's default; a setting
    the chosen method does not have is an error."""
    per_batch: int | None = None
    """Batch interpolation: put exactly this many replay samples in every effective batch.
    Unset: the replay texts are shuffled into each task's training set."""

    def build_method(self) -> ReplayMethod:
        """The replay method this config names, built with its settings."""
        from harness.replay import get_method

        return get_method(self.method, **self.settings)

    def full_settings(self) -> dict[str, Any]:
        """``settings`` with the method's defaults filled in (what the trial computes with)."""
        return method_settings(self.method, self.settings)

    def __hash__(self) -> int:  # settings is a dict; hash the config's plain form instead
        return hash(json.dumps(to_dict(self), sort_keys=True, default=str))


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings, applied to every task in the stream (fresh optimiser per task)."""

    lr: float = 1e-5
    """Base learning rate; the trial's rate is lr * lr_multiplier."""
    lr_multiplier: float = 1.0
    """Scales lr; the LR-robustness study sweeps 1-10x."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up, per task."""
    warmup_steps: int = 10
    """Linear warm-up optimiser steps at the start of every task."""
    epochs: float = 1.0
    """Passes over each task's training set (fractions allowed)."""
    max_steps_per_task: int | None = None
    """Hard cap on optimiser steps per task (smoke runs)."""
    batch_size: int = 8
    """Examples per micro-batch (per device)."""
    grad_accum: int = 1
    """Micro-batches per optimiser step; effective batch = batch_size * grad_accum * workers."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping norm; None disables clipping."""
    log_every: int = 10
    """Record a training-curve row every this many optimiser steps (and at each task's end)."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How tasks and general ability are scored before training and after every task."""

    scoring: Literal["loglik", "generate"] = "loglik"
    """Task answers: 'loglik' picks the label whose tokens have the highest summed
    log-likelihood after the prompt (restricted to labels.json); 'generate' decodes greedily
    and counts an exact match (after stripping whitespace) with the gold label."""
    batch_size: int = 16
    """Sequences per evaluation forward pass."""
    probe: str | None = "mmlu"
    """General-ability multiple choice: a directory of MMLU-format CSVs (relative to data.root
    or absolute), 'hf:cais/mmlu', or None to skip."""
    probe_format: Literal["letter", "continuation"] = "letter"
    """'letter': list the choices and score ' A', ' B', ... (standard MMLU); 'continuation':
    prompt is the question alone and each choice text is scored as its continuation (cloze)."""
    probe_shots: int = 0
    """Few-shot examples from the probe's dev split (letter format only)."""
    probe_max_questions: int | None = 500
    """Cap on probe questions (seeded sample, fixed across checkpoints)."""
    heldout: str | None = "general/heldout.jsonl"
    """Held-out general text for perplexity (jsonl path or 'hf:...'), or None to skip."""
    heldout_max_texts: int | None = 200
    """Cap on held-out texts."""
    heldout_max_tokens: int = 512
    """Each held-out text is truncated to this many tokens."""
    plasticity_texts: int = 16
    """Plasticity diagnostics (dormant MLP units, effective rank, weight norms and distance
    from the start) at every stage, on the first this-many held-out texts as a fixed probe
    batch; 0 disables. Effective rank needs at least as many tokens as MLP units."""


@dataclass(frozen=True, kw_only=True)
class LandscapeConfig:
    """Which loss-landscape slices a trial records, where, and on how much data."""

    enabled: bool = False
    """Record loss-landscape slices (Parquet kind 'landscape') at the stages below. Each
    slice's points are sharded over the trial's workers. Needs scale.zero_stage <= 2 (every
    rank holds whole weights) and its cost is reported by harness.landscape.cost_forward_passes."""
    interpolation: bool = True
    """Interpolate between each recorded checkpoint and the one before it."""
    interpolation_points: int = 21
    """Alphas on the interpolation line (evenly spaced over interpolation_range)."""
    interpolation_range: tuple[float, float] = (-0.5, 1.5)
    """First and last alpha (0 and 1 are the two checkpoints)."""
    random_1d_points: int = 21
    """Points per 1-D random slice (0 = none); Li et al. use 21-51."""
    random_2d_resolution: int = 0
    """Points per axis of a 2-D random slice (0 = none; 11-51 is usual); cost grows as its
    square."""
    span: float = 0.5
    """Random slices cover [-span, span] along each direction: 0.5 is LLM practice, 1.0 is
    Li et al.'s."""
    stages: str = "last"
    """Checkpoints to slice: 'all' (every end-of-task checkpoint 1..T), 'last' (T), or a
    comma-separated list of stages ('0' = the starting model; interpolations need >= 1)."""
    datasets: tuple[str, ...] = ("prev", "new", "general")
    """Data each point is scored on: 'prev' = the task before the checkpoint's, 'new' = the
    checkpoint's own task, 'general' = general text, or explicit task names."""
    examples_per_dataset: int = 16
    """Evaluation examples per dataset (a fixed, seeded sample reused at every point)."""
    batch_size: int = 8
    """Examples per forward pass; batches per dataset = ceil(examples / batch_size)."""
    max_tokens: int = 256
    """Each evaluation example is cut to this many tokens."""
    seeds: tuple[int, ...] = (0,)
    """Direction seeds: one 1-D and/or one 2-D slice per seed and stage."""
    normalisation: Literal["filter", "layer", "none"] = "filter"
    """Direction scaling: 'filter' (per weight row), 'layer' (per tensor) or 'none'."""

    def problems(self) -> list[str]:
        """Every rule this config breaks (empty when valid); each names the value and fix."""
        p = []
        for name in ("interpolation_points", "random_1d_points", "random_2d_resolution"):
            v = getattr(self, name)
            if v < 0 or v == 1:
                p.append(f"landscape.{name}: {v} must be 0 (off) or >= 2")
        for name in ("random_1d_points", "random_2d_resolution"):
            v = getattr(self, name)
            if v >= 2 and v % 2 == 0:
                p.append(
                    f"landscape.{name}: {v} is even, so the trained weights (0) are not a grid "
                    f"point; use {v + 1}"
                )
        if self.interpolation and self.interpolation_points < 2:
            p.append("landscape.interpolation_points: need >= 2 when interpolation is on")
        lo, hi = self.interpolation_range
        if not lo <= 0.0 < 1.0 <= hi:
            p.append(
                f"landscape.interpolation_range: {self.interpolation_range} must contain [0, 1] "
                "(the two checkpoints) for the barrier"
            )
        elif self.interpolation and self.interpolation_points >= 2:
            alphas = self.alphas()
            if 0.0 not in alphas or 1.0 not in alphas:
                fits = [n for n in range(3, 52) if {0.0, 1.0} <= set(grid_points(lo, hi, n))]
                p.append(
                    f"landscape.interpolation_points: {self.interpolation_points} points over "
                    f"{self.interpolation_range} miss alpha 0 or 1 (the checkpoints, needed for "
                    f"the barrier); use one of {fits[:6]}"
                )
        if self.span <= 0:
            p.append(f"landscape.span: {self.span} must be > 0")
        for name in ("examples_per_dataset", "batch_size", "max_tokens"):
            if getattr(self, name) <= 0:
                p.append(f"landscape.{name}: {getattr(self, name)} must be > 0")
        if not self.datasets:
            p.append("landscape.datasets: empty; use e.g. ('prev', 'new', 'general')")
        if (self.random_1d_points or self.random_2d_resolution) and not self.seeds:
            p.append("landscape.seeds: empty but random slices are on; give e.g. (0,)")
        if self.stages not in ("all", "last"):
            try:
                [int(s) for s in self.stages.split(",") if s.strip()]
            except ValueError:
                p.append(f"landscape.stages: {self.stages!r} is not 'all', 'last' or e.g. '1,3'")
        return p

    def check(self) -> LandscapeConfig:
        """Raise ConfigError listing every problem; return self when valid."""
        if problems := self.problems():
            raise ConfigError(problems)
        return self

    def stage_list(self, n_tasks: int) -> list[int]:
        """The checkpoints to slice in a stream of ``n_tasks`` tasks."""
        self.check()
        if self.stages == "all":
            return list(range(1, n_tasks + 1))
        if self.stages == "last":
            return [n_tasks]
        stages = sorted({int(s) for s in self.stages.split(",") if s.strip()})
        bad = [s for s in stages if not 0 <= s <= n_tasks]
        if bad:
            raise ConfigError([f"landscape.stages: {bad} outside 0..{n_tasks} ({n_tasks} tasks)"])
        return stages

    def datasets_at(self, stage: int, tasks: Sequence[str]) -> list[str]:
        """The data scored at checkpoint ``stage`` of a stream of ``tasks``: 'prev' and 'new'
        resolve to the tasks before and at it, and are left out where there is none."""
        out = []
        for d in self.datasets:
            if d == "new":
                out += [tasks[stage - 1]] if stage >= 1 else []
            elif d == "prev":
                out += [tasks[stage - 2]] if stage >= 2 else []
            else:
                out.append(d)
        return out

    def alphas(self) -> list[float]:
        """The interpolation coefficients."""
        return grid_points(*self.interpolation_range, self.interpolation_points)

    def axis(self, n: int) -> list[float]:
        """``n`` coordinates along one random direction."""
        return grid_points(-self.span, self.span, n)

    def points_per_stage(self, stage: int) -> int:
        """Grid points sliced at one checkpoint (all slices, all seeds)."""
        n = len(self.seeds) * (self.random_1d_points + self.random_2d_resolution**2)
        if self.interpolation and stage >= 1:
            n += self.interpolation_points
        return n


def grid_points(lo: float, hi: float, n: int) -> list[float]:
    """``n`` evenly spaced values from ``lo`` to ``hi``, rounded to 10 decimals so that grid
    points such as 0 and 1 are exact and work as stable keys."""
    import numpy as np

    return [float(x) for x in np.round(np.linspace(lo, hi, n), 10)]


RESOURCE_ONLY = ("cpus_per_worker", "gpus_per_worker", "max_failures")
"""Scale settings that only change scheduling, never what a trial computes."""


@dataclass(frozen=True, kw_only=True)
class ScaleConfig:
    """How one trial is parallelised: Ray Train workers, each a DeepSpeed (or PyTorch) rank."""

    workers: int = 1
    """Ray Train workers (data-parallel ranks) per trial. More than 1 needs backend='deepspeed'."""
    backend: Literal["torch", "deepspeed"] = "torch"
    """'torch': plain PyTorch AdamW in one process. 'deepspeed': DeepSpeed ZeRO (gloo on CPU,
    NCCL on GPU); also works with one worker."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 0-3: 1 shards optimizer states, 2 also gradients, 3 also weights."""
    offload_optimizer: bool = False
    """DeepSpeed: keep optimizer states (and the update step) on the CPU."""
    offload_params: bool = False
    """DeepSpeed ZeRO-3: keep weights on the CPU between uses."""
    use_gpu: bool = False
    """Give each worker GPUs (NCCL) instead of running on CPUs (gloo)."""
    cpus_per_worker: float = 1.0
    """Ray CPU resources reserved per worker (fractions allowed; logical, for scheduling)."""
    gpus_per_worker: float = 1.0
    """Ray GPU resources per worker when use_gpu."""
    max_failures: int = 2
    """Times Ray Train restarts a failed trial run from its last end-of-task checkpoint."""


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    """Everything that defines one continual-learning trial."""

    study: str = "adhoc"
    """Study name; results land under <out>/study=<study>/."""
    trial_id: str | None = None
    """Stable id of this trial (file names, resume). Unset: derived from the config's content."""
    seed: int = 0
    """Seeds model init (presets), data sampling, shuffling and dropout."""
    out: str = "runs"
    """Output directory for Parquet results."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def id(self) -> str:
        """The trial id: explicit, or a short content hash of the config (deterministic)."""
        if self.trial_id:
            return self.trial_id
        import hashlib

        body = json.dumps(computed_settings(self.to_dict()), sort_keys=True)
        return f"{self.replay.method}-{hashlib.sha256(body.encode()).hexdigest()[:10]}"


def computed_settings(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict without what does not change what the trial computes: its id, where
    results go and what a worker reserves (:data:`RESOURCE_ONLY`). Two trials with equal
    computed settings compute the same thing.

    The replay method's settings are given in full (defaults filled in), and stored configs
    written before ``replay.settings`` existed (``replay.tm_k``, ``replay.kl_temperature``)
    are read in the new form, so ``settings={}`` equals the old defaults ``tm_k=1.0``."""
    scale = {k: v for k, v in d.get("scale", {}).items() if k not in RESOURCE_ONLY}
    out = {**d, "trial_id": None, "out": None, "scale": scale}
    if "replay" in d:
        out["replay"] = _computed_replay(d["replay"])
    return out


def _computed_replay(replay: dict[str, Any]) -> dict[str, Any]:
    r = dict(replay)
    method = r.get("method", ReplayConfig.method)
    given = dict(r.get("settings") or {})
    for legacy, (owner, key) in LEGACY_REPLAY_SETTINGS.items():
        if legacy in r:
            value = r.pop(legacy)
            if method == owner:
                given.setdefault(key, value)
    r["settings"] = method_settings(method, given)
    return r


def method_settings(method: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A replay method's settings in full: its defaults, overridden by ``settings`` (coerced to
    each setting's type where they fit). An unregistered method's settings are returned as
    given."""
    from harness.replay import settings_spec

    cls = _replay_registry().get(method)
    if cls is None:
        return dict(settings)
    out = {}
    for spec in settings_spec(cls):
        value = settings.get(spec.name, spec.default)
        problems: list[str] = []
        coerced = _check_value(spec.name, value, spec.type, problems)
        out[spec.name] = value if problems else coerced
    out.update({k: v for k, v in settings.items() if k not in out})
    return out


# --------------------------------------------------------------------------------------------
# Building and validating from plain dicts
# --------------------------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists), the form configs travel in."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, dict):
            v = json.loads(json.dumps(v))  # a copy: the config's own dict stays untouched
        out[f.name] = v
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def choices_of(tp: Any) -> Choices | None:
    """The :class:`Choices` of an ``Annotated[str, Choices(...)]`` type, else None."""
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Choices)), None)
    return None


def _check_value(path: str, value: Any, tp: Any, problems: list[str]) -> Any:
    """Coerce ``value`` to type ``tp`` or record a problem; returns the coerced value."""
    if (choices := choices_of(tp)) is not None:
        names = list(choices.names())
        if isinstance(value, str) and value in names:
            return value
        problems.append(
            f"{path}: {value!r} is not one of {', '.join(map(repr, names))}"
            f"{did_you_mean(value, names)}"
        )
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            problems.append(f"{path}: expected a mapping of names to values, got {value!r}")
            return value
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errs: list[str] = []
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            v = _check_value(path, value, a, sub)
            if not sub:
                return v
            errs.extend(sub)
        allowed = " or ".join(_type_name(a) for a in args if a is not type(None))
        words = [
            str(w) for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a)
        ]
        hint = did_you_mean(value, words) if words else ""
        problems.append(f"{path}: {value!r} is not {allowed}{hint}")
        return value
    if origin is Literal:
        if value in args:
            return value
        hint = did_you_mean(value, args)
        problems.append(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}{hint}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {value!r}")
            return value
        return tuple(
            _check_value(f"{path}[{i}]", v, args[0], problems) for i, v in enumerate(value)
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        problems.append(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            problems.append(f"{path}: expected an integer, got {value!r}")
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        problems.append(f"{path}: expected a number, got {value!r}")
        return value
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if isinstance(data, cls):
        data = to_dict(data)
    if not isinstance(data, dict):
        problems.append(f"{path or 'config'}: expected a mapping, got {data!r}")
        return cls()
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if cls is ReplayConfig and key in LEGACY_REPLAY_SETTINGS:
            method, setting = LEGACY_REPLAY_SETTINGS[key]
            problems.append(
                f"unknown key {where!r}: it is now 'replay.settings.{setting}' (a setting of "
                f"replay method {method!r}), e.g. --replay.settings.{setting} {value} or "
                f"--set replay.settings.{setting}={value}"
            )
            continue
        if key not in names:
            problems.append(
                f"unknown key {where!r}{did_you_mean(key, names)}; "
                f"valid keys{' in ' + path if path else ''}: {', '.join(names)}"
            )
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, where, problems)
            continue
        before = len(problems)
        checked = _check_value(where, value, tp, problems)
        if len(problems) == before:  # a bad value keeps the default, so range rules still run
            kwargs[key] = checked
    try:
        return cls(**kwargs)
    except TypeError:
        return cls()


def _rules(cfg: TrialConfig) -> list[str]:
    """Cross-field and range rules: each message names the value, the rule and the fix."""
    p: list[str] = []
    m, d, r, t, e = cfg.model, cfg.data, cfg.replay, cfg.train, cfg.eval

    def positive(path: str, v: float | int | None, allow_none: bool = True) -> None:
        if v is None and allow_none:
            return
        if v is None or v <= 0:
            p.append(f"{path}: {v!r} must be > 0")

    positive("model.lora_r", m.lora_r)
    positive("model.lora_alpha", m.lora_alpha)
    if not 0.0 <= m.lora_dropout < 1.0:
        p.append(f"model.lora_dropout: {m.lora_dropout!r} must be in [0, 1)")
    if m.tuning == "lora" and not m.lora_target_modules:
        p.append("model.lora_target_modules: empty; LoRA needs at least one module name")
    if not d.tasks.strip():
        p.append("data.tasks: empty; give an order name (e.g. order6) or task names a,b,c")
    positive("data.max_train_per_task", d.max_train_per_task)
    positive("data.max_test_per_task", d.max_test_per_task)
    if d.max_seq_len < 16:
        p.append(f"data.max_seq_len: {d.max_seq_len} must be >= 16")
    if r.method != "none":
        positive("replay.size", r.size, allow_none=False)
    elif r.per_batch:
        p.append("replay.per_batch: set but replay.method is 'none'; unset it or pick a method")
    positive("replay.max_tokens", r.max_tokens, allow_none=False)
    if isinstance(r.weight, float) and r.weight < 0:
        p.append(f"replay.weight: {r.weight} must be >= 0 (or 'dynamic')")
    eff = t.batch_size * t.grad_accum
    if r.per_batch is not None:
        if r.per_batch <= 0:
            p.append(f"replay.per_batch: {r.per_batch} must be > 0 (or unset)")
        elif r.per_batch >= eff:
            p.append(
                f"replay.per_batch: {r.per_batch} replay samples leave no room for task samples "
                f"in an effective batch of {eff} (train.batch_size * train.grad_accum); "
                "lower per_batch or raise the batch"
            )
    positive("train.lr", t.lr, allow_none=False)
    positive("train.lr_multiplier", t.lr_multiplier, allow_none=False)
    positive("train.epochs", t.epochs, allow_none=False)
    positive("train.max_steps_per_task", t.max_steps_per_task)
    positive("train.batch_size", t.batch_size, allow_none=False)
    positive("train.grad_accum", t.grad_accum, allow_none=False)
    positive("train.max_grad_norm", t.max_grad_norm)
    positive("train.log_every", t.log_every, allow_none=False)
    if t.warmup_steps < 0:
        p.append(f"train.warmup_steps: {t.warmup_steps} must be >= 0")
    if t.weight_decay < 0:
        p.append(f"train.weight_decay: {t.weight_decay} must be >= 0")
    positive("eval.batch_size", e.batch_size, allow_none=False)
    positive("eval.probe_max_questions", e.probe_max_questions)
    positive("eval.heldout_max_texts", e.heldout_max_texts)
    positive("eval.heldout_max_tokens", e.heldout_max_tokens, allow_none=False)
    if e.plasticity_texts < 0:
        p.append(f"eval.plasticity_texts: {e.plasticity_texts} must be >= 0 (0 disables)")
    if e.plasticity_texts and not e.heldout:
        p.append("eval.plasticity_texts: the probe batch comes from eval.heldout; set it or use 0")
    if e.probe_shots < 0:
        p.append(f"eval.probe_shots: {e.probe_shots} must be >= 0")
    if e.probe_shots and e.probe_format != "letter":
        p.append("eval.probe_shots: few-shot prompts need eval.probe_format='letter'")
    sc = cfg.scale
    positive("scale.workers", sc.workers, allow_none=False)
    if sc.workers > 1 and sc.backend != "deepspeed":
        p.append(
            f"scale.workers: {sc.workers} workers need scale.backend='deepspeed' "
            "(the 'torch' backend runs one process)"
        )
    from harness.backend import config_problems  # the ZeRO rules live with the backend

    p.extend(config_problems(cfg))
    if (sc.offload_optimizer or sc.offload_params) and sc.backend != "deepspeed":
        p.append("scale.offload_*: offloading needs scale.backend='deepspeed'")
    positive("scale.cpus_per_worker", sc.cpus_per_worker, allow_none=False)
    if sc.use_gpu:
        positive("scale.gpus_per_worker", sc.gpus_per_worker, allow_none=False)
    if sc.max_failures < -1:
        p.append(f"scale.max_failures: {sc.max_failures} must be >= -1 (-1 = retry forever)")
    if m.dtype == "bfloat16" and m.name == "tiny":
        p.append("model.dtype: bfloat16 with the 'tiny' CPU preset; use float32")
    ls = cfg.landscape
    if ls.enabled:
        p.extend(ls.problems())
        if "general" in ls.datasets and not e.heldout:
            p.append("landscape.datasets: 'general' is scored on eval.heldout; set it or drop it")
    for ch in "/\\":
        if cfg.trial_id and ch in cfg.trial_id:
            p.append(f"trial_id: {cfg.trial_id!r} must not contain {ch!r}")
    return p


def from_dict(data: dict[str, Any] | None = None) -> TrialConfig:
    """Build and validate a TrialConfig; raises ConfigError listing every problem."""
    problems: list[str] = []
    cfg = _build(TrialConfig, data or {}, "", problems)
    cfg = dataclasses.replace(cfg, replay=_check_method_settings(cfg.replay, problems))
    problems.extend(_rules(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def _check_method_settings(r: ReplayConfig, problems: list[str]) -> ReplayConfig:
    """Check ``replay.settings`` against the chosen method's settings (name, type, and the
    method's own rules, by building it); returns the config with the values coerced."""
    from harness.replay import method_names, settings_spec

    registry = _replay_registry()
    cls = registry.get(r.method)
    if cls is None or not isinstance(r.settings, dict):
        return r  # the method (or the mapping) is reported already
    specs = {s.name: s for s in settings_spec(cls)}
    listing = ", ".join(f"{s.name} (default {s.default!r})" for s in specs.values()) or "none"
    coerced: dict[str, Any] = {}
    ok = True
    for key, value in r.settings.items():
        where = f"replay.settings.{key}"
        if key not in specs:
            owners = [m for m in method_names() if key in _setting_names_of(registry[m])]
            elsewhere = (
                f" ({key!r} is a setting of {', '.join(map(repr, owners))})" if owners else ""
            )
            problems.append(
                f"unknown key {where!r}{did_you_mean(key, specs)} for replay method "
                f"{r.method!r}{elsewhere}; settings of {r.method!r}: {listing}"
            )
            ok = False
            continue
        before = len(problems)
        checked = _check_value(where, value, specs[key].type, problems)
        if len(problems) == before:
            coerced[key] = checked
        else:
            ok = False
    if ok:
        try:
            cls(**coerced)
        except (TypeError, ValueError) as exc:
            problems.append(f"replay.settings: {exc}")
    return dataclasses.replace(r, settings=coerced) if ok else r


def _setting_names_of(cls: type) -> list[str]:
    from harness.replay import settings_spec

    return [s.name for s in settings_spec(cls)]


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; dotted keys ('train.lr') are expanded."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (not yet validated)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist"])
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {str(p)!r} is not valid YAML/JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"config file {str(p)!r}: top level must be a mapping"])
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """'train.lr=1e-4' -> ('train.lr', 1e-4); values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError([f"override {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4"])
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


# --------------------------------------------------------------------------------------------
# Field documentation (attribute docstrings), for --help and the docs
# --------------------------------------------------------------------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a config dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def iter_fields(cls: type = TrialConfig, prefix: str = ""):
    """Yield (dotted name, type, default, doc) for every leaf field (``replay.settings`` is one
    leaf; :func:`iter_method_settings` yields the settings it may hold)."""
    hints = _hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, name + ".")
        else:
            yield name, tp, getattr(defaults, f.name), docs.get(f.name, "")


def iter_method_settings() -> Iterator[tuple[str, Any, Any, str]]:
    """Yield (``replay.settings.NAME``, type, default, doc) for every setting of every
    registered replay method, the doc saying which method(s) it belongs to."""
    from harness.replay import method_names, settings_spec

    registry = _replay_registry()
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for method in method_names():
        for spec in settings_spec(registry[method]):
            by_name.setdefault(spec.name, []).append((method, spec))
    for name, owners in by_name.items():
        tp = owners[0][1].type
        if len(owners) == 1:
            method, spec = owners[0]
            doc = f"replay.method={method} only: {spec.doc}"
            default = spec.default
        else:
            doc = "; ".join(f"replay.method={m}: {s.doc}" for m, s in owners)
            default = ", ".join(f"{s.default} ({m})" for m, s in owners)
        yield f"replay.settings.{name}", tp, default, doc


def field_help(tp: Any, doc: str) -> str:
    """A field's docstring for --help, followed by the valid names of a registry-backed field
    and what each one is."""
    choices = choices_of(tp)
    if choices is None or choices.describe is None:
        return doc
    lines = choices.describe()
    each = " ".join(f"{n} = {lines.get(n, '').rstrip('.') or n}." for n in choices.names())
    return f"{doc} {each}"


def type_label(tp: Any) -> str:
    if (choices := choices_of(tp)) is not None:
        return "{" + ",".join(choices.names()) + "}"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in args)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin is tuple:
        return f"list[{type_label(args[0])}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))
