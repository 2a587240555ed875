"""The command of a generated documentation page (``docs/results-schema.md``,
``docs/config-reference.md``): print it, write it, or check that the committed copy is current
(CI and a test run the check, so a page can never go stale). Standard library only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def generated_page_main(
    prog: str, path: Path, text: Callable[[], str], argv: Sequence[str] | None = None
) -> int:
    """``prog [--write | --check]``: print ``text()``, write it to ``path``, or exit 1 (naming
    the command that fixes it) when ``path`` differs from it."""
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Print {path.name}, write it to docs/, or check the committed copy."
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {path}")
    group.add_argument("--check", action="store_true", help="exit 1 if the docs are stale")
    args = parser.parse_args(argv)
    page = text()
    if args.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
        return 0
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != page:
            print(f"{path} is stale; run: {prog} --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(page)
    return 0
