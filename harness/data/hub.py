"""Hugging Face Hub data sources: ``hf:<dataset>[:<config>][#<split>][@<revision>]``.

One parser for every setting that may name a Hub dataset (``replay.corpus``, ``eval.heldout``,
``eval.probe``). ``@`` names a *revision* (a branch, tag or commit sha), as it does on the
Hub; the split follows ``#``. Examples::

    hf:cerebras/SlimPajama-627B#train
    hf:cerebras/SlimPajama-627B#validation@main
    hf:cais/mmlu:all@main

Everything is checked here without the network (dataset id shape and characters, config,
split and revision names), so a typo fails on the driver in milliseconds rather than in a
trial on a cluster. Whether the dataset, config, split or revision exists is only known
when :func:`datasets.load_dataset` is called with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness.data.paths import DataError

PREFIX = "hf:"
SYNTAX = "hf:<dataset>[:<config>][#<split>][@<revision>]"

_CONFIG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_SPLIT = re.compile(r"\w+(\.\w+)*", re.ASCII)  # the rule datasets applies to split names
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SPLIT_WORDS = frozenset({"train", "validation", "test", "dev", "valid", "eval", "all"})
"""Revisions that are almost certainly a split written in the old ``@<split>`` form."""


def is_hub_source(text: str | None) -> bool:
    """Whether a data setting names a Hub dataset (``hf:...``) rather than a local path."""
    return isinstance(text, str) and text.startswith(PREFIX)


@dataclass(frozen=True)
class HubSource:
    """A parsed ``hf:`` source; None means "not given" (the loader's default applies)."""

    dataset: str
    config: str | None = None
    split: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        text = PREFIX + self.dataset
        text += f":{self.config}" if self.config else ""
        text += f"#{self.split}" if self.split else ""
        return text + (f"@{self.revision}" if self.revision else "")


def parse_hub_source(text: str) -> HubSource:
    """Parse and check ``hf:<dataset>[:<config>][#<split>][@<revision>]`` (no network).

    Raises DataError naming the source, the part that breaks the rule, and the fix. The old
    form ``hf:<dataset>@<split>`` (``@train``, ``@validation``, ``@test``) is refused with a
    message saying ``@`` now names a revision and to write ``#<split>``.
    """
    if not is_hub_source(text):
        raise DataError(f"{text!r} is not a Hub source; Hub sources look like {SYNTAX}")
    body = text.removeprefix(PREFIX)
    body, has_revision, revision = body.partition("@")
    if "#" in revision:
        raise DataError(
            f"Hub source {text!r}: the split ('#...') comes before the revision ('@...'); "
            f"write {SYNTAX}"
        )
    body, has_split, split = body.partition("#")
    dataset, has_config, config = body.partition(":")
    _check_dataset(text, dataset)
    if has_config:
        _check_part(text, "config", config, _CONFIG, "letters, digits, '_', '.', '-'")
    if has_split:
        _check_part(text, "split", split, _SPLIT, "words of letters, digits, '_' joined by '.'")
    if has_revision:
        if not has_split and revision.lower() in _SPLIT_WORDS:
            raise DataError(
                f"Hub source {text!r}: '@{revision}' names a revision (a branch, tag or commit "
                f"of the dataset repository), not a split: the syntax is {SYNTAX}. For the "
                f"{revision!r} split write {PREFIX}{body}#{revision} (and "
                f"{PREFIX}{body}#{revision}@{revision} if a branch really is called {revision!r})"
            )
        _check_revision(text, revision)
    return HubSource(dataset, config or None, split or None, revision or None)


def _check_dataset(text: str, dataset: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    rule = (
        "a Hub dataset id is 'name' or 'owner/name' of ASCII letters, digits, '-', '_', '.' "
        "(at most 96 each, not starting or ending with '-' or '.', no '--' or '..')"
    )
    if not dataset:
        raise DataError(f"Hub source {text!r} names no dataset; {rule}, e.g. hf:cais/mmlu")
    try:
        if not dataset.isascii():
            raise HFValidationError("non-ASCII characters")
        validate_repo_id(dataset)
    except HFValidationError as e:
        raise DataError(
            f"Hub source {text!r}: dataset {dataset!r} is not a valid id; {rule}; the syntax "
            f"is {SYNTAX}"
        ) from e


def _check_part(text: str, what: str, value: str, pattern: re.Pattern[str], allowed: str) -> None:
    if not pattern.fullmatch(value):
        shown = f"{what} {value!r}" if value else f"an empty {what}"
        raise DataError(
            f"Hub source {text!r}: {shown} is not a valid {what} name ({allowed}); "
            f"the syntax is {SYNTAX}"
        )


def _check_revision(text: str, revision: str) -> None:
    bad = (
        not _REVISION.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".", ".lock"))
    )
    if bad:
        shown = f"revision {revision!r}" if revision else "an empty revision"
        raise DataError(
            f"Hub source {text!r}: {shown} is not a branch, tag or commit sha (letters, "
            f"digits, '.', '_', '-', '/'; no '..' or '//'; e.g. main, v1.0, refs/pr/1 or a "
            f"40-hex commit); the syntax is {SYNTAX}"
        )
