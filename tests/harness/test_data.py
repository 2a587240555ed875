"""Tests for harness.data: loaders, label policies, orders, MMLU, general text, token cache.

Unit tests build tiny Long-Sequence-layout directories in tmp_path; the real-data tests read
the shared benchmark copy through resolve_data_root and skip when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness.data import (
    LETTERS,
    LONG_SEQUENCE_TASKS,
    ORDERS,
    DataError,
    MCQuestion,
    Task,
    format_mc_prompt,
    format_prompt,
    load_mc,
    load_task,
    load_texts,
    resolve_data_root,
    resolve_tasks,
    sample_texts,
    target_text,
    tokenize_cached,
    tokenizer_fingerprint,
)
from harness.data import paths as data_paths
from harness.data.tokenize import default_cache_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- helpers


def write_task(
    root: Path,
    name: str,
    train: Sequence[tuple[str, Any]] = (("a", "x"), ("b", "y")),
    test: Sequence[tuple[str, Any]] = (("c", "x"),),
    labels: Any = ("x", "y"),
    definition: Any = ("Pick x or y.\n",),
) -> Path:
    """Write one task in the Long-Sequence layout under root/long_sequence."""
    folder = root / "long_sequence" / name
    folder.mkdir(parents=True)
    for split, rows in (("train", train), ("test", test)):
        body = {
            "Definition": list(definition),
            "Positive Examples": [],
            "Negative Examples": [],
            "Instances": [{"input": i, "output": o} for i, o in rows],
        }
        (folder / f"{split}.json").write_text(json.dumps(body), encoding="utf-8")
    (folder / "labels.json").write_text(json.dumps(list(labels)), encoding="utf-8")
    return folder


def numbered(n: int, label: str = "x") -> list[tuple[str, str]]:
    return [(f"in{i}", label) for i in range(n)]


# --------------------------------------------------------------------------- paths


def test_explicit_root_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="--data.root"):
        resolve_data_root(tmp_path / "nope")
    assert resolve_data_root(tmp_path) == tmp_path


def test_env_var_wins_and_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GERE_DATA_DIR", str(tmp_path))
    assert resolve_data_root(None) == tmp_path
    monkeypatch.setenv("GERE_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataError, match="GERE_DATA_DIR.*typo"):
        resolve_data_root(None)


def test_no_root_anywhere_says_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GERE_DATA_DIR", raising=False)
    monkeypatch.setattr(data_paths, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(DataError, match="set \\$GERE_DATA_DIR or pass --data.root"):
        resolve_data_root(None)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert resolve_data_root(None) == tmp_path / "shared" / "data"


# --------------------------------------------------------------------------- load_task


def test_load_task_parses_layout(tmp_path: Path) -> None:
    write_task(tmp_path, "t", train=[("a", "x"), ("b", ["y", "x"])], definition=["Do it.\n"])
    task = load_task(tmp_path, "t")
    assert task.definition == "Do it."
    assert task.labels == ("x", "y")
    assert [(e.input, e.output) for e in task.train] == [("a", "x"), ("b", "y")]
    assert len(task.test) == 1 and task.notes == ()
    # root may also be the long_sequence directory itself
    assert load_task(tmp_path / "long_sequence", "t") == task


def test_missing_file_names_it(tmp_path: Path) -> None:
    folder = write_task(tmp_path, "t")
    (folder / "labels.json").unlink()
    with pytest.raises(DataError, match=r"missing file .*t[/\\]labels\.json"):
        load_task(tmp_path, "t")
    with pytest.raises(DataError, match="'ghost' not found"):
        load_task(tmp_path, "ghost")
    with pytest.raises(DataError, match="not a plain directory name"):
        load_task(tmp_path, "../t")


def test_invalid_json_names_file_and_line(tmp_path: Path) -> None:
    folder = write_task(tmp_path, "t")
    (folder / "test.json").write_text('{\n"Instances": [,]\n}', encoding="utf-8")
    with pytest.raises(DataError, match=r"test\.json: invalid JSON at line 2"):
        load_task(tmp_path, "t")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([1, 2], "expected an object like"),
        ({"Definition": ["d"], "Instances": {}}, "expected an object like"),
        ({"Definition": [3], "Instances": [{"input": "a", "output": "x"}]}, "'Definition' must"),
        (
            {"Instances": [{"input": "a", "output": "x"}, {"output": "x"}]},
            r"Instances\[1\].*'input'",
        ),
        ({"Instances": [{"input": "a", "output": 1}]}, r"Instances\[0\].*'output'"),
        ({"Instances": [{"input": "a", "output": []}]}, r"Instances\[0\].*'output'"),
        ({"Instances": []}, "'Instances' is empty"),
    ],
)
def test_wrong_structure_is_explained(tmp_path: Path, body: Any, expected: str) -> None:
    folder = write_task(tmp_path, "t")
    (folder / "train.json").write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(DataError, match=expected) as info:
        load_task(tmp_path, "t")
    assert "train.json" in str(info.value)


def test_bad_labels_file(tmp_path: Path) -> None:
    write_task(tmp_path, "dup", labels=["x", "x", "y"])
    with pytest.raises(DataError, match=r"labels \['x'\] are listed more than once"):
        load_task(tmp_path, "dup")
    folder = write_task(tmp_path, "obj")
    (folder / "labels.json").write_text('{"x": 1}', encoding="utf-8")
    with pytest.raises(DataError, match="non-empty JSON list of label strings"):
        load_task(tmp_path, "obj")


def test_unknown_label_under_each_policy(tmp_path: Path) -> None:
    test_rows = [("c", "x"), ("d", "maybe"), ("e", "maybe"), ("f", "?")]
    write_task(tmp_path, "t", test=test_rows)
    with pytest.raises(DataError) as info:
        load_task(tmp_path, "t")
    message = str(info.value)
    for part in ("'t'", "test.json", "'maybe' x2", "'?' x1", "drop_unknown", "from_outputs"):
        assert part in message
    assert "train.json" not in message  # train is clean; only the offending file is named

    dropped = load_task(tmp_path, "t", label_policy="drop_unknown")
    assert [e.input for e in dropped.test] == ["c"]
    assert dropped.labels == ("x", "y")
    assert any("dropped 3 of 4 test" in n for n in dropped.notes)

    # labels.json matches train here, so from_outputs keeps it and drops the rest of test
    kept = load_task(tmp_path, "t", label_policy="from_outputs")
    assert kept.labels == ("x", "y") and [e.input for e in kept.test] == ["c"]


def test_drop_unknown_refuses_to_empty_a_split(tmp_path: Path) -> None:
    write_task(tmp_path, "t", test=[("c", "maybe")])
    with pytest.raises(DataError, match="no test instance has an output in"):
        load_task(tmp_path, "t", label_policy="drop_unknown")


def test_from_outputs_replaces_labels_nobody_uses(tmp_path: Path) -> None:
    write_task(
        tmp_path,
        "q",
        train=[("a", "yes"), ("b", "no")],
        test=[("c", "no"), ("d", "-")],
        labels=["False", "True"],
    )
    task = load_task(tmp_path, "q", label_policy="from_outputs")
    assert task.labels == ("no", "yes")
    assert [e.input for e in task.test] == ["c"]
    assert any("using the train outputs ['no', 'yes']" in n for n in task.notes)
    assert any("dropped 1 of 2 test" in n for n in task.notes)


def test_unknown_policy_suggests(tmp_path: Path) -> None:
    write_task(tmp_path, "t")
    with pytest.raises(DataError, match="did you mean 'drop_unknown'"):
        load_task(tmp_path, "t", label_policy="drop_unkown")


def test_caps_are_seeded_deterministic_and_ordered(tmp_path: Path) -> None:
    write_task(tmp_path, "t", train=numbered(50), test=numbered(30))
    a = load_task(tmp_path, "t", max_train=10, max_test=5, seed=3)
    b = load_task(tmp_path, "t", max_train=10, max_test=5, seed=3)
    c = load_task(tmp_path, "t", max_train=10, max_test=5, seed=4)
    assert a == b
    assert len(a.train) == 10 and len(a.test) == 5
    assert a.train != c.train
    positions = [int(e.input[2:]) for e in a.train]
    assert positions == sorted(positions) and len(set(positions)) == 10
    assert any("train subsampled to 10 of 50" in n for n in a.notes)
    full = load_task(tmp_path, "t", max_train=50, max_test=100)
    assert len(full.train) == 50 and len(full.test) == 30 and full.notes == ()
    with pytest.raises(DataError, match="max_train=0"):
        load_task(tmp_path, "t", max_train=0)


def test_caps_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """Python's hash() is salted per process; the subsample must not be."""
    write_task(tmp_path, "t", train=numbered(40))
    here = [e.input for e in load_task(tmp_path, "t", max_train=7, seed=1).train]
    code = (
        "import sys; from pathlib import Path; from harness.data import load_task; "
        "t = load_task(Path(sys.argv[1]), 't', max_train=7, seed=1); "
        "print(','.join(e.input for e in t.train))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().split(",") == here


def test_prompt_format() -> None:
    task = Task("t", "Classify.", ("x",), (), ())
    assert format_prompt(task, "hello \n") == "Classify.\n\nInput: hello\nOutput:"
    bare = Task("t", "", ("x",), (), ())
    assert format_prompt(bare, "Choose A or B") == "Input: Choose A or B\nOutput:"
    assert target_text("Good") == " Good"


# --------------------------------------------------------------------------- orders


def test_orders_are_permutations_of_the_15_tasks() -> None:
    assert len(LONG_SEQUENCE_TASKS) == 15
    for name in ("order4", "order5", "order6"):
        assert sorted(ORDERS[name]) == sorted(LONG_SEQUENCE_TASKS)
    assert ORDERS["long-sequence-mnli-first"] == ORDERS["order4"]
    assert ORDERS["long-sequence-multirc-first"] == ORDERS["order5"]
    assert ORDERS["long-sequence-yelp-first"] == ORDERS["order6"]
    assert [ORDERS[f"order{i}"][0] for i in (4, 5, 6)] == ["mnli", "multirc", "yelp"]


@pytest.fixture
def eleven_tasks(tmp_path: Path) -> Path:
    """A data root holding the 11 tasks the shared copy has (empty dirs suffice here)."""
    for name in set(LONG_SEQUENCE_TASKS) - {"wic", "copa", "boolq", "yahoo"}:
        (tmp_path / "long_sequence" / name).mkdir(parents=True)
    return tmp_path


def test_resolve_by_order_name_list_and_string(eleven_tasks: Path) -> None:
    for name in ("wic", "copa", "boolq", "yahoo"):
        (eleven_tasks / "long_sequence" / name).mkdir()
    assert resolve_tasks("order5", eleven_tasks) == (ORDERS["order5"], ())
    assert resolve_tasks("long-sequence-yelp-first", eleven_tasks)[0] == ORDERS["order6"]
    assert resolve_tasks(" cb, rte ,", eleven_tasks) == (("cb", "rte"), ())
    assert resolve_tasks(["rte", "cb"], eleven_tasks / "long_sequence") == (("rte", "cb"), ())
    assert resolve_tasks("sst2", eleven_tasks) == (("sst2",), ())


def test_absent_task_is_an_error_naming_task_and_dir(eleven_tasks: Path) -> None:
    with pytest.raises(DataError) as info:
        resolve_tasks("order6", eleven_tasks)
    message = str(info.value)
    assert "'copa'" in message and "'wic'" in message
    assert str(eleven_tasks / "long_sequence") in message
    assert "restrict_to_available" in message


def test_restrict_to_available_reports_dropped(eleven_tasks: Path) -> None:
    present, dropped = resolve_tasks("order6", eleven_tasks, restrict_to_available=True)
    assert dropped == ("copa", "yahoo", "boolq", "wic")  # in order6's order
    assert present == tuple(t for t in ORDERS["order6"] if t not in dropped)
    with pytest.raises(DataError, match="none of the tasks"):
        resolve_tasks("wic,copa", eleven_tasks, restrict_to_available=True)


def test_order_typos_and_bad_lists(eleven_tasks: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"unknown order or task 'ordr4' \(did you mean 'order4'.*ordr4 does not exist",
    ):
        resolve_tasks("ordr4", eleven_tasks)
    with pytest.raises(DataError, match=r"'mnlii'.*did you mean 'mnli'"):
        resolve_tasks(["cb", "mnlii"], eleven_tasks)
    with pytest.raises(DataError, match=r"repeats \['cb'\]"):
        resolve_tasks("cb,rte,cb", eleven_tasks)
    with pytest.raises(DataError, match="not a plain directory name"):
        resolve_tasks(["cb", "../etc"], eleven_tasks)
    with pytest.raises(DataError, match="empty task list"):
        resolve_tasks([], eleven_tasks)
    with pytest.raises(DataError, match="does not exist"):
        resolve_tasks("cb", eleven_tasks / "missing")


# --------------------------------------------------------------------------- general text


def test_jsonl_loading_and_sampling(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"doc {i}", "meta": {}}) for i in range(20)]
    lines[3:3] = ["", json.dumps({"text": "   "})]
    (tmp_path / "g.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    texts = load_texts("g.jsonl", tmp_path)
    assert texts == [f"doc {i}" for i in range(20)]
    assert load_texts(str(tmp_path / "g.jsonl"), None) == texts
    sample = load_texts("g.jsonl", tmp_path, max_texts=5, seed=1)
    assert sample == load_texts("g.jsonl", tmp_path, max_texts=5, seed=1)
    assert sample != load_texts("g.jsonl", tmp_path, max_texts=5, seed=2)
    assert len(sample) == 5 and sample == [t for t in texts if t in sample]
    assert load_texts("g.jsonl", tmp_path, max_texts=500) == texts


def test_malformed_jsonl_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "g.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"g\.jsonl:3: invalid JSON"):
        load_texts("g.jsonl", tmp_path)
    path.write_text('{"text": "a"}\n["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"g\.jsonl:2: expected an object with a string 'text'"):
        load_texts("g.jsonl", tmp_path)
    with pytest.raises(DataError, match="not found: tried"):
        load_texts("missing.jsonl", tmp_path)


def test_sample_texts_bounds() -> None:
    texts = [str(i) for i in range(10)]
    assert sample_texts(texts, 10, seed=0) == texts
    assert sample_texts(texts, 4, seed=7) == sample_texts(texts, 4, seed=7)
    with pytest.raises(DataError, match="cannot sample 11 texts from 10"):
        sample_texts(texts, 11, seed=0)


def test_hub_source_parsing_and_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple[Any, ...]] = []

    class FakeStream:
        def shuffle(self, seed: int, buffer_size: int) -> FakeStream:
            calls.append(("shuffle", seed))
            return self

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter([{"text": "a"}, {"text": ""}, {"text": "b"}, {"text": "c"}])

    def fake_load(
        name: str, config: str | None, *, split: str, revision: str | None, streaming: bool
    ) -> FakeStream:
        calls.append((name, config, split, revision, streaming))
        return FakeStream()

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert load_texts("hf:org/corpus:cfg#validation@v1.0", None, max_texts=2, seed=5) == ["a", "b"]
    assert calls == [("org/corpus", "cfg", "validation", "v1.0", True), ("shuffle", 5)]
    calls.clear()
    assert load_texts("hf:org/corpus", None, max_texts=1, seed=0) == ["a"]
    assert calls[0] == ("org/corpus", None, "train", None, True)  # the defaults
    with pytest.raises(DataError, match="need max_texts"):
        load_texts("hf:org/corpus", None)
    with pytest.raises(DataError, match="'@validation' names a revision"):
        load_texts("hf:org/corpus@validation", None, max_texts=2)

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="offline machines need a local jsonl path"):
        load_texts("hf:org/corpus", None, max_texts=3)


