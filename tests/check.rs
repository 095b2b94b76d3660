//! `tsmfs fsck`, `scrub` and `gc` against damage done on purpose.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{sha1_id, stderr, stdout, tsmfs, tsmfs_stdin};

/// A data dir with a few files, through the CLI.
fn data_dir(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    assert!(tsmfs(&["init", data.to_str().unwrap()]).status.success());
    for (name, word) in [("a.txt", "alpha"), ("b.txt", "bravo"), ("c.txt", "alpha")] {
        let src = dir.join(name);
        std::fs::write(&src, body_of(word)).unwrap();
        let out = tsmfs(&["put", data.to_str().unwrap(), src.to_str().unwrap(), &format!("/d/{name}")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    data
}

/// The bytes of a test file: `word` repeated, long enough to be stored as
/// an object file.
fn body_of(word: &str) -> Vec<u8> {
    crate::util::object_sized(word.as_bytes())
}

/// `body_of(word)` with its last byte changed: the same length, so only
/// hashing can tell.
fn damaged(word: &str) -> Vec<u8> {
    let mut bytes = body_of(word);
    if let Some(last) = bytes.last_mut() {
        *last ^= 0x20;
    }
    bytes
}

fn object_path(data: &Path, bytes: &[u8]) -> PathBuf {
    let lo = sha1_id(bytes).lo_hex();
    data.join("objects").join(&lo[..2]).join(format!("{lo}-0000000000000000"))
}

fn sql(data: &Path, statement: &str) {
    let conn = rusqlite::Connection::open(data.join("meta.sqlite")).unwrap();
    conn.execute_batch(statement).unwrap();
}

#[test]
fn fsck_finds_and_repairs_what_it_safely_can() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let clean = tsmfs(&["fsck", d]);
    assert!(clean.status.success(), "{}", stdout(&clean));
    assert!(stdout(&clean).contains("0 problems"), "{}", stdout(&clean));

    // Damage: wrong counts, a stray file, an object nothing names.
    sql(&data, "UPDATE contents SET refcount = 7; UPDATE inodes SET nlink = 5 WHERE ino = 1;");
    let stray = data.join("objects/00/not-an-object");
    std::fs::write(&stray, b"?").unwrap();
    let orphan = object_path(&data, b"orphan bytes");
    std::fs::write(&orphan, b"orphan bytes").unwrap();
    let found = tsmfs(&["fsck", d]);
    assert_eq!(found.status.code(), Some(1));
    let text = stdout(&found);
    for expected in [
        "reference count 7, but 2 inodes hold it",
        "inode 1: link count 5",
        "not an object",
        "nothing refers to it",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    let repaired = tsmfs(&["fsck", "--repair", d]);
    assert!(repaired.status.success(), "{}", stdout(&repaired));
    assert!(!stray.exists() && !orphan.exists());
    assert!(stdout(&tsmfs(&["fsck", d])).contains("0 problems"));
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/a.txt"])).as_bytes(), body_of("alpha"), "the files are intact");
}

#[test]
fn fsck_reports_a_lost_object_as_not_repairable() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    std::fs::remove_file(object_path(&data, &body_of("bravo"))).unwrap();
    let out = tsmfs(&["fsck", "--repair", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("its object file is missing [not repairable]"), "{}", stdout(&out));
}

#[test]
fn scrub_quarantines_a_corrupt_object_and_reads_of_it_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let clean = tsmfs(&["scrub", d]);
    assert!(clean.status.success());
    assert!(stdout(&clean).contains("2 objects"), "{}", stdout(&clean));

    // Same length, one byte different: only hashing can tell.
    let object = object_path(&data, &body_of("alpha"));
    std::fs::write(&object, damaged("alpha")).unwrap();
    let out = tsmfs(&["scrub", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("SHA-1 differs from its id"), "{}", stdout(&out));
    assert!(!object.exists());
    assert!(data.join("quarantine").read_dir().unwrap().count() == 1, "kept for a look, out of the way");

    let read = tsmfs(&["get", d, "/d/a.txt"]);
    assert!(!read.status.success(), "bad bytes are never served as good");
    assert_eq!(stdout(&read), "");
    let mut server = crate::webdav::TestServer::start_on(&data);
    let status = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &server.url("/d/c.txt")])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&status.stdout), "500", "a file with the same content fails too");
    server.stop();
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/b.txt"])).as_bytes(), body_of("bravo"), "the rest reads");
    assert_eq!(tsmfs(&["fsck", d]).status.code(), Some(1), "fsck knows the object is gone");
}

