"""One continual-learning trial, end to end, in one process (one rank of it under Ray Train).

    setup: load + check all data -> backend builds the model -> tokenise (cached) -> replay
           prepare (TM) -> hooks' setup
    run:   stage 0 (hooks) -> for each task: train, hooks after the task -> summary

:class:`Trial` holds everything a trial has (config, backend, model, inputs, replay method,
hooks) and one typed :class:`TrialState` (records by kind, counters, RNG, the last finished
stage) that a checkpoint saves and restores whole. What is measured around training —
evaluation, plasticity diagnostics, loss landscapes, a Ray checkpoint — is a stage hook
(:mod:`harness.hooks`). Everything that can fail on bad input fails in
:func:`harness.inputs.load_data`, before any model is built. Results are written after every
stage (each trial's file replaced atomically), so a crash keeps what was measured; the
summary says 'running' from before the first write until the last, so a summary says
'completed' only over complete records. A collective that times out (``scale.
collective_timeout_s``) fails the trial naming the rank and what it was doing (``phase``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from harness.backend import Backend, make_backend
from harness.config import ConfigError, TrialConfig
from harness.core import device_of, eval_mode
from harness.hooks import Hook
from harness.inputs import (
    TrialData,
    check_lengths,
    landscape_stages,
    load_data,
    tokenize_inputs,
)
from harness.models import (
    check_lora_targets,
    check_model_source,
    context_length,
    last_hidden,
    load_tokenizer,
)
from harness.provenance import provenance, version_string
from harness.replay.base import Ranks, get_method
from harness.train import train_task
from harness.trial_state import (
    CHECKPOINT_CONFIG,
    CHECKPOINT_STATE,
    KINDS,
    TrialResult,
    TrialState,
)
from results import ledger
from results.ledger import check_output, data_changed, stored_conflict, stored_summary_or_none
from results.summary import summary_row

log = logging.getLogger(__name__)


def default_hooks(cfg: TrialConfig) -> list[Hook]:
    """The hooks a config asks for: evaluation, plasticity, landscape, then its interventions
    and continual-learning methods."""
    from harness.eval_stage import EvaluationHook
    from harness.landscape import LandscapeHook
    from harness.plasticity import PlasticityHook

    hooks: list[Hook] = [EvaluationHook(cfg)]
    if cfg.eval.plasticity_texts and cfg.eval.heldout:
        hooks.append(PlasticityHook())
    if cfg.landscape.enabled:
        hooks.append(LandscapeHook())
    if cfg.train.save_models != "none":
        from harness.saved_models import SavedModelsHook

        hooks.append(SavedModelsHook())
    from harness.cl import build_cl_methods
    from harness.interventions import build_interventions

    return [*hooks, *build_interventions(cfg), *build_cl_methods(cfg)]


class Trial:
    """One trial: ``Trial(cfg, hooks).run()``; ``save``/``load`` checkpoint it between tasks.

    ``hooks`` are added after :func:`default_hooks` (e.g. the Ray layer's checkpoint reporter).
    ``resume_from``: a directory written by :meth:`save`; the trial continues after its stage.
    ``overwrite``: replace results stored under this trial id by a trial with other settings
    (refused otherwise, before anything is built). ``rerun``: replace results of these settings
    computed on other data (refused otherwise: :func:`data_changed`).
    """

    def __init__(
        self,
        cfg: TrialConfig,
        hooks: Sequence[Hook] = (),
        *,
        resume_from: Path | None = None,
        progress: bool = False,
        overwrite: bool = False,
        rerun: bool = False,
    ):
        self.cfg, self.progress, self.resume_from = cfg, progress, resume_from
        self.overwrite, self.rerun = overwrite, rerun
        self.hooks: list[Hook] = [*default_hooks(cfg), *hooks]
        self.phase = "set-up"
        """What the trial is doing now (named in the error when a collective times out)."""
        self.state = TrialState(trial_id=cfg.id)
        self.files: dict[str, Path | str] = {}
        self.started = time.perf_counter()
        self.started_at = time.time()
        self.setup_seconds = 0.0

    @property
    def resumed(self) -> bool:
        return self.resume_from is not None

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Data (checked), backend and model, token ids, replay preparation, hooks."""
        t0 = time.perf_counter()
        cfg = self.cfg
        self.phase = "set-up"
        check_output(cfg)
        if not self.overwrite:
            conflict = stored_conflict(cfg)
            if conflict:
                raise ConfigError([conflict])
        check_model_source(cfg.model)  # a broken folder or an unreachable Hub: before the data
        torch.manual_seed(cfg.seed)
        self.data: TrialData = load_data(cfg)
        self.state.data_fingerprint = self.data.fingerprint
        if not (self.overwrite or self.rerun):  # a failed or killed run is replaced anyway
            stored = stored_summary_or_none(cfg)
            if stored and stored.get("status") == "completed":
                if changed := data_changed(cfg, stored, self.data.fingerprint):
                    raise ConfigError([changed])
        if cfg.landscape.enabled:
            landscape_stages(cfg, self.data)  # a bad stage or dataset fails before the model
        if self.resume_from is not None and self.foreign_checkpoint(self.resume_from, same_id=True):
            log.warning(
                "trial %s: ignoring the checkpoint %s, saved with other settings (another study "
                "or config under the same trial id): starting over",
                cfg.id,
                self.resume_from,
            )
            self.resume_from = None
        if self.resume_from is not None:
            self.load(self.resume_from)
        self.method = get_method(cfg.replay.method, **cfg.replay.settings)
        w = cfg.replay.weight
        self.weight = w if w is not None else self.method.default_weight
        # Token ids and LoRA targets come from the tokenizer and the model's config alone, so
        # a sequence length too short for a label or a misspelt module fails before the weights.
        self.inputs = tokenize_inputs(
            cfg, self.data, load_tokenizer(cfg.model.name, cfg.model.revision)
        )
        check_lengths(cfg, self.inputs, context_length(cfg.model))
        if cfg.model.tuning == "lora":
            check_lora_targets(cfg.model)
        # Continual backprop's reference restarts Adam's step count of the units it replaces.
        per_element = any(getattr(h, "per_element_step", False) for h in self.hooks)
        self.backend: Backend = (
            make_backend(cfg, per_element_step=True) if per_element else make_backend(cfg)
        )
        self.built = self.backend.build_model(
            keep_reference=self.method.needs_reference and cfg.model.tuning == "full",
            weights=self.resume_from / "model" if self.resume_from else None,
        )
        if self.inputs.buffer is not None:
            self._prepare_replay()
        for hook in self.hooks:
            hook.setup(self)
        if self.resume_from is not None:
            self._load_hook_states(self.resume_from / "hooks")
        if self.state.torch_rng is not None:
            torch.set_rng_state(torch.tensor(self.state.torch_rng, dtype=torch.uint8))
        self.setup_seconds = time.perf_counter() - t0

    @property
    def stages(self) -> list[tuple[int, ...]]:
        """The task positions (1-based) trained at each stage: one task per stage, or what a
        hook's ``plan_stages`` plans instead (multitask: every task in one stage)."""
        n = len(self.data.tasks)
        for hook in self.hooks:
            plan = getattr(hook, "plan_stages", None)
            planned = plan(self, n) if plan is not None else None
            if planned is not None:
                return planned
        return [(k,) for k in range(1, n + 1)]

    def stage_name(self, stage: int) -> str:
        """What was trained at ``stage``: its task's name, or the names '+'-joined."""
        return "+".join(self.data.tasks[k - 1].name for k in self.stages[stage - 1])

    def _prepare_replay(self) -> None:
        self.phase = "replay preparation (the frozen model over the replay buffer)"
        saved = self.resume_from / "replay" if self.resume_from else None
        if saved is not None and saved.exists():
            self.method.load_state(saved)
            return
        # Before the first step the model being trained *is* the starting model. The ranks
        # share the work: each runs the frozen model over its part of the buffer.
        from harness.shared import shared_replay_state

        shared_replay_state(self, self._prepare_replay_here)

    def _prepare_replay_here(self) -> None:
        backend, pad = self.backend, self.inputs.pad_id
        with eval_mode(backend.module) as m:
            ranks = None
            if backend.world_size > 1:
                one = torch.full((1, 1), pad, dtype=torch.long, device=device_of(m))
                ranks = Ranks(
                    backend.rank,
                    backend.world_size,
                    backend.gather,
                    lambda: last_hidden(m, one, torch.ones_like(one)),
                )
            self.method.prepare(
                lambda i, a, m=m: last_hidden(m, i, a),
                self.inputs.buffer,
                batch_size=self.cfg.eval.batch_size,
                ranks=ranks,
            )

    # -- stages ---------------------------------------------------------------------------

    def evaluate(self, stage: int) -> None:
        """Every hook's measurement of the model as it is: stage 0, or after task ``stage``
        (hooks that checkpoint the trial come last, so they save this stage's rows)."""
        self.state.finished_stage = stage
        when = "before the first task" if stage == 0 else f"after task {stage}"
        for hook in self.hooks:
            self.phase = f"{type(hook).__name__} {when}"
            if stage == 0:
                hook.before_first_task(self)
            else:
                hook.after_task(self, stage)
        self.flush()

    def before_task(self, stage: int) -> None:
        """Every hook's ``before_task``. Hooks that keep the model as the previous task left it
        (``reads_previous_model``: LwF's teacher) see it before any hook changes it (O-LoRA's
        adapter hand-over, shrink & perturb), whatever the order the config gave them in."""
        first = [h for h in self.hooks if getattr(h, "reads_previous_model", False)]
        for hook in [*first, *(h for h in self.hooks if h not in first)]:
            hook.before_task(self, stage)

    def train_stage(self, stage: int) -> bool:
        """Train task ``stage``; False if the loss or gradient diverged (training stopped)."""
        positions, name = self.stages[stage - 1], self.stage_name(stage)
        self.phase = f"before task {stage} ({name})"
        self.before_task(stage)
        examples = [ex for k in positions for ex in self.inputs.tasks[k - 1].train]
        for hook in self.hooks:  # task replay: earlier tasks' examples join this task's
            extra = getattr(hook, "extra_examples", None)
            examples += list(extra(self, stage)) if extra is not None else []
        train_cfg = self.cfg.train
        if len(positions) > 1 and train_cfg.max_steps_per_task:  # the cap is per task trained
            train_cfg = dataclasses.replace(
                train_cfg, max_steps_per_task=train_cfg.max_steps_per_task * len(positions)
            )
        t0, st = time.perf_counter(), self.state
        doing = f"training task {stage} ({name})"
        self.phase = f"{doing}, its first step"

        def after_step(step: int) -> None:
            self.phase = f"{doing}, after global step {step}"
            for h in self.hooks:
                h.after_step(self, stage, step)

        def after_log(row: dict) -> None:
            for h in self.hooks:  # hooks written before after_log existed lack it
                if (f := getattr(h, "after_log", None)) is not None:
                    f(self, stage, row)

        outcome = train_task(
            self.built,
            self.backend,
            task_examples=examples,
            buffer=self.inputs.buffer,
            method=self.method,
            weight=self.weight,
            cfg=train_cfg,
            per_batch=self.cfg.replay.per_batch,
            stage=stage,
            task=name,
            global_step=st.global_step,
            seed=self.cfg.seed,
            progress=self.progress,
            on_step=after_step,
            on_log=after_log,
            extra_terms=lambda batch: [h.loss_term(self, stage, batch) for h in self.hooks],
        )
        st.train_seconds += time.perf_counter() - t0
        st.train_tokens += outcome.tokens
        st.global_step += outcome.steps
        st.rows["curve"] += outcome.curve
        if outcome.diverged_step is None:
            return True
        self.diverged = (stage, outcome.diverged_step)
        self.error = (
            f"diverged at task {stage} ({name}), global step {outcome.diverged_step}: "
            f"{outcome.diverged_reason}"
        )
        log.warning("trial %s %s", self.cfg.id, self.error)
        return False

    def run(self) -> TrialResult:
        """Set up, then stage 0 and every task not yet finished; the summary is written last.

        Bad input fails in ``setup`` and writes nothing. A failure after it is recorded
        (partial rows kept, summary 'failed') and re-raised."""
        self.setup()
        status, self.error, self.diverged = "completed", None, (None, None)
        try:
            # Before any record is (re)written: a summary that says 'completed' must never
            # sit beside the partial files of an interrupted re-run.
            if self.backend.is_main:
                self.files["summary"] = self._write("summary", [self.summary("running")])
            if not self.resumed:
                self.evaluate(0)
            for stage in range(self.state.finished_stage + 1, len(self.stages) + 1):
                if not self.train_stage(stage):
                    status = "diverged"
                    break
                self.evaluate(stage)
        except Exception as exc:
            status, self.error = "failed", failure_reason(exc, self)
            log.error("trial %s failed: %s", self.cfg.id, self.error)
            self._finish(status)
            raise
        return self._finish(status)

    def _finish(self, status: str) -> TrialResult:
        for hook in self.hooks:
            if status == "failed":
                try:  # the failure is recorded even if a hook cannot end cleanly after it
                    hook.at_end(self, status)
                except Exception as exc:
                    log.warning("%s.at_end after the failure: %s", type(hook).__name__, exc)
            else:
                hook.at_end(self, status)
        self.flush()
        summary = self.summary(status)
        if self.backend.is_main:
            self.files["summary"] = self._write("summary", [summary])
        st = self.state
        return TrialResult(
            self.cfg.id,
            status,
            summary,
            self.files,
            st.train_tokens,
            st.train_seconds,
            self.setup_seconds,
        )

    # -- records --------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        """The record kinds this trial writes: accuracy..curve, and what the hooks add."""
        kinds = ["curve"]
        for hook in self.hooks:
            kinds += [k for k in hook.kinds if k not in kinds]
        return kinds

    def _write(self, kind: str, rows: list[dict]) -> Path | str:
        from results.io import write_records

        return write_records(self.cfg.out, kind, rows, study=self.cfg.study, trial_id=self.cfg.id)

    def flush(self) -> None:
        """Write every record kind's rows so far (main rank only; atomic per file)."""
        if self.backend.is_main:
            for kind in sorted(self.kinds(), key=KINDS.index):
                self.files[kind] = self._write(kind, self.state.rows[kind])

    def read_stored(self, kind: str) -> list[dict]:
        """This trial's rows of ``kind`` as stored in the results (e.g. saved mid-stage)."""
        from results.io import read_trial_rows

        return read_trial_rows(self.cfg.out, kind, study=self.cfg.study, trial_id=self.cfg.id)

    def stage_metrics(self, stage: int) -> dict:
        """A few numbers of the latest stage (what the Ray layer reports to Tune)."""
        acc = [r for r in self.state.rows["accuracy"] if r["stage"] == stage]
        general = [r for r in self.state.rows["general"] if r["stage"] == stage]
        seen = max(self.stages[stage - 1])  # tasks trained so far: positions 1..seen
        return {
            "stage": stage,
            "task": self.stage_name(stage),
            "task_accuracy": acc[seen - 1]["accuracy"],
            "mean_accuracy": sum(r["accuracy"] for r in acc[:seen]) / seen,
            "general_accuracy": general[0]["accuracy"],
            "general_ppl": general[0]["ppl"],
        }

    def summary(self, status: str) -> dict:
        return _summary(self, status)

    # -- checkpoints ----------------------------------------------------------------------

    def _hook_file(self, folder: Path, i: int, hook: Hook) -> Path:
        return folder / f"{i}-{type(hook).__name__}.safetensors"

    def _load_hook_states(self, folder: Path) -> None:
        from safetensors.torch import load_file

        for i, hook in enumerate(self.hooks):
            path = self._hook_file(folder, i, hook)
            if path.is_file():
                hook.load_state_dict(load_file(str(path)))

    def save(self, path: Path) -> None:
        """A resumable checkpoint after the last finished stage (every rank calls it: ZeRO-3
        gathers shards; the main rank writes the files)."""
        self.backend.save_model(path / "model")
        if self.backend.is_main:
            self.method.save_state(path / "replay")
            from safetensors.torch import save_file

            for i, hook in enumerate(self.hooks):
                state = hook.state_dict()
                if state:
                    (path / "hooks").mkdir(parents=True, exist_ok=True)
                    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
                    save_file(tensors, str(self._hook_file(path / "hooks", i, hook)))
            self.state.torch_rng = torch.get_rng_state().tolist()
            (path / CHECKPOINT_CONFIG).write_text(json.dumps(self.cfg.to_dict(), sort_keys=True))
            (path / CHECKPOINT_STATE).write_text(json.dumps(self.state.to_dict()))
        self.backend.barrier()

    def foreign_checkpoint(self, path: Path, *, same_id: bool = False) -> bool:
        """Whether the checkpoint at ``path`` was saved with other settings than this trial's
        (a checkpoint written before it stored its config is taken as this trial's);
        ``same_id``: only if it was saved under this trial's id (Ray Train's run folder of
        another study or config; a checkpoint of another id is refused by :meth:`load`)."""
        saved = path / CHECKPOINT_CONFIG
        if not saved.is_file():
            return False
        if same_id:
            state = json.loads((path / CHECKPOINT_STATE).read_text())
            if state.get("trial_id") != self.cfg.id:
                return False
        theirs = ledger.comparable_settings(json.loads(saved.read_text()))
        return theirs != ledger.comparable_settings(self.cfg.to_dict())

    def load(self, path: Path) -> None:
        """Restore the state of a checkpoint written by :meth:`save` (weights: ``setup``)."""
        state = TrialState.from_dict(json.loads((path / CHECKPOINT_STATE).read_text()))
        if state.trial_id != self.cfg.id:
            raise ValueError(
                f"checkpoint {path} belongs to trial {state.trial_id!r}, not {self.cfg.id!r}"
            )
        if self.foreign_checkpoint(path):
            raise ConfigError(
                [
                    f"trial {self.cfg.id}: its checkpoint {path} was saved with other settings "
                    "(another study or config under the same trial id), so it cannot resume"
                ]
            )
        mine = self.state.data_fingerprint
        if state.data_fingerprint and mine and state.data_fingerprint != mine:
            raise ConfigError(
                [
                    f"trial {self.cfg.id}: its checkpoint {path} was saved on other data (data "
                    f"fingerprint {state.data_fingerprint}, now {mine}: a task file, the probe, "
                    "the held-out texts or the replay corpus changed), so it cannot resume: "
                    "restore the data to continue, or pass --rerun to start the trial over on "
                    "the current data"
                ]
            )
        state.data_fingerprint = mine
        log.info(
            "trial %s resumes after task %d from %s", state.trial_id, state.finished_stage, path
        )
        self.state = state


def run_trial(
    cfg: TrialConfig,
    *,
    progress: bool = False,
    resume_from: Path | None = None,
    hooks: Sequence[Hook] = (),
    overwrite: bool = False,
    rerun: bool = False,
    claim: bool = True,
) -> TrialResult:
    """Run one trial (or resume it from a checkpoint written by :meth:`Trial.save`), holding
    its claim (:mod:`harness.claim`: a second process running this trial id fails at once)
    unless ``claim`` is False (Ray Train's ranks: the Tune trial around them holds it). In a
    process group started otherwise (torchrun, spawned ranks) rank 0 holds it."""
    from harness.claim import claimed

    trial = Trial(
        cfg, hooks, resume_from=resume_from, progress=progress, overwrite=overwrite, rerun=rerun
    )
    dist = torch.distributed
    if claim and dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        claim = False  # ranks started without Ray (torchrun, spawn): rank 0 holds it for all
    if not claim:
        return trial.run()
    check_output(cfg)  # the claim lives beside the results
    with claimed(cfg):
        return trial.run()


def _summary(trial: Trial, status: str) -> dict:
    cfg, data = trial.cfg, trial.data
    return summary_row(
        cfg,
        status=status,
        error=trial.error,
        diverged=trial.diverged,
        wall_time_s=time.perf_counter() - trial.started,
        tasks=[t.name for t in data.tasks],
        n_stages=len(trial.stages),
        replay_size=len(data.replay),
        accuracy=trial.state.rows["accuracy"],
        general=trial.state.rows["general"],
        fingerprint=data.fingerprint,
        warnings=data.warnings,
        harness_version=version_string(),
        provenance=provenance(_device(trial), trial.started_at),
        weight=getattr(trial, "weight", None),
        model=_model_identity(trial.cfg),
    )


def _model_identity(cfg) -> tuple[str, str | None]:
    from harness.models import model_identity

    try:
        return model_identity(cfg.model)
    except Exception as exc:  # noqa: BLE001 - a failed trial's summary must still be written
        log.warning("model id of %r: %s", cfg.model.name, exc)
        return cfg.model.name, None


def _device(trial: Trial) -> str | None:
    """'cpu' or 'cuda: <name>', times the world size when several ranks train."""
    built, backend = getattr(trial, "built", None), getattr(trial, "backend", None)
    if built is None:
        return None
    dev = device_of(built.model)
    name = f"cuda: {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else dev.type
    n = backend.world_size if backend is not None else 1
    return f"{name} x {n}" if n > 1 else name


# -- faults and bad input ----------------------------------------------------------------------

_TIMEOUT = ("timed out", "timeout", "deadline exceeded")
_PEER_LOST = ("connection closed by peer", "connection reset", "broken pipe", "pair closure")


def failure_reason(exc: BaseException, trial: Trial) -> str:
    """The error a failed trial records: the exception, and for a collective that timed out
    or lost its peers, which rank waited how long doing what."""
    text = f"{type(exc).__name__}: {exc}"
    backend = getattr(trial, "backend", None)
    if backend is None or backend.world_size == 1 or not isinstance(exc, RuntimeError):
        return text  # not a collective (torch raises RuntimeError subclasses for those)
    low, rank = str(exc).lower(), backend.rank
    timeout = trial.cfg.scale.collective_timeout_s
    if any(k in low for k in _TIMEOUT):
        return (
            f"rank {rank} waited {timeout:g} s (scale.collective_timeout_s) in a collective "
            f"during {trial.phase}: another rank is hung or gone (its worker log says which). "
            f"{text}"
        )
    if any(k in low for k in _PEER_LOST):
        return (
            f"rank {rank} lost its peers in a collective during {trial.phase}: another rank "
            f"failed or timed out first (its error is in its worker log). {text}"
        )
    return text


def stored_completed(cfg: TrialConfig) -> dict | None:
    """The stored summary if this trial counts as completed (:mod:`results.ledger`) and has
    the models ``train.save_models`` asks for, else None."""
    from harness.saved_models import models_missing

    done = ledger.stored_completed(cfg, Trial(cfg).kinds())
    return None if models_missing(cfg, done) else done
