//! Names: create, link, unlink, rmdir, rename in every form, readdir.

use std::collections::BTreeSet;

use tsmfs::fs::{FileKind, FsError, RenameFlags};
use tsmfs::id::Ino;

use crate::util::{TestFs, caller};

fn names(t: &TestFs, dir: Ino) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let rows = t.fs.readdir(dir, cursor, 3).unwrap();
        let Some(last) = rows.last() else { break };
        cursor = last.cursor;
        out.extend(rows.iter().map(|r| String::from_utf8(r.name.clone()).unwrap()));
    }
    out
}

#[test]
fn mkdir_counts_links_and_sets_times() {
    let t = TestFs::new();
    let root_before = t.fs.getattr(Ino::ROOT).unwrap();
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o750, &caller()).unwrap();
    assert_eq!((d.kind, d.perm, d.nlink, d.uid, d.gid), (FileKind::Dir, 0o750, 2, 1000, 1000));
    let root = t.fs.getattr(Ino::ROOT).unwrap();
    assert_eq!(root.nlink, 3);
    assert!(root.mtime_ns >= d.mtime_ns && root.mtime_ns > root_before.mtime_ns);
    t.fs.mkdir(d.ino, b"sub", 0o755, &caller()).unwrap();
    assert_eq!(t.fs.getattr(d.ino).unwrap().nlink, 3);
    assert!(matches!(t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()), Err(FsError::Exists)));
}

#[test]
fn names_are_checked() {
    let t = TestFs::new();
    let long = vec![b'x'; 256];
    assert!(matches!(t.fs.mkdir(Ino::ROOT, &long, 0o755, &caller()), Err(FsError::NameTooLong)));
    assert!(matches!(t.fs.lookup(Ino::ROOT, &long), Err(FsError::NameTooLong)));
    t.fs.mkdir(Ino::ROOT, &long[..255], 0o755, &caller()).unwrap();
    for bad in [&b""[..], b".", b"..", b"a/b", b"nul\0"] {
        assert!(matches!(t.fs.mkdir(Ino::ROOT, bad, 0o755, &caller()), Err(FsError::Invalid(_))), "{bad:?}");
    }
    // Names are bytes, not necessarily UTF-8.
    let latin1 = b"caf\xe9";
    t.fs.mkdir(Ino::ROOT, latin1, 0o755, &caller()).unwrap();
    assert_eq!(t.fs.lookup(Ino::ROOT, latin1).unwrap().kind, FileKind::Dir);
}

#[test]
fn setgid_directories_pass_their_group_on() {
    let t = TestFs::new();
    let d = t.fs.mkdir(Ino::ROOT, b"shared", 0o2775, &caller()).unwrap();
    t.fs.setattr(d.ino, &tsmfs::fs::SetAttr { gid: Some(42), ..Default::default() }, &caller()).unwrap();
    let f = t.fs.mknod(d.ino, b"f", FileKind::File, 0o644, 0, &caller()).unwrap();
    assert_eq!(f.gid, 42);
    let sub = t.fs.mkdir(d.ino, b"sub", 0o755, &caller()).unwrap();
    assert_eq!((sub.gid, sub.perm & 0o2000), (42, 0o2000));
}

#[test]
fn symlinks_and_special_files_hold_metadata() {
    let t = TestFs::new();
    let l = t.fs.symlink(Ino::ROOT, b"link", b"../some/where", &caller()).unwrap();
    assert_eq!((l.kind, l.size), (FileKind::Symlink, 13));
    assert_eq!(t.fs.readlink(l.ino).unwrap(), b"../some/where");
    let fifo = t.fs.mknod(Ino::ROOT, b"fifo", FileKind::Fifo, 0o600, 0, &caller()).unwrap();
    assert_eq!(fifo.kind, FileKind::Fifo);
    let dev = t.fs.mknod(Ino::ROOT, b"null", FileKind::CharDevice, 0o666, 0x103, &caller()).unwrap();
    assert_eq!(dev.rdev, 0x103);
    assert!(t.fs.readlink(dev.ino).is_err());
    assert!(matches!(t.fs.symlink(Ino::ROOT, b"empty", b"", &caller()), Err(FsError::NotFound)));
}

