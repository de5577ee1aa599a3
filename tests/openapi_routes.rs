//! The OpenAPI documents and the routers agree: every route the client and management
//! routers register (method and path) is documented, and the documents hold nothing
//! else. The routes are read from the router functions' source (`.route("...", ...)`
//! calls), the documents from their `paths` sections.
//!
//! Left out on purpose: the test-hooks build's `/debug/...` routes, and the
//! `any(...)` catch-alls for an empty key (`/v1/cache/`, `/v1/owners/`), which only
//! answer 400 and are not operations.

use std::collections::BTreeSet;

const METHODS: [&str; 7] = ["get", "head", "put", "post", "delete", "patch", "options"];

/// `(METHOD, path)` of every `.route("path", get(..).put(..))` call in `src`.
fn routes_in_source(src: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        // The call's text, up to its closing parenthesis.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|(j, _)| j)
            .expect("a .route( call closes");
        let call = &rest[..end];
        let Some(path) = call.split('"').nth(1) else {
            continue; // a constant path: the dist listener's, not documented here
        };
        if path.starts_with("/debug/") || call.contains("any(") {
            continue;
        }
        for m in METHODS {
            let called = call.match_indices(&format!("{m}(")).any(|(j, _)| {
                j == 0
                    || !call.as_bytes()[j - 1].is_ascii_alphanumeric()
                        && call.as_bytes()[j - 1] != b'_'
            });
            if called {
                out.insert((m.to_uppercase(), path.to_string()));
            }
        }
    }
    out
}

/// `(METHOD, path)` of every operation under the document's `paths:`.
fn operations_in_document(doc: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut in_paths = false;
    let mut path: Option<String> = None;
    for line in doc.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /") {
            if !p.starts_with(' ') {
                path = Some(format!("/{}", p.trim_end().trim_end_matches(':')));
                continue;
            }
        }
        if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ")) {
            let m = m.trim_end().trim_end_matches(':');
            if METHODS.contains(&m) {
                out.insert((m.to_uppercase(), p.clone()));
            }
        }
    }
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn compare(sources: &[&str], doc: &str) {
    let mut routed = BTreeSet::new();
    for s in sources {
        routed.extend(routes_in_source(&read(s)));
    }
    let documented = operations_in_document(&read(doc));
    assert!(
        routed.len() >= 10,
        "the source scan found too little: {routed:?}"
    );
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{doc}: routed but not documented: {missing:?}; documented but not routed: {extra:?}"
    );
}

#[test]
fn client_routes_match_the_document() {
    compare(&["src/http/client.rs"], "docs/openapi.yaml");
}

#[test]
fn management_routes_match_the_document() {
    compare(&["src/http/mgmt.rs"], "docs/openapi-management.yaml");
}

#[test]
fn the_scanners_see_what_they_should() {
    let src = r#"Router::new().route("/a/{k}", get(x).head(y).put(z)).route("/b", post(w)).route("/c/", any(e)).route(BATCH, post(b))"#;
    let got = routes_in_source(src);
    let want: BTreeSet<(String, String)> = [
        ("GET", "/a/{k}"),
        ("HEAD", "/a/{k}"),
        ("PUT", "/a/{k}"),
        ("POST", "/b"),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
    let doc = "openapi: 3.1.0\npaths:\n  /a/{k}:\n    parameters: []\n    get:\n      x: 1\n    delete:\n      y: 2\ncomponents:\n  /not:\n    get: {}\n";
    let ops = operations_in_document(doc);
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(ops.contains(&("DELETE".to_string(), "/a/{k}".to_string())));
}