#[test]
fn gc_removes_garbage_beside_a_server_without_touching_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let orphan = object_path(&data, b"left by a crash");
    std::fs::write(&orphan, b"left by a crash").unwrap();
    // A variant whose object is gone, one whose object is there, and a
    // file that is no variant at all.
    let variants = data.join("variants/aa");
    std::fs::create_dir_all(&variants).unwrap();
    let gone = variants.join(format!("aa{}-0000000000000000.gzip", "0".repeat(38)));
    std::fs::write(&gone, b"orphan").unwrap();
    let kept_id = crate::util::sha1_id(&body_of("alpha"));
    let kept =
        data.join(format!("variants/{}/{}-{:016x}.br", &kept_id.lo_hex()[..2], kept_id.lo_hex(), kept_id.hi));
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, b"kept").unwrap();
    let foreign = variants.join("notes.txt");
    std::fs::write(&foreign, b"not ours").unwrap();
    let mut server = crate::webdav::TestServer::start_on(&data);
    // While gc runs (five times), a client stores 150 new contents: none
    // may be taken for garbage, though each is an object without a row
    // for a moment.
    let writer = {
        let base = server.url("");
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            for n in 0..150 {
                let body = format!("live {n} ").repeat(n + 1);
                let status =
                    agent.put(format!("{base}/live-{n}")).send(body.as_bytes()).expect("PUT").status();
                assert_eq!(status.as_u16(), 201);
            }
        })
    };
    let mut outs = Vec::new();
    for _ in 0..5 {
        outs.push(tsmfs(&["gc", d]));
    }
    writer.join().expect("writer");
    let out = &outs[0];
    assert!(out.status.success(), "{}", stderr(out));
    assert!(stderr(out).contains("a server holds"), "{}", stderr(out));
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for n in 0..150 {
        let mut response = agent.get(server.url(&format!("/live-{n}"))).call().expect("GET");
        let body = response.body_mut().read_to_vec().expect("body");
        assert_eq!(response.status().as_u16(), 200, "live-{n}");
        assert_eq!(body, format!("live {n} ").repeat(n + 1).into_bytes(), "live-{n}");
    }
    server.stop();
    assert!(stdout(out).contains("removed 1 objects"), "{}", stdout(out));
    assert!(stdout(out).contains("1 orphaned compressed variants"), "{}", stdout(out));
    assert!(!orphan.exists());
    assert!(!gone.exists() && kept.exists() && foreign.exists());
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/c.txt"])).as_bytes(), body_of("alpha"));
}

fn curl_status(args: &[&str]) -> (String, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let split = out.stdout.iter().rposition(|&b| b == b'\n').expect("status");
    (String::from_utf8_lossy(&out.stdout[split + 1..]).into_owned(), out.stdout[..split].to_vec())
}

/// Damage found by a read, without a scrub: the read fails, the object is
/// quarantined, and nothing made from it is served.
#[test]
fn a_corrupt_object_is_never_served_and_is_quarantined_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let object = object_path(&data, &body_of("bravo"));
    std::fs::write(&object, damaged("bravo")).unwrap();
    let read = tsmfs(&["get", d, "/d/b.txt"]);
    assert!(!read.status.success() && stdout(&read).is_empty(), "the CLI read fails");
    assert!(!object.exists(), "quarantined by the read that found it");
    assert_eq!(data.join("quarantine").read_dir().unwrap().count(), 1);

    std::fs::write(object_path(&data, &body_of("alpha")), damaged("alpha")).unwrap();
    let mut server = crate::webdav::TestServer::start_on(&data);
    let (status, body) = curl_status(&[&server.url("/d/a.txt")]);
    assert_eq!((status.as_str(), body.as_slice()), ("500", &b""[..]), "refused before any byte");
    assert!(!object_path(&data, &body_of("alpha")).exists(), "quarantined");
    assert_eq!(curl_status(&[&server.url("/d/c.txt")]).0, "500", "the other file with that content too");
    server.stop();
}