# --------------------------------------------------------------------------- MMLU


def write_csv(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_headerless_letter_form(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "mc" / "test" / "physics_test.csv",
        '"What is 1, 2?",one,two,three,four,B\n"Multi\nline?",w,x,y,z,d\n',
    )
    questions = load_mc("mc", tmp_path)
    assert [q.answer for q in questions] == [1, 3]
    assert questions[0] == MCQuestion(
        "physics", "What is 1, 2?", ("one", "two", "three", "four"), 1, row=0
    )
    assert questions[1].question == "Multi\nline?"
    assert [q.item for q in questions] == ["physics/0", "physics/1"]  # rows, not file lines


def test_headered_form_with_varying_choice_counts(tmp_path: Path) -> None:
    write_csv(tmp_path / "test" / "b_test.csv", "question,choice0,choice1,answer\nq1,no,yes,1\n")
    header5 = "question,choice0,choice1,choice2,choice3,choice4,answer\n"
    write_csv(tmp_path / "test" / "a_test.csv", header5 + "q2,v,w,x,y,z,4\nq3,v,w,x,y,z,0\n")
    questions = load_mc(str(tmp_path), None)
    assert [(q.subject, q.question, len(q.choices), q.answer) for q in questions] == [
        ("a", "q2", 5, 4),
        ("a", "q3", 5, 0),
        ("b", "q1", 2, 1),
    ]
    assert [q.question for q in load_mc(str(tmp_path), None, subjects=["b"])] == ["q1"]
    with pytest.raises(DataError, match=r"subjects \['c'\] not found"):
        load_mc(str(tmp_path), None, subjects=["c"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "question,choice0,choice1,answer\nq,a,b,1\nq,a,b,2\n",
            r"row 3: answer '2' is not a 0-based",
        ),
        ("question,choice0,choice1,answer\nq,a,b,B\n", r"row 2: answer 'B' is not a 0-based"),
        ("q,a,b,c,d,1\n", r"row 1: answer '1' is not a letter A\.\.D"),
        ("q,a,b,c,d,E\n", r"row 1: answer 'E' is not a letter"),
        ("q,a,b,c,d,A\nq,a,b,A\n", r"row 2: 4 columns, but the file's first row has 6"),
        ("q,a,A\n", "gives 1 choices"),
        (",a,b,A\n", "row 1: empty question"),
    ],
)
def test_bad_csv_rows_name_file_and_row(tmp_path: Path, text: str, expected: str) -> None:
    write_csv(tmp_path / "test" / "s_test.csv", text)
    with pytest.raises(DataError, match=expected) as info:
        load_mc(str(tmp_path), None)
    assert "s_test.csv" in str(info.value)


