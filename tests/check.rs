//! `tsmfs fsck`, `scrub` and `gc` against damage done on purpose.

use std::path::{Path, PathBuf};

use crate::util::{sha1_id, stderr, stdout, tsmfs};

/// A data dir with a few files, through the CLI.
fn data_dir(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    assert!(tsmfs(&["init", data.to_str().unwrap()]).status.success());
    for (name, body) in [("a.txt", "alpha"), ("b.txt", "bravo"), ("c.txt", "alpha")] {
        let src = dir.join(name);
        std::fs::write(&src, body).unwrap();
        let out = tsmfs(&["put", data.to_str().unwrap(), src.to_str().unwrap(), &format!("/d/{name}")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    data
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
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/a.txt"])), "alpha", "the files are intact");
}

#[test]
fn fsck_reports_a_lost_object_as_not_repairable() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path());
    std::fs::remove_file(object_path(&data, b"bravo")).unwrap();
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
    let object = object_path(&data, b"alpha");
    std::fs::write(&object, b"alphA").unwrap();
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
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/b.txt"])), "bravo", "the rest reads");
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
    let kept_id = crate::util::sha1_id(b"alpha");
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
    assert_eq!(stdout(&tsmfs(&["get", d, "/d/c.txt"])), "alpha");
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
    let object = object_path(&data, b"bravo");
    std::fs::write(&object, b"bravO").unwrap();
    let read = tsmfs(&["get", d, "/d/b.txt"]);
    assert!(!read.status.success() && stdout(&read).is_empty(), "the CLI read fails");
    assert!(!object.exists(), "quarantined by the read that found it");
    assert_eq!(data.join("quarantine").read_dir().unwrap().count(), 1);

    std::fs::write(object_path(&data, b"alpha"), b"alphA").unwrap();
    let mut server = crate::webdav::TestServer::start_on(&data);
    let (status, body) = curl_status(&[&server.url("/d/a.txt")]);
    assert_eq!((status.as_str(), body.as_slice()), ("500", &b""[..]), "refused before any byte");
    assert!(!object_path(&data, b"alpha").exists(), "quarantined");
    assert_eq!(curl_status(&[&server.url("/d/c.txt")]).0, "500", "the other file with that content too");
    server.stop();
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
