"""Fine-tuned models kept for later evaluation (``train.save_models``), as the stage hook
:class:`SavedModelsHook`.

After the last task ('final') or after every task ('every_task') the trial's model is written
as a Hugging Face directory to ``<out>/study=<study>/_models/<trial_id>/stage=<k>/``: the full
weights in the model's dtype (safetensors, gathered from the ranks' shards under ZeRO-3) and
the tokenizer, or for LoRA the PEFT adapter, whose ``adapter_config.json`` names its base. A
``gere_model.json`` beside them says which trial, stage and task it is. Every rank takes part
in the save (ZeRO-3 gathers); the main rank writes, first into ``stage=<k>.partial`` and then
renames, so an interrupted save never leaves a directory that looks whole. On a bucket the
directory is written locally and uploaded file by file, ``gere_model.json`` last: a directory
without it is not whole. A completed trial whose asked-for model is missing runs again
(:func:`models_missing`).

When the trial ends, its log prints ready commands that score the saved model with
lm-evaluation-harness (``lm_eval --model hf``) and serve it with vLLM.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from harness.hooks import Hook
from results import storage

log = logging.getLogger(__name__)

MODELS_DIR = "_models"


def model_location(cfg, stage: int) -> storage.Location:
    """Where stage ``stage`` of this trial's model is saved."""
    from results.io import safe_name, study_dir

    return storage.join(
        study_dir(cfg.out, cfg.study), MODELS_DIR, safe_name(cfg.id), f"stage={stage}"
    )


def models_missing(cfg, done: dict | None) -> bool:
    """Whether a completed trial (its stored summary ``done``) lacks a model that
    ``train.save_models`` asks for, so it must run again to save it: the setting is not part of
    the trial id, and asking for models after a study ran must not silently save none."""
    if done is None or cfg.train.save_models == "none":
        return False
    from results.ledger import stored_stages

    n = stored_stages(done)
    stages = range(1, n + 1) if cfg.train.save_models == "every_task" else [n]
    missing = [
        k
        for k in stages
        if not storage.exists(storage.join(model_location(cfg, k), "gere_model.json"))
    ]
    if missing:
        log.warning(
            "trial %s completed, but train.save_models=%s and the model of stage(s) %s is not "
            "saved: running the trial again to save it",
            cfg.id,
            cfg.train.save_models,
            missing,
        )
    return bool(missing)


class SavedModelsHook(Hook):
    """Saves the model after the tasks ``train.save_models`` names."""

    kinds = ()

    def setup(self, trial) -> None:
        self.mode = trial.cfg.train.save_models
        self.saved: list[storage.Location] = []
        self.base: str | None = None

    def after_task(self, trial, stage: int) -> None:
        if self.mode == "every_task" or (self.mode == "final" and stage == len(trial.stages)):
            where, self.base = save_model(trial, stage)
            self.saved.append(where)

    def at_end(self, trial, status: str) -> None:
        if self.saved and trial.backend.is_main:
            log.info(
                "trial %s: model saved to %s; evaluate and serve it with\n%s",
                trial.cfg.id,
                self.saved[-1],
                commands(trial.cfg, self.saved[-1], self.base),
            )


def save_model(trial, stage: int) -> tuple[storage.Location, str | None]:
    """Write the model as it is now to :func:`model_location` (every rank calls this); returns
    where, and for LoRA the base model the adapter names (main rank; None elsewhere)."""
    cfg, backend = trial.cfg, trial.backend
    dest = model_location(cfg, stage)
    main = backend.is_main
    if isinstance(dest, Path):
        partial = dest.with_name(dest.name + ".partial")
        if main:
            shutil.rmtree(partial, ignore_errors=True)
        backend.save_model(partial)
        base = None
        if main:
            base = _describe(trial, stage, partial)
            shutil.rmtree(dest, ignore_errors=True)
            partial.rename(dest)
        backend.barrier()
        return dest, base
    base = None
    with tempfile.TemporaryDirectory(prefix="gere-model-") as tmp:
        local = Path(tmp) / "model"
        backend.save_model(local)
        if main:  # file by file; gere_model.json last, so its presence marks a whole upload
            for old in storage.files(dest) if storage.exists(dest) else []:
                storage.delete(old)  # an earlier save's files (another shard layout)
            storage.upload_dir(local, dest)
            about = Path(tmp) / "about"
            about.mkdir()
            base = _describe(trial, stage, about, saved=local)
            storage.upload_dir(about, dest)
    backend.barrier()
    return dest, base


def _describe(trial, stage: int, path: Path, saved: Path | None = None) -> str | None:
    """Write ``gere_model.json`` into ``path``; returns the base the LoRA adapter saved in
    ``saved`` (default ``path``) names."""
    cfg = trial.cfg
    adapter = (saved or path) / "adapter_config.json"
    base = (
        json.loads(adapter.read_text()).get("base_model_name_or_path")
        if adapter.is_file()
        else None
    )
    about = {
        "study": cfg.study,
        "trial_id": cfg.id,
        "stage": stage,
        "after_task": trial.stage_name(stage),
        "model": cfg.model.name,
        "tuning": cfg.model.tuning,
        "dtype": cfg.model.dtype,
        "base_model": base,
    }
    (path / "gere_model.json").write_text(json.dumps(about, indent=2) + "\n")
    return base


def commands(cfg, where: storage.Location, base: str | None = None) -> str:
    """Shell commands that evaluate (lm_eval) and serve (vLLM) a saved model."""
    path = str(where)
    fetch = ""
    if not isinstance(where, Path):
        fetch = f"# copy it to local disk first, e.g. to ./model (lm_eval and vLLM read local paths): {path}\n"
        path = "./model"
    tasks = ",".join(cfg.eval.lm_eval_tasks) or "mmlu"
    dtype = cfg.model.dtype
    if cfg.model.tuning == "lora":
        base = base or "<the base: adapter_config.json's base_model_name_or_path>"
        args = f"pretrained={base},peft={path},dtype={dtype}"
        serve = f"vllm serve {base} --enable-lora --lora-modules {cfg.id}={path}"
    else:
        args = f"pretrained={path},dtype={dtype}"
        serve = f"vllm serve {path} --dtype {dtype}"
    return (
        f"{fetch}lm_eval --model hf --model_args {args} --tasks {tasks} --batch_size auto\n{serve}"
    )
