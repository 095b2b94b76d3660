//! The FUSE mount, used through ordinary system calls.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};

use tsmfs::fuse::MountOptions;

use crate::util::{TestMount, getxattr, listxattr, renameat2, setxattr, sh_as_nobody, sha1_id};

fn mode(path: &std::path::Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode()
}

fn err(result: std::io::Result<impl Sized>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

#[test]
fn files_written_through_the_mount_read_back_with_their_sha1_as_etag() {
    let m = TestMount::new();
    let path = m.path("hello.txt");
    fs::write(&path, b"hello\n").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hello\n");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.len(), meta.nlink()), (6, 1));
    assert_eq!(getxattr(&path, "user.tsmfs.etag").unwrap(), b"\"f572d396fae9206628714fb2ce00f72e94f2258f\"");
    assert_eq!(setxattr(&path, "user.tsmfs.etag", b"x", 0), Err(libc::EPERM));
    // The tree saw the commit at close.
    let attr = m.fs.resolve(b"/hello.txt").unwrap();
    assert_eq!(attr.content_id(), Some(sha1_id(b"hello\n")));

    // A large file, written in pieces.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut f = File::create(m.path("big.bin")).unwrap();
    for chunk in big.chunks(100_000) {
        f.write_all(chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), big);
    let etag = getxattr(&m.path("big.bin"), "user.tsmfs.etag").unwrap();
    assert_eq!(etag, sha1_id(&big).etag().into_bytes());
}

#[test]
fn new_files_get_the_callers_ids_and_umask_and_setgid_dirs_pass_the_group() {
    let m = TestMount::new();
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let status = sh_as_nobody(&format!(
        "umask 027 && echo x > {0}/mine && mkdir {0}/dir && mkfifo {0}/fifo",
        m.mnt.display()
    ));
    assert_eq!(status, 0);
    let mine = fs::metadata(m.path("mine")).unwrap();
    assert_eq!((mine.uid(), mine.gid(), mine.mode() & 0o7777), (65534, 65534, 0o640));
    assert_eq!(mode(&m.path("dir")) & 0o7777, 0o750);
    assert_eq!(mode(&m.path("fifo")) & libc::S_IFMT, libc::S_IFIFO);

    let shared = m.path("shared");
    fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, None, Some(4242)).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o2777)).unwrap();
    fs::write(shared.join("f"), b"").unwrap();
    fs::create_dir(shared.join("sub")).unwrap();
    assert_eq!(fs::metadata(shared.join("f")).unwrap().gid(), 4242);
    assert_eq!(fs::metadata(shared.join("sub")).unwrap().mode() & 0o2000, 0o2000);
}

#[test]
fn permissions_are_enforced_for_other_users() {
    let m = TestMount::new();
    fs::write(m.path("private"), b"secret").unwrap();
    fs::set_permissions(m.path("private"), fs::Permissions::from_mode(0o600)).unwrap();
    let p = m.path("private").display().to_string();
    assert_ne!(sh_as_nobody(&format!("cat {p}")), 0, "nobody must not read a 0600 root file");
    assert_ne!(sh_as_nobody(&format!("echo x >> {p}")), 0);
    assert_ne!(sh_as_nobody(&format!("chmod 777 {p}")), 0, "only the owner may chmod");
    // Sticky directory: others' files cannot be removed.
    let tmp = m.path("tmp");
    fs::create_dir(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(tmp.join("roots"), b"").unwrap();
    assert_ne!(sh_as_nobody(&format!("rm -f {}/roots", tmp.display())), 0);
    assert!(tmp.join("roots").exists());
    assert_eq!(sh_as_nobody(&format!("touch {0}/own && rm {0}/own", tmp.display())), 0);
}

#[test]
fn writing_or_chowning_clears_setuid_and_setgid() {
    let m = TestMount::new();
    let f = m.path("prog");
    fs::write(&f, b"#!/bin/sh\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    assert_eq!(sh_as_nobody(&format!("echo more >> {}", f.display())), 0);
    assert_eq!(mode(&f) & 0o6000, 0, "a write by another user clears both bits");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).unwrap();
    std::os::unix::fs::chown(&f, Some(1), Some(1)).unwrap();
    assert_eq!(mode(&f) & 0o6000, 0, "chown clears both bits");

    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    assert_eq!(sh_as_nobody(&format!("truncate -s 3 {}", f.display())), 0);
    assert_eq!(mode(&f) & 0o6000, 0, "a truncate by another user clears both bits");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o6777)).unwrap();
    assert_eq!(sh_as_nobody(&format!(": > {}", f.display())), 0);
    assert_eq!(mode(&f) & 0o6000, 0, "an O_TRUNC open by another user clears both bits");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o2767)).unwrap();
    assert_eq!(sh_as_nobody(&format!("echo more >> {}", f.display())), 0);
    assert_eq!(mode(&f) & 0o7777, 0o2767, "setgid without group execute stays");

    fs::set_permissions(&f, fs::Permissions::from_mode(0o6755)).unwrap();
    fs::write(&f, b"root rewrites it\n").unwrap();
    fs::OpenOptions::new().append(true).open(&f).unwrap().write_all(b"and appends\n").unwrap();
    assert_eq!(mode(&f) & 0o6000, 0o6000, "root (CAP_FSETID) keeps both bits");
}

