"""Try bad inputs as a new user would and print what the harness does with each.

    python benchmarks/bad_inputs.py [--data-dir ../shared/data] [--only SUBSTRING]

Each case runs ``python -m harness run`` (or a study, or the report) in a fresh process on a
small real-data trial and records: the exit code, whether a model was built before the error
(the model-build log line appeared), the seconds it took and the first line of the error. A
case counts as *caught early* when the command fails (exit != 0) with no model built. Prints
one table and the counts; nothing is written outside a temp directory. Takes a few minutes (one
Python start per case). Not a test: the behaviour of each case is asserted in
tests/test_faults*.py; this is the census behind docs/faults.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILT = "parameters trainable"  # harness.models.build logs it when a model exists


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
    return out


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
        for i, (name, cmd) in enumerate(todo, 1):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True
            )
            secs = time.perf_counter() - t0
            text = proc.stderr + proc.stdout
            err = next(
                (
                    x.strip()
                    for x in text.splitlines()
                    if x.strip().startswith(("- ", "error", "ERROR")) or "Error" in x.split(":")[0]
                ),
                text.strip().splitlines()[-1] if text.strip() else "",
            )
            built = BUILT in text
            early = proc.returncode != 0 and not built
            rows.append((name, proc.returncode, built, early, secs, err))
            print(f"[{i}/{len(todo)}] {name}: exit {proc.returncode}", file=sys.stderr)
    width = max(len(r[0]) for r in rows)
    print(f"{'input':{width}}  exit  model built  caught early  seconds  first error line")
    for name, code, built, early, secs, err in rows:
        print(
            f"{name:{width}}  {code:4d}  {str(built):11}  {str(early):12}  {secs:7.1f}  {err[:110]}"
        )
    caught = sum(r[3] for r in rows)
    print(f"\n{len(rows)} bad inputs tried, {caught} caught early (exit != 0, no model built)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
