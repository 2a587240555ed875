"""Presets and study grids are validated like every config: every trial of every study's GRID
and SMOKE grid, under every preset, is a valid TrialConfig (built in well under a second, no
model built, no data loaded)."""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path
from types import ModuleType

import pytest

from harness.config import ConfigError, merge
from harness.grid import axis, expand_grid
from harness.presets import PRESETS, base_config
from harness.study import Study, build_parser, study_base

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted(p for p in (ROOT / "studies").glob("*.py") if p.stem != "__init__")


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"study_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # run() only runs under __main__
    return module


GRID_STUDIES = [p for p in STUDIES if _load(p).STUDY.jobs is None]
"""The grid studies (active_forgetting runs adaptations, not a grid of trials: its own tests
are in test_active_forgetting.py and test_studies.py)."""


def _axes(study: Study, smoke: bool) -> list:
    """A study's grid (or smoke grid) at its options' defaults."""
    axes = study.smoke if smoke else study.grid
    if not callable(axes):
        return list(axes)
    parser = build_parser(study.name, study.doc, study.preset)
    if study.options is not None:
        study.options(parser)
    return list(axes(parser.parse_args([])))


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
    for path in GRID_STUDIES:
        study = _load(path).STUDY
        grid = _axes(study, smoke)
        base = study_base(
            preset,
            smoke=smoke,
            data_dir=world,
            settings=study.settings,
            smoke_settings=study.smoke_settings,
            resolve_model=False,
        )
        configs = expand_grid(study.name, base, grid)  # raises ConfigError naming each point
        assert len(configs) == math.prod(len(a) for a in grid), path.stem
    assert time.perf_counter() - t0 < 30  # generous for a busy machine; about 0.1 s idle


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_study_script_declares_one_study_named_after_its_file(path: Path) -> None:
    study = _load(path).STUDY
    assert isinstance(study, Study) and study.name == path.stem
    assert study.doc and study.doc.strip() == (_load(path).__doc__ or "").strip()


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
    from harness.grid import method_axis
    from harness.presets import DEMO_SETTINGS
    from harness.replay import method_names

    base = merge(base_config("tiny", data_dir=world), DEMO_SETTINGS)
    spec = ",".join([*method_names(), "tm:dynamic", "kl:10"])
    configs = expand_grid("demo", base, [method_axis(spec), axis("seed", [0])])
    assert [c.replay.method for c in configs] == [*method_names(), "tm", "kl"]
    assert (configs[-2].replay.weight, configs[-1].replay.weight) == ("dynamic", 10.0)
