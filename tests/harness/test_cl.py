"""The continual-learning baselines (harness/cl): each against values computed by hand on a
tiny model, and every one through a checkpoint and resume."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from harness.backend import TorchBackend
from harness.cl.ewc import EWC
from harness.cl.olora import OLoRA, lora_layers
from harness.config import ConfigError, TrialConfig, from_dict, merge
from harness.core import IGNORE, collate
from harness.hooks import Hook
from harness.train import Batch
from harness.trial import Trial, run_trial
from results.io import read_records, read_study
from tests.fixtures import (
    Crash,
    SaveThenCrash,
    mini_config,
    parity_examples,
    saved_tiny,
    tiny_built,
)

METHODS = {
    "task_replay": {"replay.method": "none", "cl.task_replay": {"size": 3}},
    "task_replay_reservoir": {
        "replay.method": "none",
        "cl.task_replay": {"size": 5, "policy": "reservoir"},
    },
    "ewc": {"replay.method": "none", "cl.ewc": {"fisher_samples": 4, "lam": 1e4}},
    "lwf": {"replay.method": "ce", "cl.lwf": {}},
    "olora": {
        "replay.method": "tm",
        "model.tuning": "lora",
        "model.lora_r": 4,
        "cl.olora": {"lambda_l2": 0.01},
    },
    "multitask": {"replay.method": "none", "cl.multitask": {}},
    "single_task": {"replay.method": "none", "cl.single_task": {}},
}


def test_ewc_fisher_and_penalty_equal_a_hand_computation():
    built = tiny_built()
    backend = TorchBackend(TrialConfig())
    backend.wrap(built)
    examples = parity_examples(built.tokenizer, 4)
    trial = SimpleNamespace(backend=backend, inputs=SimpleNamespace(pad_id=0))
    ewc = EWC(lam=3.0)
    ewc.setup(trial)
    fisher = ewc.fisher_of(trial, examples)

    params = dict(built.model.named_parameters())
    by_hand = {n: torch.zeros_like(p) for n, p in params.items()}
    built.model.eval()
    for ex in examples:  # one backward per example, as one would write it by hand
        built.model.zero_grad()
        ids, mask, labels = collate([ex], 0)
        logits = built.model(input_ids=ids, attention_mask=mask).logits
        logp = torch.log_softmax(logits[0, :-1], -1)
        targets = labels[0, 1:]
        keep = targets != IGNORE
        ce = -logp[keep].gather(1, targets[keep][:, None]).mean()
        ce.backward()
        for n, p in params.items():
            by_hand[n] += p.grad.pow(2) / len(examples)
    for n in params:
        assert torch.allclose(fisher[n], by_hand[n], rtol=1e-4, atol=1e-12), n
    assert sum(float(f.sum()) for f in fisher.values()) > 0

    ewc.fisher, ewc.star = fisher, {n: p.detach().clone() for n, p in params.items()}
    assert float(ewc.loss_term(trial, 2, None)) == 0.0  # at the anchor
    with torch.no_grad():
        w = params["model.layers.0.mlp.up_proj.weight"]
        w[0, :3] += torch.tensor([0.1, -0.2, 0.3])
    name = "model.layers.0.mlp.up_proj.weight"
    expected = 3.0 * float((fisher[name][0, :3] * torch.tensor([0.1, -0.2, 0.3]) ** 2).sum())
    assert float(ewc.loss_term(trial, 2, None)) == pytest.approx(expected, rel=1e-4)


def test_ewc_reference_variants_half_sequence_nll_and_per_task_anchors():
    """``half`` halves the penalty (Kirkpatrick's lambda/2); ``fisher_nll='sequence'`` squares
    the gradient of the answer's summed NLL (k^2 x the token-mean one for a k-token answer);
    ``anchors='per_task'`` sums each task's own Fisher around its own anchor."""
    built = tiny_built()
    backend = TorchBackend(TrialConfig())
    backend.wrap(built)
    examples = parity_examples(built.tokenizer, 1)  # one example: the ratio is exactly k^2
    trial = SimpleNamespace(backend=backend, inputs=SimpleNamespace(pad_id=0))
    mean, total = EWC(), EWC(fisher_nll="sequence")
    for e in (mean, total):
        e.setup(trial)
    k = sum(1 for t in collate(examples, 0)[2][0, 1:] if t != IGNORE)
    fm, fs = mean.fisher_of(trial, examples), total.fisher_of(trial, examples)
    for n in fm:
        torch.testing.assert_close(fs[n], fm[n] * k**2, rtol=1e-3, atol=1e-8)

    params = dict(built.model.named_parameters())
    name = "model.layers.0.mlp.up_proj.weight"
    ones = {n: torch.ones_like(p) for n, p in params.items()}
    at = {n: p.detach().clone() for n, p in params.items()}
    moved = {n: v.clone() for n, v in at.items()}
    moved[name][0, 0] += 0.5  # a second task's anchor, 0.5 away in one entry
    per_task = EWC(lam=2.0, half=True, anchors="per_task")
    per_task.setup(trial)
    per_task.tasks = [(ones, at), (ones, moved)]
    # at the first anchor: 0 from task 1, 0.5^2 from task 2; times lambda/2
    assert float(per_task.loss_term(trial, 3, None)) == pytest.approx(1.0 * 0.25)
    online = EWC(lam=2.0)
    online.setup(trial)
    online.fisher, online.star = ones, moved
    assert float(online.loss_term(trial, 3, None)) == pytest.approx(2.0 * 0.25)


def test_lwf_t2_scale_and_first_task_variants(mini_root, tmp_path):
    terms = {}
    for t2 in (True, False):
        cfg = mini_config(
            mini_root, tmp_path, **{"replay.method": "none", "cl.lwf": {"t2_scale": t2}}
        )
        trial = Trial(cfg)
        trial.setup()
        lwf = trial.hooks[-1]
        lwf.before_task(trial, 2)
        rows = trial.inputs.tasks[0].train[:4]
        ids, mask, labels = collate(rows, trial.inputs.pad_id)
        model = trial.backend.module
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
            logits = model(input_ids=ids, attention_mask=mask).logits
        b = Batch(ids, mask, labels, logits, torch.zeros(len(rows), dtype=torch.bool))
        terms[t2] = float(lwf.loss_term(trial, 2, b))
    assert terms[True] == pytest.approx(4.0 * terms[False], rel=1e-5)  # T = 2
    cfg = mini_config(
        mini_root, tmp_path, **{"replay.method": "none", "cl.lwf": {"distil_first_task": False}}
    )
    trial = Trial(cfg)
    trial.setup()
    trial.hooks[-1].before_task(trial, 1)
    assert trial.hooks[-1].teacher == {}  # avalanche: nothing to distil at the first task


def test_paper_defaults_fill_only_the_settings_a_trial_leaves_unset(mini_root, tmp_path):
    from harness.config import from_dict, load_file, merge

    paper = load_file("configs/paper-defaults.yaml")
    base = mini_config(mini_root, tmp_path, **{"replay.method": "none"}).to_dict()
    cfg = from_dict(
        merge(
            merge(base, paper),
            {"cl": {"ewc": {"lam": 100}, "lwf": {}}, "interventions": {"redo": {}}},
        )
    )
    assert cfg.method_defaults == "paper"
    assert cfg.cl["ewc"] == {
        "lam": 100,
        "half": True,
        "fisher_nll": "sequence",
        "anchors": "per_task",
        "fisher_samples": None,
    }
    assert cfg.cl["lwf"] == {"t2_scale": False, "distil_first_task": False}
    assert cfg.interventions["redo"] == {"every": 1000}
    assert (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout) == (8, 32, 0.1)
    assert list(cfg.model.lora_target_modules) == ["q_proj", "v_proj"]
    # the harness's defaults: nothing filled in
    harness_cfg = mini_config(mini_root, tmp_path, **{"replay.method": "none", "cl.lwf": {}})
    assert harness_cfg.cl["lwf"] == {} and harness_cfg.method_defaults == "harness"


def test_online_ewc_decays_the_running_fisher(mini_root, tmp_path):
    seen = {}

    class Grab(Hook):
        def setup(self, trial):
            self.ewc = next(h for h in trial.hooks if isinstance(h, EWC))

        def after_task(self, trial, stage):
            seen[stage] = {n: f.clone() for n, f in self.ewc.fisher.items()}

    cfg = mini_config(mini_root, tmp_path, **{"replay.method": "none", "cl.ewc": {"gamma": 0.5}})
    trial = Trial(cfg, [Grab()])
    trial.run()
    ewc = next(h for h in trial.hooks if isinstance(h, EWC))
    name = next(iter(seen[1]))
    # F_2 = 0.5 * F_1 + (task 2's Fisher, >= 0)
    assert torch.all(seen[2][name] - 0.5 * seen[1][name] >= -1e-12)
    assert not torch.equal(seen[2][name], seen[1][name])
    assert ewc.star  # the anchor is the weights after the last task


def _olora_trial(mini_root, tmp_path, hooks=()):
    cfg = mini_config(mini_root, tmp_path, **METHODS["olora"])
    trial = Trial(cfg, list(hooks))
    return trial


def test_olora_orthogonality_equals_a_hand_computed_value(mini_root, tmp_path):
    trial = _olora_trial(mini_root, tmp_path)
    trial.setup()
    olora = next(h for h in trial.hooks if isinstance(h, OLoRA))
    layers = lora_layers(trial.backend.module)
    g = torch.Generator().manual_seed(0)
    expected = 0.0
    old = {}
    with torch.no_grad():
        for name, layer in layers.items():
            a = layer.lora_A["default"].weight
            a.copy_(torch.randn(a.shape, generator=g))
            a_old = torch.randn(a.shape, generator=g)
            old[name] = (a_old, torch.zeros(layer.lora_B["default"].weight.shape))
            # |A_old A^T|_1 written out entry by entry
            for i in range(a.shape[0]):
                for j in range(a.shape[0]):
                    expected += abs(float(sum(a_old[i, k] * a[j, k] for k in range(a.shape[1]))))
    olora.old = [old]
    assert float(olora.orthogonality()) == pytest.approx(expected, rel=1e-5)
    l2 = sum(
        float(la.lora_A["default"].weight.norm() + la.lora_B["default"].weight.norm())
        for la in layers.values()
    )
    assert float(olora.penalty()) == pytest.approx(0.5 * expected + 0.01 * l2, rel=1e-5)


def test_olora_keeps_earlier_adapters_beside_unchanged_base_weights(mini_root, tmp_path):
    adapters, base = {}, {}

    class Snapshot(Hook):
        def setup(self, trial):
            self.layers = lora_layers(trial.backend.module)
            base.update(
                {n: la.get_base_layer().weight.detach().clone() for n, la in self.layers.items()}
            )
            g = torch.Generator().manual_seed(1)
            x.update({n: torch.randn(3, 5, w.shape[1], generator=g) for n, w in base.items()})

        def after_task(self, trial, stage):
            adapters[stage] = {
                n: (
                    la.lora_A["default"].weight.detach().clone(),
                    la.lora_B["default"].weight.detach().clone(),
                    float(la.scaling["default"]),
                )
                for n, la in self.layers.items()
            }
            if stage == 3:  # the trial's model as it ends (its hooks still in place)
                model = trial.backend.module
                model.eval()
                with torch.no_grad():
                    outputs["on"] = {n: la(x[n]) for n, la in self.layers.items()}
                    with model.disable_adapter():  # PEFT's disabled model: the start
                        outputs["off"] = {n: la(x[n]) for n, la in self.layers.items()}

    outputs: dict[str, dict] = {}
    x: dict[str, torch.Tensor] = {}
    trial = _olora_trial(mini_root, tmp_path, [Snapshot()])
    assert trial.run().status == "completed"
    olora = next(h for h in trial.hooks if isinstance(h, OLoRA))
    assert olora.kept == 2  # tasks 1 and 2 kept; task 3's adapter is the live one
    for t in (0, 1):
        for name, (a, b) in olora.old[t].items():
            assert torch.equal(a, adapters[t + 1][name][0])  # as trained, untouched since
            assert torch.equal(b, adapters[t + 1][name][1])
    for name, layer in lora_layers(trial.backend.module).items():
        assert torch.equal(layer.get_base_layer().weight, base[name])  # nothing merged
        s = adapters[1][name][2]
        xn = x[name]
        want = xn @ base[name].T + sum(
            s * (xn @ adapters[t][name][0].T @ adapters[t][name][1].T) for t in (1, 2, 3)
        )
        torch.testing.assert_close(outputs["on"][name], want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outputs["off"][name], xn @ base[name].T, rtol=1e-6, atol=1e-7)


def _logits_at_hand_over(mini_root, tmp_path, *order):
    """A bfloat16 LoRA trial with O-LoRA (and ``order``'s other hooks): the logits of a batch at
    the end of task 1 and right after every hook's before_task(2) (O-LoRA's hand-over), and
    LwF's teacher logits then, if LwF is in it."""
    cl = {name: {} for name in order}
    cfg = mini_config(
        mini_root,
        tmp_path,
        **{"replay.method": "none", "model.tuning": "lora", "model.lora_r": 4,
           "model.dtype": "bfloat16", "model.name": saved_tiny(tmp_path / "model"), "cl": cl},
    )  # fmt: skip
    trial = Trial(cfg)
    trial.setup()
    model = trial.backend.module
    with torch.no_grad():  # a trained-looking adapter: updates of std ~1e-4 of the weights
        g = torch.Generator().manual_seed(3)
        for layer in lora_layers(model).values():
            for w in (layer.lora_A["default"].weight, layer.lora_B["default"].weight):
                w.copy_(torch.randn(w.shape, generator=g) * 3e-2)
    rows = trial.inputs.tasks[0].train[:4]
    ids, mask, labels = collate(rows, trial.inputs.pad_id)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits.float()
    trial.before_task(2)
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids, attention_mask=mask).logits.float()
    teacher = None
    lwf = next((h for h in trial.hooks if type(h).__name__ == "LwF"), None)
    if lwf is not None:
        b = Batch(ids, mask, labels, after, torch.zeros(len(rows), dtype=torch.bool))
        teacher = torch.func.functional_call(
            model,
            lwf.teacher,
            args=(),
            kwargs={"input_ids": ids, "attention_mask": mask},
            strict=False,
        ).logits.float()
        assert float(lwf.loss_term(trial, 2, b)) == 0.0
    return before, after, teacher


