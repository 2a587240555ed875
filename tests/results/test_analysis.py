"""results.analysis on small tables whose expected values are worked out by hand below.

Standard deviations are *sample* standard deviations (ddof=1, pandas' default): for values
x_1..x_n, sqrt(sum (x_i - mean)^2 / (n - 1)). Every test writes the arithmetic out.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from results import analysis as an
from results import diagnostics, forgetting, rescore
from results import matrices as mat
from results.presentation import baselines, demo, plasticity


def trial(tid: str, method: str, seed: int, status: str = "completed", **values) -> dict:
    """One summary row with the settings analysis groups by; metrics default to 0."""
    row = dict(
        study="s",
        trial_id=tid,
        status=status,
        method=method,
        seed=seed,
        tuning="full",
        lr_multiplier=1.0,
        replay_size=0 if method == "none" else 100,
        model="tiny",
        n_tasks=2,
        tasks="a,b",
        lr=1e-4,
        **dict.fromkeys(an.PAPER_METRICS, 0.0),
        general_ppl_start=10.0,
        general_ppl_final=10.0,
    )
    row.update(values)
    return row


@pytest.fixture
def summary() -> pd.DataFrame:
    return pd.DataFrame(
        [
            trial("tm0", "tm", 0, ap=0.5),
            trial("tm1", "tm", 1, ap=0.6),
            trial("tm2", "tm", 2, ap=0.7),
            trial("n0", "none", 0, ap=0.2),
            trial("n1", "none", 1, ap=0.4),
            trial("n2", "none", 2, "diverged", ap=0.99),  # must be counted, not averaged
            trial("n3", "none", 3, "failed", ap=0.99),
        ]
    )


# --- method order ------------------------------------------------------------------------


def test_methods_sort_in_the_registry_order_then_unknown_ones_a_to_z() -> None:
    from harness.replay import method_names

    assert an.method_order() == tuple(method_names()) == ("none", "ce", "kl", "l1", "l2", "tm")
    assert an.METHOD_ORDER == an.method_order()  # the former constant still reads
    df = pd.DataFrame({"method": ["zeta", "tm", "alpha", "none", "kl"], "seed": range(5)})
    assert an.sort_groups(df, ["method"]).method.tolist() == ["none", "kl", "tm", "alpha", "zeta"]


# --- paper_table / format_mean_std ------------------------------------------------------


def test_paper_table_mean_sample_std_and_counts(summary: pd.DataFrame) -> None:
    t = an.paper_table(summary, metrics=("ap",))
    assert t.index.name == "method"
    assert list(t.index) == ["none", "tm"]  # baseline first (the registry's order), not A-Z
    assert list(t.columns) == ["n", "n_diverged", "n_failed", "ap_mean", "ap_std"]
    # tm: mean (0.5 + 0.6 + 0.7) / 3 = 0.6; sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    # (the population std would be sqrt(0.02 / 3) = 0.0816).
    assert t.loc["tm", "ap_mean"] == pytest.approx(0.6)
    assert t.loc["tm", "ap_std"] == pytest.approx(0.1)
    assert (t.loc["tm", ["n", "n_diverged", "n_failed"]] == [3, 0, 0]).all()
    # none: only the completed 0.2 and 0.4 -> mean 0.3, std sqrt((0.01 + 0.01) / 1) = 0.1414;
    # the diverged and failed trials (0.99) would give 0.645 if averaged in.
    assert t.loc["none", "ap_mean"] == pytest.approx(0.3)
    assert t.loc["none", "ap_std"] == pytest.approx(math.sqrt(0.02))
    assert (t.loc["none", ["n", "n_diverged", "n_failed"]] == [2, 1, 1]).all()


def test_paper_table_keeps_groups_with_no_completed_trial(summary: pd.DataFrame) -> None:
    s = pd.concat(
        [
            summary,
            pd.DataFrame([trial("k0", "kl", 0, "diverged"), trial("k1", "kl", 1, "diverged")]),
        ]
    )
    t = an.paper_table(s, metrics=("ap", "bwt"))
    assert list(t.index) == ["none", "kl", "tm"]
    assert (t.loc["kl", ["n", "n_diverged", "n_failed"]] == [0, 2, 0]).all()
    assert np.isnan(t.loc["kl", "ap_mean"]) and np.isnan(t.loc["kl", "bwt_std"])


def test_paper_table_does_not_skip_nan_and_single_trial_std_is_nan() -> None:
    s = pd.DataFrame(
        [trial("a", "tm", 0, fwt=0.1), trial("b", "tm", 1, fwt=np.nan), trial("c", "ce", 0)]
    )
    t = an.paper_table(s, metrics=("fwt",))
    assert np.isnan(t.loc["tm", "fwt_mean"])  # 0.1 alone would pretend 2 trials agree
    assert t.loc["ce", "fwt_mean"] == 0.0 and np.isnan(t.loc["ce", "fwt_std"])  # n = 1


def test_paper_table_groups_by_several_columns(summary: pd.DataFrame) -> None:
    s = summary.copy()
    s.loc[s["trial_id"] == "tm2", "lr_multiplier"] = 3.0
    t = an.paper_table(s, by=("method", "lr_multiplier"), metrics=("ap",))
    assert list(t.index) == [("none", 1.0), ("tm", 1.0), ("tm", 3.0)]
    assert t.loc[("tm", 1.0), "ap_mean"] == pytest.approx(0.55)  # (0.5 + 0.6) / 2
    assert t.loc[("tm", 3.0), "n"] == 1


def test_format_mean_std() -> None:
    df = pd.DataFrame(
        {
            "n": [3, 1, 0],
            "ap_mean": [0.6071, 0.5, np.nan],
            "ap_std": [0.0123, np.nan, np.nan],
            "general_ppl_final_mean": [12.34, 9.0, np.nan],
            "general_ppl_final_std": [0.56, np.nan, np.nan],
        },
        index=pd.Index(["tm", "ce", "kl"], name="method"),
    )
    out = an.format_mean_std(df)
    assert list(out.columns) == ["n", "ap", "general_ppl_final"]
    # AP is on the accuracy scale: x100 -> 60.71 ± 1.23 -> "60.7 ± 1.2"; ppl is not scaled.
    assert out.loc["tm"].tolist() == [3, "60.7 ± 1.2", "12.3 ± 0.6"]
    assert out.loc["ce"].tolist() == [1, "50.0", "9.0"]
    assert out.loc["kl"].tolist() == [0, "–", "–"]
    assert an.format_mean_std(df, percent=False, digits=3).loc["tm", "ap"] == "0.607 ± 0.012"


# --- lr / replay size / loss type / LoRA tables -------------------------------------------


def test_lr_robustness_table_pivot() -> None:
    s = pd.DataFrame(
        [
            trial("a", "tm", 0, lr_multiplier=1.0, general_acc_final=0.50),
            trial("b", "tm", 1, lr_multiplier=1.0, general_acc_final=0.70),
            trial("c", "tm", 0, lr_multiplier=10.0, general_acc_final=0.40),
            trial("d", "tm", 1, lr_multiplier=10.0, general_acc_final=0.44),
            trial("e", "none", 0, lr_multiplier=1.0, general_acc_final=0.30),
            trial("f", "none", 0, "diverged", lr_multiplier=10.0, general_acc_final=0.01),
            trial("g", "none", 0, lr_multiplier=3.0, general_acc_final=0.20),
        ]
    )
    t = an.lr_robustness_table(s)
    assert list(t.index) == ["none", "tm"]
    assert list(t.columns) == [1.0, 3.0, 10.0]
    # tm 1x: (0.50 + 0.70) / 2 = 0.60; tm 10x: (0.40 + 0.44) / 2 = 0.42; tm never ran 3x;
    # none 10x only diverged -> NaN (not 0.01).
    expected = pd.DataFrame(
        [[0.30, 0.20, np.nan], [0.60, np.nan, 0.42]],
        index=pd.Index(["none", "tm"], name="method"),
        columns=pd.Index([1.0, 3.0, 10.0], name="lr_multiplier"),
    )
    pd.testing.assert_frame_equal(t, expected, check_dtype=False)
    div = an.lr_robustness_table(s, stat="n_diverged")
    assert div.loc["none", 10.0] == 1 and div.loc["tm", 10.0] == 0
    # std of tm at 1x: sqrt((0.1^2 + 0.1^2) / 1) = 0.1414
    assert an.lr_robustness_table(s, stat="std").loc["tm", 1.0] == pytest.approx(math.sqrt(0.02))
    with pytest.raises(ValueError, match="unknown stat"):
        an.lr_robustness_table(s, stat="median")


def test_replay_size_curve() -> None:
    s = pd.DataFrame(
        [
            trial("a", "tm", 0, replay_size=1000, general_acc_final=0.58),
            trial("b", "tm", 1, replay_size=1000, general_acc_final=0.62),
            trial("c", "tm", 0, replay_size=100, general_acc_final=0.50),
            trial("d", "tm", 1, "failed", replay_size=100, general_acc_final=0.0),
            trial("e", "none", 0, general_acc_final=0.40),
        ]
    )
    c = an.replay_size_curve(s)
    assert list(c.columns) == [
        "method",
        "replay_size",
        "mean",
        "std",
        "n",
        "n_diverged",
        "n_failed",
    ]
    assert c[["method", "replay_size"]].values.tolist() == [["none", 0], ["tm", 100], ["tm", 1000]]
    # tm 1000: (0.58 + 0.62) / 2 = 0.60, std sqrt((0.02^2 * 2) / 1) = 0.02828
    assert c["mean"].tolist() == pytest.approx([0.40, 0.50, 0.60])
    assert c.loc[2, "std"] == pytest.approx(0.02 * math.sqrt(2))
    assert c["n_failed"].tolist() == [0, 1, 0]


def test_loss_type_and_lora_tables() -> None:
    s = pd.DataFrame(
        [
            trial("a", "tm", 0, tuning="lora", ap=0.6, general_ppl_final=11.0),
            trial("b", "tm", 0, tuning="full", ap=0.8, general_ppl_final=12.0),
            trial("c", "ce", 0, tuning="full", ap=0.7, general_ppl_final=13.0),
        ]
    )
    loss = an.loss_type_table(s)
    assert list(loss.index) == ["ce", "tm"]
    assert "general_ppl_final_mean" in loss.columns
    assert loss.loc["tm", "general_ppl_final_mean"] == pytest.approx(11.5)  # (11 + 12) / 2
    lora = an.lora_vs_full_table(s)
    assert lora.index.names == ["tuning", "method"]
    assert lora.loc[("lora", "tm"), "ap_mean"] == 0.6
    assert lora.loc[("full", "tm"), "ap_mean"] == 0.8


# --- general ability -----------------------------------------------------------------------


def general_rows(tid: str, accs: list[float], ppls: list[float]) -> list[dict]:
    return [
        dict(study="s", trial_id=tid, stage=i, after_task=f"t{i}", probe="mmlu", accuracy=a, ppl=p)
        for i, (a, p) in enumerate(zip(accs, ppls, strict=True))
    ]


def test_general_drop() -> None:
    g = pd.DataFrame(general_rows("x", [0.6, 0.45, 0.3], [10.0, 20.0, 40.0]))
    d = forgetting.general_drop(g.iloc[::-1])  # input order does not matter
    assert d["stage"].tolist() == [0, 1, 2]
    # 0.6 - 0.45 = 0.15, 0.45 / 0.6 = 0.75; ppl 20 / 10 = 2 -> ln 2 nats per token.
    assert d["accuracy_drop"].tolist() == pytest.approx([0.0, 0.15, 0.30])
    assert d["accuracy_ratio"].tolist() == pytest.approx([1.0, 0.75, 0.5])
    assert d["ppl_ratio"].tolist() == pytest.approx([1.0, 2.0, 4.0])
    assert d["nll_increase"].tolist() == pytest.approx([0.0, math.log(2), math.log(4)])
    no_start = forgetting.general_drop(g[g["stage"] > 0])
    assert no_start["accuracy_drop"].isna().all() and len(no_start) == 2


def test_forgetting_prevented_seed_matched() -> None:
    s = pd.DataFrame(
        [  # drops: none 0.2 (seed 0), 0.1 (seed 1); tm 0.05 in both seeds.
            trial("n0", "none", 0, general_acc_start=0.6, general_acc_final=0.4),
            trial("n1", "none", 1, general_acc_start=0.6, general_acc_final=0.5),
            trial("t0", "tm", 0, general_acc_start=0.6, general_acc_final=0.55),
            trial("t1", "tm", 1, general_acc_start=0.6, general_acc_final=0.55),
        ]
    )
    out = forgetting.forgetting_prevented(s).set_index("method")
    # per seed: 1 - 0.05 / 0.2 = 0.75 and 1 - 0.05 / 0.1 = 0.5 -> mean 0.625,
    # sample std sqrt((0.125^2 + 0.125^2) / 1) = 0.17678; pooled 1 - 0.05 / 0.15 = 0.6667.
    assert out.loc["tm", "prevented_mean"] == pytest.approx(0.625)
    assert out.loc["tm", "prevented_std"] == pytest.approx(0.125 * math.sqrt(2))
    assert out.loc["tm", "prevented_pooled"] == pytest.approx(1 - 0.05 / 0.15)
    assert out.loc["tm", "baseline_drop_mean"] == pytest.approx(0.15)
    assert out.loc["tm", ["n", "n_seed_matched", "stage"]].tolist() == [2, 2, 2]
    assert out.loc["none", "prevented_mean"] == pytest.approx(0.0)  # the baseline vs itself
    # Perplexity: none 10 -> 20 (ln 2), tm 10 -> 10 * 2^0.25 (0.25 ln 2): 1 - 0.25 = 0.75.
    s["general_ppl_final"] = [20.0, 20.0, 10 * 2**0.25, 10 * 2**0.25]
    ppl = forgetting.forgetting_prevented(s, measure="ppl").set_index("method")
    assert ppl.loc["tm", "prevented_mean"] == pytest.approx(0.75)


def test_demo_table_drop_prevented_is_the_seed_matched_forgetting_prevented() -> None:
    s = pd.DataFrame(
        [  # the drops of test_forgetting_prevented_seed_matched; tm:dynamic drops 0.1 and 0.0
            trial("n0", "none", 0, general_acc_start=0.6, general_acc_final=0.4),
            trial("n1", "none", 1, general_acc_start=0.6, general_acc_final=0.5),
            trial("t0", "tm", 0, general_acc_start=0.6, general_acc_final=0.55, ap=0.8),
            trial("t1", "tm", 1, general_acc_start=0.6, general_acc_final=0.55, ap=0.6),
            trial("d0", "tm", 0, general_acc_start=0.6, general_acc_final=0.5),
            trial("d1", "tm", 1, general_acc_start=0.6, general_acc_final=0.6),
            trial("x2", "tm", 2, "failed", general_acc_start=0.6, general_acc_final=0.0),
        ]
    ).assign(replay_weight=["default"] * 4 + ["dynamic"] * 2 + ["default"])
    t = demo.table({"summary": s})
    assert t.index.tolist() == ["none", "tm", "tm:dynamic"]  # the registry's order, then A-Z
    # Seed-matched, as in the report: (0.75 + 0.5) / 2 = 0.625, not 1 - 0.05 / 0.15 = 0.667
    # (a ratio of the mean drops); tm:dynamic: (1 - 0.1 / 0.2 + 1 - 0 / 0.1) / 2 = 0.75.
    assert t["drop_prevented"].tolist() == pytest.approx([0.0, 0.625, 0.75])
    assert t.loc["tm", "drop_prevented"] == pytest.approx(
        forgetting.forgetting_prevented(s[s.replay_weight == "default"])
        .set_index("method")
        .loc["tm", "prevented_mean"]
    )
    # Means over the completed trials only (the failed tm trial is not a seed).
    assert t.loc["tm", ["seeds", "probe_final", "task_AP"]].tolist() == pytest.approx(
        [2, 0.55, 0.7]
    )
    no_baseline = demo.table({"summary": s[s.method != "none"]})
    assert no_baseline["drop_prevented"].isna().all()


def test_forgetting_prevented_fallbacks() -> None:
    s = pd.DataFrame(
        [
            trial("n0", "none", 0, general_acc_start=0.6, general_acc_final=0.4),  # drop 0.2
            trial("n1", "none", 1, "diverged", general_acc_start=0.6, general_acc_final=0.0),
            trial("t0", "tm", 0, general_acc_start=0.6, general_acc_final=0.5),  # drop 0.1
            trial("t1", "tm", 1, general_acc_start=0.6, general_acc_final=0.45),  # drop 0.15
            trial("c0", "ce", 0, lr_multiplier=3.0, general_acc_start=0.6, general_acc_final=0.5),
        ]
    )
    per = forgetting.forgetting_prevented(s, per_trial=True).set_index("trial_id")
    # t1's seed-1 baseline diverged: it falls back to the context mean (0.2 over seed 0 only).
    assert per.loc["t0", "matched"] == "seed" and per.loc["t1", "matched"] == "context"
    assert per.loc["t1", "prevented"] == pytest.approx(1 - 0.15 / 0.2)
    # ce ran at 3x where no baseline exists: nothing to compare with -> NaN, not 1 or 0.
    assert per.loc["c0", "matched"] == "none" and np.isnan(per.loc["c0", "prevented"])
    # A baseline that lost nothing (or gained) leaves nothing to prevent -> NaN, not -inf.
    for final in (0.6, 0.7):
        flat = s.assign(
            general_acc_final=s["general_acc_final"].where(s["method"] != "none", final)
        )
        assert forgetting.forgetting_prevented(flat, per_trial=True)["prevented"].isna().all()
    with pytest.raises(ValueError, match="no completed trials of baseline 'none'"):
        forgetting.forgetting_prevented(s[s["method"] != "none"])


def test_forgetting_prevented_from_general_records_per_stage() -> None:
    s = pd.DataFrame([trial("n0", "none", 0), trial("t0", "tm", 0)])
    g = pd.DataFrame(
        general_rows("n0", [0.6, 0.5, 0.4], [10.0] * 3)
        + general_rows("t0", [0.6, 0.58, 0.55], [10.0] * 3)
    )
    out = forgetting.forgetting_prevented(s, g).query("method == 'tm'").set_index("stage")
    # stage 1: 1 - 0.02 / 0.1 = 0.8; stage 2: 1 - 0.05 / 0.2 = 0.75.
    assert out["prevented_mean"].tolist() == pytest.approx([0.8, 0.75])


# --- accuracy matrix -----------------------------------------------------------------------


def test_accuracy_matrix() -> None:
    A = [[0.1, 0.2], [0.9, 0.3], [0.7, 0.8]]  # rows: start, after task 1, after task 2
    names = ["first", "second"]
    rows = [
        dict(trial_id="x", stage=i, task=names[j], task_position=j + 1, accuracy=A[i][j])
        for i in range(3)
        for j in range(2)
    ]
    rows += [dict(trial_id="other", stage=0, task="zzz", task_position=1, accuracy=0.0)]
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # row order must not matter
    M = mat.accuracy_matrix(df, "x")
    assert list(M.columns) == ["first", "second"] and M.index.name == "stage"
    np.testing.assert_allclose(M.to_numpy(), A)
    # A trial that stopped after task 1 keeps stage 2 as a NaN row.
    M = mat.accuracy_matrix(df[df["stage"] < 2], "x")
    assert M.shape == (3, 2) and M.loc[2].isna().all() and M.loc[1, "first"] == 0.9
    with pytest.raises(ValueError, match="no accuracy rows"):
        mat.accuracy_matrix(df, "missing")


# --- landscape -----------------------------------------------------------------------------


def point(
    alpha: float,
    loss_sum: float,
    tokens: int,
    *,
    slice_="interp:0->1",
    dataset="gen",
    kind="interpolation",
) -> dict:
    return dict(
        study="s",
        trial_id="x",
        stage=1,
        slice=slice_,
        slice_kind=kind,
        from_stage=0,
        to_stage=1,
        alpha=alpha,
        beta=np.nan,
        dataset=dataset,
        loss_sum=loss_sum,
        tokens=tokens,
        loss=loss_sum / tokens,
        direction_seed=None,
        space="full",
        normalisation="none",
    )


def test_interpolation_summary_barrier() -> None:
    rows = [
        point(-0.5, 10_000.0, 1000),  # extrapolation: ignored however high
        point(0.0, 2_000.0, 1000),  # L(0) = 2
        point(0.25, 2_500.0, 1000),  # line 2.25 -> excess 0.25
        point(0.5, 1_000.0, 400),  # two shards at 0.5: (1000 + 500) / (400 + 100) = 3.0
        point(0.5, 500.0, 100),  # (averaging their `loss` 2.5 and 5.0 would give 3.75)
        point(0.75, 2_900.0, 1000),  # line 2.75 -> excess 0.15
        point(1.0, 3_000.0, 1000),  # L(1) = 3
        point(1.5, 9_000.0, 1000),
        point(0.5, 1.0, 1, kind="random_1d", slice_="random1d:seed=0"),  # not an interpolation
        # A convex path (below the line everywhere) has barrier 0; one without alpha = 1: NaN.
        point(0.0, 1.0, 1, dataset="task"),
        point(0.5, 0.5, 1, dataset="task"),
        point(1.0, 1.0, 1, dataset="task"),
        point(0.0, 1.0, 1, slice_="interp:1->2"),
        point(0.5, 3.0, 1, slice_="interp:1->2"),
    ]
    out = diagnostics.interpolation_summary(pd.DataFrame(rows)).set_index(["slice", "dataset"])
    assert len(out) == 3
    # L(0.5) = 3.0, line (1 - 0.5) * 2 + 0.5 * 3 = 2.5 -> barrier 0.5 at alpha 0.5.
    gen = out.loc[("interp:0->1", "gen")]
    assert gen["barrier"] == pytest.approx(0.5) and gen["alpha_at_barrier"] == 0.5
    assert (gen["loss_start"], gen["loss_end"]) == (2.0, 3.0)
    assert gen["n_points"] == 5  # alphas 0, 0.25, 0.5, 0.75, 1
    assert out.loc[("interp:0->1", "task"), "barrier"] == 0.0
    assert np.isnan(out.loc[("interp:1->2", "gen"), "barrier"])


# --- plasticity ----------------------------------------------------------------------------


def plast(tid: str, stage: int, layer: int, value: float, metric="effective_rank", tau=np.nan):
    return dict(
        study="s",
        trial_id=tid,
        stage=stage,
        after_task=f"t{stage}",
        layer=layer,
        metric=metric,
        tau=tau,
        value=value,
        n_units=8,
        n_tokens=64,
    )


def test_plasticity_over_tasks() -> None:
    rows = []
    for tid, shift in (("a", 0.0), ("b", 2.0), ("c", 100.0)):
        for stage in (0, 1):
            rows += [
                plast(tid, stage, 0, 10.0 + shift - stage),
                plast(tid, stage, 1, 20.0 + shift - 3 * stage),
                plast(tid, stage, -1, 50.0 + shift),
            ]
    rows += [
        plast("a", 0, -1, 0.1, "dormant_fraction", 0.025),
        plast("a", 0, -1, 0.3, "dormant_fraction", 0.1),
    ]
    p = pd.DataFrame(rows)
    s = pd.DataFrame([trial("a", "tm", 0), trial("b", "tm", 1)])  # trial c is not in the summary

    mean = diagnostics.plasticity_over_tasks(p, "effective_rank", summary=s, layers="mean")
    # trial a: stage 0 (10 + 20) / 2 = 15, stage 1 (9 + 17) / 2 = 13; trial b: +2 -> 17, 15.
    # Over trials: stage 0 (15 + 17) / 2 = 16, std sqrt((1 + 1) / 1) = 1.414; stage 1: 14.
    assert mean[["method", "stage"]].values.tolist() == [["tm", 0], ["tm", 1]]
    assert mean["mean"].tolist() == pytest.approx([16.0, 14.0])
    assert mean["std"].tolist() == pytest.approx([math.sqrt(2)] * 2)
    assert mean["n"].tolist() == [2, 2]  # c is left out
    whole = diagnostics.plasticity_over_tasks(p, "effective_rank", summary=s)  # auto -> layer -1
    assert whole["mean"].tolist() == pytest.approx([51.0, 51.0])  # (50 + 52) / 2
    each = diagnostics.plasticity_over_tasks(p, "effective_rank", summary=s, layers="each")
    row = each[(each["stage"] == 1) & (each["layer"] == 1)].iloc[0]
    assert row["mean"] == pytest.approx(18.0)  # (17 + 19) / 2
    per_trial = diagnostics.plasticity_over_tasks(p, "effective_rank", layers="mean")
    assert set(per_trial["trial_id"]) == {"a", "b", "c"} and per_trial["n"].eq(1).all()

    with pytest.raises(ValueError, match="several tau"):
        diagnostics.plasticity_over_tasks(p, "dormant_fraction")
    got = diagnostics.plasticity_over_tasks(p, "dormant_fraction", 0.1)
    assert got["mean"].tolist() == [0.3]
    with pytest.raises(ValueError, match="recorded"):
        diagnostics.plasticity_over_tasks(p, "srank")


# --- helpers -------------------------------------------------------------------------------


def test_status_counts_varying_settings_and_representatives(summary: pd.DataFrame) -> None:
    c = an.status_counts(summary).iloc[0]
    assert c[["n_completed", "n_diverged", "n_failed", "n_total"]].tolist() == [5, 1, 1, 7]
    assert an.varying_settings(summary) == ["method", "replay_size"]
    assert an.varying_settings(summary, include_seed=True)[-1] == "seed"
    reps = an.representative_trials(summary).set_index("method")["trial_id"]
    # tm: median AP 0.6 -> tm1; none: completed 0.2 and 0.4, median 0.3, tie -> lower seed n0.
    assert reps.to_dict() == {"none": "n0", "tm": "tm1"}


def test_with_settings_joins_on_study_and_trial() -> None:
    s = pd.DataFrame([trial("a", "tm", 0), trial("a", "none", 0, study="other")])
    recs = pd.DataFrame(
        {"study": ["s", "other", "s"], "trial_id": ["a", "a", "zz"], "v": [1, 2, 3]}
    )
    out = an.with_settings(recs, s)
    assert out["method"].tolist()[:2] == ["tm", "none"] and pd.isna(out["method"].iloc[2])
    assert len(an.with_settings(recs, s, how="inner")) == 2


def test_barrier_matches_hand_computed_values() -> None:
    alphas = [-0.5, 0.0, 0.25, 0.5, 1.0, 1.5]
    losses = [9.0, 2.0, 3.0, 2.5, 1.0, 9.0]
    # line: 2 - a;  excess at 0.25: 3 - 1.75 = 1.25;  at 0.5: 2.5 - 1.5 = 1.0
    got = diagnostics.barrier(alphas, losses)
    assert got["barrier"] == pytest.approx(1.25) and got["alpha_at_barrier"] == 0.25
    assert (got["loss_start"], got["loss_end"], got["n_points"]) == (2.0, 1.0, 4)
    assert diagnostics.barrier([0.0, 0.5, 1.0], [2.0, 1.0, 1.0])["barrier"] == pytest.approx(0.0)
    assert diagnostics.barrier([0.0, 0.5, 1.0, 0.25], [2.0, 1.0, 2.0, 1.5])["barrier"] == 0.0
    assert np.isnan(diagnostics.barrier([0.0, 0.5], [1.0, 2.0])["barrier"])  # no alpha = 1
    assert diagnostics.barrier([1e-12, 1.0], [2.0, 1.0])["loss_start"] == 2.0  # within atol of 0


def test_wilson_interval_matches_the_textbook_value_and_the_paper_table_shows_it() -> None:
    lo, hi = an.wilson_interval([8, 0, 5], [10, 10, 0])
    assert (lo[0], hi[0]) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    assert lo[1] == 0.0 and 0 < hi[1] < 0.31  # not empty at p = 0
    assert np.isnan(lo[2]) and np.isnan(hi[2])
    rows = an.with_wilson(pd.DataFrame({"n_correct": [8], "n_total": [10]}))
    assert rows.ci_low.iloc[0] == pytest.approx(0.4902, abs=1e-4)

    summary = pd.DataFrame(
        {
            "trial_id": ["a", "b"],
            "method": ["tm", "tm"],
            "status": ["completed", "completed"],
            "general_acc_final": [0.8, 0.6],
        }
    )
    general = pd.DataFrame(
        {
            "trial_id": ["a", "a", "b", "b"],
            "stage": [0, 3, 0, 3],
            "n_correct": [9, 8, 9, 6],
            "n_total": [10, 10, 10, 10],
        }
    )
    t = an.paper_table(summary, metrics=["general_acc_final"], general=general)
    halves = [(hi - lo) / 2 for lo, hi in zip(*an.wilson_interval([8, 6], [10, 10]), strict=True)]
    assert t.loc["tm", "general_acc_final_ci95"] == pytest.approx(np.mean(halves))
    shown = an.format_mean_std(t)
    assert shown.loc["tm", "general_acc_final"].startswith("70.0 ± 14.1 [±")


def test_rescore_generated_predictions_under_the_papers_normalisation() -> None:
    preds = pd.DataFrame(
        {
            "trial_id": ["t"] * 3,
            "stage": [1, 1, 1],
            "task": ["cb"] * 3,
            "gold": ["Entailment", "neutral", "yes"],
            "predicted": ["entailment.", "Neutral", "no"],
            "generated": ["entailment.", "Neutral", "no"],
        }
    )
    em = rescore.rescore(preds, "exact_match").iloc[0]
    assert (em.n_correct, em.n_total, em.scoring) == (2, 3, "exact_match")
    assert rescore.rescore(preds, "generate").iloc[0].n_correct == 0  # case-sensitive, exact
    with pytest.raises(ValueError, match="carry no candidate log-likelihoods"):
        rescore.rescore(preds, "loglik")
    ll = preds.assign(generated=None, predicted=["Entailment", "neutral", "no"])
    assert rescore.rescore(ll, "loglik").iloc[0].n_correct == 2
    with pytest.raises(ValueError, match="hold no generated text"):
        rescore.rescore(ll, "exact_match")
    # SAPT's rule reads the answer after the last "Output:" (here "yes", not "neutral"); the
    # first-line rule reads "neutral"; both read past a leading line break
    talk = preds.assign(generated=["\nEntailment", "neutral\nOutput: yes", " yes"])
    assert rescore.rescore(talk, "exact_match").iloc[0].n_correct == 2
    assert rescore.rescore(talk, "generate").iloc[0].n_correct == 3


# --- loss of plasticity -------------------------------------------------------------------


def _stream_trial(tid: str, seed: int, config: dict, **values) -> dict:
    import json

    return trial(tid, "none", seed, config_json=json.dumps(config), **values)


def test_plasticity_table_reads_the_diagonal_per_regime_first_k_against_last_k() -> None:
    bp, cbp = {"train": {"weight_decay": 0.0}}, {"interventions": {"continual_backprop": {}}}
    summary = pd.DataFrame(
        [
            _stream_trial("b0", 0, bp, ap=0.5, forgetting=0.1),
            _stream_trial("b1", 1, bp, ap=0.7, forgetting=0.3),
            _stream_trial("c0", 0, cbp, ap=0.6, forgetting=0.2),
            _stream_trial("wd", 0, {"train": {"weight_decay": 0.1}}, status="failed"),
        ]
    )
    assert plasticity.regimes(summary).tolist() == [
        "backprop", "backprop", "continual_backprop", "weight_decay"
    ]  # fmt: skip
    # 4 tasks: diagonal (stage == position) accuracies below; off-diagonal rows must be ignored.
    diag = {"b0": [0.9, 0.8, 0.6, 0.5], "b1": [0.7, 0.8, 0.4, 0.3], "c0": [0.8, 0.8, 0.8, 0.6]}
    rows = []
    for tid, accs in diag.items():
        for stage in range(5):
            for pos in range(1, 5):
                acc = accs[pos - 1] if stage == pos else 0.01
                rows.append(dict(trial_id=tid, stage=stage, task_position=pos, task=f"t{pos}",
                                 accuracy=acc))  # fmt: skip
    acc = pd.DataFrame(rows)
    jl = plasticity.just_learned(acc, summary)
    assert len(jl) == 12 and jl.accuracy.min() > 0.1  # 3 completed trials x 4 tasks
    t = plasticity.plasticity_table(acc, summary, k=5, formatted=False)  # k cut to 4 // 2 = 2
    assert list(t.index) == ["backprop", "continual_backprop"]  # the failed trial is left out
    # backprop: first-2 means 0.85 (b0), 0.75 (b1) -> 0.80 ± sqrt(0.005); last-2 0.55, 0.35.
    b = t.loc["backprop"]
    assert b["first_2_mean"] == pytest.approx(0.80) and b["last_2_mean"] == pytest.approx(0.45)
    assert b["first_2_std"] == pytest.approx(math.sqrt(0.005))
    assert b["last_minus_first_mean"] == pytest.approx(-0.35)  # (-0.30 + -0.40) / 2
    assert b["ap_mean"] == pytest.approx(0.6) and b["forgetting_mean"] == pytest.approx(0.2)
    c = t.loc["continual_backprop"]
    assert (c["first_2_mean"], c["last_2_mean"]) == pytest.approx((0.8, 0.7))
    assert math.isnan(c["first_2_std"]) and c["seeds"] == 1
    shown = plasticity.plasticity_table(acc, summary)
    assert shown.loc["backprop", "first_2"] == "80.0 ± 7.1"  # %: 100 * sqrt(0.005) = 7.07
    assert shown.loc["continual_backprop", "last_minus_first"] == "-10.0"


def test_baselines_are_named_from_the_config_and_read_against_multitask() -> None:
    import json

    def cfg(method="none", cl=None, tuning="full"):
        return json.dumps(
            {"replay": {"method": method}, "cl": cl or {}, "model": {"tuning": tuning}}
        )

    rows = [
        trial("n0", "none", 0, ap=0.30, config_json=cfg()),
        trial("n1", "none", 1, ap=0.50, config_json=cfg()),
        trial("l0", "none", 0, ap=0.20, config_json=cfg(tuning="lora")),
        trial("o0", "none", 0, ap=0.45, config_json=cfg(cl={"olora": {}}, tuning="lora")),
        trial("e0", "tm", 0, ap=0.60, config_json=cfg("tm", {"ewc": {}})),
        trial("m0", "none", 0, ap=0.80, config_json=cfg(cl={"multitask": {}})),
        trial("m1", "none", 1, ap=0.90, config_json=cfg(cl={"multitask": {}})),
        trial("x", "none", 2, "failed", ap=0.99, config_json=cfg()),
    ]
    summary = pd.DataFrame(rows)
    names = baselines.baselines(summary).tolist()
    assert names == ["none", "none", "none (lora)", "olora (lora)", "tm+ewc", "multitask",
                     "multitask", "none"]  # fmt: skip
    t = baselines.baselines_table(summary, formatted=False)
    assert list(t.index) == ["none", "none (lora)", "olora (lora)", "multitask", "tm+ewc"]
    # multitask's mean AP (0.80 + 0.90) / 2 = 0.85; none: (0.30 + 0.50) / 2 - 0.85 = -0.45,
    # its std sqrt(((0.30-0.40)^2 + (0.50-0.40)^2) / 1) = 0.1414 (the failed trial left out)
    assert t.loc["none", "gap_to_multitask_mean"] == pytest.approx(-0.45)
    assert t.loc["none", "gap_to_multitask_std"] == pytest.approx(math.sqrt(0.02))
    assert t.loc["none", "seeds"] == 2
    assert t.loc["tm+ewc", "gap_to_multitask_mean"] == pytest.approx(0.60 - 0.85)
    assert t.loc["multitask", "gap_to_multitask_mean"] == pytest.approx(0.0)
    shown = baselines.baselines_table(summary)
    assert shown.loc["none", "gap_to_multitask"] == "-45.0 ± 14.1"


# --- seed-mean accuracy matrices, their difference to none, training curves -------------


def _matrix_rows(tid: str, A: list[list[float]], tasks=("a", "b")) -> list[dict]:
    """Accuracy records of one trial from its matrix A[stage][task position - 1]."""
    return [
        dict(study="s", trial_id=tid, stage=i, task=tasks[j], task_position=j + 1, accuracy=v)
        for i, row in enumerate(A)
        for j, v in enumerate(row)
    ]


MATRICES = {  # rows: start, after task a, after task b; columns: tasks a, b
    "n0": [[0.5, 0.5], [0.9, 0.5], [0.6, 0.9]],
    "n1": [[0.5, 0.5], [0.8, 0.5], [0.4, 0.8]],
    "t0": [[0.5, 0.5], [0.9, 0.5], [0.8, 0.9]],
    "t1": [[0.5, 0.5], [0.9, 0.6], [0.7, 0.8]],
    "t2": [[0.5, 0.5], [0.7, 0.5], [0.9, 0.7]],
    "c5": [[0.5, 0.5], [0.9, 0.5], [0.7, 0.9]],
    "t3x": [[0.5, 0.5], [0.2, 0.5], [0.1, 0.2]],  # tm at 3x: no none trial there
    "n2": [[0.5, 0.5], [0.0, 0.0]],  # diverged after task a: never averaged
}


@pytest.fixture
def matrices() -> tuple[pd.DataFrame, pd.DataFrame]:
    summary = pd.DataFrame(
        [
            trial("n0", "none", 0),
            trial("n1", "none", 1),
            trial("n2", "none", 2, "diverged"),
            trial("t0", "tm", 0),
            trial("t1", "tm", 1),
            trial("t2", "tm", 2),
            trial("c5", "ce", 5),
            trial("t3x", "tm", 0, lr_multiplier=3.0),
        ]
    )
    rows = [r for tid, A in MATRICES.items() for r in _matrix_rows(tid, A)]
    acc = pd.DataFrame(rows)
    # t2 was never scored on task b after the last task: that cell averages two seeds.
    acc = acc[~((acc.trial_id == "t2") & (acc.stage == 2) & (acc.task == "b"))]
    return acc, summary


def _cell(table: pd.DataFrame, stage: int, position: int, **group) -> pd.Series:
    rows = table[(table.stage == stage) & (table.task_position == position)]
    for col, v in group.items():
        rows = rows[rows[col] == v]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_mean_accuracy_matrix_averages_completed_seeds_cell_by_cell(matrices) -> None:
    acc, summary = matrices
    m = mat.mean_accuracy_matrix(acc, summary[summary.lr_multiplier == 1.0])
    assert list(m.columns) == ["method", "stage", "task_position", "task", "mean", "std", "n"]
    assert m.method.unique().tolist() == ["none", "ce", "tm"]  # registry order
    # none after task b on task a: seeds 0, 1 (the diverged seed 2 is not averaged):
    # (0.6 + 0.4) / 2 = 0.5, sample std sqrt((0.1^2 + 0.1^2) / 1) = 0.1414.
    cell = _cell(m, 2, 1, method="none")
    assert (cell.task, cell["mean"], cell["std"], cell.n) == (
        "a",
        pytest.approx(0.5),
        pytest.approx(0.02**0.5),
        2,
    )
    # tm after task b on task a: (0.8 + 0.7 + 0.9) / 3 = 0.8, std sqrt((0 + 0.01 + 0.01) / 2) = 0.1.
    cell = _cell(m, 2, 1, method="tm")
    assert (cell["mean"], cell["std"], cell.n) == (pytest.approx(0.8), pytest.approx(0.1), 3)
    # ... and on task b, which t2 lacks: (0.9 + 0.8) / 2 = 0.85 over n = 2.
    cell = _cell(m, 2, 2, method="tm")
    assert (cell["mean"], cell.n) == (pytest.approx(0.85), 2)
    # One matrix per group as a pivot: 3 stages x 2 tasks.
    tm = m[m.method == "tm"].pivot(index="stage", columns="task_position", values="mean")
    np.testing.assert_allclose(tm.to_numpy(), [[0.5, 0.5], [2.5 / 3, 1.6 / 3], [0.8, 0.85]])
    # A NaN accuracy is not skipped: the cell's mean is NaN.
    acc.loc[(acc.trial_id == "n0") & (acc.stage == 1) & (acc.task == "a"), "accuracy"] = np.nan
    assert np.isnan(_cell(mat.mean_accuracy_matrix(acc, summary), 1, 1, method="none")["mean"])


def test_mean_accuracy_matrix_groups_by_several_settings_and_refuses_mixed_input(matrices):
    acc, summary = matrices
    m = mat.mean_accuracy_matrix(acc, summary, by=["method", "lr_multiplier"])
    assert _cell(m, 2, 2, method="tm", lr_multiplier=3.0)[["mean", "n"]].tolist() == [0.2, 1]
    assert _cell(m, 2, 2, method="tm", lr_multiplier=1.0)["mean"] == pytest.approx(0.85)
    # Two scoring modes of one cell are two matrices: the caller picks one.
    twice = pd.concat([acc.assign(scoring="loglik"), acc.assign(scoring="exact_match")])
    with pytest.raises(ValueError, match=r"scoring modes \['exact_match', 'loglik'\].*scoring="):
        mat.mean_accuracy_matrix(twice, summary)
    picked = mat.mean_accuracy_matrix(twice, summary[summary.lr_multiplier == 1], scoring="loglik")
    assert _cell(picked, 2, 1, method="tm")["mean"] == pytest.approx(0.8)
    # Trials of one group that ran different task sequences cannot be averaged cell by cell.
    swapped = acc.copy()
    swapped.loc[swapped.trial_id == "t1", "task"] = swapped.task.map({"a": "b", "b": "a"})
    with pytest.raises(ValueError, match=r"different tasks \['a', 'b'\].*add 'tasks' to by="):
        mat.mean_accuracy_matrix(swapped, summary)


def test_accuracy_matrix_difference_seed_matched_else_mean_minus_mean(matrices) -> None:
    acc, summary = matrices
    d = mat.accuracy_matrix_difference(acc, summary, by=["method", "lr_multiplier"])
    assert list(d.columns) == [
        "method", "lr_multiplier", "stage", "task_position", "task",
        "difference", "std", "n", "n_baseline", "matched",
    ]  # fmt: skip
    # tm at 3x has no none trial at 3x: no rows (not a comparison across learning rates).
    assert set(zip(d.method, d.lr_multiplier, strict=True)) == {("ce", 1.0), ("tm", 1.0)}
    # tm vs none share seeds 0 and 1 (tm's seed 2 has no partner): paired differences.
    # After task b on task a: t0 - n0 = 0.8 - 0.6 = 0.2, t1 - n1 = 0.7 - 0.4 = 0.3 -> mean
    # 0.25, sample std sqrt((0.05^2 + 0.05^2) / 1) = 0.0707.
    cell = _cell(d, 2, 1, method="tm")
    assert cell.matched == "seed" and (cell.n, cell.n_baseline) == (2, 2)
    assert cell.difference == pytest.approx(0.25)
    assert cell["std"] == pytest.approx(0.005**0.5)
    # After task a on task b: 0.5 - 0.5 = 0 and 0.6 - 0.5 = 0.1 -> 0.05.
    assert _cell(d, 1, 2, method="tm").difference == pytest.approx(0.05)
    # ce ran seed 5 only: no shared seed, so its mean minus none's mean:
    # 0.7 - (0.6 + 0.4) / 2 = 0.2, with 1 vs 2 trials and no std.
    cell = _cell(d, 2, 1, method="ce")
    assert cell.matched == "mean" and (cell.n, cell.n_baseline) == (1, 2)
    assert cell.difference == pytest.approx(0.2) and np.isnan(cell["std"])
    # none against itself is not listed; every other method's start row differs by 0.
    assert "none" not in set(d.method)
    assert d[d.stage == 0].difference.tolist() == pytest.approx([0.0] * 4)


def test_accuracy_matrix_difference_refuses_what_it_cannot_compare(matrices) -> None:
    acc, summary = matrices
    with pytest.raises(ValueError, match=r"by=\['lr_multiplier'\] has no 'method'"):
        mat.accuracy_matrix_difference(acc, summary, by=["lr_multiplier"])
    with pytest.raises(
        ValueError, match=r"baseline method 'kl'.*\['ce', 'none', 'tm'\].*baseline="
    ):
        mat.accuracy_matrix_difference(acc, summary, baseline="kl")
    # A replay size is not matched (none has none of its own): tm at 100 is compared with none at 0.
    at_1x = summary[summary.lr_multiplier == 1]
    d = mat.accuracy_matrix_difference(acc, at_1x, by=["method", "replay_size"])
    assert _cell(d, 2, 1, method="tm").difference == pytest.approx(0.25)


def _curve(tid: str, losses: list[float], steps_per_task: int = 4) -> list[dict]:
    """Curve rows logged every 2 steps over 2 tasks (steps_per_task each)."""
    rows, it = [], iter(losses)
    for stage in (1, 2):
        for k in range(2, steps_per_task + 1, 2):
            rows.append(
                dict(
                    study="s",
                    trial_id=tid,
                    stage=stage,
                    task="ab"[stage - 1],
                    step=(stage - 1) * steps_per_task + k,
                    task_step=k,
                    loss=next(it),
                )
            )
    return rows


def test_training_curve_stats_and_task_boundaries() -> None:
    summary = pd.DataFrame(
        [trial("t0", "tm", 0), trial("t1", "tm", 1), trial("x", "tm", 2, "diverged")]
    )
    curve = pd.DataFrame(
        _curve("t0", [2.0, 1.0, 3.0, 1.5])
        + _curve("t1", [2.2, 1.4, 3.4, 1.5])
        + _curve("x", [9.0, 9.0, 9.0, 9.0])  # diverged: not averaged
    )
    s = diagnostics.training_curve_stats(curve, summary)
    assert list(s.columns) == ["method", "step", "stage", "mean", "std", "n"]
    assert s.step.tolist() == [2, 4, 6, 8] and s.stage.tolist() == [1, 1, 2, 2]
    # step 2: (2.0 + 2.2) / 2 = 2.1, std sqrt(2 * 0.1^2 / 1) = 0.1414; step 8: 1.5, std 0.
    assert s["mean"].tolist() == pytest.approx([2.1, 1.2, 3.2, 1.5])
    assert s["std"].tolist() == pytest.approx([0.02**0.5, 0.08**0.5, 0.08**0.5, 0.0])
    assert s.n.tolist() == [2, 2, 2, 2]
    # Task b begins after global step 4 (step - task_step of its rows); task a at 0.
    b = diagnostics.task_boundaries(curve)
    assert b.to_dict("list") == {"stage": [1, 2], "task": ["a", "b"], "step": [0, 4]}
    # Trials whose tasks took different numbers of steps: the median start (4, 6, 8 -> 6).
    longer = pd.DataFrame(_curve("y", [1.0] * 6, steps_per_task=6) + _curve("z", [1.0] * 8, 8))
    assert diagnostics.task_boundaries(
        pd.concat([curve[curve.trial_id == "t0"], longer])
    ).step.tolist() == [
        0,
        6,
    ]


def test_task_boundaries_are_per_group_when_methods_train_for_other_lengths() -> None:
    """The demo's case: a task takes 188 steps without replay and 313 with tm's replay rows.
    The old median over all trials drew both at 250 and 501 steps, where neither begins."""
    from results import diagnostic_plots

    def rows(tid, method, per_task):
        return [
            dict(study="s", trial_id=tid, method=method, stage=st, task="abc"[st - 1],
                 step=(st - 1) * per_task + k, task_step=k, loss=1.0, task_ce=1.0)
            for st in (1, 2, 3)
            for k in (1, per_task)
        ]  # fmt: skip

    curve = pd.DataFrame(rows("n", "none", 188) + rows("t", "tm", 313))
    b = diagnostics.task_boundaries(curve, by=["method"])
    got = {(m, st): step for m, st, step in zip(b.method, b.stage, b.step, strict=True)}
    assert got == {
        ("none", 1): 0, ("none", 2): 188, ("none", 3): 376,
        ("tm", 1): 0, ("tm", 2): 313, ("tm", 3): 626,
    }  # fmt: skip
    assert diagnostics.task_boundaries(curve).step.tolist() == [0, 250.5, 501]  # the old way
    summary = pd.DataFrame([trial("n", "none", 0), trial("t", "tm", 0)])
    fig = diagnostic_plots.plot_training_curves(curve.drop(columns="method"), summary)
    ax = fig.axes[0]
    means = {ln.get_label(): ln for ln in ax.get_lines() if "seed" in ln.get_label()}
    marks = [ln for ln in ax.get_lines() if ln not in means.values()]
    drawn = sorted((ln.get_xdata()[0], ln.get_color()) for ln in marks)
    colour = {k.split(",")[0]: ln.get_color() for k, ln in means.items()}
    assert drawn == sorted(
        [(188, colour["none"]), (376, colour["none"]), (313, colour["tm"]), (626, colour["tm"])]
    )


def test_list_valued_settings_are_grouped_as_comma_joined_strings() -> None:
    """Results schema 2 stores ``tasks`` as a list; settings code groups it like the old
    comma-joined string."""
    s = pd.DataFrame([trial("a", "tm", 0), trial("b", "tm", 1), trial("c", "none", 0)])
    s["tasks"] = [np.array(["x", "y"]), ["x", "y"], ["y", "x"]]
    shown = an.hashable_settings(s)
    assert shown["tasks"].tolist() == ["x,y", "x,y", "y,x"]
    assert isinstance(s["tasks"].iloc[1], list)  # the input is left as it was
    assert an.varying_settings(s) == ["method", "replay_size", "tasks"]
    plain = pd.DataFrame([trial("a", "tm", 0)])
    assert an.hashable_settings(plain) is plain  # nothing to convert: the same frame


def test_lm_eval_sample_logs_join_predictions_by_item(tmp_path):
    """lm-eval's --log_samples JSONL (values as strings) joins the probe's predictions rows
    on '<subject>/<doc_id>'; items it did not score are left out."""
    import json

    from results.external import join_lm_eval, lm_eval_samples

    log = tmp_path / "samples_mmlu_anatomy.jsonl"
    records = [
        {"doc_id": 3, "doc": {"subject": "anatomy"},
         "filtered_resps": [["-2.0", "False"], ["-0.5", "True"], ["-3.0", "False"], ["-4.0", "False"]]},
        {"doc_id": 7, "doc": {}, "resps": [[["-1.0", "False"]], [["-2.0", "False"]]]},
    ]  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    samples = lm_eval_samples(log, task="mmlu_anatomy")
    assert list(samples["item"]) == ["anatomy/3", "anatomy/7"]
    assert list(samples["lm_eval_predicted"]) == ["B", "A"]
    preds = pd.DataFrame(
        [
            {"task": "probe:mmlu", "item": "anatomy/3", "predicted": "B",
             "logliks": [-2.0, -0.50001, -3.0, -4.0]},
            {"task": "probe:mmlu", "item": "anatomy/9", "predicted": "A", "logliks": [0.0, -1.0]},
            {"task": "cb", "item": "cb/3", "predicted": "x", "logliks": None},
        ]
    )  # fmt: skip
    joined = join_lm_eval(preds, samples)
    assert list(joined["item"]) == ["anatomy/3"] and bool(joined["same_answer"].iloc[0])
    assert joined["max_abs_diff"].iloc[0] == pytest.approx(1e-5)
