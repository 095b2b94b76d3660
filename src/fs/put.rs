//! Whole-file writes: `put` (one file from a stream) and `put_batch`
//! (many files, one transaction, one filesystem sync), with the staging
//! that feeds them.

use std::io::Read;

use std::sync::Arc;

use super::commit::Body;
use super::{Attr, Caller, ChangeOp, FileKind, Fs, FsError, FsResult};
use crate::id::{ContentId, Ino};
use crate::store::{ContentDigest, MEMORY_CHUNK_MAX, SealedChunk, StoreError};

impl Fs {
    /// Create or replace the regular file `parent/name` with all bytes of
    /// `reader`, atomically: readers see the old or the new file, never a
    /// mix. Memory use is a few chunks whatever the size.
    pub fn put(
        &self,
        parent: Ino,
        name: &[u8],
        reader: &mut dyn std::io::Read,
        options: PutOptions,
        caller: &Caller,
    ) -> FsResult<Attr> {
        self.put_checked(parent, name, reader, options, caller, None)
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
        self.put_checked(parent, name, reader, options, caller, Some(precondition))
    }

    fn put_checked(
        &self,
        parent: Ino,
        name: &[u8],
        reader: &mut dyn std::io::Read,
        options: PutOptions,
        caller: &Caller,
        precondition: Option<Precondition<'_>>,
    ) -> FsResult<Attr> {
        super::check_name(name)?;
        let staged = self.stage(reader)?;
        self.put_staged(parent, name, staged, options, caller, precondition)
    }

