"""Every input of a trial: loaded and checked as text, then tokenised (cached by content).

:func:`load_data` reads and validates everything a trial needs before any model is built (an
unknown task, a malformed file or a replay buffer larger than its corpus fails here);
:func:`tokenize_inputs` turns it into token ids for one tokenizer; :func:`preflight` runs the
checks for a whole grid on the driver.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from harness.config import ConfigError, TrialConfig
from harness.core import TokenizedExample
from harness.data import (
    LONG_SEQUENCE_TASKS,
    DataError,
    MCQuestion,
    Task,
    bos_ids,
    format_mc_prompt,
    format_prompt,
    load_mc,
    load_task,
    load_texts,
    resolve_data_root,
    resolve_tasks,
    sample_texts,
    target_text,
    tokenize_cached,
)
from harness.data.benchmark import named_tasks
from harness.data.general import check_hub_texts
from harness.data.hub import is_hub_source
from harness.data.mmlu import LETTERS, check_hub_mc, format_lm_eval_prompt
from harness.data.release import how_to_get
from harness.replay import ReplayBuffer

log = logging.getLogger(__name__)


@dataclass
class TrialData:
    """Every input of a trial, loaded and validated (text, not yet tokenised)."""

    root: Path | None
    tasks: list[Task]
    dropped_tasks: tuple[str, ...]
    probe: list[MCQuestion]
    shots: dict[str, list[MCQuestion]]
    heldout: list[str]
    replay: list[str]
    fingerprint: str = ""
    """A content hash of everything above as the trial uses it (:func:`data_fingerprint`)."""
    warnings: tuple[str, ...] = ()
    """What makes a measurement doubtful without making it wrong (stored in the summary)."""


def load_data(cfg: TrialConfig, *, hub: bool = True) -> TrialData:
    """Load and check every input the trial needs; raises DataError before expensive work.

    ``hub=False`` (what :func:`preflight` does on the driver): Hub sources (``hf:...``) are
    parsed and checked without the network but not loaded, so their parts of the result are
    empty; everything local is loaded and checked as usual.
    """
    root = _data_root(cfg)
    names, dropped = resolve_tasks(
        cfg.data.tasks, root, restrict_to_available=cfg.data.restrict_to_available
    )
    if dropped:
        log.warning("tasks not in %s, dropped from the order: %s", root, ", ".join(dropped))
    tasks = [
        load_task(
            root,
            name,
            label_policy=cfg.data.label_policy,
            max_train=cfg.data.max_train_per_task,
            max_test=cfg.data.max_test_per_task,
            seed=cfg.seed,
        )
        for name in names
    ]
    for t in tasks:
        for note in t.notes:  # caps are routine; dropped or relabelled instances are not
            log.log(logging.INFO if "subsampled" in note else logging.WARNING, "%s", note)
    probe: list[MCQuestion] = []
    shots: dict[str, list[MCQuestion]] = {}
    if cfg.eval.probe and not hub and is_hub_source(cfg.eval.probe):
        check_hub_mc(cfg.eval.probe)
    elif cfg.eval.probe:
        probe = load_mc(
            cfg.eval.probe, root, max_questions=cfg.eval.probe_max_questions, seed=cfg.seed
        )
        if cfg.eval.probe_shots:
            for q in load_mc(cfg.eval.probe, root, split="dev"):
                shots.setdefault(q.subject, []).append(q)
    heldout: list[str] = []
    if cfg.eval.heldout and not hub and is_hub_source(cfg.eval.heldout):
        check_hub_texts(cfg.eval.heldout, cfg.eval.heldout_max_texts)
    elif cfg.eval.heldout:
        heldout = load_texts(
            cfg.eval.heldout, root, max_texts=cfg.eval.heldout_max_texts, seed=cfg.seed
        )
    replay: list[str] = []
    if cfg.replay.method != "none":
        # A Hub corpus is streamed, so only a few times the buffer size is read before sampling.
        on_hub = is_hub_source(cfg.replay.corpus)
        cap = 4 * cfg.replay.size if on_hub else None
        if on_hub and not hub:
            check_hub_texts(cfg.replay.corpus, cap)
        else:
            texts = load_texts(cfg.replay.corpus, root, max_texts=cap, seed=cfg.seed)
            replay = sample_texts(texts, cfg.replay.size, cfg.seed)
    data = TrialData(root, tasks, dropped, probe, shots, heldout, replay)
    data.warnings = tuple(_measurement_problems(cfg, data))
    for w in data.warnings:
        log.warning("%s", w)
    data.fingerprint = data_fingerprint(cfg, data)
    return data


def data_fingerprint(cfg: TrialConfig, data: TrialData) -> str:
    """A short content hash of the data a trial runs on: every task's definition, labels and
    instances as loaded (after caps and label policy), the probe questions and shots, the
    held-out texts and the replay buffer. A Hub source counts by its name and revision
    (``hf:...``), so the driver, which does not download it, gets the same hash as the trial.
    Stored in the summary (``data_fingerprint``) and in checkpoints: a trial whose data changed
    is neither resumed nor taken as completed."""
    h = hashlib.sha256()

    def put(obj: object) -> None:
        h.update(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode())
        h.update(b"\0")

    for t in data.tasks:
        rows = [[[e.input, e.output] for e in split] for split in (t.train, t.test)]
        put([t.name, t.definition, list(t.labels), rows])
    parts = (
        ("probe", cfg.eval.probe, [dataclasses.astuple(q) for q in data.probe]),
        (
            "shots",
            cfg.eval.probe if cfg.eval.probe_shots else None,
            {k: [dataclasses.astuple(q) for q in v] for k, v in data.shots.items()},
        ),
        ("heldout", cfg.eval.heldout, data.heldout),
        ("replay", cfg.replay.corpus if cfg.replay.method != "none" else None, data.replay),
    )
    for name, source, content in parts:
        put([name, source if is_hub_source(source) else content])
    return h.hexdigest()[:16]


def _measurement_problems(cfg: TrialConfig, data: TrialData) -> list[str]:
    """DataError for data that makes a measurement meaningless (a task with one label, more
    few-shot examples asked than the dev split has, held-out perplexity on the replay corpus);
    the warnings for data that makes it doubtful (duplicated test instances, test instances
    copied from the training set, a test set of one label)."""
    warnings: list[str] = []
    for t in data.tasks:
        if len(t.labels) < 2:
            raise DataError(
                f"task {t.name!r}: one label only ({list(t.labels)}): a model that always "
                "answers it scores 1.000 at every stage and inflates AP; check the task's "
                "labels.json and its instances' outputs, or leave the task out of data.tasks"
            )
        inputs = [e.input for e in t.test]
        dupes = len(inputs) - len(set(inputs))
        if dupes:
            warnings.append(
                f"task {t.name!r}: {dupes} of {len(inputs)} test instances repeat an input "
                "(they count more than once in its accuracy)"
            )
        copied = len(set(inputs) & {e.input for e in t.train})
        if copied:
            warnings.append(
                f"task {t.name!r}: {copied} test inputs are also training inputs (accuracy on "
                "them measures memorisation)"
            )
        golds = {e.output for e in t.test}
        if len(golds) == 1 and len(t.test) > 1:
            warnings.append(
                f"task {t.name!r}: every one of its {len(t.test)} test instances has the label "
                f"{golds.pop()!r} (a constant answer scores 1.000)"
            )
    shots = cfg.eval.probe_shots
    if shots and data.probe:
        have = {s: len(data.shots.get(s, [])) for s in sorted({q.subject for q in data.probe})}
        short = {s: n for s, n in have.items() if n < shots}
        if short:
            shown = ", ".join(f"{s} ({n})" for s, n in list(short.items())[:5])
            more = f" and {len(short) - 5} more" if len(short) > 5 else ""
            raise DataError(
                f"eval.probe_shots: {shots} few-shot examples asked, but the dev split of "
                f"{cfg.eval.probe!r} has fewer for {len(short)} of {len(have)} subjects: "
                f"{shown}{more}; use at most {min(have.values())} shots (MMLU's dev split has "
                "5 per subject) or add dev questions"
            )
    if cfg.replay.method != "none" and data.heldout and data.replay:
        same = _same_file(cfg.eval.heldout, cfg.replay.corpus, data.root)
        if same:
            raise DataError(
                f"eval.heldout and replay.corpus are the same file ({same}): held-out "
                "perplexity would be measured on texts the model replays; give a held-out "
                "file disjoint from the corpus (e.g. general/heldout.jsonl)"
            )
        shared = len(set(data.heldout) & set(data.replay))
        if shared:
            warnings.append(
                f"eval.heldout: {shared} of its {len(data.heldout)} texts are in the replay "
                "buffer (their perplexity is not held out)"
            )
    return warnings


def _same_file(a: str | None, b: str | None, root: Path | None) -> Path | None:
    if not a or not b or is_hub_source(a) or is_hub_source(b):
        return None
    pa, pb = (Path(x).expanduser() for x in (a, b))
    pa, pb = (p if p.is_absolute() or root is None else root / p for p in (pa, pb))
    try:
        return pa if pa.exists() and pb.exists() and pa.samefile(pb) else None
    except OSError:
        return None


def _data_root(cfg: TrialConfig) -> Path:
    """The trial's data root; if there is none, the error also says which tasks it needs and
    where they come from."""
    try:
        return resolve_data_root(cfg.data.root)
    except DataError as exc:
        names = named_tasks(cfg.data.tasks)
        if not any(n in LONG_SEQUENCE_TASKS for n in names):
            raise
        where = Path(cfg.data.root or "DIR").expanduser() / "long_sequence"
        raise DataError(
            f"{exc}. The trial reads its tasks {names} ({cfg.data.tasks}) from there; "
            f"{how_to_get(where)}"
        ) from exc


@dataclass
class TaskTokens:
    train: list[TokenizedExample]
    prompts: list[list[int]]
    candidates: list[list[int]]
    answers: list[int]
    golds: list[str]
    items: list[str]
    """'<task>/<index into test.json's Instances>' of every test example."""


