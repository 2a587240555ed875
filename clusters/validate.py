"""Offline validation of the cluster configs under ``clusters/``: no credentials, no network.

    python -m clusters.validate                      # every YAML under clusters/
    python -m clusters.validate clusters/aws-gpu.yaml clusters/kuberay/rayjob.yaml

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
  (``ray.autoscaler._private.util``): the project pins ``ray==2.60.0``. On top of Ray's checks:
  every worker node type must declare its ``resources`` (CPU, and GPU for a type named ``*gpu*``),
  because auto-detection needs credentials and an autoscaler scaling from zero must know what a
  node type offers before one exists.
* **KubeRay manifests** (``ray.io/v1`` ``RayCluster`` / ``RayJob``, with other Kubernetes
  documents such as a ``PersistentVolumeClaim`` allowed beside them):
  :func:`validate_kuberay_manifest` checks the structure KubeRay needs, with a list of allowed
  keys at each level it walks (spec, head and worker groups, pod template, pod spec, containers,
  resources), so a misspelt key is rejected with a did-you-mean. Checked: ``apiVersion`` and
  ``kind``; ``metadata.name``; ``headGroupSpec``; each worker group's ``groupName``, ``replicas``
  / ``minReplicas`` / ``maxReplicas`` (integers, min <= replicas <= max); ``rayStartParams`` as a
  string-to-string map (a bare YAML number fails at ``kubectl apply``); containers with ``name``
  and ``image``; ``nvidia.com/gpu`` limits on GPU groups; autoscaling enabled when a group has a
  range; ``rayVersion`` a string that matches the image tag; a RayJob's ``entrypoint``, exactly
  one of ``rayClusterSpec`` / ``clusterSelector``, and a ``runtimeEnvYAML`` that parses, uses
  known runtime-env fields and ships code from a URI (the submitter pod has no checkout).

Not checkable offline: whether instance / machine types, AMIs, images, zones, quotas, buckets,
IAM roles, storage classes or service accounts exist; the contents of ``node_config`` and
``provider`` (free-form in Ray's schema: a misspelt key there passes and fails at launch); the
Kubernetes core types below the levels listed above (probes, volumes, affinity); and
the version of the KubeRay CRDs installed in a cluster (``kubectl apply --dry-run=server`` does
that). Every problem in a file is reported at once, naming the file, the key path and the fix.
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
    hint = _suggest(key, allowed)
    fix = "rename it" if hint else "remove it"
    return f"{where}: unknown key {key!r}{hint}; {fix}. Allowed here: {', '.join(sorted(allowed))}"


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


# --------------------------------------------------------------------------------------------
# Ray autoscaler YAMLs


@functools.cache
def _ray_schema_validator() -> Any:
    """A Draft-7 validator for Ray's own cluster-config schema (the one ``ray up`` uses)."""
    import jsonschema
    import ray.autoscaler

    schema_file = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return jsonschema.Draft7Validator(json.loads(schema_file.read_text()))


def _subschema(schema: dict, path: list) -> dict:
    """The schema node that governs the instance at ``path`` (objects only; enough for keys)."""
    node = schema
    for key in path:
        props = node.get("properties", {})
        if isinstance(key, str) and key in props:
            node = props[key]
        elif node.get("patternProperties"):
            node = next(iter(node["patternProperties"].values()))
        elif isinstance(key, int) and isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            return {}
    return node


def _schema_problems(raw: dict) -> list[str]:
    validator = _ray_schema_validator()
    schema = validator.schema
    problems = []
    for err in sorted(validator.iter_errors(raw), key=lambda e: [str(p) for p in e.path]):
        where = ""
        for key in err.absolute_path:
            where = _join(where, key)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            node = _subschema(schema, list(err.absolute_path))
            allowed = set(node.get("properties", {}))
            for key in sorted(set(err.instance) - allowed):
                problems.append(_unknown_key(where or "top level", key, allowed))
        else:
            problems.append(f"{where or 'top level'}: {err.message}")
    return problems


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


