"""The study report: built from a synthetic study on disk, as a function and as a command.

The study is 2 methods x 2 LR multipliers x 2 seeds on 3 tasks, written through
``results.io.write_records`` so the report reads exactly what a real study writes; one trial
diverges. Landscape and plasticity records are added when those kinds exist in the schema.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from harness.metrics import all_metrics
from results import plots
from results.io import read_study, study_dir, write_records
from results.report import build_report
from results.schema import KINDS

STUDY = "lr_demo"
TASKS = ["colour", "animal", "compare"]
HAS_EXTRA_KINDS = "landscape" in KINDS and "plasticity" in KINDS
ROOT = Path(__file__).resolve().parent.parent


def _accuracy_matrix(method: str, lr: float, seed: int) -> np.ndarray:
    """A[stage, task]: 0.3 before training, 0.9 when learned, then fading with later tasks."""
    T = len(TASKS)
    fade = (0.12 if method == "none" else 0.02) * lr
    A = np.full((T + 1, T), 0.3)
    for i in range(1, T + 1):
        for j in range(1, i + 1):
            A[i, j - 1] = max(0.0, 0.9 - fade * (i - j)) - 0.01 * seed
        if i < T:
            A[i, i] = 0.32  # zero-shot on the next task: a little transfer
    return A


def _general(method: str, lr: float, seed: int, stage: int) -> tuple[float, float]:
    """(probe accuracy, held-out perplexity) after ``stage`` tasks."""
    drop = (0.06 if method == "none" else 0.008) * lr
    acc = 0.60 - drop * stage + 0.004 * seed
    ppl = 10.0 * np.exp((0.15 if method == "none" else 0.01) * lr * stage)
    return acc, float(ppl)


def _landscape_rows(method: str) -> list[dict]:
    rows = []
    barrier = 0.5 if method == "none" else 0.1
    for a_stage in range(len(TASKS)):
        for dataset, (l0, l1) in (("general", (2.0, 2.3)), (TASKS[a_stage], (1.0, 1.4))):
            for alpha in np.linspace(-0.5, 1.5, 9):
                loss = (1 - alpha) * l0 + alpha * l1 + 4 * barrier * alpha * (1 - alpha)
                rows.append(
                    dict(
                        stage=a_stage + 1,
                        slice=f"interp:{a_stage}->{a_stage + 1}",
                        slice_kind="interpolation",
                        from_stage=a_stage,
                        to_stage=a_stage + 1,
                        alpha=alpha,
                        beta=np.nan,
                        dataset=dataset,
                        loss_sum=loss * 1000,
                        tokens=1000,
                        loss=loss,
                        direction_seed=None,
                        space="full",
                        normalisation="none",
                    )
                )
    T = len(TASKS)
    for alpha in np.linspace(-1, 1, 21):
        loss = 2.0 + 3.0 * alpha**2
        rows.append(
            dict(
                stage=T,
                slice="random1d:seed=0",
                slice_kind="random_1d",
                from_stage=T,
                to_stage=T,
                alpha=alpha,
                beta=np.nan,
                dataset="general",
                loss_sum=loss * 500,
                tokens=500,
                loss=loss,
                direction_seed=0,
                space="full",
                normalisation="filter",
            )
        )
        for beta in np.linspace(-1, 1, 11):
            loss = 2.0 + 3.0 * alpha**2 + 1.0 * beta**2 + 0.5 * alpha * beta
            rows.append(
                dict(
                    stage=T,
                    slice="random2d:seed=1",
                    slice_kind="random_2d",
                    from_stage=T,
                    to_stage=T,
                    alpha=alpha,
                    beta=beta,
                    dataset="general",
                    loss_sum=loss * 500,
                    tokens=500,
                    loss=loss,
                    direction_seed=1,
                    space="full",
                    normalisation="filter",
                )
            )
    return rows


def _plasticity_rows(method: str, lr: float, stages: int) -> list[dict]:
    rows = []
    rate = (0.04 if method == "none" else 0.01) * lr
    for stage in range(stages + 1):
        after = "<start>" if stage == 0 else TASKS[stage - 1]
        for layer in (-1, 0, 1):
            common = dict(stage=stage, after_task=after, layer=layer, n_units=64, n_tokens=512)
            for tau in (0.025, 0.1):
                rows.append(
                    dict(
                        common,
                        metric="dormant_fraction",
                        tau=tau,
                        value=min(1.0, 0.02 + rate * stage + tau),
                    )
                )
            rows.append(
                dict(common, metric="effective_rank", tau=np.nan, value=50.0 - 30 * rate * stage)
            )
            rows.append(dict(common, metric="weight_distance", tau=np.nan, value=0.5 * lr * stage))
    return rows


def make_study(out: Path, *, extra_kinds: bool = HAS_EXTRA_KINDS) -> Path:
    """Write the synthetic study under ``out``; returns its study directory."""
    T = len(TASKS)
    for method in ("none", "tm"):
        for lr in (1.0, 3.0):
            for seed in (0, 1):
                tid = f"{method}-lr{lr:g}-s{seed}"
                diverged = method == "none" and lr == 3.0 and seed == 1
                last = 1 if diverged else T
                A = _accuracy_matrix(method, lr, seed)
                acc_rows, gen_rows = [], []
                for stage in range(last + 1):
                    after = "<start>" if stage == 0 else TASKS[stage - 1]
                    for pos, task in enumerate(TASKS, 1):
                        a = float(A[stage, pos - 1])
                        acc_rows.append(
                            dict(
                                stage=stage,
                                after_task=after,
                                task=task,
                                task_position=pos,
                                accuracy=a,
                                n_correct=round(a * 100),
                                n_total=100,
                                scoring="loglik",
                            )
                        )
                    acc, ppl = _general(method, lr, seed, stage)
                    gen_rows.append(
                        dict(
                            stage=stage,
                            after_task=after,
                            probe="mmlu",
                            accuracy=acc,
                            n_correct=round(acc * 200),
                            n_total=200,
                            ppl=ppl,
                            nll_sum=np.log(ppl) * 4000,
                            ppl_tokens=4000,
                        )
                    )
                metrics = all_metrics(A) if not diverged else dict.fromkeys(all_metrics(A), np.nan)
                summary = dict(
                    status="diverged" if diverged else "completed",
                    error="loss is nan at step 41" if diverged else None,
                    diverged_stage=2 if diverged else None,
                    diverged_step=41 if diverged else None,
                    wall_time_s=12.5,
                    n_tasks=T,
                    n_stages=T,
                    tasks=",".join(TASKS),
                    model="tiny",
                    tuning="full",
                    method=method,
                    replay_size=0 if method == "none" else 100,
                    replay_weight="default",
                    lr=1e-4,
                    lr_multiplier=lr,
                    seed=seed,
                    **metrics,
                    general_acc_start=gen_rows[0]["accuracy"],
                    general_acc_final=gen_rows[-1]["accuracy"],
                    general_ppl_start=gen_rows[0]["ppl"],
                    general_ppl_final=gen_rows[-1]["ppl"],
                    config_json="{}",
                    harness_version="test",
                )
                kw = dict(study=STUDY, trial_id=tid)
                write_records(out, "accuracy", acc_rows, **kw)
                write_records(out, "general", gen_rows, **kw)
                write_records(out, "summary", [summary], **kw)
                if extra_kinds and not diverged:
                    write_records(out, "landscape", _landscape_rows(method), **kw)
                    write_records(out, "plasticity", _plasticity_rows(method, lr, last), **kw)
    return study_dir(out, STUDY)


SECTIONS = [
    f"# Study report: {STUDY}",
    "## What the study varied",
    "## Trials",
    "## Main results (paper-style table)",
    "## Learning-rate robustness",
    "## Replay losses compared",
    "## Forgetting prevented (relative to no replay)",
    "## General ability over tasks",
    "## Accuracy matrices (one representative trial per method)",
    "## Glossary",
]
EXTRA_SECTIONS = ["## Loss landscape", "## Plasticity diagnostics"]
FIGURES = ["lr_robustness.png", "general_over_tasks.png", "accuracy_none.png", "accuracy_tm.png"]
EXTRA_FIGURES = [
    "interpolation_none.png",
    "interpolation_tm.png",
    "random1d_tm.png",
    "landscape2d_tm.png",
    "plasticity_dormant_fraction_tau0.1.png",
    "plasticity_effective_rank.png",
    "plasticity_weight_distance.png",
]
_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def report(study: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(study, tmp_path_factory.mktemp("report"))


def _check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.stat().st_size > 8_000, f"{path.name} is suspiciously small"
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4), img.shape
    assert img.shape[0] >= 250 and img.shape[1] >= 400, img.shape
    assert img[..., :3].std() > 0.05, f"{path.name} is (nearly) blank"


def test_report_sections_and_figures(report: Path) -> None:
    text = report.read_text()
    want_sections = SECTIONS + (EXTRA_SECTIONS if HAS_EXTRA_KINDS else [])
    for header in want_sections:
        assert f"\n{header}\n" in f"\n{text}", f"missing section {header!r}"
    # Only one replay size per method and one tuning: those sections must be left out.
    assert "## Replay-buffer size" not in text
    assert "## LoRA vs full fine-tuning" not in text
    assert "not drawn" not in text
    links = _LINK.findall(text)
    want = FIGURES + (EXTRA_FIGURES if HAS_EXTRA_KINDS else [])
    assert set(want) <= set(links), sorted(set(want) - set(links))
    for link in links:
        _check_png(report.parent / link)
    # Every table and figure carries a line on how to read it.
    assert text.count("*How to read this:*") >= len(links) + 3


def _section(text: str, header: str) -> list[str]:
    """The lines of one '## ' section."""
    body = text.split(f"\n{header}\n", 1)[1]
    return body.split("\n## ", 1)[0].splitlines()


def test_report_numbers(report: Path) -> None:
    text = report.read_text()
    assert "8 trials: 7 completed, 1 diverged, 0 failed." in text
    assert "none-lr3-s1" in text  # the diverged trial is listed, with its error
    assert "loss is nan at step 41" in text
    # Main table row for tm at 1x: general accuracy start is (60.0 + 60.4) / 2 = 60.2 % with
    # sample std sqrt(((0.2)^2 + (0.2)^2) / 1) = 0.28 -> "60.2 ± 0.3".
    main = _section(text, "## Main results (paper-style table)")
    row = next(line for line in main if line.startswith("| tm | 1× |"))
    assert "60.2 ± 0.3" in row
    # The none row at 3x averages its single completed seed and counts the diverged one.
    row = next(line for line in main if line.startswith("| none | 3× |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["1", "1", "0"], cells  # n, diverged, failed
    # Forgetting prevented for tm at 1x: general accuracy drops 3 x 0.008 = 2.4 pp against the
    # baseline's 3 x 0.06 = 18 pp in both seeds, so 1 - 2.4 / 18 = 0.8667 per seed (std 0).
    prevented = _section(text, "## Forgetting prevented (relative to no replay)")
    assert "| tm | 1× | 2.40 | 18.00 | 0.87 ± 0.00 | 0.8667 | 2 | 2 |" in prevented


def test_report_cli(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "results.report", str(study), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "report.md")
    assert (out / "report.md").is_file()
    for link in _LINK.findall((out / "report.md").read_text()):
        _check_png(out / link)


def test_report_default_out_and_sparse_study(tmp_path: Path) -> None:
    """Summary-only records varying replay size and tuning: those sections, nothing else."""
    rows = []
    for tuning in ("full", "lora"):
        for size in (10, 100):
            for seed in (0, 1):
                rows.append((tuning, size, seed))
    for tuning, size, seed in rows:
        s = dict(
            status="completed",
            error=None,
            diverged_stage=None,
            diverged_step=None,
            wall_time_s=1.0,
            n_tasks=2,
            n_stages=2,
            tasks="a,b",
            model="tiny",
            tuning=tuning,
            method="tm",
            replay_size=size,
            replay_weight="100",
            lr=1e-4,
            lr_multiplier=1.0,
            seed=seed,
            **dict.fromkeys(all_metrics(np.zeros((3, 2))), 0.5),
            general_acc_start=0.6,
            general_acc_final=0.5 + size / 1000 + seed / 100,
            general_ppl_start=10.0,
            general_ppl_final=12.0,
            config_json="{}",
            harness_version="test",
        )
        write_records(tmp_path, "summary", [s], study="sparse", trial_id=f"{tuning}-{size}-{seed}")
    sdir = study_dir(tmp_path, "sparse")
    path = build_report(sdir)
    assert path == sdir / "report" / "report.md"
    text = path.read_text()
    assert "## Replay-buffer size" in text and "## LoRA vs full fine-tuning" in text
    for absent in (
        "## Learning-rate robustness",
        "## General ability",
        "## Accuracy matrices",
        "## Loss landscape",
        "## Plasticity",
        "## Forgetting prevented",
    ):
        assert absent not in text
    for link in _LINK.findall(text):
        _check_png(path.parent / link)


def test_report_empty_study(tmp_path: Path) -> None:
    sdir = tmp_path / "study=empty"
    sdir.mkdir()
    text = build_report(sdir).read_text()
    assert "No summary records found" in text


def _main_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_plot_functions_label_axes_and_legends(study: Path) -> None:
    data = read_study(study)
    s, acc, gen = data["summary"], data["accuracy"], data["general"]
    figs = {
        "lr": plots.plot_lr_robustness(s),
        "heatmap": plots.plot_accuracy_heatmap(acc, "tm-lr1-s0", summary=s),
        "general": plots.plot_general_over_tasks(gen, s, panel="lr_multiplier"),
        "replay": plots.plot_replay_size(s),
    }
    if HAS_EXTRA_KINDS:
        land, plast = data["landscape"], data["plasticity"]
        figs["interp"] = plots.plot_interpolation(land, "tm-lr1-s0")
        figs["2d"] = plots.plot_landscape_2d(land, "tm-lr1-s0", "random2d:seed=1")
        figs["plast"] = plots.plot_plasticity(plast, s, "dormant_fraction", tau=0.1)
    for name, fig in figs.items():
        assert isinstance(fig, Figure), name
        axes = _main_axes(fig)
        assert axes, name
        assert fig.get_suptitle() or all(ax.get_title() for ax in axes), name
        for ax in axes:
            assert ax.get_xlabel() and ax.get_ylabel(), (name, ax.get_title())
            n_lines = len(ax.get_lines()) + len(ax.containers)
            if n_lines > 1:
                assert ax.get_legend() is not None, (name, ax.get_title())
    # The heatmap has a colour bar labelled accuracy and one annotation per evaluated cell.
    heat = figs["heatmap"]
    cbar = [ax for ax in heat.axes if ax.get_label() == "<colorbar>"]
    assert cbar and "accuracy" in cbar[0].get_ylabel()
    assert len(_main_axes(heat)[0].texts) == (len(TASKS) + 1) * len(TASKS)
    # LR axis is logarithmic; the general-over-tasks figure has one column per multiplier.
    assert figs["lr"].axes[0].get_xscale() == "log"
    assert len(_main_axes(figs["general"])) == 2 * 2


def test_plot_heatmap_of_diverged_trial_leaves_missing_stages_blank(study: Path) -> None:
    acc = read_study(study)["accuracy"]
    fig = plots.plot_accuracy_heatmap(acc, "none-lr3-s1")
    # Stages 0 and 1 only: 2 rows x 3 tasks annotated, stages 2-3 blank.
    assert len(_main_axes(fig)[0].texts) == 2 * len(TASKS)


def test_results_package_does_not_import_torch_or_ray() -> None:
    code = (
        "import sys, results.analysis, results.plots, results.report; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_markdown_table_renders_index_and_nan() -> None:
    from results.report import markdown_table

    df = pd.DataFrame({"method": ["none", "tm"], "value": [0.5, np.nan]}).set_index("method")
    assert markdown_table(df).splitlines() == [
        "| method | value |",
        "|---|---|",
        "| none | 0.5 |",
        "| tm | – |",
    ]


def test_random_slices_recorded_at_several_stages_are_plotted_per_stage() -> None:
    """The same slice name recurs at every sliced checkpoint; the plots never pool them."""
    rows = []
    for stage, offset in ((1, 10.0), (2, 0.0)):
        for alpha in (-0.5, 0.0, 0.5):
            for kind, betas in (("random_1d", [np.nan]), ("random_2d", [-0.5, 0.0, 0.5])):
                for beta in betas:
                    loss = offset + alpha**2 + (0 if np.isnan(beta) else beta**2)
                    rows.append(
                        dict(
                            trial_id="t",
                            stage=stage,
                            slice=f"{kind.replace('_', '')}:seed=0",
                            slice_kind=kind,
                            alpha=alpha,
                            beta=beta,
                            dataset="general",
                            loss_sum=loss * 10,
                            tokens=10,
                        )
                    )
    land = pd.DataFrame(rows)
    one_d = plots.plot_interpolation(land, "t", slice_kind="random_1d")
    axes = _main_axes(one_d)
    assert len(axes) == 2
    for ax, offset in zip(axes, (10.0, 0.0), strict=True):
        assert min(ax.get_lines()[0].get_ydata()) == pytest.approx(offset)  # not a pooled mean
    for stage, offset in ((None, 0.0), (1, 10.0)):
        fig = plots.plot_landscape_2d(land, "t", "random2d:seed=0", stage=stage)
        assert f"around stage {stage or 2}" in fig.get_suptitle()
        cbar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
        assert cbar.get_ylim()[0] == pytest.approx(offset)
    with pytest.raises(ValueError, match="has stages"):
        plots.plot_landscape_2d(land, "t", "random2d:seed=0", stage=3)
