"""Work the trials of a study would otherwise each repeat, done once and kept in the study's
storage: the evaluation of the starting model (stage 0) and the replay method's prepared state
(TM's thresholds and codes).

Every trial of a grid that starts from the same model and evaluates it on the same inputs
with the same settings writes the same stage-0 rows, whatever it trains afterwards (learning
rate, replay, continual-learning method). The first trial to get there computes them and
stores them, content-addressed, as ``<out>/study=<s>/_shared/stage0/<key>.json``; every other
trial reads them. The key (:func:`stage0_key`) hashes what the rows depend on:

* the evaluation inputs as token ids (every task's test prompts, candidates, answers and
  items; the probe's requests; the held-out texts), so other data or another tokenizer never
  matches;
* the starting model's stable id (:func:`harness.models.model_identity`), the Hub commit it
  was read at, its settings and the seed (the tiny preset's weights come from it);
* every evaluation setting that touches the rows (lm-eval's include path by the contents of
  its files, and lm-eval's version), and what decides the numerics: backend, ZeRO stage,
  ranks, GPU model and CUDA version; the harness's own source (by content), torch and
  transformers;
* the names of hooks that change the model before its first evaluation
  (``Hook.changes_the_start``; none of the shipped methods does).

TM's state is shared the same way per (model, replay buffer token ids, method settings, batch,
numerics) under ``_shared/replay/<method>-<key>/`` (its marker file written last).

Rows read back are the rows computed (JSON keeps every float exactly; tests compare them
with a trial that computed its own). A resumed or re-submitted study finds them too, on an
object store as well; ``--rerun`` and ``--overwrite`` compute them afresh. While one process
computes a key, another that needs it waits for it: a lock beside the file on a filesystem, a
claim object with a heartbeat on an object store (:mod:`harness.claim`); a computing process
that dies releases it, and the waiting one computes. The ranks of a waiting trial poll together
(one short collective a second), so no collective outlasts its timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

STAGE0_FORMAT = 1
"""Part of every key: raised when what a stored file holds changes."""

POLL_S = 1.0
"""How often a waiting trial looks whether the computing one has finished."""


_CODE: list[str] = []


def code_hash() -> str:
    """A hash of the harness's own source (every ``harness/**/*.py``, by content): rows and
    states computed by other code are never reused, with or without a git checkout."""
    if not _CODE:
        _CODE.append(_tree_hash(Path(__file__).resolve().parent, "*.py"))
    return _CODE[0]


def _tree_hash(root: Path, pattern: str = "*") -> str:
    """Every file under ``root`` matching ``pattern``: its relative path and contents."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


NUMERICS = ("backend", "zero_stage", "workers", "use_gpu", "offload_params")
"""The scale settings that decide a forward pass's numerics (part of every shared key; the
dry run's cost groups trials by them too)."""

NOT_STAGE0 = ("matrix", "plasticity_texts")
"""Evaluation settings that do not touch stage 0's rows (left out of its key)."""


def _hasher(trial, what: str):
    """(sha256, add): ``add(obj)`` hashes a JSON value; already added: what is keyed, the
    format, the harness's source, the torch and transformers versions, the starting model (its
    stable id, the Hub commit it was read at, its settings) and what decides the numerics
    (backend, ZeRO stage, ranks, device)."""
    import torch
    import transformers

    from harness.models import model_identity

    cfg = trial.cfg
    d = cfg.to_dict()
    digest = hashlib.sha256()

    def add(obj) -> None:
        digest.update(json.dumps(obj, sort_keys=True, default=str).encode())
        digest.update(b"\0")

    add([what, STAGE0_FORMAT, code_hash(), torch.__version__, transformers.__version__])
    model = {k: v for k, v in d["model"].items() if k not in ("name", "gradient_checkpointing")}
    commit = getattr(getattr(trial.built.model, "config", None), "_commit_hash", None)
    add([model_identity(cfg.model)[0], commit, model, d["seed"]])  # 'tiny': weights from the seed
    sc = d["scale"]
    add([sc[k] for k in NUMERICS])
    if cfg.scale.use_gpu and torch.cuda.is_available():
        add([torch.cuda.get_device_name(), torch.version.cuda])
    return digest, add


