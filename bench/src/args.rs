//! Command-line arguments: parsing and validation into [`Args`], and the usage text.
//!
//! Owns only the translation of `argv` into a plain value. Does not resolve addresses,
//! open sockets or read the clock; `main` does that with the result.

use std::time::Duration;

/// Which wire protocol the client engine speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// hypercache's HTTP/1.1 client API (`GET`/`PUT /v1/cache/{key}`).
    Http,
    /// The Redis protocol (RESP2 `GET`/`SET`).
    Redis,
}

/// What the measured phase sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// Only reads.
    Get,
    /// Only writes.
    Put,
    /// Reads with this probability, writes otherwise.
    Mix { get_ratio: f64 },
    /// A request that does no cache work: `GET /healthz` over HTTP, `PING` over RESP.
    Ceiling,
}

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    Uniform,
    /// Zipfian with this exponent: rank r is drawn with probability ∝ 1/r^s.
    Zipf {
        s: f64,
    },
}

/// A fully validated invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    pub protocol: Protocol,
    /// `host:port` targets; connection i goes to `addrs[i % len]`.
    pub addrs: Vec<String>,
    pub connections: usize,
    /// Length of the measured phase; `None` when bounded by `ops` only.
    pub duration: Option<Duration>,
    /// Most measured operations; `None` when bounded by `duration` only.
    pub ops: Option<u64>,
    pub warmup: Duration,
    pub value_size: usize,
    pub keys: u64,
    pub key_prefix: String,
    pub workload: Workload,
    pub dist: KeyDist,
    /// Write every key once before the warm-up.
    pub preload: bool,
    /// Stop after the preload (for memory measurements).
    pub preload_only: bool,
    /// Total target rate in ops/s (open loop); `None` is closed loop, as fast as replies come.
    pub rate: Option<f64>,
    pub timeout: Duration,
    /// Hard bound on the whole run, preload included.
    pub max_time: Duration,
    pub token: Option<String>,
    pub threads: usize,
    pub seed: u64,
    pub json: bool,
    pub json_out: Option<String>,
    pub quiet: bool,
}

/// The outcome of parsing: run, or print the usage text.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Box<Args>),
    Help,
}

/// The usage text printed by `--help`.
pub const USAGE: &str = "\
hypercache-bench: load generator for hypercache-server (HTTP) and Redis (RESP)

USAGE: hypercache-bench [OPTIONS]

  --protocol http|redis   wire protocol (default http)
  --addr A[,B...]         target host:port list; connections spread round robin
                          (default 127.0.0.1:8080)
  -c, --connections N     keep-alive connections, one request in flight each (default 32)
  -d, --duration D        measured duration, e.g. 10s, 500ms, 1m (default 10s)
  -n, --ops N             stop after N measured ops (without -d: no time bound but --max-time)
      --warmup D          run this long before measuring (default 0s)
  -s, --value-size S      value bytes for writes, e.g. 64, 4KiB (default 64)
  -k, --keys N            key space size (default 10000)
      --key-prefix P      keys are P + 12-digit index (default key:)
  -w, --workload W        get | put | mix | ceiling (default mix); ceiling sends
                          GET /healthz (HTTP) or PING (RESP): no cache work
      --get-ratio F       share of GETs in the mix, 0..1 (default 0.9)
      --dist D            uniform | zipf (default uniform)
      --zipf-s F          Zipf exponent (default 0.99)
      --preload           write every key once before the warm-up
      --preload-only      preload, report it, and stop
      --rate R            total target ops/s (open loop; latency counted from the
                          intended send time, so stalls are not hidden)
      --timeout D         per-request timeout; the connection is then reopened (default 5s)
      --max-time D        hard bound on the whole run, preload included (default 10m)
      --token T           send Authorization: Bearer T (HTTP)
      --threads N         runtime worker threads (default 1)
      --seed N            random seed (default 1)
      --json              print the summary as JSON instead of a table
      --json-out FILE     also write the JSON summary to FILE
  -q, --quiet             no progress line on stderr
  -h, --help              this text
";

/// Parses a duration: a number with `ms`, `s` or `m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(v * scale))
}

/// Parses a byte size: a number with an optional `k`/`KiB`/`m`/`MiB` suffix (powers of 1024).
pub fn parse_size(s: &str) -> Option<usize> {
    let lower = s.trim().to_ascii_lowercase();
    let (num, scale) = [
        ("kib", 1 << 10),
        ("k", 1 << 10),
        ("mib", 1 << 20),
        ("m", 1 << 20),
    ]
    .iter()
    .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n, *scale)))
    .unwrap_or((lower.as_str(), 1));
    num.trim().parse::<usize>().ok()?.checked_mul(scale)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}

