"""Renders a kustomization directory the way `kubectl kustomize` does, for the subset of
kustomize that deploy/kubernetes uses, so the tests need no kubectl.

Supported in kustomization.yaml:
  resources   YAML files (one or more documents) and directories holding a
              kustomization.yaml, rendered recursively
  replicas    [{name, count}]: sets spec.replicas of the named workloads
  patches     [{path}]: strategic-merge patches; the patch's kind and metadata.name pick
              the resource
Anything else (generators, labels, namespace, images, JSON patches, patch directives
such as $patch) is refused with an error naming it, so a manifest that starts using one
fails the test instead of being rendered wrongly.

Strategic merge follows Kubernetes: maps merge key by key, null deletes a key, lists of
containers, volumes, env and so on merge by their merge key with the patch's items
first (in patch order) and the remaining items after them in their old order; every
other list is replaced.

usage: python3 render.py DIR   prints the rendered documents as YAML
"""

import copy
import os
import sys

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "replicas", "patches"}

# Field name -> merge key of the list under it (Kubernetes' patchMergeKey). `ports` is
# containerPort in a container and port in a Service; the items tell which.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}


class RenderError(Exception):
    pass


def _key(doc):
    meta = doc.get("metadata") or {}
    return (doc.get("kind"), meta.get("namespace"), meta.get("name"))


def _load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def _check_directives(value, where):
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and k.startswith("$"):
                raise RenderError(f"{where}: patch directive {k} is not supported by this renderer")
            _check_directives(v, where)
    elif isinstance(value, list):
        for v in value:
            _check_directives(v, where)


def _list_merge_key(field, items):
    if field == "ports":
        if all(isinstance(i, dict) and "containerPort" in i for i in items):
            return "containerPort"
        if all(isinstance(i, dict) and "port" in i for i in items):
            return "port"
        return None
    return MERGE_KEYS.get(field)


def strategic_merge(orig, patch, field=None):
    """Returns `orig` with `patch` merged into it (neither is modified)."""
    if isinstance(orig, dict) and isinstance(patch, dict):
        out = copy.deepcopy(orig)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(orig, list) and isinstance(patch, list):
        key = _list_merge_key(field, orig + patch)
        if key is None or not all(isinstance(i, dict) and key in i for i in orig + patch):
            return copy.deepcopy(patch)
        merged, used = [], set()
        for p in patch:
            match = next((i for i, o in enumerate(orig) if o[key] == p[key]), None)
            if match is None:
                merged.append(copy.deepcopy(p))
            else:
                used.add(match)
                merged.append(strategic_merge(orig[match], p, None))
        merged.extend(copy.deepcopy(o) for i, o in enumerate(orig) if i not in used)
        return merged
    return copy.deepcopy(patch)


def render(directory, _visited=()):
    """The documents of the kustomization in `directory`, in resource order."""
    directory = os.path.abspath(directory)
    visited = _visited + (directory,)
    kpath = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(kpath):
        raise RenderError(f"{directory}: no kustomization.yaml")
    with open(kpath, encoding="utf-8") as f:
        k = yaml.safe_load(f) or {}
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(f"{kpath}: unsupported kustomize fields {sorted(unknown)}")
    if k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{kpath}: kind {k.get('kind')!r} is not Kustomization")

    docs = []
    for res in k.get("resources") or []:
        path = os.path.normpath(os.path.join(directory, res))
        if os.path.isdir(path):
            if any(v == path or v.startswith(path + os.sep) for v in visited):
                raise RenderError(f"{kpath}: resource {res} contains a kustomization that includes it "
                                  "(kustomize refuses the cycle)")
            docs.extend(render(path, visited))
        elif os.path.isfile(path):
            docs.extend(_load_yaml_docs(path))
        else:
            raise RenderError(f"{kpath}: resource {res} not found")
    seen = set()
    for d in docs:
        if _key(d) in seen:
            raise RenderError(f"{kpath}: {_key(d)} defined twice")
        seen.add(_key(d))

    for p in k.get("patches") or []:
        if set(p) != {"path"}:
            raise RenderError(f"{kpath}: only patches with a path alone are supported, got {sorted(p)}")
        ppath = os.path.join(directory, p["path"])
        for patch in _load_yaml_docs(ppath):
            _check_directives(patch, ppath)
            target = _key(patch)
            idx = [i for i, d in enumerate(docs) if _key(d) == target]
            if len(idx) != 1:
                raise RenderError(f"{ppath}: patch target {target} matches {len(idx)} resources")
            docs[idx[0]] = strategic_merge(docs[idx[0]], patch)

    for r in k.get("replicas") or []:
        if set(r) != {"name", "count"}:
            raise RenderError(f"{kpath}: replicas entries take name and count, got {sorted(r)}")
        hits = [d for d in docs
                if (d.get("metadata") or {}).get("name") == r["name"]
                and d.get("kind") in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController")]
        if not hits:
            raise RenderError(f"{kpath}: replicas: no workload named {r['name']}")
        for d in hits:
            d.setdefault("spec", {})["replicas"] = r["count"]
    return docs


def by_key(docs):
    """Documents keyed by (kind, namespace, name), for order-free comparison."""
    return {_key(d): d for d in docs}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: render.py DIR")
    try:
        out = render(sys.argv[1])
    except RenderError as e:
        sys.exit(f"render: {e}")
    yaml.safe_dump_all(out, sys.stdout, sort_keys=False)
