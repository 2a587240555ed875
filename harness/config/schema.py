"""The config dataclasses, section by section (the landscape section is in .landscape)."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from harness.config.cl_methods import CL
from harness.config.interventions import INTERVENTIONS
from harness.config.landscape import LandscapeConfig
from harness.config.replay_methods import REPLAY
from harness.config.values import Choices, _check_value


def _replay_method_lines() -> dict[str, str]:
    return {name: REPLAY.entry(name).summary for name in REPLAY.names()}


ReplayMethodName = Annotated[str, Choices(REPLAY.names, _replay_method_lines)]
"""A registered replay method (:data:`harness.config.replay_methods.REPLAY`, the one list)."""

BosRule = Literal["tokenizer", "always", "never"]
"""What starts a tokenised text (data.add_bos, replay.add_bos; harness.data.tokenize.bos_ids)."""

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
    lora_target_modules: tuple[str, ...] = ("all-linear",)
    """Modules that receive adapters: 'all-linear' (PEFT's option: every linear layer but the
    output head, whatever the architecture names them) or module names, e.g. Llama's
    attention projections q_proj,k_proj,v_proj,o_proj (the default before 2026-12)."""
    revision: str | None = None
    """Hub revision of model.name (a branch, tag or commit sha; None: the default branch).
    Pin a commit sha for a run that reproduces."""
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = (
        None
    )
    """Attention kernel passed to transformers (None: its default, sdpa where available);
    flash_attention_2 needs the flash-attn package and a GPU."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype. bfloat16 (or float16 on GPUs without bf16) is for GPUs; CPU runs stay in
    float32."""
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
    prompt_template: Literal["harness", "long_sequence"] = "harness"
    """How a task instance becomes a prompt (training and scoring): 'harness' =
    "{Definition}\n\nInput: {input}\nOutput:"; 'long_sequence' = the O-LoRA/SAPT prompt
    "{Definition}\n{input}\nOutput:" (the papers' "Output: " + label, the space carried by
    the label). The label follows after a space either way."""
    cache_dir: str | None = None
    """Token cache directory. Unset: $GERE_CACHE_DIR/tokens or ~/.cache/gere-harness/tokens."""
    add_bos: BosRule = "tokenizer"
    """What starts every task prompt, training row, probe prompt and held-out text:
    'tokenizer' = the tokenizer's own rule (the special tokens ``tokenizer(text)`` puts first,
    as transformers and lm-evaluation-harness's default do: Llama-3's BOS, nothing for GPT-2,
    Qwen or SmolLM2, whose bos_token is a chat-turn token), 'always' = the tokenizer's BOS
    token, 'never' = nothing."""


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    """The anti-forgetting method: which replay loss, on which general texts."""

    method: ReplayMethodName = "tm"
    """The replay method, by its name in harness.replay (one module per method; its docstring
    gives the exact loss)."""
    corpus: str = "general/train.jsonl"
    """General corpus: a jsonl path (absolute or relative to data.root) or a Hub dataset
    'hf:<dataset>[:<config>][#<split>][@<revision>]' (streamed)."""
    size: int = 1000
    """Number of replay texts (GeRe: 1,000). Ignored when method='none'."""
    max_tokens: int = 563
    """Each replay text is truncated to this many tokens (GeRe: 563)."""
    add_bos: BosRule = "tokenizer"
    """What starts every replay text, as data.add_bos: 'tokenizer' (its own rule), 'always'
    or 'never'. GeRe's reference tokenises replay texts with add_special_tokens=False (no
    BOS): 'never'. (true/false, the earlier spellings, read as 'tokenizer'/'never': every
    model run before the rule existed had a tokenizer that puts its BOS first.)"""
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

    def full_settings(self) -> dict[str, Any]:
        """``settings`` with the method's defaults filled in (what the trial computes with)."""
        return method_settings(self.method, self.settings)

    def __hash__(self) -> int:  # settings is a dict; hash the config's plain form instead
        return hash(json.dumps(to_dict(self), sort_keys=True, default=str))


