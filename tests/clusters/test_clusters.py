"""Cluster configs: every shipped YAML passes offline validation (Ray's own schema and
``prepare_config``/``validate_config`` for ``ray up`` files; KubeRay's own CRD schemas, stored
under clusters/schemas/, plus the project's policy for KubeRay manifests), a misspelt key or a
broken manifest is rejected with the key path named, and the memory arithmetic in
clusters/README.md is recomputed from the Llama-3.1-8B shape."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from clusters import validate as cv
from tests.fixtures import AUTOSCALER, CLUSTERS, KUBERAY, REPO, file_ids, load_manifests, write_file

ROOT = REPO

README = (CLUSTERS / "README.md").read_text()
IMAGE = "rayproject/ray:2.60.0-py311-gpu"


def _is_spot(node_config: dict) -> bool:
    aws = node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    gcp = node_config.get("scheduling", {}).get("provisioningModel") == "SPOT"
    return aws or gcp


def test_the_expected_files_are_there():
    assert file_ids(AUTOSCALER) == ["aws-gpu.yaml", "gcp-gpu.yaml"]
    assert file_ids(KUBERAY) == ["raycluster.yaml", "rayjob.yaml"]
    assert cv.find_configs() == sorted(AUTOSCALER + KUBERAY)
    assert [cv.is_kuberay_file(p) for p in AUTOSCALER] == [False, False]
    assert all(cv.is_kuberay_file(p) for p in KUBERAY)


# --------------------------------------------------------------------------------------------
# Ray autoscaler YAMLs


@pytest.mark.parametrize("path", AUTOSCALER, ids=file_ids(AUTOSCALER))
def test_autoscaler_yaml_passes_rays_validation(path: Path):
    cfg = cv.validate_autoscaler_yaml(path)
    # prepare_config ran: per-type bounds are filled and setup commands merged.
    assert cfg["available_node_types"][cfg["head_node_type"]]["max_workers"] == 0
    assert cfg["worker_setup_commands"][0] == cfg["setup_commands"][0]
    assert cfg["docker"]["image"] == IMAGE


@pytest.mark.parametrize("path", AUTOSCALER, ids=file_ids(AUTOSCALER))
def test_autoscaler_yaml_shape(path: Path):
    """On-demand CPU head; GPU workers from zero, each spot type with an on-demand twin."""
    raw = yaml.safe_load(path.read_text())
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert not _is_spot(head["node_config"]), "the driver runs on the head: keep it on-demand"
    assert "GPU" not in head["resources"]
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    assert sum(v["max_workers"] for v in workers.values()) == raw["max_workers"]
    assert {v["resources"]["GPU"] for v in workers.values()} == {1, 8}
    for name, node_type in workers.items():
        assert node_type["min_workers"] == 0, f"{name} must scale from zero"
        assert node_type["resources"]["CPU"] > 0
    spot = {k: v for k, v in workers.items() if _is_spot(v["node_config"])}
    assert spot, "GPU workers should use spot / preemptible capacity"
    for name, node_type in spot.items():
        twin = workers[name.replace("-spot", "-ondemand")]
        assert not _is_spot(twin["node_config"])
        assert twin["resources"] == node_type["resources"]
        assert twin["priority"] < node_type["priority"], "spot first, on-demand as fallback"
    # The project is installed on every node; token auth and the data dir are wired in.
    assert any("pip install" in c and "gere-harness" in c for c in raw["setup_commands"])
    options = " ".join(raw["docker"]["run_options"])
    assert "RAY_AUTH_MODE=token" in options and "GERE_DATA_DIR=" in options
    assert "/home/ray/gere-harness" in raw["file_mounts"]
    assert "YOUR-BUCKET" in path.read_text()


def test_ray_schema_rejects_unknown_keys_where_we_rely_on_it():
    """The typo checks below rest on Ray's schema forbidding extra keys at these levels; the
    provider section (and node_config) are free-form, which the README states."""
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    props = schema["properties"]
    assert schema["additionalProperties"] is False
    assert props["available_node_types"]["patternProperties"][".*"]["additionalProperties"] is False
    assert props["docker"]["additionalProperties"] is False
    assert props["provider"]["additionalProperties"] is True


TYPOS = [
    # (file, text replaced, replacement, key named, suggestion)
    ("aws-gpu.yaml", "max_workers: 15", "max_worker: 15", "max_worker", "max_workers"),
    (
        "gcp-gpu.yaml",
        "available_node_types:",
        "avaliable_node_types:",
        "avaliable_node_types",
        "available_node_types",
    ),
    ("aws-gpu.yaml", "    min_workers: 0", "    min_worker: 0", "min_worker", "min_workers"),
    ("gcp-gpu.yaml", '    resources: {"CPU": 12', '    resource: {"CPU": 12', "resource", "resources"),
    ("aws-gpu.yaml", "  image: rayproject", "  imgae: rayproject", "imgae", "image"),
    ("gcp-gpu.yaml", "idle_timeout_minutes:", "idle_timeout_minute:", "idle_timeout_minute", "idle_timeout_minutes"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "old", "new", "key", "hint"), TYPOS, ids=[t[3] for t in TYPOS])
def test_autoscaler_typo_is_rejected_naming_the_key(tmp_path, name, old, new, key, hint):
    text = (CLUSTERS / name).read_text()
    assert old in text
    path = write_file(tmp_path, name, text.replace(old, new, 1))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_autoscaler_yaml(path)
    message = str(exc.value)
    assert str(path) in message
    assert f"unknown key {key!r} (did you mean {hint!r}?)" in message


SEMANTIC = {
    # name: (edits applied in order, expected message)
    "head-type": (
        [("head_node_type: head-cpu-ondemand", "head_node_type: head-cpu-ondmand")],
        "head_node_type: 'head-cpu-ondmand' is not a node type (did you mean 'head-cpu-ondemand'?)",
    ),
    "min-over-max": (
        [("    min_workers: 0", "    min_workers: 2"), ("max_workers: 15", "max_workers: 1")],
        "max_workers: 1 is below the sum of the worker types' min_workers (2)",
    ),
    "no-gpu-count": (
        [('resources: {"CPU": 16, "GPU": 1}', 'resources: {"CPU": 16}')],
        'without a "GPU" count',
    ),
    "no-resources": (
        [('resources: {"CPU": 16, "GPU": 1}', "resources: {}")],
        "declare the node type's CPUs",
    ),
    "fractional-gpu": (
        [('resources: {"CPU": 16, "GPU": 1}', 'resources: {"CPU": 16, "GPU": 1.5}')],
        "1.5 is not of type 'integer'",
    ),
}


@pytest.mark.parametrize("how", SEMANTIC)
def test_autoscaler_semantic_problems_are_reported(tmp_path, how):
    edits, expected = SEMANTIC[how]
    text = (CLUSTERS / "aws-gpu.yaml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_autoscaler_yaml(write_file(tmp_path, "aws.yaml", text))
    assert expected in str(exc.value)


def test_every_problem_is_listed_at_once(tmp_path):
    text = (CLUSTERS / "aws-gpu.yaml").read_text()
    text = text.replace("max_workers: 15", "max_worker: 15").replace("  image:", "  imgae:")
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_autoscaler_yaml(write_file(tmp_path, "aws.yaml", text))
    assert len(exc.value.problems) == 2


def test_autoscaler_validation_is_offline_and_fast(monkeypatch, tmp_path):
    """No credentials, no network: the cloud SDKs' config is hidden and sockets refuse."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws, no ~/.config/gcloud
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE",
                "GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("validation tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    for path in AUTOSCALER:
        cv.validate_autoscaler_yaml(path)  # warm: Ray imported, schema loaded
        best = min(_timed(cv.validate_autoscaler_yaml, path) for _ in range(3))
        assert best < 0.5, f"{path.name}: {best:.3f} s"


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# KubeRay manifests


