//! Open files: staging, commit on close, snapshots, open-unlinked files.

use tsmfs::fs::{FsError, FsOptions, OpenFlags, Origin, PutOptions, SetAttr};
use tsmfs::id::Ino;

use crate::util::{TestFs, caller, object_sized, rw, sha1_id};

const O: Origin = Origin::Cli;

fn read_handle(t: &TestFs, h: tsmfs::id::Handle) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let chunk = t.fs.read(h, out.len() as u64, 7).unwrap();
        if chunk.is_empty() {
            return out;
        }
        out.extend(chunk);
    }
}

#[test]
fn writes_commit_on_flush_and_hash_to_the_sha1() {
    let t = TestFs::new();
    let f = t.fs.mknod(Ino::ROOT, b"f", tsmfs::fs::FileKind::File, 0o644, 0, &caller()).unwrap();
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    let mut expected = Vec::new();
    for i in 0..100u32 {
        let chunk = format!("line {i}\n").into_bytes();
        assert_eq!(t.fs.write(h, expected.len() as u64, &chunk).unwrap() as usize, chunk.len());
        expected.extend(chunk);
    }
    // Pending: size shows, content id does not change yet.
    let pending = t.fs.getattr(f.ino).unwrap();
    assert_eq!(pending.size, expected.len() as u64);
    assert_eq!(pending.content, None);
    assert_eq!(read_handle(&t, h), expected, "the writer reads its own writes");
    t.fs.flush(h, O).unwrap();
    let committed = t.fs.getattr(f.ino).unwrap();
    assert_eq!(committed.content_id(), Some(sha1_id(&expected)));
    t.fs.release(h, O).unwrap();
    assert_eq!(t.read_all(f.ino), expected);
}

#[test]
fn a_partial_overwrite_copies_on_write_and_keeps_the_old_object_intact() {
    let t = TestFs::new();
    let base = object_sized(b"0123456789");
    let f = t.put(Ino::ROOT, "f", &base);
    let old = f.content_id().unwrap();
    let reader = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap();
    assert!(reader.backing.is_some(), "a read-only handle gets the immutable object");
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(h, 3, b"abc").unwrap();
    let end = base.len() as u64;
    t.fs.write(h, end + 2, b"Z").unwrap(); // leaves a hole of zeros
    t.fs.release(h, O).unwrap();
    let mut expected = base.clone();
    expected[3..6].copy_from_slice(b"abc");
    expected.extend_from_slice(b"\0\0Z");
    assert_eq!(t.read_all(f.ino), expected);
    // The reader's handle moved to the new content (a commit through the
    // mount is visible to every handle).
    assert_eq!(read_handle(&t, reader.handle), expected);
    assert_ne!(t.fs.getattr(f.ino).unwrap().content_id(), Some(old));
    t.fs.release(reader.handle, O).unwrap();
    // The old object stays, whole, as the slices around the new bytes;
    // the new bytes are one small chunk each.
    let hex = old.lo_hex();
    let path = t.data().join("objects").join(&hex[0..2]).join(format!("{hex}-0000000000000000"));
    assert_eq!(std::fs::read(path).unwrap(), base);
    assert_eq!(t.stored_chunks(), 3);
}

#[test]
fn a_handle_keeps_its_version_when_the_file_is_replaced_whole() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"version one");
    let h = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    t.put(Ino::ROOT, "f", b"version two, longer");
    assert_eq!(read_handle(&t, h), b"version one", "snapshot of the opened version");
    assert_eq!(t.read_all(f.ino), b"version two, longer", "new opens see the new version");
    t.fs.release(h, O).unwrap();
}

