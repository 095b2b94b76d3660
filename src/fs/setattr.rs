//! Attribute changes: setattr (mode, owner, size, times) and xattrs.

use std::sync::atomic::Ordering;

use super::access::{grants_no_less, mode_after_write, setid_bits_to_clear};
use super::io::with_pending;
use super::pending::HeldAttrs;
use super::{Attr, Caller, ChangeOp, FileKind, Fs, FsError, FsResult};
use crate::id::Ino;

/// The file capabilities xattr: a change of the file's bytes, size or
/// owner removes it, as on a local filesystem (the kernel leaves this to
/// tsmfs, see docs/fuse.md "Setid bits and capabilities").
pub(crate) const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// A time to set: the current time or an explicit one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    /// The time of the change (UTIME_NOW).
    Now,
    /// Nanoseconds since the epoch.
    At(i64),
}

/// Which attributes [`Fs::setattr`] changes; `None` leaves one alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (`0o7777`).
    pub perm: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend with zeros).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
    /// New status-change time (otherwise: now, if anything changed).
    pub ctime: Option<i64>,
    /// New birth time.
    pub btime: Option<i64>,
}

/// An attribute change of [`Fs::change_attrs`].
#[derive(Clone, Copy)]
enum AttrChange<'c> {
    /// A setattr (its size change, if any, already applied).
    Set(&'c SetAttr),
    /// Clear the setid bits a write by the caller takes.
    DropSetid,
}

impl AttrChange<'_> {
    /// `inode` after the change by `caller` at `now`: the rules of chown,
    /// chmod, truncate and utimens for everything but the bytes.
    fn apply(self, inode: &Attr, caller: &Caller, now: i64) -> Attr {
        let mut inode = inode.clone();
        let change = match self {
            AttrChange::Set(change) => change,
            AttrChange::DropSetid => {
                inode.perm &= !setid_bits_to_clear(inode.perm);
                inode.ctime_ns = now;
                return inode;
            }
        };
        let owner_changed = change.uid.is_some() || change.gid.is_some();
        // Directories keep theirs (setgid there means inheritance).
        if inode.kind != FileKind::Dir && (owner_changed || change.size.is_some()) {
            // chown takes the setid bits from anyone; a truncate from all
            // but root. An explicit mode below wins.
            inode.perm = if owner_changed {
                inode.perm & !setid_bits_to_clear(inode.perm)
            } else {
                mode_after_write(caller.uid, inode.perm)
            };
        }
        if let Some(perm) = change.perm {
            inode.perm = perm & 0o7777;
        }
        inode.uid = change.uid.unwrap_or(inode.uid);
        inode.gid = change.gid.unwrap_or(inode.gid);
        let resolve = |t: TimeSet| match t {
            TimeSet::Now => now,
            TimeSet::At(ns) => ns,
        };
        if let Some(t) = change.atime {
            inode.atime_ns = resolve(t);
        }
        if let Some(t) = change.mtime {
            inode.mtime_ns = resolve(t);
        } else if change.size.is_some() {
            inode.mtime_ns = now;
        }
        inode.ctime_ns = change.ctime.unwrap_or(now);
        inode.btime_ns = change.btime.unwrap_or(inode.btime_ns);
        inode
    }

    /// Whether it may wait for the pending writes' commit: not a size
    /// change (that is part of the writes), nor an explicit ctime (which
    /// the commit would not keep).
    fn can_be_held(self) -> bool {
        match self {
            AttrChange::Set(change) => change.size.is_none() && change.ctime.is_none(),
            AttrChange::DropSetid => true,
        }
    }

    /// Whether it removes `security.capability`: a change of owner or size.
    fn drops_capabilities(self) -> bool {
        match self {
            AttrChange::Set(change) => change.uid.is_some() || change.gid.is_some() || change.size.is_some(),
            AttrChange::DropSetid => false,
        }
    }

    fn sets_mtime(self) -> bool {
        matches!(self, AttrChange::Set(change) if change.mtime.is_some())
    }
}

/// The read-only xattr holding a file's content id in ETag form.
pub const ETAG_XATTR: &[u8] = b"user.tsmfs.etag";

/// Largest xattr value (the Linux VFS limit).
const XATTR_SIZE_MAX: usize = 65536;

/// Namespaces tsmfs stores. `system.*` (ACLs) is not supported.
const XATTR_NAMESPACES: [&[u8]; 3] = [b"user.", b"trusted.", b"security."];