    /// Create or replace `parent/name` with bytes staged before (see
    /// [`Stager`]), committed only if `precondition` (if any) holds, as in
    /// [`Fs::put_if`].
    pub fn put_staged(
        &self,
        parent: Ino,
        name: &[u8],
        mut staged: Staged,
        options: PutOptions,
        caller: &Caller,
        precondition: Option<Precondition<'_>>,
    ) -> FsResult<Attr> {
        super::check_name(name)?;
        if options.expect_sha1.is_some_and(|sha1| sha1 != staged.digest.sha1) {
            return Err(FsError::ChecksumMismatch);
        }
        for _ in 0..16 {
            // A precondition needs the target's content id: computed
            // first if its last commit left it for later.
            if precondition.is_some()
                && let Ok(existing) = self.lookup(parent, name)
                && existing.kind == FileKind::File
            {
                match self.with_content_id(existing) {
                    Ok(_) | Err(FsError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            let put = self.transact(caller.origin, |tx| {
                tx.put_staged(parent, name, &mut staged, &options, caller, precondition)
            });
            match put {
                Err(FsError::Retry) => continue,
                Ok(attr) => {
                    self.after_content_commit(&attr);
                    if options.durable {
                        self.sync()?;
                    }
                    return Ok(attr);
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Retry)
    }

    /// Hash `reader` into a chunk set aside in the store, for
    /// [`Fs::put_batch`]. A body is one object, read, written and hashed
    /// in a pipeline (see `RunFile::append_from`); a small one stays in
    /// memory, where it costs nothing if it dedupes.
    pub fn stage(&self, reader: &mut dyn std::io::Read) -> FsResult<Staged> {
        self.check_writable()?;
        let source = std::path::Path::new("input");
        let first = read_up_to(reader, MEMORY_CHUNK_MAX + 1, source)?;
        if first.len() <= MEMORY_CHUNK_MAX {
            return Ok(self.staged_whole(first));
        }
        let mut run = self.store.start_run()?;
        run.append(&first)?;
        run.append_from(reader, source)?;
        let chunk = run.seal()?;
        let digest = chunk.digest;
        Ok(Staged { chunks: vec![Arc::new(chunk)], digest })
    }

    /// A stager for a body that arrives in pieces.
    pub fn stager(&self) -> FsResult<Stager> {
        self.check_writable()?;
        Ok(Stager { first: Vec::new(), run: None })
    }

    /// A body that fits in one chunk.
    fn staged_whole(&self, bytes: Vec<u8>) -> Staged {
        let chunk = SealedChunk::in_memory(bytes);
        let digest = chunk.digest;
        let chunks = if chunk.is_empty() { vec![] } else { vec![Arc::new(chunk)] };
        Staged { chunks, digest }
    }

    /// Create or replace many files in one transaction: the fast path for
    /// bulk import. All or nothing.
    pub fn put_batch(&self, batch: &mut [StagedPut], caller: &Caller) -> FsResult<Vec<Attr>> {
        for item in batch.iter() {
            super::check_name(&item.name)?;
        }
        let attrs = self.transact(caller.origin, |tx| {
            let mut attrs = Vec::with_capacity(batch.len());
            for item in batch.iter_mut() {
                attrs.push(tx.put_staged(
                    item.parent,
                    &item.name,
                    &mut item.staged,
                    &item.options,
                    caller,
                    None,
                )?);
            }
            Ok(attrs)
        })?;
        for attr in &attrs {
            self.after_content_commit(attr);
        }
        Ok(attrs)
    }
}

/// A body staged piece by piece as it arrives (an HTTP upload), so that
/// nothing waits on a thread between pieces. Small bodies stay in memory;
/// a larger one becomes one object. Dropped unfinished, it leaves nothing.
#[derive(Debug)]
pub struct Stager {
    first: Vec<u8>,
    run: Option<crate::store::RunFile>,
}

impl Stager {
    /// Append `bytes` (blocking: it may write to the staging file).
    pub fn write(&mut self, fs: &Fs, bytes: &[u8]) -> FsResult<()> {
        if let Some(run) = &mut self.run {
            return Ok(run.append(bytes)?);
        }
        if self.first.len() + bytes.len() <= MEMORY_CHUNK_MAX {
            self.first.extend_from_slice(bytes);
            return Ok(());
        }
        let mut run = fs.store.start_run()?;
        run.append(&std::mem::take(&mut self.first))?;
        run.append(bytes)?;
        self.run = Some(run);
        Ok(())
    }

    /// The bytes written, staged (blocking: it may finish hashing).
    pub fn finish(self, fs: &Fs) -> FsResult<Staged> {
        let Some(run) = self.run else { return Ok(fs.staged_whole(self.first)) };
        let chunk = run.seal()?;
        let digest = chunk.digest;
        Ok(Staged { chunks: vec![Arc::new(chunk)], digest })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.run.as_ref().map_or(self.first.len() as u64, |run| run.len())
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fill a buffer of up to `max` bytes from `reader` (short only at its end).
fn read_up_to(reader: &mut dyn std::io::Read, max: usize, source: &std::path::Path) -> FsResult<Vec<u8>> {
    let mut buf = Vec::with_capacity(max.min(1 << 16));
    reader.take(max as u64).read_to_end(&mut buf).map_err(StoreError::io("read", source))?;
    Ok(buf)
}

/// Bytes hashed and staged as chunks, not yet part of the tree.
#[derive(Debug)]
pub struct Staged {
    pub(super) chunks: Vec<Arc<SealedChunk>>,
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
    /// Return only once the file is durable (as after fsync).
    pub durable: bool,
    /// The SHA-1 the sender says the bytes have (an upload checksum):
    /// anything else is refused with [`FsError::ChecksumMismatch`] and
    /// changes nothing.
    pub expect_sha1: Option<[u8; 20]>,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions { perm: 0o644, mtime_ns: None, durable: false, expect_sha1: None }
    }
}

impl super::Tx<'_, '_> {
    /// The body of a put: create `parent/name` or replace its content.
    pub(super) fn put_staged(
        &mut self,
        parent: Ino,
        name: &[u8],
        staged: &mut Staged,
        options: &PutOptions,
        caller: &Caller,
        precondition: Option<Precondition<'_>>,
    ) -> FsResult<Attr> {
        let dir = self.existing_dir(parent)?;
        let existing = self.db.lookup(parent, name)?;
        if existing.as_ref().is_some_and(|inode| inode.kind != FileKind::File) {
            return Err(FsError::IsDir);
        }
        if let Some(precondition) = precondition {
            match existing.as_ref().map(|inode| inode.content_id()) {
                // Computed just before, yet the file changed again.
                Some(None) => return Err(FsError::Retry),
                Some(Some(id)) if !precondition(Some(id)) => return Err(FsError::PreconditionFailed),
                None if !precondition(None) => return Err(FsError::PreconditionFailed),
                _ => {}
            }
        }
        let created = existing.is_none();
        let mut inode = match existing {
            Some(inode) => Attr { perm: super::access::mode_after_write(caller.uid, inode.perm), ..inode },
            None => {
                let ino = self.new_file(&dir, name, options.perm, caller)?;
                self.db.inode(ino)?.ok_or(FsError::NotFound)?
            }
        };
        let seq = self.seq()?;
        let size = staged.digest.size;
        let body = Body::Whole { chunks: std::mem::take(&mut staged.chunks), digest: Some(staged.digest) };
        let written = self.write_body(&inode, &body, size, seq, None);
        // Kept for a retry of the transaction.
        if let Body::Whole { chunks, .. } = body {
            staged.chunks = chunks;
        }
        let (content, _) = written?;
        let mtime = options.mtime_ns.unwrap_or(self.now);
        let logged = self.set_content(&mut inode, size, content, mtime, self.now, seq)?;
        self.log_put(&dir, name, &inode, created, logged)?;
        Ok(inode)
    }

    /// Log a file's new content: its creation (as `name` in `dir`) if
    /// `created`, else a write.
    fn log_put(
        &mut self,
        dir: &Attr,
        name: &[u8],
        inode: &Attr,
        created: bool,
        content: Option<ContentId>,
    ) -> FsResult<()> {
        match created {
            true => {
                self.log(ChangeOp::Create, inode.ino, Some((dir.ino, name)), None, content, vec![dir.ino])
            }
            false => self.log_write(inode, content),
        }
    }

    /// Link a new, empty regular file named `name` into directory `dir`,
    /// owned by the caller; the caller logs it (with its content).
    fn new_file(&mut self, dir: &Attr, name: &[u8], perm: u32, caller: &Caller) -> FsResult<Ino> {
        // BSD group semantics under a setgid directory, as in mknod/create.
        let gid = if dir.perm & libc::S_ISGID != 0 { dir.gid } else { caller.gid };
        let ino = self.db.insert_inode(&crate::meta::NewInode {
            kind: FileKind::File,
            perm: perm & 0o7777,
            uid: caller.uid,
            gid,
            size: 0,
            now_ns: self.now,
            nlink: 1,
            rdev: 0,
            content: None,
            symlink: None,
        })?;
        self.db.insert_dirent(dir.ino, name, ino)?;
        self.db.touch_dir(dir.ino, self.now)?;
        self.created.push(ino);
        Ok(ino)
    }
}

impl Fs {
    /// Create or replace the regular file `parent/name` with the committed
    /// content and dead properties of file `source`. Metadata only: the new name shares the
    /// content id, and no byte is copied.
    pub fn copy_file(&self, source: Ino, parent: Ino, name: &[u8], caller: &Caller) -> FsResult<Attr> {
        super::check_name(name)?;
        let copied = self.transact(caller.origin, |tx| {
            let from = tx.db.inode(source)?.ok_or(FsError::NotFound)?;
            if from.kind != FileKind::File {
                return Err(FsError::IsDir);
            }
            let dir = tx.existing_dir(parent)?;
            let existing = tx.db.lookup(parent, name)?;
            let created = existing.is_none();
            let mut target = match existing {
                Some(existing) if existing.kind != FileKind::File => return Err(FsError::IsDir),
                Some(existing) if existing.ino == from.ino => return Ok(existing),
                Some(existing) => {
                    Attr { perm: super::access::mode_after_write(caller.uid, existing.perm), ..existing }
                }
                None => {
                    let ino = tx.new_file(&dir, name, from.perm & 0o777, caller)?;
                    tx.db.inode(ino)?.ok_or(FsError::NotFound)?
                }
            };
            let seq = tx.seq()?;
            let extents = tx.db.extents(from.ino)?;
            tx.replace_extents(&target, extents.iter(), seq)?;
            if let Some(id) = from.content {
                tx.db.add_content_refs(&id, 1)?;
            }
            let logged = tx.set_content(&mut target, from.size, from.content, tx.now, tx.now, seq)?;
            tx.log_put(&dir, name, &target, created, logged)?;
            // COPY carries the dead properties along (RFC 4918, 9.8.2).
            tx.db.copy_dead_props(from.ino, target.ino)?;
            tx.db.inode(target.ino)?.ok_or(FsError::NotFound)
        })?;
        self.after_content_commit(&copied);
        Ok(copied)
    }
}
