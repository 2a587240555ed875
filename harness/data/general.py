"""General-domain text: the replay buffer (GeRe samples 1,000 SlimPajama texts) and the
held-out set for general perplexity.

Local files use SlimPajama's jsonl form (``{"text": ..., "meta": {...}}`` per line); on a
cluster the same texts can be streamed from the Hugging Face Hub with
``hf:<dataset>[:<config>][#<split>][@<revision>]`` (see harness/data/hub.py), e.g.
``hf:cerebras/SlimPajama-627B#train``.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from harness.data.hub import HubSource, is_hub_source, parse_hub_source
from harness.data.paths import DataError, read_text, resolve_source_path

logger = logging.getLogger(__name__)

HF_SHUFFLE_BUFFER = 10_000
"""Texts held in the streaming shuffle buffer for ``hf:`` sources (see load_texts)."""


def load_texts(
    source: str, root: Path | None, *, max_texts: int | None = None, seed: int = 0
) -> list[str]:
    """Load non-empty texts from a jsonl file or a Hub dataset.

    source: a jsonl path (absolute or relative to ``root``, e.g. ``"general/train.jsonl"``),
    or ``"hf:<dataset>[:<config>][#<split>][@<revision>]"`` (split defaults to ``train``,
    revision to the dataset's default branch).

    max_texts caps the result with a seeded sample (original order kept); asking for more
    than the file holds returns everything with a warning. A Hub dataset is streamed, so
    there max_texts is required and the sample is the first max_texts texts of a seeded
    shuffle with a buffer of HF_SHUFFLE_BUFFER: close to, but not exactly, uniform over a
    corpus as large as SlimPajama-627B, and far cheaper than reading it all.
    """
    if max_texts is not None and max_texts < 1:
        raise DataError(f"max_texts={max_texts}; use a positive number or None for all texts")
    if is_hub_source(source):
        return _load_hub_texts(check_hub_texts(source, max_texts), max_texts, seed)
    path = resolve_source_path(source, root, what="text file")
    texts = _read_jsonl(path)
    if max_texts is None or max_texts >= len(texts):
        if max_texts is not None and max_texts > len(texts):
            logger.warning(
                "%s holds %d texts, fewer than max_texts=%d; using all", path, len(texts), max_texts
            )
        return texts
    return sample_texts(texts, max_texts, seed)


def _read_jsonl(path: Path) -> list[str]:
    """Read the ``text`` field of every line; malformed lines are errors, not skipped."""
    if not path.is_file():
        raise DataError(f"{path} is not a file; expected a jsonl file with a 'text' per line")
    texts, empty = [], 0
    lines = read_text(path).splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f"{path}:{lineno}: invalid JSON ({e.msg}); each line must be one object "
                f'like {{"text": "...", "meta": {{...}}}}'
            ) from e
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{lineno}: expected an object with a string 'text' field; "
                f"got {str(record)[:80]!r}"
            )
        if text.strip():
            texts.append(text)
        else:
            empty += 1
    if empty:
        logger.info("%s: skipped %d empty texts", path, empty)
    if not texts:
        raise DataError(f"{path} holds no non-empty texts")
    return texts


def check_hub_texts(source: str, max_texts: int | None) -> HubSource:
    """Parse a Hub text source and check it can be streamed as asked (no network)."""
    hub = parse_hub_source(source)
    if max_texts is None:
        raise DataError(
            f"source {source!r}: Hub sources need max_texts (the corpus is streamed, not "
            f"downloaded); e.g. load_texts('hf:cerebras/SlimPajama-627B#train', None, "
            f"max_texts=1000), or set eval.heldout_max_texts for a held-out Hub source"
        )
    return hub


def _load_hub_texts(hub: HubSource, max_texts: int, seed: int) -> list[str]:
    """Stream the source's split (``train`` by default) and take the ``text`` field."""
    source = str(hub)
    import datasets  # deferred: importing datasets is slow and only Hub sources need it

    try:
        stream = datasets.load_dataset(
            hub.dataset,
            hub.config,
            split=hub.split or "train",
            revision=hub.revision,
            streaming=True,
        )
        stream = stream.shuffle(seed=seed, buffer_size=HF_SHUFFLE_BUFFER)
        texts = []
        for record in stream:
            if isinstance(record.get("text"), str) and record["text"].strip():
                texts.append(record["text"])
            if len(texts) == max_texts:
                break
    except Exception as e:  # network, auth and missing-dataset errors all look different
        raise DataError(
            f"could not stream {source!r} from the Hugging Face Hub ({type(e).__name__}: {e}); "
            f"offline machines need a local jsonl path instead (e.g. 'general/train.jsonl')"
        ) from e
    if len(texts) < max_texts:
        logger.warning(
            "%s yielded %d texts, fewer than max_texts=%d", source, len(texts), max_texts
        )
    return texts


def sample_texts(texts: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of ``n`` texts without replacement, in their original order.

    Asking for more than there are is an error: a replay buffer that is silently smaller
    than configured would change the experiment.
    """
    if n < 0 or n > len(texts):
        raise DataError(
            f"cannot sample {n} texts from {len(texts)}; ask for between 0 and {len(texts)}"
        )
    keep = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in keep]
