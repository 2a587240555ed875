"""THE results contract: one versioned Parquet schema per record kind, every column documented.

Everything a study writes goes through ``to_table`` and everything analysis reads goes through
``validate_table`` (``results.io`` does both), so a column renamed or retyped here changes the
contract in one place — bump ``SCHEMA_VERSION`` when it does, and readers refuse old files
with a message instead of mis-reading them.

Conventions: floats are never null — NaN means "not available" (one missing marker, not two);
the columns marked nullable below use null for "does not apply". ``docs/results-schema.md`` is
``schema_markdown()`` verbatim; regenerate it with ``python -m results.schema --write``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.config.replay_methods import REPLAY
from harness.docgen import generated_page_main
from harness.suggest import did_you_mean
from results.fields import FILLED, PROVENANCE, SCHEMA_VERSION
from results.kinds import _KIND_DOCS, KINDS, schema_for

__all__ = [
    "DOCS_PATH",
    "KINDS",
    "SCHEMA_VERSION",
    "schema_for",
    "schema_markdown",
    "to_table",
    "upgrade",
    "validate_table",
]

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "results-schema.md"
"""The committed copy of ``schema_markdown()``; a test keeps it up to date."""


def _allowed(field: pa.Field) -> list[str]:
    raw = (field.metadata or {}).get(b"allowed")
    return raw.decode().split(",") if raw else []


def _column_array(field: pa.Field, values: Any) -> pa.Array:
    """Convert one column to the field's type; failures name the column.

    Floats go through numpy so None and pandas NA become NaN (floats are never null);
    integers and strings go through Arrow's pandas conversion so NaN/None become null, which
    the nullability check then accepts or rejects.
    """
    try:
        if pa.types.is_floating(field.type):
            if isinstance(values, pd.Series):
                arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                arr = np.asarray(values, dtype=np.float64)
            return pa.array(arr, type=field.type)
        return pa.array(values, type=field.type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise ValueError(f"column {field.name!r}: cannot convert to {field.type}: {e}") from e


def _check_values(kind: str, schema: pa.Schema, table: pa.Table) -> None:
    """Nulls only where nullable; enumerated columns only take their allowed values."""
    for field in schema:
        col = table.column(field.name)
        if not field.nullable and col.null_count:
            raise ValueError(
                f"{kind}: column {field.name!r} has {col.null_count} null value(s) but is not "
                f"nullable ({(field.metadata or {}).get(b'doc', b'').decode()})"
            )
        allowed = _allowed(field)
        if allowed and len(col):
            bad = pc.unique(pc.filter(col, pc.invert(pc.is_in(col, pa.array(allowed)))))
            bad = [v for v in bad.to_pylist() if v is not None]
            if bad:
                raise ValueError(
                    f"{kind}: column {field.name!r} has value(s) {bad}; allowed: {allowed}"
                )


def omissible(kind: str) -> tuple[str, ...]:
    """Nullable columns a writer's rows may leave out (null): the summary's typed settings,
    provenance and data fingerprint (the trial fills them; rows built by hand, in tests or migrations, need
    not). Every other column must be given, so a writer's typo fails at once."""
    if kind != "summary":
        return ()
    from harness.config.flat import settings_columns

    extra = ("data_fingerprint", "data_warnings")  # what the trial's data loading found
    return (*PROVENANCE, *extra, *(name for name, _k, _d in settings_columns()))


