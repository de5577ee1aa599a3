//! RESP2 framing: the [`Decoder`] that cuts commands out of a connection's read buffer,
//! and [`Out`], the reply writer. Pure: no sockets, no node; what the bytes mean is
//! [`super::command`]'s business.
//!
//! A command is either an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what
//! every client library sends) or an inline line (`GET k\r\n`, what a person types into
//! a telnet session). Everything is bounded before it is buffered: the number of
//! arguments, each bulk string's length, an inline line's length and a command's total
//! size. A frame that breaks the grammar or a bound is a [`ProtocolError`]; the
//! connection answers it with `-ERR Protocol error: ...` and closes, since the stream can
//! no longer be resynchronised.
//!
//! Invariant: decoding is resumable and linear. A command that arrives a byte at a time
//! is scanned once: the decoder remembers how far it got (arguments found, offset) and
//! continues from there when more bytes arrive.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest inline command line (Redis' own limit).
pub const MAX_INLINE_BYTES: usize = 64 << 10;
/// Most arguments of one command (an `MSET` of 32,767 pairs).
pub const MAX_ARGS: usize = 65_536;
/// Longest decimal header (`*65536`, `$1073741824`): digits plus a sign.
const MAX_HEADER_DIGITS: usize = 20;

/// The bounds a [`Decoder`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest bulk string (a key or a value).
    pub max_bulk: usize,
    /// Most bytes of one whole command, headers included.
    pub max_command: usize,
}

/// Why a stream of bytes is not RESP; the text follows Redis' wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// A multibulk command being assembled: how many arguments it declared, the spans of
/// those found so far (offsets into the read buffer), and where scanning resumes.
#[derive(Debug)]
struct Partial {
    argc: usize,
    spans: Vec<(usize, usize)>,
    pos: usize,
    /// Where the argument being read ends (its CRLF included); 0 before its header.
    need: usize,
}

/// Cuts whole commands off the front of a read buffer. One per connection.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    partial: Option<Partial>,
}

/// Finds `\r\n` in `buf[from..]`; the index of the `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Parses a header's decimal number (`-1`, `0`, `42`); `None` if it is not one.
fn parse_int(digits: &[u8]) -> Option<i64> {
    if digits.is_empty() || digits.len() > MAX_HEADER_DIGITS {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            partial: None,
        }
    }

    /// True while a command has started to arrive but is not complete (its read is then
    /// under the command timeout, not the idle timeout).
    pub fn in_command(&self, buf: &[u8]) -> bool {
        self.partial.is_some() || !buf.is_empty()
    }

    /// The next whole command, removed from `buf`; `Ok(None)` when more bytes are needed.
    /// Empty inline lines are skipped. The arguments share the buffer's memory.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            let got = match (&self.partial, buf.first()) {
                (Some(_), _) | (None, Some(b'*')) => self.multibulk(buf)?,
                (None, None) => return Ok(None),
                (None, Some(_)) => self.inline(buf)?,
            };
            // An empty result is an empty line or array, consumed and skipped.
            match got {
                Some(args) if args.is_empty() => continue,
                other => return Ok(other),
            }
        }
    }

    /// Bytes the buffer must hold before the command being assembled can progress: the
    /// end of the argument being read, once its header has arrived (0 otherwise). The
    /// connection reserves memory for it before reading on.
    pub fn needed(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.need)
    }

    fn inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_INLINE_BYTES {
                return err("too big inline request");
            }
            return Ok(None);
        };
        if nl > MAX_INLINE_BYTES {
            return err("too big inline request");
        }
        let line = buf.split_to(nl + 1).freeze();
        let text = line.slice(..nl);
        let text = text.strip_suffix(b"\r").unwrap_or(&text);
        let mut args = Vec::new();
        for word in text.split(|b| b.is_ascii_whitespace()) {
            if !word.is_empty() {
                if args.len() == MAX_ARGS {
                    return err("too many arguments in inline request");
                }
                args.push(line.slice_ref(word));
            }
        }
        Ok(Some(args))
    }

    fn multibulk(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut p = match self.partial.take() {
            Some(p) => p,
            None => {
                let Some(end) = find_crlf(buf, 1) else {
                    if buf.len() > MAX_HEADER_DIGITS + 3 {
                        return err("invalid multibulk length");
                    }
                    return Ok(None);
                };
                let argc = match parse_int(&buf[1..end]) {
                    Some(n) if (0..=MAX_ARGS as i64).contains(&n) => n as usize,
                    // `*-1` (a null array) carries no command; skipped as Redis does.
                    Some(-1) => 0,
                    _ => return err("invalid multibulk length"),
                };
                if argc == 0 {
                    buf.advance(end + 2);
                    return Ok(Some(Vec::new()));
                }
                Partial {
                    argc,
                    spans: Vec::with_capacity(argc.min(64)),
                    pos: end + 2,
                    need: 0,
                }
            }
        };
        while p.spans.len() < p.argc {
            let Some(&first) = buf.get(p.pos) else {
                self.partial = Some(p);
                return Ok(None);
            };
            if first != b'$' {
                return err(format!(
                    "expected '$', got '{}'",
                    char::from(first).escape_default()
                ));
            }
            let Some(end) = find_crlf(buf, p.pos + 1) else {
                if buf.len() - p.pos > MAX_HEADER_DIGITS + 3 {
                    return err("invalid bulk length");
                }
                self.partial = Some(p);
                return Ok(None);
            };
            let len = match parse_int(&buf[p.pos + 1..end]) {
                Some(n) if n >= 0 && n as u64 <= self.limits.max_bulk as u64 => n as usize,
                _ => return err("invalid bulk length"),
            };
            let start = end + 2;
            if start + len + 2 > self.limits.max_command {
                return err("command too large");
            }
            if buf.len() < start + len + 2 {
                p.need = start + len + 2;
                self.partial = Some(p);
                return Ok(None);
            }
            if &buf[start + len..start + len + 2] != b"\r\n" {
                return err("bulk string not terminated by CRLF");
            }
            p.spans.push((start, start + len));
            p.pos = start + len + 2;
            p.need = 0;
        }
        let frame = buf.split_to(p.pos).freeze();
        Ok(Some(
            p.spans.iter().map(|&(a, b)| frame.slice(a..b)).collect(),
        ))
    }
}

