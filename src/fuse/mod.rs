//! The FUSE frontend: the tree as a local directory (fuser 0.18).
//!
//! This module only translates: requests to fs core calls, core errors to
//! errnos ([`errno`], the one place that maps them), attributes to
//! `FileAttr`. The kernel checks permissions (`default_permissions`).
//!
//! Reads go through the kernel page cache, which is kept across opens
//! (`FOPEN_KEEP_CACHE`) as long as the inode's content id is the one the
//! kernel cached. With `--passthrough` (kernel 6.9+, root), reads of
//! committed content go straight from the kernel to the immutable object
//! file instead; see [`MountOptions::passthrough`] for its limits.

mod filesystem;
mod invalidate;
mod open_state;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, MountOption, SessionACL};

use crate::fs::{Attr, FileKind, Fs, FsError, system_time};

/// How long the kernel may trust entries and attributes. Long: changes
/// made through the mount update the kernel's caches, and changes from
/// elsewhere are pushed as invalidations (`tsmfs serve`).
pub const TTL: Duration = Duration::from_secs(3600);

/// Largest write the kernel sends in one request.
const MAX_WRITE: u32 = 1024 * 1024;

/// `st_blksize`: the I/O size programs such as `cp` and `cat` use.
pub const BLOCK_SIZE: u32 = 128 * 1024;

/// Kernel readahead on the mount, in KiB.
const READ_AHEAD_KB: u32 = 1024;

/// FUSE worker threads.
const THREADS: usize = 4;

/// How to mount.
#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// Let every user use the mount (`allow_other`); otherwise only the
    /// user who mounted it.
    pub allow_other: bool,
    /// Refuse every change with EROFS.
    pub read_only: bool,
    /// Let the kernel read committed content straight from object files
    /// (FUSE passthrough, kernel 6.9+, root). Faster cold reads, with two
    /// limits the kernel imposes: while a file is open through passthrough,
    /// opening it for writing fails with ETXTBSY, and new readers of a file
    /// replaced meanwhile read the older version until those opens close.
    pub passthrough: bool,
}

/// Why mounting failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point is unusable.
    #[error("mount point {}: {reason}", path.display())]
    MountPoint {
        /// The mount point.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The kernel refused the mount.
    #[error("could not mount FUSE at {}: {source}{hint}", path.display())]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
        /// What to try.
        hint: &'static str,
    },
}

/// A mounted tree. Unmount with [`Mounted::unmount`]; dropping it
/// unmounts too but does not wait for the worker threads.
pub struct Mounted {
    session: fuser::BackgroundSession,
    mountpoint: PathBuf,
    passthrough: Arc<std::sync::atomic::AtomicBool>,
    invalidator: invalidate::Invalidator,
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("mountpoint", &self.mountpoint).finish()
    }
}

impl Mounted {
    /// Where the tree is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Whether the kernel granted FUSE passthrough for reads.
    pub fn passthrough(&self) -> bool {
        self.passthrough.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the session ended (unmounted from outside, e.g. `umount`).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Unmount and wait for the worker threads to finish.
    pub fn unmount(mut self) -> std::io::Result<()> {
        self.invalidator.stop();
        self.session.umount_and_join()
    }

    /// Wait until the session ends by itself (unmounted from outside).
    pub fn join(self) -> std::io::Result<()> {
        let Mounted { session, mut invalidator, .. } = self;
        while !session.guard.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        invalidator.stop();
        // Not `session.join()`: it ends by dropping fuser's mount handle,
        // which unmounts *by path* whatever is mounted there now. After an
        // outside `umount`, that may already be a new mount of the same
        // directory (`umount M && tsmfs mount D M` lost the new mount
        // every time). The session thread is done and the connection is
        // gone; the handle's descriptor is left to the process's exit.
        std::mem::forget(session);
        Ok(())
    }
}

/// Mount `fs` at `mountpoint`.
pub fn mount(fs: Arc<Fs>, mountpoint: &Path, options: &MountOptions) -> Result<Mounted, MountError> {
    check_mountpoint(mountpoint)?;
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::Mount {
            path: mountpoint.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
            hint: " (/dev/fuse is missing: load the fuse module or run where FUSE is available)",
        });
    }
    let config = session_config("tsmfs", options);
    let passthrough = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let notifier = Arc::new(invalidate::AttrNotifier::default());
    let adapter = filesystem::TsmFuse::new(fs.clone(), options, passthrough.clone(), notifier.clone());
    let session = fuser::spawn_mount(adapter, mountpoint, &config).map_err(|source| {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                " (mounting needs root, or fusermount3 from the fuse3 package and user_allow_other in /etc/fuse.conf for --allow-other)"
            }
            Some(libc::ENOENT) => " (is fusermount3 installed? apt-get install fuse3)",
            _ => "",
        };
        MountError::Mount { path: mountpoint.to_path_buf(), source, hint }
    })?;
    notifier.connect(session.notifier());
    raise_readahead(mountpoint);
    let invalidator =
        invalidate::Invalidator::start(&fs, session.notifier()).map_err(|source| MountError::Mount {
            path: mountpoint.to_path_buf(),
            source,
            hint: " (could not start the invalidation thread)",
        })?;
    Ok(Mounted { session, mountpoint: mountpoint.to_path_buf(), passthrough, invalidator })
}

