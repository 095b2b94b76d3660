//! Staging files: where new content is written before it becomes an object.
//!
//! A staging file hashes sequential writes as they arrive, so committing a
//! file written front to back costs no second read. Any other write pattern
//! (seek back, hole, truncate) drops the running hash and the content is
//! re-read once at [`Staging::finish`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ContentDigest, ContentHasher, StoreError};

/// Buffer size for streaming reads and copies.
pub(crate) const IO_CHUNK: usize = 1024 * 1024;
/// Writes at least this large start their writeback at once, so a commit's
/// fsync finds most of a big file already on disk.
const WRITEBACK_MIN: usize = 256 * 1024;
/// Sequential writes at least this large are hashed by a follower thread.
const FOLLOW_MIN: usize = 64 * 1024;
/// Chunks in flight between reader, writer and hasher.
const PIPELINE_DEPTH: usize = 4;

/// A file in `<data>/staging/` being filled with new content.
///
/// Where the filesystem supports it the file is anonymous (`O_TMPFILE`):
/// it has no name until it is linked into place as an object, creating it
/// takes no directory lock, and a crash leaves nothing behind.
#[derive(Debug)]
pub struct Staging {
    file: File,
    /// The file's name, or the staging directory for an anonymous file.
    path: PathBuf,
    anonymous: bool,
    len: u64,
    /// Running hash of bytes `0..hasher.len()`, while writes are sequential.
    hasher: Option<ContentHasher>,
    /// While large sequential writes arrive: a thread that hashes them
    /// behind the writer (it holds the running hash meanwhile).
    follower: Option<Follower>,
}

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHasher({} bytes)", self.len())
    }
}

