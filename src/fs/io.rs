//! Open files: handles, write staging, commit, snapshot reads.
//!
//! Writes go to one staging file per inode, shared by all its handles, so
//! every handle of the mount reads what any of them wrote (POSIX). A
//! commit hashes the staging file, publishes the object and switches the
//! inode's content in one transaction; readers of the tree never see a
//! partial file. A commit happens at an fsync, at the flush or release of
//! a handle that wrote since the last commit, and at the last release.
//! A failed commit discards the pending writes (see `commit_io`).
//!
//! A handle with no pending writes reads from the object of the content it
//! opened (its *view*). Commits made through handles move every handle of
//! the inode to the new content; a whole-file replacement from elsewhere
//! (WebDAV PUT, `tsmfs put`) does not, so an open handle keeps reading the
//! version it opened.
//!
//! Lock order: an inode's `InodeIo` lock, then the metadata writer lock,
//! then the table locks. The table locks are never held while waiting for
//! anything else. One exception: a file being created is registered as
//! open inside its creating transaction ([`Fs::create_file`]); nobody else
//! can know its brand-new inode number, so nobody can hold its lock.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::content::Body;
use super::{Attr, Caller, FileKind, Fs, FsError, FsResult, Origin, check_name, now_ns};
use crate::id::{ContentId, Handle, Ino};
use crate::store::{ContentDigest, Durability, Staging};

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
    /// The content the handle reads, when it reads a stored object.
    pub content: Option<ContentId>,
    /// The object file behind a read-only handle with nothing pending: a
    /// frontend may read it directly (FUSE passthrough) because objects
    /// never change.
    pub backing: Option<Arc<File>>,
}

/// The open-file tables.
#[derive(Default)]
pub(crate) struct OpenFiles {
    handles: Mutex<HashMap<Handle, Arc<OpenFile>>>,
    inodes: Mutex<HashMap<Ino, Arc<Mutex<InodeIo>>>>,
    /// Open inodes that lost their last name: their last release deletes
    /// them. Taken under the `inodes` lock, after it.
    unlinked: Mutex<HashSet<Ino>>,
    next_handle: AtomicU64,
}

struct OpenFile {
    ino: Ino,
    flags: OpenFlags,
    io: Arc<Mutex<InodeIo>>,
}

/// I/O state of one inode while it has open handles.
#[derive(Default)]
struct InodeIo {
    handles: usize,
    /// Pending writes; `Some` from the first write until the commit.
    staging: Option<Staging>,
    /// Time of the last write while staging.
    mtime_ns: i64,
    /// What each handle reads when nothing is pending.
    views: HashMap<Handle, View>,
    /// The handles open for writing.
    writers: HashSet<Handle>,
    /// The handles that added to the pending writes since the last
    /// commit: a flush commits only for them (and the last close for
    /// anyone). Other closes, such as a handle's RELEASE arriving late or
    /// a forked child closing an inherited descriptor, commit nothing, so
    /// another writer's half-done sequence is not published mid-way.
    dirty: HashSet<Handle>,
    /// Writers yet to hear that a failed commit discarded the pending
    /// writes (`FsError::WritesLost`), with whether the disk was full.
    lost: HashMap<Handle, bool>,
}

/// A readable version of a file: an open object, or nothing for empty.
#[derive(Clone)]
struct View {
    content: Option<ContentId>,
    file: Option<Arc<File>>,
}

impl OpenFiles {
    /// The I/O state of `ino`, with one more handle counted. The state
    /// found in the table may be dropped by the last release while we wait
    /// for its lock; then it is no longer in the table and we try again,
    /// so every handle of an inode shares one state.
    fn register_handle(&self, ino: Ino) -> Arc<Mutex<InodeIo>> {
        loop {
            let io = self.inodes.lock().entry(ino).or_default().clone();
            let mut guard = io.lock();
            let current = self.inodes.lock().get(&ino).is_some_and(|found| Arc::ptr_eq(found, &io));
            if current {
                guard.handles += 1;
                drop(guard);
                return io;
            }
        }
    }

    /// Take back a handle counted by [`OpenFiles::register_handle`] that
    /// never opened.
    fn unregister_handle(&self, ino: Ino, io: &Mutex<InodeIo>) {
        let mut guard = io.lock();
        guard.handles -= 1;
        drop_if_unused(self, ino, &guard);
    }