def test_olora_hand_over_keeps_the_model_exact_in_bfloat16(mini_root, tmp_path):
    """Failed before 2026-12-05: merging W + s B A into bfloat16 weights rounded part of the
    update away (the logits moved at the hand-over); kept beside them in float32, the model
    computes exactly what it computed at the end of the task."""
    before, after, _ = _logits_at_hand_over(mini_root, tmp_path, "olora")
    assert torch.equal(before, after)


@pytest.mark.parametrize("order", [("lwf", "olora"), ("olora", "lwf")])
def test_lwf_teacher_is_the_end_of_the_previous_task_in_either_hook_order(
    mini_root, tmp_path, order
):
    """Failed before 2026-12-05 for (lwf, olora): the teacher applied task 1's adapter twice
    (its copy of the adapter plus the merged weights)."""
    before, after, teacher = _logits_at_hand_over(mini_root, tmp_path, *order)
    assert torch.equal(teacher, before) and torch.equal(after, before)


def test_lwf_teacher_is_taken_before_a_before_task_intervention(mini_root, tmp_path):
    cfg = mini_config(
        mini_root,
        tmp_path,
        **{"replay.method": "none", "interventions": {"shrink_perturb": {"shrink": 0.5}},
           "cl.lwf": {}},
    )  # fmt: skip
    trial = Trial(cfg)
    trial.setup()
    model = trial.backend.module
    end_of_task_1 = {n: p.detach().clone() for n, p in model.named_parameters()}
    trial.before_task(2)
    lwf = next(h for h in trial.hooks if type(h).__name__ == "LwF")
    assert all(torch.equal(lwf.teacher[n], end_of_task_1[n]) for n in end_of_task_1)
    assert not torch.equal(dict(model.named_parameters())["model.embed_tokens.weight"],
                           end_of_task_1["model.embed_tokens.weight"])  # fmt: skip


