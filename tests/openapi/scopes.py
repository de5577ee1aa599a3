"""Scope conformance of a live node against its OpenAPI documents (tests/openapi/run).

Each operation's `security` requirement names the scope it needs (`bearerAuth: [write]`).
For every operation of both documents, as served by the node, and for each identity of
the auth file the runner wrote (tokens and an HTTP Basic user with some of the scopes):

  - an identity without the operation's scope gets 403 with the JSON error
    `{"error": ..., "code": "FORBIDDEN"}` (nothing runs: the guard refuses first);
  - an identity with it is let through (neither 401 nor 403): every operation but
    POST /dist/drain is sent (a PUT stores the key `openapi-scope-probe`, POST bodies are
    `{}`, which the batch routes refuse with 400; /clear and /trigger-expiration act);
  - a public operation (`security: []`) answers without credentials;
  - a protected one without credentials, or with a wrong Basic password, gets 401
    `UNAUTHORIZED` with a `WWW-Authenticate` header.

usage: scopes.py --client URL --management URL --identities JSON
  JSON: [{"name", "authorization", "scopes": [...]}, ...]
Prints one line per failed expectation and a count; exit 1 when one failed.
"""

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import yaml

METHODS = ("get", "head", "put", "post", "delete", "patch")
PROBE_KEY = "openapi-scope-probe"
# Never sent with credentials that allow them.
NOT_RUN = {("post", "/dist/drain")}


def fetch(url, method="GET", headers=None):
    """(status, headers, body) of one request; never raises on an HTTP status."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    if method in ("PUT", "POST"):
        req.data = b"{}" if method == "POST" else b"v"
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.headers.get("Content-Type", "").startswith("text/event-stream"):
                # An event stream does not end: its first chunk is the answer.
                return r.status, r.headers, r.read1(65536)
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def needed_scope(doc, op):
    """The scope an operation names, or None for a public one."""
    security = op.get("security", doc.get("security", []))
    if not security:
        return None
    scopes = {s for req in security for roles in req.values() for s in roles}
    if len(scopes) != 1:
        raise SystemExit(f"operation {op.get('operationId')} names scopes {sorted(scopes)}; expected one")
    return scopes.pop()


def request_url(base, path, op, path_params):
    """The operation's URL with its path parameters and required query parameters filled."""
    params = list(path_params) + list(op.get("parameters", []))
    query = {}
    for p in params:
        if "$ref" in p:
            raise SystemExit(f"unresolved parameter {p['$ref']}")
        schema = p.get("schema", {})
        value = (schema.get("enum") or [PROBE_KEY])[0]
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", urllib.parse.quote(value, safe=""))
        elif p["in"] == "query" and p.get("required"):
            query[p["name"]] = value
    return base + path + ("?" + urllib.parse.urlencode(query) if query else "")


def resolve(doc, node):
    """`node` with a top-level `$ref` into components followed."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target = doc
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def check_document(base, doc_path, identities, failures, counts):
    status, _, body = fetch(base + doc_path)
    if status != 200:
        failures.append(f"GET {base}{doc_path}: {status}, expected 200 without credentials")
        return
    doc = yaml.safe_load(body)
    for path, item in doc["paths"].items():
        path_params = [resolve(doc, p) for p in item.get("parameters", [])]
        for method in METHODS:
            if method not in item:
                continue
            op = item[method]
            op = dict(op, parameters=[resolve(doc, p) for p in op.get("parameters", [])])
            scope = needed_scope(doc, op)
            url = request_url(base, path, op, path_params)
            name = f"{method.upper()} {path}"
            safe = method in ("get", "head")
            if scope is None:
                if safe:
                    counts[0] += 1
                    got, _, _ = fetch(url, method.upper())
                    if got in (401, 403):
                        failures.append(f"{name} is public in the document but answered {got} without credentials")
                continue
            # No credentials: 401 with a challenge (sent for every method: the guard
            # refuses before the route runs).
            counts[0] += 1
            got, headers, body = fetch(url, method.upper())
            if got != 401 or not headers.get("WWW-Authenticate"):
                failures.append(f"{name} without credentials: {got}, expected 401 with WWW-Authenticate")
            elif method != "head" and error_code(body) != "UNAUTHORIZED":
                failures.append(f"{name} without credentials: body {body[:200]!r}, expected code UNAUTHORIZED")
            for ident in identities:
                holds = scope in ident["scopes"]
                if holds and (method, path) in NOT_RUN:
                    continue
                counts[0] += 1
                got, _, body = fetch(url, method.upper(), {"Authorization": ident["authorization"]})
                if holds and got in (401, 403):
                    failures.append(f"{name} as {ident['name']} (holds {scope!r}): {got} {body[:200]!r}")
                elif not holds:
                    if got != 403:
                        failures.append(f"{name} as {ident['name']} (lacks {scope!r}): {got}, expected 403")
                    elif method != "head" and error_code(body) != "FORBIDDEN":
                        failures.append(f"{name} as {ident['name']} (lacks {scope!r}): body {body[:200]!r}, expected code FORBIDDEN")


def error_code(body):
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict) or set(doc) != {"error", "code"}:
        return None
    return doc["code"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--client", required=True, help="client API base URL")
    ap.add_argument("--management", required=True, help="management API base URL")
    ap.add_argument("--identities", required=True, help="JSON list of identities")
    ap.add_argument("--bad-basic", required=True, help="an Authorization header with a wrong Basic password")
    args = ap.parse_args()
    identities = json.loads(args.identities)
    failures = []
    counts = [0]
    check_document(args.client, "/v1/openapi.yaml", identities, failures, counts)
    check_document(args.management, "/openapi.yaml", identities, failures, counts)
    counts[0] += 1
    got, headers, _ = fetch(args.client + "/v1/me", headers={"Authorization": args.bad_basic})
    if got != 401 or not headers.get("WWW-Authenticate"):
        failures.append(f"GET /v1/me with a wrong Basic password: {got}, expected 401 with WWW-Authenticate")
    for f in failures:
        print(f"scope check failed: {f}")
    print(f"scope checks: {counts[0] - len(failures)} of {counts[0]} as expected")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
