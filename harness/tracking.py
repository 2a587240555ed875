"""Experiment trackers for a trial run in this process (``python -m harness run --tracker``).

Studies log through Ray Tune's own callbacks (:func:`harness.tune.tracker_callbacks`); a
trial run without Ray logs the same things with the tracker's own client, from rank 0: the
run named by the trial id, its flattened settings as params, the training curve every
``train.log_every`` steps (``train/loss``, ... against the global step) and each task's
scores. Configured the trackers' standard way (``MLFLOW_TRACKING_URI``; ``WANDB_PROJECT``,
``WANDB_MODE``; TensorBoard event files in ``<out>/_tensorboard/<study>/<trial id>``, a folder
Parquet readers skip).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.config import ConfigError
from harness.hooks import Hook

log = logging.getLogger(__name__)

__all__ = ["TrackerHook", "flat_params"]


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"trial/train/lr": 1e-4}`` (the names Tune's callbacks
    give a study's runs, so a run of either kind reads the same)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix or 'trial/'}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}/"))
        else:
            out[name] = value
    return out


class TrackerHook(Hook):
    """Logs one trial to ``tracker`` ('mlflow', 'wandb' or 'tensorboard') from rank 0.

    The run starts at the trial's first evaluation or task, inside the trial's error
    handling (so a failure always reaches :meth:`at_end`, which closes it as failed). Its id
    is part of the trial's checkpoint: a trial resumed after a crash logs on to the same run
    instead of opening a second one."""

    def __init__(self, tracker: str):
        self.tracker = tracker
        self._run: Any = None
        self._run_id: str | None = None  # the tracker's run id (MLflow, W&B)

    def _ensure(self, trial) -> None:
        if self._run is not None or not trial.backend.is_main:
            return
        cfg, params = trial.cfg, flat_params(trial.cfg.to_dict())
        if self.tracker == "mlflow":
            import mlflow

            client = mlflow.tracking.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI"))
            if self._run_id is not None:  # resumed: the run this trial started
                client.update_run(self._run_id, status="RUNNING")
            else:
                exp = client.get_experiment_by_name(cfg.study)
                exp_id = exp.experiment_id if exp else client.create_experiment(cfg.study)
                tags = {"study": cfg.study, "trial_id": cfg.id}
                self._run_id = client.create_run(exp_id, run_name=cfg.id, tags=tags).info.run_id
                for key, value in params.items():
                    client.log_param(self._run_id, key, str(value)[:6000])
            self._run = client
        elif self.tracker == "wandb":
            import wandb

            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "gere-harness"),
                group=cfg.study,
                name=cfg.id,
                config=params,
                mode=os.environ.get("WANDB_MODE"),
                id=self._run_id,
                resume="allow" if self._run_id else None,
            )
            self._run_id = self._run.id
        else:
            from tensorboardX import SummaryWriter

            from results import storage

            if storage.is_uri(cfg.out):  # event files are appended to: kept on this disk
                from harness.cache import cache_root

                logdir = cache_root() / "tensorboard" / cfg.study / cfg.id
                log.info("TensorBoard event files: %s (--out is an object store)", logdir)
            else:
                logdir = Path(storage.location(cfg.out)) / "_tensorboard" / cfg.study / cfg.id
            self._run = SummaryWriter(str(logdir))
            self._run.add_text("config", "\n".join(f"{k}: {v}" for k, v in params.items()))

    def before_first_task(self, trial) -> None:
        self._ensure(trial)

    def before_task(self, trial, stage: int) -> None:
        self._ensure(trial)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self._run is None:
            return
        if self.tracker == "mlflow":
            for key, value in metrics.items():
                self._run.log_metric(self._run_id, key, value, step=step)
        elif self.tracker == "wandb":
            self._run.log(metrics, step=step)
        else:
            for key, value in metrics.items():
                self._run.add_scalar(key, value, step)

    def after_log(self, trial, stage: int, row: dict) -> None:
        m = step_metrics(row)
        self._log({k: v for k, v in m.items() if k.startswith("train/")}, m["timesteps_total"])

    def after_task(self, trial, stage: int) -> None:
        m = trial.stage_metrics(stage)
        self._log(
            {k: float(v) for k, v in m.items() if isinstance(v, int | float)},
            trial.state.global_step,
        )

    def at_end(self, trial, status: str) -> None:
        if self._run is None:
            return
        ok = status == "completed"
        if self.tracker == "mlflow":
            self._run.set_terminated(self._run_id, "FINISHED" if ok else "FAILED")
        elif self.tracker == "wandb":
            self._run.finish(exit_code=0 if ok else 1)
        else:
            self._run.close()
        self._run = None

    def state_dict(self) -> dict:
        import torch

        if self._run_id is None:
            return {}
        return {"run_id": torch.tensor(list(self._run_id.encode()), dtype=torch.uint8)}

    def load_state_dict(self, state: dict) -> None:
        if "run_id" in state:
            self._run_id = bytes(state["run_id"].tolist()).decode()


TRACKERS = {
    "mlflow": "mlflow",
    "wandb": "wandb",
    "tensorboard": "tensorboardX",
}
"""--tracker values and the package each needs (``pip install 'gere-harness[trackers]'``)."""


def check_tracker(tracker: str | None) -> None:
    """ConfigError naming the value unless ``tracker`` is None or one of :data:`TRACKERS`
    whose package is installed (checked on the driver, before anything runs)."""
    if tracker is None:
        return
    import importlib.util

    if tracker not in TRACKERS:
        raise ConfigError(
            [f"--tracker {tracker!r}: not a tracker; choose one of {', '.join(TRACKERS)}"]
        )
    if importlib.util.find_spec(TRACKERS[tracker]) is None:
        raise ConfigError(
            [
                f"--tracker {tracker}: the package {TRACKERS[tracker]!r} is not installed; "
                f"pip install {TRACKERS[tracker]} (or pip install 'gere-harness[trackers]')"
            ]
        )


def step_metrics(row: Mapping[str, Any]) -> dict:
    """A curve row as Tune metrics: ``timesteps_total`` is the global step (the step the
    trackers plot against); NaN terms (no replay in this step) are left out."""
    out = {"timesteps_total": int(row["step"]), "stage": int(row["stage"]), "task": row["task"]}
    for key in ("loss", "task_ce", "replay_ce", "replay_term", "lr", "grad_norm", "pad_share"):
        value = row.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[f"train/{key}"] = float(value)
    return out
