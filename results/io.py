"""Write and read trial records as Parquet: one file per (study, kind, trial).

Layout: ``<out>/study=<study>/<kind>/<trial_id>.parquet``. Because a trial's file is named by
its deterministic id, a retried or re-run trial *replaces* its rows instead of duplicating
them. Writes are atomic on local disks and NFS: a dot-prefixed temp file in the same directory
is renamed over the target with ``os.replace``, and dot files are skipped by this reader and by
``pyarrow.dataset``, so nobody ever reads half a file. ``out`` may also be an object-store URI
(``s3://bucket/prefix``, ``gs://...``; :mod:`results.storage`): there is no rename there, but an
object appears only once its upload completes, whole, and the unique key per trial and kind is
what prevents duplicates (a trial writes its summary last).

A file that cannot be read (not Parquet, truncated, another schema or schema version) is
*damaged*. Readers name every damaged file they meet: by default they raise one
``DamagedResultsError`` listing them all (path and reason), so one bad trial is found by name
instead of failing the whole read with a bare Arrow error; with ``skip_damaged=True`` they log a
warning per file and return the rest. ``damaged_files`` lists them without reading anything
else, and ``trial_problems`` checks one trial's files (missing or damaged) so a trial with a
damaged file can be re-run.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from results import storage
from results.schema import (
    FILLED,
    KINDS,
    SCHEMA_VERSION,
    schema_for,
    to_table,
    upgrade,
    validate_table,
    with_added_columns,
)
from results.storage import Location

__all__ = [
    "DamagedResultsError",
    "damaged_files",
    "read_records",
    "read_study",
    "read_trial_rows",
    "record_path",
    "safe_name",
    "study_dir",
    "trial_problems",
    "write_records",
]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 120


def safe_name(name: str) -> str:
    """A deterministic file-name-safe form of a trial id or study name.

    Ids made only of ``[A-Za-z0-9._-]`` (and not starting with '.' or '_', which dataset
    readers treat as hidden) are kept as they are. Anything else has unsafe characters replaced
    by '_' and a hash of the original appended, so distinct ids (``a=1,b=2`` vs ``a=1_b=2``)
    never share a file. Long ids are truncated before the hash to stay under file-name limits.
    """
    if not name:
        raise ValueError("empty name: trial ids and study names must be non-empty")
    safe = _UNSAFE.sub("_", name)
    if safe == name and not name.startswith((".", "_")) and len(name) <= _MAX_STEM:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{safe.lstrip('._')[:_MAX_STEM] or 'id'}-{digest}"


def study_dir(out: Location, study: str) -> Location:
    """``<out>/study=<study>`` (the study name sanitised like trial ids); a Path, or a URI
    string when ``out`` is one."""
    return storage.join(out, f"study={safe_name(study)}")


def record_path(out: Location, kind: str, *, study: str, trial_id: str) -> Location:
    """Where ``write_records`` puts one trial's records of one kind."""
    schema_for(kind)  # unknown kinds fail here, with a suggestion
    return storage.join(study_dir(out, study), kind, f"{safe_name(trial_id)}.parquet")


def write_records(
    out: Location,
    kind: str,
    rows: list[dict] | pd.DataFrame,
    *,
    study: str,
    trial_id: str,
) -> Location:
    """Validate ``rows`` against the kind's schema and atomically (re)place the trial's file.

    Returns the file's path. Directories are created as needed. The temp name is unique per
    call so two attempts of the same trial racing each other cannot corrupt one temp file;
    the last ``os.replace`` wins with a complete file. On an object store (``out`` a URI) the
    object is uploaded whole to its key (:func:`results.storage.write`).
    """
    table = to_table(kind, rows, study=study, trial_id=trial_id)
    path = record_path(out, kind, study=study, trial_id=trial_id)
    return storage.write(path, lambda f: pq.write_table(table, f))


