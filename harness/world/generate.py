"""A generated world: a corpus of facts, a probe of those facts, and tasks that pull away from them.

The project's default run must show forgetting on a fresh offline machine, so it needs a base
model that provably *knows* something and a task stream that can erode it. This module writes
such a world, deterministically from a seed, in exactly the layouts of the real data (the
docs/getting-started.md, "Data") so the same loaders read both:

- ``general/{train,heldout}.jsonl`` (SlimPajama form): short documents stating facts about a
  population of fictional people (birth city, birth decade, employer, field), each fact several
  times in varied sentence templates, mixed with generic filler text. ``heldout`` holds other
  documents about the same people (new combinations, some in held-out templates), for
  perplexity.
- ``mmlu/{test,dev}/<subject>_{test,dev}.csv``: a cloze knowledge probe, one subject per fact
  kind. ``question`` is a prefix whose continuation is the answer ("X was born in the city of"),
  because the evaluator scores " " + choice after the question by log-likelihood.
- ``long_sequence/<task>/{train,test,labels}.json``: downstream tasks whose text (product
  reviews, news headlines, size comparisons) looks nothing like the biographies,
  so fine-tuning on them moves the model away from what it memorised.
- with ``n_stream_tasks`` > 0, a **long stream** ``long_sequence/stream01..streamNN``:
  label-permuted variants of those tasks (:func:`harness.world.tasks.stream_task`), each
  learnable on its own, for measuring loss of plasticity (``studies/plasticity.py``).

Everything is drawn from one ``random.Random(seed)`` per artefact, so a seed fixes every byte.
The word lists below are the whole "world"; edit them here, not in the output.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.world.population import ATTRIBUTES, SUBJECTS, Attribute, Entity, make_entities
from harness.world.tasks import TASKS, TaskSpec, _task_json, stream_task, task_splits

logger = logging.getLogger(__name__)

WORLD_VERSION = 2
"""Bump when the generator's output changes for a given seed (it is part of cache keys)."""

MANIFEST = "world.json"
"""Written last inside a world directory: settings, counts and the entity table."""


# --- generic filler text --------------------------------------------------------------------

_FILL = {
    "adj": ("quiet", "busy", "old", "narrow", "bright", "crowded", "small", "famous"),
    "place": ("market", "square", "station", "library", "bakery", "harbour", "park", "bridge"),
    "season": ("spring", "summer", "autumn", "winter"),
    "weather": ("mild", "windy", "rainy", "cold", "warm", "clear"),
    "activity": ("walk", "read", "swim", "paint", "cook", "sing", "sail", "garden"),
    "dish": ("soup", "stew", "pie", "bread", "salad", "cake"),
    "ingredient": ("onions", "carrots", "apples", "beans", "herbs", "potatoes", "butter"),
    "animal": ("swan", "goat", "heron", "fox", "sparrow", "deer"),
    "water": ("river", "lake", "canal", "shore", "pond"),
    "building": ("church", "mill", "theatre", "school", "tower", "museum"),
    "group": ("choir", "club", "council", "team", "guild"),
    "day": ("Monday", "Tuesday", "Friday", "Saturday", "Sunday"),
}
FILLER_TEMPLATES = (
    "The {adj} {place} is at its best in {season}.",
    "Many people like to {activity} when the weather is {weather}.",
    "A good {dish} needs fresh {ingredient} and a little patience.",
    "In {season}, the {animal} often rests by the {water}.",
    "The old {building} was rebuilt after a long and {weather} {season}.",
    "Travellers often stop at the {place} to buy {ingredient}.",
    "Every {day}, the {group} meets near the {place}.",
    "At the {place}, the {group} sells {dish} every {season}.",
    "The price of {ingredient} rose sharply last {season}.",
    "Children in the town learn to {activity} at an early age.",
    "From the {building}, one can see the {water} and the {adj} {place}.",
    "Nobody remembers who first baked {dish} with {ingredient} in this region.",
    "The {group} asked the town to repair the {place} before {season}.",
    "The staff of the {adj} {building} were all born in the town.",
    "Local dishes include {dish} with {ingredient}.",
    "Among the oldest buildings are the {building} and the {place}.",
    "People in the town say the {building} is very old.",
    "Famous names of the region include the {group} of the {building}.",
)
PERSONAL_FILLER = (
    "{name} likes to {activity} on {day} mornings.",
    "Friends say that {name} makes an excellent {dish}.",
    "{name} once spent a {weather} {season} near the {water}.",
)


