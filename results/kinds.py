"""Every record kind's Arrow schema, each column documented: the registry of kinds
(:data:`KINDS`, :func:`schema_for`). Each kind is stored in its own directory,
``<out>/study=<study>/<kind>/<trial_id>.parquet``."""

from __future__ import annotations

import pyarrow as pa

from harness.metrics import METRICS
from harness.suggest import did_you_mean
from results.fields import (
    SCHEMA_VERSION,
    _common,
    _f,
    _metric_doc,
    _provenance_fields,
    _settings_fields,
    _stage_fields,
)

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
        _f(
            "model",
            pa.string(),
            "The starting model's stable id, the same on every machine: a preset's name, a "
            "Hub id ('<hub id>@<revision>' where one is pinned), or "
            "'local:<dir name>@<content hash>' (harness.models.model_identity). Files written "
            "before 2026-12-05 hold the configured name or local path here (the same for "
            "presets and Hub ids).",
        ),
        _f(
            "model_path",
            pa.string(),
            "Where this machine read the starting model from (a local directory); null for "
            "'tiny' and Hub ids, and in files written before it existed.",
            nullable=True,
        ),
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
            "Evaluated task's name, 'probe:<probe>' for the general-ability probe, or "
            "'lm_eval:<task>' for a document of an lm-eval task (eval.lm_eval_tasks).",
        ),
        _f(
            "example",
            pa.int64(),
            "Index of the example in the trial's (seeded) test sample; lm-eval's doc_id for "
            "an lm-eval task.",
        ),
        _f(
            "item",
            pa.string(),
            "Which source item it was, to join with other tools' per-sample logs: "
            "'<task>/<index>' (0-based index into the task's test.json Instances), for an "
            "MMLU-style probe '<subject>/<row>' (0-based index of the question in the "
            "subject's test file, header row excluded; in the Hub dataset, among that "
            "subject's rows), for an lm-eval task '<task>/<doc_id>'. Null in files written "
            "before it existed.",
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
            "(or the probe's choices, or the lm-eval document's requests: its choices, or one "
            "continuation or whole text); null when the answer was generated.",
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
            "How the example was scored (see accuracy.scoring); 'lm_eval': by an lm-eval "
            "task's own metric ('correct': its arg-max choice is the target, or for a "
            "one-continuation task the continuation is the greedy one).",
            allowed=("loglik", "exact_match", "generate", "lm_eval"),
        ),
    ]
)

_LM_EVAL = pa.schema(
    [
        *_common(),
        *_stage_fields(),
        _f(
            "task",
            pa.string(),
            "lm-eval task or group name (eval.lm_eval_tasks, or a subtask of a group).",
        ),
        _f(
            "metric", pa.string(), "lm-eval metric name, e.g. 'acc', 'acc_norm', 'word_perplexity'."
        ),
        _f("filter", pa.string(), "lm-eval filter the metric was computed after ('none' mostly)."),
        _f("value", pa.float64(), "The metric as lm-eval computes and aggregates it."),
        _f(
            "stderr", pa.float64(), "lm-eval's standard error of the metric; NaN where it has none."
        ),
        _f(
            "n_samples",
            pa.int64(),
            "Documents scored (lm-eval's n-samples 'effective'); null for a group.",
            nullable=True,
        ),
        _f(
            "num_fewshot",
            pa.int64(),
            "Few-shot examples in each prompt; null for a group.",
            nullable=True,
        ),
        _f("is_group", pa.bool_(), "Whether the row is a group's aggregate over its subtasks."),
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
    "lm_eval": "General ability from lm-evaluation-harness tasks (eval.lm_eval_tasks): one row "
    "per (stage, task or group, metric, filter), as lm-eval computes it.",
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
        "lm_eval": _LM_EVAL,
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
