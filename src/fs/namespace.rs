//! Names: lookup, create, link, unlink, rename, readdir, path resolution.

use std::borrow::Cow;

use super::{
    Attr, Caller, ChangeOp, DeadProps, FileKind, Fs, FsError, FsResult, Identity, Mode, Tx, Want, check_name,
};
use crate::id::Ino;
use crate::meta::{DirRow, NewInode};

/// Flags of [`Fs::rename`] (renameat2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with [`FsError::Exists`] if the target exists.
    pub no_replace: bool,
    /// Swap source and target atomically; both must exist.
    pub exchange: bool,
}

/// The largest number of symlinks or path components resolved in one path.
const MAX_PATH_DEPTH: usize = 4096;
/// Symlinks followed in one resolution, as Linux's MAXSYMLINKS.
const MAX_SYMLINK_HOPS: usize = 40;

/// How [`walk`] reads a link's target (the type of a walk that follows none).
type ReadLink = fn(Ino) -> FsResult<Vec<u8>>;

impl Fs {
    /// The entry `name` in directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> FsResult<Attr> {
        if name.len() > super::NAME_MAX {
            return Err(FsError::NameTooLong);
        }
        let found = match self.meta.read_point(|db| db.lookup_in(parent, name))? {
            Some((_, Some(found))) => found,
            Some((FileKind::Dir, None)) | None => return Err(FsError::NotFound),
            Some((_, None)) => return Err(FsError::NotDir),
        };
        self.current(found)
    }

    /// Resolve a `/`-separated path from the root, without following
    /// symlinks. `.` and empty components are skipped; `..` is refused, so
    /// a path can never climb out of the tree.
    pub fn resolve(&self, path: &[u8]) -> FsResult<Attr> {
        self.resolve_as(path, None)
    }

    /// [`Fs::resolve`] for `who` (`None`: unchecked), who needs search
    /// permission on every directory walked through.
    pub fn resolve_as(&self, path: &[u8], who: Option<&Identity>) -> FsResult<Attr> {
        walk(
            path,
            self.getattr(Ino::ROOT)?,
            searchable_by(who),
            |dir, name| self.lookup(dir, name),
            None::<ReadLink>,
        )
    }

    /// [`Fs::resolve`], following symlinks whose targets stay inside the
    /// tree, as HTTP reads a path: a link (`current -> v2`, say) is served
    /// as what it names. A target that is absolute, or climbs above the
    /// root, names nothing here: NotFound. More than 40 links: Loop.
    pub fn resolve_following(&self, path: &[u8]) -> FsResult<Attr> {
        self.resolve_following_as(path, None)
    }

    /// [`Fs::resolve_following`] for `who` (see [`Fs::resolve_as`]).
    pub fn resolve_following_as(&self, path: &[u8], who: Option<&Identity>) -> FsResult<Attr> {
        walk(
            path,
            self.getattr(Ino::ROOT)?,
            searchable_by(who),
            |dir, name| self.lookup(dir, name),
            Some(|link| self.readlink(link)),
        )
    }

    /// [`Fs::resolve_following`] as last committed, in one snapshot:
    /// pending writes of open files are not applied, so size and content
    /// id agree. What HTTP serves: committed versions only.
    pub fn resolve_committed(&self, path: &[u8]) -> FsResult<Attr> {
        self.resolve_committed_walked(path).map(|(attr, _)| attr)
    }

    /// [`Fs::resolve_committed`], with the modes of the directories the
    /// walk went through: what a permission check of the path needs
    /// ([`Identity::may_reach`]), kept beside a cached lookup.
    pub fn resolve_committed_walked(&self, path: &[u8]) -> FsResult<(Attr, Vec<Mode>)> {
        let mut walked = Vec::new();
        let attr = self.meta.read(|db| {
            walked.clear();
            let root = db.inode(Ino::ROOT)?.ok_or(FsError::NotFound)?;
            walk(
                path,
                root,
                |dir| {
                    walked.push(Mode::of(dir));
                    Ok(())
                },
                |dir, name| {
                    if name.len() > super::NAME_MAX {
                        return Err(FsError::NameTooLong);
                    }
                    db.lookup(dir, name)?.ok_or(FsError::NotFound)
                },
                Some(|link| db.symlink_target(link)?.ok_or(FsError::Invalid("symlink without target"))),
            )
        })?;
        Ok((attr, walked))
    }

    /// Resolve all but the last component of `path`: the parent directory
    /// and the final name.
    pub fn resolve_parent<'p>(&self, path: &'p [u8]) -> FsResult<(Attr, &'p [u8])> {
        self.resolve_parent_as(path, None)
    }

    /// [`Fs::resolve_parent`] for `who`, who needs search permission on
    /// the parent too (see [`Fs::resolve_as`]).
    pub fn resolve_parent_as<'p>(
        &self,
        path: &'p [u8],
        who: Option<&Identity>,
    ) -> FsResult<(Attr, &'p [u8])> {
        let trimmed = trim_slashes(path);
        let (dir, name) = match trimmed.iter().rposition(|&b| b == b'/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (&b""[..], trimmed),
        };
        check_name(name)?;
        let parent = self.resolve_as(dir, who)?;
        if parent.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        if let Some(who) = who {
            who.require(&parent, Want::SEARCH)?;
        }
        Ok((parent, name))
    }

    /// Create a directory.
    pub fn mkdir(&self, parent: Ino, name: &[u8], perm: u32, caller: &Caller) -> FsResult<Attr> {
        self.make_node(parent, name, Node::dir(perm), caller)
    }

    /// Create a regular file, device node, fifo or socket (not opened).
    pub fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        kind: FileKind,
        perm: u32,
        rdev: u32,
        caller: &Caller,
    ) -> FsResult<Attr> {
        if matches!(kind, FileKind::Dir | FileKind::Symlink) {
            return Err(FsError::Invalid("mknod of a directory or symlink"));
        }
        self.make_node(parent, name, Node { kind, perm, rdev, symlink: None }, caller)
    }

    /// Create a symbolic link to `target`.
    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], caller: &Caller) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > libc::PATH_MAX as usize {
            return Err(FsError::NameTooLong);
        }
        self.make_node(
            parent,
            name,
            Node { kind: FileKind::Symlink, perm: 0o777, rdev: 0, symlink: Some(target) },
            caller,
        )
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: Ino) -> FsResult<Vec<u8>> {
        let inode = self.getattr(ino)?;
        if inode.kind != FileKind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        self.meta.read(|db| db.symlink_target(ino))?.ok_or(FsError::Invalid("symlink without target"))
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node(&self, parent: Ino, name: &[u8], node: Node<'_>, caller: &Caller) -> FsResult<Attr> {
        check_name(name)?;
        self.transact(caller.origin, |tx| tx.make_node(parent, name, node, caller))
    }

    /// Create directory `parent/name` with the mode and dead properties
    /// of directory `source`, not its entries: one level of a WebDAV
    /// collection COPY (RFC 4918, 9.8.2: properties are copied too).
    pub fn copy_dir(&self, source: Ino, parent: Ino, name: &[u8], caller: &Caller) -> FsResult<Attr> {
        check_name(name)?;
        self.transact(caller.origin, |tx| {
            let from = tx.existing_dir(source)?;
            let made = tx.make_node(parent, name, Node::dir(from.perm & 0o777), caller)?;
            tx.db.copy_dead_props(from.ino, made.ino)?;
            Ok(made)
        })
    }

    /// Add a hard link `new_parent/new_name` to `ino`.
    pub fn link(&self, ino: Ino, new_parent: Ino, new_name: &[u8], caller: &Caller) -> FsResult<Attr> {
        check_name(new_name)?;
        let attr = self.transact(caller.origin, |tx| {
            let inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            if inode.kind == FileKind::Dir {
                return Err(FsError::NotPermitted("hard link to a directory"));
            }
            if inode.nlink == 0 {
                return Err(FsError::NotFound);
            }
            tx.existing_dir(new_parent)?;
            if tx.db.lookup(new_parent, new_name)?.is_some() {
                return Err(FsError::Exists);
            }
            tx.db.insert_dirent(new_parent, new_name, ino)?;
            tx.db.add_links(ino, 1, tx.now)?;
            tx.db.touch_dir(new_parent, tx.now)?;
            tx.log(ChangeOp::Link, ino, Some((new_parent, new_name)), None, None, vec![new_parent])?;
            tx.db.inode(ino)?.ok_or(FsError::NotFound)
        })?;
        self.current(attr)
    }

    /// Remove the non-directory entry `parent/name`. The inode lives on
    /// while it has other names or open handles.
    pub fn unlink(&self, parent: Ino, name: &[u8], caller: &Caller) -> FsResult<()> {
        self.transact(caller.origin, |tx| {
            tx.existing_dir(parent)?;
            let inode = tx.db.lookup(parent, name)?.ok_or(FsError::NotFound)?;
            if inode.kind == FileKind::Dir {
                return Err(FsError::IsDir);
            }
            tx.db.delete_dirent(parent, name)?;
            tx.db.touch_dir(parent, tx.now)?;
            self.drop_link(tx, &inode)?;
            tx.log(ChangeOp::Unlink, inode.ino, Some((parent, name)), None, None, vec![parent])
        })
    }

    /// Remove the empty directory `parent/name`.
    pub fn rmdir(&self, parent: Ino, name: &[u8], caller: &Caller) -> FsResult<()> {
        if name == b"." {
            return Err(FsError::Invalid("rmdir of '.'"));
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.transact(caller.origin, |tx| {
            tx.existing_dir(parent)?;
            let dir = tx.db.lookup(parent, name)?.ok_or(FsError::NotFound)?;
            if dir.kind != FileKind::Dir {
                return Err(FsError::NotDir);
            }
            if tx.db.has_entries(dir.ino)? {
                return Err(FsError::NotEmpty);
            }
            tx.db.delete_dirent(parent, name)?;
            tx.db.touch_dir(parent, tx.now)?;
            tx.db.add_links(parent, -1, tx.now)?;
            tx.delete_inode(&dir)?;
            tx.log(ChangeOp::Rmdir, dir.ino, Some((parent, name)), None, None, vec![parent])
        })
    }

    /// Rename `parent/name` to `new_parent/new_name`, replacing a
    /// compatible target unless `flags` say otherwise. Atomic: the target
    /// name always refers to either the old or the new inode.
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: RenameFlags,
        caller: &Caller,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(new_name)?;
        if flags.exchange && flags.no_replace {
            return Err(FsError::Invalid("RENAME_EXCHANGE with RENAME_NOREPLACE"));
        }
        self.transact(caller.origin, |tx| {
            tx.existing_dir(parent)?;
            tx.existing_dir(new_parent)?;
            let source = tx.db.lookup(parent, name)?.ok_or(FsError::NotFound)?;
            let target = tx.db.lookup(new_parent, new_name)?;
            if flags.exchange {
                let target = target.ok_or(FsError::NotFound)?;
                return self.exchange(tx, (parent, name, &source), (new_parent, new_name, &target));
            }
            if let Some(target) = &target {
                if flags.no_replace {
                    return Err(FsError::Exists);
                }
                if target.ino == source.ino {
                    // Two names of one inode: POSIX says do nothing.
                    return Ok(());
                }
                match (source.kind == FileKind::Dir, target.kind == FileKind::Dir) {
                    (true, false) => return Err(FsError::NotDir),
                    (false, true) => return Err(FsError::IsDir),
                    (true, true) if tx.db.has_entries(target.ino)? => return Err(FsError::NotEmpty),
                    _ => {}
                }
            }
            if source.kind == FileKind::Dir && parent != new_parent {
                tx.refuse_move_into_own_subtree(source.ino, new_parent)?;
            }
            let mut also = vec![parent, new_parent];
            if let Some(target) = &target {
                tx.db.delete_dirent(new_parent, new_name)?;
                if target.kind == FileKind::Dir {
                    tx.db.add_links(new_parent, -1, tx.now)?;
                    tx.delete_inode(target)?;
                } else {
                    self.drop_link(tx, target)?;
                }
                also.push(target.ino);
            }
            tx.db.move_dirent(parent, name, new_parent, new_name)?;
            if source.kind == FileKind::Dir && parent != new_parent {
                tx.db.add_links(parent, -1, tx.now)?;
                tx.db.add_links(new_parent, 1, tx.now)?;
            }
            tx.db.touch_dir(parent, tx.now)?;
            tx.db.touch_dir(new_parent, tx.now)?;
            tx.db.add_links(source.ino, 0, tx.now)?;
            tx.log(
                ChangeOp::Rename,
                source.ino,
                Some((parent, name)),
                Some((new_parent, new_name)),
                None,
                also,
            )
        })
    }

    fn exchange(&self, tx: &mut Tx<'_, '_>, a: (Ino, &[u8], &Attr), b: (Ino, &[u8], &Attr)) -> FsResult<()> {
        let ((a_parent, a_name, a_inode), (b_parent, b_name, b_inode)) = (a, b);
        if a_inode.ino == b_inode.ino {
            return Ok(());
        }
        if a_parent != b_parent {
            if a_inode.kind == FileKind::Dir {
                tx.refuse_move_into_own_subtree(a_inode.ino, b_parent)?;
            }
            if b_inode.kind == FileKind::Dir {
                tx.refuse_move_into_own_subtree(b_inode.ino, a_parent)?;
            }
            // A directory moving across parents carries its ".." link.
            let dirs = |i: &Attr| i64::from(i.kind == FileKind::Dir);
            let delta = dirs(b_inode) - dirs(a_inode);
            if delta != 0 {
                tx.db.add_links(a_parent, delta, tx.now)?;
                tx.db.add_links(b_parent, -delta, tx.now)?;
            }
        }
        tx.db.retarget_dirent(a_parent, a_name, b_inode.ino)?;
        tx.db.retarget_dirent(b_parent, b_name, a_inode.ino)?;
        for (parent, ino) in [(a_parent, a_inode.ino), (b_parent, b_inode.ino)] {
            tx.db.touch_dir(parent, tx.now)?;
            tx.db.add_links(ino, 0, tx.now)?;
        }
        tx.log(
            ChangeOp::Exchange,
            a_inode.ino,
            Some((a_parent, a_name)),
            Some((b_parent, b_name)),
            None,
            vec![b_inode.ino, a_parent, b_parent],
        )
    }

    /// One name of a non-directory is gone: lower its link count, and
    /// delete it unless a handle or a frontend still refers to it (the
    /// kernel may open or stat an inode it looked up before the name went,
    /// as a reader racing `rename(tmp, path)` does).
    fn drop_link(&self, tx: &mut Tx<'_, '_>, inode: &Attr) -> FsResult<()> {
        if inode.nlink > 1 || self.open_files.keep_if_referenced(inode.ino) {
            Ok(tx.db.add_links(inode.ino, -1, tx.now)?)
        } else {
            tx.delete_inode(inode)
        }
    }

    /// Up to `limit` entries of directory `dir` after `cursor` (0 = from
    /// the start), with attributes. Cursors stay valid across concurrent
    /// changes: an entry present throughout is listed exactly once.
    pub fn readdir(&self, dir: Ino, cursor: u64, limit: u32) -> FsResult<Vec<DirRow>> {
        let rows = self.meta.read(|db| list_page(db, dir, cursor, limit))?;
        rows.into_iter()
            .map(|mut row| {
                row.inode = self.current(row.inode)?;
                Ok(row)
            })
            .collect()
    }

    /// [`Fs::readdir`] with each entry's dead properties, all from one
    /// snapshot and two queries: a WebDAV listing needs no per-entry
    /// lookups.
    pub fn readdir_with_dead_props(
        &self,
        dir: Ino,
        cursor: u64,
        limit: u32,
    ) -> FsResult<Vec<(DirRow, DeadProps)>> {
        let (rows, props) = self.meta.read(|db| {
            let rows = list_page(db, dir, cursor, limit)?;
            let props = match rows.last() {
                Some(last) => db.dead_props_of_entries(dir, cursor, last.cursor)?,
                None => Vec::new(),
            };
            Ok::<_, FsError>((rows, props))
        })?;
        let mut by_ino: std::collections::HashMap<Ino, DeadProps> = std::collections::HashMap::new();
        for (ino, name, value) in props {
            by_ino.entry(ino).or_default().push((name, value));
        }
        rows.into_iter()
            .map(|mut row| {
                row.inode = self.current(row.inode)?;
                let props = by_ino.get(&row.inode.ino).cloned().unwrap_or_default();
                Ok((row, props))
            })
            .collect()
    }

    /// The parent of directory `dir` (the root is its own parent).
    pub fn parent_of(&self, dir: Ino) -> FsResult<Ino> {
        Ok(self.meta.read(|db| db.parent_of_dir(dir))?.map_or(Ino::ROOT, |(p, _)| p))
    }
}

