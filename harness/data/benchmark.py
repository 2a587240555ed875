"""Long-Sequence continual-learning benchmark: task orders, loading, label checks, prompts.

Each task lives in ``<root>/long_sequence/<task>/{train,test,labels}.json`` (the layout of
the O-LoRA / SAPT releases; ``python -m harness data prepare long-sequence --dest DIR`` fetches
it, see harness/data/prepare.py). The published data has label quirks (``qqp`` outputs are
``no``/``yes`` while its labels.json says ``False``/``True``; ``mnli`` test has unlabelled
``-`` instances), so labels are checked against labels.json and every mismatch is either an
error or handled by an explicitly chosen, reported policy: accuracy must never be scored
against labels that cannot occur.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config.tasks import LONG_SEQUENCE_TASKS, ORDERS, named_tasks  # noqa: F401  (re-exported)
from harness.data.paths import DataError, read_text
from harness.data.release import how_to_get
from harness.suggest import did_you_mean

logger = logging.getLogger(__name__)

LABEL_POLICIES = ("strict", "drop_unknown", "from_outputs")
"""How load_task treats outputs missing from labels.json (see load_task)."""

PROMPT_TEMPLATE = "{definition}\n\nInput: {input}\nOutput:"
"""The harness's instruction format; the definition block is omitted when a task has none."""
_PROMPT_NO_DEFINITION = "Input: {input}\nOutput:"

PROMPT_TEMPLATES = {
    "harness": (PROMPT_TEMPLATE, _PROMPT_NO_DEFINITION),
    # O-LoRA / SAPT (and GeRe, on O-LoRA's data): "{Definition}\n{input}\nOutput: " then the
    # label. The trailing space is the label's leading space here (target_text), so prompt +
    # target is the papers' text exactly and the label starts word-initial for BPE.
    "long_sequence": ("{definition}\n{input}\nOutput:", "{input}\nOutput:"),
}
"""Prompt templates by name (``data.prompt_template``): (with a definition, without one)."""

_SPLITS = ("train", "test")
_TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Example:
    """One instance: the model sees ``input`` and must produce ``output`` (a label)."""

    input: str
    output: str
    index: int = -1
    """0-based position in its split file's Instances (-1: not read from a file)."""


@dataclass(frozen=True)
class Task:
    """A loaded task, with labels already reconciled with the outputs it contains."""

    name: str
    definition: str
    labels: tuple[str, ...]
    train: tuple[Example, ...]
    test: tuple[Example, ...]
    notes: tuple[str, ...] = ()
    """Human-readable reports of anything dropped, remapped or subsampled."""


def task_dir(root: Path) -> Path:
    """The directory holding task folders: ``root/long_sequence`` if present, else ``root``."""
    root = Path(root)
    nested = root / "long_sequence"
    return nested if nested.is_dir() else root


