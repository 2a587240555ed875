"""Values arrive as typed, and every plausible mistake gets a named error before the model
(issue 26): command-line values by their field's type, results locations, model folders and
Hub access, LoRA targets, compressed or mis-encoded files, stray results files, unwritable
caches. Each test failed on the code before the fix (a wrong value, a traceback, or a run)."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import harness.trial as trial_mod
from harness.cli import build_parser, config_from_args
from harness.config import ConfigError, from_dict, load_file
from harness.data import DataError
from harness.data.general import load_texts
from harness.models import check_lora_targets, check_model_source
from harness.trial import run_trial
from results.io import DamagedResultsError, read_study, study_dir
from tests.fixtures import mini_config, saved_tiny


@pytest.fixture
def no_model(monkeypatch):
    def tripwire(cfg, **kw):
        raise AssertionError("a model was built")

    monkeypatch.setattr(trial_mod, "make_backend", tripwire)


def _cfg(*argv: str):
    args = build_parser().parse_args(["run", *argv])
    return config_from_args(args)


# -- values arrive as typed -----------------------------------------------------------------


def test_command_line_values_are_read_by_their_fields_type() -> None:
    cfg = _cfg("--data.cache_dir", "None", "--trial_id", "2024-12-04", "--study", "1e3")
    assert cfg.data.cache_dir is None  # before: the string "None" (a ./None/ folder)
    assert cfg.trial_id == "2024-12-04" and cfg.study == "1e3"  # text stays text
    assert _cfg("--trial_id", "123").trial_id == "123"
    assert _cfg("--set", "data.cache_dir=null").data.cache_dir is None
    assert _cfg("--set", "trial_id=2024-12-04").trial_id == "2024-12-04"
    assert _cfg("--set", "study=yes").study == "yes"  # YAML would make it True
    assert _cfg("--eval.probe", "None").eval.probe is None
    cfg = _cfg("--train.max_steps_per_task", "1e3", "--model.gradient_checkpointing", "on")
    assert cfg.train.max_steps_per_task == 1000 and cfg.model.gradient_checkpointing is True
    assert _cfg("--replay.weight", "0.5").replay.weight == 0.5
    assert _cfg("--replay.weight", "dynamic").replay.weight == "dynamic"
    assert _cfg("--model.lora_target_modules", "q_proj, v_proj,").model.lora_target_modules == (
        "q_proj",
        "v_proj",
    )
    assert _cfg("--set", "cl.lwf={}").cl == {"lwf": {}}  # a mapping is still YAML
    for argv, message in (
        (("--seed", "99999999999999999999"), "beyond a 64-bit integer"),
        (("--train.batch_size", "2.5"), "is not an integer"),
        (("--model.gradient_checkpointing", "maybe"), "is not true or false"),
        (("--set", "train.batch_size=x"), "--set train.batch_size: 'x' is not an integer"),
        (("--train.lr", "fast"), "is not a number"),
    ):
        with pytest.raises(ConfigError, match=message):
            _cfg(*argv)


def test_config_file_values_yaml_reads_as_other_types_name_the_fix(tmp_path) -> None:
    for text, shown in (("2024-12-04", "a date"), ("123", "a number"), ("yes", "true/false")):
        path = tmp_path / "c.yaml"
        path.write_text(f"trial_id: {text}\n")
        with pytest.raises(ConfigError) as err:
            from_dict(load_file(path))
        assert "YAML reads" in str(err.value) and shown in str(err.value)
        assert "quote it" in str(err.value)
    with pytest.raises(ConfigError, match="beyond a 64-bit integer"):
        from_dict({"seed": 2**64})


def test_a_config_file_that_is_not_utf8_or_is_a_folder_is_named(tmp_path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"study: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8 text.*save it as UTF-8"):
        load_file(latin)
    packed = tmp_path / "c.yaml.gz"
    packed.write_bytes(gzip.compress(b"study: x\n"))
    with pytest.raises(ConfigError, match="gzip-compressed"):
        load_file(packed)
    with pytest.raises(ConfigError, match="is a directory"):
        load_file(tmp_path)


# -- where results go ------------------------------------------------------------------------


def test_out_typos_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="'s3:/bucket/x' looks like a URI.*'s3://bucket/x'"):
        from_dict({"out": "s3:/bucket/x"})
    with pytest.raises(ConfigError, match="points into a study's folder.*out='runs'.*study='x'"):
        from_dict({"out": "runs/study=x"})
    for fine in ("runs", "./s3:/b", "s3://b/p", "file:///tmp/x", "/abs/runs"):
        assert from_dict({"out": fine}).out == fine


def test_a_study_honours_out_from_set_and_config_and_refuses_a_disagreement(tmp_path) -> None:
    from harness.study import _study_out

    assert _study_out(None, {"out": "a"}, {"out": "b"}, "c.yaml") == "a"
    assert _study_out(None, {}, {"out": "b"}, "c.yaml") == "b"
    assert _study_out(None, {}, {}, None) == "runs"
    assert _study_out("a", {"out": "a"}, {}, None) == "a"
    with pytest.raises(ConfigError, match="--out a and --set out=b disagree"):
        _study_out("a", {"out": "b"}, {}, None)
    with pytest.raises(ConfigError, match="--out a and out: b in --config c.yaml disagree"):
        _study_out("a", {}, {"out": "b"}, "c.yaml")


# -- the model -------------------------------------------------------------------------------


def test_broken_model_folders_are_named_before_the_data(tmp_path, mini_root, no_model) -> None:
    good = Path(saved_tiny(tmp_path / "m"))
    check_model_source(from_dict({"model": {"name": str(good)}}).model)
    cases = {}
    for what, breaks in (
        ("no tokenizer files", lambda d: [p.unlink() for p in d.glob("tokenizer*")]),
        ("no weights", lambda d: [p.unlink() for p in d.glob("*.safetensors")]),
        ("not readable JSON", lambda d: (d / "config.json").write_text("{not json")),
    ):
        broken = tmp_path / what.replace(" ", "_")
        shutil.copytree(good, broken)
        breaks(broken)
        cases[what] = broken
    for what, folder in cases.items():
        cfg = mini_config(mini_root, tmp_path / "o", **{"model.name": str(folder)})
        with pytest.raises(ConfigError, match=what):
            run_trial(cfg)


def test_a_hub_model_offline_is_answered_at_once(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set.*huggingface-cli download"):
        check_model_source(from_dict({"model": {"name": "llama-3.1-8b"}}).model)
    assert time.perf_counter() - t0 < 10


def test_lora_targets_that_are_no_layers_lora_adapts_are_named() -> None:
    for target, kind in (("mlp", "LlamaMLP"), ("self_attn", "LlamaAttention"), ("norm", "RMSNorm")):
        cfg = from_dict({"model": {"tuning": "lora", "lora_target_modules": [target]}})
        with pytest.raises(ConfigError, match=f"'{target}' names .*{kind}.*q_proj"):
            check_lora_targets(cfg.model)
    check_lora_targets(from_dict({"model": {"tuning": "lora"}}).model)  # the default is fine


# -- files named right -----------------------------------------------------------------------


def test_compressed_corpora_are_read_and_other_containers_named(tmp_path) -> None:
    lines = b"".join(json.dumps({"text": f"text {i}"}).encode() + b"\n" for i in range(5))
    for name, data in (("c.jsonl.gz", gzip.compress(lines)), ("c.jsonl.bz2", bz2.compress(lines))):
        (tmp_path / name).write_bytes(data)
        assert load_texts(name, tmp_path) == [f"text {i}" for i in range(5)]
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + lines)
    assert len(load_texts("bom.jsonl", tmp_path)) == 5
    (tmp_path / "u16.jsonl").write_bytes(lines.decode().encode("utf-16"))
    with pytest.raises(DataError, match="UTF-16 text.*iconv -f utf-16"):
        load_texts("u16.jsonl", tmp_path)
    (tmp_path / "c.zip").write_bytes(b"PK\x03\x04" + b"\0" * 30)
    with pytest.raises(DataError, match="a zip archive.*unzip"):
        load_texts("c.zip", tmp_path)
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(lines)[:20])
    with pytest.raises(DataError, match="gzip-compressed, but it does not decompress"):
        load_texts("cut.jsonl.gz", tmp_path)
    (tmp_path / "c.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 8)
    with pytest.raises(DataError, match="zstandard-compressed"):
        load_texts("c.jsonl.zst", tmp_path)


def test_a_copied_results_file_or_study_folder_is_named_not_read_twice(mini_root, tmp_path) -> None:
    cfg = mini_config(mini_root, tmp_path / "out")
    run_trial(cfg)
    sdir = study_dir(cfg.out, cfg.study)
    original = sdir / "accuracy" / f"{cfg.id}.parquet"
    copy = sdir / "accuracy" / f"{cfg.id} (1).parquet"
    shutil.copy(original, copy)
    with pytest.raises(DamagedResultsError) as err:
        read_study(sdir)
    assert list(err.value.problems) == [copy] and f"a copy of {original}" in str(err.value)
    tables = read_study(sdir, skip_damaged=True)
    assert len(tables["accuracy"]) == len(pq.read_table(original))  # counted once
    copy.unlink()
    backup = tmp_path / "out" / "study=engine.bak"
    shutil.copytree(sdir, backup)
    with pytest.raises(DamagedResultsError, match="study=engine.bak.*a copy"):
        read_study(tmp_path / "out")
    assert len(read_study(backup)["accuracy"]) == len(pq.read_table(original))  # alone: fine
    assert len(read_study(original)["accuracy"]) == len(pq.read_table(original))  # one file


def test_an_unwritable_token_cache_warns_and_goes_on(tmp_path, caplog) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    from harness.data.tokenize import tokenize_cached
    from harness.models import byte_level_tokenizer

    cache = tmp_path / "ro"
    cache.mkdir()
    cache.chmod(0o500)
    with caplog.at_level(logging.WARNING):
        ids = tokenize_cached(byte_level_tokenizer(), ["abc"], max_length=8, cache_dir=cache)
    assert ids and "cannot be written" in caplog.text


def test_an_unwritable_token_cache_warns_and_goes_on_as_any_user(tmp_path, monkeypatch, caplog):
    import harness.data.tokenize as tokenize

    def refuse(path, sequences):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tokenize, "_write_cache", refuse)
    from harness.models import byte_level_tokenizer

    with caplog.at_level(logging.WARNING):
        ids = tokenize.tokenize_cached(
            byte_level_tokenizer(), ["abc"], max_length=8, cache_dir=tmp_path / "x"
        )
    from harness.models import byte_level_tokenizer as tok

    assert ids == tokenize.tokenize_cached(tok(), ["abc"], max_length=8, cache_dir=tmp_path / "y")
    assert "cannot be written (Permission denied)" in caplog.text
