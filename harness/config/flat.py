"""A trial's settings as flat, typed columns (``model.lora_r``, ``train.lr``, ...): what the
results' summary stores beside ``config_json`` so pandas, DuckDB or polars filter on a setting
without JSON functions, and what a tracker logs as a run's config.

One column per leaf field of :class:`~harness.config.TrialConfig`, typed from its annotation;
free-form mappings (``replay.settings``, ``interventions``, ``cl``) and values of mixed type are
JSON text. A setting that does not apply to the trial is null (NaN for floats): the LoRA
settings under full fine-tuning, the replay settings without replay, the landscape settings
when it is off. ``replay.weight`` is split into a number and ``replay.weight_strategy``.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal

from harness.config.docs import iter_fields

__all__ = ["SKIPPED", "flat_settings", "settings_columns"]

SKIPPED = ("study", "trial_id", "out", "seed")
"""Fields the summary already has as columns of their own (or that are not settings)."""

_NOT_IF_FULL = ("model.lora_r", "model.lora_alpha", "model.lora_dropout")
_NOT_IF_FULL += ("model.lora_target_modules",)
_REPLAY_ONLY = ("replay.corpus", "replay.size", "replay.max_tokens", "replay.add_bos")
_REPLAY_ONLY += ("replay.settings", "replay.per_batch", "replay.weight")


def _kind(tp: Any) -> str:
    """'int', 'float', 'bool', 'str', 'list[str]', 'list[float]', 'list[int]' or 'json'."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _kind(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        kinds = {_kind(a) for a in args}
        if kinds == {"int", "float"}:
            return "float"
        return kinds.pop() if len(kinds) == 1 else "json"
    if origin is Literal:
        kinds = {type(v).__name__ for v in typing.get_args(tp)}
        return "str" if kinds == {"str"} else "json"
    if origin is tuple:
        items = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if len(items) == 1:
            item = _kind(items.pop())
            return f"list[{item}]" if item in ("str", "int", "float") else "json"
        if items <= {int, float}:
            return "list[float]"
        return "json"
    if tp in (int, float, bool, str):
        return tp.__name__
    return "json"


def settings_columns() -> list[tuple[str, str, str]]:
    """(column name, kind, doc) of every settings column, in field order."""
    out = []
    for name, tp, _default, doc in iter_fields():
        if name in SKIPPED:
            continue
        if name == "replay.weight":
            out.append((name, "float", "The replay weight used (a number); null if dynamic."))
            out.append(
                (
                    "replay.weight_strategy",
                    "str",
                    "How the replay weight is set: 'fixed' (replay.weight), 'dynamic' (per "
                    "step, from the losses) or null without replay.",
                )
            )
            continue
        out.append((name, _kind(tp), doc))
    return out


def _plain(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, sort_keys=True)
    if kind.startswith("list["):
        return list(value)
    if kind == "float":
        return float(value)
    return value


def flat_settings(config: dict[str, Any], weight: float | str | None = None) -> dict[str, Any]:
    """The settings columns of one trial from its nested config dict (``cfg.to_dict()`` or a
    stored ``config_json``); a key the dict lacks (written before it existed) is null.
    ``weight``: the replay weight the trial resolved (its method's default when the config
    leaves it unset)."""
    columns = settings_columns()
    out: dict[str, Any] = {}
    for name, kind, _doc in columns:
        if name.startswith("replay.weight"):
            continue  # below: a number and a strategy
        node: Any = config
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[name] = _plain(node, kind)
    method = (config.get("replay") or {}).get("method")
    w = weight if weight is not None else (config.get("replay") or {}).get("weight")
    out["replay.weight"] = float(w) if isinstance(w, int | float) else None
    out["replay.weight_strategy"] = "dynamic" if w == "dynamic" else "fixed"
    if method == "none":
        for name in (*_REPLAY_ONLY, "replay.weight_strategy"):
            out[name] = None
    if (config.get("model") or {}).get("tuning") != "lora":
        for name in _NOT_IF_FULL:
            out[name] = None
    if not (config.get("landscape") or {}).get("enabled"):
        for name in [c[0] for c in columns]:
            if name.startswith("landscape.") and name != "landscape.enabled":
                out[name] = None
    return out
