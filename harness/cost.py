"""What a trial pushes through the model, counted before it runs (``--dry-run``).

Counts forward tokens, the unit both training and evaluation spend:

* **training**: every optimiser step's rows (task examples, and the replay texts mixed into
  each task's training set, or ``replay.per_batch`` of them per step), over the task's epochs
  and its step cap. Its compute in forward-token equivalents is 3x that under full fine-tuning
  (a forward, then a backward of ~2 forwards: the gradients of the activations and of the
  weights), 2x under LoRA (the frozen weights get no gradient, so the backward is ~1 forward;
  the adapters' own share is small and not counted), +1 with gradient checkpointing (the
  forward is recomputed). A replay method that reads the frozen starting model on its rows
  (``needs_reference``: kl, l1, l2) adds that no-grad forward over every replay row.
* **evaluation**: at every checkpoint (the start and after each task) each task's test prompts
  (one forward per prompt holding its packed candidates, a long shared beginning such as a
  probe subject's few-shot block counted once; for generation, the prompt plus at
  most ``eval.max_new_tokens`` new tokens (or the longest label + 2 when unset): an upper
  bound, decoding stops at EOS), the probe's
  prompts and the held-out texts. The ranks share that work (each scores its share), so the
  sum over ranks is one evaluation's tokens. Then the plasticity diagnostics' forward over
  the first ``eval.plasticity_texts`` held-out texts, which every rank runs whole (not under
  ZeRO-3, which shards the weights they read).
* **not counted**: lm-eval's tasks (their requests come from lm-eval's datasets; the dry run
  says so) and the loss-landscape slices (their forward passes are printed on their own
  line, :func:`harness.study.landscape_cost`).
* **continual-learning methods** (``cl``): task replay's buffered examples are training rows;
  LwF adds a no-grad teacher forward over the task rows, EWC a forward + backward per Fisher
  example after every task, in eval mode (both in the training compute); multitask is scored at 2
  checkpoints (the start and after its one stage).
* **TM prepare** (method ``tm``): two passes of the frozen model over the replay buffer
  (thresholds, then states), shared by the ranks; reported on its own line.

With the trial's inputs at hand (local data, a tokenizer that loads offline) every length is
the real one; otherwise the lengths are assumptions, printed with the figures:
:data:`ASSUMED` (Llama-3 BPE lengths of the Long-Sequence tasks and 5-shot MMLU prompts). The
ratio ``evaluation/training forward tokens`` = evaluation tokens / training compute.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from harness.config import TrialConfig
from harness.config.cl_methods import CL

ASSUMED = {
    "task_prompt": 150,
    "label_tokens": 2,
    "labels_per_task": 4.0,
    "letter_prompt": 760,
    "letter_prompt_0shot": 150,
    "continuation_prompt": 30,
    "mmlu_subjects": 57,
}
"""Lengths (tokens) used when a trial's inputs cannot be tokenised here: a Long-Sequence task
prompt (~150 Llama-3 tokens), a label (~2), labels per task (the 15 tasks' mean: 4.0), a
5-shot MMLU prompt (~760), a 0-shot one (~150), a cloze question (~30), MMLU's 57 subjects (a k-shot prompt's
shared block is computed once per subject, see ``harness.evaluate.shared_prefixes``)."""


@dataclass
class Cost:
    """Forward tokens of one trial (or a grid, summed)."""

    train: int = 0
    train_compute: int = 0
    evaluation: int = 0
    prepare: int = 0
    checkpoints: int = 0
    assumptions: list[str] = field(default_factory=list)
    stage0: int = 0
    """Evaluation tokens of the starting model (part of ``evaluation`` unless shared)."""
    shared: bool = False
    """Stage 0 is another trial's of the grid (:mod:`harness.shared`): not in ``evaluation``."""
    shared_prepare: bool = False
    """The replay state is another trial's of the grid: ``prepare`` is 0."""

    def __add__(self, other: Cost) -> Cost:
        notes = self.assumptions + [a for a in other.assumptions if a not in self.assumptions]
        return Cost(
            self.train + other.train,
            self.train_compute + other.train_compute,
            self.evaluation + other.evaluation,
            self.prepare + other.prepare,
            self.checkpoints + other.checkpoints,
            notes,
            self.stage0 + other.stage0,
        )

    @property
    def ratio(self) -> float:
        return self.evaluation / self.train_compute if self.train_compute else math.nan


