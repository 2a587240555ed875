"""The report's framework: :class:`Writer` (the Markdown and figures of one report),
:func:`markdown_table`, how cells and setting values are written, the column headers and the
one glossary. Every section, generic (:mod:`results.setting_sections`,
:mod:`results.record_sections`, :mod:`results.trials`) or a study's own
(:mod:`results.presentation`), writes through a :class:`Writer`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from results import analysis as an
from results import plots
from results.io import safe_name

__all__ = [
    "GLOSSARY",
    "HEADERS",
    "MAX_ROWS",
    "METRICS_HELP",
    "Writer",
    "cell",
    "fmt_value",
    "markdown_table",
    "pct",
]

log = logging.getLogger("results.report")  # the report's warnings, under the command's name

HEADERS = {
    "ap": "AP (%)",
    "aia": "AIA (%)",
    "bwt": "BWT ÷(T−1), GEM (pp)",
    "bwt_gem_code": "BWT ÷T, SAPT (pp)",
    "fwt": "FWT zero-shot, GEM (pp)",
    "fwt_sapt": "FWT vs single task, SAPT (pp)",
    "just_learned": "just-learned (%)",
    "forgetting": "forgetting (pp)",
    "general_acc_start": "general acc. start (%)",
    "general_acc_final": "general acc. final (%)",
    "general_ppl_start": "general ppl start",
    "general_ppl_final": "general ppl final",
    "gap_to_multitask": "gap to multitask (pp)",
    "n": "n",
    "n_diverged": "diverged",
    "n_failed": "failed",
    "n_running": "running",
    "lr_multiplier": "LR ×",
    "replay_size": "replay size",
}

METRICS_HELP = (
    "Mean ± std over the completed trials (seeds) of each row; units, the count columns and "
    "every metric are defined once, in the [Glossary](#glossary)."
)
"""What the metric tables say about their cells: a pointer to the one glossary."""

GLOSSARY = [
    "**Table cells**: accuracies in %, BWT/FWT/forgetting and differences in percentage points "
    "(pp); mean ± sample std (ddof=1) over the completed trials (seeds) of the row; [±x] after "
    "the final general accuracy = mean 95% Wilson half-width of the trials' probe accuracy (the "
    "sampling uncertainty of one run, from its n_correct / n_total); `n` = completed trials "
    "averaged; `diverged`/`failed` (and `running`, when some trial is) = trials of that row "
    "left out of the means. Accuracy matrices show fractions (0.90 = 90%).",
    "**Stage**: checkpoint index; 0 = starting model, i = after training task i of T.",
    "**Accuracy matrix** a[i][j]: score on task j after training through task i.",
    "**AP** (average performance, GEM's ACC) = mean_j a[T][j]: accuracy over all tasks at the end.",
    "**AIA** (average incremental accuracy) = 1/T sum_i (1/i sum_{j<=i} a[i][j]): the mean, over "
    "stages, of the accuracy on the tasks seen so far.",
    "**BWT** (GEM's paper) = 1/(T-1) sum_{j<T} (a[T][j] - a[j][j]); negative = forgetting of "
    "learned tasks. **BWT ÷T** (GEM's code, SAPT's `score.py`, the Long-Sequence tables) = the "
    "same sum / T = (T-1)/T × BWT.",
    "**FWT** (GEM, zero-shot) = 1/(T-1) sum_{j>=2} (a[j-1][j] - a[0][j]): transfer to a task "
    "before training on it. **FWT vs single task** (SAPT) = 1/T sum_k a[k][k] - 1/T sum_k "
    "s[k][k], s the `single_task` trial of the same seed (every task trained alone from the "
    "starting model): did earlier tasks help learn later ones.",
    "**just-learned** = 1/T sum_k a[k][k]: accuracy on each task right after training it.",
    "**probe subsample**: the general-ability probe scores `eval.probe_max_questions` questions "
    "(a seeded sample, the same at every stage) of the probe's files: for MMLU, not lm-eval's "
    "full `mmlu` task of 14,042 questions (unless it is unset), so compare with lm-eval's "
    "published numbers only as that subsample; `world_quiz` is the offline world's own quiz "
    "(facts of the generated world, in MMLU's file layout), not MMLU.",
    "**Gap to multitask** = a method's AP minus the multitask upper bound's mean AP (every task "
    "trained at once, the same epochs); 0 = as good as training on everything together.",
    "**forgetting** (Chaudhry) = mean over j<T of max_{j<=l<T} a[l][j] - a[T][j]; >= 0 is loss.",
    "**general acc.**: multiple-choice general-knowledge probe (e.g. MMLU: a seeded "
    "subsample, see *probe subsample*), of the starting model (start) and after the last task "
    "(final); "
    "**general ppl**: perplexity on held-out general text (lower is better).",
    "**forgetting prevented** = 1 - drop_method / drop_baseline with the baseline trial of the "
    "same seed and settings: 1 = no general-ability loss, 0 = as much loss as no replay.",
    "**Seed-mean accuracy matrix**: each cell's mean over the completed trials (seeds) of one "
    "setting; a bracketed count marks a cell averaged over fewer trials than the others.",
    "**Difference to none**: a method's accuracy matrix minus that of `none` (sequential "
    "fine-tuning) at the same settings; *seed-matched* = the mean over the shared seeds of the "
    "per-seed differences (a paired comparison), *mean − mean* = the difference of the two "
    "seed means when no seed is shared. > 0 (blue) = the method scores higher.",
    "**Training loss**: the loss that was back-propagated (task cross-entropy plus the weighted "
    "replay term), mean over each logged window; **task CE**: the cross-entropy on the task's "
    "own rows only, comparable across methods.",
    "**diverged**: training loss became non-finite or exploded; such trials are counted, not "
    "averaged. **failed**: the trial raised an error. **running**: the trial was started (or "
    "re-started) and has not finished, or was interrupted; counted, not averaged.",
    "**incomplete records**: a completed trial whose accuracy matrix lacks stages of 0..T (or "
    "cells) or whose general records lack stages, or records whose trial has no summary row; "
    "listed under Trials and marked where shown; re-run such a trial to restore its records.",
]
"""The report's one glossary (its last section); other sections link to it."""


