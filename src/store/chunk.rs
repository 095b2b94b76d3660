//! Sealed chunks: bytes hashed and set aside, waiting for the commit that
//! names them. Small ones stay in memory; larger ones go to an anonymous
//! file in `staging/` (`O_TMPFILE`: no name, nothing left after a crash),
//! which publishing links into the object area.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blake3::hazmat::ChainingValue;

use super::{ContentDigest, ContentHasher, Store, StoreError};
use crate::id::ContentId;

/// Chunks up to this size stay in memory until published: most of them
/// dedupe or are small files, and for those no staging file is made.
pub const MEMORY_CHUNK_MAX: usize = 64 * 1024;

/// A chunk hashed and held aside until a commit publishes it (or drops it).
#[derive(Debug)]
pub struct SealedChunk {
    /// Its digests.
    pub digest: ContentDigest,
    /// The chaining values of its groups, when it has more than one:
    /// published beside it, for checked reads.
    groups: Vec<ChainingValue>,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Bytes(Vec<u8>),
    File(StagedFile),
}

/// A file in the staging area (or a fan-out directory), anonymous where
/// the filesystem allows; a named one is removed when dropped.
#[derive(Debug)]
struct StagedFile {
    file: File,
    /// Its name, or the directory of an anonymous file.
    path: PathBuf,
    anonymous: bool,
}

impl StagedFile {
    /// Give the file the name `target`, read-only (and readable by the
    /// owner alone, as all of a data directory). A link, not a rename:
    /// should the transaction fail, the object is removed and a retry
    /// links the same bytes again.
    fn link_as(&self, target: &Path) -> Result<(), StoreError> {
        self.file
            .set_permissions(std::fs::Permissions::from_mode(super::OBJECT_MODE))
            .map_err(StoreError::io("set permissions on", &self.path))?;
        let link = || {
            if self.anonymous { link_fd(&self.file, target) } else { std::fs::hard_link(&self.path, target) }
        };
        match link() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover nothing names (the caller holds the writer
                // lock and found no live row for it).
                std::fs::remove_file(target).map_err(StoreError::io("replace stale object", target))?;
                link()
            }
            other => other,
        }
        .map_err(StoreError::io("publish object", target))
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.anonymous {
            // Best effort: whatever is left is cleared at the next open.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl SealedChunk {
    /// A chunk of `bytes`, kept in memory (tests, and small chunks).
    pub fn in_memory(bytes: Vec<u8>) -> SealedChunk {
        let (digest, groups) = hash_with_groups(&bytes);
        SealedChunk { digest, groups, body: Body::Bytes(bytes) }
    }

    /// Its length.
    pub fn len(&self) -> u64 {
        self.digest.size
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.digest.size == 0
    }

    /// Its bytes, when it is held in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.body {
            Body::Bytes(bytes) => Some(bytes),
            Body::File(_) => None,
        }
    }

    /// Read up to `buf.len()` bytes at `offset`; the count read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        match &self.body {
            Body::Bytes(bytes) => {
                let start = (offset as usize).min(bytes.len());
                let n = buf.len().min(bytes.len() - start);
                buf[..n].copy_from_slice(&bytes[start..start + n]);
                Ok(n)
            }
            Body::File(staged) => read_full_at(&staged.file, offset, buf)
                .map_err(StoreError::io("read staged chunk", &staged.path)),
        }
    }
}

impl Store {
    /// Hash `bytes` and set them aside as a chunk.
    pub fn seal(&self, bytes: &[u8]) -> Result<SealedChunk, StoreError> {
        let (digest, groups) = hash_with_groups(bytes);
        if bytes.len() <= MEMORY_CHUNK_MAX {
            return Ok(SealedChunk { digest, groups, body: Body::Bytes(bytes.to_vec()) });
        }
        let staged = self.new_staged_file(&self.staging)?;
        staged.file.write_all_at(bytes, 0).map_err(StoreError::io("write staging file", &staged.path))?;
        Ok(SealedChunk { digest, groups, body: Body::File(staged) })
    }

