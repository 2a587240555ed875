"""The house rules of the code, checked: imports point one way with no cycles (import-linter's
contracts in pyproject.toml, which count imports inside functions), the command line's and the
studies' --help run without torch, the method registries list every method's settings without
importing any method module, and every study is one Study declared in its own script."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.fixtures import REPO

NO_TORCH = (
    "import runpy, sys\n"
    "sys.argv = {argv!r}\n"
    "try:\n"
    "    runpy.{run}({target!r}, run_name='__main__')\n"
    "except SystemExit as exc:\n"
    "    assert exc.code in (0, None), exc.code\n"
    "heavy = sorted(m for m in ('torch', 'ray', 'deepspeed', 'transformers') if m in sys.modules)\n"
    "print('IMPORTED', heavy)\n"
)


def test_import_contracts_hold():
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a dev dependency: pip install -e '.[dev]'"
    proc = subprocess.run(
        [exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in proc.stdout


@pytest.mark.parametrize(
    "argv, run, target",
    [
        (["gere", "run", "--help"], "run_module", "harness"),
        (["gere", "study", "--help"], "run_module", "harness"),
        *[
            ([f"studies/{p.stem}.py", "--help"], "run_path", str(p))
            for p in sorted((REPO / "studies").glob("*.py"))
            if p.stem != "__init__"
        ],
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_help_does_not_import_torch(argv, run, target):
    code = NO_TORCH.format(argv=argv, run=run, target=target)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "IMPORTED []" in proc.stdout, proc.stdout[-500:]


def test_the_registries_know_every_method_without_importing_one():
    code = (
        "import sys\n"
        "from harness.config.cl_methods import CL\n"
        "from harness.config.interventions import INTERVENTIONS\n"
        "from harness.config.replay_methods import REPLAY\n"
        "from harness.config import from_dict\n"
        "for r in (REPLAY, INTERVENTIONS, CL):\n"
        "    for n in r.names():\n"
        "        r.entry(n).spec()\n"
        "from_dict({'replay': {'method': 'tm', 'settings': {'k': 2}}, 'cl': {'ewc': {}}})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('harness.replay', 'harness.cl', "
        "'harness.interventions', 'torch'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


ACTS = {"embedding_reset": {"every": 10}}
"""Settings a method needs beyond its defaults to act at all."""


def test_every_entry_loads_the_class_of_its_name_and_reads_its_settings():
    from harness.config.cl_methods import CL
    from harness.config.interventions import INTERVENTIONS
    from harness.config.replay_methods import REPLAY

    for registry in (REPLAY, INTERVENTIONS, CL):
        for name in registry.names():
            entry = registry.entry(name)
            cls = entry.load()
            assert cls.name == name and cls.registry is registry, entry.target
            assert all(s.doc for s in entry.spec()), f"{name}: a setting without a docstring"
            given = {**entry.paper_defaults, **ACTS.get(name, {})}
            method = registry.build(name, **given)
            assert method.settings() == {**{s.name: s.default for s in entry.spec()}, **given}