#[test]
fn hard_links_share_the_inode() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "a", b"linked");
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()).unwrap();
    let l = t.fs.link(f.ino, d.ino, b"b", &caller()).unwrap();
    assert_eq!((l.ino, l.nlink), (f.ino, 2));
    t.fs.unlink(Ino::ROOT, b"a", &caller()).unwrap();
    let b = t.fs.lookup(d.ino, b"b").unwrap();
    assert_eq!(b.nlink, 1);
    assert_eq!(t.read_all(b.ino), b"linked");
    assert!(matches!(t.fs.link(d.ino, Ino::ROOT, b"dirlink", &caller()), Err(FsError::NotPermitted(_))));
    assert!(matches!(t.fs.link(f.ino, d.ino, b"b", &caller()), Err(FsError::Exists)));
}

#[test]
fn unlink_and_rmdir_refuse_the_wrong_kind() {
    let t = TestFs::new();
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()).unwrap();
    t.put(d.ino, "f", b"x");
    assert!(matches!(t.fs.unlink(Ino::ROOT, b"d", &caller()), Err(FsError::IsDir)));
    assert!(matches!(t.fs.rmdir(Ino::ROOT, b"d", &caller()), Err(FsError::NotEmpty)));
    assert!(matches!(t.fs.rmdir(d.ino, b"f", &caller()), Err(FsError::NotDir)));
    assert!(matches!(t.fs.unlink(d.ino, b"nope", &caller()), Err(FsError::NotFound)));
    t.fs.unlink(d.ino, b"f", &caller()).unwrap();
    t.fs.rmdir(Ino::ROOT, b"d", &caller()).unwrap();
    assert_eq!(t.fs.getattr(Ino::ROOT).unwrap().nlink, 2);
    assert!(matches!(t.fs.getattr(d.ino), Err(FsError::NotFound)));
}

#[test]
fn rename_moves_and_replaces() {
    let t = TestFs::new();
    let a = t.fs.mkdir(Ino::ROOT, b"a", 0o755, &caller()).unwrap();
    let b = t.fs.mkdir(Ino::ROOT, b"b", 0o755, &caller()).unwrap();
    let f = t.put(a.ino, "f", b"one");
    t.put(b.ino, "g", b"two");
    t.fs.rename(a.ino, b"f", b.ino, b"g", RenameFlags::default(), &caller()).unwrap();
    let g = t.fs.lookup(b.ino, b"g").unwrap();
    assert_eq!(g.ino, f.ino);
    assert_eq!(t.read_all(g.ino), b"one");
    assert!(matches!(t.fs.lookup(a.ino, b"f"), Err(FsError::NotFound)));
    assert_eq!(t.stored_chunks(), 1, "the replaced file's content is released");

    // Directories: link counts follow, empty targets are replaced.
    let sub = t.fs.mkdir(a.ino, b"sub", 0o755, &caller()).unwrap();
    t.fs.mkdir(b.ino, b"empty", 0o755, &caller()).unwrap();
    t.fs.rename(a.ino, b"sub", b.ino, b"empty", RenameFlags::default(), &caller()).unwrap();
    assert_eq!(t.fs.lookup(b.ino, b"empty").unwrap().ino, sub.ino);
    assert_eq!(t.fs.getattr(a.ino).unwrap().nlink, 2);
    assert_eq!(t.fs.getattr(b.ino).unwrap().nlink, 3);
    assert_eq!(t.fs.parent_of(sub.ino).unwrap(), b.ino);
}

