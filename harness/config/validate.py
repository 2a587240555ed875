"""Building configs from plain dicts: every key and value checked, every rule listed."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from harness.config.cl_methods import CL
from harness.config.errors import ConfigError
from harness.config.interventions import INTERVENTIONS
from harness.config.replay_methods import REPLAY
from harness.config.scale import scale_problems
from harness.config.schema import (
    LEGACY_REPLAY_SETTINGS,
    ReplayConfig,
    TrialConfig,
    _hints,
    to_dict,
)
from harness.config.values import (  # noqa: F401  (parse_override, parse_typed: re-exported)
    NONE_WORDS,
    _as_yaml_read,
    _check_value,
    _type_name,
    parse_override,
    parse_typed,
)
from harness.registry import Entry
from harness.suggest import did_you_mean


def _build(cls: type, data: Any, path: str, problems: list[str]) -> Any:
    if isinstance(data, cls):
        data = to_dict(data)
    if not isinstance(data, dict):
        problems.append(f"{path or 'config'}: expected a mapping, got {data!r}")
        return cls()
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if cls is ReplayConfig and key in LEGACY_REPLAY_SETTINGS:
            method, setting = LEGACY_REPLAY_SETTINGS[key]
            problems.append(
                f"unknown key {where!r}: it is now 'replay.settings.{setting}' (a setting of "
                f"replay method {method!r}), e.g. --replay.settings.{setting} {value} or "
                f"--set replay.settings.{setting}={value}"
            )
            continue
        if key not in names:
            problems.append(
                f"unknown key {where!r}{did_you_mean(key, names)}; "
                f"valid keys{' in ' + path if path else ''}: {', '.join(names)}"
            )
            continue
        tp = hints[key]
        if key == "add_bos" and isinstance(value, bool):  # the earlier spelling
            value = "tokenizer" if value else "never"
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, where, problems)
            continue
        before = len(problems)
        checked = _check_value(where, value, tp, problems)
        if len(problems) == before:  # a bad value keeps the default, so range rules still run
            kwargs[key] = checked
    try:
        return cls(**kwargs)
    except TypeError:
        return cls()


def _rules(cfg: TrialConfig) -> list[str]:
    """Cross-field and range rules: each message names the value, the rule and the fix."""
    p: list[str] = []
    m, d, r, t, e = cfg.model, cfg.data, cfg.replay, cfg.train, cfg.eval

    def positive(path: str, v: float | int | None, allow_none: bool = True) -> None:
        if v is None and allow_none:
            return
        if v is None or v <= 0:
            p.append(f"{path}: {v!r} must be > 0")

    positive("model.lora_r", m.lora_r)
    positive("model.lora_alpha", m.lora_alpha)
    if not 0.0 <= m.lora_dropout < 1.0:
        p.append(f"model.lora_dropout: {m.lora_dropout!r} must be in [0, 1)")
    if m.tuning == "lora" and not m.lora_target_modules:
        p.append("model.lora_target_modules: empty; LoRA needs at least one module name")
    if "all-linear" in m.lora_target_modules and len(m.lora_target_modules) > 1:
        p.append(
            f"model.lora_target_modules: {','.join(m.lora_target_modules)}: 'all-linear' "
            "stands alone (every linear layer); give it or a list of module names"
        )
    if m.revision is not None and not re.fullmatch(r"[\w.\-/]+", m.revision):
        p.append(
            f"model.revision: {m.revision!r} is not a branch, tag or commit sha (letters, "
            "digits, '.', '-', '_', '/')"
        )
    if not d.tasks.strip():
        p.append("data.tasks: empty; give an order name (e.g. order6) or task names a,b,c")
    positive("data.max_train_per_task", d.max_train_per_task)
    positive("data.max_test_per_task", d.max_test_per_task)
    if d.max_seq_len < 16:
        p.append(f"data.max_seq_len: {d.max_seq_len} must be >= 16")
    if r.method != "none":
        positive("replay.size", r.size, allow_none=False)
    elif r.per_batch:
        p.append("replay.per_batch: set but replay.method is 'none'; unset it or pick a method")
    positive("replay.max_tokens", r.max_tokens, allow_none=False)
    if isinstance(r.weight, float) and r.weight < 0:
        p.append(f"replay.weight: {r.weight} must be >= 0 (or 'dynamic')")
    eff = t.batch_size * t.grad_accum
    if r.per_batch is not None:
        if r.per_batch <= 0:
            p.append(f"replay.per_batch: {r.per_batch} must be > 0 (or unset)")
        elif r.per_batch >= eff:
            p.append(
                f"replay.per_batch: {r.per_batch} replay samples leave no room for task samples "
                f"in an effective batch of {eff} (train.batch_size * train.grad_accum); "
                "lower per_batch or raise the batch"
            )
    positive("train.lr", t.lr, allow_none=False)
    positive("train.lr_multiplier", t.lr_multiplier, allow_none=False)
    positive("train.epochs", t.epochs, allow_none=False)
    positive("train.max_steps_per_task", t.max_steps_per_task)
    positive("train.batch_size", t.batch_size, allow_none=False)
    positive("train.grad_accum", t.grad_accum, allow_none=False)
    positive("train.max_grad_norm", t.max_grad_norm)
    positive("train.log_every", t.log_every, allow_none=False)
    if t.divergence_factor is not None and t.divergence_factor <= 1:
        p.append(
            f"train.divergence_factor: {t.divergence_factor} must be > 1 (a loss this many "
            "times the task's first-step loss counts as divergence), or unset to disable"
        )
    if t.max_steps_per_task is None and t.epochs > 1e4:
        p.append(
            f"train.epochs: {t.epochs:g} epochs per task is not a plan (> 10000); lower it or "
            "set train.max_steps_per_task"
        )
    if t.warmup_steps < 0:
        p.append(f"train.warmup_steps: {t.warmup_steps} must be >= 0")
    if t.weight_decay < 0:
        p.append(f"train.weight_decay: {t.weight_decay} must be >= 0")
    positive("eval.batch_size", e.batch_size, allow_none=False)
    positive("eval.probe_max_questions", e.probe_max_questions)
    positive("eval.heldout_max_texts", e.heldout_max_texts)
    positive("eval.heldout_max_tokens", e.heldout_max_tokens, allow_none=False)
    if e.heldout_max_tokens == 1:
        p.append(
            "eval.heldout_max_tokens: 1 token leaves no next token to predict, so perplexity "
            "is undefined (NaN); use at least 2 (the presets use 256-1024)"
        )
    if r.max_tokens == 1 and r.method != "none":
        p.append(
            "replay.max_tokens: 1 token leaves no next token to predict (and one position of "
            "hidden state), so replay does nothing; use at least 2 (GeRe's reference: 512)"
        )
    positive("eval.max_new_tokens", e.max_new_tokens)
    if e.plasticity_texts < 0:
        p.append(f"eval.plasticity_texts: {e.plasticity_texts} must be >= 0 (0 disables)")
    if e.plasticity_texts and not e.heldout:
        p.append("eval.plasticity_texts: the probe batch comes from eval.heldout; set it or use 0")
    if e.probe_shots < 0:
        p.append(f"eval.probe_shots: {e.probe_shots} must be >= 0")
    if e.probe_shots and e.probe_format == "continuation":
        p.append("eval.probe_shots: few-shot prompts need eval.probe_format 'letter' or 'lm_eval'")
    p.extend(_lm_eval_problems(e))
    sc = cfg.scale
    positive("scale.workers", sc.workers, allow_none=False)
    positive("scale.collective_timeout_s", sc.collective_timeout_s, allow_none=False)
    if sc.workers > 1 and sc.backend != "deepspeed":
        p.append(
            f"scale.workers: {sc.workers} workers need scale.backend='deepspeed' "
            "(the 'torch' backend runs one process)"
        )
    p.extend(scale_problems(cfg))  # the ZeRO rules (harness.config.scale)
    if (sc.offload_optimizer or sc.offload_params) and sc.backend != "deepspeed":
        p.append("scale.offload_*: offloading needs scale.backend='deepspeed'")
    positive("scale.cpus_per_worker", sc.cpus_per_worker, allow_none=False)
    if sc.use_gpu:
        positive("scale.gpus_per_worker", sc.gpus_per_worker, allow_none=False)
    if sc.max_failures < -1:
        p.append(f"scale.max_failures: {sc.max_failures} must be >= -1 (-1 = retry forever)")
    if m.dtype in ("bfloat16", "float16") and m.name == "tiny":
        p.append(f"model.dtype: {m.dtype} with the 'tiny' CPU preset; use float32")
    elif m.dtype == "float16" and not (cfg.scale.backend == "deepspeed" and cfg.scale.use_gpu):
        p.append(
            "model.dtype: float16 trains only under DeepSpeed on GPUs (its dynamic loss "
            "scaling keeps fp16 gradients finite; plain float16 weights with AdamW do not "
            "train); set scale.backend=deepspeed and scale.use_gpu=true, or use bfloat16"
        )
    if (m.revision or m.attn_implementation) and m.name in ("tiny", "world"):
        p.append(
            f"model.revision / model.attn_implementation: set for the built-in {m.name!r} "
            "model, which is not loaded from the Hub; leave them unset"
        )
    ls = cfg.landscape
    if ls.enabled:
        p.extend(ls.problems())
        if "general" in ls.datasets and not e.heldout:
            p.append("landscape.datasets: 'general' is scored on eval.heldout; set it or drop it")
    if cfg.seed < 0:
        p.append(f"seed: {cfg.seed} must be >= 0 (numpy and torch seeds are unsigned)")
    p.extend(out_problems(cfg.out))
    for ch in "/\\":
        if cfg.trial_id and ch in cfg.trial_id:
            p.append(f"trial_id: {cfg.trial_id!r} must not contain {ch!r}")
        if ch in cfg.study:  # it names the folder study=<study> and the study's Ray runs
            p.append(f"study: {cfg.study!r} must not contain {ch!r}")
    if not cfg.study.strip() or cfg.study.strip(".") == "":
        p.append(f"study: {cfg.study!r} is not a name; give the study a name, e.g. lr_robustness")
    return p


def out_problems(out: str) -> list[str]:
    """What is wrong with a results location ``out`` as written (before anything is run):
    a URI with one slash (``s3:/bucket``, which would be a local folder named 's3:'), or a
    path into a study's folder (``runs/study=x``: results are written under
    ``<out>/study=<study>/``, so the trial would be nested where no report looks)."""
    problems = []
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):(/?)(?!/)", out)
    if scheme and "://" not in out:
        fixed = f"{scheme.group(1)}://{out[scheme.end() :]}"
        problems.append(
            f"out: {out!r} looks like a URI with a slash missing; write {fixed!r} (an object "
            f"store), or ./{out} if you mean a local folder named so"
        )
    parts = out.rstrip("/").split("/")
    inside = [x for x in parts if x.startswith("study=")]
    if inside:
        base = "/".join(parts[: parts.index(inside[0])]) or "."
        problems.append(
            f"out: {out!r} points into a study's folder ({inside[0]}/); out is the folder that "
            f"holds the study folders: use out={base!r} with study={inside[0][6:]!r}"
        )
    return problems


def from_dict(data: dict[str, Any] | None = None) -> TrialConfig:
    """Build and validate a TrialConfig; raises ConfigError listing every problem."""
    problems: list[str] = []
    cfg = _build(TrialConfig, data or {}, "", problems)
    cfg = dataclasses.replace(cfg, replay=_check_method_settings(cfg.replay, problems))
    cfg = _check_interventions(cfg, problems)
    cfg = normalised(cfg)
    problems.extend(_rules(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


DATA_ENV_VAR = "GERE_DATA_DIR"
"""Environment variable naming the data root (read by :mod:`harness.data.paths`)."""
DEV_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
"""The development fallback data root, ``<repo>/../shared/data``."""


def normalised(cfg: TrialConfig) -> TrialConfig:
    """One spelling of each setting that has several, so equivalent spellings are one trial
    (one id): task lists without spaces or empty items (``"cb, rte,"`` -> ``"cb,rte"``), local
    paths without trailing or doubled separators (``data/`` -> ``data``), and a data file
    given as an absolute path inside the data root as the path relative to it."""
    d, e, r = cfg.data, cfg.eval, cfg.replay
    tasks = ",".join(t.strip() for t in d.tasks.split(",") if t.strip())
    root = _local_path(d.root) if d.root else d.root
    base = Path(root or os.environ.get(DATA_ENV_VAR) or DEV_DATA_ROOT).expanduser()

    def inside(value: str | None) -> str | None:
        value = _local_path(value)
        if value is None or value == "" or not Path(value).is_absolute():
            return value
        for resolve in (os.path.abspath, os.path.realpath):  # as written, then links resolved
            try:
                return Path(resolve(value)).relative_to(resolve(base)).as_posix()
            except ValueError:
                continue
        return value

    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(d, tasks=tasks, root=root),
        replay=dataclasses.replace(r, corpus=inside(r.corpus)),
        eval=dataclasses.replace(e, heldout=inside(e.heldout), probe=inside(e.probe)),
    )


def _local_path(value: str | None) -> str | None:
    """``value`` with redundant separators removed, if it is a local path (not ``hf:...`` or
    a URI, not a bare name such as ``mmlu``)."""
    if not value or value.startswith("hf:") or "://" in value:
        return value
    return os.path.normpath(value) if ("/" in value or "\\" in value) else value


def _check_entry_settings(
    entry: Entry,
    settings: dict[str, Any],
    *,
    where: str,
    problems: list[str],
    owner: str = "",
    hint: Any = lambda key: "",
) -> dict[str, Any] | None:
    """Check ``settings`` against a registered method's settings dataclass: names
    (did-you-mean, and the valid ones listed), types, then its own rules by building the
    dataclass. Returns the coerced values, or None if a problem was recorded. ``where``: the
    settings' dotted path; ``owner``/``hint(key)``: text for an unknown key."""
    specs = {s.name: s for s in entry.spec()}
    listing = ", ".join(f"{s.name} (default {s.default!r})" for s in specs.values()) or "none"
    coerced: dict[str, Any] = {}
    before = len(problems)
    for key, value in settings.items():
        path = f"{where}.{key}"
        if key not in specs:
            problems.append(
                f"unknown key {path!r}{did_you_mean(key, specs)}{owner}{hint(key)}; "
                f"settings of {entry.name!r}: {listing}"
            )
            continue
        coerced[key] = _check_value(path, value, specs[key].type, problems)
    if len(problems) > before:
        return None
    try:
        entry.settings(**coerced)
    except (TypeError, ValueError) as exc:
        problems.append(f"{where}: {exc}")
        return None
    return coerced


