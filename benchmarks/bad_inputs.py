"""Try bad inputs as a new user would and print what the harness does with each.

    python benchmarks/bad_inputs.py [--data-dir ../shared/data] [--only SUBSTRING]

Each case runs ``python -m harness run`` (or a study, the report, ``data prepare``) in a fresh
process on a small real-data trial and records: the exit code, whether a model was built before
the error (the model-build log line appeared), whether a Python traceback was printed, the
seconds it took and the first line of the error. A plain case counts as *caught* when the
command fails (exit != 0) with no model built. Cases whose right answer is not an error say
what it is (:class:`Expect`): a documented warning (e.g. duplicated test instances, stated in
the summary too), or a run that does the right thing (an equivalent spelling of a completed
trial runs nothing; ``None`` on the command line unsets a setting). Some cases first set up
what they need (a completed trial, a changed data file, a process holding a trial id).

Prints one table and the counts; nothing is written outside a temp directory. Takes about 20
minutes (one Python start per case, a few short trials). Not a test: the behaviour of each case
is asserted in tests/*/test_faults*.py and tests/harness/test_trial_identity.py; this is the census
behind docs/faults.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILT = "parameters trainable"  # harness.models.build logs it when a model exists
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Expect:
    """What a case's right answer is, when it is not 'exit != 0 before any model'.

    ``ok``: exit 0 and this text in the output (the right thing was done, e.g. "already
    completed"); ``warn``: this warning in the output (exit 0; the trial runs, the warning is
    stated); ``err``: exit != 0, no model built, and this text in the error. ``before`` /
    ``after`` set up and clean up what the case needs."""

    ok: str | None = None
    warn: str | None = None
    err: str | None = None
    before: Callable[[], object] | None = None
    after: Callable[[], object] | None = None

    def caught(self, code: int, text: str, built: bool) -> bool:
        if self.ok is not None:
            return code == 0 and self.ok in text
        if self.warn is not None:
            return code == 0 and self.warn in text
        return code != 0 and not built and (self.err is None or self.err in text)


def small(root: str) -> list[str]:
    return (
        f"--data.root {root} --data.tasks cb,rte --data.max_train_per_task 16 "
        "--data.max_test_per_task 8 --replay.size 20 --replay.max_tokens 64 "
        "--data.max_seq_len 128 --eval.probe_max_questions 40 --eval.heldout_max_texts 20 "
        "--eval.heldout_max_tokens 64 --no-progress --no-checkpoints"
    ).split()


def cases(root: str, tmp: Path) -> list[tuple[str, list[str]]]:
    """(name, argv after ``python``) for every bad input tried."""
    afile = tmp / "a_file"
    afile.write_text("x")
    latin = tmp / "latin1"
    (latin / "general").mkdir(parents=True)
    (latin / "general" / "train.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    run = ["-m", "harness", "run", *small(root), "--out", str(tmp / "out")]
    floats = [
        "train.lr",
        "train.lr_multiplier",
        "train.epochs",
        "train.max_grad_norm",
        "train.weight_decay",
        "replay.weight",
        "scale.cpus_per_worker",
        "scale.collective_timeout_s",
        "train.divergence_factor",
    ]
    out: list[tuple[str, list[str]]] = []
    for key in floats:
        for bad in ("nan", "inf"):
            out.append((f"--{key} {bad}", [*run, f"--{key}", bad]))
    out += [
        ("--replay.settings.k nan (tm)", [*run, "--replay.settings.k", "nan"]),
        (
            "--landscape.span inf",
            [*run, "--landscape.enabled", "true", "--landscape.span", "inf"],
        ),
        ("--seed -1", [*run, "--seed", "-1"]),
        ("--train.lr -1", [*run, "--train.lr", "-1"]),
        ("--train.lr abc", [*run, "--train.lr", "abc"]),
        ("--train.epochs 1e8 (no cap)", [*run, "--train.epochs", "1e8"]),
        ("--train.batch_size 0", [*run, "--train.batch_size", "0"]),
        ("--replay.method tmm", [*run, "--replay.method", "tmm"]),
        ("--replay.size 100000", [*run, "--replay.size", "100000"]),
        ("--data.tasks cb,nosuchtask", [*run, "--data.tasks", "cb,nosuchtask"]),
        ("--data.tasks '' ", [*run, "--data.tasks", " "]),
        ("--data.max_seq_len 16 (labels longer)", [*run, "--data.max_seq_len", "16"]),
        ("--data.max_seq_len 8", [*run, "--data.max_seq_len", "8"]),
        ("--data.root /nonexistent", [*run, "--data.root", "/nonexistent"]),
        (
            "--data.root (non-UTF-8 corpus)",
            [*run, "--replay.corpus", str(latin / "general" / "train.jsonl")],
        ),
        ("--out <a file>", [*run, "--out", str(afile)]),
        ("--out <under a file>", [*run, "--out", str(afile / "sub")]),
        ("--out /proc/x (unwritable)", [*run, "--out", "/proc/gere-x"]),
        (
            "--model.lora_target_modules q_proj,v_projj",
            [*run, "--model.tuning", "lora", "--model.lora_target_modules", "q_proj,v_projj"],
        ),
        ("--model.tuning lorra", [*run, "--model.tuning", "lorra"]),
        ("--model.name <a dir without config.json>", [*run, "--model.name", str(tmp)]),
        ("--model.name tinyy", [*run, "--model.name", "tinyy"]),
        ("--eval.probe nosuchdir", [*run, "--eval.probe", "nosuchdir"]),
        ("--eval.heldout missing.jsonl", [*run, "--eval.heldout", "missing.jsonl"]),
        ("--eval.scoring exact", [*run, "--eval.scoring", "exact"]),
        ("--scale.workers 2 (torch backend)", [*run, "--scale.workers", "2"]),
        ("--scale.zero_stage 4", [*run, "--scale.backend", "deepspeed", "--scale.zero_stage", "4"]),
        ("--trial_id a/b", [*run, "--trial_id", "a/b"]),
        ("--config missing.yaml", [*run, "--config", str(tmp / "missing.yaml")]),
        ("--set train.lr", [*run, "--set", "train.lr"]),
        ("--trian.lr 1 (typo)", [*run, "--trian.lr", "1"]),
        (
            "study --set replay.method=foo (a grid axis)",
            ["studies/lr_robustness.py", "--set", "replay.method=foo", "--dry-run"],
        ),
        (
            "study --data-dir /nonexistent",
            ["studies/lr_robustness.py", "--data-dir", str(tmp / "nope"), "--dry-run"],
        ),
        ("study --preset llama-3.2", ["studies/lr_robustness.py", "--preset", "llama-3.2"]),
        (
            "intervention under ZeRO-3",
            [
                *run,
                "--interventions.redo.tau",
                "0.1",
                "--scale.backend",
                "deepspeed",
                "--scale.zero_stage",
                "3",
            ],
        ),  # fmt: skip
        ("plasticity --seeds x", ["studies/plasticity.py", "--seeds", "x", "--dry-run"]),
        ("cl.olora on full fine-tuning", [*run, "--cl.olora.lambda_orth", "0.5"]),
        (
            "cl.ewc under ZeRO-3",
            [*run, "--cl.ewc.lam", "10", "--scale.backend", "deepspeed", "--scale.zero_stage", "3"],
        ),
        ("cl.ewc.gamma 2 (out of range)", [*run, "--cl.ewc.gamma", "2"]),
        ("--set cl.ewx={} (typo)", [*run, "--set", "cl.ewx={}"]),
        ("--train.loss_weighting per_row (typo)", [*run, "--train.loss_weighting", "per_row"]),
        ("baselines --seeds x", ["studies/baselines.py", "--seeds", "x", "--dry-run"]),
        (
            "plasticity --stream-tasks 0",
            ["studies/plasticity.py", "--stream-tasks", "0", "--dry-run"],
        ),
        ("active_forgetting --budgets 0", ["studies/active_forgetting.py", "--budgets", "0"]),
        (
            "active_forgetting --data-dir not a world",
            ["studies/active_forgetting.py", "--data-dir", str(tmp)],
        ),
        ("--tracker mlfow (typo)", [*run, "--tracker", "mlfow"]),
        ("study --tracker mlfow (typo)", ["studies/lr_robustness.py", "--tracker", "mlfow"]),
        (
            "study --config missing.yaml",
            ["studies/lr_robustness.py", "--config", str(tmp / "missing.yaml"), "--dry-run"],
        ),
        ("study --dpi 0", ["studies/lr_robustness.py", "--dpi", "0", "--dry-run"]),
        ("--model.dtype float16 on the CPU", [*run, "--model.dtype", "float16"]),
        (
            "--replay.corpus hf:...@train (the old split form)",
            [*run, "--replay.corpus", "hf:cerebras/SlimPajama-627B@train"],
        ),
        (
            "study --preset llama-3.1-8b --data-dir (no tasks there)",
            ["studies/lr_robustness.py", "--preset", "llama-3.1-8b", "--data-dir", str(tmp)],
        ),
        ("data prepare an unknown benchmark", ["-m", "harness", "data", "prepare", "long-seq"]),
        (
            "data prepare --tasks yelpp (typo)",
            [
                "-m",
                "harness",
                "data",
                "prepare",
                "long-sequence",
                "--dest",
                str(tmp / "d"),
                "--tasks",
                "yelpp",
            ],
        ),  # fmt: skip
        ("--out s3://... unreachable", [*run, "--out", "s3://no-such-bucket/gere"]),
        (
            "study --storage-path s3://... unreachable",
            [
                "studies/lr_robustness.py",
                "--storage-path",
                "s3://no-such-bucket/ray",
                "--dry-run",
            ],
        ),
        ("report on s3://... unreachable", ["-m", "results.report", "s3://no-such-bucket/x"]),
        ("report --format jpg", ["-m", "results.report", str(tmp), "--format", "jpg"]),
        ("report on a mistyped path", ["-m", "results.report", str(tmp / "runs/study=typo")]),
        ("report on an empty directory", ["-m", "results.report", str(tmp)]),
        (
            "clusters.validate on a manifest without auth",
            ["-m", "clusters.validate", str(_open_manifest(tmp))],
        ),
    ]
    return out + typed_cases(run) + identity_cases(root, tmp)


def typed_cases(run: list[str]) -> list[tuple]:
    """Every integer, boolean, choice and number setting given a value of the wrong form: each
    must be refused by name with the form it takes (issue 26: values arrive as typed)."""
    from harness.config import iter_fields
    from harness.config.flat import _kind

    out = []
    for name, tp, _default, _doc in iter_fields():
        literal = typing.get_origin(tp) is typing.Literal
        kind = "literal" if literal else _kind(tp)
        bad = {"int": "1e30", "bool": "maybe", "literal": "nosuch", "float": "abc"}.get(kind)
        if bad is not None:
            out.append((f"--{name} {bad} ({kind})", [*run, f"--{name}", bad]))
    return out


_HOLD = """
import sys, time
from harness.config import from_dict
from harness.claim import claimed
cfg = from_dict({"out": sys.argv[1], "trial_id": sys.argv[2]})
with claimed(cfg):
    print("held", flush=True)
    time.sleep(600)