/// Replies being written for one connection, in command order.
#[derive(Debug, Default)]
pub struct Out(pub BytesMut);

impl Out {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `+text`; `text` must not contain CR or LF.
    pub fn simple(&mut self, text: &str) {
        self.0.put_u8(b'+');
        self.0.put_slice(text.as_bytes());
        self.0.put_slice(b"\r\n");
    }

    /// `-CODE message`; CR and LF in the message become spaces, so a key echoed in an
    /// error cannot forge a second reply.
    pub fn error(&mut self, text: &str) {
        self.0.put_u8(b'-');
        for &b in text.as_bytes() {
            self.0
                .put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        self.0.put_slice(b"\r\n");
    }

    /// `:n`
    pub fn int(&mut self, n: i64) {
        self.0.put_u8(b':');
        self.0.put_slice(itoa::Buffer::new().format(n).as_bytes());
        self.0.put_slice(b"\r\n");
    }

    /// `$len\r\nbytes\r\n`
    pub fn bulk(&mut self, bytes: &[u8]) {
        self.0.reserve(bytes.len() + 16);
        self.0.put_u8(b'$');
        self.0
            .put_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
        self.0.put_slice(b"\r\n");
        self.0.put_slice(bytes);
        self.0.put_slice(b"\r\n");
    }

    /// `$-1`, the null bulk string (a miss).
    pub fn nil(&mut self) {
        self.0.put_slice(b"$-1\r\n");
    }

    /// `*n`, followed by `n` replies.
    pub fn array(&mut self, n: usize) {
        self.0.put_u8(b'*');
        self.0.put_slice(itoa::Buffer::new().format(n).as_bytes());
        self.0.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        max_bulk: 1024,
        max_command: 64 << 10,
    };

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut d = Decoder::new(LIMITS);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(c) = d.decode(&mut buf)? {
            out.push(c);
        }
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline() {
        let mut input = encode(&[b"SET", b"k", b"v\r\nx"]);
        input.extend_from_slice(b"PING\r\n\r\n  GET   k \n");
        let cmds = decode_all(&input).unwrap();
        assert_eq!(cmds.len(), 3);
        assert_eq!(cmds[0], vec!["SET", "k", "v\r\nx"]);
        assert_eq!(cmds[1], vec!["PING"]);
        assert_eq!(cmds[2], vec!["GET", "k"]);
    }

    #[test]
    fn incomplete_waits_and_resumes() {
        let input = encode(&[b"GET", b"key"]);
        let mut d = Decoder::new(LIMITS);
        let mut buf = BytesMut::new();
        for (i, b) in input.iter().enumerate() {
            buf.put_u8(*b);
            let got = d.decode(&mut buf).unwrap();
            if i + 1 < input.len() {
                assert!(
                    got.is_none(),
                    "complete after {} of {} bytes",
                    i + 1,
                    input.len()
                );
                assert!(d.in_command(&buf));
            } else {
                assert_eq!(got.unwrap(), vec!["GET", "key"]);
            }
        }
        assert!(buf.is_empty());
        assert!(!d.in_command(&buf));
    }

    #[test]
    fn grammar_errors() {
        for (input, want) in [
            (&b"*x\r\n"[..], "invalid multibulk length"),
            (b"*70000\r\n", "invalid multibulk length"),
            (b"*1\r\n:5\r\n", "expected '$', got ':'"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$abc\r\n", "invalid bulk length"),
            (b"*1\r\n$1025\r\n", "invalid bulk length"),
            (b"*1\r\n$3\r\nGETxx", "bulk string not terminated by CRLF"),
            (b"*11111111111111111111111111", "invalid multibulk length"),
            (b"*1\r\n$11111111111111111111111111", "invalid bulk length"),
        ] {
            let e = decode_all(input).unwrap_err();
            assert!(e.to_string().contains(want), "{input:?}: {e}");
        }
    }

    #[test]
    fn inline_bound() {
        let long = vec![b'a'; MAX_INLINE_BYTES + 1];
        assert!(decode_all(&long).is_err());
        let ok = vec![b'a'; 100];
        assert!(decode_all(&ok).unwrap().is_empty());
    }

    #[test]
    fn command_bound() {
        let limits = Limits {
            max_bulk: 1024,
            max_command: 2048,
        };
        let big = vec![b'x'; 1000];
        let input = encode(&[b"MSET", b"a", &big, b"b", &big, b"c", &big]);
        let mut d = Decoder::new(limits);
        let e = d.decode(&mut BytesMut::from(&input[..])).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn needed_reports_a_declared_argument() {
        let mut d = Decoder::new(LIMITS);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$1000\r\nab"[..]);
        assert!(d.decode(&mut buf).unwrap().is_none());
        assert_eq!(d.needed(), 13 + 7 + 1000 + 2);
    }

    #[test]
    fn many_empty_arrays_do_not_recurse() {
        let input = b"*0\r\n".repeat(1 << 20);
        assert!(decode_all(&input).unwrap().is_empty());
    }

    #[test]
    fn null_and_empty_arrays_are_skipped() {
        let mut input = b"*0\r\n*-1\r\n".to_vec();
        input.extend(encode(&[b"PING"]));
        assert_eq!(decode_all(&input).unwrap(), vec![vec![Bytes::from("PING")]]);
    }

    #[test]
    fn replies() {
        let mut o = Out::default();
        o.simple("OK");
        o.error("ERR bad\r\nkey");
        o.int(-2);
        o.bulk(b"v");
        o.nil();
        o.array(0);
        assert_eq!(
            &o.0[..],
            b"+OK\r\n-ERR bad  key\r\n:-2\r\n$1\r\nv\r\n$-1\r\n*0\r\n"
        );
    }

    proptest! {
        /// Any commands, encoded and cut into any chunks, decode to themselves.
        #[test]
        fn round_trip_any_split(
            cmds in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
                1..8,
            ),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut input = Vec::new();
            for c in &cmds {
                let refs: Vec<&[u8]> = c.iter().map(|a| &a[..]).collect();
                input.extend(encode(&refs));
            }
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            points.push(input.len());
            points.sort();
            let mut d = Decoder::new(LIMITS);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut from = 0;
            for p in points {
                buf.extend_from_slice(&input[from..p]);
                from = p;
                while let Some(c) = d.decode(&mut buf).unwrap() {
                    got.push(c.iter().map(|b| b.to_vec()).collect::<Vec<_>>());
                }
            }
            prop_assert_eq!(got, cmds);
            prop_assert!(buf.is_empty());
        }

        /// Arbitrary bytes never panic, and what decodes is bounded.
        #[test]
        fn arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(cmds) = decode_all(&input) {
                for c in cmds {
                    prop_assert!(c.len() <= MAX_ARGS);
                    prop_assert!(c.iter().all(|a| a.len() <= LIMITS.max_bulk.max(MAX_INLINE_BYTES)));
                }
            }
        }
    }
}
