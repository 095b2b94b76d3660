//! Attribute changes: setattr (mode, owner, size, times) and xattrs.

use super::access::{mode_after_write, setid_bits_to_clear};
use super::{Attr, Caller, ChangeOp, FileKind, Fs, FsError, FsResult, Origin};
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
        let attrs_change = SetAttr { size: None, ..*change };
        if attrs_change != SetAttr::default() || change.size.is_some() {
            self.transact(caller.origin, |tx| {
                let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
                let now = tx.now;
                let owner_changed = change.uid.is_some() || change.gid.is_some();
                // Directories keep theirs (setgid there means inheritance).
                if inode.kind != FileKind::Dir && (owner_changed || change.size.is_some()) {
                    // chown takes the setid bits from anyone; a truncate
                    // from all but root. An explicit mode below wins.
                    inode.perm = if owner_changed {
                        inode.perm & !setid_bits_to_clear(inode.perm)
                    } else {
                        mode_after_write(caller.uid, inode.perm)
                    };
                    tx.db.remove_xattr(ino, CAPABILITY_XATTR)?;
                }
                if let Some(perm) = change.perm {
                    inode.perm = perm & 0o7777;
                }
                if let Some(uid) = change.uid {
                    inode.uid = uid;
                }
                if let Some(gid) = change.gid {
                    inode.gid = gid;
                }
                let resolve = |t: TimeSet| match t {
                    TimeSet::Now => now,
                    TimeSet::At(ns) => ns,
                };
                if let Some(t) = change.atime {
                    inode.atime_ns = resolve(t);
                }
                if let Some(t) = change.mtime {
                    inode.mtime_ns = resolve(t);
                    // Writes still pending commit with this time, not
                    // theirs: cp -p and tar set it before they close.
                    self.set_pending_mtime(ino, inode.mtime_ns);
                } else if change.size.is_some() {
                    inode.mtime_ns = now;
                }
                inode.ctime_ns = change.ctime.unwrap_or(now);
                if let Some(btime) = change.btime {
                    inode.btime_ns = btime;
                }
                tx.db.update_inode(&inode)?;
                tx.log(ChangeOp::SetAttr, ino, None, None, None, vec![])
            })?;
        }
        self.getattr(ino)
    }

    /// What a truncating open by `caller` does to the setid bits: what a
    /// truncate does ([`Fs::drop_setid_bits`] unless `caller` is root).
    pub fn drop_setid_bits_for(&self, ino: Ino, caller: &Caller) -> FsResult<()> {
        if mode_after_write(caller.uid, libc::S_ISUID) == 0 {
            self.drop_setid_bits(ino, caller.origin)
        } else {
            Ok(())
        }
    }

    /// Clear setuid, and setgid on group-executable files, as a write by
    /// an unprivileged caller must (Linux's rule). Called on such writes,
    /// so the common case (no bits set) is one indexed read.
    pub fn drop_setid_bits(&self, ino: Ino, origin: Origin) -> FsResult<()> {
        let inode = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        if setid_bits_to_clear(inode.perm) == 0 {
            return Ok(());
        }
        self.transact(origin, |tx| {
            let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            inode.perm &= !setid_bits_to_clear(inode.perm);
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
    /// One query in the common case: the kernel asks for
    /// `security.capability` before writes, and it is rarely set.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> FsResult<Vec<u8>> {
        if name == ETAG_XATTR {
            return match self.current_content_id(ino) {
                Ok(id) => Ok(id.etag().into_bytes()),
                Err(FsError::IsDir) => Err(FsError::NoAttr),
                Err(e) => Err(e),
            };
        }
        self.meta.read(|db| {
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