/// Parses `argv` without the program name.
pub fn parse<I, S>(argv: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut a = Args {
        protocol: Protocol::Http,
        addrs: vec!["127.0.0.1:8080".into()],
        connections: 32,
        duration: None,
        ops: None,
        warmup: Duration::ZERO,
        value_size: 64,
        keys: 10_000,
        key_prefix: "key:".into(),
        workload: Workload::Mix { get_ratio: 0.9 },
        dist: KeyDist::Uniform,
        preload: false,
        preload_only: false,
        rate: None,
        timeout: Duration::from_secs(5),
        max_time: Duration::from_secs(600),
        token: None,
        threads: 1,
        seed: 1,
        json: false,
        json_out: None,
        quiet: false,
    };
    let mut workload = "mix".to_owned();
    let mut get_ratio = 0.9;
    let mut dist = "uniform".to_owned();
    let mut zipf_s = 0.99;
    let mut it = argv.into_iter().map(Into::into);
    while let Some(arg) = it.next() {
        // `--flag=value` and `--flag value` are both accepted.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--protocol" => {
                a.protocol = match value(&flag)?.as_str() {
                    "http" => Protocol::Http,
                    "redis" | "resp" => Protocol::Redis,
                    other => {
                        return Err(format!("--protocol: expected http or redis, got {other:?}"))
                    }
                }
            }
            "--addr" => {
                a.addrs = value(&flag)?
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            "-c" | "--connections" => a.connections = number(&flag, &value(&flag)?)?,
            "-d" | "--duration" => {
                let v = value(&flag)?;
                a.duration =
                    Some(parse_duration(&v).ok_or_else(|| format!("{flag}: bad duration {v:?}"))?);
            }
            "-n" | "--ops" => a.ops = Some(number(&flag, &value(&flag)?)?),
            "--warmup" => {
                let v = value(&flag)?;
                a.warmup =
                    parse_duration(&v).ok_or_else(|| format!("{flag}: bad duration {v:?}"))?;
            }
            "-s" | "--value-size" => {
                let v = value(&flag)?;
                a.value_size = parse_size(&v).ok_or_else(|| format!("{flag}: bad size {v:?}"))?;
            }
            "-k" | "--keys" => a.keys = number(&flag, &value(&flag)?)?,
            "--key-prefix" => a.key_prefix = value(&flag)?,
            "-w" | "--workload" => workload = value(&flag)?,
            "--get-ratio" => get_ratio = number(&flag, &value(&flag)?)?,
            "--dist" => dist = value(&flag)?,
            "--zipf-s" => zipf_s = number(&flag, &value(&flag)?)?,
            "--preload" => a.preload = true,
            "--preload-only" => {
                a.preload = true;
                a.preload_only = true;
            }
            "--rate" => a.rate = Some(number(&flag, &value(&flag)?)?),
            "--timeout" => {
                let v = value(&flag)?;
                a.timeout =
                    parse_duration(&v).ok_or_else(|| format!("{flag}: bad duration {v:?}"))?;
            }
            "--max-time" => {
                let v = value(&flag)?;
                a.max_time =
                    parse_duration(&v).ok_or_else(|| format!("{flag}: bad duration {v:?}"))?;
            }
            "--token" => a.token = Some(value(&flag)?),
            "--threads" => a.threads = number(&flag, &value(&flag)?)?,
            "--seed" => a.seed = number(&flag, &value(&flag)?)?,
            "--json" => a.json = true,
            "--json-out" => a.json_out = Some(value(&flag)?),
            "-q" | "--quiet" => a.quiet = true,
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    a.workload = match workload.as_str() {
        "get" => Workload::Get,
        "put" | "set" => Workload::Put,
        "mix" => Workload::Mix { get_ratio },
        "ceiling" => Workload::Ceiling,
        other => {
            return Err(format!(
                "--workload: expected get, put, mix or ceiling, got {other:?}"
            ))
        }
    };
    a.dist = match dist.as_str() {
        "uniform" => KeyDist::Uniform,
        "zipf" => KeyDist::Zipf { s: zipf_s },
        other => return Err(format!("--dist: expected uniform or zipf, got {other:?}")),
    };
    if a.duration.is_none() && a.ops.is_none() {
        a.duration = Some(Duration::from_secs(10));
    }
    validate(&a)?;
    Ok(Command::Run(Box::new(a)))
}

fn validate(a: &Args) -> Result<(), String> {
    if a.addrs.is_empty() {
        return Err("--addr: at least one host:port is needed".into());
    }
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if a.keys == 0 {
        return Err("--keys must be at least 1".into());
    }
    if a.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if a.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if a.max_time.is_zero() {
        return Err("--max-time must be positive".into());
    }
    if let Workload::Mix { get_ratio } = a.workload {
        if !(0.0..=1.0).contains(&get_ratio) {
            return Err(format!("--get-ratio must be within 0..1, got {get_ratio}"));
        }
    }
    if let KeyDist::Zipf { s } = a.dist {
        if !(s.is_finite() && s > 0.0 && s <= 10.0) {
            return Err(format!("--zipf-s must be within (0, 10], got {s}"));
        }
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err(format!("--rate must be positive, got {r}"));
        }
    }
    if a.token.is_some() && a.protocol == Protocol::Redis {
        return Err("--token applies to --protocol http only".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn run(args: &[&str]) -> Args {
        match parse(args.iter().copied()) {
            Ok(Command::Run(a)) => *a,
            other => panic!("expected a run for {args:?}, got {other:?}"),
        }
    }

    #[track_caller]
    fn err(args: &[&str]) -> String {
        parse(args.iter().copied()).expect_err("expected an error")
    }

    #[test]
    fn defaults() {
        let a = run(&[]);
        assert_eq!(a.protocol, Protocol::Http);
        assert_eq!(a.addrs, vec!["127.0.0.1:8080"]);
        assert_eq!(a.connections, 32);
        assert_eq!(a.duration, Some(Duration::from_secs(10)));
        assert_eq!(a.ops, None);
        assert_eq!(a.value_size, 64);
        assert_eq!(a.workload, Workload::Mix { get_ratio: 0.9 });
        assert_eq!(a.dist, KeyDist::Uniform);
    }

    #[test]
    fn full_invocation() {
        let a = run(&[
            "--protocol=redis",
            "--addr",
            "127.0.0.1:1,127.0.0.1:2",
            "-c",
            "8",
            "-n",
            "1000",
            "-s",
            "4KiB",
            "-k",
            "50",
            "-w",
            "put",
            "--dist",
            "zipf",
            "--zipf-s",
            "1.2",
            "--rate",
            "5000",
            "--warmup",
            "500ms",
            "--preload",
            "--json",
            "--json-out",
            "x.json",
        ]);
        assert_eq!(a.protocol, Protocol::Redis);
        assert_eq!(a.addrs.len(), 2);
        assert_eq!(a.connections, 8);
        assert_eq!(a.ops, Some(1000));
        assert_eq!(a.duration, None, "ops alone bounds the run");
        assert_eq!(a.value_size, 4096);
        assert_eq!(a.keys, 50);
        assert_eq!(a.workload, Workload::Put);
        assert_eq!(a.dist, KeyDist::Zipf { s: 1.2 });
        assert_eq!(a.rate, Some(5000.0));
        assert_eq!(a.warmup, Duration::from_millis(500));
        assert!(a.preload && !a.preload_only && a.json);
        assert_eq!(a.json_out.as_deref(), Some("x.json"));
    }

    #[test]
    fn mix_ratio_applies_in_any_order() {
        let a = run(&["--get-ratio", "0.5", "-w", "mix"]);
        assert_eq!(a.workload, Workload::Mix { get_ratio: 0.5 });
    }

    #[test]
    fn help() {
        assert_eq!(parse(["-h"]).unwrap(), Command::Help);
    }

    #[test]
    fn errors_name_the_flag() {
        assert!(err(&["--bogus"]).contains("--bogus"));
        assert!(err(&["-c"]).contains("needs a value"));
        assert!(err(&["-c", "x"]).contains("-c"));
        assert!(err(&["-c", "0"]).contains("--connections"));
        assert!(err(&["--get-ratio", "1.5"]).contains("--get-ratio"));
        assert!(err(&["--duration", "soon"]).contains("soon"));
        assert!(err(&["--protocol", "ftp"]).contains("ftp"));
        assert!(err(&["--protocol", "redis", "--token", "t"]).contains("--token"));
        assert!(err(&["--dist", "zipf", "--zipf-s", "0"]).contains("--zipf-s"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("4KiB"), Some(4096));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("lots"), None);
    }
}
