//! Trace context across the peer plane: the W3C `traceparent` of a client request
//! travels with each of its replica calls, so that one PUT shows as one trace spanning
//! every owner.
//!
//! This crate only makes `tracing` spans (target [`TARGET`]) and asks two hooks for the
//! W3C form of a span's context; the binary installs the hooks when it exports traces
//! (OpenTelemetry). Without them no trace context is read or sent, and the spans of
//! [`TARGET`] are disabled callsites: no cost.

use std::sync::OnceLock;

/// The `tracing` target of the spans made for export.
pub const TARGET: &str = "hypercache::trace";

/// How spans and `traceparent` strings meet (installed by the exporter).
#[derive(Clone, Copy)]
pub struct Hooks {
    /// The `traceparent` of `span`, if it is part of a sampled or recorded trace.
    pub traceparent: fn(&tracing::Span) -> Option<String>,
    /// Makes the trace of `traceparent` the parent of `span` (a malformed value is
    /// ignored, as W3C Trace Context asks).
    pub adopt: fn(&tracing::Span, &str),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Installs the hooks (once per process; later calls change nothing).
pub fn install(hooks: Hooks) {
    let _ = HOOKS.set(hooks);
}

/// The `traceparent` of the current span, when traces are exported.
pub fn current() -> Option<String> {
    let hooks = HOOKS.get()?;
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    (hooks.traceparent)(&span)
}

/// Makes `traceparent` the parent of `span`, when traces are exported and it is well
/// formed.
pub fn adopt(span: &tracing::Span, traceparent: &str) {
    if let Some(hooks) = HOOKS.get() {
        if !span.is_disabled() && valid(traceparent) {
            (hooks.adopt)(span, traceparent);
        }
    }
}

/// True for a W3C `traceparent` of version 00 (or a later version's first four
/// fields): `vv-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, ids not all zero.
pub fn valid(tp: &str) -> bool {
    let b = tp.as_bytes();
    if b.len() < 55 || (b.len() > 55 && (tp.starts_with("00") || b[55] != b'-')) {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|c| *c == b'0');
    b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[..2])
        && &b[..2] != b"ff"
        && hex(&b[3..35])
        && !zero(&b[3..35])
        && hex(&b[36..52])
        && !zero(&b[36..52])
        && hex(&b[53..55])
}

#[cfg(test)]
mod tests {
    use super::valid;

    #[test]
    fn traceparent_format() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid(ok));
        assert!(valid(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
