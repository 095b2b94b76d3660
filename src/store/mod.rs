//! The content store: immutable object files under `<data>/objects/`.
//!
//! Objects are named by [`ContentId`] and fanned out by the SHA-1's first
//! byte (`objects/8a/<sha1>-<hi>`), like git: 256 directories, made once at
//! init, hold ten million objects at ~40,000 entries each, which ext4 and
//! xfs index well; a second level would cost a directory per object for
//! the first 65,536 objects. New chunks are written to an anonymous file
//! (a staging file in `<data>/staging/` where the filesystem lacks
//! `O_TMPFILE`), hashed while written and linked into place: an object
//! file is never rewritten once visible. Nothing here fsyncs an object:
//! [`Store::sync_all`] makes everything durable at once.
//!
//! The store knows nothing about SQLite. Deciding the collision index `hi`
//! (which needs the contents table) is the fs core's job; the store only
//! hashes, publishes, opens and removes.

mod chunk;
mod hash;
mod outboard;

use std::fs::{self, File};
use std::io;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use chunk::{MEMORY_CHUNK_MAX, RunFile, SealedChunk};
pub use hash::{ContentDigest, ContentHasher, GROUP, wrong_sha1};

use blake3::hazmat::ChainingValue;

use crate::id::ContentId;
use outboard::{BadGroup, GroupCheck};

/// Errors of the content store. Each I/O failure names what was being done
/// and to which path, so a message reads "could not <action> <path>".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done, as a verb phrase.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An object's bytes do not hash to its id.
    #[error("object {id} is corrupt: {detail}")]
    Corrupt {
        /// The object.
        id: ContentId,
        /// What did not match.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { action, path, source }
    }

    /// The OS error number, when this is an I/O error that has one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            StoreError::Io { source, .. } => source.raw_os_error(),
            StoreError::Corrupt { .. } => None,
        }
    }
}

/// Handle on one data directory's object and staging areas.
pub struct Store {
    objects: PathBuf,
    staging: PathBuf,
    variants: PathBuf,
    outboards: PathBuf,
    next_staging: AtomicU64,
    /// Open chunk objects, by id: a read of a multi-chunk file opens each
    /// chunk once, not once per read. Objects never change, so an open one
    /// is good for as long as it is kept.
    open_chunks: quick_cache::sync::Cache<ContentId, Arc<OpenObject>>,
    /// Objects up to [`VERIFIED_UP_TO`] whose bytes were checked against
    /// their id since this process opened the store, with the inode
    /// number of the file checked (a replaced file is checked again).
    verified: quick_cache::sync::Cache<ContentId, u64>,
    /// The metadata reserve is not held (given back, or not yet taken).
    reserve_missing: std::sync::atomic::AtomicBool,
}

/// Objects up to this size (one group) are checked whole against their
/// SHA-1 when first read. Larger ones are checked group by group against
/// their outboard, as reads reach each group (`outboard.rs`).
pub const VERIFIED_UP_TO: u64 = GROUP;

/// Objects remembered as checked.
const VERIFIED: usize = 1 << 18;

/// Bytes of a blake3 digest, the trailer of every stored variant.
const VARIANT_TRAILER: usize = 32;

/// Chunk objects kept open for reading.
const OPEN_CHUNKS: usize = 512;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("objects", &self.objects).finish()
    }
}

/// Mode of every directory tsmfs makes in a data directory: the names,
/// metadata and bytes in it are its owner's alone.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files it makes there (objects: [`OBJECT_MODE`]).
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of an object file: never rewritten, so read-only.
pub const OBJECT_MODE: u32 = 0o400;

const OBJECTS_DIR: &str = "objects";
const STAGING_DIR: &str = "staging";
const VARIANTS_DIR: &str = "variants";
const OUTBOARD_DIR: &str = "outboard";
const QUARANTINE_DIR: &str = "quarantine";

/// An object open for reading, with what this process checked of it.
#[derive(Debug)]
pub struct OpenObject {
    file: Arc<File>,
    len: u64,
    /// Its groups, for an object longer than one; a shorter one was
    /// checked whole when opened.
    groups: Option<GroupCheck>,
}

impl OpenObject {
    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The open file, to hand to a reader that does not go through the
    /// store (the kernel, for passthrough) once every byte of it has been
    /// checked; `None` before.
    pub fn checked_file(&self) -> Option<Arc<File>> {
        self.groups.as_ref().is_none_or(GroupCheck::complete).then(|| self.file.clone())
    }
}

