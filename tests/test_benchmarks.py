"""The benchmarks run (their figures are read by people, not asserted: the machine is noisy)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_eval_cost_quick_prints_the_speedup_line_without_a_data_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/eval_cost.py", "--quick", "--data-root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "synthetic" in lines[0]
    assert re.fullmatch(r"evaluation speedup: \d+\.\d\d", lines[-1])
    # the two scorers agree on every candidate (the max |difference| column)
    diffs = [float(ln.split()[-1]) for ln in lines[2:-1]]
    assert len(diffs) == 2 and max(diffs) < 1e-4