/// How [`Fs::setxattr`] treats an existing or missing attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    #[default]
    Upsert,
    /// Fail if it exists (XATTR_CREATE).
    Create,
    /// Fail if it does not exist (XATTR_REPLACE).
    Replace,
}

impl Fs {
    /// Change attributes. A size change goes through the inode's pending
    /// writes when it is open, else commits a new content at once.
    pub fn setattr(&self, ino: Ino, change: &SetAttr, caller: &Caller) -> FsResult<Attr> {
        self.check_writable()?;
        if let Some(size) = change.size {
            let inode = self.getattr(ino)?;
            match inode.kind {
                FileKind::File => self.truncate(ino, size, caller.origin)?,
                FileKind::Dir => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid("truncate of a special file")),
            }
        }
        if *change == SetAttr::default() {
            return self.getattr(ino);
        }
        self.change_attrs(ino, AttrChange::Set(change), caller)
    }

    /// What a truncating open by `caller` does to the setid bits: what a
    /// truncate does ([`Fs::drop_setid_bits`] unless `caller` is root).
    pub fn drop_setid_bits_for(&self, ino: Ino, caller: &Caller) -> FsResult<()> {
        if mode_after_write(caller.uid, libc::S_ISUID) == 0 {
            self.drop_setid_bits(ino, caller)
        } else {
            Ok(())
        }
    }

    /// Clear setuid, and setgid on group-executable files, as a write by
    /// a caller without CAP_FSETID must (Linux's rule). Called on each
    /// such write; the common case (no bits set) seldom reads anything
    /// (see `has_setid_bits_to_clear`).
    pub fn drop_setid_bits(&self, ino: Ino, caller: &Caller) -> FsResult<()> {
        if !self.has_setid_bits_to_clear(ino)? {
            return Ok(());
        }
        self.change_attrs(ino, AttrChange::DropSetid, caller).map(|_| ())
    }

    /// Whether `ino`'s mode has setid bits a write takes. For an open
    /// inode the answer "none" is kept until the next commit anywhere
    /// (every change of a mode is one), so a stream of writes reads the
    /// database once.
    fn has_setid_bits_to_clear(&self, ino: Ino) -> FsResult<bool> {
        let Some(open) = self.open_files.inode(ino) else {
            return Ok(setid_bits_to_clear(self.getattr(ino)?.perm) != 0);
        };
        let mut open = open.lock();
        // A held mode is the one that counts, and it is in memory.
        if let Some(perm) = open.pending.as_ref().and_then(|pending| pending.held.perm) {
            return Ok(setid_bits_to_clear(perm) != 0);
        }
        // Taken before the read: a change committed meanwhile moves it on.
        let seq = self.last_seq.load(Ordering::Acquire);
        if open.setid_free_at == Some(seq) {
            return Ok(false);
        }
        let stored = self.meta.read_point(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        let has = setid_bits_to_clear(stored.perm) != 0;
        open.setid_free_at = (!has).then_some(seq);
        Ok(has)
    }

    /// Apply `change` to `ino`. On a file with pending writes, a change
    /// that takes no access from anyone ([`grants_no_less`]) is held to
    /// commit with them, so it costs no transaction; any other commits
    /// now, with what was held, for readers of the committed attributes
    /// (HTTP, other processes) must not be allowed what it takes away.
    fn change_attrs(&self, ino: Ino, change: AttrChange<'_>, caller: &Caller) -> FsResult<Attr> {
        // The open inode first, then the writer: a commit's lock order.
        let open = self.open_files.inode(ino);
        let mut open = open.as_ref().map(|open| open.lock());
        if let Some(inode) =
            open.as_deref_mut().filter(|inode| inode.pending.is_some() && change.can_be_held())
        {
            let stored = self.meta.read_point(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
            let now = super::now_ns();
            let after = change.apply(&with_pending(inode, stored.clone()), caller, now);
            if grants_no_less(&stored, &after)
                && let Some(pending) = inode.pending.as_mut()
            {
                pending.hold(&stored, &after, change.sets_mtime(), now);
                return Ok(with_pending(inode, stored));
            }
        }
        let pending = open.as_deref_mut().and_then(|inode| inode.pending.as_mut());
        let held = pending.as_ref().map(|pending| pending.held).unwrap_or_default();
        let after = self.transact(caller.origin, |tx| {
            let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            held.apply(&mut inode);
            let after = change.apply(&inode, caller, tx.now);
            if inode.kind != FileKind::Dir && change.drops_capabilities() {
                tx.db.remove_xattr(ino, CAPABILITY_XATTR)?;
            }
            tx.db.update_inode(&after)?;
            tx.log(ChangeOp::SetAttr, ino, None, None, None, vec![])?;
            Ok(after)
        })?;
        if let Some(pending) = pending {
            pending.held_committed(change.sets_mtime().then_some(after.mtime_ns));
        }
        drop(open);
        self.getattr(ino)
    }

    /// Commit attribute changes that were held for pending writes whose
    /// commit failed.
    pub(super) fn commit_held(&self, ino: Ino, held: HeldAttrs, origin: super::Origin) -> FsResult<()> {
        self.transact(origin, |tx| {
            let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            held.apply(&mut inode);
            inode.ctime_ns = tx.now;
            tx.db.update_inode(&inode)?;
            tx.log(ChangeOp::SetAttr, ino, None, None, None, vec![])
        })
    }

    /// WebDAV dead properties of `ino`: (Clark-notation name, raw XML).
    pub fn dead_props(&self, ino: Ino) -> FsResult<super::DeadProps> {
        Ok(self.meta.read(|db| db.dead_props(ino))?)
    }

    /// Whether `ino` has any dead property.
    pub fn has_dead_props(&self, ino: Ino) -> FsResult<bool> {
        Ok(self.meta.read(|db| db.has_dead_props(ino))?)
    }

    /// Apply a PROPPATCH: set (`Some(xml)`) or remove (`None`) each named
    /// dead property, all in one transaction.
    pub fn patch_dead_props(
        &self,
        ino: Ino,
        changes: &[(String, Option<Vec<u8>>)],
        caller: &Caller,
    ) -> FsResult<()> {
        self.transact(caller.origin, |tx| {
            tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            for (name, value) in changes {
                match value {
                    Some(xml) => tx.db.set_dead_prop(ino, name, xml)?,
                    None => tx.db.remove_dead_prop(ino, name)?,
                }
            }
            tx.log(ChangeOp::Xattr, ino, None, None, None, vec![])
        })
    }

    /// Value of xattr `name`.
    ///
    /// The kernel asks for `security.capability` before the first write
    /// after each change of a file's attributes (four times per SQLite
    /// transaction, once per file of an untar), and it is rarely set: for
    /// an open file, while no inode has one, that is answered from memory.
    /// Otherwise one query in the common case.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        if name == CAPABILITY_XATTR
            && !self.capabilities_may_exist.load(Ordering::Acquire)
            && self.open_files.inode(ino).is_some()
        {
            return Err(FsError::NoAttr);
        }
        if name == ETAG_XATTR {
            return match self.current_content_id(ino) {
                Ok(id) => Ok(id.etag().into_bytes()),
                Err(FsError::IsDir) => Err(FsError::NoAttr),
                Err(e) => Err(e),
            };
        }
        self.meta.read_point(|db| {
            match db.xattr(ino, name)? {
                Some(value) => Ok(value),
                // Tell "no such attribute" from "no such file".
                None if db.inode(ino)?.is_some() => Err(FsError::NoAttr),
                None => Err(FsError::NotFound),
            }
        })
    }

    /// Names of the xattrs of `ino` (the ETag xattr first, for files).
    pub fn listxattr(&self, ino: Ino) -> FsResult<Vec<Vec<u8>>> {
        let inode = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        let mut names = Vec::new();
        if inode.kind == FileKind::File {
            names.push(ETAG_XATTR.to_vec());
        }
        names.extend(self.meta.read(|db| db.xattr_names(ino))?);
        Ok(names)
    }

    /// Set xattr `name` to `value`.
    pub fn setxattr(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        caller: &Caller,
    ) -> FsResult<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(FsError::TooBig);
        }
        if name == CAPABILITY_XATTR {
            // Before the commit: a getxattr after it must not miss it.
            self.capabilities_may_exist.store(true, Ordering::Release);
        }
        self.transact(caller.origin, |tx| {
            tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            let exists = tx.db.xattr(ino, name)?.is_some();
            match mode {
                XattrMode::Create if exists => return Err(FsError::Exists),
                XattrMode::Replace if !exists => return Err(FsError::NoAttr),
                _ => {}
            }
            tx.db.set_xattr(ino, name, value)?;
            tx.db.add_links(ino, 0, tx.now)?;
            tx.log(ChangeOp::Xattr, ino, None, None, None, vec![])
        })
    }

    /// Remove xattr `name`.
    pub fn removexattr(&self, ino: Ino, name: &[u8], caller: &Caller) -> FsResult<()> {
        check_xattr_name(name)?;
        self.transact(caller.origin, |tx| {
            tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            if !tx.db.remove_xattr(ino, name)? {
                return Err(FsError::NoAttr);
            }
            tx.db.add_links(ino, 0, tx.now)?;
            tx.log(ChangeOp::Xattr, ino, None, None, None, vec![])
        })
    }
}

