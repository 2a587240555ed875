"""The forward-token count of --dry-run (harness.cost)."""

from __future__ import annotations

import re

import pytest

from harness.config import from_dict, merge
from harness.cost import describe, grid_costs, trial_cost
from harness.evaluate import _pack
from harness.inputs import load_data, tokenize_inputs
from tests.fixtures import mini_config, tiny_built


def test_measured_cost_counts_every_training_row_and_every_evaluation_forward(mini_root, tmp_path):
    cfg = mini_config(
        mini_root,
        tmp_path / "out",
        **{
            "replay.method": "none",
            "data.tasks": "colour,animal",
            "train.max_steps_per_task": None,
            "eval.plasticity_texts": 5,
        },
    )
    tok = tiny_built().tokenizer
    inputs = tokenize_inputs(cfg, load_data(cfg), tok)
    c = trial_cost(cfg, inputs)
    # epochs 1, no replay, no step cap: every training row once
    assert c.train == sum(len(x.ids) for tt in inputs.tasks for x in tt.train)
    assert c.train_compute == 3 * c.train
    per_ckpt = sum(len(_pack(p, tt.candidates)[0]) for tt in inputs.tasks for p in tt.prompts)
    per_ckpt += sum(len(_pack(p, cands)[0]) for p, cands in inputs.probe[0])
    per_ckpt += sum(len(t) for t in inputs.heldout)
    # the plasticity diagnostics' probe batch: the first eval.plasticity_texts held-out texts
    assert len(inputs.heldout) > 5
    per_ckpt += sum(len(t) for t in inputs.heldout[: cfg.eval.plasticity_texts])
    assert c.checkpoints == 3 and c.evaluation == 3 * per_ckpt
    zero3 = from_dict(merge(cfg.to_dict(), {"scale": {"backend": "deepspeed", "zero_stage": 3}}))
    probe_batch = sum(len(t) for t in inputs.heldout[:5])
    assert trial_cost(zero3, inputs).evaluation == c.evaluation - 3 * probe_batch  # not run
    two = from_dict(merge(cfg.to_dict(), {"scale": {"backend": "deepspeed", "workers": 2}}))
    assert trial_cost(two, inputs).evaluation == c.evaluation + 3 * probe_batch  # each rank's
    assert c.ratio == pytest.approx(c.evaluation / c.train_compute)


def test_the_cost_counts_what_the_cl_methods_add(mini_root, tmp_path):
    """Task replay trains on the buffer too (the real trial's rows, counted), multitask is
    scored at 2 checkpoints, LwF adds a teacher forward over the task rows."""
    from harness.trial import run_trial

    common = {"data.tasks": "colour,animal", "train.max_steps_per_task": None}
    tok = tiny_built().tokenizer
    plain = mini_config(mini_root, tmp_path / "p", **{"replay.method": "none", **common})
    inputs = tokenize_inputs(plain, load_data(plain), tok)
    base = trial_cost(plain, inputs)
    replay = mini_config(
        mini_root,
        tmp_path / "r",
        **{"replay.method": "none", "cl.task_replay": {"size": 3}, **common},
    )
    measured = run_trial(replay).train_tokens
    counted = trial_cost(replay, inputs).train
    assert measured > base.train and counted == pytest.approx(measured, rel=0.05)
    multi = mini_config(
        mini_root, tmp_path / "m", **{"replay.method": "none", "cl.multitask": {}, **common}
    )
    assert trial_cost(multi, inputs).checkpoints == 2
    lwf = mini_config(
        mini_root, tmp_path / "l", **{"replay.method": "none", "cl.lwf": {}, **common}
    )
    assert trial_cost(lwf, inputs).train_compute == pytest.approx(4 * base.train, rel=1e-6)


