//! `tsmfs serve`: FUSE and WebDAV in one process over one tree, checked
//! for coherence through a real mount and a real HTTP server.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::util::sha1_id;

/// A `tsmfs serve` process with its mount and HTTP address.
pub(crate) struct Served {
    child: Child,
    base: String,
    mnt: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Served {
    fn start(extra: &[&str]) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut served = Served::start_at(dir.path(), extra);
        served.dir = Some(dir);
        served
    }

    /// Serve `root/data` (made here), mounted at `root/mnt`.
    pub(crate) fn start_at(root: &Path, extra: &[&str]) -> Served {
        crate::util::require_fuse();
        let data = root.join("data");
        let mnt = root.join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let init = Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("init").arg(&data).output().expect("init");
        assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
            .arg("serve")
            .arg(&data)
            .arg("--mount")
            .arg(&mnt)
            .args(["--listen", "127.0.0.1:0", "--allow-other"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tsmfs serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut mounted = false;
        let base = loop {
            let line = lines.next().expect("tsmfs serve exited early").expect("read stderr");
            mounted |= line.contains("mounted at");
            assert!(!line.contains("not mounted"), "{line}");
            if let Some(at) = line.find("http://") {
                break line[at..].trim_end_matches('/').to_owned();
            }
        };
        assert!(mounted, "the mount came up before the listener");
        std::thread::spawn(move || lines.for_each(drop));
        Served { child, base, mnt, dir: None }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.mnt.join(name)
    }

    /// SIGTERM; the exit status must be 0 and the mount gone.
    pub(crate) fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid touches no memory.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "exit status {status}");
        let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
        assert!(!mounts.contains(self.mnt.to_str().expect("utf-8")), "still mounted after exit");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
        let _ = Command::new("umount").arg(&self.mnt).stderr(Stdio::null()).status();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).allow_non_standard_methods(true).build().into()
}

pub(crate) fn put(agent: &ureq::Agent, url: &str, bytes: &[u8], headers: &[(&str, &str)]) -> u16 {
    let mut request = agent.put(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send(bytes).expect("PUT").status().as_u16()
}

/// Status, ETag and body of a GET.
pub(crate) fn get(agent: &ureq::Agent, url: &str) -> (u16, Option<String>, Vec<u8>) {
    let mut response = agent.get(url).call().expect("GET");
    let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.body_mut().with_config().limit(1 << 30).read_to_vec().expect("body");
    (response.status().as_u16(), etag, body)
}

pub(crate) fn request(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut response = agent.run(builder.body(()).expect("request")).expect(method);
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), body)
}

/// Deterministic bytes of any length.
fn version(i: usize, len: usize) -> Vec<u8> {
    crate::util::noise(i as u64, len)
}

#[test]
fn after_each_put_the_mount_reads_exactly_the_new_bytes() {
    let served = Served::start(&[]);
    let agent = agent();
    let url = served.url("/f.bin");
    let on_mount = served.path("f.bin");
    let (mut stale, mut wrong_size) = (0, 0);
    for i in 0..1000 {
        // Sizes grow and shrink, across page and read-request boundaries.
        let len = match i % 5 {
            0 => 0,
            1 => (i * 7919) % 300_000,
            2 => 4096 * (i % 7),
            3 => 1 + i % 100,
            _ => (i * 104_729) % 1_500_000,
        };
        let bytes = version(i, len);
        let status = put(&agent, &url, &bytes, &[]);
        assert!(status == 201 || status == 204, "PUT {i}: {status}");
        if std::fs::metadata(&on_mount).expect("stat on the mount").len() != len as u64 {
            wrong_size += 1;
        }
        if std::fs::read(&on_mount).expect("read on the mount") != bytes {
            stale += 1;
        }
    }
    assert_eq!((stale, wrong_size), (0, 0), "stale reads and wrong sizes in 1,000 PUTs");
    served.stop();
}

#[test]
fn after_write_and_close_on_the_mount_get_returns_the_bytes_and_their_sha1() {
    let served = Served::start(&[]);
    let agent = agent();
    for i in 0..100 {
        let bytes = version(i, (i * 48_271) % 700_000);
        std::fs::write(served.path("w.bin"), &bytes).expect("write on the mount");
        let (status, etag, body) = get(&agent, &served.url("/w.bin"));
        assert_eq!(status, 200);
        assert!(body == bytes, "GET {i} returned other bytes");
        assert_eq!(etag, Some(sha1_id(&bytes).etag()), "ETag {i}");
    }
    served.stop();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    names
}

