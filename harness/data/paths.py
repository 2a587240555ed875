"""Where the data lives, and the one exception type every data problem raises.

Benchmark data is never part of the repository: it is read through a path setting
(``$GERE_DATA_DIR`` or an explicit ``--data.root``) with ``<repo>/../shared/data`` as the
development fallback, so the same code runs on a laptop, in CI and on a cluster.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from harness.config.validate import DATA_ENV_VAR as ENV_VAR  # one name for config and data

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The directory that contains ``harness/``."""


class DataError(ValueError):
    """A data file, directory or setting is missing or malformed.

    Messages name the file or value, the rule it breaks, and how to fix it, because these
    errors usually surface on a cluster long after the command was typed.
    """


def default_data_root() -> Path | None:
    """The data root implied by the environment, or None if there is none.

    ``$GERE_DATA_DIR`` wins when set (and must exist: a typo there should fail loudly, not
    fall back to other data); otherwise ``<repo root>/../shared/data`` if it exists.
    """
    value = os.environ.get(ENV_VAR)
    if value:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise DataError(
                f"${ENV_VAR}={value!r} is not a directory; point it at the data root "
                f"(the directory holding long_sequence/, general/, mmlu/) or unset it"
            )
        return path
    fallback = REPO_ROOT.parent / "shared" / "data"
    return fallback if fallback.is_dir() else None


def resolve_data_root(explicit: str | Path | None) -> Path:
    """The data root to use: ``explicit`` if given (it must exist), else the default."""
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if not path.is_dir():
            raise DataError(
                f"data root {str(explicit)!r} is not a directory; pass an existing directory "
                f"as --data.root or set ${ENV_VAR}"
            )
        return path
    path = default_data_root()
    if path is None:
        raise DataError(
            f"no data root: --data.root was not given, ${ENV_VAR} is unset and "
            f"{REPO_ROOT.parent / 'shared' / 'data'} does not exist; set ${ENV_VAR} or "
            f"pass --data.root"
        )
    return path


def resolve_source_path(source: str | Path, root: Path | None, *, what: str) -> Path:
    """Resolve a data file or directory given as an absolute path or relative to ``root``.

    A relative path with no root is taken relative to the working directory, which is what
    a user typing a path on the command line expects.
    """
    path = Path(source).expanduser()
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.exists():
        hint = f" (relative to data root {root})" if root is not None else ""
        raise DataError(
            f"{what} {str(source)!r} not found: tried {path}{hint}; give an absolute path "
            f"or a path relative to the data root (${ENV_VAR} / --data.root)"
        )
    return path


_CONTAINERS = (  # magic bytes -> (name, how to open it: a stdlib module, or None)
    (b"\x1f\x8b", "gzip-compressed", "gzip"),
    (b"BZh", "bzip2-compressed", "bz2"),
    (b"\xfd7zXZ\x00", "xz-compressed", "lzma"),
    (b"\x28\xb5\x2f\xfd", "zstandard-compressed (.zst, as SlimPajama ships)", "zstandard"),
    (b"PK\x03\x04", "a zip archive", None),
    (b"\xff\xfe", "UTF-16 text (little-endian)", None),
    (b"\xfe\xff", "UTF-16 text (big-endian)", None),
)


def read_text(path: Path) -> str:
    """A data file's text: UTF-8 (a byte-order mark is dropped), or the same compressed with
    gzip, bzip2, xz or zstandard (decompressed transparently; zstandard needs the
    ``zstandard`` package). Anything else is named for what it is: a zip archive, UTF-16 or
    another encoding, with the command that fixes it."""
    raw = path.read_bytes()
    for magic, what, module in _CONTAINERS:
        if not raw.startswith(magic):
            continue
        if module is None and what.startswith("UTF-16"):
            raise DataError(
                f"{path}: {what}, not UTF-8; re-encode it, e.g. iconv -f utf-16 -t utf-8 "
                f"{path.name} > fixed.{path.suffix.lstrip('.')}"
            )
        if module is None:
            raise DataError(f"{path}: {what}, not a text file; extract it (unzip {path.name})")
        try:
            if module == "zstandard":
                import zstandard

                raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
            else:
                raw = __import__(module).decompress(raw)
        except ImportError:
            raise DataError(
                f"{path}: {what}; decompress it first (zstd -d {path.name}) or "
                "pip install zstandard to read it as it is"
            ) from None
        except (OSError, EOFError, ValueError) as exc:
            raise DataError(
                f"{path}: {what}, but it does not decompress ({exc}); the file is truncated "
                "or corrupt: download or export it again"
            ) from None
        break
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from e


def not_utf8(path: Path, e: UnicodeDecodeError) -> DataError:
    """The error for a text file that is not UTF-8: the file, the byte offset, the fix."""
    return DataError(
        f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start : e.start + 4]!r} "
        f"cannot be decoded: {e.reason}); re-encode the file as UTF-8, e.g. "
        f"iconv -f latin1 -t utf-8 {path.name} > fixed.{path.suffix.lstrip('.')}"
    )
