//! Small chunks kept in the metadata database.
//!
//! A chunk of up to [`INLINE_MAX`] bytes that a commit holds in memory is
//! stored as a row of the very transaction that names it, not as an object
//! file: there is no file to create, link, sync and later unlink, and it
//! is durable as soon as the write-ahead log is. So an `fsync` of a file
//! that reads no unsynced object costs one log sync, not a sync of the
//! whole filesystem (see `durable.rs`). Larger chunks, and small ones
//! written before schema 6, are object files; a read of a chunk that may
//! be small looks in the database first, and remembers where it found it.

use std::sync::Arc;

use super::{FsResult, Shared};
use crate::id::ContentId;
use crate::store::{MEMORY_CHUNK_MAX, StoreError, wrong_sha1};

/// Largest chunk kept in the database: every chunk a commit holds in
/// memory.
pub(crate) const INLINE_MAX: u64 = MEMORY_CHUNK_MAX as u64;

/// Bytes of chunks kept in memory after a read, at most.
const CACHE_BYTES: u64 = 32 << 20;

/// Where each recently read small chunk is: its checked bytes (kept in the
/// database) or `None` (an object file).
pub(crate) struct InlineChunks {
    found: quick_cache::sync::Cache<ContentId, Option<Arc<[u8]>>, ByLength>,
}

#[derive(Clone)]
struct ByLength;

impl quick_cache::Weighter<ContentId, Option<Arc<[u8]>>> for ByLength {
    fn weight(&self, _: &ContentId, bytes: &Option<Arc<[u8]>>) -> u64 {
        // The entry itself costs something even for an object file.
        64 + bytes.as_ref().map_or(0, |b| b.len() as u64)
    }
}

impl Default for InlineChunks {
    fn default() -> Self {
        InlineChunks { found: quick_cache::sync::Cache::with_weighter(8192, CACHE_BYTES, ByLength) }
    }
}

impl InlineChunks {
    /// Forget what was found of chunk `id` (it is being removed).
    pub(crate) fn forget(&self, id: &ContentId) {
        self.found.remove(id);
    }
}

impl Shared {
    /// Read up to `buf.len()` bytes of chunk `id` at `offset`, from the
    /// database or its object file; the count read. `extent_len` is how
    /// much of the chunk the caller's extent covers: a chunk longer than
    /// [`INLINE_MAX`] is always a file.
    pub(crate) fn read_chunk(
        &self,
        id: &ContentId,
        extent_len: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> FsResult<usize> {
        if extent_len <= INLINE_MAX
            && let Some(bytes) = self.inline_bytes(id)?
        {
            let start = (offset as usize).min(bytes.len());
            let n = buf.len().min(bytes.len() - start);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            return Ok(n);
        }
        Ok(self.store.read_chunk(id, offset, buf)?)
    }

    /// Move the bytes of chunk `id`, kept in the database and found
    /// corrupt, out of it into the quarantine: reads of the files that
    /// hold it then fail instead of returning them.
    pub(crate) fn quarantine_inline(&self, id: &ContentId, bytes: &[u8]) -> FsResult<std::path::PathBuf> {
        let moved = self.store.quarantine_bytes(id, bytes)?;
        self.meta.write(false, |db| db.delete_chunk_bytes(id))?;
        self.inline.forget(id);
        Ok(moved)
    }

    /// Whether `extent` reads a chunk kept in the database (no file).
    pub(crate) fn is_inline(&self, extent: &super::extents::Extent) -> FsResult<bool> {
        Ok(extent.len <= INLINE_MAX && self.inline_bytes(&extent.chunk)?.is_some())
    }

    /// The bytes of chunk `id` if the database keeps them, checked against
    /// its SHA-1 when first read (SQLite keeps no checksums of its own).
    fn inline_bytes(&self, id: &ContentId) -> FsResult<Option<Arc<[u8]>>> {
        if let Some(found) = self.inline.found.get(id) {
            return Ok(found);
        }
        let found = match self.meta.read_point(|db| db.chunk_bytes(id))? {
            Some(bytes) => {
                if let Some(sha1) = wrong_sha1(id, &bytes) {
                    let detail = format!("its bytes in the database hash to {}", hex::encode(sha1));
                    tracing::error!("chunk {id} is corrupt: {detail}; run `tsmfs scrub`");
                    return Err(StoreError::Corrupt { id: *id, detail }.into());
                }
                Some(Arc::from(bytes))
            }
            None => None,
        };
        self.inline.found.insert(*id, found.clone());
        Ok(found)
    }
}
