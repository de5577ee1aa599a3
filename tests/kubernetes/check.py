"""Tests of deploy/kubernetes, run by tests/kubernetes/run (which sets up the venv).

For the base (deploy/kubernetes) and every overlay (deploy/kubernetes/overlays/*):
  render      render.py renders the kustomization (and, where a kubectl is installed,
              `kubectl kustomize` must give the same documents)
  validate    every document against the Kubernetes API schemas of KUBE_VERSIONS,
              strict (kubernetes-validate, offline)
  invariants  probes, services, PodDisruptionBudget, Secret references, pod identity,
              seeds, security context, anti-affinity, resources
  check-config
              `hypercache-server check-config` with the environment each pod gets
              (downward API and Secret values filled in, $(VAR) expanded as the kubelet
              does) exits 0 with no warning; its effective configuration gives the
              shutdown budget, which terminationGracePeriodSeconds must cover, and the
              memory bounds, which the resources must cover (docs/kubernetes.md)
Then, for the base: the pods' environment with each pod's DNS name mapped to a loopback
address passes check-config (a broken copy exits 2 naming each bad variable), three
nodes started with it form a cluster, answer the probes, serve a key across nodes, and
stop on SIGTERM as a scale-down would stop them: readiness 503 while draining, exit 0
within the grace period, the budget they log equal to the one computed here.

Last line: `kubernetes: N passed, M failed` (exit 1 when M > 0).
"""

import argparse
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import kubernetes_validate
import yaml

import render

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy", "kubernetes")
COMPOSE = os.path.join(ROOT, "compose", "docker-compose.yml")

# The oldest Kubernetes the manifests are meant for, and the newest the pinned
# kubernetes-validate knows.
KUBE_VERSIONS = ("1.28.0", "1.37.0")
NAMESPACE = "hypercache-test"
CLUSTER_DOMAIN = "svc.cluster.local"
FIRST_LOOPBACK = 11  # pod N runs on 127.0.0.(11 + N)

# Memory model of docs/kubernetes.md, "Resources".
MIB = 1 << 20
BASELINE_BYTES = 16 * MIB
ITEM_OVERHEAD_BYTES = 256
LIMIT_HEADROOM = 1.25

# The shutdown budget's fixed part (README, "Shutdown").
SHUTDOWN_FIXED_SECONDS = 5


class Failure(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Failure(msg)


# ---------------------------------------------------------------- results


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.skipped = 0

    def run(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            out = fn(*args)
        except Failure as e:
            self.failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return None
        except Exception as e:  # a bug in the test or an unexpected manifest shape
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            return None
        self.passed += 1
        print(f"PASS {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        return True if out is None else out

    def skip(self, name, why):
        self.skipped += 1
        print(f"SKIP {name}: {why}", flush=True)


# ---------------------------------------------------------------- parsing helpers

_QUANTITY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "": 1}


def quantity_bytes(q):
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(q))
    need(m, f"memory quantity {q!r} not understood")
    return float(m.group(1)) * _QUANTITY[m.group(2)]


_HUMANTIME = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600,
              "day": 86400, "days": 86400}


def humantime_seconds(text):
    """Seconds of a duration as check-config prints it (`1m 30s`, `250ms`)."""
    parts = re.findall(r"(\d+)([a-z]+)", text)
    need(parts and "".join(n + u for n, u in parts) == text.replace(" ", ""),
         f"duration {text!r} not understood")
    total = 0.0
    for n, unit in parts:
        need(unit in _HUMANTIME, f"duration unit {unit!r} in {text!r} not understood")
        total += int(n) * _HUMANTIME[unit]
    return total