def test_olora_is_refused_outside_lora_and_with_ewc(mini_root, tmp_path):
    with pytest.raises(ConfigError, match="cl.olora: is defined for LoRA adapters only"):
        mini_config(mini_root, tmp_path, **{"replay.method": "none", "cl.olora": {}})
    with pytest.raises(ConfigError, match="EWC would anchor task k's adapter"):
        mini_config(
            mini_root,
            tmp_path,
            **{"replay.method": "none", "model.tuning": "lora", "cl": {"olora": {}, "ewc": {}}},
        )
    with pytest.raises(ConfigError, match="ZeRO stages 0, 1, 2, not scale.zero_stage=3"):
        mini_config(
            mini_root,
            tmp_path,
            **{
                "replay.method": "none",
                "cl.ewc": {},
                "scale.backend": "deepspeed",
                "scale.zero_stage": 3,
            },
        )
    tasks = ",".join(f"t{i}" for i in range(16))
    with pytest.raises(ConfigError, match="gives weights for 15 tasks, not 16"):
        mini_config(
            mini_root,
            tmp_path,
            **{"replay.method": "none", "model.tuning": "lora", "data.tasks": tasks,
               "cl.olora": {"schedule": "long_sequence"}},
        )  # fmt: skip
    mini_config(  # order6's 15 tasks are within it
        mini_root,
        tmp_path,
        **{"replay.method": "none", "model.tuning": "lora", "data.tasks": "order6",
           "cl.olora": {"schedule": "long_sequence"}},
    )  # fmt: skip
    # The disabled-adapter model stays the starting model: kl compares with it exactly.
    mini_config(
        mini_root, tmp_path, **{"replay.method": "kl", "model.tuning": "lora", "cl.olora": {}}
    )


