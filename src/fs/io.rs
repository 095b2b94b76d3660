//! Open files: handles, pending writes, commit, versioned reads.
//!
//! Writes of all handles of an inode go to one set of pending writes
//! (`Pending`), so every handle reads what any of them wrote (POSIX). A
//! commit turns them into chunks and extents in one transaction (see
//! `commit.rs`); readers of the tree never see a partial write. A commit
//! happens at an fsync, at the flush or release of a handle that wrote
//! since the last commit, and at the last release. A failed commit
//! discards the pending writes (see `commit_open`).
//!
//! A handle with nothing pending reads the version it opened. Commits
//! through handles move every handle of the inode to the new version; a
//! whole-file replacement from elsewhere (WebDAV PUT, `tsmfs put`) does
//! not, so an open handle keeps reading the version it opened (its pin
//! keeps that version's chunks).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use super::commit::Committed;
use super::open::{HandleState, OpenHandle, OpenInode, Version};
use super::pending::{HeldAttrs, Pending};
use super::{Attr, Caller, FileKind, Fs, FsError, FsResult, Origin, check_name, now_ns};
use crate::id::{ContentId, Handle, Ino};

/// Largest file size: offsets must fit `i64` (SQLite, `off_t`).
pub const MAX_FILE_SIZE: u64 = i64::MAX as u64;

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    /// Reads allowed.
    pub read: bool,
    /// Writes allowed.
    pub write: bool,
    /// Truncate to 0 at open (O_TRUNC).
    pub truncate: bool,
    /// Every write goes to the end (O_APPEND).
    pub append: bool,
}

/// What [`Fs::open_file`] returns.
#[derive(Debug)]
pub struct Opened {
    /// The new handle.
    pub handle: Handle,
    /// Attributes at open (after O_TRUNC).
    pub attr: Attr,
    /// The version the handle reads: the change that wrote its bytes.
    pub data_seq: u64,
    /// The object file behind a read-only handle with nothing pending,
    /// when the file is exactly one object: a frontend may read it
    /// directly (FUSE passthrough) because objects never change.
    pub backing: Option<Arc<File>>,
}

/// What [`Fs::copy_range`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Bytes copied.
    pub copied: u64,
    /// The target's new version, when the copy only copied extents.
    pub data_seq: Option<u64>,
}

/// Buffer of a byte-by-byte copy.
const COPY_BUFFER: usize = 1024 * 1024;

impl Fs {
    /// The attributes to report for `inode`, just read from the database:
    /// for an open inode, re-read under its lock (a commit may have
    /// happened since; reporting the older size would make the kernel
    /// shrink the file it knows) and with pending writes applied.
    pub(super) fn current(&self, inode: Attr) -> FsResult<Attr> {
        match self.open_files.inode(inode.ino) {
            Some(open) => Ok(self.read_open(&open)?.unwrap_or(inode)),
            None => Ok(inode),
        }
    }

    /// The attributes of the open inode `open`, read under its lock (no
    /// commit through it slips in between), with its pending writes and
    /// held attributes applied; `None` if its row is gone.
    pub(super) fn read_open(&self, open: &Mutex<OpenInode>) -> FsResult<Option<Attr>> {
        let open = open.lock();
        let fresh = self.meta.read_point(|db| db.inode(open.ino))?;
        Ok(fresh.map(|fresh| with_pending(&open, fresh)))
    }

    /// Open `ino`. With `flags.truncate` (and write) the file reads as
    /// empty at once; the truncation commits with the handle's writes.
    pub fn open_file(&self, ino: Ino, flags: OpenFlags) -> FsResult<Opened> {
        if flags.write || flags.truncate {
            self.check_writable()?;
        }
        let open = self.open_files.count_handle(ino);
        self.open_counted(ino, &open, flags, None)
    }