impl Staging {
    /// An anonymous file in `dir`, or, where `O_TMPFILE` is not supported,
    /// a new file named `fallback_name` there.
    pub(super) fn create(dir: &Path, fallback_name: &str) -> Result<Staging, StoreError> {
        let anonymous =
            OpenOptions::new().read(true).write(true).custom_flags(libc::O_TMPFILE).mode(0o600).open(dir);
        let (file, path, anonymous) = match anonymous {
            Ok(file) => (file, dir.to_path_buf(), true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)) => {
                let path = dir.join(fallback_name);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(StoreError::io("create staging file", &path))?;
                (file, path, false)
            }
            Err(e) => return Err(StoreError::io("create staging file in", dir)(e)),
        };
        Ok(Staging { file, path, anonymous, len: 0, hasher: Some(ContentHasher::new()), follower: None })
    }

    /// Copy all of `source` into this (empty) staging file. The running
    /// hash is dropped: the copy goes kernel-side (`copy_file_range`), and
    /// a copy-on-write file is rarely rewritten front to back.
    pub(super) fn fill_from(&mut self, source: &mut File, source_path: &Path) -> Result<(), StoreError> {
        self.settle();
        let copied = io::copy(source, &mut self.file).map_err(StoreError::io("copy object", source_path))?;
        self.len = copied;
        self.hasher = None;
        Ok(())
    }

    /// Current length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write `bytes` at `offset`, extending the file as needed: all of
    /// them, or an error after which nothing of them counts (the length
    /// goes back; bytes changed inside the old length drop the running
    /// hash, so the commit hashes what is there).
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let before = self.len;
        if let Err(e) = self.file.write_all_at(bytes, offset) {
            let cut = self.file.set_len(before);
            if offset < before || cut.is_err() {
                self.forget_hash();
            }
            if let Err(cut) = cut {
                tracing::error!("staging: could not cut a failed write back: {cut}");
                self.len = self.file.metadata().map_or(before, |m| m.len());
            }
            return Err(StoreError::io("write staging file", &self.path)(e));
        }
        self.record(offset, bytes);
        Ok(())
    }

    /// Write what fits of `bytes` at `offset`: a short count when the disk
    /// fills part way, as write(2) gives; an error only if nothing was
    /// written.
    pub fn write_some_at(&mut self, offset: u64, bytes: &[u8]) -> Result<usize, StoreError> {
        let mut done = 0;
        while done < bytes.len() {
            match self.file.write_at(&bytes[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if done == 0 => return Err(StoreError::io("write staging file", &self.path)(e)),
                Err(_) => break,
            }
        }
        if done == 0 && !bytes.is_empty() {
            let e = io::Error::from(io::ErrorKind::WriteZero);
            return Err(StoreError::io("write staging file", &self.path)(e));
        }
        self.record(offset, &bytes[..done]);
        Ok(done)
    }

    /// Account for `bytes` just written at `offset`: length and hash.
    fn record(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.len() >= WRITEBACK_MIN {
            start_writeback(&self.file, offset, bytes.len());
        }
        let sequential = offset == self.len;
        if let Some(follower) = &mut self.follower {
            if !sequential || !follower.follow(offset, bytes.len()) {
                self.forget_hash();
            }
        } else {
            match &mut self.hasher {
                Some(h) if sequential && h.len() == offset => {
                    if bytes.len() >= FOLLOW_MIN {
                        // Large writes: hash on another thread, so the
                        // writer (a FUSE request) does not wait for it.
                        let hasher = self.hasher.take().unwrap_or_default();
                        self.follower = Follower::start(&self.file, hasher, offset, bytes.len());
                        if self.follower.is_none() {
                            self.hasher = None;
                        }
                    } else {
                        h.update(bytes);
                    }
                }
                _ => self.hasher = None,
            }
        }
        self.len = self.len.max(offset + bytes.len() as u64);
    }

    /// The file no longer matches a running hash: the commit hashes it by
    /// reading it back.
    fn forget_hash(&mut self) {
        self.settle();
        self.hasher = None;
    }

    /// Take the running hash back from the follower thread, if one runs.
    fn settle(&mut self) {
        if let Some(follower) = self.follower.take() {
            self.hasher = follower.finish();
        }
    }

    /// Append `bytes` at the end.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_at(self.len, bytes)
    }

    /// Stream all of `reader` onto the end of the file; returns the bytes
    /// copied. Memory use is a few buffers, whatever the size.
    ///
    /// Past the first chunk, reading, writing and hashing overlap: this
    /// thread reads, one worker writes (starting writeback as it goes, so
    /// the final fsync has little left to do) and one hashes. A large put
    /// then runs at the speed of the slowest of the three, not their sum.
    pub fn append_from(&mut self, reader: &mut dyn Read, source: &Path) -> Result<u64, StoreError> {
        let mut first = vec![0u8; IO_CHUNK];
        let n = read_chunk(reader, &mut first, source)?;
        self.append(&first[..n])?;
        if n < IO_CHUNK {
            return Ok(n as u64);
        }
        self.settle();
        let hashing = self.hasher.take().filter(|h| h.len() == self.len);
        let start = self.len;
        let (file, path) = (&self.file, &self.path);
        let (copied, hasher) =
            std::thread::scope(|scope| -> Result<(u64, Option<ContentHasher>), StoreError> {
                let (to_writer, for_writer) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(PIPELINE_DEPTH);
                let (to_hasher, for_hasher) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(PIPELINE_DEPTH);
                let (recycle, recycled) = std::sync::mpsc::channel::<Arc<Vec<u8>>>();
                let writer = scope.spawn(move || -> Result<(), StoreError> {
                    let mut offset = start;
                    for chunk in for_writer {
                        file.write_all_at(&chunk, offset)
                            .map_err(StoreError::io("write staging file", path))?;
                        start_writeback(file, offset, chunk.len());
                        offset += chunk.len() as u64;
                    }
                    Ok(())
                });
                let hasher = scope.spawn(move || {
                    let mut hasher = hashing;
                    for chunk in for_hasher {
                        if let Some(h) = &mut hasher {
                            h.update(&chunk);
                        }
                        let _ = recycle.send(chunk);
                    }
                    hasher
                });
                let mut total = 0u64;
                let mut buf = first;
                let outcome = loop {
                    let n = match read_chunk(reader, &mut buf, source) {
                        Ok(0) => break Ok(()),
                        Ok(n) => n,
                        Err(e) => break Err(e),
                    };
                    buf.truncate(n);
                    let chunk = Arc::new(std::mem::take(&mut buf));
                    total += n as u64;
                    if to_writer.send(chunk.clone()).is_err() || to_hasher.send(chunk).is_err() {
                        break Ok(()); // the writer failed; its error is reported below
                    }
                    buf = recycled.try_iter().find_map(|c| Arc::try_unwrap(c).ok()).unwrap_or_default();
                    buf.resize(IO_CHUNK, 0);
                };
                drop((to_writer, to_hasher));
                let written = writer.join().unwrap_or_else(|_| {
                    Err(StoreError::io("write staging file", path)(io::Error::other(
                        "writer thread panicked",
                    )))
                });
                let hasher = hasher.join().ok().flatten();
                outcome.and(written).map(|()| (total, hasher))
            })?;
        self.len += copied;
        self.hasher = hasher;
        Ok(n as u64 + copied)
    }

    /// Read up to `buf.len()` bytes at `offset`; returns the count read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read staging file", &self.path)(e)),
            }
        }
        Ok(done)
    }

    /// Change the length (truncate or extend with zeros).
    pub fn set_len(&mut self, len: u64) -> Result<(), StoreError> {
        self.file.set_len(len).map_err(StoreError::io("resize staging file", &self.path))?;
        self.settle();
        self.hasher = match self.hasher.take() {
            _ if len == 0 => Some(ContentHasher::new()),
            // Bytes below a shrink point are unchanged, so their hash holds.
            Some(h) if len < self.len && h.len() <= len => Some(h),
            // Growth adds zeros the running hash has not seen.
            other if len == self.len => other,
            _ => None,
        };
        self.len = len;
        Ok(())
    }

    /// `fallocate(2)` on the staging file (allocate, punch a hole, zero a
    /// range), so the underlying filesystem does the work.
    pub fn fallocate(&mut self, mode: i32, offset: u64, len: u64) -> Result<(), StoreError> {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on a descriptor `self.file` keeps open.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if rc != 0 {
            return Err(StoreError::io("allocate in staging file", &self.path)(io::Error::last_os_error()));
        }
        self.forget_hash();
        self.len = self.file.metadata().map_err(StoreError::io("stat staging file", &self.path))?.len();
        Ok(())
    }

    /// Flush the bytes written so far to disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(StoreError::io("sync staging file", &self.path))
    }

    /// Compute the digests, re-reading the file only if the writes were not
    /// sequential. With `sync`, flush the bytes to disk first; without, the
    /// caller syncs before anything refers to the object
    /// ([`super::Store::sync_all`]).
    pub fn finish(&mut self, sync: bool) -> Result<ContentDigest, StoreError> {
        if sync {
            self.sync()?;
        }
        self.settle();
        match &self.hasher {
            Some(h) if h.len() == self.len => Ok(h.clone().finish()),
            _ => self.rehash(),
        }
    }

    fn rehash(&mut self) -> Result<ContentDigest, StoreError> {
        let mut hasher = ContentHasher::new();
        let mut buf = vec![0u8; IO_CHUNK];
        let mut offset = 0u64;
        while offset < self.len {
            let want = IO_CHUNK.min((self.len - offset) as usize);
            let n = self.read_at(offset, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as u64;
        }
        // Keep the result: a second finish without writes costs nothing.
        self.hasher = Some(hasher.clone());
        Ok(hasher.finish())
    }

    /// The open file, for reads that bypass this type (e.g. FUSE).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Give the file the name `target`, read-only. An existing file there
    /// is replaced: the caller holds the writer lock and knows no metadata
    /// refers to it (a leftover of a crash).
    pub(super) fn link_as(&self, target: &Path) -> Result<(), StoreError> {
        // Objects are read-only: nothing may rewrite published content.
        self.file
            .set_permissions(std::fs::Permissions::from_mode(0o444))
            .map_err(StoreError::io("set permissions on", &self.path))?;
        // A link, never a rename, so the staged bytes stay here until the
        // transaction that names the object commits: if it fails, the
        // object is removed and a retry publishes them again.
        let link = || {
            if self.anonymous { link_fd(&self.file, target) } else { std::fs::hard_link(&self.path, target) }
        };
        match link() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(target).map_err(StoreError::io("replace stale object", target))?;
                link()
            }
            other => other,
        }
        .map_err(StoreError::io("publish object", target))
    }

    /// Write any buffered data (there is none: writes go straight to the
    /// file) and report errors the OS deferred.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.file.flush().map_err(StoreError::io("flush staging file", &self.path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.anonymous {
            // Best effort: a leftover staging file is harmless and gc removes it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A thread hashing a staging file just behind its writer: the writer