def test_missing_split_dir(tmp_path: Path) -> None:
    (tmp_path / "mc").mkdir()
    with pytest.raises(DataError, match=r"no .*<subject>_dev\.csv files"):
        load_mc("mc", tmp_path, split="dev")


def test_mc_question_validates() -> None:
    with pytest.raises(DataError, match="answer index 2 out of range"):
        MCQuestion("s", "q", ("a", "b"), 2)
    with pytest.raises(DataError, match="11 choices"):
        MCQuestion("s", "q", tuple("abcdefghijk"), 0)


def test_mc_prompt_format() -> None:
    shot = MCQuestion("s", "2+2?", ("3", "4"), 1)
    q = MCQuestion("s", " Sky colour? ", ("blue", "red", "green"), 0)
    assert format_mc_prompt(q) == "Question: Sky colour?\nA. blue\nB. red\nC. green\nAnswer:"
    assert format_mc_prompt(q, [shot]) == (
        "Question: 2+2?\nA. 3\nB. 4\nAnswer: B\n\n"
        "Question: Sky colour?\nA. blue\nB. red\nC. green\nAnswer:"
    )
    assert LETTERS[:4] == "ABCD"


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_root() -> Path:
    try:
        root = resolve_data_root(None)
    except DataError as e:
        pytest.skip(f"real benchmark data not available ({e})")
    if not (root / "long_sequence").is_dir():
        pytest.skip(f"real benchmark data not available: {root}/long_sequence is missing")
    return root