def tokenize_task(task: Task, tok, cfg: TrialConfig, cache: Path | None) -> TaskTokens:
    """Prompt + ' label' (+ EOS when training); the prompt starts as ``data.add_bos`` says
    (by default what the tokenizer itself puts first). Prompts that are too long lose their
    left end (after that start), so the label and the text nearest to it survive."""
    max_len = cfg.data.max_seq_len
    start = bos_ids(tok, cfg.data.add_bos)
    label_ids = tokenize_cached(
        tok,
        [target_text(lb) for lb in task.labels],
        max_length=max_len,
        add_bos=False,
        cache_dir=cache,
    )
    label_of = dict(zip(task.labels, label_ids, strict=True))
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    longest = max(len(x) for x in label_ids) + len(eos)
    need = longest + 1 + len(start)  # label (+EOS), BOS, 1 prompt token
    if max_len < need:
        label = max(task.labels, key=lambda lb: len(label_of[lb]))
        raise ConfigError(
            [
                f"data.max_seq_len: {max_len} tokens cannot hold task {task.name!r}'s longest "
                f"label {label!r} ({longest} tokens with EOS) after a prompt of at least one "
                f"token; labels would be cut and every answer scored on a prefix. Raise "
                f"data.max_seq_len to at least {need} (realistic prompts need far more)"
            ]
        )

    def prompts(examples) -> list[list[int]]:
        ids = tokenize_cached(
            tok,
            [format_prompt(task, ex.input, cfg.data.prompt_template) for ex in examples],
            max_length=10**9,
            add_bos=cfg.data.add_bos,
            cache_dir=cache,
        )
        budget, n = max_len - longest, len(start)
        return [p if len(p) <= budget else p[:n] + p[len(p) - budget + n :] for p in ids]

    train = [
        TokenizedExample(ids=tuple(p + list(label_of[ex.output]) + eos), n_prompt=len(p))
        for p, ex in zip(prompts(task.train), task.train, strict=True)
    ]
    return TaskTokens(
        train=train,
        prompts=prompts(task.test),
        candidates=[list(x) for x in label_ids],
        answers=[task.labels.index(ex.output) for ex in task.test],
        golds=[ex.output for ex in task.test],
        items=[f"{task.name}/{ex.index}" for ex in task.test],
    )