def host_port(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def expand(value, env):
    """Kubernetes' $(VAR) expansion: VAR defined earlier in the list is replaced, $$ is a
    literal $, anything else is left as it is."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            j = value.index(")", i)
            name = value[i + 2:j]
            out.append(env.get(name, value[i:j + 1]))
            i = j + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


# ---------------------------------------------------------------- manifest access


class Variant:
    """One rendered kustomization and what the checks need from it."""

    def __init__(self, name, directory):
        self.name = name
        self.directory = directory
        self.docs = []

    def of_kind(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    @property
    def sts(self):
        s = self.of_kind("StatefulSet")
        need(len(s) == 1, f"expected one StatefulSet, found {len(s)}")
        return s[0]

    @property
    def pod_spec(self):
        return self.sts["spec"]["template"]["spec"]

    @property
    def pod_labels(self):
        return self.sts["spec"]["template"]["metadata"].get("labels") or {}

    @property
    def container(self):
        cs = self.pod_spec["containers"]
        need(len(cs) == 1, f"expected one container, found {len(cs)}")
        return cs[0]

    @property
    def replicas(self):
        return int(self.sts["spec"].get("replicas", 1))

    @property
    def grace(self):
        return int(self.pod_spec.get("terminationGracePeriodSeconds", 30))

    def service(self, name):
        s = [d for d in self.of_kind("Service") if d["metadata"]["name"] == name]
        need(len(s) == 1, f"no Service named {name}")
        return s[0]

    def secrets(self):
        out = {}
        for s in self.of_kind("Secret"):
            vals = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
            vals.update(s.get("stringData") or {})
            out[s["metadata"]["name"]] = vals
        return out

    def container_port(self, port):
        """A probe's or service's port (number or name) as a container port number."""
        if isinstance(port, int):
            return port
        for p in self.container.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise Failure(f"port {port!r} is not a named port of the container")

    def pod_env(self, ordinal, namespace=NAMESPACE):
        """The environment the kubelet gives pod `ordinal`, in order."""
        pod = f"{self.sts['metadata']['name']}-{ordinal}"
        fields = {"metadata.name": pod, "metadata.namespace": namespace}
        secrets = self.secrets()
        need(not self.container.get("envFrom"), "envFrom is not handled by this test")
        env = {}
        for item in self.container.get("env") or []:
            name = item["name"]
            need(name not in env, f"env {name} set twice")
            if "value" in item:
                env[name] = expand(str(item["value"]), env)
                continue
            src = item.get("valueFrom") or {}
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                need(path in fields, f"env {name}: fieldRef {path} not handled by this test")
                env[name] = fields[path]
            elif "secretKeyRef" in src:
                ref = src["secretKeyRef"]
                need(ref.get("name") in secrets, f"env {name}: Secret {ref.get('name')} is not in the manifests")
                need(ref.get("key") in secrets[ref["name"]],
                     f"env {name}: Secret {ref['name']} has no key {ref.get('key')}")
                env[name] = secrets[ref["name"]][ref["key"]]
            else:
                raise Failure(f"env {name}: source {sorted(src)} not handled by this test")
        return env


def discover():
    out = [Variant("base", DEPLOY)]
    overlays = os.path.join(DEPLOY, "overlays")
    for name in sorted(os.listdir(overlays)):
        d = os.path.join(overlays, name)
        if os.path.isfile(os.path.join(d, "kustomization.yaml")):
            out.append(Variant(f"overlays/{name}", d))
    return out


# ---------------------------------------------------------------- render and validate


def step_render(v):
    v.docs = render.render(v.directory)
    need(v.docs, "nothing rendered")


def kubectl_kustomize_works():
    try:
        r = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def step_kubectl(v):
    r = subprocess.run(["kubectl", "kustomize", v.directory], capture_output=True, text=True, timeout=60)
    need(r.returncode == 0, f"kubectl kustomize failed: {r.stderr.strip()}")
    theirs = render.by_key([d for d in yaml.safe_load_all(r.stdout) if d])
    mine = render.by_key(v.docs)
    need(sorted(mine, key=str) == sorted(theirs, key=str),
         f"different resources: {sorted(mine, key=str)} vs {sorted(theirs, key=str)}")
    for k in mine:
        need(mine[k] == theirs[k], f"{k} renders differently from kubectl kustomize")


def step_validate(v):
    problems = []
    for doc in v.docs:
        what = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                problems.append(f"{what} (Kubernetes {version}): {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.append(f"{what} (Kubernetes {version}): {e.message}")
    need(not problems, "; ".join(problems))


# ---------------------------------------------------------------- static invariants


def subset(a, b):
    return bool(a) and all(b.get(k) == val for k, val in a.items())


def listener_ports(v):
    env = v.pod_env(0)
    api = host_port(env.get("HYPERCACHE_API_ADDR", ":8080"))[1]
    mgmt = host_port(env.get("HYPERCACHE_MGMT_ADDR", ":8081"))[1]
    dist = host_port(env.get("HYPERCACHE_DIST_ADDR", ":7946"))[1]
    return api, mgmt, dist


def step_invariants(v):
    sts, spec, c, labels = v.sts, v.pod_spec, v.container, v.pod_labels
    sel = sts["spec"]["selector"].get("matchLabels") or {}
    need(subset(sel, labels), "StatefulSet selector does not match its pod labels")
    api, mgmt, dist = listener_ports(v)

    cports = {int(p["containerPort"]) for p in c.get("ports") or []}
    need({api, mgmt, dist} <= cports, f"container ports {sorted(cports)} lack one of {api}, {mgmt}, {dist}")

    # Services: headless for peers (pod DNS names, also while not ready), one for clients.
    peers = v.service(sts["spec"]["serviceName"])
    need(peers["spec"].get("clusterIP") == "None", "the StatefulSet's service is not headless")
    need(peers["spec"].get("publishNotReadyAddresses") is True,
         "the headless service must publish not-ready pods (draining pods still talk to peers)")
    need(subset(peers["spec"].get("selector") or {}, labels), "headless service selector misses the pods")
    need(dist in {v.container_port(p.get("targetPort", p["port"])) for p in peers["spec"]["ports"]},
         "headless service has no dist port")
    clients = [s for s in v.of_kind("Service")
               if s["spec"].get("clusterIP") != "None"
               and subset(s["spec"].get("selector") or {}, labels)
               and api in {v.container_port(p.get("targetPort", p["port"])) for p in s["spec"]["ports"]}]
    need(clients, "no client Service targets the client port of the pods")

    # Probes: liveness on the client /healthz, readiness on the management /health.
    live, ready = c.get("livenessProbe") or {}, c.get("readinessProbe") or {}
    need(live.get("httpGet", {}).get("path") == "/healthz", "liveness is not GET /healthz")
    need(v.container_port(live["httpGet"]["port"]) == api, "liveness is not on the client port")
    need(ready.get("httpGet", {}).get("path") == "/health", "readiness is not GET /health")
    need(v.container_port(ready["httpGet"]["port"]) == mgmt, "readiness is not on the management port")
    need(not live["httpGet"].get("httpHeaders") and not ready["httpGet"].get("httpHeaders"),
         "probes must not need headers (/healthz and /health need no token)")

    # Identity: node id = pod name, advertised address = the pod's stable DNS name.
    envs = {e["name"]: e for e in c.get("env") or []}
    for var, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        need(envs.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == path,
             f"{var} is not the downward API's {path}")
    svc, base = sts["spec"]["serviceName"], sts["metadata"]["name"]
    for ordinal in range(v.replicas):
        env = v.pod_env(ordinal)
        pod = f"{base}-{ordinal}"
        need(env.get("HYPERCACHE_NODE_ID") == pod, f"{pod}: HYPERCACHE_NODE_ID is {env.get('HYPERCACHE_NODE_ID')!r}")
        want = f"{pod}.{svc}.{NAMESPACE}.{CLUSTER_DOMAIN}:{dist}"
        need(env.get("HYPERCACHE_DIST_ADDR") == want,
             f"{pod}: HYPERCACHE_DIST_ADDR is {env.get('HYPERCACHE_DIST_ADDR')!r}, not {want!r}")
        seeds = [s.strip() for s in env.get("HYPERCACHE_SEEDS", "").split(",") if s.strip()]
        need(seeds, f"{pod}: no seeds")
        for s in seeds:
            m = re.fullmatch(rf"{re.escape(base)}-(\d+)@{re.escape(base)}-(\d+)\.{re.escape(svc)}\."
                             rf"{re.escape(NAMESPACE)}\.{re.escape(CLUSTER_DOMAIN)}:{dist}", s)
            need(m and m.group(1) == m.group(2), f"{pod}: seed {s!r} is not a pod of the StatefulSet")
            need(int(m.group(1)) < v.replicas, f"{pod}: seed {s!r} names a pod that does not exist")
        need(len(set(seeds)) == len(seeds), f"{pod}: duplicate seeds")

    # Tokens from the Secret of the manifests.
    secrets = {s["metadata"]["name"] for s in v.of_kind("Secret")}
    for var in ("HYPERCACHE_AUTH_TOKEN", "HYPERCACHE_PEER_TOKEN"):
        ref = envs.get(var, {}).get("valueFrom", {}).get("secretKeyRef")
        need(ref, f"{var} does not come from a secretKeyRef")
        need(ref.get("name") in secrets, f"{var}: Secret {ref.get('name')} is not in the manifests")
        need(not ref.get("optional"), f"{var}: the Secret reference must not be optional")
    need(v.pod_env(0)["HYPERCACHE_AUTH_TOKEN"], "empty auth token")

    # One pod down at a time.
    pdbs = v.of_kind("PodDisruptionBudget")
    need(len(pdbs) == 1, f"expected one PodDisruptionBudget, found {len(pdbs)}")
    pdb = pdbs[0]["spec"]
    need(pdb.get("maxUnavailable") == 1 and "minAvailable" not in pdb,
         f"PodDisruptionBudget is not maxUnavailable 1: {pdb}")
    need((pdb.get("selector") or {}).get("matchLabels") == sel and not pdb["selector"].get("matchExpressions"),
         "PodDisruptionBudget does not select exactly the StatefulSet's pods")

    # Non-root, read-only root filesystem.
    psc, csc = spec.get("securityContext") or {}, c.get("securityContext") or {}
    need(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
    need(psc.get("runAsUser", 1) != 0 and csc.get("runAsUser", 1) != 0, "runs as uid 0")
    need(csc.get("readOnlyRootFilesystem") is True, "the root filesystem is not read-only")
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    need("ALL" in ((csc.get("capabilities") or {}).get("drop") or []), "capabilities are not dropped")
    need(spec.get("enableServiceLinks") is False,
         "enableServiceLinks must be false (no HYPERCACHE_*_SERVICE_* variables injected)")

    # Replicas spread over hosts.
    anti = ((spec.get("affinity") or {}).get("podAntiAffinity") or {})
    terms = list(anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [])
    terms += [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    need(any(t.get("topologyKey") == "kubernetes.io/hostname"
             and subset((t.get("labelSelector") or {}).get("matchLabels") or {}, labels) for t in terms),
         "no pod anti-affinity on kubernetes.io/hostname for the StatefulSet's pods")

    # Resources present (their size is checked against check-config's numbers).
    res = c.get("resources") or {}
    for part, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
        need((res.get(part) or {}).get(key), f"resources.{part}.{key} is not set")
    need(quantity_bytes(res["requests"]["memory"]) <= quantity_bytes(res["limits"]["memory"]),
         "memory request above the limit")

    # The image the compose file (and scripts/cluster-up) builds.
    if v.name == "base":
        with open(COMPOSE, encoding="utf-8") as f:
            m = re.search(r"image:\s*\$\{HYPERCACHE_IMAGE:-([^}]+)\}", f.read())
        need(m and c.get("image") == m.group(1),
             f"image {c.get('image')!r} is not the compose file's {m.group(1) if m else '?'}")


# ---------------------------------------------------------------- check-config


def run_check_config(binary, env):
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    full.update(env)
    return subprocess.run([binary, "check-config"], env=full, capture_output=True, text=True, timeout=30)


def step_check_config(v, binary):
    """Every pod's environment passes check-config; returns pod 0's effective config."""
    first = None
    sts, svc = v.sts["metadata"]["name"], v.sts["spec"]["serviceName"]
    for ordinal in range(v.replicas):
        env = v.pod_env(ordinal)
        r = run_check_config(binary, env)
        pod = f"{sts}-{ordinal}"
        need(r.returncode == 0, f"{pod}: check-config exited {r.returncode}: {r.stderr.strip()}")
        need(not r.stderr.strip(), f"{pod}: check-config warned: {r.stderr.strip()}")
        cfg = json.loads(r.stdout)
        need(cfg["node_id"] == pod, f"{pod}: node_id {cfg['node_id']!r}")
        dist = host_port(env["HYPERCACHE_DIST_ADDR"])[1]
        need(cfg["advertise"] == f"{pod}.{svc}.{NAMESPACE}.{CLUSTER_DOMAIN}:{dist}",
             f"{pod}: advertises {cfg['advertise']!r}")
        need(cfg["auth_token"] == "[redacted]" and cfg["peer_token"] == "[redacted]", f"{pod}: tokens not set")
        for secret in (env["HYPERCACHE_AUTH_TOKEN"], env["HYPERCACHE_PEER_TOKEN"]):
            need(secret not in r.stdout, f"{pod}: a token is printed")
        need(str(cfg["replication"]) == env.get("HYPERCACHE_REPLICATION", "3"), f"{pod}: replication")
        need(len(cfg["seeds"]) == len(env["HYPERCACHE_SEEDS"].split(",")), f"{pod}: seeds")
        first = first or cfg
    return first


def shutdown_budget(cfg):
    return (humantime_seconds(cfg["drain_timeout"]) + humantime_seconds(cfg["drain_linger"])
            + humantime_seconds(cfg["shutdown_grace"]) + SHUTDOWN_FIXED_SECONDS)


def memory_needs(cfg, replicas):
    """(request, limit) in bytes under docs/kubernetes.md's model."""
    need(cfg["capacity_bytes"] is not None, "HYPERCACHE_CAPACITY_BYTES is not set: memory is unbounded")
    steady = BASELINE_BYTES + cfg["capacity"] * ITEM_OVERHEAD_BYTES + cfg["capacity_bytes"]
    transient = (cfg["tombstone_bytes"] + cfg["hint_max_bytes"] + cfg["peer_queue_bytes"] * (replicas - 1)
                 + cfg["client_buffer_bytes"] + cfg["dist_buffer_bytes"])
    return steady, (steady + transient) * LIMIT_HEADROOM


def step_budget(v, cfg):
    budget = shutdown_budget(cfg)
    need(v.grace >= budget,
         f"terminationGracePeriodSeconds {v.grace} < shutdown budget {budget:g} s "
         f"({cfg['drain_timeout']} + {cfg['drain_linger']} + {cfg['shutdown_grace']} + 5 s)")


def step_memory(v, cfg):
    res = v.container["resources"]
    req, lim = quantity_bytes(res["requests"]["memory"]), quantity_bytes(res["limits"]["memory"])
    need_req, need_lim = memory_needs(cfg, v.replicas)
    need(req >= need_req, f"memory request {res['requests']['memory']} < {need_req / MIB:.1f} MiB "
                          f"(the store at capacity and the process)")
    need(lim >= need_lim, f"memory limit {res['limits']['memory']} < {need_lim / MIB:.1f} MiB "
                          f"(the store and every buffer at its bound, plus {LIMIT_HEADROOM - 1:.0%})")


# ---------------------------------------------------------------- the cluster on loopback


def pod_ip(ordinal):
    return f"127.0.0.{FIRST_LOOPBACK + ordinal}"


def port_free(ip, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def pick_port_offset(ports, pods):
    """0 when the manifest's ports are free on every pod address, else the first offset
    that is (something else on this machine holds them)."""
    for offset in (0, 10000, 20000, 30000, 40000):
        if all(p + offset < 65536 and port_free(pod_ip(i), p + offset) for i in range(pods) for p in ports):
            return offset
    raise Failure(f"ports {ports} (and shifted copies) are taken on {pod_ip(0)}..{pod_ip(pods - 1)}")


def loopback_env(v, ordinal, offset):
    """Pod `ordinal`'s environment with every pod DNS name mapped to its loopback
    address, `:port` listeners bound to it, and ports shifted by `offset`."""
    env = v.pod_env(ordinal)
    sts, svc = v.sts["metadata"]["name"], v.sts["spec"]["serviceName"]
    for name, val in env.items():
        for i in range(v.replicas):
            val = val.replace(f"{sts}-{i}.{svc}.{NAMESPACE}.{CLUSTER_DOMAIN}:", f"{pod_ip(i)}:")
        env[name] = val

    def shift(addr):
        host, port = host_port(addr)
        return f"{host or pod_ip(ordinal)}:{port + offset}"

    for var, default in (("HYPERCACHE_API_ADDR", ":8080"), ("HYPERCACHE_MGMT_ADDR", ":8081"),
                         ("HYPERCACHE_DIST_ADDR", ":7946")):
        env[var] = shift(env.get(var, default))
    env["HYPERCACHE_SEEDS"] = ",".join(
        f"{s.partition('@')[0]}@{shift(s.partition('@')[2])}" for s in env["HYPERCACHE_SEEDS"].split(","))
    need(env["HYPERCACHE_DIST_ADDR"].startswith(pod_ip(ordinal) + ":"),
         f"the dist address did not map to the pod's loopback address: {env['HYPERCACHE_DIST_ADDR']}")
    return env


def http(method, url, token=None, body=None, timeout=2.0):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return None, b""


def wait_for(what, cond, deadline_s, interval=0.1):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        ok, last = cond()
        if ok:
            return last
        time.sleep(interval)
    raise Failure(f"{what}: not within {deadline_s:g} s (last: {last})")


class Node:
    def __init__(self, ordinal, env, binary, logdir):
        self.ordinal = ordinal
        self.env = env
        self.log_path = os.path.join(logdir, f"hypercache-{ordinal}.log")
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        full.update(env)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary], env=full, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def url(self, var, path):
        return f"http://{self.env[var]}{path}"

    def log_lines(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def logged_budget(lines):
    """Seconds of the budget on the "shutdown: draining" log line (JSON or text), or None."""
    for line in lines:
        if line.startswith("{"):
            budget = json.loads(line).get("budget")
        else:
            m = re.search(r'\bbudget=("[^"]*"|\S+)', line)
            budget = m and m.group(1).strip('"')
        if budget:
            return humantime_seconds(budget)
    return None


def members(node, token):
    st, body = http("GET", node.url("HYPERCACHE_MGMT_ADDR", "/cluster/members"), token)
    if st != 200:
        return None
    return {m["id"]: m for m in json.loads(body)["members"]}


def step_cluster(v, binary, logdir, results):
    pods = min(v.replicas, 3)
    need(pods == 3, f"the base runs {v.replicas} pods, the cluster test wants 3")
    api, mgmt, dist = listener_ports(v)
    offset = pick_port_offset((api, mgmt, dist), pods)
    if offset:
        print(f"note: ports {api}, {mgmt}, {dist} are taken here; the nodes use them + {offset}", flush=True)
    envs = [loopback_env(v, i, offset) for i in range(pods)]
    token = envs[0]["HYPERCACHE_AUTH_TOKEN"]
    c = v.container
    live = (c["livenessProbe"]["httpGet"]["path"], v.container_port(c["livenessProbe"]["httpGet"]["port"]) + offset)
    ready = (c["readinessProbe"]["httpGet"]["path"], v.container_port(c["readinessProbe"]["httpGet"]["port"]) + offset)
    def pod_name(i):
        return f"{v.sts['metadata']['name']}-{i}"
    ids = {pod_name(i) for i in range(pods)}
    expected_budget = None

    def check_config_mapped():
        nonlocal expected_budget
        for i, env in enumerate(envs):
            r = run_check_config(binary, env)
            need(r.returncode == 0, f"pod {i}: check-config exited {r.returncode}: {r.stderr.strip()}")
            cfg = json.loads(r.stdout)
            need(cfg["advertise"] == env["HYPERCACHE_DIST_ADDR"], f"pod {i}: advertise")
            expected_budget = shutdown_budget(cfg)

    def check_config_broken():
        env = dict(envs[0], HYPERCACHE_REPLICATION="0", HYPERCACHE_SEEDS="hypercache-1@")
        r = run_check_config(binary, env)
        need(r.returncode == 2, f"check-config exited {r.returncode}, not 2")
        for var in ("HYPERCACHE_REPLICATION", "HYPERCACHE_SEEDS"):
            need(var in r.stderr, f"{var} not named: {r.stderr.strip()}")

    results.run("base: check-config, pods mapped to loopback", check_config_mapped)
    results.run("base: check-config, broken environment exits 2", check_config_broken)

    nodes = []
    try:
        def start():
            for i in range(pods):
                nodes.append(Node(i, envs[i], binary, logdir))

            def all_ready():
                states = []
                for n in nodes:
                    need(n.proc.poll() is None, f"pod {n.ordinal} exited {n.proc.returncode}")
                    states.append((http("GET", f"http://{pod_ip(n.ordinal)}:{live[1]}{live[0]}")[0],
                                   http("GET", f"http://{pod_ip(n.ordinal)}:{ready[1]}{ready[0]}")[0]))
                return all(s == (200, 200) for s in states), states
            wait_for("liveness and readiness 200 without a token", all_ready, 20)

            def formed():
                views = []
                for n in nodes:
                    need(n.proc.poll() is None, f"pod {n.ordinal} exited {n.proc.returncode}")
                    m = members(n, token)
                    views.append(m and {k: x["state"] for k, x in m.items()})
                return all(view and set(view) == ids and set(view.values()) == {"alive"} for view in views), views
            wait_for("every node lists 3 alive members", formed, 30, 0.25)
            for n in nodes:
                m = members(n, token)
                for i in range(pods):
                    got, want = m[pod_name(i)]["address"], envs[i]["HYPERCACHE_DIST_ADDR"]
                    need(got == want, f"pod {n.ordinal} sees {pod_name(i)} at {got}, not {want}")

        def data():
            put = nodes[0].url("HYPERCACHE_API_ADDR", "/v1/cache/kubernetes-check")
            get = nodes[2].url("HYPERCACHE_API_ADDR", "/v1/cache/kubernetes-check")
            st, body = http("PUT", put, token, b"formed")
            need(st == 200, f"PUT through pod 0: {st} {body[:200]!r}")
            st, body = http("GET", get, token)
            need((st, body) == (200, b"formed"), f"GET through pod 2: {st} {body[:200]!r}")
            st, _ = http("GET", get)
            need(st == 401, f"GET without the Secret's token: {st}, not 401")

        def stop(node, others):
            """SIGTERM `node` as a scale-down does: readiness 503 while it drains, exit 0
            within the grace period, the others see it leave."""
            t0 = time.monotonic()
            node.proc.send_signal(signal.SIGTERM)
            url = f"http://{pod_ip(node.ordinal)}:{ready[1]}{ready[0]}"

            def draining():
                st = http("GET", url)[0]
                need(st == 503 or node.proc.poll() is None,
                     f"pod {node.ordinal} exited ({node.proc.returncode}) before readiness answered 503")
                return st == 503, st
            wait_for(f"pod {node.ordinal} readiness 503 while draining", draining, v.grace, 0.05)
            try:
                rc = node.proc.wait(timeout=max(0.0, v.grace - (time.monotonic() - t0)))
            except subprocess.TimeoutExpired:
                raise Failure(f"pod {node.ordinal} still running after terminationGracePeriodSeconds {v.grace}")
            need(rc == 0, f"pod {node.ordinal} exited {rc}")
            budget = logged_budget(node.log_lines())
            need(budget is not None, f"pod {node.ordinal} logged no shutdown budget")
            need(budget == expected_budget and budget <= v.grace,
                 f"pod {node.ordinal} logged a budget of {budget:g} s; computed {expected_budget} s, "
                 f"grace {v.grace} s")
            for o in others:
                wait_for(f"pod {o.ordinal} sees pod {node.ordinal} left",
                         lambda: (((members(o, token) or {}).get(pod_name(node.ordinal)) or {})
                                  .get("state") == "left", None), 10, 0.25)

        def scale_down():
            stop(nodes[2], nodes[:2])
            stop(nodes[1], nodes[:1])
            stop(nodes[0], [])

        if results.run("base: 3 nodes with the pods' environment form a cluster", start):
            results.run("base: a key written through pod 0 reads back through pod 2", data)
            results.run("base: SIGTERM 2, 1, 0: readiness 503, exit 0 within the grace period", scale_down)
    finally:
        failed_nodes = [n for n in nodes if n.proc.poll() != 0]
        for n in nodes:
            n.kill()
        for n in failed_nodes:
            print(f"--- log of pod {n.ordinal} (last 30 lines)")
            print("\n".join(n.log_lines()[-30:]))


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the hypercache-server binary")
    ap.add_argument("--logdir", default=None, help="where the nodes' logs go (default: a temp dir)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    t0 = time.monotonic()
    results = Results()
    logdir = args.logdir or tempfile.mkdtemp(prefix="hypercache-k8s-")
    os.makedirs(logdir, exist_ok=True)

    has_kubectl = kubectl_kustomize_works()
    variants = discover()
    base = None
    for v in variants:
        if not results.run(f"{v.name}: render", step_render, v):
            continue
        if has_kubectl:
            results.run(f"{v.name}: same as kubectl kustomize", step_kubectl, v)
        else:
            results.skip(f"{v.name}: same as kubectl kustomize", "no kubectl")
        results.run(f"{v.name}: valid against Kubernetes {', '.join(KUBE_VERSIONS)} (strict)", step_validate, v)
        results.run(f"{v.name}: invariants", step_invariants, v)
        cfg = results.run(f"{v.name}: check-config with each pod's environment", step_check_config, v, args.bin)
        if cfg:
            results.run(f"{v.name}: grace period covers the shutdown budget", step_budget, v, cfg)
            results.run(f"{v.name}: resources cover the memory bounds", step_memory, v, cfg)
        if v.name == "base":
            base = v
    if base and base.docs:
        step_cluster(base, args.bin, logdir, results)
    print(f"({time.monotonic() - t0:.0f} s; node logs in {logdir})")
    line = f"kubernetes: {results.passed} passed, {results.failed} failed"
    if results.skipped:
        line += f", {results.skipped} skipped"
    print(line)
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
