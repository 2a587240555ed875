"""End-of-task checkpoints of a trial run without Ray (``python -m harness run``).

A trial run by the CLI saves a checkpoint after every task beside its results, at
``<out>/study=<study>/_checkpoints/<trial_id>/`` (the leading '_' keeps it out of
``pyarrow.dataset`` and ``pd.read_parquet`` of the study), and resumes from it when the same
command is run again after a crash or ``kill -9``. The checkpoint is replaced whole (written
into a temp directory, then renamed), so a kill while saving leaves the previous one; it is
removed when the trial ends 'completed' or 'diverged' (a 'failed' trial keeps it, to resume).
Under Ray, Train's own checkpoints play this part (:mod:`harness.tune`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from harness.config import TrialConfig
from harness.hooks import Hook

log = logging.getLogger(__name__)

CONFIG = "config.json"
"""The trial config a checkpoint was saved under (a resume with other settings is refused)."""


def checkpoint_dir(cfg: TrialConfig) -> Path:
    """Where the CLI keeps a trial's latest end-of-task checkpoint: ``<out>/study=<s>/
    _checkpoints/<id>``; with an object-store ``out`` (``s3://...``) on this machine's disk
    instead, under the cache root (``checkpoints/<hash of out>/<study>/<id>``), since a
    checkpoint is many files renamed into place. Studies keep theirs in Ray's storage."""
    import hashlib

    from harness.cache import cache_root
    from results import storage
    from results.io import safe_name, study_dir

    if storage.is_uri(cfg.out):
        key = hashlib.sha256(str(storage.location(cfg.out)).encode()).hexdigest()[:12]
        return cache_root() / "checkpoints" / key / safe_name(cfg.study) / safe_name(cfg.id)
    return study_dir(cfg.out, cfg.study) / "_checkpoints" / safe_name(cfg.id)


def resumable(cfg: TrialConfig) -> Path | None:
    """The trial's checkpoint if one is complete and was saved with these settings, else None
    (an unreadable or foreign checkpoint is logged and ignored: the trial starts over)."""
    from harness.trial_state import CHECKPOINT_STATE
    from results.ledger import comparable_settings

    path = checkpoint_dir(cfg)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and (old / CHECKPOINT_STATE).is_file():
        old.rename(path)  # killed between the two renames of a save: the previous one stands
    if not (path / CHECKPOINT_STATE).is_file():
        return None
    try:
        stored = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        state = json.loads((path / CHECKPOINT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable checkpoint %s (%s): starting over", path, exc)
        return None
    if comparable_settings(stored) != comparable_settings(cfg.to_dict()):
        log.warning("ignoring checkpoint %s: saved with other settings; starting over", path)
        return None
    log.info("found checkpoint %s after task %s", path, state.get("finished_stage"))
    return path


def remove(cfg: TrialConfig) -> None:
    path = checkpoint_dir(cfg)
    shutil.rmtree(path, ignore_errors=True)
    parent = path.parent
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


class LocalCheckpointHook(Hook):
    """After every task: replace the trial's checkpoint; at the end: remove it unless the
    trial failed (every rank calls ``Trial.save``; the main rank renames)."""

    def after_task(self, trial, stage: int) -> None:
        final = checkpoint_dir(trial.cfg)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            trial.save(tmp)
            if trial.backend.is_main:
                (tmp / CONFIG).write_text(json.dumps(trial.cfg.to_dict()), encoding="utf-8")
                old = final.with_name(f".{final.name}.old")
                if final.exists():
                    shutil.rmtree(old, ignore_errors=True)
                    final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def at_end(self, trial, status: str) -> None:
        if status != "failed" and trial.backend.is_main:
            remove(trial.cfg)
