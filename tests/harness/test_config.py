"""The trial config: typed, frozen, validated all at once, loadable from files and the CLI."""

import dataclasses
import hashlib
import json

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
from harness.replay import get_method


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


def trial_hash(d: dict) -> str:
    """The id a config dict hashes to, without validating it (old forms are refused now)."""
    from harness.config import computed_settings
    from harness.config.schema import _without_later_defaults

    full = json.loads(json.dumps(from_dict({}).to_dict()))
    for section, values in d.items():
        full[section].update(values)
    body = json.dumps(_without_later_defaults(computed_settings(full)), sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def test_settings_added_later_keep_the_ids_of_trials_that_do_not_use_them():
    """Ids as the harness derived them before train.loss_weighting, replay.add_bos, cl,
    model.revision / attn_implementation and the kl settings t2_scale / mask_padding existed (so a CLI trial's checkpoint still resumes);
    a trial that sets one of them gets another id."""
    assert from_dict({}).id == "tm-ea6c3e2883"
    assert from_dict({"replay": {"method": "kl"}}).id == "kl-f96d800069"
    attention = ["q_proj", "k_proj", "v_proj", "o_proj"]  # LoRA's default until 'all-linear'
    lora = from_dict({"model": {"tuning": "lora", "lora_target_modules": attention}})
    assert lora.id == "tm-e79e5e795e"
    # Full fine-tuning ignores LoRA targets: its id is the same whatever they say, and its
    # results stored with the earlier default count as these settings (not as a conflict).
    earlier = from_dict({"model": {"lora_target_modules": attention}})
    assert earlier.id == "tm-ea6c3e2883"
    from results.ledger import comparable_settings

    assert comparable_settings(earlier.to_dict()) == comparable_settings(from_dict({}).to_dict())
    for changed in (
        {"model": {"tuning": "lora"}},  # all-linear trains other weights: another trial
        {"train": {"loss_weighting": "per_sample"}},
        {"replay": {"add_bos": False}},
        {"cl": {"ewc": {}}},
    ):
        assert from_dict(changed).id != from_dict({}).id, changed
    # A Hub split written the new way ('#train') is the trial it was as '@train'.
    old_form = {"replay": {"corpus": "hf:org/corpus@train"}, "eval": {"heldout": "hf:org/c@test"}}
    new_form = {"replay": {"corpus": "hf:org/corpus#train"}, "eval": {"heldout": "hf:org/c#test"}}
    assert trial_hash(new_form) == trial_hash(old_form)
    hub = {"name": "org/model"}
    assert from_dict({"model": {**hub, "revision": "v1"}}).id != from_dict({"model": hub}).id
    kl = from_dict({"replay": {"method": "kl", "settings": {"t2_scale": False}}})
    assert kl.id != "kl-f96d800069"


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


def test_the_command_line_takes_the_field_s_conventions(tmp_path, capsys):
    """Bare key=value overrides (torchtune, LLaMA-Factory, Hydra), --flag/--no-flag booleans,
    --data-dir as a second spelling of --data.root, --save-models, --version."""
    import subprocess
    import sys

    from harness.study import build_parser as study_parser

    args = build_parser().parse_args(
        ["run", "train.lr=2e-4", "replay.method=kl", "--no-eval.predictions",
         "--data-dir", str(tmp_path), "--save-models", "final", "--set", "train.lr=3e-4"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.train.lr, cfg.replay.method, cfg.eval.predictions) == (3e-4, "kl", False)
    assert cfg.data.root == str(tmp_path) and cfg.train.save_models == "final"
    on = config_from_args(build_parser().parse_args(["run", "--eval.predictions"]))
    off = config_from_args(build_parser().parse_args(["run", "--eval.predictions", "false"]))
    assert on.eval.predictions is True and off.eval.predictions is False
    with pytest.raises(ConfigError, match="did you mean"):  # a bare typo is named
        config_from_args(build_parser().parse_args(["run", "train.lrr=1"]))
    study = study_parser("lr_robustness", "doc", "tiny").parse_args(
        ["--data.root", str(tmp_path), "train.epochs=2", "--save-models", "every_task"]
    )
    assert study.data_dir == str(tmp_path) and study.overrides == ["train.epochs=2"]
    assert study.save_models == "every_task"
    # Bare overrides after options, and right after a boolean flag, are overrides still.
    from harness.cli import main

    argv = ["run", "--print-config", "train.lr=1e-3", "--eval.predictions", "seed=3",
            "--model.name", "tiny", "replay.method=l2"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["train"]["lr"] == 1e-3 and printed["seed"] == 3
    assert printed["replay"]["method"] == "l2" and printed["eval"]["predictions"] is True
    later = study_parser("x", "doc", "tiny").parse_intermixed_args(
        ["a.b=1", "--smoke-test", "c.d=2"]
    )
    assert later.overrides == ["a.b=1", "c.d=2"] and later.smoke_test
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("gere-harness 0.1.0"), proc.stderr


def test_help_is_plain_text():
    from harness.config.docs import plain_text

    assert plain_text("see :func:`harness.x.y`, ``a=b`` and :mod:`~results.io`") == (
        "see harness.x.y, a=b and results.io"
    )
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "``" not in text and ":func:" not in text and ":mod:" not in text
    assert "--eval.predictions [BOOL]" in text
    flat = "".join(text.split())  # argparse wraps lines, at hyphens too
    assert flat.count("--no-eval.predictions") == 1  # said once, in the flag's own help
    assert "(--no-eval.predictions:false)" in flat


def test_config_file_errors(tmp_path):
    args = build_parser().parse_args(["run", "--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="does not exist"):
        config_from_args(args)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_from_args(build_parser().parse_args(["run", "--config", str(bad)]))


def test_one_did_you_mean_for_every_name():
    from harness.suggest import closest, did_you_mean

    assert did_you_mean("methd", ["method", "corpus"]) == " (did you mean 'method'?)"
    assert did_you_mean("temp", ["temperature", "k"]) == " (did you mean 'temperature'?)"
    assert did_you_mean("te", ["tempo", "temperature"]) == ""  # ambiguous abbreviation: no hint
    assert did_you_mean("zzz", ["method"]) == ""
    assert closest("ordr4", ["order4", "order5", "cb"], n=2) == ["order4", "order5"]
    assert did_you_mean("ordr4", ["order4", "order5"], n=2) == (
        " (did you mean 'order4' or 'order5'?)"
    )


def test_replay_method_is_checked_against_the_registry():
    from harness.replay import method_names

    with pytest.raises(ConfigError) as err:
        from_dict({"replay": {"method": "tmm"}})
    names = ", ".join(map(repr, method_names()))
    assert f"replay.method: 'tmm' is not one of {names} (did you mean 'tm'?)" in str(err.value)
    help_text = _run_help()
    assert "--replay.method {none,ce,kl,l1,l2,tm}" in help_text
    assert "tm = CE on replay rows + w * TM" in " ".join(help_text.split())


def _run_help() -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    return out.getvalue()


def test_method_settings_are_one_mapping_checked_against_the_method():
    cfg = from_dict({"replay": {"method": "tm", "settings": {"k": 2}}})
    assert cfg.replay.settings == {"k": 2.0}  # coerced to the setting's type
    assert repr(get_method(cfg.replay.method, **cfg.replay.settings)) == "TMReplay(k=2.0)"
    assert (
        get_method("kl", **from_dict({"replay": {"method": "kl"}}).replay.settings).temperature
        == 2.0
    )
    assert from_dict({"replay": {"method": "kl"}}).replay.full_settings() == {
        "temperature": 2.0,
        "t2_scale": True,
        "mask_padding": True,
    }
    assert from_dict(cfg.to_dict()) == cfg and hash(cfg) == hash(from_dict(cfg.to_dict()))
    cases = {
        "kk": (
            {"method": "tm", "settings": {"kk": 2}},
            "unknown key 'replay.settings.kk' (did you mean 'k'?) for replay method 'tm'; "
            "settings of 'tm': k (default 1.0)",
        ),
        "other method's": (
            {"method": "kl", "settings": {"k": 2}},
            "unknown key 'replay.settings.k' for replay method 'kl' ('k' is a setting of 'tm'); "
            "settings of 'kl': temperature (default 2.0)",
        ),
        "none has none": (
            {"method": "none", "settings": {"k": 2}},
            "settings of 'none': none",
        ),
        "type": (
            {"method": "tm", "settings": {"k": "big"}},
            "replay.settings.k: expected a number",
        ),
        "method's own rule": (
            {"method": "tm", "settings": {"k": -1}},
            "replay.settings: tm k must be >= 0, got -1.0",
        ),
        "kl's own rule": (
            {"method": "kl", "settings": {"temperature": 0}},
            "replay.settings: kl temperature must be > 0",
        ),
        "not a mapping": ({"settings": [1]}, "replay.settings: expected a mapping"),
    }
    for name, (replay, message) in cases.items():
        with pytest.raises(ConfigError) as err:
            from_dict({"replay": replay})
        assert message in str(err.value), (name, str(err.value))
        assert len(err.value.problems) == 1, (name, err.value.problems)


def test_legacy_flat_method_settings_name_their_new_spelling():
    with pytest.raises(ConfigError) as err:
        from_dict({"replay": {"tm_k": 1.5, "kl_temperature": 3}})
    text = str(err.value)
    assert "unknown key 'replay.tm_k': it is now 'replay.settings.k'" in text
    assert "--replay.settings.k 1.5" in text
    assert "unknown key 'replay.kl_temperature': it is now 'replay.settings.temperature'" in text


def test_stored_legacy_configs_have_the_same_computed_settings():
    import json

    from harness.config import computed_settings

    def legacy(method, tm_k=1.0, kl_temperature=2.0, **replay):
        d = from_dict({"replay": {"method": method, **replay}}).to_dict()
        del d["replay"]["settings"]
        d["replay"].update(tm_k=tm_k, kl_temperature=kl_temperature)
        return json.loads(json.dumps(d))  # as stored in config_json

    def new(method, **settings):
        return from_dict({"replay": {"method": method, "settings": settings}}).to_dict()

    same = computed_settings
    assert same(legacy("tm")) == same(new("tm")) == same(new("tm", k=1.0))
    assert same(legacy("tm", tm_k=1.5)) == same(new("tm", k=1.5)) != same(new("tm"))
    assert same(legacy("kl", kl_temperature=4)) == same(new("kl", temperature=4))
    assert same(legacy("tm", kl_temperature=9)) == same(new("tm"))  # kl's setting: irrelevant
    assert same(legacy("none", tm_k=3)) == same(new("none"))
    assert same(legacy("tm", size=5)) != same(new("tm"))
    # the content-hash id follows the computed settings: explicit defaults change nothing
    assert from_dict({"replay": {"settings": {"k": 1}}}).id == from_dict({}).id


def test_method_settings_from_the_command_line():
    args = build_parser().parse_args(["run", "--replay.settings.k", "1.5"])
    assert config_from_args(args).replay.settings == {"k": 1.5}
    args = build_parser().parse_args(["run", "--set", "replay.settings.k=1.5"])
    assert config_from_args(args).replay.settings == {"k": 1.5}
    args = build_parser().parse_args(
        ["run", "--replay.method", "kl", "--set", "replay.settings={temperature: 3}"]
    )
    assert config_from_args(args).replay.settings == {"temperature": 3.0}
    args = build_parser().parse_args(["run", "--replay.method", "kl", "--replay.settings.k", "2"])
    with pytest.raises(ConfigError, match="'k' is a setting of 'tm'"):
        config_from_args(args)
    text = " ".join(_run_help().split())
    assert "--replay.settings.k float replay.method=tm only: the thresholds are mean" in text
    assert "[default: 1.0]" in text
    assert "--replay.settings.temperature float replay.method=kl only: softmax temperature" in text
    assert "[default: 2.0]" in text


def test_legacy_command_line_options_name_their_new_spelling(capsys):
    from harness.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--replay.tm_k", "1.5"])
    err = capsys.readouterr().err
    assert "unknown option '--replay.tm_k': it is now '--replay.settings.k'" in err
    with pytest.raises(SystemExit):
        main(["run", "--replay.methd=tm"])
    assert "unknown option '--replay.methd' (did you mean '--replay.method'?)" in (
        capsys.readouterr().err
    )


def test_a_dry_run_is_quiet_and_says_each_thing_once(caplog, capsys):
    """--dry-run prints the grid and its cost, not the data loading's INFO lines; while the
    grid's inputs are checked, a warning every trial would repeat is shown once."""
    import logging
    import subprocess
    import sys

    from harness.study import _each_message_once

    logging.basicConfig()
    stream = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(stream)
    try:
        with _each_message_once():
            for _ in range(3):
                logging.getLogger("harness.inputs").warning("mnli: dropped 131 of 7600")
            logging.getLogger("harness.inputs").warning("qqp: labels from outputs")
        logging.getLogger("harness.inputs").warning("mnli: dropped 131 of 7600")  # after: shown
    finally:
        logging.getLogger().removeHandler(stream)
    err = capsys.readouterr().err
    assert err.count("mnli: dropped 131 of 7600") == 2 and err.count("qqp: labels") == 1

    proc = subprocess.run(
        [sys.executable, "studies/lr_robustness.py", "--smoke-test", "--dry-run"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "INFO" not in proc.stdout + proc.stderr
    assert proc.stdout.startswith("study lr_robustness: 4 trials")
