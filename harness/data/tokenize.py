"""Tokenisation with a content-addressed on-disk cache.

Every trial of a grid tokenises the same replay and evaluation texts with the same
tokenizer; caching by content (tokenizer state + settings + texts) makes that work happen
once per machine, and can never serve ids from a different tokenizer or text set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.data.paths import DataError

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "gere-tokens-v1"  # bump when the cached layout or semantics change
_BATCH = 1024  # texts per tokenizer call: bounds memory on large corpora


def default_cache_dir() -> Path:
    """``tokens/`` under the cache root (:func:`harness.cache.cache_root`)."""
    from harness.cache import cache_root

    return cache_root() / "tokens"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of everything that decides the ids: the backend pipeline and special tokens.

    Built only from serialised state (never ``hash()`` or object ids), so it is the same in
    every process and on every machine with the same tokenizer files.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = backend.to_str()
    else:  # a pure-Python tokenizer: the vocabulary is the best available summary
        state = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    specials = {
        "class": type(tokenizer).__name__,
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "added": sorted(tokenizer.get_added_vocab().items()),
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
    }
    digest = hashlib.sha256(state.encode("utf-8"))
    digest.update(json.dumps(specials, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def special_prefix(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer itself puts before a text (``tokenizer(text)``), as
    transformers and lm-evaluation-harness (``add_bos_token=None``, its default) use them:
    ``[<|begin_of_text|>]`` for Llama-3, ``[]`` for GPT-2, Qwen or SmolLM2 (whose
    ``bos_token`` is a chat-turn token it never puts before plain text)."""
    probe = "Hello world"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return full[:k]
    raise DataError(
        f"{type(tokenizer).__name__}: tokenizer(text) is not the text's tokens with special "
        f"tokens around them ({full} vs {plain}); set data.add_bos / replay.add_bos to true or "
        "false explicitly"
    )


def bos_ids(tokenizer: Any, add_bos: str | bool | None) -> list[int]:
    """The tokens put before every text: the tokenizer's own rule (``'tokenizer'`` or None,
    :func:`special_prefix`), its BOS token (``'always'`` or True) or nothing (``'never'`` or
    False)."""
    if add_bos in (None, "tokenizer"):
        return special_prefix(tokenizer)
    if add_bos in (False, "never"):
        return []
    if add_bos not in (True, "always"):
        raise DataError(f"add_bos={add_bos!r}; use 'tokenizer', 'always' or 'never'")
    if tokenizer.bos_token_id is None:
        raise DataError(
            f"add_bos='always' but {type(tokenizer).__name__} has no bos_token; use "
            "'tokenizer' (its own rule) or 'never'"
        )
    return [tokenizer.bos_token_id]


def tokenize_cached(
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_length: int,
    add_bos: str | bool | None = None,
    add_eos: bool = False,
    cache_dir: Path | None = None,
) -> list[list[int]]:
    """Token ids per text: [bos] + ids + [eos], truncated to max_length.

    ``add_bos`` (:func:`bos_ids`): ``'tokenizer'``/None (default) puts before every text what
    the tokenizer itself puts there (:func:`special_prefix`: Llama-3's BOS, nothing for
    GPT-2-style tokenizers); ``'always'``/True the tokenizer's BOS token; ``'never'``/False
    nothing. The text's own tokens never include
    special tokens, so every model family gets the same layout. Truncation happens after eos
    is appended, so a cut-off text has no eos: the document did not end there. Results are
    cached in ``<cache_dir>/<key>.npz`` and a repeat call does not touch the tokenizer.
    """
    if max_length < 1:
        raise DataError(f"max_length={max_length}; use a positive number of tokens")
    if not texts:
        return []
    # The tokenizer's own rule is decided by its pipeline, which the fingerprint covers: the
    # key names the rule, so a cache hit never calls the tokenizer.
    fixed = None if add_bos in (None, "tokenizer") else bos_ids(tokenizer, add_bos)
    eos = tokenizer.eos_token_id if add_eos else None
    if add_eos and eos is None:
        raise DataError("add_eos=True but the tokenizer has no eos_token; set one or pass False")
    bos = "tokenizer" if fixed is None else (fixed[0] if fixed else None)
    key = _cache_key(tokenizer_fingerprint(tokenizer), texts, max_length, bos, eos)
    path = (cache_dir if cache_dir is not None else default_cache_dir()) / f"{key}.npz"
    cached = _read_cache(path, len(texts))
    if cached is not None:
        return cached
    prefix = special_prefix(tokenizer) if fixed is None else fixed
    sequences = []
    for start in range(0, len(texts), _BATCH):
        batch = list(texts[start : start + _BATCH])
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for ids in encoded:
            full = prefix + list(ids) + ([eos] if eos is not None else [])
            sequences.append(full[:max_length])
    try:
        _write_cache(path, sequences)
    except OSError as exc:  # a read-only or full cache: the ids are right, only not kept
        if str(path.parent) not in _UNWRITABLE:
            _UNWRITABLE.add(str(path.parent))
            logger.warning(
                "token cache %s cannot be written (%s): tokenising without a cache (every run "
                "tokenises again); set data.cache_dir or $GERE_CACHE_DIR to a writable folder",
                path.parent,
                exc.strerror or exc,
            )
    return sequences


_UNWRITABLE: set[str] = set()
"""Cache folders found unwritable in this process (warned about once each)."""


def _cache_key(
    fingerprint: str,
    texts: Sequence[str],
    max_length: int,
    bos: int | str | None,
    eos: int | None,
) -> str:
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{fingerprint}|{max_length}|{bos}|{eos}".encode())
    for text in texts:  # length-prefixed, so ["ab", "c"] and ["a", "bc"] differ
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _read_cache(path: Path, n_texts: int) -> list[list[int]] | None:
    """The cached ids, or None if absent or unreadable (a broken file is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            ids, offsets = data["ids"], data["offsets"]
        if len(offsets) != n_texts + 1 or offsets[-1] != len(ids):
            raise ValueError(f"{len(offsets) - 1} sequences cached, {n_texts} expected")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("ignoring unreadable token cache %s (%s); recomputing", path, e)
        return None
    logger.debug("token cache hit: %s", path)
    return [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(n_texts)]


def _write_cache(path: Path, sequences: list[list[int]]) -> None:
    """Write atomically (temp file + os.replace) so concurrent trials never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=int(offsets[-1]))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, ids=ids, offsets=offsets)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
