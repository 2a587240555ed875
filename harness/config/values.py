"""How one value of a config is checked against its field's type, and how a command-line
value is read by that type: the floor the config's dataclasses (:mod:`.schema`), their
validation (:mod:`.validate`) and the command line stand on."""

from __future__ import annotations

import datetime
import json
import math
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import yaml

from harness.config.errors import ConfigError
from harness.suggest import did_you_mean


@dataclass(frozen=True)
class Choices:
    """Marks a ``str`` field whose valid values come from a registry rather than a Literal:
    ``Annotated[str, Choices(names)]``. ``names()`` is called when a value is checked or the
    help is printed, so the registry is imported only then."""

    names: Callable[[], Sequence[str]]
    describe: Callable[[], dict[str, str]] | None = None
    """One line per name, for --help."""


def choices_of(tp: Any) -> Choices | None:
    """The :class:`Choices` of an ``Annotated[str, Choices(...)]`` type, else None."""
    if typing.get_origin(tp) is Annotated:
        return next((m for m in tp.__metadata__ if isinstance(m, Choices)), None)
    return None


def _check_value(path: str, value: Any, tp: Any, problems: list[str]) -> Any:
    """Coerce ``value`` to type ``tp`` or record a problem; returns the coerced value."""
    if (choices := choices_of(tp)) is not None:
        names = list(choices.names())
        if isinstance(value, str) and value in names:
            return value
        problems.append(
            f"{path}: {value!r} is not one of {', '.join(map(repr, names))}"
            f"{did_you_mean(value, names)}"
        )
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            problems.append(f"{path}: expected a mapping of names to values, got {value!r}")
            return value
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errs: list[str] = []
        for a in args:
            if a is type(None):
                continue
            sub: list[str] = []
            v = _check_value(path, value, a, sub)
            if not sub:
                return v
            if any("finite" in e for e in sub):  # a number, but nan or inf: say that
                problems.extend(sub)
                return value
            errs.extend(sub)
        allowed = " or ".join(_type_name(a) for a in args if a is not type(None))
        words = [
            str(w) for a in args if typing.get_origin(a) is Literal for w in typing.get_args(a)
        ]
        hint = did_you_mean(value, words) if words else ""
        if str in args and isinstance(value, (bool, int, float, datetime.date)):
            problems.append(f"{path}: expected a string, got {_as_yaml_read(value)}")
            return value
        problems.append(f"{path}: {value!r} is not {allowed}{hint}")
        return value
    if origin is Literal:
        if value in args:
            return value
        hint = did_you_mean(value, args)
        problems.append(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}{hint}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        if not isinstance(value, (list, tuple)):
            problems.append(f"{path}: expected a list, got {value!r}")
            return value
        return tuple(
            _check_value(f"{path}[{i}]", v, args[0], problems) for i, v in enumerate(value)
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        problems.append(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        number = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str):
            try:
                number = int(value)
            except ValueError:
                pass
        if number is None:
            problems.append(f"{path}: expected an integer, got {value!r}")
            return value
        if not -(2**63) <= number < 2**63:
            problems.append(
                f"{path}: {number} is beyond a 64-bit integer (|v| < 2**63, what Parquet and "
                "torch store); give a smaller number"
            )
        return number
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            problems.append(f"{path}: expected a number, got {value!r}")
            return value
        if not math.isfinite(number):
            # Every range rule is written `v <= 0`, which NaN never satisfies: refuse here.
            problems.append(f"{path}: {value!r} must be a finite number (not nan or inf)")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{path}: expected a string, got {_as_yaml_read(value)}")
        return value
    return value


def _as_yaml_read(value: Any) -> str:
    """What a YAML file made of a value meant as text, and the fix (quote it)."""
    kind = {bool: "true/false", int: "a number", float: "a number"}.get(type(value))
    if isinstance(value, datetime.date):
        kind, text = "a date", value.isoformat()
    else:
        text = json.dumps(value) if kind else None
    if kind is None:
        return repr(value)
    return (
        f"{value!r}: YAML reads {text} as {kind}; quote it to keep it text, e.g. "
        f"'{text}' in a config file (on the command line it is text already)"
    )


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def parse_override(item: str) -> tuple[str, Any]:
    """'train.lr=1e-4' -> ('train.lr', 1e-4); values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError([f"override {item!r}: expected KEY=VALUE, e.g. train.lr=1e-4"])
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


NONE_WORDS = ("None", "none", "null", "Null", "NULL", "~")
"""How a command line says 'unset' for a setting that may be unset (``--help`` shows None)."""


def parse_typed(key: str, raw: str, tp: Any) -> Any:
    """A command-line value read by the type of its field ``tp``, not as YAML: text stays
    text whole (``--trial_id 2024-12-04``, ``--study 1e3``), ``None``/``null`` unsets a
    setting that may be unset, lists are comma-separated, numbers are checked against their
    type. Mappings (``--set cl.lwf={}``) and untyped keys are read as YAML. Raises
    ConfigError naming the option, the value and the form it takes."""
    try:
        return _parse_as(raw, tp)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError([f"--{key}: {raw!r} is not valid YAML ({first})"]) from None
    except ValueError as exc:
        raise ConfigError([f"--{key}: {raw!r} {exc}"]) from None


def _parse_as(raw: str, tp: Any) -> Any:
    if choices_of(tp) is not None:
        return raw.strip()
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return _parse_as(raw, args[0])
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.strip() in (*NONE_WORDS, ""):
            return None
        members = [a for a in args if a is not type(None)]
        # Numbers and words of a choice before free text: `--replay.weight 0.5` is a number.
        members.sort(key=lambda a: a is str)
        reasons = []
        for a in members:
            try:
                return _parse_as(raw, a)
            except ValueError as exc:
                reasons.append(str(exc))
        unset = "; or None to unset it" if type(None) in args else ""
        raise ValueError(" and ".join(dict.fromkeys(reasons)) + unset)
    if origin is Literal:
        text = raw.strip()
        for a in args:
            if str(a) == text or (isinstance(a, str) and a.lower() == text.lower()):
                return a
        raise ValueError(f"is not one of {', '.join(map(str, args))}{did_you_mean(text, args)}")
    if origin is tuple:
        text = raw.strip()
        if text.startswith("["):
            value = yaml.safe_load(text)
            if not isinstance(value, list):
                raise ValueError("is not a list: give a,b,c or [a, b, c]")
            items = [str(v) for v in value]
        else:
            items = [v.strip() for v in text.split(",") if v.strip()]
        return tuple(_parse_as(v, args[0]) for v in items)
    if origin is dict or tp is dict:
        value = yaml.safe_load(raw) if raw.strip() else {}
        if value is not None and not isinstance(value, dict):
            raise ValueError("is not a mapping: give e.g. {} or {name: value}")
        return value
    if tp is bool:
        low = raw.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ValueError("is not true or false (also yes/no, on/off, 1/0)")
    if tp is int:
        text = raw.strip().replace("_", "")
        try:
            number = int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise ValueError("is not an integer (e.g. 8, 1000 or 1e3)") from None
            if not as_float.is_integer():
                raise ValueError("is not an integer (e.g. 8, 1000 or 1e3)") from None
            number = int(as_float)
        if not -(2**63) <= number < 2**63:
            raise ValueError("is beyond a 64-bit integer (|v| < 2**63); give a smaller number")
        return number
    if tp is float:
        try:
            return float(raw.strip().replace("_", ""))
        except ValueError:
            raise ValueError("is not a number (e.g. 0.5, 1e-4)") from None
    if tp is str:
        return raw
    return yaml.safe_load(raw) if raw != "" else None
