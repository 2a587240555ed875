"""The generated world and its base model: deterministic, well-formed, truthful, cached.

Small worlds (a few dozen people) and a tiny model keep these fast; the one full-size check
(the default base model really knows the world) is marked slow.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
import torch

from harness.cache import CACHE_ENV_VAR
from harness.world import generate as gen
from harness.world import pretrain as pt
from tests.fixtures import SMALL_WORLD as SMALL
from tests.fixtures import TINY_PRETRAIN as TINY


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> gen.WorldInfo:
    return gen.generate_world(tmp_path_factory.mktemp("w") / "world", seed=3, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def _csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# --- generation -----------------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, world: gen.WorldInfo) -> None:
    again = gen.generate_world(tmp_path / "again", seed=3, **SMALL)
    other = gen.generate_world(tmp_path / "other", seed=4, **SMALL)
    assert _files(again.root) == _files(world.root)
    differing = {k for k, v in _files(other.root).items() if _files(world.root)[k] != v}
    # Every data file depends on the seed (labels.json alone is fixed by the task).
    assert differing >= {"general/train.jsonl", "general/heldout.jsonl", "world.json"}
    assert all(f"long_sequence/{t}/train.json" in differing for t in world.tasks)
    assert all(f"mmlu/test/{s}_test.csv" in differing for s in world.subjects)


def test_existing_world_is_reused_and_mismatch_is_an_error(world: gen.WorldInfo) -> None:
    before = {p: p.stat().st_mtime_ns for p in world.root.rglob("*")}
    again = gen.generate_world(world.root, seed=3, **SMALL)
    assert again == world
    assert {p: p.stat().st_mtime_ns for p in world.root.rglob("*")} == before
    with pytest.raises(FileExistsError, match=r"seed=3 \(asked 5\)"):
        gen.generate_world(world.root, seed=5, **SMALL)
    assert not list(world.root.parent.glob(".*tmp*")), "temporary directory left behind"


def test_non_world_directory_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a generated world"):
        gen.generate_world(tmp_path, **SMALL)


def test_layouts_match_the_real_data(world: gen.WorldInfo) -> None:
    root = world.root
    for split in ("train", "heldout"):
        lines = (root / "general" / f"{split}.jsonl").read_text().splitlines()
        assert lines
        for line in lines:
            record = json.loads(line)
            assert isinstance(record["text"], str) and record["text"].strip()
            assert record["meta"] == {"source": "world"}
    header = ["question", *(f"choice{i}" for i in range(8)), "answer"]
    for subject in world.subjects:
        for split, n in (("test", SMALL["n_entities"]), ("dev", 5)):
            got, rows = _csv_rows(root / "mmlu" / split / f"{subject}_{split}.csv")
            assert got == header
            assert len(rows) == n
            for row in rows:
                assert len(row) == len(header)
                assert 0 <= int(row[-1]) < 8
                assert len(set(row[1:-1])) == 8, f"duplicate choices in {row}"
    for task in world.tasks:
        labels = json.loads((root / "long_sequence" / task / "labels.json").read_text())
        assert labels and all(isinstance(x, str) and " " not in x for x in labels)
        inputs = {}
        for split, n in (("train", SMALL["n_task_train"]), ("test", SMALL["n_task_test"])):
            data = json.loads((root / "long_sequence" / task / f"{split}.json").read_text())
            assert set(data) == {
                "Definition",
                "Positive Examples",
                "Negative Examples",
                "Instances",
            }
            assert len(data["Definition"]) == 1 and data["Definition"][0]
            assert len(data["Instances"]) == n
            assert {x["output"] for x in data["Instances"]} <= set(labels)
            inputs[split] = {x["input"] for x in data["Instances"]}
        assert not inputs["train"] & inputs["test"], f"{task}: test inputs leak into train"
        assert {x["output"] for x in data["Instances"]} == set(labels), "a label never occurs"


def test_world_loads_through_the_data_loaders(world: gen.WorldInfo) -> None:
    benchmark = pytest.importorskip("harness.data.benchmark")
    mmlu = pytest.importorskip("harness.data.mmlu")
    general = pytest.importorskip("harness.data.general")
    for name in world.tasks:
        task = benchmark.load_task(world.root, name)
        assert len(task.train) == SMALL["n_task_train"]
        assert len(task.test) == SMALL["n_task_test"]
        assert task.definition and not task.notes
    questions = mmlu.load_mc("mmlu", world.root)
    assert len(questions) == SMALL["n_entities"] * len(world.subjects)
    assert {q.subject for q in questions} == set(world.subjects)
    assert all(len(q.choices) == 8 for q in questions)
    assert len(mmlu.load_mc("mmlu", world.root, split="dev")) == 5 * len(world.subjects)
    for split in ("train", "heldout"):
        texts = general.load_texts(f"general/{split}.jsonl", world.root)
        assert texts == _texts(world.root / "general" / f"{split}.jsonl")


def test_probe_answers_are_true_and_stated_in_the_training_corpus(world: gen.WorldInfo) -> None:
    entities = gen.load_entities(world.root)
    assert entities == gen.make_entities(SMALL["n_entities"], seed=3)
    corpus = (world.root / "general" / "train.jsonl").read_text()
    corpus_text = "\n".join(json.loads(line)["text"] for line in corpus.splitlines())
    for attribute in gen.ATTRIBUTES:
        _, rows = _csv_rows(world.root / "mmlu" / "test" / f"{attribute.subject}_test.csv")
        for entity, row in zip(entities, rows, strict=True):
            question, choices, answer = row[0], row[1:-1], int(row[-1])
            assert entity.name in question
            assert choices[answer] == entity.value(attribute)
            assert set(choices) <= set(attribute.values)
            # The cloze, completed with the answer, is a sentence of the training corpus.
            assert f"{question} {choices[answer]}." in corpus_text


def test_every_fact_is_stated_several_times(world: gen.WorldInfo) -> None:
    corpus_text = "\n".join(_texts(world.root / "general" / "train.jsonl"))
    for entity in gen.load_entities(world.root):
        for attribute in gen.ATTRIBUTES:
            statements = {
                gen._sentence(t, name=entity.name, value=entity.value(attribute))
                for t in attribute.train
            }
            count = sum(corpus_text.count(s) for s in statements)
            assert count >= SMALL["mentions"], (entity, attribute.key, count)


def test_heldout_corpus_uses_only_words_the_training_corpus_has() -> None:
    # Otherwise held-out perplexity measures unseen tokens, not lost knowledge. Checked on
    # the default-size world (rendering it is fast), where filler covers its word lists.
    files, _ = gen.render_world(gen.WorldSettings())

    def texts(split: str) -> list[str]:
        return [json.loads(line)["text"] for line in files[f"general/{split}.jsonl"].splitlines()]

    def words(split: str) -> set[str]:
        return set(re.findall(r"[A-Za-z0-9]+", " ".join(texts(split))))

    assert words("heldout") <= words("train")
    assert not set(texts("heldout")) & set(texts("train"))


def test_attribute_values_allow_the_default_number_of_choices() -> None:
    for attribute in gen.ATTRIBUTES:
        assert len(set(attribute.values)) == len(attribute.values) >= gen.WorldSettings.n_choices
        assert attribute.cloze, f"{attribute.key} has no template ending with its value"
    with pytest.raises(ValueError, match="n_choices=9 exceeds"):
        gen.render_world(gen.WorldSettings(n_entities=3, n_choices=9))


# --- tokenizer and pretraining --------------------------------------------------------------


def test_config_validation_lists_every_problem() -> None:
    with pytest.raises(ValueError) as err:
        pt.PretrainConfig(hidden_size=30, num_heads=4, steps=0, vocab_size=100)
    message = str(err.value)
    assert "hidden_size=30" in message and "steps=0" in message and "vocab_size=100" in message


def test_tokenizer_is_byte_level_with_llama_style_specials(world: gen.WorldInfo) -> None:
    texts = pt.read_texts(world.general_train)
    tok = pt.train_tokenizer(texts, 600)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    ids = tok("Mara was born in Ostrand.")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    unseen = "Zyxwv naïve ☃ 42!"
    assert tok.decode(tok(unseen)["input_ids"], skip_special_tokens=True) == unseen
    assert tok.unk_token_id not in tok(unseen)["input_ids"]


def test_tiny_pretraining_saves_reloads_and_reproduces(
    tmp_path: Path, world: gen.WorldInfo
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = pt.pretrain(world.general_train, tmp_path / "a", config=TINY, progress=False)
    second = pt.pretrain(world.general_train, tmp_path / "b", config=TINY, progress=False)
    reseeded = pt.pretrain(
        world.general_train,
        tmp_path / "c",
        config=dataclasses.replace(TINY, seed=1),
        progress=False,
    )
    assert first["losses"] == second["losses"]
    assert first["losses"] != reseeded["losses"]
    assert len(first["losses"]) == TINY.steps

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "a")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tok)
    assert tok.pad_token_id == model.config.pad_token_id
    text = "Mara was born in the city of"
    assert tok(text)["input_ids"][0] == tok.bos_token_id
    with torch.no_grad():
        logits = model(**tok([text, text + " Ostrand"], return_tensors="pt", padding=True)).logits
    assert torch.isfinite(logits).all()
    # Saved weights are the trained ones: the reloaded model scores like the saved one.
    other = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_base_model_cache_is_keyed_and_hit(
    tmp_path: Path,
    world: gen.WorldInfo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="harness.world.pretrain"):
        path = pt.ensure_base_model(world.general_train, config=TINY, cache_root=cache)
    assert "cache miss" in caplog.text
    assert path.parent == cache and (path / pt.SUMMARY_FILE).is_file()
    assert [p.name for p in cache.iterdir()] == [path.name], "temporary directory left behind"

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("pretrain ran although the model was cached")

    monkeypatch.setattr(pt, "pretrain", fail)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="harness.world.pretrain"):
        assert pt.ensure_base_model(world.general_train, config=TINY, cache_root=cache) == path
    assert "cache hit" in caplog.text
    # Another seed or another corpus is another model.
    assert pt.cache_key(world.general_train, TINY) != pt.cache_key(
        world.general_train, dataclasses.replace(TINY, seed=1)
    )
    assert pt.cache_key(world.general_train, TINY) != pt.cache_key(world.general_heldout, TINY)


def test_cache_root_defaults_to_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    assert pt.default_cache_root() == tmp_path / "base"
    monkeypatch.delenv(CACHE_ENV_VAR)
    assert pt.default_cache_root() == Path.home() / ".cache" / "gere-harness" / "base"


def test_bad_corpus_lines_are_named(tmp_path: Path) -> None:
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"txt": "oops"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected a JSON object with a 'text'"):
        pt.read_texts(corpus)
    with pytest.raises(FileNotFoundError, match="SlimPajama-style"):
        pt.ensure_base_model(tmp_path / "missing.jsonl", config=TINY, cache_root=tmp_path)


# --- the default world really is known, then forgotten ---------------------------------------


def _cloze_accuracy(model_dir: Path, mmlu_dir: Path) -> float:
    """Probe accuracy scored as the evaluator does: argmax summed log-likelihood of ' ' + choice."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    correct = total = 0
    for path in sorted((mmlu_dir / "test").glob("*_test.csv")):
        _, rows = _csv_rows(path)
        for row in rows:
            prompt_len = len(tok(row[0])["input_ids"])
            batch = tok([row[0] + " " + c for c in row[1:-1]], return_tensors="pt", padding=True)
            with torch.no_grad():
                logp = model(**batch).logits.log_softmax(-1)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            token_logp = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
            keep = mask[:, 1:].clone()
            keep[:, : prompt_len - 1] = 0
            scores = (token_logp * keep).sum(-1)
            correct += int(scores.argmax()) == int(row[-1])
            total += 1
    return correct / total


