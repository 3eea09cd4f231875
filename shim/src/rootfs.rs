//! Where a task's root filesystem is on the host.
//!
//! containerd hands the shim the snapshot as mounts. A bind mount (the
//! `native` snapshotter's) is used where it is, with nothing mounted: berth
//! grants the directory to the guest read-only itself. Any other mount
//! (overlay) is mounted on the bundle's `rootfs` directory as runc's shim
//! does, and unmounted when the task is deleted.

use std::path::{Path, PathBuf};

use containerd_shim::protos::api::Mount;

/// A task's root filesystem.
#[derive(Debug, Clone)]
pub struct Rootfs {
    path: PathBuf,
    /// Whether the shim mounted it (and must unmount it).
    mounted: bool,
}

fn is_bind(mount: &Mount) -> bool {
    mount.type_ == "bind" || mount.options.iter().any(|o| o == "bind" || o == "rbind")
}

impl Rootfs {
    /// The root filesystem `mounts` describe for `bundle`: no mounts means
    /// the bundle's own `rootfs` directory.
    pub fn prepare(bundle: &Path, mounts: &[Mount]) -> Result<Rootfs, String> {
        let target = bundle.join("rootfs");
        match mounts {
            [] => Ok(Rootfs {
                path: target,
                mounted: false,
            }),
            [mount] if is_bind(mount) => Ok(Rootfs {
                path: PathBuf::from(&mount.source),
                mounted: false,
            }),
            _ => {
                for mount in mounts {
                    let mounted = containerd_shim::mount::mount_rootfs(
                        Some(mount.type_.as_str()).filter(|t| !t.is_empty()),
                        Some(mount.source.as_str()).filter(|s| !s.is_empty()),
                        &mount.options,
                        &target,
                    );
                    if let Err(error) = mounted {
                        Rootfs::release(bundle);
                        return Err(format!(
                            "cannot mount the root filesystem ({} {}) on {}: {error}",
                            mount.type_,
                            mount.source,
                            target.display()
                        ));
                    }
                }
                Ok(Rootfs {
                    path: target,
                    mounted: true,
                })
            }
        }
    }

    /// The directory granted to the guest at `/`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts what [`Rootfs::prepare`] mounted.
    pub fn unmount(&self) {
        if self.mounted {
            unmount(&self.path);
        }
    }

    /// Unmounts whatever is mounted on `bundle`'s `rootfs` directory (after
    /// the shim that mounted it is gone).
    pub fn release(bundle: &Path) {
        unmount(&bundle.join("rootfs"));
    }
}

fn unmount(target: &Path) {
    if let Some(target) = target.to_str()
        && let Err(error) = containerd_shim::mount::umount_recursive(Some(target), 0)
    {
        log::warn!("cannot unmount {target}: {error}");
    }
}
