"""The Ray layer (the only module of harness that imports Ray).

A study is a grid of trial configs. Ray Tune runs one *function* trial per grid point (the
Ray 2.60 pattern: ``Tuner(TorchTrainer)`` is gone), and each trial runs a Ray Train
``TorchTrainer`` whose workers are DeepSpeed ranks executing :func:`harness.trial.run_trial`.

Resume and idempotence, without timestamps or random names anywhere:
  * every trial has a deterministic id (from its grid point), and its Train run is named
    ``train-study=<study>-trial_id=<id>`` under the storage path, so a restarted trial (Train's
    FailureConfig, a re-submitted job) resumes from its last end-of-task checkpoint;
  * a trial whose summary is already in the results with status 'completed' is not run again,
    so re-running a finished study's command re-runs nothing and duplicates no rows.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from harness.config import ConfigError, TrialConfig, from_dict
from harness.hooks import Hook
from harness.tracking import check_tracker, step_metrics
from results.ledger import (
    completed_trials,
    counts_as_completed,
    data_changed,
    settings_conflict,
    stored_fingerprint,
    stored_summaries,
)

log = logging.getLogger(__name__)

TRIAL_CPU = 0.01
"""CPU reserved by each Tune trial function (it only waits on its TorchTrainer)."""

RAY_PREEMPTION_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
RAY_POLL_ENV, RAY_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2"
"""How often Ray Train's controller polls a trial's ranks, and so takes their reports (Ray's
default is 2 s; see :func:`_run_tune_trial`)."""


def finished(cfg: TrialConfig, completed: Mapping[str, dict] | None = None) -> dict | None:
    """The stored summary if this exact trial already completed and every one of its record
    files agrees (all stages present, every file readable), else None: the trial is run
    (again) and its rows replaced. ``completed``: :func:`completed_trials` of the study, when
    the caller has read it already."""
    from harness.inputs import fingerprint_for  # torch: a trial's data, when one is checked
    from harness.trial import Trial

    if completed is None:
        completed = completed_trials(cfg.out, cfg.study)
    done = completed.get(cfg.id)
    if not counts_as_completed(cfg, done, Trial(cfg).kinds()):
        return None
    from harness.saved_models import models_missing

    if models_missing(cfg, done):
        return None
    if (theirs := stored_fingerprint(done)) is not None:
        if theirs != fingerprint_for(cfg):
            log.warning("trial %s completed on other data: running it again", cfg.id)
            return None
    return done


def id_conflicts(configs: Sequence[TrialConfig], stored: Mapping[str, dict]) -> list[str]:
    """A problem for every trial whose id already holds results of other settings, or of these
    settings on other data (:func:`results.ledger.data_changed`)."""
    from harness.inputs import fingerprint_for

    problems = []
    for c in configs:
        theirs = stored.get(c.id)
        if p := settings_conflict(c, theirs):
            problems.append(p)
        elif theirs and theirs.get("status") == "completed" and stored_fingerprint(theirs):
            if p := data_changed(c, theirs, fingerprint_for(c)):  # these settings, other data
                problems.append(p.replace("pass --rerun", "pass --overwrite"))
    return problems


# --------------------------------------------------------------------------------------------
# Inside Ray: the Train worker loop and the Tune trial function
# --------------------------------------------------------------------------------------------


class RayCheckpointHook(Hook):
    """After every task: write the trial's checkpoint and report it to Ray Train with the
    stage's metrics (a barrier on every rank; rank 0's checkpoint directory is kept)."""

    def after_task(self, trial, stage: int) -> None:
        import ray.train
        from ray.train import Checkpoint

        with tempfile.TemporaryDirectory(prefix="gere-ckpt-") as d:
            trial.save(Path(d))
            checkpoint = Checkpoint.from_directory(d) if trial.backend.is_main else None
            metrics = {**trial.stage_metrics(stage), "timesteps_total": trial.state.global_step}
            ray.train.report(metrics, checkpoint=checkpoint)

    def after_log(self, trial, stage: int, row: dict) -> None:
        """Every ``train.log_every`` steps: the curve row to Tune (and so to the trackers),
        keyed by global step (every rank calls it at the same steps: a barrier)."""
        import ray.train

        ray.train.report(step_metrics(row))


def _train_worker(config: dict) -> dict | None:
    """One Ray Train worker = one DeepSpeed rank running the trial; resumes from a checkpoint."""
    import ray.train

    from harness.trial import run_trial

    cfg = from_dict(config["trial"])
    rank = ray.train.get_context().get_world_rank()
    _quiet_report_log()
    hooks = [RayCheckpointHook(), *config.get("hooks", ())]
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else nullcontext(None) as ckpt_dir:
        try:
            result = run_trial(
                cfg,
                resume_from=Path(ckpt_dir) if ckpt_dir else None,
                hooks=hooks,
                overwrite=config.get("overwrite", False),
                claim=False,  # the Tune trial around these ranks holds it
            )
        except Exception as exc:
            # The trial's own error (recorded as 'failed' by the trial): returned, not raised,
            # so Ray Train does not restart a run that would fail the same way. Train's
            # retries stay for lost workers (a dead process or node).
            log.error("trial %s failed on rank %d: %s", cfg.id, rank, exc, exc_info=True)
            return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]}
    # The trial's own work: its wall time less its set-up (data, model, DeepSpeed init).
    work = result.summary["wall_time_s"] - result.setup_seconds
    public = {**_public(result.summary), "work_s": work, "setup_s": result.setup_seconds}
    return public if rank == 0 else None


def _quiet_report_log() -> None:
    """Ray Train logs every ``ray.train.report`` of every rank at INFO ("Reporting training
    result N: ..."): with the curve reported every log_every steps that is most of a study's
    log. Its logger is named after its file (Ray is pinned; private path)."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _public(summary: Mapping[str, Any]) -> dict:
    keep = ("status", "error", "ap", "bwt", "general_acc_start", "general_acc_final")
    keep += ("wall_time_s",)
    return {k: summary[k] for k in keep if k in summary}


def _tune_trial(config: dict) -> None:
    """One Tune trial: skip if already completed, else run its TorchTrainer and report."""
    import ray.tune

    from harness.claim import claimed

    trial = config["trial"]
    cfg = from_dict(trial)
    # One writer of this trial id wherever else it is started; a retry of this Tune trial (its
    # actor lost) takes its own claim over. Checked for completion under the claim.
    with claimed(cfg, owner=f"tune:{ray.tune.get_context().get_trial_id()}"):
        _run_tune_trial(config, cfg)


def _run_tune_trial(config: dict, cfg: TrialConfig) -> None:
    import ray.tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig
    from ray.tune.integration.ray_train import TuneReportCallback

    trial = config["trial"]
    done = finished(cfg)
    if done is not None:
        ray.tune.report({**_public(done), "skipped": True})
        return
    sc = cfg.scale
    resources = {"CPU": sc.cpus_per_worker, **({"GPU": sc.gpus_per_worker} if sc.use_gpu else {})}
    # Ray Train's controller takes the ranks' reports only when it polls them, every
    # RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default), and a rank's second report waits
    # until the first is taken: a curve row every few steps stalled training that long each
    # time (measured: 4-trial smoke study 127 -> 95 s). Ray hands the variable on from here to
    # the controller and its workers; a value set in the cluster's environment wins.
    os.environ.setdefault(RAY_POLL_ENV, RAY_POLL_S)
    trainer = _trainer_class()(
        _train_worker,
        train_loop_config={
            "trial": trial,
            "hooks": config.get("hooks", ()),
            "overwrite": config.get("overwrite", False),
        },
        scaling_config=ScalingConfig(
            num_workers=sc.workers,
            use_gpu=sc.use_gpu,
            resources_per_worker=resources,
            # GPU ranks of one trial on one node (NVLink, no cross-node ZeRO-3 traffic).
            placement_strategy="STRICT_PACK" if sc.use_gpu else "PACK",
        ),
        # A hung collective fails the trial after this long instead of holding its workers.
        torch_config=TorchConfig(
            backend="nccl" if sc.use_gpu else "gloo", timeout_s=int(sc.collective_timeout_s)
        ),
        run_config=RunConfig(
            # the study in the name: two studies in one storage may share a point id
            # (method=none), and Train resumes from whatever checkpoint its run folder holds
            name=f"train-study={cfg.study}-trial_id={cfg.id}",
            storage_path=config["storage_path"],
            failure_config=FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    ray.tune.report({**(result.return_value or {}), "skipped": False})


@functools.cache
def _trainer_class() -> type:
    """Ray's ``TorchTrainer``, less Ray Data's dataset manager where a run has no Ray
    Datasets (the harness feeds its ranks itself): Ray 2.60 starts that actor for every run
    regardless, one more process a trial (~1.9 CPU-s of start-up measured, importing Ray Data
    to do nothing). Ray's callback list is private; if it changes, this filter drops nothing."""
    from ray.train.torch import TorchTrainer

    class Trainer(TorchTrainer):
        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [cb for cb in callbacks if type(cb).__name__ != "DatasetsCallback"]

    return Trainer


def _trial_name(trial) -> str:
    return trial.config["trial"]["trial_id"]


def _trial_dirname(trial) -> str:
    return f"trial_id={trial.config['trial']['trial_id']}"


def tracker_callbacks(tracker: str | None, study: str) -> list:
    """Ray Tune's own logger callback for ``tracker`` (``ray.air.integrations``), configured
    the tracker's standard way: MLflow from ``MLFLOW_TRACKING_URI`` (else MLflow's default),
    experiment = the study; W&B from ``WANDB_PROJECT`` (default 'gere-harness'), group = the
    study, ``WANDB_MODE=offline`` honoured; TensorBoard event files in each trial's folder of
    the Tune storage (``tensorboard --logdir <storage>/tune-study=<study>``)."""
    check_tracker(tracker)
    if tracker == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return [
            MLflowLoggerCallback(
                tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"),
                experiment_name=study,
                tags={"study": study},
                save_artifact=False,
            )
        ]
    if tracker == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [
            WandbLoggerCallback(
                project=os.environ.get("WANDB_PROJECT", "gere-harness"),
                group=study,
                mode=os.environ.get("WANDB_MODE"),
            )
        ]
    if tracker == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    return []


def _init_ray() -> None:
    """``ray.init()``: joins a running cluster (RAY_ADDRESS, or the one ``ray start`` last
    started here), else starts a local one; never pass num_cpus. A cluster that was killed
    without ``ray stop`` leaves its address in Ray's temp dir, and ``ray.init()`` would wait on
    it for ever: an address nobody answers on starts a local Ray instead, saying so."""
    import os
    import socket

    import ray

    joining = bool(os.environ.get("RAY_ADDRESS"))
    address = None if joining else _last_started_address()
    dead = False
    if address:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
            joining = True
        except (OSError, ValueError):
            log.warning(
                "the Ray cluster last started here (%s, from Ray's temp dir) does not answer: "
                "it was stopped without `ray stop`; starting a local Ray instead (set "
                "RAY_ADDRESS to join a cluster elsewhere)",
                address,
            )
            dead = True
    if not joining:
        # A Ray instance of this machine alone, started here (its processes inherit this
        # environment): no cloud sends it preemption notices, so Ray Train's watcher for
        # them (one more process per trial) has nothing to watch.
        os.environ.setdefault(RAY_PREEMPTION_ENV, "0")
    if dead:
        ray.init(address="local")
    else:
        ray.init()


def _last_started_address() -> str | None:
    """The address of the cluster ``ray start`` last started on this machine, as ``ray.init()``
    would read it. Ray offers no public call for it: its private one is used where it exists
    (every Ray the project is tested with), else the stale-address check is skipped and
    ``ray.init()`` behaves as Ray's own."""
    try:
        from ray._private.utils import read_ray_address
    except ImportError:  # moved or renamed in another Ray release
        return None
    try:
        return read_ray_address()
    except Exception as exc:  # noqa: BLE001 - a changed signature must not stop a study
        log.debug("could not read the last Ray address: %s", exc)
        return None


def max_concurrent_trials(configs: Sequence[TrialConfig]) -> int | None:
    """How many trials fit the cluster at once (Tune does not manage Train's workers).

    None (no cap) on a GPU cluster that has not yet scaled up to one trial's GPUs: every
    trial's TorchTrainer then asks for its workers and the autoscaler sees the whole demand.
    """
    import ray

    res = ray.cluster_resources()
    sc = configs[0].scale
    if sc.use_gpu:
        per_trial = sc.workers * sc.gpus_per_worker
        if res.get("GPU", 0) < per_trial:
            log.warning(
                "the cluster has %s GPUs now, fewer than one trial needs (%s): not capping "
                "concurrency, so the autoscaler sees every trial's demand (--max-concurrent caps it)",
                res.get("GPU", 0),
                per_trial,
            )
            return None
        return int(res["GPU"] // per_trial)
    per_trial = sc.workers * sc.cpus_per_worker + TRIAL_CPU
    return max(1, int(res.get("CPU", 0) // per_trial))


def _absolute(loc) -> str:
    """A local results or storage path made absolute (Ray's workers do not run in the driver's
    working directory, so a relative one, such as the default 'runs', means the driver's); a
    URI as given."""
    text = str(loc)
    return text if "://" in text else str(Path(text).resolve())


def run_study(
    configs: Sequence[TrialConfig],
    *,
    storage_path: str | Path,
    max_concurrent: int | None = None,
    verbose: int = 1,
    hooks: Sequence[Hook] = (),
    overwrite: bool = False,
    tracker: str | None = None,
):
    """Run every trial of a study with Ray Tune; returns the study's summary DataFrame.

    Connects to a running cluster (``ray job submit``) or starts a local Ray in-process.
    ``hooks``: extra stage hooks for every trial (picklable; they run inside the Ray Train
    workers, so their module must be importable there). A trial id that holds results of
    other settings is refused (ConfigError) unless ``overwrite``. Every trial runs even when
    some fail; then RuntimeError names the trials that failed (their errors are recorded in
    their summaries). ``tracker``: 'mlflow', 'wandb' or 'tensorboard' (:data:`TRACKERS`):
    every trial becomes a run of that tracker, through Ray's own integration, with its
    settings as the run's config and the training curve every ``train.log_every`` steps.
    """
    import ray
    from ray import tune

    from results.io import read_records, study_dir

    if not configs:
        raise ValueError("a study needs at least one trial")
    check_tracker(tracker)
    # Ray Train workers do not run in the driver's working directory: a relative results
    # path (the default 'runs') must mean the driver's.
    configs = [
        c if (resolved := _absolute(c.out)) == c.out else dataclasses.replace(c, out=resolved)
        for c in configs
    ]
    study, out = configs[0].study, configs[0].out
    storage = _absolute(storage_path)
    stored = stored_summaries(out, study)  # read once, not once per trial
    conflicts = [] if overwrite else id_conflicts(configs, stored)
    if conflicts:
        raise ConfigError(conflicts)
    completed = {k: v for k, v in stored.items() if v["status"] == "completed"}
    todo = [c for c in configs if finished(c, completed) is None]
    log.info(
        "study %s: %d trials, %d already completed", study, len(configs), len(configs) - len(todo)
    )
    if todo:
        if not ray.is_initialized():
            _init_ray()
        concurrency = max_concurrent or max_concurrent_trials(todo)
        running = min(concurrency or len(todo), len(todo))
        log.info("study %s: running %d trials, %d at a time", study, len(todo), running)
        tuner = tune.Tuner(
            tune.with_resources(_tune_trial, {"CPU": TRIAL_CPU}),
            param_space={
                # One grid value per trial: each trial's config is its own settings only
                # (params.json, the log's config box and a tracker's run config do not grow
                # with the grid), named by its readable id.
                "trial": tune.grid_search([c.to_dict() for c in todo]),
                "storage_path": storage,
                "hooks": list(hooks),
                "overwrite": overwrite,
            },
            tune_config=tune.TuneConfig(
                max_concurrent_trials=concurrency,
                # A finished trial's Tune actor runs the next trial (its Ray Train controller
                # and ranks are new per trial): no process start and imports per trial.
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=f"tune-study={study}",
                storage_path=storage,
                verbose=verbose,
                failure_config=tune.FailureConfig(max_failures=1),
                callbacks=tracker_callbacks(tracker, study),
            ),
        )
        t0 = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - t0
        ran = [r.metrics for r in grid if r.metrics and not r.metrics.get("skipped")]
        busy = sum(m.get("time_total_s", 0.0) for m in ran)
        work = sum(m.get("work_s", 0.0) for m in ran)
        timed = [m for m in ran if "work_s" in m]
        overhead = [m["time_total_s"] - m["work_s"] for m in timed]
        setup = [m.get("setup_s", float("nan")) for m in timed]

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs) if xs else float("nan")

        log.info(
            "study %s: %.0f s wall; trials busy %.0f s in total; parallel efficiency %.2f "
            "(Tune: sum of trial times / (wall x %d concurrent)); useful-work efficiency %.2f "
            "(the trials' own work, set-up excluded / (wall x %d)); start-up overhead %.1f s "
            "per trial: %.1f s Ray (the trial's processes: Tune trial, Train controller and "
            "workers, their imports, the process group) + %.1f s set-up (data, model, "
            "DeepSpeed initialisation, replay preparation)",
            study,
            wall,
            busy,
            busy / (wall * running),
            running,
            work / (wall * running),
            running,
            mean(overhead),
            mean(overhead) - mean(setup),
            mean(setup),
        )
        failed = [
            f"{r.config['trial']['trial_id']}: {r.metrics.get('error')}"[:400]
            for r in grid
            if r.metrics and r.metrics.get("status") == "failed"
        ]
        failed += [f"{type(e).__name__}: {e}"[:400] for e in grid.errors]
        if failed:
            raise RuntimeError(
                f"{len(failed)} trial(s) of study {study!r} failed (each is recorded 'failed' "
                "with its error in the summary; the other trials ran): " + "; ".join(failed)
            )
    summary = read_records(study_dir(out, study), "summary", skip_damaged=True)
    ids = {c.id for c in configs}
    return summary[summary.trial_id.isin(ids)].reset_index(drop=True)


def _tune_job(config: dict, *, fn: Callable[[dict], list[dict]], kind: str) -> None:
    """One Tune trial of :func:`run_jobs`: ``fn(spec)``'s rows written as its records."""
    import ray.tune

    from results.io import write_records

    job = config["job"]
    start = time.perf_counter()
    rows = fn(job["spec"])
    write_records(job["out"], kind, rows, study=job["study"], trial_id=job["id"])
    ray.tune.report({"rows": len(rows), "work_s": time.perf_counter() - start})


def run_jobs(
    study: str,
    out: str,
    kind: str,
    jobs: Sequence[tuple[str, dict]],
    fn: Callable[[dict], list[dict]],
    *,
    storage_path: str | Path,
    max_concurrent: int | None = None,
    cpus: float = 1.0,
    verbose: int = 1,
) -> None:
    """Run a study's jobs that are not harness trials (the active-forgetting study's
    adaptations: a small model retrained and probed) as Ray Tune trials, ``cpus`` each.

    ``jobs``: ``(id, spec)`` pairs; ``fn(spec)`` (picklable: a module-level function) returns
    the rows of record ``kind``, written as ``<out>/study=<study>/<kind>/<id>.parquet``. A job
    whose file is stored is skipped, so an interrupted study resumes. Every job runs even when
    some fail; then RuntimeError names the failed ones."""
    from ray import tune

    from results import storage
    from results.io import record_path

    out = _absolute(out)
    todo = []
    for i, (job_id, spec) in enumerate(jobs, 1):
        if storage.is_file(record_path(out, kind, study=study, trial_id=job_id)):
            log.info("[%d/%d] %s: stored, skipped", i, len(jobs), job_id)
        else:
            todo.append({"id": job_id, "spec": spec, "study": study, "out": out})
    if not todo:
        return
    import ray

    if not ray.is_initialized():
        _init_ray()
    log.info("study %s: running %d jobs, %s at a time", study, len(todo), max_concurrent or "all")
    storage_path = _absolute(storage_path)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_tune_job, fn=fn, kind=kind), {"CPU": cpus}),
        param_space={"job": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=max_concurrent,
            trial_name_creator=lambda t: t.config["job"]["id"],
            trial_dirname_creator=lambda t: f"job={t.config['job']['id']}",
        ),
        run_config=tune.RunConfig(
            name=f"tune-study={study}", storage_path=storage_path, verbose=verbose
        ),
    )
    grid = tuner.fit()
    failed = [f"{type(e).__name__}: {e}"[:400] for e in grid.errors]
    if failed:
        raise RuntimeError(
            f"{len(failed)} job(s) of study {study!r} failed (the others ran): " + "; ".join(failed)
        )