#[test]
fn namespace_changes_on_either_side_show_at_once_on_the_other() {
    let served = Served::start(&[]);
    let agent = agent();
    // WebDAV → mount. Let the kernel cache everything first.
    assert_eq!(put(&agent, &served.url("/a.txt"), b"a", &[]), 201);
    assert_eq!(request(&agent, "MKCOL", &served.url("/dir"), &[]).0, 201);
    assert_eq!(names(&served.mnt), ["a.txt", "dir"]);
    assert!(served.path("a.txt").exists() && served.path("dir").is_dir());
    let nlink = |p: &Path| std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(p).expect("stat"));
    assert_eq!(nlink(&served.mnt), 3);

    let destination = served.url("/dir/b.txt");
    assert_eq!(request(&agent, "MOVE", &served.url("/a.txt"), &[("Destination", &destination)]).0, 201);
    assert!(!served.path("a.txt").exists(), "a cached name is gone after MOVE");
    assert_eq!(std::fs::read(served.path("dir/b.txt")).expect("moved file"), b"a");
    assert_eq!(request(&agent, "MKCOL", &served.url("/dir/sub"), &[]).0, 201);
    assert!(served.path("dir/sub").is_dir());
    assert_eq!(nlink(&served.path("dir")), 3, "the parent's link count follows MKCOL");
    assert_eq!(request(&agent, "DELETE", &served.url("/dir/b.txt"), &[]).0, 204);
    assert!(!served.path("dir/b.txt").exists(), "a cached name is gone after DELETE");
    assert_eq!(names(&served.path("dir")), ["sub"]);

    // Mount → WebDAV.
    let listing = |path: &str| request(&agent, "PROPFIND", &served.url(path), &[("Depth", "1")]).1;
    std::fs::write(served.path("dir/c.txt"), b"c").expect("write");
    assert!(listing("/dir/").contains("<D:href>/dir/c.txt</D:href>"));
    std::fs::rename(served.path("dir/c.txt"), served.path("d.txt")).expect("rename");
    assert!(!listing("/dir/").contains("c.txt"));
    assert!(listing("/").contains("<D:href>/d.txt</D:href>"));
    std::fs::create_dir(served.path("made")).expect("mkdir");
    assert!(listing("/").contains("<D:href>/made/</D:href>"));
    std::fs::remove_file(served.path("d.txt")).expect("unlink");
    assert!(!listing("/").contains("d.txt"));
    served.stop();
}

#[test]
fn a_put_with_if_match_racing_a_writer_on_the_mount_never_tears_or_mixes() {
    let served = Served::start(&[]);
    let agent = agent();
    let url = served.url("/race.bin");
    let (mut wins, mut refusals) = (0, 0);
    for i in 0..60 {
        let base = version(3 * i, 50_000);
        assert!(matches!(put(&agent, &url, &base, &[]), 201 | 204));
        let etag = sha1_id(&base).etag();
        let from_mount = version(3 * i + 1, 200_000 + i * 1000);
        let from_http = version(3 * i + 2, 150_000 + i * 777);
        let path = served.path("race.bin");
        let writer = {
            let bytes = from_mount.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::File::create(&path).expect("open for writing");
                for piece in bytes.chunks(8192) {
                    file.write_all(piece).expect("write");
                }
            })
        };
        let status = put(&agent, &url, &from_http, &[("If-Match", &etag)]);
        writer.join().expect("writer");
        let (_, etag_now, over_http) = get(&agent, &url);
        let on_mount = std::fs::read(served.path("race.bin")).expect("read on the mount");
        assert!(over_http == on_mount, "round {i}: the two sides disagree");
        assert_eq!(etag_now, Some(sha1_id(&over_http).etag()), "round {i}");
        match status {
            // The mount's version was committed first: the PUT changed nothing.
            412 => {
                refusals += 1;
                assert!(over_http == from_mount, "round {i}: 412, yet not the mount's version");
            }
            // The PUT committed first; the mount's close may replace it after.
            204 => {
                wins += 1;
                assert!(over_http == from_http || over_http == from_mount, "round {i}: a torn or mixed file");
            }
            other => panic!("round {i}: PUT answered {other}"),
        }
    }
    assert_eq!(wins + refusals, 60);
    served.stop();
}