#[test]
fn o_trunc_empties_at_once_and_o_append_writes_at_the_end() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"old content");
    let trunc = t.fs.open_file(f.ino, OpenFlags { truncate: true, ..rw() }).unwrap();
    assert_eq!(trunc.attr.size, 0);
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, 0);
    t.fs.write(trunc.handle, 0, b"new").unwrap();
    t.fs.release(trunc.handle, O).unwrap();
    let app = t.fs.open_file(f.ino, OpenFlags { append: true, ..rw() }).unwrap().handle;
    t.fs.write(app, 0, b"+tail").unwrap();
    t.fs.write(app, 0, b"+more").unwrap();
    t.fs.release(app, O).unwrap();
    assert_eq!(t.read_all(f.ino), b"new+tail+more");
    let empty = t.fs.open_file(f.ino, OpenFlags { truncate: true, ..rw() }).unwrap().handle;
    t.fs.release(empty, O).unwrap();
    let attr = t.fs.getattr(f.ino).unwrap();
    assert_eq!((attr.size, attr.content), (0, None));
    assert_eq!(t.stored_chunks(), 0);
}

#[test]
fn an_unlinked_open_file_stays_readable_and_writable_until_closed() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"still here");
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.unlink(Ino::ROOT, b"f", &caller()).unwrap();
    assert!(matches!(t.fs.lookup(Ino::ROOT, b"f"), Err(FsError::NotFound)));
    assert_eq!(t.fs.getattr(f.ino).unwrap().nlink, 0);
    assert_eq!(read_handle(&t, h), b"still here");
    t.fs.write(h, 10, b"!").unwrap();
    t.fs.flush(h, O).unwrap();
    assert_eq!(read_handle(&t, h), b"still here!");
    t.fs.release(h, O).unwrap();
    assert!(matches!(t.fs.getattr(f.ino), Err(FsError::NotFound)));
    assert_eq!(t.stored_chunks(), 0);
}

#[test]
fn a_created_file_is_open_at_once_and_an_unlink_right_after_keeps_it_until_closed() {
    let t = TestFs::new();
    let made = t.fs.create_file(Ino::ROOT, b"new", 0o640, &caller(), rw()).unwrap();
    assert_eq!((made.attr.size, made.attr.perm, made.attr.nlink), (0, 0o640, 1));
    assert!(matches!(t.fs.create_file(Ino::ROOT, b"new", 0o640, &caller(), rw()), Err(FsError::Exists)));
    t.fs.unlink(Ino::ROOT, b"new", &caller()).unwrap();
    t.fs.write(made.handle, 0, b"written after the unlink").unwrap();
    t.fs.flush(made.handle, O).unwrap();
    assert_eq!(read_handle(&t, made.handle), b"written after the unlink");
    t.fs.release(made.handle, O).unwrap();
    assert!(matches!(t.fs.getattr(made.attr.ino), Err(FsError::NotFound)));
    assert_eq!(t.stored_chunks(), 0);
}

#[test]
fn an_open_file_replaced_by_a_rename_is_deleted_at_its_last_close_not_before() {
    let t = TestFs::new();
    let old = t.put(Ino::ROOT, "target", b"old version");
    t.put(Ino::ROOT, "incoming", b"new version");
    let first = t.fs.open_file(old.ino, rw()).unwrap().handle;
    t.fs.rename(Ino::ROOT, b"incoming", Ino::ROOT, b"target", Default::default(), &caller()).unwrap();
    // Opened again by inode number (as the kernel may) after it lost its
    // name: the first close must not delete it under the second handle.
    let second = t.fs.open_file(old.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    t.fs.release(first, O).unwrap();
    assert_eq!(read_handle(&t, second), b"old version");
    assert_eq!(t.fs.getattr(old.ino).unwrap().nlink, 0);
    t.fs.release(second, O).unwrap();
    assert!(matches!(t.fs.getattr(old.ino), Err(FsError::NotFound)));
    assert_eq!(t.read_all(t.fs.lookup(Ino::ROOT, b"target").unwrap().ino), b"new version");
    assert_eq!(t.stored_chunks(), 1);
}

#[test]
fn an_unclean_stop_loses_uncommitted_writes_and_orphans_only() {
    let t = TestFs::new();
    let kept = t.put(Ino::ROOT, "kept", b"committed");
    let orphan = t.put(Ino::ROOT, "orphan", b"unlinked while open");
    let h1 = t.fs.open_file(kept.ino, rw()).unwrap().handle;
    t.fs.write(h1, 0, b"UNCOMMITTED").unwrap();
    let h2 = t.fs.open_file(orphan.ino, rw()).unwrap().handle;
    t.fs.unlink(Ino::ROOT, b"orphan", &caller()).unwrap();
    let _ = (h1, h2);
    // Dropping the Fs without releasing is what a crash leaves behind.
    // Staging files are anonymous where the filesystem allows; a named
    // leftover (other filesystems) is removed at the next open.
    let staging = t.data().join("staging");
    std::fs::write(staging.join("leftover"), b"partial").unwrap();
    let t = t.reopen();
    assert_eq!(t.read_all(kept.ino), b"committed");
    assert!(matches!(t.fs.getattr(orphan.ino), Err(FsError::NotFound)));
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "staging leftovers removed");
    assert_eq!(t.stored_chunks(), 1);
}