fn outboard_path(data: &Path, bytes: &[u8]) -> PathBuf {
    let lo = sha1_id(bytes).lo_hex();
    data.join("outboard").join(&lo[..2]).join(format!("{lo}-0000000000000000"))
}

/// Bytes the process `pid` has read through system calls so far.
fn bytes_read_by(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|n| n.parse().ok()).expect("rchar")
}

/// Flip one bit of `path` at `at` (an object file is read-only, but not
/// to root).
fn flip_bit(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open for damage");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
}

/// A large object is checked group by group as reads reach it: ranges of
/// good groups are served without reading the rest of the file, the
/// damaged group is never sent, and the object is then quarantined.
#[test]
fn a_large_object_is_checked_where_it_is_read_and_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let mib = 1 << 20;
    let body = crate::util::noise(6, 40 * mib + 321);
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &body).unwrap();
    assert!(tsmfs(&["put", d, src.to_str().unwrap(), "/big.bin"]).status.success());
    let object = object_path(&data, &body);
    assert!(outboard_path(&data, &body).exists(), "a large object is stored with its outboard");
    let damaged_at = 30 * mib as u64 + 17;
    flip_bit(&object, damaged_at);

    let mut server = crate::webdav::TestServer::start_on(&data);
    let before = bytes_read_by(server.pid());
    let (status, got) = curl_status(&["-r", "20000000-20000099", &server.url("/big.bin")]);
    assert_eq!((status.as_str(), got.as_slice()), ("206", &body[20_000_000..20_000_100]));
    let read = bytes_read_by(server.pid()) - before;
    assert!(read < 3 * mib as u64, "a 100-byte range of a 40 MiB file read {read} bytes");

    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", &server.url("/big.bin")])
        .output()
        .expect("curl");
    assert!(!out.status.success(), "the body is cut, never completed with bad bytes");
    assert!(out.stdout.len() as u64 <= damaged_at, "{} bytes sent", out.stdout.len());
    assert!(body.starts_with(&out.stdout), "what was sent is the file's");
    assert!(!object.exists() && !outboard_path(&data, &body).exists(), "quarantined by the read");
    assert_eq!(curl_status(&[&server.url("/big.bin")]).0, "500");
    server.stop();
    let scrub = tsmfs(&["scrub", d]);
    assert_eq!(scrub.status.code(), Some(1), "{}", stdout(&scrub));
}

/// An outboard is derived data: missing or damaged, it is made again
/// from the object (whose SHA-1 then vouches for it), by the first read
/// or by a scrub, and gc removes one whose object is gone.
#[test]
fn a_missing_or_damaged_outboard_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let body = crate::util::noise(8, (5 << 20) + 3);
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &body).unwrap();
    assert!(tsmfs(&["put", d, src.to_str().unwrap(), "/big.bin"]).status.success());
    let outboard = outboard_path(&data, &body);
    let made = std::fs::read(&outboard).expect("outboard");

    std::fs::remove_file(&outboard).unwrap();
    assert_eq!(tsmfs(&["get", d, "/big.bin"]).stdout, body, "read without one");
    assert_eq!(std::fs::read(&outboard).expect("made again by the read"), made);

    flip_bit(&outboard, 40);
    let mut server = crate::webdav::TestServer::start_on(&data);
    let (status, got) = curl_status(&["-r", "3000000-3000009", &server.url("/big.bin")]);
    assert_eq!((status.as_str(), got.as_slice()), ("206", &body[3_000_000..3_000_010]));
    server.stop();
    assert_eq!(std::fs::read(&outboard).unwrap(), made, "made again, the object kept");
    assert!(object_path(&data, &body).exists());

    std::fs::remove_file(&outboard).unwrap();
    let scrub = tsmfs(&["scrub", d]);
    assert!(scrub.status.success(), "{}", stdout(&scrub));
    assert_eq!(std::fs::read(&outboard).expect("made again by scrub"), made);

    let stray = data.join("outboard/00/00112233445566778899aabbccddeeff00112233-0000000000000000");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, b"for an object that is gone").unwrap();
    let gc = tsmfs(&["gc", d]);
    assert!(stdout(&gc).contains("1 orphaned outboards"), "{}", stdout(&gc));
    assert!(!stray.exists() && outboard.exists());
}

