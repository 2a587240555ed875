"""THE results contract: one versioned Parquet schema per record kind, every column documented.

Everything a study writes goes through ``to_table`` and everything analysis reads goes through
``validate_table`` (``results.io`` does both), so a column renamed or retyped here changes the
contract in one place — bump ``SCHEMA_VERSION`` when it does, and readers refuse old files
with a message instead of mis-reading them.

Conventions: floats are never null — NaN means "not available" (one missing marker, not two);
the columns marked nullable below use null for "does not apply". ``docs/results-schema.md`` is
``schema_markdown()`` verbatim; regenerate it with ``python -m results.schema --write``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.config.replay_methods import REPLAY
from harness.metrics import METRICS
from harness.suggest import did_you_mean

__all__ = [
    "DOCS_PATH",
    "KINDS",
    "SCHEMA_VERSION",
    "schema_for",
    "schema_markdown",
    "to_table",
    "upgrade",
    "validate_table",
]

SCHEMA_VERSION = 3
"""2 (2026-12): the summary's settings as typed columns, ``tasks`` a list, provenance.
3 (2026-12-04): the summary's ``replay.add_bos`` is the rule 'tokenizer' / 'always' / 'never'
(was a bool: true read as 'tokenizer', false as 'never'); ``data.add_bos`` and the
predictions' ``item`` added.
Bump on any change that makes a stored file read differently: a column's name, type or
meaning, or an allowed value taken away. Additions that every old file still satisfies (a new
record kind, a new allowed value) keep the version."""

DOCS_PATH = Path(__file__).resolve().parent.parent / "docs" / "results-schema.md"
"""The committed copy of ``schema_markdown()``; a test keeps it up to date."""

FILLED = ("schema_version", "study", "trial_id")
"""Columns ``to_table`` fills itself; callers' rows need not (but may, if equal) carry them."""


def _f(
    name: str,
    type_: pa.DataType,
    doc: str,
    *,
    nullable: bool = False,
    allowed: Sequence[str] = (),
) -> pa.Field:
    """A field with its documentation (and allowed values, if any) kept in its metadata."""
    meta = {"doc": doc}
    if allowed:
        meta["allowed"] = ",".join(allowed)
    return pa.field(name, type_, nullable=nullable, metadata=meta)


def _common() -> list[pa.Field]:
    return [
        _f("schema_version", pa.int32(), f"Version of this schema ({SCHEMA_VERSION})."),
        _f("study", pa.string(), "Study name (the grid this trial belongs to)."),
        _f(
            "trial_id",
            pa.string(),
            "Deterministic trial id, unsanitised (file names may differ; this column does not).",
        ),
    ]


def _stage_fields() -> list[pa.Field]:
    return [
        _f(
            "stage",
            pa.int32(),
            "Checkpoint: 0 = starting model, i = after training task i (1-based).",
        ),
        _f("after_task", pa.string(), "Name of the task trained last; '<start>' at stage 0."),
    ]


_ACCURACY = pa.schema(
    [
        *_common(),
        *_stage_fields(),
        _f("task", pa.string(), "Evaluated task's name."),
        _f(
            "task_position",
            pa.int32(),
            "1-based position of the evaluated task in the trial's sequence (its column in A).",
        ),
        _f("accuracy", pa.float64(), "n_correct / n_total; NaN if n_total is 0."),
        _f("n_correct", pa.int64(), "Examples scored correct."),
        _f("n_total", pa.int64(), "Examples scored."),
        _f(
            "scoring",
            pa.string(),
            "How answers were scored (eval.scoring): arg-max log-likelihood of the choices "
            "('loglik'), greedy generation + the Long-Sequence papers' exact match (SAPT: the "
            "answer after the last 'Output:', normalised; 'exact_match'), or greedy generation "
            "+ case-sensitive match of the first line ('generate').",
            allowed=("loglik", "exact_match", "generate"),
        ),
    ]
)