/// Read all of `file` from where it is.
fn rest(file: &mut std::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    file.read_to_end(&mut out).expect("read");
    out
}

/// Symlinks made on the mount are served over HTTP as what they name,
/// when that is inside the tree (a `current -> v2` release link, say):
/// GET, the ETag, PROPFIND listings and paths through a linked directory.
/// A link that is absolute, climbs above the root, dangles or loops names
/// nothing here. Names change on the link itself: DELETE and MOVE act on
/// it, never on what it names.
#[test]
fn symlinks_inside_the_tree_are_served_as_what_they_name() {
    use std::os::unix::fs::symlink;
    let served = Served::start(&[]);
    let agent = agent();
    std::fs::create_dir_all(served.path("releases/v2/js")).expect("mkdir");
    std::fs::write(served.path("releases/v2/js/app.js"), b"app v2").expect("write");
    std::fs::write(served.path("top.txt"), b"top").expect("write");
    let links = [
        ("current", "releases/v2"),
        ("releases/latest.js", "v2/js/app.js"),
        ("releases/v2/js/up.txt", "../../../top.txt"),
        ("releases/chain", "latest.js"),
        ("above", "../top.txt"),
        ("absolute", "/etc/hostname"),
        ("dangling", "nowhere"),
        ("loop-a", "loop-b"),
        ("loop-b", "loop-a"),
    ];
    for (link, target) in links {
        symlink(target, served.path(link)).expect("symlink");
    }
    let app_etag = sha1_id(b"app v2").etag();
    for path in ["/current/js/app.js", "/releases/latest.js", "/releases/chain", "/current/js/../js/app.js"] {
        let (status, etag, body) = get(&agent, &served.url(path));
        assert_eq!((status, body.as_slice()), (200, &b"app v2"[..]), "GET {path}");
        assert_eq!(etag.as_deref(), Some(app_etag.as_str()), "GET {path}");
    }
    assert_eq!(get(&agent, &served.url("/current/js/up.txt")).2, b"top");
    for path in ["/above", "/absolute", "/dangling"] {
        assert_eq!(get(&agent, &served.url(path)).0, 404, "GET {path}");
    }
    assert_eq!(get(&agent, &served.url("/loop-a")).0, 508, "GET of a loop");
    assert_eq!(
        request(&agent, "PROPFIND", &served.url("/loop-a"), &[("Depth", "0")]).0,
        508,
        "PROPFIND of a loop"
    );

    let (status, listing) = request(&agent, "PROPFIND", &served.url("/"), &[("Depth", "1")]);
    assert_eq!(status, 207);
    assert!(listing.contains("<D:href>/current/</D:href>"), "a linked directory is a collection: {listing}");
    let (status, listing) = request(&agent, "PROPFIND", &served.url("/current/js/"), &[("Depth", "1")]);
    assert_eq!(status, 207);
    assert!(listing.contains("/current/js/app.js") && listing.contains(&app_etag), "{listing}");
    let (status, listing) = request(&agent, "PROPFIND", &served.url("/releases/"), &[("Depth", "1")]);
    assert_eq!(status, 207);
    let latest = listing.split("<D:response>").find(|r| r.contains("/releases/latest.js<")).expect("listed");
    assert!(latest.contains(&app_etag), "a linked file carries its target's ETag: {latest}");

    let destination = served.url("/moved-link");
    assert_eq!(request(&agent, "MOVE", &served.url("/current"), &[("Destination", &destination)]).0, 201);
    assert_eq!(
        std::fs::read_link(served.path("moved-link")).expect("still a link"),
        Path::new("releases/v2")
    );
    assert_eq!(request(&agent, "DELETE", &served.url("/moved-link"), &[]).0, 204);
    assert_eq!(request(&agent, "DELETE", &served.url("/releases/latest.js"), &[]).0, 204);
    assert!(!served.path("moved-link").exists() && !served.path("releases/latest.js").exists());
    assert_eq!(std::fs::read(served.path("releases/v2/js/app.js")).expect("target kept"), b"app v2");
}

