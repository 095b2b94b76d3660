//! The fs core: the one API both frontends (FUSE, WebDAV) and the CLI call.
//!
//! It owns the metadata database and the content store and keeps them
//! consistent: every change is one SQLite transaction that also appends to
//! the change log; content is published to the store before the
//! transaction that refers to it commits, and removed only after the
//! transaction that dropped its last reference. After each commit the
//! change goes out to in-process subscribers ([`Fs::subscribe`]).
//!
//! Permission bits are stored, not enforced: the FUSE mount runs with
//! `default_permissions` (the kernel checks them) and WebDAV access is
//! decided by the server's own authentication.

mod access;
mod check;
mod commit;
mod content;
mod durable;
mod error;
mod etag;
mod events;
mod extents;
mod inline;
mod io;
mod locks;
mod namespace;
mod open;
mod pending;
mod put;
mod setattr;

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use access::{Identity, Mode, Want};
pub use check::{CheckReport, GcReport, Problem, ScrubReport};
pub use error::{FsError, FsResult};
pub use etag::ContentFile;
pub use events::{Change, ChangeOp, Origin};
pub use io::{CopyOutcome, OpenFlags, Opened};
pub use locks::{DEFAULT_LOCK_TIMEOUT_S, LockHolder, LockRequest, MAX_LOCKS, lock_key};
pub use put::{Precondition, PutOptions, Staged, StagedPut, Stager};

pub use namespace::RenameFlags;
pub use setattr::{ETAG_XATTR, SetAttr, TimeSet, XattrMode};

use crate::id::{ContentId, Ino};
use crate::meta::{ChangeRecord, Db, Meta, MetaError};
pub use crate::meta::{DirRow, FileKind, Inode as Attr, PathLock, Totals};

/// WebDAV dead properties of one resource: (Clark name `{ns}local`, the
/// property element's XML), by name.
pub type DeadProps = Vec<(String, Vec<u8>)>;
use crate::store::{PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, Store, StoreError};
use events::Events;

/// Longest name of one directory entry, in bytes.
pub const NAME_MAX: usize = 255;

/// The SHA-1 of no bytes. Empty files store no object; their content id is
/// this with `hi = 0`.
pub const EMPTY_SHA1: [u8; 20] = [
    0xda, 0x39, 0xa3, 0xee, 0x5e, 0x6b, 0x4b, 0x0d, 0x32, 0x55, 0xbf, 0xef, 0x95, 0x60, 0x18, 0x90, 0xaf,
    0xd8, 0x07, 0x09,
];

/// The content id of an empty file.
pub const EMPTY_CONTENT: ContentId = ContentId::new(0, EMPTY_SHA1);

/// How often and how long to retry a held data-directory lock.
const LOCK_ATTEMPTS: usize = 25;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// The file that marks a data directory and is locked by its writer.
const LOCK_FILE: &str = "tsmfs.lock";

/// Who is asking: ownership of new files and the change log's origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User id new inodes get.
    pub uid: u32,
    /// Group id new inodes get (unless the parent is setgid).
    pub gid: u32,
    /// Frontend the request came through.
    pub origin: Origin,
}

impl Caller {
    /// This process's effective ids.
    pub fn process(origin: Origin) -> Caller {
        // SAFETY: geteuid/getegid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Caller { uid, gid, origin }
    }
}

/// How to open a data directory.
#[derive(Clone, Copy, Debug)]
pub struct FsOptions {
    /// Refuse every change; take no lock and run no recovery, so this
    /// works beside a running `tsmfs serve`.
    pub read_only: bool,
    /// WebDAV locks in force at once ([`MAX_LOCKS`] by default).
    pub max_locks: u64,
    /// The longest a committed change waits for the disk (see
    /// `durable.rs`); fsync does not wait.
    pub sync_interval: std::time::Duration,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions { read_only: false, max_locks: MAX_LOCKS, sync_interval: durable::SYNC_INTERVAL }
    }
}