_GENERAL = pa.schema(
    [
        *_common(),
        *_stage_fields(),
        _f(
            "probe",
            pa.string(),
            "General-ability probe, e.g. 'mmlu' (multiple choice) or a held-out text set (ppl).",
        ),
        _f("accuracy", pa.float64(), "Multiple-choice accuracy; NaN for perplexity-only probes."),
        _f(
            "n_correct",
            pa.int64(),
            "Questions correct; null if not multiple choice.",
            nullable=True,
        ),
        _f("n_total", pa.int64(), "Questions scored; null if not multiple choice.", nullable=True),
        _f("ppl", pa.float64(), "exp(nll_sum / ppl_tokens); NaN if no perplexity text."),
        _f("nll_sum", pa.float64(), "Summed token negative log-likelihood (nats)."),
        _f(
            "ppl_tokens",
            pa.int64(),
            "Tokens in nll_sum; null if no perplexity text. Sum nll_sum and ppl_tokens to pool.",
            nullable=True,
        ),
    ]
)

_CURVE = pa.schema(
    [
        *_common(),
        _f("stage", pa.int32(), "Task index being trained (1-based)."),
        _f("task", pa.string(), "Name of the task being trained."),
        _f("step", pa.int64(), "Global optimizer step across the whole sequence."),
        _f("task_step", pa.int64(), "Optimizer step within this task."),
        _f("loss", pa.float64(), "Total loss that was back-propagated (mean over the window)."),
        _f("task_ce", pa.float64(), "Cross-entropy on task rows in the window."),
        _f(
            "replay_ce",
            pa.float64(),
            "Cross-entropy on replay rows; NaN when no replay rows were in the window.",
        ),
        _f(
            "replay_term",
            pa.float64(),
            "Raw replay-loss term (TM, KL, L1 or L2) before weighting; NaN if none.",
        ),
        _f(
            "replay_weight",
            pa.float64(),
            "Weight applied to replay_term (the value used, also when 'dynamic').",
        ),
        _f("lr", pa.float64(), "Learning rate at this step."),
        _f("grad_norm", pa.float64(), "Gradient norm before clipping; NaN if not measured."),
        _f("tokens", pa.int64(), "Training tokens (non-padding) in the logged window."),
        _f(
            "pad_share",
            pa.float64(),
            "Share of the positions the forward passes computed that were padding, in the "
            "window (1 - tokens / positions). Null in results written before it existed.",
            nullable=True,
        ),
    ]
)


_ARROW = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "str": pa.string(),
    "json": pa.string(),
    "list[str]": pa.list_(pa.string()),
    "list[int]": pa.list_(pa.int64()),
    "list[float]": pa.list_(pa.float64()),
}


def _settings_fields() -> list[pa.Field]:
    """One typed, nullable column per setting (harness.config.flat): null where it does not
    apply (NaN for floats) or in results written before it existed."""
    from harness.config.flat import settings_columns

    fields = []
    for name, kind, doc in settings_columns():
        note = " (JSON)" if kind == "json" else ""
        fields.append(_f(name, _ARROW[kind], f"Setting{note}: {doc}", nullable=True))
    return fields


PROVENANCE = (
    "git_sha",
    "git_dirty",
    "python_version",
    "torch_version",
    "transformers_version",
    "peft_version",
    "ray_version",
    "deepspeed_version",
    "device",
    "started_at",
)
"""Summary columns saying where and with what a trial ran (null in results written before
schema version 2, or where unknown: no git checkout, Ray or DeepSpeed not installed)."""


def _provenance_fields() -> list[pa.Field]:
    lib = "Version of {} the trial ran with; null if not installed."
    return [
        _f(
            "git_sha",
            pa.string(),
            "Git commit of the harness checkout; null if none.",
            nullable=True,
        ),
        _f(
            "git_dirty",
            pa.bool_(),
            "Whether the checkout had uncommitted changes; null if none.",
            nullable=True,
        ),
        _f("python_version", pa.string(), "Python version.", nullable=True),
        *[
            _f(f"{name}_version", pa.string(), lib.format(name), nullable=True)
            for name in ("torch", "transformers", "peft", "ray", "deepspeed")
        ],
        _f(
            "device",
            pa.string(),
            "Where rank 0 trained: 'cpu' or 'cuda: <GPU name>' (x the world size).",
            nullable=True,
        ),
        _f(
            "started_at",
            pa.timestamp("us", tz="UTC"),
            "When this run of the trial started (UTC).",
            nullable=True,
        ),
    ]


def _metric_doc(name: str) -> str:
    doc = (METRICS[name].__doc__ or "").strip().splitlines()
    return f"harness.metrics.{METRICS[name].__name__}: {doc[0] if doc else name}"


