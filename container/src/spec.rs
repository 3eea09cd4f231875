//! What a container is: the typed, serializable definition every front door
//! builds (the CLI from docker's flags, later the daemon from a pod and the
//! shim from an OCI bundle) and every record stores.
//!
//! A spec is complete on its own: environment values are resolved
//! (`KEY=VALUE`, never "the value this host has"), host paths are absolute
//! and env files already read, so it means the same thing whoever runs it
//! and wherever. Decoding checks every value and names the field it
//! rejects.

use std::path::PathBuf;
use std::time::Duration;

use berth_runtime::{OutboundRule, PortMapping};
use serde::{Deserialize, Serialize};

use crate::flags;

/// Stores a setting as the text its flag takes (`"on-failure:3"`), through
/// its `Display` and `parse`.
macro_rules! as_text {
    ($type:ty) => {
        impl From<$type> for String {
            fn from(value: $type) -> String {
                value.to_string()
            }
        }

        impl TryFrom<String> for $type {
            type Error = InvalidValue;

            fn try_from(text: String) -> Result<Self, InvalidValue> {
                <$type>::parse(&text)
            }
        }
    };
}

/// The definition of a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The container's name (`None`: the store chooses `berth-SHORTID`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::name"
    )]
    pub name: Option<String>,
    /// What to run.
    pub target: Target,
    /// Replaces the image's ENTRYPOINT (and drops its CMD): the program's
    /// absolute path inside the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    /// Arguments after the program (replacing an image's CMD).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables, in order, after the image's ENV; later
    /// duplicates override earlier ones. Stored as `KEY=VALUE` strings.
    #[serde(default, with = "env_text")]
    pub env: Vec<(String, String)>,
    /// Host directories visible to the guest.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// The guest's working directory (replacing an image's WORKDIR).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::workdir"
    )]
    pub workdir: Option<String>,
    /// Published ports, as `[HOSTIP:]HOSTPORT:CONTAINERPORT` strings.
    #[serde(default, with = "port_text")]
    pub ports: Vec<PortMapping>,
    /// Hosts the guest may connect to, as `HOST[:PORT]` strings.
    #[serde(default, with = "outbound_text")]
    pub outbound: Vec<OutboundRule>,
    /// Resource limits.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// How a wasi:http component is served.
    #[serde(default)]
    pub http: HttpSettings,
    /// When the program is started again after it exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Keep the program's stdin open (docker's `-i`) instead of giving it
    /// end of file.
    #[serde(default)]
    pub interactive: bool,
    /// Remove the container once it exits for good (docker's `--rm`).
    #[serde(default)]
    pub auto_remove: bool,
}

impl ContainerSpec {
    /// A spec running `target` with every setting at its default.
    pub fn new(target: Target) -> ContainerSpec {
        ContainerSpec {
            name: None,
            target,
            entrypoint: None,
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            workdir: None,
            ports: Vec::new(),
            outbound: Vec::new(),
            limits: LimitsSpec::default(),
            http: HttpSettings::default(),
            restart: RestartPolicy::No,
            interactive: false,
            auto_remove: false,
        }
    }

    /// Decodes and checks a spec from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<ContainerSpec, SpecError> {
        serde_json::from_slice(bytes).map_err(SpecError::Json)
    }

    /// Encodes the spec as (pretty) JSON.
    pub fn to_json(&self) -> Vec<u8> {
        // Every field is plain data with string keys: encoding cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The FILE|IMAGE the user named, as `berth ps` shows it.
    pub fn target_name(&self) -> String {
        match &self.target {
            Target::Image { reference, .. } => reference.clone(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }

    /// Published ports, as docker's PORTS column shows them.
    pub fn port_descriptions(&self) -> Vec<String> {
        self.ports.iter().map(PortMapping::describe).collect()
    }
}

/// A spec that cannot be decoded, naming the field and the value.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The JSON is malformed, has an unknown field or an invalid value.
    #[error("invalid container spec: {0}")]
    Json(#[source] serde_json::Error),
}

/// What a container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Target {
    /// An image from the local store (pulled as `pull` says).
    Image {
        /// The image reference (`name[:tag]`, `name@digest` or an ID).
        reference: String,
        /// When to pull it.
        #[serde(default)]
        pull: PullPolicy,
    },
    /// A WebAssembly file on the host (`.wasm`, `.wat`).
    File {
        /// The file (absolute in a stored spec).
        path: PathBuf,
        /// A core module's export to call instead of `_start`
        /// (`FILE#NAME`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        export: Option<String>,
    },
}

/// When an image target is pulled, as docker's `--pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum PullPolicy {
    /// Pull only when the image is not in the local store.
    #[default]
    Missing,
    /// Always pull (and fail if the registry cannot be reached).
    Always,
    /// Never pull: use the local store only.
    Never,
}

