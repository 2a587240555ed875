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


def _hasher(trial, what: str):
    """(sha256, add): ``add(obj)`` hashes a JSON value; already added: what is keyed, the
    format, the harness, torch and transformers versions, the starting model's stable id and
    settings, and what decides the numerics (backend, ZeRO stage, ranks, device)."""
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

    add([what, STAGE0_FORMAT, version_string(), torch.__version__, transformers.__version__])
    add([model_identity(cfg.model)[0], {k: v for k, v in d["model"].items() if k != "name"}])
    sc = d["scale"]
    add([sc[k] for k in ("backend", "zero_stage", "workers", "use_gpu", "offload_params")])
    return digest, add


def stage0_key(trial) -> str:
    """The content address of a trial's stage-0 evaluation rows (see the module's docs)."""
    d = trial.cfg.to_dict()
    digest, add = _hasher(trial, "stage0")
    add({k: v for k, v in d["data"].items() if k not in ("root", "cache_dir")})
    add([d["eval"], d["seed"]])
    if d["eval"]["lm_eval_tasks"]:  # lm-eval builds those prompts itself: its version
        from importlib.metadata import version

        add(version("lm_eval"))
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


def replay_key(trial) -> str:
    """The content address of a trial's replay-method state (TM's thresholds and codes): the
    frozen starting model over the replay buffer, so the model, the buffer's token ids, the
    method and its settings, the batch it runs in and the numerics."""
    d = trial.cfg.to_dict()
    digest, add = _hasher(trial, "replay")
    add([d["replay"]["method"], d["replay"]["settings"], d["eval"]["batch_size"]])
    add([[list(t) for t in trial.inputs.buffer.token_ids], trial.inputs.pad_id])
    return digest.hexdigest()[:32]


MARKER = "shared.json"
"""Written last into a shared state's folder: its presence marks the folder complete."""


def shared_replay_state(trial, prepare: Callable[[], None]) -> None:
    """Give the trial's replay method its prepared state (:meth:`ReplayMethod.prepare`, the
    frozen starting model over the buffer): loaded from the study's storage when a trial with
    the same key stored it (``_shared/replay/<method>-<key>/``), else ``prepare()`` on every
    rank and stored by the main rank. Every rank calls this."""
    import tempfile

    from results import storage
    from results.io import study_dir

    backend, method = trial.backend, trial.method
    loc = key = None
    found = False
    lock = contextlib.nullcontext()
    if backend.is_main:
        key = replay_key(trial)
        base = study_dir(trial.cfg.out, trial.cfg.study)
        loc = storage.join(base, "_shared", "replay", f"{method.name}-{key}")
        found = storage.is_file(storage.join(loc, MARKER))
        if not found:
            lock = _lock(loc, trial.cfg.scale.collective_timeout_s / 2)
    with lock:
        if backend.is_main and not found:
            found = storage.is_file(storage.join(loc, MARKER))
        if backend.world_size > 1:
            found, loc = backend.gather((found, loc) if backend.is_main else None)[0]
        if found:
            with tempfile.TemporaryDirectory(prefix="gere-shared-") as tmp:
                method.load_state(_local_copy(loc, Path(tmp)))
                log.info("trial %s: replay state shared (%s)", trial.cfg.id, loc)
            return
        prepare()
        if backend.is_main:
            try:
                _store_state(method, loc, key)
            except OSError as exc:
                log.warning("could not store the shared replay state at %s: %s", loc, exc)


def _local_copy(loc, tmp: Path) -> Path:
    """``loc`` as a local folder: itself, or its files downloaded into ``tmp``."""
    from results import storage

    if isinstance(loc, Path):
        return loc
    for f in storage.files(loc):
        name = storage.name(f)
        (tmp / name).write_bytes(storage.read_bytes(f))
    return tmp


def _store_state(method, loc, key: str) -> None:
    import shutil
    import tempfile

    from results import storage

    with tempfile.TemporaryDirectory(prefix="gere-shared-") as tmp:
        folder = Path(tmp) / "state"
        if not method.save_state(folder):
            return
        (folder / MARKER).unlink(missing_ok=True)
        if isinstance(loc, Path):
            partial = loc.with_name(loc.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial)
            shutil.rmtree(loc, ignore_errors=True)
            partial.rename(loc)
        else:
            storage.upload_dir(folder, loc)
        payload = json.dumps({"format": STAGE0_FORMAT, "key": key}).encode()
        storage.write(storage.join(loc, MARKER), lambda f: f.write(payload))