def test_real_tasks_load_with_caps(real_root: Path) -> None:
    for name in ("cb", "rte", "sst2"):
        task = load_task(real_root, name, max_train=20, max_test=10, seed=0)
        assert len(task.train) == 20 and len(task.test) == 10
        assert task.definition
        assert {e.output for e in task.train + task.test} <= set(task.labels)
    assert load_task(real_root, "sst2").labels == ("Good", "Bad")


def test_real_qqp_label_mismatch(real_root: Path) -> None:
    with pytest.raises(DataError) as info:
        load_task(real_root, "qqp")
    message = str(info.value)
    assert "'qqp'" in message and "'no'" in message and "'yes'" in message
    assert "['False', 'True']" in message
    task = load_task(real_root, "qqp", label_policy="from_outputs", max_train=5, max_test=5)
    assert task.labels == ("no", "yes")


def test_real_mnli_unlabelled_test_instances(real_root: Path) -> None:
    with pytest.raises(DataError, match=r"test\.json: '-' x131"):
        load_task(real_root, "mnli")
    task = load_task(real_root, "mnli", label_policy="drop_unknown")
    assert len(task.test) == 7600 - 131 and len(task.train) == 3000
    assert any("dropped 131 of 7600 test" in n for n in task.notes)


def test_real_order6_restricted(real_root: Path) -> None:
    absent = tuple(t for t in ORDERS["order6"] if not (real_root / "long_sequence" / t).is_dir())
    if not absent:
        pytest.skip("all 15 tasks are present; nothing to restrict")
    with pytest.raises(DataError, match=absent[0]):
        resolve_tasks("order6", real_root)
    present, dropped = resolve_tasks("order6", real_root, restrict_to_available=True)
    assert dropped == absent and len(present) + len(dropped) == 15
    if len(present) == 11:  # the shared copy documented in data/README.md
        assert set(dropped) == {"wic", "copa", "boolq", "yahoo"}