"""


def identity_cases(real: str, tmp: Path) -> list[tuple]:
    """Issue 26's cases: a trial is what it ran on, results that cannot mix or vanish, checks
    before the model, files named right. They run on a copy of two real tasks (changed in
    place by one case) with the real corpus and MMLU linked in."""
    root = tmp / "data"
    for task in ("cb", "rte"):
        shutil.copytree(Path(real) / "long_sequence" / task, root / "long_sequence" / task)
    for part in ("general", "mmlu"):
        (root / part).symlink_to(Path(real) / part)
    out = tmp / "done"
    run = ["-m", "harness", "run", *small(str(root)), "--out", str(out)]
    py = [sys.executable, "-c"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    holder: list[subprocess.Popen] = []

    def hold(trial_id: str) -> Callable[[], None]:
        def start() -> None:
            p = subprocess.Popen(
                [*py, _HOLD, str(out), trial_id], env=env, stdout=subprocess.PIPE, text=True
            )
            p.stdout.readline()
            holder.append(p)

        return start

    def release() -> None:
        for p in holder:
            p.kill()
            p.wait()

    def task(name: str, labels: list[str], train: list, test: list) -> str:
        d = root / "long_sequence" / name
        d.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", train), ("test", test)):
            body = {
                "Definition": [f"{name}?"],
                "Instances": [{"input": i, "output": o} for i, o in rows],
            }
            (d / f"{split}.json").write_text(json.dumps(body))
        (d / "labels.json").write_text(json.dumps(labels))
        return name

    rows = [(f"statement number {i}", "yes" if i % 2 else "no") for i in range(24)]
    task(
        "onelabel", ["yes"], [(x, "yes") for x, _ in rows[:16]], [(x, "yes") for x, _ in rows[16:]]
    )
    task("dupes", ["yes", "no"], rows[:16], [rows[16]] * 4 + rows[17:])
    task("copied", ["yes", "no"], rows[:16], rows[:8])
    long = [("word " * 2500, "yes" if i % 2 else "no") for i in range(8)]
    task("long", ["yes", "no"], long[:6], long[6:])

    def newer() -> None:  # the done trial's summary as a newer harness would have written it
        import pyarrow as pa
        import pyarrow.parquet as pq

        src = next((out / "study=adhoc" / "summary").glob("*.parquet"))
        dest = tmp / "newer" / "study=adhoc" / "summary" / "newer.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        t = pq.read_table(src)
        t = t.set_column(
            t.schema.get_field_index("schema_version"), "schema_version", pa.array([99], pa.int32())
        )
        t = t.set_column(t.schema.get_field_index("trial_id"), "trial_id", pa.array(["newer"]))
        pq.write_table(t, dest)

    def copies() -> None:
        sdir = out / "study=adhoc"
        src = next((sdir / "accuracy").glob("*.parquet"))
        shutil.copy(src, src.with_name(src.stem + " (1).parquet"))

    def backup() -> None:
        for f in (out / "study=adhoc" / "accuracy").glob("* (1).parquet"):
            f.unlink()
        shutil.copytree(out / "study=adhoc", out / "study=adhoc.bak")

    def stale() -> None:
        ckpt = out / "study=adhoc" / "_checkpoints" / "stale"
        ckpt.mkdir(parents=True)
        (ckpt / "state.json").write_text("{}")

    def change_data() -> None:
        path = root / "long_sequence" / "rte" / "test.json"
        data = json.loads(path.read_text())
        data["Instances"] = data["Instances"][1:]
        path.write_text(json.dumps(data))

    corpus = root / "general" / "train.jsonl"
    lines = (Path(real) / "general" / "train.jsonl").read_bytes().splitlines(keepends=True)[:200]
    files = tmp / "files"
    files.mkdir()
    (files / "c.jsonl.gz").write_bytes(gzip.compress(b"".join(lines)))
    (files / "c.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 16)
    (files / "c.zip").write_bytes(b"PK\x03\x04" + b"\0" * 26)
    (files / "c16.jsonl").write_bytes(b"".join(lines).decode().encode("utf-16"))
    (files / "latin.yaml").write_bytes(b"study: caf\xe9\n")
    (files / "packed.yaml").write_bytes(gzip.compress(b"study: x\n"))
    (files / "date.yaml").write_text("trial_id: 2024-12-04\n")
    (files / "number.yaml").write_text("trial_id: 123\n")
    (files / "bigseed.yaml").write_text("seed: 99999999999999999999\n")
    (files / "out.yaml").write_text(f"out: {tmp / 'elsewhere'}\n")
    (files / "a_file").write_text("x")
    texts = [json.dumps({"text": f"{i} " + "text " * 2400}) for i in range(8)]
    (files / "long.jsonl").write_text("\n".join(texts) + "\n")

    sys.path.insert(0, str(REPO))
    from tests.fixtures import saved_tiny

    model = Path(saved_tiny(tmp / "model"))
    broken = {}
    for what, paths in (
        ("notok", ["tokenizer.json", "tokenizer_config.json"]),
        ("noweights", ["model.safetensors"]),
        ("badconfig", []),
    ):
        d = tmp / what
        shutil.copytree(model, d)
        for f in paths:
            (d / f).unlink(missing_ok=True)
        broken[what] = d
    (broken["badconfig"] / "config.json").write_text("{not json")

    release_dir = tmp / "release"
    (release_dir / "cb").mkdir(parents=True)
    bad = b'{"Instances": [{"input": "x"}]}'
    for f in ("train.json", "labels.json"):
        shutil.copy(Path(real) / "long_sequence" / "cb" / f, release_dir / "cb" / f)
    (release_dir / "cb" / "test.json").write_bytes(bad)
    import hashlib

    sums = {
        f"cb/{f}": hashlib.sha256((release_dir / "cb" / f).read_bytes()).hexdigest()
        for f in ("train.json", "test.json", "labels.json")
    }
    (tmp / "sums.json").write_text(json.dumps(sums))
    prep = [
        "-m",
        "harness",
        "data",
        "prepare",
        "long-sequence",
        "--source",
        str(release_dir),
        "--checksums",
        str(tmp / "sums.json"),
        "--tasks",
        "cb",
    ]
    done = "already completed with these settings"
    pc = "--print-config"
    return [
        ("a completed trial (set-up for the cases below)", run, Expect(ok="status=completed")),
        (
            "--data.tasks 'cb, rte' (the completed trial)",
            [*run, "--data.tasks", "cb, rte"],
            Expect(ok=done),
        ),
        (
            "--data.tasks cb,rte, (the completed trial)",
            [*run, "--data.tasks", "cb,rte,"],
            Expect(ok=done),
        ),
        (
            "--data.tasks ' cb,,rte' (the completed trial)",
            [*run, "--data.tasks", " cb,,rte"],
            Expect(ok=done),
        ),
        (
            "--data.root DIR/ (the completed trial)",
            [*run, "--data.root", f"{root}/"],
            Expect(ok=done),
        ),
        (
            "--replay.corpus <absolute> (the completed trial)",
            [*run, "--replay.corpus", str(corpus)],
            Expect(ok=done),
        ),
        (
            "--eval.heldout <absolute> (the completed trial)",
            [*run, "--eval.heldout", str(root / "general" / "heldout.jsonl")],
            Expect(ok=done),
        ),
        (
            "--eval.probe <absolute> (the completed trial)",
            [*run, "--eval.probe", str(root / "mmlu")],
            Expect(ok=done),
        ),
        ("--out DIR/ (the completed trial)", [*run[:-1], f"{out}/"], Expect(ok=done)),
        (
            "a second run of a trial id while one runs",
            [*run, "--trial_id", "held", "--train.lr", "5e-3"],
            Expect(err="is being run by process", before=hold("held"), after=release),
        ),
        (
            "results of a newer schema version",
            [*run[:-1], str(tmp / "newer"), "--trial_id", "newer"],
            Expect(err="newer harness", before=newer),
        ),
        (
            "report on results of a newer schema version",
            ["-m", "results.report", str(tmp / "newer" / "study=adhoc")],
            Expect(err="newer harness"),
        ),
        (
            "report with a duplicated file x (1).parquet",
            ["-m", "results.report", str(out / "study=adhoc")],
            Expect(err="a copy", before=copies),
        ),
        (
            "report on an out holding a backup study folder",
            ["-m", "results.report", str(out)],
            Expect(err="a copy", before=backup),
        ),
        (
            "--no-checkpoints with a stale checkpoint",
            [*run, "--trial_id", "stale"],
            Expect(warn="removing the checkpoint", before=stale),
        ),
        (
            "--out s3:/bucket (a slash missing)",
            [*run[:-1], "s3:/bucket/gere"],
            Expect(err="slash missing"),
        ),
        ("--out s3:bucket", [*run[:-1], "s3:bucket"], Expect(err="slash missing")),
        (
            "--out runs/study=x",
            [*run[:-1], str(tmp / "runs" / "study=x")],
            Expect(err="study's folder"),
        ),
        (
            "study --out a --set out=b",
            ["studies/lr_robustness.py", "--out", "a", "--set", "out=b", "--dry-run"],
            Expect(err="disagree"),
        ),
        (
            "study --out a --config (out: b)",
            [
                "studies/lr_robustness.py",
                "--out",
                "a",
                "--config",
                str(files / "out.yaml"),
                "--dry-run",
            ],
            Expect(err="disagree"),
        ),
        (
            "study --set out=DIR (honoured)",
            ["studies/demo.py", "--set", f"out={tmp / 'o2'}", "--dry-run"],
            Expect(ok="evaluation/training"),
        ),
        (
            "study --data-dir <a file>",
            ["studies/lr_robustness.py", "--data-dir", str(files / "a_file"), "--dry-run"],
            Expect(err="is a file"),
        ),
        (
            "--eval.probe_shots 50",
            [*run, "--eval.probe_shots", "50", "--eval.probe_format", "letter"],
            Expect(err="at most 5"),
        ),
        (
            "--eval.probe_shots 6",
            [*run, "--eval.probe_shots", "6", "--eval.probe_format", "letter"],
            Expect(err="at most 5"),
        ),
        (
            "--eval.heldout = the replay corpus",
            [*run, "--eval.heldout", "general/train.jsonl"],
            Expect(err="same file"),
        ),
        (
            "a task with one label",
            [*run, "--data.tasks", "onelabel,cb"],
            Expect(err="one label only"),
        ),
        (
            "duplicated test instances",
            [*run, "--data.tasks", "dupes"],
            Expect(warn="repeat an input"),
        ),
        (
            "a test set copied from training",
            [*run, "--data.tasks", "copied"],
            Expect(warn="also training inputs"),
        ),
        (
            "--eval.heldout_max_tokens 1",
            [*run, "--eval.heldout_max_tokens", "1"],
            Expect(err="NaN"),
        ),
        (
            "--replay.max_tokens 1",
            [*run, "--replay.max_tokens", "1"],
            Expect(err="replay does nothing"),
        ),
        (
            "a task of 12,500-token sequences, data.max_seq_len 10000 (context)",
            [*run, "--data.tasks", "long", "--data.max_seq_len", "10000"],
            Expect(err="8192 positions"),
        ),
        (
            "held-out texts of 12,000 tokens, heldout_max_tokens 9000 (context)",
            [
                *run,
                "--eval.heldout",
                str(files / "long.jsonl"),
                "--eval.heldout_max_tokens",
                "9000",
            ],
            Expect(err="8192 positions"),
        ),
        (
            "replay texts of 12,000 tokens, replay.max_tokens 9000 (context)",
            [*run, "--replay.corpus", str(files / "long.jsonl"), "--replay.size", "4"]
            + ["--replay.max_tokens", "9000"],
            Expect(err="8192 positions"),
        ),
        (
            "5-shot prompts longer than the context (2000 questions)",
            [
                *run,
                "--eval.probe_shots",
                "5",
                "--eval.probe_format",
                "lm_eval",
                "--eval.probe_max_questions",
                "2000",
            ],
            Expect(err="longer than model"),
        ),
        (
            "--data.cache_dir None",
            [*run, "--data.cache_dir", "None", pc],
            Expect(ok='"cache_dir": null'),
        ),
        (
            "--set data.cache_dir=None",
            [*run, "--set", "data.cache_dir=None", pc],
            Expect(ok='"cache_dir": null'),
        ),
        ("--eval.probe None", [*run, "--eval.probe", "None", pc], Expect(ok='"probe": null')),
        (
            "--trial_id 2024-12-04",
            [*run, "--trial_id", "2024-12-04", pc],
            Expect(ok='"trial_id": "2024-12-04"'),
        ),
        ("--trial_id 123", [*run, "--trial_id", "123", pc], Expect(ok='"trial_id": "123"')),
        (
            "--set trial_id=2024-12-04",
            [*run, "--set", "trial_id=2024-12-04", pc],
            Expect(ok='"trial_id": "2024-12-04"'),
        ),
        ("--set study=yes", [*run, "--set", "study=yes", pc], Expect(ok='"study": "yes"')),
        ("--study 1e3", [*run, "--study", "1e3", pc], Expect(ok='"study": "1e3"')),
        (
            "--train.max_steps_per_task 1e3",
            [*run, "--train.max_steps_per_task", "1e3", pc],
            Expect(ok='"max_steps_per_task": 1000'),
        ),
        (
            "--seed 99999999999999999999",
            [*run, "--seed", "99999999999999999999"],
            Expect(err="64-bit"),
        ),
        (
            "--set seed=99999999999999999999",
            [*run, "--set", "seed=99999999999999999999"],
            Expect(err="64-bit"),
        ),
        (
            "--config (trial_id: 2024-12-04)",
            [*run, "--config", str(files / "date.yaml")],
            Expect(err="quote it"),
        ),
        (
            "--config (trial_id: 123)",
            [*run, "--config", str(files / "number.yaml")],
            Expect(err="quote it"),
        ),
        (
            "--config (seed beyond int64)",
            [*run, "--config", str(files / "bigseed.yaml")],
            Expect(err="64-bit"),
        ),
        (
            "--config <not UTF-8>",
            [*run, "--config", str(files / "latin.yaml")],
            Expect(err="not UTF-8"),
        ),
        (
            "--config <gzip-compressed>",
            [*run, "--config", str(files / "packed.yaml")],
            Expect(err="gzip-compressed"),
        ),
        ("--config <a directory>", [*run, "--config", str(files)], Expect(err="is a directory")),
        (
            "--replay.corpus <gzip'd jsonl> (read as it is)",
            [*run, "--replay.corpus", str(files / "c.jsonl.gz"), "--trial_id", "gz"],
            Expect(ok="status=completed"),
        ),
        (
            "--replay.corpus <.jsonl.zst>",
            [*run, "--replay.corpus", str(files / "c.jsonl.zst")],
            Expect(err="zstandard-compressed"),
        ),
        (
            "--replay.corpus <a zip>",
            [*run, "--replay.corpus", str(files / "c.zip")],
            Expect(err="zip archive"),
        ),
        (
            "--replay.corpus <UTF-16>",
            [*run, "--replay.corpus", str(files / "c16.jsonl")],
            Expect(err="UTF-16"),
        ),
        (
            "--model.name <folder without tokenizer>",
            [*run, "--model.name", str(broken["notok"])],
            Expect(err="no tokenizer files"),
        ),
        (
            "--model.name <folder without weights>",
            [*run, "--model.name", str(broken["noweights"])],
            Expect(err="no weights"),
        ),
        (
            "--model.name <corrupt config.json>",
            [*run, "--model.name", str(broken["badconfig"])],
            Expect(err="not readable JSON"),
        ),
        (
            "--model.name llama-3.1-8b (offline)",
            [*run, "--model.name", "llama-3.1-8b"],
            Expect(err="cannot be reached"),
        ),
        (
            "--model.name owner/nosuch (offline)",
            [*run, "--model.name", "owner/nosuch"],
            Expect(err="cannot be reached"),
        ),
        (
            "LoRA target mlp (a block)",
            [*run, "--model.tuning", "lora", "--model.lora_target_modules", "mlp"],
            Expect(err="not layers LoRA adapts"),
        ),
        (
            "LoRA target self_attn (a block)",
            [*run, "--model.tuning", "lora", "--model.lora_target_modules", "self_attn"],
            Expect(err="not layers LoRA adapts"),
        ),
        (
            "LoRA target norm (a norm)",
            [*run, "--model.tuning", "lora", "--model.lora_target_modules", "norm"],
            Expect(err="not layers LoRA adapts"),
        ),
        (
            "--data.cache_dir /proc/x (unwritable cache)",
            [*run, "--data.cache_dir", "/proc/gere-cache", "--trial_id", "rocache"],
            Expect(warn="cannot be written"),
        ),
        (
            "data prepare: a malformed source file",
            prep + ["--dest", str(tmp / "ls")],
            Expect(err=f"{release_dir}/cb"),
        ),
        (
            "data prepare --dest <under a file>",
            prep + ["--dest", str(files / "a_file" / "ls")],
            Expect(err="cannot be written"),
        ),
        ("changed data under a completed trial", run, Expect(err="other data", before=change_data)),
    ]


def _open_manifest(tmp: Path) -> Path:
    text = (REPO / "clusters" / "kuberay" / "raycluster.yaml").read_text()
    lines = [x for x in text.splitlines() if "authOptions" not in x and "mode: token" not in x]
    path = tmp / "open.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--only", default="", help="run only cases whose name contains this")
    args = p.parse_args(argv)
    if not (Path(args.data_dir) / "long_sequence").is_dir():
        print(f"needs the real data: {args.data_dir}/long_sequence is missing", file=sys.stderr)
        return 2
    # Object-store cases go to an endpoint where nothing listens (no network needed).
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "census",
        "AWS_SECRET_ACCESS_KEY": "census",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="gere-bad-") as d:
        tmp = Path(d)
        todo = [c for c in cases(args.data_dir, tmp) if args.only in c[0]]
        for i, (name, cmd, *rest) in enumerate(todo, 1):
            expect = rest[0] if rest else Expect()
            if expect.before is not None:
                try:
                    expect.before()
                except Exception as exc:  # its set-up failed (an earlier case did not run)
                    rows.append((name, -1, False, False, False, 0.0, f"set-up failed: {exc!r}"))
                    continue
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True
                )
            finally:
                if expect.after is not None:
                    expect.after()
            secs = time.perf_counter() - t0
            text = proc.stderr + proc.stdout
            err = next(
                (
                    x.strip()
                    for x in text.splitlines()
                    if (
                        x.strip().startswith(("- ", "error", "ERROR")) or "Error" in x.split(":")[0]
                    )
                    and not x.strip().endswith("config problem(s):")  # the problem is next
                ),
                text.strip().splitlines()[-1] if text.strip() else "",
            )
            built = BUILT in text
            early = expect.caught(proc.returncode, text, built)
            tb = TRACEBACK in text
            rows.append((name, proc.returncode, built, early, tb, secs, err))
            print(f"[{i}/{len(todo)}] {name}: exit {proc.returncode}", file=sys.stderr)
    width = max(len(r[0]) for r in rows)
    print(f"{'input':{width}}  exit  model built  caught  traceback  seconds  first error line")
    for name, code, built, early, tb, secs, err in rows:
        print(
            f"{name:{width}}  {code:4d}  {str(built):11}  {str(early):6}  {str(tb):9}  "
            f"{secs:7.1f}  {err[:110]}"
        )
    caught = sum(r[3] for r in rows)
    tracebacks = sum(r[4] for r in rows)
    print(
        f"\n{len(rows)} bad inputs tried, {caught} caught (exit != 0 before any model is built, "
        f"or the documented warning or outcome), {tracebacks} printed a traceback"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
