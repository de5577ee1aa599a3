#!/usr/bin/env python3
"""History checker of the `faults` container scenario (standard library only).

Writer threads put, delete and read their own keys through every node of the compose
cluster (the faulted ones included) while tests/containers/faults.sh injects faults, and
record every operation: key, kind, value, node, consistency level, invocation and
completion time, outcome. Each key has exactly one writer, so its history is a sequence.

Outcomes:
  ok         2xx (a GET's 404 NOT_FOUND is an ok read of "absent")
  failed     definitely not applied: no connection, 4xx, 503 DRAINING / OVERLOADED /
             CLOCK_NOT_SYNCED (refused when the request arrives), 503 QUORUM_FAILED whose
             error says it was refused before anything was applied (too few home owners
             reachable); a failed write that takes effect is a violation
  ambiguous  may or may not have been applied: timeout or connection error after the
             request was sent, any other 503 QUORUM_FAILED (the write may land later
             through hinted handoff), any other 5xx

The rule (the one of tests/history.rs): the value of a key must be the effect of its last
acknowledged operation (absent if none), or of an ambiguous operation issued after it.
It covers lost acknowledged writes and deleted keys that come back. One refinement: a
paused (SIGSTOP) node still receives requests, queued by the kernel, and handles them
when it resumes, so an ambiguous write sent to it counts as issued when the pause ends
(plus BACKLOG seconds); the reads that see such a late write are reported. The rule is
checked by quorum reads during the run (a quorum read outside it is a violation; a read
at `one` outside it is reported as stale) and, after every fault is healed, by a quorum
read of every key through every node. During a partition, no key may have quorum writes
acknowledged on both sides (the side of the node that coordinated the write).

faults.sh drives it through a control file, one event per line, `<epoch seconds> <event>`:
  nodes 1:8081 2:8082 ...  the nodes (id:client port) to send requests to from now on
  fault NAME [sides=A/B] [paused=N]
                           fault NAME is in place from now; A/B are the two sides of a
                           partition as comma lists of node ids (`sides=5/1,2,3,4`), N
                           the node a SIGSTOP paused
  heal NAME                NAME is being removed now: convergence is measured from here
                           and written to DIR/converged-NAME (seconds, or `timeout`)
  stop                     the workload stops (in-flight operations complete)
  final                    every node sees all members alive: final reads, checks, exit
Exit status: 0 no violation, 1 violations (printed with the keys' histories), 2 the run
itself went wrong (no `final` in time, too few operations to mean anything).
"""

import argparse
import dataclasses
import http.client
import json
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field

TOKEN = "dev-token"
ABSENT = None  # the effect of a delete, and the value of a key never written
OUTCOMES = ("ok", "ambiguous", "failed")
# 503 codes of a write refused when it arrives, before anything is applied.
REFUSED = ("DRAINING", "OVERLOADED", "CLOCK_NOT_SYNCED")
# The start of the error text of a QUORUM_FAILED write refused before anything was sent
# to an owner (too few home owners reachable); any other QUORUM_FAILED is ambiguous.
REFUSED_UNAPPLIED = "refused before anything was applied"
SEVERITY = ("final read", "both sides", "quorum read", "not converged")
# A paused node still receives requests (the kernel queues them) and handles them when it
# resumes: a write sent to it counts as issued at the end of the pause plus BACKLOG
# seconds. RESUMED: pause name -> when it ended (absent while it lasts).
BACKLOG = 5.0
RESUMED = {}


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} [faults] {msg}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class Op:
    key: str
    kind: str  # put | delete | get
    node: int
    level: str  # quorum | one
    t_inv: float
    value: str | None = None  # put: the value written; get: the value read (None: absent)
    t_done: float = 0.0
    outcome: str = ""  # ok | failed | ambiguous
    detail: str = ""  # status and code, or the error
    phase: str = "steady"
    verdict: str = ""  # get: "" (within the rule), stale, or a diagnosis
    deferred: str = ""  # ambiguous write sent to a paused node: the name of that pause

    def issued(self):
        """When the operation may take effect from: its invocation, or for a write a paused
        node received, the end of the pause (plus the time to work off its backlog)."""
        if not self.deferred:
            return self.t_inv
        resumed = RESUMED.get(self.deferred)
        return float("inf") if resumed is None else resumed + BACKLOG

    def effect(self):
        return self.value if self.kind == "put" else ABSENT

    def describe(self):
        what = {"put": f"PUT {self.value!r}", "delete": "DELETE", "get": f"GET -> {show(self.value)}"}
        extra = f" [{self.verdict}]" if self.verdict else ""
        return (f"{at(self.t_inv)}..{at(self.t_done)[6:]} node {self.node} {self.level:6} "
                f"{what[self.kind]:28} {self.outcome:9} {self.detail}{extra} ({self.phase})")