_SUMMARY = pa.schema(
    [
        *_common(),
        _f(
            "status",
            pa.string(),
            "How the trial ended: 'completed' (every task trained and scored; the only status "
            "whose records are complete), 'diverged' (a non-finite or exploding loss stopped "
            "training; every row measured until then is kept), 'failed' (an error; see "
            "`error`), or 'running' (written before a run or re-run rewrites any record: an "
            "interrupted run leaves 'running', never a stale 'completed').",
            allowed=("completed", "diverged", "failed", "running"),
        ),
        _f(
            "error",
            pa.string(),
            "Why the trial failed or diverged (for a hung collective: the rank, how long it "
            "waited and what it was doing); else null.",
            nullable=True,
        ),
        _f(
            "diverged_stage",
            pa.int32(),
            "Task index at which the loss diverged; null if it did not.",
            nullable=True,
        ),
        _f(
            "diverged_step",
            pa.int64(),
            "Global step at which the loss diverged; null if it did not.",
            nullable=True,
        ),
        _f("wall_time_s", pa.float64(), "Trial wall-clock time in seconds."),
        _f("n_tasks", pa.int32(), "Number of tasks in the sequence (T)."),
        _f(
            "n_stages",
            pa.int32(),
            "Training stages: T (one task each), or 1 for multitask (every task at once, the "
            "upper bound; stages 0 and 1 are scored and only ap is computed). Null in results "
            "written before it existed: T.",
            nullable=True,
        ),
        _f("tasks", pa.list_(pa.string()), "Task names in sequence order."),
        _f("model", pa.string(), "Model name or path."),
        _f("tuning", pa.string(), "Which parameters were trained.", allowed=("lora", "full")),
        _f("method", pa.string(), "Replay method: its name in harness.replay (e.g. none, tm)."),
        _f("replay_size", pa.int64(), "Number of general replay samples (0 for none)."),
        _f(
            "replay_weight",
            pa.string(),
            "The replay weight as a label: a number, 'dynamic' or 'default' (the method's "
            "default; its value is in the typed column replay.weight, the strategy in "
            "replay.weight_strategy).",
        ),
        _f("lr", pa.float64(), "Base learning rate."),
        _f("lr_multiplier", pa.float64(), "Multiplier on lr; the trial trained at lr * this."),
        _f("seed", pa.int64(), "Random seed."),
        *[_f(name, pa.float64(), _metric_doc(name)) for name in METRICS],
        _f("general_acc_start", pa.float64(), "General probe accuracy of the starting model."),
        _f("general_acc_final", pa.float64(), "General probe accuracy after the last task."),
        _f("general_ppl_start", pa.float64(), "General-text perplexity of the starting model."),
        _f("general_ppl_final", pa.float64(), "General-text perplexity after the last task."),
        _f("config_json", pa.string(), "The full trial config as JSON (reproduces the trial)."),
        _f(
            "data_fingerprint",
            pa.string(),
            "Content hash of the data the trial ran on (tasks as loaded, probe and shots, "
            "held-out texts, replay buffer; a Hub source by its name and revision): a trial "
            "whose data changed since is neither resumed nor counted as completed. Null in "
            "results written before it existed.",
            nullable=True,
        ),
        _f(
            "data_warnings",
            pa.list_(pa.string()),
            "What made a measurement doubtful without making it wrong (duplicated test "
            "instances, test inputs also in training, a test set of one label, held-out texts "
            "in the replay buffer); empty if none. Null in results written before it existed.",
            nullable=True,
        ),
        _f(
            "harness_version",
            pa.string(),
            "Harness package version, with '+g<sha>' (and '.dirty') when it runs from a git "
            "checkout.",
        ),
        *_provenance_fields(),
        *_settings_fields(),
    ]
)