    /// Create regular file `parent/name` and open it: one write
    /// transaction, nothing read back. The handle is counted inside the
    /// transaction, so an unlink right after (which waits for the commit)
    /// leaves an open-unlinked file, as it would for any open file.
    pub fn create_file(
        &self,
        parent: Ino,
        name: &[u8],
        perm: u32,
        caller: &Caller,
        flags: OpenFlags,
    ) -> FsResult<Opened> {
        check_name(name)?;
        // Kept outside the transaction too: a commit can fail after the
        // handle was counted, and then the count is taken back.
        let mut counted = None;
        let made = self.transact(caller.origin, |tx| {
            let attr = tx.make_file(parent, name, perm, caller)?;
            let open = self.open_files.count_handle(attr.ino);
            counted = Some(open.clone());
            Ok((attr, open))
        });
        match made {
            Ok((attr, open)) => self.open_counted(attr.ino, &open, flags, Some(attr)),
            Err(e) => {
                if let Some(open) = counted {
                    self.open_files.uncount(&mut open.lock());
                }
                Err(e)
            }
        }
    }

    /// Open `ino`, already counted in `open`. `known` is its attributes
    /// if the caller just wrote them (a create), which saves reading them.
    fn open_counted(
        &self,
        ino: Ino,
        open: &Arc<Mutex<OpenInode>>,
        flags: OpenFlags,
        known: Option<Attr>,
    ) -> FsResult<Opened> {
        let handle = self.open_files.new_handle();
        let mut guard = open.lock();
        let set_up = (|| {
            let pin = self.pins.pin(ino, self.last_seq.load(Ordering::Acquire));
            let inode = match known {
                Some(inode) => inode,
                None => self.meta.read_point(|db| db.inode(ino))?.ok_or(FsError::NotFound)?,
            };
            if inode.kind == FileKind::Dir && (flags.write || flags.truncate) {
                return Err(FsError::IsDir);
            }
            let version = match &guard.current {
                Some(current) if current.data_seq == inode.data_seq => current.clone(),
                // Pending writes lie over the version they were made on:
                // every handle reads that, with them, until they commit.
                Some(current) if guard.pending.is_some() => current.clone(),
                _ => {
                    let version =
                        Arc::new(Version::new(ino, inode.data_seq, inode.size, inode.content, None, pin));
                    guard.current = Some(version.clone());
                    version
                }
            };
            if flags.truncate && flags.write && inode.kind == FileKind::File {
                let now = now_ns();
                guard.pending.get_or_insert_with(|| Pending::new(version.size, now)).truncate(0, now)?;
            }
            Ok((with_pending(&guard, inode), version))
        })();
        let (attr, version) = match set_up {
            Ok(set_up) => set_up,
            Err(e) => {
                if self.open_files.uncount(&mut guard) {
                    drop(guard);
                    self.delete_orphans(&[ino])?;
                }
                return Err(e);
            }
        };
        let backing = match (flags.write, &guard.pending) {
            // Without it the kernel reads through tsmfs: not an error.
            (false, None) => self.backing_file(&version).unwrap_or_else(|e| {
                tracing::warn!("inode {ino}: no object file to hand the kernel: {e}");
                None
            }),
            _ => None,
        };
        let truncated = flags.truncate && flags.write && attr.kind == FileKind::File;
        guard
            .handles
            .insert(handle, HandleState { flags, version: version.clone(), dirty: truncated, lost: None });
        drop(guard);
        self.open_files.insert(handle, OpenHandle { ino, flags, inode: open.clone() });
        Ok(Opened { handle, attr, data_seq: version.data_seq, backing })
    }

    /// The object file of a version that is exactly one whole object.
    fn backing_file(&self, version: &Version) -> FsResult<Option<Arc<File>>> {
        if version.size == 0 {
            return Ok(None);
        }
        let extents = self.extents_of(version)?;
        let Some(sole) = extents.sole_extent(version.size) else { return Ok(None) };
        if self.is_inline(sole)? {
            return Ok(None);
        }
        let object = self.store.open_chunk(&sole.chunk)?;
        // Until this process has checked all of the object, reads go
        // through it, which checks them.
        Ok(object.checked_file().filter(|_| object.len() == version.size))
    }