def at(t):
    """Wall-clock time of day (UTC, as in the container logs) with milliseconds."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def show(effect):
    return "absent" if effect is ABSENT else repr(effect)


@dataclass
class KeyState:
    """One key's history, kept by its writer thread."""
    ops: list = field(default_factory=list)
    last_acked: Op | None = None
    ambiguous: list = field(default_factory=list)  # ambiguous writes that may still count

    def allowed(self, strict=False):
        """The effects the key may show: the last acknowledged operation's, and those of the
        ambiguous writes issued after it. `strict` ignores deferral by a pause."""
        since = self.last_acked.t_inv if self.last_acked else float("-inf")
        effects = {op.effect() for op in self.ambiguous
                   if (op.t_inv if strict else op.issued()) > since}
        effects.add(self.last_acked.effect() if self.last_acked else ABSENT)
        return effects

    def record_write(self, op):
        self.ops.append(op)
        if op.outcome == "ok":
            self.last_acked = op
            self.ambiguous = [a for a in self.ambiguous if a.issued() > op.t_inv]
        elif op.outcome == "ambiguous":
            self.ambiguous.append(op)

    def diagnose(self, got):
        """Why `got` is outside the rule, in words."""
        acked_put = self.last_acked is not None and self.last_acked.kind == "put"
        if got is ABSENT:
            return "acknowledged write lost (key absent)" if acked_put else "absent"
        source = next((op for op in self.ops if op.kind == "put" and op.value == got), None)
        if source is None:
            return "a value never written"
        if self.last_acked is not None and self.last_acked.kind == "delete" and source.t_inv < self.last_acked.t_inv:
            return f"deleted key came back ({source.outcome} write of {at(source.t_inv)})"
        if source.outcome == "failed":
            return "a refused write took effect"
        if source.outcome == "ok":
            return (f"older acknowledged write (of {at(source.t_inv)}) returned: the acknowledged "
                    f"{self.last_acked.kind} of {at(self.last_acked.t_inv)} lost")
        return (f"ambiguous write of {at(source.t_inv)}, issued before the last acknowledged "
                f"operation, took effect after it")


T0 = time.time()


