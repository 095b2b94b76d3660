//! Metadata in SQLite: inodes, directory entries, contents, xattrs, WebDAV
//! dead properties and locks, and the change log.
//!
//! One writer connection (behind a mutex) runs every change as one
//! `BEGIN IMMEDIATE` transaction; a small pool of read connections serves
//! lookups concurrently (WAL lets them read while the writer writes). No
//! rusqlite type leaves this module: callers get the records below.

mod checkpoint;
mod queries;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

pub use queries::{Db, NewInode};
pub use schema::SCHEMA_VERSION;

use crate::id::{ContentId, Ino};

/// The SQLite file inside a data directory.
pub const DB_FILE: &str = "meta.sqlite";

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A SQLite call failed.
    #[error("metadata database: could not {action}: {source}")]
    Sql {
        /// What was being done.
        action: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// The data dir was written by a newer tsmfs.
    #[error("metadata schema version {found} is newer than this tsmfs understands ({known})")]
    SchemaTooNew {
        /// Version in the file.
        found: u32,
        /// Newest version this build knows.
        known: u32,
    },
    /// A file operation on the database files failed.
    #[error("metadata database: could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A read-only open found an older schema (it would need migrating).
    #[error(
        "metadata schema version {found} is older than this tsmfs's ({known}): open it writable once to upgrade"
    )]
    SchemaOld {
        /// Version in the file.
        found: u32,
        /// Version this build uses.
        known: u32,
    },
    /// On a read-only file system, the write-ahead log holds commits the
    /// database file does not: SQLite could read them only by writing.
    #[error(
        "{} is on a read-only file system and its write-ahead log holds changes not yet in the database: \
         mount it writable and open it once (e.g. `tsmfs fsck`), then read-only works",
        .0.display()
    )]
    LogOnReadOnlyMedia(PathBuf),
    /// A row holds a value no tsmfs writes (damaged database).
    #[error("metadata database is inconsistent: {0}")]
    Corrupt(String),
}

impl MetaError {
    pub(crate) fn sql(action: &'static str) -> impl FnOnce(rusqlite::Error) -> MetaError {
        move |source| MetaError::Sql { action, source }
    }

    /// Whether the error is SQLite reporting a full disk.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, MetaError::Sql { source: rusqlite::Error::SqliteFailure(e, _), .. }
            if e.code == rusqlite::ErrorCode::DiskFull)
    }

    /// Whether the database file could not be written (read-only media).
    pub fn is_read_only(&self) -> bool {
        matches!(self, MetaError::Sql { source: rusqlite::Error::SqliteFailure(e, _), .. }
            if e.code == rusqlite::ErrorCode::ReadOnly)
    }
}

/// What an inode is. Stored as its `S_IFMT` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
}

impl FileKind {
    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => libc::S_IFREG,
            FileKind::Dir => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
        }
    }

    /// The kind named by the `S_IFMT` bits of `mode`.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::File,
            libc::S_IFDIR => FileKind::Dir,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => return None,
        })
    }
}

/// One inode's attributes, as stored. Times are nanoseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// Inode number.
    pub ino: Ino,
    /// File type.
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (for symlinks, the target length).
    pub size: u64,
    /// Last access.
    pub atime_ns: i64,
    /// Last content change.
    pub mtime_ns: i64,
    /// Last status change.
    pub ctime_ns: i64,
    /// Creation.
    pub btime_ns: i64,
    /// Hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Device number of device nodes.
    pub rdev: u32,
    /// NFS-style generation number.
    pub generation: u64,
    /// The change that last wrote the file's bytes (0: none since the
    /// data directory was made or upgraded): names the version.
    pub data_seq: u64,
    /// The whole-file content id (the ETag) of a regular file, when known:
    /// `None` for an empty file, and for a file whose id is computed after
    /// its commit (see `fs::etag`).
    pub content: Option<ContentId>,
}