def resolve_tasks(
    spec: str | Sequence[str], root: Path, *, restrict_to_available: bool = False
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Turn an order name or task list into ``(tasks present, tasks dropped)``.

    A missing task is an error unless ``restrict_to_available`` (then it is dropped and
    reported), because silently running 11 of 15 tasks would make results incomparable.
    """
    directory = task_dir(root)
    if not directory.is_dir():
        raise DataError(
            f"task directory {directory} does not exist; set GERE_DATA_DIR / --data.root to "
            f"the data root (holding long_sequence/) or to the long_sequence directory itself; "
            f"{how_to_get(Path(root) / 'long_sequence')}"
        )
    names = _spec_to_names(spec, directory)
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise DataError(f"task list {names} repeats {duplicates}; list each task once")
    available = sorted(p.name for p in directory.iterdir() if p.is_dir())
    present = tuple(n for n in names if (directory / n).is_dir())
    dropped = tuple(n for n in names if n not in present)
    if dropped and not restrict_to_available:
        hints = "".join(did_you_mean(n, available) for n in dropped)
        raise DataError(
            f"task(s) {list(dropped)} not found in {directory}{hints} (available: "
            f"{available}); add the data, remove them from the list, or pass "
            f"restrict_to_available=True to run only the tasks present"
            f"{_where_to_get(dropped, directory, available)}"
        )
    if not present:
        raise DataError(
            f"none of the tasks {names} is present in {directory}"
            f"{_where_to_get(names, directory, available)}"
        )
    if dropped:
        logger.warning(
            "running %d of %d tasks; absent from %s: %s",
            len(present),
            len(names),
            directory,
            list(dropped),
        )
    return present, dropped


def _where_to_get(missing: Sequence[str], directory: Path, available: Sequence[str]) -> str:
    """'; the tasks come from ...' when missing tasks are Long-Sequence ones, else ''."""
    if not any(n in LONG_SEQUENCE_TASKS for n in missing):
        return ""
    # Task folders go in <root>/long_sequence unless this directory already holds some.
    dest = (
        directory if directory.name == "long_sequence" or available else directory / "long_sequence"
    )
    return f"; {how_to_get(dest)}"


def _spec_to_names(spec: str | Sequence[str], directory: Path) -> list[str]:
    """Expand an order name, comma-separated string or sequence into validated task names."""
    names = named_tasks(spec)
    if isinstance(spec, str) and spec.strip() not in ORDERS:
        # A lone unknown word is more likely a mistyped order than a task nobody has.
        lone = names[0] if len(names) == 1 else None
        if lone and lone not in LONG_SEQUENCE_TASKS and not (directory / lone).is_dir():
            candidates = [*ORDERS, *LONG_SEQUENCE_TASKS]
            raise DataError(
                f"unknown order or task {lone!r}{did_you_mean(lone, candidates)}: not an "
                f"order and {directory / lone} does not exist; orders: {sorted(ORDERS)}; "
                f"or give task names separated by commas"
            )
    if not names:
        raise DataError(f"empty task list {spec!r}; give an order name {sorted(ORDERS)} or tasks")
    for name in names:
        if not _TASK_NAME.match(name):
            raise DataError(
                f"task name {name!r} is not a plain directory name (letters, digits, '_', "
                f"'-', '.'); give task names, not paths"
            )
    return names


def load_task(
    root: Path,
    name: str,
    *,
    label_policy: str = "strict",
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
) -> Task:
    """Load and validate one task; caps subsample after the label policy has been applied.

    label_policy:
      - ``"strict"``: any output not in labels.json is an error.
      - ``"drop_unknown"``: drop instances whose output is not a label (reported in notes).
      - ``"from_outputs"``: if no train output is a label (qqp), the labels become the sorted
        set of train outputs; then instances outside the labels are dropped (mnli's ``-``).
    """
    if label_policy not in LABEL_POLICIES:
        raise DataError(
            f"label_policy {label_policy!r} is not one of {LABEL_POLICIES}"
            f"{did_you_mean(label_policy, LABEL_POLICIES)}"
        )
    if not _TASK_NAME.match(name):
        raise DataError(f"task name {name!r} is not a plain directory name; give a task name")
    folder = task_dir(root) / name
    if not folder.is_dir():
        raise DataError(f"task {name!r} not found: {folder} is not a directory")
    definition, splits = "", {}
    for split in _SPLITS:
        split_definition, splits[split] = _read_split(folder / f"{split}.json")
        if split == "train":
            definition = split_definition
        elif split_definition and split_definition != definition:
            logger.warning("%s: test.json Definition differs from train.json; using train's", name)
    labels = _read_labels(folder / "labels.json")
    labels, splits, notes = _apply_label_policy(name, folder, labels, splits, label_policy)
    caps = {"train": max_train, "test": max_test}
    for split in _SPLITS:
        splits[split], note = _cap(splits[split], caps[split], seed, name, split)
        notes.extend([note] if note else [])
    for note in notes:
        logger.info("%s", note)
    return Task(name, definition, labels, splits["train"], splits["test"], tuple(notes))


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"missing file {path}; each task needs train.json, test.json, labels.json")
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
            f"fix or re-export the file"
        ) from e


def _read_split(path: Path) -> tuple[str, tuple[Example, ...]]:
    """Parse a split file into (definition, examples); the output may be a str or [str, ...]."""
    expected = '{"Definition": [str], "Instances": [{"input": str, "output": str}, ...]}'
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("Instances"), list):
        raise DataError(f"{path}: expected an object like {expected}; got {_describe(data)}")
    raw_definition = data.get("Definition", [])
    if isinstance(raw_definition, str):
        raw_definition = [raw_definition]
    if not isinstance(raw_definition, list) or not all(isinstance(d, str) for d in raw_definition):
        raise DataError(f"{path}: 'Definition' must be a list of strings, as in {expected}")
    examples = []
    for i, item in enumerate(data["Instances"]):
        output = item.get("output") if isinstance(item, dict) else None
        if isinstance(output, list) and output and all(isinstance(o, str) for o in output):
            output = output[0]  # Natural-Instructions style: several references, first is gold
        if not isinstance(item, dict) or not isinstance(item.get("input"), str):
            raise DataError(f"{path}: Instances[{i}] needs a string 'input'; got {_describe(item)}")
        if not isinstance(output, str):
            raise DataError(
                f"{path}: Instances[{i}] needs 'output' as a string or non-empty list of "
                f"strings; got {_describe(item.get('output'))}"
            )
        examples.append(Example(item["input"], output, i))
    if not examples:
        raise DataError(f"{path}: 'Instances' is empty; every split needs at least one instance")
    return "\n".join(d.strip() for d in raw_definition if d.strip()), tuple(examples)


def _read_labels(path: Path) -> tuple[str, ...]:
    labels = _read_json(path)
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise DataError(
            f"{path}: expected a non-empty JSON list of label strings; got {_describe(labels)}"
        )
    repeated = sorted(x for x, c in Counter(labels).items() if c > 1)
    if repeated:
        raise DataError(f"{path}: labels {repeated} are listed more than once; list each once")
    return tuple(labels)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:8]}"
    return f"{type(value).__name__} {str(value)[:60]!r}"


def _apply_label_policy(
    name: str,
    folder: Path,
    labels: tuple[str, ...],
    splits: dict[str, tuple[Example, ...]],
    policy: str,
) -> tuple[tuple[str, ...], dict[str, tuple[Example, ...]], list[str]]:
    """Reconcile outputs with labels; returns (labels, splits, notes) or raises DataError."""
    notes: list[str] = []
    if policy == "from_outputs" and not any(ex.output in labels for ex in splits["train"]):
        new_labels = tuple(sorted({ex.output for ex in splits["train"]}))
        notes.append(
            f"{name}: no train output is in labels.json {list(labels)}; using the train "
            f"outputs {list(new_labels)} as labels (label_policy='from_outputs')"
        )
        labels = new_labels
    unknown = {
        s: Counter(ex.output for ex in splits[s] if ex.output not in labels) for s in _SPLITS
    }
    if policy == "strict" and any(unknown.values()):
        found = "; ".join(f"{folder / f'{s}.json'}: {_counts(c)}" for s, c in unknown.items() if c)
        raise DataError(
            f"task {name!r}: outputs not in {folder / 'labels.json'} {list(labels)}: {found}. "
            f"Fix the data, or choose label_policy='drop_unknown' (drop those instances) or "
            f"'from_outputs' (take labels from the train outputs, then drop the rest)"
        )
    kept = dict(splits)
    for split, counts in unknown.items():
        if not counts:
            continue
        kept[split] = tuple(ex for ex in splits[split] if ex.output in labels)
        notes.append(
            f"{name}: dropped {sum(counts.values())} of {len(splits[split])} {split} instances "
            f"whose output is not a label ({_counts(counts)}; label_policy={policy!r})"
        )
        if not kept[split]:
            raise DataError(
                f"task {name!r}: no {split} instance has an output in {list(labels)} after "
                f"label_policy={policy!r}; check {folder / f'{split}.json'} and labels.json"
            )
    return labels, kept, notes


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{label!r} x{n}" for label, n in counter.most_common())


def _stable_int(text: str) -> int:
    """A process-independent hash (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _cap(
    examples: tuple[Example, ...], cap: int | None, seed: int, name: str, split: str
) -> tuple[tuple[Example, ...], str | None]:
    """Seeded subsample without replacement, keeping the original order of what is kept."""
    if cap is None or cap >= len(examples):
        return examples, None
    if cap < 1:
        raise DataError(f"max_{split}={cap} for task {name!r}; use a positive cap or None")
    # Seed per task and split so that tasks (and train vs test) draw independent subsets.
    rng = random.Random(seed + _stable_int(f"{name}/{split}"))
    keep = sorted(rng.sample(range(len(examples)), cap))
    note = f"{name}: {split} subsampled to {cap} of {len(examples)} instances (seed={seed})"
    return tuple(examples[i] for i in keep), note


def format_prompt(task: Task, example_input: str, template: str = "harness") -> str:
    """The prompt a model is trained and scored on; the label follows as target_text."""
    with_definition, without = PROMPT_TEMPLATES[template]
    if task.definition:
        return with_definition.format(definition=task.definition, input=example_input.strip())
    return without.format(input=example_input.strip())


def target_text(label: str) -> str:
    """The continuation after the prompt; the leading space keeps BPE tokens word-initial."""
    return " " + label
