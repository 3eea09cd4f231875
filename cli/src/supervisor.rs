//! Supervising detached containers: one background process per container
//! (`berth __supervise ID`, in its own session) runs the program in-process
//! as a sandbox of its own runtime, under `berth_container::Supervisor`
//! (restart policy and back-off over sandbox handles); it writes the
//! program's output to the container's log with timestamps and records the
//! state, with the typed reason of every exit (OOMKilled, timed out,
//! trapped, killed).
//!
//! The commands only talk to it through the records and signals: SIGTERM
//! asks it to stop the program gracefully (a command ends at once with 143,
//! a server drains), SIGINT to stop it at once (137). Unix only for now;
//! elsewhere starting a container is refused.
//!
//! The container's spec and its `-e` values never travel on a command line,
//! which every user can read: the supervisor reads them from the record.
//!
//! A recorded pid alone does not identify a process: once it exits, the
//! pid can be reused by an unrelated one. The supervisor holds an OS file
//! lock ([`SUPERVISOR_LOCK`] in the container's directory) for its whole
//! life; the OS drops it when it dies. A recorded pid is believed, and
//! signalled, only while its lock is held, which a reused pid cannot do.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use berth_container::records::FileRecords;
use berth_container::{Container, ContainerState, Status};

/// The hidden subcommand that runs a supervisor.
#[cfg_attr(not(unix), allow(dead_code))]
pub const SUPERVISE_COMMAND: &str = "__supervise";

/// Held by a container's supervisor while it lives.
pub const SUPERVISOR_LOCK: &str = "supervisor.lock";

/// How long `run -d` and `start` wait for the program to start.
pub const START_WAIT: Duration = Duration::from_secs(120);

