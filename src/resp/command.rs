//! The RESP commands this node answers, parsed from a decoded argument list into a
//! typed [`Command`]. Pure: arity, options and numbers are checked here, with Redis'
//! error texts; running a command is [`super::conn`]'s business.

use crate::http::client::MAX_TTL;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::Duration;

/// A parsed command. Keys are still raw bytes: they are checked (UTF-8, length) where
/// they are used, so that one bad key in an `MGET` answers that key, not the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping(Option<Bytes>),
    Echo(Bytes),
    /// `AUTH [user] password`.
    Auth {
        user: Option<Bytes>,
        password: Bytes,
    },
    /// `HELLO [protover [AUTH user password] [SETNAME name]]`.
    Hello {
        proto: Option<i64>,
        auth: Option<(Bytes, Bytes)>,
        name: Option<Bytes>,
    },
    Select(i64),
    Quit,
    Get(Bytes),
    Set {
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
        cond: SetCondition,
    },
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    /// `EXPIRE`/`PEXPIRE`; `None` is a ttl of zero or less: the key is deleted.
    Expire {
        key: Bytes,
        ttl: Option<Duration>,
    },
    /// `TTL` (`millis` false) or `PTTL`.
    Ttl {
        key: Bytes,
        millis: bool,
    },
    Info(Vec<String>),
    DbSize,
    Command(CommandQuery),
    ClientSetName(Bytes),
    ClientGetName,
    ClientId,
    /// `CLIENT SETINFO` (library name and version, sent by some clients on connect):
    /// accepted and not kept.
    ClientSetInfo,
}

impl Command {
    /// The command's name in lower case, as Redis' error lines show it (for the
    /// commands a scope guards; others by their family).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get(_) => "get",
            Command::Set { .. } => "set",
            Command::Del(_) => "del",
            Command::Exists(_) => "exists",
            Command::MGet(_) => "mget",
            Command::MSet(_) => "mset",
            Command::Expire { .. } => "expire",
            Command::Ttl { millis: false, .. } => "ttl",
            Command::Ttl { millis: true, .. } => "pttl",
            Command::Info(_) => "info",
            Command::DbSize => "dbsize",
            Command::Ping(_) => "ping",
            Command::Echo(_) => "echo",
            Command::Auth { .. } => "auth",
            Command::Hello { .. } => "hello",
            Command::Select(_) => "select",
            Command::Quit => "quit",
            Command::Command(_) => "command",
            Command::ClientSetName(_)
            | Command::ClientGetName
            | Command::ClientId
            | Command::ClientSetInfo => "client",
        }
    }
}

/// `SET`'s `NX` / `XX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    /// Only if the key does not exist.
    IfAbsent,
    /// Only if the key exists.
    IfPresent,
}

/// What `COMMAND` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandQuery {
    All,
    Count,
    Info(Vec<String>),
    /// `COMMAND DOCS`: answered with no documentation (redis-cli asks for it on start).
    Docs,
}

/// One command as `COMMAND` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    /// Argument count including the name; negative: at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
}

impl Spec {
    const fn new(
        name: &'static str,
        arity: i64,
        flags: &'static [&'static str],
        first_key: i64,
        last_key: i64,
        step: i64,
    ) -> Self {
        Self {
            name,
            arity,
            flags,
            first_key,
            last_key,
            step,
        }
    }
}

/// Every command name with its arity (negative: at least that many) and flags, as
/// `COMMAND` reports them; first key, last key and step follow Redis' table.
pub const TABLE: &[Spec] = &[
    Spec::new("ping", -1, &["fast"], 0, 0, 0),
    Spec::new("echo", 2, &["fast"], 0, 0, 0),
    Spec::new(
        "auth",
        -2,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    Spec::new(
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast"],
        0,
        0,
        0,
    ),
    Spec::new("select", 2, &["loading", "stale", "fast"], 0, 0, 0),
    Spec::new("quit", -1, &["fast"], 0, 0, 0),
    Spec::new("get", 2, &["readonly", "fast"], 1, 1, 1),
    Spec::new("set", -3, &["write", "denyoom"], 1, 1, 1),
    Spec::new("del", -2, &["write"], 1, -1, 1),
    Spec::new("exists", -2, &["readonly", "fast"], 1, -1, 1),
    Spec::new("mget", -2, &["readonly", "fast"], 1, -1, 1),
    Spec::new("mset", -3, &["write", "denyoom"], 1, -1, 2),
    Spec::new("expire", 3, &["write", "fast"], 1, 1, 1),
    Spec::new("pexpire", 3, &["write", "fast"], 1, 1, 1),
    Spec::new("ttl", 2, &["readonly", "fast"], 1, 1, 1),
    Spec::new("pttl", 2, &["readonly", "fast"], 1, 1, 1),
    Spec::new("info", -1, &["loading", "stale"], 0, 0, 0),
    Spec::new("dbsize", 1, &["readonly", "fast"], 0, 0, 0),
    Spec::new("command", -1, &["loading", "stale"], 0, 0, 0),
    Spec::new("client", -2, &["noscript", "loading", "stale"], 0, 0, 0),
];

/// Why a command is refused before it runs: the whole error line (`ERR ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    fn syntax() -> Self {
        Self("ERR syntax error".into())
    }

    fn arity(name: &str) -> Self {
        Self(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }

    fn not_integer() -> Self {
        Self("ERR value is not an integer or out of range".into())
    }
}

