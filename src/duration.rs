//! Parsing of durations and byte sizes as operators write them.
//!
//! Durations: Go-style compact forms (`250ms`, `1.5s`, `2h30m`, `0`) and, for anything
//! else, humantime forms (`5 minutes`, `1day 2h`). A leading `-` is reported as negative
//! rather than rejected as garbage, so callers can say "negative ttl". Sizes: a whole
//! number of bytes with an optional unit (`B`, `KB`/`MB`/`GB` = powers of 1000,
//! `KiB`/`MiB`/`GiB` = powers of 1024).

use std::time::Duration;

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// A well-formed but negative duration.
    Negative,
    /// Not a duration at all.
    Invalid,
}

/// Parses a Go-style or humantime duration.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('-') {
        return match parse_duration(rest) {
            Ok(d) if d.is_zero() => Ok(d),
            Ok(_) => Err(DurationError::Negative),
            Err(e) => Err(e),
        };
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() {
        return Err(DurationError::Invalid);
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    parse_go(t)
        .or_else(|| humantime::parse_duration(t).ok())
        .ok_or(DurationError::Invalid)
}

/// Go's `time.ParseDuration` grammar: one or more `<decimal><unit>` with units
/// ns, us, µs, ms, s, m, h.
fn parse_go(t: &str) -> Option<Duration> {
    let mut rest = t;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return None;
        }
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        let (int, frac) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if frac.contains('.') {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut nanos = int.checked_mul(scale)?;
        if !frac.is_empty() {
            let digits = frac.len().min(18) as u32;
            let f: u128 = frac[..digits as usize].parse().ok()?;
            nanos = nanos.checked_add(f.checked_mul(scale)? / 10u128.pow(digits))?;
        }
        total_nanos = total_nanos.checked_add(nanos)?;
        rest = next;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// Parses a byte size such as `4194304`, `4MiB`, `512 MB`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_style_forms() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("1s"), Ok(ms(1_000)));
        assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
        assert_eq!(parse_duration("2h30m"), Ok(ms(9_000_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("1h0m0.5s"), Ok(ms(3_600_500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn huge_values_are_invalid_not_wrapped() {
        // Found by the fuzzer: an integer part near u128::MAX plus a fraction.
        let t = "340282366920938463463374607431768211.999us";
        assert_eq!(parse_duration(t), Err(DurationError::Invalid));
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999h"),
            Err(DurationError::Invalid)
        );
        assert_eq!(
            parse_duration("18446744073709551616s"),
            Err(DurationError::Invalid)
        );
    }

    #[test]
    fn humantime_forms() {
        assert_eq!(parse_duration("5 minutes"), Ok(ms(300_000)));
        assert_eq!(parse_duration("1day"), Ok(ms(86_400_000)));
    }

    #[test]
    fn negative_and_invalid() {
        assert_eq!(parse_duration("-5s"), Err(DurationError::Negative));
        assert_eq!(parse_duration("-0"), Ok(Duration::ZERO));
        for bad in ["", "soon", "5", "5x", "1..5s", "ms", "-abc", "s5"] {
            assert_eq!(parse_duration(bad), Err(DurationError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4194304"), Some(4_194_304));
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("512 MB"), Some(512_000_000));
        assert_eq!(parse_size("1gib"), Some(1 << 30));
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("1.5MB"), None);
    }
}