    /// Give sealed chunk `chunk` its object name `id`, with its outboard
    /// if it has one (see `outboard.rs`). Not synced: the filesystem sync that makes the
    /// commit durable covers it (and recovery checks chunks written since
    /// the last one).
    pub fn publish_sealed(&self, chunk: &SealedChunk, id: &ContentId) -> Result<(), StoreError> {
        self.forget_open(id);
        match &chunk.body {
            Body::Bytes(bytes) => self.write_object(bytes, id)?,
            Body::File(staged) => staged.link_as(&self.object_path(id))?,
        }
        // Derived data: one that cannot be written (a full disk) is made
        // again from the object when it is first read.
        if !chunk.groups.is_empty()
            && let Err(e) = self.write_outboard(id, chunk.len(), &chunk.groups)
        {
            tracing::warn!("{e}");
        }
        Ok(())
    }

    /// Write `bytes` as object `id`: an anonymous file in its fan-out
    /// directory, linked into place once complete, so a crash never
    /// leaves a partial object under an object name.
    fn write_object(&self, bytes: &[u8], id: &ContentId) -> Result<(), StoreError> {
        let target = self.object_path(id);
        let staged = self.new_staged_file(target.parent().unwrap_or(&self.objects))?;
        staged.file.write_all_at(bytes, 0).map_err(StoreError::io("write object", &target))?;
        staged.link_as(&target)
    }

    /// A new anonymous file in `dir` (a named one in `staging/` where the
    /// filesystem lacks `O_TMPFILE`).
    fn new_staged_file(&self, dir: &Path) -> Result<StagedFile, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(dir);
        match opened {
            Ok(file) => Ok(StagedFile { file, path: dir.to_path_buf(), anonymous: true }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
                let path = self.staging.join(self.unique_staging_name());
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(StoreError::io("create staging file", &path))?;
                Ok(StagedFile { file, path, anonymous: false })
            }
            Err(e) => Err(StoreError::io("create staging file in", dir)(e)),
        }
    }
}

fn hash_with_groups(bytes: &[u8]) -> (ContentDigest, Vec<ChainingValue>) {
    let mut hasher = ContentHasher::new();
    hasher.update(bytes);
    hasher.finish_with_groups()
}

/// Bytes per read and per pipelined piece when streaming.
const IO_PIECE: usize = 1024 * 1024;
/// Appends at least this large start their writeback at once, so a later
/// sync finds most of a long run already on disk.
const WRITEBACK_MIN: usize = 256 * 1024;
/// Appends at least this large are hashed by a follower thread, so the
/// writer (a FUSE request) does not wait for the hash.
const FOLLOW_MIN: usize = 64 * 1024;
/// Pieces in flight between reader, writer and hasher of a streamed put.
const PIPELINE_DEPTH: usize = 4;
/// Ranges queued for a follower before the writer waits.
const FOLLOW_QUEUE: usize = 64;

/// A chunk written front to back: a run of sequential writes, or a put's
/// body. It goes to an anonymous staging file and is hashed as it grows,
/// so sealing it costs no second read.
#[derive(Debug)]
pub struct RunFile {
    staged: StagedFile,
    len: u64,
    /// The hash of bytes `0..len`, unless a follower holds it.
    hasher: Option<ContentHasher>,
    follower: Option<Follower>,
}

impl Store {
    /// A new, empty run.
    pub fn start_run(&self) -> Result<RunFile, StoreError> {
        Ok(RunFile {
            staged: self.new_staged_file(&self.staging)?,
            len: 0,
            hasher: Some(ContentHasher::new()),
            follower: None,
        })
    }
}

impl RunFile {
    /// Its length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `bytes`: all of them, or an error and none of them.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let at = self.len;
        if let Err(e) = self.staged.file.write_all_at(bytes, at) {
            if let Err(cut) = self.staged.file.set_len(at) {
                tracing::error!("staging: could not cut a failed write back: {cut}");
            }
            return Err(StoreError::io("write staging file", &self.staged.path)(e));
        }
        if bytes.len() >= WRITEBACK_MIN {
            start_writeback(&self.staged.file, at, bytes.len());
        }
        self.hash(at, bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Hash `bytes`, just written at `at`.
    fn hash(&mut self, at: u64, bytes: &[u8]) {
        if let Some(follower) = &mut self.follower {
            if !follower.follow(at, bytes.len()) {
                self.follower = None;
                self.hasher = None;
            }
            return;
        }
        let Some(hasher) = &mut self.hasher else { return };
        if bytes.len() < FOLLOW_MIN {
            hasher.update(bytes);
            return;
        }
        let hasher = self.hasher.take().unwrap_or_default();
        self.follower = Follower::start(&self.staged.file, hasher, at, bytes.len());
    }

    /// Read up to `buf.len()` bytes at `offset`; the count read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        read_full_at(&self.staged.file, offset, buf)
            .map_err(StoreError::io("read staging file", &self.staged.path))
    }