/// At most this much of a client's text is echoed in an error.
const ECHO_MAX: usize = 128;

/// `bytes` for an error message: lossy UTF-8, at most [`ECHO_MAX`] bytes, quotes and
/// control characters replaced.
pub fn shown(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(ECHO_MAX)]);
    s.chars()
        .map(|c| if c.is_control() || c == '\'' { '?' } else { c })
        .collect()
}

/// The next argument; the arity check guarantees there is one.
fn pop(rest: &mut VecDeque<Bytes>) -> Bytes {
    rest.pop_front().unwrap_or_default()
}

/// The remaining arguments.
fn all(rest: &mut VecDeque<Bytes>) -> Vec<Bytes> {
    std::mem::take(rest).into()
}

fn int(arg: &[u8]) -> Result<i64, Refusal> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(Refusal::not_integer)
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

/// A ttl from an `EX`/`PX`/`EXPIRE` number in `unit_ms` milliseconds; `None` for zero
/// or less (only `EXPIRE` accepts that), an error past 100 years.
fn ttl_of(n: i64, unit_ms: u64, command: &str) -> Result<Option<Duration>, Refusal> {
    if n <= 0 {
        return Ok(None);
    }
    let ms = (n as u64).checked_mul(unit_ms);
    match ms.map(Duration::from_millis) {
        Some(d) if d <= MAX_TTL => Ok(Some(d)),
        _ => Err(Refusal(format!(
            "ERR invalid expire time in '{command}' command"
        ))),
    }
}