def need(root: Path, sub: str) -> None:
    if not (root / sub).exists():
        pytest.skip(f"real data subset {root / sub} is missing")


def test_real_mmlu(real_root: Path) -> None:
    need(real_root, "mmlu")
    questions = load_mc("mmlu", real_root, max_questions=40, seed=1)
    assert len(questions) == 40
    assert questions == load_mc("mmlu", real_root, max_questions=40, seed=1)
    assert questions != load_mc("mmlu", real_root, max_questions=40, seed=2)
    assert [q.subject for q in questions] == sorted(q.subject for q in questions)
    assert all(len(q.choices) == 4 and 0 <= q.answer < 4 for q in questions)
    dev = load_mc("mmlu", real_root, split="dev", subjects=["anatomy"])
    assert len(dev) == 5 and format_mc_prompt(questions[0], dev).count("Answer:") == 6


def test_real_general_text(real_root: Path) -> None:
    need(real_root, "general/train.jsonl")
    texts = load_texts("general/train.jsonl", real_root, max_texts=100, seed=0)
    assert len(texts) == 100 and all(t.strip() for t in texts)


# --------------------------------------------------------------------------- tokenisation


def make_tokenizer(eos: str = "</s>") -> Any:
    """A tiny byte-level BPE tokenizer trained on a few sentences (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>", "<pad>", "<eot>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world, hello tokens"]
    backend.train_from_iterator(corpus * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token=eos, pad_token="<pad>"
    )


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    pytest.importorskip("transformers")
    return make_tokenizer()


TEXTS = ["hello world", "the lazy dog jumps", "fox"]


def test_tokenize_adds_bos_and_truncates(tokenizer: Any, tmp_path: Path) -> None:
    raw = tokenizer(TEXTS, add_special_tokens=False)["input_ids"]
    # This tokenizer has a BOS token but does not put it before a text itself (as GPT-2 or
    # SmolLM2): its own rule adds nothing, 'always' forces it.
    assert tokenize_cached(tokenizer, TEXTS, max_length=64, cache_dir=tmp_path) == raw
    ids = tokenize_cached(tokenizer, TEXTS, max_length=64, add_bos="always", cache_dir=tmp_path)
    assert ids == [[tokenizer.bos_token_id, *r] for r in raw]
    short = tokenize_cached(tokenizer, TEXTS, max_length=3, add_bos="always", cache_dir=tmp_path)
    assert all(len(s) <= 3 and s[0] == tokenizer.bos_token_id for s in short)
    assert short[1] == ids[1][:3] and len(ids[1]) > 3
    no_bos = tokenize_cached(tokenizer, TEXTS, max_length=64, add_bos=False, cache_dir=tmp_path)
    assert no_bos == [list(r) for r in raw]
    with_eos = tokenize_cached(tokenizer, TEXTS, max_length=64, add_eos=True, cache_dir=tmp_path)
    assert all(s[-1] == tokenizer.eos_token_id for s in with_eos)
    cut = tokenize_cached(tokenizer, TEXTS, max_length=3, add_eos=True, cache_dir=tmp_path)
    assert cut[1][-1] != tokenizer.eos_token_id  # a truncated text did not end
    assert tokenize_cached(tokenizer, [], max_length=3, cache_dir=tmp_path) == []
    with pytest.raises(DataError, match="max_length=0"):
        tokenize_cached(tokenizer, TEXTS, max_length=0, cache_dir=tmp_path)


def test_second_call_hits_the_cache(
    tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = tokenize_cached(tokenizer, TEXTS, max_length=8, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".npz")  # no temp file left behind

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tokenizer called despite a cache hit")

    monkeypatch.setattr(type(tokenizer), "__call__", refuse)
    assert tokenize_cached(tokenizer, TEXTS, max_length=8, cache_dir=tmp_path) == first
    with pytest.raises(AssertionError, match="despite a cache hit"):  # other settings: a miss
        tokenize_cached(tokenizer, TEXTS, max_length=9, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="despite a cache hit"):  # other texts: a miss
        tokenize_cached(tokenizer, ["hello worl", "d"], max_length=8, cache_dir=tmp_path)


def test_corrupt_cache_is_recomputed(tokenizer: Any, tmp_path: Path) -> None:
    first = tokenize_cached(tokenizer, TEXTS, max_length=8, cache_dir=tmp_path)
    (cache_file,) = tmp_path.iterdir()
    cache_file.write_bytes(b"not a zip")
    assert tokenize_cached(tokenizer, TEXTS, max_length=8, cache_dir=tmp_path) == first
    assert cache_file.read_bytes() != b"not a zip"


def test_fingerprint_tracks_tokenizer_state(tokenizer: Any) -> None:
    assert tokenizer_fingerprint(tokenizer) == tokenizer_fingerprint(make_tokenizer())
    assert tokenizer_fingerprint(tokenizer) != tokenizer_fingerprint(make_tokenizer(eos="<eot>"))


def test_fingerprint_is_stable_across_processes(tokenizer: Any, tmp_path: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer.save_pretrained(tmp_path / "tok")
    here = tokenizer_fingerprint(PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok"))
    code = (
        "import sys; from transformers import PreTrainedTokenizerFast as T; "
        "from harness.data import tokenizer_fingerprint as f; "
        "print(f(T.from_pretrained(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "777", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "tok")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == here


def test_default_cache_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GERE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "tokens"
    monkeypatch.delenv("GERE_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "gere-harness" / "tokens"


def test_the_long_sequence_prompt_is_the_papers_text():
    from harness.data import Task, format_prompt, target_text

    task = Task(name="t", definition="Classify.", labels=("yes",), train=(), test=())
    assert format_prompt(task, " hi ", "long_sequence") + target_text("yes") == (
        "Classify.\nhi\nOutput: yes"
    )
    bare = Task(name="t", definition="", labels=("yes",), train=(), test=())
    assert format_prompt(bare, "hi", "long_sequence") == "hi\nOutput:"