/// sends the ranges it wrote, in order; the thread reads them back from the
/// page cache and hashes them.
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

/// Ranges queued for a follower before the writer waits.
const FOLLOW_QUEUE: usize = 64;

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
                let mut buf = vec![0u8; IO_CHUNK];
                for (mut offset, mut len) in queue {
                    while len > 0 {
                        let want = len.min(IO_CHUNK);
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
fn read_chunk(reader: &mut dyn Read, buf: &mut [u8], source: &Path) -> Result<usize, StoreError> {
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
/// the fsync at commit finds most of a large file already on disk.
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a hint on a descriptor `file` keeps open; no memory involved.
    // Failure only means the fsync does all the work.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
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
    use super::super::Store;
    use super::*;

    fn digest_of(bytes: &[u8]) -> ContentDigest {
        ContentHasher::digest(bytes)
    }

    #[test]
    fn a_streamed_multi_chunk_append_hashes_like_one_shot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 * IO_CHUNK + 12345)).map(|i| (i % 253) as u8).collect();
        let mut staging = store.stage().unwrap();
        staging.append(b"prefix").unwrap();
        let n = staging.append_from(&mut &data[..], Path::new("test")).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(staging.hasher.is_some(), "sequential appends keep the running hash");
        let mut whole = b"prefix".to_vec();
        whole.extend_from_slice(&data);
        assert_eq!(staging.finish(false).unwrap(), digest_of(&whole));
        let mut back = vec![0u8; whole.len()];
        assert_eq!(staging.read_at(0, &mut back).unwrap(), whole.len());
        assert_eq!(back, whole);
    }

    #[test]
    fn out_of_order_writes_and_resizes_rehash_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut staging = store.stage().unwrap();
        staging.write_at(5, b"world").unwrap();
        assert!(staging.hasher.is_none(), "a hole drops the running hash");
        staging.write_at(0, b"hello").unwrap();
        assert_eq!(staging.finish(false).unwrap(), digest_of(b"helloworld"));
        staging.set_len(5).unwrap();
        assert_eq!(staging.finish(false).unwrap(), digest_of(b"hello"), "shrink keeps the hashed prefix");
        staging.set_len(7).unwrap();
        assert_eq!(staging.finish(false).unwrap(), digest_of(b"hello\0\0"), "growth adds zeros");
        staging.set_len(0).unwrap();
        staging.append(b"fresh").unwrap();
        assert!(staging.hasher.is_some(), "truncate to 0 restarts the running hash");
        assert_eq!(staging.finish(true).unwrap(), digest_of(b"fresh"));
    }

    #[test]
    fn large_sequential_writes_are_hashed_by_the_follower() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(5 * IO_CHUNK + 777)).map(|i| (i % 241) as u8).collect();
        let mut staging = store.stage().unwrap();
        staging.append(&data[..100]).unwrap();
        for chunk in data[100..].chunks(300_000) {
            staging.append(chunk).unwrap();
        }
        assert!(staging.follower.is_some(), "large appends go to the follower");
        assert_eq!(staging.finish(false).unwrap(), digest_of(&data));
        // After a rewrite in the middle, the result is still right.
        staging.write_at(10, &[0xAA; 70_000]).unwrap();
        let mut changed = data.clone();
        changed[10..70_010].fill(0xAA);
        assert_eq!(staging.finish(false).unwrap(), digest_of(&changed));
        staging.set_len(12).unwrap();
        assert_eq!(staging.finish(true).unwrap(), digest_of(&changed[..12]));
    }

    #[test]
    fn dropping_an_unpublished_staging_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut staging = store.stage().unwrap();
        staging.append(b"never published").unwrap();
        drop(staging);
        assert_eq!(std::fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
    }
}
