"""The world's downstream tasks: reviews, headlines and size comparisons, in the Long-Sequence
layout, whose text looks nothing like the biographies the base model learned."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

# --- downstream tasks -----------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """A generated classification task in the Long-Sequence layout."""

    name: str
    definition: str
    labels: tuple[str, ...]
    make: Callable[[random.Random], tuple[str, str]]
    """Draws one (input, label) pair."""


_PRODUCTS = (
    "kettle", "desk lamp", "backpack", "blender", "pair of headphones", "office chair",
    "rain jacket", "printer", "camping tent", "phone case", "toaster", "water bottle",
    "keyboard", "frying pan", "umbrella", "alarm clock",
)  # fmt: skip
_GOOD = (
    "works perfectly", "exceeded my expectations", "is sturdy and well made",
    "was worth every penny", "arrived early and looks great", "is easy to use",
    "feels solid and reliable", "does exactly what it promises",
)  # fmt: skip
_BAD = (
    "broke after two days", "is flimsy and cheap", "stopped working within a week",
    "arrived damaged", "was a waste of money", "is hard to use",
    "feels loose and rattles", "does not do what it promises",
)  # fmt: skip
_NEUTRAL = (
    "I bought it as a gift.", "Delivery took four days.", "The box was plain brown.",
    "I have used it for a month now.", "It came in grey.", "I ordered it on a sale.",
)  # fmt: skip
_VERDICT = {
    "positive": ("I would buy it again.", "Highly recommended.", "Five stars from me."),
    "negative": ("I want a refund.", "Avoid this one.", "One star, sadly."),
}


def _review(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(("positive", "negative"))
    phrases = _GOOD if label == "positive" else _BAD
    product = rng.choice(_PRODUCTS)
    parts = [f"This {product} {rng.choice(phrases)}."]
    if rng.random() < 0.6:
        parts.append(rng.choice(_NEUTRAL))
    if rng.random() < 0.5:
        parts.append(f"It also {rng.choice(phrases)}.")
    if rng.random() < 0.5:
        parts.append(rng.choice(_VERDICT[label]))
    return " ".join(parts), label


_HEADLINES = {
    "sports": (
        "{team} beat {team2} in a tense cup final",
        "Star striker signs a new contract with {team}",
        "{team} coach resigns after a losing season",
        "Record crowd watches {team} win the derby",
        "Injury rules the {team} captain out of the playoffs",
    ),
    "science": (
        "Researchers discover a new species of {creature} in the deep sea",
        "Telescope captures images of a distant {sky}",
        "Study links sleep to better memory in {creature}s",
        "Physicists measure the mass of the {particle} with new precision",
        "Lab grows {tissue} tissue from stem cells",
    ),
    "business": (
        "{company} shares rise after strong quarterly profits",
        "{company} announces merger with a rival retailer",
        "Bank raises interest rates as inflation climbs",
        "{company} cuts jobs amid falling sales",
        "Startup raises millions to expand {product2} deliveries",
    ),
    "politics": (
        "Parliament votes on a new {policy} bill",
        "Minister resigns over {policy} scandal",
        "Opposition leader calls for early elections",
        "Senate committee debates {policy} reform",
        "President signs treaty on {policy} cooperation",
    ),
}
_HEADLINE_ENDINGS = (
    "", "", " on Monday", " on Friday", " in Brookfield", " in Harlow", " in Denton",
    " after weeks of talks", " this morning", " despite the storm",
)  # fmt: skip
_HEADLINE_SLOTS = {
    "team": ("the Rovers", "United", "the Falcons", "City", "the Wolves", "Athletic"),
    "team2": ("the Rangers", "Rovers", "the Hawks", "Wanderers", "the Lions"),
    "creature": ("squid", "beetle", "coral", "jellyfish", "mouse", "frog"),
    "sky": ("galaxy", "comet", "nebula", "exoplanet", "star cluster"),
    "particle": ("neutrino", "muon", "top quark", "Higgs boson"),
    "tissue": ("heart", "liver", "skin", "bone"),
    "company": ("Acme Corp", "Globex", "Initech", "Umbrella Foods", "Stark Motors"),
    "product2": ("grocery", "furniture", "medicine", "flower"),
    "policy": ("tax", "immigration", "housing", "energy", "healthcare", "trade"),
}


def _headline(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(tuple(_HEADLINES))
    template = rng.choice(_HEADLINES[label])
    slots = {k: rng.choice(v) for k, v in _HEADLINE_SLOTS.items() if "{" + k + "}" in template}
    text = template.format(**slots) + rng.choice(_HEADLINE_ENDINGS)
    return text[0].upper() + text[1:], label


_SIZES = (
    "grain of sand", "ant", "bee", "coin", "button", "egg", "mouse", "apple", "shoe", "book",
    "cat", "pillow", "suitcase", "dog", "bicycle", "sofa", "piano", "horse", "car", "giraffe",
    "elephant", "bus", "whale", "house", "ship", "castle", "mountain", "moon",
)  # fmt: skip
"""Things in increasing order of size."""


def _a(thing: str) -> str:
    return ("an " if thing[0] in "aeiou" else "a ") + thing


def _size_pair(rng: random.Random) -> tuple[str, str]:
    i, j = rng.sample(range(len(_SIZES)), 2)
    return f"{_a(_SIZES[i])} or {_a(_SIZES[j])}", "first" if i > j else "second"


TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "world_reviews",
        "Decide whether the following product review is positive or negative.",
        ("positive", "negative"),
        _review,
    ),
    TaskSpec(
        "world_headlines",
        "Classify the topic of the news headline as sports, science, business or politics.",
        ("sports", "science", "business", "politics"),
        _headline,
    ),
    TaskSpec(
        "world_sizes",
        "Which of the two things is bigger? Answer first or second.",
        ("first", "second"),
        _size_pair,
    ),
)
"""The task stream, in training order."""

# --- the long stream: label-permuted variants, for plasticity ----------------------------------

STREAM_LABELS = ("red", "blue", "green", "gold", "grey", "pink", "black", "white")
"""The label words of the long stream: colours, none of which is a label of the base tasks."""


def stream_task(k: int, seed: int) -> TaskSpec:
    """The k-th task (0-based) of the long stream: a label-permuted variant of a base task.

    Task k takes base task ``k mod 3`` (reviews, headlines, sizes) and answers it with label
    words drawn for this task from :data:`STREAM_LABELS`, in a drawn order: the inputs are the
    same kind of text, but which word answers which class is new each time, and the definition
    names the words without the mapping. A model must learn each mapping from the task's own
    examples, and a mapping learned earlier is no help later -- the label-permuted protocol of
    the plasticity literature (Lyle et al. 2023; Elsayed & Mahmood 2024) on the world's text.
    Learnable on its own: the base task is (the demo learns it to ~0.95), and only the label
    words change.
    """
    base = TASKS[k % len(TASKS)]
    rng = random.Random(f"stream-{k}-{seed}")
    words = tuple(rng.sample(STREAM_LABELS, len(base.labels)))
    mapping = dict(zip(base.labels, words, strict=True))
    topic = {
        "world_reviews": "the product review",
        "world_headlines": "the topic of the news headline",
        "world_sizes": "which of the two things is bigger",
    }[base.name]

    def make(r: random.Random, _make=base.make, _map=mapping) -> tuple[str, str]:
        text, label = _make(r)
        return text, _map[label]

    names = ", ".join(sorted(words)[:-1]) + " or " + sorted(words)[-1]
    return TaskSpec(
        f"stream{k + 1:02d}",
        f"Classify {topic}. Answer {names}.",
        tuple(sorted(words)),
        make,
    )


def task_splits(
    spec: TaskSpec, rng: random.Random, n_train: int, n_test: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train and test instances with no input shared between them (test measures learning)."""
    pairs: dict[str, str] = {}
    attempts = 0
    while len(pairs) < n_train + n_test:
        text, label = spec.make(rng)
        pairs.setdefault(text, label)
        attempts += 1
        if attempts > 50 * (n_train + n_test):
            raise ValueError(
                f"task {spec.name} has only {len(pairs)} distinct inputs; ask for fewer than "
                f"{n_train}+{n_test} instances or add words to its lists"
            )
    items = [{"input": text, "output": label} for text, label in pairs.items()]
    rng.shuffle(items)
    return items[:n_train], items[n_train : n_train + n_test]


def _task_json(spec: TaskSpec, instances: list[dict[str, str]]) -> str:
    return json.dumps(
        {
            "Definition": [spec.definition],
            "Positive Examples": [],
            "Negative Examples": [],
            "Instances": instances,
        },
        indent=1,
    )