#[test]
fn truncate_without_a_handle_commits_and_with_one_stays_pending() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"0123456789");
    let shrink = SetAttr { size: Some(4), ..Default::default() };
    let a = t.fs.setattr(f.ino, &shrink, &caller()).unwrap();
    assert_eq!(a.size, 4);
    assert_eq!(a.content_id(), Some(sha1_id(b"0123")));
    let grow = SetAttr { size: Some(6), ..Default::default() };
    t.fs.setattr(f.ino, &grow, &caller()).unwrap();
    assert_eq!(t.read_all(f.ino), b"0123\0\0");

    // Open but nothing pending: commits at once.
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    let a = t.fs.setattr(f.ino, &SetAttr { size: Some(5), ..Default::default() }, &caller()).unwrap();
    assert_eq!(a.content_id(), Some(sha1_id(b"0123\0")));
    assert_eq!(read_handle(&t, h), b"0123\0", "the handle follows");
    // With writes pending: the truncate joins them.
    t.fs.write(h, 0, b"ab").unwrap();
    let a = t.fs.setattr(f.ino, &SetAttr { size: Some(2), ..Default::default() }, &caller()).unwrap();
    assert_eq!(a.size, 2);
    assert_eq!(a.content_id(), Some(sha1_id(b"0123\0")), "pending until the handle commits");
    t.fs.release(h, O).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(b"ab")));
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()).unwrap();
    assert!(matches!(t.fs.setattr(d.ino, &shrink, &caller()), Err(FsError::IsDir)));
}

/// Pending writes commit when a handle that made them closes, or at the
/// last close. A close of a handle that added nothing commits nothing: a
/// late RELEASE of an earlier writer, or a forked child closing an
/// inherited descriptor, must not publish another writer's sequence
/// half-way.
#[test]
fn only_a_handle_that_wrote_commits_at_its_close() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"old");
    let (writer, idle, reader) = (
        t.fs.open_file(f.ino, rw()).unwrap().handle,
        t.fs.open_file(f.ino, rw()).unwrap().handle,
        t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle,
    );
    t.fs.write(writer, 0, b"new").unwrap();
    assert_eq!(t.fs.flush(idle, O).unwrap(), None, "the idle handle's close commits nothing");
    assert_eq!(t.fs.release(reader, O).unwrap(), None, "nor does a reader's");
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(b"old")));
    assert_eq!(read_handle(&t, idle), b"new", "while every handle reads the pending bytes");
    assert!(t.fs.flush(writer, O).unwrap().is_some(), "the writer's close commits");
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(b"new")));

    // After that commit both are clean. A commit takes along every
    // pending byte, other handles' too.
    t.fs.write(writer, 3, b"er").unwrap();
    assert!(t.fs.release(writer, O).unwrap().is_some());
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(b"newer")));
    t.fs.write(idle, 0, b"N").unwrap();
    let other = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(other, 1, b"E").unwrap();
    assert!(t.fs.release(idle, O).unwrap().is_some());
    assert_eq!(
        t.fs.getattr(f.ino).unwrap().content_id(),
        Some(sha1_id(b"NEwer")),
        "its close takes the other's bytes along"
    );
    t.fs.write(other, 2, b"W").unwrap();
    assert!(t.fs.release(other, O).unwrap().is_some(), "the last close");
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(b"NEWer")));
}

