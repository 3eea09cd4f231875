//! A private containerd (Debian's 1.6.20) for the shim's tests: its root,
//! state, sockets and config in a temp dir, the `native` snapshotter, and
//! this build's `containerd-shim-berth-v1` first on its PATH; with or
//! without its CRI plugin. Images are built and saved by berth's registry
//! library (what `berth build` and `berth save` run) and imported with
//! `ctr images import`. Dropping a [`Containerd`] stops it, the shims it
//! started, and removes what they left outside the temp dir.

// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-berth-v1");
pub const RUNTIME: &str = "io.containerd.berth.v1";
/// containerd 1.6 puts every shim's socket here, whatever its config says.
pub const SHIM_SOCKETS: &str = "/run/containerd/s";

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn containerd_installed() -> bool {
    Command::new("containerd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether to skip a test: containerd is not installed (said on stderr).
/// Panics when it is installed but this is not root, as containerd needs.
pub fn skip_without_containerd() -> bool {
    if !containerd_installed() {
        eprintln!("skipping: containerd is not installed (Debian package `containerd`)");
        return true;
    }
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0")),
        "this test starts containerd, which needs root"
    );
    false
}

/// Sends `GET /` to `addr`; the response, if it answered.
pub fn get(addr: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// What a bounded command printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` at most `limit`, killing it after that.
pub fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("wait");
            panic!(
                "{what} did not finish within {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("wait");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A private containerd, stopped (with the shims it started) on drop.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    daemon: Child,
    /// The containerd namespace `ctr` works in.
    namespace: String,
}

impl Containerd {
    /// containerd without its CRI plugin; `ctr` works in `berth-test`.
    pub fn start() -> Containerd {
        Containerd::start_with("berth-test", None)
    }

    /// containerd with its CRI plugin configured by `cri` (the TOML of
    /// the plugin's sections, given the temp dir to keep its files in);
    /// `ctr` works in CRI's namespace, `k8s.io`.
    pub fn start_with_cri(cri: &dyn Fn(&Path) -> String) -> Containerd {
        Containerd::start_with("k8s.io", Some(cri))
    }

    fn start_with(namespace: &str, cri: Option<&dyn Fn(&Path) -> String>) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("berth-ctrd-")
            .tempdir()
            .expect("temp dir");
        let path = |name: &str| dir.path().join(name).display().to_string();
        let disabled = if cri.is_some() {
            ""
        } else {
            "\"io.containerd.grpc.v1.cri\""
        };
        let mut config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [{disabled}]\n\
             [grpc]\n  address = {grpc:?}\n[ttrpc]\n  address = {ttrpc:?}\n[debug]\n  address = {debug:?}\n\
             [metrics]\n  address = \"\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = path("root"),
            state = path("state"),
            grpc = path("containerd.sock"),
            ttrpc = path("containerd.sock.ttrpc"),
            debug = path("debug.sock"),
            opt = path("opt"),
        );
        if let Some(cri) = cri {
            config.push_str(&cri(dir.path()));
        }
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let shim_dir = Path::new(SHIM).parent().expect("shim dir");
        let search = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![shim_dir.to_path_buf()];
        paths.extend(std::env::split_paths(&search));
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("log");
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .env("PATH", std::env::join_paths(paths).expect("PATH"))
            .env("BERTH_SHIM_DATA_DIR", dir.path().join("berth"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd {
            dir,
            daemon,
            namespace: namespace.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if containerd.socket().exists()
                && containerd
                    .ctr(&["version"], Duration::from_secs(10))
                    .code
                    .is_some_and(|code| code == 0)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 20s; its log: {}",
                containerd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        containerd
    }

    /// The containerd namespace `ctr` works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs `ctr ARGS` for at most `limit`.
    pub fn ctr(&self, args: &[&str], limit: Duration) -> Output {
        let child = self.ctr_command(args).spawn().expect("run ctr");
        wait_bounded(child, limit, &format!("ctr {}", args.join(" ")))
    }

    /// Runs `ctr ARGS` and expects it to succeed.
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        let output = self.ctr(args, Duration::from_secs(60));
        assert_eq!(
            output.code,
            Some(0),
            "ctr {} failed: {}\nstdout: {}\ncontainerd log:\n{}",
            args.join(" "),
            output.stderr,
            output.stdout,
            self.log()
        );
        output
    }

    /// Builds `dockerfile` (with the examples' wasm in its context) as
    /// `name`, saves it and imports it; returns the name containerd gives.
    pub fn import_image(&self, name: &str, dockerfile: &str) -> String {
        let work = tempfile::tempdir().expect("build dir");
        let context = work.path().join("context");
        std::fs::create_dir(&context).expect("context");
        for wasm in [
            "wasm/hello.wasm",
            "wasm/exitcode.wasm",
            "wasm/busy.wasm",
            "wasm/hog.wasm",
            "wasm/http-hello.wasm",
        ] {
            let name = Path::new(wasm).file_name().expect("name");
            std::fs::copy(examples().join(wasm), context.join(name)).expect("copy");
        }
        // A stand-in for the pause image's native binary: never executed.
        std::fs::write(context.join("pause"), PAUSE_STAND_IN).expect("pause");
        let (grow, _) = berth_runtime::program::to_binary(GROW_ON_EACH_BYTE.as_bytes(), "grow")
            .expect("the test module compiles");
        std::fs::write(context.join("grow.wasm"), grow).expect("grow");
        std::fs::write(context.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let store = berth_registry::Store::open(work.path().join("store")).expect("store");
        let mut options = berth_registry::build::BuildOptions::new(&context);
        options.tags = vec![name.to_owned()];
        berth_registry::build::build(&store, &options).expect("build");
        let tar = work.path().join("image.tar");
        berth_registry::archive::save(&store, &[name], &tar).expect("save");
        self.import_archive(&tar, name)
    }

    /// Imports the image archive `tar` holding `name`; returns the name
    /// containerd gives it.
    pub fn import_archive(&self, tar: &Path, name: &str) -> String {
        self.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            "--all-platforms",
            &tar.display().to_string(),
        ]);
        let listed = self.ctr_ok(&["images", "ls", "-q"]).stdout;
        listed
            .lines()
            .find(|line| line.contains(name.split(':').next().unwrap_or(name)))
            .unwrap_or_else(|| panic!("{name} not among the imported images: {listed}"))
            .to_owned()
    }

    pub fn run_args<'a>(&self, image: &'a str, id: &'a str, fifo_dir: &'a str) -> Vec<&'a str> {
        vec![
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--platform",
            "wasip1/wasm",
            "--fifo-dir",
            fifo_dir,
            "--runtime",
            RUNTIME,
            image,
            id,
        ]
    }

    /// The shims this daemon started that still run: their pids and the
    /// `-socket` each was given. Found by the daemon address they were
    /// given (other tests' shims run at the same time).
    pub fn shims(&self) -> Vec<(i32, Option<String>)> {
        let address = self.socket().display().to_string();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut shims = Vec::new();
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<_> = cmdline
                .split(|byte| *byte == 0)
                .map(String::from_utf8_lossy)
                .collect();
            let ours = args
                .iter()
                .any(|arg| arg.contains("containerd-shim-berth-v1"))
                && args.iter().any(|arg| arg.contains(&address));
            if ours {
                let socket = args
                    .iter()
                    .skip_while(|arg| *arg != "-socket")
                    .nth(1)
                    .map(|socket| socket.trim_start_matches("unix://").to_owned());
                shims.push((pid, socket));
            }
        }
        shims
    }
}

/// Grows to 1 MiB, then by 1 MiB more for each byte read from stdin
/// (the runtime's tests use it too); in every test image as `grow.wasm`.
const GROW_ON_EACH_BYTE: &str = include_str!("../../../runtime/tests/guests/grow-on-each-byte.wat");

/// The first bytes of an ELF executable: what a pause image's native
/// binary looks like to the shim, which never executes it.
pub const PAUSE_STAND_IN: &[u8] = b"\x7fELF\x02\x01\x01\0";

impl Drop for Containerd {
    fn drop(&mut self) {
        // Shims that outlived the test (a failed one), and their sockets in
        // /run/containerd/s; a shim that exited normally removed its socket
        // itself.
        for (pid, socket) in self.shims() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            if let Some(socket) = socket.filter(|s| s.starts_with(SHIM_SOCKETS)) {
                let _ = std::fs::remove_file(socket);
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // What containerd mounted under its temp dir and left (CRI's pod
        // shm of a failed test), so that the dir can be removed.
        let root = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&root))
            .collect();
        // Innermost first.
        ours.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in ours {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}
