//! The content store through the fs core: dedupe, collisions, removal.

use tsmfs::fs::{FsError, PutOptions};
use tsmfs::id::{ContentId, Ino};

use crate::util::{TestFs, caller, collision_pair, object_sized, sha1_id};

#[test]
fn the_real_sha1_collision_pair_is_stored_apart() {
    let (a, b) = collision_pair();
    assert_ne!(a, b);
    assert_eq!(sha1_id(&a), sha1_id(&b), "the test data must be a SHA-1 collision");
    let t = TestFs::new();
    let fa = t.put(Ino::ROOT, "shattered-1", &a);
    let fb = t.put(Ino::ROOT, "shattered-2", &b);
    let (ia, ib) = (fa.content_id().unwrap(), fb.content_id().unwrap());
    assert_eq!(ia.lo, ib.lo);
    assert_eq!((ia.hi, ib.hi), (0, 1));
    assert_ne!(ia.etag(), ib.etag());
    assert_eq!(ib.etag(), format!("\"{}-0000000000000001\"", ia.lo_hex()));
    assert_eq!(t.read_all(fa.ino), a);
    assert_eq!(t.read_all(fb.ino), b);
    assert_eq!(t.stored_chunks(), 2);

    // Storing either again dedupes onto the right one.
    let again = t.put(Ino::ROOT, "again-2", &b);
    assert_eq!(again.content_id(), Some(ib));
    let again = t.put(Ino::ROOT, "again-1", &a);
    assert_eq!(again.content_id(), Some(ia));
    assert_eq!(t.stored_chunks(), 2);

    // And the pair survives a restart byte for byte.
    let t = t.reopen();
    assert_eq!(t.read_all(t.fs.resolve(b"shattered-2").unwrap().ino), b);
    assert_eq!(t.read_all(t.fs.resolve(b"again-1").unwrap().ino), a);
}

#[test]
fn identical_content_is_stored_once_and_freed_with_its_last_name() {
    let t = TestFs::new();
    let data = b"same bytes".repeat(1000);
    let one = t.put(Ino::ROOT, "one", &data);
    let two = t.put(Ino::ROOT, "two", &data);
    assert_eq!(one.content_id(), two.content_id());
    assert_eq!(one.content_id(), Some(sha1_id(&data)));
    assert_eq!(t.stored_chunks(), 1);
    let totals = t.fs.totals().unwrap();
    assert_eq!((totals.contents, totals.content_bytes), (1, data.len() as u64));
    assert_eq!(totals.logical_bytes_by_name, 2 * data.len() as u64);

    t.fs.unlink(Ino::ROOT, b"one", &caller()).unwrap();
    assert_eq!(t.stored_chunks(), 1, "still referenced by 'two'");
    t.fs.unlink(Ino::ROOT, b"two", &caller()).unwrap();
    assert_eq!(t.stored_chunks(), 0, "last reference gone");
    assert_eq!(t.fs.totals().unwrap().contents, 0);
}

#[test]
fn replacing_content_releases_the_old_object() {
    let t = TestFs::new();
    t.put(Ino::ROOT, "f", b"version one");
    t.put(Ino::ROOT, "f", b"version two");
    assert_eq!(t.stored_chunks(), 1);
    let f = t.fs.resolve(b"f").unwrap();
    assert_eq!(t.read_all(f.ino), b"version two");
    assert_eq!(f.content_id(), Some(sha1_id(b"version two")));
}

#[test]
fn a_released_object_is_removed_only_once_its_release_is_durable() {
    // Removing the old object before the commit that released it is on
    // disk would let a power loss bring back a reference to a missing file.
    let t = TestFs::new();
    t.put(Ino::ROOT, "f", b"version one");
    t.put(Ino::ROOT, "f", b"version two");
    assert_eq!(t.stored_chunks_now(), 2, "not yet durable: the old object stays");
    t.fs.sync().unwrap();
    assert_eq!(t.stored_chunks_now(), 1);
    // A durable commit removes at once.
    let durable = PutOptions { durable: true, ..PutOptions::default() };
    t.fs.put(Ino::ROOT, b"f", &mut &b"version three"[..], durable, &caller()).unwrap();
    assert_eq!(t.stored_chunks_now(), 1);
    // Content released and then stored again before the durable point is
    // kept.
    t.put(Ino::ROOT, "f", b"version four");
    t.put(Ino::ROOT, "f", b"version three");
    t.fs.sync().unwrap();
    assert_eq!(t.read_all(t.fs.resolve(b"f").unwrap().ino), b"version three");
    assert_eq!(t.stored_chunks_now(), 1);
}

#[test]
fn empty_files_store_no_object_but_have_the_empty_sha1_etag() {
    let t = TestFs::new();
    let f = t.put(Ino::ROOT, "empty", b"");
    assert_eq!(f.size, 0);
    assert_eq!(t.stored_chunks(), 0);
    assert_eq!(f.content_id().unwrap().etag(), "\"da39a3ee5e6b4b0d3255bfef95601890afd80709\"");
    assert_eq!(t.read_all(f.ino), b"");
}

