//! The key browser's pure parts: the filter a client gives (`q`: a prefix, or a glob
//! when it holds `*`, `?` or `[`, with the Go server's `path.Match` rules: `*` and `?`
//! do not match `/`, `[^...]` negates, `\` escapes), and [`Smallest`], which keeps the first `max`
//! matching keys in key order within a byte budget whatever the number of keys scanned.
//!
//! Every node answers a scan with its own smallest matching keys; the asker merges the
//! sorted lists ([`merge`]). Because every list is a prefix of that node's sorted
//! matches, the merged list's first `max` keys are the cluster's first `max` keys (as
//! far as the nodes that answered hold them), and a page taken at an offset of it is the
//! same page on the next call unless keys changed in between.

use crate::types::{Key, MAX_KEY_BYTES};
use std::collections::BinaryHeap;

/// Most keys a scan returns per node and in all (the Go server's `max` ceiling).
pub const MAX_SCAN_KEYS: usize = 50_000;
/// Most key bytes one node's scan answer carries.
pub const MAX_SCAN_BYTES: usize = 8 << 20;

/// What a scan matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFilter {
    /// Every key.
    All,
    /// Keys that start with the string.
    Prefix(String),
    /// Keys the whole of which the pattern matches.
    Glob(Vec<Token>),
}

/// One element of a glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// One character, literally.
    Char(char),
    /// `?`: any one character but `/`.
    Any,
    /// `*`: any run of characters without `/`, the empty one included.
    Star,
    /// `[...]`: one character in (or, with `[^...]`, not in) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("the filter is {0} bytes; the limit is {MAX_KEY_BYTES}")]
    TooLong(usize),
    #[error("the glob pattern has an unclosed '['")]
    UnclosedClass,
    #[error("the glob pattern has an empty character class '[]'")]
    EmptyClass,
    #[error("the glob pattern has a trailing '\\'")]
    TrailingEscape,
    #[error("the glob pattern has a bad range (a start after its end, or a '-' that is not between two characters)")]
    BadRange,
}

impl KeyFilter {
    /// Parses `q`: empty is every key; with `*`, `?` or `[` a glob (`\` escapes the next
    /// character); otherwise a prefix.
    pub fn parse(q: &str) -> Result<Self, FilterError> {
        if q.len() > MAX_KEY_BYTES {
            return Err(FilterError::TooLong(q.len()));
        }
        if q.is_empty() {
            return Ok(KeyFilter::All);
        }
        if !q.contains(['*', '?', '[']) {
            return Ok(KeyFilter::Prefix(q.to_owned()));
        }
        let mut tokens = Vec::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' => {
                    if tokens.last() == Some(&Token::Star) {
                        continue;
                    }
                    Token::Star
                }
                '?' => Token::Any,
                '\\' => Token::Char(chars.next().ok_or(FilterError::TrailingEscape)?),
                '[' => class(&mut chars)?,
                c => Token::Char(c),
            });
        }
        Ok(KeyFilter::Glob(tokens))
    }

    /// True when `key` is selected.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyFilter::All => true,
            KeyFilter::Prefix(p) => key.starts_with(p.as_str()),
            KeyFilter::Glob(t) => glob_match(t, key),
        }
    }
}

/// Parses a class after its `[`, up to and including its `]`.
fn class(chars: &mut std::str::Chars<'_>) -> Result<Token, FilterError> {
    let mut negated = false;
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = chars.next().ok_or(FilterError::UnclosedClass)?;
        match c {
            '^' if first && !negated => {
                negated = true;
                continue;
            }
            ']' => break,
            _ => {}
        }
        first = false;
        // As Go's path.Match: a `-` is a range's middle, never a member of its own.
        if c == '-' {
            return Err(FilterError::BadRange);
        }
        let lo = if c == '\\' {
            chars.next().ok_or(FilterError::UnclosedClass)?
        } else {
            c
        };
        let mut look = chars.clone();
        if look.next() == Some('-') && look.clone().next() == Some(']') {
            return Err(FilterError::BadRange);
        }
        let hi = if chars.clone().next() == Some('-') {
            chars.next();
            let h = chars.next().ok_or(FilterError::UnclosedClass)?;
            let h = if h == '\\' {
                chars.next().ok_or(FilterError::UnclosedClass)?
            } else {
                h
            };
            if h < lo {
                return Err(FilterError::BadRange);
            }
            h
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
    if ranges.is_empty() {
        return Err(FilterError::EmptyClass);
    }
    Ok(Token::Class { negated, ranges })
}

/// Whole-string glob match; linear in `pattern × key` at worst (one backtrack point: the
/// last `*`).
fn glob_match(pattern: &[Token], key: &str) -> bool {
    let key: Vec<char> = key.chars().collect();
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        match pattern.get(p) {
            Some(Token::Star) => {
                star = Some((p, k));
                p += 1;
                continue;
            }
            Some(t) if one(t, key[k]) => {
                p += 1;
                k += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, sk)) if key[sk] != '/' => {
                p = sp + 1;
                k = sk + 1;
                star = Some((sp, sk + 1));
            }
            // A `*` never takes a `/`: no earlier `*` can either, so nothing matches.
            Some(_) | None => return false,
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Star)
}