    /// `ino` is losing its last name: if it is open, note that its last
    /// release must delete it and return true (the caller keeps it as an
    /// open-unlinked inode); false if nothing has it open.
    pub(crate) fn keep_unlinked_if_open(&self, ino: Ino) -> bool {
        let inodes = self.inodes.lock();
        let open = inodes.contains_key(&ino);
        if open {
            self.unlinked.lock().insert(ino);
        }
        open
    }

    /// Whether `ino`, whose last handle just closed, lost its last name
    /// while open (and so must be deleted now).
    fn take_unlinked(&self, ino: Ino) -> bool {
        self.unlinked.lock().remove(&ino)
    }

    fn get(&self, handle: Handle) -> FsResult<Arc<OpenFile>> {
        self.handles.lock().get(&handle).cloned().ok_or(FsError::BadHandle)
    }

    /// The staging-aware I/O state of `ino`, if open.
    fn io_of(&self, ino: Ino) -> Option<Arc<Mutex<InodeIo>>> {
        self.inodes.lock().get(&ino).cloned()
    }
}

impl Fs {
    /// The attributes to report for `inode`, just read from the database:
    /// for an open inode, re-read under its I/O lock (a commit may have
    /// happened since; reporting the older size would make the kernel
    /// shrink the file it knows) and with pending writes applied.
    pub(super) fn current(&self, inode: Attr) -> FsResult<Attr> {
        let Some(io) = self.open_files.io_of(inode.ino) else { return Ok(inode) };
        let io = io.lock();
        let Some(fresh) = self.meta.read_point(|db| db.inode(inode.ino))? else { return Ok(inode) };
        Ok(with_pending(&io, fresh))
    }

    /// Open `ino`. With `flags.truncate` (and write) the file reads as
    /// empty at once; the truncation commits with the handle's writes.
    pub fn open_file(&self, ino: Ino, flags: OpenFlags) -> FsResult<Opened> {
        if flags.write || flags.truncate {
            self.check_writable()?;
        }
        let io = self.open_files.register_handle(ino);
        self.open_registered(ino, &io, flags, None)
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
        let made = self.transact(caller.origin, false, |tx| {
            let attr = tx.make_file(parent, name, perm, caller)?;
            let io = self.open_files.register_handle(attr.ino);
            counted = Some((attr.ino, io.clone()));
            Ok((attr, io))
        });
        match made {
            Ok((attr, io)) => self.open_registered(attr.ino, &io, flags, Some(attr)),
            Err(e) => {
                if let Some((ino, io)) = counted {
                    self.open_files.unregister_handle(ino, &io);
                }
                Err(e)
            }
        }
    }

    /// Open `ino`, already counted in `io` by
    /// [`OpenFiles::register_handle`]. `known` is its attributes if the
    /// caller just wrote them (a create), which saves reading them back.
    fn open_registered(
        &self,
        ino: Ino,
        io: &Arc<Mutex<InodeIo>>,
        flags: OpenFlags,
        known: Option<Attr>,
    ) -> FsResult<Opened> {
        let handle = Handle(self.open_files.next_handle.fetch_add(1, Ordering::Relaxed) + 1);
        let mut guard = io.lock();
        let set_up = self.with_current_content(ino, known, |inode| {
            if inode.kind == FileKind::Dir && (flags.write || flags.truncate) {
                return Err(FsError::IsDir);
            }
            let set_up = self.setup_handle(&mut guard, handle, inode, flags)?;
            // Read under the I/O lock: no commit of this inode since.
            Ok((with_pending(&guard, inode.clone()), set_up))
        });
        let (attr, (view, backing)) = match set_up {
            Ok(set_up) => set_up,
            Err(e) => {
                guard.handles -= 1;
                drop_if_unused(&self.open_files, ino, &guard);
                return Err(e);
            }
        };
        guard.views.insert(handle, view.clone());
        if flags.write {
            guard.writers.insert(handle);
        }
        drop(guard);
        self.open_files.handles.lock().insert(handle, Arc::new(OpenFile { ino, flags, io: io.clone() }));
        Ok(Opened { handle, attr, content: view.content, backing })
    }

