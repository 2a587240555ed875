"""Did-you-mean hints: one cut-off and one wording for every name the project checks.

Config keys and values, command-line options, presets, task orders, label policies, replay
methods and their settings, record kinds and columns all suggest the closest valid name the
same way::

    f"unknown key {key!r}{did_you_mean(key, valid)}"
    # -> "unknown key 'methd' (did you mean 'method'?)"

Standard library only, so that every layer (``results`` included) can use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CUTOFF = 0.6
"""Least difflib similarity ratio (2 * matches / total length) for a suggestion."""


def closest(word: object, options: Iterable[object], *, n: int = 1) -> list[str]:
    """The (up to ``n``) options closest to ``word``, best first: by edit similarity (ratio >=
    :data:`CUTOFF`), else the one option that ``word`` abbreviates ('temp' -> 'temperature');
    empty when nothing is close. Options are compared as strings."""
    word, names = str(word), [str(o) for o in options]
    close = difflib.get_close_matches(word, names, n=n, cutoff=CUTOFF)
    if close:
        return close
    prefixed = [o for o in names if word and o.startswith(word)]
    return prefixed if len(prefixed) == 1 else []


def did_you_mean(word: object, options: Iterable[object], *, n: int = 1) -> str:
    """``" (did you mean 'x'?)"`` (``'x' or 'y'`` for several) for the :func:`closest` options,
    else ``""``: appended right after the offending name."""
    close = closest(word, options, n=n)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
