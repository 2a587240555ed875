"""Grid expansion and the skip-if-completed rule (no Ray needed)."""

import pytest

from harness.config import ConfigError
from harness.grid import axis, expand_grid, point_id
from harness.trial import run_trial
from harness.tune import finished

BASE = {"train": {"lr": 1e-3}}


def test_grid_is_the_product_of_axes_with_coupled_settings_and_readable_ids():
    methods = [
        {"replay.method": "none", "replay.size": 0},
        {"replay.method": "tm", "replay.size": 50},
    ]
    configs = expand_grid("s", BASE, [axis("train.lr_multiplier", [1, 10]), methods])
    assert [c.id for c in configs] == [
        "lr_multiplier=1,method=none,size=0",
        "lr_multiplier=1,method=tm,size=50",
        "lr_multiplier=10,method=none,size=0",
        "lr_multiplier=10,method=tm,size=50",
    ]
    tm10 = configs[3]
    assert (tm10.train.lr_multiplier, tm10.replay.method, tm10.replay.size, tm10.study) == (
        10.0,
        "tm",
        50,
        "s",
    )
    assert tm10.train.lr == 1e-3  # base settings survive


def test_the_whole_grid_is_validated_at_once_each_problem_once_naming_its_points():
    with pytest.raises(ConfigError) as err:
        expand_grid(
            "s", BASE, [axis("train.lr_multiplier", [1, -2, -3]), axis("replay.methd", ["tm"])]
        )
    text = str(err.value)
    assert "train.lr_multiplier: -2.0 must be > 0 [grid point lr_multiplier=-2,methd=tm]" in text
    assert "train.lr_multiplier: -3.0 must be > 0 [grid point lr_multiplier=-3,methd=tm]" in text
    # One typo in the study's settings is printed once, not once per grid point.
    assert text.count("unknown key 'replay.methd' (did you mean 'method'?)") == 1
    assert "[every grid point (3)]" in text
    with pytest.raises(ConfigError) as err:  # a problem shared by some points names them
        expand_grid("s", BASE, [axis("train.lr_multiplier", [-1, 2]), axis("seed", [0, 1])])
    assert "[grid points lr_multiplier=-1,seed=0, lr_multiplier=-1,seed=1]" in str(err.value)


def test_duplicate_points_are_rejected():
    with pytest.raises(ConfigError, match="duplicate points"):
        expand_grid("s", BASE, [axis("seed", [1, 1])])


def test_point_ids_disambiguate_equal_leaf_names():
    assert point_id({"model.name": "a", "data.name": "b"}) == "model.name=a,data.name=b"
    assert point_id({}) == "base"


def test_a_completed_trial_is_skipped_only_with_the_same_settings(mini_root, tmp_path):
    from tests.fixtures import mini_config as _mini_config

    cfg = _mini_config(
        mini_root, tmp_path / "out", **{"replay.method": "none", "data.tasks": "colour"}
    )
    assert finished(cfg) is None
    run_trial(cfg)
    assert finished(cfg)["status"] == "completed"
    changed = _mini_config(
        mini_root,
        tmp_path / "out",
        **{"replay.method": "none", "data.tasks": "colour", "train.lr": 5e-4},
    )
    changed = type(changed)(
        **{**{f: getattr(changed, f) for f in changed.__dataclass_fields__}, "trial_id": cfg.id}
    )
    assert changed.id == cfg.id and finished(changed) is None  # same id, other settings: re-run


def test_resource_only_settings_do_not_make_a_completed_trial_stale(mini_root, tmp_path):
    from dataclasses import replace

    from tests.fixtures import mini_config as _mini_config

    cfg = _mini_config(
        mini_root, tmp_path / "out", **{"replay.method": "none", "data.tasks": "colour"}
    )
    run_trial(cfg)
    more_cpus = replace(cfg, scale=replace(cfg.scale, cpus_per_worker=0.5, max_failures=5))
    assert finished(more_cpus) is not None  # same computation, other reservation: still done
    other_backend = replace(cfg, scale=replace(cfg.scale, backend="deepspeed"))
    assert finished(other_backend) is None


def test_a_labelled_axis_value_names_the_trial_and_is_not_a_setting():
    regimes = [
        {"@regime": "backprop", "train.weight_decay": 0.0},
        {"@regime": "redo", "interventions.redo": {"tau": 0.05}},
    ]
    configs = expand_grid("s", BASE, [regimes, axis("seed", [0, 1])])
    assert [c.id for c in configs] == [
        "regime=backprop,seed=0",
        "regime=backprop,seed=1",
        "regime=redo,seed=0",
        "regime=redo,seed=1",
    ]
    assert configs[2].interventions == {"redo": {"tau": 0.05}} and configs[0].interventions == {}
    assert "@regime" not in configs[2].to_dict() and "regime" not in configs[2].to_dict()


def test_a_trial_s_trainer_starts_ray_data_s_dataset_manager_only_for_ray_datasets():
    """Ray 2.60 starts a DatasetManager actor for every run; the harness's ranks read their own
    data, so its trainer drops that callback, and keeps it (and every other) when a run has
    Ray Datasets. Built, not run: no Ray starts."""
    from harness.tune import _trainer_class

    def names(**kwargs):
        trainer = _trainer_class()(lambda config: None, **kwargs)
        return [type(cb).__name__ for cb in trainer._create_default_callbacks()]

    plain, with_data = names(), names(datasets={"train": lambda: None})
    assert "DatasetsCallback" in with_data and "DatasetsCallback" not in plain
    assert [n for n in with_data if n != "DatasetsCallback"] == plain
    assert {"BackendSetupCallback", "PlacementGroupCleanerCallback"} <= set(plain)