#[test]
fn objects_are_read_only_and_fanned_out_under_their_id() {
    let t = TestFs::new();
    let bytes = object_sized(b"fan out");
    let f = t.put(Ino::ROOT, "f", &bytes);
    let id: ContentId = f.content_id().unwrap();
    let hex = id.lo_hex();
    let path = t.data().join("objects").join(&hex[0..2]).join(format!("{hex}-0000000000000000"));
    let meta = std::fs::metadata(&path).expect("object at its fan-out path");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o400,
        "read-only, the owner's alone"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_lost_object_is_restored_by_storing_its_bytes_again() {
    let t = TestFs::new();
    let bytes = object_sized(b"precious");
    let f = t.put(Ino::ROOT, "f", &bytes);
    let hex = f.content_id().unwrap().lo_hex();
    let path = t.data().join("objects").join(&hex[0..2]).join(format!("{hex}-0000000000000000"));
    std::fs::remove_file(&path).unwrap();
    t.put(Ino::ROOT, "g", &bytes);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn batch_put_commits_all_files_with_one_sync() {
    let t = TestFs::new();
    let mut batch: Vec<_> = (0..50)
        .map(|i| tsmfs::fs::StagedPut {
            parent: Ino::ROOT,
            name: format!("f{i}").into_bytes(),
            staged: t.fs.stage(&mut format!("content {}", i % 10).as_bytes()).unwrap(),
            options: PutOptions::default(),
        })
        .collect();
    let attrs = t.fs.put_batch(&mut batch, &caller()).unwrap();
    assert_eq!(attrs.len(), 50);
    assert_eq!(t.stored_chunks(), 10);
    assert_eq!(t.read_all(t.fs.resolve(b"f17").unwrap().ino), b"content 7");
}

#[test]
fn a_failed_batch_leaves_nothing_visible() {
    let t = TestFs::new();
    t.fs.mkdir(Ino::ROOT, b"taken", 0o755, &caller()).unwrap();
    let mut batch = vec![
        tsmfs::fs::StagedPut {
            parent: Ino::ROOT,
            name: b"fine".to_vec(),
            staged: t.fs.stage(&mut &b"ok"[..]).unwrap(),
            options: PutOptions::default(),
        },
        tsmfs::fs::StagedPut {
            parent: Ino::ROOT,
            name: b"taken".to_vec(),
            staged: t.fs.stage(&mut &b"clash"[..]).unwrap(),
            options: PutOptions::default(),
        },
    ];
    assert!(matches!(t.fs.put_batch(&mut batch, &caller()), Err(FsError::IsDir)));
    assert!(matches!(t.fs.resolve(b"fine"), Err(FsError::NotFound)));
    // Retrying the good item alone works even though its object was
    // already published by the rolled-back attempt.
    t.fs.put_batch(&mut batch[..1], &caller()).unwrap();
    assert_eq!(t.read_all(t.fs.resolve(b"fine").unwrap().ino), b"ok");
}

/// The collision pair extended by one suffix still collides (SHA-1 runs
/// in 64-byte blocks; each file is ten of them), so multi-chunk files,
/// and the 1 MiB chunks their rewrites are cut into, collide too. Each
/// keeps its own bytes and id, also when the id is computed after the
/// commit.
#[test]
fn colliding_files_of_many_chunks_stay_apart_whole_and_chunk_by_chunk() {
    let (a, b) = collision_pair();
    let suffix: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
    let (big_a, big_b) = ([&a[..], &suffix].concat(), [&b[..], &suffix].concat());
    assert_eq!(sha1_id(&big_a), sha1_id(&big_b), "still a collision");
    let t = TestFs::new();
    let fa = t.put(Ino::ROOT, "a", &big_a);
    let fb = t.put(Ino::ROOT, "b", &big_b);
    let (ia, ib) = (fa.content_id().unwrap(), fb.content_id().unwrap());
    assert_eq!((ia.hi, ib.hi), (0, 1));

    // Rewritten in place through handles, 1 MiB at a time: sealed chunks
    // that collide, and a whole-file id computed after the commit.
    let noise: Vec<u8> = (0..big_a.len()).map(|i| (i % 7) as u8).collect();
    for (name, bytes, id) in [("c", &big_b, ib), ("d", &big_a, ia)] {
        let f = t.put(Ino::ROOT, name, &noise);
        let h = t.fs.open_file(f.ino, tsmfs::fs::OpenFlags { read: true, write: true, ..Default::default() });
        let h = h.unwrap().handle;
        for (i, piece) in bytes.chunks(1 << 20).enumerate() {
            t.fs.write(h, (i as u64) << 20, piece).unwrap();
        }
        t.fs.release(h, tsmfs::fs::Origin::Cli).unwrap();
        let attr = t.fs.with_content_id(t.fs.getattr(f.ino).unwrap()).unwrap();
        assert_eq!(attr.content_id(), Some(id), "{name}");
        assert_eq!(&t.read_all(f.ino), bytes, "{name}");
    }
    let t = t.reopen();
    for (name, bytes) in [("a", &big_a), ("b", &big_b), ("c", &big_b), ("d", &big_a)] {
        let attr = t.fs.resolve(name.as_bytes()).unwrap();
        assert_eq!(&t.read_all(attr.ino), bytes, "{name} after a restart");
    }
}