def _steps(cfg: TrialConfig, n_task: int, n_replay: int) -> tuple[float, float]:
    """(task rows, replay rows) one task's training pushes through the model."""
    t, r = cfg.train, cfg.replay
    eff = t.batch_size * t.grad_accum * cfg.scale.workers
    if r.per_batch and n_replay:
        steps = math.ceil(t.epochs * n_task / (eff - r.per_batch))
        steps = min(steps, t.max_steps_per_task or steps)
        return steps * (eff - r.per_batch), steps * r.per_batch
    items = math.ceil(t.epochs * (n_task + n_replay))
    steps = math.ceil(items / eff)
    if t.max_steps_per_task and steps > t.max_steps_per_task:
        items = t.max_steps_per_task * eff
    share = n_task / (n_task + n_replay) if n_task + n_replay else 1.0
    return items * share, items * (1 - share)


def _buffered(cfg: TrialConfig, k: int, n_task: int) -> int:
    """Earlier tasks' examples that task replay (``cl.task_replay``) adds to the k-th task
    (0-based), each task having ``n_task`` training examples."""
    tr = cfg.cl.get("task_replay")
    if tr is None:
        return 0
    settings = CL.entry("task_replay").settings(**tr)  # its defaults from the registry
    if settings.policy == "reservoir":
        return min(settings.size, k * n_task)
    return k * min(settings.size, n_task)


def _with_backward(cfg: TrialConfig) -> int:
    """Forward-token equivalents of a forward + backward: 3 under full fine-tuning, 2 under
    LoRA (the frozen weights get no gradient)."""
    return 2 if cfg.model.tuning == "lora" else 3


def compute_factor(cfg: TrialConfig) -> int:
    """Forward-token equivalents of one training token: forward + backward, + 1 recomputed
    forward with gradient checkpointing (on in training mode only)."""
    return _with_backward(cfg) + (1 if cfg.model.gradient_checkpointing else 0)


def _reference_forward(cfg: TrialConfig) -> bool:
    """Whether the replay method runs the frozen starting model on each replay batch."""
    from harness.config.replay_methods import REPLAY

    if cfg.replay.method == "none":
        return False
    return bool(getattr(REPLAY.load(cfg.replay.method), "needs_reference", False))


def _cl_compute(
    cfg: TrialConfig, task_tokens: float, task_len: float, n: int, n_task: int
) -> float:
    """Forward-token equivalents the cl methods add: LwF's teacher forward over the task rows
    (``task_tokens`` in all), EWC's per-example forward + backward for its Fisher after every
    task (rows of ``task_len`` tokens; ``fisher_samples`` of the ``n_task`` examples, or all
    of them when it is unset)."""
    extra = task_tokens if "lwf" in cfg.cl else 0.0
    if "ewc" in cfg.cl:
        samples = CL.entry("ewc").settings(**cfg.cl["ewc"]).fisher_samples
        fisher = min(n_task, samples if samples is not None else n_task)
        # one forward + backward per example, in eval mode (no recomputed forward)
        extra += _with_backward(cfg) * n * fisher * task_len
    return extra


