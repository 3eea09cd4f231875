//! Supervising detached containers: one background process per container
//! (`berth __supervise ID`, in its own session) runs the program as a
//! foreground `berth run` child, writes its output to the container's log
//! with timestamps, applies the restart policy and records the state.
//!
//! The commands only talk to it through the records in
//! [`crate::containers`] and signals: SIGTERM asks it to stop the program
//! and exit. Unix only for now; elsewhere starting a container is refused.
//!
//! Neither the container's spec nor its `-e` values travel on a command line,
//! which every user can read: the supervisor (`__supervise ID`) and the
//! program's process (`__run ID`) read them from the container's record.
//!
//! A recorded pid alone does not identify a process: once it exits, the
//! pid can be reused by an unrelated one. The supervisor and the program's
//! process each hold an OS file lock ([`SUPERVISOR_LOCK`], [`PROGRAM_LOCK`]
//! in the container's directory) for their whole life; the OS drops it when
//! they die. A recorded pid is believed, and signalled, only while its lock
//! is held, which a reused pid cannot do.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use berth_container::records::FileRecords;
use berth_container::{Container, ContainerState, Status};

/// The hidden subcommand that runs a supervisor.
#[cfg_attr(not(unix), allow(dead_code))]
pub const SUPERVISE_COMMAND: &str = "__supervise";

/// The hidden subcommand that runs a container's program for its
/// supervisor.
#[cfg_attr(not(unix), allow(dead_code))]
pub const RUN_COMMAND: &str = "__run";

/// Held by a container's supervisor while it lives.
pub const SUPERVISOR_LOCK: &str = "supervisor.lock";

/// Held by the process running a container's program while it lives.
pub const PROGRAM_LOCK: &str = "program.lock";

/// Created by the program's process once the program is loaded (and, when
/// serving, its port is bound).
pub const STARTED_FILE: &str = "started";

/// How long `run -d` and `start` wait for the program to start.
pub const START_WAIT: Duration = Duration::from_secs(120);

/// How long taking a lock waits for a checker that holds it for an
/// instant ([`is_held`] takes it shared to test it).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Whether a live process holds the lock file `path`.
pub fn is_held(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
}