/// Walk `path` from `root` with `step(dir, name)` for each component:
/// `.` and empty components are skipped, `..` is refused (a path can never
/// climb out of the tree), and only directories are stepped through.
///
/// With `follow` (which reads a link's target), symlinks are followed as
/// [`Fs::resolve_following`] describes; without, a link is a node like any
/// other, and a path through it fails with NotDir. The walk keeps the
/// chain of directories it went through, so a link's `..` climbs back
/// along it and can never leave the root.
fn walk(
    path: &[u8],
    root: Attr,
    mut through: impl FnMut(&Attr) -> FsResult<()>,
    mut step: impl FnMut(Ino, &[u8]) -> FsResult<Attr>,
    mut follow: Option<impl FnMut(Ino) -> FsResult<Vec<u8>>>,
) -> FsResult<Attr> {
    // Components still to walk, each with whether a link's target gave it.
    let mut pending: std::collections::VecDeque<(Cow<'_, [u8]>, bool)> =
        path.split(|&b| b == b'/').map(|part| (Cow::Borrowed(part), false)).collect();
    // The node reached last, and the directories above it.
    let mut chain = vec![root];
    let (mut steps, mut hops) = (0, 0);
    while let Some((part, from_link)) = pending.pop_front() {
        if steps > MAX_PATH_DEPTH {
            return Err(FsError::Loop);
        }
        steps += 1;
        match &*part {
            b"" | b"." => continue,
            b".." if !from_link => return Err(FsError::Invalid("'..' in path")),
            _ => {}
        }
        let current = chain.last().ok_or(FsError::NotFound)?;
        if current.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        if &*part == b".." {
            chain.pop();
            if chain.is_empty() {
                return Err(FsError::NotFound); // above the root
            }
            continue;
        }
        through(current)?;
        let next = step(current.ino, &part)?;
        let Some(target) = follow.as_mut().filter(|_| next.kind == FileKind::Symlink) else {
            chain.push(next);
            continue;
        };
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err(FsError::Loop);
        }
        let link = target(next.ino)?;
        if link.first().is_none_or(|&b| b == b'/') {
            return Err(FsError::NotFound); // nothing, or the host's namespace
        }
        for part in link.split(|&b| b == b'/').rev() {
            pending.push_front((Cow::Owned(part.to_vec()), true));
        }
    }
    chain.pop().ok_or(FsError::NotFound)
}