def probe_requests(cfg: TrialConfig, data: TrialData, tok, cache: Path | None):
    if cfg.eval.probe_format in ("letter", "lm_eval"):
        fmt = format_mc_prompt if cfg.eval.probe_format == "letter" else format_lm_eval_prompt
        texts = [fmt(q, data.shots.get(q.subject, [])[: cfg.eval.probe_shots]) for q in data.probe]
        cands = [[f" {LETTERS[i]}" for i in range(len(q.choices))] for q in data.probe]
    else:
        texts = [q.question for q in data.probe]
        cands = [[f" {c}" for c in q.choices] for q in data.probe]
    prompts = tokenize_cached(
        tok, texts, max_length=10**9, add_bos=cfg.data.add_bos, cache_dir=cache
    )
    flat = sorted({c for cs in cands for c in cs})
    ids = dict(
        zip(
            flat,
            tokenize_cached(tok, flat, max_length=10**9, add_bos=False, cache_dir=cache),
            strict=True,
        )
    )
    requests = [(p, [ids[c] for c in cs]) for p, cs in zip(prompts, cands, strict=True)]
    return requests, [q.answer for q in data.probe]


Requests = tuple[list, list[int]]
"""The probe: [(prompt ids, [candidate ids, ...]), ...] and the answer index of each."""


