"""Cluster configs for the GeRe harness (Ray autoscaler YAMLs, KubeRay manifests) and their
offline validator, :mod:`clusters.validate`."""