    /// Stream all of `reader` onto the end; returns the bytes appended.
    /// Memory use is a few buffers, whatever the size. Reading, writing
    /// and hashing overlap: this thread reads, one worker writes (starting
    /// writeback as it goes) and one hashes, so a large put runs at the
    /// speed of the slowest of the three, not their sum.
    pub fn append_from(&mut self, reader: &mut dyn std::io::Read, source: &Path) -> Result<u64, StoreError> {
        if let Some(follower) = self.follower.take() {
            self.hasher = follower.finish();
        }
        let hashing = self.hasher.take();
        let start = self.len;
        let staged = &self.staged;
        let (copied, hasher) =
            std::thread::scope(|scope| -> Result<(u64, Option<ContentHasher>), StoreError> {
                let (to_writer, for_writer) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(PIPELINE_DEPTH);
                let (to_hasher, for_hasher) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(PIPELINE_DEPTH);
                let (recycle, recycled) = std::sync::mpsc::channel::<Arc<Vec<u8>>>();
                let writer = scope.spawn(move || -> Result<(), StoreError> {
                    let mut offset = start;
                    for piece in for_writer {
                        staged
                            .file
                            .write_all_at(&piece, offset)
                            .map_err(StoreError::io("write staging file", &staged.path))?;
                        start_writeback(&staged.file, offset, piece.len());
                        offset += piece.len() as u64;
                    }
                    Ok(())
                });
                let hasher = scope.spawn(move || {
                    let mut hasher = hashing;
                    for piece in for_hasher {
                        if let Some(h) = &mut hasher {
                            h.update(&piece);
                        }
                        let _ = recycle.send(piece);
                    }
                    hasher
                });
                let mut total = 0u64;
                let mut buf = vec![0u8; IO_PIECE];
                let outcome = loop {
                    let n = match read_piece(reader, &mut buf, source) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) => break Err(e),
                    };
                    buf.truncate(n);
                    let piece = Arc::new(std::mem::take(&mut buf));
                    total += n as u64;
                    if to_writer.send(piece.clone()).is_err() || to_hasher.send(piece).is_err() {
                        break Ok(()); // the writer failed; its error is reported below
                    }
                    buf = recycled.try_iter().find_map(|p| Arc::try_unwrap(p).ok()).unwrap_or_default();
                    buf.resize(IO_PIECE, 0);
                };
                drop((to_writer, to_hasher));
                let written = writer.join().unwrap_or_else(|_| {
                    Err(StoreError::io("write staging file", &staged.path)(io::Error::other(
                        "writer thread panicked",
                    )))
                });
                let hasher = hasher.join().ok().flatten();
                outcome.and(written).map(|()| (total, hasher))
            })?;
        if copied > 0 || self.hasher.is_none() {
            self.len += copied;
            self.hasher = hasher;
        }
        Ok(copied)
    }

    /// Seal it: its digests (read back only if the running hash was lost)
    /// and its bytes, ready to publish.
    pub fn seal(mut self) -> Result<SealedChunk, StoreError> {
        if let Some(follower) = self.follower.take() {
            self.hasher = follower.finish();
        }
        let (digest, groups) = match self.hasher.take() {
            Some(hasher) if hasher.len() == self.len => hasher.finish_with_groups(),
            _ => {
                let mut hasher = ContentHasher::new();
                let mut buf = vec![0u8; IO_PIECE];
                let mut at = 0u64;
                while at < self.len {
                    let n = self.read_at(at, &mut buf[..IO_PIECE.min((self.len - at) as usize)])?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    at += n as u64;
                }
                hasher.finish_with_groups()
            }
        };
        Ok(SealedChunk { digest, groups, body: Body::File(self.staged) })
    }
}