    /// A frontend took a reference to `ino` (the kernel: an entry it was
    /// handed). The inode stays valid until the reference is given back,
    /// even if it loses its last name meanwhile.
    pub fn hold(&self, ino: Ino) {
        self.open_files.looked_up(ino);
    }

    /// A frontend gave back `count` references to `ino`; the last one
    /// deletes an inode that lost its last name meanwhile.
    pub fn forget(&self, ino: Ino, count: u64) {
        if self.open_files.forgotten(ino, count) {
            self.delete_orphan(ino);
        }
    }

    /// Whether a frontend holds a reference to `ino`.
    pub fn is_held(&self, ino: Ino) -> bool {
        self.open_files.is_looked_up(ino)
    }

    /// How many handles are open (for tests and monitoring).
    pub fn open_handles(&self) -> usize {
        self.open_files.handle_count()
    }

    /// Read up to `size` bytes at `offset`.
    pub fn read(&self, handle: Handle, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let n = self.read_into(handle, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Read into `buf` at `offset`; returns the bytes read (short at end
    /// of file). Lets a frontend reuse one buffer for every request.
    pub fn read_into(&self, handle: Handle, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        let open = self.open_files.get(handle)?;
        if !open.flags.read {
            return Err(FsError::BadHandle);
        }
        let inode = open.inode.lock();
        let n = match &inode.pending {
            Some(pending) => {
                let n = fit(buf.len(), offset, pending.size());
                let base = inode.current.clone().ok_or(FsError::BadHandle)?;
                pending.read(offset, &mut buf[..n], &mut |at, part| self.read_version(&base, at, part))?;
                n
            }
            None => {
                let version =
                    inode.handles.get(&handle).map(|h| h.version.clone()).ok_or(FsError::BadHandle)?;
                drop(inode);
                let n = fit(buf.len(), offset, version.size);
                self.read_version(&version, offset, &mut buf[..n])?;
                n
            }
        };
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    /// Write `data` at `offset` (at the end for O_APPEND handles); returns
    /// the bytes written. The data is visible to every handle at once and
    /// to the tree at the next commit.
    pub fn write(&self, handle: Handle, offset: u64, data: &[u8]) -> FsResult<u32> {
        let open = self.open_files.get(handle)?;
        if !open.flags.write {
            return Err(FsError::BadHandle);
        }
        self.check_writable()?;
        let mut inode = open.inode.lock();
        let pending = self.pending_of(&mut inode)?;
        let offset = if open.flags.append { pending.size() } else { offset };
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE_SIZE) {
            return Err(FsError::TooBig);
        }
        pending.write(offset, data, now_ns(), &self.store)?;
        // A chunk that fails to seal (a full disk) stays in memory; the
        // commit tries again and reports the failure.
        if let Err(e) = pending.seal(&mut |bytes| Ok(self.store.seal(bytes)?)) {
            tracing::debug!("inode {}: sealing a chunk: {e}", open.ino);
        }
        inode.changed_by(handle);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(data.len() as u32)
    }

    /// The inode's pending writes, begun on its current version.
    fn pending_of<'a>(&self, inode: &'a mut OpenInode) -> FsResult<&'a mut Pending> {
        if inode.pending.is_none() {
            let size = inode.current.as_ref().map(|v| v.size).ok_or(FsError::BadHandle)?;
            inode.pending = Some(Pending::new(size, now_ns()));
        }
        inode.pending.as_mut().ok_or(FsError::BadHandle)
    }

    /// Copy `len` bytes from one handle to another (copy_file_range).
    /// Copying a whole committed file over a file no longer than it copies
    /// only its extents: no byte moves. Anything else copies through the
    /// target's pending writes. Returns the bytes copied (short at the
    /// source's end).
    pub fn copy_range(
        &self,
        from: Handle,
        from_offset: u64,
        to: Handle,
        to_offset: u64,
        len: u64,
        origin: Origin,
    ) -> FsResult<CopyOutcome> {
        let source = self.open_files.get(from)?;
        let target = self.open_files.get(to)?;
        if !source.flags.read || !target.flags.write {
            return Err(FsError::BadHandle);
        }
        self.check_writable()?;
        let whole = from_offset == 0 && to_offset == 0 && source.ino != target.ino;
        if whole && let Some(outcome) = self.copy_whole(&source, from, &target, len, origin)? {
            return Ok(outcome);
        }
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut copied = 0u64;
        while copied < len {
            let want = (len - copied).min(buf.len() as u64) as usize;
            let n = self.read_into(from, from_offset + copied, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            copied += u64::from(self.write(to, to_offset + copied, &buf[..n])?);
        }
        Ok(CopyOutcome { copied, data_seq: None })
    }

    /// The extents-only case of [`Fs::copy_range`], or `None` when the
    /// copy is not a whole committed file over a shorter one.
    fn copy_whole(
        &self,
        source: &OpenHandle,
        from: Handle,
        target: &OpenHandle,
        len: u64,
        origin: Origin,
    ) -> FsResult<Option<CopyOutcome>> {
        let version = {
            let inode = source.inode.lock();
            if inode.pending.is_some() {
                return Ok(None);
            }
            inode.handles.get(&from).map(|h| h.version.clone()).ok_or(FsError::BadHandle)?
        };
        if version.size == 0 || len < version.size {
            return Ok(None);
        }
        let extents = self.extents_of(&version)?;
        let mut inode = target.inode.lock();
        let target_size = match &inode.pending {
            Some(pending) => pending.size(),
            None => inode.current.as_ref().map_or(0, |v| v.size),
        };
        if target_size > version.size {
            return Ok(None);
        }
        let committed = self.commit_copy(target.ino, &version, &extents, origin)?;
        // Every pending byte of the target lay inside the copied range.
        inode.pending = None;
        let data_seq = committed.version.data_seq;
        self.moved(&mut inode, committed);
        Ok(Some(CopyOutcome { copied: version.size, data_seq: Some(data_seq) }))
    }

    /// `fallocate(2)` through a writable handle: allocation only grows the
    /// size (nothing is reserved: content is stored by hash); punching a
    /// hole or zeroing a range writes zeros. Committed with the handle's
    /// other writes.
    pub fn fallocate(&self, handle: Handle, mode: i32, offset: u64, len: u64) -> FsResult<()> {
        let open = self.open_files.get(handle)?;
        if !open.flags.write {
            return Err(FsError::BadHandle);
        }
        self.check_writable()?;
        if offset.checked_add(len).is_none_or(|end| end > MAX_FILE_SIZE) {
            return Err(FsError::TooBig);
        }
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        // Decided before any pending state is made for the inode.
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 if keep_size => return Ok(()),
            0 | libc::FALLOC_FL_ZERO_RANGE => {}
            libc::FALLOC_FL_PUNCH_HOLE if keep_size => {}
            _ => return Err(FsError::Unsupported("this fallocate mode")),
        }
        let mut inode = open.inode.lock();
        let pending = self.pending_of(&mut inode)?;
        let now = now_ns();
        match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 => pending.extend(offset + len, now),
            libc::FALLOC_FL_PUNCH_HOLE => pending.zero(offset, len, false, now)?,
            _ => pending.zero(offset, len, !keep_size, now)?,
        }
        inode.changed_by(handle);
        Ok(())
    }

