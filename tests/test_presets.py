"""Presets and study grids are validated like every config: every trial of every study's GRID
and SMOKE grid, under every preset, is a valid TrialConfig (built in well under a second, no
model built, no data loaded)."""

from __future__ import annotations

import importlib.util
import math
import re
import time
from pathlib import Path
from types import ModuleType

import pytest

from harness.config import ConfigError, merge
from harness.presets import PRESETS, base_config
from harness.study import study_base
from harness.tune import axis, expand_grid

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p for p in (ROOT / "studies").glob("*.py") if "\nGRID" in p.read_text())
"""The grid studies (active_forgetting.py runs adaptations, not a grid of trials: its own
tests are in test_active_forgetting.py and test_studies.py)."""


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"study_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # main() only runs under __main__
    return module


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> str:
    """One generated world for every preset (0.1 s), not the user's cache."""
    return str(tmp_path_factory.mktemp("world"))


@pytest.fixture(autouse=True)
def _never_pretrain(monkeypatch) -> None:
    def fail(*_, **__):
        raise AssertionError("validating configs must not pretrain the world base model")

    monkeypatch.setattr("harness.presets.world_base_model", fail)


def test_there_are_studies() -> None:
    assert {p.stem for p in STUDIES} >= {"loss_types", "lr_robustness", "replay_size"}


@pytest.mark.parametrize("smoke", [False, True], ids=["grid", "smoke"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_study_grid_is_valid_under_every_preset(preset: str, smoke: bool, world: str):
    t0 = time.perf_counter()
    for path in STUDIES:
        study = _load(path)
        grid = study.SMOKE if smoke else study.GRID
        base = study_base(
            preset,
            smoke=smoke,
            data_dir=world,
            settings=getattr(study, "SETTINGS", None),
            smoke_settings=getattr(study, "SMOKE_SETTINGS", None),
            resolve_model=False,
        )
        configs = expand_grid(path.stem, base, grid)  # raises ConfigError naming each point
        assert len(configs) == math.prod(len(a) for a in grid), path.stem
    assert time.perf_counter() - t0 < 30  # generous for a busy machine; about 0.1 s idle


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_scripts_pass_their_settings_constants_to_main(path: Path) -> None:
    # The grid test reads SETTINGS / SMOKE_SETTINGS; a script must run with exactly those.
    source = path.read_text()
    study = _load(path)
    for kw, const in (("settings", "SETTINGS"), ("smoke_settings", "SMOKE_SETTINGS")):
        passed = re.findall(rf"\b{kw}=(\w+)", source)
        assert passed in ([], [const]), f"{path.name}: pass {kw}={const} (a module constant)"
        if hasattr(study, const):
            assert passed == [const], f"{path.name}: {const} is defined but not passed to main()"


def test_an_invalid_preset_setting_is_caught_like_any_config(world: str) -> None:
    base = study_base("tiny", data_dir=world, settings={"replay.settings.kk": 2})
    with pytest.raises(
        ConfigError, match=r"unknown key 'replay.settings.kk'.*\[grid point method=tm\]"
    ):
        expand_grid("s", base, [axis("replay.method", ["tm"])])


def test_the_world_preset_is_resolved_only_when_asked(world: str) -> None:
    assert base_config("world", data_dir=world, resolve_model=False)["model"]["name"] == "world"
    with pytest.raises(AssertionError, match="must not pretrain"):
        base_config("world", data_dir=world)


def test_unknown_preset_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match=r"Unknown preset 'wrld' \(did you mean 'world'\?\)"):
        base_config("wrld")


def test_demo_grid_of_every_registered_method_is_valid(world: str) -> None:
    from harness.replay import method_names
    from studies.demo import DEMO_BASE, method_axis

    base = merge(base_config("tiny", data_dir=world), DEMO_BASE)
    spec = ",".join([*method_names(), "tm:dynamic", "kl:10"])
    configs = expand_grid("demo", base, [method_axis(spec), axis("seed", [0])])
    assert [c.replay.method for c in configs] == [*method_names(), "tm", "kl"]
    assert (configs[-2].replay.weight, configs[-1].replay.weight) == ("dynamic", 10.0)
