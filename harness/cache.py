"""Where the harness caches what it builds once (token ids, generated worlds, pretrained and
prepared models, TM states): standard library only, so the command line and the config find
it without importing torch."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "GERE_CACHE_DIR"
"""Overrides the cache root (tokens/, base/, world-*/ live under it)."""


def cache_root() -> Path:
    """``$GERE_CACHE_DIR`` if set, else ``~/.cache/gere-harness``."""
    root = os.environ.get(CACHE_ENV_VAR)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "gere-harness"