/// A file found in the object area.
#[derive(Debug)]
pub enum ObjectFile {
    /// An object: its id (from its name) and length.
    Object {
        /// The content id its name gives.
        id: ContentId,
        /// Its length in bytes.
        len: u64,
    },
    /// A file whose name is no object name.
    Stray(PathBuf),
}

/// The encodings a variant may have (HTTP content codings).
pub const VARIANT_ENCODINGS: &[&str] = &["br", "gzip"];

impl Store {
    /// Open (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let objects = data_dir.join(OBJECTS_DIR);
        let staging = data_dir.join(STAGING_DIR);
        let mut created = false;
        for dir in [&objects, &staging] {
            created |= make_dir(dir)?;
        }
        for byte in 0..=255u8 {
            created |= make_dir(&objects.join(format!("{byte:02x}")))?;
        }
        if created {
            // The layout itself must survive a crash before any object
            // is published into it.
            for dir in [&objects, data_dir] {
                sync_dir(dir)?;
            }
        }
        Ok(Store {
            variants: data_dir.join(VARIANTS_DIR),
            outboards: data_dir.join(OUTBOARD_DIR),
            objects,
            staging,
            next_staging: AtomicU64::new(0),
            open_chunks: quick_cache::sync::Cache::new(OPEN_CHUNKS),
            verified: quick_cache::sync::Cache::new(VERIFIED),
            reserve_missing: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Path of an object file. Private to the crate: frontends get open
    /// files from the fs core, never paths.
    pub(crate) fn object_path(&self, id: &ContentId) -> PathBuf {
        let lo = id.lo_hex();
        let mut path = self.objects.join(&lo[0..2]);
        path.push(format!("{lo}-{:016x}", id.hi));
        path
    }

    /// A name for a staging file no other one has.
    fn unique_staging_name(&self) -> String {
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", std::process::id(), unique_suffix())
    }

    /// Open an object for reading.
    pub fn open_object(&self, id: &ContentId) -> Result<File, StoreError> {
        let path = self.object_path(id);
        File::open(&path).map_err(StoreError::io("open object", &path))
    }

    /// Chunk object `id`, open for reading (shared, kept open a while).
    /// One up to [`VERIFIED_UP_TO`] is checked whole first; a larger one
    /// gets its outboard (made again from its bytes if missing or
    /// damaged). An object found corrupt is quarantined (with its
    /// variants) and the read fails, so corrupt bytes are never served.
    pub fn open_chunk(&self, id: &ContentId) -> Result<Arc<OpenObject>, StoreError> {
        self.open_chunks.get_or_insert_with(id, || {
            let file = self.open_object(id)?;
            let len = file.metadata().map_err(StoreError::io("stat object", &self.object_path(id)))?.len();
            let groups = if len > VERIFIED_UP_TO { Some(self.group_check(id, &file, len)?) } else { None };
            if groups.is_none() {
                self.verify(id, &file)?;
            }
            Ok(Arc::new(OpenObject { file: Arc::new(file), len, groups }))
        })
    }

    /// Drop what is kept open of object `id` (it is being replaced or
    /// removed).
    fn forget_open(&self, id: &ContentId) {
        self.open_chunks.remove(id);
        self.verified.remove(id);
    }

    /// Check a small object's bytes against its id, once per file.
    fn verify(&self, id: &ContentId, file: &File) -> Result<(), StoreError> {
        use std::os::unix::fs::MetadataExt;
        let path = self.object_path(id);
        let meta = file.metadata().map_err(StoreError::io("stat object", &path))?;
        if meta.len() > VERIFIED_UP_TO || self.verified.get(id) == Some(meta.ino()) {
            return Ok(());
        }
        let mut bytes = vec![0u8; meta.len() as usize];
        let n = chunk::read_full_at(file, 0, &mut bytes).map_err(StoreError::io("read object", &path))?;
        let wrong = wrong_sha1(id, &bytes[..n]);
        if n == bytes.len() && wrong.is_none() {
            self.verified.insert(*id, meta.ino());
            return Ok(());
        }
        // Short: what was read may even hash to the id.
        let sha1 = wrong.unwrap_or(id.lo);
        let detail = format!("its bytes hash to {} (read {n} of {} bytes)", hex::encode(sha1), bytes.len());
        Err(self.found_corrupt(id, detail))
    }

    /// Quarantine object `id`, found corrupt, and say so.
    fn found_corrupt(&self, id: &ContentId, detail: String) -> StoreError {
        match self.quarantine(id) {
            Ok(to) => tracing::error!("object {id} is corrupt: {detail}; moved to {}", to.display()),
            Err(e) => tracing::error!("object {id} is corrupt: {detail}; quarantining it failed: {e}"),
        }
        StoreError::Corrupt { id: *id, detail }
    }

    /// The groups of large object `id` to check reads against: from its
    /// outboard, or, when that is missing or damaged, from hashing the
    /// whole object (which must match its id), written out again.
    fn group_check(&self, id: &ContentId, file: &File, len: u64) -> Result<GroupCheck, StoreError> {
        let path = self.outboard_path(id);
        match fs::read(&path) {
            Ok(bytes) => match outboard::decode(&bytes, len) {
                Some(groups) => return Ok(GroupCheck::new(groups)),
                None => tracing::warn!("outboard {} is damaged; making it again", path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("read outboard", &path)(e)),
        }
        let (digest, groups) = hash_file(file, &self.object_path(id))?;
        if digest.sha1 != id.lo || digest.size != len {
            let detail = format!("its bytes hash to {}", hex::encode(digest.sha1));
            return Err(self.found_corrupt(id, detail));
        }
        if let Err(e) = self.write_outboard(id, len, &groups) {
            tracing::warn!("{e}");
        }
        Ok(GroupCheck::all_checked(groups))
    }

    /// Read up to `buf.len()` bytes of chunk `id` at `offset`; the count.
    /// Bytes are checked as described at [`Store::open_chunk`].
    pub fn read_chunk(&self, id: &ContentId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let object = self.open_chunk(id)?;
        let read_failed = |e| StoreError::io("read object", &self.object_path(id))(e);
        let Some(groups) = &object.groups else {
            return chunk::read_full_at(&object.file, offset, buf).map_err(read_failed);
        };
        match groups.read_at(&object.file, object.len, offset, buf).map_err(read_failed)? {
            Ok(n) => Ok(n),
            Err(BadGroup(index)) => {
                let detail =
                    format!("bytes {}..{} do not match its outboard", index * GROUP, (index + 1) * GROUP);
                Err(self.found_corrupt(id, detail))
            }
        }
    }

    /// The digests of object `id`'s bytes as they are on disk. When they
    /// match its id, its outboard is made good too (written if missing
    /// or not theirs): this is how a scrub, or the check after an unclean
    /// stop, restores one.
    pub fn digest_of_object(&self, id: &ContentId) -> Result<ContentDigest, StoreError> {
        let path = self.object_path(id);
        let file = File::open(&path).map_err(StoreError::io("open object", &path))?;
        let (digest, groups) = hash_file(&file, &path)?;
        if digest.sha1 == id.lo && !groups.is_empty() {
            let outboard = self.outboard_path(id);
            let stored = fs::read(&outboard).ok().and_then(|bytes| outboard::decode(&bytes, digest.size));
            if stored.as_ref() != Some(&groups) {
                tracing::info!("made the outboard of object {id} again");
                self.write_outboard(id, digest.size, &groups)?;
            }
        }
        Ok(digest)
    }

    /// Path of the outboard of object `id`.
    fn outboard_path(&self, id: &ContentId) -> PathBuf {
        let lo = id.lo_hex();
        let mut path = self.outboards.join(&lo[0..2]);
        path.push(format!("{lo}-{:016x}", id.hi));
        path
    }

    /// Store the outboard of object `id` (`len` bytes, groups `groups`),
    /// whole or not at all. Not fsynced: one lost is made again.
    fn write_outboard(&self, id: &ContentId, len: u64, groups: &[ChainingValue]) -> Result<(), StoreError> {
        self.write_aside(&self.outboard_path(id), &outboard::encode(len, groups), "outboard")
    }

    /// All bytes of an object.
    pub fn read_object(&self, id: &ContentId) -> Result<Vec<u8>, StoreError> {
        let path = self.object_path(id);
        fs::read(&path).map_err(StoreError::io("read object", &path))
    }

    /// Whether the object file exists.
    pub fn contains(&self, id: &ContentId) -> bool {
        self.object_path(id).exists()
    }

    /// Remove an object file and its variants. A missing file is not an
    /// error (a crash may have removed it already).
    pub fn remove_object(&self, id: &ContentId) -> Result<(), StoreError> {
        self.remove_object_file(id)?;
        self.remove_variants(id)
    }

    /// Remove an object file, keeping its variants (the content is still
    /// some file's, stored in other chunks).
    pub fn remove_object_file(&self, id: &ContentId) -> Result<(), StoreError> {
        self.forget_open(id);
        remove_if_there(&self.object_path(id), "remove object")?;
        remove_if_there(&self.outboard_path(id), "remove outboard")
    }

    /// Every file in the object area.
    pub fn list_objects(&self) -> Result<Vec<ObjectFile>, StoreError> {
        let mut found = Vec::new();
        for_each_fanned_out(&self.objects, |entry| {
            let path = entry.path();
            let id = entry.file_name().to_str().and_then(|name| ContentId::from_etag(name).ok());
            match id.filter(|id| self.object_path(id) == path) {
                Some(id) => {
                    let len = entry.metadata().map_err(StoreError::io("stat", &path))?.len();
                    found.push(ObjectFile::Object { id, len });
                }
                None => found.push(ObjectFile::Stray(path)),
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Move object `id` out of the way into `quarantine/`, where nothing
    /// reads it, and return where it went.
    pub fn quarantine(&self, id: &ContentId) -> Result<PathBuf, StoreError> {
        self.forget_open(id);
        // Variants made from its bytes go with it, and its outboard.
        self.remove_variants(id)?;
        remove_if_there(&self.outboard_path(id), "remove outboard")?;
        let from = self.object_path(id);
        let dir = self.objects.with_file_name(QUARANTINE_DIR);
        make_private_dirs(&dir)?;
        let to = dir.join(from.file_name().unwrap_or_default());
        fs::rename(&from, &to).map_err(StoreError::io("quarantine", &from))?;
        Ok(to)
    }

    /// Keep `bytes`, found corrupt as chunk `id`'s, in `quarantine/` (for
    /// a look by hand) and return where.
    pub fn quarantine_bytes(&self, id: &ContentId, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let dir = self.objects.with_file_name(QUARANTINE_DIR);
        make_private_dirs(&dir)?;
        let to = dir.join(format!("{}-{:016x}.db", id.lo_hex(), id.hi));
        self.remove_variants(id)?;
        fs::write(&to, bytes).map_err(StoreError::io("quarantine", &to))?;
        Ok(to)
    }

    /// Remove a file found in the object area that is no object.
    pub fn remove_stray(&self, path: &Path) -> Result<(), StoreError> {
        if !path.starts_with(&self.objects) {
            return Ok(());
        }
        fs::remove_file(path).map_err(StoreError::io("remove", path))
    }

    /// Path of a variant of object `id`: derived bytes (a compressed
    /// encoding), kept apart from the objects under
    /// `variants/<2 hex>/<lo>-<hi>.<encoding>`.
    fn variant_path(&self, id: &ContentId, encoding: &str) -> PathBuf {
        let lo = id.lo_hex();
        let mut path = self.variants.join(&lo[0..2]);
        path.push(format!("{lo}-{:016x}.{encoding}", id.hi));
        path
    }

    /// The variant `encoding` of object `id`, if stored.
    pub fn read_variant(&self, id: &ContentId, encoding: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.variant_path(id, encoding);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read variant", &path)(e)),
        };
        let body = bytes.len().checked_sub(VARIANT_TRAILER);
        if body.is_some_and(|at| blake3::hash(&bytes[..at]).as_bytes()[..] == bytes[at..]) {
            bytes.truncate(body.unwrap_or(0));
            return Ok(Some(bytes));
        }
        // Made again from the object; never served.
        tracing::error!("variant {} is corrupt (its blake3 does not match); removed", path.display());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io("remove variant", &path)(e)),
            _ => Ok(None),
        }
    }

    /// Store the variant `encoding` of object `id`, whole or not at all
    /// (written aside, then renamed). Not fsynced: a variant lost in a
    /// crash is computed again.
    pub fn write_variant(&self, id: &ContentId, encoding: &str, bytes: &[u8]) -> Result<(), StoreError> {
        // Its blake3 follows it, checked when it is read.
        let mut sealed = Vec::with_capacity(bytes.len() + VARIANT_TRAILER);
        sealed.extend_from_slice(bytes);
        sealed.extend_from_slice(blake3::hash(bytes).as_bytes());
        self.write_aside(&self.variant_path(id, encoding), &sealed, "variant")
    }

    /// Write derived data (`what`: a variant, an outboard) to `path`,
    /// whole or not at all: written aside, then renamed. Private: a
    /// compressed copy of a file is as private as the file.
    fn write_aside(&self, path: &Path, bytes: &[u8], what: &str) -> Result<(), StoreError> {
        if !self.room_for_derived_data() {
            let full = io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(StoreError::io("keep the last free space for metadata; skipped", path)(full));
        }
        if let Some(dir) = path.parent() {
            make_private_dirs(dir)?;
        }
        let aside = self.staging.join(format!("{what}-{}", self.unique_staging_name()));
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&aside)
            .and_then(|mut file| file.write_all(bytes))
            .map_err(|e| {
                let _ = fs::remove_file(&aside);
                StoreError::io("write aside", &aside)(e)
            })?;
        fs::rename(&aside, path).map_err(|e| {
            let _ = fs::remove_file(&aside);
            StoreError::io("rename into place", path)(e)
        })
    }

    /// Remove the variants whose object is gone (a release racing the
    /// variant's write can leave one); returns how many and their bytes.
    /// Files that are not variants are left alone.
    pub fn remove_orphan_variants(&self) -> Result<(u64, u64), StoreError> {
        let (mut count, mut bytes) = (0, 0);
        for_each_fanned_out(&self.variants, |entry| {
            let path = entry.path();
            let name = entry.file_name();
            let Some((tag, encoding)) = name.to_str().and_then(|name| name.rsplit_once('.')) else {
                return Ok(());
            };
            let Ok(id) = ContentId::from_etag(tag) else { return Ok(()) };
            if self.variant_path(&id, encoding) != path || self.contains(&id) {
                return Ok(());
            }
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).map_err(StoreError::io("remove variant", &path))?;
            count += 1;
            Ok(())
        })?;
        Ok((count, bytes))
    }

    /// Remove the outboards whose object is gone (a crash between the two
    /// removals can leave one); returns how many.
    pub fn remove_orphan_outboards(&self) -> Result<u64, StoreError> {
        let mut count = 0;
        for_each_fanned_out(&self.outboards, |entry| {
            let path = entry.path();
            let Some(id) = entry.file_name().to_str().and_then(|name| ContentId::from_etag(name).ok()) else {
                return Ok(());
            };
            if self.outboard_path(&id) != path || self.contains(&id) {
                return Ok(());
            }
            remove_if_there(&path, "remove outboard")?;
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }

    /// Check every stored variant against the blake3 it carries; remove
    /// those that fail (they are made again from their object). Returns
    /// the variants checked and the paths of those removed.
    pub fn scrub_variants(&self) -> Result<(u64, Vec<PathBuf>), StoreError> {
        let (mut checked, mut removed) = (0, Vec::new());
        for_each_fanned_out(&self.variants, |entry| {
            let name = entry.file_name();
            let Some((tag, encoding)) = name.to_str().and_then(|name| name.rsplit_once('.')) else {
                return Ok(());
            };
            let Ok(id) = ContentId::from_etag(tag) else { return Ok(()) };
            if self.variant_path(&id, encoding) != entry.path() {
                return Ok(());
            }
            checked += 1;
            if self.read_variant(&id, encoding)?.is_none() {
                removed.push(entry.path());
            }
            Ok(())
        })?;
        Ok((checked, removed))
    }

    /// Remove every variant of object `id`.
    fn remove_variants(&self, id: &ContentId) -> Result<(), StoreError> {
        for encoding in VARIANT_ENCODINGS {
            let path = self.variant_path(id, encoding);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(StoreError::io("remove variant", &path)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Flush everything written to the store's filesystem (one `syncfs`):
    /// objects, and the metadata beside them.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        let dir = File::open(&self.objects).map_err(StoreError::io("open", &self.objects))?;
        syncfs(&dir).map_err(StoreError::io("sync filesystem of", &self.objects))
    }

    /// Bytes the store occupies on disk (objects only), by `st_blocks`.
    pub fn disk_usage(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for entry in walkdir::WalkDir::new(&self.objects) {
            let entry = entry.map_err(|e| {
                let path = e.path().unwrap_or(&self.objects).to_path_buf();
                StoreError::Io { action: "walk", path, source: e.into() }
            })?;
            if entry.file_type().is_file() {
                let meta = entry.metadata().map_err(|e| StoreError::io("stat", entry.path())(e.into()))?;
                total += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
            }
        }
        Ok(total)
    }
}

fn unique_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Create `dir` if missing; returns whether it was created.
fn make_dir(dir: &Path) -> Result<bool, StoreError> {
    match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(StoreError::io("create directory", dir)(e)),
    }
}

/// Create `dir` and any missing parents (inside the data directory), all
/// private.
fn make_private_dirs(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(StoreError::io("create directory", dir))
}

/// Derived data (variants, outboards) is written only while the
/// filesystem has more than this free: it is made again when missing,
/// and must never take the room a metadata commit needs (SQLite cannot
/// even record a deletion on a full disk).
const DERIVED_DATA_HEADROOM: u64 = 8 << 20;

/// Bytes held in `<data>/reserve` for a full disk: given back when a
/// metadata commit finds no room, so that the commits that free space
/// (deleting a file, dropping what a rewrite replaced) can still run.
pub const METADATA_RESERVE: u64 = 4 << 20;
const RESERVE_FILE: &str = "reserve";

impl Store {
    fn free_bytes(&self) -> Option<u64> {
        let vfs = nix::sys::statvfs::statvfs(&self.objects).ok()?;
        Some(vfs.blocks_available().saturating_mul(vfs.fragment_size()))
    }

    fn room_for_derived_data(&self) -> bool {
        self.free_bytes().is_none_or(|free| free > DERIVED_DATA_HEADROOM)
    }

    fn reserve_path(&self) -> PathBuf {
        self.objects.with_file_name(RESERVE_FILE)
    }

    /// Hold [`METADATA_RESERVE`] bytes aside, unless they are held
    /// already or taking them would leave little room (then later).
    pub fn keep_reserve(&self) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        let path = self.reserve_path();
        if fs::metadata(&path).is_ok_and(|m| m.len() >= METADATA_RESERVE) {
            self.reserve_missing.store(false, Ordering::Release);
            return Ok(());
        }
        if self.free_bytes().is_some_and(|free| free < 2 * METADATA_RESERVE + DERIVED_DATA_HEADROOM) {
            return Ok(());
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(StoreError::io("create", &path))?;
        // SAFETY: allocates blocks for a descriptor `file` keeps open.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, METADATA_RESERVE as i64) };
        if rc != 0 {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(StoreError::io("allocate", &path)(io::Error::from_raw_os_error(rc)));
        }
        self.reserve_missing.store(false, Ordering::Release);
        Ok(())
    }

    /// Give the reserve back to the filesystem; whether there was one.
    pub fn release_reserve(&self) -> bool {
        self.reserve_missing.store(true, Ordering::Release);
        fs::remove_file(self.reserve_path()).is_ok()
    }

    /// Whether the reserve is not held now (see [`Store::keep_reserve`]).
    pub fn reserve_given_back(&self) -> bool {
        self.reserve_missing.load(Ordering::Acquire)
    }
}

/// Remove `path`; already gone is fine.
fn remove_if_there(path: &Path, action: &'static str) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::io(action, path)(e)),
        _ => Ok(()),
    }
}

/// Hash all of `file` (at `path`), with its groups' chaining values.
fn hash_file(file: &File, path: &Path) -> Result<(ContentDigest, Vec<ChainingValue>), StoreError> {
    let mut hasher = ContentHasher::new();
    let mut buf = vec![0u8; GROUP as usize];
    let mut at = 0;
    loop {
        let n = chunk::read_full_at(file, at, &mut buf).map_err(StoreError::io("read object", path))?;
        if n == 0 {
            return Ok(hasher.finish_with_groups());
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(StoreError::io("sync directory", dir))
}

fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

impl Store {
    /// Remove every staging file (at open, by the only writer: whatever is
    /// there belongs to writes that never committed).
    pub fn clear_staging(&self) -> Result<usize, StoreError> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.staging).map_err(StoreError::io("list", &self.staging))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("list", &self.staging))?;
            let path = entry.path();
            fs::remove_file(&path).map_err(StoreError::io("remove staging file", &path))?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Call `f` on every entry of the 256 fan-out directories (`00`..`ff`)
/// under `root`; a missing one is empty.
fn for_each_fanned_out(
    root: &Path,
    mut f: impl FnMut(fs::DirEntry) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    for byte in 0..=255u8 {
        let dir = root.join(format!("{byte:02x}"));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("list", &dir)(e)),
        };
        for entry in entries {
            f(entry.map_err(StoreError::io("list", &dir))?)?;
        }
    }
    Ok(())
}
