"""Drives the dashboard of a 3-node cluster in headless Chromium (see tests/ui/run)."""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

TOKEN = "ui-test-token"


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_for(what, deadline, check, interval=0.1):
    end = time.monotonic() + deadline
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"no {what} within {deadline}s")
        time.sleep(interval)


def http_ok(url, headers=None):
    try:
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except Exception:
        return False


class Cdp:
    """A minimal DevTools protocol client: commands by id, events kept in order."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def drain(self):
        """Reads the events that arrived since the last command."""
        self.ws.settimeout(0.05)
        try:
            while True:
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.ws.settimeout(30)

    def errors(self, since=0):
        """Console errors, uncaught exceptions and error log entries after `since`."""
        out = []
        for e in self.events[since:]:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(("exception", json.dumps(p.get("exceptionDetails", {}))[:500]))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(("console", json.dumps(p.get("args", []))[:500]))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                out.append((entry.get("source", "log"), entry.get("text", "") + " " + entry.get("url", "")))
        return out


def members(cdp):
    return cdp.eval(
        "JSON.stringify([...document.querySelectorAll('#members tbody tr')]"
        ".map(r => [r.dataset.id, r.dataset.state]))"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium is not installed")

    nodes = []
    ports = [free_ports(3) for _ in range(3)]
    seeds = ",".join(f"node-{i + 1}@127.0.0.1:{p[2]}" for i, p in enumerate(ports))
    for i, (api, mgmt, dist) in enumerate(ports):
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HYPERCACHE_NODE_ID": f"node-{i + 1}",
            "HYPERCACHE_API_ADDR": f"127.0.0.1:{api}",
            "HYPERCACHE_MGMT_ADDR": f"127.0.0.1:{mgmt}",
            "HYPERCACHE_DIST_ADDR": f"127.0.0.1:{dist}",
            "HYPERCACHE_SEEDS": seeds,
            "HYPERCACHE_AUTH_TOKEN": TOKEN,
            "HYPERCACHE_HEARTBEAT": "200ms",
            "HYPERCACHE_PEER_TIMEOUT": "300ms",
            # Long enough for the page to show the frozen node as suspect, not dead.
            "HYPERCACHE_SUSPECT_TIMEOUT": "30s",
            "HYPERCACHE_DRAIN_LINGER": "0s",
        }
        log = open(os.path.join(args.out, f"node-{i + 1}.log"), "w")
        nodes.append(subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL, stderr=log))
    profile = tempfile.mkdtemp(prefix="hypercache-ui-")
    (cdp_port,) = free_ports(1)
    browser = subprocess.Popen(
        [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-sync", "--metrics-recording-only",
            f"--remote-debugging-port={cdp_port}", f"--user-data-dir={profile}",
            "--window-size=1280,900", "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(args.out, "chromium.log"), "w"),
    )
    try:
        mgmt1 = ports[0][1]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for _, mgmt, _ in ports:
            wait_for("a healthy node", 30, lambda m=mgmt: http_ok(f"http://127.0.0.1:{m}/health"))
        def all_alive():
            with urllib.request.urlopen(urllib.request.Request(
                    f"http://127.0.0.1:{mgmt1}/cluster/members", headers=auth), timeout=2) as r:
                ms = json.load(r)["members"]
            return len(ms) == 3 and all(m["state"] == "alive" for m in ms)
        wait_for("three alive members", 30, lambda: http_ok(f"http://127.0.0.1:{mgmt1}/health") and all_alive())

        def page_target():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                return pages[0]["webSocketDebuggerUrl"] if pages else None
            except Exception:
                return None
        cdp = Cdp(wait_for("the browser's DevTools endpoint", 30, page_target))
        cdp.call("Runtime.enable")
        cdp.call("Log.enable")
        cdp.call("Page.enable")
        url = f"http://127.0.0.1:{mgmt1}/ui"

        # First visit: no token yet, so the page asks for one (the refused requests are
        # the browser's network log entries of status 401, nothing else).
        cdp.call("Page.navigate", url=url)
        wait_for("the token form", 15, lambda: cdp.eval(
            "(() => { const l = document.getElementById('login'); return !!l && !l.hidden; })()"))
        first = cdp.errors()
        unexpected = [e for e in first if not (e[0] == "network" and "401" in e[1])]
        assert not unexpected, f"errors on the first load: {unexpected}"
        cdp.eval(
            f"document.getElementById('token').value = {json.dumps(TOKEN)};"
            "document.getElementById('login').requestSubmit(); true"
        )
        wait_for("three members listed", 15,
                 lambda: len(json.loads(members(cdp))) == 3)

        # Typed once: a reload keeps the token for the tab and loads without errors.
        mark = len(cdp.events)
        cdp.call("Page.reload")
        wait_for("the live stream after a reload", 15,
                 lambda: cdp.eval("document.getElementById('status')?.textContent") == "live")
        assert cdp.eval("document.getElementById('login').hidden"), "asked for the token again"
        rows = json.loads(wait_for("three alive members", 15, lambda: (
            lambda r: r if len(json.loads(r)) == 3 and all(s == "alive" for _, s in json.loads(r)) else None)(members(cdp))))
        assert sorted(i for i, _ in rows) == ["node-1", "node-2", "node-3"], rows
        # Some traffic (bounded: 300 writes) for the rate and p99 cards of the screenshot.
        api1 = ports[0][0]
        for i in range(300):
            req = urllib.request.Request(f"http://127.0.0.1:{api1}/v1/cache/ui-{i}", data=b"v",
                                         method="PUT", headers=auth)
            urllib.request.urlopen(req, timeout=5).close()
        time.sleep(2.5)  # a metrics poll after the traffic
        shot = cdp.call("Page.captureScreenshot", format="png")
        import base64
        with open(os.path.join(args.out, "dashboard.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))

        # node-3 frozen: the page shows it suspect.
        nodes[2].send_signal(signal.SIGSTOP)
        try:
            wait_for("node-3 shown suspect", 20, lambda: dict(json.loads(members(cdp))).get("node-3") == "suspect")
            state_cell = cdp.eval(
                "document.querySelector('#members tr[data-id=\"node-3\"] td.state-suspect') !== null")
            assert state_cell, "the suspect state is not marked in its cell"
        finally:
            nodes[2].send_signal(signal.SIGCONT)
        cdp.drain()
        errors = cdp.errors(mark)
        assert not errors, f"console errors: {errors}"
        print("dashboard: token asked once and kept; 3 members listed; node-3 suspect when frozen; no console errors")
    finally:
        browser.terminate()
        for n in nodes:
            n.send_signal(signal.SIGCONT)
            n.terminate()
        for p in [browser, *nodes]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
