"""``python -m harness data prepare long-sequence``: fetch, verify, write, skip, fail cleanly.

No network: the source is a fixture directory of tiny fake task files (or its ``file://``
URL), and the checksums of those fixture files are passed in place of the pinned release's.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.error
from pathlib import Path

import pytest

from harness.cli import main
from harness.data import LONG_SEQUENCE_TASKS, DataError, load_task, resolve_tasks
from harness.data import prepare as P
from harness.data.release import BASE_URL, COMMIT, FILES, NO_SHA256, TASK_FILES, Checksum

TASKS = ("cb", "copa", "rte")


def _task_files(name: str) -> dict[str, bytes]:
    def split(rows: list[tuple[str, str]]) -> bytes:
        body = {
            "Definition": [f"Answer for {name}."],
            "Positive Examples": [],
            "Negative Examples": [],
            "Instances": [{"input": i, "output": o} for i, o in rows],
        }
        return json.dumps(body).encode()

    return {
        "train.json": split([("one", "yes"), ("two", "no"), ("three", "yes")]),
        "test.json": split([("four", "no"), ("five", "maybe")]),  # 'maybe': not a label
        "labels.json": b'["yes", "no"]',
    }


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, Checksum]]:
    """A source directory in the release's layout and the SHA-256 of each of its files."""
    src = tmp_path / "release"
    checksums = {}
    for task in TASKS:
        (src / task).mkdir(parents=True)
        for name, data in _task_files(task).items():
            (src / task / name).write_bytes(data)
            checksums[f"{task}/{name}"] = Checksum(sha256=hashlib.sha256(data).hexdigest())
        (src / task / "dev.json").write_bytes(_task_files(task)["test.json"])  # not fetched
    return src, checksums


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_a_fresh_prepare_writes_what_the_loader_reads(release, tmp_path: Path) -> None:
    src, checksums = release
    dest = tmp_path / "data" / "long_sequence"
    fetched: list[str] = []
    reports = P.prepare_long_sequence(
        dest, source=src, checksums=checksums, progress=fetched.append
    )
    assert [(r.task, r.action, r.train, r.test, r.labels) for r in reports] == [
        (t, "fetched", 3, 2, ("yes", "no")) for t in TASKS
    ]
    assert reports[0].unknown_outputs == {"maybe": 1}
    assert len(fetched) == 9 and all("dev.json" not in line for line in fetched)
    assert _leftovers(dest) == sorted(TASKS)  # no staging directory left
    for task in TASKS:
        assert sorted(p.name for p in (dest / task).iterdir()) == sorted(TASK_FILES)
        assert (dest / task / "train.json").read_bytes() == (src / task / "train.json").read_bytes()
    # The harness reads it with the data root set to the parent of long_sequence/ ...
    assert resolve_tasks("cb,copa,rte", dest.parent) == (TASKS, ())
    task = load_task(dest.parent, "cb", label_policy="drop_unknown")
    assert (task.definition, task.labels, len(task.train), len(task.test)) == (
        "Answer for cb.",
        ("yes", "no"),
        3,
        1,
    )
    # ... and with the task directory itself as the root.
    assert load_task(dest, "rte", label_policy="drop_unknown").name == "rte"


def test_a_rerun_skips_verified_tasks_and_fetches_only_the_rest(release, tmp_path: Path) -> None:
    src, checksums = release
    dest = tmp_path / "ls"
    P.prepare_long_sequence(dest, source=src, checksums=checksums, tasks=["cb"])
    fetched: list[str] = []
    reports = P.prepare_long_sequence(
        dest, source=src, checksums=checksums, progress=fetched.append
    )
    assert [(r.task, r.action) for r in reports] == [
        ("cb", "skipped"),
        ("copa", "fetched"),
        ("rte", "fetched"),
    ]
    assert not any("/cb/" in line for line in fetched) and len(fetched) == 6
    assert reports[0].train == 3  # a skipped task is still reported with its contents
    again = P.prepare_long_sequence(dest, source=src, checksums=checksums, progress=fetched.append)
    assert {r.action for r in again} == {"skipped"} and len(fetched) == 6