fn one(t: &Token, c: char) -> bool {
    match t {
        Token::Char(x) => *x == c,
        Token::Any => c != '/',
        Token::Star => false,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
        }
    }
}

/// The smallest `max` keys offered, within `max_bytes` of key bytes, and how many were
/// offered in all. Memory stays at the kept keys whatever the number offered.
#[derive(Debug)]
pub struct Smallest {
    max: usize,
    max_bytes: usize,
    heap: BinaryHeap<Key>,
    bytes: usize,
    matched: u64,
    /// The smallest key ever refused or dropped: no key at or past it may be kept
    /// later, or the kept keys would stop being a prefix of the sorted matches (a short
    /// key past a long dropped one would fit the byte budget).
    ceiling: Option<Key>,
}

impl Smallest {
    pub fn new(max: usize, max_bytes: usize) -> Self {
        Self {
            max,
            max_bytes,
            heap: BinaryHeap::new(),
            bytes: 0,
            matched: 0,
            ceiling: None,
        }
    }

    /// Offers one matching key (each key once).
    pub fn offer(&mut self, key: &str) {
        self.matched += 1;
        self.keep(key);
    }

    /// Takes another scan's kept keys and its count of matches.
    pub fn absorb(&mut self, keys: Vec<Key>, matched: u64) {
        self.matched += matched;
        for k in keys {
            self.keep(&k);
        }
    }

    fn keep(&mut self, key: &str) {
        if self.ceiling.as_deref().is_some_and(|c| key >= c) {
            return;
        }
        self.bytes += key.len();
        self.heap.push(key.to_owned());
        while self.heap.len() > self.max || self.bytes > self.max_bytes {
            let Some(k) = self.heap.pop() else { break };
            self.bytes -= k.len();
            if self.ceiling.as_ref().is_none_or(|c| k < *c) {
                self.ceiling = Some(k);
            }
        }
    }

    /// How many keys were offered.
    pub fn matched(&self) -> u64 {
        self.matched
    }

    /// The kept keys, ascending.
    pub fn into_sorted(self) -> Vec<Key> {
        self.heap.into_sorted_vec()
    }

    /// The kept keys, ascending, and how many matched in all.
    pub fn finish(self) -> (Vec<Key>, u64) {
        let matched = self.matched;
        (self.into_sorted(), matched)
    }
}