#[test]
fn rename_refuses_what_posix_refuses() {
    let t = TestFs::new();
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()).unwrap();
    let inner = t.fs.mkdir(d.ino, b"inner", 0o755, &caller()).unwrap();
    let full = t.fs.mkdir(Ino::ROOT, b"full", 0o755, &caller()).unwrap();
    t.put(full.ino, "x", b"x");
    t.put(Ino::ROOT, "file", b"f");
    let none = RenameFlags::default();
    let c = caller();
    assert!(matches!(t.fs.rename(Ino::ROOT, b"d", inner.ino, b"d2", none, &c), Err(FsError::Invalid(_))));
    assert!(matches!(t.fs.rename(Ino::ROOT, b"d", d.ino, b"self", none, &c), Err(FsError::Invalid(_))));
    assert!(matches!(t.fs.rename(Ino::ROOT, b"d", Ino::ROOT, b"full", none, &c), Err(FsError::NotEmpty)));
    assert!(matches!(t.fs.rename(Ino::ROOT, b"d", Ino::ROOT, b"file", none, &c), Err(FsError::NotDir)));
    assert!(matches!(t.fs.rename(Ino::ROOT, b"file", Ino::ROOT, b"d", none, &c), Err(FsError::IsDir)));
    assert!(matches!(t.fs.rename(Ino::ROOT, b"nope", Ino::ROOT, b"x", none, &c), Err(FsError::NotFound)));
    let no_replace = RenameFlags { no_replace: true, ..none };
    assert!(matches!(
        t.fs.rename(Ino::ROOT, b"file", Ino::ROOT, b"full", no_replace, &c),
        Err(FsError::Exists)
    ));
    t.fs.rename(Ino::ROOT, b"file", Ino::ROOT, b"fresh", no_replace, &c).unwrap();
    // Renaming a name onto another name of the same inode does nothing.
    let fresh = t.fs.lookup(Ino::ROOT, b"fresh").unwrap();
    t.fs.link(fresh.ino, Ino::ROOT, b"alias", &c).unwrap();
    t.fs.rename(Ino::ROOT, b"fresh", Ino::ROOT, b"alias", none, &c).unwrap();
    assert_eq!(t.fs.lookup(Ino::ROOT, b"fresh").unwrap().nlink, 2);
    assert_eq!(t.fs.lookup(Ino::ROOT, b"alias").unwrap().ino, fresh.ino);
}

#[test]
fn rename_exchange_swaps_atomically() {
    let t = TestFs::new();
    let a = t.fs.mkdir(Ino::ROOT, b"a", 0o755, &caller()).unwrap();
    let b = t.fs.mkdir(Ino::ROOT, b"b", 0o755, &caller()).unwrap();
    let f = t.put(a.ino, "x", b"file");
    let d = t.fs.mkdir(b.ino, b"y", 0o755, &caller()).unwrap();
    let exchange = RenameFlags { exchange: true, ..Default::default() };
    t.fs.rename(a.ino, b"x", b.ino, b"y", exchange, &caller()).unwrap();
    assert_eq!(t.fs.lookup(a.ino, b"x").unwrap().ino, d.ino);
    assert_eq!(t.fs.lookup(b.ino, b"y").unwrap().ino, f.ino);
    assert_eq!(t.fs.getattr(a.ino).unwrap().nlink, 3, "a gained the directory");
    assert_eq!(t.fs.getattr(b.ino).unwrap().nlink, 2, "b lost it");
    assert_eq!(t.fs.parent_of(d.ino).unwrap(), a.ino);
    assert!(matches!(
        t.fs.rename(a.ino, b"x", b.ino, b"missing", exchange, &caller()),
        Err(FsError::NotFound)
    ));
    // A directory cannot be swapped into its own subtree.
    let inner = t.fs.mkdir(d.ino, b"inner", 0o755, &caller()).unwrap();
    t.put(inner.ino, "z", b"z");
    assert!(matches!(
        t.fs.rename(a.ino, b"x", inner.ino, b"z", exchange, &caller()),
        Err(FsError::Invalid(_))
    ));
}