/// File system statistics (statfs).
#[derive(Clone, Copy, Debug)]
pub struct StatFs {
    /// Total blocks of the underlying filesystem.
    pub blocks: u64,
    /// Free blocks.
    pub blocks_free: u64,
    /// Blocks available to unprivileged users.
    pub blocks_available: u64,
    /// Inodes in use.
    pub files: u64,
    /// Free inode slots (reported as plenty).
    pub files_free: u64,
    /// Block size.
    pub block_size: u32,
    /// Longest name.
    pub name_max: u32,
}

/// Nanoseconds since the epoch, as times are stored, as a `SystemTime`
/// (negative: before the epoch).
pub fn system_time(ns: i64) -> std::time::SystemTime {
    use std::time::{Duration, UNIX_EPOCH};
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

impl Attr {
    /// The content id a regular file's bytes have (empty files
    /// included), when known: a commit may leave it to be computed later
    /// ([`Fs::with_content_id`] computes it).
    pub fn content_id(&self) -> Option<ContentId> {
        match (self.kind, self.content) {
            (FileKind::File, Some(id)) => Some(id),
            (FileKind::File, None) if self.size == 0 => Some(EMPTY_CONTENT),
            _ => None,
        }
    }

    /// Full `st_mode`: kind bits and permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | self.perm
    }
}

/// Errors opening or creating a data directory.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The path is not a data directory.
    #[error("{} is not a tsmfs data directory (run `tsmfs init {}` first)", .0.display(), .0.display())]
    NotInitialized(PathBuf),
    /// `init` on a directory that already holds one.
    #[error("{} already holds a tsmfs data directory", .0.display())]
    AlreadyInitialized(PathBuf),
    /// `init` on a non-empty directory that is not ours.
    #[error("{} is not empty; tsmfs init wants a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    /// A writable open of a data directory on read-only media.
    #[error("{} is on a read-only file system: serve or mount it with --read-only", .0.display())]
    ReadOnlyMedia(PathBuf),
    /// Another process holds the data directory.
    #[error("{} is in use by another tsmfs process{}", .0.display(), describe_holder(.1))]
    Locked(PathBuf, Option<LockHolderProcess>),
    /// An I/O failure on the directory itself.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database failed to open.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Recovery at open failed.
    #[error("recovery failed: {0}")]
    Recovery(#[from] FsError),
}

/// Space on the filesystem under a data directory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Free for unprivileged users.
    pub available: u64,
    /// In use (by anything on that filesystem).
    pub used: u64,
}

/// Counters of the I/O the core served (for tests and monitoring).
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Read calls served.
    pub reads: std::sync::atomic::AtomicU64,
    /// Bytes returned by reads.
    pub bytes_read: std::sync::atomic::AtomicU64,
    /// Write calls served.
    pub writes: std::sync::atomic::AtomicU64,
    /// Commits of new content.
    pub commits: std::sync::atomic::AtomicU64,
}

impl IoCounters {
    /// Read calls served so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the fs core shares with its background threads (the filesystem
/// sync and the hashing of content ids): everything they need, nothing
/// of the frontends'. Opaque outside the core; `Fs` derefs to it so its
/// methods reach these fields directly.
pub struct Shared {
    data_dir: PathBuf,
    meta: Meta,
    store: Store,
    /// Versions being read (their retired extents are kept).
    pins: Arc<open::Pins>,
    /// The newest change committed (its sequence number).
    last_seq: AtomicU64,
    read_only: bool,
    durable: durable::DurableState,
    etags: etag::Etags,
    open_files: open::OpenFiles,
    /// Inodes whose last reference went after they lost their last name:
    /// deleted in batches (see [`Shared::delete_orphan`]).
    orphans: parking_lot::Mutex<Vec<Ino>>,
    /// What the core and its frontends count.
    metrics: Arc<crate::metrics::Metrics>,
    /// Where recently read small chunks are.
    inline: inline::InlineChunks,
    /// False while no inode has a `security.capability` xattr (see
    /// [`Fs::getxattr`]); always true for a read-only open, whose data
    /// directory another process may change.
    capabilities_may_exist: std::sync::atomic::AtomicBool,
}

/// An open data directory.
pub struct Fs {
    shared: Arc<Shared>,
    events: Events,
    max_locks: u64,
    counters: IoCounters,
    /// The background threads, stopped with the `Fs`.
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Held for the lifetime of a writable `Fs`: one writer per data dir.
    _lock: Option<File>,
}

impl std::ops::Deref for Fs {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl std::fmt::Debug for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fs").field("data_dir", &self.data_dir).finish()
    }
}

