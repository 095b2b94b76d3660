//! Attributes, xattrs, the change log and change events.

use std::sync::{Arc, Mutex};

use tsmfs::fs::{ChangeOp, ETAG_XATTR, FsError, Origin, RenameFlags, SetAttr, TimeSet, XattrMode};
use tsmfs::id::Ino;

use crate::util::{TestFs, caller, rw};

#[test]
fn setattr_changes_mode_owner_and_times() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"x");
    let change = SetAttr {
        perm: Some(0o4755),
        uid: Some(7),
        gid: Some(8),
        atime: Some(TimeSet::At(1_000_000_123)),
        mtime: Some(TimeSet::At(-5_000_000_000)),
        ..Default::default()
    };
    let a = t.fs.setattr(f.ino, &change, &caller()).unwrap();
    assert_eq!((a.perm, a.uid, a.gid), (0o4755, 7, 8));
    assert_eq!((a.atime_ns, a.mtime_ns), (1_000_000_123, -5_000_000_000));
    assert!(a.ctime_ns > f.ctime_ns);
    // 64-bit times beyond 2038 and UTIME_NOW.
    let far = 4_102_444_800 * 1_000_000_000i64; // 2100-01-01
    let a =
        t.fs.setattr(
            f.ino,
            &SetAttr { mtime: Some(TimeSet::At(far)), atime: Some(TimeSet::Now), ..Default::default() },
            &caller(),
        )
        .unwrap();
    assert_eq!(a.mtime_ns, far);
    assert_eq!(a.atime_ns, a.ctime_ns);
    let t = t.reopen();
    assert_eq!(t.fs.getattr(f.ino).unwrap().mtime_ns, far);
}

#[test]
fn xattrs_round_trip_and_respect_create_and_replace() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"x");
    let c = caller();
    t.fs.setxattr(f.ino, b"user.color", b"blue", XattrMode::Upsert, &c).unwrap();
    t.fs.setxattr(f.ino, b"trusted.t", b"", XattrMode::Create, &c).unwrap();
    t.fs.setxattr(f.ino, b"security.selinux", b"ctx\0", XattrMode::Upsert, &c).unwrap();
    assert!(matches!(
        t.fs.setxattr(f.ino, b"user.color", b"red", XattrMode::Create, &c),
        Err(FsError::Exists)
    ));
    assert!(matches!(t.fs.setxattr(f.ino, b"user.none", b"v", XattrMode::Replace, &c), Err(FsError::NoAttr)));
    t.fs.setxattr(f.ino, b"user.color", b"red", XattrMode::Replace, &c).unwrap();
    assert_eq!(t.fs.getxattr(f.ino, b"user.color").unwrap(), b"red");
    assert_eq!(t.fs.getxattr(f.ino, b"trusted.t").unwrap(), b"");
    let names = t.fs.listxattr(f.ino).unwrap();
    assert_eq!(
        names,
        vec![
            ETAG_XATTR.to_vec(),
            b"security.selinux".to_vec(),
            b"trusted.t".to_vec(),
            b"user.color".to_vec()
        ]
    );
    t.fs.removexattr(f.ino, b"user.color", &c).unwrap();
    assert!(matches!(t.fs.getxattr(f.ino, b"user.color"), Err(FsError::NoAttr)));
    assert!(matches!(t.fs.removexattr(f.ino, b"user.color", &c), Err(FsError::NoAttr)));
    assert!(matches!(
        t.fs.setxattr(f.ino, b"system.posix_acl_access", b"", XattrMode::Upsert, &c),
        Err(FsError::Unsupported(_))
    ));
    assert!(matches!(
        t.fs.setxattr(f.ino, b"user.big", &vec![0; 65537], XattrMode::Upsert, &c),
        Err(FsError::TooBig)
    ));
    // xattrs go with their inode.
    t.fs.unlink(Ino::ROOT, b"f", &c).unwrap();
    assert!(matches!(t.fs.listxattr(f.ino), Err(FsError::NotFound)));
}

#[test]
fn the_etag_xattr_is_the_content_id_and_read_only() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"hello\n");
    let etag = t.fs.getxattr(f.ino, ETAG_XATTR).unwrap();
    assert_eq!(etag, b"\"f572d396fae9206628714fb2ce00f72e94f2258f\"");
    assert!(matches!(
        t.fs.setxattr(f.ino, ETAG_XATTR, b"x", XattrMode::Upsert, &caller()),
        Err(FsError::NotPermitted(_))
    ));
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()).unwrap();
    assert!(matches!(t.fs.getxattr(d.ino, ETAG_XATTR), Err(FsError::NoAttr)));
}

#[test]
fn every_commit_emits_one_event_in_log_order() {
    let t = TestFs::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    t.fs.subscribe(move |change| sink.lock().unwrap().push(change.clone()));
    let c = caller();
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &c).unwrap();
    let f = t.put(d.ino, "f", b"one");
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(h, 0, b"two").unwrap();
    t.fs.release(h, Origin::Fuse).unwrap();
    t.fs.rename(d.ino, b"f", Ino::ROOT, b"g", RenameFlags::default(), &c).unwrap();
    t.fs.setattr(f.ino, &SetAttr { perm: Some(0o600), ..Default::default() }, &c).unwrap();
    t.fs.unlink(Ino::ROOT, b"g", &c).unwrap();
    t.fs.rmdir(Ino::ROOT, b"d", &c).unwrap();
    let _ = t.fs.rmdir(Ino::ROOT, b"d", &c); // fails: no event
    let seen = seen.lock().unwrap();
    let ops: Vec<ChangeOp> = seen.iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [
            ChangeOp::Mkdir,
            ChangeOp::Create,
            ChangeOp::Write,
            ChangeOp::Rename,
            ChangeOp::SetAttr,
            ChangeOp::Unlink,
            ChangeOp::Rmdir
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    let write = &seen[2];
    assert_eq!((write.origin, write.ino), (Origin::Fuse, f.ino));
    assert_eq!(write.content.unwrap().etag(), crate::util::sha1_id(b"two").etag());
    let rename = &seen[3];
    assert_eq!(rename.entries, vec![(d.ino, b"f".to_vec()), (Ino::ROOT, b"g".to_vec())]);
    assert_eq!(t.fs.totals().unwrap().changes, 7);
}

#[test]
fn statfs_reports_space_and_inodes() {
    let t = TestFs::new();
    t.put(Ino::ROOT, "f", b"x");
    let s = t.fs.statfs().unwrap();
    assert!(s.blocks > 0 && s.block_size > 0);
    assert_eq!(s.files, 2);
    assert_eq!(s.name_max, 255);
}