def test_lwf_at_the_first_step_equals_its_frozen_copy(mini_root, tmp_path):
    cfg = mini_config(mini_root, tmp_path, **{"replay.method": "none", "cl.lwf": {}})
    trial = Trial(cfg)
    trial.setup()
    lwf = trial.hooks[-1]
    lwf.before_task(trial, 1)
    rows = trial.inputs.tasks[0].train[:4]
    ids, mask, labels = collate(rows, trial.inputs.pad_id)
    model = trial.backend.module

    def batch():
        logits = model(input_ids=ids, attention_mask=mask).logits
        return Batch(ids, mask, labels, logits, torch.zeros(len(rows), dtype=torch.bool))

    b = batch()
    term = lwf.loss_term(trial, 1, b)
    assert abs(float(term)) < 1e-6  # the teacher is the model itself
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    b = batch()
    term = lwf.loss_term(trial, 1, b)
    assert float(term) > 1e-4
    term.backward()  # the gradient reaches the student, not the teacher copy
    assert all(t.grad is None for t in lwf.teacher.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_task_replay_draws_only_from_finished_tasks(mini_root, tmp_path):
    for policy in ("quota", "reservoir"):
        seen = {}

        class Look(Hook):
            def __init__(self, seen):
                self.seen = seen

            def setup(self, trial):
                self.tr = next(h for h in trial.hooks if type(h).__name__ == "TaskReplay")

            def before_task(self, trial, stage):
                self.seen[stage] = (list(self.tr.buffer), len(self.tr.extra_examples(trial, stage)))

        cfg = mini_config(
            mini_root,
            tmp_path / policy,
            **{"replay.method": "none", "cl.task_replay": {"size": 3, "policy": policy}},
        )
        assert run_trial(cfg, hooks=[Look(seen)]).status == "completed"
        assert seen[1] == ([], 0)
        for stage, (buffer, n_rows) in seen.items():
            assert all(pos < stage for pos, _ in buffer), (policy, stage, buffer)
            assert n_rows == len(buffer)
        if policy == "quota":
            assert [len(b) for b, _ in seen.values()] == [0, 3, 6]
            assert {p for p, _ in seen[3][0]} == {1, 2}
        else:
            assert [len(b) for b, _ in seen.values()] == [0, 3, 3]


def test_multitask_trains_every_task_in_one_stage_and_its_rows_fit_the_schema(mini_root, tmp_path):
    cfg = mini_config(mini_root, tmp_path, **METHODS["multitask"])
    result = run_trial(cfg)
    assert result.status == "completed"
    tables = read_study(tmp_path / "study=engine")  # validated against results.schema
    acc, summary, curve = tables["accuracy"], tables["summary"], tables["curve"]
    assert sorted(acc.stage.unique()) == [0, 1]
    assert set(acc.task) == {"colour", "animal", "compare"}
    assert summary.n_stages.iloc[0] == 1 and summary.n_tasks.iloc[0] == 3
    final = acc[acc.stage == 1].accuracy.mean()
    assert summary.ap.iloc[0] == pytest.approx(final)
    assert summary[["bwt", "fwt", "forgetting"]].isna().all().all()
    assert curve.task.unique().tolist() == ["colour+animal+compare"]
    assert curve.task_step.max() == 3 * cfg.train.max_steps_per_task  # the same budget
    from results.presentation.baselines import baselines_table

    table = baselines_table(summary)
    assert "multitask" in table.index


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_cl_method_survives_a_checkpoint_and_resume(mini_root, tmp_path, name):
    overrides = METHODS[name]
    cfg = mini_config(mini_root, tmp_path / "full", **overrides)
    run_trial(cfg)
    if name == "multitask":  # one stage: resuming after it leaves nothing to train
        return
    crashed = mini_config(mini_root, tmp_path / "crashed", **overrides)
    ckpt = tmp_path / "ckpt"

    with pytest.raises(Crash):
        run_trial(crashed, hooks=[SaveThenCrash(ckpt)])
    assert json.loads((ckpt / "state.json").read_text())["finished_stage"] == 1
    assert run_trial(crashed, resume_from=ckpt).status == "completed"

    def rows(out):
        study = out / "study=engine"
        c = read_records(study, "curve").sort_values("step")
        a = read_records(study, "accuracy").sort_values(["stage", "task_position"])
        return c.loss.tolist(), a.accuracy.tolist()

    (loss_a, acc_a), (loss_b, acc_b) = rows(tmp_path / "full"), rows(tmp_path / "crashed")
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert acc_b == acc_a


def test_single_task_starts_every_task_from_the_starting_model(mini_root, tmp_path):
    seen = {}

    class Peek(Hook):
        def setup(self, trial):
            self.model = trial.backend.module
            seen[0] = {n: p.detach().clone() for n, p in self.model.named_parameters()}

        def before_task(self, trial, stage):  # runs after single_task's (hooks given last)
            seen[stage] = {n: p.detach().clone() for n, p in self.model.named_parameters()}

        def after_task(self, trial, stage):
            seen[f"end{stage}"] = {n: p.detach().clone() for n, p in self.model.named_parameters()}

    cfg = mini_config(mini_root, tmp_path, **METHODS["single_task"])
    assert run_trial(cfg, hooks=[Peek()]).status == "completed"
    for stage in (1, 2, 3):
        assert all(torch.equal(seen[stage][n], seen[0][n]) for n in seen[0]), stage
    assert any(not torch.equal(seen["end1"][n], seen[0][n]) for n in seen[0])  # it trained
    tables = read_study(tmp_path / "study=engine")
    summary = tables["summary"]
    assert summary[["ap", "bwt", "fwt", "forgetting"]].isna().all().all()
    # beside a sequential trial of the same seed: SAPT's FWT from the two diagonals
    run_trial(mini_config(mini_root, tmp_path, **{"replay.method": "none"}))
    tables = read_study(tmp_path / "study=engine")
    from harness.metrics import fwt_sapt, matrix_from_long
    from results.presentation.baselines import baselines, baselines_table

    acc, summary = tables["accuracy"], tables["summary"]
    names = baselines(summary)
    ids = {names[i]: summary.trial_id[i] for i in summary.index}
    A = {k: matrix_from_long(acc[acc.trial_id == ids[k]])[0] for k in ("none", "single_task")}
    table = baselines_table(summary, acc, formatted=False)
    want = fwt_sapt(A["none"], A["single_task"])
    assert table.loc["none", "fwt_sapt_mean"] == pytest.approx(want)
    jl = [A["single_task"][k, k - 1] for k in (1, 2, 3)]
    assert table.loc["single_task", "just_learned_mean"] == pytest.approx(sum(jl) / 3)
    assert pd.isna(table.loc["single_task", "fwt_sapt_mean"])

    # eval.matrix=needed: after each stage only its own task (the diagonal, all SAPT's FWT
    # reads), the same values; the dry run's count agrees
    needed = from_dict(merge(cfg.to_dict(), {"trial_id": "needed", "eval": {"matrix": "needed"}}))
    assert run_trial(needed).status == "completed"
    acc = read_study(tmp_path / "study=engine")["accuracy"]
    mine = acc[acc.trial_id == "needed"]
    assert sorted(zip(mine.stage, mine.task_position, strict=True)) == [
        (0, 1), (0, 2), (0, 3), (1, 1), (2, 2), (3, 3)
    ]  # fmt: skip
    assert np.diag(matrix_from_long(mine)[0][1:]).tolist() == jl
    from harness.cost import trial_cost

    def cells_left_out(c):  # of the full matrix's 12 (4 checkpoints x 3 tasks), in tokens
        return trial_cost(cfg, n_tasks=3).evaluation - trial_cost(c, n_tasks=3).evaluation

    sequential = mini_config(
        mini_root, tmp_path, **{"replay.method": "none", "eval.matrix": "needed"}
    )
    assert cells_left_out(sequential) > 0  # one cell: task 3 after stage 1
    assert cells_left_out(needed) == pytest.approx(6 * cells_left_out(sequential))


def test_single_task_refuses_other_cl_methods(mini_root, tmp_path):
    with pytest.raises(ConfigError, match="cl.single_task: trains every task alone"):
        mini_config(
            mini_root, tmp_path, **{"replay.method": "none", "cl": {"single_task": {}, "ewc": {}}}
        )


def test_metrics_of_sapt_on_a_hand_matrix():
    from harness.metrics import bwt, bwt_gem_code, fwt_sapt, just_learned

    A = np.array([[0.1, 0.2, 0.3], [0.8, 0.3, 0.4], [0.6, 0.9, 0.5], [0.5, 0.7, 0.7]])
    S = np.array([[0.1, 0.2, 0.3], [0.9, 0.2, 0.3], [0.1, 0.8, 0.3], [0.1, 0.2, 0.6]])
    assert just_learned(A) == pytest.approx((0.8 + 0.9 + 0.7) / 3)
    assert fwt_sapt(A, S) == pytest.approx((0.8 + 0.9 + 0.7) / 3 - (0.9 + 0.8 + 0.6) / 3)
    assert bwt_gem_code(A) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 3)
    assert bwt(A) == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)


