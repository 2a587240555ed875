"""``python -m harness data prepare long-sequence --dest DIR``: fetch the Long-Sequence tasks.

Downloads ``train.json``, ``test.json`` and ``labels.json`` of the 15 tasks (yelp, amazon,
mnli, cb, copa, qqp, rte, imdb, sst2, dbpedia, agnews, yahoo, multirc, boolq, wic) from their
public release, pinned to one commit (harness/data/release.py: github.com/circle-hit/SAPT,
``CL_Benchmark/Long_Sequence``), and writes ``DIR/<task>/{train,test,labels}.json``: the layout
harness/data/benchmark.py reads (use ``--data.root DIR``, or the parent of DIR when DIR is
``<root>/long_sequence``).

* Every file is checked against its checksum. A mismatch or a missing file is an error naming
  it and leaves no task folder behind: a task is assembled in a temporary directory inside DIR
  and moved into place only once all its files verified. Tasks finished before the error stay
  (complete and verified); re-running fetches the rest.
* A task folder already in DIR is verified and skipped. One that does not match the release is
  an error before anything is downloaded: prepare never overwrites data (move it aside).
* ``--source`` replaces the base the files are fetched from: an ``http(s)://`` or ``file://``
  URL, or a local directory, holding ``<task>/<file>`` as the release does. The files must
  still match the pinned checksums, unless ``--checksums FILE`` gives others.
* The release's ``dev.json`` is byte-identical to ``test.json`` in every task, so it is not
  fetched; every task has a ``labels.json``, so none is derived. The published label quirks
  (qqp's outputs ``no``/``yes`` under labels ``False``/``True``, mnli's unlabelled ``-`` test
  instances) are kept as published and shown in the report; ``data.label_policy`` handles them.

Licence: the data is for research use under its source datasets' own licences; the notes are
in :data:`harness.data.release.LICENCE`, printed by ``--help``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.benchmark import LONG_SEQUENCE_TASKS, _read_labels, _read_split
from harness.data.paths import DataError
from harness.data.release import (
    BASE_URL,
    COMMIT,
    FILES,
    LICENCE,
    PATH,
    REPOSITORY,
    TASK_FILES,
    Checksum,
)
from harness.suggest import did_you_mean

DATASETS = ("long-sequence",)
"""What ``python -m harness data prepare`` can fetch."""

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for the server to answer each file request."""

_HEX = {"sha256": 64, "git_blob": 40}


@dataclass(frozen=True)
class TaskReport:
    """What prepare did with one task, and what the task holds."""

    task: str
    action: str
    """``fetched`` or ``skipped`` (already present and verified)."""
    train: int
    test: int
    labels: tuple[str, ...]
    unknown_outputs: dict[str, int] = field(default_factory=dict)
    """Outputs not in labels.json (both splits) and how often they occur."""

    def line(self) -> str:
        shown = ", ".join(self.labels[:6]) + (", ..." if len(self.labels) > 6 else "")
        text = (
            f"{self.action:<8} {self.task:<8} train {self.train:>5}  test {self.test:>5}  "
            f"labels {len(self.labels)} ({shown})"
        )
        if self.unknown_outputs:
            counts = ", ".join(f"{k!r} x{n}" for k, n in self.unknown_outputs.items())
            text += f"\n{'':<18}outputs not in labels.json: {counts} (see --data.label_policy)"
        return text