/// A walk's check of each directory it goes through: search permission
/// for `who` (`None`: none).
fn searchable_by(who: Option<&Identity>) -> impl FnMut(&Attr) -> FsResult<()> + '_ {
    move |dir| who.map_or(Ok(()), |who| who.require(dir, Want::SEARCH))
}

/// What a new inode made by `make_node` is.
#[derive(Clone, Copy)]
struct Node<'a> {
    kind: FileKind,
    perm: u32,
    rdev: u32,
    symlink: Option<&'a [u8]>,
}

impl Node<'_> {
    fn dir(perm: u32) -> Node<'static> {
        Node { kind: FileKind::Dir, perm, rdev: 0, symlink: None }
    }
}

/// A page of a listing; an empty page of something that is not a
/// directory is an error, not the end.
fn list_page(db: &crate::meta::Db<'_>, dir: Ino, cursor: u64, limit: u32) -> FsResult<Vec<DirRow>> {
    let rows = db.list_dir(dir, cursor, limit)?;
    if rows.is_empty() {
        match db.inode(dir)? {
            None => return Err(FsError::NotFound),
            Some(d) if d.kind != FileKind::Dir => return Err(FsError::NotDir),
            Some(_) => {}
        }
    }
    Ok(rows)
}

impl Tx<'_, '_> {
    /// Create regular file `parent/name`.
    pub(super) fn make_file(
        &mut self,
        parent: Ino,
        name: &[u8],
        perm: u32,
        caller: &Caller,
    ) -> FsResult<Attr> {
        self.make_node(parent, name, Node { kind: FileKind::File, perm, rdev: 0, symlink: None }, caller)
    }