#[test]
fn handles_enforce_their_access_mode() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"x");
    let ro = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    assert!(matches!(t.fs.write(ro, 0, b"y"), Err(FsError::BadHandle)));
    let wo = t.fs.open_file(f.ino, OpenFlags { write: true, ..Default::default() }).unwrap().handle;
    assert!(matches!(t.fs.read(wo, 0, 1), Err(FsError::BadHandle)));
    t.fs.release(ro, O).unwrap();
    t.fs.release(wo, O).unwrap();
    assert!(matches!(t.fs.release(ro, O), Err(FsError::BadHandle)));
    let d = t.fs.mkdir(Ino::ROOT, b"d", 0o755, &caller()).unwrap();
    assert!(matches!(t.fs.open_file(d.ino, rw()), Err(FsError::IsDir)));
}

#[test]
fn a_read_only_fs_refuses_every_change_but_reads() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"readable");
    let ro = tsmfs::fs::Fs::open(&t.data(), FsOptions { read_only: true, ..Default::default() }).unwrap();
    assert!(matches!(ro.mkdir(Ino::ROOT, b"d", 0o755, &caller()), Err(FsError::ReadOnly)));
    assert!(matches!(ro.open_file(f.ino, rw()), Err(FsError::ReadOnly)));
    assert!(matches!(ro.unlink(Ino::ROOT, b"f", &caller()), Err(FsError::ReadOnly)));
    let h = ro.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    assert_eq!(ro.read(h, 0, 100).unwrap(), b"readable");
}

#[test]
fn a_second_writer_on_one_data_dir_is_refused() {
    let t = TestFs::new();
    let err = tsmfs::fs::Fs::open(&t.data(), FsOptions::default()).unwrap_err();
    assert!(err.to_string().contains("in use"), "{err}");
    // The holder is named (here: this very process, alive).
    let holder = tsmfs::fs::LockHolderProcess { pid: std::process::id(), dying: false };
    assert!(matches!(&err, tsmfs::fs::OpenError::Locked(_, Some(found)) if *found == holder), "{err}");
    assert!(err.to_string().contains(&format!("(pid {})", std::process::id())), "{err}");
}

#[test]
fn fsync_commits_durably() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"");
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(h, 0, b"durable").unwrap();
    t.fs.fsync(h, O).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(b"durable")));
    t.fs.fsync(h, O).unwrap(); // nothing pending: still fine
    t.fs.release(h, O).unwrap();
}

#[test]
fn concurrent_writers_and_readers_on_many_files() {
    let t = TestFs::new();
    let files: Vec<_> = (0..8).map(|i| t.put(Ino::ROOT, &format!("f{i}"), b"")).collect();
    std::thread::scope(|s| {
        for (i, f) in files.iter().enumerate() {
            let t = &t;
            s.spawn(move || {
                for round in 0..20u32 {
                    let body = format!("file {i} round {round} ").repeat(round as usize + 1);
                    let h = t.fs.open_file(f.ino, OpenFlags { truncate: true, ..rw() }).unwrap().handle;
                    t.fs.write(h, 0, body.as_bytes()).unwrap();
                    t.fs.release(h, O).unwrap();
                    let read = t.read_all(f.ino);
                    let attr = t.fs.getattr(f.ino).unwrap();
                    assert_eq!(read, body.as_bytes());
                    assert_eq!(attr.content_id(), Some(sha1_id(&read)));
                }
            });
        }
        // A reader of the whole tree meanwhile: every version it reads in
        // one call is whole. (Across calls a handle follows commits made
        // through other handles, as POSIX wants, so a loop of reads may
        // join two versions.)
        s.spawn(|| {
            for _ in 0..50 {
                for f in &files {
                    let h =
                        t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
                    let bytes = t.fs.read(h, 0, 1 << 20).unwrap();
                    t.fs.release(h, O).unwrap();
                    let text = String::from_utf8(bytes).unwrap();
                    if let Some(first) = text.split(' ').nth(3) {
                        let unit = format!("file {} round {first} ", &text[5..6]);
                        assert_eq!(text, unit.repeat(text.len() / unit.len()), "torn read");
                    }
                }
            }
        });
    });
    assert_eq!(t.stored_chunks(), 8);
}

