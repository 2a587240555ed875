"""The config reference: every option of a trial config, generated from the config dataclasses.

``docs/config-reference.md`` is ``reference_markdown()`` verbatim (a test keeps it so);
regenerate it with ``python -m harness.config.reference --write``. The text is what
``python -m harness run --help`` prints (:mod:`harness.config.docs`: the docstring under each
field, the names of a registry-backed field, the settings of every registered method), laid out
as one table per section, then one table per method family from the registries. Imports only
:mod:`harness.config` and :mod:`harness.registry`: no torch, no method module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.config.cl_methods import CL
from harness.config.docs import (
    field_help,
    iter_fields,
    iter_intervention_settings,
    iter_method_settings,
    type_label,
)
from harness.config.interventions import INTERVENTIONS
from harness.config.replay_methods import REPLAY
from harness.config.scale import rewrites_weights_problem, zero_stage_problem
from harness.config.schema import ScaleConfig
from harness.docgen import generated_page_main
from harness.registry import Entry, Registry

__all__ = ["DOCS_PATH", "main", "reference_markdown"]

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "config-reference.md"
"""The committed copy of ``reference_markdown()``; a test keeps it up to date."""

SECTIONS: dict[str, str] = {
    "": "The trial's name, seed and where its results go, and which defaults the methods' "
    "settings take.",
    "model": "The model and how it is fine-tuned (full or LoRA).",
    "data": "The task sequence: where the data is, which tasks, how an instance becomes a prompt.",
    "replay": "General replay (GeRe's replay texts and the loss on them); "
    "`replay.settings.NAME` are the settings of the chosen method.",
    "train": "The optimiser, the schedule and how the losses make a step.",
    "eval": "How tasks are scored and what measures general ability.",
    "scale": "Ray Train workers, DeepSpeed ZeRO and the resources of a trial.",
    "landscape": "Loss-landscape slices at chosen checkpoints.",
    "interventions": "Plasticity interventions: giving any setting of one turns it on.",
    "cl": "Continual-learning methods beyond general replay: giving any setting of one turns "
    "it on (`{}` for a method without settings).",
}
"""Section (``""`` = top level) -> one line above its table, in the order of the page."""

_CODE = re.compile(r"(`+)(.+?)\1")


def _escape(text: str) -> str:
    """Text made safe for a Markdown table cell outside code spans."""
    for old, new in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), ("*", "\\*")):
        text = text.replace(old, new)
    return text.replace("[", "\\[").replace("]", "\\]")


def _cell(text: str) -> str:
    """A table cell: markup outside ``code spans`` escaped; a code span holding ``|`` becomes
    escaped text (see :func:`_code`)."""
    out, at = [], 0
    for m in _CODE.finditer(text):
        out.append(_escape(text[at : m.start()]))
        out.append(_escape(m.group(2)) if "|" in m.group(0) else m.group(0))
        at = m.end()
    out.append(_escape(text[at:]))
    return "".join(out)


def _code(value: str) -> str:
    """``value`` as a code span in a table cell; as escaped text where it holds a ``|`` (in a
    table, Python-Markdown keeps the backslash of ``\\|`` inside a code span, GitHub drops it)."""
    if "|" in value:
        return _escape(value)
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _shown(default: Any) -> str:
    """A default as ``--help`` shows it."""
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    if default == "":
        return '""'
    return str(default)


def _table(rows: Iterable[tuple[str, Any, Any, str]], strip: str = "") -> list[str]:
    out = ["| option | type | default | description |", "|---|---|---|---|"]
    for name, tp, default, doc in rows:
        text = field_help(tp, doc)
        if strip and text.startswith(strip):
            text = text[len(strip) :]
        label = type_label(tp)
        out.append(
            f"| {_code(name)} | {_escape(label)} | {_code(_shown(default))} | {_cell(text)} |"
        )
    return out + [""]


def _section(name: str) -> str:
    return name.split(".", 1)[0] if "." in name else ""


def _options() -> list[str]:
    fields = list(iter_fields())
    replay_settings = list(iter_method_settings())
    hook_settings = list(iter_intervention_settings())
    by_section: dict[str, list[tuple[str, Any, Any, str]]] = {s: [] for s in SECTIONS}
    for row in fields:
        name = row[0]
        # ``interventions`` and ``cl`` are mappings at the top level: their sections below.
        section = name if name in ("interventions", "cl") else _section(name)
        by_section.setdefault(section, []).append(row)
        if name == "replay.settings":  # the settings each method takes, right after it
            by_section[section].extend(replay_settings)
    out: list[str] = ["## Options", ""]
    for section, rows in by_section.items():
        title = f"`{section}`" if section else "Top level"
        out += [f"### {title}", ""]
        if SECTIONS.get(section):
            out += [SECTIONS[section], ""]
        if section in ("interventions", "cl"):
            out += _table(rows)
            registry = INTERVENTIONS if section == "interventions" else CL
            for method in sorted(registry.names()):
                entry = registry.entry(method)
                own = [r for r in hook_settings if _section_of_method(r[0]) == (section, method)]
                prefix = f"{method} ({entry.source}; setting any of its options turns it on): "
                out += [f"#### `{section}.{method}`", "", _cell(entry.summary), ""]
                out += _table(own, strip=prefix)
        else:
            out += _table(rows)
    return out


def _section_of_method(name: str) -> tuple[str, str]:
    parts = name.split(".")
    return (parts[0], parts[1]) if len(parts) >= 2 else (parts[0], "")


def _settings_cell(entry: Entry) -> str:
    specs = entry.spec()
    if not specs:
        return "(none)"
    return ", ".join(_code(f"{s.name}={s.default!r}") for s in specs)


def _paper_cell(entry: Entry) -> str:
    if not entry.paper_defaults:
        return "(same)"
    items = sorted(entry.paper_defaults.items())
    return ", ".join(_code(f"{k}={v!r}") for k, v in items)


def _zero_stages(entry: Any) -> list[int]:
    """The DeepSpeed ZeRO stages a stage-hook method runs under, by the rules the config
    applies to a trial (its own stages, and whole weights where it rewrites them)."""
    out = []
    for stage in range(4):
        scale = ScaleConfig(backend="deepspeed", zero_stage=stage)
        if entry.rewrites_weights and rewrites_weights_problem(scale):
            continue
        if zero_stage_problem(scale, entry.zero_stages, entry.zero3_reason):
            continue
        out.append(stage)
    return out


def _methods(title: str, key: str, registry: Registry, intro: str) -> list[str]:
    hooks = registry is not REPLAY
    head = "| name | what it is | source | settings (default) | reference values |"
    rule = "|---|---|---|---|---|"
    if hooks:
        head += " ZeRO stages (DeepSpeed) | LoRA |"
        rule += "---|---|"
    else:
        head += " default weight |"
        rule += "---|"
    out = [f"### {title}", "", intro, "", head, rule]
    for name in registry.names():
        entry = registry.entry(name)
        row = (
            f"| {_code(name)} | {_cell(entry.summary)} | {_cell(entry.source or '—')} "
            f"| {_settings_cell(entry)} | {_paper_cell(entry)} |"
        )
        if hooks:
            stages = ", ".join(map(str, _zero_stages(entry)))
            if entry.needs_lora:
                lora = "LoRA only"
            elif entry.lora is not None:
                lora = "no: " + entry.lora
            else:
                lora = "yes"
            row += f" {stages} | {_cell(lora)} |"
        else:
            row += f" {entry.default_weight:g} |"
        out.append(row)
    return out + ["", f"Implementations: {_code(key)}, one module per method.", ""]


def reference_markdown() -> str:
    """Every option of a trial config, and every method of each family; the committed
    docs/config-reference.md is exactly this."""
    out = [
        "# Config reference",
        "",
        "<!-- Generated by `python -m harness.config.reference --write` from the config "
        "dataclasses (harness/config/) and the method registries; do not edit by hand. -->",
        "",
        "Every option of a trial config, by section: its type, its default and the docstring "
        "written under its field, the text `python -m harness run --help` prints. An option is "
        "set in a config file (`--config FILE.yaml`, nested keys), with "
        "`--set section.key=value`, or as `--section.key value`; later ones win: defaults < "
        "`--config` < `--set` < `--section.key`. Command-line values are read by the option's "
        "type (`None` unsets). `{a,b}` lists the valid values; `mapping` is a nested mapping.",
        "",
    ]
    out += _options()
    out += [
        "## Methods",
        "",
        "The methods each family registers (`harness/config/replay_methods.py`, "
        "`harness/config/interventions.py`, `harness/config/cl_methods.py`), in their display "
        "order. *Reference values* are the settings whose reference (paper or code) value "
        "differs from the harness's default; `method_defaults: paper` fills them in where a "
        "trial leaves them unset.",
        "",
    ]
    out += _methods(
        "Replay methods (`replay.method`)",
        "harness/replay/<name>.py",
        REPLAY,
        "The loss on the replay texts; settings under `replay.settings`, the weight w of the "
        "term under `replay.weight` (unset: the method's default weight).",
    )
    out += _methods(
        "Plasticity interventions (`interventions`)",
        "harness/interventions/<name>.py",
        INTERVENTIONS,
        "Stage hooks that rewrite the trained weights to keep the network able to learn; any "
        "number per trial, with any replay method.",
    )
    out += _methods(
        "Continual-learning methods (`cl`)",
        "harness/cl/<name>.py",
        CL,
        "The other rows of a continual-learning table, as stage hooks; they compose with a "
        "replay method where that makes sense (a combination that does not is refused with "
        "the reason).",
    )
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the page, write it to docs/, or check the committed copy."""
    return generated_page_main(
        "python -m harness.config.reference", DOCS_PATH, reference_markdown, argv
    )


if __name__ == "__main__":
    raise SystemExit(main())