#[test]
fn readdir_cursors_survive_concurrent_changes() {
    let t = TestFs::new();
    for i in 0..20 {
        t.put(Ino::ROOT, &format!("f{i:02}"), b"x");
    }
    let first = t.fs.readdir(Ino::ROOT, 0, 5).unwrap();
    let cursor = first.last().unwrap().cursor;
    // Between two calls: remove listed and unlisted entries, add new ones,
    // and rename one entry in place.
    t.fs.unlink(Ino::ROOT, b"f01", &caller()).unwrap();
    t.fs.unlink(Ino::ROOT, b"f10", &caller()).unwrap();
    t.put(Ino::ROOT, "new", b"y");
    t.fs.rename(Ino::ROOT, b"f15", Ino::ROOT, b"renamed", RenameFlags::default(), &caller()).unwrap();
    let mut seen: Vec<String> = first.iter().map(|r| String::from_utf8(r.name.clone()).unwrap()).collect();
    let mut cursor = cursor;
    loop {
        let rows = t.fs.readdir(Ino::ROOT, cursor, 4).unwrap();
        let Some(last) = rows.last() else { break };
        cursor = last.cursor;
        seen.extend(rows.iter().map(|r| String::from_utf8(r.name.clone()).unwrap()));
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no entry listed twice: {seen:?}");
    for i in (0..20).filter(|i| ![1, 10, 15].contains(i)) {
        assert!(unique.contains(&format!("f{i:02}")), "survivor f{i:02} listed");
    }
    assert!(!unique.contains("f10"));
    assert!(unique.contains("new"));
    assert!(unique.contains("renamed"), "an in-place rename keeps its place");
    assert_eq!(names(&t, Ino::ROOT).len(), 19);
}

#[test]
fn resolve_walks_paths_without_climbing_out() {
    let t = TestFs::new();
    let a = t.fs.mkdir(Ino::ROOT, b"a", 0o755, &caller()).unwrap();
    let f = t.put(a.ino, "f", b"x");
    assert_eq!(t.fs.resolve(b"/a/f").unwrap().ino, f.ino);
    assert_eq!(t.fs.resolve(b"a//./f/").unwrap().ino, f.ino);
    assert_eq!(t.fs.resolve(b"/").unwrap().ino, Ino::ROOT);
    assert!(matches!(t.fs.resolve(b"/a/../a/f"), Err(FsError::Invalid(_))));
    assert!(matches!(t.fs.resolve(b"/a/f/g"), Err(FsError::NotDir)));
    let (parent, name) = t.fs.resolve_parent(b"/a/new/").unwrap();
    assert_eq!((parent.ino, name), (a.ino, &b"new"[..]));
    assert!(t.fs.resolve_parent(b"/").is_err());
}

#[test]
fn readdir_of_a_file_or_missing_dir_fails() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"x");
    assert!(matches!(t.fs.readdir(f.ino, 0, 10), Err(FsError::NotDir)));
    assert!(matches!(t.fs.readdir(Ino(999), 0, 10), Err(FsError::NotFound)));
    assert!(matches!(t.fs.lookup(f.ino, b"x"), Err(FsError::NotDir)));
}