/// File capabilities go with a change of the file's bytes, size or owner,
/// whoever makes it, as on a local filesystem.
#[test]
fn writing_truncating_or_chowning_removes_file_capabilities() {
    type Change = fn(&std::path::Path) -> std::io::Result<()>;
    let m = TestMount::new();
    let f = m.path("tool");
    fs::write(&f, b"#!/bin/sh\n").unwrap();
    // A VFS_CAP_REVISION_2 value granting cap_net_raw (bit 13), effective.
    let mut caps = 0x0200_0001u32.to_le_bytes().to_vec();
    caps.extend_from_slice(&(1u32 << 13).to_le_bytes());
    caps.extend_from_slice(&[0; 12]);
    let changes: [(&str, Change); 4] = [
        ("a write", |f| OpenOptions::new().append(true).open(f)?.write_all(b"more\n")),
        ("a rewrite", |f| fs::write(f, b"new\n")),
        ("a truncate", |f| OpenOptions::new().write(true).open(f)?.set_len(1)),
        ("a chown", |f| std::os::unix::fs::chown(f, Some(1), None)),
    ];
    for (what, change) in changes {
        setxattr(&f, "security.capability", &caps, 0).unwrap_or_else(|e| panic!("{what}: set: errno {e}"));
        assert_eq!(getxattr(&f, "security.capability"), Ok(caps.clone()), "{what}: set");
        change(&f).unwrap();
        assert_eq!(
            getxattr(&f, "security.capability"),
            Err(libc::ENODATA),
            "{what} removes the capabilities"
        );
    }
}

#[test]
fn links_symlinks_and_special_files() {
    let m = TestMount::new();
    fs::write(m.path("a"), b"shared inode").unwrap();
    fs::hard_link(m.path("a"), m.path("b")).unwrap();
    assert_eq!(fs::metadata(m.path("a")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(m.path("a")).unwrap().ino(), fs::metadata(m.path("b")).unwrap().ino());
    fs::write(m.path("b"), b"changed via b").unwrap();
    assert_eq!(fs::read(m.path("a")).unwrap(), b"changed via b");
    fs::remove_file(m.path("a")).unwrap();
    assert_eq!(fs::metadata(m.path("b")).unwrap().nlink(), 1);

    symlink("b", m.path("link")).unwrap();
    assert_eq!(fs::read_link(m.path("link")).unwrap().to_str(), Some("b"));
    assert_eq!(fs::read(m.path("link")).unwrap(), b"changed via b");
    assert_eq!(fs::symlink_metadata(m.path("link")).unwrap().len(), 1);

    let dev = std::ffi::CString::new(m.path("null").to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) }, 0);
    assert_eq!(fs::symlink_metadata(m.path("null")).unwrap().rdev(), libc::makedev(1, 3));
    let sock = std::os::unix::net::UnixListener::bind(m.path("sock")).unwrap();
    assert_eq!(mode(&m.path("sock")) & libc::S_IFMT, libc::S_IFSOCK);
    drop(sock);
}