#[test]
fn an_open_handle_keeps_reading_the_version_it_opened() {
    // The model (docs/architecture.md): a handle reads the bytes of the
    // version it opened, never another's; the size the kernel holds is
    // the newest version's, so a handle on a longer old version ends
    // where the new version ends.
    let served = Served::start(&[]);
    let agent = agent();
    let url = served.url("/snap.bin");
    let rounds = [(1 << 20, 1 << 20), (1 << 20, 3 << 20), (300_000, 299_999), (2 << 20, 100_000)];
    for (round, (old_len, new_len)) in rounds.into_iter().enumerate() {
        let old = version(10 + round, old_len);
        let new = version(20 + round, new_len);
        assert!(matches!(put(&agent, &url, &old, &[]), 201 | 204));
        let mut reader = std::fs::File::open(served.path("snap.bin")).expect("open");
        let mut head = vec![0; 4096];
        reader.read_exact(&mut head).expect("read the head");
        assert_eq!(put(&agent, &url, &new, &[]), 204);
        let mut seen = head;
        seen.extend(rest(&mut reader));
        assert_eq!(seen.len(), old_len.min(new_len), "round {round}: bytes read through the old handle");
        assert!(seen == old[..seen.len()], "round {round}: the old handle read bytes of another version");
        assert_eq!(
            std::fs::metadata(served.path("snap.bin")).expect("stat").len(),
            new_len as u64,
            "round {round}"
        );
        assert!(
            std::fs::read(served.path("snap.bin")).expect("new open") == new,
            "round {round}: a new open"
        );
        drop(reader);
    }
    served.stop();
}