fn check_xattr_name(name: &[u8]) -> FsResult<()> {
    if name == ETAG_XATTR {
        return Err(FsError::NotPermitted("user.tsmfs.etag is read-only"));
    }
    if name.len() > 255 {
        return Err(FsError::Range);
    }
    if !XATTR_NAMESPACES.iter().any(|ns| name.starts_with(ns) && name.len() > ns.len()) {
        return Err(FsError::Unsupported("xattr namespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{OpenFlags, Origin};

    /// The kernel's `security.capability` question before a write is
    /// answered without a read while no inode has one, and from the
    /// database as soon as one does, on any file.
    #[test]
    fn the_capability_xattr_is_answered_from_memory_until_a_file_has_one() {
        let (dir, fs, caller) = crate::fs::testing::fresh_fs(Default::default());
        let rw = OpenFlags { read: true, write: true, ..OpenFlags::default() };
        let open = fs.create_file(Ino::ROOT, b"open", 0o755, &caller, rw).unwrap();
        let other = fs.create_file(Ino::ROOT, b"other", 0o755, &caller, rw).unwrap();
        fs.release(other.handle, Origin::Cli).unwrap();
        let ino = open.attr.ino;
        assert!(matches!(fs.getxattr(ino, CAPABILITY_XATTR), Err(FsError::NoAttr)));
        assert!(!fs.capabilities_may_exist.load(Ordering::Acquire), "answered from memory");

        let value = [1u8, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        fs.setxattr(other.attr.ino, CAPABILITY_XATTR, &value, XattrMode::Upsert, &caller).unwrap();
        assert!(matches!(fs.getxattr(ino, CAPABILITY_XATTR), Err(FsError::NoAttr)));
        fs.setxattr(ino, CAPABILITY_XATTR, &value, XattrMode::Upsert, &caller).unwrap();
        assert_eq!(fs.getxattr(ino, CAPABILITY_XATTR).unwrap(), value);
        fs.release(open.handle, Origin::Cli).unwrap();

        // A data directory that has one looks, from its next open on.
        drop(fs);
        let fs = Fs::open(&dir.path().join("data"), Default::default()).unwrap();
        assert!(fs.capabilities_may_exist.load(Ordering::Acquire));
    }

    /// `tar -x` and `cp -a` set owner, mode and times on each file before
    /// they close it: held for the commit at close, no transaction each.
    /// The mount sees them at once; readers of committed attributes see
    /// them at the commit, and never more access than before.
    #[test]
    fn attribute_changes_on_a_file_being_written_commit_with_its_writes_unless_they_take_access() {
        let (_dir, fs, caller) = crate::fs::testing::fresh_fs(Default::default());
        let rw = OpenFlags { read: true, write: true, ..OpenFlags::default() };
        let opened = fs.create_file(Ino::ROOT, b"f", 0o600, &caller, rw).unwrap();
        let ino = opened.attr.ino;
        fs.write(opened.handle, 0, b"archived bytes").unwrap();
        let seq_before = fs.last_seq.load(Ordering::Acquire);

        let chown = SetAttr { uid: Some(1000), gid: Some(100), ..SetAttr::default() };
        let chmod = SetAttr { perm: Some(0o644), ..SetAttr::default() };
        let utimens = SetAttr {
            atime: Some(TimeSet::At(1_400_000_000_000_000_000)),
            mtime: Some(TimeSet::At(1_500_000_000_000_000_000)),
            ..SetAttr::default()
        };
        for change in [chown, chmod, utimens] {
            let attr = fs.setattr(ino, &change, &caller).unwrap();
            assert_eq!(attr.size, 14, "the reply shows the pending writes");
        }
        assert_eq!(fs.last_seq.load(Ordering::Acquire), seq_before, "no transaction for held changes");
        let shown = fs.getattr(ino).unwrap();
        assert_eq!((shown.uid, shown.gid, shown.perm), (1000, 100, 0o644));
        assert_eq!((shown.atime_ns, shown.mtime_ns), (1_400_000_000_000_000_000, 1_500_000_000_000_000_000));
        let committed = fs.resolve_committed(b"f").unwrap();
        assert_eq!((committed.uid, committed.perm, committed.size), (0, 0o600, 0), "not committed yet");

        fs.flush(opened.handle, Origin::Cli).unwrap();
        let committed = fs.resolve_committed(b"f").unwrap();
        assert_eq!((committed.uid, committed.gid, committed.perm, committed.size), (1000, 100, 0o644, 14));
        assert_eq!(committed.mtime_ns, 1_500_000_000_000_000_000, "the time set, not the write's");
        assert_eq!(committed.atime_ns, 1_400_000_000_000_000_000);

        // A change that takes access commits at once, with what was held.
        fs.write(opened.handle, 0, b"more").unwrap();
        fs.setattr(ino, &utimens, &caller).unwrap();
        fs.write(opened.handle, 4, b" bytes").unwrap();
        let shown = fs.getattr(ino).unwrap().mtime_ns;
        assert!(shown > 1_500_000_000_000_000_000, "a write after a held time set moves the mtime on");
        fs.setattr(ino, &SetAttr { perm: Some(0o664), ..SetAttr::default() }, &caller).unwrap();
        let seq_before = fs.last_seq.load(Ordering::Acquire);
        fs.setattr(ino, &SetAttr { perm: Some(0o600), ..SetAttr::default() }, &caller).unwrap();
        assert!(fs.last_seq.load(Ordering::Acquire) > seq_before, "a narrowing chmod commits");
        let committed = fs.resolve_committed(b"f").unwrap();
        assert_eq!((committed.perm, committed.size), (0o600, 14), "at once, before the writes");
        assert_eq!(fs.getattr(ino).unwrap().perm, 0o600, "no held mode left to override it");
        fs.release(opened.handle, Origin::Cli).unwrap();
        let committed = fs.resolve_committed(b"f").unwrap();
        assert_eq!((committed.perm, committed.uid), (0o600, 1000));
        assert_ne!(committed.mtime_ns, 1_500_000_000_000_000_000, "written since the time was set");
    }

    /// A write by a caller without CAP_FSETID clears setuid whether the
    /// mode was committed since the last such write or is held.
    #[test]
    fn writes_clear_setid_bits_set_since_the_last_write_committed_or_held() {
        let (_dir, fs, root) = crate::fs::testing::fresh_fs(Default::default());
        let user = Caller { uid: 1000, gid: 1000, origin: Origin::Cli };
        let rw = OpenFlags { read: true, write: true, ..OpenFlags::default() };
        let opened = fs.create_file(Ino::ROOT, b"tool", 0o755, &root, rw).unwrap();
        let ino = opened.attr.ino;
        let setuid = SetAttr { perm: Some(0o4755), ..SetAttr::default() };

        fs.drop_setid_bits(ino, &user).unwrap();
        fs.setattr(ino, &setuid, &root).unwrap();
        assert_eq!(fs.resolve_committed(b"tool").unwrap().perm, 0o4755, "committed: nothing pending");
        fs.drop_setid_bits(ino, &user).unwrap();
        assert_eq!(fs.getattr(ino).unwrap().perm, 0o755, "the answer before the chmod was not kept");

        fs.write(opened.handle, 0, b"#!/bin/sh\n").unwrap();
        fs.setattr(ino, &setuid, &root).unwrap();
        assert_eq!(fs.resolve_committed(b"tool").unwrap().perm, 0o755, "held with the writes");
        fs.drop_setid_bits(ino, &user).unwrap();
        assert_eq!(fs.getattr(ino).unwrap().perm, 0o755, "the held mode lost its setuid");
        assert_eq!(fs.resolve_committed(b"tool").unwrap().perm, 0o755);
        fs.release(opened.handle, Origin::Cli).unwrap();
        assert_eq!(fs.resolve_committed(b"tool").unwrap().perm, 0o755);
    }
}