/// Opens and releases churning on a file while it is rewritten: every
/// read after a commit sees that commit. (The race this guards, an open
/// registering in an I/O state that the last release had just dropped, was
/// caught through FUSE by `fuse::concurrent_writers_and_readers`; its
/// window is too narrow to hit reliably here.)
#[test]
fn opens_racing_the_last_release_share_one_state() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "f", b"v0");
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..3000 {
                    let h =
                        t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
                    t.fs.release(h, O).unwrap();
                }
            });
        }
        s.spawn(|| {
            for round in 0..1000u32 {
                let body = format!("version {round}");
                let h = t.fs.open_file(f.ino, OpenFlags { truncate: true, ..rw() }).unwrap().handle;
                t.fs.write(h, 0, body.as_bytes()).unwrap();
                t.fs.release(h, O).unwrap();
                let r = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
                assert_eq!(read_handle(&t, r), body.as_bytes(), "round {round}");
                t.fs.release(r, O).unwrap();
            }
        });
    });
}

#[test]
fn put_if_commits_only_when_its_precondition_holds_at_commit() {
    let t = TestFs::new();
    let first = t.put(Ino::ROOT, "f", b"first");
    let expect =
        |want: Option<tsmfs::id::ContentId>| move |current: Option<tsmfs::id::ContentId>| current == want;
    let stale = expect(Some(sha1_id(b"something else")));
    let put = t.fs.put_if(Ino::ROOT, b"f", &mut &b"second"[..], PutOptions::default(), &caller(), &stale);
    assert!(matches!(put, Err(FsError::PreconditionFailed)), "{put:?}");
    assert_eq!(t.read_all(first.ino), b"first");
    let current = expect(first.content_id());
    t.fs.put_if(Ino::ROOT, b"f", &mut &b"second"[..], PutOptions::default(), &caller(), &current).unwrap();
    assert_eq!(t.read_all(first.ino), b"second");
    // `None` stands for "no such file": create-only.
    let absent = expect(None);
    let put = t.fs.put_if(Ino::ROOT, b"f", &mut &b"third"[..], PutOptions::default(), &caller(), &absent);
    assert!(matches!(put, Err(FsError::PreconditionFailed)));
    t.fs.put_if(Ino::ROOT, b"g", &mut &b"new"[..], PutOptions::default(), &caller(), &absent).unwrap();
    assert_eq!(t.stored_chunks(), 2, "refused puts leave no objects behind");
}

/// A small write into a large file stores one small chunk: the file's
/// other bytes stay where they were, shared by both versions, and what the
/// write replaced is freed once the commit is durable.
#[test]
fn a_small_write_into_a_large_file_adds_one_chunk_and_frees_what_it_replaced() {
    let t = TestFs::new();
    let mut expected: Vec<u8> = (0..(8u32 << 20)).map(|i| (i % 251) as u8).collect();
    let f = t.put(Ino::ROOT, "big", &expected);
    assert_eq!(t.stored_chunks(), 1, "written front to back: one object");
    let used = t.stored_bytes();
    for round in 1..4u8 {
        let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
        t.fs.write(h, 3 << 20, &[round; 4096]).unwrap();
        t.fs.release(h, O).unwrap();
        expected[3 << 20..(3 << 20) + 4096].fill(round);
        assert_eq!(t.stored_chunks(), 2, "round {round}: the large object and one 4 KiB chunk");
        assert!(t.stored_bytes() <= used + 8192, "round {round}: {} bytes", t.stored_bytes() - used);
    }
    // Zeros are a hole: no chunk at all.
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(h, 5 << 20, &[0; 65536]).unwrap();
    t.fs.release(h, O).unwrap();
    expected[5 << 20..(5 << 20) + 65536].fill(0);
    assert_eq!(t.stored_chunks(), 2);
    let attr = t.fs.getattr(f.ino).unwrap();
    assert_eq!(attr.content, None, "a large file's id is computed after its commit");
    let attr = t.fs.with_content_id(attr).unwrap();
    assert_eq!(attr.content_id(), Some(sha1_id(&expected)), "the ETag is the SHA-1 of the whole file");
    assert_eq!(t.read_all(f.ino), expected);
    let t = t.reopen();
    assert_eq!(t.fs.getattr(f.ino).unwrap().content_id(), Some(sha1_id(&expected)), "recorded once");
    assert_eq!(t.read_all(f.ino), expected);
}

