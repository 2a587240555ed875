"""MMLU-style multiple-choice probe of general knowledge.

Reads ``<dir>/<split>/<subject>_<split>.csv`` in either of the two forms in circulation:
with a header ``question,choice0..choiceK,answer`` (0-based answer index) or the original
headerless ``question,A,B,C,D,<letter>``. Or ``hf:cais/mmlu[:<config>][@<revision>]`` from
the Hub (see harness/data/hub.py).
"""

from __future__ import annotations

import csv
import io
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.data.hub import HubSource, is_hub_source, parse_hub_source
from harness.data.paths import DataError, read_text, resolve_source_path

logger = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
"""Answer letters; at most 10 choices per question."""


@dataclass(frozen=True)
class MCQuestion:
    """One question; ``answer`` is the 0-based index of the correct choice."""

    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int
    row: int = -1
    """0-based index of the question in its subject's file (header row excluded) or, from the
    Hub, among its subject's rows; -1 where unknown."""

    @property
    def item(self) -> str:
        """``<subject>/<row>``: joins with other tools' per-sample logs (lm-eval's doc_id)."""
        return f"{self.subject}/{self.row}"

    def __post_init__(self) -> None:
        if not 2 <= len(self.choices) <= len(LETTERS):
            raise DataError(f"{self.subject}: {len(self.choices)} choices; need 2..{len(LETTERS)}")
        if not 0 <= self.answer < len(self.choices):
            raise DataError(
                f"{self.subject}: answer index {self.answer} out of range for "
                f"{len(self.choices)} choices in {self.question[:60]!r}"
            )


def load_mc(
    source: str,
    root: Path | None,
    *,
    split: str = "test",
    max_questions: int | None = None,
    seed: int = 0,
    subjects: Sequence[str] | None = None,
) -> list[MCQuestion]:
    """Load questions sorted by subject then file order; max_questions is a seeded sample.

    source: a directory (absolute or relative to ``root``, e.g. ``"mmlu"``) or
    ``"hf:cais/mmlu[:<config>][@<revision>]"`` (config defaults to ``all``; no ``#<split>``:
    ``split`` chooses it, ``test`` for the questions and ``dev`` for few-shot examples).
    """
    if max_questions is not None and max_questions < 1:
        raise DataError(f"max_questions={max_questions}; use a positive number or None")
    if is_hub_source(source):
        questions = _load_hub(check_hub_mc(source), split)
    else:
        questions = _load_dir(resolve_source_path(source, root, what="MMLU directory"), split)
    if subjects is not None:
        questions = _filter_subjects(questions, subjects, source)
    questions.sort(key=lambda q: q.subject)  # stable: file order kept within a subject
    if max_questions is None or max_questions >= len(questions):
        return questions
    keep = sorted(random.Random(seed).sample(range(len(questions)), max_questions))
    return [questions[i] for i in keep]


def _filter_subjects(
    questions: list[MCQuestion], subjects: Sequence[str], source: str
) -> list[MCQuestion]:
    known = sorted({q.subject for q in questions})
    missing = sorted(set(subjects) - set(known))
    if missing:
        raise DataError(f"subjects {missing} not found in {source!r}; available: {known}")
    wanted = set(subjects)
    return [q for q in questions if q.subject in wanted]


def _load_dir(directory: Path, split: str) -> list[MCQuestion]:
    split_dir = directory / split
    suffix = f"_{split}.csv"
    files = sorted(split_dir.glob(f"*{suffix}")) if split_dir.is_dir() else []
    if not files:
        raise DataError(
            f"no {split_dir}/<subject>{suffix} files; point the source at a directory holding "
            f"{split}/ (e.g. the data root's mmlu/) or choose another split"
        )
    questions: list[MCQuestion] = []
    for path in files:
        questions.extend(_read_csv(path, path.name.removesuffix(suffix)))
    return questions


