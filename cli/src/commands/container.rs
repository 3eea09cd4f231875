//! Detached containers: `berth run -d`, `ps`, `logs`, `stop`, `start`,
//! `restart` and `rm`. These only read and write the records in
//! [`crate::containers`] and ask [`crate::supervisor`] to start or stop a
//! container, so another supervisor (a daemon) could take over later.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use berth_container::logs::{LogEntry, LogFollower, LogStream};
use berth_container::records::{ContainerRecord, FileRecords, RecordStore};
use berth_container::spec::validate_name;
use berth_container::time::parse_rfc3339;
use berth_container::{Container, ContainerState, RestartPolicy, Status};

use crate::EXIT_BERTH_ERROR;
use crate::commands::run::{RunArgs, host_env};
use crate::supervisor::{self, START_WAIT, is_active, observed};

// Flags of `berth ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default: only running ones).
    #[arg(short = 'a', long = "all")]
    all: bool,
    /// Only print container IDs.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
}

// Flags of `berth logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Only the last N lines ("all" for everything).
    #[arg(short = 'n', long = "tail", value_name = "N", value_parser = parse_tail)]
    tail: Option<usize>,
    /// Prefix each line with its time (RFC 3339, nanoseconds).
    #[arg(short = 't', long = "timestamps")]
    timestamps: bool,
    /// Name, ID or unique ID prefix; or a pod of the daemon (POD, pod/POD).
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// The pod's container, when the pod has several (daemon pods).
    #[arg(short = 'c', long = "container", value_name = "NAME")]
    pod_container: Option<String>,
    /// The previous run's log of a restarted container (daemon pods).
    #[arg(long)]
    previous: bool,
    /// The pod's namespace (daemon pods; default: default).
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    #[command(flatten)]
    connection: super::client::Connection,
}

impl LogsArgs {
    fn pod_logs(&self) -> super::kube::PodLogs {
        super::kube::PodLogs {
            pod: self.container.clone(),
            namespace: self.namespace.clone(),
            container: self.pod_container.clone(),
            follow: self.follow,
            previous: self.previous,
            tail: self.tail,
        }
    }

    /// Whether the flags only make sense for a daemon's pod.
    fn names_a_pod(&self) -> bool {
        self.pod_container.is_some()
            || self.previous
            || self.namespace.is_some()
            || self.container.starts_with("pod/")
            || self.container.starts_with("pods/")
    }
}

// Flags of `berth stop` and `berth restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for the program to stop before killing it.
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    time: u64,
    /// Names, IDs or unique ID prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

// Flags of `berth start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Names, IDs or unique ID prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

// Flags of `berth rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Stop (kill) a running container first.
    #[arg(short = 'f', long = "force")]
    force: bool,
    /// Names, IDs or unique ID prefixes.
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

fn parse_tail(text: &str) -> Result<usize, String> {
    if text == "all" {
        return Ok(usize::MAX);
    }
    text.parse()
        .map_err(|_| format!("invalid --tail {text:?}: expected a number of lines or \"all\""))
}

/// `berth run -d`: records the container, starts its supervisor, waits
/// until the program started and prints the container's ID.
pub fn run_detached(args: RunArgs) -> Result<u8> {
    if !cfg!(unix) {
        bail!("detached containers (-d) are not supported on this platform yet");
    }
    if args.auto_remove && args.restart != RestartPolicy::No {
        bail!("conflicting options: --restart and --rm (a removed container cannot restart)");
    }
    if let Some(name) = &args.name {
        validate_name(name)?;
    }
    // Resolved here, once: `-e KEY` takes this environment's value, and
    // relative paths this directory, so that a later `berth start` from
    // anywhere runs the same container.
    let spec = args.to_spec(host_env, true)?;
    let store = crate::home::open_records()?;
    let mut record = ContainerRecord::new(store.new_id(), spec);
    record.image_argv = crate::commands::run::local_image_argv(&record.spec);
    let container = store.create(&record)?;
    if let Err(error) = supervisor::start(&store, &container, START_WAIT) {
        if record.spec.auto_remove {
            let _ = store.remove(&container);
        }
        return Err(error);
    }
    println!("{}", record.id);
    Ok(0)
}

/// `berth ps`.
pub fn ps_command(args: PsArgs) -> Result<u8> {
    let store = crate::home::open_records()?;
    let mut rows = vec![
        [
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "CREATED",
            "STATUS",
            "PORTS",
            "NAMES",
        ]
        .map(String::from),
    ];
    let mut out = io::stdout().lock();
    for container in store.list()? {
        let state = observed(&store.dir(container.id()), &container.state);
        if !args.all && !is_active(&state) {
            continue;
        }
        if args.quiet {
            if writeln!(out, "{}", container.short_id()).is_err() {
                return Ok(0);
            }
            continue;
        }
        let record = &container.record;
        rows.push([
            container.short_id().to_owned(),
            record.spec.target_name(),
            command_column(&container),
            format!(
                "{} ago",
                human_duration(elapsed_since(Some(&record.created)))
            ),
            status_column(&state),
            record.spec.port_descriptions().join(", "),
            record.name.clone(),
        ]);
    }
    if !args.quiet {
        let _ = out.write_all(crate::commands::table(&rows).as_bytes());
    }
    Ok(0)
}