/// How a FUSE session named `name` is mounted: tsmfs's mount options,
/// access and worker threads. Public so that the benchmarks' baseline
/// filesystem (examples/nullfs.rs) mounts exactly as tsmfs does.
pub fn session_config(name: &str, options: &MountOptions) -> fuser::Config {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(name.into()),
        // fuser hands `Subtype` to fusermount3 only; the kernel takes it
        // as a plain option, and shows the mount as type `fuse.NAME`.
        MountOption::CUSTOM(format!("subtype={name}")),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        if options.read_only { MountOption::RO } else { MountOption::RW },
    ];
    // Not `RootAndOwner`: fuser implements it with `allow_other`, which
    // fusermount3 refuses to ordinary users unless /etc/fuse.conf has
    // `user_allow_other`, so a user's plain mount failed.
    config.acl = if options.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    config
}

/// What tsmfs asks of the kernel at INIT, passthrough aside: 1 MiB
/// writes, atomic O_TRUNC, readdirplus, parallel directory operations,
/// cached symlinks, and setid bits and capabilities cleared by tsmfs
/// (`FUSE_HANDLE_KILLPRIV_V2`: otherwise the kernel asks for
/// `security.capability` before nearly every write). Public for the same
/// reason as [`session_config`].
pub fn negotiate(config: &mut fuser::KernelConfig) {
    let _ = config.set_max_write(MAX_WRITE);
    let wanted = fuser::InitFlags::FUSE_ATOMIC_O_TRUNC
        | fuser::InitFlags::FUSE_DO_READDIRPLUS
        | fuser::InitFlags::FUSE_READDIRPLUS_AUTO
        | fuser::InitFlags::FUSE_PARALLEL_DIROPS
        | fuser::InitFlags::FUSE_CACHE_SYMLINKS
        | fuser::InitFlags::FUSE_HANDLE_KILLPRIV_V2;
    for flag in wanted.iter() {
        if config.add_capabilities(flag).is_err() {
            tracing::debug!("kernel lacks FUSE capability {flag:?}");
        }
    }
}

/// Let the kernel read ahead further than its FUSE default of 128 KiB, so
/// sequential reads arrive as fewer, larger requests (1 MiB, the most one
/// request carries). Best effort: needs root and sysfs.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    // The first request on the mount waits for INIT, which would otherwise
    // lower the setting again.
    let dev = match std::fs::metadata(mountpoint) {
        Ok(meta) => meta.dev(),
        Err(e) => return tracing::debug!("stat {}: {e}", mountpoint.display()),
    };
    let bdi = format!("/sys/class/bdi/{}:{}/read_ahead_kb", libc::major(dev), libc::minor(dev));
    if let Err(e) = std::fs::write(&bdi, READ_AHEAD_KB.to_string()) {
        tracing::debug!("could not raise readahead ({bdi}): {e}");
    }
}

/// If `path` is a FUSE mount whose daemon is gone (a crash or SIGKILL
/// leaves it answering ENOTCONN), detach it so it can be mounted again.
/// Returns whether there was one. Needs root (or the mount's owner).
pub fn clear_stale_mount(path: &Path) -> std::io::Result<bool> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // statfs, not stat: the kernel answers stat of a mount's root from its
    // attribute cache, but always asks the daemon for statfs.
    // SAFETY: statfs writes into the zeroed struct we own; the path is
    // NUL-terminated.
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stats) } == 0 {
        return Ok(false);
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOTCONN) {
        return Ok(false);
    }
    // SAFETY: umount2 reads the NUL-terminated path we own.
    if unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    tracing::warn!("{}: detached a stale mount left by a dead tsmfs", path.display());
    Ok(true)
}

fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let fail = |reason: String| MountError::MountPoint { path: path.to_path_buf(), reason };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    Ok(())
}

