"""Backends: the Protocol, and every replay method on 2 DeepSpeed ranks under ZeRO-2 and -3.

The multi-rank runs use torch.multiprocessing with gloo (no Ray), so a hang shows up as a
collective timeout naming the rank, within a minute, instead of a stuck Ray worker.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from harness.backend import Backend, TorchBackend
from harness.config import from_dict, merge
from harness.config.scale import scale_problems as config_problems
from harness.config.scale import shards_weights
from harness.replay import REGISTRY
from tests.fixtures import free_port, join_gloo, spawn_ranks, trials_on_rank

METHODS = sorted(REGISTRY)


def _trial_dict(out: Path, method: str, tuning: str, zero: int, world: Path) -> dict:
    from harness.presets import base_config

    base = base_config("tiny", data_dir=str(world), smoke=True)
    return merge(
        base,
        {
            "replay": {"method": method},
            "model": {"tuning": tuning},
            "scale": {"zero_stage": zero},
            "out": str(out),
            "study": f"zero{zero}",
            "trial_id": f"{method}-{tuning}",
        },
    )


def test_the_backends_satisfy_the_protocol() -> None:
    cfg = from_dict({"model": {"name": "tiny"}})
    backend = TorchBackend(cfg)
    built = backend.build_model(keep_reference=False, weights=None)
    assert isinstance(backend, Backend) and backend.is_main and not backend.sharded
    assert backend.module is built.model and backend.min_step_items(4) == 1
    assert not shards_weights(cfg.scale)
    zero3 = from_dict({"scale": {"backend": "deepspeed", "zero_stage": 3}})
    assert shards_weights(zero3.scale)


def test_the_backend_owns_the_zero_rules() -> None:
    cfg = from_dict({"scale": {"backend": "deepspeed", "zero_stage": 3}})
    assert config_problems(cfg) == []
    zero2 = from_dict(
        {"scale": {"backend": "deepspeed", "zero_stage": 2}, "landscape": {"enabled": True}}
    )
    assert config_problems(zero2) == []  # ZeRO-2 keeps whole weights: slices are fine
    with pytest.raises(ValueError, match="ZeRO-3 shards"):
        from_dict(
            {"scale": {"backend": "deepspeed", "zero_stage": 3}, "landscape": {"enabled": True}}
        )


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_every_replay_method_completes_on_two_ranks(zero: int, tmp_path: Path) -> None:
    """Regression: under ZeRO-3 the hidden-state methods (l1, l2, tm) hung, because a rank
    whose micro-batch had no replay rows backpropagated through fewer hooked outputs."""
    from harness.world.generate import generate_world

    world = generate_world(tmp_path / "world", seed=0).root
    trials = [
        _trial_dict(tmp_path / "out", m, tuning, zero, world)
        for tuning in ("full", "lora")
        for m in METHODS
    ]
    spawn_ranks(trials_on_rank, trials)
    from results.io import read_study

    tables = read_study(tmp_path / "out" / f"study=zero{zero}")
    summary = tables["summary"]
    assert sorted(summary.trial_id) == sorted(d["trial_id"] for d in trials)
    assert summary.status.eq("completed").all()
    assert len(tables["accuracy"]) == len(trials) * 3 * 2  # 3 stages x 2 tasks per trial

    # The evaluation is sharded over the 2 ranks: the starting model's rows (stage 0) equal
    # those of the same model evaluated whole in one process.
    from harness.trial import run_trial

    for d in (trials[0], trials[-1]):  # the first full and the last LoRA trial
        one = merge(d, {"scale": {"backend": "torch", "workers": 1}, "study": "one"})
        run_trial(from_dict(one))
        single = read_study(tmp_path / "out" / "study=one")
        for kind, exact, close in (
            ("accuracy", ["task", "n_correct", "n_total"], []),
            ("general", ["n_correct", "n_total", "ppl_tokens"], ["nll_sum"]),
            ("predictions", ["task", "example", "predicted", "correct"], []),
        ):
            a, b = (
                t[kind][(t[kind].trial_id == d["trial_id"]) & (t[kind].stage == 0)].reset_index(
                    drop=True
                )
                for t in (tables, single)
            )
            assert len(a) == len(b) > 0, kind
            assert a[exact].equals(b[exact]), kind
            for col in close:
                assert a[col].tolist() == pytest.approx(b[col].tolist(), rel=1e-6), (kind, col)
            if kind == "predictions":
                la, lb = (np.concatenate(x.logliks.tolist()) for x in (a, b))
                assert la == pytest.approx(lb, abs=1e-5)


def _tm_rank(rank: int, port: int, out: str) -> None:
    join_gloo(rank, port)
    from harness.replay.base import Ranks
    from harness.replay.states import TMStates

    model, buffer = _tm_inputs()

    def gather(obj):
        got = [None, None]
        torch.distributed.all_gather_object(got, obj)
        return got

    calls = []

    def forward(i, a):
        calls.append(i.shape[0])
        return model(input_ids=i, attention_mask=a, output_hidden_states=True).hidden_states[-1]

    ranks = Ranks(rank, 2, gather, lambda: calls.append(0))
    states = TMStates.build(forward, buffer, k=1.0, batch_size=2, ranks=ranks)
    states.save(Path(out) / f"rank{rank}")
    (Path(out) / f"calls{rank}").write_text(" ".join(map(str, calls)))
    torch.distributed.destroy_process_group()


def _tm_inputs():
    from harness.replay import ReplayBuffer
    from tests.fixtures import tiny_model

    gen = torch.Generator().manual_seed(3)
    lengths = [7, 3, 12, 5, 9, 4]  # batches of 2: 3 batches, 2 on rank 0 and 1 on rank 1
    buffer = ReplayBuffer(
        token_ids=tuple(tuple(torch.randint(3, 60, (n,), generator=gen).tolist()) for n in lengths),
        pad_id=2,
    )
    return tiny_model(64, seed=1), buffer


@pytest.mark.slow
def test_tm_states_built_by_two_ranks_equal_the_one_rank_states(tmp_path: Path) -> None:
    from harness.replay.states import TMStates

    model, buffer = _tm_inputs()
    serial = TMStates.build(
        lambda i, a: model(input_ids=i, attention_mask=a, output_hidden_states=True).hidden_states[
            -1
        ],
        buffer,
        k=1.0,
        batch_size=2,
    )
    mp.spawn(_tm_rank, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = TMStates.load(tmp_path / f"rank{rank}", mmap=False)
        assert np.array_equal(np.asarray(got.packed), np.asarray(serial.packed))
        for name in ("pos", "neg", "mean", "std"):
            assert torch.allclose(getattr(got, name), getattr(serial, name), rtol=0, atol=1e-6)
    # Each pass: rank 0 ran 2 batches, rank 1 its 1 batch and one idle forward (same calls).
    calls = [(tmp_path / f"calls{r}").read_text().split() for r in (0, 1)]
    assert calls[0] == ["2", "2", "2", "2"] and calls[1] == ["2", "0", "2", "0"]


def test_deepspeed_is_imported_without_mlflow_and_compiles_muon_on_first_call():
    """Every rank imports DeepSpeed: its autotuner's optional MLflow import and the
    ``torch.compile`` of its Muon kernels at import were most of a rank's DeepSpeed time. A
    fresh process: MLflow is not loaded by DeepSpeed and still imports later (the tracker);
    after ``deepspeed.initialize`` (which imports Muon) nothing was compiled; a Muon kernel
    compiles on its first call and computes what the eager function does."""
    pytest.importorskip("mlflow")
    code = (
        "import sys, torch\n"
        "from harness.backend import import_deepspeed\n"
        "calls = []\n"
        "real = torch.compile\n"
        "torch.compile = lambda fn, **kw: calls.append(fn.__name__) or real(fn, backend='eager')\n"
        "ds = import_deepspeed()\n"
        "assert 'mlflow' not in sys.modules, 'DeepSpeed imported MLflow'\n"
        "assert not ds.autotuning.autotuner.has_mlflow\n"
        "from deepspeed.runtime.zero.utils import is_zero_supported_optimizer\n"
        "from harness.backend import init_single_process\n"
        "init_single_process()  # a free port, as the CLI's one-rank DeepSpeed does\n"
        "ds.comm.init_distributed('gloo')  # DeepSpeed's view of that process group\n"
        "p = torch.nn.Parameter(torch.ones(2))\n"
        "assert is_zero_supported_optimizer(torch.optim.AdamW([p]))  # imports Muon\n"
        "from deepspeed.runtime.zero.muon import original_muon as muon\n"
        "assert calls == [], calls\n"
        "g = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))\n"
        "got = muon.zeropower_via_newtonschulz5(g, 5)\n"
        "assert calls == ['zeropower_via_newtonschulz5'], calls\n"
        "want = muon.zeropower_via_newtonschulz5.__wrapped__(g, 5)\n"
        "assert torch.equal(got, want)\n"
        "import mlflow\n"
        "assert mlflow.start_run\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "ok", proc.stderr[-2000:]