def prepare_long_sequence(
    dest: str | Path,
    *,
    source: str | Path | None = None,
    tasks: Sequence[str] | None = None,
    checksums: Mapping[str, Checksum] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> list[TaskReport]:
    """Fetch, verify and write the tasks into ``dest``; returns one report per task.

    source: the base holding ``<task>/<file>`` (default :data:`~harness.data.release.BASE_URL`,
    the pinned commit). checksums: ``"<task>/<file>"`` -> :class:`Checksum` (default the
    pinned release's); tasks: a subset (default every task the checksums cover).
    progress: called with a line per file fetched. Raises DataError before downloading
    anything when an argument or an existing task folder is wrong.
    """
    checksums = FILES if checksums is None else checksums
    names = _check_tasks(tasks, checksums)
    if not timeout > 0:
        raise DataError(f"timeout={timeout}; give the seconds to wait per file, above 0")
    base = _base(source)
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise DataError(f"--dest {str(dest)!r} exists and is not a directory; give a directory")
    present = _verify_present(dest, names, checksums)
    reports = {t: _inspect(dest / t, t, "skipped") for t in present}
    missing = [t for t in names if t not in present]
    if missing:
        created = not dest.exists()
        try:
            dest.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=dest))
        except OSError as exc:
            raise DataError(
                f"--dest {str(dest)!r} cannot be written ({exc.strerror or exc}); give a "
                "writable directory"
            ) from None
        try:
            for task in missing:
                folder = staging / task
                folder.mkdir()
                for name in TASK_FILES:
                    url = f"{base}/{task}/{name}"
                    if progress:
                        progress(f"fetching {url}")
                    data = _fetch(url, f"{task}/{name}", base, timeout)
                    problem = _mismatch(data, checksums[f"{task}/{name}"])
                    if problem:
                        raise DataError(
                            f"{task}/{name} from {url} does not match its checksum ({problem}): "
                            f"a damaged download or a different copy of the release. Nothing "
                            f"was written for {task!r}; re-run to retry, or check --source"
                        )
                    (folder / name).write_bytes(data)
                try:
                    report = _inspect(folder, task, "fetched")
                except DataError as exc:  # name the source, not the staging folder
                    raise DataError(
                        str(exc).replace(str(folder), f"{base}/{task}")
                        + f" (fetched from {base}/{task}; nothing was written for {task!r})"
                    ) from None
                os.replace(folder, dest / task)
                reports[task] = report
        except OSError as exc:  # a full or read-only disk while writing
            raise DataError(
                f"--dest {str(dest)!r}: writing failed ({exc.strerror or exc}); free space or "
                "pick another directory and re-run (finished tasks are kept, verified)"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not any(dest.iterdir()):
                dest.rmdir()  # a failed first run leaves nothing behind
    return [reports[t] for t in names]


def _check_tasks(tasks: Sequence[str] | None, checksums: Mapping[str, Checksum]) -> list[str]:
    covered = list(dict.fromkeys(key.split("/")[0] for key in checksums))
    order = [t for t in LONG_SEQUENCE_TASKS if t in covered] + [
        t for t in covered if t not in LONG_SEQUENCE_TASKS
    ]
    names = order if tasks is None else [str(t).strip() for t in tasks if str(t).strip()]
    if not names:
        raise DataError("no tasks to prepare; give task names, e.g. --tasks yelp,amazon")
    for name in names:
        if name not in covered:
            raise DataError(
                f"unknown task {name!r}{did_you_mean(name, covered)}; the release has "
                f"{', '.join(order)}"
            )
        for file in TASK_FILES:
            want = checksums.get(f"{name}/{file}")
            if want is None or not (want.sha256 or want.git_blob):
                raise DataError(
                    f"no checksum for {name}/{file}; every file of a task needs a sha256 or a "
                    f"git_blob in the checksums"
                )
    return names


def _base(source: str | Path | None) -> str:
    if source is None:
        return BASE_URL
    text = str(source)
    if "://" in text:
        scheme = urllib.parse.urlsplit(text).scheme
        if scheme not in ("http", "https", "file"):
            raise DataError(
                f"--source {text!r}: scheme {scheme!r} is not supported; give an http(s):// "
                f"or file:// URL, or a local directory"
            )
        return text.rstrip("/")
    path = Path(text).expanduser()
    if not path.is_dir():
        raise DataError(
            f"--source {text!r} is neither a URL (https://..., file://...) nor an existing "
            f"directory; give the directory that holds <task>/train.json, test.json and "
            f"labels.json (the layout of {REPOSITORY}'s {PATH}/)"
        )
    return path.resolve().as_uri()


def _fetch(url: str, what: str, base: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "gere-harness data prepare"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise DataError(
                f"{what} is missing from the source {base} ({url}: HTTP 404); each task needs "
                f"{', '.join(TASK_FILES)}; check --source (default: the pinned release)"
            ) from e
        raise DataError(f"could not fetch {what} from {url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError | NotADirectoryError):
            raise DataError(
                f"{what} is missing from the source {base} (no file {url}); each task needs "
                f"{', '.join(TASK_FILES)}; check --source"
            ) from e
        raise DataError(_offline(url, e.reason, timeout)) from e
    except TimeoutError as e:
        raise DataError(_offline(url, e, timeout)) from e


def _offline(url: str, reason: object, timeout: float) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return (
        f"could not fetch {url} ({reason}; waited up to {timeout:g}s): this machine cannot "
        f"reach {host}, e.g. it is offline. Run the command where there is internet, or copy "
        f"the release's {PATH}/ (github.com/{REPOSITORY} at {COMMIT}) here and pass "
        f"--source DIR"
    )


def _mismatch(data: bytes, want: Checksum) -> str | None:
    """Why ``data`` is not the file ``want`` describes, or None when it is."""
    if want.size is not None and len(data) != want.size:
        return f"{len(data)} bytes, expected {want.size}"
    if want.sha256 and (got := hashlib.sha256(data).hexdigest()) != want.sha256:
        return f"SHA-256 {got}, expected {want.sha256}"
    if want.git_blob:
        got = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
        if got != want.git_blob:
            return f"git blob id {got}, expected {want.git_blob}"
    return None


def _verify_present(dest: Path, names: list[str], checksums: Mapping[str, Checksum]) -> list[str]:
    """Tasks already in ``dest`` and verified; DataError if one is there but differs."""
    present, problems = [], []
    for task in names:
        folder = dest / task
        if not folder.exists():
            continue
        bad = []
        for name in TASK_FILES:
            path = folder / name
            if not path.is_file():
                bad.append(f"{path} is missing")
            elif problem := _mismatch(path.read_bytes(), checksums[f"{task}/{name}"]):
                bad.append(f"{path}: {problem}")
        problems.extend(bad)
        if not bad:
            present.append(task)
    if problems:
        raise DataError(
            f"task folders in {dest} do not match the release: {'; '.join(problems)}. prepare "
            f"never overwrites a task folder: move those folders aside (or leave those tasks "
            f"out with --tasks) and re-run"
        )
    return present


def _inspect(folder: Path, task: str, action: str) -> TaskReport:
    """Read the task as the harness loader does (raises DataError if it is malformed)."""
    _, train = _read_split(folder / "train.json")
    _, test = _read_split(folder / "test.json")
    labels = _read_labels(folder / "labels.json")
    unknown = Counter(ex.output for ex in (*train, *test) if ex.output not in labels)
    return TaskReport(task, action, len(train), len(test), labels, dict(unknown.most_common()))


def load_checksums(path: str | Path) -> dict[str, Checksum]:
    """Read ``--checksums FILE``: JSON ``{"<task>/<file>": "<sha256>" | {"sha256": ...,
    "git_blob": ..., "size": ...}}``."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"--checksums {str(path)!r}: cannot read it as JSON ({e})") from e
    if not isinstance(raw, dict):
        raise DataError(f'--checksums {str(path)!r}: expected an object {{"task/file": sha256}}')
    out = {}
    for key, value in raw.items():
        fields = {"sha256": value} if isinstance(value, str) else value
        if not isinstance(fields, dict) or not set(fields) <= {"size", *_HEX}:
            raise DataError(
                f"--checksums {str(path)!r}: {key!r} must map to a SHA-256 hex string or an "
                f"object with sha256, git_blob and/or size"
            )
        for name, length in _HEX.items():
            hexes = fields.get(name)
            ok = isinstance(hexes, str) and len(hexes) == length
            if hexes is not None and not (ok and all(c in "0123456789abcdef" for c in hexes)):
                raise DataError(
                    f"--checksums {str(path)!r}: {key!r} {name} {hexes!r} is not {length} "
                    f"lowercase hex digits"
                )
        out[key] = Checksum(fields.get("size"), fields.get("sha256"), fields.get("git_blob"))
    return out


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data prepare long-sequence`` to the ``python -m harness`` command line."""
    data = subparsers.add_parser(
        "data",
        help="Fetch benchmark data: python -m harness data prepare long-sequence --dest DIR.",
        description="Fetch benchmark data into a data directory.",
    )
    sub = data.add_subparsers(dest="data_command", required=True)
    prepare = sub.add_parser(
        "prepare",
        help="Fetch and verify the 15 Long-Sequence tasks from their pinned public release.",
        description=__doc__.split("\n\n", 1)[1].rsplit("\n\nLicence:", 1)[0],
        epilog=LICENCE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("dataset", choices=DATASETS, help="What to fetch.")
    prepare.add_argument(
        "--dest",
        required=True,
        metavar="DIR",
        help="Task directory to fill (created if missing), e.g. $GERE_DATA_DIR/long_sequence.",
    )
    prepare.add_argument(
        "--source",
        metavar="URL_OR_DIR",
        default=None,
        help=f"Fetch from here instead of the pinned release ({BASE_URL}): an http(s):// or "
        "file:// URL or a directory holding <task>/<file>.",
    )
    prepare.add_argument(
        "--tasks",
        metavar="A,B,...",
        default=None,
        help="Only these tasks (comma-separated; default all 15).",
    )
    prepare.add_argument(
        "--checksums",
        metavar="FILE",
        default=None,
        help='JSON {"<task>/<file>": "<sha256>"} to verify against instead of the pinned '
        "release's checksums (for a --source that is another copy).",
    )
    prepare.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"Seconds to wait for each file's server (default: {DEFAULT_TIMEOUT:g}).",
    )
    prepare.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    dest = Path(args.dest).expanduser()
    try:
        checksums = load_checksums(args.checksums) if args.checksums else None
        tasks = args.tasks.split(",") if args.tasks is not None else None
        print(f"long-sequence: {args.source or BASE_URL} -> {dest}", flush=True)
        reports = prepare_long_sequence(
            dest,
            source=args.source,
            tasks=tasks,
            checksums=checksums,
            timeout=args.timeout,
            progress=lambda line: print(f"  {line}", flush=True),
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        print(f"  {report.line()}")
    fetched = sum(r.action == "fetched" for r in reports)
    root = dest.parent if dest.name == "long_sequence" else dest
    print(
        f"{fetched} fetched, {len(reports) - fetched} skipped (already present, verified); "
        f"read it with --data.root {root} (or GERE_DATA_DIR={root})"
    )
    return 0