/// Merges the nodes' answers (each ascending and duplicate-free, with how many keys
/// matched on that node): the union, ascending, without duplicates and cut at `max`
/// keys; and whether anything that matched is left out.
///
/// A list that holds fewer keys than its node matched (cut by `max` or by the byte
/// budget) is exact only up to its last key: that node may hold keys past it that it
/// did not send, so the union is cut there too.
pub fn merge(lists: Vec<(Vec<Key>, u64)>, max: usize) -> (Vec<Key>, bool) {
    let mut bound: Option<Key> = None;
    let mut truncated = false;
    let mut all: Vec<Key> = Vec::new();
    for (keys, matched) in lists {
        if matched > keys.len() as u64 {
            truncated = true;
            let last = keys.last().cloned().unwrap_or_default();
            if bound.as_ref().is_none_or(|b| last < *b) {
                bound = Some(last);
            }
        }
        all.extend(keys);
    }
    all.sort_unstable();
    all.dedup();
    if let Some(b) = &bound {
        all.retain(|k| k <= b);
    }
    truncated |= all.len() > max;
    all.truncate(max);
    (all, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(q: &str, key: &str) -> bool {
        KeyFilter::parse(q).unwrap().matches(key)
    }

    #[test]
    fn filters() {
        assert!(m("", "anything"));
        assert!(m("user:", "user:1"));
        assert!(!m("user:", "usr:1"));
        assert!(m("user:*", "user:1"));
        assert!(m("user:*", "user:"));
        assert!(m("*:1", "user:1"));
        assert!(!m("*:1", "user:12"));
        assert!(m("u?er:*", "user:9"));
        assert!(m("user:[0-9]", "user:7"));
        assert!(!m("user:[0-9]", "user:x"));
        assert!(m("user:[!0-9]", "user:!"));
        assert!(!m("user:[!0-9]", "user:x"));
        assert!(m("user:[^0-9]", "user:x"));
        assert!(m("a*b*c", "a-x-b-y-c"));
        assert!(!m("a*b*c", "a-x-b-y-d"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("*/*", "a/b"));
        assert!(!m("*", "a/b"));
        assert!(!m("a?b", "a/b"));
        assert!(m("a[/]b", "a/b"));
        assert!(m("ké*", "kéy"));
        assert_eq!(
            KeyFilter::parse("a[b").unwrap_err(),
            FilterError::UnclosedClass
        );
        assert_eq!(
            KeyFilter::parse("a[]").unwrap_err(),
            FilterError::EmptyClass
        );
        assert_eq!(
            KeyFilter::parse("a*\\").unwrap_err(),
            FilterError::TrailingEscape
        );
        assert_eq!(
            KeyFilter::parse("[z-a]").unwrap_err(),
            FilterError::BadRange
        );
        assert!(matches!(
            KeyFilter::parse(&"x".repeat(2000)),
            Err(FilterError::TooLong(2000))
        ));
    }

    #[test]
    fn many_stars_stay_linear() {
        let q = "*a".repeat(200) + "b";
        let key = "a".repeat(1000);
        assert!(!m(&q, &key));
    }

    #[test]
    fn smallest_keeps_the_first_keys() {
        let mut s = Smallest::new(3, 1 << 20);
        for k in ["d", "b", "e", "a", "c"] {
            s.offer(k);
        }
        assert_eq!(s.matched(), 5);
        assert_eq!(s.into_sorted(), vec!["a", "b", "c"]);
        let mut s = Smallest::new(10, 5);
        for k in ["ccc", "bb", "aa"] {
            s.offer(k);
        }
        assert_eq!(s.into_sorted(), vec!["aa", "bb"]);
        // A short key past a dropped long one is not kept: `bb` is missing otherwise.
        let mut s = Smallest::new(10, 5);
        for k in ["bb", "aaaa", "c"] {
            s.offer(k);
        }
        assert_eq!(s.into_sorted(), vec!["aaaa"]);
    }

    /// A reference glob: the textbook recursive matcher on the token list.
    fn reference(p: &[Token], k: &[char]) -> bool {
        match p.first() {
            None => k.is_empty(),
            Some(Token::Star) => (0..=k.len())
                .take_while(|i| !k[..*i].contains(&'/'))
                .any(|i| reference(&p[1..], &k[i..])),
            Some(t) => !k.is_empty() && one(t, k[0]) && reference(&p[1..], &k[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_reference(q in "[ab/*?]{0,8}", key in "[ab/]{0,8}") {
            let f = KeyFilter::parse(&q).unwrap();
            let want = match &f {
                KeyFilter::Glob(t) => reference(t, &key.chars().collect::<Vec<_>>()),
                other => other.matches(&key),
            };
            prop_assert_eq!(f.matches(&key), want);
        }

        /// Whatever the cuts, the merged answer is a prefix of the true sorted union;
        /// without byte cuts it is the whole first `max`; and `truncated` says whether
        /// it left anything out.
        #[test]
        fn smallest_then_merge_is_a_sorted_prefix(
            nodes in proptest::collection::vec(
                (
                    proptest::collection::btree_set("[a-f]{1,3}", 0..30)
                        .prop_map(|s| s.into_iter().collect::<Vec<_>>())
                        .prop_shuffle(),
                    1usize..40,
                ),
                1..4,
            ),
            max in 1usize..20,
            byte_cuts in any::<bool>(),
        ) {
            let lists: Vec<(Vec<Key>, u64)> = nodes.iter().map(|(keys, budget)| {
                let mut s = Smallest::new(max, if byte_cuts { *budget } else { 1 << 20 });
                for k in keys {
                    s.offer(k);
                }
                s.finish()
            }).collect();
            let (merged, truncated) = merge(lists, max);
            let mut all: Vec<Key> = nodes.iter().flat_map(|(k, _)| k).cloned().collect();
            all.sort();
            all.dedup();
            prop_assert_eq!(&all[..merged.len()], &merged[..]);
            prop_assert_eq!(truncated, merged.len() < all.len());
            if !byte_cuts {
                prop_assert_eq!(merged.len(), all.len().min(max));
            }
        }
    }
}
