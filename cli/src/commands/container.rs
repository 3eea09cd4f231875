//! Detached containers: `berth run -d`, `ps`, `logs`, `stop`, `start`,
//! `restart` and `rm`. These only read and write the records in
//! [`crate::containers`] and ask [`crate::supervisor`] to start or stop a
//! container, so another supervisor (a daemon) could take over later.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::EXIT_BERTH_ERROR;
use crate::commands::run::RunArgs;
use crate::containers::{
    Container, ContainerConfig, ContainerState, FORMAT_VERSION, LogEntry, LogFollower, LogStream,
    RestartPolicy, Status, Store, elapsed_since, human_duration, now_rfc3339, short_id,
    validate_name,
};
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
    /// Name, ID or unique ID prefix.
    #[arg(value_name = "CONTAINER")]
    container: String,
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
    let raw: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let Some(run_at) = raw.iter().skip(1).position(|arg| arg == "run") else {
        bail!("cannot find the run arguments on the command line");
    };
    let argv = container_argv(&raw[run_at + 2..]);
    let cwd = std::env::current_dir().context("cannot read the current directory")?;

    let store = Store::open()?;
    let id = store.new_id();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("berth-{}", short_id(&id)));
    let config = ContainerConfig {
        version: FORMAT_VERSION,
        id: id.clone(),
        name,
        created: now_rfc3339(),
        argv,
        cwd,
        image: args.file().to_owned(),
        command: args.args().to_vec(),
        image_argv: crate::commands::run::local_image_argv(&args),
        ports: args.ports(),
        restart: args.restart,
        auto_remove: args.auto_remove,
        interactive: args.interactive,
    };
    let container = store.create(&config)?;
    if let Err(error) = supervisor::start(&store, &container, START_WAIT) {
        if config.auto_remove {
            let _ = store.remove(&container);
        }
        return Err(error);
    }
    println!("{id}");
    Ok(0)
}

/// Flags that only shape the container record, not the run itself.
const RECORD_ONLY: [&str; 4] = ["detach", "name", "auto_remove", "restart"];

/// The `berth run` arguments (after `run`) a container's supervisor
/// repeats: without `-d`, `--name`, `--rm` and `--restart`, options in
/// their `--long=VALUE` form, and `-e KEY` resolved from this environment
/// so that a later `berth start` runs with the same values.
pub(crate) fn container_argv(argv: &[String]) -> Vec<String> {
    let command = RunArgs::augment_args(clap::Command::new("run"));
    let options: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|arg| !arg.is_positional())
        .collect();
    let by_long = |name: &str| {
        options
            .iter()
            .copied()
            .find(|arg| arg.get_long() == Some(name))
    };
    let by_short = |c: char| {
        options
            .iter()
            .copied()
            .find(|arg| arg.get_short() == Some(c))
    };
    let mut out = Vec::new();
    let mut next = 0;
    while next < argv.len() {
        let token = &argv[next];
        next += 1;
        if token == "--" || token == "-" || !token.starts_with('-') {
            // FILE|IMAGE: it and everything after it belong to the program.
            out.push(token.clone());
            out.extend_from_slice(&argv[next..]);
            break;
        }
        if let Some(long) = token.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (long, None),
            };
            let Some(arg) = by_long(name) else {
                out.push(token.clone());
                continue;
            };
            let value = if arg.get_action().takes_values() && inline.is_none() {
                next += 1;
                argv.get(next - 1).cloned()
            } else {
                inline
            };
            push_option(&mut out, arg, value);
            continue;
        }
        let mut rest = &token[1..];
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            let Some(arg) = by_short(c) else {
                out.push(format!("-{c}"));
                continue;
            };
            if arg.get_action().takes_values() {
                let value = if rest.is_empty() {
                    next += 1;
                    argv.get(next - 1).cloned()
                } else {
                    Some(rest.strip_prefix('=').unwrap_or(rest).to_owned())
                };
                push_option(&mut out, arg, value);
                break;
            }
            push_option(&mut out, arg, None);
        }
    }
    out
}

fn push_option(out: &mut Vec<String>, arg: &clap::Arg, value: Option<String>) {
    let id = arg.get_id().as_str();
    if RECORD_ONLY.contains(&id) {
        return;
    }
    let flag = match (arg.get_long(), arg.get_short()) {
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => return,
    };
    match value {
        None => out.push(flag),
        Some(mut value) => {
            if id == "env"
                && !value.contains('=')
                && let Ok(host) = std::env::var(&value)
            {
                value = format!("{value}={host}");
            }
            if flag.starts_with("--") {
                out.push(format!("{flag}={value}"));
            } else {
                out.push(flag);
                out.push(value);
            }
        }
    }
}