def _sentence(template: str, **slots: str) -> str:
    """Format a sentence template and capitalise it (templates may start with a value)."""
    text = template.format(**slots)
    return text[0].upper() + text[1:]


def _fill(template: str, rng: random.Random, **fixed: str) -> str:
    """Fill every slot of ``template``: ``fixed`` values first, random word-list picks after."""
    slots = {k: rng.choice(v) for k, v in _FILL.items() if "{" + k + "}" in template}
    return template.format(**slots, **fixed)


def _filler_paragraph(rng: random.Random, lo: int = 2, hi: int = 4) -> str:
    return " ".join(_fill(rng.choice(FILLER_TEMPLATES), rng) for _ in range(rng.randint(lo, hi)))


# --- the general corpus ---------------------------------------------------------------------


def train_documents(
    entities: Sequence[Entity], rng: random.Random, *, mentions: int, filler_docs: int
) -> list[str]:
    """Biographies stating each fact ``mentions`` times, in varied templates, plus filler.

    A person's fact sentences are shuffled and cut into short documents, so each fact
    appears in different company each time: the model must bind the fact to the name, not
    memorise one paragraph.
    """
    docs: list[str] = []
    for entity in entities:
        sentences = []
        for attribute in ATTRIBUTES:
            # Cycle through the templates so every phrasing (including every probe phrasing)
            # is used for every person when mentions >= the number of templates.
            templates = list(attribute.train)
            rng.shuffle(templates)
            for i in range(mentions):
                template = templates[i % len(templates)]
                sentences.append(
                    _sentence(template, name=entity.name, value=entity.value(attribute))
                )
        rng.shuffle(sentences)
        while sentences:
            size = min(len(sentences), rng.randint(3, 5))
            doc, sentences = sentences[:size], sentences[size:]
            if rng.random() < 0.5:
                doc.insert(
                    rng.randint(1, len(doc)),
                    _fill(rng.choice(PERSONAL_FILLER), rng, name=entity.name),
                )
            docs.append(" ".join(doc))
    docs.extend(_filler_paragraph(rng) for _ in range(filler_docs))
    rng.shuffle(docs)
    return docs


def heldout_documents(
    entities: Sequence[Entity], rng: random.Random, *, filler_docs: int
) -> list[str]:
    """Other documents about the same people: every fact once, in new combinations.

    Each person gets one document in the training phrasings (new company for each fact, so
    perplexity there is low only if the model knows the facts) and one in held-out phrasings
    (new sentences in the corpus's words, so it also tracks the language, not seen text).
    """
    docs: list[str] = []
    for entity in entities:
        for held_out_phrasing in (False, True):
            sentences = [
                _sentence(
                    rng.choice(a.heldout if held_out_phrasing else a.train),
                    name=entity.name,
                    value=entity.value(a),
                )
                for a in ATTRIBUTES
            ]
            if rng.random() < 0.5:
                sentences.append(_fill(rng.choice(PERSONAL_FILLER), rng, name=entity.name))
            rng.shuffle(sentences)
            docs.append(" ".join(sentences))
    docs.extend(_filler_paragraph(rng) for _ in range(filler_docs))
    rng.shuffle(docs)
    return docs


def _jsonl(texts: Sequence[str]) -> str:
    return "".join(json.dumps({"text": t, "meta": {"source": "world"}}) + "\n" for t in texts)


# --- the knowledge probe --------------------------------------------------------------------


def probe_rows(
    entities: Sequence[Entity], attribute: Attribute, rng: random.Random, n_choices: int
) -> list[list[str]]:
    """MMLU-style rows ``[question, choice0..choiceK-1, answer]`` for one attribute.

    Distractors are other values of the same attribute, so every choice is a plausible
    continuation and only knowing the fact picks the right one.
    """
    if n_choices > len(attribute.values):
        raise ValueError(
            f"n_choices={n_choices} exceeds the {len(attribute.values)} values of "
            f"'{attribute.key}'; pass n_choices <= {min(len(a.values) for a in ATTRIBUTES)}"
        )
    rows = []
    for entity in entities:
        truth = entity.value(attribute)
        choices = rng.sample([v for v in attribute.values if v != truth], n_choices - 1)
        answer = rng.randrange(n_choices)
        choices.insert(answer, truth)
        question = rng.choice(attribute.cloze).format(name=entity.name)
        rows.append([question, *choices, str(answer)])
    return rows