/// The program and its arguments, quoted and shortened as docker does.
fn command_column(container: &Container) -> String {
    let record = &container.record;
    let command = match &record.image_argv {
        Some(argv) => argv.join(" "),
        None => {
            let image = record.spec.target_name();
            let program = std::path::Path::new(&image)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| image.clone());
            let mut words = vec![program];
            words.extend(record.spec.args.iter().cloned());
            words.join(" ")
        }
    };
    let shortened = if command.chars().count() > 20 {
        let mut short: String = command.chars().take(19).collect();
        short.push('…');
        short
    } else {
        command
    };
    format!("\"{shortened}\"")
}

/// `Up 5 seconds`, `Exited (0) 3 seconds ago`, `Restarting (1) ...`.
fn status_column(state: &ContainerState) -> String {
    let code = state.exit_code.unwrap_or(0);
    let since_finished = || human_duration(elapsed_since(state.finished_at.as_deref()));
    match state.status {
        Status::Created => "Created".to_owned(),
        Status::Running => format!(
            "Up {}",
            human_duration(elapsed_since(state.started_at.as_deref()))
        ),
        Status::Restarting => format!("Restarting ({code}) {} ago", since_finished()),
        Status::Exited => format!("Exited ({code}) {} ago", since_finished()),
    }
}

/// The container `reference` names (ID, short ID or name) as `berth
/// inspect` shows it, in docker's shape (`State.OOMKilled`,
/// `State.ExitCode`, …, plus berth's `State.ExitReason` and the spec as
/// `Config`); `None` when no container has that name.
pub(crate) fn inspect_container(reference: &str) -> Result<Option<serde_json::Value>> {
    let store = crate::home::open_records()?;
    let Ok(container) = store.resolve(reference) else {
        return Ok(None);
    };
    let state = observed(&store.dir(container.id()), &container.state);
    let record = &container.record;
    let status = match state.status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Restarting => "restarting",
        Status::Exited => "exited",
    };
    let (restart_name, retries) = match record.spec.restart {
        RestartPolicy::No => ("no", 0),
        RestartPolicy::Always => ("always", 0),
        RestartPolicy::OnFailure { max } => ("on-failure", max.unwrap_or(0)),
    };
    Ok(Some(serde_json::json!({
        "Id": record.id,
        "Name": format!("/{}", record.name),
        "Created": record.created,
        "Image": record.spec.target_name(),
        "Args": record.spec.args,
        "State": {
            "Status": status,
            "Running": state.status == Status::Running,
            "Restarting": state.status == Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": false,
            "Pid": state.pid.unwrap_or(0),
            "ExitCode": state.exit_code.unwrap_or(0),
            "ExitReason": state.exit_reason,
            "Error": state.error.clone().unwrap_or_default(),
            "StartedAt": state.started_at,
            "FinishedAt": state.finished_at,
        },
        "RestartCount": state.restart_count,
        "HostConfig": {
            "RestartPolicy": { "Name": restart_name, "MaximumRetryCount": retries },
            "AutoRemove": record.spec.auto_remove,
            "Memory": record.spec.limits.memory_bytes.unwrap_or(0),
            "NanoCpus": record.spec.limits.cpus.map_or(0, |cpus| (cpus * 1e9) as u64),
            "PortBindings": record.spec.port_descriptions(),
        },
        "Config": serde_json::to_value(&record.spec)?,
    })))
}