def _files_hash(folder: str | None) -> str | None:
    """The contents of every file under ``folder`` (lm-eval's include path), or None."""
    return _tree_hash(Path(folder).expanduser()) if folder else None


def stage0_key(trial) -> str:
    """The content address of a trial's stage-0 evaluation rows (see the module's docs)."""
    d = trial.cfg.to_dict()
    digest, add = _hasher(trial, "stage0")
    # every evaluation setting but those that do not touch stage 0's rows; the data settings
    # through what they produce (the token ids below)
    ev = {k: v for k, v in d["eval"].items() if k not in NOT_STAGE0}
    ev["lm_eval_include_path"] = _files_hash(ev["lm_eval_include_path"])
    add(ev)
    if ev["lm_eval_tasks"]:  # lm-eval builds those prompts itself: its version
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


def replay_key(trial) -> str:
    """The content address of a trial's replay-method state (TM's thresholds and codes): the
    frozen starting model over the replay buffer, so the model, the buffer's token ids, the
    method and its settings and the batch it runs in."""
    d = trial.cfg.to_dict()
    digest, add = _hasher(trial, "replay")
    add([d["replay"]["method"], d["replay"]["settings"], d["eval"]["batch_size"]])
    add([[list(t) for t in trial.inputs.buffer.token_ids], trial.inputs.pad_id])
    return digest.hexdigest()[:32]


def _location(trial, *parts: str):
    from results import storage
    from results.io import study_dir

    return storage.join(study_dir(trial.cfg.out, trial.cfg.study), "_shared", *parts)


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


def _try_claim(trial, loc):
    """A context manager that holds the right to compute ``loc`` (a lock file beside it; on an
    object store a claim object with a heartbeat: :mod:`harness.claim`), or None while another
    live process holds it. A lock that cannot be taken at all (a filesystem without locks)
    lets this one compute unlocked."""
    from harness.claim import ClaimedError, object_claim, try_file_lock

    try:
        if isinstance(loc, Path):
            return try_file_lock(loc.with_name(loc.name + ".lock"))
        held = contextlib.ExitStack()  # entered here: the claim is taken (or refused) now
        held.enter_context(object_claim(trial.cfg, f"{loc}.claim.json"))
        return held
    except ClaimedError:
        return None
    except OSError as exc:
        log.warning("no claim on %s (%s): computing it unclaimed", loc, exc)
        return contextlib.nullcontext()


def _obtain(trial, loc, read: Callable, stack: contextlib.ExitStack):
    """('read', value) when ``read(loc)`` finds it stored, else ('compute', None) with the
    right to compute it held in ``stack``; while another live process computes it, wait
    (every rank, one short collective per poll: no collective waits long). ``--rerun`` and
    ``--overwrite`` compute afresh. Every rank calls this and gets the main rank's answer."""
    backend = trial.backend
    forced = trial.rerun or trial.overwrite
    waited = 0.0
    while True:
        state = None
        if backend.is_main:
            value = None if forced else read(loc)
            if value is not None:
                state = ("read", value)
            else:
                claim = _try_claim(trial, loc)
                if claim is None:
                    state = ("wait", None)
                else:
                    stack.enter_context(claim)
                    value = None if forced else read(loc)  # finished while we looked
                    state = ("compute", None) if value is None else ("read", value)
        if backend.world_size > 1:
            state = backend.gather(state if backend.is_main else None)[0]
        if state[0] != "wait":
            return state
        if waited == 0.0:
            log.info("trial %s: waiting for another trial computing %s", trial.cfg.id, loc)
        time.sleep(POLL_S)
        waited += POLL_S


