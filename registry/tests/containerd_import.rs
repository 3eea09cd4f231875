//! `berth save` output must be importable by containerd: a private
//! containerd (its own root, state and sockets in a temp dir) imports the
//! saved tar with `ctr images import`, and the image's content checks out.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_registry::archive;
use berth_registry::image::ImageFormat;
use common::*;

const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";

struct Containerd {
    child: Child,
    socket: String,
    _dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    fn start() -> TestResult<Containerd> {
        for bin in [CONTAINERD, CTR] {
            if !Path::new(bin).exists() {
                return Err(format!(
                    "{bin} is missing: this test needs containerd and ctr (apt-get install containerd)"
                )
                .into());
            }
        }
        // Short path: unix socket addresses are limited to ~108 bytes.
        let dir = tempfile::Builder::new().prefix("ctrd").tempdir_in("/tmp")?;
        let d = dir.path().display().to_string();
        let socket = format!("{d}/c.sock");
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{d}/t.sock"
[debug]
  address = "{d}/d.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let c = Containerd {
            child,
            socket,
            _dir: dir,
        };
        let start = Instant::now();
        for _ in 0..500 {
            if c.ctr(&["version"])?.status.success() {
                return Ok(c);
            }
            if start.elapsed() > Duration::from_secs(15) {
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Err("containerd did not answer on its socket within 15 s".into())
    }

    fn ctr(&self, args: &[&str]) -> TestResult<Output> {
        Ok(Command::new(CTR)
            .arg("--address")
            .arg(&self.socket)
            .arg("-n")
            .arg("berth-test")
            .args(args)
            .output()?)
    }
}

#[test]
fn ctr_imports_a_saved_image() -> TestResult {
    let containerd = Containerd::start()?;
    let wasm = example_wasm("hello.wasm")?;
    let (dir, store) = store()?;
    let built = build_image(
        &store,
        "FROM scratch\nCOPY hello.wasm /hello.wasm\nENTRYPOINT [\"/hello.wasm\"]\n",
        &[("hello.wasm", &wasm)],
        "berth-hello:1",
        ImageFormat::Image,
    )?;
    let tar_path = dir.path().join("hello.tar");
    archive::save(&store, &["berth-hello:1"], &tar_path)?;
    let tar_arg = tar_path.display().to_string();
    let out = containerd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        "--all-platforms",
        &tar_arg,
    ])?;
    assert!(
        out.status.success(),
        "ctr images import failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let list = containerd.ctr(&["images", "ls"])?;
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains("docker.io/library/berth-hello:1"),
        "{listing}"
    );
    assert!(listing.contains(&built.digest), "{listing}");
    let check = containerd.ctr(&["images", "check"])?;
    let checked = String::from_utf8_lossy(&check.stdout);
    assert!(checked.contains("complete"), "{checked}");
    Ok(())
}