/// A variant carries its blake3: a damaged one is dropped and made again,
/// never served; scrub finds it too.
#[test]
fn a_corrupt_variant_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let css = "body { color: teal; margin: 0 auto; } ".repeat(100);
    let src = dir.path().join("site.css");
    std::fs::write(&src, &css).unwrap();
    assert!(tsmfs(&["put", data.to_str().unwrap(), src.to_str().unwrap(), "/site.css"]).status.success());
    let br = |server: &crate::webdav::TestServer| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-D", "-", "-o", "/dev/null", "-H", "Accept-Encoding: br", &server.url("/site.css")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase().contains("content-encoding: br")
    };
    let mut server = crate::webdav::TestServer::start_on(&data);
    let started = std::time::Instant::now();
    while !br(&server) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no variant made");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    server.stop();
    let lo = sha1_id(css.as_bytes()).lo_hex();
    let variant = data.join("variants").join(&lo[..2]).join(format!("{lo}-0000000000000000.br"));
    let mut bytes = std::fs::read(&variant).expect("the stored variant");
    bytes[3] ^= 0x55;
    std::fs::write(&variant, &bytes).unwrap();

    let mut server = crate::webdav::TestServer::start_on(&data);
    let (status, body) = curl_status(&["--compressed", &server.url("/site.css")]);
    assert_eq!(
        (status.as_str(), body == css.as_bytes()),
        ("200", true),
        "the identity bytes, or a good variant"
    );
    let started = std::time::Instant::now();
    while !br(&server) {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no variant made again");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, body) = curl_status(&["--compressed", &server.url("/site.css")]);
    assert!(body == css.as_bytes(), "the new variant decodes to the file");
    server.stop();

    let mut bytes = std::fs::read(&variant).expect("the variant made again");
    bytes[3] ^= 0x55;
    std::fs::write(&variant, &bytes).unwrap();
    let out = tsmfs(&["scrub", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("corrupt variant"), "{}", stdout(&out));
    assert!(!variant.exists());
}

/// `tsmfs` with the process umask set to `umask`.
fn tsmfs_under_umask(umask: u32) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tsmfs"));
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(move || {
            libc::umask(umask);
            Ok(())
        })
    };
    command
}

/// A server process, stopped (SIGTERM) when the test ends, even failing.
struct StopOnDrop(std::process::Child);

impl StopOnDrop {
    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid touches no memory.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        self.0.wait().expect("wait for the server")
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.stop();
        }
    }
}

/// Every file and directory under `data` with its permission bits.
fn modes_under(data: &Path) -> Vec<(PathBuf, bool, u32)> {
    walkdir::WalkDir::new(data)
        .into_iter()
        .map(|entry| {
            let entry = entry.expect("walk the data directory");
            let metadata = entry.metadata().expect("stat");
            (entry.path().to_owned(), metadata.is_dir(), metadata.permissions().mode() & 0o7777)
        })
        .collect()
}

/// Directories 0700, objects 0400 (read-only), every other file 0600.
fn assert_private(data: &Path, when: &str) {
    let objects = data.join("objects");
    for (path, is_dir, mode) in modes_under(data) {
        let expected = if is_dir {
            0o700
        } else if path.starts_with(&objects) || path.starts_with(data.join("quarantine")) {
            0o400
        } else {
            0o600
        };
        assert_eq!(mode, expected, "{when}: {} is {mode:04o}", path.display());
    }
}

