//! Staging files: where new content is written before it becomes an object.
//!
//! A staging file hashes sequential writes as they arrive, so committing a
//! file written front to back costs no second read. Any other write pattern
//! (seek back, hole, truncate) drops the running hash and the content is
//! re-read once at [`Staging::finish`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ContentDigest, ContentHasher, StoreError};

/// Buffer size for streaming reads and copies.
pub(crate) const IO_CHUNK: usize = 1024 * 1024;

/// A file under `<data>/staging/` being filled with new content.
#[derive(Debug)]
pub struct Staging {
    file: File,
    path: PathBuf,
    len: u64,
    /// Running hash of bytes `0..hasher.len()`, while writes are sequential.
    hasher: Option<ContentHasher>,
    /// Whether the file was removed or handed over (no cleanup on drop).
    taken: bool,
}

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHasher({} bytes)", self.len())
    }
}

impl Staging {
    pub(super) fn create(path: PathBuf) -> Result<Staging, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io("create staging file", &path))?;
        Ok(Staging { file, path, len: 0, hasher: Some(ContentHasher::new()), taken: false })
    }

    /// Copy all of `source` into this (empty) staging file. The running
    /// hash is dropped: the copy goes kernel-side (`copy_file_range`), and
    /// a copy-on-write file is rarely rewritten front to back.
    pub(super) fn fill_from(&mut self, source: &mut File, source_path: &Path) -> Result<(), StoreError> {
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

    /// Write `bytes` at `offset`, extending the file as needed.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.file.write_all_at(bytes, offset).map_err(StoreError::io("write staging file", &self.path))?;
        match &mut self.hasher {
            Some(h) if h.len() == offset && offset == self.len => h.update(bytes),
            _ => self.hasher = None,
        }
        self.len = self.len.max(offset + bytes.len() as u64);
        Ok(())
    }

    /// Append `bytes` at the end.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_at(self.len, bytes)
    }

    /// Stream all of `reader` onto the end of the file; returns the bytes
    /// copied. Memory use is one buffer, whatever the size.
    pub fn append_from(&mut self, reader: &mut dyn Read, source: &Path) -> Result<u64, StoreError> {
        let mut buf = vec![0u8; IO_CHUNK];
        let mut total = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io("read", source)(e)),
            };
            self.append(&buf[..n])?;
            total += n as u64;
        }
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

    /// Compute the digests, re-reading the file only if the writes were not
    /// sequential. With `sync`, flush the bytes to disk first; without, the
    /// caller syncs before anything refers to the object
    /// ([`super::Store::sync_all`]).
    pub fn finish(&mut self, sync: bool) -> Result<ContentDigest, StoreError> {
        if sync {
            self.file.sync_data().map_err(StoreError::io("sync staging file", &self.path))?;
        }
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

    pub(super) fn into_path(mut self) -> PathBuf {
        self.taken = true;
        std::mem::take(&mut self.path)
    }

    /// Write any buffered data (there is none: writes go straight to the
    /// file) and report errors the OS deferred.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.file.flush().map_err(StoreError::io("flush staging file", &self.path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.taken {
            // Best effort: a leftover staging file is harmless and gc removes it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