/// `berth logs`.
pub fn logs_command(args: LogsArgs) -> Result<u8> {
    if args.names_a_pod() {
        return super::kube::pod_logs(args.pod_logs(), &args.connection);
    }
    let store = crate::home::open_records()?;
    let container = match store.resolve(&args.container) {
        Ok(container) => container,
        // No such container: it may be one of the daemon's pods.
        Err(not_a_container) => {
            return super::kube::pod_logs(args.pod_logs(), &args.connection).map_err(|error| {
                if error.downcast_ref::<super::client::ServerError>().is_some() {
                    error
                } else {
                    anyhow::Error::from(not_a_container)
                }
            });
        }
    };
    let dir = store.dir(container.id());
    let (mut follower, entries) = LogFollower::open(&dir)
        .with_context(|| format!("cannot read the log of {}", args.container))?;
    let skip = entries
        .len()
        .saturating_sub(args.tail.unwrap_or(usize::MAX));
    if print_entries(&entries[skip..], args.timestamps).is_err() {
        return Ok(0);
    }
    if !args.follow {
        return Ok(0);
    }
    loop {
        // Look at the state first: the supervisor writes every line before
        // it records the exit, so nothing is missed.
        let done = match store.read_state(container.id())? {
            Some(state) => !is_active(&observed(&dir, &state)),
            None => true,
        };
        let entries = follower
            .poll()
            .with_context(|| format!("cannot read the log of {}", args.container))?;
        if print_entries(&entries, args.timestamps).is_err() || done {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints stdout lines to stdout and stderr lines to stderr.
fn print_entries(entries: &[LogEntry], timestamps: bool) -> io::Result<()> {
    let mut out = io::stdout().lock();
    let mut err = io::stderr().lock();
    for entry in entries {
        let sink: &mut dyn Write = match entry.stream {
            LogStream::Stdout => &mut out,
            LogStream::Stderr => &mut err,
        };
        if timestamps {
            write!(sink, "{} ", entry.time)?;
        }
        writeln!(sink, "{}", entry.line)?;
    }
    out.flush()?;
    err.flush()
}

/// Runs `action` for each reference, printing the reference on success
/// and `berth: ERROR` otherwise; exit 125 if any failed.
fn each(
    references: &[String],
    mut action: impl FnMut(&FileRecords, &str) -> Result<()>,
) -> Result<u8> {
    let store = crate::home::open_records()?;
    let mut failed = false;
    for reference in references {
        match action(&store, reference) {
            Ok(()) => println!("{reference}"),
            Err(error) => {
                eprintln!("berth: {error:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { EXIT_BERTH_ERROR } else { 0 })
}

/// `berth stop`.
pub fn stop_command(args: StopArgs) -> Result<u8> {
    let timeout = Duration::from_secs(args.time);
    each(&args.containers, |store, reference| {
        let container = store.resolve(reference)?;
        supervisor::stop(store, &container, timeout)
    })
}

/// `berth start`.
pub fn start_command(args: StartArgs) -> Result<u8> {
    each(&args.containers, |store, reference| {
        start_one(store, &store.resolve(reference)?)
    })
}

fn start_one(store: &FileRecords, container: &Container) -> Result<()> {
    if is_active(&observed(&store.dir(container.id()), &container.state)) {
        return Ok(());
    }
    container.record.runnable_spec()?;
    supervisor::start(store, container, START_WAIT)
}

/// `berth restart`.
pub fn restart_command(args: StopArgs) -> Result<u8> {
    let timeout = Duration::from_secs(args.time);
    each(&args.containers, |store, reference| {
        let container = store.resolve(reference)?;
        supervisor::stop(store, &container, timeout)?;
        let container = store
            .load(container.id())
            .with_context(|| format!("no such container: {reference}"))?;
        start_one(store, &container)
    })
}

/// `berth rm`.
pub fn rm_command(args: RmArgs) -> Result<u8> {
    each(&args.containers, |store, reference| {
        let container = store.resolve(reference)?;
        if is_active(&observed(&store.dir(container.id()), &container.state)) {
            if !args.force {
                bail!(
                    "cannot remove container {reference:?}: container is running: stop the container before removing or force remove (rm -f)"
                );
            }
            supervisor::stop(store, &container, Duration::ZERO)?;
        }
        Ok(store.remove(&container)?)
    })
}

/// `berth __supervise ID` (hidden): the per-container supervisor.
pub fn supervise_command(id: &str) -> Result<u8> {
    supervisor::supervise(id)
}

/// A duration as docker words it: `Less than a second`, `5 seconds`,
/// `About a minute`, `3 hours`, `2 days`...
fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    if seconds < 1 {
        "Less than a second".to_owned()
    } else if seconds == 1 {
        "1 second".to_owned()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// How long ago an RFC 3339 time was (zero if unknown or in the future).
fn elapsed_since(time: Option<&str>) -> Duration {
    time.and_then(parse_rfc3339)
        .and_then(|time| std::time::SystemTime::now().duration_since(time).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use berth_container::time::now_rfc3339;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(5)), "5 seconds");
        assert_eq!(human_duration(Duration::from_secs(90)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600)), "3 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86_400)), "3 days");
    }

    #[test]
    fn status_reads_like_docker() {
        let exited = ContainerState {
            status: Status::Exited,
            exit_code: Some(3),
            finished_at: Some(now_rfc3339()),
            ..ContainerState::default()
        };
        assert_eq!(status_column(&exited), "Exited (3) Less than a second ago");
        let running = ContainerState {
            status: Status::Running,
            started_at: Some(now_rfc3339()),
            ..ContainerState::default()
        };
        assert_eq!(status_column(&running), "Up Less than a second");
    }
}