#[test]
fn rename_in_every_form() {
    let m = TestMount::new();
    fs::write(m.path("f1"), b"one").unwrap();
    fs::write(m.path("f2"), b"two").unwrap();
    fs::rename(m.path("f1"), m.path("f2")).unwrap();
    assert_eq!(fs::read(m.path("f2")).unwrap(), b"one");
    assert!(!m.path("f1").exists());

    fs::create_dir_all(m.path("d1/inner")).unwrap();
    fs::create_dir(m.path("empty")).unwrap();
    fs::rename(m.path("d1"), m.path("empty")).unwrap();
    assert!(m.path("empty/inner").is_dir());
    fs::create_dir(m.path("full")).unwrap();
    fs::write(m.path("full/x"), b"").unwrap();
    assert_eq!(err(fs::rename(m.path("empty"), m.path("full"))), libc::ENOTEMPTY);
    assert_eq!(err(fs::rename(m.path("empty"), m.path("empty/inner/self"))), libc::EINVAL);
    assert_eq!(err(fs::rename(m.path("f2"), m.path("full"))), libc::EISDIR);
    assert_eq!(err(fs::rename(m.path("full"), m.path("f2"))), libc::ENOTDIR);

    fs::write(m.path("a"), b"A").unwrap();
    fs::write(m.path("b"), b"B").unwrap();
    assert_eq!(renameat2(&m.path("a"), &m.path("b"), libc::RENAME_NOREPLACE), Err(libc::EEXIST));
    renameat2(&m.path("a"), &m.path("c"), libc::RENAME_NOREPLACE).unwrap();
    renameat2(&m.path("c"), &m.path("full"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m.path("full")).unwrap(), b"A");
    assert!(m.path("c/x").exists());
    assert_eq!(renameat2(&m.path("c"), &m.path("missing"), libc::RENAME_EXCHANGE), Err(libc::ENOENT));
}

#[test]
fn rmdir_refuses_non_empty_and_names_are_limited_to_255_bytes() {
    let m = TestMount::new();
    fs::create_dir_all(m.path("d/e")).unwrap();
    assert_eq!(err(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    fs::remove_dir(m.path("d/e")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    let ok = "x".repeat(255);
    let long = "x".repeat(256);
    fs::write(m.path(&ok), b"").unwrap();
    assert_eq!(err(fs::write(m.path(&long), b"")), libc::ENAMETOOLONG);
    assert_eq!(err(fs::create_dir(m.path(&long))), libc::ENAMETOOLONG);
    assert_eq!(err(fs::metadata(m.path(&long))), libc::ENAMETOOLONG);
}

#[test]
fn truncate_and_timestamps() {
    let m = TestMount::new();
    let p = m.path("t");
    fs::write(&p, b"0123456789").unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(4).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"0123");
    f.set_len(6).unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"0123\0\0");
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 1) }, 0);
    assert_eq!(fs::read(&p).unwrap(), b"0");

    // utimensat: explicit 64-bit times, UTIME_OMIT, UTIME_NOW.
    let far = 4_102_444_800i64; // 2100-01-01
    let times = [
        libc::timespec { tv_sec: -86_400, tv_nsec: 123 },
        libc::timespec { tv_sec: far, tv_nsec: 999_999_999 },
    ];
    // SAFETY: a valid C string and two timespecs.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }, 0);
    let meta = fs::metadata(&p).unwrap();
    assert_eq!((meta.atime(), meta.atime_nsec()), (-86_400, 123));
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (far, 999_999_999));
    let omit_now = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_NOW },
    ];
    // SAFETY: as above.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), omit_now.as_ptr(), 0) }, 0);
    let meta = fs::metadata(&p).unwrap();
    assert_eq!(meta.atime(), -86_400, "UTIME_OMIT keeps atime");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((meta.mtime() - now).abs() < 5, "UTIME_NOW sets mtime to now");
    // Survives a remount (stored in ns).
    let stored = m.fs.resolve(b"/t").unwrap();
    assert_eq!(stored.atime_ns, -86_400 * 1_000_000_000 + 123);
}

#[test]
fn open_flags_excl_trunc_append_and_unlinked_files() {
    let m = TestMount::new();
    let p = m.path("f");
    fs::write(&p, b"first").unwrap();
    assert_eq!(err(OpenOptions::new().write(true).create_new(true).open(&p)), libc::EEXIST);
    let mut f = OpenOptions::new().write(true).truncate(true).open(&p).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 0, "O_TRUNC empties at once");
    f.write_all(b"second").unwrap();
    drop(f);
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"+tail").unwrap();
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"second+tail");

    // Unlinked while open: still readable and writable through the handle.
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    assert_eq!(s, "second+tail");
    f.write_all(b"!").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"second+tail!");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    // The kernel sends RELEASE after close returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while m.fs.totals().unwrap().files > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(m.fs.totals().unwrap().files, 0, "the inode goes with the last close");
}