def test_a_checksum_mismatch_fails_and_leaves_no_task_folder(release, tmp_path: Path) -> None:
    src, checksums = release
    (src / "copa" / "test.json").write_bytes(b'{"Instances": []}')
    dest = tmp_path / "ls"
    with pytest.raises(DataError) as info:
        P.prepare_long_sequence(dest, source=src, checksums=checksums)
    msg = str(info.value)
    assert "copa/test.json" in msg and "does not match its checksum" in msg
    assert "SHA-256" in msg and checksums["copa/test.json"].sha256 in msg
    assert "Nothing was written for 'copa'" in msg
    assert _leftovers(dest) == ["cb"]  # cb was complete and stays; no copa, no staging dir


def test_a_missing_file_fails_naming_it(release, tmp_path: Path) -> None:
    src, checksums = release
    (src / "cb" / "labels.json").unlink()
    dest = tmp_path / "fresh"
    with pytest.raises(DataError) as info:
        P.prepare_long_sequence(dest, source=src, checksums=checksums)
    msg = str(info.value)
    assert "cb/labels.json is missing from the source" in msg
    assert "train.json, test.json, labels.json" in msg
    assert not dest.exists()  # a failed first run leaves nothing behind


def test_a_file_url_source_works_like_a_directory(release, tmp_path: Path) -> None:
    src, checksums = release
    reports = P.prepare_long_sequence(
        tmp_path / "ls", source=src.as_uri() + "/", checksums=checksums, tasks=["rte"]
    )
    assert [(r.task, r.action) for r in reports] == [("rte", "fetched")]


def test_an_existing_task_that_differs_is_never_overwritten(release, tmp_path: Path) -> None:
    src, checksums = release
    dest = tmp_path / "ls"
    (dest / "cb").mkdir(parents=True)
    (dest / "cb" / "train.json").write_text("{}", encoding="utf-8")
    fetched: list[str] = []
    with pytest.raises(DataError) as info:
        P.prepare_long_sequence(dest, source=src, checksums=checksums, progress=fetched.append)
    msg = str(info.value)
    assert f"{dest / 'cb' / 'train.json'}: SHA-256" in msg
    assert f"{dest / 'cb' / 'test.json'} is missing" in msg
    assert "never overwrites a task folder" in msg
    assert fetched == []  # refused before anything was downloaded
    assert (dest / "cb" / "train.json").read_text(encoding="utf-8") == "{}"


def test_an_offline_machine_gets_a_clear_error(
    release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, checksums = release

    def offline(*_, **__):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(P.urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as info:
        P.prepare_long_sequence(tmp_path / "ls", checksums=checksums, timeout=5)
    msg = str(info.value)
    assert f"could not fetch {BASE_URL}/cb/train.json" in msg
    assert "cannot reach raw.githubusercontent.com" in msg and "waited up to 5s" in msg
    assert "--source DIR" in msg
    assert not (tmp_path / "ls").exists()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"tasks": ["cbb"]}, "unknown task 'cbb'.*did you mean 'cb'"),
        ({"tasks": []}, "no tasks to prepare"),
        ({"source": "/no/such/dir"}, "neither a URL .* nor an existing directory"),
        ({"source": "ftp://host/x"}, "scheme 'ftp' is not supported"),
        ({"timeout": 0}, "timeout=0"),
    ],
)
def test_bad_arguments_fail_before_any_download(release, tmp_path: Path, kwargs, expected) -> None:
    _, checksums = release
    with pytest.raises(DataError, match=expected):
        P.prepare_long_sequence(tmp_path / "ls", checksums=checksums, **kwargs)
    assert not (tmp_path / "ls").exists()