def _read_csv(path: Path, subject: str) -> list[MCQuestion]:
    """Parse one subject file, detecting the headered (index) or headerless (letter) form."""
    text = read_text(path)
    rows = [(i, row) for i, row in enumerate(csv.reader(io.StringIO(text, newline="")), 1) if row]
    if not rows:
        raise DataError(f"{path} is empty; expected question,choices...,answer rows")
    header = [cell.strip().lower() for cell in rows[0][1]]
    has_header = header[0] == "question" and header[-1] == "answer"
    width = len(rows[0][1])
    n_choices = width - 2
    if not 2 <= n_choices <= len(LETTERS):
        raise DataError(
            f"{path} row 1: {width} columns gives {n_choices} choices; expected "
            f"question, 2..{len(LETTERS)} choices, answer"
        )
    questions = []
    for row_number, row in rows[1:] if has_header else rows:
        where = f"{path} row {row_number}"
        if len(row) != width:
            raise DataError(f"{where}: {len(row)} columns, but the file's first row has {width}")
        question, *choices, raw = row
        if not question.strip():
            raise DataError(f"{where}: empty question")
        answer = _parse_answer(raw.strip(), n_choices, has_header, where)
        questions.append(MCQuestion(subject, question, tuple(choices), answer, len(questions)))
    if not questions:
        raise DataError(f"{path} has a header but no questions")
    return questions


def _parse_answer(raw: str, n_choices: int, has_header: bool, where: str) -> int:
    """Headered files hold a 0-based index, headerless ones a letter (as MMLU ships)."""
    if has_header:
        if raw.isdecimal() and int(raw) < n_choices:
            return int(raw)
        expected = f"a 0-based index 0..{n_choices - 1} (headered form)"
    else:
        if len(raw) == 1 and raw.upper() in LETTERS[:n_choices]:
            return LETTERS.index(raw.upper())
        expected = f"a letter {LETTERS[0]}..{LETTERS[n_choices - 1]} (headerless form)"
    raise DataError(
        f"{where}: answer {raw!r} is not {expected}; fix the row, or add/remove the "
        f"question,choice0..,answer header to match the answer format"
    )


def check_hub_mc(source: str) -> HubSource:
    """Parse a Hub probe source (no network); it may not fix a split (see load_mc)."""
    hub = parse_hub_source(source)
    if hub.split is not None:
        fixed = HubSource(hub.dataset, hub.config, None, hub.revision)
        raise DataError(
            f"probe source {source!r} names split {hub.split!r}, but the probe reads two splits "
            f"of it: 'test' for the questions and 'dev' for the few-shot examples; drop "
            f"'#{hub.split}' (write {str(fixed)!r})"
        )
    return hub


def _load_hub(hub: HubSource, split: str) -> list[MCQuestion]:
    source, name = str(hub), hub.dataset
    import datasets  # deferred: slow import, and only Hub sources need it

    try:
        rows = datasets.load_dataset(
            hub.dataset, hub.config or "all", split=split, revision=hub.revision
        )
    except Exception as e:  # offline, auth or naming errors all surface differently
        raise DataError(
            f"could not load {source!r} split {split!r} from the Hugging Face Hub "
            f"({type(e).__name__}: {e}); offline machines need a local directory (e.g. 'mmlu')"
        ) from e
    rows_seen: dict[str, int] = {}
    out = []
    for r in rows:
        subject = r.get("subject") or name
        row = rows_seen[subject] = rows_seen.get(subject, -1) + 1
        out.append(MCQuestion(subject, r["question"], tuple(r["choices"]), int(r["answer"]), row))
    return out


def format_mc_prompt(q: MCQuestion, shots: Sequence[MCQuestion] = ()) -> str:
    """``Question: ...\\nA. ...\\nAnswer:``, after few-shot examples answered with `` X\\n\\n``.

    The model is scored on which letter (with a leading space) it ranks highest.
    """
    parts = [f"{_block(s)} {LETTERS[s.answer]}\n\n" for s in shots]
    return "".join(parts) + _block(q)


def format_lm_eval_prompt(q: MCQuestion, shots: Sequence[MCQuestion] = ()) -> str:
    """The prompt of lm-evaluation-harness's ``mmlu`` task (``mmlu/default``): the subject
    header "The following are multiple choice questions (with answers) about <subject>.",
    a blank line, the k-shot examples (each answered with `` X``, joined by blank lines), then
    "<question>\nA. <choice>\n...\nAnswer:"; the choices scored are `` A`` .. `` D``."""
    header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
    parts = [f"{_lm_eval_block(s)} {LETTERS[s.answer]}\n\n" for s in shots]
    return header + "".join(parts) + _lm_eval_block(q)


def _lm_eval_block(q: MCQuestion) -> str:
    lines = [q.question.strip()] + [f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices)]
    return "\n".join(lines) + "\nAnswer:"


def _block(q: MCQuestion) -> str:
    lines = [f"Question: {q.question.strip()}"]
    lines += [f"{LETTERS[i]}. {choice.strip()}" for i, choice in enumerate(q.choices)]
    return "\n".join(lines) + "\nAnswer:"