impl Fs {
    /// Create a new data directory with an empty root owned by `owner`.
    pub fn init(data_dir: &Path, owner: Caller) -> Result<(), OpenError> {
        match std::fs::read_dir(data_dir) {
            Ok(mut entries) => {
                if data_dir.join(crate::meta::DB_FILE).exists() {
                    return Err(OpenError::AlreadyInitialized(data_dir.to_path_buf()));
                }
                if entries.next().is_some() {
                    return Err(OpenError::NotEmpty(data_dir.to_path_buf()));
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let io = |source| OpenError::Io { action: "create", path: data_dir.to_path_buf(), source };
                if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(data_dir).map_err(io)?;
            }
            Err(source) => {
                return Err(OpenError::Io { action: "read", path: data_dir.to_path_buf(), source });
            }
        }
        // An empty directory given to init becomes private too: what it
        // will hold (names, xattrs, every file's bytes) is its owner's.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE)).map_err(
            |source| OpenError::Io { action: "set the mode of", path: data_dir.to_path_buf(), source },
        )?;
        let _lock = lock_data_dir(data_dir)?;
        Store::open(data_dir)?;
        let meta = Meta::open(data_dir)?;
        meta.write(true, |db| {
            let root = db.insert_inode(&crate::meta::NewInode {
                kind: FileKind::Dir,
                perm: 0o755,
                uid: owner.uid,
                gid: owner.gid,
                size: 0,
                now_ns: now_ns(),
                nlink: 2,
                rdev: 0,
                content: None,
                symlink: None,
            })?;
            if root != Ino::ROOT {
                return Err(MetaError::Corrupt(format!("root inode got number {root}")));
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Open an existing data directory.
    pub fn open(data_dir: &Path, options: FsOptions) -> Result<Fs, OpenError> {
        if !data_dir.join(crate::meta::DB_FILE).is_file() {
            return Err(OpenError::NotInitialized(data_dir.to_path_buf()));
        }
        let lock = if options.read_only { None } else { Some(lock_data_dir(data_dir)?) };
        let meta = if options.read_only { Meta::open_read_only(data_dir)? } else { Meta::open(data_dir)? };
        let (last_seq, durable_seq, capabilities) = meta.read(|db| {
            let durable = db.setting(durable::DURABLE_SEQ)?.and_then(|v| v.parse().ok()).unwrap_or(0);
            let capabilities = db.any_xattr_named(setattr::CAPABILITY_XATTR)?;
            Ok::<_, MetaError>((db.last_change()?, durable, capabilities))
        })?;
        let shared = Arc::new(Shared {
            data_dir: data_dir.to_path_buf(),
            store: Store::open(data_dir)?,
            meta,
            pins: Arc::default(),
            last_seq: AtomicU64::new(last_seq),
            read_only: options.read_only,
            durable: durable::DurableState::new(durable_seq, options.sync_interval),
            etags: etag::Etags::default(),
            open_files: open::OpenFiles::default(),
            orphans: parking_lot::Mutex::new(Vec::new()),
            metrics: Arc::default(),
            inline: inline::InlineChunks::default(),
            capabilities_may_exist: std::sync::atomic::AtomicBool::new(capabilities || options.read_only),
        });
        let fs = Fs {
            shared,
            events: Events::default(),
            max_locks: options.max_locks,
            counters: IoCounters::default(),
            threads: parking_lot::Mutex::new(Vec::new()),
            _lock: lock,
        };
        if !options.read_only {
            fs.recover()?;
            fs.start_threads().map_err(|source| OpenError::Io {
                action: "start the background threads of",
                path: data_dir.to_path_buf(),
                source,
            })?;
        }
        Ok(fs)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What I/O the core has served.
    pub fn counters(&self) -> &IoCounters {
        &self.counters
    }

    /// What this process counts, for `/.tsmfs/metrics`; frontends record
    /// their requests here.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The metrics with the store's totals brought up to date when the
    /// last ones are older than `max_age` (they count every row: a
    /// scrape every few seconds must not run them each time).
    pub fn metrics_with_totals(&self, max_age: std::time::Duration) -> FsResult<&crate::metrics::Metrics> {
        if self.metrics.totals_due(max_age) {
            let totals = self.totals()?;
            self.metrics.set_totals(totals.files, totals.logical_bytes, totals.chunk_bytes);
        }
        Ok(&self.metrics)
    }

    /// WebDAV locks that may be in force at once.
    pub fn max_locks(&self) -> u64 {
        self.max_locks
    }

    /// Whether changes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Call `f` after every committed change (see [`events`]).
    pub fn subscribe(&self, f: impl Fn(&Change) + Send + Sync + 'static) {
        self.events.subscribe(Box::new(f));
    }

    /// Attributes of `ino`, as the mount shows them (with pending writes
    /// and held attributes, for an open inode: one read, under its lock).
    pub fn getattr(&self, ino: Ino) -> FsResult<Attr> {
        if let Some(open) = self.open_files.inode(ino) {
            return self.read_open(&open)?.ok_or(FsError::NotFound);
        }
        // It may have been opened since: `current` looks again.
        let inode = self.meta.read_point(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        self.current(inode)
    }

    /// Totals for `tsmfs stats`.
    pub fn totals(&self) -> FsResult<Totals> {
        Ok(self.meta.read(|db| db.totals())?)
    }

    /// Bytes the content store occupies on disk: object files, and the
    /// chunks kept in the database.
    pub fn stored_bytes(&self) -> FsResult<u64> {
        Ok(self.store.disk_usage()? + self.meta.read(|db| db.inline_bytes())?)
    }

    /// statfs: space of the filesystem holding the data directory.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let vfs = self.vfs()?;
        let totals = self.totals()?;
        Ok(StatFs {
            blocks: vfs.blocks(),
            blocks_free: vfs.blocks_free(),
            blocks_available: vfs.blocks_available(),
            files: totals.files + totals.dirs + totals.others,
            files_free: u32::MAX as u64,
            block_size: vfs.block_size() as u32,
            name_max: NAME_MAX as u32,
        })
    }

    /// Bytes free for unprivileged users, and in use, on the filesystem
    /// holding the data directory (one statvfs: cheap enough for every
    /// PROPFIND that asks for quota).
    pub fn space(&self) -> FsResult<Space> {
        let vfs = self.vfs()?;
        let unit = vfs.fragment_size();
        Ok(Space {
            available: vfs.blocks_available().saturating_mul(unit),
            used: vfs.blocks().saturating_sub(vfs.blocks_free()).saturating_mul(unit),
        })
    }

    fn vfs(&self) -> FsResult<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.data_dir)
            .map_err(|e| StoreError::io("statfs", &self.data_dir)(std::io::Error::from(e)).into())
    }

    /// Make every commit so far durable (what `fsync` does for one file,
    /// for the whole tree), and delete what waits for that.
    pub fn sync(&self) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.purge_orphans();
        self.sync_to(self.last_seq.load(Ordering::Acquire), durable::Wait::Pruned)
    }

    /// Make every committed change durable (fsync of a directory: its
    /// entries are changes like any other, and so are the files they
    /// name). Returns at once if nothing changed since the last sync.
    pub fn sync_changes(&self) -> FsResult<()> {
        self.sync_for(None)
    }

    /// Clean shutdown: make everything durable, stop the background
    /// threads and write the WAL back into the database file.
    /// A full disk is not an error here: every change is already in the
    /// log, which the next open carries on from; nothing is lost.
    pub fn checkpoint(&self) -> FsResult<()> {
        self.sync()?;
        match self.meta.checkpoint() {
            Err(e) if e.is_disk_full() => {
                tracing::warn!("{e}: the write-ahead log keeps every change; the next start checkpoints it");
                Ok(())
            }
            result => Ok(result?),
        }
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.read_only { Err(FsError::ReadOnly) } else { Ok(()) }
    }

    /// Run `f` as one write transaction, then tell subscribers what
    /// changed.
    fn transact<T>(&self, origin: Origin, f: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>) -> FsResult<T> {
        self.check_writable()?;
        let (value, changes) = self.run_tx(origin, f)?;
        for change in &changes {
            self.events.emit(change);
        }
        Ok(value)
    }
}

impl Shared {
    /// Run `f` as one write transaction; returns what it logged. Contents
    /// it released lose their variants (and objects) once nothing uses
    /// them. Subscribers are not told: see [`Fs::transact`].
    fn run_tx<T>(
        &self,
        origin: Origin,
        f: impl FnOnce(&mut Tx<'_, '_>) -> FsResult<T>,
    ) -> FsResult<(T, Vec<Change>)> {
        let published = std::cell::RefCell::new(Vec::new());
        let started = std::time::Instant::now();
        let written = self.meta.write(false, |db| {
            let mut tx = Tx {
                db,
                store: &self.store,
                origin,
                now: now_ns(),
                first_seq: None,
                changes: Vec::new(),
                released: Vec::new(),
                published: &published,
                created: Vec::new(),
            };
            let value = f(&mut tx)?;
            if tx.first_seq.is_some() && tx.changes.is_empty() {
                // Its rows would be filed under a number the next change takes.
                return Err(FsError::Internal("a transaction used a change number it never logged"));
            }
            Ok::<_, FsError>((value, tx.changes, tx.released))
        });
        self.metrics.commit(written.is_ok(), started.elapsed());
        let (value, changes, released) = match written {
            Ok(written) => written,
            Err(e) if e.is_disk_full() && self.store.release_reserve() => {
                // The commits that free space (the next prune round, a
                // retried unlink) find room now; the reserve is taken
                // again once there is room.
                tracing::warn!(
                    "the disk is full: gave back the {} MiB kept for metadata",
                    crate::store::METADATA_RESERVE >> 20
                );
                self.remove_unused(&published.into_inner());
                return Err(e);
            }
            Err(e) => {
                // Objects published for a transaction that failed (a full
                // disk, say) name nothing: free their space now (removal
                // re-checks that no row uses them).
                self.remove_unused(&published.into_inner());
                return Err(e);
            }
        };
        if let Some(last) = changes.last() {
            self.last_seq.fetch_max(last.seq, Ordering::AcqRel);
        }
        if !released.is_empty() {
            self.remove_unused(&released);
        }
        Ok((value, changes))
    }
}

impl Drop for Fs {
    fn drop(&mut self) {
        // Without its threads (an open that failed in recovery) nothing
        // would answer the sync.
        let running = !self.threads.lock().is_empty();
        if !self.read_only && running {
            if let Err(e) = self.sync() {
                tracing::warn!("closing {}: {e}", self.data_dir.display());
            }
            self.stop_threads();
        }
    }
}

/// One write transaction in progress, with what it must do after commit.
pub(crate) struct Tx<'a, 'c> {
    db: &'a Db<'c>,
    store: &'a Store,
    origin: Origin,
    /// The transaction's timestamp, used for every time it sets.
    now: i64,
    /// The sequence number of its first change (see [`Tx::seq`]).
    first_seq: Option<u64>,
    changes: Vec<Change>,
    /// Contents whose last reference this transaction dropped.
    released: Vec<ContentId>,
    /// Objects this transaction published: removed again if it fails.
    published: &'a std::cell::RefCell<Vec<ContentId>>,
    /// Files it created (and may write in the same change).
    created: Vec<Ino>,
}

impl Tx<'_, '_> {
    /// The sequence number of this transaction's first change (logged or
    /// still to come; the transaction must log one): what its extents and
    /// undo records are filed under. All its changes commit together, so
    /// one number serves them all.
    fn seq(&mut self) -> FsResult<u64> {
        if let Some(seq) = self.first_seq {
            return Ok(seq);
        }
        let seq = self.db.next_change_seq()?;
        self.first_seq = Some(seq);
        Ok(seq)
    }

    /// Append to the change log and queue the event.
    fn log(
        &mut self,
        op: ChangeOp,
        ino: Ino,
        entry: Option<(Ino, &[u8])>,
        new_entry: Option<(Ino, &[u8])>,
        content: Option<ContentId>,
        also: Vec<Ino>,
    ) -> FsResult<()> {
        let seq = self.db.log_change(
            &ChangeRecord { origin: self.origin.as_str(), op: op.as_str(), ino, entry, new_entry, content },
            self.now,
        )?;
        if *self.first_seq.get_or_insert(seq) > seq {
            return Err(FsError::Internal("a change was filed under a later sequence number"));
        }
        let entries =
            entry.into_iter().chain(new_entry).map(|(parent, name)| (parent, name.to_vec())).collect();
        self.changes.push(Change { seq, origin: self.origin, op, ino, entries, also, content });
        Ok(())
    }

    /// Delete an inode row: its extents are retired (their chunks go once
    /// that is durable) and its content released.
    fn delete_inode(&mut self, inode: &Attr) -> FsResult<()> {
        if inode.kind == FileKind::File {
            let seq = self.seq()?;
            self.db.retire_all_extents(inode.ino, seq)?;
        }
        self.db.delete_inode(inode.ino)?;
        if let Some(id) = inode.content {
            self.release_content(id)?;
        }
        Ok(())
    }
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Check one directory entry name.
pub(crate) fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name == b"." || name == b".." {
        return Err(FsError::Invalid("reserved or empty name"));
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid("name contains '/' or NUL"));
    }
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

fn lock_data_dir(data_dir: &Path) -> Result<File, OpenError> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::EROFS) => OpenError::ReadOnlyMedia(data_dir.to_path_buf()),
            _ => OpenError::Io { action: "open", path: path.clone(), source },
        })?;
    // Retry briefly: a child forked by another thread of this process may
    // hold a copy of a just-closed lock descriptor until it execs.
    for _ in 0..LOCK_ATTEMPTS {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => std::thread::sleep(LOCK_RETRY),
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(OpenError::Io { action: "lock", path, source });
            }
        }
    }
    Err(OpenError::Locked(data_dir.to_path_buf(), lock_holder(&file)))
}