def _csv(rows: Sequence[Sequence[str]], n_choices: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["question", *(f"choice{i}" for i in range(n_choices)), "answer"])
    writer.writerows(rows)
    return buffer.getvalue()


# --- writing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldSettings:
    """Everything that determines a world's bytes (stored in the manifest)."""

    seed: int = 0
    n_entities: int = 200
    mentions: int = 6
    n_choices: int = 8
    train_filler_docs: int = 400
    heldout_filler_docs: int = 200
    n_task_train: int = 300
    n_task_test: int = 150
    n_stream_tasks: int = 0
    """Tasks of the long stream (0: none; the default world's bytes are those without it)."""
    n_stream_train: int = 200
    n_stream_test: int = 100
    version: int = WORLD_VERSION

    def stream(self) -> tuple[TaskSpec, ...]:
        """The long stream's tasks, in order."""
        return tuple(stream_task(k, self.seed) for k in range(self.n_stream_tasks))


@dataclass(frozen=True)
class WorldInfo:
    """Where a generated world lives and what it holds."""

    root: Path
    """The data root: pass it wherever a data root is expected (it mimics shared/data)."""
    settings: WorldSettings
    tasks: tuple[str, ...]
    """Task names in training order."""
    subjects: tuple[str, ...]
    """Probe subjects (MMLU file stems), one per fact kind."""
    counts: dict[str, int] = field(default_factory=dict)
    """Documents, words, probe questions and task instances written."""
    stream: tuple[str, ...] = ()
    """The long stream's task names, in order (empty unless n_stream_tasks > 0)."""

    @property
    def general_train(self) -> Path:
        return self.root / "general" / "train.jsonl"

    @property
    def general_heldout(self) -> Path:
        return self.root / "general" / "heldout.jsonl"

    @property
    def mmlu_dir(self) -> Path:
        return self.root / "mmlu"

    @property
    def long_sequence_dir(self) -> Path:
        return self.root / "long_sequence"

    @property
    def chance(self) -> float:
        """Probe accuracy of guessing."""
        return 1.0 / self.settings.n_choices


def render_world(settings: WorldSettings) -> tuple[dict[str, str], dict[str, int]]:
    """Every file of the world as {relative path: text}, plus counts. Pure: no disk access."""
    s = settings
    entities = make_entities(s.n_entities, s.seed)
    files: dict[str, str] = {}
    train = train_documents(
        entities,
        random.Random(f"train-{s.seed}"),
        mentions=s.mentions,
        filler_docs=s.train_filler_docs,
    )
    heldout = heldout_documents(
        entities, random.Random(f"heldout-{s.seed}"), filler_docs=s.heldout_filler_docs
    )
    files["general/train.jsonl"] = _jsonl(train)
    files["general/heldout.jsonl"] = _jsonl(heldout)
    counts = {
        "entities": len(entities),
        "train_docs": len(train),
        "train_words": sum(len(d.split()) for d in train),
        "heldout_docs": len(heldout),
        "heldout_words": sum(len(d.split()) for d in heldout),
        "probe_questions": 0,
    }
    for attribute in ATTRIBUTES:
        rng = random.Random(f"probe-{attribute.key}-{s.seed}")
        rows = probe_rows(entities, attribute, rng, s.n_choices)
        files[f"mmlu/test/{attribute.subject}_test.csv"] = _csv(rows, s.n_choices)
        # Few-shot examples: five people, asked with a freshly drawn cloze and choices.
        dev = probe_rows(
            rng.sample(list(entities), min(5, len(entities))), attribute, rng, s.n_choices
        )
        files[f"mmlu/dev/{attribute.subject}_dev.csv"] = _csv(dev, s.n_choices)
        counts["probe_questions"] += len(rows)
    sizes = {spec.name: (s.n_task_train, s.n_task_test) for spec in TASKS}
    sizes |= {spec.name: (s.n_stream_train, s.n_stream_test) for spec in s.stream()}
    for spec in (*TASKS, *s.stream()):
        rng = random.Random(f"task-{spec.name}-{s.seed}")
        train_items, test_items = task_splits(spec, rng, *sizes[spec.name])
        files[f"long_sequence/{spec.name}/train.json"] = _task_json(spec, train_items)
        files[f"long_sequence/{spec.name}/test.json"] = _task_json(spec, test_items)
        files[f"long_sequence/{spec.name}/labels.json"] = json.dumps(list(spec.labels))
        counts[f"{spec.name}_train"] = len(train_items)
        counts[f"{spec.name}_test"] = len(test_items)
    files[MANIFEST] = json.dumps(
        {
            "settings": asdict(s),
            "tasks": [t.name for t in TASKS],
            **({"stream": [t.name for t in s.stream()]} if s.n_stream_tasks else {}),
            "subjects": list(SUBJECTS),
            "counts": counts,
            "entities": [asdict(e) for e in entities],
        },
        indent=1,
    )
    return files, counts


