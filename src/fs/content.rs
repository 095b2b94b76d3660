//! The content registry: every byte string the store knows, by SHA-1 and
//! collision index. A row is a chunk (its object file exists while
//! extents read it: `chunk_refs`), a whole file's identity (its ETag,
//! held by the inodes whose content it is: `refcount`), or both (a file
//! that is one chunk). Equal SHA-1, size and blake3 mean equal bytes;
//! equal SHA-1 with another blake3 is a genuine collision, stored under
//! the next free `hi`.

use super::inline::INLINE_MAX;
use super::{EMPTY_SHA1, FsError, FsResult, Tx};
use crate::id::ContentId;
use crate::meta::{ContentRecord, Db, MetaError};
use crate::store::{ContentDigest, SealedChunk};

/// The id of the bytes hashed as `digest`, recording them (with no
/// references) if new; with their record if they were known.
pub(super) fn register(
    db: &Db<'_>,
    digest: &ContentDigest,
    now_ns: i64,
) -> Result<(ContentId, Option<ContentRecord>), MetaError> {
    let same_sha1 = db.contents_with_sha1(&digest.sha1)?;
    if let Some(existing) = same_sha1.iter().find(|c| c.blake3 == digest.blake3 && c.size == digest.size) {
        return Ok((existing.id, Some(existing.clone())));
    }
    let hi = same_sha1.last().map_or(0, |c| c.id.hi + 1);
    let id = ContentId::new(hi, digest.sha1);
    if hi > 0 {
        tracing::warn!(
            "SHA-1 collision: {} differs from {} stored content(s) with the same SHA-1; stored as {id}",
            id.lo_hex(),
            same_sha1.len()
        );
    }
    db.insert_content(&id, digest.size, &digest.blake3, now_ns)?;
    Ok((id, None))
}

/// Whether a new copy of `chunk` is kept in the database (in the
/// transaction that names it) rather than as an object file.
pub(super) fn stays_inline(chunk: &SealedChunk) -> bool {
    chunk.bytes().is_some_and(|bytes| bytes.len() as u64 <= INLINE_MAX)
}

impl Tx<'_, '_> {
    /// The chunk id of `chunk`, publishing its object unless one is
    /// already there (change `seq`). Inserting an extent takes the
    /// reference. Must run inside the transaction that inserts it, so two
    /// commits of the same new bytes cannot both publish.
    pub(super) fn adopt_chunk(&mut self, chunk: &SealedChunk, seq: u64) -> FsResult<ContentId> {
        let (id, existing) = register(self.db, &chunk.digest, self.now)?;
        let present = match &existing {
            // Its object is in use, unless it was lost (quarantined or
            // deleted by hand): these bytes are a verified copy.
            Some(record) if record.chunk_refs > 0 => {
                let there = self.db.has_chunk_bytes(&id)? || self.store.contains(&id);
                if !there {
                    tracing::warn!("restoring missing object {id}");
                }
                there
            }
            _ => false,
        };
        if !present {
            match chunk.bytes().filter(|_| stays_inline(chunk)) {
                // Durable with this transaction: nothing to sync or check.
                Some(bytes) => self.db.put_chunk_bytes(&id, bytes)?,
                None => {
                    self.store.publish_sealed(chunk, &id)?;
                    self.published.borrow_mut().push(id);
                    self.db.mark_unsynced(&id, seq)?;
                }
            }
        }
        Ok(id)
    }

    /// The whole-file id of the bytes hashed as `digest`, with one more
    /// file holding it.
    pub(super) fn adopt_content(&mut self, digest: &ContentDigest) -> FsResult<ContentId> {
        if digest.size == 0 && digest.sha1 == EMPTY_SHA1 {
            return Err(FsError::Internal("the empty content is never recorded"));
        }
        let (id, _) = register(self.db, digest, self.now)?;
        self.db.add_content_refs(&id, 1)?;
        Ok(id)
    }

    /// One file less holds `id`; the row goes when nothing uses it.
    pub(super) fn release_content(&mut self, id: ContentId) -> FsResult<()> {
        self.db.add_content_refs(&id, -1)?;
        if self.db.delete_content_if_unused(&id)? {
            self.released.push(id);
        }
        Ok(())
    }
}
