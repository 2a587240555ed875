"""The benchmarks run (their figures are read by people, not asserted: the machine is noisy)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_eval_cost_quick_prints_the_speedup_line_without_a_data_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/eval_cost.py", "--quick", "--data-root", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert "synthetic" in lines[0]
    assert re.fullmatch(r"evaluation speedup: \d+\.\d\d", lines[-1])
    # the two scorers agree on every candidate (the max |difference| column)
    diffs = [float(ln.split()[-1]) for ln in lines[2:-1]]
    assert len(diffs) == 2 and max(diffs) < 1e-4


def _gpu_8b():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_8b", REPO / "benchmarks" / "gpu_8b.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_8b"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_gpu_8b_small_shape_measures_every_part_on_cpu(tmp_path, capsys):
    """The 8B benchmark's code, on a tiny shape, so it cannot rot between GPU runs."""
    import math

    bench = _gpu_8b()
    out = tmp_path / "fig.json"
    argv = ["--shape", "small", "--device", "cpu", "--steps", "2", "--warmup", "1"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["shape"] == "small" and record["device"] == "cpu"
    assert record["dtype"] == "float32"
    figures = {(f["part"], f["name"]): f["value"] for f in record["figures"]}
    printed = capsys.readouterr().out
    for part, name in figures:  # one printed line per figure
        assert re.search(rf"^{part}\.{name}\s", printed, re.M), (part, name)
    for part in ("lora", "full"):
        for name in ("harness_tokens_per_s", "bare_tokens_per_s", "step_seconds"):
            assert figures[part, name] > 0 and math.isfinite(figures[part, name])
        ratio = figures[part, "harness_tokens_per_s"] / figures[part, "bare_tokens_per_s"]
        assert figures[part, "ratio_harness_to_bare"] == pytest.approx(ratio)
        assert figures[part, "mfu"] is None  # no peak for a CPU unless --peak-tflops
    shape = bench.shapes()["small"].config
    d, v, layers, inter = (
        shape.hidden_size,
        shape.vocab_size,
        shape.num_hidden_layers,
        shape.intermediate_size,
    )
    kv = d * shape.num_key_value_heads // shape.num_attention_heads
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * inter + 2 * d
    n = layers * per_layer + d + v * d  # final norm + LM head; the input embedding is not counted
    assert figures["full", "N"] == n == figures["lora", "N"]
    # LoRA r=8 on all linear layers but the head: r x (in + out) each
    lora = layers * 8 * ((d + d) * 2 + (d + kv) * 2 + (d + inter) * 2 + (inter + d))
    assert figures["lora", "N_lora"] == lora
    assert figures["full", "model_flops_per_token"] > 6 * n
    assert figures["lora", "model_flops_per_token"] < figures["full", "model_flops_per_token"]
    small = bench.shapes()["small"]
    assert figures["prepare", "bits_per_entry"] == 2
    packed = small.replay_texts * small.replay_len * d // 4
    assert figures["prepare", "states_size"] == pytest.approx(packed / 1e6)
    for name in ("task14", "mmlu"):
        assert figures["eval", f"{name}_prompts_per_s"] > 0
        assert figures["eval", f"{name}_tokens_per_s"] > figures["eval", f"{name}_prompts_per_s"]
    assert figures["eval", "generate_prompts_per_s"] > 0
    assert not any(part == "estimate" for part, _ in figures)  # only from the 8B shape


def test_gpu_8b_mfu_against_a_stated_peak_and_the_trial_estimate_from_rates():
    bench = _gpu_8b()
    assert bench.peak_flops(torch_device("cpu"), 100.0) == 100e12
    assert bench.peak_flops(torch_device("cpu"), None) is None
    fig = bench.Figures()
    fig.add("lora", "harness_tokens_per_s", 1000.0, "tok/s")
    fig.add("eval", "generate_prompts_per_s", 10.0, "prompts/s")
    fig.add("eval", "mmlu_prompts_per_s", 20.0, "prompts/s")
    fig.add("eval", "heldout_texts_per_s", 50.0, "texts/s")
    fig.add("prepare", "seconds", 36.0, "s")
    shape = bench.shapes()["8b"]
    bench.estimate(fig, shape, 320.0)
    # 15 tasks x 3 epochs x (1000 x 320 + 1000 x 563) tokens at 1000 tok/s
    assert fig.get("estimate", "lora_train_gpu_hours") == pytest.approx(
        15 * 3 * (1000 * 320 + 1000 * 563) / 1000 / 3600
    )
    # 16 evaluations x (15 x 500 / 10 + 2000 / 20 + 500 / 50) s
    assert fig.get("estimate", "eval_gpu_hours") == pytest.approx(16 * (750 + 100 + 10) / 3600)
    assert fig.get("estimate", "prepare_gpu_hours") == pytest.approx(0.01)


def test_gpu_8b_out_of_memory_becomes_the_parts_figure_and_bad_parts_are_refused(capsys):
    import torch

    bench = _gpu_8b()
    fig = bench.Figures()

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    bench._run(fig, "full", torch.device("cpu"), oom)
    assert fig.get("full", "out_of_memory") is True
    assert "Tried to allocate" in fig.rows[-1]["how"]
    with pytest.raises(SystemExit) as e:
        bench.main(["--parts", "lora,fulll"])
    assert e.value.code == 2
    assert "fulll" in capsys.readouterr().err


def torch_device(name):
    import torch

    return torch.device(name)


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H200", 989),
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA L40S", 362),
        ("NVIDIA L40", 181),
        ("NVIDIA L4", 121),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_gpu_8b_knows_the_bf16_peak_of_a_gpu_by_its_name(monkeypatch, name, tflops):
    import torch

    bench = _gpu_8b()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    got = bench.peak_flops(torch.device("cuda"), None)
    assert (got / 1e12 if got else None) == tflops


def _bench(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_vs_lm_eval_quick_agrees_with_lm_eval_and_prints_the_ratio(capsys, monkeypatch):
    """The benchmark against lm-evaluation-harness (tiny model, generated data): lm-eval's
    HFLM and the harness's scorer answer the same requests alike, and the last line is the
    ratio; a scorer that is off by 1e-3 fails the agreement check (exit 1)."""
    pytest.importorskip("lm_eval")
    bench = _bench("eval_vs_lm_eval")
    assert bench.main(["--quick"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "generated" in lines[0]
    assert [ln.split(":")[0] for ln in lines[2:5]] == ["mmlu_5shot", "mc_0shot", "perplexity"]
    assert all("log-likelihoods agree" in ln for ln in lines[2:5])
    assert re.fullmatch(r"evaluation vs lm-eval: \d+\.\d\d", lines[-1])

    import harness.evaluate

    plain = harness.evaluate.candidate_scores

    def off(*args, **kwargs):
        return [[(ll + 1e-3, g) for ll, g in row] for row in plain(*args, **kwargs)]

    monkeypatch.setattr(harness.evaluate, "candidate_scores", off)
    assert bench.main(["--quick"]) == 1
    out = capsys.readouterr().out
    assert "DIFFER" in out and "agreement: FAILED" in out
