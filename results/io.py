"""Write and read trial records as Parquet: one file per (study, kind, trial).

Layout: ``<out>/study=<study>/<kind>/<trial_id>.parquet``. Because a trial's file is named by
its deterministic id, a retried or re-run trial *replaces* its rows instead of duplicating
them. Writes are atomic on local disks and NFS: a dot-prefixed temp file in the same directory
is renamed over the target with ``os.replace``, and dot files are skipped by this reader and by
``pyarrow.dataset``, so nobody ever reads half a file. (Object stores have no atomic rename;
there the unique per-trial key is what prevents duplicates.)
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from results.schema import FILLED, KINDS, SCHEMA_VERSION, schema_for, to_table, validate_table

__all__ = [
    "read_records",
    "read_study",
    "record_path",
    "safe_name",
    "study_dir",
    "write_records",
]

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


def study_dir(out: str | Path, study: str) -> Path:
    """``<out>/study=<study>`` (the study name sanitised like trial ids)."""
    return Path(out) / f"study={safe_name(study)}"


def record_path(out: str | Path, kind: str, *, study: str, trial_id: str) -> Path:
    """Where ``write_records`` puts one trial's records of one kind."""
    schema_for(kind)  # unknown kinds fail here, with a suggestion
    return study_dir(out, study) / kind / f"{safe_name(trial_id)}.parquet"


def write_records(
    out: str | Path,
    kind: str,
    rows: list[dict] | pd.DataFrame,
    *,
    study: str,
    trial_id: str,
) -> Path:
    """Validate ``rows`` against the kind's schema and atomically (re)place the trial's file.

    Returns the file's path. Directories are created as needed. The temp name is unique per
    call so two attempts of the same trial racing each other cannot corrupt one temp file;
    the last ``os.replace`` wins with a complete file.
    """
    table = to_table(kind, rows, study=study, trial_id=trial_id)
    path = record_path(out, kind, study=study, trial_id=trial_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())  # the rename must not become visible before the data
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _kind_files(path: Path, kind: str) -> list[Path]:
    """The visible ``.parquet`` files of one kind under a file, kind dir, study dir or root."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no results at {path} (expected <out>/study=<study>)")
    if (path / kind).is_dir():
        dirs = [path / kind]
    elif path.name == kind:
        dirs = [path]
    else:  # an output root holding several studies
        dirs = sorted(d / kind for d in path.glob("study=*") if (d / kind).is_dir())
    return [
        p
        for d in dirs
        for p in sorted(d.iterdir())
        if p.suffix == ".parquet" and p.is_file() and not p.name.startswith((".", "_"))
    ]


def _read_file(path: Path, kind: str) -> pa.Table:
    """Read one trial file; refuse other schema versions by name before comparing columns."""
    table = pq.ParquetFile(path).read()
    if "schema_version" in table.column_names:
        versions = sorted({v for v in table.column("schema_version").to_pylist() if v is not None})
        if versions and versions != [SCHEMA_VERSION]:
            raise ValueError(
                f"{path}: schema_version {versions} but this code reads version "
                f"{SCHEMA_VERSION}; re-run the trial or migrate the file"
            )
    try:
        validate_table(kind, table)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return table.select(schema_for(kind).names)


def read_records(path_or_study_dir: str | Path, kind: str) -> pd.DataFrame:
    """Every trial's records of one kind as one DataFrame, each file validated first.

    Accepts a study dir (``<out>/study=<s>``), the kind dir inside it, one ``.parquet`` file,
    or an output root with several ``study=*`` dirs. A kind with no files gives an empty
    DataFrame with the schema's columns, so analysis code needs no special case; a path that
    does not exist raises, since that is a typo rather than an empty study.
    """
    schema = schema_for(kind)
    tables = [_read_file(p, kind) for p in _kind_files(Path(path_or_study_dir), kind)]
    if not tables:
        return schema.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def read_trial_rows(out: str | Path, kind: str, *, study: str, trial_id: str) -> list[dict]:
    """One trial's stored rows of one kind as plain dicts, without the filled columns
    (schema_version, study, trial_id) so they can be written back; [] if none are stored."""
    path = record_path(out, kind, study=study, trial_id=trial_id)
    if not path.is_file():
        return []
    rows = _read_file(path, kind).to_pylist()
    for r in rows:
        for c in FILLED:
            r.pop(c, None)
    return rows


def read_study(path: str | Path) -> dict[str, pd.DataFrame]:
    """``read_records`` for every kind: ``{kind: DataFrame}``."""
    return {kind: read_records(path, kind) for kind in KINDS}
