//! Whole-file writes: `put` (one file from a stream) and `put_batch`
//! (many files, one transaction, one filesystem sync), with the staging
//! that feeds them.

use std::io::Read;

use super::content::Body;
use super::{Attr, Caller, ChangeOp, FileKind, Fs, FsError, FsResult};
use crate::id::{ContentId, Ino};
use crate::store::{ContentDigest, Durability, StoreError};

impl Fs {
    /// Create or replace the regular file `parent/name` with all bytes of
    /// `reader`, atomically: readers see the old or the new file, never a
    /// mix. Memory use is one buffer whatever the size.
    pub fn put(
        &self,
        parent: Ino,
        name: &[u8],
        reader: &mut dyn std::io::Read,
        options: PutOptions,
        caller: &Caller,
    ) -> FsResult<Attr> {
        self.put_if(parent, name, reader, options, caller, &|_| true)
    }

    /// [`Fs::put`], committed only if `precondition` holds for the
    /// target's content at commit time (`None`: no such file), else
    /// [`FsError::PreconditionFailed`] and nothing changes. It is checked
    /// inside the commit transaction, so of two racing writers that
    /// expect the same content, one wins and the other fails (HTTP
    /// If-Match).
    pub fn put_if(
        &self,
        parent: Ino,
        name: &[u8],
        reader: &mut dyn std::io::Read,
        options: PutOptions,
        caller: &Caller,
        precondition: Precondition<'_>,
    ) -> FsResult<Attr> {
        super::check_name(name)?;
        let mut staged = Some(self.stage(reader, true)?);
        self.transact(caller.origin, options.durable, |tx| {
            let staged = staged.as_mut().ok_or(FsError::BadHandle)?;
            tx.put_staged(parent, name, staged, &options, caller, Durability::Immediate, precondition)
        })
    }

    /// Hash `reader` into a new staging file, for [`Fs::put_batch`]. With
    /// `sync`, the bytes are flushed to disk now; otherwise the batch
    /// commit flushes them all with one `syncfs`.
    pub fn stage(&self, reader: &mut dyn std::io::Read, sync: bool) -> FsResult<Staged> {
        self.check_writable()?;
        let source = std::path::Path::new("input");
        let mut head = Vec::with_capacity(INLINE_MAX + 1);
        reader.take(INLINE_MAX as u64 + 1).read_to_end(&mut head).map_err(StoreError::io("read", source))?;
        if head.len() <= INLINE_MAX {
            let digest = crate::store::ContentHasher::digest(&head);
            return Ok(Staged { body: Some(Body::Bytes(head)), digest });
        }
        let mut staging = self.store.stage()?;
        staging.append(&head)?;
        staging.append_from(reader, source)?;
        let digest = staging.finish(sync)?;
        Ok(Staged { body: Some(Body::File(Box::new(staging))), digest })
    }

    /// Create or replace many files in one transaction with one filesystem
    /// sync: the fast path for bulk import. All or nothing.
    pub fn put_batch(&self, batch: &mut [StagedPut], caller: &Caller) -> FsResult<Vec<Attr>> {
        for item in batch.iter() {
            super::check_name(&item.name)?;
        }
        self.transact(caller.origin, false, |tx| {
            let mut attrs = Vec::with_capacity(batch.len());
            for item in batch.iter_mut() {
                attrs.push(tx.put_staged(
                    item.parent,
                    &item.name,
                    &mut item.staged,
                    &item.options,
                    caller,
                    Durability::Deferred,
                    &|_| true,
                )?);
            }
            // Objects (data and renames) reach the disk before the
            // metadata that names them commits.
            tx.store.sync_all()?;
            Ok(attrs)
        })
    }
}

/// Contents up to this size are staged in memory: no staging file is made,
/// and none at all when the bytes dedupe onto a stored content.
const INLINE_MAX: usize = 64 * 1024;

/// Bytes hashed and staged, not yet part of the tree.
#[derive(Debug)]
pub struct Staged {
    body: Option<Body>,
    digest: ContentDigest,
}

impl Staged {
    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.digest.size
    }
}

/// One file of a [`Fs::put_batch`].
#[derive(Debug)]
pub struct StagedPut {
    /// Directory to put it in.
    pub parent: Ino,
    /// Its name there.
    pub name: Vec<u8>,
    /// Its bytes.
    pub staged: Staged,
    /// Mode and time.
    pub options: PutOptions,
}

/// A test of a put target's current content (`None`: no such file),
/// run inside the commit transaction; see [`Fs::put_if`].
pub type Precondition<'a> = &'a (dyn Fn(Option<ContentId>) -> bool + Sync);

