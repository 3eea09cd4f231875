//! Link options for the `berth` executable that make it start faster; they
//! change how the binary is laid out, never what it does.
//!
//! Only for a native x86_64 Linux (glibc) build linked by the toolchain's
//! default linker (rust-lld since Rust 1.90), the one combination known to
//! accept these options; any other target, a cross build, or a linker
//! chosen through `RUSTC_LINKER` or rustflags links as before, and so does
//! any build with `BERTH_PLAIN_LINK=1`.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=startup-order.txt");
    println!("cargo:rerun-if-env-changed=BERTH_PLAIN_LINK");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    let default_linker = var("RUSTC_LINKER").is_empty()
        && ![
            "linker",
            "link-self-contained",
            "link-arg",
            "relocation-model",
        ]
        .iter()
        .any(|flag| rustflags.contains(flag));
    if var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("HOST") != var("TARGET")
        || !default_linker
        || var("BERTH_PLAIN_LINK") == "1"
    {
        return;
    }
    // A position-independent executable has ~70k pointers that the dynamic
    // loader relocates at every start. Listed as RELR they take 20 KB of the
    // file instead of 1.6 MB, all of which was read (and so resident) at
    // every start. The binary then needs glibc 2.36 or newer (it says so,
    // as GLIBC_ABI_DT_RELR), so only when built on such a glibc: the
    // binary is for this machine.
    if host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // The code `berth run` executes, listed by bench/startup-order.sh, placed
    // together: a start touches ~1 MB of adjacent code instead of pages all
    // over a 26 MB text segment (fewer page faults, and a resident set that
    // is the code used). Names no longer in the binary are skipped.
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("startup-order.txt");
    if var("PROFILE") == "release" && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the glibc this build script runs on (the target's, in a native
/// build) is at least `major.minor`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    unsafe extern "C" {
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: gnu_get_libc_version takes no arguments and returns a pointer
    // to a static NUL-terminated string ("2.36").
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let mut parts = version
        .to_str()
        .unwrap_or_default()
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_at_least(_major: u32, _minor: u32) -> bool {
    false
}