def _kind_files(path: Location, kinds: Iterable[str]) -> dict[str, list[Location]]:
    """The visible ``.parquet`` files of each kind under a file, kind dir, study dir or root.

    The folders are listed once for all kinds, not checked kind by kind: on an object store
    every check is a request."""
    kinds = list(kinds)
    if storage.is_file(path):
        return {kind: [path] for kind in kinds}
    if not storage.is_dir(path):
        raise FileNotFoundError(f"no results at {path} (expected <out>/study=<study>)")
    subs = {storage.name(d): d for d in storage.subdirs(path)}
    studies: list[dict[str, Location]] | None = None  # an output root's study=* folders
    found: dict[str, list[Location]] = {}
    for kind in kinds:
        if kind in subs:
            dirs = [subs[kind]]
        elif storage.name(path) == kind:
            dirs = [path]
        else:  # an output root holding several studies
            if studies is None:
                studies = [
                    {storage.name(x): x for x in storage.subdirs(d)}
                    for name, d in subs.items()
                    if name.startswith("study=")
                ]
            dirs = [study[kind] for study in studies if kind in study]
        found[kind] = [
            p
            for d in dirs
            for p in storage.files(d)
            if storage.name(p).endswith(".parquet") and not storage.name(p).startswith((".", "_"))
        ]
    return found


class NewerResultsError(ValueError):
    """Results written by a newer harness (a higher ``schema_version``): never damaged, never
    overwritten, never skipped; this code cannot read them."""

    def __init__(self, files: Mapping[Location, int]) -> None:
        self.files = {storage.location(p): v for p, v in files.items()}
        shown = "; ".join(f"{p} (version {v})" for p, v in list(self.files.items())[:3])
        more = f" and {len(self.files) - 3} more" if len(self.files) > 3 else ""
        super().__init__(
            f"{len(self.files)} results file(s) were written by a newer harness (schema "
            f"version above this code's {SCHEMA_VERSION}): {shown}{more}. They are kept as they "
            "are; upgrade the harness to read or add to them (pip install -U gere-harness, or "
            "git pull), or write these results to another out"
        )

    def __reduce__(self):
        return (type(self), (self.files,))


class DamagedResultsError(ValueError):
    """Results files that cannot be read: ``problems`` maps each file's path to the reason.

    The message lists every damaged file (not just the first) and how to proceed.
    """

    def __init__(self, problems: Mapping[Location, str]) -> None:
        self.problems: dict[Location, str] = {
            storage.location(p): str(r) for p, r in problems.items()
        }
        n = len(self.problems)
        lines = [f"{n} damaged results file(s) (unreadable, so their records were not read):"]
        lines += [f"  {p}: {r}" for p, r in self.problems.items()]
        lines.append(
            "Delete or re-run those trials, or pass skip_damaged=True / --skip-damaged to read "
            "the rest."
        )
        super().__init__("\n".join(lines))

    def __reduce__(self):  # pickles (e.g. across Ray workers) with its problems, not its text
        return (type(self), (self.problems,))


_UNREADABLE = (pa.ArrowException, OSError, EOFError, ValueError)
"""What reading a broken Parquet file raises: ArrowInvalid (not Parquet, truncated: "magic bytes
not found"), OSError (corrupt footer or pages, unreadable file), and friends."""


def _load_file(path: Location, kind: str) -> pa.Table:
    """Read and validate one trial file; raise ValueError(reason) without the path.

    An object is fetched whole first: failing to reach it (network, permissions) raises
    OSError as it is, never "damaged" (which would make a study re-run a completed trial)."""
    if storage.is_uri(path):
        data = storage.read_bytes(path)
        source, size = pa.BufferReader(data), len(data)
    else:
        source, size = path, None
    try:
        table = pq.ParquetFile(source).read()
    except _UNREADABLE as e:
        if size is None:
            try:
                size = storage.size(path)
            except OSError:
                size = 0
        raise ValueError(
            f"not a readable Parquet file ({size} bytes; truncated or corrupt?): "
            f"{type(e).__name__}: {e}"
        ) from e
    table = upgrade(kind, table)  # schema version 1 -> the current one
    if "schema_version" in table.column_names:
        try:
            versions = sorted(
                {v for v in table.column("schema_version").to_pylist() if v is not None}
            )
        except (TypeError, *_UNREADABLE):  # a mistyped column: validate_table names its type
            versions = []
        if versions and max(versions) > SCHEMA_VERSION:
            raise NewerResultsError({"": max(versions)})
        if versions and versions != [SCHEMA_VERSION]:
            raise ValueError(
                f"schema_version {versions} but this code reads version {SCHEMA_VERSION}; "
                "re-run the trial or migrate the file"
            )
    table = with_added_columns(kind, table)  # written before a column was added: null
    validate_table(kind, table)
    return table.select(schema_for(kind).names)