def to_table(
    kind: str,
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    study: str,
    trial_id: str,
) -> pa.Table:
    """Build a schema-exact table from records, filling ``schema_version``/``study``/``trial_id``.

    ``rows`` is a list of dicts or a DataFrame with exactly the kind's other columns (order is
    free). Missing or extra columns fail with their names, so a typo in a writer is caught at
    the first trial rather than in analysis weeks later. An empty list gives a zero-row table
    (writing it replaces an earlier attempt's rows). If the rows already carry a filled column
    (e.g. a DataFrame read back), its values must equal the ones given.
    """
    schema = schema_for(kind)
    if not study or not trial_id:
        raise ValueError(
            f"{kind}: study and trial_id must be non-empty (got {study!r}, {trial_id!r})"
        )
    if isinstance(rows, pd.DataFrame):
        n = len(rows)
        columns: dict[str, Any] = {str(c): rows[c] for c in rows.columns}
    else:
        rows = list(rows)
        n = len(rows)
        names = dict.fromkeys(k for r in rows for k in r)  # first-seen order, no duplicates
        columns = {k: [r.get(k) for r in rows] for k in names}
    given = list(columns)

    fill = {"schema_version": SCHEMA_VERSION, "study": study, "trial_id": trial_id}
    expected = [f.name for f in schema if f.name not in FILLED]
    optional = set(omissible(kind))
    if n or given:
        missing = [c for c in expected if c not in given and c not in optional]
        extra = [c for c in given if c not in expected and c not in FILLED]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {missing}")
            if extra:
                hints = "".join(did_you_mean(c, missing) for c in extra)
                parts.append(f"unexpected column(s) {extra}{hints}")
            raise ValueError(f"{kind} records: {'; '.join(parts)}. Columns: {expected}")
        for name, want in fill.items():
            if name in given:
                got = set(pd.Series(columns[name]).dropna().tolist())
                if got - {want}:
                    raise ValueError(
                        f"{kind} records: column {name!r} holds {sorted(map(str, got))} but "
                        f"{want!r} was given; drop the column or pass the matching value"
                    )

    if n == 0:
        return schema.empty_table()
    arrays = []
    for field in schema:
        if field.name in FILLED:
            values = [fill[field.name]] * n
        else:
            values = columns.get(field.name, [None] * n)  # only omissible ones can be absent
        arrays.append(_column_array(field, values))
    table = pa.Table.from_arrays(arrays, schema=schema)
    _check_values(kind, schema, table)
    return table


ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "summary": (
        "n_stages",
        "data.add_bos",
        "method_defaults",
        "data_fingerprint",
        "data_warnings",
        "model_path",
        "train.save_models",
        "eval.probe_name",
        "eval.lm_eval_tasks",
        "eval.lm_eval_include_path",
        "eval.lm_eval_num_fewshot",
        "eval.lm_eval_limit",
        "eval.matrix",
    ),
    "curve": ("pad_share",),
    "predictions": ("item",),
}
"""Nullable columns added to a kind within this schema version: a file written before they
existed is read with them null, or with the value :data:`ADDED_VALUES` says the trial had
(:func:`with_added_columns`), not refused as damaged."""

ADDED_VALUES: dict[str, Any] = {
    "train.save_models": "none",
    "eval.lm_eval_tasks": [],
    "eval.matrix": "full",
}
"""What a setting added later was in every trial written before it existed (what the harness
did then), filled in where such a file lacks the column."""


def with_added_columns(kind: str, table: pa.Table) -> pa.Table:
    """``table`` with every :data:`ADDED_COLUMNS` column it lacks appended: its
    :data:`ADDED_VALUES` value where a setting's earlier behaviour is known, else nulls."""
    schema = schema_for(kind)
    for name in ADDED_COLUMNS.get(kind, ()):
        if name not in table.column_names:
            field, n = schema.field(name), len(table)
            if name in ADDED_VALUES:
                column = pa.array([ADDED_VALUES[name]] * n, type=field.type)
            else:
                column = pa.nulls(n, type=field.type)
            table = table.append_column(field, column)
    return table


def upgrade(kind: str, table: pa.Table) -> pa.Table:
    """A table written under an earlier schema version in the current one's form (version 2:
    :func:`_from_v2`; a table of another version is returned as it is). Version 1: Other kinds only change their ``schema_version``; a
    summary gets ``tasks`` as a list, provenance null, and the typed settings from its
    ``config_json`` read as the harness reads a stored config (defaults of settings added
    since filled in, the replay weight resolved to the method's default where it was left
    unset). Raises ValueError when a version-1 summary lacks the columns that needs."""
    try:
        versions = {v for v in table.column("schema_version").to_pylist() if v is not None}
    except (KeyError, TypeError, pa.ArrowInvalid):  # validate_table names what is wrong
        return table
    if versions == {2}:
        return _from_v2(kind, table)
    if versions != {1}:
        return table
    at = table.schema.get_field_index("schema_version")
    version = pa.array([SCHEMA_VERSION] * len(table), pa.int32())
    table = table.set_column(at, schema_for(kind).field("schema_version"), version)
    if kind != "summary":
        return table
    missing = [c for c in ("tasks", "config_json", "replay_weight") if c not in table.column_names]
    if missing:
        raise ValueError(f"a schema-version-1 summary without column(s) {missing}: not readable")
    df = table.to_pandas()
    df["tasks"] = [t.split(",") if isinstance(t, str) else t for t in df["tasks"]]
    flat = [
        _v1_settings(text, label)
        for text, label in zip(df["config_json"], df["replay_weight"], strict=True)
    ]
    for name, _kind, _doc in _settings_columns():
        df[name] = [row.get(name) for row in flat]
    for name in PROVENANCE:
        df[name] = None
    schema = schema_for(kind)
    keep = [f for f in schema if f.name in df.columns]
    return pa.Table.from_arrays(
        [_column_array(f, df[f.name]) for f in keep], schema=pa.schema(keep)
    )


