//! `fuser::Filesystem` for the fs core: each method translates its
//! arguments, calls the core, and translates the answer back.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode,
    RenameFlags as FuseRenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::invalidate::AttrNotifier;
use super::open_state::{Access, OpenState};
use super::{TTL, errno, file_attr, file_type, nanos_from_kernel};
use crate::fs::{
    Attr, Caller, FileKind, Fs, FsError, OpenFlags, Origin, RenameFlags, SetAttr, TimeSet, XattrMode,
};
use crate::id::{Handle, Ino};

thread_local! {
    /// Per worker thread: the buffer read requests are served from.
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Directory entries fetched from the core per readdir request.
const READDIR_BATCH: u32 = 256;
/// readdir offsets: 1 and 2 are "." and "..", entries are cursor + 2.
const FIRST_ENTRY_OFFSET: u64 = 2;

/// The FUSE adapter around the fs core.
pub(super) struct TsmFuse {
    fs: Arc<Fs>,
    read_only: bool,
    opens: OpenState,
    /// Whether to try passthrough; whether the kernel granted it.
    want_passthrough: bool,
    passthrough: bool,
    /// Tells the `Mounted` handle what the kernel granted.
    granted: Arc<std::sync::atomic::AtomicBool>,
    /// For the attributes a failed commit left wrong in the kernel.
    notifier: Arc<AttrNotifier>,
}

impl TsmFuse {
    pub(super) fn new(
        fs: Arc<Fs>,
        options: &super::MountOptions,
        granted: Arc<std::sync::atomic::AtomicBool>,
        notifier: Arc<AttrNotifier>,
    ) -> TsmFuse {
        TsmFuse {
            fs,
            read_only: options.read_only,
            opens: OpenState::default(),
            want_passthrough: options.passthrough,
            passthrough: false,
            granted,
            notifier,
        }
    }

    /// Time request `name` until the returned guard is dropped.
    fn op(&self, name: &'static str) -> OpTimer<'_> {
        OpTimer { metrics: self.fs.metrics(), name, started: std::time::Instant::now() }
    }

    fn caller(req: &Request) -> Caller {
        Caller { uid: req.uid(), gid: req.gid(), origin: Origin::Fuse }
    }

    fn writable(&self) -> Result<(), FsError> {
        if self.read_only { Err(FsError::ReadOnly) } else { Ok(()) }
    }

    fn reply_entry(&self, reply: ReplyEntry, result: Result<Attr, FsError>) {
        match result {
            Ok(attr) => {
                self.fs.hold(attr.ino);
                reply.entry(&TTL, &file_attr(&attr), Generation(attr.generation))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// A flush/fsync/release through the mount committed `result`: the
    /// page cache now holds that content. A failed commit discarded the
    /// pending writes, which the kernel's size and pages may still show:
    /// the size is dropped before the error goes out, the pages at the
    /// next open.
    fn note_commit(&self, ino: INodeNo, result: Result<Option<u64>, FsError>) -> Result<(), FsError> {
        match &result {
            Ok(Some(id)) => self.opens.committed(Ino(ino.0), *id),
            Ok(None) => {}
            Err(_) => {
                self.opens.discarded(Ino(ino.0));
                self.notifier.drop_attributes(Ino(ino.0));
            }
        }
        result.map(|_| ())
    }

    fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open_flags(flags: i32) -> OpenFlags {
        let access = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => OpenAccMode::O_WRONLY,
            libc::O_RDWR => OpenAccMode::O_RDWR,
            _ => OpenAccMode::O_RDONLY,
        };
        OpenFlags {
            read: access != OpenAccMode::O_WRONLY,
            write: access != OpenAccMode::O_RDONLY,
            truncate: flags & libc::O_TRUNC != 0,
            // The kernel already places O_APPEND writes at the end of the
            // file it knows; passing its offset through keeps one truth.
            append: false,
        }
    }

    /// Open a file with `core_open` (an open or a create) and choose how
    /// the kernel does I/O on the handle.
    fn open_handle(
        &self,
        flags: i32,
        core_open: impl FnOnce(OpenFlags) -> Result<crate::fs::Opened, FsError>,
        open_backing: impl FnOnce(&std::fs::File) -> std::io::Result<fuser::BackingId>,
    ) -> Result<FuseOpen, FuseOpenError> {
        let flags = Self::open_flags(flags);
        if flags.write || flags.truncate {
            self.writable()?;
        }
        let opened = core_open(flags)?;
        let ino = opened.attr.ino;
        let backing = if self.passthrough { opened.backing.as_ref() } else { None };
        let access = match (flags.read, flags.write || flags.truncate) {
            (_, false) => Access::Read,
            (true, true) => Access::ReadWrite,
            (false, true) => Access::WriteOnly,
        };
        match self.opens.decide(ino, opened.handle, access, opened.data_seq, backing, open_backing) {
            Ok(decision) => Ok(FuseOpen {
                handle: opened.handle,
                flags: decision.flags,
                backing: decision.backing,
                attr: opened.attr,
            }),
            Err(errno) => {
                // Undo the core open; the kernel never learns of the handle.
                let _ = self.fs.release(opened.handle, Origin::Fuse);
                Err(FuseOpenError::Errno(errno))
            }
        }
    }

    /// Hand directory entries after `offset` to `add` (with the offset of
    /// the entry after each) until it reports the reply buffer full.
    fn fill_entries(
        &self,
        dir: INodeNo,
        mut offset: u64,
        mut add: impl FnMut(&crate::fs::DirRow, u64) -> bool,
    ) -> Result<(), FsError> {
        loop {
            let cursor = offset.saturating_sub(FIRST_ENTRY_OFFSET);
            let rows = self.fs.readdir(Ino(dir.0), cursor, READDIR_BATCH)?;
            let Some(last) = rows.last() else { return Ok(()) };
            offset = last.cursor + FIRST_ENTRY_OFFSET;
            for row in &rows {
                if add(row, row.cursor + FIRST_ENTRY_OFFSET) {
                    return Ok(());
                }
            }
        }
    }
}

/// Why an open failed: a core error, or the kernel's I/O-mode rules.
enum FuseOpenError {
    Fs(FsError),
    Errno(fuser::Errno),
}

impl From<FsError> for FuseOpenError {
    fn from(e: FsError) -> Self {
        FuseOpenError::Fs(e)
    }
}

impl FuseOpenError {
    fn errno(&self) -> fuser::Errno {
        match self {
            FuseOpenError::Fs(e) => errno(e),
            FuseOpenError::Errno(e) => *e,
        }
    }
}

/// A handle opened for the kernel, with how it does I/O.
struct FuseOpen {
    handle: Handle,
    flags: FopenFlags,
    backing: Option<Arc<fuser::BackingId>>,
    attr: Attr,
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(nanos_from_kernel(t)),
    }
}

fn name_bytes(name: &OsStr) -> &[u8] {
    name.as_bytes()
}

/// Records one FUSE request in the metrics when dropped (the request
/// has been answered by then).
struct OpTimer<'a> {
    metrics: &'a crate::metrics::Metrics,
    name: &'static str,
    started: std::time::Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        self.metrics.fuse_op(self.name, self.started);
    }
}

impl Filesystem for TsmFuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        super::negotiate(config);
        // Passthrough needs kernel support and CAP_SYS_ADMIN; without it
        // reads go through the page cache instead.
        self.passthrough = self.want_passthrough
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok();
        self.granted.store(self.passthrough, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("FUSE passthrough {}", if self.passthrough { "on" } else { "off" });
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.release_all(Origin::Fuse) {
            tracing::error!("committing open files at unmount: {e}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _op = self.op("lookup");
        let parent = Ino(parent.0);
        let result = match name_bytes(name) {
            b"." => self.fs.getattr(parent),
            b".." => self.fs.parent_of(parent).and_then(|p| self.fs.getattr(p)),
            name => self.fs.lookup(parent, name),
        };
        self.reply_entry(reply, result);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _op = self.op("forget");
        // The kernel sends a forget only as it evicts the inode (with every
        // lookup it counted), so its page cache is gone too.
        self.opens.forgotten(Ino(ino.0));
        self.fs.forget(Ino(ino.0), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let _op = self.op("getattr");
        match self.fs.getattr(Ino(ino.0)) {
            Ok(attr) => reply.attr(&TTL, &file_attr(&attr)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _op = self.op("setattr");
        let change = SetAttr {
            perm: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(nanos_from_kernel),
            btime: crtime.map(nanos_from_kernel),
        };
        let ino = Ino(ino.0);
        match self.writable().and_then(|()| self.fs.setattr(ino, &change, &Self::caller(req))) {
            Ok(attr) => {
                if size.is_some() {
                    self.opens.truncated(ino, attr.data_seq);
                }
                reply.attr(&TTL, &file_attr(&attr))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _op = self.op("readlink");
        match self.fs.readlink(Ino(ino.0)) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _op = self.op("mknod");
        let result = self.writable().and_then(|()| {
            let kind = FileKind::from_mode(mode).unwrap_or(FileKind::File);
            self.fs.mknod(Ino(parent.0), name_bytes(name), kind, mode & 0o7777, rdev, &Self::caller(req))
        });
        self.reply_entry(reply, result);
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let _op = self.op("mkdir");
        let result = self
            .writable()
            .and_then(|()| self.fs.mkdir(Ino(parent.0), name_bytes(name), mode & 0o7777, &Self::caller(req)));
        self.reply_entry(reply, result);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = self.op("unlink");
        let result = self
            .writable()
            .and_then(|()| self.fs.unlink(Ino(parent.0), name_bytes(name), &Self::caller(req)));
        Self::reply_empty(reply, result);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = self.op("rmdir");
        let result =
            self.writable().and_then(|()| self.fs.rmdir(Ino(parent.0), name_bytes(name), &Self::caller(req)));
        Self::reply_empty(reply, result);
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let _op = self.op("symlink");
        let result = self.writable().and_then(|()| {
            self.fs.symlink(
                Ino(parent.0),
                name_bytes(link_name),
                target.as_os_str().as_bytes(),
                &Self::caller(req),
            )
        });
        self.reply_entry(reply, result);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: FuseRenameFlags,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("rename");
        let result = self.writable().and_then(|()| {
            if flags.contains(FuseRenameFlags::RENAME_WHITEOUT) {
                return Err(FsError::Unsupported("RENAME_WHITEOUT"));
            }
            let flags = RenameFlags {
                no_replace: flags.contains(FuseRenameFlags::RENAME_NOREPLACE),
                exchange: flags.contains(FuseRenameFlags::RENAME_EXCHANGE),
            };
            self.fs.rename(
                Ino(parent.0),
                name_bytes(name),
                Ino(newparent.0),
                name_bytes(newname),
                flags,
                &Self::caller(req),
            )
        });
        Self::reply_empty(reply, result);
    }

    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let _op = self.op("link");
        let result = self.writable().and_then(|()| {
            self.fs.link(Ino(ino.0), Ino(newparent.0), name_bytes(newname), &Self::caller(req))
        });
        self.reply_entry(reply, result);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let _op = self.op("open");
        let ino = Ino(ino.0);
        let opened = self.open_handle(
            flags.0,
            |flags| {
                if flags.truncate && flags.write {
                    // The kernel leaves the setid bits of an O_TRUNC to us
                    // (FUSE_HANDLE_KILLPRIV_V2).
                    self.fs.drop_setid_bits_for(ino, &Self::caller(req))?;
                }
                self.fs.open_file(ino, flags)
            },
            |file| reply.open_backing(file),
        );
        match opened {
            Ok(FuseOpen { handle, flags, backing: Some(backing), .. }) => {
                reply.opened_passthrough(FileHandle(handle.0), flags, &backing)
            }
            Ok(FuseOpen { handle, flags, .. }) => reply.opened(FileHandle(handle.0), flags),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _op = self.op("create");
        let result = (|| {
            self.writable()?;
            // A new file has no committed content: never passthrough. It is
            // empty, so O_TRUNC has nothing to do (it would stage an empty
            // content and commit it at close).
            let flags = flags & !libc::O_TRUNC;
            let (parent, name, caller) = (Ino(parent.0), name_bytes(name), Self::caller(req));
            self.open_handle(
                flags,
                |flags| self.fs.create_file(parent, name, mode & 0o7777, &caller, flags),
                |_| Err(std::io::Error::other("new file")),
            )
        })();
        match result {
            Ok(FuseOpen { handle, flags, attr, .. }) => {
                self.fs.hold(attr.ino);
                reply.created(
                    &TTL,
                    &file_attr(&attr),
                    Generation(attr.generation),
                    FileHandle(handle.0),
                    flags,
                )
            }
            Err(e) => reply.error(e.errno()),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _op = self.op("read");
        READ_BUFFER.with_borrow_mut(|buf| {
            // One buffer per worker thread, grown once: no allocation and
            // no page faults per request.
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            match self.fs.read_into(Handle(fh.0), offset, &mut buf[..size as usize]) {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _op = self.op("write");
        // The kernel leaves setid clearing on writes to us and says when
        // (FUSE_HANDLE_KILLPRIV_V2: the writer lacks CAP_FSETID).
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            && let Err(e) = self.fs.drop_setid_bits(Ino(ino.0), &Self::caller(req))
        {
            reply.error(errno(&e));
            return;
        }
        match self.fs.write(Handle(fh.0), offset, data) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let _op = self.op("flush");
        let result = self.fs.flush(Handle(fh.0), Origin::Fuse);
        Self::reply_empty(reply, self.note_commit(ino, result));
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("release");
        let handle = Handle(fh.0);
        let result = self.fs.release(handle, Origin::Fuse);
        self.opens.released(handle);
        Self::reply_empty(reply, self.note_commit(ino, result));
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _op = self.op("fsync");
        let result = self.fs.fsync(Handle(fh.0), Origin::Fuse);
        Self::reply_empty(reply, self.note_commit(ino, result));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        let _op = self.op("opendir");
        // Directory handles carry no state: readdir offsets are cursors.
        match self.fs.getattr(Ino(ino.0)) {
            Ok(attr) if attr.kind == FileKind::Dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(errno(&FsError::NotDir)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let _op = self.op("readdir");
        if offset < 1 && reply.add(ino, 1, fuser::FileType::Directory, ".") {
            return reply.ok();
        }
        if offset < FIRST_ENTRY_OFFSET {
            let parent = self.fs.parent_of(Ino(ino.0)).map_or(ino, |p| INodeNo(p.0));
            if reply.add(parent, FIRST_ENTRY_OFFSET, fuser::FileType::Directory, "..") {
                return reply.ok();
            }
        }
        let filled = self.fill_entries(ino, offset, |row, entry_offset| {
            let name = OsStr::from_bytes(&row.name);
            reply.add(INodeNo(row.inode.ino.0), entry_offset, file_type(row.inode.kind), name)
        });
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let _op = self.op("readdirplus");
        if offset < FIRST_ENTRY_OFFSET {
            let dir = match self.fs.getattr(Ino(ino.0)) {
                Ok(attr) => attr,
                Err(e) => return reply.error(errno(&e)),
            };
            if offset < 1 && reply.add(ino, 1, ".", &TTL, &file_attr(&dir), Generation(dir.generation)) {
                return reply.ok();
            }
            let parent = self.fs.parent_of(dir.ino).and_then(|p| self.fs.getattr(p)).unwrap_or(dir);
            let generation = Generation(parent.generation);
            if reply.add(
                INodeNo(parent.ino.0),
                FIRST_ENTRY_OFFSET,
                "..",
                &TTL,
                &file_attr(&parent),
                generation,
            ) {
                return reply.ok();
            }
        }
        let filled = self.fill_entries(ino, offset, |row, entry_offset| {
            let name = OsStr::from_bytes(&row.name);
            let generation = Generation(row.inode.generation);
            // Counted first: once added, the entry may reach the kernel.
            self.fs.hold(row.inode.ino);
            let full = reply.add(
                INodeNo(row.inode.ino.0),
                entry_offset,
                name,
                &TTL,
                &file_attr(&row.inode),
                generation,
            );
            if full {
                // Not added after all; an extra count only costs a
                // needless notification, but keep the count exact.
                self.fs.forget(row.inode.ino, 1);
            }
            full
        });
        match filled {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let _op = self.op("fsyncdir");
        Self::reply_empty(reply, self.fs.sync_changes());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _op = self.op("statfs");
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks,
                s.blocks_free,
                s.blocks_available,
                s.files,
                s.files_free,
                s.block_size,
                s.name_max,
                s.block_size,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("setxattr");
        let mode = if flags & libc::XATTR_CREATE != 0 {
            XattrMode::Create
        } else if flags & libc::XATTR_REPLACE != 0 {
            XattrMode::Replace
        } else {
            XattrMode::Upsert
        };
        let result = self
            .writable()
            .and_then(|()| self.fs.setxattr(Ino(ino.0), name_bytes(name), value, mode, &Self::caller(req)));
        Self::reply_empty(reply, result);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _op = self.op("getxattr");
        match self.fs.getxattr(Ino(ino.0), name_bytes(name)) {
            Ok(value) => reply_xattr(reply, &value, size),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _op = self.op("listxattr");
        match self.fs.listxattr(Ino(ino.0)) {
            Ok(names) => {
                let mut list = Vec::new();
                for name in names {
                    list.extend_from_slice(&name);
                    list.push(0);
                }
                reply_xattr(reply, &list, size);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _op = self.op("removexattr");
        let result = self
            .writable()
            .and_then(|()| self.fs.removexattr(Ino(ino.0), name_bytes(name), &Self::caller(req)));
        Self::reply_empty(reply, result);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _op = self.op("copy_file_range");
        // The reply carries a u32; the kernel asks again for the rest.
        let len = len.min(u64::from(u32::MAX));
        let result = self.writable().and_then(|()| {
            self.fs.copy_range(Handle(fh_in.0), offset_in, Handle(fh_out.0), offset_out, len, Origin::Fuse)
        });
        match result {
            Ok(outcome) => {
                if let Some(id) = outcome.data_seq {
                    // The kernel drops the target's cached pages of the
                    // range; what it caches next is this content.
                    self.opens.committed(Ino(ino_out.0), id);
                }
                reply.written(outcome.copied as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// No ioctl is supported. Answered ENOTTY, as a file on a local disk
    /// answers the terminal ioctls that `isatty` (every Python `open`)
    /// sends, and without the warning fuser's default logs for each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _op = self.op("ioctl");
        reply.error(fuser::Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _op = self.op("fallocate");
        let result = self.writable().and_then(|()| self.fs.fallocate(Handle(fh.0), mode, offset, length));
        Self::reply_empty(reply, result);
    }
}

/// Answer a getxattr/listxattr: the size when asked for it, ERANGE when
/// the caller's buffer is too small.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(fuser::Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}