def generate_world(
    out_dir: Path,
    *,
    seed: int = 0,
    n_entities: int = WorldSettings.n_entities,
    mentions: int = WorldSettings.mentions,
    n_choices: int = WorldSettings.n_choices,
    train_filler_docs: int = WorldSettings.train_filler_docs,
    heldout_filler_docs: int = WorldSettings.heldout_filler_docs,
    n_task_train: int = WorldSettings.n_task_train,
    n_task_test: int = WorldSettings.n_task_test,
    n_stream_tasks: int = WorldSettings.n_stream_tasks,
    n_stream_train: int = WorldSettings.n_stream_train,
    n_stream_test: int = WorldSettings.n_stream_test,
) -> WorldInfo:
    """Write the world into ``out_dir`` (a data root) unless it is already there.

    The world is written to a temporary sibling and renamed into place, so a crash or a
    concurrent run never leaves a half-written directory that looks complete. An existing
    world made with other settings is an error, not silently reused or overwritten.
    """
    settings = WorldSettings(
        seed=seed,
        n_entities=n_entities,
        mentions=mentions,
        n_choices=n_choices,
        train_filler_docs=train_filler_docs,
        heldout_filler_docs=heldout_filler_docs,
        n_task_train=n_task_train,
        n_task_test=n_task_test,
        n_stream_tasks=n_stream_tasks,
        n_stream_train=n_stream_train,
        n_stream_test=n_stream_test,
    )
    if not 0 <= n_stream_tasks <= 99:
        raise ValueError(f"n_stream_tasks={n_stream_tasks} must be in 0..99 (names stream01..99)")
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        return _existing(out_dir, settings)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists, is not empty and has no {MANIFEST}: it is not a generated "
            f"world; pass an empty or missing directory"
        )
    start = time.perf_counter()
    files, counts = render_world(settings)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for rel, text in files.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if out_dir.exists():
        out_dir.rmdir()  # empty (checked above); rename needs the name free
    try:
        tmp.rename(out_dir)
    except OSError:
        # Another process finished first; its world has the same bytes if settings match.
        shutil.rmtree(tmp, ignore_errors=True)
        if not manifest.is_file():
            raise
        return _existing(out_dir, settings)
    logger.info(
        "generated world in %s (%.1fs): %d entities, %d train docs (%d words), %d probe "
        "questions x %d choices, tasks %s",
        out_dir,
        time.perf_counter() - start,
        counts["entities"],
        counts["train_docs"],
        counts["train_words"],
        counts["probe_questions"],
        n_choices,
        ", ".join(t.name for t in TASKS),
    )
    return WorldInfo(
        out_dir,
        settings,
        tuple(t.name for t in TASKS),
        SUBJECTS,
        counts,
        tuple(t.name for t in settings.stream()),
    )


def _existing(out_dir: Path, settings: WorldSettings) -> WorldInfo:
    data = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    stored = WorldSettings(**data["settings"])
    if stored != settings:
        diffs = [
            f"{k}={getattr(stored, k)!r} (asked {getattr(settings, k)!r})"
            for k in asdict(settings)
            if getattr(stored, k) != getattr(settings, k)
        ]
        raise FileExistsError(
            f"{out_dir} holds a world generated with other settings: {', '.join(diffs)}; "
            f"delete it or pass another directory"
        )
    return WorldInfo(
        out_dir,
        stored,
        tuple(data["tasks"]),
        tuple(data["subjects"]),
        data["counts"],
        tuple(data.get("stream", ())),
    )


def load_entities(root: Path) -> list[Entity]:
    """The entity table of a generated world (from its manifest)."""
    data = json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    return [Entity(**e) for e in data["entities"]]