def validate_autoscaler_yaml(path: str | Path) -> dict:
    """Validate a ``ray up`` cluster YAML offline; return the config as ``ray up`` prepares it.

    Raises :class:`ClusterConfigError` listing every problem (file, key path, fix).
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

    # Private API, stable within the pinned ray==2.60.0: the steps `ray up` runs first.
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        with _quiet("ray.autoscaler._private.util"):
            prepared = prepare_config(copy.deepcopy(raw))
            validate_config(prepared)
    except Exception as exc:  # Ray raises ValueError, RuntimeError, AssertionError, KeyError
        msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        problems.append(f"Ray's prepare_config/validate_config: {msg.splitlines()[0]}")
    if problems:
        raise ClusterConfigError(path, problems)
    return prepared


# --------------------------------------------------------------------------------------------
# KubeRay manifests

RAY_API_VERSION = "ray.io/v1"
RAY_KINDS = ("RayCluster", "RayJob")

TOP_KEYS = {"apiVersion", "kind", "metadata", "spec"}
METADATA_KEYS = {"name", "namespace", "labels", "annotations", "generateName", "finalizers"}
# KubeRay ray.io/v1 RayClusterSpec (operator 1.1 through 1.5+).
CLUSTER_SPEC_KEYS = {
    "headGroupSpec", "workerGroupSpecs", "rayVersion", "enableInTreeAutoscaling",
    "autoscalerOptions", "headServiceAnnotations", "suspend", "managedBy", "authOptions",
    "gcsFaultToleranceOptions", "upgradeStrategy", "networkPolicy", "tlsOptions",
    "historyServerOptions",
}  # fmt: skip
HEAD_GROUP_KEYS = {
    "rayStartParams", "template", "serviceType", "headService", "enableIngress",
    "ingressOptions", "resources", "labels",
}  # fmt: skip
WORKER_GROUP_KEYS = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template",
    "idleTimeoutSeconds", "numOfHosts", "scaleStrategy", "suspend", "resources", "labels",
    "priority",
}  # fmt: skip
AUTOSCALER_OPTION_KEYS = {
    "resources", "image", "imagePullPolicy", "env", "envFrom", "volumeMounts",
    "securityContext", "idleTimeoutSeconds", "upscalingMode", "version", "command", "args",
}  # fmt: skip
RAYJOB_SPEC_KEYS = {
    "entrypoint", "rayClusterSpec", "clusterSelector", "runtimeEnvYAML", "jobId",
    "shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "activeDeadlineSeconds",
    "backoffLimit", "submissionMode", "submitterPodTemplate", "submitterConfig", "metadata",
    "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "suspend", "managedBy",
    "deletionStrategy", "submitterFinishedTimeoutSeconds", "schedule",
}  # fmt: skip
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
TEMPLATE_KEYS = {"metadata", "spec"}
# Kubernetes core/v1 PodSpec and Container fields.
POD_SPEC_KEYS = {
    "containers", "initContainers", "ephemeralContainers", "volumes", "restartPolicy",
    "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy", "dnsConfig",
    "nodeSelector", "serviceAccountName", "serviceAccount", "automountServiceAccountToken",
    "nodeName", "hostNetwork", "hostPID", "hostIPC", "hostUsers", "shareProcessNamespace",
    "securityContext", "imagePullSecrets", "hostname", "subdomain", "setHostnameAsFQDN",
    "affinity", "schedulerName", "tolerations", "hostAliases", "priorityClassName", "priority",
    "preemptionPolicy", "readinessGates", "runtimeClassName", "enableServiceLinks", "overhead",
    "topologySpreadConstraints", "os", "schedulingGates", "resourceClaims", "resources",
}  # fmt: skip
CONTAINER_KEYS = {
    "name", "image", "command", "args", "workingDir", "ports", "env", "envFrom", "resources",
    "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices", "livenessProbe",
    "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
    "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
}  # fmt: skip
RESOURCE_KEYS = {"limits", "requests", "claims"}
GPU_RESOURCE = "nvidia.com/gpu"
# The public fields of ray.runtime_env.RuntimeEnv.known_fields in Ray 2.60 (a test keeps this
# list in step with the installed Ray).
RUNTIME_ENV_KEYS = {
    "working_dir", "py_modules", "pip", "uv", "conda", "env_vars", "container", "image_uri",
    "excludes", "config", "py_executable", "java_jars", "worker_process_setup_hook",
}  # fmt: skip
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
REMOTE_URI = re.compile(r"^(https?|s3|gs|gcs|azure|abfss?)://")


class _Checker:
    """Collects the problems of one manifest document."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(
            f"{self.prefix}: {where}: {message}" if where else f"{self.prefix}: {message}"
        )

    def keys(self, obj: dict, allowed: set[str], where: str) -> None:
        for key in obj:
            if key not in allowed:
                self.problems.append(f"{self.prefix}: {_unknown_key(where, key, allowed)}")

    def mapping(self, obj: Any, where: str, *, required: bool = True) -> dict | None:
        if obj is None:
            if required:
                self.add(where, "missing; add it")
            return None
        if not isinstance(obj, dict):
            self.add(where, f"must be a mapping, got {type(obj).__name__}")
            return None
        return obj

    def integer(self, value: Any, where: str, *, required: bool = True) -> int | None:
        if value is None:
            if required:
                self.add(where, "missing; add an integer >= 0")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.add(where, f"{value!r} must be an integer >= 0")
            return None
        return value