/// A time set on an open file while its writes are pending (cp -p, tar:
/// futimens, then close) is the one the commit keeps, and the times the
/// handles saw while pending are those stored after.
#[test]
fn a_time_set_before_close_survives_the_commit() {
    let t = TestFs::new();
    let f = t.fs.create_file(Ino::ROOT, b"copied", 0o644, &caller(), rw()).unwrap();
    t.fs.write(f.handle, 0, b"bytes of the copy").unwrap();
    let old = 1_000_000_000_123_456_789;
    let times = SetAttr {
        mtime: Some(tsmfs::fs::TimeSet::At(old)),
        atime: Some(tsmfs::fs::TimeSet::At(old)),
        ..Default::default()
    };
    t.fs.setattr(f.attr.ino, &times, &caller()).unwrap();
    let seen = t.fs.getattr(f.attr.ino).unwrap();
    assert_eq!(seen.mtime_ns, old);
    t.fs.release(f.handle, O).unwrap();
    let stored = t.fs.getattr(f.attr.ino).unwrap();
    assert_eq!((stored.mtime_ns, stored.atime_ns), (old, old), "the commit keeps the time set");
    assert_eq!(stored.ctime_ns, seen.ctime_ns, "the ctime seen while pending is the one stored");

    // A write after the time was set makes the mtime the write's again.
    let h = t.fs.open_file(f.attr.ino, rw()).unwrap().handle;
    t.fs.setattr(f.attr.ino, &times, &caller()).unwrap();
    t.fs.write(h, 0, b"B").unwrap();
    let pending = t.fs.getattr(f.attr.ino).unwrap();
    t.fs.release(h, O).unwrap();
    let stored = t.fs.getattr(f.attr.ino).unwrap();
    assert!(stored.mtime_ns > old);
    assert_eq!((stored.mtime_ns, stored.ctime_ns), (pending.mtime_ns, pending.ctime_ns));
}

/// An inode a frontend still refers to (the kernel looked it up) stays
/// valid after its last name goes, as a reader racing `rename(tmp, path)`
/// needs: stat and open of it work until the reference is given back.
#[test]
fn an_inode_still_looked_up_outlives_its_last_name() {
    let t = TestFs::new();
    let old = t.put(Ino::ROOT, "path", b"old version");
    t.fs.hold(old.ino);
    t.put(Ino::ROOT, "tmp", b"new version");
    t.fs.rename(Ino::ROOT, b"tmp", Ino::ROOT, b"path", Default::default(), &caller()).unwrap();
    assert_eq!(t.fs.getattr(old.ino).unwrap().nlink, 0);
    assert_eq!(t.read_all(old.ino), b"old version", "open and read of the looked-up inode");
    t.fs.forget(old.ino, 1);
    t.fs.sync().unwrap();
    assert!(matches!(t.fs.getattr(old.ino), Err(FsError::NotFound)), "gone with the last reference");
    assert_eq!(t.stored_chunks(), 1);
}

