//! The few file operations every berth crate needs done the same way:
//! owner-only directories and files (berth's data holds secrets and native
//! code) and atomic replacement (temporary file, fsync, rename, fsync of
//! the directory) so that readers see the old content or the new, never a
//! mix, and a crash leaves no half-written file.
//!
//! The runtime, the image library and the container library do not depend
//! on each other; this small crate is what they share.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` and its missing parents, owner-only (0700) on unix
/// whatever the umask; an existing directory is left as it is.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates the directory `dir` (its parent must exist), owner-only (0700)
/// on unix; fails if it exists.
// The mode is only set on unix.
#[cfg_attr(not(unix), allow(unused_mut))]
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create files owner-only (0600) on unix. The mode applies
/// only when the file is created.
// The mode is only set on unix.
#[cfg_attr(not(unix), allow(unused_mut))]
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Replaces `target` with `bytes` atomically, through an owner-only
/// temporary file next to it.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    write_atomic_in(dir, target, |file| file.write_all(bytes))
}

/// Replaces `target` atomically with what `write` writes into an
/// owner-only temporary file created in `temp_dir` (which must be on the
/// same filesystem as `target`). On failure the temporary file is removed
/// and `target` is unchanged.
pub fn write_atomic_in(
    temp_dir: &Path,
    target: &Path,
    write: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    // Named after the target, so that a temporary file left by a crash
    // tells what it was for.
    let prefix = format!(
        ".{}.",
        target
            .file_name()
            .map_or_else(|| "tmp".into(), |name| name.to_string_lossy())
    );
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // tempfile creates files 0600 on unix already; set it here so that the
    // promise does not rest on a library default.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
    let mut temp = builder.tempfile_in(temp_dir)?;
    write(temp.as_file_mut())?;
    persist(temp, target)
}

/// Moves a completely written temporary file into place durably: fsync of
/// the file, rename over `target`, fsync of the directory. For content
/// streamed into a [`tempfile::NamedTempFile`] (on `target`'s filesystem)
/// rather than written by [`write_atomic_in`]'s closure. On failure the
/// temporary file is removed and `target` is unchanged.
pub fn persist(temp: tempfile::NamedTempFile, target: &Path) -> io::Result<()> {
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|error| error.error)?;
    sync_parent(target);
    Ok(())
}

/// Makes a rename into `path`'s directory durable on unix (directories
/// cannot be fsynced on Windows).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(dir) = path.parent()
        && let Ok(dir) = File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
    {
        let _ = dir.sync_all();
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_owner_only_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("state.json");
        write_atomic(&target, b"old").expect("write");
        write_atomic(&target, b"new").expect("rewrite");
        assert_eq!(std::fs::read(&target).expect("read"), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target)
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("file");
        write_atomic(&target, b"old").expect("write");
        let error = write_atomic_in(dir.path(), &target, |file| {
            file.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .expect_err("fails");
        assert_eq!(error.to_string(), "disk full");
        assert_eq!(std::fs::read(&target).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
    }
}