def _read_file(path: Location, kind: str) -> pa.Table:
    """Read one trial file; a damaged one raises ``DamagedResultsError`` naming it.

    Other schema versions are refused by name before columns are compared.
    """
    try:
        return _load_file(path, kind)
    except NewerResultsError as e:
        raise NewerResultsError({path: max(e.files.values())}) from None
    except ValueError as e:
        raise DamagedResultsError({path: str(e)}) from e


def _read_kinds(
    path: Location, kinds: Iterable[str]
) -> tuple[dict[str, list[pa.Table]], dict[Location, str]]:
    """Every readable file's table per kind, and ``{path: reason}`` for the damaged ones."""
    tables: dict[str, list[pa.Table]] = {}
    problems: dict[Location, str] = {}
    kinds = list(kinds)
    for kind in kinds:
        schema_for(kind)
    for kind, files in _kind_files(path, kinds).items():
        tables[kind] = []
        newer: dict[Location, int] = {}
        loaded: list[tuple[Location, pa.Table]] = []
        for p in files:
            try:
                loaded.append((p, _load_file(p, kind)))
            except NewerResultsError as e:
                newer[p] = max(e.files.values())
            except ValueError as e:
                problems[p] = str(e)
        if newer:  # not damaged, and not to be skipped (a study would re-run and replace them)
            raise NewerResultsError(newer)
        copies = _copies(loaded)
        problems.update(copies)
        tables[kind] = [t for p, t in loaded if p not in copies]
    return tables, problems


def _copies(loaded: list[tuple[Location, pa.Table]]) -> dict[Location, str]:
    """``{path: reason}`` for files of one kind that hold a trial another file read in the same
    call holds too: a copy (a duplicated download ``x (1).parquet``, a backup of the study
    folder beside it), whose rows would count twice. Of each group the file where the harness
    writes that trial is kept (else the first by path); a single file is never a copy."""
    groups: dict[tuple[str, str], list[Location]] = {}
    for path, table in loaded:
        if table.num_rows:
            key = (table.column("study")[0].as_py(), table.column("trial_id")[0].as_py())
            groups.setdefault(key, []).append(path)
    out: dict[Location, str] = {}
    for (study, trial_id), paths in groups.items():
        if len(paths) < 2:
            continue
        paths = sorted(paths, key=str)
        home = [p for p in paths if _written_here(p, study, trial_id)]
        keep = home[0] if home else paths[0]
        for p in paths:
            if p != keep:
                out[p] = (
                    f"a copy of {keep} (trial {trial_id!r} of study {study!r}): its rows would "
                    "count twice; delete it or move it out of the results folder"
                )
    return out


def _written_here(path: Location, study: str, trial_id: str) -> bool:
    """Whether ``path`` is where :func:`write_records` puts this trial's file."""
    folder = storage.name(storage.parent(storage.parent(path)))
    named = storage.name(path) == f"{safe_name(trial_id)}.parquet"
    return named and folder == f"study={safe_name(study)}"


def _settle(problems: dict[Location, str], skip_damaged: bool) -> None:
    """Raise for the damaged files, or (skipping them) warn about each one."""
    if not problems:
        return
    if not skip_damaged:
        raise DamagedResultsError(problems)
    for p, reason in problems.items():
        log.warning("skipping damaged results file %s: %s", p, reason)


def _frame(kind: str, tables: list[pa.Table]) -> pd.DataFrame:
    if not tables:
        return schema_for(kind).empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def read_records(
    path_or_study_dir: Location, kind: str, *, skip_damaged: bool = False
) -> pd.DataFrame:
    """Every trial's records of one kind as one DataFrame, each file validated first.

    Accepts a study dir (``<out>/study=<s>``), the kind dir inside it, one ``.parquet`` file,
    or an output root with several ``study=*`` dirs. A kind with no files gives an empty
    DataFrame with the schema's columns, so analysis code needs no special case; a path that
    does not exist raises FileNotFoundError, since that is a typo rather than an empty study.

    Damaged files (not Parquet, truncated, wrong schema or version) raise one
    ``DamagedResultsError`` naming them all; with ``skip_damaged=True`` each is logged as a
    warning and the other files are returned.
    """
    tables, problems = _read_kinds(storage.location(path_or_study_dir), [kind])
    _settle(problems, skip_damaged)
    return _frame(kind, tables[kind])


