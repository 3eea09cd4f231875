//! Listening inside a pod's network namespace.
//!
//! A socket belongs to the network namespace of the thread that created
//! it, for its whole life. The shim's threads stay in the node's
//! namespace; a socket for a pod is made by a short-lived thread that
//! joins the pod's namespace (`setns` moves only the calling thread),
//! binds and listens, and hands the socket back before it ends. The
//! socket is then served by the shim's ordinary runtime like any other.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Why a socket could not be made in a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file cannot be opened.
    #[error("cannot open the network namespace {}: {error}", path.display())]
    Open {
        /// The namespace file (e.g. `/var/run/netns/cni-…`).
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The namespace cannot be joined.
    #[error("cannot enter the network namespace {}: {error}", path.display())]
    Enter {
        /// The namespace file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The address cannot be listened on inside the namespace.
    #[error("cannot listen on {addr} in the network namespace {}: {error}", path.display())]
    Listen {
        /// The namespace file.
        path: PathBuf,
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The thread that joins the namespace could not run.
    #[error("cannot start a thread to enter the network namespace: {0}")]
    Thread(std::io::Error),
}

/// A TCP socket listening on `addr` inside the network namespace at
/// `netns` (a namespace file such as `/var/run/netns/NAME` or
/// `/proc/PID/ns/net`), made by a thread of its own while the caller
/// waits.
pub async fn listen_in(netns: &Path, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
    let path = netns.to_path_buf();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".to_owned())
        .spawn(move || {
            let _ = sender.send(enter_and_listen(path, addr));
        })
        .map_err(NetnsError::Thread)?;
    receiver.await.unwrap_or_else(|_| {
        Err(NetnsError::Thread(std::io::Error::other(
            "the thread entering the network namespace ended without a socket",
        )))
    })
}

/// Moves the calling thread into the namespace at `path` and listens on
/// `addr` there. The thread must end afterwards: it is left in the
/// namespace.
fn enter_and_listen(path: PathBuf, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
    let file = std::fs::File::open(&path).map_err(|error| NetnsError::Open {
        path: path.clone(),
        error,
    })?;
    // SAFETY: setns on a descriptor this thread owns; it changes only this
    // thread's namespace, and the thread ends right after binding.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Enter {
            path,
            error: std::io::Error::last_os_error(),
        });
    }
    TcpListener::bind(addr).map_err(|error| NetnsError::Listen { path, addr, error })
}

/// Whether `path` names the network namespace of this very process
/// (`/proc/self/ns/net` or `/proc/PID/ns/net` with this process's pid):
/// where CRI points a pod's containers when the pod's sandbox task is this
/// shim's placeholder.
pub fn is_own(path: &Path) -> bool {
    let own = format!("/proc/{}/ns/net", std::process::id());
    path == Path::new(&own) || path == Path::new("/proc/self/ns/net")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// The inode of the network namespace socket `fd` belongs to
    /// (`SIOCGSKNS` opens that namespace).
    fn namespace_of(socket: &impl AsRawFd) -> u64 {
        const SIOCGSKNS: libc::c_ulong = 0x894C;
        // SAFETY: the ioctl returns a new descriptor, owned here.
        let fd = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGSKNS) };
        assert!(fd >= 0, "SIOCGSKNS: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.metadata().expect("namespace").ino()
    }

    #[test]
    fn a_socket_made_in_a_namespace_lives_there_and_the_caller_stays_put() {
        let own = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        assert!(is_own(&own));
        assert!(!is_own(Path::new("/var/run/netns/cni-1")));
        let before = std::fs::metadata("/proc/thread-self/ns/net")
            .expect("own namespace")
            .ino();

        // A namespace of its own, held by a thread that waits until told.
        let (made, namespace) = std::sync::mpsc::channel();
        let (done, finish) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // SAFETY: moves only this thread into a new namespace.
            let unshared = unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0;
            let path = format!("/proc/{}/task/{}/ns/net", std::process::id(), unsafe {
                libc::gettid()
            });
            let _ = made.send(unshared.then_some(path));
            let _ = finish.recv();
        });
        let Some(path) = namespace.recv().expect("the holder answers") else {
            eprintln!("skipping: creating a network namespace needs root");
            let _ = done.send(());
            let _ = holder.join();
            return;
        };
        let path = PathBuf::from(path);
        let target = std::fs::metadata(&path).expect("namespace").ino();
        assert_ne!(target, before);

        let tokio = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio");
        let any: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        let listener = tokio.block_on(listen_in(&path, any)).expect("listen");
        assert_eq!(namespace_of(&listener), target);
        let _ = done.send(());
        holder.join().expect("holder");
        // The socket keeps its namespace; this thread never left its own.
        assert_eq!(namespace_of(&listener), target);
        let here = std::net::TcpListener::bind("127.0.0.1:0").expect("listen here");
        assert_eq!(namespace_of(&here), before);

        let error = tokio
            .block_on(listen_in(Path::new("/nonexistent/netns"), any))
            .expect_err("no such namespace")
            .to_string();
        assert!(error.contains("/nonexistent/netns"), "{error}");
    }
}
