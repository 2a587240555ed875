"""Data for the harness: Long-Sequence tasks, general text, the MMLU probe, tokenisation.

Data is read from a data root (``$GERE_DATA_DIR``, ``--data.root`` or ``../shared/data``) or,
for general text and the probe, from the Hub (``hf:<dataset>[:<config>][#<split>][@<revision>]``,
see :mod:`harness.data.hub`); ``python -m harness data prepare long-sequence --dest DIR``
fetches the tasks (:mod:`harness.data.prepare`). Every problem raises :class:`DataError`
with a message naming the file, the rule and the fix.
"""

from harness.data.benchmark import (
    LABEL_POLICIES,
    LONG_SEQUENCE_TASKS,
    ORDERS,
    PROMPT_TEMPLATE,
    Example,
    Task,
    format_prompt,
    load_task,
    resolve_tasks,
    target_text,
    task_dir,
)
from harness.data.general import load_texts, sample_texts
from harness.data.hub import HubSource, is_hub_source, parse_hub_source
from harness.data.mmlu import LETTERS, MCQuestion, format_mc_prompt, load_mc
from harness.data.paths import ENV_VAR, DataError, default_data_root, resolve_data_root
from harness.data.tokenize import (
    bos_ids,
    default_cache_dir,
    special_prefix,
    tokenize_cached,
    tokenizer_fingerprint,
)

__all__ = [
    "ENV_VAR",
    "LABEL_POLICIES",
    "LETTERS",
    "LONG_SEQUENCE_TASKS",
    "ORDERS",
    "PROMPT_TEMPLATE",
    "DataError",
    "Example",
    "HubSource",
    "MCQuestion",
    "Task",
    "default_cache_dir",
    "default_data_root",
    "format_mc_prompt",
    "format_prompt",
    "is_hub_source",
    "load_mc",
    "load_task",
    "load_texts",
    "parse_hub_source",
    "resolve_data_root",
    "resolve_tasks",
    "sample_texts",
    "target_text",
    "task_dir",
    "tokenize_cached",
    "bos_ids",
    "special_prefix",
    "tokenizer_fingerprint",
]
