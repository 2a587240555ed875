"""Where results live: a local directory, or an object store through pyarrow's filesystems.

An output location is a local path or a URI: ``s3://bucket/prefix`` (AWS S3 or any
S3-compatible store: MinIO, Ceph, R2, ...), ``gs://bucket/prefix`` (Google Cloud Storage), or any
other scheme ``pyarrow.fs.FileSystem.from_uri`` knows; ``file://`` is a local path. Local paths
are handled as :class:`pathlib.Path` objects and URIs stay strings, so the same functions take
both (:data:`Location`).

Credentials and endpoints are configured the standard way and read by Arrow's own clients:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or ``AWS_PROFILE``, an instance role, ...),
``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` for S3-compatible stores;
``GOOGLE_APPLICATION_CREDENTIALS`` or the machine's service account for GCS.

Writes: on a local disk or NFS a file is written to a dot-prefixed temp file beside it, synced
and renamed over the target (``os.replace``), so readers never see half a file. Object stores
have no rename; there an object becomes visible only once its upload completes (S3's
``CompleteMultipartUpload``, GCS's final write), whole or not at all, and a key written again
is replaced whole. Results therefore use one key per trial and record kind and write the
summary last (:mod:`results.io`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import pyarrow.fs as pafs

Location = str | Path
"""A local path (``Path``) or an object-store URI (``str``)."""

__all__ = [
    "Location",
    "check_writable",
    "delete",
    "exists",
    "files",
    "is_dir",
    "is_file",
    "is_uri",
    "join",
    "location",
    "name",
    "open_input",
    "parent",
    "read_bytes",
    "size",
    "subdirs",
    "upload_dir",
    "write",
]


def is_uri(loc: Location) -> bool:
    """Whether ``loc`` names an object store (``scheme://...``; ``file://`` is local)."""
    text = str(loc)
    return "://" in text and not text.startswith("file://")


def location(loc: Location) -> Location:
    """``loc`` normalised: a URI as a string (no trailing '/'), anything else as a Path."""
    text = str(loc)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if is_uri(text):
        return text.rstrip("/")
    return Path(loc)


def join(base: Location, *parts: str) -> Location:
    """``base / part / ...`` for either kind of location."""
    base = location(base)
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return "/".join([base, *(p.strip("/") for p in parts)])


def name(loc: Location) -> str:
    """The last part of ``loc`` (a file or folder name)."""
    loc = location(loc)
    return loc.name if isinstance(loc, Path) else loc.rsplit("/", 1)[-1]


def parent(loc: Location) -> Location:
    loc = location(loc)
    return loc.parent if isinstance(loc, Path) else loc.rsplit("/", 1)[0]


_FILESYSTEMS: dict[tuple, pafs.FileSystem] = {}


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) of a URI; one filesystem object per scheme, bucket
    and endpoint setting (creating an S3 client resolves the bucket's region)."""
    parts = urlsplit(uri)
    if parts.query:
        raise ValueError(
            f"{uri!r}: options in the URI ('?{parts.query}') are not supported; set the "
            "endpoint and credentials in the environment (AWS_ENDPOINT_URL, ...)"
        )
    key = (parts.scheme, parts.netloc, os.environ.get("AWS_ENDPOINT_URL"))
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = pafs.FileSystem.from_uri(f"{parts.scheme}://{parts.netloc}")[0]
    return _FILESYSTEMS[key], f"{parts.netloc}{parts.path}".rstrip("/")


def _info(loc: Location) -> pafs.FileType:
    loc = location(loc)
    if isinstance(loc, Path):
        return (
            pafs.FileType.File
            if loc.is_file()
            else pafs.FileType.Directory
            if loc.is_dir()
            else pafs.FileType.NotFound
        )
    fs, path = _fs(loc)
    return fs.get_file_info(path).type


def is_file(loc: Location) -> bool:
    return _info(loc) == pafs.FileType.File


def is_dir(loc: Location) -> bool:
    """A directory, or on an object store a prefix that some key starts with."""
    return _info(loc) == pafs.FileType.Directory


def exists(loc: Location) -> bool:
    return _info(loc) != pafs.FileType.NotFound


def _children(loc: Location) -> list[tuple[Location, bool]]:
    """(child, is_file) for each entry directly under ``loc``, sorted by name (one listing call
    on an object store)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return [(p, p.is_file()) for p in sorted(loc.iterdir())]
    fs, path = _fs(loc)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    return sorted(
        ((join(loc, i.base_name), i.type == pafs.FileType.File) for i in infos),
        key=lambda c: name(c[0]),
    )


def files(loc: Location) -> list[Location]:
    """The files directly under ``loc``, sorted by name."""
    return [child for child, file in _children(loc) if file]


def subdirs(loc: Location) -> list[Location]:
    """The folders (prefixes) directly under ``loc``, sorted by name."""
    return [child for child, file in _children(loc) if not file]


def size(loc: Location) -> int:
    """Size in bytes (0 if it does not exist)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return loc.stat().st_size if loc.exists() else 0
    fs, path = _fs(loc)
    info = fs.get_file_info(path)
    return int(info.size or 0) if info.type == pafs.FileType.File else 0


def open_input(loc: Location) -> IO[bytes]:
    """A binary, seekable reader of the file (close it, or use ``with``)."""
    loc = location(loc)
    if isinstance(loc, Path):
        return open(loc, "rb")
    fs, path = _fs(loc)
    return fs.open_input_file(path)


def write(loc: Location, fill: Callable[[IO[bytes]], object]) -> Location:
    """Write a file whole: ``fill(f)`` writes its bytes to ``f``.

    Local: into a dot-prefixed temp file beside the target (unique per call, so racing writers
    never share one), fsync'ed, then ``os.replace``'d over it; on failure the temp file is
    removed and the target is untouched. Object store: one upload to the key, which becomes
    visible (replacing an older object whole) only when it completes; a failed upload leaves
    the key as it was.
    """
    loc = location(loc)
    if isinstance(loc, Path):
        loc.parent.mkdir(parents=True, exist_ok=True)
        tmp = loc.with_name(f".{loc.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())  # the rename must not become visible before the data
            os.replace(tmp, loc)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return loc
    import pyarrow as pa

    buffer = pa.BufferOutputStream()  # whole in memory first: closing an object-store stream
    fill(buffer)  # completes its upload, so a failure inside fill must happen before it opens
    data = buffer.getvalue()
    fs, path = _fs(loc)
    with fs.open_output_stream(path) as f:
        f.write(data)
    return loc


def read_bytes(loc: Location) -> bytes:
    """The whole file. On an object store a failure to reach it (network, permissions) raises
    OSError here, apart from whatever its bytes turn out to be."""
    with open_input(loc) as f:
        return f.read()


def delete(loc: Location) -> None:
    """Remove a file (nothing if it does not exist)."""
    loc = location(loc)
    if isinstance(loc, Path):
        loc.unlink(missing_ok=True)
        return
    fs, path = _fs(loc)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def upload_dir(local: Path, dest: Location) -> Location:
    """Copy the local folder ``local`` to ``dest`` (a URI, or another local folder)."""
    dest = location(dest)
    if isinstance(dest, Path):
        import shutil

        shutil.copytree(local, dest, dirs_exist_ok=True)
        return dest
    fs, path = _fs(dest)
    pafs.copy_files(str(local), path, destination_filesystem=fs)
    return dest


_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), AWS_DEFAULT_REGION, and "
    "AWS_ENDPOINT_URL for an S3-compatible store",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS or the machine's service account",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS or the machine's service account",
}


def check_writable(loc: Location, what: str) -> str | None:
    """A problem naming ``what`` (e.g. ``--out``) and the fix if a probe file cannot be written
    under ``loc`` and removed again, else None. The probe's name starts with '_' (readers skip
    it). For an object store this is one small PUT and DELETE: the bucket exists, the
    credentials reach it and allow writes."""
    loc = location(loc)
    if isinstance(loc, Path):
        raise TypeError(
            "check_writable takes object-store URIs; local folders are checked by the caller"
        )
    scheme = urlsplit(loc).scheme
    probe = join(loc, f"_write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        fs, path = _fs(str(probe))
        with fs.open_output_stream(path) as f:
            f.write(b"")
        fs.delete_file(path)
    except (OSError, ValueError) as exc:  # pyarrow raises OSError (ArrowInvalid: ValueError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        how = _CREDENTIALS.get(scheme, "the credentials pyarrow's filesystem for it reads")
        return (
            f"{what} {loc!r}: cannot write there ({first}); check that the bucket exists and "
            f"the credentials allow writes ({how})"
        )
    return None
