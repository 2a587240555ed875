"""One generic registry for the methods (replay methods, interventions, cl methods), lazy.

A method is known by an :class:`Entry`: its name, where its class lives (``"module:Class"``,
imported only when a trial builds it), its settings as a small frozen dataclass whose field
docstrings are the documentation, and the facts the config needs (its source, display order,
reference values, its rules on a trial). The config validates, documents and hashes a method's
settings from the entry alone, so ``--help`` and every config check run without torch and
without importing any method's module (the spirit of lm-eval's ``lm_eval/api/registry.py``;
each family's entries are registered in :mod:`harness.config.replay_methods`,
:mod:`harness.config.interventions` and :mod:`harness.config.cl_methods`, one registration per
method next to its settings dataclass: peft's ``tuners/<method>/config.py``).

Standard library only: this is the floor every other module may stand on.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from harness.suggest import did_you_mean


@dataclass(frozen=True)
class Setting:
    """One setting of a method: a field of its settings dataclass."""

    name: str
    type: Any
    """The annotation, resolved (e.g. ``float``)."""
    default: Any
    """The default value (None where ``required``)."""
    doc: str
    """The docstring written under the field."""
    required: bool = False
    """The field has no default."""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (whitespace joined)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


@functools.cache
def _settings_of(settings: type) -> tuple[Setting, ...]:
    return tuple(_read_settings(settings))


def settings_of(settings: type) -> list[Setting]:
    """The settings a settings dataclass declares, in field order (read from its source once
    per process)."""
    return list(_settings_of(settings))


def _read_settings(settings: type) -> list[Setting]:
    hints = typing.get_type_hints(settings)
    docs = field_docs(settings)
    out = []
    for f in dataclasses.fields(settings):
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if missing else f.default
        out.append(Setting(f.name, hints[f.name], default, docs.get(f.name, ""), missing))
    return out


def coerced(settings: Any) -> None:
    """Called by a settings dataclass's ``__post_init__``: an int given for a float field
    becomes a float, a value given for a bool field a bool (what ``float(x)``/``bool(x)`` in
    the methods' constructors did)."""
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if hints[f.name] is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(settings, f.name, float(value))
        elif hints[f.name] is bool and not isinstance(value, bool):
            object.__setattr__(settings, f.name, bool(value))


@dataclass(frozen=True)
class Entry:
    """What the config knows of one method without importing it."""

    name: str
    """Registry name, used in configs, results and on the command line."""
    target: str
    """``"module:Class"`` of the implementation, imported by :meth:`load`."""
    settings: type
    """Frozen dataclass of the method's settings (defaults, field docs, ``__post_init__``
    raising ValueError that names a bad value)."""
    summary: str = ""
    """One line: what the method is (``--help``)."""
    source: str = ""
    """The paper or code it comes from."""
    order: int = 100
    """Place in listings (then by name)."""
    label: str = ""
    """Its name in tables and figure legends (empty: the name itself)."""
    colour: str = ""
    """Its matplotlib colour in every figure (empty: one picked from its name)."""
    paper_defaults: Mapping[str, Any] = field(default_factory=dict)
    """Settings whose reference value differs from the harness's default
    (``method_defaults: paper`` fills them in where a trial leaves them unset)."""
    rules: Callable[[Any], list[str]] | None = None
    """``rules(cfg) -> problems``: why the method cannot run in this trial ([] if it can)."""
    revision: Callable[[Any], int] | None = None
    """``revision(cfg) -> int``: above 1 where the method computes something else for this
    trial than the code that first derived trial ids did (it then enters the trial id)."""

    def load(self) -> type:
        """The implementing class (imports its module)."""
        module, _, qualname = self.target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj

    def build(self, **settings: Any) -> Any:
        """An instance of the method with these settings."""
        return self.load()(**settings)

    def spec(self) -> list[Setting]:
        """The method's settings, in field order."""
        return settings_of(self.settings)

    def problems(self, cfg: Any) -> list[str]:
        return list(self.rules(cfg)) if self.rules is not None else []

    def revision_for(self, cfg: Any) -> int:
        return self.revision(cfg) if self.revision is not None else 1


E = TypeVar("E", bound=Entry)


class Registry(Generic[E]):
    """Entries by name; ``what`` names the family in errors ('replay method')."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> E:
        """Register ``entry`` (a name no other entry holds)."""
        if not entry.name:
            raise ValueError(f"A {self.what} needs a non-empty name.")
        held = self._entries.get(entry.name)
        if held is not None and held != entry:
            raise ValueError(
                f"{self.what} name {entry.name!r} is taken by {held.target}; pick another "
                f"name for {entry.target}."
            )
        self._entries[entry.name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Take an entry out (tests that register a method of their own)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        """Every name, in display order (then by name)."""
        return sorted(self._entries, key=lambda n: (self._entries[n].order, n))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> E | None:
        return self._entries.get(name)

    def entry(self, name: str) -> E:
        """The entry of ``name``; an unknown name fails with a suggestion and the known ones."""
        if name not in self._entries:
            known = self.names()
            raise ValueError(
                f"Unknown {self.what} {name!r}{did_you_mean(name, known)}. "
                f"Available: {', '.join(known)}"
            )
        return self._entries[name]

    def load(self, name: str) -> type:
        return self.entry(name).load()

    def build(self, name: str, **settings: Any) -> Any:
        """Build a method; an unknown name or setting fails with a suggestion."""
        entry = self.entry(name)
        known = [s.name for s in entry.spec()]
        unknown = [key for key in settings if key not in known]
        if unknown:
            problems = [f"{key!r}{did_you_mean(key, known)}" for key in unknown]
            raise ValueError(
                f"Unknown setting {', '.join(problems)} for {self.what} {name!r}. "
                f"Settings of {name!r}: {', '.join(known) or '(none)'}."
            )
        return entry.build(**settings)


class Configured:
    """Base of a method implementation: built from keyword settings, which its registry
    entry's settings dataclass checks (``__post_init__``) and documents; each setting is
    then an attribute of the method, and :meth:`settings` gives them back."""

    name: str
    """The registry name (class attribute): the entry it is built from."""
    registry: Registry
    """The registry of its family (class attribute of each family's base class)."""

    def __init__(self, **settings: Any) -> None:
        config = type(self).registry.entry(self.name).settings(**settings)
        self.config = config
        for f in dataclasses.fields(config):
            setattr(self, f.name, getattr(config, f.name))

    def settings(self) -> dict[str, Any]:
        """The method's settings, every one (for logging and results)."""
        return {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
