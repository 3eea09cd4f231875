//! Runs every case of the WASI testsuite (wasip1) through the `berth`
//! binary, following the suite's README: args and env from `NAME.json`, a
//! fresh copy of `root` mounted at `/`, exit code and exact stdout/stderr
//! compared. Prints `N passed, N failed` and every failure in detail.
//!
//! The suite lives in `../shared/conformance/wasi-testsuite` beside the
//! repository, or wherever `BERTH_WASI_TESTSUITE` points. Cases that berth
//! deliberately does not pass are listed in `docs/conformance.md` with a
//! reason; there are none today, and this test fails on any failure.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::Berth;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CaseSpec {
    args: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    root: Option<String>,
    exit_code: Option<i32>,
    stdout: Option<String>,
    stderr: Option<String>,
}

fn suite_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_WASI_TESTSUITE") {
        return PathBuf::from(dir);
    }
    common::repo_root()
        .join("..")
        .join("shared")
        .join("conformance")
        .join("wasi-testsuite")
}

fn cases(suite: &Path) -> Vec<PathBuf> {
    let mut cases = Vec::new();
    for group in ["assemblyscript", "c", "rust"] {
        let dir = suite.join(group).join("testsuite").join("wasm32-wasip1");
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|ext| ext == "wasm") {
                cases.push(path);
            }
        }
    }
    cases.sort();
    cases
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create root copy");
    for entry in std::fs::read_dir(from).expect("read root") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(
                std::fs::read_link(entry.path()).expect("readlink"),
                &target,
            )
            .expect("copy symlink");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Runs one case; `Err` holds the failure report.
fn run_case(berth: &Berth, wasm: &Path) -> Result<(), String> {
    let spec_path = wasm.with_extension("json");
    let spec: CaseSpec = match std::fs::read_to_string(&spec_path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| format!("bad spec {}: {e}", spec_path.display()))?,
        Err(_) => CaseSpec::default(),
    };
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut args: Vec<String> = vec!["run".into()];
    if let Some(root) = &spec.root {
        let copy = scratch.path().join(root);
        copy_dir(&wasm.parent().expect("case dir").join(root), &copy);
        args.push("-v".into());
        args.push(format!("{}:/", copy.display()));
    }
    for (key, value) in &spec.env {
        args.push("-e".into());
        args.push(format!("{key}={value}"));
    }
    args.push(wasm.display().to_string());
    args.extend(spec.args.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = berth.run(&arg_refs);
    let expected_code = spec.exit_code.unwrap_or(0);
    let mut problems = Vec::new();
    if run.code != Some(expected_code) {
        problems.push(format!(
            "exit code: expected {expected_code}, got {:?}",
            run.code
        ));
    }
    if let Some(expected) = &spec.stdout
        && &run.stdout != expected
    {
        problems.push(format!(
            "stdout: expected {expected:?}, got {:?}",
            run.stdout
        ));
    }
    if let Some(expected) = &spec.stderr
        && &run.stderr != expected
    {
        problems.push(format!(
            "stderr: expected {expected:?}, got {:?}",
            run.stderr
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n  {}\n  stdout: {:?}\n  stderr: {:?}",
            wasm.display(),
            problems.join("\n  "),
            truncate(&run.stdout),
            truncate(&run.stderr)
        ))
    }
}

fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(2000)
        .map_or(text.len(), |(index, _)| index);
    &text[..end]
}

#[test]
fn wasi_testsuite_passes() {
    let suite = suite_dir();
    assert!(
        suite.is_dir(),
        "the WASI testsuite is missing at {}; set BERTH_WASI_TESTSUITE",
        suite.display()
    );
    let cases = cases(&suite);
    assert!(
        cases.len() >= 70,
        "expected the full suite, found {} cases",
        cases.len()
    );
    let berth = Berth::new();
    // Warm the compile cache and the binary once, then run cases on two threads.
    let queue = Mutex::new(cases.clone());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let Some(case) = queue.lock().expect("queue").pop() else {
                        break;
                    };
                    if let Err(report) = run_case(&berth, &case) {
                        failures.lock().expect("failures").push(report);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("failures");
    let mut stderr = std::io::stderr();
    for failure in &failures {
        let _ = writeln!(stderr, "FAIL {failure}");
    }
    let _ = writeln!(
        stderr,
        "wasi-testsuite: {} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} WASI testsuite case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