def test_the_8b_dry_run_prints_the_ratio_from_stated_assumptions() -> None:
    from harness.grid import axis, expand_grid
    from harness.presets import base_config

    base = base_config("llama-3.1-8b", data_dir="/nonexistent")
    configs = expand_grid("x", base, [axis("replay.method", ["tm"])])
    lines = describe(grid_costs(configs))
    assert any("assumed lengths" in ln for ln in lines)
    ratio = float(re.fullmatch(r"evaluation/training forward tokens: (\S+)", lines[-1]).group(1))
    c = next(iter(grid_costs(configs).values()))
    with_lm_eval = from_dict(merge(base, {"eval": {"lm_eval_tasks": ["arc_easy"]}}))
    assert "not counted: lm-eval's tasks (arc_easy)" in " ".join(
        trial_cost(with_lm_eval, n_tasks=15).assumptions
    )
    # gradient checkpointing: training compute is 4x the training tokens
    assert c.train_compute == 4 * c.train and ratio == pytest.approx(c.ratio, abs=0.005)
    assert c.checkpoints == 16 and c.prepare > 0


def test_lora_backward_and_a_frozen_models_forward_are_counted_as_they_cost(mini_root, tmp_path):
    """LoRA's frozen weights get no gradient (forward + ~1 forward of backward: 2x, not 3x);
    kl, l1 and l2 run the frozen starting model on every replay row (one more forward over
    those rows); ce and tm do not (tm reads the states it prepared)."""
    from harness.replay.kl import KLReplay
    from harness.replay.tm import TMReplay

    common = {"data.tasks": "colour,animal", "train.max_steps_per_task": None}
    tok = tiny_built().tokenizer

    def cost(name, **over):
        cfg = mini_config(mini_root, tmp_path / name, **{**common, **over})
        return trial_cost(cfg, tokenize_inputs(cfg, load_data(cfg), tok))

    plain = cost("p", **{"replay.method": "none"})
    lora = cost("lora", **{"replay.method": "none", "model.tuning": "lora"})
    assert lora.train == plain.train and lora.train_compute == 2 * lora.train
    # EWC's Fisher passes (forward + backward per example) follow the same rule
    ewc = cost("ewc", **{"replay.method": "none", "cl": {"ewc": {}}})
    ewc_lora = cost(
        "ewc_lora", **{"replay.method": "none", "cl": {"ewc": {}}, "model.tuning": "lora"}
    )
    fisher, fisher_lora = (
        ewc.train_compute - plain.train_compute,
        ewc_lora.train_compute - lora.train_compute,
    )
    assert fisher > 0 and fisher_lora == pytest.approx(fisher * 2 / 3, abs=2)
    ce, kl, tm = (cost(m, **{"replay.method": m}) for m in ("ce", "kl", "tm"))
    assert KLReplay.needs_reference and not TMReplay.needs_reference  # what the counts rest on
    replay_rows = ce.train - plain.train  # epochs 1, no step cap: the task rows are plain's
    assert replay_rows > 0 and kl.train == ce.train == tm.train
    assert ce.train_compute == tm.train_compute == 3 * ce.train
    assert kl.train_compute - ce.train_compute == pytest.approx(replay_rows, abs=2)


@pytest.mark.parametrize("method,tuning", [("kl", "full"), ("l2", "lora")])
def test_the_frozen_model_forwards_a_trial_makes_are_the_ones_counted(
    mini_root, tmp_path, monkeypatch, method, tuning
):
    """A real trial's no-grad reference forwards (kl's logits, l2's hidden states; under LoRA
    the adapter-disabled model) see as many tokens as the dry run adds for them."""
    import torch

    from harness import train
    from harness.trial import run_trial

    seen = []
    forward = train.last_hidden_and_logits

    def counted(model, ids, mask):
        if not torch.is_grad_enabled():  # the frozen model's forward (training's has grad)
            seen.append(int(mask.sum()))
        return forward(model, ids, mask)

    monkeypatch.setattr(train, "last_hidden_and_logits", counted)
    common = {"data.tasks": "colour,animal", "train.max_steps_per_task": None}
    over = {**common, "model.tuning": tuning}
    cfg = mini_config(mini_root, tmp_path / "r", **{**over, "replay.method": method})
    ce = mini_config(mini_root, tmp_path / "c", **{**over, "replay.method": "ce"})
    run_trial(cfg)
    inputs = tokenize_inputs(cfg, load_data(cfg), tiny_built().tokenizer)
    counted_extra = trial_cost(cfg, inputs).train_compute - trial_cost(ce, inputs).train_compute
    assert len(seen) > 0 and sum(seen) == pytest.approx(counted_extra, abs=2)