    fn make_node(&mut self, parent: Ino, name: &[u8], node: Node<'_>, caller: &Caller) -> FsResult<Attr> {
        let Node { kind, perm, rdev, symlink } = node;
        let op = match kind {
            FileKind::Dir => ChangeOp::Mkdir,
            FileKind::Symlink => ChangeOp::Symlink,
            _ => ChangeOp::Create,
        };
        let dir = self.existing_dir(parent)?;
        if self.db.lookup(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        let mut perm = perm & 0o7777;
        let mut gid = caller.gid;
        if dir.perm & libc::S_ISGID != 0 {
            // BSD group semantics for setgid directories: the new inode
            // takes the directory's group, and subdirectories stay setgid.
            gid = dir.gid;
            if kind == FileKind::Dir {
                perm |= libc::S_ISGID;
            }
        }
        let new = NewInode {
            kind,
            perm,
            uid: caller.uid,
            gid,
            size: symlink.map_or(0, |t| t.len() as u64),
            now_ns: self.now,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            rdev,
            content: None,
            symlink,
        };
        let ino = self.db.insert_inode(&new)?;
        self.db.insert_dirent(parent, name, ino)?;
        self.db.touch_dir(parent, self.now)?;
        if kind == FileKind::Dir {
            self.db.add_links(parent, 1, self.now)?;
        }
        self.log(op, ino, Some((parent, name)), None, None, vec![parent])?;
        Ok(new.attr(ino))
    }

    pub(super) fn existing_dir(&self, ino: Ino) -> FsResult<Attr> {
        let inode = self.db.inode(ino)?.ok_or(FsError::NotFound)?;
        if inode.kind != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        if inode.nlink == 0 {
            // A removed directory that a process still has as its cwd.
            return Err(FsError::NotFound);
        }
        Ok(inode)
    }

    /// EINVAL if `dest` is `dir` or inside it.
    fn refuse_move_into_own_subtree(&self, dir: Ino, dest: Ino) -> FsResult<()> {
        let mut at = dest;
        loop {
            if at == dir {
                return Err(FsError::Invalid("move of a directory into itself"));
            }
            match self.db.parent_of_dir(at)? {
                Some((parent, _)) => at = parent,
                None => return Ok(()),
            }
        }
    }
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|&b| b != b'/').unwrap_or(path.len());
    let end = path.iter().rposition(|&b| b != b'/').map_or(start, |i| i + 1);
    &path[start..end.max(start)]
}