impl PullPolicy {
    /// Parses `missing`, `always` or `never`.
    pub fn parse(text: &str) -> Result<PullPolicy, InvalidValue> {
        match text {
            "missing" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            _ => Err(InvalidValue {
                what: "pull policy",
                value: text.to_owned(),
                expected: "missing, always or never",
            }),
        }
    }
}

impl std::fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        })
    }
}

as_text!(PullPolicy);

/// A value outside what a setting accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected {expected}")]
pub struct InvalidValue {
    /// The setting ("restart policy").
    pub what: &'static str,
    /// The text as given.
    pub value: String,
    /// What is accepted.
    pub expected: &'static str,
}

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// The host directory (absolute).
    #[serde(deserialize_with = "de::host_dir")]
    pub host: PathBuf,
    /// Where the guest sees it (absolute guest path, normalized).
    #[serde(deserialize_with = "de::guest_path")]
    pub guest: String,
    /// Whether writes are refused.
    #[serde(default)]
    pub read_only: bool,
}

impl MountSpec {
    /// The mount as the runtime takes it, once the host directory is
    /// checked again (it may have gone since the spec was made).
    pub fn to_mount(&self) -> Result<berth_runtime::Mount, flags::FlagError> {
        flags::checked_mount(
            &self.docker_syntax(),
            &self.host,
            &self.guest,
            self.read_only,
        )
    }

    /// The mount in docker's `HOST:GUEST[:ro]` form, for messages.
    pub fn docker_syntax(&self) -> String {
        format!(
            "{}:{}{}",
            self.host.display(),
            self.guest,
            if self.read_only { ":ro" } else { "" }
        )
    }
}

/// Resource limits of a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Linear memories plus tables, in bytes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::memory"
    )]
    pub memory_bytes: Option<u64>,
    /// CPU quota in cores.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::cpus"
    )]
    pub cpus: Option<f64>,
    /// Wall-clock limit of one run (compiling included); the guest is
    /// killed after it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub timeout: Option<Duration>,
}

/// How a wasi:http component is served (docker has no such flags; these
/// are berth's `--request-timeout` and friends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A request taking longer is answered 504 and its instance stopped.
    #[serde(with = "duration_text")]
    pub request_timeout: Duration,
    /// Requests handled at once; more wait, then get 503.
    #[serde(deserialize_with = "de::max_concurrency")]
    pub max_concurrency: usize,
    /// A connection without a whole request header this long is closed.
    #[serde(with = "duration_text")]
    pub header_timeout: Duration,
    /// A connection with no request in progress this long is closed.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Connections open at once (`None`: berth's default for this host).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de::max_connections"
    )]
    pub max_connections: Option<u32>,
    /// How long a stop waits for in-flight requests.
    #[serde(with = "duration_text")]
    pub stop_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            request_timeout: Duration::from_secs(30),
            max_concurrency: 1000,
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_connections: None,
            stop_timeout: Duration::from_secs(10),
        }
    }
}

/// When a container's program is started again, as docker's `--restart`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum RestartPolicy {
    /// Never.
    #[default]
    No,
    /// After a non-zero exit, at most `max` times (unlimited if `None`).
    OnFailure {
        /// Restarts allowed.
        max: Option<u32>,
    },
    /// After every exit, until stopped.
    Always,
}

impl RestartPolicy {
    /// Parses `no`, `on-failure`, `on-failure:N` or `always`.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let bad = || InvalidValue {
            what: "restart policy",
            value: text.to_owned(),
            expected: "no, on-failure[:N] or always",
        };
        match text {
            "no" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure { max: None }),
            _ => {
                let count = text.strip_prefix("on-failure:").ok_or_else(bad)?;
                let max = count.parse().map_err(|_| bad())?;
                Ok(RestartPolicy::OnFailure { max: Some(max) })
            }
        }
    }

    /// Whether to start the program again after it exited with `code`,
    /// having been restarted `restarts` times already.
    pub fn should_restart(&self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure { max } => code != 0 && max.is_none_or(|max| restarts < max),
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::OnFailure { max: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure { max: Some(max) } => write!(f, "on-failure:{max}"),
        }
    }
}

