"""``python -m harness demo``: the main job, an alias for ``python studies/demo.py``.

The demo is a study like the others (``studies/demo.py``: its question, grid, settings and
results table); this alias keeps the README's first command short. It needs the repository
checkout (``pip install -e .``), where ``studies/`` lives.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "demo.py"


def main(argv: list[str] | None = None) -> int:
    if not SCRIPT.is_file():
        print(
            f"error: {SCRIPT} not found: the demo study ships with the repository; clone it and "
            "install with pip install -e . (then run python -m harness demo there)",
            file=sys.stderr,
        )
        return 2
    study = runpy.run_path(str(SCRIPT), run_name="harness_demo_study")
    return study["run"](study["STUDY"], argv)
