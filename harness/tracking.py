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

import os
from pathlib import Path
from typing import Any

from harness.hooks import Hook

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
    """Logs one trial to ``tracker`` ('mlflow', 'wandb' or 'tensorboard') from rank 0."""

    def __init__(self, tracker: str):
        self.tracker = tracker
        self._run: Any = None

    def _main(self, trial) -> bool:
        return trial.backend.is_main

    def setup(self, trial) -> None:
        if not self._main(trial) or self._run is not None:
            return
        cfg, params = trial.cfg, flat_params(trial.cfg.to_dict())
        if self.tracker == "mlflow":
            import mlflow

            client = mlflow.tracking.MlflowClient(os.environ.get("MLFLOW_TRACKING_URI"))
            exp = client.get_experiment_by_name(cfg.study)
            exp_id = exp.experiment_id if exp else client.create_experiment(cfg.study)
            run = client.create_run(exp_id, run_name=cfg.id, tags={"study": cfg.study})
            for key, value in params.items():
                client.log_param(run.info.run_id, key, str(value)[:6000])
            self._run = (client, run.info.run_id)
        elif self.tracker == "wandb":
            import wandb

            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "gere-harness"),
                group=cfg.study,
                name=cfg.id,
                config=params,
                mode=os.environ.get("WANDB_MODE"),
            )
        else:
            from tensorboardX import SummaryWriter

            logdir = Path(cfg.out) / "_tensorboard" / cfg.study / cfg.id
            self._run = SummaryWriter(str(logdir))
            self._run.add_text("config", "\n".join(f"{k}: {v}" for k, v in params.items()))

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self._run is None:
            return
        if self.tracker == "mlflow":
            client, run_id = self._run
            for key, value in metrics.items():
                client.log_metric(run_id, key, value, step=step)
        elif self.tracker == "wandb":
            self._run.log(metrics, step=step)
        else:
            for key, value in metrics.items():
                self._run.add_scalar(key, value, step)

    def after_log(self, trial, stage: int, row: dict) -> None:
        from harness.tune import step_metrics  # the same metric names as a study's runs

        m = step_metrics(row)
        self._log({k: v for k, v in m.items() if k.startswith("train/")}, m["timesteps_total"])

    def after_task(self, trial, stage: int) -> None:
        if self._run is None:
            return
        m = trial.stage_metrics(stage)
        self._log(
            {k: float(v) for k, v in m.items() if isinstance(v, int | float)},
            trial.state.global_step,
        )

    def at_end(self, trial, status: str) -> None:
        if self._run is None:
            return
        if self.tracker == "mlflow":
            client, run_id = self._run
            client.set_terminated(run_id, "FINISHED" if status == "completed" else "FAILED")
        elif self.tracker == "wandb":
            self._run.finish(exit_code=0 if status == "completed" else 1)
        else:
            self._run.close()
        self._run = None
