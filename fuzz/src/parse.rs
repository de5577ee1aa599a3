//! The `parse_input` target's driver: the client and configuration parsers.
//!
//! The input is text (invalid UTF-8 is replaced) read line by line. Every line is
//! parsed as a duration, a ttl, a consistency level, a key, a size, a listen address
//! and a seed, and as a query string; the whole input is also a query string. Lines
//! `NAME=value` make the variables `HYPERCACHE_NAME=value` handed to
//! `Config::from_vars` (the dictionary `dict/parse_input.dict` lists the names).

use hypercache_actors::types::{validate_key, MAX_KEY_BYTES};
use hypercache_server::config::{self, Config, PREFIX};
use hypercache_server::duration::{parse_duration, parse_size, DurationError};
use hypercache_server::http::client::{parse_consistency, parse_ttl, query_pairs, MAX_TTL};
use std::collections::HashMap;
use std::time::Duration;

fn query(q: &str) {
    // A name or value that is not UTF-8 once decoded is refused, nothing else.
    let Ok(pairs) = query_pairs(Some(q)) else {
        assert!(q.contains('%'), "query_pairs refused {q:?} without a percent escape");
        return;
    };
    if let Ok(Some(ttl)) = parse_ttl(&pairs) {
        assert!(
            ttl >= Duration::from_millis(1) && ttl <= MAX_TTL,
            "parse_ttl accepted {ttl:?} from {q:?}"
        );
    }
    let _ = parse_consistency(&pairs);
}

fn line(l: &str) {
    match parse_duration(l) {
        Ok(d) if !d.is_zero() => assert_eq!(
            parse_duration(&format!("-{l}")),
            Err(DurationError::Negative),
            "{l:?} is {d:?}, but its negation is not negative"
        ),
        _ => {}
    }
    let pairs = vec![
        ("ttl".to_owned(), l.to_owned()),
        ("consistency".to_owned(), l.to_owned()),
    ];
    if let Ok(Some(ttl)) = parse_ttl(&pairs) {
        assert!(
            ttl >= Duration::from_millis(1) && ttl <= MAX_TTL,
            "parse_ttl accepted {ttl:?} from {l:?}"
        );
    }
    let _ = parse_consistency(&pairs);
    assert_eq!(
        validate_key(l).is_ok(),
        !l.is_empty() && l.len() <= MAX_KEY_BYTES,
        "validate_key({l:?})"
    );
    let _ = parse_size(l);
    let _ = config::parse_listen(l);
    let _ = config::parse_seed(l);
    query(l);
}

/// The target.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    query(&text);
    let _ = validate_key(&text);
    let mut vars = HashMap::new();
    for l in text.split('\n') {
        line(l);
        if let Some((name, value)) = l.split_once('=') {
            vars.insert(format!("{PREFIX}{name}"), value.to_owned());
        }
    }
    let _ = Config::unknown_vars(&vars);
    if let Ok(cfg) = Config::from_vars(&vars) {
        let node = cfg.node_config();
        assert!(node.replication >= 1 && node.shards >= 1, "{node:?}");
        assert!(node.capacity_items >= node.shards, "{node:?}");
    }
}