#[test]
fn xattrs_in_user_trusted_and_security_namespaces() {
    let m = TestMount::new();
    let p = m.path("x");
    fs::write(&p, b"x").unwrap();
    setxattr(&p, "user.color", b"blue", 0).unwrap();
    setxattr(&p, "trusted.t", b"tv", 0).unwrap();
    setxattr(&p, "security.s", b"sv", 0).unwrap();
    assert_eq!(setxattr(&p, "user.color", b"red", libc::XATTR_CREATE), Err(libc::EEXIST));
    assert_eq!(setxattr(&p, "user.none", b"v", libc::XATTR_REPLACE), Err(libc::ENODATA));
    assert_eq!(getxattr(&p, "user.color").unwrap(), b"blue");
    assert_eq!(getxattr(&p, "user.none"), Err(libc::ENODATA));
    let names = listxattr(&p).unwrap();
    for n in ["user.tsmfs.etag", "user.color", "trusted.t", "security.s"] {
        assert!(names.contains(&n.to_string()), "{n} in {names:?}");
    }
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new("user.color").unwrap();
    // SAFETY: valid C strings.
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }, 0);
    assert_eq!(getxattr(&p, "user.color"), Err(libc::ENODATA));
}

#[test]
fn statfs_and_fallocate() {
    let m = TestMount::new();
    let c = std::ffi::CString::new(m.mnt.to_str().unwrap()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    assert!(s.f_blocks > 0 && s.f_bsize > 0);
    assert_eq!(s.f_namemax, 255);

    let p = m.path("alloc");
    fs::write(&p, b"abcdefgh").unwrap();
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: fallocate on a descriptor we own.
    assert_eq!(unsafe { libc::fallocate(fd, 0, 0, 16) }, 0);
    assert_eq!(f.metadata().unwrap().len(), 16);
    assert_eq!(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 4096) }, 0);
    assert_eq!(f.metadata().unwrap().len(), 16);
    assert_eq!(
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 2, 3) },
        0
    );
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"ab\0\0\0fgh\0\0\0\0\0\0\0\0");
}

#[test]
fn a_read_only_mount_refuses_changes() {
    let m = TestMount::with(MountOptions { allow_other: true, read_only: true, ..Default::default() });
    assert_eq!(err(fs::write(m.path("f"), b"")), libc::EROFS);
    assert_eq!(err(fs::create_dir(m.path("d"))), libc::EROFS);
    assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
}

#[test]
fn committed_reads_bypass_the_daemon_with_passthrough() {
    let m = TestMount::with(MountOptions { allow_other: true, passthrough: true, ..Default::default() });
    let body = vec![7u8; 4 << 20];
    fs::write(m.path("f"), &body).unwrap();
    // close() returns before the kernel's RELEASE reaches us; until it
    // has, the handle still counts: a writer gets no passthrough, and an
    // open through the page cache keeps the inode in that mode.
    let all_released = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while m.fs.open_handles() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    all_released();
    let before = m.fs.counters().reads();
    assert_eq!(fs::read(m.path("f")).unwrap(), body);
    let served = m.fs.counters().reads() - before;
    assert!(served > 0, "the first reader of an object reads through tsmfs, which checks its bytes");
    all_released();
    // Drop the kernel's cached pages, so that the next read needs bytes.
    let f = File::open(m.path("f")).unwrap();
    // SAFETY: an advice call on a descriptor `f` keeps open.
    assert_eq!(unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
    drop(f);
    all_released();
    let before = m.fs.counters().reads();
    assert_eq!(fs::read(m.path("f")).unwrap(), body);
    let served = m.fs.counters().reads() - before;
    assert!(m.passthrough(), "this kernel (6.9+, as root) offers FUSE passthrough");
    assert_eq!(served, 0, "passthrough, once checked: the kernel reads the object file itself");
    // The kernel's rules: no writer while passthrough readers hold the file.
    let reader = File::open(m.path("f")).unwrap();
    assert_eq!(err(OpenOptions::new().write(true).open(m.path("f"))), libc::ETXTBSY);
    drop(reader);
    // RELEASE reaches the daemon shortly after close returns.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while err(OpenOptions::new().write(true).open(m.path("f"))) == libc::ETXTBSY
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    fs::write(m.path("f"), b"writable again").unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"writable again");
}