/// A stored content's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRecord {
    /// The id.
    pub id: ContentId,
    /// Length in bytes.
    pub size: u64,
    /// blake3 of the bytes.
    pub blake3: [u8; 32],
    /// Inodes whose whole content it is.
    pub refcount: u64,
    /// Extents (live or retired) that read it as a chunk; its object
    /// file exists while this is above 0.
    pub chunk_refs: u64,
}

/// One extent as stored: bytes `[off, off + len)` of a file are bytes
/// `[chunk_off, chunk_off + len)` of chunk `chunk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentRow {
    /// Offset in the file.
    pub off: u64,
    /// Length in bytes (> 0).
    pub len: u64,
    /// The chunk object.
    pub chunk: ContentId,
    /// Offset in the chunk.
    pub chunk_off: u64,
}

/// A retired extent, as the prune step sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetiredRow {
    /// Its row id (to delete it by).
    pub rowid: i64,
    /// The change that retired it.
    pub seq: u64,
    /// The file it belonged to.
    pub ino: Ino,
    /// The chunk it keeps referenced.
    pub chunk: ContentId,
}

/// A file's size and times before a change wrote its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteUndo {
    /// The change.
    pub seq: u64,
    /// Size before it.
    pub size: u64,
    /// mtime before it.
    pub mtime_ns: i64,
    /// ctime before it.
    pub ctime_ns: i64,
    /// The change created the file: before it, there was none.
    pub created: bool,
}

/// One directory entry with its child's attributes.
#[derive(Clone, Debug)]
pub struct DirRow {
    /// Cursor of this entry: pass it back to continue after it.
    pub cursor: u64,
    /// Entry name (bytes; need not be UTF-8).
    pub name: Vec<u8>,
    /// The child.
    pub inode: Inode,
}

/// A WebDAV lock on a path (RFC 4918, 6 and 9.10). Paths are the URL
/// path, percent-decoded, without a trailing slash (`""` is the root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathLock {
    /// The lock token (a URI).
    pub token: String,
    /// The locked path.
    pub path: Vec<u8>,
    /// Who took it, if the server knows principals.
    pub principal: Option<String>,
    /// The client's `DAV:owner` element, as XML.
    pub owner_xml: Option<Vec<u8>>,
    /// Depth infinity: covers everything below `path` too.
    pub deep: bool,
    /// Shared rather than exclusive.
    pub shared: bool,
    /// When it lapses (ns since the epoch); `None`: never.
    pub expires_ns: Option<i64>,
    /// The timeout it was granted, in seconds; `None`: infinite.
    pub timeout_s: Option<u64>,
}

/// One change-log entry as written.
#[derive(Clone, Debug)]
pub struct ChangeRecord<'a> {
    /// Which frontend caused it.
    pub origin: &'a str,
    /// Operation name (`create`, `write`, `rename`, ...).
    pub op: &'a str,
    /// The inode changed.
    pub ino: Ino,
    /// Entry affected: parent and name.
    pub entry: Option<(Ino, &'a [u8])>,
    /// Second entry (rename, link target).
    pub new_entry: Option<(Ino, &'a [u8])>,
    /// New content, for writes.
    pub content: Option<ContentId>,
}

/// Totals over the whole tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Regular files (inodes, not names).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Other inodes (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Sum of file sizes, each inode counted once.
    pub logical_bytes: u64,
    /// Sum of file sizes over all names (hard links counted each time).
    pub logical_bytes_by_name: u64,
    /// Distinct whole-file contents that files hold.
    pub contents: u64,
    /// Sum of distinct content sizes.
    pub content_bytes: u64,
    /// Chunk objects stored (including those retired extents keep until
    /// their change is durable).
    pub chunks: u64,
    /// Sum of chunk sizes: what the store holds.
    pub chunk_bytes: u64,
    /// Change log length.
    pub changes: u64,
}

/// The metadata database of one data directory.
pub struct Meta {
    path: PathBuf,
    /// Read-only media: connections open the file immutable.
    immutable: bool,
    /// Shared with the checkpoint thread, which holds it for a moment to
    /// let the log start over.
    writer: Arc<Mutex<Connection>>,
    readers: Mutex<Vec<Connection>>,
    /// Background WAL checkpoints (none when opened read-only).
    checkpointer: Option<checkpoint::Checkpointer>,
}