#[test]
fn without_a_mount_it_serves_webdav_alone_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let init = Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("init").arg(&data).output().expect("init");
    assert!(init.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .arg("serve")
        .arg(&data)
        .arg("--mount")
        .arg(dir.path().join("no-such-dir"))
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tsmfs serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let reason = lines.next().expect("a first line").expect("read");
    assert!(
        reason.contains("not mounted, serving WebDAV only") && reason.contains("no-such-dir"),
        "{reason}"
    );
    let listening = lines.next().expect("a second line").expect("read");
    let base = listening[listening.find("http://").expect("address")..].trim_end_matches('/').to_owned();
    let agent = agent();
    assert_eq!(put(&agent, &format!("{base}/f"), b"still served", &[]), 201);
    assert_eq!(get(&agent, &format!("{base}/f")).2, b"still served");
    // SAFETY: kill(2) on our own child's pid touches no memory.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success());
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_then_unmounts() {
    let mut served = Served::start(&[]);
    let addr = served.base.trim_start_matches("http://").to_owned();
    let body = version(99, 500_000);
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    write!(stream, "PUT /late.bin HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", body.len())
        .expect("head");
    stream.write_all(&body[..1000]).expect("first bytes");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: kill(2) on our own child's pid touches no memory.
    unsafe { libc::kill(served.child.id() as i32, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    stream.write_all(&body[1000..]).expect("the rest, after SIGTERM");
    let mut status = String::new();
    BufReader::new(&stream).read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 201"), "{status}");
    let dir = served.dir.take().expect("temp dir");
    served.stop();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .arg("get")
        .arg(&data)
        .arg("/late.bin")
        .output()
        .expect("get");
    assert!(out.status.success(), "tsmfs get: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == body, "the PUT finished during the stop is stored");
}

/// A large file patched in place through the mount is many chunks: GET,
/// ranged GET, HEAD, PROPFIND, conditional requests and the ETag xattr
/// all agree on its bytes and on the SHA-1 of the whole file, and a
/// client holding the ETag of an earlier version gets 412, not a lost
/// update.
#[test]
fn a_file_patched_through_the_mount_is_served_whole_with_the_sha1_of_its_bytes() {
    use std::os::unix::fs::FileExt;
    let served = Served::start(&[]);
    let agent = agent();
    let mut bytes = version(7, 5 << 20);
    std::fs::write(served.path("db.bin"), &bytes).expect("write on the mount");
    let (_, first_etag, _) = get(&agent, &served.url("/db.bin"));
    let first_etag = first_etag.expect("an ETag");
    // In-place patches, as a database makes: pages, one straddling a
    // chunk boundary, one of zeros.
    let file = std::fs::OpenOptions::new().write(true).open(served.path("db.bin")).expect("open");
    for (at, len, fill) in
        [(4096u64, 4096usize, 1u8), ((1 << 20) - 100, 300, 2), (3 << 20, 8192, 0), (5 << 20, 10, 3)]
    {
        let patch = vec![fill; len];
        file.write_all_at(&patch, at).expect("patch");
        let end = at as usize + len;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[at as usize..end].copy_from_slice(&patch);
    }
    drop(file);
    let want = sha1_id(&bytes).etag();
    assert_ne!(want, first_etag);

    let (status, etag, body) = get(&agent, &served.url("/db.bin"));
    assert_eq!(status, 200);
    assert!(body == bytes, "GET returned other bytes");
    assert_eq!(etag.as_deref(), Some(want.as_str()), "GET ETag");
    let xattr = crate::util::getxattr(&served.path("db.bin"), "user.tsmfs.etag").expect("ETag xattr");
    assert_eq!(String::from_utf8_lossy(&xattr), want, "xattr ETag");

    for (from, to) in
        [(0usize, 9999usize), ((1 << 20) - 200, (1 << 20) + 200), ((3 << 20) - 1, (3 << 20) + 8192)]
    {
        let mut response = agent
            .get(&served.url("/db.bin"))
            .header("Range", &format!("bytes={from}-{to}"))
            .call()
            .expect("ranged GET");
        assert_eq!(response.status().as_u16(), 206, "range {from}-{to}");
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(etag.as_deref(), Some(want.as_str()), "ranged ETag");
        let body = response.body_mut().read_to_vec().expect("body");
        assert!(body == bytes[from..=to], "range {from}-{to} returned other bytes");
    }

    let (status, _) = request(&agent, "GET", &served.url("/db.bin"), &[("If-None-Match", &want)]);
    assert_eq!(status, 304, "If-None-Match with the current ETag");
    let (status, _, body) = get(&agent, &served.url(&format!("/.tsmfs/by-hash/{}", want.trim_matches('"'))));
    assert_eq!(status, 200, "by-hash URL of the patched version");
    assert!(body == bytes, "by-hash returned other bytes");
    let (status, listing) = request(&agent, "PROPFIND", &served.url("/db.bin"), &[("Depth", "0")]);
    assert_eq!(status, 207);
    assert!(
        listing.contains(&want.replace('"', "&quot;")) || listing.contains(&want),
        "getetag in {listing}"
    );
    let status = put(&agent, &served.url("/db.bin"), b"lost update", &[("If-Match", &first_etag)]);
    assert_eq!(status, 412, "If-Match with an earlier version's ETag");
    let (_, _, body) = get(&agent, &served.url("/db.bin"));
    assert!(body == bytes, "a refused PUT changed the file");
    served.stop();
}

/// A mode change on a file still being written (its writes pending)
/// binds HTTP at once when it takes access away; one that grants access
/// is held and reaches HTTP with the writes, at close. The mount shows
/// both at once. (HTTP is asked from this process: a child process would
/// close an inherited copy of the descriptor, and that close commits.)
#[test]
fn a_chmod_of_a_file_being_written_takes_access_over_http_at_once_and_grants_it_at_close() {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("users");
    // eve has no uid of her own: she acts as nobody.
    let passwd = crate::util::tsmfs_stdin(&["passwd", users.to_str().unwrap(), "eve"], b"eve's pass\n");
    assert!(passwd.status.success(), "{}", crate::util::stderr(&passwd));
    let served = Served::start_at(dir.path(), &["--auth-file", users.to_str().unwrap()]);
    let path = served.path("f.txt");
    std::fs::write(&path, b"shared").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (agent, url) = (agent(), served.url("/f.txt"));
    let eve = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("eve:eve's pass"));
    let eve_gets = || {
        let mut response = agent.get(&url).header("Authorization", &eve).call().expect("GET");
        let body = response.body_mut().read_to_vec().expect("body");
        (response.status().as_u16(), body)
    };
    assert_eq!(eve_gets(), (200, b"shared".to_vec()));

    let mut file = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.write_all(b"secret!").expect("write");
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).expect("fchmod 600");
    assert_eq!(eve_gets().0, 403, "taken away before the close");
    file.set_permissions(std::fs::Permissions::from_mode(0o644)).expect("fchmod 644");
    let shown = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(shown, 0o644, "the mount shows it at once");
    assert_eq!(eve_gets().0, 403, "granted with the writes, not before");
    drop(file);
    assert_eq!(eve_gets(), (200, b"secret!".to_vec()), "granted at the close, with the bytes");
    served.stop();
}

/// The value of the sample `name` (with its labels) in an OpenMetrics
/// text, if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `/.tsmfs/metrics` counts what both frontends and the core did, in
/// Prometheus' format; with passwords it needs one like any other URL.
#[test]
fn metrics_count_http_fuse_commits_and_the_store() {
    let served = Served::start(&[]);
    let agent = agent();
    std::fs::write(served.path("mounted.txt"), b"written through the mount").expect("write");
    assert_eq!(std::fs::read(served.path("mounted.txt")).expect("read"), b"written through the mount");
    // An fsync of a file whose bytes are all in the database syncs the log.
    let mut synced = std::fs::File::create(served.path("synced.txt")).expect("create");
    std::io::Write::write_all(&mut synced, b"synced").expect("write");
    synced.sync_all().expect("fsync");
    drop(synced);
    assert_eq!(put(&agent, &served.url("/web.txt"), b"same bytes", &[]), 201);
    assert_eq!(put(&agent, &served.url("/copy.txt"), b"same bytes", &[]), 201);
    for _ in 0..2 {
        let response = agent.get(&served.url("/web.txt")).call().expect("GET");
        assert_eq!(response.status().as_u16(), 200);
        let length = response.headers().get("content-length").and_then(|v| v.to_str().ok());
        assert_eq!(length, Some("10"), "counting the body keeps its length known");
    }
    // The kernel is told of the HTTP changes by the invalidation thread.
    assert!(std::fs::metadata(served.path("web.txt")).is_ok());

    let mut response = agent.get(&served.url("/.tsmfs/metrics")).call().expect("GET metrics");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    let text = response.body_mut().read_to_string().expect("body");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let at_least = |name: &str, least: f64| {
        let value = sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
        assert!(value >= least, "{name} is {value}, expected at least {least}");
    };
    at_least("tsmfs_http_requests_total{method=\"PUT\",status=\"201\"}", 2.0);
    at_least("tsmfs_http_requests_total{method=\"GET\",status=\"200\"}", 2.0);
    at_least("tsmfs_http_request_duration_seconds_count{op=\"PUT\"}", 2.0);
    at_least("tsmfs_http_response_body_bytes_total", 20.0);
    at_least("tsmfs_fuse_operations_total{op=\"write\"}", 1.0);
    at_least("tsmfs_fuse_operation_duration_seconds_count{op=\"lookup\"}", 1.0);
    at_least("tsmfs_commits_total{result=\"ok\"}", 3.0);
    at_least("tsmfs_commit_duration_seconds_count", 3.0);
    // The fsync synced the log, unless the sync thread's filesystem sync
    // covered its commit first.
    let syncs = ["log", "filesystem"]
        .map(|op| sample(&text, &format!("tsmfs_sync_duration_seconds_count{{op=\"{op}\"}}")).unwrap_or(0.0));
    assert!(syncs[0] + syncs[1] >= 1.0, "no sync timed in\n{text}");
    at_least("tsmfs_asset_lookups_total{result=\"hit\"}", 1.0);
    at_least("tsmfs_asset_lookups_total{result=\"miss\"}", 1.0);
    at_least("tsmfs_kernel_invalidations_total{op=\"inode\"}", 2.0);
    at_least("tsmfs_files", 4.0);
    at_least("tsmfs_logical_bytes", 51.0);
    // Two files hold the same 10 bytes, stored once.
    let (logical, stored) =
        (sample(&text, "tsmfs_logical_bytes").unwrap(), sample(&text, "tsmfs_stored_bytes").unwrap());
    assert_eq!((logical, stored), (51.0, 41.0), "{text}");
    let ratio = sample(&text, "tsmfs_dedup_ratio").expect("dedup ratio");
    assert!((ratio - 51.0 / 41.0).abs() < 1e-9, "{ratio}");
    assert_eq!(request(&agent, "PUT", &served.url("/.tsmfs/metrics"), &[]).0, 405);
    served.stop();
}