def test_the_command_line_prepares_and_reports(
    release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, checksums = release
    sums = tmp_path / "sums.json"
    sums.write_text(json.dumps({k: c.sha256 for k, c in checksums.items()}), encoding="utf-8")
    dest = tmp_path / "root" / "long_sequence"
    argv = ["data", "prepare", "long-sequence", "--dest", str(dest), "--source", str(src)]
    assert main([*argv, "--checksums", str(sums), "--tasks", "cb,rte"]) == 0
    out = capsys.readouterr().out
    assert "fetched  cb       train     3  test     2  labels 2 (yes, no)" in out
    assert "outputs not in labels.json: 'maybe' x1" in out
    assert (
        f"2 fetched, 0 skipped (already present, verified); read it with --data.root {dest.parent}"
        in out
    )
    assert main([*argv, "--checksums", str(sums), "--tasks", "cb"]) == 0
    assert "skipped  cb" in capsys.readouterr().out
    # Without --checksums the pinned release's apply, which the fixture does not match.
    assert main([*argv, "--tasks", "copa"]) == 2
    assert "copa/train.json from" in capsys.readouterr().err


def test_checksum_files_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "sums.json"
    path.write_text(json.dumps({"cb/train.json": "abc"}), encoding="utf-8")
    with pytest.raises(DataError, match="'cb/train.json' sha256 'abc' is not 64 lowercase hex"):
        P.load_checksums(path)
    path.write_text(json.dumps({"cb/train.json": {"md5": "x"}}), encoding="utf-8")
    with pytest.raises(DataError, match="must map to a SHA-256 hex string or an object"):
        P.load_checksums(path)
    path.write_text(json.dumps({"cb/train.json": {"git_blob": "a" * 40, "size": 3}}))
    assert P.load_checksums(path) == {"cb/train.json": Checksum(3, None, "a" * 40)}


# --------------------------------------------------------------------------- the pinned release


def test_the_pinned_release_covers_every_file_of_the_15_tasks() -> None:
    assert len(COMMIT) == 40 and set(COMMIT) <= set("0123456789abcdef")
    assert f"/circle-hit/SAPT/{COMMIT}/CL_Benchmark/Long_Sequence" in BASE_URL
    assert sorted(FILES) == sorted(f"{t}/{f}" for t in LONG_SEQUENCE_TASKS for f in TASK_FILES)
    for path, c in FILES.items():
        assert c.git_blob and len(c.git_blob) == 40, path
        assert (c.sha256 is None) == (path in NO_SHA256), path
        assert c.sha256 is None or len(c.sha256) == 64, path
    assert len(NO_SHA256) == 6
    assert P._check_tasks(None, FILES) == sorted(LONG_SEQUENCE_TASKS)


def test_git_blob_ids_are_checked_the_way_git_computes_them(tmp_path: Path) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed, so its blob ids cannot be compared")
    path = tmp_path / "labels.json"
    data = b'["True", "False"]'
    path.write_bytes(data)
    blob = subprocess.run(
        [git, "hash-object", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert P._mismatch(data, Checksum(git_blob=blob)) is None
    assert "git blob id" in (P._mismatch(data + b" ", Checksum(git_blob=blob)) or "")
    # The pinned release's labels of boolq are exactly these bytes (17 of them).
    assert P._mismatch(data, FILES["boolq/labels.json"]) is None


def test_a_malformed_source_file_is_named_by_its_source_not_the_staging_folder(
    release, tmp_path: Path
) -> None:
    """Issue 26: a file that matches its checksum but does not parse named a deleted
    temporary path (.prepare-xxxx/rte/test.json)."""
    src, checksums = release
    bad = b'{"Instances": [{"input": "x"}]}'  # no output
    (src / "rte" / "test.json").write_bytes(bad)
    checksums = {**checksums, "rte/test.json": Checksum(sha256=hashlib.sha256(bad).hexdigest())}
    dest = tmp_path / "ls"
    with pytest.raises(DataError) as info:
        P.prepare_long_sequence(dest, source=src, checksums=checksums)
    msg = str(info.value)
    assert ".prepare-" not in msg and f"{src}/rte" in msg and "nothing was written" in msg
    assert _leftovers(dest) == ["cb", "copa"]


def test_an_unwritable_destination_is_an_error_not_a_traceback(release, tmp_path: Path) -> None:
    src, checksums = release
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot be written.*writable directory"):
        P.prepare_long_sequence(blocker / "ls", source=src, checksums=checksums)
