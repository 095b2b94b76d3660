//! Turning staged bytes into a stored content: dedupe on (SHA-1, blake3),
//! a new collision index on a genuine SHA-1 collision.

use super::{Attr, ChangeOp, EMPTY_SHA1, FsError, FsResult, Tx};
use crate::id::ContentId;
use crate::store::{ContentDigest, Durability, Staging};

/// Bytes waiting to become a content: a staging file, or, for small
/// contents, the bytes themselves (no file is made unless they are new).
#[derive(Debug)]
pub(crate) enum Body {
    /// A staging file.
    File(Box<Staging>),
    /// Bytes in memory.
    Bytes(Vec<u8>),
}

impl Tx<'_, '_> {
    /// Make `staged` (hashed to `digest`) a stored content and take one
    /// reference to it; `staged` stays for the caller to drop once the
    /// transaction is over. Returns `None` for empty content, which is never
    /// stored. Must run inside the transaction that records the reference,
    /// so two commits of the same new bytes cannot both publish.
    pub(super) fn adopt(
        &mut self,
        staged: &mut Option<Body>,
        digest: &ContentDigest,
        durability: Durability,
    ) -> FsResult<Option<ContentId>> {
        if digest.size == 0 && digest.sha1 == EMPTY_SHA1 {
            return Ok(None);
        }
        let same_sha1 = self.db.contents_with_sha1(&digest.sha1)?;
        let id = match same_sha1.iter().find(|c| c.blake3 == digest.blake3 && c.size == digest.size) {
            Some(existing) => {
                if !self.store.contains(&existing.id) {
                    // The object was lost (quarantined or deleted by hand):
                    // these bytes are a verified copy, so put them back.
                    tracing::warn!("restoring missing object {}", existing.id);
                    self.publish(&*staged, &existing.id, durability)?;
                }
                existing.id
            }
            None => {
                let hi = same_sha1.last().map_or(0, |c| c.id.hi + 1);
                let id = ContentId::new(hi, digest.sha1);
                if hi > 0 {
                    tracing::warn!(
                        "SHA-1 collision: {} differs from {} stored content(s) with the same SHA-1; stored as {id}",
                        id.lo_hex(),
                        same_sha1.len()
                    );
                }
                self.publish(&*staged, &id, durability)?;
                self.db.insert_content(&id, digest.size, &digest.blake3, self.now)?;
                id
            }
        };
        self.db.add_content_refs(&id, 1)?;
        Ok(Some(id))
    }

    /// Publish the staged bytes as object `id`. They stay staged: should
    /// the transaction fail, the object goes (see [`Fs::transact`]) and a
    /// retry publishes them again.
    fn publish(&self, staged: &Option<Body>, id: &ContentId, durability: Durability) -> FsResult<()> {
        match staged {
            Some(Body::File(staging)) => self.store.publish(staging, id, durability)?,
            Some(Body::Bytes(bytes)) => self.store.publish_bytes(bytes, id, durability)?,
            None => return Err(FsError::Invalid("staged content was lost before commit")),
        }
        self.published.borrow_mut().push(*id);
        Ok(())
    }

    /// Make `new` (already referenced once for it) the content of `inode`
    /// with the given size and mtime, drop the reference to its old
    /// content, and log the write. Returns the id (the empty id for empty).
    pub(super) fn switch_content(
        &mut self,
        inode: &mut Attr,
        new: Option<ContentId>,
        size: u64,
        mtime_ns: i64,
    ) -> FsResult<ContentId> {
        let old = std::mem::replace(&mut inode.content, new);
        inode.size = size;
        inode.mtime_ns = mtime_ns;
        inode.ctime_ns = self.now;
        self.db.update_inode(inode)?;
        if let Some(old) = old {
            self.release_content(old)?;
        }
        let id = new.unwrap_or(super::EMPTY_CONTENT);
        self.log(ChangeOp::Write, inode.ino, None, None, Some(id), vec![])?;
        Ok(id)
    }
}