SaveModels = Literal["none", "final", "every_task"]
"""When a trial keeps its model (``train.save_models``)."""


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
    loss_weighting: Literal["microbatch_mean", "per_sample"] = "microbatch_mean"
    """How rows' losses make a step's objective. 'microbatch_mean': per micro-batch
    mean(CE_task, CE_replay) + w*term (task and replay half each, whatever their share).
    'per_sample': each row's CE its own token mean, each replay row its own term, averaged
    over the effective batch: (1-f)*CE_task + f*(CE_replay + w*TM) with f the replay share,
    GeRe's reference objective (its per-device batch of 1) at any batch size; each step's
    rows are then grouped by length over ranks and micro-batches (less padding)."""
    log_every: int = 10
    """Record a training-curve row every this many optimiser steps (and at each task's end)."""
    divergence_factor: float | None = 10.0
    """A step whose language-modelling loss (task and replay CE) exceeds this many times
    max(the task's first-step CE, 1 nat) counts as divergence, like a non-finite loss or
    gradient: training stops and the trial ends 'diverged' with every row measured so far.
    None disables the check (non-finite values still count)."""
    save_models: SaveModels = "none"
    """Keep the fine-tuned model as a Hugging Face directory for later evaluation (lm_eval,
    vLLM, transformers): 'final' after the last task, 'every_task' after each, 'none' keeps
    nothing (checkpoints are deleted when a trial ends). Written to
    <out>/study=<study>/_models/<trial_id>/stage=<k>/: the full weights in the model's dtype,
    gathered from ZeRO-3 shards (about 16 GB per save at 8B in bfloat16), or the LoRA adapter
    with its base's name; the trial's log prints a ready lm_eval and vLLM command. Changes
    nothing the trial computes (not part of the trial id)."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How tasks and general ability are scored before training and after every task."""

    scoring: Literal["loglik", "exact_match", "generate"] = "loglik"
    """Task answers: 'loglik' picks the label whose tokens have the highest summed
    log-likelihood after the prompt (restricted to labels.json; never below chance);
    'exact_match' is the Long-Sequence papers' rule (SAPT's ``skip_instructions`` and
    ``compute_metrics``): greedy decoding of eval.max_new_tokens tokens, the prompt and the
    generation decoded together, the answer is everything after the last "Output:"
    (stripped; '' if there is none), compared after their normalisation (lower-case,
    punctuation removed, whitespace collapsed); 'generate' decodes greedily and compares the
    stripped first line of the generation exactly (case-sensitive)."""
    matrix: Literal["full", "needed"] = "full"
    """Which cells of the accuracy matrix are scored. 'full': every task at every checkpoint.
    'needed': every task at the start (each task's starting score, which FWT reads), then after
    each stage only the tasks trained so far and the next one: the cells AP, BWT, FWT, AIA and
    every forgetting variant read (:mod:`harness.metrics`). The cells left out (a task many
    stages before it is trained) are absent rows, NaN in a matrix. At 15 tasks this scores 149
    of 240 cells; the llama-3.1-8b preset uses it. A single_task trial, whose diagonal alone is
    read (SAPT's FWT), scores each stage's own task: 15 + 15 cells."""
    max_new_tokens: int | None = 50
    """Tokens generated per answer under 'exact_match' and 'generate' (greedy; stops early at
    EOS). 50 is SAPT's; None = the task's longest label + 2 tokens (much cheaper, but an
    answer that rambles or starts with a line break is cut: the rule before 2026-12-04)."""
    batch_size: int = 16
    """Sequences per evaluation forward pass."""
    probe: str | None = "mmlu"
    """General-ability multiple choice: a directory of MMLU-format CSVs (relative to data.root
    or absolute), 'hf:cais/mmlu[:<config>][@<revision>]', or None to skip."""
    probe_name: str | None = None
    """What the probe is called in the records (general.probe, predictions 'probe:<name>') and
    figures; unset: eval.probe as given. The world presets call their quiz 'world_quiz': it is
    stored in MMLU's file layout (mmlu/), but it is not MMLU. A label only: not part of the
    trial id."""
    probe_format: Literal["letter", "lm_eval", "continuation"] = "letter"
    """'letter': "Question: ...\nA. ...\nAnswer:" and score ' A', ' B', ...; 'lm_eval':
    lm-evaluation-harness's mmlu prompt (a subject header line, "<question>\nA. ...\nAnswer:",
    ' A'..' D'), the format published MMLU numbers use; 'continuation': the question alone, each
    choice text scored as its continuation (cloze)."""
    probe_shots: int = 0
    """Few-shot examples from the probe's dev split (letter format only)."""
    probe_max_questions: int | None = 500
    """Cap on probe questions (seeded sample, fixed across checkpoints). A capped MMLU is a
    subsample, not lm-eval's full ``mmlu`` (14,042 questions): say so beside its numbers; unset
    (None) scores every question."""
    heldout: str | None = "general/heldout.jsonl"
    """Held-out general text for perplexity (jsonl path or
    'hf:<dataset>[:<config>][#<split>][@<revision>]'), or None to skip."""
    heldout_max_texts: int | None = 200
    """Cap on held-out texts."""
    heldout_max_tokens: int = 512
    """Each held-out text is truncated to this many tokens."""
    predictions: bool = True
    """Record every scored example (Parquet kind 'predictions': gold, predicted, correct, the
    candidates' log-likelihoods or the generated text), so a study can be re-scored later."""
    lm_eval_tasks: tuple[str, ...] = ()
    """lm-evaluation-harness tasks or groups scored as general ability at every stage (e.g.
    arc_easy,hellaswag,piqa): lm-eval builds the prompts and computes its metrics
    (acc, acc_norm, their stderr ...) with its default settings, the harness computes the
    log-likelihoods (harness.lm_eval_tasks). Rows: kind 'lm_eval' (one per stage, task and
    metric) and, with eval.predictions, one 'predictions' row per document (lm-eval's doc_id).
    Log-likelihood tasks only (generative ones are refused). Needs the lm-eval extra."""
    lm_eval_include_path: str | None = None
    """A directory of lm-eval task YAMLs (absolute, or relative to data.root) whose tasks
    eval.lm_eval_tasks can name, as lm_eval's --include_path."""
    lm_eval_num_fewshot: int | None = None
    """Few-shot examples for every lm-eval task (lm_eval's --num_fewshot); None = each task's
    own default."""
    lm_eval_limit: int | None = None
    """Documents per lm-eval task (lm_eval's --limit: the first N); None = all."""
    plasticity_texts: int = 16
    """Plasticity diagnostics (dormant MLP units, effective rank, weight norms and distance
    from the start) at every stage, on the first this-many held-out texts as a fixed probe
    batch; 0 disables. Effective rank needs at least as many tokens as MLP units."""