/// Options of [`Fs::put`].
#[derive(Clone, Copy, Debug)]
pub struct PutOptions {
    /// Permission bits of a new file.
    pub perm: u32,
    /// Modification time to record (default: now).
    pub mtime_ns: Option<i64>,
    /// fsync the metadata commit too.
    pub durable: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions { perm: 0o644, mtime_ns: None, durable: false }
    }
}

impl super::Tx<'_, '_> {
    /// The body of a put: create `parent/name` or replace its content.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_staged(
        &mut self,
        parent: Ino,
        name: &[u8],
        staged: &mut Staged,
        options: &PutOptions,
        caller: &Caller,
        durability: Durability,
        precondition: Precondition<'_>,
    ) -> FsResult<Attr> {
        let dir = self.existing_dir(parent)?;
        let existing = self.db.lookup(parent, name)?;
        if existing.as_ref().is_some_and(|inode| inode.kind != FileKind::File) {
            return Err(FsError::IsDir);
        }
        if !precondition(existing.as_ref().and_then(Attr::content_id)) {
            return Err(FsError::PreconditionFailed);
        }
        let digest = staged.digest;
        let new = self.adopt(&mut staged.body, &digest, durability)?;
        let mtime = options.mtime_ns.unwrap_or(self.now);
        let ino = match existing {
            Some(mut inode) => {
                self.switch_content(&mut inode, new, digest.size, mtime)?;
                inode.ino
            }
            None => {
                let ino = self.new_file(&dir, name, options.perm, new, digest.size, caller)?;
                if options.mtime_ns.is_some() {
                    let mut inode = self.db.inode(ino)?.ok_or(FsError::NotFound)?;
                    inode.mtime_ns = mtime;
                    self.db.update_inode(&inode)?;
                }
                ino
            }
        };
        self.db.inode(ino)?.ok_or(FsError::NotFound)
    }

    /// Link a new regular file named `name` into directory `dir`, owned by
    /// the caller, holding `content` (whose reference the caller has taken).
    fn new_file(
        &mut self,
        dir: &Attr,
        name: &[u8],
        perm: u32,
        content: Option<ContentId>,
        size: u64,
        caller: &Caller,
    ) -> FsResult<Ino> {
        // BSD group semantics under a setgid directory, as in mknod/create.
        let gid = if dir.perm & libc::S_ISGID != 0 { dir.gid } else { caller.gid };
        let ino = self.db.insert_inode(&crate::meta::NewInode {
            kind: FileKind::File,
            perm: perm & 0o7777,
            uid: caller.uid,
            gid,
            size,
            now_ns: self.now,
            nlink: 1,
            rdev: 0,
            content,
            symlink: None,
        })?;
        self.db.insert_dirent(dir.ino, name, ino)?;
        self.db.touch_dir(dir.ino, self.now)?;
        self.log(ChangeOp::Create, ino, Some((dir.ino, name)), None, content, vec![dir.ino])?;
        Ok(ino)
    }
}

impl Fs {
    /// Create or replace the regular file `parent/name` with the committed
    /// content and dead properties of file `source`. Metadata only: the new name shares the
    /// content id, and no byte is copied.
    pub fn copy_file(&self, source: Ino, parent: Ino, name: &[u8], caller: &Caller) -> FsResult<Attr> {
        super::check_name(name)?;
        self.transact(caller.origin, false, |tx| {
            let from = tx.db.inode(source)?.ok_or(FsError::NotFound)?;
            if from.kind != FileKind::File {
                return Err(FsError::IsDir);
            }
            let dir = tx.existing_dir(parent)?;
            let existing = match tx.db.lookup(parent, name)? {
                Some(existing) if existing.kind != FileKind::File => return Err(FsError::IsDir),
                Some(existing) if existing.ino == from.ino => return Ok(existing),
                other => other,
            };
            if let Some(id) = from.content {
                tx.db.add_content_refs(&id, 1)?;
            }
            let target = match existing {
                Some(mut existing) => {
                    tx.switch_content(&mut existing, from.content, from.size, tx.now)?;
                    existing.ino
                }
                None => tx.new_file(&dir, name, from.perm & 0o777, from.content, from.size, caller)?,
            };
            // COPY carries the dead properties along (RFC 4918, 9.8.2).
            tx.db.copy_dead_props(from.ino, target)?;
            tx.db.inode(target)?.ok_or(FsError::NotFound)
        })
    }
}
