//! A do-nothing FUSE filesystem for `scripts/bench-fs` to compare against.
//!
//! Names, attributes and file contents live in memory only; nothing is
//! ever synced. It mounts with the same options, capabilities, worker
//! threads and cache timeouts as tsmfs and answers xattr requests (with
//! "no such attribute"), so the kernel sends it the same requests, and
//! the time it takes to `create` or `stat` a file, or to run a program
//! such as SQLite on it, is the least any FUSE filesystem can take on this
//! machine: what tsmfs costs on top of it is our own.
//!
//! With `--log FILE` it also does the least a filesystem whose changes
//! survive a crash must do: each change (a create, mkdir, unlink, rmdir,
//! setattr, and a file's written bytes at its fsync or close) is written
//! to FILE, through the page cache, and each fsync (of a file or a
//! directory) then syncs FILE, once. FILE is written over in a circle, so
//! a sync never grows it (tsmfs's metadata log is reused the same way).
//! That is the floor of tsmfs's design: one log write per change and one
//! log sync per fsync, with no index, no hashing and no database.
//!
//!   nullfs MOUNTPOINT [--log FILE]
//!
//! Stays in the foreground until SIGINT/SIGTERM/SIGHUP (then unmounts) or
//! until someone runs `umount MOUNTPOINT`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig,
    LockOwner, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

use tsmfs::fuse::{BLOCK_SIZE, TTL};

/// readdir offsets 1 and 2 are "." and ".."; entries count up from 3.
const FIRST_COOKIE: u64 = 3;
/// How often the main thread looks for a signal or an outside unmount.
const POLL: Duration = Duration::from_millis(50);
/// The size of the `--log` file, written over in a circle.
const LOG_SIZE: u64 = 64 << 20;
/// What a change other than written bytes writes to the log.
const RECORD: [u8; 128] = [0x5a; 128];

/// The `--log` file: a change is a write at the cursor, an fsync a sync.
struct Log {
    file: File,
    cursor: u64,
}

impl Log {
    /// Make `path` LOG_SIZE bytes of zeros, on disk, so that writing over
    /// it changes no metadata.
    fn create(path: &std::path::Path) -> std::io::Result<Log> {
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        let zeros = vec![0u8; 1 << 20];
        for at in (0..LOG_SIZE).step_by(zeros.len()) {
            file.write_all_at(&zeros, at)?;
        }
        file.sync_all()?;
        Ok(Log { file, cursor: 0 })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        for part in bytes.chunks(LOG_SIZE as usize / 2) {
            if self.cursor + part.len() as u64 > LOG_SIZE {
                self.cursor = 0;
            }
            self.file.write_all_at(part, self.cursor)?;
            self.cursor += part.len() as u64;
        }
        Ok(())
    }
}

/// One directory: names for lookup, and the same entries in creation order
/// under a cookie that never changes, so readdir can resume after removals.
#[derive(Default)]
struct Dir {
    by_name: HashMap<OsString, (u64, u64)>,
    by_cookie: BTreeMap<u64, (OsString, u64)>,
    next_cookie: u64,
}

struct Node {
    attr: FileAttr,
    /// Directories: the parent's inode number (the root's is its own).
    parent: u64,
    /// A file's bytes.
    data: Vec<u8>,
    /// Bytes written since they were last logged (with `--log`).
    unlogged: usize,
}

struct State {
    nodes: HashMap<u64, Node>,
    dirs: HashMap<u64, Dir>,
    next_ino: u64,
}

impl State {
    fn attr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        self.nodes.get(&ino.0).map(|n| n.attr).ok_or(Errno::ENOENT)
    }

    /// Add a new `kind` entry `name` to directory `parent`.
    fn add(
        &mut self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let ino = self.next_ino;
        let dir = self.dirs.get_mut(&parent.0).ok_or(Errno::ENOTDIR)?;
        if dir.by_name.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let cookie = dir.next_cookie;
        dir.next_cookie += 1;
        dir.by_name.insert(name.to_os_string(), (ino, cookie));
        dir.by_cookie.insert(cookie, (name.to_os_string(), ino));
        self.next_ino += 1;
        let now = SystemTime::now();
        let is_dir = kind == FileType::Directory;
        let attr = new_attr(ino, kind, mode, req.uid(), req.gid(), now);
        self.nodes.insert(ino, Node { attr, parent: parent.0, data: Vec::new(), unlogged: 0 });
        if let Some(p) = self.nodes.get_mut(&parent.0) {
            p.attr.mtime = now;
            p.attr.ctime = now;
            if is_dir {
                p.attr.nlink += 1;
            }
        }
        if is_dir {
            self.dirs.insert(ino, Dir { next_cookie: FIRST_COOKIE, ..Dir::default() });
        }
        Ok(attr)
    }

    /// Remove entry `name` from `parent`: a directory (empty) if `dir`,
    /// else anything but a directory.
    fn remove(&mut self, parent: INodeNo, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let entries = self.dirs.get(&parent.0).ok_or(Errno::ENOTDIR)?;
        let &(ino, cookie) = entries.by_name.get(name).ok_or(Errno::ENOENT)?;
        let is_dir = self.dirs.get(&ino).map(|d| d.by_name.is_empty());
        match (dir, is_dir) {
            (true, None) => return Err(Errno::ENOTDIR),
            (false, Some(_)) => return Err(Errno::EISDIR),
            (true, Some(false)) => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        if let Some(entries) = self.dirs.get_mut(&parent.0) {
            entries.by_name.remove(name);
            entries.by_cookie.remove(&cookie);
        }
        let now = SystemTime::now();
        if dir {
            self.dirs.remove(&ino);
            self.nodes.remove(&ino);
        } else if let Some(node) = self.nodes.get_mut(&ino) {
            // Kept (leaked until unmount): forget is a no-op, and an open
            // descriptor may still fstat it.
            node.attr.nlink = 0;
            node.attr.ctime = now;
        }
        if let Some(p) = self.nodes.get_mut(&parent.0) {
            p.attr.mtime = now;
            p.attr.ctime = now;
            if dir {
                p.attr.nlink = p.attr.nlink.saturating_sub(1);
            }
        }
        Ok(())
    }
}

