"""The stored-results ledger: what the results under ``out`` already say about a trial id --
whether results can be written there at all, whether a stored trial counts as completed (the
same settings, every record agreeing with its summary), whether it holds other settings or
results computed on other data. ``harness run``, a trial and a study ask the same questions
here, so they answer them alike.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.config import ConfigError, TrialConfig, computed_settings, from_dict
from results import storage
from results.io import NewerResultsError, read_records, read_trial_rows, study_dir, trial_problems

log = logging.getLogger("harness.trial")


def check_output(cfg: TrialConfig) -> None:
    """ConfigError unless results can be written under ``cfg.out`` (tried with a temp file; on
    an object store, one small object written and deleted)."""
    if storage.is_uri(cfg.out):
        problem = storage.check_writable(cfg.out, "out:")
        if problem:
            raise ConfigError([problem])
        return
    out = Path(storage.location(cfg.out)).expanduser()  # file:///x is the local /x
    where = f"out: {cfg.out!r}"
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(
            [f"{where} {existing} is a file, not a directory; pick a directory for results"]
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-check-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            [f"{where} cannot be written ({exc.strerror or exc}); pick a writable directory"]
        ) from None


def comparable_settings(config: dict) -> dict:
    """The computed settings of a (possibly older) stored config, defaults filled in: two
    configs compute the same trial when these are equal."""
    try:
        config = from_dict(config).to_dict()
    except ConfigError:
        pass  # compared as stored
    return computed_settings(config)


def stored_summary(cfg: TrialConfig) -> dict | None:
    """This trial's stored summary row, or None; raises if its file is damaged."""
    rows = read_trial_rows(cfg.out, "summary", study=cfg.study, trial_id=cfg.id)
    return rows[0] if rows else None


def settings_conflict(cfg: TrialConfig, stored: dict | None) -> str | None:
    """A message if the summary ``stored`` under this trial's id comes from other settings
    (two configs sharing an id would silently replace each other's rows), else None."""
    if not stored or not stored.get("config_json"):
        return None
    theirs = comparable_settings(json.loads(stored["config_json"]))
    mine = comparable_settings(cfg.to_dict())
    if theirs == mine:
        return None
    diff = sorted(_diff(theirs, mine))
    shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
    return (
        f"trial_id: {cfg.id!r} in study {cfg.study!r} under {cfg.out!r} holds results of "
        f"other settings ({shown}); give this trial another trial_id, study or out, or pass "
        "--overwrite to replace them"
    )


def stored_summary_or_none(cfg: TrialConfig) -> dict | None:
    """This trial's stored summary, or None if there is none or it cannot be read."""
    try:
        return stored_summary(cfg)
    except (OSError, ValueError):
        return None


def stored_fingerprint(stored: dict | None) -> str | None:
    """The data fingerprint of a stored summary row; None if it has none (written before
    fingerprints, or read back by pandas as NaN)."""
    value = (stored or {}).get("data_fingerprint")
    return value if isinstance(value, str) and value else None


def data_changed(cfg: TrialConfig, stored: dict | None, fingerprint: str | None) -> str | None:
    """A message if the results ``stored`` under this trial's id were computed on other data
    than ``fingerprint`` (a task file, the probe, the held-out texts or the replay corpus changed
    since), else None (also when either side has no fingerprint: written before it existed)."""
    theirs = stored_fingerprint(stored)
    if theirs is None or not fingerprint or theirs == fingerprint:
        return None
    return (
        f"trial {cfg.id!r} in study {cfg.study!r} under {cfg.out!r} holds results computed on "
        f"other data (data fingerprint {theirs}, now {fingerprint}: a task file, the probe, the "
        "held-out texts or the replay corpus changed since); restore that data, or pass --rerun "
        "to replace them with a run on the current data, or give another study or out"
    )


def stored_conflict(cfg: TrialConfig) -> str | None:
    """:func:`settings_conflict` with this trial's stored summary (none if it is damaged:
    the trial is then re-run and its files replaced)."""
    try:
        return settings_conflict(cfg, stored_summary(cfg))
    except NewerResultsError as exc:
        return str(exc)
    except (OSError, ValueError):
        return None


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        return out
    return [] if a == b else [f"{path} stored {a!r}, now {b!r}"]


def stored_stages(summary: dict) -> int:
    """The stages a stored summary trained: ``n_stages``, or ``n_tasks`` in summaries written
    before it existed (absent, or NaN when read beside newer ones)."""
    n_stages = summary.get("n_stages")
    return int(summary["n_tasks"] if n_stages is None or n_stages != n_stages else n_stages)


def completion_problems(cfg: TrialConfig, summary: dict, kinds: Sequence[str]) -> list[str]:
    """Why a trial whose stored summary says 'completed' is not complete ([] if it is): a
    file of its record ``kinds`` missing or unreadable, or fewer stages than tasks + 1 in its
    accuracy or general records. A study re-runs such a trial instead of skipping it."""
    problems = trial_problems(cfg.out, study=cfg.study, trial_id=cfg.id, kinds=kinds)
    if problems:
        return problems
    want = set(range(stored_stages(summary) + 1))
    for kind in ("accuracy", "general"):
        if kind not in kinds:
            continue
        rows = read_trial_rows(cfg.out, kind, study=cfg.study, trial_id=cfg.id)
        have = {r["stage"] for r in rows}
        if have != want:
            problems.append(
                f"{kind}: stages {sorted(have)} stored, the summary's {len(want) - 1} stages "
                f"need stages 0-{len(want) - 1}"
            )
    return problems


def counts_as_completed(cfg: TrialConfig, stored: dict | None, kinds: Sequence[str]) -> bool:
    """Whether the stored summary ``stored`` shows this trial done: status 'completed', the
    same settings, and every record agreeing with it (logging why a 'completed' does not
    count; the trial is then run again)."""
    if not stored or stored["status"] != "completed":
        return False
    if comparable_settings(json.loads(stored["config_json"])) != comparable_settings(cfg.to_dict()):
        log.warning("trial %s completed earlier with other settings: running it again", cfg.id)
        return False
    problems = completion_problems(cfg, stored, kinds)
    if problems:
        log.warning(
            "trial %s: summary says completed, but %s: running it again",
            cfg.id,
            "; ".join(problems),
        )
        return False
    return True


def stored_completed(cfg: TrialConfig, kinds: Sequence[str]) -> dict | None:
    """The stored summary if this trial :func:`counts_as_completed`, else None."""
    try:
        stored = stored_summary(cfg)
    except NewerResultsError as exc:
        raise ConfigError([str(exc)]) from None
    except (OSError, ValueError) as exc:
        log.warning("trial %s: its summary cannot be read (%s): running it again", cfg.id, exc)
        return None
    return stored if counts_as_completed(cfg, stored, kinds) else None


def stored_summaries(out: str | Path, study: str) -> dict[str, dict]:
    """Every stored summary of the study (any status), by trial id; a damaged summary file is
    logged and left out (its trial is then run again)."""
    path = study_dir(out, study)
    if not storage.is_dir(storage.join(path, "summary")):
        return {}
    summary = read_records(path, "summary", skip_damaged=True)
    return {row["trial_id"]: row for row in summary.to_dict("records")}


def completed_trials(out: str | Path, study: str) -> dict[str, dict]:
    """Summaries of the study's trials that say 'completed', by trial id."""
    stored = stored_summaries(out, study)
    return {k: v for k, v in stored.items() if v["status"] == "completed"}