#[test]
fn copy_file_shares_content_and_counts_its_references() {
    let t = TestFs::new();
    let src = t.put(Ino::ROOT, "src", b"shared bytes");
    t.fs.patch_dead_props(src.ino, &[("DAV:x".into(), Some(b"v".to_vec()))], &caller()).unwrap();
    t.put(Ino::ROOT, "old", b"replaced by the copy");
    assert_eq!(t.stored_chunks(), 2);

    let new = t.fs.copy_file(src.ino, Ino::ROOT, b"new", &caller()).unwrap();
    let over = t.fs.copy_file(src.ino, Ino::ROOT, b"old", &caller()).unwrap();
    assert_ne!(new.ino, src.ino);
    assert_eq!(new.content, src.content);
    assert_eq!(over.content, src.content);
    assert_eq!((new.size, new.nlink, new.perm & 0o777), (12, 1, 0o644));
    assert_eq!(t.fs.dead_props(new.ino).unwrap(), vec![("DAV:x".to_string(), b"v".to_vec())]);
    assert_eq!(t.stored_chunks(), 1, "the overwritten file's content is released, no bytes copied");
    // A copy onto itself changes nothing.
    assert_eq!(t.fs.copy_file(src.ino, Ino::ROOT, b"src", &caller()).unwrap().ino, src.ino);

    // Three names hold the one object; it goes only with the last of them.
    t.fs.unlink(Ino::ROOT, b"src", &caller()).unwrap();
    t.fs.unlink(Ino::ROOT, b"old", &caller()).unwrap();
    assert_eq!(t.read_all(new.ino), b"shared bytes");
    assert_eq!(t.stored_chunks(), 1);
    t.fs.unlink(Ino::ROOT, b"new", &caller()).unwrap();
    assert_eq!(t.stored_chunks(), 0);
    assert!(matches!(t.fs.copy_file(Ino(999), Ino::ROOT, b"x", &caller()), Err(FsError::NotFound)));
}

/// Paths resolve with or without following symlinks: followed, a relative
/// link names what it names inside the tree (its `..` climbs back along
/// the directories walked, never above the root); absolute, empty,
/// dangling and above-root targets name nothing; 41 links are a loop.
/// Not followed, a link is a node, and a path through it is NotDir.
#[test]
fn paths_resolve_following_links_only_inside_the_tree() {
    let t = TestFs::new();
    let v2 = t.fs.mkdir(Ino::ROOT, b"v2", 0o755, &caller()).unwrap();
    let app = t.put(v2.ino, "app.js", b"app");
    let top = t.put(Ino::ROOT, "top.txt", b"top");
    for (dir, name, target) in [
        (Ino::ROOT, "current", "v2"),
        (v2.ino, "up.txt", "../top.txt"),
        (v2.ino, "above", "../../top.txt"),
        (Ino::ROOT, "absolute", "/top.txt"),
        (Ino::ROOT, "dangling", "nowhere"),
    ] {
        t.fs.symlink(dir, name.as_bytes(), target.as_bytes(), &caller()).unwrap();
    }
    for i in 0..41 {
        t.fs.symlink(Ino::ROOT, format!("hop{i}").as_bytes(), format!("hop{}", i + 1).as_bytes(), &caller())
            .unwrap();
    }
    let found = |path: &str| t.fs.resolve_following(path.as_bytes()).map(|a| a.ino);
    assert_eq!(found("/current/app.js").unwrap(), app.ino);
    assert_eq!(found("current/./app.js").unwrap(), app.ino);
    assert_eq!(found("/current/up.txt").unwrap(), top.ino);
    assert_eq!(t.fs.resolve_committed(b"/current/up.txt").unwrap().ino, top.ino);
    for path in ["/current/above", "/absolute", "/dangling", "/current/missing"] {
        assert!(matches!(found(path), Err(FsError::NotFound)), "{path}");
    }
    assert!(matches!(found("/hop0"), Err(FsError::Loop)));
    assert!(matches!(found("/top.txt/x"), Err(FsError::NotDir)));
    assert!(matches!(found("/current/../top.txt"), Err(FsError::Invalid(_))), "'..' of a request path");

    assert_eq!(t.fs.resolve(b"/current").unwrap().kind, FileKind::Symlink);
    assert!(matches!(t.fs.resolve(b"/current/app.js"), Err(FsError::NotDir)));
    assert!(matches!(t.fs.resolve(b"/v2/../top.txt"), Err(FsError::Invalid(_))));
}
