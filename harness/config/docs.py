"""Field documentation (attribute docstrings), for --help and the docs."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterator
from typing import Any, Literal

from harness.config.cl_methods import CL
from harness.config.interventions import INTERVENTIONS
from harness.config.replay_methods import REPLAY
from harness.config.schema import TrialConfig, _hints
from harness.config.values import choices_of, parse_override, parse_typed
from harness.registry import field_docs


def iter_fields(cls: type = TrialConfig, prefix: str = ""):
    """Yield (dotted name, type, default, doc) for every leaf field (``replay.settings`` is one
    leaf; :func:`iter_method_settings` yields the settings it may hold)."""
    hints = _hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, name + ".")
        else:
            yield name, tp, getattr(defaults, f.name), docs.get(f.name, "")


def iter_method_settings() -> Iterator[tuple[str, Any, Any, str]]:
    """Yield (``replay.settings.NAME``, type, default, doc) for every setting of every
    registered replay method, the doc saying which method(s) it belongs to."""
    by_name: dict[str, list[tuple[str, Any]]] = {}
    for method in REPLAY.names():
        for spec in REPLAY.entry(method).spec():
            by_name.setdefault(spec.name, []).append((method, spec))
    for name, owners in by_name.items():
        tp = owners[0][1].type
        if len(owners) == 1:
            method, spec = owners[0]
            doc = f"replay.method={method} only: {spec.doc}"
            default = spec.default
        else:
            doc = "; ".join(f"replay.method={m}: {s.doc}" for m, s in owners)
            default = ", ".join(f"{s.default} ({m})" for m, s in owners)
        yield f"replay.settings.{name}", tp, default, doc


def iter_intervention_settings() -> Iterator[tuple[str, Any, Any, str]]:
    """Yield (``interventions.NAME.SETTING`` / ``cl.NAME.SETTING``, type, default, doc) for
    every setting of every registered plasticity intervention and continual-learning method
    (giving one turns it on)."""
    for section, registry in (("interventions", INTERVENTIONS), ("cl", CL)):
        for name in sorted(registry.names()):
            entry = registry.entry(name)
            specs = entry.spec()
            if not specs:  # a method without settings: --set cl.NAME={} turns it on
                doc = f"{name} ({entry.source}): {entry.summary} Give {{}} to turn it on."
                yield f"{section}.{name}", dict, None, doc
                continue
            for spec in specs:
                doc = f"{name} ({entry.source}; setting any of its options turns it on): {spec.doc}"
                if spec.name in entry.paper_defaults:  # the reference's value differs
                    value = entry.paper_defaults[spec.name]
                    doc += f" Reference value (method_defaults=paper): {value!r}."
                yield f"{section}.{name}.{spec.name}", spec.type, spec.default, doc


_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj|ref|doc):`~?([^`<]+?)(?:\s*<[^>]*>)?`")


def plain_text(text: str) -> str:
    """reStructuredText markup taken out for a terminal: ``x`` -> x, :func:`a.b` -> a.b,
    `x`_ -> x, **x** -> x."""
    text = _ROLE.sub(r"\1", text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    text = re.sub(r"`([^`]+)`_", r"\1", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"\1", text)


def field_help(tp: Any, doc: str) -> str:
    """A field's docstring for --help (plain text), followed by the valid names of a
    registry-backed field and what each one is."""
    doc = plain_text(doc)
    choices = choices_of(tp)
    if choices is None or choices.describe is None:
        return doc
    lines = choices.describe()
    each = " ".join(f"{n} = {lines.get(n, '').rstrip('.') or n}." for n in choices.names())
    return f"{doc} {each}"


def type_label(tp: Any) -> str:
    if (choices := choices_of(tp)) is not None:
        return "{" + ",".join(choices.names()) + "}"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict:
        return "mapping"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in args)
    if origin is Literal:
        return "{" + ",".join(str(a) for a in args) + "}"
    if origin is tuple:
        return f"list[{type_label(args[0])}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def option_types() -> dict[str, Any]:
    """The type of every option's field by dotted name (``train.lr``, ``replay.settings.k``,
    ``cl.ewc.lambda_``): how a command-line value of it is read."""
    fields = [*iter_fields(), *iter_method_settings(), *iter_intervention_settings()]
    return {name: tp for name, tp, _default, _doc in fields}


def read_override(item: str, types: dict[str, Any] | None = None) -> tuple[str, Any]:
    """``--set KEY=VALUE`` read by the type of KEY's field (text stays text, ``None`` unsets,
    numbers checked), or as YAML for a key that is no single field (``cl.lwf={}``)."""
    key, value = parse_override(item)
    types = option_types() if types is None else types
    if key in types:
        value = parse_typed(f"set {key}", item.split("=", 1)[1], types[key])
    return key, value
