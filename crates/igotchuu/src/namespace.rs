//! The private mount namespace the snapshots are bind-mounted in.

use std::io;

use rustix::mount::{mount_change, MountPropagationFlags};
use rustix::thread::UnshareFlags;

/// Moves this process into a new mount namespace and stops mount propagation to the host.
///
/// Must run while the process has exactly one thread: unshare(CLONE_NEWNS) moves only the calling
/// thread, and fails with EINVAL when the fs struct is shared with other threads. `main` calls it
/// before creating the async runtime or any D-Bus connection.
pub fn enter_private() -> io::Result<()> {
    match thread_count() {
        Some(1) => {}
        None => {
            return Err(io::Error::other(
                "cannot read /proc/self/task to count threads (is /proc mounted?)",
            ))
        }
        Some(n) => {
            return Err(io::Error::other(format!(
                "internal error: entering the mount namespace with {n} threads; it must happen before any thread starts"
            )))
        }
    }
    // The way back, for what must run outside once the snapshots are gone (retention.rs).
    remember_host();
    // SAFETY: single-threaded (checked above), so no other thread shares our fs struct or could
    // be left behind in the host namespace.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }?;
    // systemd marks every mount shared: without this our bind mounts would appear on the host.
    // Slave (not private) so that mounts the admin makes on the host during a long backup (e.g. an
    // automounted NFS share restic reads) still reach us.
    mount_change(
        "/",
        MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
    )?;
    Ok(())
}

static HOST: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();

/// Keeps an fd of the mount namespace igotchuu started in (close-on-exec: no child inherits it).
fn remember_host() {
    if let Ok(fd) = rustix::fs::open(
        "/proc/self/ns/mnt",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    ) {
        let _ = HOST.set(fd);
    }
}

/// The host's mount namespace, when this process left it with [`enter_private`].
pub fn host() -> Option<std::os::fd::BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    HOST.get().map(|fd| fd.as_fd())
}

fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}