/// A thread hashing a run just behind its writer: the writer sends the
/// ranges it wrote, in order; the thread reads them back from the page
/// cache and hashes them.
struct Follower {
    ranges: std::sync::mpsc::SyncSender<(u64, usize)>,
    thread: std::thread::JoinHandle<Option<ContentHasher>>,
    /// End of the last range sent.
    sent: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Follower(sent {})", self.sent)
    }
}

impl Follower {
    /// Start hashing after `hasher` (which covers `0..offset`), beginning
    /// with `len` bytes at `offset`. `None` if no thread could be made.
    fn start(file: &File, hasher: ContentHasher, offset: u64, len: usize) -> Option<Follower> {
        let file = file.try_clone().ok()?;
        let (ranges, queue) = std::sync::mpsc::sync_channel::<(u64, usize)>(FOLLOW_QUEUE);
        let thread = std::thread::Builder::new()
            .name("tsmfs-hash".into())
            .spawn(move || {
                let mut hasher = hasher;
                let mut buf = vec![0u8; IO_PIECE];
                for (mut offset, mut len) in queue {
                    while len > 0 {
                        let want = len.min(IO_PIECE);
                        file.read_exact_at(&mut buf[..want], offset).ok()?;
                        hasher.update(&buf[..want]);
                        offset += want as u64;
                        len -= want;
                    }
                }
                Some(hasher)
            })
            .ok()?;
        let mut follower = Follower { ranges, thread, sent: offset };
        follower.follow(offset, len).then_some(follower)
    }

    /// Queue the next range; false if it does not continue the last one
    /// or the thread is gone.
    fn follow(&mut self, offset: u64, len: usize) -> bool {
        if offset != self.sent || self.ranges.send((offset, len)).is_err() {
            return false;
        }
        self.sent += len as u64;
        true
    }

    /// Wait for the thread to hash everything queued; its running hash.
    fn finish(self) -> Option<ContentHasher> {
        drop(self.ranges);
        self.thread.join().ok().flatten()
    }
}

/// Fill `buf` from `reader` as far as it goes; a short count means EOF.
fn read_piece(reader: &mut dyn std::io::Read, buf: &mut [u8], source: &Path) -> Result<usize, StoreError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io("read", source)(e)),
        }
    }
    Ok(filled)
}

/// Ask the kernel to start writing a range back now, without waiting, so
/// a later sync finds most of a large run already on disk.
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a hint on a descriptor `file` keeps open; no memory involved.
    // Failure only means the sync does all the work.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Read up to `buf.len()` bytes at `offset`, short only at the end.
pub(super) fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Give the anonymous file `file` the name `target` (linkat through
/// `/proc/self/fd`, which needs no privilege, unlike `AT_EMPTY_PATH`).
fn link_fd(file: &File, target: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let source = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let target = CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            source.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_hashes_as_it_grows_whatever_the_append_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(5 * IO_PIECE + 777)).map(|i| (i % 241) as u8).collect();
        let mut run = store.start_run().unwrap();
        run.append(&data[..100]).unwrap();
        for piece in data[100..3 * IO_PIECE].chunks(300_000) {
            run.append(piece).unwrap();
        }
        assert!(run.follower.is_some(), "large appends go to the follower");
        let rest = run.append_from(&mut &data[3 * IO_PIECE..], Path::new("test")).unwrap();
        assert_eq!(rest as usize, data.len() - 3 * IO_PIECE);
        let mut back = vec![0u8; 10];
        assert_eq!(run.read_at(IO_PIECE as u64, &mut back).unwrap(), 10);
        assert_eq!(&back[..], &data[IO_PIECE..IO_PIECE + 10]);
        let sealed = run.seal().unwrap();
        assert_eq!(sealed.digest, ContentHasher::digest(&data));
    }

    #[test]
    fn sealed_chunks_read_back_and_publish_under_their_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for len in [10usize, MEMORY_CHUNK_MAX + 1, 300_000] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = store.seal(&bytes).unwrap();
            assert_eq!(sealed.digest, ContentHasher::digest(&bytes));
            let mut back = vec![0; len + 5];
            assert_eq!(sealed.read_at(0, &mut back).unwrap(), len);
            assert_eq!(&back[..len], &bytes[..]);
            let id = ContentId::new(0, sealed.digest.sha1);
            store.publish_sealed(&sealed, &id).unwrap();
            assert_eq!(store.read_object(&id).unwrap(), bytes);
        }
        drop(store);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0, "nothing left staged");
    }
}