impl Drop for Meta {
    fn drop(&mut self) {
        // Readers and the checkpoint connection first: the last connection
        // to close checkpoints the log and removes it, but only if it can
        // write (the writer can).
        self.readers.lock().clear();
        self.checkpointer.take();
    }
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").field("path", &self.path).finish()
    }
}

/// Longest a statement waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Meta {
    /// Open the database in `data_dir`, creating and migrating as needed.
    pub fn open(data_dir: &Path) -> Result<Meta, MetaError> {
        let path = data_dir.join(DB_FILE);
        create_private(&path)?;
        let mut writer = Connection::open(&path).map_err(MetaError::sql("open"))?;
        configure(&writer)?;
        writer.pragma_update(None, "journal_mode", "WAL").map_err(MetaError::sql("enable WAL"))?;
        schema::migrate(&mut writer)?;
        // Checkpoints run on their own thread, off the commit path (its
        // threshold and why: checkpoint.rs).
        let writer = Arc::new(Mutex::new(writer));
        let checkpointer = Some(checkpoint::Checkpointer::start(&path, &writer)?);
        Ok(Meta { path, immutable: false, writer, readers: Mutex::new(Vec::new()), checkpointer })
    }

    /// Open for reading only: nothing is created, migrated or written, so
    /// this works beside a running writer and on read-only media. There
    /// SQLite cannot create the WAL index it reads through, so the file is
    /// opened immutable, which is right only while the log is empty (a
    /// clean shutdown checkpoints it).
    pub fn open_read_only(data_dir: &Path) -> Result<Meta, MetaError> {
        let path = data_dir.join(DB_FILE);
        let immutable = on_read_only_media(data_dir);
        if immutable && std::fs::metadata(wal_path(&path)).is_ok_and(|wal| wal.len() > 0) {
            return Err(MetaError::LogOnReadOnlyMedia(data_dir.to_path_buf()));
        }
        let conn = open_reader(&path, immutable)?;
        let found: u32 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(MetaError::sql("read schema version"))?;
        match found.cmp(&schema::SCHEMA_VERSION) {
            std::cmp::Ordering::Greater => {
                return Err(MetaError::SchemaTooNew { found, known: schema::SCHEMA_VERSION });
            }
            std::cmp::Ordering::Less => {
                return Err(MetaError::SchemaOld { found, known: schema::SCHEMA_VERSION });
            }
            std::cmp::Ordering::Equal => {}
        }
        Ok(Meta {
            path,
            immutable,
            writer: Arc::new(Mutex::new(conn)),
            readers: Mutex::new(Vec::new()),
            checkpointer: None,
        })
    }

    /// Run `f` on a read connection. Each statement sees the latest commit.
    pub fn read<T, E: From<MetaError>>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, E>) -> Result<T, E> {
        let pooled = self.readers.lock().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = f(&Db::new(&conn));
        self.readers.lock().push(conn);
        result
    }

    /// [`Meta::read`] for a short lookup (one row or a few): on the writer
    /// connection when no write is under way. Its page cache holds what
    /// was just written, while a read connection's cache is dropped
    /// whenever another connection commits, so a lookup right after a
    /// change costs no page reads. Never for long reads: a writer would
    /// wait for them.
    pub fn read_point<T, E: From<MetaError>>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, E>) -> Result<T, E> {
        if let Some(conn) = self.writer.try_lock() {
            return f(&Db::new(&conn));
        }
        self.read(f)
    }

    /// Run `f` in one write transaction; commit if it returns `Ok`, roll
    /// back otherwise. With `durable`, the commit is fsynced to disk
    /// (`synchronous=FULL` for this transaction); otherwise it survives a
    /// process crash but may be lost with the machine's power.
    pub fn write<T, E: From<MetaError>>(
        &self,
        durable: bool,
        f: impl FnOnce(&Db<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.writer.lock();
        if durable {
            set_synchronous(&conn, "FULL")?;
        }
        let result = run_transaction(&mut conn, f);
        if durable {
            set_synchronous(&conn, "NORMAL")?;
        }
        result
    }

    /// Run `f` holding SQLite's write lock, taken by a connection of its
    /// own (so this works beside another process's writer), after every
    /// commit so far was made durable (the log fsynced). Writes nothing;
    /// meanwhile no transaction anywhere can commit.
    pub fn under_write_lock<T>(&self, f: impl FnOnce(&Db<'_>) -> T) -> Result<T, MetaError> {
        let conn = Connection::open(&self.path).map_err(MetaError::sql("open a locking connection"))?;
        configure(&conn)?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(MetaError::sql("take the write lock"))?;
        let result = self.sync_wal().map(|()| f(&Db::new(&conn)));
        let _ = conn.execute_batch("ROLLBACK");
        result
    }

    /// Make every commit so far durable: sync the write-ahead log (what
    /// it holds of committed transactions reaches the disk; what a
    /// checkpoint moved out of it was synced by the checkpoint).
    pub fn sync_wal(&self) -> Result<(), MetaError> {
        let wal = wal_path(&self.path);
        match std::fs::File::open(&wal) {
            Ok(file) => {
                file.sync_data().map_err(|source| MetaError::Io { action: "sync", path: wal, source })
            }
            // No WAL: everything is in the (synced) database file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(MetaError::Io { action: "open", path: wal, source }),
        }
    }

    /// Move the WAL's contents into the main database file (on shutdown).
    pub fn checkpoint(&self) -> Result<(), MetaError> {
        self.writer
            .lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(MetaError::sql("checkpoint"))
    }

    fn open_reader(&self) -> Result<Connection, MetaError> {
        open_reader(&self.path, self.immutable)
    }
}

/// Create the database file, empty and private, unless it exists. SQLite
/// would create it with mode 0644 (less the umask), and it gives its
/// `-wal`, `-shm` and `-journal` files the database file's mode, so this
/// makes all of them private.
fn create_private(path: &Path) -> Result<(), MetaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .open(path);
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(MetaError::Io { action: "create", path: path.to_owned(), source }),
    }
}