    /// Change the size of `ino`: with the pending writes of its handles if
    /// it has some (committed with them), else as a commit of its own.
    pub(super) fn truncate(&self, ino: Ino, size: u64, origin: Origin) -> FsResult<()> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let open = self.open_files.inode(ino);
        let mut held = open.as_ref().map(|open| open.lock());
        if let Some(inode) = held.as_mut().filter(|inode| inode.current.is_some()) {
            let inode = &mut **inode;
            let had_pending = inode.pending.is_some();
            self.pending_of(inode)?.truncate(size, now_ns())?;
            if had_pending {
                // Not made through a handle: any writer's close commits it.
                inode.changed_by_all_writers();
                return Ok(());
            }
            // Nothing else pending: commit now, as a truncate of a closed
            // file would. If that fails, only the truncation is lost.
            let pending = inode.pending.take().ok_or(FsError::BadHandle)?;
            let base = inode.current.clone().ok_or(FsError::BadHandle)?;
            let committed = self.commit_pending(ino, pending, &base, origin)?;
            self.moved(inode, committed);
            return Ok(());
        }
        // Not open; or an open of it is under way and has not read the
        // inode yet (it will, once we let go of its state): commit as for
        // a closed file, and that open sees the new size.
        let pin = self.pins.pin(ino, self.last_seq.load(Ordering::Acquire));
        let inode = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        if inode.size == size {
            return Ok(());
        }
        let base = Version::new(ino, inode.data_seq, inode.size, inode.content, None, pin);
        let mut pending = Pending::new(inode.size, now_ns());
        pending.truncate(size, now_ns())?;
        self.commit_pending(ino, pending, &base, origin).map(|_| ())
    }

    /// A close of a descriptor: commit the inode's pending writes if this
    /// handle added to them. Returns the version committed, if any.
    pub fn flush(&self, handle: Handle, origin: Origin) -> FsResult<Option<u64>> {
        let open = self.open_files.get(handle)?;
        let mut inode = open.inode.lock();
        let dirty = inode.handles.get(&handle).is_some_and(|h| h.dirty);
        let committed = if dirty { self.commit_open(&mut inode, origin, handle) } else { Ok(None) };
        hear_of_lost_writes(&mut inode, handle, committed)
    }

    /// Commit pending writes and make them and every earlier commit
    /// durable (fsync). Returns the version committed, if anything was
    /// pending.
    pub fn fsync(&self, handle: Handle, origin: Origin) -> FsResult<Option<u64>> {
        let open = self.open_files.get(handle)?;
        let mut inode = open.inode.lock();
        let committed = self.commit_open(&mut inode, origin, handle);
        let committed = hear_of_lost_writes(&mut inode, handle, committed);
        drop(inode);
        let committed = committed?;
        self.sync_for(Some(open.ino))?;
        Ok(committed)
    }

    /// Close a handle: commit what is pending if this handle added to it
    /// or is the inode's last; the last close of an unlinked inode deletes
    /// it. Returns the version committed, if any.
    pub fn release(&self, handle: Handle, origin: Origin) -> FsResult<Option<u64>> {
        let open = self.open_files.remove(handle)?;
        let mut inode = open.inode.lock();
        let dirty = inode.handles.get(&handle).is_some_and(|h| h.dirty);
        let committed =
            if dirty || inode.count == 1 { self.commit_open(&mut inode, origin, handle) } else { Ok(None) };
        let committed = hear_of_lost_writes(&mut inode, handle, committed);
        inode.handles.remove(&handle);
        let delete = self.open_files.uncount(&mut inode);
        drop(inode);
        // The common case, a file with names, needs no transaction at all.
        if delete {
            self.delete_orphans(&[open.ino])?;
        }
        committed
    }

    /// Commit the inode's pending writes for `by` (a flush, fsync or
    /// close). If that fails, the writes are discarded: the previous
    /// version stays whole, `by` gets the error, and every other handle
    /// open for writing hears of the loss at its next flush, fsync or
    /// close. Keeping them pending for a later retry would let other
    /// handles read bytes that may still vanish, and could make a file
    /// change long after its writer was told the save failed.
    fn commit_open(&self, inode: &mut OpenInode, origin: Origin, by: Handle) -> FsResult<Option<u64>> {
        let Some(pending) = inode.pending.take() else { return Ok(None) };
        let base = inode.current.clone().ok_or(FsError::BadHandle)?;
        let held = pending.held;
        match self.commit_pending(inode.ino, pending, &base, origin) {
            Ok(committed) => {
                let data_seq = committed.version.data_seq;
                self.moved(inode, committed);
                Ok(Some(data_seq))
            }
            Err(e) => {
                tracing::warn!("inode {}: pending writes discarded, the commit failed: {e}", inode.ino);
                inode.lost_by_others(by, e.is_disk_full());
                // Attribute changes held for the commit were answered as
                // done: they are not lost with the bytes.
                if held != HeldAttrs::default()
                    && let Err(e) = self.commit_held(inode.ino, held, origin)
                {
                    tracing::warn!("inode {}: attribute changes lost with the writes: {e}", inode.ino);
                }
                Err(e)
            }
        }
    }

    /// A commit through the open files made a new version: every handle
    /// reads it now.
    fn moved(&self, inode: &mut OpenInode, committed: Committed) {
        inode.moved_to(Arc::new(committed.version));
    }

    /// Close every handle (shutdown), committing pending writes.
    pub fn release_all(&self, origin: Origin) -> FsResult<()> {
        let mut first_error = None;
        for handle in self.open_files.handles() {
            if let Err(e) = self.release(handle, origin) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The size of content `id` if some file holds it now; `None` if none
    /// does (it may never have existed, or be gone).
    pub fn content_size(&self, id: &ContentId) -> FsResult<Option<u64>> {
        if *id == super::EMPTY_CONTENT {
            return Ok(Some(0));
        }
        let record = self.meta.read(|db| db.content(id))?;
        Ok(record.filter(|r| r.refcount > 0).map(|r| r.size))
    }

    /// Up to `limit` files whose content is `id`, each with a name the
    /// tree gives it.
    pub fn holders_of_content(&self, id: &ContentId, limit: usize) -> FsResult<Vec<(Vec<u8>, Attr)>> {
        Ok(self.meta.read(|db| db.holders_of_content(id, limit))?)
    }

    /// The stored variant `encoding` (e.g. `br`) of content `id`, if any.
    pub fn variant(&self, id: &ContentId, encoding: &str) -> FsResult<Option<Vec<u8>>> {
        Ok(self.store.read_variant(id, encoding)?)
    }

    /// Keep `bytes` as the variant `encoding` of content `id`. Variants
    /// go when no file holds their content any more.
    pub fn store_variant(&self, id: &ContentId, encoding: &str, bytes: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        Ok(self.store.write_variant(id, encoding, bytes)?)
    }
}

/// What `handle` reports after its commit: the commit's own error first,
/// else the loss of writes it may have made, once.
fn hear_of_lost_writes(
    inode: &mut OpenInode,
    handle: Handle,
    committed: FsResult<Option<u64>>,
) -> FsResult<Option<u64>> {
    let lost = inode.handles.get_mut(&handle).and_then(|h| h.lost.take());
    match lost {
        Some(disk_full) if committed.is_ok() => Err(FsError::WritesLost { disk_full }),
        _ => committed,
    }
}

/// `attr` as the open inode's handles see it: with pending writes (its
/// content id stays the committed version's, what other readers get).
pub(super) fn with_pending(inode: &OpenInode, mut attr: Attr) -> Attr {
    if let Some(pending) = &inode.pending {
        // Held first: a write after a held time set moves the mtime on.
        pending.held.apply(&mut attr);
        attr.size = pending.size();
        attr.mtime_ns = pending.mtime_ns;
        attr.ctime_ns = attr.ctime_ns.max(pending.changed_ns);
    }
    attr
}

/// How many of `want` bytes at `offset` lie inside `size`.
fn fit(want: usize, offset: u64, size: u64) -> usize {
    size.saturating_sub(offset).min(want as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncate_during_an_open_commits_and_the_open_sees_it() {
        let (_dir, fs, caller) = crate::fs::testing::fresh_fs(Default::default());
        let attr = fs.put(Ino::ROOT, b"f", &mut &b"hello world"[..], Default::default(), &caller).unwrap();
        // An open has counted its handle, and not yet read the inode.
        let open = fs.open_files.count_handle(attr.ino);
        fs.truncate(attr.ino, 5, Origin::Cli).expect("a truncate, not EBADF");
        let flags = OpenFlags { read: true, write: false, truncate: false, append: false };
        let opened = fs.open_counted(attr.ino, &open, flags, None).unwrap();
        assert_eq!(opened.attr.size, 5);
        assert_eq!(fs.read(opened.handle, 0, 100).unwrap(), b"hello");
    }
}