    fn setup_handle(
        &self,
        io: &mut InodeIo,
        handle: Handle,
        inode: &Attr,
        flags: OpenFlags,
    ) -> FsResult<(View, Option<Arc<File>>)> {
        if flags.truncate && flags.write && inode.kind == FileKind::File {
            match &mut io.staging {
                Some(staging) => staging.set_len(0)?,
                None => io.staging = Some(self.store.stage()?),
            }
            io.changed_by(handle);
        }
        let view = self.view_of(io, inode.content)?;
        let backing = match (&view.file, flags.write, &io.staging) {
            (Some(file), false, None) => Some(file.clone()),
            _ => None,
        };
        Ok((view, backing))
    }

    /// A view of `content`, sharing an already open object file if any
    /// handle of the inode has one.
    fn view_of(&self, io: &InodeIo, content: Option<ContentId>) -> FsResult<View> {
        if let Some(shared) = io.views.values().find(|v| v.content == content) {
            return Ok(shared.clone());
        }
        let file = match content {
            Some(id) => Some(Arc::new(self.store.open_object(&id)?)),
            None => None,
        };
        if let Some(file) = &file {
            advise_sequential(file);
        }
        Ok(View { content, file })
    }

    /// The object file of committed content `id`, open for reading. Objects
    /// never change, and an open one stays readable after its content is
    /// released, so whoever holds it reads exactly that version.
    /// NotFound if no object holds `id` (any more).
    pub fn open_content(&self, id: &ContentId) -> FsResult<File> {
        match self.store.open_object(id) {
            Ok(file) => Ok(file),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(FsError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// All bytes of committed content `id` (for contents small enough to
    /// hold in memory). NotFound if no object holds `id` (any more).
    pub fn read_content(&self, id: &ContentId) -> FsResult<Vec<u8>> {
        match self.store.read_object(id) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(FsError::NotFound),
            Err(e) => Err(e.into()),
        }
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

    /// The stored variant `encoding` (e.g. `br`) of content `id`, if any.
    pub fn variant(&self, id: &ContentId, encoding: &str) -> FsResult<Option<Vec<u8>>> {
        Ok(self.store.read_variant(id, encoding)?)
    }

    /// Keep `bytes` as the variant `encoding` of content `id`. Variants
    /// go with their object when it is removed.
    pub fn store_variant(&self, id: &ContentId, encoding: &str, bytes: &[u8]) -> FsResult<()> {
        self.check_writable()?;
        Ok(self.store.write_variant(id, encoding, bytes)?)
    }

    /// How many handles are open (for tests and monitoring).
    pub fn open_handles(&self) -> usize {
        self.open_files.handles.lock().len()
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
        let io = open.io.lock();
        let n = if let Some(staging) = &io.staging {
            staging.read_at(offset, buf)?
        } else {
            let view = io.views.get(&handle).cloned().ok_or(FsError::BadHandle)?;
            drop(io);
            match &view.file {
                Some(file) => read_full_at(file, offset, buf, view.content)?,
                None => 0,
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
        let mut io = open.io.lock();
        let staging = self.staging_for(&mut io, open.ino)?;
        let offset = if open.flags.append { staging.len() } else { offset };
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > MAX_FILE_SIZE) {
            return Err(FsError::TooBig);
        }
        // A full disk part way gives a short count, as write(2) would; the
        // caller sees exactly which bytes count.
        let written = staging.write_some_at(offset, data)?;
        io.changed_by(handle);
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        Ok(written as u32)
    }

    /// Copy `len` bytes from one handle to another (copy_file_range).
    /// Copying a whole committed file over a file no longer than it is
    /// metadata-only: the target takes the source's content id, and no
    /// byte moves. Anything else copies through the target's staging
    /// file. Returns the bytes copied (short at the source's end).
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
        let mut buf = vec![0u8; IO_CHUNK_COPY];
        let mut copied = 0u64;
        while copied < len {
            let want = (len - copied).min(buf.len() as u64) as usize;
            let n = self.read_into(from, from_offset + copied, &mut buf[..want])?;
            if n == 0 {
                break;
            }
            let written = self.write(to, to_offset + copied, &buf[..n])? as usize;
            copied += written as u64;
            if written < n {
                break; // the disk filled: a short copy, as copy_file_range(2) gives
            }
        }
        Ok(CopyOutcome { copied, content: None })
    }

    /// The metadata-only case of [`Fs::copy_range`], or `None` when the
    /// copy is not a whole committed file over a shorter one.
    fn copy_whole(
        &self,
        source: &OpenFile,
        from: Handle,
        target: &OpenFile,
        len: u64,
        origin: Origin,
    ) -> FsResult<Option<CopyOutcome>> {
        let content = {
            let io = source.io.lock();
            if io.staging.is_some() {
                return Ok(None);
            }
            match io.views.get(&from).and_then(|v| v.content) {
                Some(id) => id,
                None => return Ok(None),
            }
        };
        let Some(record) = self.meta.read(|db| db.content(&content))? else { return Ok(None) };
        if len < record.size {
            return Ok(None);
        }
        let mut io = target.io.lock();
        let committed = self.meta.read(|db| db.inode(target.ino))?.ok_or(FsError::NotFound)?;
        let target_size = io.staging.as_ref().map_or(committed.size, Staging::len);
        if target_size > record.size {
            return Ok(None);
        }
        let moved = self.transact(origin, false, |tx| {
            if tx.db.content(&content)?.is_none() {
                // Its last reference went meanwhile: copy the bytes instead.
                return Ok(false);
            }
            let mut inode = tx.db.inode(target.ino)?.ok_or(FsError::NotFound)?;
            tx.db.add_content_refs(&content, 1)?;
            tx.switch_content(&mut inode, Some(content), record.size, tx.now)?;
            Ok(true)
        })?;
        if !moved {
            return Ok(None);
        }
        // Every pending byte of the target lay inside the copied range.
        io.staging = None;
        io.dirty.clear();
        self.move_views(&mut io, target.ino, content)?;
        Ok(Some(CopyOutcome { copied: record.size, content: Some(content) }))
    }

    /// `fallocate(2)` through a writable handle: applied to the staging
    /// file, committed with the handle's other writes.
    pub fn fallocate(&self, handle: Handle, mode: i32, offset: u64, len: u64) -> FsResult<()> {
        let open = self.open_files.get(handle)?;
        if !open.flags.write {
            return Err(FsError::BadHandle);
        }
        self.check_writable()?;
        if offset.checked_add(len).is_none_or(|end| end > MAX_FILE_SIZE) {
            return Err(FsError::TooBig);
        }
        let mut io = open.io.lock();
        self.staging_for(&mut io, open.ino)?.fallocate(mode, offset, len)?;
        io.changed_by(handle);
        Ok(())
    }

    /// The inode's staging file, created on first use as a copy of the
    /// committed content.
    fn staging_for<'a>(&self, io: &'a mut InodeIo, ino: Ino) -> FsResult<&'a mut Staging> {
        if io.staging.is_none() {
            let staging = self.with_current_content(ino, None, |inode| match inode.content {
                Some(id) => Ok(self.store.stage_copy_of(&id)?),
                None => Ok(self.store.stage()?),
            })?;
            io.staging = Some(staging);
        }
        io.staging.as_mut().ok_or(FsError::BadHandle)
    }

    /// Run `f` on the current attributes of `ino`. If `f` finds the object
    /// missing because a concurrent commit replaced the content (and
    /// removed the old object) between the read and the open, try again
    /// with the new content.
    fn with_current_content<T>(
        &self,
        ino: Ino,
        mut known: Option<Attr>,
        mut f: impl FnMut(&Attr) -> FsResult<T>,
    ) -> FsResult<T> {
        const ATTEMPTS: usize = 16;
        let mut attempt = 0;
        loop {
            let inode = match known.take() {
                Some(inode) => inode,
                None => self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?,
            };
            match f(&inode) {
                Err(FsError::Store(e)) if e.raw_os_error() == Some(libc::ENOENT) && attempt < ATTEMPTS => {
                    let now = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
                    if now.content == inode.content {
                        return Err(FsError::Store(e));
                    }
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Change the size of `ino`: with the pending writes of its handles if
    /// it has some (committed with them), else as a commit of its own.
    pub(super) fn truncate(&self, ino: Ino, size: u64, origin: Origin) -> FsResult<()> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        if let Some(io) = self.open_files.io_of(ino) {
            let mut io = io.lock();
            let pending = io.staging.is_some();
            self.staging_for(&mut io, ino)?.set_len(size)?;
            io.mtime_ns = now_ns();
            if pending {
                // Not made through a handle: any writer's close commits it.
                let io = &mut *io;
                io.dirty.extend(io.writers.iter().copied());
            } else {
                // Nothing else pending: commit now, as a truncate of a
                // closed file would, and move the handles to the result.
                // If that fails, only the truncation is lost.
                if let Some(staging) = io.staging.take() {
                    let id = self.commit_staged(ino, staging, io.mtime_ns, origin, false)?;
                    self.move_views(&mut io, ino, id)?;
                }
            }
            return Ok(());
        }
        let inode = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        if inode.size == size {
            return Ok(());
        }
        let mut staging = match inode.content {
            Some(id) if size > 0 => self.store.stage_copy_of(&id)?,
            _ => self.store.stage()?,
        };
        staging.set_len(size)?;
        self.commit_staged(ino, staging, now_ns(), origin, false).map(|_| ())
    }

    /// A close of a descriptor: commit the inode's pending writes if this
    /// handle added to them. Returns the content committed, if any.
    pub fn flush(&self, handle: Handle, origin: Origin) -> FsResult<Option<ContentId>> {
        let open = self.open_files.get(handle)?;
        let mut io = open.io.lock();
        let committed = match io.dirty.contains(&handle) {
            true => self.commit_io(open.ino, &mut io, origin, false, handle),
            false => Ok(None),
        };
        hear_of_lost_writes(&mut io, handle, committed)
    }

    /// Commit pending writes and make them durable (fsync). Returns the
    /// content committed, if anything was pending.
    pub fn fsync(&self, handle: Handle, origin: Origin) -> FsResult<Option<ContentId>> {
        let open = self.open_files.get(handle)?;
        let mut io = open.io.lock();
        let committed = if io.staging.is_none() {
            // Nothing pending; make earlier commits durable.
            self.meta.sync().map(|()| None).map_err(FsError::from)
        } else {
            self.commit_io(open.ino, &mut io, origin, true, handle)
        };
        hear_of_lost_writes(&mut io, handle, committed)
    }

    /// Close a handle: commit what is pending if this handle added to it
    /// or is the inode's last; the last close of an unlinked inode deletes
    /// it. Returns the content committed, if any.
    pub fn release(&self, handle: Handle, origin: Origin) -> FsResult<Option<ContentId>> {
        let open = self.open_files.handles.lock().remove(&handle).ok_or(FsError::BadHandle)?;
        let mut io = open.io.lock();
        let committed = match io.dirty.contains(&handle) || io.handles == 1 {
            true => self.commit_io(open.ino, &mut io, origin, false, handle),
            false => Ok(None),
        };
        let committed = hear_of_lost_writes(&mut io, handle, committed);
        io.handles -= 1;
        io.views.remove(&handle);
        io.writers.remove(&handle);
        io.dirty.remove(&handle);
        let last = io.handles == 0;
        if last {
            drop_if_unused(&self.open_files, open.ino, &io);
        }
        drop(io);
        // The common case, a file with names, needs no transaction at all.
        if last && self.open_files.take_unlinked(open.ino) {
            self.purge_unlinked(open.ino)?;
        }
        committed
    }

    /// Delete `ino`, which lost its last name while open, unless it was
    /// opened again meanwhile (then that handle's last release will).
    fn purge_unlinked(&self, ino: Ino) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        self.transact(Origin::Internal, false, |tx| match tx.db.inode(ino)? {
            Some(inode) if inode.nlink == 0 && !self.open_files.keep_unlinked_if_open(ino) => {
                tx.delete_inode(&inode)
            }
            _ => Ok(()),
        })
    }

    /// Commit the inode's pending writes for `by` (a flush, fsync or
    /// close). If that fails, the writes are discarded: the previous
    /// version stays whole, `by` gets the error, and every other handle
    /// open for writing hears of the loss at its next flush, fsync or
    /// close. Keeping them pending for a later retry would let other
    /// handles read bytes that may still vanish, and could make a file
    /// change long after its writer was told the save failed.
    fn commit_io(
        &self,
        ino: Ino,
        io: &mut InodeIo,
        origin: Origin,
        durable: bool,
        by: Handle,
    ) -> FsResult<Option<ContentId>> {
        let Some(staging) = io.staging.take() else {
            return Ok(None);
        };
        io.dirty.clear();
        let committed = match self.commit_staged(ino, staging, io.mtime_ns, origin, durable) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("inode {ino}: pending writes discarded, the commit failed: {e}");
                let disk_full = e.is_disk_full();
                let others: Vec<Handle> = io.writers.iter().copied().filter(|w| *w != by).collect();
                io.lost.extend(others.into_iter().map(|w| (w, disk_full)));
                return Err(e);
            }
        };
        self.move_views(io, ino, committed)?;
        Ok(Some(committed))
    }

    /// Hash `staging` and make it `ino`'s content, publishing the bytes if
    /// they are new. On failure the staged bytes are dropped.
    fn commit_staged(
        &self,
        ino: Ino,
        mut staging: Staging,
        mtime_ns: i64,
        origin: Origin,
        durable: bool,
    ) -> FsResult<ContentId> {
        let digest = staging.finish(true)?;
        let mut staged = Some(Body::File(Box::new(staging)));
        self.commit_content(ino, &mut staged, &digest, mtime_ns, origin, durable)
    }

    /// A commit through the open files made `content` the inode's: every
    /// handle now reads it. Opens the object once, for all of them; if a
    /// later replacement already removed it, they read the newest version.
    fn move_views(&self, io: &mut InodeIo, ino: Ino, content: ContentId) -> FsResult<()> {
        let stored = (content != super::EMPTY_CONTENT).then_some(content);
        let view = match self.view_of(&InodeIo::default(), stored) {
            Ok(view) => view,
            Err(_) => self
                .with_current_content(ino, None, |inode| self.view_of(&InodeIo::default(), inode.content))?,
        };
        for v in io.views.values_mut() {
            *v = view.clone();
        }
        Ok(())
    }

    /// Switch `ino` to the content hashed as `digest`, publishing the
    /// staged bytes if they are new.
    fn commit_content(
        &self,
        ino: Ino,
        staged: &mut Option<Body>,
        digest: &ContentDigest,
        mtime_ns: i64,
        origin: Origin,
        durable: bool,
    ) -> FsResult<ContentId> {
        self.transact(origin, durable, |tx| {
            let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            let new = tx.adopt(staged, digest, Durability::Immediate)?;
            let id = tx.switch_content(&mut inode, new, digest.size, mtime_ns)?;
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            Ok(id)
        })
    }

    /// Close every handle (shutdown), committing pending writes.
    pub fn release_all(&self, origin: Origin) -> FsResult<()> {
        let handles: Vec<Handle> = self.open_files.handles.lock().keys().copied().collect();
        let mut first_error = None;
        for handle in handles {
            if let Err(e) = self.release(handle, origin) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// What [`Fs::copy_range`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOutcome {
    /// Bytes copied.
    pub copied: u64,
    /// The target's new content, when the copy only moved a content id.
    pub content: Option<ContentId>,
}

/// Buffer of a byte-by-byte copy.
const IO_CHUNK_COPY: usize = 1024 * 1024;

/// What `handle` reports after its commit: the commit's own error first,
/// else the loss of writes it may have made, once.
fn hear_of_lost_writes(
    io: &mut InodeIo,
    handle: Handle,
    committed: FsResult<Option<ContentId>>,
) -> FsResult<Option<ContentId>> {
    match io.lost.remove(&handle) {
        Some(disk_full) if committed.is_ok() => Err(FsError::WritesLost { disk_full }),
        _ => committed,
    }
}

impl InodeIo {
    /// `handle` just changed the pending writes: they are newer, and its
    /// close commits them.
    fn changed_by(&mut self, handle: Handle) {
        self.mtime_ns = now_ns();
        self.dirty.insert(handle);
    }
}

/// `attr` as the open inode's handles see it: with pending writes.
fn with_pending(io: &InodeIo, mut attr: Attr) -> Attr {
    if let Some(staging) = &io.staging {
        attr.size = staging.len();
        attr.mtime_ns = io.mtime_ns;
        attr.ctime_ns = attr.ctime_ns.max(io.mtime_ns);
    }
    attr
}

fn drop_if_unused(files: &OpenFiles, ino: Ino, io: &InodeIo) {
    if io.handles == 0 {
        files.inodes.lock().remove(&ino);
    }
}

fn read_full_at(file: &File, offset: u64, buf: &mut [u8], content: Option<ContentId>) -> FsResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let what = content.map_or_else(String::new, |c| c.to_string());
                tracing::error!("read of object {what} failed: {e}");
                return Err(
                    crate::store::StoreError::io("read object", std::path::Path::new(&what))(e).into()
                );
            }
        }
    }
    Ok(done)
}

/// Most reads of a file run front to back: ask for a larger readahead
/// window on the object. Only a hint; failure changes nothing.
fn advise_sequential(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an advisory call on a descriptor `file` keeps open.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}