_LANDSCAPE = pa.schema(
    [
        *_common(),
        _f(
            "stage",
            pa.int32(),
            "Checkpoint the slice is around (0 = starting model, i = after task i); for an "
            "interpolation, its later endpoint (= to_stage).",
        ),
        _f(
            "slice",
            pa.string(),
            "Stable slice name, e.g. 'interp:0->1', 'random1d:seed=0', 'random2d:seed=0'.",
        ),
        _f(
            "slice_kind",
            pa.string(),
            "Kind of slice (harness.landscape).",
            allowed=("interpolation", "random_1d", "random_2d"),
        ),
        _f(
            "from_stage",
            pa.int32(),
            "Interpolation start checkpoint (alpha = 0); = stage for random slices.",
        ),
        _f(
            "to_stage",
            pa.int32(),
            "Interpolation end checkpoint (alpha = 1); = stage for random slices.",
        ),
        _f(
            "alpha",
            pa.float64(),
            "Coordinate along the first direction (interpolation: weight of the end checkpoint).",
        ),
        _f("beta", pa.float64(), "Coordinate along the second direction; NaN for 1-D slices."),
        _f(
            "dataset",
            pa.string(),
            "Evaluation data of this point: a task name or 'general' (general text).",
        ),
        _f("loss_sum", pa.float64(), "Summed next-token NLL (nats) over the evaluation tokens."),
        _f(
            "tokens",
            pa.int64(),
            "Tokens in loss_sum. Sum loss_sum and tokens over rows to pool (e.g. shards).",
        ),
        _f("loss", pa.float64(), "loss_sum / tokens (mean NLL per token); NaN if tokens is 0."),
        _f(
            "direction_seed",
            pa.int64(),
            "Seed that regenerates the random direction(s); null for interpolations.",
            nullable=True,
        ),
        _f(
            "space",
            pa.string(),
            "Weight space: all weights, or LoRA-adapted weights with the adapter merged "
            "(W0 + B@A*scale; directions and interpolation act on the merged delta).",
            allowed=("full", "lora_merged"),
        ),
        _f(
            "normalisation",
            pa.string(),
            "Direction scaling: per row of each weight matrix ('filter', Li et al. 2018), per "
            "tensor ('layer'), or none (also every interpolation).",
            allowed=("filter", "layer", "none"),
        ),
    ]
)

_PLASTICITY = pa.schema(
    [
        *_common(),
        *_stage_fields(),
        _f(
            "layer",
            pa.int32(),
            "Decoder layer index (0-based); -1 for whole-model aggregates.",
        ),
        _f(
            "metric",
            pa.string(),
            "Diagnostic (harness.plasticity): dormant_fraction = share of MLP units with score "
            "E|h_i| / mean_k E|h_k| <= tau; gate_dormant_fraction = share of units whose gate "
            "pre-activation is > 0 on fewer than tau of the tokens; effective_rank = "
            "exp(entropy of normalised singular values); srank = smallest k whose top-k singular "
            "values hold >= 99% of their sum; weight_norm = Frobenius norm; weight_distance = "
            "||theta - theta_0||; mean_abs_weight = mean |theta|.",
            allowed=(
                "dormant_fraction",
                "gate_dormant_fraction",
                "effective_rank",
                "srank",
                "weight_norm",
                "weight_distance",
                "mean_abs_weight",
            ),
        ),
        _f(
            "tau",
            pa.float64(),
            "Threshold: the dormant score threshold (dormant_fraction) or the token share "
            "(gate_dormant_fraction); NaN for the other metrics.",
        ),
        _f("value", pa.float64(), "The metric's value."),
        _f(
            "n_units",
            pa.int64(),
            "MLP units measured (activation metrics; per layer: intermediate size) or "
            "parameters covered (weight metrics).",
        ),
        _f(
            "n_tokens",
            pa.int64(),
            "Non-padding probe tokens behind activation metrics (rank metrics need >= n_units "
            "per layer to be full-resolution); 0 for weight metrics.",
        ),
    ]
)

