"""The task orders of the Long-Sequence benchmark, by name: the vocabulary ``data.tasks`` is
written in (an order name, or task names separated by commas). Known to the config, so that
its rules (and methods' rules, e.g. O-LoRA's per-task schedule) can count a trial's tasks
without reading any data (:mod:`harness.data.benchmark` reads them).
"""

from __future__ import annotations

from collections.abc import Sequence

_ORDER4 = (
    "mnli", "cb", "wic", "copa", "qqp", "boolq", "rte", "imdb",
    "yelp", "amazon", "sst2", "dbpedia", "agnews", "multirc", "yahoo",
)  # fmt: skip
_ORDER5 = (
    "multirc", "boolq", "wic", "mnli", "cb", "copa", "qqp", "rte",
    "imdb", "sst2", "dbpedia", "agnews", "yelp", "amazon", "yahoo",
)  # fmt: skip
_ORDER6 = (
    "yelp", "amazon", "mnli", "cb", "copa", "qqp", "rte", "imdb",
    "sst2", "dbpedia", "agnews", "yahoo", "multirc", "boolq", "wic",
)  # fmt: skip

ORDERS: dict[str, tuple[str, ...]] = {
    "order4": _ORDER4,
    "order5": _ORDER5,
    "order6": _ORDER6,
    # Papers number these sequences differently (SAPT calls the yelp-first one "order 4"),
    # so each also has a name that says what it is.
    "long-sequence-mnli-first": _ORDER4,
    "long-sequence-multirc-first": _ORDER5,
    "long-sequence-yelp-first": _ORDER6,
}
"""The three 15-task Long-Sequence orders, numbered as in O-LoRA, plus descriptive aliases."""

LONG_SEQUENCE_TASKS: tuple[str, ...] = tuple(sorted(_ORDER4))
"""The 15 Long-Sequence task names."""


def named_tasks(spec: str | Sequence[str]) -> list[str]:
    """The task names an order name or task list stands for, without looking at any data."""
    if isinstance(spec, str):
        if spec.strip() in ORDERS:
            return list(ORDERS[spec.strip()])
        return [part.strip() for part in spec.split(",") if part.strip()]
    return [str(n).strip() for n in spec]