SCHEMAS = CLUSTERS / "schemas"
GROUP0 = "spec.workerGroupSpecs[0] (gpu8-80gb)"
POD0 = f"{GROUP0}.template.spec"


def test_kuberay_schemas_load_and_name_their_version():
    assert cv.KUBERAY_SCHEMA_DIR == SCHEMAS / f"kuberay-{cv.KUBERAY_VERSION}"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", cv.KUBERAY_VERSION), "a release, not a branch"
    notes = (SCHEMAS / "README.md").read_text()
    sizes = 0
    for kind in cv.RAY_KINDS:
        path = cv.KUBERAY_SCHEMA_DIR / cv.KUBERAY_SCHEMA_FILES[kind]
        sizes += path.stat().st_size
        stored = cv.kuberay_schema(kind)
        assert stored["kind"] == kind and stored["apiVersion"] == "ray.io/v1"
        assert stored["kuberay"] == cv.KUBERAY_VERSION
        assert re.fullmatch(r"[0-9a-f]{40}", stored["commit"])
        assert stored["source"].startswith(
            "github.com/ray-project/kuberay/ray-operator/config/crd/"
        )
        assert stored["commit"] in notes and cv.KUBERAY_VERSION in notes
        spec = stored["openAPIV3Schema"]["properties"]["spec"]["properties"]
        assert {"RayCluster": "headGroupSpec", "RayJob": "rayClusterSpec"}[kind] in spec
        assert '"description"' not in path.read_text()
    assert sizes < 1_000_000
    assert sorted(p.name for p in SCHEMAS.glob("kuberay-*")) == [cv.KUBERAY_SCHEMA_DIR.name]


