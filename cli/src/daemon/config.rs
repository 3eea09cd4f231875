//! The daemon's configuration file (`berth daemon --config FILE`, YAML):
//! what the node gives to pods and how fast crashing containers restart.
//!
//! ```yaml
//! allocatable:
//!   memory: 4Gi
//!   cpu: "2"
//! restartBackoff:
//!   initial: 100ms
//!   max: 1s
//! ```
//!
//! Every key is optional; an unknown key is an error (a typo must not
//! silently keep a default).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use berth_container::Backoff;
use berth_scheduler::Resources;
use berth_scheduler::quantity;

/// The largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    allocatable: Option<Allocatable>,
    restart_backoff: Option<RestartBackoff>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Allocatable {
    memory: Option<String>,
    cpu: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RestartBackoff {
    initial: Option<String>,
    max: Option<String>,
    reset_after: Option<String>,
}

/// The daemon's settings after the config file, if any, is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonConfig {
    /// What the node gives to pods.
    pub allocatable: Resources,
    /// Delays between restarts of a crashing container.
    pub backoff: Backoff,
}

impl DaemonConfig {
    /// The machine's resources and kubelet's back-off.
    pub fn defaults() -> DaemonConfig {
        DaemonConfig {
            allocatable: berth_scheduler::placement::machine_resources(),
            backoff: Backoff::KUBELET,
        }
    }

    /// Reads `path` over the defaults.
    pub fn read(path: &Path) -> Result<DaemonConfig> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read the daemon config {}", path.display()))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            bail!("the daemon config {} is larger than 1 MiB", path.display());
        }
        DaemonConfig::parse(&text).with_context(|| format!("daemon config {}", path.display()))
    }

    /// Reads config text over the defaults.
    pub fn parse(text: &str) -> Result<DaemonConfig> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(text).map_err(|error| anyhow::anyhow!("{error}"))?
        };
        let mut config = DaemonConfig::defaults();
        if let Some(allocatable) = file.allocatable {
            if let Some(memory) = allocatable.memory {
                config.allocatable.memory_bytes = quantity::memory_bytes(&memory)
                    .map_err(|error| anyhow::anyhow!("allocatable.memory: {error}"))?;
            }
            if let Some(cpu) = allocatable.cpu {
                config.allocatable.cpu_millis = quantity::cpu_millis(&cpu)
                    .map_err(|error| anyhow::anyhow!("allocatable.cpu: {error}"))?;
            }
        }
        if let Some(backoff) = file.restart_backoff {
            let duration = |field: &str, text: Option<String>, default: Duration| match text {
                None => Ok(default),
                Some(text) => berth_runtime::quantity::parse_duration(&text)
                    .map_err(|error| anyhow::anyhow!("restartBackoff.{field}: {error}")),
            };
            config.backoff.initial = duration("initial", backoff.initial, config.backoff.initial)?;
            config.backoff.max = duration("max", backoff.max, config.backoff.max)?;
            config.backoff.reset_after = duration(
                "resetAfter",
                backoff.reset_after,
                config.backoff.reset_after,
            )?;
            if config.backoff.max < config.backoff.initial {
                bail!(
                    "restartBackoff.max ({:?}) is shorter than restartBackoff.initial ({:?})",
                    config.backoff.max,
                    config.backoff.initial
                );
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_overrides_and_keeps_defaults() {
        let config = DaemonConfig::parse(
            "allocatable:\n  memory: 1Gi\nrestartBackoff:\n  initial: 100ms\n  max: 1s\n",
        )
        .expect("valid config");
        assert_eq!(config.allocatable.memory_bytes, 1 << 30);
        assert_eq!(
            config.allocatable.cpu_millis,
            DaemonConfig::defaults().allocatable.cpu_millis
        );
        assert_eq!(config.backoff.initial, Duration::from_millis(100));
        assert_eq!(config.backoff.max, Duration::from_secs(1));
        assert_eq!(
            DaemonConfig::parse("").expect("empty"),
            DaemonConfig::defaults()
        );
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values_naming_them() {
        let error = DaemonConfig::parse("allocatable:\n  memroy: 1Gi\n").expect_err("typo");
        assert!(format!("{error:#}").contains("memroy"), "{error:#}");
        let error = DaemonConfig::parse("allocatable:\n  memory: lots\n").expect_err("value");
        assert!(
            format!("{error:#}").contains("allocatable.memory"),
            "{error:#}"
        );
        let error = DaemonConfig::parse("restartBackoff:\n  initial: 10\n").expect_err("unit");
        assert!(
            format!("{error:#}").contains("restartBackoff.initial"),
            "{error:#}"
        );
        let error =
            DaemonConfig::parse("restartBackoff:\n  initial: 2s\n  max: 1s\n").expect_err("order");
        assert!(format!("{error:#}").contains("shorter"), "{error:#}");
    }
}