def read_trial_rows(out: Location, kind: str, *, study: str, trial_id: str) -> list[dict]:
    """One trial's stored rows of one kind as plain dicts, without the filled columns
    (schema_version, study, trial_id) so they can be written back; [] if none are stored.
    A damaged file raises ``DamagedResultsError`` naming it."""
    path = record_path(out, kind, study=study, trial_id=trial_id)
    if not storage.is_file(path):
        return []
    rows = _read_file(path, kind).to_pylist()
    for r in rows:
        for c in FILLED:
            r.pop(c, None)
    return rows


def _file_kinds(path: Location) -> list[str]:
    """The kind(s) a single file passed to ``read_study`` is read as: its directory's name,
    else the kind its schema metadata names, else every kind (it will then be refused)."""
    if storage.name(storage.parent(path)) in KINDS:
        return [storage.name(storage.parent(path))]
    try:
        source = pa.BufferReader(storage.read_bytes(path)) if storage.is_uri(path) else path
        meta = pq.read_schema(source).metadata or {}
    except _UNREADABLE:
        meta = {}
    kind = meta.get(b"kind", b"").decode(errors="replace")
    return [kind] if kind in KINDS else list(KINDS)


def read_study(path: Location, *, skip_damaged: bool = False) -> dict[str, pd.DataFrame]:
    """``read_records`` for every kind: ``{kind: DataFrame}``.

    Damaged files of every kind are collected first and reported together in one
    ``DamagedResultsError``; with ``skip_damaged=True`` each is logged and skipped. Given one
    ``.parquet`` file, only its kind (its directory's name) is read from it. ``path`` may be an
    object-store URI (``s3://bucket/prefix/study=<name>``; :mod:`results.storage`).
    """
    path = storage.location(path)
    kinds = _file_kinds(path) if storage.is_file(path) else list(KINDS)
    tables, problems = _read_kinds(path, kinds)
    _settle(problems, skip_damaged)
    return {kind: _frame(kind, tables.get(kind, [])) for kind in KINDS}


def damaged_files(path: Location, kinds: Iterable[str] | None = None) -> dict[Location, str]:
    """``{path: reason}`` for every unreadable results file of ``kinds`` (default: all) under
    a study dir, kind dir, file or output root; ``{}`` when every file reads and validates.
    Each file is read in full (that is what finds a damaged page), one at a time."""
    path = storage.location(path)
    problems: dict[Location, str] = {}
    kinds = list(kinds) if kinds is not None else list(KINDS)
    for kind in kinds:
        schema_for(kind)
    newer: dict[Location, int] = {}
    for kind, files in _kind_files(path, kinds).items():
        loaded: list[tuple[Location, pa.Table]] = []
        for p in files:
            try:
                loaded.append((p, _load_file(p, kind)))
            except NewerResultsError as e:
                newer[p] = max(e.files.values())
            except ValueError as e:
                problems[p] = str(e)
        problems.update(_copies(loaded))
    if newer:
        raise NewerResultsError(newer)
    return problems


def trial_problems(out: Location, *, study: str, trial_id: str, kinds: Iterable[str]) -> list[str]:
    """What is wrong with one trial's stored files: one string per kind in ``kinds`` whose
    file is missing or damaged (``"<kind>: ..."`` naming the path and reason); ``[]`` if every
    file reads and validates. A zero-row file is readable, hence not a problem here."""
    found = []
    for kind in kinds:
        path = record_path(out, kind, study=study, trial_id=trial_id)
        if not storage.is_file(path):
            found.append(f"{kind}: no file {path}")
            continue
        try:
            _load_file(path, kind)
        except ValueError as e:
            found.append(f"{kind}: damaged file {path}: {e}")
    return found