/// `berth ps`.
pub fn ps_command(args: PsArgs) -> Result<u8> {
    let store = Store::open()?;
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
        let state = observed(&container.dir, &container.state);
        if !args.all && !is_active(&state) {
            continue;
        }
        if args.quiet {
            if writeln!(out, "{}", container.short_id()).is_err() {
                return Ok(0);
            }
            continue;
        }
        let config = &container.config;
        rows.push([
            container.short_id().to_owned(),
            config.image.clone(),
            command_column(&container),
            format!(
                "{} ago",
                human_duration(elapsed_since(Some(&config.created)))
            ),
            status_column(&state),
            config.ports.join(", "),
            config.name.clone(),
        ]);
    }
    if !args.quiet {
        let _ = out.write_all(table(&rows).as_bytes());
    }
    Ok(0)
}

/// The program and its arguments, quoted and shortened as docker does.
fn command_column(container: &Container) -> String {
    let command = match &container.config.image_argv {
        Some(argv) => argv.join(" "),
        None => {
            let image = &container.config.image;
            let program = std::path::Path::new(image)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| image.clone());
            let mut words = vec![program];
            words.extend(container.config.command.iter().cloned());
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

/// Left-aligned columns three spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if column + 1 < N {
                let pad = widths[column] - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `berth logs`.
pub fn logs_command(args: LogsArgs) -> Result<u8> {
    let store = Store::open()?;
    let container = store.resolve(&args.container)?;
    let (mut follower, entries) = LogFollower::open(&container.dir)
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
        let done = match store.read_state(&container.config.id)? {
            Some(state) => !is_active(&observed(&container.dir, &state)),
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
fn each(references: &[String], mut action: impl FnMut(&Store, &str) -> Result<()>) -> Result<u8> {
    let store = Store::open()?;
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

fn start_one(store: &Store, container: &Container) -> Result<()> {
    if is_active(&observed(&container.dir, &container.state)) {
        return Ok(());
    }
    supervisor::start(store, container, START_WAIT)
}

/// `berth restart`.
pub fn restart_command(args: StopArgs) -> Result<u8> {
    let timeout = Duration::from_secs(args.time);
    each(&args.containers, |store, reference| {
        let container = store.resolve(reference)?;
        supervisor::stop(store, &container, timeout)?;
        let container = store
            .load(&container.config.id)
            .with_context(|| format!("no such container: {reference}"))?;
        start_one(store, &container)
    })
}

/// `berth rm`.
pub fn rm_command(args: RmArgs) -> Result<u8> {
    each(&args.containers, |store, reference| {
        let container = store.resolve(reference)?;
        if is_active(&observed(&container.dir, &container.state)) {
            if !args.force {
                bail!(
                    "cannot remove container {reference:?}: container is running: stop the container before removing or force remove (rm -f)"
                );
            }
            supervisor::stop(store, &container, Duration::ZERO)?;
        }
        store.remove(&container)
    })
}

/// `berth __supervise ID` (hidden): the per-container supervisor.
pub fn supervise_command(id: &str) -> Result<u8> {
    supervisor::supervise(id)
}

/// `berth __run ID` (hidden): runs a container's program in the foreground
/// for its supervisor, with the run request read from the container's
/// record rather than from the command line (where every user could read
/// its `-e` values).
pub fn run_recorded_command(id: &str) -> Result<u8> {
    let store = Store::open()?;
    let container = store.load(id)?;
    // Held until this process exits (the foreground run ends with exit):
    // it lets `stop` tell this process from one that reused its pid.
    let _lock = supervisor::hold(&container.dir.join(supervisor::PROGRAM_LOCK))
        .context("the container's program is already running")?;
    crate::commands::run::run_recorded(
        &container.config.argv,
        container.dir.join(supervisor::STARTED_FILE),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| (*word).to_owned()).collect()
    }

    #[test]
    fn container_argv_drops_record_flags_and_keeps_the_program_args() {
        let argv = strings(&[
            "-d",
            "--name",
            "web",
            "-p",
            "127.0.0.1:8080:8080",
            "--rm",
            "-di",
            "--restart=always",
            "-m64Mi",
            "-e",
            "A=1",
            "--timeout",
            "5s",
            "app.wasm",
            "-d",
            "--name",
            "x",
        ]);
        assert_eq!(
            container_argv(&argv),
            strings(&[
                "--publish=127.0.0.1:8080:8080",
                "--interactive",
                "--memory=64Mi",
                "--env=A=1",
                "--timeout=5s",
                "app.wasm",
                "-d",
                "--name",
                "x",
            ])
        );
    }

    #[test]
    fn container_argv_resolves_passed_through_variables() {
        let path = std::env::var("PATH").expect("PATH is set");
        let argv = strings(&["-e", "PATH", "--env", "BERTH_SURELY_UNSET_VAR", "a.wasm"]);
        assert_eq!(
            container_argv(&argv),
            vec![
                format!("--env=PATH={path}"),
                "--env=BERTH_SURELY_UNSET_VAR".to_owned(),
                "a.wasm".to_owned(),
            ]
        );
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [
            ["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            ["aaaa".to_owned(), "b".to_owned(), String::new()],
        ];
        assert_eq!(table(&rows), "A      BB   C\naaaa   b\n");
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