/// One `BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK` on error). BEGIN and
/// COMMIT are cached statements: rusqlite's `Transaction` parses them
/// anew each time, which cost a quarter of a small transaction.
fn run_transaction<T, E: From<MetaError>>(
    conn: &mut Connection,
    f: impl FnOnce(&Db<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let run = |sql: &str, action: &'static str| {
        conn.prepare_cached(sql).and_then(|mut st| st.execute([])).map_err(MetaError::sql(action))
    };
    run("BEGIN IMMEDIATE", "begin transaction")?;
    let result = f(&Db::new(conn));
    let ended = match &result {
        Ok(_) => run("COMMIT", "commit"),
        Err(_) => run("ROLLBACK", "roll back"),
    };
    if ended.is_err() && result.is_ok() {
        // A failed COMMIT leaves the transaction open: end it.
        let _ = run("ROLLBACK", "roll back");
    }
    let value = result?;
    ended?;
    Ok(value)
}

/// A read-only connection to the database at `path` (`immutable`: on
/// read-only media, see [`Meta::open_read_only`]).
fn open_reader(path: &Path, immutable: bool) -> Result<Connection, MetaError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        let path = percent_encoding::percent_encode(path.as_os_str().as_encoded_bytes(), URI_PATH);
        Connection::open_with_flags(format!("file:{path}?immutable=1"), flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(MetaError::sql("open read connection"))?;
    configure(&conn)?;
    Ok(conn)
}

/// Bytes of a path %-encoded in an SQLite URI.
const URI_PATH: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');

fn wal_path(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// Whether `dir` is on a file system mounted read-only.
fn on_read_only_media(dir: &Path) -> bool {
    statvfs_read_only(dir).unwrap_or(false)
}

fn statvfs_read_only(dir: &Path) -> Option<bool> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we own; the path is
    // NUL-terminated.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(path.as_ptr(), &mut stats) } == 0).then_some(stats.f_flag & libc::ST_RDONLY != 0)
}