/// How long taking a lock waits for a checker that holds it for an
/// instant ([`is_held`] takes it shared to test it).
#[cfg_attr(not(unix), allow(dead_code))]
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Whether a live process holds the lock file `path`.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// Opens (creating it owner-only) the lock file `path`, unlocked.
pub fn open_lock_file(path: &Path) -> Result<File> {
    berth_fs::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Takes the lock file `path` (creating it owner-only) for as long as the
/// returned file stays open; fails if another process holds it.
#[cfg_attr(not(unix), allow(dead_code))]
pub fn hold(path: &Path) -> Result<File> {
    let file = open_lock_file(path)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => {
                bail!("{} is held by another process", path.display())
            }
            Err(TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
}

/// The state with a vanished supervisor accounted for: a container whose
/// supervisor died without recording the end is shown as exited. `dir` is
/// the container's directory.
pub fn observed(dir: &Path, state: &ContainerState) -> ContainerState {
    let mut state = state.clone();
    if state.pid.is_some() && !is_held(&dir.join(SUPERVISOR_LOCK)) {
        if state.status != Status::Restarting {
            state.exit_code = Some(255);
        }
        state.status = Status::Exited;
        state.pid = None;
    }
    state
}

/// Whether a supervisor is looking after the container (starting,
/// running or waiting to restart it), given an [`observed`] state.
pub fn is_active(state: &ContainerState) -> bool {
    state.pid.is_some() && state.status != Status::Exited
}

#[cfg(unix)]
pub use unix::{start, stop, supervise};

#[cfg(not(unix))]
pub use other::{start, stop, supervise};

#[cfg(not(unix))]
mod other {
    use super::*;

    const UNSUPPORTED: &str = "detached containers are not supported on this platform yet";

    /// Refused on this platform.
    pub fn start(_store: &FileRecords, _container: &Container, _wait: Duration) -> Result<()> {
        anyhow::bail!("{UNSUPPORTED}")
    }

    /// Nothing runs detached on this platform, so nothing to stop.
    pub fn stop(_store: &FileRecords, _container: &Container, _timeout: Duration) -> Result<()> {
        Ok(())
    }

    /// Refused on this platform.
    pub fn supervise(_id: &str) -> Result<u8> {
        anyhow::bail!("{UNSUPPORTED}")
    }
}

#[cfg(unix)]
mod unix {
    use std::process::Stdio;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    use anyhow::anyhow;
    use berth_container::logs::{
        LOG_MAX_BYTES, LogPumps, LogStream, LogWriter, open_append, write_lines,
    };
    use berth_container::records::RecordStore;
    use berth_container::time::now_rfc3339;
    use berth_container::{
        Backoff, Ended, Event, ExitReason, LaunchSettings, Stdio as LaunchStdio, Supervisor, launch,
    };
    use berth_runtime::limits::CpuClock;
    use berth_runtime::{KillMode, Runtime, RuntimeConfig, Stdin};
    use tokio::sync::watch;

    use super::*;

    fn send_signal(pid: u32, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(pid)
            && pid > 0
        {
            // SAFETY: kill(2) has no memory effects in this process.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Signals the process recorded as `pid` if it still holds `lock`, so
    /// that a reused pid is never signalled; whether it was signalled.
    fn signal_holder(lock: &Path, pid: Option<u32>, signal: libc::c_int) -> bool {
        match pid {
            Some(pid) if is_held(lock) => {
                send_signal(pid, signal);
                true
            }
            _ => false,
        }
    }

    /// Waits up to `limit` for the holder of `lock` to end; whether it did.
    fn wait_released(lock: &Path, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if !is_held(lock) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the container's supervisor and waits (at most `wait`) until
    /// it reports that the program started, or why it could not.
    pub fn start(store: &FileRecords, container: &Container, wait: Duration) -> Result<()> {
        let id = container.id();
        store.write_state(id, &ContainerState::default())?;
        let mut supervisor = spawn_supervisor(store, id)?;
        let deadline = Instant::now() + wait;
        loop {
            let ended = supervisor
                .try_wait()
                .context("cannot wait for the supervisor")?;
            let Some(state) = store.read_state(id)? else {
                // It ran, exited and was removed (--rm).
                return Ok(());
            };
            match (state.status, state.error) {
                (Status::Created, Some(error)) => {
                    let _ = wait_child(&mut supervisor, Duration::from_secs(5));
                    return Err(anyhow!(error));
                }
                (Status::Created, None) => {}
                _ => return Ok(()),
            }
            if let Some(status) = ended {
                bail!(
                    "the container's supervisor ended ({status}) before the program started; see {}",
                    store.dir(container.id()).join("supervisor.log").display()
                );
            }
            if Instant::now() >= deadline {
                let _ = stop(store, container, Duration::from_secs(1));
                bail!(
                    "the container did not start within {} s; see `berth logs {}`",
                    wait.as_secs(),
                    container.short_id()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_child(child: &mut std::process::Child, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Re-executes berth as the container's supervisor in a new session,
    /// detached from the terminal. Only the ID is on its command line.
    fn spawn_supervisor(store: &FileRecords, id: &str) -> Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("cannot find the berth executable")?;
        let home = crate::home::berth_home()?;
        let home = std::path::absolute(&home).unwrap_or(home);
        let log_path = store.dir(id).join("supervisor.log");
        let log = open_append(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut command = std::process::Command::new(exe);
        command
            .arg(SUPERVISE_COMMAND)
            .arg(id)
            .env("BERTH_HOME", home)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: setsid(2) is async-signal-safe and touches no memory.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
            .spawn()
            .context("cannot start the container's supervisor")
    }

    /// Stops a container: SIGTERM to its supervisor, which stops the
    /// program gracefully; after `timeout`, SIGINT, which stops it at once
    /// (exit 137); a supervisor that does not end then is killed.
    pub fn stop(store: &FileRecords, container: &Container, timeout: Duration) -> Result<()> {
        let id = container.id();
        let Some(state) = store.read_state(id)? else {
            return Ok(());
        };
        let supervisor_lock = store.dir(container.id()).join(SUPERVISOR_LOCK);
        if signal_holder(&supervisor_lock, state.pid, libc::SIGTERM)
            && !wait_released(&supervisor_lock, timeout)
            && signal_holder(&supervisor_lock, state.pid, libc::SIGINT)
            && !wait_released(&supervisor_lock, Duration::from_secs(5))
            && signal_holder(&supervisor_lock, state.pid, libc::SIGKILL)
        {
            wait_released(&supervisor_lock, Duration::from_secs(5));
        }
        // The supervisor records the exit; if it could not, do it here.
        if let Some(mut state) = store.read_state(id)?
            && (state.pid.is_some() || matches!(state.status, Status::Running | Status::Restarting))
        {
            if state.status != Status::Exited {
                state.status = Status::Exited;
                state.set_exit(137, Some(ExitReason::Killed));
                state.finished_at = Some(now_rfc3339());
            }
            state.pid = None;
            if container.record.spec.auto_remove {
                store.remove(container)?;
            } else {
                store.write_state(id, &state)?;
            }
        }
        Ok(())
    }

    /// `berth __supervise ID`: runs the container until it exits for good
    /// or is stopped.
    pub fn supervise(id: &str) -> Result<u8> {
        let store = crate::home::open_records()?;
        let container = store.load(id)?;
        // Worker threads, for a served component's requests.
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        tokio.block_on(supervise_container(&store, &container))?;
        Ok(0)
    }

    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the state; a failure (e.g. the container was removed under
    /// us) is logged, not fatal: the program must still be looked after.
    fn record(store: &FileRecords, id: &str, state: &ContainerState) {
        if let Err(error) = store.write_state(id, state) {
            tracing::warn!("cannot record the container state: {error:#}");
        }
    }

    /// Runs the container under its restart policy until it ends for good
    /// or a signal stops it, recording every step.
    async fn supervise_container(store: &FileRecords, container: &Container) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let spec = container.record.runnable_spec()?;
        let id = container.id();
        let dir = store.dir(id);
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        // Taken before the pid is recorded, held until this process ends:
        // what makes the recorded pid believable (see the module docs).
        let _lock =
            hold(&dir.join(SUPERVISOR_LOCK)).context("the container already has a supervisor")?;
        let state = ContainerState {
            pid: Some(std::process::id()),
            restart_count: 0,
            error: None,
            ..store.read_state(id)?.unwrap_or_default()
        };
        store.write_state(id, &state)?;
        let state = Mutex::new(state);

        let log = LogWriter::open(&dir, LOG_MAX_BYTES)
            .with_context(|| format!("cannot open the log in {}", dir.display()))?;
        let log = Arc::new(Mutex::new(log));
        let cache = crate::home::compile_cache(crate::home::compile_limits(spec.limits.timeout)?)?;
        let runtime = Runtime::new(RuntimeConfig {
            compile_cache: Some(cache),
        });
        let settings = LaunchSettings {
            started: None,
            // This process runs this one container.
            cpu_clock: CpuClock::Process,
            default_max_connections: berth_runtime::http::default_max_connections(
                crate::commands::run::open_files_limit(),
            ),
        };
        // What one run holds until the next one starts: its private /tmp,
        // its log pumps, and (with -i) its stdin kept open.
        let current: Mutex<Option<RunResources>> = Mutex::new(None);
        // Copied into each run's future, which borrows them.
        let (current, runtime, settings, log) = (&current, &runtime, &settings, &log);
        let start = move || async move {
            let previous = lock(current).take();
            if let Some(previous) = previous {
                previous.finish().await;
            }
            let resolved = crate::commands::run::resolve_spec(spec)?;
            let (stdin, stdin_writer) = if spec.interactive {
                let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
                (Stdin::Reader(Box::new(reader)), Some(writer))
            } else {
                (Stdin::Null, None)
            };
            let (pumps, stdout, stderr) = LogPumps::start(log);
            let stdio = LaunchStdio {
                stdin,
                stdout,
                stderr,
            };
            let launched = launch(runtime, spec, resolved, stdio, settings)
                .await
                .map_err(|error| crate::commands::run::explain_launch_error(spec, error))?;
            if let Some(serving) = &launched.serving {
                write_lines(
                    log,
                    LogStream::Stderr,
                    &[format!(
                        "berth: serving {} on http://{} (container port {})",
                        serving.program_name, serving.addr, serving.container_port
                    )],
                );
            }
            *lock(current) = Some(RunResources {
                scratch: launched.scratch,
                pumps,
                _stdin: stdin_writer,
            });
            anyhow::Ok(launched.handle)
        };
        let (stop_tx, mut stop_rx) = watch::channel(None);
        let signals = async {
            tokio::select! {
                _ = term.recv() => stop_tx.send_replace(Some(KillMode::Graceful)),
                _ = interrupt.recv() => stop_tx.send_replace(Some(KillMode::Immediate)),
            };
            // A second signal (or SIGINT after SIGTERM) stops at once.
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            stop_tx.send_replace(Some(KillMode::Immediate));
            std::future::pending::<()>().await;
        };
        let supervisor = Supervisor {
            policy: spec.restart,
            backoff: Backoff::DOCKER,
        };
        let on_event = |event: Event<'_>| {
            let mut state = lock(&state);
            match event {
                Event::Started => {
                    state.status = Status::Running;
                    state.started_at = Some(now_rfc3339());
                    state.error = None;
                }
                Event::FailedToStart { error } => {
                    state.error = Some(error.to_owned());
                }
                Event::Exited { status } => {
                    state.set_exit(status.code, Some(ExitReason::from(&status.reason)));
                    state.finished_at = Some(now_rfc3339());
                    if let Some(description) = status.describe()
                        && !matches!(status.reason, berth_runtime::ExitReason::Killed { .. })
                    {
                        write_lines(log, LogStream::Stderr, &[format!("berth: {description}")]);
                    }
                }
                Event::Restarting { restarts, .. } => {
                    state.status = Status::Restarting;
                    state.restart_count = restarts;
                }
            }
            record(store, id, &state);
        };
        let ended = tokio::select! {
            ended = supervisor.run(start, &mut stop_rx, on_event) => ended,
            () = signals => unreachable!("the signal watcher never ends"),
        };
        let last = lock(current).take();
        if let Some(resources) = last {
            resources.finish().await;
        }
        let mut state = lock(&state).clone();
        state.status = match ended {
            Ended::FailedToStart(_) => Status::Created,
            Ended::Exited(_) | Ended::Stopped(_) => Status::Exited,
        };
        state.pid = None;
        if spec.auto_remove && state.status == Status::Exited {
            store.remove(container)?;
        } else {
            record(store, id, &state);
        }
        Ok(())
    }

    /// Bytes of a program's output in flight to its log pump.
    const PIPE_BYTES: usize = 64 << 10;

    /// What one run of the program holds besides its sandbox.
    struct RunResources {
        scratch: Option<tempfile::TempDir>,
        pumps: LogPumps,
        _stdin: Option<tokio::io::DuplexStream>,
    }

    impl RunResources {
        /// Lets the log pumps write what the run left in its pipes, then
        /// removes the run's /tmp.
        async fn finish(self) {
            self.pumps.finish().await;
            if let Some(scratch) = self.scratch
                && let Err(error) = scratch.close()
            {
                tracing::warn!(%error, "cannot remove the container's /tmp");
            }
        }
    }
}
