//! A full disk and read-only media: clear errors, nothing corrupted, the
//! previous version of every file intact. The data directory lives on a
//! small tmpfs mounted for the test (root).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::serve::{Served, agent, get, put, request};

/// A tmpfs of a few MiB, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("small");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { path, _dir: dir }
    }

    fn remount_read_only(&self) {
        let status =
            Command::new("mount").args(["-o", "remount,ro"]).arg(&self.path).status().expect("mount");
        assert!(status.success(), "remount read-only");
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        let path = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: statvfs writes into the zeroed struct we own.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stats) }, 0);
        (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn tsmfs(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tsmfs")).args(args).output().expect("run tsmfs")
}

/// PUT with curl, which reads an early answer (507 before the whole body
/// was sent) where a simpler client sees only the connection closing.
fn curl_put(url: &str, bytes: &[u8]) -> u16 {
    let body = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(body.path(), bytes).expect("write body");
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(body.path())
        .arg(url)
        .output()
        .expect("run curl (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout).parse().expect("status")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Write `bytes` over the start of an existing file (no O_TRUNC) and
/// close it: how many bytes the writes took, and the first error (close's
/// included).
fn overwrite(path: &Path, bytes: &[u8]) -> (usize, std::io::Result<()>) {
    let mut file = match std::fs::OpenOptions::new().write(true).custom_flags(0).open(path) {
        Ok(file) => file,
        Err(e) => return (0, Err(e)),
    };
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..(written + (1 << 20)).min(bytes.len())]) {
            Ok(n) => written += n,
            Err(e) => return (written, Err(e)),
        }
    }
    (written, close(file))
}

fn close(file: std::fs::File) -> std::io::Result<()> {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor came from into_raw_fd and is closed once.
    match unsafe { libc::close(file.into_raw_fd()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// A commit that fails at close discards the pending writes there and
/// then: right after close returns, the file is its previous version, size
/// included (the kernel had computed a size from the writes); a later
/// close does not publish them after all; and another writer open at the
/// time hears of the loss once, as Linux reports a writeback error to each
/// open descriptor. (Writes once stayed pending for a retry at release,
/// and a reader opening in between read a mix of both versions.)
#[test]
fn a_failed_close_discards_the_writes_and_every_writer_hears_of_it() {
    if !crate::util::alone_in_own_process() {
        return;
    }
    let small = Tmpfs::mount(16);
    let served = Served::start_at(&small.path, &[]);
    let path = served.path("file");
    let v1 = pattern(100_000, 1);
    std::fs::write(&path, &v1).expect("write v1");
    let open = || std::fs::OpenOptions::new().write(true).open(&path).expect("open for writing");
    let (filling, other) = (open(), open());
    // Pending writes in memory (past the old end: the kernel's size grows);
    // then the disk fills, and their commit has no room for its object.
    std::os::unix::fs::FileExt::write_all_at(&filling, &pattern(150_000, 2), 50_000).expect("pending writes");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 200_000);
    let filler = small.path.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    while file.write_all(&[0u8; 1 << 16]).is_ok() {}
    drop(file);
    let reader = std::fs::File::open(&path).expect("a reader opened before the close");

    let error = close(filling).expect_err("the commit at close needs room");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), v1.len() as u64, "the kernel's size");
    assert_eq!(std::fs::read(&path).expect("read"), v1);
    let mut before = Vec::new();
    std::io::Read::read_to_end(&mut &reader, &mut before).expect("read the handle opened before");
    assert_eq!(before, v1, "a handle opened before the failed close");

    let error = other.sync_all().expect_err("the other writer hears of the loss");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");
    other.sync_all().expect("once only");
    close(other).expect("nothing lost since");
    drop(reader);
    assert_eq!(std::fs::read(&path).expect("read"), v1, "no later close published the writes");
    std::fs::remove_file(&filler).expect("remove filler");
    let v2 = pattern(200_000, 3);
    std::fs::write(&path, &v2).expect("room again");
    assert_eq!(std::fs::read(&path).expect("read"), v2);
    served.stop();
}

