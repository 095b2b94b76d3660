//! POSIX permission checks for requests the kernel has not checked (HTTP):
//! the rules the mount gets from the kernel's `default_permissions`, for
//! an identity (user, group, supplementary groups).

use super::{Attr, FileKind, FsError, FsResult};

/// Who a request acts as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User id: owns what the request creates.
    pub uid: u32,
    /// Primary group: the group of what the request creates (unless the
    /// parent is setgid).
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// What a request needs of a node, as `rwx` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want(u32);

impl Want {
    /// Read a file's bytes or list a directory.
    pub const READ: Want = Want(4);
    /// Change a file's bytes or a directory's entries.
    pub const WRITE: Want = Want(2);
    /// Walk through a directory.
    pub const SEARCH: Want = Want(1);
    /// Add or remove a directory's entries.
    pub const CHANGE_ENTRIES: Want = Want(2 | 1);
}

/// What permission checks read of a node: its kind, mode and owners.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    kind: FileKind,
    perm: u32,
    uid: u32,
    gid: u32,
}

impl Mode {
    /// `node`'s.
    pub fn of(node: &Attr) -> Mode {
        Mode { kind: node.kind, perm: node.perm, uid: node.uid, gid: node.gid }
    }
}

impl Identity {
    /// The superuser.
    pub fn root() -> Identity {
        Identity { uid: 0, gid: 0, groups: Vec::new() }
    }

    /// The account of last resort: `nobody`, in `nogroup` only.
    pub fn nobody() -> Identity {
        Identity { uid: NOGROUP, gid: NOGROUP, groups: Vec::new() }
    }

    /// This process's identity.
    pub fn process() -> Identity {
        let groups = nix::unistd::getgroups().unwrap_or_default().into_iter().map(|g| g.as_raw()).collect();
        Identity { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw(), groups }
    }

