"""Offline validation of the cluster configs under ``clusters/``: no credentials, no network.

    python -m clusters.validate                      # every YAML under clusters/
    python -m clusters.validate clusters/aws-gpu.yaml clusters/kuberay/rayjob.yaml
    python -m clusters.validate --allow-open-dashboard FILE   # trusted network: see below

Two kinds of file, told apart by content (a Kubernetes manifest has ``apiVersion``):

* **Ray autoscaler YAMLs** (``ray up``): :func:`validate_autoscaler_yaml` runs Ray's JSON schema
  (``ray/autoscaler/ray-schema.json``) over the file as written, so that every unknown or
  misspelt key is reported with a suggestion, then the two steps ``ray up`` itself runs before it
  touches a cloud: ``prepare_config`` (merge the provider's ``defaults.yaml``, merge setup
  commands, fill per-type worker bounds) and ``validate_config`` (schema again, ``head_node_type``
  among the node types, sum of ``min_workers`` <= ``max_workers``). For ``aws`` and ``gcp``
  providers ``prepare_config`` only reads Ray's bundled ``defaults.yaml`` files; what needs
  credentials (``bootstrap_config``: subnets, IAM roles, key pairs; auto-detecting node resources
  from the instance type) is never called. Both are private APIs
  (``ray.autoscaler._private.util``), so this validator is a dev tool checked against the Ray of
  ``requirements/ci-constraints.txt`` (2.60.0); on a Ray without them it says so. On top of Ray's checks:
  every worker node type must declare its ``resources`` (CPU, and GPU for a type named ``*gpu*``),
  because auto-detection needs credentials and an autoscaler scaling from zero must know what a
  node type offers before one exists.
* **KubeRay manifests** (``ray.io/v1`` ``RayCluster`` / ``RayJob``, with other Kubernetes
  documents such as a ``PersistentVolumeClaim`` allowed beside them):
  :func:`validate_kuberay_manifest` validates each Ray document against the KubeRay operator's
  own CRD schema: the ``openAPIV3Schema`` of the ``v1`` version of ``ray.io_rayclusters.yaml``
  and ``ray.io_rayjobs.yaml``, stored under ``clusters/schemas/kuberay-<version>/`` (see
  :data:`KUBERAY_VERSION` and ``clusters/schemas/README.md``), which inline every Kubernetes
  core type they use (pod template, containers, resources, probes, volumes, affinity...). Two
  things are added when the schema is loaded, neither stored: (1) KubeRay's CRDs never set
  ``additionalProperties: false``, so every object that declares ``properties`` and neither
  ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` is *closed*
  (``additionalProperties: false``): a misspelt key anywhere (``resources.limts``,
  ``containers[0].imag``) is then rejected with a did-you-mean, as the API server rejects it
  under ``kubectl apply``'s default ``--validate=strict`` (with ``--validate=false`` it would
  silently prune the key); (2) the Kubernetes list semantics the schema states,
  ``x-kubernetes-list-type: map`` / ``set`` (unique keys / items), and ``nullable``. Not
  evaluated: the CRDs' few CEL rules (``x-kubernetes-validations``, on ``managedBy`` and
  ``deletionStrategy``) and ``format`` (int32 ranges). Then, by hand, the project's *policy*,
  which no schema states: ``apiVersion`` is ``ray.io/v1`` and ``kind`` a RayCluster or RayJob;
  ``metadata`` (the CRDs leave ObjectMeta to the API server: ``type: object``) holds known keys
  and a DNS ``name``; ``spec`` is present; ``rayStartParams`` is present on every group
  (operators before 1.4 require it); group names are unique DNS labels; min <= replicas <= max;
  a pod template has at least one container and each container an ``image``; GPU groups (named
  ``*gpu*``, or declaring GPUs) set whole ``nvidia.com/gpu`` limits, equal to any request and to
  ``num-gpus``, and do not run a CPU ``rayproject/ray`` image; autoscaling is enabled when a group
  has a range; ``rayVersion`` matches the image tag; a RayJob names a known ``submissionMode``
  (a plain string in the CRD), has an ``entrypoint`` (unless ``InteractiveMode``), exactly one
  of ``rayClusterSpec`` / ``clusterSelector``, ``ttlSecondsAfterFinished`` only with
  ``shutdownAfterJobFinishes``, and a ``runtimeEnvYAML`` that parses, uses known runtime-env
  fields and ships code from a URI (the submitter pod has no checkout). Values a user must fill
  in (``YOUR-...``) are listed by :func:`placeholders`, not rejected.

Both kinds: **no open dashboard**. The dashboard's job-submission API runs whatever it is sent,
and Ray 2.60 starts a head without token authentication unless ``RAY_AUTH_MODE=token`` is set
for it (a plain ``ray start --head`` on a fresh machine starts open; a client with
``RAY_AUTH_MODE=token`` but no token only warns). So a head that serves the dashboard beyond
loopback without token auth is an error, naming the value, the rule and the fix:

* ``ray up`` YAMLs (:func:`_autoscaler_auth_problems`): every ``ray start --head`` in
  ``head_start_ray_commands`` (the file's, or the provider's default that ``prepare_config``
  fills in) whose ``--dashboard-host`` is not loopback (``ray start`` defaults to 127.0.0.1) and
  whose ``--include-dashboard`` is not false must run with ``RAY_AUTH_MODE=token``: from the
  container (``docker.run_options`` / ``head_run_options``: ``-e RAY_AUTH_MODE=token``, when a
  docker image is set) or the command itself (``RAY_AUTH_MODE=token ray start --head ...``, or
  ``export RAY_AUTH_MODE=token; ...`` in the same command; each command runs in its own shell).
  Variables set any other way (a profile, ``--env-file``) are not seen.
* KubeRay (:func:`_check_dashboard_auth`): a head whose ``rayStartParams`` ``dashboard-host`` is
  not loopback, or absent (KubeRay then passes 0.0.0.0), needs ``authOptions.mode: token``
  (operator >= 1.5.1), or ``RAY_AUTH_MODE=token`` in its container's ``env`` (token auth wired by
  hand, for older operators); token mode needs ``rayVersion`` >= 2.52.0, as KubeRay requires.

The opt-out is explicit and per run: ``--allow-open-dashboard`` (``allow_open_dashboard=True``
for :func:`validate_autoscaler_yaml`, :func:`validate_kuberay_manifest`, :func:`describe`), for
a trusted network only; the summary line says that it was given. The shipped files need none.

Not checkable offline: whether instance / machine types, AMIs, images, zones, quotas, buckets,
IAM roles, storage classes or service accounts exist; the contents of ``node_config`` and
``provider`` (free-form in Ray's schema: a misspelt key there passes and fails at launch); and
the version of the KubeRay CRDs installed in a cluster: the stored schemas are one release
(newer than some operators: a field added since passes here and fails there;
``kubectl apply --dry-run=server`` checks against the installed CRDs). Every problem in a file is
reported at once, naming the file, the key path and the fix.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import functools
import json
import logging
import re
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CLUSTERS_DIR = Path(__file__).resolve().parent
"""``clusters/`` in the repository; the default set of files to validate."""

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster

PLACEHOLDER = "YOUR-"
"""Every value a user must fill in contains this marker (``grep -n YOUR- clusters/*.yaml``)."""


class ClusterConfigError(ValueError):
    """A cluster config failed validation; ``problems`` lists every problem found."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} problem(s):\n{lines}")


# --------------------------------------------------------------------------------------------
# Shared helpers


def _suggest(key: str, allowed: set[str] | list[str]) -> str:
    """' (did you mean 'x'?)' for a close match of ``key`` among ``allowed``, else ''."""
    close = difflib.get_close_matches(str(key), sorted(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(where: str, key: str, allowed: set[str] | list[str]) -> str:
    """``where: unknown key 'x' (did you mean 'y'?); ...`` (no ``where:`` when it is empty)."""
    hint = _suggest(key, allowed)
    fix = "rename it" if hint else "remove it"
    text = f"unknown key {key!r}{hint}; {fix}. Allowed here: {', '.join(sorted(allowed))}"
    return f"{where}: {text}" if where else text


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _load_documents(path: Path) -> list[Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ClusterConfigError(path, [f"cannot read the file: {exc}"]) from None
    try:
        return [d for d in yaml.load_all(text, Loader=_SAFE_LOADER) if d is not None]
    except yaml.YAMLError as exc:
        raise ClusterConfigError(path, [f"not valid YAML: {exc}"]) from None


def placeholders(path: str | Path) -> list[tuple[int, str]]:
    """(line number, line) for every line whose YAML (not comment) holds a value to fill in."""
    found = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        code = "" if line.lstrip().startswith("#") else line.split(" #", 1)[0]
        if PLACEHOLDER in code:
            found.append((i, line.strip()))
    return found


def _path_text(path: list) -> str:
    """``a.b[0].c`` for an instance path; 'top level' for the empty path."""
    where = ""
    for key in path:
        where = _join(where, key)
    return where or "top level"


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_message(err: Any) -> str:
    """A jsonschema error as a fix: quoting for YAML's numbers and booleans, did-you-means."""
    inst, schema = err.instance, err.schema if isinstance(err.schema, dict) else {}
    path = err.absolute_path
    key = path[-1] if path and isinstance(path[-1], str) else None
    if err.validator == "type":
        expected = err.validator_value
        if expected == "string" and isinstance(inst, bool | int | float):
            text = json.dumps(inst)
            what = "a boolean" if isinstance(inst, bool) else "a number"
            fix = f'write {key}: "{text}"' if key else f'quote it: "{text}"'
            return f"{inst!r} is not a string (YAML read {what}); {fix}"
        if expected == "string" and isinstance(inst, dict | list) and key:
            what = "a mapping" if isinstance(inst, dict) else "a list"
            return f"is {what}, not a string; for text on several lines write {key}: | (indented)"
        scalar = isinstance(inst, str) and (
            (expected == "integer" and re.fullmatch(r"[+-]?\d+", inst.strip()))
            or (expected == "number" and re.fullmatch(r"[+-]?\d+(\.\d*)?", inst.strip()))
            or (expected == "boolean" and inst.strip() in ("true", "false"))
        )
        if scalar:
            fix = f"{key}: {inst.strip()}" if key else inst.strip()
            return f"{inst!r} is not of type {expected!r}; drop the quotes: {fix}"
    if err.validator == "enum" and isinstance(inst, str):
        return _short(err.message) + _suggest(inst, [str(v) for v in err.validator_value])
    if schema.get("x-kubernetes-int-or-string"):
        if err.validator == "anyOf":
            text = json.dumps(inst) if isinstance(inst, bool | int | float) else str(inst)
            return f'{inst!r} must be an integer or a string (quote it: "{text}")'
        if err.validator == "pattern":
            return f"{inst!r} is not a Kubernetes quantity (e.g. 8, 500m, 32Gi, 1Ti)"
    return _short(err.message)


def _sort_key(path: list) -> list[str]:
    return [f"{p:09d}" if isinstance(p, int) else str(p) for p in path]


def _schema_errors(validator: Any, instance: Any) -> list[tuple[list, str]]:
    """(instance path, message) for every schema violation in ``instance``, sorted by path.

    Each unknown key is reported on its own with a did-you-mean among the keys allowed there;
    a missing required key is reported at its own path.
    """
    found = []
    for err in validator.iter_errors(instance):
        path = list(err.absolute_path)
        if (
            err.validator == "additionalProperties"
            and err.validator_value is False
            and isinstance(err.instance, dict)
        ):
            allowed = set(err.schema.get("properties", {}))
            patterns = list(err.schema.get("patternProperties", {}))
            for key in err.instance:
                if str(key) not in allowed and not any(re.search(p, str(key)) for p in patterns):
                    found.append((path, _unknown_key("", key, allowed)))
        elif err.validator == "required" and (
            m := re.match(r"^'(.+)' is a required property$", err.message)
        ):
            found.append((path + [m.group(1)], "missing (the schema requires it); add it"))
        else:
            found.append((path, _error_message(err)))
    return sorted(found, key=lambda e: _sort_key(e[0]))


# --------------------------------------------------------------------------------------------
# Token authentication: a dashboard served beyond loopback needs it

AUTH_MODE_VAR = "RAY_AUTH_MODE"
"""The variable that turns Ray's token authentication on (``token``) for a process."""
OPEN_DASHBOARD_FLAG = "--allow-open-dashboard"
"""The command-line opt-out (``allow_open_dashboard=True`` in the API) of the rule below."""
MIN_TOKEN_AUTH_RAY = (2, 52, 0)
"""KubeRay rejects ``authOptions.mode: token`` for a ``rayVersion`` below this."""
KUBERAY_DEFAULT_DASHBOARD_HOST = "0.0.0.0"
"""What KubeRay passes as ``--dashboard-host`` when a head's rayStartParams name none."""
RAY_DEFAULT_DASHBOARD_HOST = "127.0.0.1"
"""What ``ray start --head`` binds the dashboard to without ``--dashboard-host``."""

_WHY_AUTH = (
    "whoever reaches the dashboard port can submit a job, i.e. run any code on the cluster, "
    "and Ray 2.60 starts a head without token authentication unless RAY_AUTH_MODE=token"
)


def _is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    return host in {"localhost", "::1"} or host.startswith("127.")


def _off(value: Any) -> bool:
    """A boolean flag's value (YAML or command line) that turns it off."""
    return str(value).strip().strip("\"'").lower() in {"false", "0", "no", "off"}


def _ray_start_options(tokens: list[str]) -> dict[str, str]:
    """``--key=value`` / ``--key value`` options of a ``ray start`` command (flags map to '')."""
    options: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                value, i = tokens[i + 1], i + 1
            options[key] = value
        i += 1
    return options


def _assignments(tokens: list[str]) -> dict[str, str]:
    """``NAME=value`` words (as a shell prefix or ``export`` / ``env`` arguments)."""
    found = {}
    for token in tokens:
        name, eq, value = token.partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            found[name] = value
    return found


def _split_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:  # an unbalanced quote: good enough for finding words
        return text.split()


def _head_starts(command: str) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """For each ``ray start --head`` in one shell command: (environment the command sets for
    it: ``export NAME=...`` earlier in the command, ``NAME=... ray start``; its options)."""
    exported: dict[str, str] = {}
    for part in re.split(r"&&|\|\||[;|\n]", command):
        words = _split_words(part)
        if not words:
            continue
        if words[0] == "export":
            exported.update(_assignments(words[1:]))
            continue
        for i in range(len(words) - 1):
            if words[i] == "ray" and words[i + 1] == "start":
                options = _ray_start_options(words[i + 2 :])
                if "head" in options:
                    prefix = [w for w in words[:i] if w != "env"]
                    yield {**exported, **_assignments(prefix)}, options
                break


def _docker_env(options: list) -> dict[str, str]:
    """Environment variables that ``docker run`` options set (``-e``/``--env``; a later one
    wins, as in Docker). A bare ``-e NAME`` (taken from the host) counts as unset."""
    words = _split_words(" ".join(str(o) for o in options if isinstance(o, str)))
    env: dict[str, str] = {}
    for i, word in enumerate(words):
        value = None
        if word in ("-e", "--env") and i + 1 < len(words):
            value = words[i + 1]
        elif word.startswith(("-e=", "--env=")):
            value = word.partition("=")[2]
        elif word.startswith("-e") and not word.startswith("--") and len(word) > 2:
            value = word[2:]
        if value is not None:
            name, eq, text = value.partition("=")
            if eq:
                env[name] = text
    return env


def _autoscaler_auth_problems(cfg: dict, *, defaulted: bool = False) -> list[str]:
    """A ``ray up`` head whose dashboard listens beyond loopback must start with token auth.

    The head's environment is the container's (``docker.run_options`` + ``head_run_options``
    ``-e`` options, when a ``docker`` image is set) overridden by what the start command itself
    sets (``RAY_AUTH_MODE=token ray start --head ...``, or ``export RAY_AUTH_MODE=token; ...`` in
    the same command: each command runs in a shell of its own). ``cfg`` is the config as
    ``prepare_config`` returns it, so the provider's default start commands are checked too
    (``defaulted``: the file has none of its own).
    """
    key = "head_start_ray_commands"
    label = f"{key} (Ray's default for the provider; set your own)" if defaulted else key
    docker = cfg.get("docker") or {}
    in_container = isinstance(docker, dict) and bool(
        docker.get("image") or docker.get("head_image")
    )
    base = (
        _docker_env(
            list(docker.get("run_options") or []) + list(docker.get("head_run_options") or [])
        )
        if in_container
        else {}
    )
    problems = []
    for i, command in enumerate(cfg.get("head_start_ray_commands") or []):
        if not isinstance(command, str):
            continue
        for env, options in _head_starts(command):
            if "include-dashboard" in options and _off(options["include-dashboard"]):
                continue
            host = options.get("dashboard-host") or RAY_DEFAULT_DASHBOARD_HOST
            mode = {**base, **env}.get(AUTH_MODE_VAR)
            if _is_loopback(host) or (mode or "").lower() == "token":
                continue
            now = f"{AUTH_MODE_VAR} is {mode!r}" if mode else f"{AUTH_MODE_VAR} is not set"
            problems.append(
                f"{key}[{i}]{label[len(key) :]}: `ray start --head` serves the dashboard on "
                f"--dashboard-host={host} without token authentication ({now} for it): "
                f"{_WHY_AUTH}. Give the head RAY_AUTH_MODE=token and a token: docker.run_options "
                "-e RAY_AUTH_MODE=token and -e RAY_AUTH_TOKEN_PATH=/home/ray/.ray-gere/"
                "auth_token, the file synced by file_mounts (clusters/README.md, Token "
                "authentication); or drop --dashboard-host (loopback; `ray dashboard` tunnels "
                f"through SSH); or, on a trusted network only, validate with {OPEN_DASHBOARD_FLAG}"
            )
    return problems


def _version(text: Any) -> tuple[int, ...] | None:
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", text) if isinstance(text, str) else None
    return tuple(int(g) for g in m.groups()) if m else None


# --------------------------------------------------------------------------------------------
# Ray autoscaler YAMLs


@functools.cache
def _ray_schema_validator() -> Any:
    """A Draft-7 validator for Ray's own cluster-config schema (the one ``ray up`` uses)."""
    import jsonschema
    import ray.autoscaler

    schema_file = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return jsonschema.Draft7Validator(json.loads(schema_file.read_text()))


def _schema_problems(raw: dict) -> list[str]:
    return [
        f"{_path_text(path)}: {msg}" for path, msg in _schema_errors(_ray_schema_validator(), raw)
    ]


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a Ray logger's INFO chatter (e.g. 'setting max workers for head node type')."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _node_type_problems(raw: dict) -> list[str]:
    """head_node_type among the node types, worker bounds, declared resources."""
    problems = []
    head = raw.get("head_node_type")
    node_types = raw.get("available_node_types") or {}
    if head is not None and node_types and head not in node_types:
        problems.append(
            f"head_node_type: {head!r} is not a node type{_suggest(head, set(node_types))}; "
            f"name one of available_node_types: {', '.join(node_types)}"
        )
    mins = {k: v.get("min_workers", 0) for k, v in node_types.items() if k != head}
    cap = raw.get("max_workers")
    if cap is not None and sum(mins.values()) > cap:
        problems.append(
            f"max_workers: {cap} is below the sum of the worker types' min_workers "
            f"({sum(mins.values())}); raise max_workers or lower min_workers"
        )
    for name, node_type in node_types.items():
        if name == head or not isinstance(node_type, dict):
            continue
        where = f"available_node_types.{name}.resources"
        res = node_type.get("resources") or {}
        if "CPU" not in res:
            problems.append(
                f"{where}: declare the node type's CPUs (and GPUs), e.g. "
                '{"CPU": 16, "GPU": 1}: auto-detection needs cloud credentials, and an '
                "autoscaler scaling from zero must know what a node offers before one exists"
            )
        if "gpu" in name.lower() and not res.get("GPU"):
            problems.append(
                f'{where}: GPU node type without a "GPU" count; declare it, e.g. '
                '{"CPU": 192, "GPU": 8}, or Ray never schedules GPU workers there'
            )
    return problems


def validate_autoscaler_yaml(path: str | Path, *, allow_open_dashboard: bool = False) -> dict:
    """Validate a ``ray up`` cluster YAML offline; return the config as ``ray up`` prepares it.

    Raises :class:`ClusterConfigError` listing every problem (file, key path, fix). A head that
    serves the dashboard beyond loopback without token authentication is one, unless
    ``allow_open_dashboard`` (``--allow-open-dashboard``: a trusted network).
    """
    path = Path(path)
    docs = _load_documents(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise ClusterConfigError(path, ["expected one YAML mapping (a Ray cluster config)"])
    raw = docs[0]
    if "apiVersion" in raw:
        raise ClusterConfigError(
            path, ["this is a Kubernetes manifest; check it with validate_kuberay_manifest"]
        )
    problems = _schema_problems(raw)
    if not problems:
        problems = _node_type_problems(raw)
    if problems:
        # prepare_config assumes a well-formed config; stop before it.
        raise ClusterConfigError(path, problems)

    # Private API (the steps `ray up` runs first): this validator is a dev tool, checked
    # against the Ray of requirements/ci-constraints.txt; another Ray may have moved it.
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError as exc:
        raise ClusterConfigError(
            path,
            [
                f"this Ray ({_ray_version()}) has no ray.autoscaler._private.util "
                f"({exc}); the validator runs on the Ray of requirements/ci-constraints.txt: "
                "pip install -c requirements/ci-constraints.txt -e '.[dev]'"
            ],
        ) from exc

    try:
        with _quiet("ray.autoscaler._private.util"):
            prepared = prepare_config(copy.deepcopy(raw))
            validate_config(prepared)
    except Exception as exc:  # Ray raises ValueError, RuntimeError, AssertionError, KeyError
        msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        problems.append(f"Ray's prepare_config/validate_config: {msg.splitlines()[0]}")
    else:
        if not allow_open_dashboard:
            defaulted = "head_start_ray_commands" not in raw
            problems += _autoscaler_auth_problems(prepared, defaulted=defaulted)
    if problems:
        raise ClusterConfigError(path, problems)
    return prepared


# --------------------------------------------------------------------------------------------
# KubeRay manifests

RAY_API_VERSION = "ray.io/v1"
RAY_KINDS = ("RayCluster", "RayJob")

KUBERAY_VERSION = "v1.7.0"
"""The KubeRay release whose CRD schemas are stored (``clusters/schemas/README.md``)."""
KUBERAY_SCHEMA_DIR = CLUSTERS_DIR / "schemas" / f"kuberay-{KUBERAY_VERSION}"
KUBERAY_SCHEMA_FILES = {"RayCluster": "raycluster.json", "RayJob": "rayjob.json"}

# ObjectMeta fields a manifest may set. The CRDs give the top-level metadata only
# `type: object`: the API server validates ObjectMeta itself, so the schema cannot catch a typo.
METADATA_KEYS = {
    "name", "namespace", "labels", "annotations", "generateName", "finalizers", "ownerReferences",
}  # fmt: skip
# KubeRay's JobSubmissionMode constants (ray-operator/apis/ray/v1/rayjob_types.go); the CRD
# types submissionMode as a plain string.
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
GPU_RESOURCE = "nvidia.com/gpu"
# The public fields of ray.runtime_env.RuntimeEnv.known_fields in Ray 2.60 (a test keeps this
# list in step with the installed Ray).
RUNTIME_ENV_KEYS = {
    "working_dir", "py_modules", "pip", "uv", "conda", "env_vars", "container", "image_uri",
    "excludes", "config", "py_executable", "java_jars", "worker_process_setup_hook",
}  # fmt: skip
# KubeRay's CRD defaults for a worker group's bounds (used when a key is left out).
DEFAULT_MIN_REPLICAS, DEFAULT_MAX_REPLICAS = 0, 2**31 - 1
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REMOTE_URI = re.compile(r"^(https?|s3|gs|gcs|azure|abfss?)://")

# Keywords whose value is a subschema, a map of subschemas, or a list of them.
_ONE_SCHEMA = ("items", "additionalProperties", "not")
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf")


@functools.cache
def _kuberay_schema_file(kind: str) -> dict:
    return json.loads((KUBERAY_SCHEMA_DIR / KUBERAY_SCHEMA_FILES[kind]).read_text())


def kuberay_schema(kind: str) -> dict:
    """The stored schema file for ``kind`` (``RayCluster`` or ``RayJob``), as KubeRay wrote it.

    Its header names the source: ``kuberay`` (release), ``commit``, ``source`` (CRD path),
    ``apiVersion``; ``openAPIV3Schema`` is the schema.
    """
    return copy.deepcopy(_kuberay_schema_file(kind))


def close_objects(schema: Any) -> Any:
    """A copy of ``schema`` in which every object that declares ``properties`` and neither
    ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields`` forbids other keys
    (``additionalProperties: false``), so that a misspelt key is an error, not ignored."""
    if isinstance(schema, list):
        return [close_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    for k in _ONE_SCHEMA:
        if isinstance(node.get(k), dict | list):
            node[k] = close_objects(node[k])
    for k in _SCHEMA_MAPS:
        if isinstance(node.get(k), dict):
            node[k] = {name: close_objects(sub) for name, sub in node[k].items()}
    for k in _SCHEMA_LISTS:
        if isinstance(node.get(k), list):
            node[k] = close_objects(node[k])
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


def _list_type(validator: Any, list_type: str, instance: Any, schema: dict) -> Iterator[Any]:
    """``x-kubernetes-list-type``: ``set`` items and ``map`` keys are unique (as the API
    server checks); a map key left out counts with its schema default (``protocol: TCP``)."""
    from jsonschema.exceptions import ValidationError

    if not isinstance(instance, list):
        return
    if list_type == "set":
        for i, item in enumerate(instance):
            if item in instance[:i]:
                yield ValidationError(f"{item!r} is listed twice (a set); remove one", path=[i])
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        props = schema.get("items", {}).get("properties", {})
        seen: dict[str, int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            ident = ", ".join(f"{k}={item.get(k, props.get(k, {}).get('default'))!r}" for k in keys)
            if ident in seen:
                yield ValidationError(
                    f"{ident} again (also item [{seen[ident]}]); entries must differ in "
                    f"{', '.join(keys)}",
                    path=[i],
                )
            else:
                seen[ident] = i


@functools.cache
def kuberay_validator(kind: str) -> Any:
    """A validator for a ``kind`` document: the stored CRD schema, closed (:func:`close_objects`),
    with the Kubernetes keywords ``x-kubernetes-list-type`` and ``nullable`` understood."""
    import jsonschema

    base = jsonschema.Draft7Validator
    check_type = base.VALIDATORS["type"]

    def nullable_type(validator: Any, types: Any, instance: Any, schema: dict) -> Iterator[Any]:
        if instance is None and schema.get("nullable"):
            return
        yield from check_type(validator, types, instance, schema)

    cls = jsonschema.validators.extend(
        base, {"type": nullable_type, "x-kubernetes-list-type": _list_type}
    )
    return cls(close_objects(_kuberay_schema_file(kind)["openAPIV3Schema"]))


def _group_label(group: Any) -> str:
    """' (gpu8-80gb)' after a worker group's index, when it has a name."""
    name = group.get("groupName") if isinstance(group, dict) else None
    return f" ({name})" if isinstance(name, str) and name else ""


def _manifest_path(doc: Any, path: list) -> str:
    """The key path as text, naming worker groups: ``spec.workerGroupSpecs[0] (gpu8).replicas``."""
    where, node, parent = "", doc, None
    for key in path:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and 0 <= key < len(node) else None
            where += f"[{key}]" + (_group_label(node) if parent == "workerGroupSpecs" else "")
        else:
            node = node.get(key) if isinstance(node, dict) else None
            where = _join(where, key)
        parent = key
    return where or "top level"


class _Checker:
    """Collects the problems of one manifest document."""

    def __init__(self, prefix: str, *, allow_open_dashboard: bool = False):
        self.prefix = prefix
        self.allow_open_dashboard = allow_open_dashboard
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(
            f"{self.prefix}: {where}: {message}" if where else f"{self.prefix}: {message}"
        )

    def keys(self, obj: dict, allowed: set[str], where: str) -> None:
        for key in obj:
            if key not in allowed:
                self.problems.append(f"{self.prefix}: {_unknown_key(where, key, allowed)}")


def _mapping(obj: Any) -> dict | None:
    """``obj`` if it is a mapping; else None (a wrong type is the schema's to report)."""
    return obj if isinstance(obj, dict) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _gpu_count(value: Any) -> int | None:
    """An nvidia.com/gpu quantity as an int (YAML int or digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _check_start_params(c: _Checker, group: dict, where: str) -> dict:
    """rayStartParams present (operators before 1.4 require it); value types are the schema's."""
    if "rayStartParams" not in group:
        c.add(
            f"{where}.rayStartParams",
            "missing; add it (rayStartParams: {} when there is nothing to pass): KubeRay "
            "operators before 1.4 require it",
        )
    return _mapping(group.get("rayStartParams")) or {}


def _check_pod_template(c: _Checker, template: Any, where: str) -> tuple[int, list[str]]:
    """Policy for a pod template; return (GPUs limited by its containers, container images)."""
    spec = _mapping((_mapping(template) or {}).get("spec"))
    containers = spec.get("containers") if spec else None
    if not isinstance(containers, list):
        return 0, []  # missing or mistyped: the schema says so
    if not containers:
        c.add(f"{where}.spec.containers", "empty; add the Ray container")
    gpus, images = 0, []
    for i, container in enumerate(containers):
        cw = f"{where}.spec.containers[{i}]"
        if not isinstance(container, dict):
            continue
        image = container.get("image")
        if image is None or image == "":
            c.add(f"{cw}.image", "missing; e.g. rayproject/ray:2.60.0-py311-gpu")
        elif isinstance(image, str):
            images.append(image)
        res = _mapping(container.get("resources")) or {}
        limits = _mapping(res.get("limits")) or {}
        requests = _mapping(res.get("requests")) or {}
        if GPU_RESOURCE in limits:
            n = _gpu_count(limits[GPU_RESOURCE])
            if n is None or n < 1:
                c.add(
                    f"{cw}.resources.limits.{GPU_RESOURCE}",
                    f"{limits[GPU_RESOURCE]!r} must be a whole number of GPUs >= 1",
                )
            else:
                gpus += n
                if GPU_RESOURCE in requests and _gpu_count(requests[GPU_RESOURCE]) != n:
                    c.add(
                        f"{cw}.resources.requests.{GPU_RESOURCE}",
                        f"{requests[GPU_RESOURCE]!r} differs from the limit {n}; Kubernetes "
                        "requires equal requests and limits for GPUs (or drop the request)",
                    )
        elif GPU_RESOURCE in requests:
            c.add(
                f"{cw}.resources.limits",
                f"{GPU_RESOURCE} is requested but not limited; set GPUs under limits "
                "(Kubernetes takes the request from the limit)",
            )
            gpus += _gpu_count(requests[GPU_RESOURCE]) or 0  # reported once, here
    return gpus, images


def _check_worker_group(c: _Checker, group: dict, gw: str) -> tuple[bool, list[str]]:
    """Policy for one worker group; return (whether it has a range, its images)."""
    for key in ("replicas", "minReplicas", "maxReplicas"):
        value = _int(group.get(key))
        if value is not None and value < 0:
            c.add(f"{gw}.{key}", f"{value} must be >= 0")
    replicas = _int(group.get("replicas"))
    lo = _int(group.get("minReplicas", DEFAULT_MIN_REPLICAS))
    hi = _int(group.get("maxReplicas", DEFAULT_MAX_REPLICAS))
    has_range = False
    if lo is not None and hi is not None:
        if lo > hi:
            c.add(gw, f"minReplicas {lo} > maxReplicas {hi}; swap or fix them")
        elif replicas is not None and not lo <= replicas <= hi:
            c.add(
                f"{gw}.replicas",
                f"{replicas} must lie in [minReplicas {lo}, maxReplicas {hi}]",
            )
        has_range = lo < hi
    params = _check_start_params(c, group, gw)
    gpus, images = _check_pod_template(c, group.get("template"), f"{gw}.template")
    declared = _gpu_count(params.get("num-gpus"))
    name = group.get("groupName")
    group_res = _mapping(group.get("resources")) or {}
    wants_gpu = (
        (isinstance(name, str) and "gpu" in name.lower())
        or bool(declared)
        or bool(_gpu_count(group_res.get("GPU")))
    )
    if wants_gpu and gpus == 0:
        c.add(
            f"{gw}.template.spec.containers[0].resources.limits",
            f"GPU group without a {GPU_RESOURCE} limit: no GPU would be attached to its "
            f'pods; add {GPU_RESOURCE}: "1" (or 8) to limits',
        )
    if declared is not None and gpus and declared != gpus:
        c.add(
            f"{gw}.rayStartParams.num-gpus",
            f"{declared} differs from the {gpus} GPU(s) in the container limits",
        )
    for image in images:
        if gpus and image.startswith("rayproject/ray:") and "-gpu" not in image:
            if not re.search(r"-cu\d", image):
                c.add(gw, f"GPU group runs the CPU image {image!r}; use a -gpu tag")
    return has_range, images


def _sets_token_mode(container: Any) -> bool:
    """The container's env sets RAY_AUTH_MODE=token (token auth wired by hand, as operators
    before 1.5.1 need: with RAY_AUTH_TOKEN from a Secret)."""
    env = (_mapping(container) or {}).get("env")
    return any(
        isinstance(e, dict) and e.get("name") == AUTH_MODE_VAR and e.get("value") == "token"
        for e in (env if isinstance(env, list) else [])
    )


def _check_dashboard_auth(c: _Checker, spec: dict, where: str) -> None:
    """A head that serves the dashboard beyond loopback needs token authentication:
    ``authOptions.mode: token`` (or RAY_AUTH_MODE=token set by hand in the head container); and
    token mode needs a ``rayVersion`` >= 2.52.0, or KubeRay rejects the spec."""
    auth = spec.get("authOptions")
    mode = (_mapping(auth) or {}).get("mode")
    if mode == "token":
        ray_version = spec.get("rayVersion")
        version = _version(ray_version)
        need = ".".join(map(str, MIN_TOKEN_AUTH_RAY))
        if ray_version is None or ray_version == "":
            c.add(
                f"{where}.rayVersion",
                f"missing, but authOptions.mode is 'token', which KubeRay accepts only with a "
                f'rayVersion >= {need}; set it to the image\'s Ray version, e.g. rayVersion: "2.60.0"',
            )
        elif version is not None and version < MIN_TOKEN_AUTH_RAY:
            c.add(
                f"{where}.rayVersion",
                f"{ray_version!r}: authOptions.mode 'token' needs Ray >= {need} (KubeRay rejects "
                "the spec); use a newer Ray",
            )
        return
    head = _mapping(spec.get("headGroupSpec"))
    if c.allow_open_dashboard or head is None:
        return
    params = _mapping(head.get("rayStartParams")) or {}
    if "include-dashboard" in params and _off(params["include-dashboard"]):
        return
    host = params.get("dashboard-host")
    if isinstance(host, str) and _is_loopback(host):
        return
    containers = ((_mapping(head.get("template")) or {}).get("spec") or {}).get("containers")
    if isinstance(containers, list) and containers and _sets_token_mode(containers[0]):
        return
    if host is None:
        served = (
            f"on {KUBERAY_DEFAULT_DASHBOARD_HOST} (KubeRay's default: headGroupSpec."
            "rayStartParams has no dashboard-host)"
        )
    else:
        served = f"on {host!r} (headGroupSpec.rayStartParams.dashboard-host)"
    if not isinstance(auth, dict):
        key, state = f"{where}.authOptions", "missing"
    else:
        key, state = f"{where}.authOptions.mode", repr(mode) if mode is not None else "missing"
    c.add(
        key,
        f"{state}, so the head serves the dashboard {served} without token authentication: "
        f"{_WHY_AUTH}. Add authOptions: {{mode: token}} (KubeRay operator >= 1.5.1, Ray >= "
        "2.52: the operator generates the token in a Secret named after the RayCluster and sets "
        "RAY_AUTH_MODE and RAY_AUTH_TOKEN in every Ray container; clients read it from there, "
        'see clusters/README.md); or keep the dashboard on loopback (dashboard-host: "127.0.0.1"'
        f"); or, on a trusted network only, validate with {OPEN_DASHBOARD_FLAG}",
    )


def _check_cluster_spec(c: _Checker, spec: dict, where: str) -> None:
    """The project's policy for a RayClusterSpec (its structure is the schema's)."""
    all_images: list[tuple[str, str]] = []
    head = _mapping(spec.get("headGroupSpec"))
    if head is not None:
        hw = f"{where}.headGroupSpec"
        _check_start_params(c, head, hw)
        _, images = _check_pod_template(c, head.get("template"), f"{hw}.template")
        all_images += [(hw, im) for im in images]

    groups = spec.get("workerGroupSpecs")
    names: set[str] = set()
    has_range = False
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        if not isinstance(group, dict):
            continue
        gw = f"{where}.workerGroupSpecs[{i}]{_group_label(group)}"
        name = group.get("groupName")
        if isinstance(name, str):
            if not DNS_LABEL.match(name) or len(name) > 63:
                c.add(f"{gw}.groupName", f"{name!r}: give a lowercase name like gpu8-h100")
            elif name in names:
                c.add(f"{gw}.groupName", f"{name!r} is used twice; group names must be unique")
            names.add(name)
        group_range, images = _check_worker_group(c, group, gw)
        has_range = has_range or group_range
        all_images += [(gw, im) for im in images]

    if has_range and spec.get("enableInTreeAutoscaling") is not True:
        c.add(
            f"{where}.enableInTreeAutoscaling",
            "a worker group has minReplicas < maxReplicas but autoscaling is off, so KubeRay "
            "keeps `replicas` fixed; set enableInTreeAutoscaling: true",
        )
    _check_dashboard_auth(c, spec, where)
    ray_version = spec.get("rayVersion")
    if isinstance(ray_version, str) and ray_version:
        for gw, image in all_images:
            tag = image.rsplit(":", 1)[-1] if ":" in image else ""
            m = re.match(r"^(\d+\.\d+\.\d+)", tag)
            if image.startswith("rayproject/") and m and m.group(1) != ray_version:
                c.add(
                    gw,
                    f"image {image!r} is Ray {m.group(1)} but rayVersion is {ray_version!r}; "
                    "make them agree",
                )


def _check_runtime_env(c: _Checker, text: Any, where: str) -> None:
    if not isinstance(text, str):
        return  # the schema reports a non-string
    try:
        env = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        c.add(where, f"not valid YAML: {exc}")
        return
    if env is None:
        return
    if not isinstance(env, dict):
        c.add(where, "must hold a mapping of runtime-env fields (working_dir, pip, env_vars...)")
        return
    c.keys(env, RUNTIME_ENV_KEYS, where)
    working_dir = env.get("working_dir")
    if isinstance(working_dir, str) and not REMOTE_URI.match(working_dir):
        c.add(
            f"{where}.working_dir",
            f"{working_dir!r} is a local path, but a RayJob is submitted from a pod with no "
            "checkout; use a remote URI such as https://github.com/ORG/REPO/archive/SHA.zip "
            "or s3://BUCKET/code.zip",
        )


def _check_rayjob_spec(c: _Checker, spec: dict, where: str) -> None:
    """The project's policy for a RayJobSpec (its structure is the schema's)."""
    mode = spec.get("submissionMode", "K8sJobMode")
    if isinstance(mode, str) and mode not in SUBMISSION_MODES:
        c.add(
            f"{where}.submissionMode",
            f"{mode!r}{_suggest(mode, SUBMISSION_MODES)} is not one of "
            f"{', '.join(sorted(SUBMISSION_MODES))}",
        )
    entrypoint = spec.get("entrypoint")
    if mode != "InteractiveMode" and (entrypoint is None or entrypoint == ""):
        c.add(
            f"{where}.entrypoint",
            "missing; the command to run, e.g. python studies/lr_robustness.py --storage-path ...",
        )
    has_spec, has_selector = "rayClusterSpec" in spec, "clusterSelector" in spec
    if has_spec == has_selector:
        c.add(
            where,
            "give exactly one of rayClusterSpec (a cluster made for this job) or "
            "clusterSelector (labels of a running RayCluster)",
        )
    cluster = _mapping(spec.get("rayClusterSpec"))
    if cluster is not None:
        _check_cluster_spec(c, cluster, f"{where}.rayClusterSpec")
    ttl = _int(spec.get("ttlSecondsAfterFinished"))
    if ttl and spec.get("shutdownAfterJobFinishes") is not True:
        c.add(
            f"{where}.ttlSecondsAfterFinished",
            "only takes effect with shutdownAfterJobFinishes: true",
        )
    if "runtimeEnvYAML" in spec:
        _check_runtime_env(c, spec["runtimeEnvYAML"], f"{where}.runtimeEnvYAML")


def validate_kuberay_manifest(
    path: str | Path, *, allow_open_dashboard: bool = False
) -> list[dict]:
    """Check a KubeRay manifest (one or more YAML documents); return the documents.

    Each RayCluster / RayJob is validated against KubeRay's CRD schema (:data:`KUBERAY_VERSION`,
    objects closed to unknown keys) and the project's policy; other Kubernetes objects get an
    envelope check (apiVersion, kind, metadata.name). Raises :class:`ClusterConfigError` listing
    every problem (file, document, key path, fix). A head that serves the dashboard beyond
    loopback without ``authOptions.mode: token`` is one, unless ``allow_open_dashboard``
    (``--allow-open-dashboard``: a trusted network).
    """
    path = Path(path)
    docs = _load_documents(path)
    if not docs:
        raise ClusterConfigError(path, ["no YAML documents"])
    problems: list[str] = []
    ray_docs = 0
    for n, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            problems.append(f"document {n}: must be a mapping (a Kubernetes object)")
            continue
        kind, api = doc.get("kind"), doc.get("apiVersion")
        meta = _mapping(doc.get("metadata")) or {}
        name = meta.get("name")
        c = _Checker(
            f"document {n} ({kind or '?'} {name or '?'})", allow_open_dashboard=allow_open_dashboard
        )
        if not api or not kind:
            c.add("", "missing apiVersion or kind")
        if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
            c.add("metadata.name", f"{name!r}: give a lowercase DNS name (a-z, 0-9, -)")
        is_ray = kind in RAY_KINDS or (isinstance(api, str) and api.startswith("ray.io/"))
        if not is_ray:
            problems += c.problems  # other Kubernetes objects: only the envelope is checked
            continue
        ray_docs += 1
        if api != RAY_API_VERSION:
            c.add("apiVersion", f"{api!r}: KubeRay's stable API is {RAY_API_VERSION!r}")
        if kind not in RAY_KINDS:
            c.add("kind", f"{kind!r}{_suggest(str(kind), RAY_KINDS)} is not one of {RAY_KINDS}")
            problems += c.problems
            continue
        for where, message in _schema_errors(kuberay_validator(kind), doc):
            c.add(_manifest_path(doc, where), message)
        c.keys(meta, METADATA_KEYS, "metadata")
        spec = doc.get("spec")
        if spec is None:
            c.add("spec", "missing; add it")
        elif isinstance(spec, dict):
            check = _check_cluster_spec if kind == "RayCluster" else _check_rayjob_spec
            check(c, spec, "spec")
        problems += c.problems
    if not ray_docs and not problems:
        problems.append("no RayCluster or RayJob document")
    if problems:
        raise ClusterConfigError(path, problems)
    return docs


# --------------------------------------------------------------------------------------------
# Command line


def is_kuberay_file(path: str | Path) -> bool:
    """A Kubernetes manifest (any document with apiVersion) rather than a ``ray up`` YAML."""
    docs = _load_documents(Path(path))
    return any(isinstance(d, dict) and "apiVersion" in d for d in docs)


def find_configs(root: str | Path = CLUSTERS_DIR) -> list[Path]:
    """Every cluster YAML under ``root`` (default: ``clusters/``), sorted."""
    root = Path(root)
    return sorted(p for ext in ("*.yaml", "*.yml") for p in root.rglob(ext))


def describe(path: str | Path, *, allow_open_dashboard: bool = False) -> str:
    """Validate one file (either kind) and return a one-line summary; raises on problems."""
    path = Path(path)
    if is_kuberay_file(path):
        docs = validate_kuberay_manifest(path, allow_open_dashboard=allow_open_dashboard)
        kinds = ", ".join(f"{d.get('kind')} {d.get('metadata', {}).get('name')}" for d in docs)
        return f"KubeRay manifest ({KUBERAY_VERSION} CRDs): {kinds}"
    cfg = validate_autoscaler_yaml(path, allow_open_dashboard=allow_open_dashboard)
    head = cfg["head_node_type"]
    workers = {k: v for k, v in cfg["available_node_types"].items() if k != head}
    gpus = sum(v["max_workers"] * v["resources"].get("GPU", 0) for v in workers.values())
    return (
        f"ray up config ({cfg['provider']['type']}): head {head}, {len(workers)} worker types, "
        f"max {cfg['max_workers']} workers / {gpus} GPUs"
    )


def _relative(path: Path) -> Path:
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clusters.validate",
        description="Validate Ray autoscaler YAMLs and KubeRay manifests offline.",
    )
    parser.add_argument(
        "files", nargs="*", type=Path, help="YAML files (default: every YAML under clusters/)"
    )
    parser.add_argument(
        OPEN_DASHBOARD_FLAG,
        action="store_true",
        help="accept a head that serves the dashboard beyond loopback without token "
        "authentication (only on a trusted network: anyone who reaches it can run code)",
    )
    args = parser.parse_args(argv)
    files = args.files or [_relative(p) for p in find_configs()]
    failed = 0
    for path in files:
        start = time.perf_counter()
        try:
            summary = describe(path, allow_open_dashboard=args.allow_open_dashboard)
        except ClusterConfigError as exc:
            failed += 1
            print(f"FAIL {exc}")
            continue
        ms = (time.perf_counter() - start) * 1e3
        print(f"ok   {path}: {summary} [{ms:.0f} ms]")
        todo = placeholders(path)
        if todo:
            print(f"     {len(todo)} line(s) to fill in before use (grep -n {PLACEHOLDER} {path})")
    print(f"{len(files) - failed} ok, {failed} failed")
    if args.allow_open_dashboard:
        print(f"({OPEN_DASHBOARD_FLAG}: a dashboard served without token authentication passed)")
    return 1 if failed else 0


def _ray_version() -> str:
    import ray

    return f"ray {ray.__version__}"


if __name__ == "__main__":
    sys.exit(main())
