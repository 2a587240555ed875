"""The trial config: typed, frozen, validated all at once, loadable from files and the CLI."""

import dataclasses

import pytest

from harness.cli import build_parser, config_from_args
from harness.config import (
    ConfigError,
    TrialConfig,
    field_docs,
    from_dict,
    iter_fields,
    merge,
    parse_override,
)


def test_defaults_are_valid_and_frozen():
    cfg = from_dict({})
    assert cfg == TrialConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]


def test_round_trip_through_dict():
    cfg = from_dict(
        {"model": {"tuning": "lora", "lora_target_modules": ["q_proj"]}, "train": {"lr": 3e-4}}
    )
    assert cfg.model.lora_target_modules == ("q_proj",)
    assert from_dict(cfg.to_dict()) == cfg


def test_every_problem_is_listed_at_once_with_hints():
    with pytest.raises(ConfigError) as err:
        from_dict(
            {
                "model": {"tuning": "lorra"},
                "replay": {"methd": "tm"},
                "train": {"lr": -1, "batch_size": "x"},
                "evl": {},
            }
        )
    problems = err.value.problems
    text = str(err.value)
    assert len(problems) == 5, problems
    assert "'lorra' is not one of 'full', 'lora' (did you mean 'lora'?)" in text
    assert "unknown key 'replay.methd' (did you mean 'method'?)" in text
    assert "unknown key 'evl' (did you mean 'eval'?)" in text
    assert "train.lr: -1.0 must be > 0" in text
    assert "train.batch_size: expected an integer, got 'x'" in text


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="leave no room for task samples"):
        from_dict({"replay": {"per_batch": 8}, "train": {"batch_size": 4, "grad_accum": 2}})
    with pytest.raises(ConfigError, match="replay.per_batch: set but replay.method is 'none'"):
        from_dict({"replay": {"method": "none", "per_batch": 2}})
    with pytest.raises(ConfigError, match="few-shot prompts need"):
        from_dict({"eval": {"probe_shots": 5, "probe_format": "continuation"}})


def test_weight_accepts_number_dynamic_or_unset():
    assert from_dict({"replay": {"weight": 100}}).replay.weight == 100.0
    assert from_dict({"replay": {"weight": "dynamic"}}).replay.weight == "dynamic"
    assert from_dict({"replay": {"weight": None}}).replay.weight is None
    with pytest.raises(ConfigError, match="replay.weight: 'dynamc'"):
        from_dict({"replay": {"weight": "dynamc"}})


def test_trial_id_is_deterministic_content_hash():
    a = from_dict({"seed": 1})
    assert a.id == from_dict({"seed": 1}).id
    assert a.id != from_dict({"seed": 2}).id
    assert a.id == from_dict({"seed": 1, "out": "elsewhere"}).id  # output location is not identity
    assert from_dict({"trial_id": "mine"}).id == "mine"


def test_merge_and_overrides():
    merged = merge({"train": {"lr": 1.0, "epochs": 2}}, {"train.lr": 0.5, "seed": 3})
    assert merged == {"train": {"lr": 0.5, "epochs": 2}, "seed": 3}
    key, value = parse_override("train.lr=1e-4")  # YAML 1.1 reads 1e-4 as a string ...
    assert from_dict(merge({}, {key: value})).train.lr == 1e-4  # ... the typed config coerces it
    assert parse_override("eval.probe=null") == ("eval.probe", None)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.lr")


def test_every_field_is_documented():
    missing = [name for name, _, _, doc in iter_fields() if not doc]
    assert not missing, f"fields without a docstring: {missing}"
    assert "lr_multiplier" in field_docs(type(TrialConfig().train))


def test_cli_precedence(tmp_path):
    f = tmp_path / "trial.yaml"
    f.write_text("train:\n  lr: 0.1\n  epochs: 2\nseed: 5\n")
    args = build_parser().parse_args(
        ["run", "--config", str(f), "--set", "train.lr=0.2", "--train.epochs", "3"]
    )
    cfg = config_from_args(args)
    assert (cfg.train.lr, cfg.train.epochs, cfg.seed) == (0.2, 3.0, 5)


def test_config_file_errors(tmp_path):
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="does not exist"):
        config_from_args(args)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_from_args(build_parser().parse_args(["run", "--config", str(bad)]))
