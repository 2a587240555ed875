"""Work the trials of a study would otherwise each repeat, done once and kept in the study's
storage: the evaluation of the starting model (stage 0).

Every trial of a grid that starts from the same model and evaluates it on the same inputs
with the same settings writes the same stage-0 rows, whatever it trains afterwards (learning
rate, replay, continual-learning method). The first trial to get there computes them and
stores them, content-addressed, as ``<out>/study=<s>/_shared/stage0/<key>.json``; every other
trial reads them. The key (:func:`stage0_key`) hashes what the rows depend on:

* the evaluation inputs as token ids (every task's test prompts, candidates, answers and
  items; the probe's requests; the held-out texts), so other data or another tokenizer never
  matches;
* the starting model's stable id (:func:`harness.models.model_identity`) and its settings;
* every evaluation setting, the seed, and what decides the numerics (backend, ZeRO stage,
  ranks, device; the harness, torch and transformers versions);
* the names of hooks that change the model before its first evaluation
  (``Hook.changes_the_start``; none of the shipped methods does).

Rows read back are the rows computed (JSON keeps every float exactly; tests compare them
with a trial that computed its own). A resumed or re-submitted study finds them too, on an
object store as well. While one process of this machine computes a key, another that needs
it waits for it (a lock beside the file, at most half the collective timeout, then it
computes its own); on an object store there is no lock, and trials that start together
compute it each (the same rows: the last upload stays).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

STAGE0_FORMAT = 1
"""Part of every key: raised when what a stored file holds changes."""

POLL_S = 1.0
"""How often a waiting trial looks whether the computing one has finished."""


def stage0_key(trial) -> str:
    """The content address of a trial's stage-0 evaluation rows (see the module's docs)."""
    import torch
    import transformers

    from harness.models import model_identity
    from harness.provenance import version_string

    cfg = trial.cfg
    d = cfg.to_dict()
    digest = hashlib.sha256()

    def add(obj) -> None:
        digest.update(json.dumps(obj, sort_keys=True, default=str).encode())
        digest.update(b"\0")

    add(["stage0", STAGE0_FORMAT, version_string(), torch.__version__, transformers.__version__])
    add([model_identity(cfg.model)[0], {k: v for k, v in d["model"].items() if k != "name"}])
    add({k: v for k, v in d["data"].items() if k not in ("root", "cache_dir")})
    add([d["eval"], d["seed"]])
    sc = d["scale"]
    add([sc[k] for k in ("backend", "zero_stage", "workers", "use_gpu", "offload_params")])
    add(sorted(type(h).__name__ for h in trial.hooks if getattr(h, "changes_the_start", False)))
    inputs = trial.inputs
    for task, tt in zip(trial.data.tasks, inputs.tasks, strict=True):
        add([task.name, list(task.labels), tt.prompts, tt.candidates, tt.answers])
        add([tt.golds, tt.items])
    add([[list(p), [list(c) for c in cs]] for p, cs in inputs.probe[0]] if inputs.probe else None)
    add([inputs.probe[1], [q.item for q in trial.data.probe]] if inputs.probe else None)
    add([list(t) for t in inputs.heldout])
    add(inputs.pad_id)
    return digest.hexdigest()[:32]


def stage0_location(trial, key: str):
    from results import storage
    from results.io import study_dir

    return storage.join(
        study_dir(trial.cfg.out, trial.cfg.study), "_shared", "stage0", f"{key}.json"
    )


def _read(loc) -> dict[str, list[dict]] | None:
    from results import storage

    try:
        if not storage.is_file(loc):
            return None
        stored = json.loads(storage.read_bytes(loc))
    except (OSError, ValueError) as exc:  # a damaged file is computed again and replaced
        log.warning("shared stage-0 rows %s unreadable (%s): computing them", loc, exc)
        return None
    if stored.get("format") != STAGE0_FORMAT:
        return None
    return stored["rows"]


def _write(loc, key: str, rows: dict[str, list[dict]]) -> None:
    from results import storage

    payload = json.dumps({"format": STAGE0_FORMAT, "key": key, "rows": rows}).encode()
    storage.write(loc, lambda f: f.write(payload))


@contextlib.contextmanager
def _lock(loc, patience_s: float) -> Iterator[None]:
    """Hold ``<loc>.lock`` (local storage) while computing; when another process holds it,
    wait for it, at most ``patience_s`` (then go on without it). No lock on an object store."""
    if not isinstance(loc, Path):
        yield
        return
    import fcntl

    path = loc.with_name(loc.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline, held = time.monotonic() + patience_s, False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning(
                        "%s: still held after %.0f s; computing without it", path, patience_s
                    )
                    break
                time.sleep(POLL_S)
        yield
    finally:
        if held:
            with contextlib.suppress(OSError):
                os.unlink(path)
        os.close(fd)


def shared_stage0(trial, compute: Callable[[], dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """The trial's stage-0 rows by kind: read from the study's storage when a trial with the
    same key stored them, else ``compute()`` (on every rank) and stored by the main rank.
    Every rank calls this; every rank gets the same rows."""
    backend = trial.backend
    key = loc = None
    rows: dict | None = None
    lock = contextlib.nullcontext()
    if backend.is_main:
        key = stage0_key(trial)
        loc = stage0_location(trial, key)
        rows = _read(loc)
        if rows is None:
            lock = _lock(loc, trial.cfg.scale.collective_timeout_s / 2)
    with lock:
        if backend.is_main and rows is None:
            rows = _read(loc)  # computed by the trial we waited for
        if backend.world_size > 1:
            rows = backend.gather(rows if backend.is_main else None)[0]
        if rows is not None:
            log.info("trial %s: stage-0 evaluation shared (%s)", trial.cfg.id, loc or "main rank")
            return rows
        rows = compute()
        if backend.is_main:
            try:
                _write(loc, key, rows)
            except OSError as exc:  # sharing is a saving, never a reason to fail the trial
                log.warning("could not store the shared stage-0 rows at %s: %s", loc, exc)
    return rows