_PREDICTIONS = pa.schema(
    [
        *_common(),
        *_stage_fields(),
        _f(
            "task",
            pa.string(),
            "Evaluated task's name, or 'probe:<probe>' for the general-ability probe.",
        ),
        _f("example", pa.int64(), "Index of the example in the trial's (seeded) test sample."),
        _f(
            "item",
            pa.string(),
            "Which source item it was, to join with other tools' per-sample logs: "
            "'<task>/<index>' (0-based index into the task's test.json Instances) or, for an "
            "MMLU-style probe, '<subject>/<row>' (0-based index of the question in the "
            "subject's test file, header row excluded; in the Hub dataset, among that "
            "subject's rows). Null in files written before it existed.",
            nullable=True,
        ),
        _f("gold", pa.string(), "The gold answer: label, letter or choice text."),
        _f(
            "predicted", pa.string(), "The model's answer: the arg-max label or the generated text."
        ),
        _f("correct", pa.bool_(), "Whether the answer was scored correct."),
        _f(
            "logliks",
            pa.list_(pa.float64()),
            "Summed log-likelihood of every candidate, in the order of the task's labels.json "
            "(or the probe's choices); null when the answer was generated.",
            nullable=True,
        ),
        _f(
            "generated",
            pa.string(),
            "The generated text (the new tokens decoded, up to EOS), from which the answer "
            "('predicted') was read; null under log-likelihood scoring.",
            nullable=True,
        ),
        _f(
            "scoring",
            pa.string(),
            "How the example was scored (see accuracy.scoring).",
            allowed=("loglik", "exact_match", "generate"),
        ),
    ]
)

_ADAPTATION = pa.schema(
    [
        *_common(),
        _f("budget_steps", pa.int64(), "Adaptation steps (0 for the base as pretrained)."),
        _f(
            "base",
            pa.string(),
            "The pretrained base: 'standard', or 'forgetful' (token embeddings reset every "
            "embedding_reset_every pretraining steps; Chen et al. 2023).",
            allowed=("standard", "forgetful"),
        ),
        _f("embedding_reset_every", pa.int64(), "The base's reset period in steps (0: never)."),
        _f(
            "adapt",
            pa.string(),
            "How the base was adapted to the new language: 'none' (the base as pretrained), "
            "'embeddings' (a new tokenizer, fresh embeddings, the body frozen) or 'full' (the "
            "same, every parameter trained).",
            allowed=("none", "embeddings", "full"),
        ),
        _f("seed", pa.int64(), "Seed of the adaptation (embedding draw, batch order)."),
        _f(
            "language",
            pa.string(),
            "Language of the probe scored: 'first' (the world as pretrained) or 'new' (the "
            "world respelled, harness.world.language).",
            allowed=("first", "new"),
        ),
        _f("probe_accuracy", pa.float64(), "Cloze probe accuracy (n_correct / n_total)."),
        _f("n_correct", pa.int64(), "Probe questions answered correctly."),
        _f("n_total", pa.int64(), "Probe questions scored."),
        _f("chance", pa.float64(), "Probe accuracy of guessing (1 / choices)."),
        _f(
            "final_loss",
            pa.float64(),
            "Mean language-modelling loss over the last 5% of adaptation steps; NaN for 'none'.",
        ),
        _f("wall_time_s", pa.float64(), "Adaptation wall-clock seconds (0 for 'none')."),
    ]
)

_KIND_DOCS = {
    "accuracy": "The CL accuracy matrix in long form: one row per (stage, evaluated task).",
    "general": "General ability per checkpoint: one row per (stage, probe).",
    "curve": "Training curves: one row per logged optimizer step.",
    "summary": "One row per trial: outcome, settings and every CL metric.",
    "landscape": "Loss-landscape slices: one row per (point, dataset) of a random slice or an "
    "interpolation between checkpoints (harness.landscape).",
    "plasticity": "Plasticity diagnostics per checkpoint: one row per (stage, layer, metric, "
    "tau) (harness.plasticity).",
    "adaptation": "Active forgetting (studies/active_forgetting.py): one row per (base, "
    "adaptation, budget, seed, probe language); each run is one trial_id.",
    "predictions": "Every scored example per checkpoint (eval.predictions): one row per "
    "(stage, task or probe, example). Size: one row per test instance and probe question per "
    "checkpoint; the llama-3.1-8b preset (15 tasks x 500 + 2,000 questions, 16 checkpoints) "
    "writes about 152,000 rows per trial, a few MB of Parquet.",
}

KINDS: dict[str, pa.Schema] = {
    kind: schema.with_metadata({"kind": kind, "schema_version": str(SCHEMA_VERSION)})
    for kind, schema in {
        "accuracy": _ACCURACY,
        "general": _GENERAL,
        "curve": _CURVE,
        "summary": _SUMMARY,
        "landscape": _LANDSCAPE,
        "plasticity": _PLASTICITY,
        "predictions": _PREDICTIONS,
        "adaptation": _ADAPTATION,
    }.items()
}
"""Record kind -> its Arrow schema. Each kind is stored in its own directory."""


