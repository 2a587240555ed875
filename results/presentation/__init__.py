"""Each study's own presentation: ``results/presentation/<study>.py`` holds the tables, figures
and report section that serve that one study, and :func:`for_study` finds it by the study's
stored name (the ``study`` column of its records, the folder ``study=<name>``), never by
guessing from the data. A study without a module of its own gets the generic report only
(:mod:`results.report`); adding a study's presentation is adding its file here.

A presentation module has ``STUDY`` (its study's name, which is also the module's name) and
any of:

* ``table(data) -> DataFrame``: the study's headline table (what its script prints at the
  end) from ``data``, the record kinds as :func:`results.io.read_study` returns them;
* ``prepare(data) -> data``: the study's own labels on its trials, applied to the records
  before the report writes anything (a column every generic table then groups by);
* ``section(w, data) -> None``: the study's report section, written through the report's
  :class:`results.writer.Writer` from the prepared records; it writes nothing when its
  records are absent. ``PLACE`` says where it goes: ``"start"`` (after the title, before the
  generic sections; also when the study has no summary records), ``"results"`` (after the
  main results table) or ``"figures"`` (after the figures of the records, before the
  plasticity diagnostics);
* ``KINDS``: record kinds the study writes itself rather than through its trials; a study
  holding records of one of them has a report even without summary records;
* ``print_table(...)``: prints ``table`` at the end of the study's script, from what the
  script has at hand (its output root, its study directory or its summary records).

Importing this package imports no study module (so no matplotlib): :func:`for_study` imports
one by its name. Presentation modules build on the generic core (``results.analysis``,
``results.plots``, ``results.writer``, ...); the core reaches them only through
:func:`for_study`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["PLACES", "for_study"]

PLACES = ("start", "results", "figures")
"""Where a study's section can go in the report (a module's ``PLACE``), in report order."""


def for_study(name: str) -> ModuleType | None:
    """The presentation module of the study stored as ``name``, or None when it has none."""
    name = str(name)
    if not name.isidentifier() or name.startswith("_"):
        return None  # not a module name: no module of its own
    module_name = f"{__name__}.{name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise  # the module exists but imports something missing: say so
    if getattr(module, "STUDY", None) != name:
        raise ValueError(f"{module_name} declares STUDY = {getattr(module, 'STUDY', None)!r}")
    place = getattr(module, "PLACE", None)
    if hasattr(module, "section") and place not in PLACES:
        raise ValueError(f"{module_name}: PLACE = {place!r} is not one of {PLACES}")
    return module
