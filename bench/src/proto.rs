//! The two wire codecs the engine can speak: request encoders and incremental response
//! parsers for HTTP/1.1 (hypercache's client API) and RESP2 (Redis).
//!
//! Pure functions over byte slices: no sockets, no clock. The engine in
//! [`crate::engine`] owns the connection, writes what [`Codec::encode`] produced and
//! feeds what it reads to [`Codec::parse`] until a whole reply is there.
//!
//! Only what a benchmark needs is supported: HTTP responses must carry
//! `Content-Length` (hypercache always sends it; chunked bodies are refused as a
//! protocol error), and RESP replies are parsed structurally without keeping values.

/// One request kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    /// A request that does no cache work: `GET /healthz` or `PING`.
    Ping,
}

impl Op {
    /// Short label used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Ping => "ceiling",
        }
    }
}

/// What a complete reply meant for the operation that was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Success (a GET that found its key, a stored PUT, a PING answered).
    Ok,
    /// A GET whose key does not exist (HTTP 404, RESP nil). Not an error.
    Miss,
    /// The server answered with an HTTP status that is neither success nor a miss.
    Status(u16),
    /// The server answered with a RESP error reply.
    RespError,
}

/// A complete reply found at the start of the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Bytes of the buffer the reply occupies.
    pub consumed: usize,
    pub outcome: Outcome,
    /// Length of the value or body carried by the reply.
    pub body_len: usize,
    /// The server will close the connection after this reply.
    pub close: bool,
}

/// A reply that cannot be parsed; the engine drops the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub String);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest response head accepted before it is called malformed.
const MAX_HEAD: usize = 16 * 1024;

/// Encoder and parser for one protocol. Built once per run and shared by every
/// connection.
#[derive(Debug, Clone)]
pub enum Codec {
    Http {
        /// Value of the `Host` header.
        host: String,
        /// Full `Authorization` header line including CRLF, or empty.
        auth_line: String,
    },
    Resp,
}

impl Codec {
    /// An HTTP codec for this `host:port`, with an optional bearer token.
    pub fn http(host: &str, token: Option<&str>) -> Self {
        Codec::Http {
            host: host.to_owned(),
            auth_line: token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default(),
        }
    }

    /// Appends the request for `op` on `key` (with `value` for a PUT) to `out`.
    pub fn encode(&self, op: Op, key: &[u8], value: &[u8], out: &mut Vec<u8>) {
        match self {
            Codec::Http { host, auth_line } => {
                let (method, path): (&[u8], &[u8]) = match op {
                    Op::Get => (b"GET /v1/cache/", key),
                    Op::Put => (b"PUT /v1/cache/", key),
                    Op::Ping => (b"GET /healthz", b""),
                };
                out.extend_from_slice(method);
                out.extend_from_slice(path);
                out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
                out.extend_from_slice(host.as_bytes());
                out.extend_from_slice(b"\r\n");
                if op != Op::Ping {
                    out.extend_from_slice(auth_line.as_bytes());
                }
                if op == Op::Put {
                    out.extend_from_slice(b"Content-Length: ");
                    push_decimal(out, value.len() as u64);
                    out.extend_from_slice(b"\r\n\r\n");
                    out.extend_from_slice(value);
                } else {
                    out.extend_from_slice(b"\r\n");
                }
            }
            Codec::Resp => match op {
                Op::Get => resp_command(out, &[b"GET", key]),
                Op::Put => resp_command(out, &[b"SET", key, value]),
                Op::Ping => resp_command(out, &[b"PING"]),
            },
        }
    }

    /// Looks for one complete reply to `op` at the start of `buf`. `Ok(None)` means
    /// more bytes are needed.
    pub fn parse(&self, op: Op, buf: &[u8]) -> Result<Option<Reply>, ProtoError> {
        match self {
            Codec::Http { .. } => Ok(parse_http(buf)?.map(|h| Reply {
                consumed: h.head_len + h.content_length,
                outcome: http_outcome(op, h.status),
                body_len: h.content_length,
                close: h.close,
            })),
            Codec::Resp => Ok(parse_resp(buf)?.map(|(consumed, v)| Reply {
                consumed,
                outcome: resp_outcome(op, v),
                body_len: match v {
                    RespValue::Bulk(n) => n,
                    _ => 0,
                },
                close: false,
            })),
        }
    }
}

fn http_outcome(op: Op, status: u16) -> Outcome {
    match (op, status) {
        (_, 200..=299) => Outcome::Ok,
        (Op::Get, 404) => Outcome::Miss,
        (_, s) => Outcome::Status(s),
    }
}