@dataclass
class TrialInputs:
    """A trial's inputs as token ids (see :func:`tokenize_inputs`)."""

    data: TrialData
    tasks: list[TaskTokens]
    probe: Requests | None
    heldout: list[list[int]]
    buffer: ReplayBuffer | None
    pad_id: int


def token_cache(cfg: TrialConfig) -> Path | None:
    """The token cache directory of a trial (None: the tokenizer module's default)."""
    return Path(cfg.data.cache_dir) / "tokens" if cfg.data.cache_dir else None


def tokenize_inputs(cfg: TrialConfig, data: TrialData, tok) -> TrialInputs:
    """Tokenise every input of the trial with ``tok`` (cached by content)."""
    cache = token_cache(cfg)
    heldout = (
        tokenize_cached(
            tok,
            data.heldout,
            max_length=cfg.eval.heldout_max_tokens,
            add_bos=cfg.data.add_bos,
            cache_dir=cache,
        )
        if data.heldout
        else []
    )
    buffer = None
    if data.replay:
        ids = tokenize_cached(
            tok,
            data.replay,
            max_length=cfg.replay.max_tokens,
            add_bos=cfg.replay.add_bos,
            cache_dir=cache,
        )
        buffer = ReplayBuffer(token_ids=tuple(tuple(x) for x in ids), pad_id=tok.pad_token_id)
    return TrialInputs(
        data=data,
        tasks=[tokenize_task(t, tok, cfg, cache) for t in data.tasks],
        probe=probe_requests(cfg, data, tok, cache) if data.probe else None,
        heldout=heldout,
        buffer=buffer,
        pad_id=tok.pad_token_id,
    )


def check_lengths(cfg: TrialConfig, inputs: TrialInputs, context: int | None) -> None:
    """ConfigError if a sequence the trial feeds the model is longer than the model's context
    (``context`` positions; None: not known, nothing checked), measured on the token ids:
    training and test sequences (cut to ``data.max_seq_len``), held-out texts (to
    ``eval.heldout_max_tokens``), replay texts (to ``replay.max_tokens``), and probe prompts
    with their few-shot examples and longest answer. Past its context a model either fails
    mid-trial or, with rotary positions, scores positions it never saw."""
    if not context:
        return
    problems = []
    model = f"model {cfg.model.name!r} has {context} positions"
    for t, tt in zip(inputs.data.tasks, inputs.tasks, strict=True):
        answer = max(len(c) for c in tt.candidates)
        longest = max([len(x.ids) for x in tt.train] + [len(p) + answer for p in tt.prompts])
        if longest > context:
            problems.append(
                f"data.max_seq_len: task {t.name!r} has sequences of {longest} tokens and {model}; "
                f"set data.max_seq_len to at most {context} (prompts are cut from the left)"
            )
    for name, seqs in (
        ("eval.heldout_max_tokens", inputs.heldout),
        ("replay.max_tokens", inputs.buffer.token_ids if inputs.buffer is not None else []),
    ):
        longest = max((len(x) for x in seqs), default=0)
        if longest > context:
            problems.append(
                f"{name}: texts of {longest} tokens and {model}; set {name} to at most {context}"
            )
    if inputs.probe is not None:
        lengths = [len(p) + max(len(c) for c in cands) for p, cands in inputs.probe[0]]
        over = [n for n in lengths if n > context]
        if over:
            shots = cfg.eval.probe_shots
            problems.append(
                f"eval.probe: {len(over)} of {len(lengths)} probe prompts"
                f"{f' with {shots} shots' if shots else ''} are longer than model "
                f"{cfg.model.name!r}'s {context} positions (the longest {max(over)} tokens); "
                + (
                    f"use fewer shots (eval.probe_shots {shots} -> e.g. {max(0, shots // 2)})"
                    if shots
                    else "shorten the questions or use a model with a longer context"
                )
            )
    if problems:
        raise ConfigError(problems)