@pytest.mark.slow
def test_default_base_model_knows_the_world(tmp_path: Path) -> None:
    info = gen.generate_world(tmp_path / "world")
    model_dir = pt.ensure_base_model(info.general_train, cache_root=tmp_path / "cache")
    accuracy = _cloze_accuracy(model_dir, info.mmlu_dir)
    assert accuracy >= 3 * info.chance, f"probe accuracy {accuracy:.3f} vs chance {info.chance}"


# --- the long stream (plasticity) -------------------------------------------------------------


def test_the_long_stream_is_label_permuted_deterministic_and_leaves_the_rest(
    tmp_path: Path, world: gen.WorldInfo
) -> None:
    from harness.data.benchmark import load_task
    from harness.world.tasks import STREAM_LABELS, TASKS

    stream = {**SMALL, "n_stream_tasks": 21, "n_stream_train": 30, "n_stream_test": 10}
    a = gen.generate_world(tmp_path / "a", seed=3, **stream)
    b = gen.generate_world(tmp_path / "b", seed=3, **stream)
    assert _files(a.root) == _files(b.root)  # same seeds, same bytes
    assert a.stream == tuple(f"stream{k:02d}" for k in range(1, 22)) and a.tasks == world.tasks
    # Adding the stream changes no file of the world without it (only the manifest).
    base = _files(world.root)
    assert {k: v for k, v in _files(a.root).items() if k in base and k != "world.json"} == {
        k: v for k, v in base.items() if k != "world.json"
    }
    mappings = set()
    for k, name in enumerate(a.stream):
        task = load_task(a.long_sequence_dir, name)
        labels = json.loads((a.long_sequence_dir / name / "labels.json").read_text())
        spec = TASKS[k % len(TASKS)]
        assert len(labels) == len(spec.labels) and set(labels) <= set(STREAM_LABELS)
        assert len(task.train) == 30 and len(task.test) == 10
        assert {x.output for x in (*task.train, *task.test)} <= set(labels)
        assert not {x.input for x in task.train} & {x.input for x in task.test}
        # The same generator as the base task: its inputs are inputs of that kind of task.
        definition = task.definition
        assert "Answer " + ", ".join(labels[:-1]) in definition
        mappings.add((spec.name, tuple(labels)))
    assert len(mappings) > 10  # a new label set (and order) almost every task
    other = gen.generate_world(tmp_path / "c", seed=4, **stream)
    assert (
        _files(other.root)["long_sequence/stream01/train.json"]
        != _files(a.root)["long_sequence/stream01/train.json"]
    )
    with pytest.raises(ValueError, match="n_stream_tasks=100 must be in 0..99"):
        gen.generate_world(tmp_path / "d", n_stream_tasks=100)