class Cluster:
    """Nodes to send requests to (id -> client port), changed by `nodes` events."""

    def __init__(self, nodes, timeout):
        self.lock = threading.Lock()
        self.nodes = dict(nodes)
        self.timeout = timeout

    def set(self, nodes):
        with self.lock:
            self.nodes = dict(nodes)

    def snapshot(self):
        with self.lock:
            return dict(self.nodes)

    def request(self, port, method, key, level, body=None):
        """Returns (outcome, status, code, body text, detail)."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
        try:
            try:
                conn.connect()
            except OSError as e:  # nothing was sent
                return "failed", 0, "", None, f"connect: {e.__class__.__name__}"
            try:
                conn.request(method, f"/v1/cache/{key}?consistency={level}", body=body,
                             headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"})
                resp = conn.getresponse()
                data = resp.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as e:
                return "ambiguous", 0, "", None, e.__class__.__name__
        finally:
            conn.close()
        code = error = ""
        if resp.status >= 300:
            try:
                body = json.loads(data)
                code, error = str(body.get("code", "")), str(body.get("error", ""))
            except (ValueError, AttributeError):
                pass
        if code == "QUORUM_FAILED" and error.startswith(REFUSED_UNAPPLIED):
            code = "QUORUM_FAILED (refused, applied nowhere)"
        detail = f"{resp.status} {code}".strip()
        if 200 <= resp.status < 300 or (method == "GET" and resp.status == 404 and code == "NOT_FOUND"):
            return "ok", resp.status, code, data, detail
        if 400 <= resp.status < 500 or code in REFUSED or error.startswith(REFUSED_UNAPPLIED):
            return "failed", resp.status, code, data, detail
        return "ambiguous", resp.status, code, data, detail


@dataclass
class Phase:
    name: str
    t_fault: float
    sides: tuple | None = None  # (set of node ids, set of node ids) for partitions
    paused: int | None = None  # the node a SIGSTOP paused
    t_heal: float | None = None
    converged: float | None = None  # seconds from heal until the sample agreed
    side_writes: list = field(default_factory=list)  # partitions: per side, writes by outcome
    unconverged: list = field(default_factory=list)


class Checker:
    def __init__(self, args):
        self.args = args
        self.cluster = Cluster(parse_nodes(args.nodes.split()), args.timeout)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.phases = []
        self.keys = {}
        for w in range(args.writers):
            for k in range(args.keys):
                self.keys[f"hf-w{w}-k{k}"] = KeyState()
        self.op_count = 0
        self.violations = []  # (key, kind, text, window)
        self.late = []  # (key, op, what): values only a write deferred by a pause explains

    def violate(self, key, kind, text, window=None):
        """Records a violation; `window` (from, to) selects the operations printed with it."""
        self.violations.append((key, kind, text, window))

    # ---- phases ----

    def phase_at(self, t):
        with self.lock:
            for p in reversed(self.phases):
                if p.t_fault <= t and (p.t_heal is None or t < p.t_heal):
                    return p.name
        return "steady"

    def pause_of(self, op):
        """The pause during which `op` was sent to the paused node, or ""."""
        with self.lock:
            for p in self.phases:
                if (p.paused == op.node and p.t_fault - self.args.timeout <= op.t_inv
                        and (p.t_heal is None or op.t_inv <= p.t_heal)):
                    return p.name
        return ""

    # ---- workload ----

    def writer(self, w):
        rng = random.Random(self.args.seed * 1000 + w)
        keys = [f"hf-w{w}-k{k}" for k in range(self.args.keys)]
        seq = 0
        while not self.stop.is_set():
            with self.lock:
                if self.op_count >= self.args.max_ops:
                    break
                self.op_count += 1
            seq += 1
            key = rng.choice(keys)
            nodes = self.cluster.snapshot()
            node = rng.choice(sorted(nodes))
            roll = rng.random()
            if roll < 0.40:
                kind, level, method, body = "put", "quorum", "PUT", f"{key}@{seq}"
            elif roll < 0.55:
                kind, level, method, body = "delete", "quorum", "DELETE", None
            elif roll < 0.85:
                kind, level, method, body = "get", "quorum", "GET", None
            else:
                kind, level, method, body = "get", "one", "GET", None
            t_inv = time.time()
            op = Op(key, kind, node, level, t_inv, value=body, phase=self.phase_at(t_inv))
            outcome, status, _code, data, detail = self.cluster.request(
                nodes[node], method, key, level, body.encode() if body is not None else None)
            op.t_done, op.outcome, op.detail = time.time(), outcome, detail
            st = self.keys[key]
            if kind == "get":
                op.value = data if (outcome == "ok" and status == 200) else ABSENT
                if outcome == "ok" and op.value not in st.allowed():
                    op.verdict = "stale" if level == "one" else st.diagnose(op.value)
                elif outcome == "ok" and op.value not in st.allowed(strict=True):
                    self.late.append((key, op, f"{level} read through node {op.node}"))
                st.ops.append(op)
            else:
                if outcome == "ambiguous":
                    op.deferred = self.pause_of(op)
                st.record_write(op)
            time.sleep(rng.uniform(self.args.pause / 2, self.args.pause * 1.5))

    # ---- convergence after a heal ----

    def converge(self, phase):
        rng = random.Random(f"{self.args.seed}-{phase.name}")
        sample = rng.sample(sorted(self.keys), min(self.args.sample, len(self.keys)))
        pending = set(sample)
        last = {}
        deadline = phase.t_heal + self.args.converge_deadline
        while pending and time.time() < deadline:
            nodes = self.cluster.snapshot()
            for key in sorted(pending):
                answers = {}
                for n, port in sorted(nodes.items()):
                    outcome, status, _c, data, detail = self.cluster.request(port, "GET", key, "one")
                    answers[n] = (data if status == 200 else ABSENT) if outcome == "ok" else f"<{detail}>"
                last[key] = answers
                values = set(answers.values())
                if len(values) == 1 and not str(next(iter(values))).startswith("<"):
                    pending.discard(key)
            if pending:
                time.sleep(0.2)
        if pending:
            phase.unconverged = [(k, last.get(k)) for k in sorted(pending)]
            result = "timeout"
        else:
            phase.converged = time.time() - phase.t_heal
            result = f"{phase.converged:.1f}"
        with open(os.path.join(self.args.dir, f"converged-{phase.name}"), "w") as f:
            f.write(result + "\n")

    # ---- control ----

    def handle(self, t, event, rest):
        if event == "nodes":
            self.cluster.set(parse_nodes(rest))
        elif event == "fault":
            phase = Phase(rest[0], t)
            for arg in rest[1:]:
                name, _, value = arg.partition("=")
                if name == "sides":
                    a, b = value.split("/")
                    phase.sides = (set(map(int, a.split(","))), set(map(int, b.split(","))))
                elif name == "paused":
                    phase.paused = int(value)
            with self.lock:
                self.phases.append(phase)
        elif event == "heal":
            with self.lock:
                phase = next(p for p in reversed(self.phases) if p.name == rest[0])
                phase.t_heal = t
            if phase.paused is not None:
                RESUMED[phase.name] = t
            threading.Thread(target=self.converge, args=(phase,), daemon=True).start()

    def run(self):
        os.makedirs(self.args.dir, exist_ok=True)
        writers = [threading.Thread(target=self.writer, args=(w,), daemon=True) for w in range(self.args.writers)]
        for t in writers:
            t.start()
        log(f"workload: {self.args.writers} writers x {self.args.keys} keys, writes and deletes at quorum, "
            f"reads at quorum and one, through nodes {','.join(map(str, sorted(self.cluster.snapshot())))}")
        offset = 0
        deadline = time.time() + self.args.max_seconds
        final = False
        while not final:
            if time.time() > deadline:
                self.stop.set()
                log(f"no `final` event within {self.args.max_seconds:.0f}s")
                return 2
            with open(self.args.control) as f:
                f.seek(offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                parts = line.split()
                if len(parts) < 2:
                    continue
                t, event, rest = float(parts[0]), parts[1], parts[2:]
                if event == "stop":
                    self.stop.set()
                    for th in writers:
                        th.join()
                    log(f"workload stopped after {self.op_count} operations")
                elif event == "final":
                    final = True
                else:
                    self.handle(t, event, rest)
            time.sleep(0.1)
        self.final_check()
        self.partition_check()
        return self.summary()

    # ---- final checks ----

    def final_check(self):
        nodes = self.cluster.snapshot()
        deadline = time.time() + self.args.final_deadline
        t_start = time.time()
        for key, st in sorted(self.keys.items()):
            allowed = st.allowed()
            while True:
                answers = {}
                for n, port in sorted(nodes.items()):
                    outcome, status, _c, data, detail = self.cluster.request(port, "GET", key, "quorum")
                    answers[n] = (data if status == 200 else ABSENT) if outcome == "ok" else f"<{detail}>"
                bad = {n: v for n, v in answers.items() if v not in allowed}
                if not bad or time.time() > deadline:
                    break
                time.sleep(0.2)
            strict = st.allowed(strict=True)
            for n, v in sorted(answers.items()):
                if v in allowed and v not in strict:
                    self.late.append((key, None, f"final read through node {n}: {show(v)}"))
            if bad:
                why = "; ".join(
                    f"node {n}: {v}" if isinstance(v, str) and v.startswith("<")
                    else f"node {n}: {show(v)} ({st.diagnose(v)})" for n, v in sorted(bad.items()))
                self.violate(key, "final read", f"outside the rule (allowed: "
                                                f"{', '.join(sorted(map(show, allowed)))}): {why}")
        log(f"final quorum reads of {len(self.keys)} keys through nodes "
            f"{','.join(map(str, sorted(nodes)))} in {time.time() - t_start:.1f}s")

    def partition_check(self):
        for p in self.phases:
            if p.sides is None or p.t_heal is None:
                continue
            acked = {}  # key -> {side index: [ops]}
            writes = [{}, {}]  # side index -> {outcome and detail: count}
            for key, st in self.keys.items():
                for op in st.ops:
                    if op.kind == "get" or not p.t_fault <= op.t_inv <= op.t_done <= p.t_heal:
                        continue
                    side = 0 if op.node in p.sides[0] else 1
                    label = "acknowledged" if op.outcome == "ok" else f"{op.outcome} {op.detail}"
                    writes[side][label] = writes[side].get(label, 0) + 1
                    if op.outcome == "ok" and op.level == "quorum":
                        acked.setdefault(key, {}).setdefault(side, []).append(op)
            p.side_writes = writes
            for key, by_side in sorted(acked.items()):
                if len(by_side) == 2:
                    a, b = (",".join(map(str, sorted(s))) for s in p.sides)
                    self.violate(key, "both sides", f"{p.name}: quorum writes acknowledged on both sides "
                                                    f"({len(by_side[0])} through {a}, {len(by_side[1])} through {b})",
                                 (p.t_fault, p.t_heal))

    def summary(self):
        ops = [op for st in self.keys.values() for op in st.ops]
        for key, st in self.keys.items():
            for op in st.ops:
                if op.kind == "get" and op.level == "quorum" and op.verdict:
                    self.violate(key, "quorum read", f"{at(op.t_inv)} through node {op.node} "
                                                     f"({op.phase}): {op.verdict}", (op.t_inv - 15, op.t_done))
        for p in self.phases:
            for key, answers in p.unconverged:
                self.violate(key, "not converged", f"{p.name}: not read the same through every node "
                             f"{self.args.converge_deadline:.0f}s after the heal: "
                             + ", ".join(f"node {n}: {show(v)}" for n, v in sorted((answers or {}).items())),
                             (p.t_heal - 2, p.t_heal + self.args.converge_deadline))
        elapsed = max((op.t_done for op in ops), default=T0) - T0
        log(f"history: {len(self.keys)} keys, {self.args.writers} writers, {len(ops)} operations in {elapsed:.0f}s "
            f"(times below are UTC)")

        tally = {}  # (phase or None, sort) -> {outcome: n, "stale": n}
        for op in ops:
            sort = op.kind if op.kind != "get" else f"get {op.level}"
            for phase in (None, op.phase):
                c = tally.setdefault((phase, sort), {"ok": 0, "ambiguous": 0, "failed": 0, "stale": 0})
                c[op.outcome] += 1
                c["stale"] += bool(op.verdict)

        def count(sort, phase=None):
            return tally.get((phase, sort), {"ok": 0, "ambiguous": 0, "failed": 0, "stale": 0})

        put, dele, rq, r1 = "put", "delete", "get quorum", "get one"
        for label, sel in (("puts", put), ("deletes", dele)):
            c = count(sel)
            log(f"  {label:13} acknowledged {c['ok']}, ambiguous {c['ambiguous']}, failed {c['failed']}")
        for label, sel in (("reads quorum", rq), ("reads one", r1)):
            c = count(sel)
            log(f"  {label:13} answered {c['ok']} (outside the rule: {c['stale']}), "
                f"ambiguous {c['ambiguous']}, failed {c['failed']}")
        details = {}
        for op in ops:
            if op.outcome != "ok":
                label = f"{op.outcome} {op.detail}"
                details[label] = details.get(label, 0) + 1
        log("  not acknowledged: " + (", ".join(f"{n} {label}" for label, n in
                                               sorted(details.items(), key=lambda x: -x[1])) or "none"))
        split = {}
        for _key, kind, text, _w in self.violations:
            if kind == "both sides":
                name = text.split(":")[0]
                split[name] = split.get(name, 0) + 1
        log("  fault matrix (operations invoked while the fault held; acknowledged/ambiguous/failed):")
        log(f"    {'fault':20} {'puts':>16} {'deletes':>16} {'stale reads':>12} {'both sides':>11} {'converged':>10}")
        log(f"    {'':20} {'':>16} {'':>16} {'quorum/one':>12} {'(keys)':>11} {'':>10}")
        for p in self.phases + [Phase("steady", 0)]:
            cp, cd = count(put, p.name), count(dele, p.name)
            stale = f"{count(rq, p.name)['stale']}/{count(r1, p.name)['stale']}"
            conv = "" if p.name == "steady" else (f"{p.converged:.1f}s" if p.converged is not None else "timeout")
            both = "" if p.sides is None else str(split.get(p.name, 0))
            log(f"    {p.name:20} {'/'.join(str(cp[o]) for o in OUTCOMES):>16} "
                f"{'/'.join(str(cd[o]) for o in OUTCOMES):>16} {stale:>12} {both:>11} {conv:>10}")
        if self.late:
            n = len(self.late)
            log(f"  late applies (within the rule): {n} read{'s' * (n != 1)} saw a write that a paused node "
                f"received and applied when it resumed, after later acknowledged operations; e.g.:")
            for key, op, what in self.late[:3]:
                src = next((w for w in self.keys[key].ops if w.kind == "put" and op is not None
                            and w.value == op.value), None)
                log(f"    {key}: {what}" + (f" at {at(op.t_inv)} saw {src.describe()}" if src else ""))
        for p in self.phases:
            for side, writes in zip(p.sides or (), p.side_writes):
                log(f"    {p.name}: writes through {','.join(map(str, sorted(side)))}: "
                    + ", ".join(f"{n} {label}" for label, n in sorted(writes.items(), key=lambda x: -x[1])))
        if self.args.save:
            with open(self.args.save, "w") as f:
                for op in sorted(ops, key=lambda op: op.t_inv):
                    f.write(json.dumps(dataclasses.asdict(op)) + "\n")
        if self.violations:
            by_key, by_kind = {}, {}
            windows = {}
            for key, kind, text, window in self.violations:
                by_key.setdefault(key, []).append(f"{kind}: {text}")
                by_kind.setdefault(kind, set()).add(key)
                windows.setdefault(key, []).append(window)
            log(f"VIOLATIONS: {len(self.violations)} on {len(by_key)} keys ("
                + ", ".join(f"{kind}: {len(keys)} keys" for kind, keys in sorted(by_kind.items())) + ")")

            def severity(key):  # lost data first, then split brain, stale reads, slow heals
                rank = min(SEVERITY.index(kind) for kind, keys in by_kind.items() if key in keys)
                w, k = key.split("-")[1:]
                return rank, int(w[1:]), int(k[1:])

            for key in sorted(by_key, key=severity)[: self.args.show_keys]:
                texts = by_key[key]
                log(f"  {key}:")
                for text in texts[:8]:
                    log(f"    {text}")
                if len(texts) > 8:
                    log(f"    ... and {len(texts) - 8} more")
                hist = self.keys[key].ops
                shown = [op for op in hist if any(
                    w is None or (op.t_done >= w[0] and op.t_inv <= w[1]) for w in windows[key])]
                if None in windows[key]:
                    shown = hist  # the final state: the end of the history matters
                cut = len(shown) > 40
                log(f"    history: {len(shown)} of its {len(hist)} operations{' (the last 40)' if cut else ''}")
                for op in shown[-40:]:
                    log(f"      {op.describe()}")
            if len(by_key) > self.args.show_keys:
                log(f"  ... and {len(by_key) - self.args.show_keys} more keys: "
                    + " ".join(sorted(by_key, key=severity)[self.args.show_keys:]))
            return 1
        writes_acked, deletes_acked = count(put)["ok"], count(dele)["ok"]
        if writes_acked < 100 or deletes_acked < 20:
            log(f"too few acknowledged operations to mean anything ({writes_acked} puts, {deletes_acked} deletes)")
            return 2
        log("no violation: no acknowledged write lost, no deleted key back, no key acknowledged on "
            "both sides of a partition, every quorum read within the rule, every heal converged")
        return 0


def parse_nodes(items):
    return {int(n): int(p) for n, p in (i.split(":") for i in items)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--control", required=True, help="control file appended by faults.sh")
    ap.add_argument("--dir", required=True, help="where converged-NAME files are written")
    ap.add_argument("--nodes", default="1:8081 2:8082 3:8083 4:8084 5:8085")
    ap.add_argument("--writers", type=int, default=8, help="writer threads")
    ap.add_argument("--keys", type=int, default=15, help="keys per writer")
    ap.add_argument("--pause", type=float, default=0.03, help="mean pause between a writer's operations (s)")
    ap.add_argument("--timeout", type=float, default=3.0, help="HTTP timeout of one request (s)")
    ap.add_argument("--max-ops", type=int, default=400_000)
    ap.add_argument("--max-seconds", type=float, default=900, help="give up without a `final` event after this")
    ap.add_argument("--sample", type=int, default=24, help="keys polled for convergence after a heal")
    ap.add_argument("--converge-deadline", type=float, default=60)
    ap.add_argument("--final-deadline", type=float, default=30)
    ap.add_argument("--show-keys", type=int, default=8, help="violating keys printed with their history")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--save", help="write every operation to this file, one JSON object a line")
    sys.exit(Checker(ap.parse_args()).run())


if __name__ == "__main__":
    main()
