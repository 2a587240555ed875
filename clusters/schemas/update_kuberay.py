"""Regenerate ``clusters/schemas/kuberay-<version>/`` from a KubeRay checkout (no network).

    python clusters/schemas/update_kuberay.py PATH_TO_KUBERAY                 # its work tree
    python clusters/schemas/update_kuberay.py PATH_TO_KUBERAY --ref v1.7.0    # a tag (bare repo ok)

Reads ``ray-operator/config/crd/bases/ray.io_rayclusters.yaml`` and ``ray.io_rayjobs.yaml``, keeps
only the ``openAPIV3Schema`` of the ``v1`` version of each CRD, drops every ``description``
string (KubeRay generates its CRDs with ``crd:maxDescLen=0``, so there are none today), and
writes compact JSON with a header naming the release, commit and path. The schema itself is
stored as KubeRay wrote it: ``clusters/validate.py`` closes its objects when it loads it. After
writing a new version, point ``KUBERAY_VERSION`` in ``clusters/validate.py`` at it and run
``python -m pytest tests/clusters/test_clusters.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

SCHEMAS_DIR = Path(__file__).resolve().parent
CRD_DIR = "ray-operator/config/crd/bases"
CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
OUT_NAMES = {"RayCluster": "raycluster.json", "RayJob": "rayjob.json"}
API_VERSION = "v1"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def _read(repo: Path, ref: str | None, path: str) -> str:
    return _git(repo, "show", f"{ref}:{path}") if ref else (repo / path).read_text()


def _strip_descriptions(node, count: list[int]):
    """``node`` without its ``description`` strings; ``count[0]`` counts them."""
    if isinstance(node, dict):
        count[0] += isinstance(node.get("description"), str)
        return {
            k: _strip_descriptions(v, count)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [_strip_descriptions(v, count) for v in node]
    return node


def v1_schema(crd: dict) -> dict:
    """The ``openAPIV3Schema`` of the CRD's ``v1`` version."""
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == API_VERSION]
    return version["schema"]["openAPIV3Schema"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kuberay", type=Path, help="a KubeRay git checkout (or bare clone)")
    parser.add_argument("--ref", help="git ref to read (default: the work tree as it is)")
    parser.add_argument("--version", help="release name (default: the exact tag, e.g. v1.7.0)")
    args = parser.parse_args(argv)

    commit = _git(args.kuberay, "rev-parse", f"{args.ref or 'HEAD'}^{{commit}}").strip()
    version = args.version
    if not version:
        try:
            version = _git(args.kuberay, "describe", "--tags", "--exact-match", commit).strip()
        except subprocess.CalledProcessError:
            sys.exit(f"{commit} is not a tagged release; pass --version")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out_dir = SCHEMAS_DIR / f"kuberay-{version}"
    out_dir.mkdir(exist_ok=True)
    for kind, name in CRDS.items():
        path = f"{CRD_DIR}/{name}"
        crd = yaml.load(_read(args.kuberay, args.ref, path), Loader=loader)
        assert crd["spec"]["names"]["kind"] == kind, path
        stripped = [0]
        schema = _strip_descriptions(v1_schema(crd), stripped)
        doc = {
            "kind": kind,
            "apiVersion": f"{crd['spec']['group']}/{API_VERSION}",
            "kuberay": version,
            "commit": commit,
            "source": f"github.com/ray-project/kuberay/{path}",
            "controllerGen": crd["metadata"]
            .get("annotations", {})
            .get("controller-gen.kubebuilder.io/version"),
            "descriptionsStripped": stripped[0],
            "openAPIV3Schema": schema,
        }
        target = out_dir / OUT_NAMES[kind]
        target.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"{target}: {target.stat().st_size:,} bytes ({kind} {version} {commit[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
