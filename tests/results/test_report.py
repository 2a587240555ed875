"""The study report: built from a synthetic study on disk, as a function and as a command.

The study is 2 methods x 2 LR multipliers x 2 seeds on 3 tasks, written through
``results.io.write_records`` so the report reads exactly what a real study writes; one trial
diverges. Landscape, plasticity and training-curve records are added too (``extra_kinds``);
the results-fault tests build the same study without them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from harness.metrics import all_metrics
from results import diagnostic_plots, matrix_plots, plots
from results.io import read_study, study_dir, write_records
from results.report import build_report
from tests.fixtures import HAS_EXTRA_KINDS, REPO, STEPS_PER_TASK, STUDY, TASKS, make_study

SECTIONS = [
    f"# Study report: {STUDY}",
    "## What the study varied",
    "## Trials",
    "## Main results (paper-style table)",
    "## Learning-rate robustness",
    "## Replay losses compared",
    "## Forgetting prevented (relative to no replay)",
    "## General ability over tasks",
    "## Accuracy matrices (mean over seeds)",
    "### none, lr 1×, seed mean (2)",
    "### none, lr 3×, 1 seed",
    "### tm, lr 3×, seed mean (2)",
    "## Accuracy matrices (one representative trial per method)",
    "## Glossary",
]
EXTRA_SECTIONS = ["## Training curves", "## Loss landscape", "## Plasticity diagnostics"]
FIGURES = [
    "lr_robustness.png",
    "general_over_tasks.png",
    "accuracy_none.png",
    "accuracy_tm.png",
    *(f"accuracy_mean_{m}_{lr}.png" for m in ("none", "tm") for lr in (1, 3)),
    "accuracy_diff_tm_1.png",
    "accuracy_diff_tm_3.png",
]
EXTRA_FIGURES = [
    "training_curves.png",
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


def test_paper_tables_come_as_markdown_csv_and_latex(report: Path) -> None:
    """The main table beside the report as CSV (numbers, for pandas) and LaTeX (booktabs, for
    the paper), linked from the Markdown, and the same values in all three."""
    import pandas as pd

    text = report.read_text()
    main = "\n".join(_section(text, "## Main results (paper-style table)"))
    assert "[table_main.csv](table_main.csv) and [table_main.tex](table_main.tex)" in main
    csv = pd.read_csv(report.parent / "table_main.csv")
    row = csv[(csv["method"] == "tm") & (csv["lr_multiplier"] == 1.0)].iloc[0]
    assert row["general_acc_start_mean"] == pytest.approx(0.602)  # the Markdown's 60.2 ± 0.3
    assert row["general_acc_start_std"] == pytest.approx(0.08**0.5 / 100 * 1, rel=1e-6)
    tex = (report.parent / "table_main.tex").read_text()
    assert tex.startswith("\\begin{tabular}") and "\\toprule" in tex and "\\bottomrule" in tex
    line = next(x for x in tex.splitlines() if x.startswith("tm & 1$\\times$"))
    assert "60.2 $\\pm$ 0.3" in line


def test_report_cli_writes_pdf_figures_at_the_dpi_asked(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["--report-dir", str(out), "--format", "PDF", "--dpi", "72"]
    proc = subprocess.run(
        [sys.executable, "-m", "results.report", str(study), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out / "report.md")
    links = _LINK.findall((out / "report.md").read_text())
    want = [f.replace(".png", ".pdf") for f in FIGURES + (EXTRA_FIGURES if HAS_EXTRA_KINDS else [])]
    assert set(want) <= set(links), sorted(set(want) - set(links))
    figures = sorted(p.name for p in out.iterdir() if p.suffix not in (".md", ".csv", ".tex"))
    assert sorted(links) == figures
    tables = re.findall(r"\[(table_\w+\.(?:csv|tex))\]", (out / "report.md").read_text())
    assert tables and sorted(tables) == sorted(
        p.name for p in out.iterdir() if p.suffix in (".csv", ".tex")
    )
    for link in links:
        data = (out / link).read_bytes()
        assert data.startswith(b"%PDF") and b"/FontFile2" in data and b"/Type3" not in data


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
            model_path=None,
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
    # Beside the dataset, not in it: <out>/_reports/<study>/, which dataset readers skip.
    assert path == tmp_path / "_reports" / "sparse" / "report.md"
    assert not (sdir / "report").exists()
    assert len(pd.read_parquet(sdir / "summary")) == 8
    hive = pyarrow.dataset.dataset(tmp_path, format="parquet", partitioning="hive")
    assert hive.to_table().num_rows == 8
    assert set(hive.to_table().column("study").to_pylist()) == {"sparse"}
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
        "heatmap": matrix_plots.plot_accuracy_heatmap(acc, "tm-lr1-s0", summary=s),
        "general": diagnostic_plots.plot_general_over_tasks(gen, s, panel="lr_multiplier"),
        "replay": plots.plot_replay_size(s),
    }
    if HAS_EXTRA_KINDS:
        land, plast = data["landscape"], data["plasticity"]
        figs["interp"] = diagnostic_plots.plot_interpolation(land, "tm-lr1-s0")
        figs["2d"] = diagnostic_plots.plot_landscape_2d(land, "tm-lr1-s0", "random2d:seed=1")
        figs["plast"] = diagnostic_plots.plot_plasticity(plast, s, "dormant_fraction", tau=0.1)
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
    fig = matrix_plots.plot_accuracy_heatmap(acc, "none-lr3-s1")
    # Stages 0 and 1 only: 2 rows x 3 tasks annotated, stages 2-3 blank.
    assert len(_main_axes(fig)[0].texts) == 2 * len(TASKS)


def test_results_package_does_not_import_torch_or_ray() -> None:
    code = (
        "import sys, results.analysis, results.plots, results.report; "
        "import results.presentation.active_forgetting, results.presentation.baselines; "
        "import results.presentation.demo, results.presentation.plasticity; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_a_study_presentation_is_found_by_its_stored_name_and_loaded_lazily() -> None:
    from results.presentation import for_study

    for name in ("active_forgetting", "baselines", "demo", "plasticity"):
        assert for_study(name).STUDY == name
    for name in (STUDY, "sparse", "no such study", "__init__", "x.y"):
        assert for_study(name) is None  # the generic report only
    code = (
        "import sys, results.presentation; "
        "assert 'matplotlib' not in sys.modules and 'results.presentation.baselines' not in "
        "sys.modules, sorted(sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_markdown_table_renders_index_and_nan() -> None:
    from results.writer import markdown_table

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
    one_d = diagnostic_plots.plot_interpolation(land, "t", slice_kind="random_1d")
    axes = _main_axes(one_d)
    assert len(axes) == 2
    for ax, offset in zip(axes, (10.0, 0.0), strict=True):
        assert min(ax.get_lines()[0].get_ydata()) == pytest.approx(offset)  # not a pooled mean
    for stage, offset in ((None, 0.0), (1, 10.0)):
        fig = diagnostic_plots.plot_landscape_2d(land, "t", "random2d:seed=0", stage=stage)
        assert f"around stage {stage or 2}" in fig.get_suptitle()
        cbar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"][0]
        assert cbar.get_ylim()[0] == pytest.approx(offset)
    with pytest.raises(ValueError, match="has stages"):
        diagnostic_plots.plot_landscape_2d(land, "t", "random2d:seed=0", stage=3)


# --- figures fit for a paper: formats, dpi, labels, seed means, curves, one glossary -------


def test_save_figure_formats_embed_fonts_and_leave_rcparams_alone(study: Path, tmp_path) -> None:
    import matplotlib

    before = {k: matplotlib.rcParams[k] for k in ("pdf.fonttype", "svg.fonttype")}
    summary = read_study(study)["summary"]

    def save(name: str, fmt: str, **kw) -> Path:  # a fresh figure, saved once
        return plots.save_figure(plots.plot_lr_robustness(summary), tmp_path / name, fmt, **kw)

    pdf = save("lr_tau0.1", "pdf", dpi=72)
    assert pdf.name == "lr_tau0.1.pdf"  # the suffix is appended, a dot in the name kept
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF") and b"/FontFile2" in data  # TrueType fonts embedded
    assert b"/Type3" not in data
    text = save("lr", "svg").read_text()
    assert "<text" in text and "Learning-rate robustness" in text  # text kept as text
    # No timestamp: the same figure of the same data saves to the same bytes.
    assert save("again", "pdf", dpi=72).read_bytes() == data
    assert save("again", "svg").read_text() == text
    assert {k: matplotlib.rcParams[k] for k in before} == before
    png = save("x.png", "png", dpi=50)  # a path ending in its own format's suffix: kept
    assert png.name == "x.png" and imread(png).shape[1] == pytest.approx(2 * 6.4 * 50, abs=2)
    fig = plots.plot_lr_robustness(summary)
    with pytest.raises(ValueError, match=r"x\.pdf ends in \.pdf but the format is 'png'"):
        plots.save_figure(fig, tmp_path / "x.pdf", "png")
    with pytest.raises(ValueError, match=r"format 'jpg' is not supported: use one of png, pdf"):
        plots.save_figure(fig, tmp_path / "x", "jpg")
    for bad in (0, -5, 1.5, True, "150"):
        with pytest.raises(ValueError, match=r"dpi .* is not a positive integer.*e\.g\. 150"):
            plots.save_figure(fig, tmp_path / "x", "png", dpi=bad)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["again.pdf", "again.svg", "lr.svg", "lr_tau0.1.pdf", "x.png"]  # no more


def test_write_report_refuses_a_bad_format_or_dpi_before_writing(study: Path, tmp_path) -> None:
    from results.report import write_report

    for kw, match in ((dict(fmt="eps"), "'eps' is not supported"), (dict(dpi=0), "dpi 0")):
        with pytest.raises(ValueError, match=match):
            write_report(study, tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()


def test_cli_refuses_a_bad_format_or_dpi_naming_it(study: Path, capsys) -> None:
    from results.report import main

    for args, want in (
        (["--format", "jpg"], ["--format: invalid choice: 'jpg'", "'png', 'pdf', 'svg'"]),
        (["--dpi", "0"], ["'0' is not a positive integer", "--dpi 150"]),
        (["--dpi", "high"], ["'high' is not a positive integer"]),
    ):
        with pytest.raises(SystemExit) as exc:
            main([str(study), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert all(w in err for w in want), err


def test_default_report_dir_is_beside_the_dataset() -> None:
    from results.report import default_report_dir

    assert default_report_dir(Path("runs/study=demo")) == Path("runs/_reports/demo")
    assert default_report_dir(Path("runs")) == Path("runs/_reports/all")
    f = Path("runs/study=demo/summary/t.parquet")
    assert default_report_dir(f) == Path("runs/study=demo/summary/_reports/t")


def test_settings_label_names_settings_not_trial_ids(study: Path) -> None:
    label = plots.settings_label
    assert label({"method": "tm", "replay_weight": "100"}, n_seeds=3) == "tm, w=100, seed mean (3)"
    assert label({"method": "none", "lr_multiplier": 3.0}, n_seeds=1) == "none, lr 3×, 1 seed"
    assert label({"tuning": "lora", "replay_size": 100, "seed": 2}) == "lora, size=100, seed 2"
    assert label({}) == "all trials"
    data = read_study(study)
    s, acc, land = data["summary"], data["accuracy"], data["landscape"]
    # replay_size varies but follows the method (none at 0, tm at 100): not in the label.
    assert plots.trial_label(s, "tm-lr3-s1") == "tm, lr 3×, seed 1"
    assert plots.trial_label(None, "tm-lr3-s1") == "trial tm-lr3-s1"
    heat = matrix_plots.plot_accuracy_heatmap(acc, "tm-lr1-s0", summary=s)
    assert _main_axes(heat)[0].get_title() == "Accuracy matrix: tm, lr 1×, seed 0"
    if HAS_EXTRA_KINDS:
        interp = diagnostic_plots.plot_interpolation(land, "tm-lr1-s0", summary=s)
        assert interp.get_suptitle() == "Linear interpolation: tm, lr 1×, seed 0"
        two_d = diagnostic_plots.plot_landscape_2d(land, "tm-lr1-s0", "random2d:seed=1", summary=s)
        assert two_d.get_suptitle().endswith(": tm, lr 1×, seed 0")


def test_mean_and_difference_matrices_are_drawn_with_their_seed_counts(study: Path) -> None:
    data = read_study(study)
    s, acc = data["summary"], data["accuracy"]
    fig = matrix_plots.plot_mean_accuracy_matrix(acc, s, {"method": "none", "lr_multiplier": 1.0})
    ax = _main_axes(fig)[0]
    assert ax.get_title() == "Accuracy matrix: none, lr 1×, seed mean (2)"
    # Cell (after task 3, task 1): 0.9 - 0.12 * 2 = 0.66 for seed 0 and 0.65 for seed 1.
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert len(texts) == (len(TASKS) + 1) * len(TASKS) and texts[(3, 0)] == "0.66"
    # At 3x none has one completed seed: the diverged one is not averaged.
    fig = matrix_plots.plot_mean_accuracy_matrix(acc, s, {"method": "none", "lr_multiplier": 3.0})
    assert _main_axes(fig)[0].get_title().endswith("none, lr 3×, 1 seed")
    diff = matrix_plots.plot_accuracy_difference(acc, s, {"method": "tm", "lr_multiplier": 3.0})
    ax = _main_axes(diff)[0]
    assert ax.get_title() == "Accuracy difference: tm − none, lr 3×\nseed-matched (1 seed(s))"
    # Seed 0 at 3x: fades 0.06 (tm) vs 0.36 (none) per task -> +0.30 and +0.60 below the diagonal.
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts
    }
    assert (texts[(2, 0)], texts[(3, 0)], texts[(3, 2)]) == ("+0.30", "+0.60", "+0.00")
    # A diverging colour map centred at 0, symmetric about it.
    image = ax.get_images()[0]
    assert image.get_cmap().name == "RdBu" and image.norm.vcenter == 0.0
    assert image.norm.vmin == pytest.approx(-image.norm.vmax)
    with pytest.raises(ValueError, match="no completed trial at"):
        matrix_plots.plot_mean_accuracy_matrix(acc, s, {"method": "kl"})


@pytest.mark.skipif(not HAS_EXTRA_KINDS, reason="the study has no curve records")
def test_training_curves_mean_band_and_task_boundaries(study: Path) -> None:
    data = read_study(study)
    s, curve = data["summary"], data["curve"]
    fig = diagnostic_plots.plot_training_curves(curve, s[s.lr_multiplier == 1.0])
    axes = _main_axes(fig)
    assert [ax.get_title() for ax in axes] == ["training loss", "task cross-entropy"]
    for ax in axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "none, seed mean (2)",
            "tm, seed mean (2)",
        ]
        lines = ax.get_lines()
        means = [ln for ln in lines if ln.get_label().endswith("(2)")]
        bounds = [ln for ln in lines if ln not in means]
        assert [ln.get_xdata()[0] for ln in bounds] == [STEPS_PER_TASK, 2 * STEPS_PER_TASK]
        assert len(ax.collections) == 2  # one ± std band per method
    # The loss of tm carries its replay term (0.5), the task CE does not.
    tm_loss, tm_ce = (ax.get_lines()[1].get_ydata() for ax in axes)
    np.testing.assert_allclose(np.asarray(tm_loss) - np.asarray(tm_ce), 0.5)
    # Quantities never recorded get no panel; no completed trial means no figure.
    only = diagnostic_plots.plot_training_curves(curve, s, quantities=("loss", "replay_ce"))
    assert len(_main_axes(only)) == 2  # replay_ce is recorded for tm
    none = s[s.method == "none"]
    assert (
        len(
            _main_axes(
                diagnostic_plots.plot_training_curves(curve, none, quantities=("loss", "replay_ce"))
            )
        )
        == 1
    )
    with pytest.raises(ValueError, match="no completed trial has curve records"):
        diagnostic_plots.plot_training_curves(curve, s[s.status != "completed"])


def test_report_has_one_glossary_that_the_sections_refer_to(report: Path) -> None:
    text = report.read_text()
    assert text.count("## Glossary") == 1
    glossary = "\n".join(_section(text, "## Glossary"))
    for term in ("**AP**", "**BWT**", "**FWT**", "**forgetting**", "(ddof=1)", "Wilson"):
        assert text.count(term) == 1 and term in glossary, term
    main = "\n".join(_section(text, "## Main results (paper-style table)"))
    assert "[Glossary](#glossary)" in main
    # Titles and headings of the seed means name settings, never trial ids.
    means = "\n".join(_section(text, "## Accuracy matrices (mean over seeds)"))
    assert "seed-matched over 2 shared seed(s)" in means
    assert not re.search(r"(none|tm)-lr\d-s\d", means)