impl Command {
    /// Parses a decoded command. `args` is never empty (the decoder skips empty ones).
    pub fn parse(args: Vec<Bytes>) -> Result<Command, Refusal> {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        let Some(arity) = TABLE.iter().find(|t| t.name == name).map(|t| t.arity) else {
            let mut msg = format!(
                "ERR unknown command '{}', with args beginning with:",
                shown(&args[0])
            );
            for a in args.iter().skip(1).take(8) {
                msg.push_str(&format!(" '{}'", shown(a)));
            }
            return Err(Refusal(msg));
        };
        let n = args.len() as i64;
        if (arity > 0 && n != arity) || (arity < 0 && n < -arity) {
            return Err(Refusal::arity(&name));
        }
        let mut rest: VecDeque<Bytes> = args.into_iter().skip(1).collect();
        let rest = &mut rest;
        Ok(match name.as_str() {
            "ping" => match n {
                1 => Command::Ping(None),
                2 => Command::Ping(Some(pop(rest))),
                _ => return Err(Refusal::arity("ping")),
            },
            "echo" => Command::Echo(pop(rest)),
            "auth" => match n {
                2 => Command::Auth {
                    user: None,
                    password: pop(rest),
                },
                3 => Command::Auth {
                    user: Some(pop(rest)),
                    password: pop(rest),
                },
                _ => return Err(Refusal::syntax()),
            },
            "hello" => Self::hello(all(rest))?,
            "select" => Command::Select(int(&pop(rest))?),
            "quit" => Command::Quit,
            "get" => Command::Get(pop(rest)),
            "set" => {
                let key = pop(rest);
                let value = pop(rest);
                let opts: Vec<Bytes> = all(rest);
                Self::set(key, value, opts)?
            }
            "del" => Command::Del(all(rest)),
            "exists" => Command::Exists(all(rest)),
            "mget" => Command::MGet(all(rest)),
            "mset" => {
                if n % 2 == 0 {
                    return Err(Refusal::arity("mset"));
                }
                let pairs = (0..(n - 1) / 2).map(|_| (pop(rest), pop(rest))).collect();
                Command::MSet(pairs)
            }
            "expire" | "pexpire" => {
                let key = pop(rest);
                let unit = if name == "expire" { 1000 } else { 1 };
                Command::Expire {
                    key,
                    ttl: ttl_of(int(&pop(rest))?, unit, &name)?,
                }
            }
            "ttl" | "pttl" => Command::Ttl {
                key: pop(rest),
                millis: name == "pttl",
            },
            "info" => Command::Info(
                all(rest)
                    .into_iter()
                    .map(|a| String::from_utf8_lossy(&a).to_ascii_lowercase())
                    .collect(),
            ),
            "dbsize" => Command::DbSize,
            "command" => {
                let sub: Vec<Bytes> = all(rest);
                Command::Command(match sub.first().map(|s| upper(s)).as_deref() {
                    None => CommandQuery::All,
                    Some("COUNT") if sub.len() == 1 => CommandQuery::Count,
                    Some("DOCS") => CommandQuery::Docs,
                    Some("INFO") => CommandQuery::Info(
                        sub[1..]
                            .iter()
                            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                            .collect(),
                    ),
                    Some(other) => {
                        return Err(Refusal(format!(
                            "ERR unknown subcommand or wrong number of arguments for '{}'. Try COMMAND HELP.",
                            shown(other.as_bytes())
                        )))
                    }
                })
            }
            "client" => {
                let sub = upper(&pop(rest));
                match (sub.as_str(), n) {
                    ("SETNAME", 3) => {
                        let name = pop(rest);
                        if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                            return Err(Refusal(
                                "ERR Client names cannot contain spaces, newlines or special characters.".into(),
                            ));
                        }
                        Command::ClientSetName(name)
                    }
                    ("GETNAME", 2) => Command::ClientGetName,
                    ("ID", 2) => Command::ClientId,
                    ("SETINFO", 4) => Command::ClientSetInfo,
                    _ => {
                        return Err(Refusal(format!(
                            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                            shown(sub.as_bytes())
                        )))
                    }
                }
            }
            _ => unreachable!("every name in TABLE is matched"),
        })
    }

    fn set(key: Bytes, value: Bytes, opts: Vec<Bytes>) -> Result<Command, Refusal> {
        let mut ttl = None;
        let mut cond = SetCondition::Always;
        let mut i = 0;
        while i < opts.len() {
            match upper(&opts[i]).as_str() {
                "NX" if cond == SetCondition::Always => cond = SetCondition::IfAbsent,
                "XX" if cond == SetCondition::Always => cond = SetCondition::IfPresent,
                unit @ ("EX" | "PX") if ttl.is_none() => {
                    let Some(n) = opts.get(i + 1) else {
                        return Err(Refusal::syntax());
                    };
                    let n = int(n)?;
                    let invalid = || Refusal("ERR invalid expire time in 'set' command".into());
                    if n <= 0 {
                        return Err(invalid());
                    }
                    ttl = ttl_of(n, if unit == "EX" { 1000 } else { 1 }, "set")?;
                    if ttl.is_none() {
                        return Err(invalid());
                    }
                    i += 1;
                }
                _ => return Err(Refusal::syntax()),
            }
            i += 1;
        }
        Ok(Command::Set {
            key,
            value,
            ttl,
            cond,
        })
    }

    fn hello(args: Vec<Bytes>) -> Result<Command, Refusal> {
        let mut it = args.into_iter();
        let proto = match it.next() {
            None => None,
            Some(p) => Some(int(&p).map_err(|_| {
                Refusal("ERR Protocol version is not an integer or out of range".into())
            })?),
        };
        let mut auth = None;
        let mut name = None;
        while let Some(opt) = it.next() {
            match upper(&opt).as_str() {
                "AUTH" => match (it.next(), it.next()) {
                    (Some(u), Some(p)) => auth = Some((u, p)),
                    _ => return Err(Refusal::syntax()),
                },
                "SETNAME" => match it.next() {
                    Some(n) => name = Some(n),
                    None => return Err(Refusal::syntax()),
                },
                other => {
                    return Err(Refusal(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        shown(other.as_bytes())
                    )))
                }
            }
        }
        Ok(Command::Hello { proto, auth, name })
    }

    /// True for the commands a connection may send before it has authenticated.
    pub fn allowed_before_auth(&self) -> bool {
        matches!(
            self,
            Command::Auth { .. } | Command::Hello { .. } | Command::Quit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parse(line: &str) -> Result<Command, Refusal> {
        Command::parse(line.split(' ').map(|w| Bytes::from(w.to_owned())).collect())
    }

    #[track_caller]
    fn refused(line: &str) -> String {
        parse(line).unwrap_err().0
    }

    #[test]
    fn set_options() {
        assert_eq!(
            parse("set k v EX 10 NX").unwrap(),
            Command::Set {
                key: "k".into(),
                value: "v".into(),
                ttl: Some(Duration::from_secs(10)),
                cond: SetCondition::IfAbsent,
            }
        );
        assert_eq!(
            parse("SET k v px 1500 xx").unwrap(),
            Command::Set {
                key: "k".into(),
                value: "v".into(),
                ttl: Some(Duration::from_millis(1500)),
                cond: SetCondition::IfPresent,
            }
        );
        assert_eq!(refused("set k v NX XX"), "ERR syntax error");
        assert_eq!(refused("set k v EX 1 PX 1"), "ERR syntax error");
        assert_eq!(refused("set k v EX"), "ERR syntax error");
        assert_eq!(refused("set k v KEEPTTL"), "ERR syntax error");
        assert_eq!(
            refused("set k v EX 0"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            refused("set k v EX -5"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            refused("set k v EX 9999999999999"),
            "ERR invalid expire time in 'set' command"
        );
        assert_eq!(
            refused("set k v EX ten"),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            refused("set k"),
            "ERR wrong number of arguments for 'set' command"
        );
    }

    #[test]
    fn expire_and_ttl() {
        assert_eq!(
            parse("pexpire k 250").unwrap(),
            Command::Expire {
                key: "k".into(),
                ttl: Some(Duration::from_millis(250)),
            }
        );
        assert_eq!(
            parse("expire k 0").unwrap(),
            Command::Expire {
                key: "k".into(),
                ttl: None,
            }
        );
        assert_eq!(
            parse("expire k -1").unwrap(),
            Command::Expire {
                key: "k".into(),
                ttl: None,
            }
        );
        assert_eq!(
            parse("PTTL k").unwrap(),
            Command::Ttl {
                key: "k".into(),
                millis: true,
            }
        );
        assert!(refused("expire k").contains("wrong number"));
    }

    #[test]
    fn multi_key_commands() {
        assert_eq!(
            parse("del a b a").unwrap(),
            Command::Del(vec!["a".into(), "b".into(), "a".into()])
        );
        assert_eq!(
            parse("mset a 1 b 2").unwrap(),
            Command::MSet(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert!(refused("mset a 1 b").contains("wrong number"));
        assert!(refused("mget").contains("wrong number"));
    }

    #[test]
    fn unknown_commands_name_themselves_safely() {
        assert_eq!(
            refused("FLUSHALL now"),
            "ERR unknown command 'FLUSHALL', with args beginning with: 'now'"
        );
        let weird = refused("x'\r\ny");
        assert!(!weird.contains('\n') && !weird.contains('\r'), "{weird}");
    }

    #[test]
    fn hello_and_client() {
        assert_eq!(
            parse("HELLO 3 AUTH default pw SETNAME app").unwrap(),
            Command::Hello {
                proto: Some(3),
                auth: Some(("default".into(), "pw".into())),
                name: Some("app".into()),
            }
        );
        assert!(refused("HELLO two").contains("Protocol version"));
        assert!(refused("HELLO 2 AUTH x").contains("syntax"));
        assert_eq!(
            parse("client setname web-1").unwrap(),
            Command::ClientSetName("web-1".into())
        );
        assert!(refused("client setname a\u{7f}").contains("Client names"));
        assert!(refused("client kill x").contains("CLIENT HELP"));
        assert!(parse("auth").is_err());
        assert!(parse("AUTH tok").unwrap().allowed_before_auth());
        assert!(!parse("GET k").unwrap().allowed_before_auth());
    }

    #[test]
    fn command_queries() {
        assert_eq!(
            parse("COMMAND").unwrap(),
            Command::Command(CommandQuery::All)
        );
        assert_eq!(
            parse("command count").unwrap(),
            Command::Command(CommandQuery::Count)
        );
        assert_eq!(
            parse("command docs").unwrap(),
            Command::Command(CommandQuery::Docs)
        );
        assert_eq!(
            parse("command info GET nope").unwrap(),
            Command::Command(CommandQuery::Info(vec!["get".into(), "nope".into()]))
        );
        assert!(refused("command getkeys x").contains("COMMAND HELP"));
    }

    #[test]
    fn every_table_entry_parses_with_its_minimum_arity() {
        for spec in TABLE {
            let name = spec.name;
            let mut line = vec![name.to_string()];
            let want = spec.arity.unsigned_abs() as usize;
            let filler: &[&str] = match name {
                "select" | "expire" | "pexpire" => &["1", "1"],
                "client" => &["getname"],
                _ => &["k", "v"],
            };
            let mut i = 0;
            while line.len() < want {
                line.push(filler[i % filler.len()].to_string());
                i += 1;
            }
            if name == "auth" {
                line.truncate(2);
            }
            let r = Command::parse(line.iter().map(|w| Bytes::from(w.clone())).collect());
            assert!(r.is_ok(), "{line:?}: {r:?}");
        }
    }
}