fn new_attr(ino: u64, kind: FileType, mode: u32, uid: u32, gid: u32, now: SystemTime) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm: (mode & 0o7777) as u16,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid,
        gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::Now => SystemTime::now(),
        TimeOrNow::SpecificTime(t) => t,
    }
}

struct NullFs {
    state: Mutex<State>,
    log: Option<Mutex<Log>>,
}

impl NullFs {
    /// With a log: write a change's record to it.
    fn record(&self) -> Result<(), Errno> {
        match &self.log {
            Some(log) => log.lock().write(&RECORD).map_err(|_| Errno::EIO),
            None => Ok(()),
        }
    }

    /// With a log: write the bytes written to `ino` since they last were
    /// to it; and with `sync`, sync it.
    fn log_bytes(&self, ino: INodeNo, sync: bool) -> Result<(), Errno> {
        let Some(log) = &self.log else { return Ok(()) };
        // An unlinked file's bytes are gone: nothing to log.
        let bytes = match self.state.lock().nodes.get_mut(&ino.0) {
            Some(node) => {
                let len = std::mem::take(&mut node.unlogged).min(node.data.len());
                node.data[..len].to_vec()
            }
            None => Vec::new(),
        };
        let mut log = log.lock();
        log.write(&bytes).map_err(|_| Errno::EIO)?;
        if sync {
            log.file.sync_data().map_err(|_| Errno::EIO)?;
        }
        Ok(())
    }

    fn new(log: Option<Log>) -> NullFs {
        // SAFETY: getuid and getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let root = new_attr(1, FileType::Directory, 0o755, uid, gid, SystemTime::now());
        let mut state = State { nodes: HashMap::new(), dirs: HashMap::new(), next_ino: 2 };
        state.nodes.insert(1, Node { attr: root, parent: 1, data: Vec::new(), unlogged: 0 });
        state.dirs.insert(1, Dir { next_cookie: FIRST_COOKIE, ..Dir::default() });
        NullFs { state: Mutex::new(state), log: log.map(Mutex::new) }
    }
}