as_text!(RestartPolicy);

/// The delay before the `n`th consecutive restart (1-based): 100 ms,
/// doubling, at most 10 s.
pub fn restart_backoff(n: u32) -> Duration {
    let shift = n.saturating_sub(1).min(10);
    Duration::from_millis(100u64 << shift).min(Duration::from_secs(10))
}

/// Checks a container name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`,
/// up to 128 characters.
pub fn validate_name(name: &str) -> Result<(), InvalidValue> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid || name.len() > 128 {
        return Err(InvalidValue {
            what: "container name",
            value: name.to_owned(),
            expected: "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, up to 128 characters",
        });
    }
    Ok(())
}

/// Field checks run while decoding; each message names its field.
mod de {
    use std::path::PathBuf;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    fn field<E: Error>(name: &str, message: impl std::fmt::Display) -> E {
        E::custom(format!("{name}: {message}"))
    }

    /// A list of strings, each parsed by `parse` in the flags' syntax.
    pub(super) fn each<'de, D: Deserializer<'de>, T, E: std::fmt::Display>(
        d: D,
        name: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Vec<T>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|text| parse(text).map_err(|error| field(name, error)))
            .collect()
    }

    pub(super) fn name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let name = Option::<String>::deserialize(d)?;
        if let Some(name) = &name {
            super::validate_name(name).map_err(|error| field("name", error))?;
        }
        Ok(name)
    }

    pub(super) fn workdir<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|dir| crate::flags::parse_workdir(&dir).map_err(|error| field("workdir", error)))
            .transpose()
    }

    pub(super) fn host_dir<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        let host = PathBuf::deserialize(d)?;
        if !host.is_absolute() {
            return Err(field(
                "mounts.host",
                format!("{} is not an absolute host path", host.display()),
            ));
        }
        Ok(host)
    }

    pub(super) fn guest_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let guest = String::deserialize(d)?;
        berth_runtime::spec::normalize_guest_path(&guest).ok_or_else(|| {
            field(
                "mounts.guest",
                format!("guest path {guest:?} must be absolute and must not contain '..'"),
            )
        })
    }

    pub(super) fn memory<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let bytes = Option::<u64>::deserialize(d)?;
        if bytes == Some(0) {
            return Err(field("limits.memory_bytes", "must be at least one byte"));
        }
        Ok(bytes)
    }

    pub(super) fn cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        let cpus = Option::<f64>::deserialize(d)?;
        if let Some(cpus) = cpus
            && !(cpus.is_finite() && cpus > 0.0)
        {
            return Err(field(
                "limits.cpus",
                format!("{cpus} is not a positive number of cores"),
            ));
        }
        Ok(cpus)
    }

    pub(super) fn max_concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let max = usize::deserialize(d)?;
        if max == 0 {
            return Err(field("http.max_concurrency", "must be at least 1"));
        }
        Ok(max)
    }

    pub(super) fn max_connections<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<u32>, D::Error> {
        let max = Option::<u32>::deserialize(d)?;
        if max == Some(0) {
            return Err(field("http.max_connections", "must be at least 1"));
        }
        Ok(max)
    }
}

/// `KEY=VALUE` strings, as docker and OCI image configs write environments.
mod env_text {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        env: &[(String, String)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(env.iter().map(|(key, value)| format!("{key}={value}")))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, String)>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|pair| {
                match pair.split_once('=') {
                    Some((key, value)) if !key.is_empty() && !pair.contains('\0') => {
                        Ok((key.to_owned(), value.to_owned()))
                    }
                    _ => Err(D::Error::custom(format!(
                        "env: invalid environment variable {pair:?}: expected KEY=VALUE with a non-empty KEY"
                    ))),
                }
            })
            .collect()
    }
}