fn configure(conn: &Connection) -> Result<(), MetaError> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(MetaError::sql("set busy timeout"))?;
    conn.pragma_update(None, "foreign_keys", true).map_err(MetaError::sql("enable foreign keys"))?;
    set_synchronous(conn, "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn set_synchronous(conn: &Connection, level: &str) -> Result<(), MetaError> {
    conn.pragma_update(None, "synchronous", level).map_err(MetaError::sql("set synchronous mode"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change-log entry that says nothing, for tests of the log itself.
    fn noop_change() -> ChangeRecord<'static> {
        ChangeRecord { origin: "test", op: "noop", ino: Ino(1), entry: None, new_entry: None, content: None }
    }

    #[test]
    fn the_log_is_checkpointed_off_the_commit_path_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path()).unwrap();
        let wal = wal_path(&meta.path);
        let blob = vec![7u8; 4000];
        let mut largest = 0;
        meta.writer.lock().execute_batch("CREATE TABLE filler (b BLOB)").unwrap();
        // About 2 WAL frames per commit: 40,000 frames, 160 MiB. The lock
        // is taken per commit, as `Meta::write` does.
        for _ in 0..20_000 {
            meta.writer.lock().execute("INSERT INTO filler (b) VALUES (?1)", [&blob]).unwrap();
            largest = largest.max(std::fs::metadata(&wal).unwrap().len());
        }
        // The log restarted again and again instead of growing to 160 MiB:
        // 4,000 frames and what is committed while the thread copies them;
        // from 12,000 frames (~49 MiB) each commit tries to copy them itself
        // but gives way while the thread's copy runs, so the log may pass
        // that mark by what commits during one copy.
        assert!(largest < 80 << 20, "WAL grew to {largest} bytes");
        let reader = open_reader(&meta.path, false).unwrap();
        let rows: i64 = reader.query_row("SELECT count(*) FROM filler", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 20_000);
        drop(reader);
        drop(meta);
        assert!(!wal.exists(), "a clean close leaves no log");
    }

    #[test]
    fn a_new_database_gets_the_current_schema_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path()).unwrap();
        let conn = meta.writer.lock();
        let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn an_older_database_is_migrated_in_place_keeping_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        // Version 1 exactly as a first-release tsmfs left it, with a lock.
        conn.execute_batch(schema::migration(0)).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO locks (token, path, deep, shared, created_ns) VALUES ('urn:uuid:x', X'2f61', 0, 0, 1)",
            [],
        )
        .unwrap();
        for _ in 0..3 {
            conn.execute("INSERT INTO changes (at_ns, origin, op, ino) VALUES (1, 'fuse', 'create', 2)", [])
                .unwrap();
        }
        assert_eq!(schema::migrate(&mut conn).unwrap(), 1, "the version found");
        drop(conn);
        let meta = Meta::open(dir.path()).unwrap();
        let locks = meta.read(|db| db.locks_at(b"/a", 0)).unwrap();
        assert_eq!(locks.len(), 1);
        assert_eq!((locks[0].token.as_str(), locks[0].timeout_s), ("urn:uuid:x", None));
        // The change log keeps its entries and counts on from them.
        let change = noop_change();
        let (next, logged) = meta
            .write(false, |db| Ok::<_, MetaError>((db.next_change_seq()?, db.log_change(&change, 0)?)))
            .unwrap();
        assert_eq!((next, logged), (4, 4));
    }

    #[test]
    fn a_database_from_a_newer_tsmfs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Meta::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        drop(conn);
        let err = Meta::open(dir.path()).unwrap_err();
        assert!(matches!(err, MetaError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer than this tsmfs"));
    }

    #[test]
    fn a_failed_write_rolls_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(dir.path()).unwrap();
        let result: Result<(), MetaError> = meta.write(false, |db| {
            let change = noop_change();
            assert_eq!(db.log_change(&change, 0)?, 1);
            Err(MetaError::Corrupt("forced".into()))
        });
        assert!(result.is_err());
        let count: i64 =
            meta.writer.lock().query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0)).unwrap();
        assert_eq!(count, 0);
    }
}