impl Filesystem for NullFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        tsmfs::fuse::negotiate(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state.lock();
        let found = match state.dirs.get(&parent.0) {
            Some(dir) => {
                dir.by_name.get(name).and_then(|&(ino, _)| state.nodes.get(&ino)).ok_or(Errno::ENOENT)
            }
            None => Err(Errno::ENOTDIR),
        };
        match found {
            Ok(node) => reply.entry(&TTL, &node.attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {}

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state.lock().attr(ino) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
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
        let mut state = self.state.lock();
        let Some(node) = state.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size
            && node.attr.kind == FileType::RegularFile
        {
            node.data.resize(usize::try_from(size).unwrap_or(usize::MAX), 0);
        }
        let attr = &mut node.attr;
        if let Some(mode) = mode {
            attr.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            attr.uid = uid;
        }
        if let Some(gid) = gid {
            attr.gid = gid;
        }
        if let Some(size) = size {
            if attr.kind == FileType::Directory {
                return reply.error(Errno::EISDIR);
            }
            attr.size = size;
            attr.blocks = size.div_ceil(512);
        }
        if let Some(t) = atime {
            attr.atime = time(t);
        }
        if let Some(t) = mtime {
            attr.mtime = time(t);
        }
        attr.ctime = ctime.unwrap_or_else(SystemTime::now);
        if let Some(t) = crtime {
            attr.crtime = t;
        }
        let attr = *attr;
        drop(state);
        match self.record() {
            Ok(()) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let added = self.state.lock().add(req, parent, name, FileType::Directory, mode);
        match added.and_then(|attr| self.record().map(|()| attr)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self.state.lock().remove(parent, name, false);
        match removed.and_then(|()| self.record()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self.state.lock().remove(parent, name, true);
        match removed.and_then(|()| self.record()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        match self.state.lock().attr(ino) {
            Ok(attr) if attr.kind == FileType::Directory => reply.error(Errno::EISDIR),
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let added = self.state.lock().add(req, parent, name, FileType::RegularFile, mode);
        match added.and_then(|attr| self.record().map(|()| attr)) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state.lock();
        let Some(node) = state.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(node.data.len());
        let end = start.saturating_add(size as usize).min(node.data.len());
        reply.data(&node.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state.lock();
        let Some(node) = state.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let (Ok(start), Some(end)) = (usize::try_from(offset), (offset as usize).checked_add(data.len()))
        else {
            return reply.error(Errno::EFBIG);
        };
        if end > node.data.len() {
            node.data.resize(end, 0);
            node.attr.size = end as u64;
            node.attr.blocks = node.attr.size.div_ceil(512);
        }
        node.data[start..end].copy_from_slice(data);
        node.unlogged += data.len();
        node.attr.mtime = SystemTime::now();
        node.attr.ctime = node.attr.mtime;
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.log_bytes(ino, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.log_bytes(ino, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.log_bytes(ino, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: fuser::ReplyXattr) {
        match self.state.lock().attr(ino) {
            Ok(_) => reply.error(Errno::ENODATA),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        match self.state.lock().attr(ino) {
            Ok(_) if size == 0 => reply.size(0),
            Ok(_) => reply.data(&[]),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        match self.state.lock().attr(ino) {
            Ok(attr) if attr.kind == FileType::Directory => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let state = self.state.lock();
        let (Some(node), Some(dir)) = (state.nodes.get(&ino.0), state.dirs.get(&ino.0)) else {
            return reply.error(Errno::ENOENT);
        };
        if offset < 1 && reply.add(ino, 1, FileType::Directory, ".") {
            return reply.ok();
        }
        if offset < 2 && reply.add(INodeNo(node.parent), 2, FileType::Directory, "..") {
            return reply.ok();
        }
        for (&cookie, (name, child)) in dir.by_cookie.range((Bound::Excluded(offset), Bound::Unbounded)) {
            let kind = state.nodes.get(child).map_or(FileType::RegularFile, |n| n.attr.kind);
            if reply.add(INodeNo(*child), cookie, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let state = self.state.lock();
        let (Some(node), Some(dir)) = (state.nodes.get(&ino.0), state.dirs.get(&ino.0)) else {
            return reply.error(Errno::ENOENT);
        };
        if offset < 1 && reply.add(ino, 1, ".", &TTL, &node.attr, Generation(0)) {
            return reply.ok();
        }
        if offset < 2 {
            let parent = state.nodes.get(&node.parent).unwrap_or(node);
            if reply.add(INodeNo(node.parent), 2, "..", &TTL, &parent.attr, Generation(0)) {
                return reply.ok();
            }
        }
        for (&cookie, (name, child)) in dir.by_cookie.range((Bound::Excluded(offset), Bound::Unbounded)) {
            let Some(child) = state.nodes.get(child) else { continue };
            if reply.add(child.attr.ino, cookie, name, &TTL, &child.attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.state.lock().nodes.len() as u64;
        let blocks = 1 << 30;
        reply.statfs(blocks, blocks, blocks, files, (1 << 30) - files, BLOCK_SIZE, 255, BLOCK_SIZE);
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (mountpoint, log) = match args.as_slice() {
        [mountpoint] => (mountpoint, None),
        [mountpoint, flag, log] if flag.as_os_str() == "--log" => (mountpoint, Some(log)),
        _ => {
            eprintln!("usage: nullfs MOUNTPOINT [--log FILE]");
            return std::process::ExitCode::from(2);
        }
    };
    match run(mountpoint, log.map(PathBuf::as_path)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nullfs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mountpoint: &std::path::Path, log: Option<&std::path::Path>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Catch signals before mounting, so none can end us mounted.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    // As tsmfs mounts for scripts/bench-fs (`--allow-other`, read-write).
    let options = tsmfs::fuse::MountOptions { allow_other: true, ..Default::default() };
    let config = tsmfs::fuse::session_config("nullfs", &options);
    let log = log
        .map(|path| {
            Log::create(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        })
        .transpose()?;
    let session = fuser::spawn_mount(NullFs::new(log), mountpoint, &config)
        .map_err(|e| std::io::Error::new(e.kind(), format!("mounting {}: {e}", mountpoint.display())))?;
    loop {
        if signals.pending().next().is_some() {
            return session.umount_and_join();
        }
        if session.guard.is_finished() {
            // Unmounted from outside. Not `join()`: dropping the session
            // unmounts by path whatever is mounted there by now (see
            // `Mounted::join` in src/fuse/mod.rs).
            std::mem::forget(session);
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}