fn resp_outcome(op: Op, v: RespValue) -> Outcome {
    match (op, v) {
        (_, RespValue::Error) => Outcome::RespError,
        (Op::Get, RespValue::Nil) => Outcome::Miss,
        (Op::Get, RespValue::Bulk(_)) => Outcome::Ok,
        (Op::Put | Op::Ping, RespValue::Simple) => Outcome::Ok,
        _ => Outcome::RespError,
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends a RESP array of bulk strings: the form every Redis command takes.
fn resp_command(out: &mut Vec<u8>, parts: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, parts.len() as u64);
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.push(b'$');
        push_decimal(out, p.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
}

/// The parts of an HTTP response head the engine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpHead {
    pub status: u16,
    /// Bytes up to and including the blank line.
    pub head_len: usize,
    pub content_length: usize,
    pub close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response head once all of the response is in `buf`; `Ok(None)` until then.
pub fn parse_http(buf: &[u8]) -> Result<Option<HttpHead>, ProtoError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(ProtoError(format!(
                "no end of response head in {MAX_HEAD} bytes"
            )));
        }
        return Ok(None);
    };
    let head_len = end + 4;
    let head = &buf[..end];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line).ok_or_else(|| {
        ProtoError(format!(
            "bad status line {:?}",
            String::from_utf8_lossy(&status_line[..status_line.len().min(64)])
        ))
    })?;
    let mut content_length = None;
    let mut close = false;
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(ProtoError("header line without a colon".into()));
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or_else(|| ProtoError("bad content-length".into()))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(ProtoError(
                "transfer-encoding responses are not supported (need content-length)".into(),
            ));
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = value
                .split(|b| *b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"));
        }
    }
    let content_length = match (content_length, status) {
        (Some(n), _) => n,
        (None, 100..=199 | 204 | 304) => 0,
        (None, _) => return Err(ProtoError("response without content-length".into())),
    };
    if buf.len() < head_len + content_length {
        return Ok(None);
    }
    Ok(Some(HttpHead {
        status,
        head_len,
        content_length,
        close,
    }))
}

fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let rest = rest.get(2..)?; // minor version digit and the space
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The shape of one RESP value (contents are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespValue {
    /// `+...`
    Simple,
    /// `-...`
    Error,
    /// `:n`
    Integer,
    /// `$n` with n bytes of data.
    Bulk(usize),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n` with n nested values.
    Array(usize),
}

/// Nesting deeper than this is refused rather than recursed into.
const MAX_RESP_DEPTH: usize = 8;

/// Parses one complete RESP value at the start of `buf`: `Ok(Some((consumed, value)))`,
/// or `Ok(None)` when more bytes are needed.
pub fn parse_resp(buf: &[u8]) -> Result<Option<(usize, RespValue)>, ProtoError> {
    parse_resp_at(buf, 0)
}

fn parse_resp_at(buf: &[u8], depth: usize) -> Result<Option<(usize, RespValue)>, ProtoError> {
    if depth > MAX_RESP_DEPTH {
        return Err(ProtoError("RESP reply nested too deeply".into()));
    }
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some(eol) = find(buf, b"\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(ProtoError("RESP line too long".into()));
        }
        return Ok(None);
    };
    let line = &buf[1..eol];
    let after = eol + 2;
    match kind {
        b'+' => Ok(Some((after, RespValue::Simple))),
        b'-' => Ok(Some((after, RespValue::Error))),
        b':' => Ok(Some((after, RespValue::Integer))),
        b'$' => match resp_len(line)? {
            None => Ok(Some((after, RespValue::Nil))),
            Some(n) => {
                let total = after + n + 2;
                if buf.len() < total {
                    return Ok(None);
                }
                if &buf[after + n..total] != b"\r\n" {
                    return Err(ProtoError("RESP bulk string not followed by CRLF".into()));
                }
                Ok(Some((total, RespValue::Bulk(n))))
            }
        },
        b'*' => match resp_len(line)? {
            None => Ok(Some((after, RespValue::Nil))),
            Some(n) => {
                let mut at = after;
                for _ in 0..n {
                    match parse_resp_at(&buf[at..], depth + 1)? {
                        Some((used, _)) => at += used,
                        None => return Ok(None),
                    }
                }
                Ok(Some((at, RespValue::Array(n))))
            }
        },
        other => Err(ProtoError(format!(
            "unknown RESP type byte {:?}",
            other as char
        ))),
    }
}

/// A RESP length: `None` for -1, an error for anything else that is not a count.
fn resp_len(line: &[u8]) -> Result<Option<usize>, ProtoError> {
    if line == b"-1" {
        return Ok(None);
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| {
            ProtoError(format!(
                "bad RESP length {:?}",
                String::from_utf8_lossy(line)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(c: &Codec, op: Op, key: &str, value: &[u8]) -> String {
        let mut out = Vec::new();
        c.encode(op, key.as_bytes(), value, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn http_requests() {
        let c = Codec::http("127.0.0.1:8080", None);
        assert_eq!(
            enc(&c, Op::Get, "key:1", b""),
            "GET /v1/cache/key:1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
        );
        assert_eq!(
            enc(&c, Op::Put, "k", b"abc"),
            "PUT /v1/cache/k HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 3\r\n\r\nabc"
        );
        let t = Codec::http("h:1", Some("s3cret"));
        assert_eq!(
            enc(&t, Op::Get, "k", b""),
            "GET /v1/cache/k HTTP/1.1\r\nHost: h:1\r\nAuthorization: Bearer s3cret\r\n\r\n"
        );
        assert_eq!(
            enc(&t, Op::Ping, "ignored", b""),
            "GET /healthz HTTP/1.1\r\nHost: h:1\r\n\r\n",
            "the ceiling route needs no token"
        );
    }

    #[test]
    fn resp_requests() {
        let c = Codec::Resp;
        assert_eq!(
            enc(&c, Op::Get, "k1", b""),
            "*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n"
        );
        assert_eq!(
            enc(&c, Op::Put, "k1", b"v\r\n"),
            "*3\r\n$3\r\nSET\r\n$2\r\nk1\r\n$3\r\nv\r\n\r\n"
        );
        assert_eq!(enc(&c, Op::Ping, "k", b""), "*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn decimal() {
        for n in [0u64, 7, 10, 4096, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    const OK_BODY: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 5\r\n\r\nhello";

    #[test]
    fn http_response_complete_and_partial() {
        let c = Codec::http("h", None);
        // Every strict prefix is incomplete; the whole is one reply.
        for cut in 0..OK_BODY.len() {
            assert_eq!(
                c.parse(Op::Get, &OK_BODY[..cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let r = c.parse(Op::Get, OK_BODY).unwrap().unwrap();
        assert_eq!(r.consumed, OK_BODY.len());
        assert_eq!(r.body_len, 5);
        assert_eq!(r.outcome, Outcome::Ok);
        assert!(!r.close);
        // A following reply is left in the buffer.
        let mut two = OK_BODY.to_vec();
        two.extend_from_slice(OK_BODY);
        assert_eq!(
            c.parse(Op::Get, &two).unwrap().unwrap().consumed,
            OK_BODY.len()
        );
    }

    #[test]
    fn http_statuses() {
        let c = Codec::http("h", None);
        let miss = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            c.parse(Op::Get, miss).unwrap().unwrap().outcome,
            Outcome::Miss
        );
        assert_eq!(
            c.parse(Op::Put, miss).unwrap().unwrap().outcome,
            Outcome::Status(404),
            "a 404 on a write is an error"
        );
        let busy = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\n";
        let r = c.parse(Op::Put, busy).unwrap().unwrap();
        assert_eq!(r.outcome, Outcome::Status(503));
        assert!(r.close);
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(c.parse(Op::Put, no_content).unwrap().unwrap().body_len, 0);
    }

    #[test]
    fn http_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
            b"SMTP 220\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        ] {
            assert!(
                parse_http(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_http(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    #[test]
    fn resp_values() {
        assert_eq!(
            parse_resp(b"+OK\r\n").unwrap(),
            Some((5, RespValue::Simple))
        );
        assert_eq!(
            parse_resp(b"-ERR no\r\n").unwrap(),
            Some((9, RespValue::Error))
        );
        assert_eq!(
            parse_resp(b":42\r\n").unwrap(),
            Some((5, RespValue::Integer))
        );
        assert_eq!(parse_resp(b"$-1\r\n").unwrap(), Some((5, RespValue::Nil)));
        assert_eq!(
            parse_resp(b"$3\r\na\r\n\r\n").unwrap(),
            Some((9, RespValue::Bulk(3)))
        );
        assert_eq!(
            parse_resp(b"$0\r\n\r\n").unwrap(),
            Some((6, RespValue::Bulk(0)))
        );
        assert_eq!(
            parse_resp(b"*2\r\n$1\r\na\r\n:1\r\n").unwrap(),
            Some((15, RespValue::Array(2)))
        );
        assert_eq!(parse_resp(b"*-1\r\n").unwrap(), Some((5, RespValue::Nil)));
    }

    #[test]
    fn resp_partial_and_bad() {
        let whole = b"*2\r\n$5\r\nhello\r\n$-1\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_resp(&whole[..cut]).unwrap(), None, "cut {cut}");
        }
        assert!(
            parse_resp(b"$3\r\nabcd\r\n").is_err(),
            "missing CRLF after data"
        );
        assert!(parse_resp(b"$x\r\n").is_err());
        assert!(parse_resp(b"!oops\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_RESP_DEPTH + 2) + ":1\r\n";
        assert!(parse_resp(deep.as_bytes()).is_err());
    }

    #[test]
    fn resp_outcomes() {
        let c = Codec::Resp;
        let get = |b: &[u8]| c.parse(Op::Get, b).unwrap().unwrap().outcome;
        assert_eq!(get(b"$2\r\nhi\r\n"), Outcome::Ok);
        assert_eq!(get(b"$-1\r\n"), Outcome::Miss);
        assert_eq!(get(b"-WRONGTYPE x\r\n"), Outcome::RespError);
        assert_eq!(
            c.parse(Op::Put, b"+OK\r\n").unwrap().unwrap().outcome,
            Outcome::Ok
        );
        assert_eq!(
            c.parse(Op::Ping, b"+PONG\r\n").unwrap().unwrap().outcome,
            Outcome::Ok
        );
        assert_eq!(
            c.parse(Op::Put, b":1\r\n").unwrap().unwrap().outcome,
            Outcome::RespError
        );
    }
}