/// Bytes of a large object are checked where a read reaches them: a
/// damaged group is EIO on the mount, the object is quarantined, and an
/// object not yet checked is never handed to the kernel for passthrough.
#[test]
fn a_damaged_large_object_reads_eio_where_it_is_damaged() {
    let m = TestMount::with(MountOptions { allow_other: true, passthrough: true, ..Default::default() });
    let mib = 1 << 20;
    let body = crate::util::noise(3, 6 * mib + 99);
    fs::write(m.path("big"), &body).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while m.fs.open_handles() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let lo = sha1_id(&body).lo_hex();
    let data = m.mnt.parent().unwrap().join("data");
    let object = data.join("objects").join(&lo[..2]).join(format!("{lo}-0000000000000000"));
    let damage = OpenOptions::new().write(true).open(&object).expect("the object");
    damage.write_all_at(&[body[4 * mib + 5] ^ 1], 4 * mib as u64 + 5).unwrap();
    drop(damage);

    let f = File::open(m.path("big")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf[..], body[..4096], "good bytes before the damage");
    assert_eq!(err(f.read_exact_at(&mut buf, 4 * mib as u64)), libc::EIO);
    assert!(!object.exists(), "quarantined");
    assert_eq!(fs::read_dir(data.join("quarantine")).unwrap().count(), 1);
}

#[test]
fn the_page_cache_is_kept_while_the_content_is_unchanged() {
    let m = TestMount::new();
    let body = vec![3u8; 1 << 20];
    fs::write(m.path("f"), &body).unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), body);
    let before = m.fs.counters().reads();
    assert_eq!(fs::read(m.path("f")).unwrap(), body);
    assert_eq!(m.fs.counters().reads(), before, "second open reads from the kept page cache");
    // A change through the mount is seen, and cached again.
    let f = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    f.write_all_at(b"new", 0).unwrap();
    drop(f);
    let mut want = body.clone();
    want[..3].copy_from_slice(b"new");
    let before = m.fs.counters().reads();
    assert_eq!(fs::read(m.path("f")).unwrap(), want);
    assert!(m.fs.counters().reads() > before, "a write-only (direct I/O) commit drops the cached pages");
    let before = m.fs.counters().reads();
    assert_eq!(fs::read(m.path("f")).unwrap(), want);
    assert_eq!(m.fs.counters().reads(), before, "and the new content is cached again");
}

#[test]
fn a_direct_write_under_an_open_cached_reader_is_seen_by_the_next_open() {
    let m = TestMount::new();
    let old = vec![1u8; 256 << 10];
    fs::write(m.path("f"), &old).unwrap();
    let reader = File::open(m.path("f")).unwrap();
    let mut buf = vec![0u8; old.len()];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, old);
    // A write-only handle (direct I/O) rewrites part of the file while the
    // reader, and its cached pages, stay open.
    let writer = OpenOptions::new().write(true).open(m.path("f")).unwrap();
    writer.write_all_at(&[2u8; 4096], 8192).unwrap();
    drop(writer);
    let mut want = old.clone();
    want[8192..8192 + 4096].fill(2);
    assert_eq!(fs::read(m.path("f")).unwrap(), want, "a new open sees the committed bytes");
    drop(reader);
    assert_eq!(fs::read(m.path("f")).unwrap(), want);
}

fn hammer(m: &TestMount, writers: usize, readers: usize, rounds: usize) {
    std::thread::scope(|s| {
        for w in 0..writers {
            s.spawn(move || {
                for round in 0..rounds {
                    let body = format!("writer {w} round {round}\n").repeat(100 + round * 37);
                    let path = m.path(&format!("w{w}"));
                    fs::write(&path, &body).unwrap();
                    let back = fs::read_to_string(&path).unwrap();
                    if back != body {
                        let mut runs: Vec<(String, usize)> = Vec::new();
                        for line in back.split_inclusive('\n') {
                            match runs.last_mut() {
                                Some((l, n)) if l == line => *n += 1,
                                _ => runs.push((line.to_string(), 1)),
                            }
                        }
                        panic!(
                            "writer {w} round {round}: read {} bytes, wrote {}: {:?}",
                            back.len(),
                            body.len(),
                            &runs[..runs.len().min(6)]
                        );
                    }
                }
            });
        }
        for r in 0..readers {
            s.spawn(move || {
                for _ in 0..rounds * 4 {
                    for w in 0..writers {
                        if let Ok(text) = fs::read_to_string(m.path(&format!("w{w}"))) {
                            // As on any Linux filesystem, a buffered reader
                            // racing an O_TRUNC rewrite may see pages of two
                            // versions (so lines may be cut and spliced at a
                            // page boundary); it never sees bytes no writer of
                            // this file wrote: no zeros, no other file's.
                            let tag = format!("w{w}");
                            let alphabet = format!("writer {w} round 0123456789\n");
                            let foreign = text.chars().find(|c| !alphabet.contains(*c));
                            assert!(foreign.is_none(), "reader {r} saw {foreign:?} in {tag}");
                        }
                    }
                }
            });
        }
    });
    for w in 0..writers {
        let want = format!("writer {w} round {}\n", rounds - 1).repeat(100 + (rounds - 1) * 37);
        let got = m.fs.resolve(format!("/w{w}").as_bytes()).unwrap().content_id();
        assert_eq!(got, Some(sha1_id(want.as_bytes())));
    }
}