def trial_cost(cfg: TrialConfig, inputs=None, n_tasks: int | None = None) -> Cost:
    """The forward tokens of one trial; ``inputs``: its :class:`harness.inputs.TrialInputs`
    (exact lengths), else the config's caps and :data:`ASSUMED` lengths for ``n_tasks``."""
    from harness.config.cl_methods import diagonal_only
    from harness.config.scale import shards_weights
    from harness.eval_stage import scored_positions
    from harness.evaluate import new_token_budget, request_tokens

    e, r = cfg.eval, cfg.replay
    diagonal = diagonal_only(cfg)
    uses_replay = r.method != "none"
    notes: list[str] = []
    gen = e.scoring != "loglik"
    train = prepare = 0.0
    task_tokens = 0.0  # of which task rows (the rest: replay rows)
    per_task: list[float] = []  # each task's test set at one checkpoint
    if inputs is not None:
        replay = [len(x) for x in inputs.buffer.token_ids] if inputs.buffer else []
        mean_replay = sum(replay) / len(replay) if replay else 0.0
        for k, tt in enumerate(inputs.tasks):
            n_task = len(tt.train)
            task_len = sum(len(x.ids) for x in tt.train) / max(1, n_task)
            n_rows = n_task + _buffered(cfg, k, n_task)
            rows_t, rows_r = _steps(cfg, n_rows, len(replay) if uses_replay else 0)
            train += rows_t * task_len + rows_r * mean_replay
            task_tokens += rows_t * task_len
            if gen:
                new = new_token_budget(e.max_new_tokens, tt.candidates)
                per_task.append(sum(len(p) + new for p in tt.prompts))
            else:
                per_task.append(request_tokens([(p, tt.candidates) for p in tt.prompts]))
        general = 0
        if inputs.probe is not None:
            general += request_tokens(inputs.probe[0])
        general += sum(len(t) for t in inputs.heldout)
        plasticity = sum(len(t) for t in inputs.heldout[: e.plasticity_texts])
        n = len(inputs.tasks)
        prepare = 2 * sum(replay) if r.method == "tm" else 0
        notes.append("lengths measured on the trial's tokenised inputs")
    else:
        a = ASSUMED
        n = n_tasks or 1
        n_task = cfg.data.max_train_per_task or 1000
        n_test = cfg.data.max_test_per_task or 500
        task_len = min(cfg.data.max_seq_len, a["task_prompt"] + a["label_tokens"] + 1)
        replay_len = r.max_tokens
        for k in range(n):
            rows_t, rows_r = _steps(
                cfg, n_task + _buffered(cfg, k, n_task), r.size if uses_replay else 0
            )
            train += rows_t * task_len + rows_r * replay_len
            task_tokens += rows_t * task_len
        prompt = min(cfg.data.max_seq_len, a["task_prompt"])
        if gen:
            per_test = n_test * (prompt + (e.max_new_tokens or a["label_tokens"] + 2))
        else:
            per_test = n_test * (prompt + a["labels_per_task"] * (a["label_tokens"] - 1))
        per_task = [per_test] * n
        general = 0
        if e.probe:
            q = e.probe_max_questions or 14042
            if e.probe_format == "continuation":
                general += q * (a["continuation_prompt"] + 4 * a["label_tokens"])
            else:
                # k-shot: each subject's shared few-shot block once, then each question
                general += q * a["letter_prompt_0shot"]
                if e.probe_shots:
                    shared = a["letter_prompt"] - a["letter_prompt_0shot"]
                    general += min(q, a["mmlu_subjects"]) * shared
        if e.heldout:
            general += (e.heldout_max_texts or 500) * e.heldout_max_tokens
        plasticity = min(e.plasticity_texts, e.heldout_max_texts or 500) * e.heldout_max_tokens
        prepare = 2 * r.size * replay_len if r.method == "tm" else 0
        notes.append(
            f"assumed lengths: task row {task_len}, replay text {replay_len} (its cap), probe "
            f"prompt {a['letter_prompt'] if e.probe_shots else a['letter_prompt_0shot']} "
            f"(letters) / {a['continuation_prompt']} (cloze), held-out text "
            f"{e.heldout_max_tokens} (its cap), {n_test} test and {n_task} train instances per "
            "task (the caps)"
        )
    if cfg.landscape.enabled:
        notes.append("not counted: the loss-landscape slices (their forward passes above)")
    if e.lm_eval_tasks:  # lm-eval builds those requests from its own datasets
        notes.append(
            f"not counted: lm-eval's tasks ({', '.join(e.lm_eval_tasks)}) at every checkpoint"
        )
    # multitask: one training stage of every task
    stages = [tuple(range(1, n + 1))] if "multitask" in cfg.cl else [(k,) for k in range(1, n + 1)]
    checkpoints = len(stages) + 1
    stage0 = sum(per_task) + general
    if not (e.heldout and e.plasticity_texts) or shards_weights(cfg.scale):
        plasticity = 0  # no diagnostics (harness.plasticity: off when the weights are sharded)
    # every rank runs the diagnostics on the whole probe batch (the weights are whole there)
    total_eval = (
        checkpoints * plasticity * cfg.scale.workers
        + stage0
        + sum(
            sum(per_task[p - 1] for p in scored_positions(stages, k, e.matrix, diagonal)) + general
            for k in range(1, len(stages) + 1)
        )
    )
    extra = _cl_compute(cfg, task_tokens, task_len, n, n_task)
    if _reference_forward(cfg):
        extra += train - task_tokens  # the frozen model's forward over the replay rows
    return Cost(
        train=int(train),
        train_compute=int(train * compute_factor(cfg) + extra),
        evaluation=int(total_eval),
        prepare=int(prepare),
        checkpoints=checkpoints,
        assumptions=notes,
        stage0=int(stage0),
    )


def _tokenizer(name: str):
    """The model's tokenizer when it loads offline here (the tiny preset, a local directory),
    else None (a Hub model: the cost falls back to assumed lengths)."""
    from pathlib import Path

    from harness.models import byte_level_tokenizer

    if name == "tiny":
        return byte_level_tokenizer()
    if Path(name).expanduser().is_dir():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(Path(name).expanduser()))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok
    return None