def landscape_stages(cfg: TrialConfig, data: TrialData) -> list[int]:
    """The stages whose landscape is sliced; ConfigError if a stage or dataset does not exist
    in this trial (run before the model is built, and on the driver by :func:`preflight`)."""
    names = [t.name for t in data.tasks]
    stages = cfg.landscape.stage_list(len(names))
    known = ("prev", "new", "general", *names)
    unknown = [d for d in cfg.landscape.datasets if d not in known]
    if unknown:
        raise ConfigError(
            [
                f"landscape.datasets: {unknown} are neither 'prev', 'new', 'general' nor "
                f"tasks of this trial ({', '.join(names)})"
            ]
        )
    return stages


_FINGERPRINTS: dict[str, str] = {}
"""Data fingerprints computed in this process, by :func:`_data_key` (the driver's cache)."""


def _data_key(cfg: TrialConfig, *, landscape: bool = True) -> str:
    """The settings that decide what :func:`load_data` loads (and the landscape's stages)."""
    d = cfg.to_dict()
    parts = [d["data"], d["replay"]["method"], d["replay"]["corpus"], d["replay"]["size"]]
    parts += [d["eval"], d["seed"], d["landscape"] if landscape else None]
    return json.dumps(parts, sort_keys=True)


def fingerprint_for(cfg: TrialConfig) -> str:
    """The data fingerprint of a trial's data, loaded without the Hub (cached per data
    setting: a grid loads each distinct data setting once)."""
    key = _data_key(cfg, landscape=False)
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = load_data(cfg, hub=False).fingerprint
    return _FINGERPRINTS[key]


def lm_eval_problem(cfg: TrialConfig) -> str | None:
    """What is wrong with ``eval.lm_eval_tasks`` that shows without the network (lm-eval
    missing or too old, an unknown task name, a missing include path), or None; seconds
    (lm-eval indexes its task YAMLs). Whether a task generates text is known once its
    dataset is read, in the trial's set-up, before any training."""
    if not cfg.eval.lm_eval_tasks:
        return None
    from harness import lm_eval_tasks

    try:
        lm_eval_tasks.check_tasks(cfg, lm_eval_tasks.task_manager(cfg), build=False)
    except (ImportError, ValueError, FileNotFoundError) as exc:
        return str(exc)
    return None


def preflight(configs: list[TrialConfig]) -> None:
    """Check every distinct data setting of a grid on the driver before anything is scheduled,
    so a missing task, a malformed file, a mistyped Hub source or a replay buffer larger than
    its corpus fails in seconds, naming the grid point. Local data (the task folders always)
    is loaded and checked; Hub sources (``hf:...``) are parsed and checked without the
    network (:func:`load_data` with ``hub=False``): whether they exist is known in the trial."""
    seen: dict[str, str | None] = {}  # data key -> its problem (None: fine)
    problems: dict[str, list[str]] = {}  # message -> grid points
    for cfg in configs:
        key = _data_key(cfg)
        if key not in seen:
            seen[key] = None
            try:
                data = load_data(cfg, hub=False)
                _FINGERPRINTS[_data_key(cfg, landscape=False)] = data.fingerprint
                if cfg.landscape.enabled:
                    landscape_stages(cfg, data)
            except (DataError, ConfigError) as exc:
                seen[key] = str(exc)
        if seen[key] is not None:  # every point with these data settings has the problem
            problems.setdefault(seen[key], []).append(cfg.id)
    for cfg in configs:
        key = f"lm_eval:{cfg.eval.lm_eval_tasks}:{cfg.eval.lm_eval_include_path}:{cfg.data.root}"
        if cfg.eval.lm_eval_tasks and key not in seen:
            seen[key] = lm_eval_problem(cfg)
        if cfg.eval.lm_eval_tasks and seen[key] is not None:
            problems.setdefault(seen[key], []).append(cfg.id)
    if problems:

        def where(ids: list[str]) -> str:
            if len(ids) == len(configs) > 1:
                return f"every grid point ({len(ids)})"
            return f"grid point(s) {', '.join(ids)}"

        raise DataError("\n".join(f"{where(ids)}: {msg}" for msg, ids in problems.items()))