/// The process holding a data directory's lock, as /proc/locks shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockHolderProcess {
    /// Its process id.
    pub pid: u32,
    /// Whether it is a zombie: killed, but a thread of it cannot finish
    /// (typically stuck on its own FUSE mount).
    pub dying: bool,
}

fn describe_holder(holder: &Option<LockHolderProcess>) -> String {
    match holder {
        None => String::new(),
        Some(LockHolderProcess { pid, dying: false }) => format!(" (pid {pid})"),
        Some(LockHolderProcess { pid, dying: true }) => format!(
            " (pid {pid}, which was killed but cannot finish exiting: a thread of it is stuck on its FUSE mount; \
             `umount -f MOUNTPOINT` releases it)"
        ),
    }
}

/// Who holds the flock on `file`: its device and inode in /proc/locks.
fn lock_holder(file: &File) -> Option<LockHolderProcess> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let key = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid: u32 = locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&key.as_str()))
            .then(|| fields.get(4)?.parse().ok())?
    })?;
    // The state follows the command name, which may hold spaces but ends
    // at the last ')'.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    Some(LockHolderProcess { pid, dying: state == "Z" })
}

/// What the core's unit tests share.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Caller, Fs, FsOptions, Origin};

    /// A data directory made in a new temporary directory and opened with
    /// `options`; the caller that made it.
    pub(crate) fn fresh_fs(options: FsOptions) -> (tempfile::TempDir, Fs, Caller) {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let caller = Caller::process(Origin::Cli);
        Fs::init(&data, caller).expect("init");
        let fs = Fs::open(&data, options).expect("open");
        (dir, fs, caller)
    }
}
