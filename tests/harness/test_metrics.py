"""CL metrics against matrices computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness import metrics as m

# T = 3. Row 0 = starting model b; row i = after training task i; column j-1 = task j.
# Chosen so that every variant gives a different number:
#  - b[1] = 0.99 is the largest score on task 1 (row 0 must never enter a forgetting max);
#  - a[1][2] = 0.97 (zero-shot, before task 2 is trained) exceeds a[2][2] = 0.90, so a max
#    over rows l < j would differ from ours (l >= j);
#  - a[3][2] = 0.95 > a[2][2], so including the last row in the max changes task 2's term;
#  - a[2][1] = 0.85 > a[1][1], so the max differs from the diagonal for task 1.
A3 = np.array(
    [
        [0.99, 0.30, 0.10],  # b
        [0.80, 0.97, 0.15],  # after task 1
        [0.85, 0.90, 0.25],  # after task 2
        [0.50, 0.95, 0.70],  # after task 3
    ]
)
EXPECTED_A3 = {
    # AP = (0.50 + 0.95 + 0.70) / 3 = 2.15 / 3
    "ap": 2.15 / 3,
    # AIA = mean(0.80, (0.85 + 0.90) / 2, 2.15 / 3) = (0.80 + 0.875 + 0.716667) / 3
    "aia": (0.80 + 0.875 + 2.15 / 3) / 3,
    # BWT = ((0.50 - 0.80) + (0.95 - 0.90)) / (3 - 1) = (-0.30 + 0.05) / 2 = -0.125
    "bwt": -0.125,
    # GEM code: same sum / 3 = -0.25 / 3
    "bwt_gem_code": -0.25 / 3,
    # FWT = ((a[1][2] - b[2]) + (a[2][3] - b[3])) / 2 = ((0.97 - 0.30) + (0.25 - 0.10)) / 2
    #     = (0.67 + 0.15) / 2 = 0.41
    "fwt": 0.41,
    # forgetting: task 1: max(a[1][1], a[2][1]) - a[3][1] = 0.85 - 0.50 = 0.35
    #             task 2: max(a[2][2])          - a[3][2] = 0.90 - 0.95 = -0.05
    #             mean = 0.30 / 2 = 0.15
    "forgetting": 0.15,
    # incl. last row: task 1: max(0.80, 0.85, 0.50) - 0.50 = 0.35
    #                 task 2: max(0.90, 0.95) - 0.95 = 0.00     -> 0.35 / 2 = 0.175
    "forgetting_incl_last": 0.175,
    # diagonal: task 1: 0.80 - 0.50 = 0.30; task 2: 0.90 - 0.95 = -0.05 -> 0.25 / 2 = 0.125
    "forgetting_diag": 0.125,
}


@pytest.mark.parametrize("name", list(EXPECTED_A3))
def test_each_metric_on_hand_computed_t3(name: str) -> None:
    assert m.METRICS[name](A3) == pytest.approx(EXPECTED_A3[name], abs=1e-12)


def test_metrics_registry_is_exactly_the_documented_set() -> None:
    assert list(m.METRICS) == [
        "ap",
        "aia",
        "bwt",
        "bwt_gem_code",
        "fwt",
        "forgetting",
        "forgetting_incl_last",
        "forgetting_diag",
    ]


def test_all_metrics_matches_each_function() -> None:
    got = m.all_metrics(A3)
    assert list(got) == list(m.METRICS)
    for name, value in EXPECTED_A3.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_t2_denominators() -> None:
    # T = 2: the paper's 1/(T-1) = 1, the GEM code's 1/T = 1/2.
    A = np.array([[0.1, 0.2], [0.6, 0.3], [0.4, 0.8]])
    assert m.bwt(A) == pytest.approx(0.4 - 0.6)  # -0.2
    assert m.bwt_gem_code(A) == pytest.approx((0.4 - 0.6) / 2)  # -0.1
    assert m.fwt(A) == pytest.approx(0.3 - 0.2)  # a[1][2] - b[2] = 0.1
    assert m.forgetting(A) == pytest.approx(0.6 - 0.4)  # max(a[1][1]) - a[2][1] = 0.2
    assert m.forgetting_incl_last(A) == pytest.approx(0.2)  # max(0.6, 0.4) - 0.4
    assert m.forgetting_diag(A) == pytest.approx(0.2)
    assert m.average_performance(A) == pytest.approx(0.6)  # (0.4 + 0.8) / 2
    assert m.average_incremental_accuracy(A) == pytest.approx(0.6)  # (0.6 + 0.6) / 2


def test_forgetting_diag_is_minus_bwt_and_incl_last_bounds_forgetting() -> None:
    rng = np.random.default_rng(0)
    for T in range(2, 7):
        A = rng.random((T + 1, T))
        assert m.forgetting_diag(A) == pytest.approx(-m.bwt(A))
        assert m.bwt_gem_code(A) == pytest.approx(m.bwt(A) * (T - 1) / T)
        assert m.forgetting_incl_last(A) >= m.forgetting(A) - 1e-12
        assert m.forgetting_incl_last(A) >= 0


def test_t1_gives_nan_for_quantities_needing_two_tasks() -> None:
    A = np.array([[0.4], [0.7]])  # b = 0.4, a[1][1] = 0.7
    assert m.average_performance(A) == pytest.approx(0.7)
    assert m.average_incremental_accuracy(A) == pytest.approx(0.7)
    for name in [
        "bwt",
        "bwt_gem_code",
        "fwt",
        "forgetting",
        "forgetting_incl_last",
        "forgetting_diag",
    ]:
        assert math.isnan(m.METRICS[name](A)), name
    assert set(m.all_metrics(A)) == set(m.METRICS)  # no exception, NaN values


def test_nan_only_affects_metrics_whose_formula_uses_the_entry() -> None:
    # a[1][3] is named by no formula: every metric unchanged.
    A = A3.copy()
    A[1, 2] = np.nan
    for name, value in EXPECTED_A3.items():
        assert m.METRICS[name](A) == pytest.approx(value), name

    # a[1][2] (zero-shot on task 2) is used only by FWT; in particular our forgetting's max
    # starts at row j, so it must not see this entry.
    A = A3.copy()
    A[1, 1] = np.nan
    assert math.isnan(m.fwt(A))
    for name in ["ap", "aia", "bwt", "bwt_gem_code", "forgetting", "forgetting_incl_last"]:
        assert m.METRICS[name](A) == pytest.approx(EXPECTED_A3[name]), name

    # a[2][1] (task 1 after task 2): in AIA's stage-2 mean and in both maxes, not in BWT.
    A = A3.copy()
    A[2, 0] = np.nan
    for name in ["aia", "forgetting", "forgetting_incl_last"]:
        assert math.isnan(m.METRICS[name](A)), name
    for name in ["ap", "bwt", "bwt_gem_code", "fwt", "forgetting_diag"]:
        assert m.METRICS[name](A) == pytest.approx(EXPECTED_A3[name]), name

    # A missing final score: NaN, never an average over the remaining tasks.
    A = A3.copy()
    A[3, 2] = np.nan
    assert math.isnan(m.average_performance(A))


@pytest.mark.parametrize("shape", [(3, 3), (2, 3), (4,), (1, 0)])
def test_wrong_shape_is_rejected(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\[T\+1, T\]"):
        m.bwt(np.zeros(shape))


def _long(A: np.ndarray, names: list[str]) -> pd.DataFrame:
    rows = [
        {"stage": i, "task": names[j], "task_position": j + 1, "accuracy": A[i, j]}
        for i in range(A.shape[0])
        for j in range(A.shape[1])
    ]
    # Shuffle so the pivot cannot rely on row order.
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_matrix_from_long_round_trip() -> None:
    A = A3.copy()
    A[1, 2] = np.nan  # a NaN value survives as NaN
    names = ["boolq", "sst2", "agnews"]
    got, got_names = m.matrix_from_long(_long(A, names))
    assert got_names == names
    np.testing.assert_array_equal(got, A)  # NaN == NaN here


def test_matrix_from_long_absent_cell_is_nan() -> None:
    df = _long(A3, ["a", "b", "c"])
    df = df[~((df.stage == 1) & (df.task_position == 3))]
    got, _ = m.matrix_from_long(df)
    assert math.isnan(got[1, 2])
    assert got[2, 2] == A3[2, 2]


def test_matrix_from_long_other_value_column() -> None:
    df = _long(A3, ["a", "b", "c"]).rename(columns={"accuracy": "score"})
    got, _ = m.matrix_from_long(df, value="score")
    np.testing.assert_array_equal(got, A3)


def test_matrix_from_long_missing_stage_is_an_error_naming_it() -> None:
    df = _long(A3, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"stage\(s\) \[2\]"):
        m.matrix_from_long(df[df.stage != 2])


def test_matrix_from_long_missing_stage_allowed_gives_nan_row() -> None:
    df = _long(A3, ["a", "b", "c"])
    got, _ = m.matrix_from_long(df[df.stage != 3], allow_missing_stages=True)
    assert np.isnan(got[3]).all()
    assert math.isnan(m.average_performance(got))


def test_matrix_from_long_missing_task_position_is_an_error() -> None:
    df = _long(A3, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"task position\(s\) \[2\]"):
        m.matrix_from_long(df[df.task_position != 2])


def test_matrix_from_long_rejects_duplicates_and_mixed_trials() -> None:
    df = _long(A3, ["a", "b", "c"])
    with pytest.raises(ValueError, match="duplicate"):
        m.matrix_from_long(pd.concat([df, df.iloc[:1]]))
    mixed = pd.concat([df.assign(trial_id="t1"), df.assign(trial_id="t2")])
    with pytest.raises(ValueError, match="several trials"):
        m.matrix_from_long(mixed)
    renamed = df.copy()
    renamed.loc[renamed.index[0], "task"] = "zzz"
    with pytest.raises(ValueError, match="several tasks"):
        m.matrix_from_long(renamed)