def schema_for(kind: str) -> pa.Schema:
    """The schema of one record kind; an unknown kind fails with a suggestion."""
    if kind not in KINDS:
        raise ValueError(
            f"Unknown record kind {kind!r}{did_you_mean(kind, KINDS)}. Available: {list(KINDS)}"
        )
    return KINDS[kind]


def _allowed(field: pa.Field) -> list[str]:
    raw = (field.metadata or {}).get(b"allowed")
    return raw.decode().split(",") if raw else []


def _column_array(field: pa.Field, values: Any) -> pa.Array:
    """Convert one column to the field's type; failures name the column.

    Floats go through numpy so None and pandas NA become NaN (floats are never null);
    integers and strings go through Arrow's pandas conversion so NaN/None become null, which
    the nullability check then accepts or rejects.
    """
    try:
        if pa.types.is_floating(field.type):
            if isinstance(values, pd.Series):
                arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                arr = np.asarray(values, dtype=np.float64)
            return pa.array(arr, type=field.type)
        return pa.array(values, type=field.type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise ValueError(f"column {field.name!r}: cannot convert to {field.type}: {e}") from e


def _check_values(kind: str, schema: pa.Schema, table: pa.Table) -> None:
    """Nulls only where nullable; enumerated columns only take their allowed values."""
    for field in schema:
        col = table.column(field.name)
        if not field.nullable and col.null_count:
            raise ValueError(
                f"{kind}: column {field.name!r} has {col.null_count} null value(s) but is not "
                f"nullable ({(field.metadata or {}).get(b'doc', b'').decode()})"
            )
        allowed = _allowed(field)
        if allowed and len(col):
            bad = pc.unique(pc.filter(col, pc.invert(pc.is_in(col, pa.array(allowed)))))
            bad = [v for v in bad.to_pylist() if v is not None]
            if bad:
                raise ValueError(
                    f"{kind}: column {field.name!r} has value(s) {bad}; allowed: {allowed}"
                )


def omissible(kind: str) -> tuple[str, ...]:
    """Nullable columns a writer's rows may leave out (null): the summary's typed settings,
    provenance and data fingerprint (the trial fills them; rows built by hand, in tests or migrations, need
    not). Every other column must be given, so a writer's typo fails at once."""
    if kind != "summary":
        return ()
    from harness.config.flat import settings_columns

    extra = ("data_fingerprint", "data_warnings")  # what the trial's data loading found
    return (*PROVENANCE, *extra, *(name for name, _k, _d in settings_columns()))


def to_table(
    kind: str,
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    *,
    study: str,
    trial_id: str,
) -> pa.Table:
    """Build a schema-exact table from records, filling ``schema_version``/``study``/``trial_id``.

    ``rows`` is a list of dicts or a DataFrame with exactly the kind's other columns (order is
    free). Missing or extra columns fail with their names, so a typo in a writer is caught at
    the first trial rather than in analysis weeks later. An empty list gives a zero-row table
    (writing it replaces an earlier attempt's rows). If the rows already carry a filled column
    (e.g. a DataFrame read back), its values must equal the ones given.
    """
    schema = schema_for(kind)
    if not study or not trial_id:
        raise ValueError(
            f"{kind}: study and trial_id must be non-empty (got {study!r}, {trial_id!r})"
        )
    if isinstance(rows, pd.DataFrame):
        n = len(rows)
        columns: dict[str, Any] = {str(c): rows[c] for c in rows.columns}
    else:
        rows = list(rows)
        n = len(rows)
        names = dict.fromkeys(k for r in rows for k in r)  # first-seen order, no duplicates
        columns = {k: [r.get(k) for r in rows] for k in names}
    given = list(columns)

    fill = {"schema_version": SCHEMA_VERSION, "study": study, "trial_id": trial_id}
    expected = [f.name for f in schema if f.name not in FILLED]
    optional = set(omissible(kind))
    if n or given:
        missing = [c for c in expected if c not in given and c not in optional]
        extra = [c for c in given if c not in expected and c not in FILLED]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing column(s) {missing}")
            if extra:
                hints = "".join(did_you_mean(c, missing) for c in extra)
                parts.append(f"unexpected column(s) {extra}{hints}")
            raise ValueError(f"{kind} records: {'; '.join(parts)}. Columns: {expected}")
        for name, want in fill.items():
            if name in given:
                got = set(pd.Series(columns[name]).dropna().tolist())
                if got - {want}:
                    raise ValueError(
                        f"{kind} records: column {name!r} holds {sorted(map(str, got))} but "
                        f"{want!r} was given; drop the column or pass the matching value"
                    )

    if n == 0:
        return schema.empty_table()
    arrays = []
    for field in schema:
        if field.name in FILLED:
            values = [fill[field.name]] * n
        else:
            values = columns.get(field.name, [None] * n)  # only omissible ones can be absent
        arrays.append(_column_array(field, values))
    table = pa.Table.from_arrays(arrays, schema=schema)
    _check_values(kind, schema, table)
    return table


ADDED_COLUMNS: dict[str, tuple[str, ...]] = {
    "summary": (
        "n_stages",
        "data.add_bos",
        "method_defaults",
        "data_fingerprint",
        "data_warnings",
    ),
    "curve": ("pad_share",),
    "predictions": ("item",),
}
"""Nullable columns added to a kind within this schema version: a file written before they
existed is read with them null (:func:`with_added_columns`), not refused as damaged."""


def with_added_columns(kind: str, table: pa.Table) -> pa.Table:
    """``table`` with every :data:`ADDED_COLUMNS` column it lacks appended as nulls."""
    schema = schema_for(kind)
    for name in ADDED_COLUMNS.get(kind, ()):
        if name not in table.column_names:
            table = table.append_column(
                schema.field(name), pa.nulls(len(table), type=schema.field(name).type)
            )
    return table


def upgrade(kind: str, table: pa.Table) -> pa.Table:
    """A table written under an earlier schema version in the current one's form (version 2:
    :func:`_from_v2`; a table of another version is returned as it is). Version 1: Other kinds only change their ``schema_version``; a
    summary gets ``tasks`` as a list, provenance null, and the typed settings from its
    ``config_json`` read as the harness reads a stored config (defaults of settings added
    since filled in, the replay weight resolved to the method's default where it was left
    unset). Raises ValueError when a version-1 summary lacks the columns that needs."""
    try:
        versions = {v for v in table.column("schema_version").to_pylist() if v is not None}
    except (KeyError, TypeError, pa.ArrowInvalid):  # validate_table names what is wrong
        return table
    if versions == {2}:
        return _from_v2(kind, table)
    if versions != {1}:
        return table
    at = table.schema.get_field_index("schema_version")
    version = pa.array([SCHEMA_VERSION] * len(table), pa.int32())
    table = table.set_column(at, schema_for(kind).field("schema_version"), version)
    if kind != "summary":
        return table
    missing = [c for c in ("tasks", "config_json", "replay_weight") if c not in table.column_names]
    if missing:
        raise ValueError(f"a schema-version-1 summary without column(s) {missing}: not readable")
    df = table.to_pandas()
    df["tasks"] = [t.split(",") if isinstance(t, str) else t for t in df["tasks"]]
    flat = [
        _v1_settings(text, label)
        for text, label in zip(df["config_json"], df["replay_weight"], strict=True)
    ]
    for name, _kind, _doc in _settings_columns():
        df[name] = [row.get(name) for row in flat]
    for name in PROVENANCE:
        df[name] = None
    schema = schema_for(kind)
    keep = [f for f in schema if f.name in df.columns]
    return pa.Table.from_arrays(
        [_column_array(f, df[f.name]) for f in keep], schema=pa.schema(keep)
    )


def _from_v2(kind: str, table: pa.Table) -> pa.Table:
    """A version-2 table in version 3's form: the summary's bool ``replay.add_bos`` becomes
    the rule it meant ('tokenizer' / 'never'); columns added since are filled in later."""
    at = table.schema.get_field_index("schema_version")
    version = pa.array([SCHEMA_VERSION] * len(table), pa.int32())
    table = table.set_column(at, schema_for(kind).field("schema_version"), version)
    name = "replay.add_bos"
    if kind == "summary" and name in table.column_names:
        col = table.column(name)
        if pa.types.is_boolean(col.type):
            rule = [None if v is None else ("tokenizer" if v else "never") for v in col.to_pylist()]
            i = table.schema.get_field_index(name)
            table = table.set_column(i, schema_for(kind).field(name), pa.array(rule, pa.string()))
    return table


def _settings_columns() -> list[tuple[str, str, str]]:
    from harness.config.flat import settings_columns

    return settings_columns()


def _v1_settings(text: Any, label: Any) -> dict[str, Any]:
    """The typed settings of one version-1 summary row (empty if its config is unreadable)."""
    import json

    from harness.config import ConfigError, from_dict
    from harness.config.flat import flat_settings

    try:
        config = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    weight: float | str | None
    try:
        cfg = from_dict(config)  # legacy keys read in today's form, later defaults filled in
        config = cfg.to_dict()
        weight = cfg.replay.weight
        if weight is None and cfg.replay.method != "none":
            weight = REPLAY.entry(cfg.replay.method).default_weight
    except (ConfigError, ValueError, TypeError):
        weight = label if label == "dynamic" else _number(label)
    return flat_settings(config, weight) if isinstance(config, dict) else {}


def _number(text: Any) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def validate_table(kind: str, table: pa.Table) -> None:
    """Raise ValueError naming the first problem if ``table`` does not match the kind's schema.

    Checks column names (missing/extra), types, null counts in non-nullable columns, allowed
    values and that every row's ``schema_version`` is ``SCHEMA_VERSION``. Column order and
    the Arrow nullability flag are not compared: both are lost by harmless round trips
    (pandas), and the null counts are what matter.
    """
    schema = schema_for(kind)
    names = table.schema.names
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in names if n not in schema.names]
    if missing or extra:
        raise ValueError(f"{kind} table: missing column(s) {missing}, unexpected column(s) {extra}")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} table: duplicate column names in {names}")
    for field in schema:
        got = table.schema.field(field.name).type
        if got != field.type:
            raise ValueError(
                f"{kind} table: column {field.name!r} has type {got}, expected {field.type}"
            )
    versions = pc.unique(table.column("schema_version")).to_pylist()
    if any(v != SCHEMA_VERSION for v in versions):
        raise ValueError(
            f"{kind} table: schema_version {sorted(v for v in versions if v is not None)} "
            f"but this code reads version {SCHEMA_VERSION}"
        )
    _check_values(kind, schema, table.select(schema.names))