MAX_ROWS = 40
"""Rows beyond which a table is cut (and says so)."""


def cell(v: object) -> str:
    """A table cell: "–" for a missing value, floats to 4 significant digits, text escaped."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float | np.floating):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency); the index becomes columns."""
    if index and (df.index.name is not None or any(n is not None for n in df.index.names)):
        df = df.reset_index()
    cols = [HEADERS.get(str(c), str(c)) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def _flat(df: pd.DataFrame, index: bool) -> pd.DataFrame:
    if index and (df.index.name is not None or any(n is not None for n in df.index.names)):
        return df.reset_index()
    return df.reset_index(drop=True)


_LATEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$"}


def latex_table(df: pd.DataFrame) -> str:
    r"""A table as LaTeX through pandas' ``Styler.to_latex`` (needs ``\usepackage{booktabs}``):
    the report's column headers, text escaped for LaTeX, floats to 4 significant digits."""
    shown = df.rename(columns=lambda c: HEADERS.get(str(c), str(c)))
    styler = shown.style.hide(axis="index").format(
        lambda v: cell(v).replace("\\|", "|"), escape="latex"
    )
    styler = styler.format_index(escape="latex", axis=1)
    text = styler.to_latex(hrules=True, column_format="l" * len(shown.columns))
    for symbol, tex in _LATEX_SYMBOLS.items():
        text = text.replace(symbol, tex)
    return text


def fmt_value(col: str, v: object) -> str:
    """A setting's value as the report writes it (an LR multiplier as "3×")."""
    if col == "lr_multiplier" and isinstance(v, float | int | np.number):
        return f"{v:g}×"
    if isinstance(v, float | np.floating):
        return f"{v:g}"
    return str(v)


class Writer:
    """Accumulates markdown and saves figures beside it (``plots.save_figure``)."""

    def __init__(self, out: Path, fmt: str = "png", dpi: int = plots.DEFAULT_DPI) -> None:
        self.out = out
        self.fmt = fmt
        self.dpi = dpi
        self.lines: list[str] = []
        self.figures: list[Path] = []
        self.tables: list[Path] = []

    def add(self, *text: str) -> None:
        """Lines of Markdown, then a blank line."""
        self.lines.extend(text)
        self.lines.append("")

    def read(self, text: str) -> None:
        """The line on how to read the table or figure above."""
        self.add(f"*How to read this:* {text}")

    def table(
        self,
        df: pd.DataFrame,
        how: str,
        *,
        index: bool = True,
        max_rows: int | None = MAX_ROWS,
        name: str | None = None,
        raw: pd.DataFrame | None = None,
    ) -> None:
        """A table (cut to ``max_rows``, saying so) and how to read it; with ``name``, also
        whole as ``<name>.csv`` (``raw``'s numbers where given) and ``<name>.tex``."""
        cut = max_rows is not None and len(df) > max_rows
        self.add(markdown_table(df.iloc[:max_rows] if cut else df, index=index))
        if cut:
            self.add(f"(first {max_rows} of {len(df)} rows shown)")
        if name is not None:
            self.export(df, name, raw=raw, index=index)
        self.read(how)

    def export(
        self, df: pd.DataFrame, name: str, *, raw: pd.DataFrame | None = None, index: bool = True
    ) -> None:
        """A paper table beside the report, whole: ``<name>.csv`` (``raw`` where given: numbers
        rather than "mean ± std" text) and ``<name>.tex`` (pandas ``Styler.to_latex``, booktabs
        rules), linked from the report."""
        csv = self.out / f"{safe_name(name)}.csv"
        tex = csv.with_suffix(".tex")
        self.out.mkdir(parents=True, exist_ok=True)
        (_flat(raw, True) if raw is not None else _flat(df, index)).to_csv(csv, index=False)
        tex.write_text(latex_table(_flat(df, index)))
        self.tables += [csv, tex]
        self.add(f"(also as [{csv.name}]({csv.name}) and [{tex.name}]({tex.name}))")

    def figure(self, name: str, alt: str, how: str, draw: Callable[[], Figure]) -> None:
        """The figure ``draw()`` returns, saved as ``<name>.<fmt>`` beside the report and linked
        with ``alt`` and how to read it; a ``ValueError`` from ``draw`` becomes a note why."""
        try:
            fig = draw()
        except ValueError as e:  # data that cannot be drawn: say so, keep the report going
            log.warning("figure %s skipped: %s", name, e)
            self.add(f"*(figure “{alt}” not drawn: {e})*")
            return
        path = plots.save_figure(fig, self.out / safe_name(name), self.fmt, self.dpi)
        self.figures.append(path)
        self.add(f"![{alt}]({path.name})")
        self.read(how)


def pct(df: pd.DataFrame) -> pd.DataFrame:
    """``format_mean_std`` at one decimal, accuracies in %."""
    return an.format_mean_std(df, digits=1, percent=True)