/// Chunks that an open handle still reads stay while it reads them (the
/// file was replaced meanwhile), and go within seconds of its close, with
/// no other change to set the freeing off.
#[test]
fn chunks_a_reader_kept_are_freed_soon_after_it_closes() {
    let t = TestFs::new();
    let old: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 241) as u8).collect();
    let f = t.put(Ino::ROOT, "big", &old);
    let reader = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    t.put(Ino::ROOT, "big", b"replaced whole");
    assert_eq!(t.stored_chunks(), 2, "the old object stays while a handle reads it");
    assert_eq!(t.fs.read(reader, (2 << 20) + 7, 5).unwrap(), old[(2 << 20) + 7..(2 << 20) + 12]);
    t.fs.release(reader, O).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while t.stored_chunks_now() > 1 {
        assert!(std::time::Instant::now() < deadline, "the old object is still there 10 s after the close");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Writes pending on a file that another frontend replaces whole (a PUT)
/// commit over the version they were made on: the file becomes that
/// version with the writes, as a later write would make it, never the
/// other version's bytes with these writes laid over them.
#[test]
fn writes_pending_while_the_file_is_replaced_commit_over_their_own_version() {
    let t = TestFs::new();
    let mut old: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 241) as u8).collect();
    let f = t.put(Ino::ROOT, "db", &old);
    let writer = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(writer, 1 << 20, &[9; 4096]).unwrap();
    old[1 << 20..(1 << 20) + 4096].fill(9);
    let other: Vec<u8> = (0..(10u32 << 20)).map(|i| (i % 113) as u8).collect();
    t.put(Ino::ROOT, "db", &other);
    let late = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    assert_eq!(
        t.fs.read(late, 1 << 20, 4).unwrap(),
        [9; 4],
        "a handle opened meanwhile sees the pending writes"
    );
    t.fs.release(late, O).unwrap();
    t.fs.release(writer, O).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().size, old.len() as u64);
    assert!(t.read_all(f.ino) == old, "the file is the writer's version with its writes");
    let attr = t.fs.with_content_id(t.fs.getattr(f.ino).unwrap()).unwrap();
    assert_eq!(attr.content_id(), Some(sha1_id(&old)));
}

/// A batch put (`tsmfs import`) replaces a file whose content id its last
/// commit left for later: it has no precondition, so it needs none.
#[test]
fn a_batch_put_replaces_a_file_whose_content_id_is_not_computed_yet() {
    let t = TestFs::new();
    let big: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 199) as u8).collect();
    let f = t.put(Ino::ROOT, "patched", &big);
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(h, 4096, b"patch").unwrap();
    t.fs.release(h, O).unwrap();
    assert_eq!(t.fs.getattr(f.ino).unwrap().content, None, "its id is left for later");
    let staged = t.fs.stage(&mut &b"imported"[..]).unwrap();
    let mut batch = [tsmfs::fs::StagedPut {
        parent: Ino::ROOT,
        name: b"patched".to_vec(),
        staged,
        options: PutOptions::default(),
    }];
    t.fs.put_batch(&mut batch, &caller()).expect("the batch put");
    assert_eq!(t.read_all(f.ino), b"imported");
}

/// copy_file_range from a handle on a version that a PUT has replaced
/// since copies that version, bytes and ETag, even when its whole-file
/// id was a row of its own (a patched file's) that the PUT let go.
#[test]
fn a_copy_from_a_replaced_version_copies_that_version() {
    let t = TestFs::new();
    let mut old: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 233) as u8).collect();
    let f = t.put(Ino::ROOT, "src", &old);
    let h = t.fs.open_file(f.ino, rw()).unwrap().handle;
    t.fs.write(h, 8192, b"patched").unwrap();
    t.fs.release(h, O).unwrap();
    old[8192..8199].copy_from_slice(b"patched");
    t.fs.with_content_id(t.fs.getattr(f.ino).unwrap()).unwrap();
    let reader = t.fs.open_file(f.ino, OpenFlags { read: true, ..Default::default() }).unwrap().handle;
    t.put(Ino::ROOT, "src", b"replaced");
    let target = t.fs.create_file(Ino::ROOT, b"copy", 0o644, &caller(), rw()).unwrap();
    let copied = t.fs.copy_range(reader, 0, target.handle, 0, old.len() as u64, O).expect("copy");
    assert_eq!(copied.copied, old.len() as u64);
    t.fs.release(target.handle, O).unwrap();
    t.fs.release(reader, O).unwrap();
    assert!(t.read_all(target.attr.ino) == old, "the copy holds the version the handle read");
    let attr = t.fs.with_content_id(t.fs.getattr(target.attr.ino).unwrap()).unwrap();
    assert_eq!(attr.content_id(), Some(sha1_id(&old)));
}