/// Issue 15: variants/ and quarantine/ were 0755 with 0644 files, and
/// meta.sqlite with its -wal and -shm 0644, so every local user could
/// read every name, xattr and dead property, and a gzip variant of a
/// mode-600 file. Now everything tsmfs makes in a data directory is its
/// owner's alone, whatever the umask.
#[test]
fn everything_in_a_data_directory_is_private_whatever_the_umask() {
    crate::util::require_fuse();
    for umask in [0o022, 0o002] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let d = data.to_str().unwrap();
        let run = |args: &[&str], stdin: &[u8]| {
            let mut child = tsmfs_under_umask(umask)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run tsmfs");
            child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
            let out = child.wait_with_output().expect("wait for tsmfs");
            assert!(out.status.success(), "umask {umask:03o}, {args:?}: {}", stderr(&out));
        };
        run(&["init", d], b"");
        let page = "<p>a private page</p>\n".repeat(100);
        run(&["put", d, "-", "/page.html"], page.as_bytes());
        run(&["put", d, "-", "/alpha.txt"], &body_of("alpha"));

        // A server: the log beside the database, and a gzip variant.
        let mut server = StopOnDrop(
            tsmfs_under_umask(umask)
                .args(["webdav", "--listen", "127.0.0.1:0", d])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start tsmfs webdav"),
        );
        let mut lines = BufReader::new(server.0.stderr.take().expect("stderr")).lines();
        let base = loop {
            let line = lines.next().expect("server exited before listening").expect("read stderr");
            if let Some(at) = line.find("http://") {
                break line[at..].trim_end_matches('/').to_owned();
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let deadline = Instant::now() + Duration::from_secs(20);
        let variant_stored = || {
            walkdir::WalkDir::new(data.join("variants"))
                .into_iter()
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().ends_with(".gzip"))
        };
        while !variant_stored() {
            assert!(Instant::now() < deadline, "umask {umask:03o}: no gzip variant stored");
            let response =
                agent.get(format!("{base}/page.html")).header("Accept-Encoding", "gzip").call().expect("GET");
            assert_eq!(response.status().as_u16(), 200);
            std::thread::sleep(Duration::from_millis(50));
        }
        for log in ["meta.sqlite-wal", "meta.sqlite-shm"] {
            assert!(data.join(log).exists(), "{log} exists while the server runs");
        }
        assert_private(&data, &format!("umask {umask:03o}, while serving"));
        assert!(server.stop().success());

        // A corrupt object, quarantined.
        std::fs::write(object_path(&data, &body_of("alpha")), damaged("alpha")).unwrap();
        let scrub = tsmfs_under_umask(umask).args(["scrub", d]).output().unwrap();
        assert_eq!(scrub.status.code(), Some(1), "{}", stdout(&scrub));

        // A mount in the background, logging to DATA/tsmfs.log.
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mount = tsmfs_under_umask(umask).args(["mount", d, mnt.to_str().unwrap()]).output().unwrap();
        assert!(mount.status.success(), "{}", stderr(&mount));
        assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
        // The daemon commits, checkpoints and exits, freeing the lock.
        let deadline = Instant::now() + Duration::from_secs(10);
        let free = || tsmfs_stdin(&["put", d, "-", "/probe"], b"p").status.success();
        while !free() {
            assert!(Instant::now() < deadline, "the mount daemon still holds the data directory");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(data.join("tsmfs.log").exists() && data.join("quarantine").exists());
        assert_private(&data, &format!("umask {umask:03o}, at rest"));
    }
}

/// A data directory an older tsmfs made (0755 directories, 0644 files,
/// 0444 objects): fsck names each loose path and fails; --repair makes
/// them private, and fsck passes.
#[test]
fn fsck_reports_and_repair_fixes_modes_that_let_others_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    let object = object_path(&data, &body_of("alpha"));
    let variants = data.join("variants/aa");
    std::fs::create_dir_all(&variants).unwrap();
    let variant = variants.join(format!("aa{}-0000000000000000.gzip", "0".repeat(38)));
    std::fs::write(&variant, b"compressed").unwrap();
    let loose = [
        (data.clone(), 0o755),
        (data.join("meta.sqlite"), 0o644),
        (data.join("tsmfs.lock"), 0o664),
        (data.join("objects"), 0o755),
        (object.parent().unwrap().to_owned(), 0o775),
        (object.clone(), 0o444),
        (data.join("variants"), 0o755),
        (variant.clone(), 0o644),
    ];
    for (path, mode) in &loose {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    let found = tsmfs(&["fsck", d]);
    assert_eq!(found.status.code(), Some(1), "{}", stdout(&found));
    let text = stdout(&found);
    for (path, mode) in &loose {
        let line = format!("{}: mode {mode:04o} lets group or others in", path.display());
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    // Opened by this fsck, the database's log came out as loose as the
    // database: it is repaired too.
    assert!(text.contains("meta.sqlite-wal: mode 0644"), "{text}");

    let repaired = tsmfs(&["fsck", "--repair", d]);
    assert!(repaired.status.success(), "{}", stdout(&repaired));
    assert!(stdout(&repaired).contains("[repaired]"), "{}", stdout(&repaired));
    assert_private(&data, "after fsck --repair");
    let clean = tsmfs(&["fsck", d]);
    assert!(stdout(&clean).contains("0 problems"), "{}", stdout(&clean));
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/a.txt"])).as_bytes(), body_of("alpha"), "the files are intact");
}

/// Small chunks live in the database, which keeps no checksums: a read
/// checks them against their SHA-1 and fails rather than serve bad
/// bytes; scrub moves them out to the quarantine.
#[test]
fn a_corrupt_small_chunk_in_the_database_is_never_served_and_scrub_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    assert!(tsmfs_stdin(&["put", d, "-", "/small.txt"], b"small and precious").status.success());
    assert!(!object_path(&data, b"small and precious").exists(), "no object file for a small chunk");
    assert_eq!(stdout(&tsmfs(&["get", d, "/small.txt"])), "small and precious");
    assert!(tsmfs(&["fsck", d]).status.success(), "{}", stdout(&tsmfs(&["fsck", d])));

    sql(&data, "UPDATE chunk_bytes SET bytes = CAST('small and preciouS' AS BLOB) WHERE length(bytes) = 18");
    let read = tsmfs(&["get", d, "/small.txt"]);
    assert!(!read.status.success() && stdout(&read).is_empty(), "the read fails: {}", stdout(&read));
    let mut server = crate::webdav::TestServer::start_on(&data);
    let (status, body) = curl_status(&[&server.url("/small.txt")]);
    assert_eq!((status.as_str(), body.as_slice()), ("500", &b""[..]), "refused before any byte");
    server.stop();

    let out = tsmfs(&["scrub", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("SHA-1 differs from its id"), "{}", stdout(&out));
    let quarantined: Vec<_> =
        data.join("quarantine").read_dir().unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(std::fs::read(&quarantined[0]).unwrap(), b"small and preciouS", "kept for a look");
    assert!(!tsmfs(&["get", d, "/small.txt"]).status.success(), "still never served");
    assert_eq!(tsmfs(&["fsck", d]).status.code(), Some(1), "fsck knows the bytes are gone");
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/b.txt"])).as_bytes(), body_of("bravo"), "the rest reads");
}

/// A data directory from before schema 6 keeps its small chunks as
/// object files: they read, check and dedupe as before.
#[test]
fn small_chunks_stored_as_object_files_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    let d = data.to_str().unwrap();
    assert!(tsmfs_stdin(&["put", d, "-", "/old.txt"], b"an older small file").status.success());
    // What an older tsmfs would have stored: the bytes in an object file.
    let object = object_path(&data, b"an older small file");
    std::fs::write(&object, "an older small file").unwrap();
    std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o400)).unwrap();
    sql(&data, "DELETE FROM chunk_bytes");

    assert_eq!(stdout(&tsmfs(&["get", d, "/old.txt"])), "an older small file");
    let fsck = tsmfs(&["fsck", d]);
    assert!(fsck.status.success(), "{}", stdout(&fsck));
    assert!(tsmfs_stdin(&["put", d, "-", "/again.txt"], b"an older small file").status.success());
    assert_eq!(stdout(&tsmfs(&["get", d, "/again.txt"])), "an older small file");
    assert!(object.exists(), "the new file shares the object");
    let scrub = tsmfs(&["scrub", d]);
    assert!(scrub.status.success(), "{}", stdout(&scrub));
}