def test_the_baselines_study_takes_paper_defaults(tmp_path, monkeypatch):
    """``--config configs/paper-defaults.yaml``: every row's method at its reference's values
    (a dry run on the tiny preset: the grid validated and costed, nothing trained)."""
    import harness.cost
    import studies.baselines as study
    from studies import run

    seen: list = []
    costs = harness.cost.grid_costs
    monkeypatch.setattr(harness.cost, "grid_costs", lambda cfgs: seen.extend(cfgs) or costs(cfgs))
    argv = ["--preset", "tiny", "--smoke-test", "--dry-run", "--out", str(tmp_path)]
    assert run(study.STUDY, [*argv, "--config", "configs/paper-defaults.yaml"]) == 0
    by = {next(iter(c.cl), c.replay.method): c for c in seen}
    assert by["ewc"].cl["ewc"]["anchors"] == "per_task" and by["ewc"].cl["ewc"]["half"]
    assert by["lwf"].cl["lwf"] == {"t2_scale": False, "distil_first_task": False}
    assert by["olora"].cl["olora"] == {"schedule": "long_sequence"}
    assert (by["olora"].model.lora_alpha, by["olora"].model.lora_target_modules) == (
        32,
        ("q_proj", "v_proj"),
    )
    assert all(c.method_defaults == "paper" for c in seen) and len(seen) == len(study.BASELINES)
