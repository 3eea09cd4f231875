//! Kubernetes resource quantities (`0.5Gi`, `512Mi`, `1G`, `200m`, `1.5`,
//! `1e3`) read exactly as the API server reads them, for memory in bytes and
//! CPU in millicores.
//!
//! `k8s-openapi` carries a `Quantity` as its text only. The CLI's docker-style
//! parser (`berth run -m 512m`) must not be used here: in a manifest `512m`
//! means 0.512 bytes, not 512 MiB, and `1k` is 1000, not 1024.

use std::fmt;

/// A quantity that is not valid Kubernetes syntax, or not valid for its use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {value:?}: {reason}")]
pub struct QuantityError {
    /// The text as written in the manifest.
    pub value: String,
    /// Why it was refused, with what is accepted.
    pub reason: String,
}

const SYNTAX: &str = "expected a number with an optional suffix: Ki Mi Gi Ti Pi Ei (powers of 1024), \
n u m k M G T P E (powers of 1000) or an exponent e3, e.g. 512Mi, 0.5Gi, 1G, 200m, 1.5";

/// A parsed quantity in base units (bytes, or cores).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Parsed {
    value: f64,
}

fn parse(text: &str) -> Result<Parsed, QuantityError> {
    let error = |reason: &str| QuantityError {
        value: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed != text {
        return Err(error(SYNTAX));
    }
    let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
    if unsigned.starts_with('-') {
        return Err(error("must not be negative"));
    }
    let number_end = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(error(SYNTAX));
    }
    let mantissa: f64 = number.parse().map_err(|_| error(SYNTAX))?;
    let scale = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().map_err(|_| error(SYNTAX))?;
            if !(-18..=18).contains(&power) {
                return Err(error("exponent out of range (-18 to 18)"));
            }
            10f64.powi(power)
        }
        _ => return Err(error(SYNTAX)),
    };
    let value = mantissa * scale;
    if !value.is_finite() {
        return Err(error("too large"));
    }
    Ok(Parsed { value })
}

/// Reads a memory quantity as bytes, rounded up to a whole byte as the API
/// server rounds it.
pub fn memory_bytes(text: &str) -> Result<u64, QuantityError> {
    let parsed = parse(text)?;
    let bytes = parsed.value.ceil();
    if bytes > u64::MAX as f64 {
        return Err(QuantityError {
            value: text.to_owned(),
            reason: "too large for a memory size".to_owned(),
        });
    }
    Ok(bytes as u64)
}

/// Reads a CPU quantity as millicores (`1` is 1000, `200m` is 200), rounded up
/// to a whole millicore as the API server rounds it.
pub fn cpu_millis(text: &str) -> Result<u64, QuantityError> {
    let parsed = parse(text)?;
    let millis = (parsed.value * 1000.0).ceil();
    if millis > (1u64 << 40) as f64 {
        return Err(QuantityError {
            value: text.to_owned(),
            reason: "too large for a CPU amount".to_owned(),
        });
    }
    Ok(millis as u64)
}

/// Memory in bytes and CPU in millicores: what a pod asks for, or what a
/// node can give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
}

impl Resources {
    /// The sum of two amounts, saturating.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
        }
    }

    /// What is left of `self` after `other`, never below zero.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "memory {}Mi, cpu {}m",
            self.memory_bytes / (1024 * 1024),
            self.cpu_millis
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reads_as_the_api_server_reads_it() {
        assert_eq!(memory_bytes("0.5Gi"), Ok(512 * 1024 * 1024));
        assert_eq!(memory_bytes("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(memory_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(memory_bytes("1k"), Ok(1000));
        assert_eq!(memory_bytes("128974848"), Ok(128_974_848));
        assert_eq!(memory_bytes("129e6"), Ok(129_000_000));
        assert_eq!(memory_bytes("+1Ki"), Ok(1024));
        // Kubernetes' `m` is milli: half a byte rounds up to one.
        assert_eq!(memory_bytes("500m"), Ok(1));
    }

    #[test]
    fn cpu_reads_as_millicores() {
        assert_eq!(cpu_millis("200m"), Ok(200));
        assert_eq!(cpu_millis("1"), Ok(1000));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("100u"), Ok(1));
    }

    #[test]
    fn bad_quantities_name_the_value_and_the_syntax() {
        for bad in [
            "", " 1Gi", "1 Gi", "-1Gi", "1gi", "1GB", "Gi", "1..5", "1.2.3Mi", "1e99", "1Zi",
        ] {
            let error = memory_bytes(bad).expect_err(bad);
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
        assert!(
            cpu_millis("two")
                .expect_err("words")
                .to_string()
                .contains("200m")
        );
    }
}
