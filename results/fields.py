"""The building blocks of the record kinds' schemas: the schema version, documented fields,
the columns every kind shares, and the summary's settings and provenance columns."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from harness.config.flat import settings_columns
from harness.metrics import METRICS

SCHEMA_VERSION = 3
"""2 (2026-12): the summary's settings as typed columns, ``tasks`` a list, provenance.
3 (2026-12-04): the summary's ``replay.add_bos`` is the rule 'tokenizer' / 'always' / 'never'
(was a bool: true read as 'tokenizer', false as 'never'); ``data.add_bos`` and the
predictions' ``item`` added.
Bump on any change that makes a stored file read differently: a column's name, type or
meaning, or an allowed value taken away. Additions that every old file still satisfies (a new
record kind, a new allowed value) keep the version."""

FILLED = ("schema_version", "study", "trial_id")
"""Columns ``to_table`` fills itself; callers' rows need not (but may, if equal) carry them."""


def _f(
    name: str,
    type_: pa.DataType,
    doc: str,
    *,
    nullable: bool = False,
    allowed: Sequence[str] = (),
) -> pa.Field:
    """A field with its documentation (and allowed values, if any) kept in its metadata."""
    meta = {"doc": doc}
    if allowed:
        meta["allowed"] = ",".join(allowed)
    return pa.field(name, type_, nullable=nullable, metadata=meta)


def _common() -> list[pa.Field]:
    return [
        _f("schema_version", pa.int32(), f"Version of this schema ({SCHEMA_VERSION})."),
        _f("study", pa.string(), "Study name (the grid this trial belongs to)."),
        _f(
            "trial_id",
            pa.string(),
            "Deterministic trial id, unsanitised (file names may differ; this column does not).",
        ),
    ]


def _stage_fields() -> list[pa.Field]:
    return [
        _f(
            "stage",
            pa.int32(),
            "Checkpoint: 0 = starting model, i = after training task i (1-based).",
        ),
        _f("after_task", pa.string(), "Name of the task trained last; '<start>' at stage 0."),
    ]


_ARROW = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "str": pa.string(),
    "json": pa.string(),
    "list[str]": pa.list_(pa.string()),
    "list[int]": pa.list_(pa.int64()),
    "list[float]": pa.list_(pa.float64()),
}


def _settings_fields() -> list[pa.Field]:
    """One typed, nullable column per setting (harness.config.flat): null where it does not
    apply (NaN for floats) or in results written before it existed."""
    fields = []
    for name, kind, doc in settings_columns():
        note = " (JSON)" if kind == "json" else ""
        fields.append(_f(name, _ARROW[kind], f"Setting{note}: {doc}", nullable=True))
    return fields


PROVENANCE = (
    "git_sha",
    "git_dirty",
    "python_version",
    "torch_version",
    "transformers_version",
    "peft_version",
    "ray_version",
    "deepspeed_version",
    "device",
    "started_at",
)
"""Summary columns saying where and with what a trial ran (null in results written before
schema version 2, or where unknown: no git checkout, Ray or DeepSpeed not installed)."""


def _provenance_fields() -> list[pa.Field]:
    lib = "Version of {} the trial ran with; null if not installed."
    return [
        _f(
            "git_sha",
            pa.string(),
            "Git commit of the harness checkout; null if none.",
            nullable=True,
        ),
        _f(
            "git_dirty",
            pa.bool_(),
            "Whether the checkout had uncommitted changes; null if none.",
            nullable=True,
        ),
        _f("python_version", pa.string(), "Python version.", nullable=True),
        *[
            _f(f"{name}_version", pa.string(), lib.format(name), nullable=True)
            for name in ("torch", "transformers", "peft", "ray", "deepspeed")
        ],
        _f(
            "device",
            pa.string(),
            "Where rank 0 trained: 'cpu' or 'cuda: <GPU name>' (x the world size).",
            nullable=True,
        ),
        _f(
            "started_at",
            pa.timestamp("us", tz="UTC"),
            "When this run of the trial started (UTC).",
            nullable=True,
        ),
    ]


def _metric_doc(name: str) -> str:
    doc = (METRICS[name].__doc__ or "").strip().splitlines()
    return f"harness.metrics.{METRICS[name].__name__}: {doc[0] if doc else name}"