def shared_stage0(trial, compute: Callable[[], dict[str, list[dict]]]) -> dict[str, list[dict]]:
    """The trial's stage-0 rows by kind: read from the study's storage when a trial with the
    same key stored them, else ``compute()`` (on every rank) and stored by the main rank.
    Every rank calls this; every rank gets the same rows."""
    backend = trial.backend
    key = stage0_key(trial) if backend.is_main else ""
    loc = _location(trial, "stage0", f"{key}.json") if backend.is_main else None
    with contextlib.ExitStack() as stack:
        what, rows = _obtain(trial, loc, _read, stack)
        if what == "read":
            log.info("trial %s: stage-0 evaluation shared (%s)", trial.cfg.id, loc or "main rank")
            return rows
        rows = compute()
        if backend.is_main:
            try:
                _write(loc, key, rows)
            except OSError as exc:  # sharing is a saving, never a reason to fail the trial
                log.warning("could not store the shared stage-0 rows at %s: %s", loc, exc)
    return rows


MARKER = "shared.json"
"""Written last into a shared state's folder: its presence marks the folder complete."""


def _complete(loc) -> bool | None:
    from results import storage

    try:
        return True if storage.is_file(storage.join(loc, MARKER)) else None
    except OSError:
        return None


def shared_replay_state(trial, prepare: Callable[[], None]) -> None:
    """Give the trial's replay method its prepared state (:meth:`ReplayMethod.prepare`, the
    frozen starting model over the buffer): loaded from the study's storage when a trial with
    the same key stored it (``_shared/replay/<method>-<key>/``), else ``prepare()`` on every
    rank and stored by the main rank. Every rank calls this; each rank reads the folder itself
    (the study's storage: a bucket, or a filesystem all of the trial's ranks see); when any
    rank cannot, they all prepare it."""
    import tempfile

    backend, method = trial.backend, trial.method
    key = replay_key(trial) if backend.is_main else ""
    loc = _location(trial, "replay", f"{method.name}-{key}") if backend.is_main else None
    if backend.world_size > 1:
        loc = backend.gather(loc)[0]
    with contextlib.ExitStack() as stack:
        what, _ = _obtain(trial, loc, _complete, stack)
        if what == "read":
            try:
                with tempfile.TemporaryDirectory(prefix="gere-shared-") as tmp:
                    method.load_state(_local_copy(loc, Path(tmp)))
                loaded = True
            except (OSError, ValueError) as exc:
                log.warning("shared replay state %s unreadable (%s): preparing it", loc, exc)
                loaded = False
            if backend.world_size > 1:
                loaded = all(backend.gather(loaded))
            if loaded:
                log.info("trial %s: replay state shared (%s)", trial.cfg.id, loc)
                return
        prepare()
        if backend.is_main:
            try:
                _store_state(method, loc, key, replace=what == "compute")
            except OSError as exc:
                log.warning("could not store the shared replay state at %s: %s", loc, exc)


def _local_copy(loc, tmp: Path) -> Path:
    """``loc`` as a local folder: itself, or its files downloaded into ``tmp``."""
    from results import storage

    if isinstance(loc, Path):
        return loc
    for f in storage.files(loc):
        (tmp / storage.name(f)).write_bytes(storage.read_bytes(f))
    return tmp


def _store_state(method, loc, key: str, *, replace: bool) -> None:
    """The method's state into ``loc`` with its marker last (a complete folder is kept unless
    ``replace``: this process computed it under the claim)."""
    import shutil
    import tempfile
    import uuid

    from results import storage

    if not replace and _complete(loc):
        return
    with tempfile.TemporaryDirectory(prefix="gere-shared-") as tmp:
        folder = Path(tmp) / "state"
        if not method.save_state(folder):
            return
        (folder / MARKER).unlink(missing_ok=True)
        if isinstance(loc, Path):
            partial = loc.with_name(f"{loc.name}.{uuid.uuid4().hex[:8]}.partial")
            shutil.copytree(folder, partial)
            shutil.rmtree(loc, ignore_errors=True)
            partial.rename(loc)
        else:
            with contextlib.suppress(OSError, FileNotFoundError):
                storage.delete(storage.join(loc, MARKER))
            storage.upload_dir(folder, loc)
        payload = json.dumps({"format": STAGE0_FORMAT, "key": key}).encode()
        storage.write(storage.join(loc, MARKER), lambda f: f.write(payload))