RESOURCE_ONLY = ("cpus_per_worker", "gpus_per_worker", "max_failures", "collective_timeout_s")
"""Scale settings that only change scheduling or fault handling, never what a trial computes."""


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
    """Times Ray Train restarts a trial whose worker was lost (node gone, process killed), from
    its last end-of-task checkpoint. A trial's own error (a bug, bad data, a collective
    timeout) is recorded as 'failed' and not retried: it would fail the same way again."""
    collective_timeout_s: float = 900.0
    """Seconds a rank waits in a collective (all-reduce, barrier, ZeRO gather) before the trial
    fails as hung, naming the rank and what it was doing; frees the workers for the next
    trial. Must exceed the longest legitimate wait: rank 0 writing an end-of-task checkpoint
    while the others wait (an 8B full model: 16 GB)."""


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
    """Where Parquet results go: a directory, or an object-store URI (s3://bucket/prefix,
    gs://...; credentials the standard way, e.g. AWS_ENDPOINT_URL for S3-compatible stores)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    interventions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Plasticity interventions, by name, each with its settings (harness/interventions: one
    module each, its docstring giving the formula and source), e.g. {shrink_perturb: {shrink:
    0.9, sigma: 0.01}} or --set interventions.embedding_reset.every=100. They run after the
    measuring hooks, in the order given, with any replay method. Empty: none."""
    cl: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Continual-learning baselines beyond general replay, by name, each with its settings
    (harness/cl: task_replay, ewc, lwf, olora, multitask; one module each, its docstring giving
    the formula and source), e.g. {ewc: {lam: 5000}} or --set cl.task_replay.size=50. They
    compose with replay.method where that makes sense (a combination that does not is refused
    with the reason) and run after the interventions. Empty: none."""
    method_defaults: Literal["harness", "paper"] = "harness"
    """The defaults of the settings ``cl`` and ``interventions`` leave unset: 'harness' (each
    method's documented defaults) or 'paper' (its reference's values where the harness's
    differ, e.g. EWC's lambda/2 and per-task anchors, LwF without T^2, O-LoRA's per-task
    lambdas, ReDo every 1,000 steps, shrink & perturb 0.4/0.1; each method's docstring names
    them and their source). The stored config lists every setting so filled in.
    configs/paper-defaults.yaml sets it with the reference LoRA (r 8, alpha 32, q/v)."""

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def probe_label(self) -> str:
        """The probe's name in records and figures (``eval.probe_name``, else ``eval.probe``)."""
        return self.eval.probe_name or self.eval.probe or ""

    def __hash__(self) -> int:  # interventions and cl are dicts; hash the plain form instead
        return hash(json.dumps(to_dict(self), sort_keys=True, default=str))

    @property
    def id(self) -> str:
        """The trial id: explicit, or a short content hash of the config (deterministic)."""
        if self.trial_id:
            return self.trial_id
        import hashlib

        content = _without_later_defaults(computed_settings(self.to_dict()))
        revised = method_revisions(self)
        if revised:  # a method whose computation changed: not the trial stored before it
            content["method_revisions"] = revised
        body = json.dumps(content, sort_keys=True)
        return f"{self.replay.method}-{hashlib.sha256(body.encode()).hexdigest()[:10]}"


