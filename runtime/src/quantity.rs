//! Parsers for the quantities users type on command lines and in manifests:
//! memory sizes (`64Mi`, `0.5Gi`, `512M`, `1048576`), CPU amounts (`0.25`,
//! `250m`) and durations (`500ms`, `30s`, `5m`, `1h30m`).
//!
//! The syntax follows Kubernetes resource quantities so that a value copied
//! from a Deployment means the same thing to berth. Docker's lower-case
//! memory suffixes (`512m`, `1g`) are accepted too and mean binary units, as
//! they do for `docker run -m`. Every parser returns a [`QuantityError`] that
//! names the rejected value and shows what is accepted.

use std::time::Duration;

/// A value that could not be parsed as a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {accepted}")]
pub struct QuantityError {
    /// What was being parsed ("memory size", "CPU amount", "duration").
    pub kind: &'static str,
    /// The text as given.
    pub value: String,
    /// What would have been accepted.
    pub accepted: &'static str,
}

const MEMORY_ACCEPTED: &str = "expected bytes or a number with a suffix Ki, Mi, Gi, Ti (1024-based), \
k, M, G, T (1000-based) or b, k, m, g (docker style, 1024-based), e.g. 64Mi, 0.5Gi, 512M, 1048576";
const CPU_ACCEPTED: &str =
    "expected a positive number of CPUs such as 0.25, 1 or 2, or millicores such as 250m";
const DURATION_ACCEPTED: &str =
    "expected a positive duration with units ns, us, ms, s, m or h, e.g. 500ms, 30s, 5m, 1h30m";

/// Parses a memory size into bytes.
///
/// Accepts plain bytes (`1048576`), Kubernetes suffixes (`Ki Mi Gi Ti Pi Ei`
/// binary, `k M G T P E` decimal), and docker's lower-case `b k m g t`
/// (binary). Fractions are allowed (`0.5Gi`); the result is rounded down to
/// whole bytes and must be at least one byte.
pub fn parse_memory(text: &str) -> Result<u64, QuantityError> {
    let err = || QuantityError {
        kind: "memory size",
        value: text.to_owned(),
        accepted: MEMORY_ACCEPTED,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    let multiplier: f64 = match suffix {
        "" | "b" | "B" => 1.0,
        "Ki" | "k" | "K" | "kb" | "KB" | "KiB" => 1024.0,
        "Mi" | "m" | "mb" | "MB" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "g" | "gb" | "GB" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "t" | "TiB" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        _ => return Err(err()),
    };
    // Kubernetes' "k" is decimal; docker's "k" is binary. Memory limits are
    // overwhelmingly typed docker-style, and "1k" either way is far below any
    // useful limit, so the docker meaning wins for the ambiguous "k".
    let value: f64 = parse_plain_number(number).ok_or_else(err)?;
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Parses a CPU amount into a fraction of one core (`0.25`, `2`, `250m`).
pub fn parse_cpus(text: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError {
        kind: "CPU amount",
        value: text.to_owned(),
        accepted: CPU_ACCEPTED,
    };
    let trimmed = text.trim();
    let cpus = match trimmed.strip_suffix('m') {
        Some(milli) => parse_plain_number(milli).ok_or_else(err)? / 1000.0,
        None => parse_plain_number(trimmed).ok_or_else(err)?,
    };
    if !cpus.is_finite() || cpus <= 0.0 || cpus > 1024.0 {
        return Err(err());
    }
    Ok(cpus)
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h30m` or `1.5s`.
///
/// A bare number is rejected: `--timeout 30` is ambiguous between seconds and
/// milliseconds, and guessing wrong by a factor of 1000 is worse than asking.
pub fn parse_duration(text: &str) -> Result<Duration, QuantityError> {
    let err = || QuantityError {
        kind: "duration",
        value: text.to_owned(),
        accepted: DURATION_ACCEPTED,
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += parse_plain_number(number).ok_or_else(err)? * seconds_per_unit;
        rest = tail;
    }
    if !total.is_finite() || total <= 0.0 || total > 1e10 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a byte count for messages: `32 MiB`, `1.5 GiB`, `512 bytes`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for candidate in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = candidate;
    }
    if (value - value.round()).abs() < 0.005 {
        format!("{} {unit}", value.round() as u64)
    } else {
        format!("{value:.2} {unit}")
    }
}

/// A non-negative decimal number without sign or exponent.
fn parse_plain_number(text: &str) -> Option<f64> {
    if text.is_empty()
        || !text.chars().all(|c| c.is_ascii_digit() || c == '.')
        || text.matches('.').count() > 1
        || text == "."
    {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64Mi"), Ok(64 << 20));
        assert_eq!(parse_memory("0.5Gi"), Ok(512 << 20));
        assert_eq!(parse_memory("512M"), Ok(512_000_000));
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert_eq!(parse_memory("2g"), Ok(2 << 30));
        assert_eq!(parse_memory("1Ki"), Ok(1024));
    }

    #[test]
    fn bad_memory_sizes_name_the_value() {
        for bad in ["lots", "", "-1", "64Xi", "1.2.3Mi", "0", "0.1", "Mi", "1e9"] {
            let error = parse_memory(bad).expect_err(bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
            assert!(error.to_string().contains("64Mi"), "{error}");
        }
    }

    #[test]
    fn cpu_amounts() {
        assert_eq!(parse_cpus("0.25"), Ok(0.25));
        assert_eq!(parse_cpus("250m"), Ok(0.25));
        assert_eq!(parse_cpus("2"), Ok(2.0));
        for bad in ["0", "-1", "abc", "m", "0m", "1.5.2", ""] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["30", "", "s", "5x", "-1s", "0s", "1s2"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(32 << 20), "32 MiB");
        assert_eq!(format_bytes(100), "100 bytes");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
    }
}