def schema_markdown() -> str:
    """Column-by-column documentation of every kind; docs/results-schema.md is exactly this."""
    out = [
        "# Results schema",
        "",
        "<!-- Generated by `python -m results.schema --write` from results/schema.py; "
        "do not edit by hand. -->",
        "",
        f"Schema version: **{SCHEMA_VERSION}**. Layout: "
        "`<out>/study=<study>/<kind>/<trial_id>.parquet`, one file per trial and record kind "
        "(a re-run replaces its file). Trial ids are sanitised for file names; the "
        "`trial_id` column keeps the real id.",
        "",
        "Floats are never null: NaN means not available. Columns marked nullable use null for "
        "'does not apply'.",
        "",
    ]
    for kind, schema in KINDS.items():
        out += [f"## `{kind}`", "", _KIND_DOCS[kind], ""]
        out += ["| column | type | nullable | description |", "|---|---|---|---|"]
        for field in schema:
            doc = (field.metadata or {}).get(b"doc", b"").decode()
            allowed = _allowed(field)
            if allowed:
                doc += " One of: " + ", ".join(f"`{a}`" for a in allowed) + "."
            doc = doc.replace("|", "\\|")
            null = "yes" if field.nullable else "no"
            out.append(f"| `{field.name}` | {field.type} | {null} | {doc} |")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the schema documentation, write it to docs/, or check the committed copy."""
    parser = argparse.ArgumentParser(prog="python -m results.schema", description=main.__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"write {DOCS_PATH}")
    group.add_argument("--check", action="store_true", help="exit 1 if the docs are stale")
    args = parser.parse_args(argv)
    text = schema_markdown()
    if args.write:
        DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
        DOCS_PATH.write_text(text, encoding="utf-8")
        return 0
    if args.check:
        current = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else None
        if current != text:
            print(f"{DOCS_PATH} is stale; run: python -m results.schema --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