def _gpu_count(value: Any) -> int | None:
    """An nvidia.com/gpu quantity as an int (YAML int or digit string), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _check_start_params(c: _Checker, params: Any, where: str) -> dict:
    if params is None:
        c.add(where, "missing; add it (rayStartParams: {} when there is nothing to pass)")
        return {}
    params = c.mapping(params, where)
    if params is None:
        return {}
    for key, value in params.items():
        if not isinstance(value, str):
            c.add(
                f"{where}.{key}",
                f'{value!r} is not a string; KubeRay wants strings here: write {key}: "{value}"',
            )
    return params


def _check_pod_template(c: _Checker, template: Any, where: str) -> tuple[int, list[str]]:
    """Check a pod template; return (GPUs requested by its containers, container images)."""
    template = c.mapping(template, where)
    if template is None:
        return 0, []
    c.keys(template, TEMPLATE_KEYS, where)
    spec = c.mapping(template.get("spec"), f"{where}.spec")
    if spec is None:
        return 0, []
    c.keys(spec, POD_SPEC_KEYS, f"{where}.spec")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        c.add(f"{where}.spec.containers", "missing or empty; add the Ray container")
        return 0, []
    gpus, images = 0, []
    for i, container in enumerate(containers):
        cw = f"{where}.spec.containers[{i}]"
        container = c.mapping(container, cw)
        if container is None:
            continue
        c.keys(container, CONTAINER_KEYS, cw)
        if not container.get("name"):
            c.add(f"{cw}.name", "missing; name the container (e.g. ray-worker)")
        image = container.get("image")
        if not isinstance(image, str) or not image:
            c.add(f"{cw}.image", "missing; e.g. rayproject/ray:2.60.0-py311-gpu")
        else:
            images.append(image)
        res = c.mapping(container.get("resources"), f"{cw}.resources", required=False)
        if res is None:
            continue
        c.keys(res, RESOURCE_KEYS, f"{cw}.resources")
        limits = c.mapping(res.get("limits"), f"{cw}.resources.limits", required=False) or {}
        requests = c.mapping(res.get("requests"), f"{cw}.resources.requests", required=False) or {}
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


def _check_cluster_spec(c: _Checker, spec: Any, where: str) -> None:
    spec = c.mapping(spec, where)
    if spec is None:
        return
    c.keys(spec, CLUSTER_SPEC_KEYS, where)

    ray_version = spec.get("rayVersion")
    if ray_version is not None and not isinstance(ray_version, str):
        c.add(
            f"{where}.rayVersion",
            f"{ray_version!r} is not a string (YAML read a number); quote it: "
            f'rayVersion: "{ray_version}"',
        )
        ray_version = None
    opts = c.mapping(spec.get("autoscalerOptions"), f"{where}.autoscalerOptions", required=False)
    if opts is not None:
        c.keys(opts, AUTOSCALER_OPTION_KEYS, f"{where}.autoscalerOptions")

    all_images: list[tuple[str, str]] = []
    head_where = f"{where}.headGroupSpec"
    head = c.mapping(spec.get("headGroupSpec"), head_where)
    if head is not None:
        c.keys(head, HEAD_GROUP_KEYS, head_where)
        _check_start_params(c, head.get("rayStartParams"), f"{head_where}.rayStartParams")
        _, images = _check_pod_template(c, head.get("template"), f"{head_where}.template")
        all_images += [(head_where, im) for im in images]

    groups = spec.get("workerGroupSpecs", [])
    if not isinstance(groups, list):
        c.add(f"{where}.workerGroupSpecs", "must be a list of worker groups")
        groups = []
    names: set[str] = set()
    has_range = False
    for i, group in enumerate(groups):
        gw = f"{where}.workerGroupSpecs[{i}]"
        group = c.mapping(group, gw)
        if group is None:
            continue
        c.keys(group, WORKER_GROUP_KEYS, gw)
        name = group.get("groupName")
        if not isinstance(name, str) or not DNS_LABEL.match(name):
            c.add(f"{gw}.groupName", f"{name!r}: give a lowercase name like gpu8-h100")
        elif name in names:
            c.add(f"{gw}.groupName", f"{name!r} is used twice; group names must be unique")
        else:
            names.add(name)
            gw = f"{where}.workerGroupSpecs[{i}] ({name})"
        replicas = c.integer(group.get("replicas"), f"{gw}.replicas")
        lo = c.integer(group.get("minReplicas"), f"{gw}.minReplicas")
        hi = c.integer(group.get("maxReplicas"), f"{gw}.maxReplicas")
        if lo is not None and hi is not None:
            if lo > hi:
                c.add(gw, f"minReplicas {lo} > maxReplicas {hi}; swap or fix them")
            elif replicas is not None and not lo <= replicas <= hi:
                c.add(f"{gw}.replicas", f"{replicas} must lie in [minReplicas {lo}, {hi}]")
            has_range = has_range or lo < hi
        params = _check_start_params(c, group.get("rayStartParams"), f"{gw}.rayStartParams")
        gpus, images = _check_pod_template(c, group.get("template"), f"{gw}.template")
        all_images += [(gw, im) for im in images]
        declared = _gpu_count(params.get("num-gpus"))
        group_res = group.get("resources") if isinstance(group.get("resources"), dict) else {}
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

    if has_range and spec.get("enableInTreeAutoscaling") is not True:
        c.add(
            f"{where}.enableInTreeAutoscaling",
            "a worker group has minReplicas < maxReplicas but autoscaling is off, so KubeRay "
            "keeps `replicas` fixed; set enableInTreeAutoscaling: true",
        )
    if ray_version:
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
        c.add(where, "must be a YAML string (use `runtimeEnvYAML: |` and indent the block)")
        return
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


def _check_rayjob_spec(c: _Checker, spec: Any, where: str) -> None:
    spec = c.mapping(spec, where)
    if spec is None:
        return
    c.keys(spec, RAYJOB_SPEC_KEYS, where)
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode not in SUBMISSION_MODES:
        c.add(f"{where}.submissionMode", f"{mode!r}{_suggest(mode, SUBMISSION_MODES)} is unknown")
    entrypoint = spec.get("entrypoint")
    if mode != "InteractiveMode" and (not isinstance(entrypoint, str) or not entrypoint.strip()):
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
    if has_spec:
        _check_cluster_spec(c, spec["rayClusterSpec"], f"{where}.rayClusterSpec")
    shutdown = spec.get("shutdownAfterJobFinishes")
    if shutdown is not None and not isinstance(shutdown, bool):
        c.add(f"{where}.shutdownAfterJobFinishes", f"{shutdown!r} must be true or false")
    ttl = spec.get("ttlSecondsAfterFinished")
    if ttl is not None:
        ttl = c.integer(ttl, f"{where}.ttlSecondsAfterFinished")
        if ttl and shutdown is not True:
            c.add(
                f"{where}.ttlSecondsAfterFinished",
                "only takes effect with shutdownAfterJobFinishes: true",
            )
    if "runtimeEnvYAML" in spec:
        _check_runtime_env(c, spec["runtimeEnvYAML"], f"{where}.runtimeEnvYAML")


def validate_kuberay_manifest(path: str | Path) -> list[dict]:
    """Check a KubeRay manifest (one or more YAML documents); return the documents.

    Raises :class:`ClusterConfigError` listing every problem (file, document, key path, fix).
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
        meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        name = meta.get("name")
        c = _Checker(f"document {n} ({kind or '?'} {name or '?'})")
        if not api or not kind:
            c.add("", "missing apiVersion or kind")
        if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
            c.add("metadata.name", f"{name!r}: give a lowercase DNS name (a-z, 0-9, -)")
        is_ray = kind in RAY_KINDS or (isinstance(api, str) and api.startswith("ray.io/"))
        if not is_ray:
            problems += c.problems  # other Kubernetes objects: only the envelope is checked
            continue
        ray_docs += 1
        c.keys(doc, TOP_KEYS, "top level")
        c.keys(meta, METADATA_KEYS, "metadata")
        if api != RAY_API_VERSION:
            c.add("apiVersion", f"{api!r}: KubeRay's stable API is {RAY_API_VERSION!r}")
        if kind == "RayCluster":
            _check_cluster_spec(c, doc.get("spec"), "spec")
        elif kind == "RayJob":
            _check_rayjob_spec(c, doc.get("spec"), "spec")
        else:
            c.add("kind", f"{kind!r}{_suggest(str(kind), RAY_KINDS)} is not one of {RAY_KINDS}")
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


def describe(path: str | Path) -> str:
    """Validate one file (either kind) and return a one-line summary; raises on problems."""
    path = Path(path)
    if is_kuberay_file(path):
        docs = validate_kuberay_manifest(path)
        kinds = ", ".join(f"{d.get('kind')} {d.get('metadata', {}).get('name')}" for d in docs)
        return f"KubeRay manifest: {kinds}"
    cfg = validate_autoscaler_yaml(path)
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
    args = parser.parse_args(argv)
    files = args.files or [_relative(p) for p in find_configs()]
    failed = 0
    for path in files:
        start = time.perf_counter()
        try:
            summary = describe(path)
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
