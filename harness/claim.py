"""One writer per trial: a trial claims its id before it reads or writes anything of it.

Two processes running the same trial id at once (two ``harness run`` commands with different
settings and one ``--trial_id``, two resumes of one killed trial) would replace each other's
results and race on the checkpoint. The claim makes the second one fail at once, naming who
holds the trial:

- **Local disk or NFS**: an exclusive ``flock`` on ``<out>/study=<s>/_claims/<trial_id>.lock``.
  The kernel drops it when its process exits, ``kill -9`` included, so a crashed run never
  blocks the next one. The file is removed on release (while still locked; a waiter that
  locked the removed file sees that its inode is gone and tries again).
- **Object store** (``s3://...``): no locks exist there, so the claim is an object
  ``_claims/<trial_id>.json`` with a random token and a heartbeat rewritten every
  :data:`HEARTBEAT_S`. A claim renewed within :data:`STALE_S` belongs to a live run and is
  refused. A new claim is written, then read back after :data:`SETTLE_S`: of writers that
  raced, only the last one reads its own token, and the others fail (S3 and GCS read their
  writes back strongly consistent). A claim left by a killed run goes stale after
  :data:`STALE_S`; a retry by the same owner (the same Ray Tune trial, restarted after its
  actor was lost) takes it over at once. Limits, stated: without conditional writes (which
  pyarrow's filesystems do not expose) two writers whose uploads both take longer than
  :data:`SETTLE_S` could both go on, and staleness is judged by the clocks of two machines; a
  heartbeat that finds another run's token stops renewing and logs an error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from harness.config import ConfigError, TrialConfig

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
"""How often a claim on an object store is renewed."""
STALE_S = 120.0
"""A claim on an object store not renewed for this long belongs to a run that is gone."""
SETTLE_S = 2.0
"""How long a new claim on an object store waits before reading itself back."""


class ClaimedError(ConfigError):
    """Another live process is running this trial id."""


def claim_path(cfg: TrialConfig):
    from results import storage
    from results.io import safe_name, study_dir

    name = safe_name(cfg.id)
    if storage.is_uri(cfg.out):
        return storage.join(study_dir(cfg.out, cfg.study), "_claims", f"{name}.json")
    return Path(study_dir(cfg.out, cfg.study)) / "_claims" / f"{name}.lock"


def _me() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _refusal(cfg: TrialConfig, holder: dict, where: object) -> ClaimedError:
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    expiry = ""
    if holder.get("beat"):
        at = time.strftime("%H:%M:%S", time.localtime(holder["beat"] + STALE_S))
        expiry = f"; if that process is gone, its claim expires at {at}"
    return ClaimedError(
        [
            f"trial {cfg.id!r} in study {cfg.study!r} under {cfg.out!r} is being run by "
            f"process {holder.get('pid', '?')} on {holder.get('host', '?')} since {when} "
            f"(claim {where}); two runs of one trial id would replace each other's results. "
            f"Wait for it to end, stop it, or give this run another trial_id, study or out"
            f"{expiry}"
        ]
    )


@contextlib.contextmanager
def claimed(cfg: TrialConfig, owner: str | None = None) -> Iterator[None]:
    """Hold the trial's claim for the ``with`` block; ClaimedError if another process holds it
    (re-entrant: a process that holds it already just goes on). ``owner``: who the run is
    across restarts (a Ray Tune trial's id): on an object store, a claim left by the same
    owner is taken over instead of waiting for it to go stale."""
    from results import storage

    where = str(claim_path(cfg))
    if where in _HELD:  # this process holds it already (the CLI, then run_trial inside it)
        yield
        return
    if storage.is_uri(cfg.out):
        claim = object_claim(cfg, claim_path(cfg), owner)
    else:
        claim = _file_claim(cfg, claim_path(cfg))
    with claim:
        _HELD.add(where)
        try:
            yield
        finally:
            _HELD.discard(where)


_HELD: set[str] = set()
"""The claims this process holds (a claim is re-entrant within its process)."""


def _lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its exclusive lock, or None while another
    process holds it. The file locked is checked to still be ``path``: a holder removes its
    lock file when it lets go, and a descriptor opened just before that would otherwise lock
    a removed file while a third process locks a new one at the same path. OSError where
    the folder cannot be made or the filesystem has no locks."""
    import fcntl

    while True:
        try:  # the folder may vanish between these two: its last lock was just released
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def _release(fd: int, path: Path, folders: list[Path]) -> Iterator[None]:
    """Hold a lock from :func:`_lock`; remove its file (then its folders, if empty) on exit."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        for folder in dict.fromkeys(folders):  # empty now: nothing left lying
            with contextlib.suppress(OSError):
                folder.rmdir()
        os.close(fd)


def try_file_lock(path: Path) -> contextlib.AbstractContextManager | None:
    """The lock file ``path`` held for a ``with`` block (removed on exit), or None while another
    process holds it; OSError where the filesystem cannot lock (the caller decides)."""
    fd = _lock(path)
    return None if fd is None else _release(fd, path, [])


@contextlib.contextmanager
def _file_claim(cfg: TrialConfig, path: Path) -> Iterator[None]:
    made = [p for p in (path.parent, path.parent.parent) if not p.exists()]
    fd = _lock(path)
    if fd is None:
        try:
            holder = json.loads(path.read_bytes() or b"{}")
        except (OSError, ValueError):
            holder = {}
        raise _refusal(cfg, holder, path)
    with _release(fd, path, [path.parent, *made]):
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_me()).encode())
        yield


@contextlib.contextmanager
def object_claim(cfg: TrialConfig, key: str, owner: str | None = None) -> Iterator[None]:
    """The claim object ``key`` on an object store held for a ``with`` block (heartbeat,
    staleness and settling: the module doc); ClaimedError on entry while a live run holds it."""
    from results import storage

    def read() -> dict | None:
        try:
            return json.loads(storage.read_bytes(key))
        except (OSError, ValueError, FileNotFoundError):
            return None

    held = read()
    ours = owner is not None and held is not None and held.get("owner") == owner
    if held and not ours and time.time() - held.get("beat", 0) < STALE_S:
        raise _refusal(cfg, held, key)
    token = uuid.uuid4().hex
    mine = {**_me(), "token": token, "owner": owner}

    def beat() -> None:
        mine["beat"] = time.time()
        payload = json.dumps(mine).encode()
        storage.write(key, lambda f: f.write(payload))

    beat()
    time.sleep(SETTLE_S)
    now = read()
    if not now or now.get("token") != token:
        raise _refusal(cfg, now or {}, key)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(HEARTBEAT_S):
            now = read()
            if now is not None and now.get("token") != token:
                log.error(
                    "trial %s: its claim %s was taken by process %s on %s (this run stalled "
                    "past %g s?); its results may be replaced by that run's",
                    cfg.id,
                    key,
                    now.get("pid"),
                    now.get("host"),
                    STALE_S,
                )
                return
            with contextlib.suppress(OSError):
                beat()

    thread = threading.Thread(target=renew, name=f"claim-{cfg.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(OSError, FileNotFoundError):
            if (read() or {}).get("token") == token:
                storage.delete(key)