#[test]
fn concurrent_writers_and_readers() {
    hammer(&TestMount::new(), 4, 2, 25);
}

#[test]
fn copy_file_range_of_a_whole_file_moves_only_the_content_id() {
    let m = TestMount::new();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.path("src"), &body).unwrap();
    fs::write(m.path("dst"), b"shorter").unwrap();
    let src = File::open(m.path("src")).unwrap();
    let dst = OpenOptions::new().write(true).open(m.path("dst")).unwrap();
    let writes_before = m.fs.counters().writes.load(std::sync::atomic::Ordering::Relaxed);
    let (sfd, dfd) = (std::os::fd::AsRawFd::as_raw_fd(&src), std::os::fd::AsRawFd::as_raw_fd(&dst));
    let mut copied = 0usize;
    while copied < body.len() {
        // SAFETY: descriptors we own; null offsets use the file positions.
        let n = unsafe {
            libc::copy_file_range(
                sfd,
                std::ptr::null_mut(),
                dfd,
                std::ptr::null_mut(),
                body.len() - copied,
                0,
            )
        };
        assert!(n > 0, "copy_file_range: {}", std::io::Error::last_os_error());
        copied += n as usize;
    }
    drop((src, dst));
    assert_eq!(fs::read(m.path("dst")).unwrap(), body);
    assert_eq!(getxattr(&m.path("dst"), "user.tsmfs.etag"), getxattr(&m.path("src"), "user.tsmfs.etag"));
    assert_eq!(
        m.fs.counters().writes.load(std::sync::atomic::Ordering::Relaxed),
        writes_before,
        "no byte was written: the target took the source's content id"
    );

    // A partial copy into the middle of a file copies bytes.
    let src = File::open(m.path("src")).unwrap();
    let dst = OpenOptions::new().write(true).open(m.path("dst")).unwrap();
    let (mut off_in, mut off_out) = (10i64, 100i64);
    // SAFETY: as above, with explicit offsets.
    let n = unsafe {
        libc::copy_file_range(
            std::os::fd::AsRawFd::as_raw_fd(&src),
            &mut off_in,
            std::os::fd::AsRawFd::as_raw_fd(&dst),
            &mut off_out,
            50,
            0,
        )
    };
    assert_eq!(n, 50);
    drop((src, dst));
    let mut want = body.clone();
    want[100..150].copy_from_slice(&body[10..60]);
    assert_eq!(fs::read(m.path("dst")).unwrap(), want);
}

/// A file whose object is gone reads as EIO (lost data, not a missing
/// name), and can be repaired in place by rewriting it.
#[test]
fn a_file_whose_object_is_missing_reads_as_eio_and_can_be_rewritten() {
    let m = crate::util::TestMount::new();
    // Both past 64 KiB: object files (smaller chunks live in the database).
    std::fs::write(m.path("medium.bin"), crate::util::noise(2, 70_000)).expect("write");
    std::fs::write(m.path("big.bin"), crate::util::noise(3, 200_000)).expect("write");
    m.fs.sync().expect("sync");
    let objects = m.mnt.parent().expect("temp dir").join("data/objects");
    for entry in walkdir::WalkDir::new(&objects).into_iter().filter_map(Result::ok) {
        if entry.file_type().is_file() {
            std::fs::remove_file(entry.path()).expect("remove object");
        }
    }
    for name in ["medium.bin", "big.bin"] {
        // Dropped from the kernel's cache, so the read reaches tsmfs.
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
        let err = std::fs::read(m.path(name)).expect_err("read of a lost file");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{name}: {err}");
        assert!(std::fs::metadata(m.path(name)).is_ok(), "{name}: the name is still there");
        let mut file =
            std::fs::OpenOptions::new().write(true).truncate(true).open(m.path(name)).expect("O_TRUNC");
        std::io::Write::write_all(&mut file, b"repaired").expect("write");
        drop(file);
        assert_eq!(std::fs::read(m.path(name)).expect("read"), b"repaired", "{name}");
    }
}