def method_revisions(cfg: TrialConfig) -> dict[str, int]:
    """``{section.name: revision}`` of the trial's ``cl`` and ``interventions`` methods whose
    computation changed for this trial since ids were first derived (``revision(cfg) > 1``), so
    a result stored by the earlier code is never taken for this trial's (a study rerun into
    the same folder computes it again)."""
    out = {}
    for section, registry in (("cl", CL), ("interventions", INTERVENTIONS)):
        for name in getattr(cfg, section) or {}:
            entry = registry.get(name)
            revision = entry.revision_for(cfg) if entry is not None else 1
            if revision > 1:
                out[f"{section}.{name}"] = revision
    return out


LATER_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("cl",): {},
    ("train", "loss_weighting"): "microbatch_mean",
    ("replay", "add_bos"): True,  # 'tokenizer' in its earlier form (in_earlier_form)
    ("data", "add_bos"): "tokenizer",
    ("eval", "max_new_tokens"): 50,
    ("replay", "settings", "t2_scale"): True,
    ("replay", "settings", "mask_padding"): True,
    ("model", "revision"): None,
    ("model", "attn_implementation"): None,
    ("method_defaults",): "harness",
    ("eval", "lm_eval_tasks"): [],
    ("eval", "lm_eval_include_path"): None,
    ("eval", "lm_eval_num_fewshot"): None,
    ("eval", "lm_eval_limit"): None,
    ("eval", "matrix"): "full",
}
"""Settings added after trial ids were first derived, at their defaults: left out of the id's
hash, so a trial that does not use them keeps the id (and checkpoint) it had before."""


def _without_later_defaults(d: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(d))
    for path, default in LATER_DEFAULTS.items():
        node = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node and node[path[-1]] == default:
            del node[path[-1]]
    return in_earlier_form(out)


def in_earlier_form(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict (changed in place) written the way earlier harness versions wrote the
    same trial, so ids and the stored-settings check do not change with a spelling:

    * LoRA targets do not apply to full fine-tuning: such a trial reads with the earlier
      default (attention projections), whatever its targets say;
    * a Hub source's split, now ``hf:<dataset>#<split>``, was ``hf:<dataset>@<split>``
      before '@' came to mean a revision (a source with a revision has no earlier form)."""
    replay = d.get("replay")
    if isinstance(replay, dict) and replay.get("add_bos") in ("tokenizer", "never"):
        replay["add_bos"] = replay["add_bos"] == "tokenizer"  # true/false before 'always'
    model = d.get("model")
    if isinstance(model, dict) and model.get("tuning", "full") == "full":
        model["lora_target_modules"] = list(EARLIER_LORA_TARGETS)
    for section, key in (("replay", "corpus"), ("eval", "heldout"), ("eval", "probe")):
        node = d.get(section)
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value.startswith("hf:") and "#" in value:
            spec, _, split = value.partition("#")
            if "@" not in split:
                node[key] = f"{spec}@{split}"
    return d


EARLIER_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
"""model.lora_target_modules' default before 'all-linear'."""


def computed_settings(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict without what does not change what the trial computes: its id, where
    results and saved models go (``train.save_models``), the probe's label
    (``eval.probe_name``) and what a worker reserves
    (:data:`RESOURCE_ONLY`). Two trials with equal computed settings compute the same thing.

    The replay method's settings are given in full (defaults filled in), and stored configs
    written before ``replay.settings`` existed (``replay.tm_k``, ``replay.kl_temperature``)
    are read in the new form, so ``settings={}`` equals the old defaults ``tm_k=1.0``."""
    d = in_earlier_form(json.loads(json.dumps(d)))
    scale = {k: v for k, v in d.get("scale", {}).items() if k not in RESOURCE_ONLY}
    out = {**d, "trial_id": None, "out": None, "scale": scale}
    if "train" in d:  # where the models go is not what the trial computes
        out["train"] = {k: v for k, v in d["train"].items() if k != "save_models"}
    if "eval" in d:  # nor what the probe is called
        out["eval"] = {k: v for k, v in d["eval"].items() if k != "probe_name"}
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
    entry = REPLAY.get(method)
    if entry is None:
        return dict(settings)
    out = {}
    for spec in entry.spec():
        value = settings.get(spec.name, spec.default)
        problems: list[str] = []
        coerced = _check_value(spec.name, value, spec.type, problems)
        out[spec.name] = value if problems else coerced
    out.update({k: v for k, v in settings.items() if k not in out})
    return out


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