/// Published ports in docker's `[HOSTIP:]HOSTPORT:CONTAINERPORT` form.
mod port_text {
    use berth_runtime::PortMapping;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ports: &[PortMapping], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            ports
                .iter()
                .map(|port| format!("{}:{}", port.host, port.container_port)),
        )
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<PortMapping>, D::Error> {
        super::de::each(d, "ports", crate::flags::parse_port_mapping)
    }
}

/// Outbound rules in the `HOST[:PORT]` form of `--allow-outbound`.
mod outbound_text {
    use berth_runtime::OutboundRule;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        rules: &[OutboundRule],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(rules.iter().map(|rule| {
            let host = if rule.host.contains(':') {
                format!("[{}]", rule.host)
            } else {
                rule.host.clone()
            };
            match rule.port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        }))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<OutboundRule>, D::Error> {
        super::de::each(d, "outbound", crate::flags::parse_outbound_rule)
    }
}

/// Durations as the flags write them (`30s`, `1500ms`), exactly: whole
/// seconds, else whole milliseconds, else nanoseconds.
mod duration_text {
    use std::time::Duration;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    fn format(duration: &Duration) -> String {
        if duration.subsec_nanos() == 0 {
            format!("{}s", duration.as_secs())
        } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", duration.as_millis())
        } else {
            format!("{}ns", duration.as_nanos())
        }
    }

    fn parse(text: &str) -> Result<Duration, String> {
        // The forms written above parse exactly; anything else as a flag.
        let exact = |suffix: &str| {
            text.strip_suffix(suffix)
                .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|digits| digits.parse::<u64>().ok())
        };
        let duration = if let Some(nanos) = exact("ns") {
            Some(Duration::from_nanos(nanos))
        } else if let Some(millis) = exact("ms") {
            Some(Duration::from_millis(millis))
        } else {
            exact("s").map(Duration::from_secs)
        };
        match duration {
            Some(duration) if !duration.is_zero() => Ok(duration),
            _ => berth_runtime::quantity::parse_duration(text).map_err(|error| error.to_string()),
        }
    }

    pub(super) fn serialize<S: Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(duration))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        parse(&String::deserialize(d)?).map_err(D::Error::custom)
    }

    pub(super) mod option {
        use super::*;

        // serde's `with` hands the field by reference.
        #[allow(clippy::ref_option)]
        pub(in crate::spec) fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => s.serialize_str(&format(duration)),
                None => s.serialize_none(),
            }
        }

        pub(in crate::spec) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| {
                    parse(&text)
                        .map_err(|error| D::Error::custom(format!("limits.timeout: {error}")))
                })
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_spec() -> ContainerSpec {
        ContainerSpec {
            name: Some("web".into()),
            target: Target::Image {
                reference: "registry.example/app:v1".into(),
                pull: PullPolicy::Never,
            },
            entrypoint: Some("/app/main.wasm".into()),
            args: vec!["--port".into(), "8080".into()],
            env: vec![("A".into(), "1=2".into()), ("EMPTY".into(), String::new())],
            mounts: vec![MountSpec {
                host: PathBuf::from("/srv/data"),
                guest: "/data".into(),
                read_only: true,
            }],
            workdir: Some("/app".into()),
            ports: vec![
                flags::parse_port_mapping("127.0.0.1:8080:80").expect("port"),
                flags::parse_port_mapping("[::1]:9000:7000").expect("port"),
            ],
            outbound: vec![
                flags::parse_outbound_rule("api.example.com:443").expect("rule"),
                flags::parse_outbound_rule("[::1]").expect("rule"),
            ],
            limits: LimitsSpec {
                memory_bytes: Some(64 << 20),
                cpus: Some(0.25),
                timeout: Some(Duration::from_millis(1500)),
            },
            http: HttpSettings {
                request_timeout: Duration::from_nanos(1_000_000_007),
                max_connections: Some(7),
                ..HttpSettings::default()
            },
            restart: RestartPolicy::OnFailure { max: Some(2) },
            interactive: true,
            auto_remove: false,
        }
    }

    #[test]
    fn specs_round_trip_through_json() {
        let spec = full_spec();
        let json = spec.to_json();
        assert_eq!(ContainerSpec::from_json(&json).expect("decode"), spec);
        let value: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(value["env"][0], "A=1=2");
        assert_eq!(value["ports"][1], "[::1]:9000:7000");
        assert_eq!(value["outbound"][1], "[::1]");
        assert_eq!(value["limits"]["timeout"], "1500ms");
        assert_eq!(value["restart"], "on-failure:2");
        let file = ContainerSpec::new(Target::File {
            path: PathBuf::from("/apps/x.wasm"),
            export: Some("add".into()),
        });
        assert_eq!(
            ContainerSpec::from_json(&file.to_json()).expect("decode"),
            file
        );
    }

    #[test]
    fn defaults_fill_missing_fields() {
        let spec = ContainerSpec::from_json(br#"{"target": {"image": {"reference": "app"}}}"#)
            .expect("decode");
        assert_eq!(
            spec,
            ContainerSpec::new(Target::Image {
                reference: "app".into(),
                pull: PullPolicy::Missing
            })
        );
        assert_eq!(spec.http.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn invalid_values_are_refused_naming_the_field() {
        let target = r#""target": {"file": {"path": "/a.wasm"}}"#;
        for (field, json) in [
            (
                "unknown field `bogus`",
                format!(r#"{{{target}, "bogus": 1}}"#),
            ),
            ("env", format!(r#"{{{target}, "env": ["=x"]}}"#)),
            ("ports", format!(r#"{{{target}, "ports": ["80"]}}"#)),
            ("outbound", format!(r#"{{{target}, "outbound": ["a b"]}}"#)),
            ("name", format!(r#"{{{target}, "name": "../x"}}"#)),
            ("workdir", format!(r#"{{{target}, "workdir": "rel"}}"#)),
            (
                "mounts.guest",
                format!(r#"{{{target}, "mounts": [{{"host": "/x", "guest": "/a/../b"}}]}}"#),
            ),
            (
                "mounts.host",
                format!(r#"{{{target}, "mounts": [{{"host": "x", "guest": "/b"}}]}}"#),
            ),
            (
                "limits.cpus",
                format!(r#"{{{target}, "limits": {{"cpus": -1}}}}"#),
            ),
            (
                "limits.timeout",
                format!(r#"{{{target}, "limits": {{"timeout": "30"}}}}"#),
            ),
            (
                "http.max_concurrency",
                format!(r#"{{{target}, "http": {{"max_concurrency": 0}}}}"#),
            ),
            (
                "invalid restart policy",
                format!(r#"{{{target}, "restart": "sometimes"}}"#),
            ),
            (
                "invalid pull policy \"daily\"",
                r#"{"target": {"image": {"reference": "a", "pull": "daily"}}}"#.to_owned(),
            ),
            (
                "unknown variant `directory`",
                r#"{"target": {"directory": {}}}"#.to_owned(),
            ),
        ] {
            let error = ContainerSpec::from_json(json.as_bytes()).expect_err(&json);
            let message = error.to_string();
            assert!(
                message.starts_with("invalid container spec: ") && message.contains(field),
                "{field}: {message}"
            );
        }
    }

    #[test]
    fn restart_policies_parse_and_decide() {
        assert_eq!(RestartPolicy::parse("no"), Ok(RestartPolicy::No));
        assert_eq!(RestartPolicy::parse("always"), Ok(RestartPolicy::Always));
        assert_eq!(
            RestartPolicy::parse("on-failure:2"),
            Ok(RestartPolicy::OnFailure { max: Some(2) })
        );
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        assert_eq!(
            RestartPolicy::parse("sometimes").map_err(|error| error.to_string()),
            Err(
                "invalid restart policy \"sometimes\": expected no, on-failure[:N] or always"
                    .to_owned()
            )
        );
        let policy = RestartPolicy::OnFailure { max: Some(2) };
        assert!(policy.should_restart(3, 0));
        assert!(policy.should_restart(3, 1));
        assert!(!policy.should_restart(3, 2));
        assert!(!policy.should_restart(0, 0));
        assert!(RestartPolicy::Always.should_restart(0, 100));
        assert!(!RestartPolicy::No.should_restart(1, 0));
        assert_eq!(policy.to_string(), "on-failure:2");
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(2), Duration::from_millis(200));
        assert_eq!(restart_backoff(4), Duration::from_millis(800));
        assert_eq!(restart_backoff(8), Duration::from_secs(10));
        assert_eq!(restart_backoff(1000), Duration::from_secs(10));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("web_1.a-b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-web").is_err());
        assert!(validate_name("../x").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
