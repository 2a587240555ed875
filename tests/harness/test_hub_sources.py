"""Hub sources (``hf:<dataset>[:<config>][#<split>][@<revision>]``) and the driver's preflight.

Everything here runs without the network: parsing is offline by design, and the loaders'
``datasets.load_dataset`` is replaced by fakes that record what they were asked for.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from harness.data import LONG_SEQUENCE_TASKS, ORDERS, DataError, load_mc
from harness.data.hub import HubSource, parse_hub_source
from harness.grid import axis, expand_grid
from harness.inputs import load_data, preflight
from harness.presets import base_config

PREPARE = "python -m harness data prepare long-sequence --dest"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hf:cais/mmlu", HubSource("cais/mmlu")),
        ("hf:squad", HubSource("squad")),
        ("hf:cais/mmlu:all", HubSource("cais/mmlu", config="all")),
        ("hf:cerebras/SlimPajama-627B#train", HubSource("cerebras/SlimPajama-627B", split="train")),
        (
            "hf:org/corpus:20231101.en#validation@v1.0",
            HubSource("org/corpus", "20231101.en", "validation", "v1.0"),
        ),
        ("hf:org/c@refs/pr/3", HubSource("org/c", revision="refs/pr/3")),
        ("hf:org/c#train@" + "a" * 40, HubSource("org/c", split="train", revision="a" * 40)),
        # With '#', a revision that looks like a split is taken at its word: a branch 'train'.
        ("hf:org/c#train@train", HubSource("org/c", split="train", revision="train")),
    ],
)
def test_valid_sources_parse_and_print_back(
    no_network: None, text: str, expected: HubSource
) -> None:
    source = parse_hub_source(text)
    assert source == expected
    assert str(source) == text


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_the_old_at_split_form_says_at_is_now_a_revision(split: str) -> None:
    with pytest.raises(DataError) as info:
        parse_hub_source(f"hf:cerebras/SlimPajama-627B@{split}")
    msg = str(info.value)
    assert f"'@{split}' names a revision" in msg
    assert f"hf:cerebras/SlimPajama-627B#{split}" in msg  # the fix, ready to paste
    assert "hf:<dataset>[:<config>][#<split>][@<revision>]" in msg


def test_the_old_form_with_a_config_keeps_the_config_in_the_fix() -> None:
    with pytest.raises(DataError, match=r"write hf:org/c:en#test "):
        parse_hub_source("hf:org/c:en@test")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("hf:", "names no dataset"),
        ("hf::all", "names no dataset"),
        ("hf:a/b/c", "dataset 'a/b/c' is not a valid id"),
        ("hf:-lead/name", "dataset '-lead/name' is not a valid id"),
        ("hf:a--b", "dataset 'a--b' is not a valid id"),
        ("hf:data set", "dataset 'data set' is not a valid id"),
        ("hf:caf\u00e9/x", "is not a valid id"),
        ("hf:org/c:", "an empty config"),
        ("hf:org/c:a/b", "config 'a/b' is not a valid config name"),
        ("hf:org/c#", "an empty split"),
        ("hf:org/c#train[:10%]", "split 'train[:10%]' is not a valid split name"),
        ("hf:org/c#train@", "an empty revision"),
        ("hf:org/c@a..b", "revision 'a..b' is not a branch, tag or commit"),
        ("hf:org/c@main branch", "revision 'main branch' is not a branch"),
        ("hf:org/c@main#train", "the split ('#...') comes before the revision"),
    ],
)
def test_invalid_sources_name_the_part_and_the_rule(text: str, names: str) -> None:
    with pytest.raises(DataError) as info:
        parse_hub_source(text)
    msg = str(info.value)
    assert names in msg
    assert repr(text) in msg or text == "hf:"


def test_a_local_path_is_not_a_hub_source() -> None:
    with pytest.raises(DataError, match="is not a Hub source; Hub sources look like hf:"):
        parse_hub_source("general/train.jsonl")


# --------------------------------------------------------------------------- loaders


def test_the_probe_passes_config_and_revision_and_refuses_a_split(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    def fake_load(name: str, config: str, *, split: str, revision: str | None) -> list[dict]:
        calls.append((name, config, split, revision))
        return [{"subject": "math", "question": "1+1?", "choices": ["1", "2"], "answer": 1}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    questions = load_mc("hf:cais/mmlu@main", None)
    assert [(q.subject, q.answer) for q in questions] == [("math", 1)]
    load_mc("hf:cais/mmlu:abstract_algebra", None, split="dev")
    assert calls == [
        ("cais/mmlu", "all", "test", "main"),
        ("cais/mmlu", "abstract_algebra", "dev", None),
    ]
    with pytest.raises(DataError, match=r"drop '#test' \(write 'hf:cais/mmlu@main'\)"):
        load_mc("hf:cais/mmlu#test@main", None)
    assert len(calls) == 2  # refused before loading


def test_the_8b_preset_sources_use_the_new_syntax() -> None:
    base = base_config("llama-3.1-8b", data_dir="/nonexistent")
    corpus, heldout = base["replay"]["corpus"], base["eval"]["heldout"]
    assert parse_hub_source(corpus) == HubSource("cerebras/SlimPajama-627B", split="train")
    assert parse_hub_source(heldout) == HubSource("cerebras/SlimPajama-627B", split="validation")
    assert parse_hub_source(base["eval"]["probe"]) == HubSource("cais/mmlu")


# --------------------------------------------------------------------------- preflight


def _write_tasks(directory: Path, names: list[str]) -> None:
    for name in names:
        folder = directory / name
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            body = {
                "Definition": [f"Classify ({name})."],
                "Instances": [{"input": "a", "output": "x"}, {"input": "b", "output": "y"}],
            }
            (folder / f"{split}.json").write_text(json.dumps(body), encoding="utf-8")
        (folder / "labels.json").write_text('["x", "y"]', encoding="utf-8")


def _grid_8b(data_dir: str, **settings: Any) -> list:
    base = base_config("llama-3.1-8b", data_dir=data_dir)
    for key, value in settings.items():
        section, name = key.split(".")
        base[section][name] = value
    return expand_grid("x", base, [axis("replay.method", ["none", "tm"])])


def test_preflight_of_the_8b_preset_without_its_data_dir_names_the_tasks(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    with pytest.raises(DataError) as info:
        preflight(_grid_8b(str(missing)))
    msg = str(info.value)
    assert f"data root {str(missing)!r} is not a directory" in msg
    assert all(repr(t) in msg for t in ORDERS["order6"])  # every task of the order, by name
    assert f"{PREPARE} {missing / 'long_sequence'}" in msg
    assert "github.com/circle-hit/SAPT" in msg


def test_preflight_of_the_8b_preset_on_an_empty_data_dir_names_tasks_and_directory(
    tmp_path: Path, no_network: None
) -> None:
    with pytest.raises(DataError) as info:
        preflight(_grid_8b(str(tmp_path)))
    msg = str(info.value)
    assert msg.startswith("every grid point (2): task(s) ")  # once, not once per point
    assert f"{list(ORDERS['order6'])} not found in {tmp_path}" in msg
    assert f"{PREPARE} {tmp_path / 'long_sequence'}" in msg


def test_preflight_names_only_the_tasks_that_are_missing(tmp_path: Path) -> None:
    present = [t for t in ORDERS["order6"] if t not in ("yahoo", "wic")]
    _write_tasks(tmp_path / "long_sequence", present)
    with pytest.raises(DataError) as info:
        preflight(_grid_8b(str(tmp_path)))
    msg = str(info.value)
    assert f"['yahoo', 'wic'] not found in {tmp_path / 'long_sequence'}" in msg
    assert f"{PREPARE} {tmp_path / 'long_sequence'}" in msg


def test_preflight_checks_local_tasks_and_hub_sources_without_the_network(
    tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("preflight must not load Hub datasets")

    monkeypatch.setattr(datasets, "load_dataset", never)
    _write_tasks(tmp_path / "long_sequence", sorted(LONG_SEQUENCE_TASKS))
    configs = _grid_8b(str(tmp_path))
    preflight(configs)  # the tasks are local and valid; the Hub sources parse
    data = load_data(configs[1], hub=False)  # what preflight checked, for replay.method=tm
    assert [t.name for t in data.tasks] == list(ORDERS["order6"])
    assert (data.probe, data.heldout, data.replay) == ([], [], [])  # Hub parts: checked only

    old = _grid_8b(str(tmp_path), **{"replay.corpus": "hf:cerebras/SlimPajama-627B@train"})
    with pytest.raises(DataError) as info:
        preflight(old)
    msg = str(info.value)
    assert msg.startswith("grid point(s) method=tm: Hub source 'hf:cerebras/SlimPajama-627B@train'")
    assert "'@train' names a revision" in msg and "SlimPajama-627B#train" in msg

    for setting, value, expected in [
        ("eval.heldout", "hf:cerebras/SlimPajama-627B@validation", "'@validation' names a"),
        ("eval.probe", "hf:cais/mmlu#test", "drop '#test'"),
        ("eval.heldout_max_texts", None, "need max_texts"),
    ]:
        with pytest.raises(DataError, match=expected):
            preflight(_grid_8b(str(tmp_path), **{setting: value}))


def test_the_study_dry_run_of_the_8b_preset_fails_on_missing_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.study import Study, main

    argv = ["--preset", "llama-3.1-8b", "--data-dir", str(tmp_path), "--dry-run"]
    study = Study("x", None, [axis("replay.method", ["none"])], [])
    code = main(study, argv + ["--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "'yelp'" in err and "'wic'" in err and f"not found in {tmp_path}" in err
    assert PREPARE in err