def grid_costs(configs) -> dict[str, Cost]:
    """:func:`trial_cost` of every trial of a grid, measured where the inputs are local."""
    import json

    from harness.data.benchmark import ORDERS
    from harness.inputs import load_data, tokenize_inputs

    cache: dict[str, object] = {}
    starts: set[str] = set()
    out = {}
    for cfg in configs:
        d = cfg.to_dict()
        key = json.dumps([d["data"], d["replay"], d["eval"], d["model"]["name"], d["seed"]])
        if key not in cache:
            tok = None if "hf:" in key else _tokenizer(cfg.model.name)
            cache[key] = tokenize_inputs(cfg, load_data(cfg), tok) if tok is not None else None
        spec = cfg.data.tasks.strip()
        n_tasks = len(ORDERS[spec]) if spec in ORDERS else len([t for t in spec.split(",") if t])
        cost = trial_cost(cfg, cache[key], n_tasks=n_tasks)
        start, prepared = _start_key(cfg), _replay_key(cfg)
        if start in starts:
            cost = dataclasses.replace(cost, evaluation=cost.evaluation - cost.stage0, shared=True)
        if cost.prepare and prepared in starts:  # TM's states: one prepare per key
            cost = dataclasses.replace(cost, prepare=0, shared_prepare=True)
        starts |= {start, prepared}
        out[cfg.id] = cost
    return out


def _numerics(d: dict) -> list:
    from harness.shared import NUMERICS

    return [d["scale"][k] for k in NUMERICS]


def _model(d: dict) -> dict:
    return {k: v for k, v in d["model"].items() if k != "gradient_checkpointing"}


def _replay_key(cfg: TrialConfig) -> str:
    """Trials with one key prepare the same replay state (:func:`harness.shared.replay_key`:
    the model, the buffer, the method and its settings, the batch, the numerics), read from the
    config: the buffer from the settings that draw it."""
    import json

    d = cfg.to_dict()
    r = d["replay"]
    buffer = [d["data"]["root"], r["corpus"], r["size"], r["max_tokens"], r["add_bos"]]
    method = [r["method"], r["settings"], d["eval"]["batch_size"], d["seed"]]
    return json.dumps(["replay", _model(d), buffer, method, _numerics(d)], sort_keys=True)


def _start_key(cfg: TrialConfig) -> str:
    """Trials with one key evaluate the same starting model on the same inputs alike: the
    settings :func:`harness.shared.stage0_key` hashes, read from the config (the trial's key
    hashes the inputs' token ids where this reads the data settings, and the code's versions,
    which are the same across one grid)."""
    import json

    from harness.shared import NOT_STAGE0

    d = cfg.to_dict()
    ev = {k: v for k, v in d["eval"].items() if k not in NOT_STAGE0}
    return json.dumps([_model(d), d["data"], ev, d["seed"], _numerics(d)], sort_keys=True)


def _m(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e5 else f"{x / 1e3:.1f}k"


def describe(costs: dict[str, Cost]) -> list[str]:
    """Lines for the dry run: per trial, the grid, then the ratio line a script can read."""
    lines = [
        "forward tokens (training compute = 3x training tokens under full fine-tuning, 2x under "
        "LoRA, +1x with gradient checkpointing, plus the methods' extra passes: frozen-model "
        "forwards, EWC's Fisher; evaluation summed over ranks and checkpoints):"
    ]
    for tid, c in costs.items():
        lines.append(
            f"  {tid}: training {_m(c.train)} ({_m(c.train_compute)} compute), evaluation "
            f"{_m(c.evaluation)} over {c.checkpoints} checkpoints (R {c.ratio:.2f})"
            + (f", TM prepare {_m(c.prepare)}" if c.prepare else "")
            + (f" (stage 0 shared: {_m(c.stage0)} not recomputed)" if c.shared else "")
            + (" (TM prepare shared)" if c.shared_prepare else "")
        )
    total = sum(costs.values(), Cost())
    shared = [c for c in costs.values() if c.shared]
    lines.append(
        f"  grid ({len(costs)} trials): training {_m(total.train)} ({_m(total.train_compute)} "
        f"compute), evaluation {_m(total.evaluation)}"
        + (f", TM prepare {_m(total.prepare)}" if total.prepare else "")
    )
    if shared:
        lines.append(
            f"  (stage 0 shared: {len(costs) - len(shared)} of {len(costs)} trials evaluate "
            f"their starting model, the others read its rows; "
            f"{_m(sum(c.stage0 for c in shared))} tokens not recomputed; trials that start "
            "together wait for the one computing it)"
        )
    for note in total.assumptions:
        lines.append(f"  ({note})")
    lines.append(f"evaluation/training forward tokens: {total.ratio:.2f}")
    return lines