/// Takes the lock file `path` (creating it owner-only) for as long as the
/// returned file stays open; fails if another process holds it.
pub fn hold(path: &Path) -> Result<File> {
    let file = berth_fs::private_file()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
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
        state.child_pid = None;
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
    use std::fs;
    use std::process::Stdio;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    use anyhow::anyhow;
    use tokio::io::{AsyncRead, AsyncReadExt};

    use super::*;
    use berth_container::ExitReason;
    use berth_container::logs::{
        LOG_MAX_BYTES, LineSplitter, LogStream, LogWriter, MAX_LINE_BYTES, open_append,
    };
    use berth_container::records::RecordStore;
    use berth_container::spec::restart_backoff;
    use berth_container::time::{format_rfc3339, now_rfc3339};

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

    /// Kills the container's program if its process still runs (after its
    /// supervisor died, or did not stop it in time).
    fn kill_program(store: &FileRecords, container: &Container) -> Result<()> {
        let lock = store.dir(container.id()).join(PROGRAM_LOCK);
        let child = store
            .read_state(container.id())?
            .and_then(|state| state.child_pid);
        if signal_holder(&lock, child, libc::SIGKILL) {
            wait_released(&lock, Duration::from_secs(5));
        }
        Ok(())
    }

    /// Starts the container's supervisor and waits (at most `wait`) until
    /// it reports that the program started, or why it could not.
    pub fn start(store: &FileRecords, container: &Container, wait: Duration) -> Result<()> {
        let id = container.id();
        // A program left running by a supervisor that died would hold the
        // program lock and keep the new one from starting.
        kill_program(store, container)?;
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

    /// Stops a container: SIGTERM to its supervisor, which forwards it to
    /// the program; after `timeout` the program is killed (exit 137).
    pub fn stop(store: &FileRecords, container: &Container, timeout: Duration) -> Result<()> {
        let id = container.id();
        let Some(state) = store.read_state(id)? else {
            return Ok(());
        };
        let supervisor_lock = store.dir(container.id()).join(SUPERVISOR_LOCK);
        if signal_holder(&supervisor_lock, state.pid, libc::SIGTERM) {
            if !wait_released(&supervisor_lock, timeout) {
                kill_program(store, container)?;
                if !wait_released(&supervisor_lock, Duration::from_secs(5))
                    && signal_holder(&supervisor_lock, state.pid, libc::SIGKILL)
                {
                    wait_released(&supervisor_lock, Duration::from_secs(5));
                }
            }
        } else {
            // No supervisor: make sure no orphaned program runs on.
            kill_program(store, container)?;
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
            state.child_pid = None;
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(supervise_container(&store, &container))?;
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

    /// When the program reported that it started: the started file's
    /// modification time (now, if that cannot be read).
    fn started_time(started_file: &std::path::Path) -> String {
        fs::metadata(started_file)
            .and_then(|meta| meta.modified())
            .map_or_else(|_| now_rfc3339(), format_rfc3339)
    }

    fn exit_code(status: std::process::ExitStatus) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    }

    async fn supervise_container(store: &FileRecords, container: &Container) -> Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let spec = container.record.runnable_spec()?;
        let id = container.id();
        let dir = store.dir(id);
        let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        // Taken before the pid is recorded, held until this process ends:
        // what makes the recorded pid believable (see the module docs).
        let _lock = hold(&store.dir(container.id()).join(SUPERVISOR_LOCK))
            .context("the container already has a supervisor")?;
        let mut state = ContainerState {
            pid: Some(std::process::id()),
            ..store.read_state(id)?.unwrap_or_default()
        };
        state.restart_count = 0;
        state.error = None;
        store.write_state(id, &state)?;

        let exe = std::env::current_exe().context("cannot find the berth executable")?;
        let log = LogWriter::open(&dir, LOG_MAX_BYTES)
            .with_context(|| format!("cannot open the log in {}", dir.display()))?;
        let log = Arc::new(Mutex::new(log));
        let started_file = store.dir(container.id()).join(STARTED_FILE);
        let mut first = true;
        let mut backoff_step = 0u32;
        loop {
            let _ = fs::remove_file(&started_file);
            let mut command = tokio::process::Command::new(&exe);
            command
                .arg(RUN_COMMAND)
                .arg(id)
                // The spec's paths are absolute: the program's process
                // needs no particular working directory.
                .current_dir("/")
                .stdin(if spec.interactive {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(error) => {
                    state.error = Some(format!("cannot run {}: {error}", exe.display()));
                    state.status = if first {
                        Status::Created
                    } else {
                        Status::Exited
                    };
                    break;
                }
            };
            // Held open (never written) for -i, closed when the run ends.
            let stdin = child.stdin.take();
            let last_stderr = Arc::new(Mutex::new(None::<String>));
            let pumps = [
                tokio::spawn(pump(
                    child.stdout.take(),
                    LogStream::Stdout,
                    log.clone(),
                    None,
                )),
                tokio::spawn(pump(
                    child.stderr.take(),
                    LogStream::Stderr,
                    log.clone(),
                    Some(last_stderr.clone()),
                )),
            ];
            state.child_pid = child.id();
            record(store, id, &state);

            let began = Instant::now();
            let mut started = false;
            let mut stopping = false;
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = term.recv(), if !stopping => {
                        stopping = true;
                        if let Some(pid) = child.id() {
                            send_signal(pid, libc::SIGTERM);
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(20)), if !started => {
                        if started_file.exists() {
                            started = true;
                            state.status = Status::Running;
                            state.started_at = Some(started_time(&started_file));
                            state.error = None;
                            record(store, id, &state);
                        }
                    }
                }
            };
            for pump in pumps {
                let _ = pump.await;
            }
            drop(stdin);
            let code = status.map_or(255, exit_code);
            let finished = now_rfc3339();
            if !started && started_file.exists() {
                // It started and ended between two looks.
                started = true;
                state.started_at = Some(started_time(&started_file));
            }
            let _ = fs::remove_file(&started_file);
            state.child_pid = None;
            // The program's process reports only its exit code.
            state.set_exit(code, None);
            state.finished_at = Some(finished);
            if !started {
                let reason = lock(&last_stderr)
                    .take()
                    .map(|line| line.strip_prefix("berth: ").unwrap_or(&line).to_owned())
                    .unwrap_or_else(|| {
                        format!("the program ended with exit code {code} before it started")
                    });
                state.error = Some(reason);
                if first && !stopping {
                    state.status = Status::Created;
                    break;
                }
            }
            first = false;
            if stopping || !spec.restart.should_restart(code, state.restart_count) {
                state.status = Status::Exited;
                break;
            }
            if began.elapsed() >= Duration::from_secs(10) {
                backoff_step = 0;
            }
            backoff_step += 1;
            state.restart_count += 1;
            state.status = Status::Restarting;
            record(store, id, &state);
            tokio::select! {
                () = tokio::time::sleep(restart_backoff(backoff_step)) => {}
                _ = term.recv() => {
                    state.status = Status::Exited;
                    break;
                }
            }
        }
        state.pid = None;
        state.child_pid = None;
        if spec.auto_remove && state.status == Status::Exited {
            store.remove(container)?;
        } else {
            record(store, id, &state);
        }
        Ok(())
    }

    /// Copies one output stream of the program into the log, line by line.
    async fn pump<R: AsyncRead + Unpin>(
        reader: Option<R>,
        stream: LogStream,
        log: Arc<Mutex<LogWriter>>,
        last: Option<Arc<Mutex<Option<String>>>>,
    ) {
        let Some(mut reader) = reader else {
            return;
        };
        let mut splitter = LineSplitter::new(MAX_LINE_BYTES);
        let mut buffer = vec![0u8; 8192];
        loop {
            let read = match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            let lines = splitter.push(&buffer[..read]);
            write_lines(&log, stream, &lines, last.as_deref());
        }
        if let Some(line) = splitter.finish() {
            write_lines(&log, stream, &[line], last.as_deref());
        }
    }

    fn write_lines(
        log: &Mutex<LogWriter>,
        stream: LogStream,
        lines: &[String],
        last: Option<&Mutex<Option<String>>>,
    ) {
        let Some(newest) = lines.last() else {
            return;
        };
        let mut writer = lock(log);
        for line in lines {
            if let Err(error) = writer.append(stream, line) {
                tracing::warn!(%error, "cannot write the container log");
            }
        }
        if let Some(last) = last {
            *lock(last) = Some(newest.clone());
        }
    }
}