def _check_method_settings(r: ReplayConfig, problems: list[str]) -> ReplayConfig:
    """Check ``replay.settings`` against the chosen method's settings (name, type, and the
    method's own rules); returns the config with the values coerced."""
    entry = REPLAY.get(r.method)
    if entry is None or not isinstance(r.settings, dict):
        return r  # the method (or the mapping) is reported already

    def elsewhere(key: str) -> str:
        owners = [m for m in REPLAY.names() if key in [s.name for s in REPLAY.entry(m).spec()]]
        return f" ({key!r} is a setting of {', '.join(map(repr, owners))})" if owners else ""

    coerced = _check_entry_settings(
        entry,
        r.settings,
        where="replay.settings",
        problems=problems,
        owner=f" for replay method {r.method!r}",
        hint=elsewhere,
    )
    return r if coerced is None else dataclasses.replace(r, settings=coerced)


def _check_interventions(cfg: TrialConfig, problems: list[str]) -> TrialConfig:
    """Check ``interventions`` and ``cl``: known names, each one's settings (name, type, its
    own rules) and its rules on the trial; returns the config with values coerced."""
    for section, registry, noun in (
        ("interventions", INTERVENTIONS, "an intervention"),
        ("cl", CL, "a continual-learning method"),
    ):
        given = getattr(cfg, section)
        if not isinstance(given, dict):
            continue  # reported by the type check
        coerced: dict[str, dict[str, Any]] = {}
        for name, settings in given.items():
            entry = registry.get(name)
            if entry is None:
                known = sorted(registry.names())
                problems.append(
                    f"{section}: {name!r} is not {noun}{did_you_mean(name, known)}; "
                    f"known: {', '.join(known)}"
                )
                continue
            if not isinstance(settings, dict | None):
                problems.append(
                    f"{section}.{name}: expected a mapping of its settings, got {settings!r}"
                )
                continue
            if cfg.method_defaults == "paper":  # the reference's values where none is given
                settings = {**entry.paper_defaults, **(settings or {})}
            values = _check_entry_settings(
                entry, settings or {}, where=f"{section}.{name}", problems=problems
            )
            if values is not None:
                problems.extend(entry.problems(cfg))
                coerced[name] = values
        cfg = dataclasses.replace(cfg, **{section: coerced})
    return cfg


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; dotted keys ('train.lr') are expanded."""
    out = copy.deepcopy(base)  # not a JSON round trip: a YAML date must reach the checks
    for key, value in overrides.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (not yet validated)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError([f"config file {str(p)!r} is a directory; give a YAML or JSON file"])
    if not p.is_file():
        raise ConfigError([f"config file {str(p)!r} does not exist"])
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        kind = "gzip-compressed" if raw[:2] == b"\x1f\x8b" else "not UTF-8 text"
        raise ConfigError(
            [
                f"config file {str(p)!r}: {kind} (byte {e.start}: {raw[e.start : e.start + 4]!r}); "
                "save it as UTF-8 text (e.g. iconv -f latin1 -t utf-8 FILE > fixed.yaml)"
            ]
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"config file {str(p)!r} is not valid YAML/JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"config file {str(p)!r}: top level must be a mapping"])
    return data


def _lm_eval_problems(e) -> list[str]:
    """The lm-eval settings' own rules (the task names are checked against lm-eval when the
    trial is set up: harness.lm_eval_tasks.check_tasks)."""
    p = []
    for name in e.lm_eval_tasks:
        if not name.strip() or "," in name:
            p.append(
                f"eval.lm_eval_tasks: {name!r} is not a task name; give names as a list or one "
                "comma-separated string (arc_easy,hellaswag)"
            )
    if e.lm_eval_num_fewshot is not None and e.lm_eval_num_fewshot < 0:
        p.append(f"eval.lm_eval_num_fewshot: {e.lm_eval_num_fewshot} must be >= 0 (or unset)")
    if e.lm_eval_limit is not None and e.lm_eval_limit < 1:
        p.append(f"eval.lm_eval_limit: {e.lm_eval_limit} must be >= 1 (or unset: all documents)")
    settings = (e.lm_eval_include_path, e.lm_eval_num_fewshot, e.lm_eval_limit)
    if not e.lm_eval_tasks and any(v is not None for v in settings):
        p.append(
            "eval.lm_eval_include_path / lm_eval_num_fewshot / lm_eval_limit: set without "
            "eval.lm_eval_tasks, so nothing would use them; name the tasks or unset them"
        )
    return p  # lm-eval itself and the task names: harness.inputs.preflight and the trial