def _node(schema: dict, *keys: str) -> dict:
    """The schema node under a path of property names ('[]' for list items)."""
    for key in keys:
        schema = schema["items"] if key == "[]" else schema["properties"][key]
    return schema


def test_kuberay_crds_leave_objects_open_so_the_validator_closes_them():
    """KubeRay's CRDs never set additionalProperties: false (the API server would prune an
    unknown key); the validator closes every object that lists its properties."""
    raw = cv.kuberay_schema("RayCluster")["openAPIV3Schema"]
    container = ("spec", "workerGroupSpecs", "[]", "template", "spec", "containers", "[]")
    assert "additionalProperties" not in _node(raw, *container)
    assert "additionalProperties" not in _node(raw, *container, "resources")
    closed = cv.close_objects(raw)
    assert _node(closed, *container)["additionalProperties"] is False
    assert _node(closed, *container, "resources")["additionalProperties"] is False
    # A typed map keeps its value schema; a free object stays free; the stored copy is untouched.
    params = _node(closed, "spec", "headGroupSpec", "rayStartParams")
    assert params["additionalProperties"] == {"type": "string"}
    assert _node(closed, "metadata") == {"type": "object"}
    assert "additionalProperties" not in _node(
        cv.kuberay_schema("RayCluster")["openAPIV3Schema"], "spec"
    )
    free = {"type": "object", "properties": {"a": {}}, "x-kubernetes-preserve-unknown-fields": True}
    assert "additionalProperties" not in cv.close_objects(free)
    nested = {"anyOf": [{"properties": {"a": {"items": {"properties": {"b": {}}}}}}]}
    inner = cv.close_objects(nested)["anyOf"][0]
    assert inner["additionalProperties"] is False
    assert inner["properties"]["a"]["items"]["additionalProperties"] is False


@pytest.mark.parametrize("path", KUBERAY, ids=file_ids(KUBERAY))
def test_kuberay_manifest_passes(path: Path):
    docs = cv.validate_kuberay_manifest(path)
    ray_docs = [d for d in docs if d["apiVersion"] == "ray.io/v1"]
    assert len(ray_docs) == 1
    doc = ray_docs[0]
    assert cv._schema_errors(cv.kuberay_validator(doc["kind"]), doc) == []
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpus = set()
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] == 0 and group["replicas"] == 0
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == IMAGE
        gpus.add(int(container["resources"]["limits"]["nvidia.com/gpu"]))
    assert gpus == {1, 8}
    assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] == IMAGE
    if doc["kind"] == "RayJob":
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
        assert doc["spec"]["entrypoint"].startswith("python studies/lr_robustness.py")
        assert "--storage-path" in doc["spec"]["entrypoint"]