#[test]
fn a_full_disk_gives_507_and_enospc_and_keeps_every_previous_version() {
    if !crate::util::alone_in_own_process() {
        return;
    }
    let small = Tmpfs::mount(24);
    let served = Served::start_at(&small.path, &[]);
    let agent = agent();
    let (web_v1, fuse_v1) = (pattern(300_000, 1), pattern(300_000, 2));
    assert_eq!(put(&agent, &served.url("/web"), &web_v1, &[]), 201);
    std::fs::write(served.path("fuse"), &fuse_v1).expect("write through the mount");
    let used_before = small.used();

    // Bigger than the whole file system, over WebDAV and through the mount.
    let huge = pattern(40 << 20, 3);
    assert_eq!(curl_put(&served.url("/web"), &huge), 507, "a PUT that does not fit");
    assert_eq!(curl_put(&served.url("/new"), &huge), 507, "a new file that does not fit");
    let (written, result) = overwrite(&served.path("fuse"), &huge);
    let error = result.expect_err("a write that does not fit");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC), "{error}");

    // Every previous version is whole, nothing half-made appeared, and the
    // space the failed writes took is free again. Through the mount, as on
    // any POSIX file system, the writes that returned may have reached the
    // file; but only whole: the old bytes, or the old ones overwritten by
    // exactly what the writes took.
    assert_eq!(get(&agent, &served.url("/web")).2, web_v1);
    let mut overwritten = huge[..written].to_vec();
    overwritten.extend_from_slice(fuse_v1.get(written..).unwrap_or_default());
    let now = std::fs::read(served.path("fuse")).expect("read");
    assert!(
        now == fuse_v1 || now == overwritten,
        "the mount's file holds {} bytes of neither version ({written} bytes were written, then {:?})",
        now.len(),
        error
    );
    eprintln!(
        "through the mount: {written} bytes written before ENOSPC; the file holds the {} version",
        if now == fuse_v1 { "old" } else { "overwritten" }
    );
    assert_eq!(get(&agent, &served.url("/new")).0, 404);
    assert!(!served.path("new").exists());
    // What the writes that returned put in the file is the file's now.
    let kept = if now == fuse_v1 { 0 } else { now.len() as u64 };
    // (The kernel releases a closed file asynchronously, and what a commit
    // replaced goes once it is durable: give it a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while small.used() > used_before + kept + (2 << 20) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let leftover = small.used().saturating_sub(used_before);
    let staged: Vec<_> = std::fs::read_dir(small.path.join("data/staging"))
        .expect("staging")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        leftover < kept + (2 << 20),
        "{leftover} bytes are still on disk beyond the {kept} the file holds; staging: {staged:?}"
    );

    // The mount's file may hold most of the disk now: let it go.
    std::fs::remove_file(served.path("fuse")).expect("remove the mount's file");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while small.used() > used_before + (2 << 20) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Fill the disk completely (outside the data dir): changes that need
    // room fail cleanly, and work again once there is room.
    let filler = small.path.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    while file.write_all(&[0u8; 1 << 16]).is_ok() {}
    drop(file);
    assert_eq!(curl_put(&served.url("/web"), &pattern(100_000, 4)), 507, "a PUT on a full disk");
    let mkcol = request(&agent, "MKCOL", &served.url("/dir"), &[]).0;
    assert!(mkcol == 507 || mkcol == 201, "MKCOL on a full disk: {mkcol}");
    assert_eq!(get(&agent, &served.url("/web")).2, web_v1);
    std::fs::remove_file(&filler).expect("remove filler");
    let web_v2 = pattern(100_000, 5);
    assert_eq!(put(&agent, &served.url("/web"), &web_v2, &[]), 204, "room again");
    assert_eq!(get(&agent, &served.url("/web")).2, web_v2);
    // Stopping on a full disk: the final checkpoint may find no room; the
    // log keeps every change, so that is a warning, not a failure.
    let mut file = std::fs::File::create(&filler).expect("filler");
    while file.write_all(&[0u8; 1 << 16]).is_ok() {}
    drop(file);
    served.stop();
    std::fs::remove_file(&filler).expect("remove filler");

    let fsck = tsmfs(&["fsck".as_ref(), small.path.join("data").as_os_str()]);
    assert!(fsck.status.success(), "fsck: {}", String::from_utf8_lossy(&fsck.stdout));
}

#[test]
fn read_only_media_is_refused_for_writing_and_served_read_only() {
    let small = Tmpfs::mount(8);
    let data = small.path.join("data");
    assert!(tsmfs(&["init".as_ref(), data.as_os_str()]).status.success());
    let src = small.path.join("hello.txt");
    std::fs::write(&src, b"hello").expect("source");
    assert!(
        tsmfs(&["put".as_ref(), data.as_os_str(), src.as_os_str(), "/hello.txt".as_ref()]).status.success()
    );
    small.remount_read_only();

    let refused = tsmfs(&["webdav".as_ref(), data.as_os_str(), "--listen".as_ref(), "127.0.0.1:0".as_ref()]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("read-only file system") && message.contains("--read-only"), "{message}");

    let mut server = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .arg("webdav")
        .arg(&data)
        .args(["--read-only", "--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(server.stderr.take().expect("stderr")));
    let base = loop {
        let line = lines.next().expect("the read-only server exited").expect("read");
        if let Some(at) = line.find("http://") {
            break line[at..].trim_end_matches('/').to_owned();
        }
    };
    let agent = agent();
    let (status, etag, body) = get(&agent, &format!("{base}/hello.txt"));
    assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(etag.as_deref(), Some("\"aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d\""));
    assert_eq!(put(&agent, &format!("{base}/x"), b"x", &[]), 403);
    // SAFETY: kill(2) on our own child's pid touches no memory.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    assert!(server.wait().expect("wait").success());
    let listed = tsmfs(&["ls".as_ref(), data.as_os_str(), "/".as_ref()]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "hello.txt");
}
