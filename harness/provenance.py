"""Where and with what a trial ran: the summary's provenance columns (results/schema.py)."""

from __future__ import annotations

import functools
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from harness import __version__

LIBRARIES = ("torch", "transformers", "peft", "ray", "deepspeed")


@functools.cache
def git_state() -> tuple[str | None, bool | None]:
    """(commit sha, has uncommitted changes) of the checkout the harness runs from; (None,
    None) when it is not a git checkout (an installed wheel, a job's uploaded copy)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return (sha or None), (bool(status.strip()) if sha else None)


def version_string() -> str:
    """The package version with the git revision: '0.1.0+g1a2b3c4' ('.dirty' if modified)."""
    sha, dirty = git_state()
    if sha is None:
        return __version__
    return f"{__version__}+g{sha[:7]}{'.dirty' if dirty else ''}"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def provenance(device: str | None, started_at: float) -> dict:
    """The provenance columns of a trial's summary; ``started_at`` a POSIX time."""
    sha, dirty = git_state()
    return {
        "git_sha": sha,
        "git_dirty": dirty,
        "python_version": platform.python_version(),
        **{f"{name}_version": _version(name) for name in LIBRARIES},
        "device": device,
        "started_at": datetime.fromtimestamp(started_at, tz=UTC),
    }