def _break_raycluster(docs: list[dict], how: str) -> None:
    spec = docs[1]["spec"]
    group = spec["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    if how == "no-head":
        del spec["headGroupSpec"]
    elif how == "typo-spec":
        spec["workerGroupSpec"] = spec.pop("workerGroupSpecs")
    elif how == "typo-group":
        group["minReplica"] = group.pop("minReplicas")
    elif how == "typo-container":
        container["imag"] = container.pop("image")
    elif how == "no-gpu-limit":
        del container["resources"]["limits"]["nvidia.com/gpu"]
        del container["resources"]["requests"]["nvidia.com/gpu"]
    elif how == "int-start-param":
        group["rayStartParams"] = {"num-gpus": 8}
    elif how == "old-api":
        docs[1]["apiVersion"] = "ray.io/v1alpha1"
    elif how == "replicas-range":
        group["replicas"] = 5
    elif how == "no-autoscaling":
        del spec["enableInTreeAutoscaling"]
    elif how == "version-mismatch":
        spec["rayVersion"] = "2.59.0"
    elif how == "no-start-params":
        del spec["headGroupSpec"]["rayStartParams"]
    elif how == "no-image":
        del container["image"]
    elif how == "duplicate-group":
        spec["workerGroupSpecs"][1]["groupName"] = group["groupName"]


BROKEN_RAYCLUSTER = {
    "no-head": "spec.headGroupSpec: missing",
    "typo-spec": "spec: unknown key 'workerGroupSpec' (did you mean 'workerGroupSpecs'?)",
    "typo-group": f"{GROUP0}: unknown key 'minReplica' (did you mean 'minReplicas'?)",
    "typo-container": f"{POD0}.containers[0]: unknown key 'imag' (did you mean 'image'?)",
    "no-gpu-limit": "GPU group without a nvidia.com/gpu limit",
    "int-start-param": f'{GROUP0}.rayStartParams.num-gpus: 8 is not a string (YAML read a number); write num-gpus: "8"',
    "old-api": "KubeRay's stable API is 'ray.io/v1'",
    "replicas-range": f"{GROUP0}.replicas: 5 must lie in [minReplicas 0, maxReplicas 2]",
    "no-autoscaling": "set enableInTreeAutoscaling: true",
    "version-mismatch": "is Ray 2.60.0 but rayVersion is '2.59.0'",
    "no-start-params": "spec.headGroupSpec.rayStartParams: missing; add it",
    "no-image": f"{POD0}.containers[0].image: missing",
    "duplicate-group": "'gpu8-80gb' is used twice",
}  # fmt: skip


@pytest.mark.parametrize("how", BROKEN_RAYCLUSTER)
def test_broken_raycluster_is_rejected(tmp_path, how):
    docs = load_manifests("raycluster.yaml")
    _break_raycluster(docs, how)
    path = write_file(tmp_path, "raycluster.yaml", yaml.safe_dump_all(docs, sort_keys=False))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_kuberay_manifest(path)
    message = str(exc.value)
    assert str(path) in message and "RayCluster gere" in message
    assert BROKEN_RAYCLUSTER[how] in message


BROKEN_RAYJOB = {
    "no-entrypoint": ("entrypoint", None, "spec.entrypoint: missing"),
    "selector-and-spec": ("clusterSelector", {"ray.io/cluster": "gere"}, "exactly one of"),
    "typo": ("shutdownAfterJobFinish", True, "(did you mean 'shutdownAfterJobFinishes'?)"),
    "local-working-dir": ("runtimeEnvYAML", "working_dir: .\n", "is a local path"),
    "runtime-env-typo": ("runtimeEnvYAML", "pipp: [x]\n", "unknown key 'pipp' (did you mean 'pip'?)"),
    "ttl-without-shutdown": ("shutdownAfterJobFinishes", False, "only takes effect with"),
}  # fmt: skip


@pytest.mark.parametrize("how", BROKEN_RAYJOB)
def test_broken_rayjob_is_rejected(tmp_path, how):
    (doc,) = load_manifests("rayjob.yaml")
    key, value, expected = BROKEN_RAYJOB[how]
    if value is None:
        del doc["spec"][key]
    else:
        doc["spec"][key] = value
    path = write_file(tmp_path, "rayjob.yaml", yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_kuberay_manifest(path)
    assert expected in str(exc.value)


def _set(doc: dict, path: str, value) -> None:
    """Set (or, with value None, delete) the key at a dotted path; [n] indexes a list."""
    *parents, last = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    node = doc
    for key in parents:
        node = node[int(key[1:-1])] if key.startswith("[") else node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value


def _rename(doc: dict, path: str, new_name: str) -> None:
    parent, _, key = path.rpartition(".")
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", parent):
        node = node[int(part[1:-1])] if part.startswith("[") else node[part]
    node[new_name] = node.pop(key)


SCHEMA_TYPOS = {
    # name: (file, key path renamed, new name, expected message)
    "limts": ("raycluster.yaml", f"{POD0}.containers[0].resources.limits", "limts",
              f"{POD0}.containers[0].resources: unknown key 'limts' (did you mean 'limits'?)"),
    "imag": ("raycluster.yaml", f"{POD0}.containers[0].image", "imag",
             f"{POD0}.containers[0]: unknown key 'imag' (did you mean 'image'?)"),
    "mountPth": ("raycluster.yaml", "spec.headGroupSpec.template.spec.containers[0].volumeMounts[0].mountPath",
                 "mountPth", "spec.headGroupSpec.template.spec.containers[0].volumeMounts[0]: unknown key 'mountPth' (did you mean 'mountPath'?)"),
    "sizelimit": ("raycluster.yaml", f"{POD0}.volumes[1].emptyDir.sizeLimit", "sizelimit",
                  f"{POD0}.volumes[1].emptyDir: unknown key 'sizelimit' (did you mean 'sizeLimit'?)"),
    "efect": ("raycluster.yaml", f"{POD0}.tolerations[0].effect", "efect",
              f"{POD0}.tolerations[0]: unknown key 'efect' (did you mean 'effect'?)"),
    "comand": ("raycluster.yaml", f"{POD0}.containers[0].lifecycle.preStop.exec.command", "comand",
               f"{POD0}.containers[0].lifecycle.preStop.exec: unknown key 'comand' (did you mean 'command'?)"),
    "idleTimeout": ("raycluster.yaml", "spec.autoscalerOptions.idleTimeoutSeconds", "idleTimeout",
                    "spec.autoscalerOptions: unknown key 'idleTimeout' (did you mean 'idleTimeoutSeconds'?)"),
    "rayjob-limts": ("rayjob.yaml", "spec.rayClusterSpec.workerGroupSpecs[1].template.spec.containers[0].resources.limits",
                     "limts", "spec.rayClusterSpec.workerGroupSpecs[1] (gpu1-48gb).template.spec.containers[0].resources: unknown key 'limts' (did you mean 'limits'?)"),
    "rayjob-spec": ("rayjob.yaml", "spec.entrypoint", "entryPoint",
                    "spec: unknown key 'entryPoint' (did you mean 'entrypoint'?)"),
}  # fmt: skip


def _doc_index(docs: list[dict]) -> int:
    return next(i for i, d in enumerate(docs) if d.get("apiVersion") == "ray.io/v1")


def _strip_labels(path: str) -> str:
    return re.sub(r" \([^)]*\)", "", path)


@pytest.mark.parametrize("how", SCHEMA_TYPOS)
def test_schema_rejects_a_misspelt_key_anywhere(tmp_path, how):
    name, key_path, new_name, expected = SCHEMA_TYPOS[how]
    docs = load_manifests(name)
    doc = docs[_doc_index(docs)]
    _rename(doc, _strip_labels(key_path), new_name)
    path = write_file(tmp_path, name, yaml.safe_dump_all(docs, sort_keys=False))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_kuberay_manifest(path)
    message = str(exc.value)
    assert str(path) in message
    assert expected in message, message
    # The renamed key is also missing where it was: an image (policy), a GPU limit (policy), a
    # volume mount's required mountPath (schema), the RayJob's entrypoint (policy).
    also_missing = {"imag", "limts", "rayjob-limts", "mountPth", "rayjob-spec"}
    assert len(exc.value.problems) == 1 + (how in also_missing), exc.value.problems


SCHEMA_VALUES = {
    # name: (key path, value, expected message)
    "replicas-string": (f"{GROUP0}.replicas", "2", f"{GROUP0}.replicas: '2' is not of type 'integer'; drop the quotes: replicas: 2"),
    "bool-string": ("spec.enableInTreeAutoscaling", "yes", "spec.enableInTreeAutoscaling: 'yes' is not of type 'boolean'"),
    "version-number": ("spec.rayVersion", 2.6, 'spec.rayVersion: 2.6 is not a string (YAML read a number); write rayVersion: "2.6"'),
    "enum": ("spec.autoscalerOptions.upscalingMode", "Agressive", "is not one of ['Default', 'Aggressive', 'Conservative'] (did you mean 'Aggressive'?)"),
    "quantity": (f"{POD0}.containers[0].resources.limits.memory", "900GB", f"{POD0}.containers[0].resources.limits.memory: '900GB' is not a Kubernetes quantity"),
    "float-quantity": (f"{POD0}.containers[0].resources.limits.cpu", 1.5, 'limits.cpu: 1.5 must be an integer or a string (quote it: "1.5")'),
    "containers-map": (f"{POD0}.containers", {"name": "ray-worker"}, f"{POD0}.containers: {{'name': 'ray-worker'}} is not of type 'array'"),
    "no-container-name": (f"{POD0}.containers[0].name", None, f"{POD0}.containers[0].name: missing"),
    "no-max": (f"{GROUP0}.maxReplicas", None, f"{GROUP0}.maxReplicas: missing"),
    "port-string": ("spec.headGroupSpec.template.spec.containers[0].ports[0].containerPort", "6379x", "'6379x' is not of type 'integer'"),
}  # fmt: skip


@pytest.mark.parametrize("how", SCHEMA_VALUES)
def test_schema_rejects_a_wrong_type_or_value(tmp_path, how):
    key_path, value, expected = SCHEMA_VALUES[how]
    docs = load_manifests("raycluster.yaml")
    _set(docs[1], _strip_labels(key_path), value)
    path = write_file(tmp_path, "raycluster.yaml", yaml.safe_dump_all(docs, sort_keys=False))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_kuberay_manifest(path)
    assert expected in str(exc.value), str(exc.value)


def test_schema_list_maps_reject_duplicate_keys(tmp_path):
    """x-kubernetes-list-type: map (env by name, ports by containerPort + protocol)."""
    docs = load_manifests("raycluster.yaml")
    head = docs[1]["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"].append({"name": "HF_TOKEN", "value": "x"})
    head["ports"].append({"containerPort": 8265, "name": "dash2", "protocol": "TCP"})
    path = write_file(tmp_path, "raycluster.yaml", yaml.safe_dump_all(docs, sort_keys=False))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_kuberay_manifest(path)
    message = str(exc.value)
    where = "spec.headGroupSpec.template.spec.containers[0]"
    assert f"{where}.env[2]: name='HF_TOKEN' again (also item [1])" in message
    assert f"{where}.ports[3]: containerPort=8265, protocol='TCP' again (also item [1])" in message


def test_every_kuberay_problem_is_listed_at_once(tmp_path):
    (doc,) = load_manifests("rayjob.yaml")
    spec = doc["spec"]
    group = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    container = group["template"]["spec"]["containers"][0]
    container["resources"]["limts"] = container["resources"].pop("limits")  # schema + policy
    group["replicas"] = "2"  # schema
    spec["shutdownAfterJobFinishes"] = False  # policy: the TTL needs it
    spec["submissionMode"] = "K8sJob"  # policy: not an enum in the CRD
    path = write_file(tmp_path, "rayjob.yaml", yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(cv.ClusterConfigError) as exc:
        cv.validate_kuberay_manifest(path)
    problems = exc.value.problems
    assert len(problems) == 5, problems
    assert all(p.startswith("document 1 (RayJob gere-lr-robustness): spec.") for p in problems)
    assert any("(did you mean 'K8sJobMode'?)" in p for p in problems)
    assert any("nvidia.com/gpu is requested but not limited" in p for p in problems)


def test_kuberay_validation_is_fast():
    for path in KUBERAY:
        cv.validate_kuberay_manifest(path)  # warm: schemas loaded and closed
        best = min(_timed(cv.validate_kuberay_manifest, path) for _ in range(3))
        assert best < 0.2, f"{path.name}: {best:.3f} s"


def _load_update_script():
    spec = importlib.util.spec_from_file_location("update_kuberay", SCHEMAS / "update_kuberay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_update_script_extracts_the_v1_schema(tmp_path, monkeypatch):
    """Regeneration from a (toy) KubeRay checkout: v1 only, descriptions dropped, header."""
    update = _load_update_script()
    repo = tmp_path / "kuberay"
    crd_dir = repo / update.CRD_DIR
    crd_dir.mkdir(parents=True)
    for kind, name in update.CRDS.items():
        schema = {"type": "object", "description": "x", "properties": {"spec": {"type": "object"}}}
        crd = {
            "metadata": {"annotations": {"controller-gen.kubebuilder.io/version": "v0.16.5"}},
            "spec": {
                "group": "ray.io",
                "names": {"kind": kind},
                "versions": [
                    {"name": "v1", "schema": {"openAPIV3Schema": schema}},
                    {"name": "v1alpha1", "schema": {"openAPIV3Schema": {"type": "object"}}},
                ],
            },
        }
        (crd_dir / name).write_text(yaml.safe_dump(crd))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "crds"], check=True)
    subprocess.run([*git, "tag", "v9.9.9"], check=True)
    monkeypatch.setattr(update, "SCHEMAS_DIR", tmp_path / "schemas")
    (tmp_path / "schemas").mkdir()
    assert update.main([str(repo), "--ref", "v9.9.9"]) == 0
    stored = json.loads((tmp_path / "schemas" / "kuberay-v9.9.9" / "rayjob.json").read_text())
    assert stored["kuberay"] == "v9.9.9" and stored["kind"] == "RayJob"
    assert stored["apiVersion"] == "ray.io/v1" and stored["descriptionsStripped"] == 1
    assert stored["openAPIV3Schema"] == {
        "type": "object",
        "properties": {"spec": {"type": "object"}},
    }


def test_runtime_env_fields_match_the_installed_ray():
    from ray.runtime_env import RuntimeEnv

    assert cv.RUNTIME_ENV_KEYS <= set(RuntimeEnv.known_fields)


def test_cli_reports_ok_and_failures(tmp_path, capsys):
    assert cv.main([str(p) for p in AUTOSCALER + KUBERAY]) == 0
    out = capsys.readouterr().out
    assert out.count("ok   ") == 4 and "4 ok, 0 failed" in out
    bad = write_file(
        tmp_path, "bad.yaml", (CLUSTERS / "aws-gpu.yaml").read_text() + "max_worker: 1\n"
    )
    assert cv.main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {bad}" in out and "did you mean 'max_workers'?" in out


# --------------------------------------------------------------------------------------------
# The memory arithmetic stated in clusters/README.md and the YAML comments

LLAMA_8B = dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256)


def llama_parameters(hidden, intermediate, layers, heads, kv_heads, vocab) -> dict[str, int]:
    kv = kv_heads * (hidden // heads)  # grouped-query attention: k, v project to 1024
    attention = 2 * hidden * hidden + 2 * hidden * kv  # q, o + k, v (no biases)
    mlp = 3 * hidden * intermediate  # gate, up, down
    layer = attention + mlp + 2 * hidden  # + two RMSNorm weights
    embeddings = 2 * vocab * hidden  # input embeddings + untied LM head
    return dict(
        attention=attention,
        mlp=mlp,
        layer=layer,
        embeddings=embeddings,
        total=layers * layer + embeddings + hidden,  # + final norm
    )


def lora_parameters(r, hidden, layers, heads, kv_heads, **_) -> int:
    """Rank-r A (r x in) and B (out x r) on q, k, v, o of every layer."""
    kv = kv_heads * (hidden // heads)
    shapes = [(hidden, hidden), (hidden, kv), (hidden, kv), (hidden, hidden)]  # (in, out)
    return layers * sum(r * (fan_in + fan_out) for fan_in, fan_out in shapes)


def test_llama_8b_parameter_count():
    p = llama_parameters(**LLAMA_8B)
    assert p["total"] == 8_030_261_248
    assert round(p["total"] / 1e9, 2) == 8.03


def test_lora_parameter_count():
    assert lora_parameters(8, **LLAMA_8B) == 6_815_744
    # The often-quoted ~13.6M is the r=16 count.
    assert lora_parameters(16, **LLAMA_8B) == 13_631_488


def _stated_numbers() -> list[str]:
    p = llama_parameters(**LLAMA_8B)
    n = p["total"]
    lora = lora_parameters(8, **LLAMA_8B)
    tm_bytes = 1000 * 563 * LLAMA_8B["hidden"] * 2 / 8  # 2 bits per (token, dim)
    return [
        f"{p['attention']:,}",  # 41,943,040
        f"{p['mlp']:,}",  # 176,160,768
        f"{p['layer']:,}",  # 218,112,000
        f"{p['embeddings']:,}",  # 1,050,673,152
        f"**{n:,}** (8.03e9)",
        f"**{2 * n / 1e9:.2f} GB**",  # bf16 weights: 16.06 GB
        f"**{16 * n / 1e9:.1f} GB**",  # full fine-tuning states: 128.5 GB
        f"**{16 * n / 8 / 1e9:.2f} GB per GPU**",  # ZeRO-3 over 8: 16.06 GB
        f"+{2 * n / 8 / 1e9:.2f} GB per GPU",  # partitioned frozen reference: 2.01 GB
        f"**{12 * n / 1e9:.1f} GB** + {4 * n / 1e9:.1f} GB host RAM",  # offload: 96.4 + 32.1
        f"= {lora // LLAMA_8B['layers']:,}; x 32",  # 212,992 per layer
        f"**{lora:,}** ({lora / n:.3%})",  # 6,815,744 (0.085%)
        f"{16 * lora / 1e9:.2f} GB",  # adapter states: 0.11 GB
        f"**{tm_bytes / 1e6:.1f} MB**",  # 576.5 MB
        f"raw fp32 h0: {1000 * 563 * LLAMA_8B['hidden'] * 4 / 1e9:.2f} GB",  # 9.22 GB
        f"{LLAMA_8B['layers'] * LLAMA_8B['hidden'] * 2 / 1e6:.2f} MB/token",  # checkpointing
        "effective batch of **66**",
    ]


@pytest.mark.parametrize("stated", _stated_numbers())
def test_readme_states_the_arithmetic(stated):
    assert stated in README


@pytest.mark.parametrize("path", AUTOSCALER, ids=file_ids(AUTOSCALER))
def test_yaml_comments_state_the_same_arithmetic(path: Path):
    n = llama_parameters(**LLAMA_8B)["total"]
    text = path.read_text()
    for stated in (
        f"{n:,} parameters",
        f"{lora_parameters(8, **LLAMA_8B):,} trainable",
        f"{16 * n / 1e9:.1f} GB",
        f"{16 * n / 8 / 1e9:.1f} GB/GPU",
    ):
        assert stated in text


def test_readme_concurrency_table_matches_the_yamls():
    """total GPUs // GPUs per trial, for the max_workers the YAMLs allow."""
    for path in AUTOSCALER:
        types = yaml.safe_load(path.read_text())["available_node_types"]
        gpus = {
            n: sum(t["max_workers"] * n for t in types.values() if t["resources"].get("GPU") == n)
            for n in (1, 8)
        }
        assert f"| {gpus[8]} | {gpus[8] // 8} |" in README, path.name  # full-FT trials: 8 GPUs
        assert f"| {gpus[1]} | 0 | {gpus[1]} |" in README, path.name  # LoRA trials: 1 GPU