def _from_v2(kind: str, table: pa.Table) -> pa.Table:
    """A version-2 table in version 3's form: the summary's bool ``replay.add_bos`` becomes
    the rule it meant ('tokenizer' / 'never'); columns added since are filled in later."""
    at = table.schema.get_field_index("schema_version")
    version = pa.array([SCHEMA_VERSION] * len(table), pa.int32())
    table = table.set_column(at, schema_for(kind).field("schema_version"), version)
    name = "replay.add_bos"
    if kind == "summary" and name in table.column_names:
        col = table.column(name)
        if pa.types.is_boolean(col.type):
            rule = [None if v is None else ("tokenizer" if v else "never") for v in col.to_pylist()]
            i = table.schema.get_field_index(name)
            table = table.set_column(i, schema_for(kind).field(name), pa.array(rule, pa.string()))
    return table


def _settings_columns() -> list[tuple[str, str, str]]:
    from harness.config.flat import settings_columns

    return settings_columns()


def _v1_settings(text: Any, label: Any) -> dict[str, Any]:
    """The typed settings of one version-1 summary row (empty if its config is unreadable)."""
    import json

    from harness.config import ConfigError, from_dict
    from harness.config.flat import flat_settings

    try:
        config = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    weight: float | str | None
    try:
        cfg = from_dict(config)  # legacy keys read in today's form, later defaults filled in
        config = cfg.to_dict()
        weight = cfg.replay.weight
        if weight is None and cfg.replay.method != "none":
            weight = REPLAY.entry(cfg.replay.method).default_weight
    except (ConfigError, ValueError, TypeError):
        weight = label if label == "dynamic" else _number(label)
    return flat_settings(config, weight) if isinstance(config, dict) else {}


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def validate_table(kind: str, table: pa.Table) -> None:
    """Raise ValueError naming the first problem if ``table`` does not match the kind's schema.

    Checks column names (missing/extra), types, null counts in non-nullable columns, allowed
    values and that every row's ``schema_version`` is ``SCHEMA_VERSION``. Column order and
    the Arrow nullability flag are not compared: both are lost by harmless round trips
    (pandas), and the null counts are what matter.
    """
    schema = schema_for(kind)
    names = table.schema.names
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in names if n not in schema.names]
    if missing or extra:
        raise ValueError(f"{kind} table: missing column(s) {missing}, unexpected column(s) {extra}")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} table: duplicate column names in {names}")
    for field in schema:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise ValueError(
                f"{kind} table: column {field.name!r} has type {got}, expected {field.type}"
            )
    versions = pc.unique(table.column("schema_version")).to_pylist()
    if any(v != SCHEMA_VERSION for v in versions):
        raise ValueError(
            f"{kind} table: schema_version {sorted(v for v in versions if v is not None)} "
            f"but this code reads version {SCHEMA_VERSION}"
        )
    _check_values(kind, schema, table.select(schema.names))


def schema_markdown() -> str:
    """Column-by-column documentation of every kind; docs/results-schema.md is exactly this."""
    out = [
        "# Results schema",
        "",
        "<!-- Generated by `python -m results.schema --write` from results/schema.py; "
        "do not edit by hand. -->",
        "",
        f"Schema version: **{SCHEMA_VERSION}**. Layout: "
        "`<out>/study=<study>/<kind>/<trial_id>.parquet`, one file per trial and record kind "
        "(a re-run replaces its file). Trial ids are sanitised for file names; the "
        "`trial_id` column keeps the real id.",
        "",
        "Floats are never null: NaN means not available. Columns marked nullable use null for "
        "'does not apply'.",
        "",
    ]
    for kind, schema in KINDS.items():
        out += [f"## `{kind}`", "", _KIND_DOCS[kind], ""]
        out += ["| column | type | nullable | description |", "|---|---|---|---|"]
        for field in schema:
            doc = (field.metadata or {}).get(b"doc", b"").decode()
            allowed = _allowed(field)
            if allowed:
                doc += " One of: " + ", ".join(f"`{a}`" for a in allowed) + "."
            doc = doc.replace("|", "\\|")
            null = "yes" if field.nullable else "no"
            out.append(f"| `{field.name}` | {field.type} | {null} | {doc} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the page, write it to docs/, or check the committed copy."""
    return generated_page_main("python -m results.schema", DOCS_PATH, schema_markdown, argv)


if __name__ == "__main__":
    raise SystemExit(main())