/// The errno for a core error: the one place FUSE errors are decided.
pub fn errno(err: &FsError) -> Errno {
    let code = match err {
        FsError::NotFound => libc::ENOENT,
        FsError::Exists => libc::EEXIST,
        FsError::NotDir => libc::ENOTDIR,
        FsError::IsDir => libc::EISDIR,
        FsError::NotEmpty => libc::ENOTEMPTY,
        FsError::NameTooLong => libc::ENAMETOOLONG,
        FsError::Invalid(_) => libc::EINVAL,
        FsError::NotPermitted(_) => libc::EPERM,
        FsError::AccessDenied => libc::EACCES,
        FsError::BadHandle => libc::EBADF,
        FsError::NoAttr => libc::ENODATA,
        FsError::Range => libc::ERANGE,
        FsError::TooBig => libc::EFBIG,
        FsError::Unsupported(_) => libc::EOPNOTSUPP,
        FsError::ReadOnly => libc::EROFS,
        FsError::Loop => libc::ELOOP,
        // FUSE writes carry no precondition; this is only for a frontend
        // that asked for one.
        FsError::PreconditionFailed => libc::ECANCELED,
        FsError::LimitReached(_) => libc::ENOSPC,
        FsError::Internal(_) => libc::EIO,
        FsError::Retry => libc::EAGAIN,
        FsError::ChecksumMismatch => libc::EBADMSG,
        FsError::WritesLost { disk_full: true } => libc::ENOSPC,
        FsError::WritesLost { disk_full: false } => libc::EIO,
        FsError::Store(e) => {
            // An object the metadata names but the store lacks is lost
            // data (EIO), not a missing name; `tsmfs fsck` tells which.
            let code = e.raw_os_error().filter(|&code| code != libc::ENOENT).unwrap_or(libc::EIO);
            if code == libc::EIO {
                tracing::error!("{err} (run `tsmfs fsck`)");
            }
            code
        }
        FsError::Meta(e) if e.is_disk_full() => libc::ENOSPC,
        FsError::Meta(e) if e.is_read_only() => libc::EROFS,
        FsError::Meta(_) => {
            tracing::error!("{err}");
            libc::EIO
        }
    };
    Errno::from_i32(code)
}

/// The inverse of [`crate::fs::system_time`], saturating at the i64 range.
pub(crate) fn nanos(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

pub(crate) fn file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino.0),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: system_time(attr.atime_ns),
        mtime: system_time(attr.mtime_ns),
        ctime: system_time(attr.ctime_ns),
        crtime: system_time(attr.btime_ns),
        kind: file_type(attr.kind),
        perm: (attr.perm & 0o7777) as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// Nanoseconds of a time the kernel sent, as fuser 0.18 decodes it.
///
/// fuser turns the kernel's `(secs, nsecs)` into `EPOCH - (|secs|, nsecs)`
/// for negative `secs`, which is off by up to two seconds: -86400 s + 123 ns
/// arrives as -86400.000000123 s. This undoes exactly that; the FUSE test
/// of times before 1970 fails if fuser changes.
pub(crate) fn nanos_from_kernel(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(_) => nanos(time),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).map_or(i64::MIN, |s| -s);
            secs.saturating_mul(1_000_000_000).saturating_add(i64::from(d.subsec_nanos()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_including_before_the_epoch() {
        for ns in [0i64, 1, 1_700_000_000_123_456_789, -1, -5_000_000_001, 4_102_444_800_000_000_000] {
            assert_eq!(nanos(system_time(ns)), ns);
        }
    }

    #[test]
    fn kernel_times_before_the_epoch_are_decoded_as_sent() {
        // What fuser hands us for the kernel's (-86400, 123).
        let decoded = UNIX_EPOCH - Duration::new(86_400, 123);
        assert_eq!(nanos_from_kernel(decoded), -86_400 * 1_000_000_000 + 123);
        assert_eq!(nanos_from_kernel(UNIX_EPOCH + Duration::new(5, 7)), 5_000_000_007);
    }

    #[test]
    fn every_error_has_an_errno() {
        assert_eq!(errno(&FsError::NotFound).code(), libc::ENOENT);
        assert_eq!(errno(&FsError::NotEmpty).code(), libc::ENOTEMPTY);
        assert_eq!(errno(&FsError::NoAttr).code(), libc::ENODATA);
        assert_eq!(errno(&FsError::ReadOnly).code(), libc::EROFS);
        let full = crate::store::StoreError::Io {
            action: "write",
            path: "x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(errno(&FsError::Store(full)).code(), libc::ENOSPC);
    }
}
