// The operator dashboard: reads GET /cluster/events (a Server-Sent Events stream, read
// with fetch so that it can carry the bearer token) and polls /cluster/ring and
// /metrics. No framework, no external resource.
"use strict";

const KEY = "hypercache.token";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(KEY) || "";
let latency = null; // the previous histogram sample, for rates and p99
let members = null;
let shares = {};
let streamOpen = false;
const recent = [];

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

function askToken(message) {
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(KEY, token);
  $("login").hidden = true;
  connect();
});

function setStatus(on, text) {
  const s = $("status");
  s.className = "pill " + (on ? "on" : "off");
  s.textContent = text;
}

function text(id, value) {
  $(id).textContent = value;
}

function renderMembers() {
  if (!members) return;
  const tbody = $("members").querySelector("tbody");
  tbody.replaceChildren();
  const counts = {};
  for (const m of members.members) {
    counts[m.State] = (counts[m.State] || 0) + 1;
    const tr = document.createElement("tr");
    tr.dataset.id = m.ID;
    tr.dataset.state = m.State;
    const share = shares[m.ID];
    for (const [value, cls] of [
      [m.ID + (m.ID === members.self ? " (this node)" : ""), ""],
      [m.Address, ""],
      [m.State, "state-" + m.State],
      [String(m.Incarnation), ""],
      [share === undefined ? "–" : (share * 100).toFixed(1) + " %", ""],
    ]) {
      const td = document.createElement("td");
      td.textContent = value;
      if (cls) td.className = cls;
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
  text("node", members.self);
  text("m-count", String(members.members.length));
  text("m-detail", Object.entries(counts).map(([k, v]) => v + " " + k).join(", ") +
    " · replication " + members.replication);
}

function addEvent(name, data) {
  const time = new Date().toLocaleTimeString();
  let summary;
  if (name === "members") {
    summary = data.members.map((m) => m.ID + "=" + m.State).join(" ");
  } else {
    summary = JSON.stringify(data);
  }
  recent.unshift(time + "  " + name + "  " + summary);
  recent.length = Math.min(recent.length, 50);
  const ol = $("events");
  ol.replaceChildren(...recent.map((line) => {
    const li = document.createElement("li");
    li.textContent = line;
    return li;
  }));
}

function onEvent(name, data) {
  switch (name) {
    case "members":
      members = data;
      renderMembers();
      addEvent(name, data);
      break;
    case "heartbeat":
      break;
    case "hints":
      text("hints", String(data.pending));
      text("hints-peers", data.perPeer.map((p) => p.peer + ": " + p.pending).join(", ") ||
        "replayed " + data.replayed + ", expired " + data.expired);
      addEvent(name, data);
      break;
    case "rebalance":
      text("rebalance", data.pending ? data.pending + " waiting" : "idle");
      text("rebalance-detail", "moved " + data.moved + ", failed " + data.failed +
        ", last " + data.lastDurationMs + " ms");
      addEvent(name, data);
      break;
    case "drain":
      text("drain", data.draining ? "draining" : "serving");
      text("drain-detail", "hints handed off " + data.hintsHandedOff);
      addEvent(name, data);
      break;
    case "anti-entropy":
      text("ae", "rounds " + data.rounds + " · keys pushed " + data.keysPushed + ", pulled " +
        data.keysPulled + " · errors " + data.errors + " · last round " + data.lastDurationMs +
        " ms, " + data.lastDifferingBuckets + " differing segments");
      addEvent(name, data);
      break;
  }
}

// Reads the event stream; reconnects after the server's `retry` delay.
async function stream() {
  let retry = 5000;
  for (;;) {
    try {
      const resp = await fetch("/cluster/events", { headers: headers(), cache: "no-store" });
      if (resp.status === 401 || resp.status === 403) {
        setStatus(false, "no access");
        askToken(resp.status === 401 ? "The token was refused." : "This token lacks the read scope.");
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      streamOpen = true;
      setStatus(true, "live");
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("retry: ")) retry = Number(line.slice(7)) || retry;
          }
          if (!data) continue;
          let parsed;
          try {
            parsed = JSON.parse(data);
          } catch (e) {
            // Not this server's stream (a proxy's error page?): start over.
            console.error("dashboard: unreadable event", name, e);
            await reader.cancel();
            throw e;
          }
          try {
            onEvent(name, parsed);
          } catch (e) {
            // A rendering bug: shown in the console, the stream goes on.
            console.error("dashboard: cannot show event", name, e);
          }
        }
      }
    } catch (e) {
      // The node restarted or the network dropped: shown, then retried.
    }
    streamOpen = false;
    setStatus(false, "reconnecting");
    await new Promise((r) => setTimeout(r, retry));
  }
}

// Sums the client routes' latency buckets of a Prometheus text exposition.
function histogram(textBody) {
  const client = ["cache_get", "cache_put", "cache_delete", "keys", "owners"];
  const buckets = new Map();
  let count = 0;
  for (const line of textBody.split("\n")) {
    if (!line.startsWith("hypercache_request_duration_seconds_bucket{")) continue;
    const m = line.match(/route="([^"]+)",le="([^"]+)"\} (\d+)/);
    if (!m || !client.includes(m[1])) continue;
    const n = Number(m[3]);
    buckets.set(m[2], (buckets.get(m[2]) || 0) + n);
    if (m[2] === "+Inf") count += n;
  }
  return { at: Date.now(), buckets, count };
}

function p99(prev, now) {
  const total = now.count - prev.count;
  if (total <= 0) return null;
  const bounds = [...now.buckets.keys()].filter((b) => b !== "+Inf").map(Number).sort((a, b) => a - b);
  for (const b of bounds) {
    const key = String(b);
    const got = (now.buckets.get(key) || 0) - (prev.buckets.get(key) || 0);
    if (got >= 0.99 * total) return b;
  }
  return Infinity;
}

async function poll() {
  try {
    const ring = await fetch("/cluster/ring", { headers: headers() });
    if (ring.ok) {
      const body = await ring.json();
      shares = {};
      for (const n of body.nodes) shares[n.id] = n.primaryShare;
      renderMembers();
    }
    const metrics = await fetch("/metrics", { headers: headers() });
    if (metrics.ok) {
      const now = histogram(await metrics.text());
      if (latency) {
        const secs = (now.at - latency.at) / 1000;
        // A count that went down is a restarted node: no rate for this interval.
        const n = now.count - latency.count;
        text("rate", secs > 0 && n >= 0 ? (n / secs).toFixed(1) : "–");
        const p = p99(latency, now);
        text("p99", p === null ? "idle" : p === Infinity ? "> 5 s" : "≤ " + (p * 1000) + " ms");
      }
      latency = now;
    }
  } catch (e) {
    // Shown by the stream's status; the next poll tries again.
  }
}

function connect() {
  stream();
  poll();
}

setInterval(() => { if (streamOpen) poll(); }, 2000);
connect();