    /// The account with user id `uid`: its primary group and the groups it
    /// is a member of, from the system's user database. A uid without an
    /// account gets no group but `nogroup` (65534).
    pub fn of_user(uid: u32) -> Identity {
        let account = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten();
        let Some(account) = account else {
            return Identity { uid, gid: NOGROUP, groups: Vec::new() };
        };
        let gid = account.gid.as_raw();
        let groups = std::ffi::CString::new(account.name)
            .ok()
            .and_then(|name| nix::unistd::getgrouplist(&name, account.gid).ok())
            .map(|groups| groups.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Identity { uid, gid, groups }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether `node`'s mode grants `want`: the owner's bits to its owner,
    /// else the group's to a member, else the others'. Root may read and
    /// write anything, and search or run anything some `x` bit allows.
    pub fn may(&self, node: &Attr, want: Want) -> bool {
        self.may_mode(&Mode::of(node), want)
    }

    /// Whether a path is open to `want` of its end, `node`, through the
    /// directories it goes through (`walked`: search permission on each).
    pub fn may_reach(&self, walked: &[Mode], node: &Attr, want: Want) -> bool {
        walked.iter().all(|dir| self.may_mode(dir, Want::SEARCH)) && self.may(node, want)
    }

    fn may_mode(&self, node: &Mode, want: Want) -> bool {
        if self.is_root() {
            return want.0 & 1 == 0 || node.kind == FileKind::Dir || node.perm & 0o111 != 0;
        }
        let bits = if node.uid == self.uid {
            node.perm >> 6
        } else if self.in_group(node.gid) {
            node.perm >> 3
        } else {
            node.perm
        };
        bits & want.0 == want.0
    }

    /// [`Identity::may`], as an error.
    pub fn require(&self, node: &Attr, want: Want) -> FsResult<()> {
        if self.may(node, want) { Ok(()) } else { Err(FsError::AccessDenied) }
    }

    /// Whether `node` may be given explicit times (utimes(2)): by its
    /// owner, or root.
    pub fn require_owner(&self, node: &Attr) -> FsResult<()> {
        if self.is_root() || self.uid == node.uid {
            Ok(())
        } else {
            Err(FsError::NotPermitted("only a file's owner sets its times"))
        }
    }

    /// Whether `victim` may be unlinked from, or renamed out of, `dir`: a
    /// change of `dir`'s entries, and in a sticky directory only by the
    /// owner of `dir` or of `victim` (or root).
    pub fn require_removal(&self, dir: &Attr, victim: &Attr) -> FsResult<()> {
        self.require(dir, Want::CHANGE_ENTRIES)?;
        let sticky = dir.perm & 0o1000 != 0;
        if sticky && !self.is_root() && self.uid != dir.uid && self.uid != victim.uid {
            return Err(FsError::NotPermitted("sticky directory: only the owner may remove or rename this"));
        }
        Ok(())
    }
}

/// The setid bits that a change of a file's bytes or owner takes from
/// `perm` (Linux's rule): setuid always, setgid only with group execute
/// (without it, setgid marks mandatory locking).
pub(crate) fn setid_bits_to_clear(perm: u32) -> u32 {
    let setgid_exec = libc::S_ISGID | libc::S_IXGRP;
    let mut bits = perm & libc::S_ISUID;
    if perm & setgid_exec == setgid_exec {
        bits |= libc::S_ISGID;
    }
    bits
}

/// The mode of a file after `writer` changed its bytes or size: the
/// setid bits go unless the writer may keep them (CAP_FSETID; as far as a
/// request tells, root).
pub(crate) fn mode_after_write(writer_uid: u32, perm: u32) -> u32 {
    if writer_uid == 0 { perm } else { perm & !setid_bits_to_clear(perm) }
}

/// Whether nobody may do less to a file with attributes `after` than
/// with `before`, whatever groups they are in: then keeping `before`
/// visible for a while (holding the change back to commit with pending
/// writes) only delays what the change grants. Root may do anything
/// either way; a non-root owner keeps the owner's powers (chmod, utimes)
/// only while they stay the owner.
pub(crate) fn grants_no_less(before: &Attr, after: &Attr) -> bool {
    let class = |perm: u32, shift: u32| (perm >> shift) & 0o7;
    let covers = |wider: u32, narrower: u32| narrower & !wider == 0;
    let (owner_b, group_b, other_b) = (class(before.perm, 6), class(before.perm, 3), class(before.perm, 0));
    let (owner_a, group_a, other_a) = (class(after.perm, 6), class(after.perm, 3), class(after.perm, 0));
    let setid_kept = covers(after.perm & 0o7000, before.perm & 0o7000);
    let owner_ok = if before.uid == after.uid {
        before.uid == 0 || covers(owner_a, owner_b)
    } else {
        // A new owner took the file from root: they had at most the
        // group's or the others' rights.
        before.uid == 0 && (after.uid == 0 || covers(owner_a, group_b | other_b))
    };
    let rest_ok = if before.gid == after.gid {
        covers(group_a, group_b) && covers(other_a, other_b)
    } else {
        // Members of either group may now be others, or the reverse.
        covers(group_a & other_a, group_b | other_b)
    };
    setid_kept && owner_ok && rest_ok
}

/// The `nobody` user and `nogroup` group of Debian and most
/// distributions.
const NOGROUP: u32 = 65534;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Ino;

    fn node(kind: FileKind, perm: u32, uid: u32, gid: u32) -> Attr {
        Attr {
            ino: Ino(7),
            kind,
            perm,
            uid,
            gid,
            size: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            btime_ns: 0,
            nlink: 1,
            rdev: 0,
            generation: 1,
            data_seq: 0,
            content: None,
        }
    }

    #[test]
    fn the_owner_class_decides_alone_as_in_posix() {
        let ann = Identity { uid: 1000, gid: 1000, groups: vec![50] };
        let file = |perm, uid, gid| node(FileKind::File, perm, uid, gid);
        assert!(ann.may(&file(0o600, 1000, 0), Want::READ));
        assert!(!ann.may(&file(0o600, 0, 0), Want::READ), "root's private file");
        assert!(!ann.may(&file(0o077, 1000, 1000), Want::READ), "the owner's bits decide for the owner");
        assert!(ann.may(&file(0o640, 0, 50), Want::READ), "a supplementary group");
        assert!(!ann.may(&file(0o640, 0, 50), Want::WRITE));
        assert!(ann.may(&file(0o604, 0, 0), Want::READ), "others");
        assert!(!ann.may(&file(0o604, 0, 50), Want::READ), "a member gets the group's bits, not the others'");
        let root = Identity::root();
        assert!(root.may(&file(0o000, 1000, 1000), Want::READ) && root.may(&file(0o000, 1, 1), Want::WRITE));
        assert!(!root.may(&file(0o644, 1, 1), Want::SEARCH), "no x bit at all");
        assert!(root.may(&node(FileKind::Dir, 0o000, 1, 1), Want::SEARCH));
    }

    #[test]
    fn a_sticky_directory_lets_only_owners_remove() {
        let ann = Identity { uid: 1000, gid: 1000, groups: vec![] };
        let tmp = node(FileKind::Dir, 0o1777, 0, 0);
        assert!(ann.require_removal(&tmp, &node(FileKind::File, 0o644, 1000, 1000)).is_ok());
        assert!(matches!(
            ann.require_removal(&tmp, &node(FileKind::File, 0o666, 1001, 1001)),
            Err(FsError::NotPermitted(_))
        ));
        let shared = node(FileKind::Dir, 0o777, 0, 0);
        assert!(ann.require_removal(&shared, &node(FileKind::File, 0o600, 1001, 1001)).is_ok());
        let closed = node(FileKind::Dir, 0o755, 0, 0);
        assert!(matches!(
            ann.require_removal(&closed, &node(FileKind::File, 0o600, 1000, 1000)),
            Err(FsError::AccessDenied)
        ));
    }

    #[test]
    fn only_changes_that_take_nothing_from_anyone_grant_no_less() {
        let file = |perm, uid, gid| node(FileKind::File, perm, uid, gid);
        // tar -x as root: created 0600, then chown to the archive's owner
        // and chmod to its mode.
        assert!(grants_no_less(&file(0o600, 0, 0), &file(0o600, 1000, 100)));
        assert!(grants_no_less(&file(0o600, 1000, 100), &file(0o644, 1000, 100)));
        assert!(grants_no_less(&file(0o600, 0, 0), &file(0o755, 1000, 100)));
        // cp -a as a user: the same owner, the same mode or a wider one.
        assert!(grants_no_less(&file(0o644, 1000, 100), &file(0o644, 1000, 100)));
        assert!(grants_no_less(&file(0o644, 1000, 100), &file(0o664, 1000, 100)));
        assert!(!grants_no_less(&file(0o644, 1000, 100), &file(0o600, 1000, 100)), "others lose read");
        assert!(!grants_no_less(&file(0o640, 1000, 100), &file(0o604, 1000, 100)), "the group loses read");
        assert!(!grants_no_less(&file(0o600, 1000, 100), &file(0o400, 1000, 100)), "the owner loses write");
        assert!(
            !grants_no_less(&file(0o644, 1000, 100), &file(0o644, 1001, 100)),
            "the owner loses the file"
        );
        assert!(
            !grants_no_less(&file(0o604, 0, 0), &file(0o600, 1000, 0)),
            "others lose read to the new owner"
        );
        assert!(
            !grants_no_less(&file(0o640, 1000, 100), &file(0o640, 1000, 200)),
            "members of 100 lose read"
        );
        assert!(grants_no_less(&file(0o600, 1000, 100), &file(0o644, 1000, 200)), "a new group, others gain");
        assert!(!grants_no_less(&file(0o4755, 0, 0), &file(0o0755, 0, 0)), "setuid taken away");
        assert!(grants_no_less(&file(0o0755, 0, 0), &file(0o4755, 0, 0)), "setuid added");
        assert!(!grants_no_less(&file(0o060, 0, 0), &file(0o006, 1000, 0)), "the new owner was in the group");
    }

    #[test]
    fn writes_by_others_than_root_drop_setuid_and_group_executable_setgid() {
        assert_eq!(mode_after_write(1000, 0o6755), 0o0755);
        assert_eq!(mode_after_write(1000, 0o2745), 0o2745, "setgid without group x marks mandatory locking");
        assert_eq!(mode_after_write(0, 0o6755), 0o6755);
    }
}
