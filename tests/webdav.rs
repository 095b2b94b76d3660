//! The WebDAV server, spoken to over HTTP by real clients (curl, litmus)
//! on 127.0.0.1.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::{collision_pair, sha1_id};

/// A `tsmfs webdav` process on a free loopback port.
pub(crate) struct TestServer {
    child: Child,
    pub(crate) base: String,
    pub(crate) data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub(crate) fn new() -> TestServer {
        TestServer::new_with(&[])
    }

    /// A server on a fresh data directory, with `extra` arguments.
    pub(crate) fn new_with(extra: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let init =
            Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("init").arg(&data).output().expect("run init");
        assert!(init.status.success(), "init: {}", String::from_utf8_lossy(&init.stderr));
        let mut server = TestServer::start_with(&data, extra);
        server._dir = Some(dir);
        server
    }

    fn start(data: &Path) -> TestServer {
        TestServer::start_with(data, &[])
    }

    /// A server on an existing data directory (kept by the caller).
    pub(crate) fn start_on(data: &Path) -> TestServer {
        TestServer::start(data)
    }

    /// A server on an existing data directory with more arguments.
    pub(crate) fn start_with(data: &Path, extra: &[&str]) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
            .args(["webdav", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg(data)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tsmfs webdav");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let base = loop {
            let line = lines.next().expect("server exited before listening").expect("read stderr");
            if let Some(at) = line.find("http://").or_else(|| line.find("https://")) {
                break line[at..].trim_end_matches('/').to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        TestServer { child, base, data: data.to_owned(), _dir: None }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stop with SIGTERM and check the exit status.
    pub(crate) fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid touches no memory.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for server");
        assert!(status.success(), "server exit status {status}");
    }

    pub(crate) fn restart(mut self) -> TestServer {
        self.stop();
        let mut next = TestServer::start(&self.data);
        next._dir = self._dir.take();
        next
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// Run a curl command, sending `body` (if any) on its standard input.
/// Fails the test with the reason if curl is missing.
fn curl_output(mut cmd: Command, body: Option<&[u8]>) -> std::process::Output {
    if body.is_some() {
        cmd.args(["--data-binary", "@-"]);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap_or_else(|e| {
            panic!("curl is needed for the WebDAV tests (scripts/test installs it): {e}")
        });
    if let Some(body) = body {
        child.stdin.take().expect("stdin").write_all(body).expect("send body");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("curl")
}

/// Run curl; returns (status, headers, body). Fails the test with the
/// reason if curl is missing.
fn curl(args: &[&str], body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let headers = dir.path().join("headers");
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-D"]).arg(&headers).args(args);
    let out = curl_output(cmd, body);
    assert!(out.status.success(), "curl {args:?} failed: {}", out.status);
    let headers = std::fs::read_to_string(headers).expect("headers");
    let status = headers
        .lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    (status, headers, out.stdout)
}

fn header(headers: &str, name: &str) -> Option<String> {
    headers.lines().rev().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
    })
}

fn put(server: &TestServer, path: &str, body: &[u8], extra: &[&str]) -> (u16, String) {
    let url = server.url(path);
    let mut args = vec!["-X", "PUT"];
    args.extend_from_slice(extra);
    args.push(&url);
    let (status, headers, _) = curl(&args, Some(body));
    (status, headers)
}

fn get(server: &TestServer, path: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
    let url = server.url(path);
    let mut args = extra.to_vec();
    args.push(&url);
    curl(&args, None)
}

#[test]
fn put_then_get_carries_the_content_id_as_strong_etag_and_conditionals_hold() {
    let server = TestServer::new();
    let body = b"hello over webdav\n".repeat(1000);
    let (status, _) = put(&server, "/a.txt", &body, &[]);
    assert_eq!(status, 201);
    let (status, headers, got) = get(&server, "/a.txt", &[]);
    assert_eq!(status, 200);
    assert_eq!(got, body);
    let etag = header(&headers, "etag").expect("ETag header");
    assert_eq!(etag, sha1_id(&body).etag(), "the ETag is the quoted SHA-1 of the bytes");

    let inm = format!("If-None-Match: {etag}");
    let (status, _, got) = get(&server, "/a.txt", &["-H", &inm]);
    assert_eq!((status, got.len()), (304, 0));
    let weak = format!("If-None-Match: \"nope\", W/{etag}");
    let (status, headers, _) = get(&server, "/a.txt", &["-H", &weak]);
    assert_eq!(status, 304, "If-None-Match compares weakly, and lists work");
    assert_eq!(header(&headers, "etag").as_deref(), Some(etag.as_str()), "a 304 carries the ETag");
    let (status, _, _) = get(&server, "/a.txt", &["-H", "If-None-Match: *"]);
    assert_eq!(status, 304);
    let (status, _) = put(&server, "/a.txt", b"clobber", &["-H", "If-None-Match: *"]);
    assert_eq!(status, 412, "If-None-Match: * on PUT means create-only");
    let (status, _) = put(&server, "/fresh.txt", b"new", &["-H", "If-None-Match: *"]);
    assert_eq!(status, 201);

    // A lost update is refused and the stored bytes stay.
    let (status, _) = put(&server, "/a.txt", b"other", &["-H", "If-Match: \"0000\""]);
    assert_eq!(status, 412);
    assert_eq!(get(&server, "/a.txt", &[]).2, body);
    let if_match = format!("If-Match: {etag}");
    let (status, _) = put(&server, "/a.txt", b"second", &["-H", &if_match]);
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/a.txt", &[]).2, b"second");

    // Ranges come from the same object.
    let (status, _, got) = get(&server, "/a.txt", &["-H", "Range: bytes=1-3"]);
    assert_eq!((status, got), (206, b"eco".to_vec()));
}

#[test]
fn get_follows_rfc_9110_preconditions_and_ranges() {
    let server = TestServer::new();
    let body: Vec<u8> = (0..1000u32).flat_map(|i| format!("{i:04}\n").into_bytes()).collect();
    assert_eq!(put(&server, "/r.txt", &body, &[]).0, 201);
    let (_, headers, _) = get(&server, "/r.txt", &[]);
    let etag = header(&headers, "etag").expect("etag");
    let modified = header(&headers, "last-modified").expect("Last-Modified");
    assert_eq!(header(&headers, "cache-control").as_deref(), Some("no-cache"));
    assert_eq!(header(&headers, "content-type").as_deref(), Some("text/plain"));
    let h = |name: &str, value: &str| format!("{name}: {value}");
    let long_ago = "Sat, 01 Jan 2000 00:00:00 GMT";

    // Dates, and their precedence under the ETag conditions (13.2.2).
    assert_eq!(get(&server, "/r.txt", &["-H", &h("If-Modified-Since", &modified)]).0, 304);
    assert_eq!(get(&server, "/r.txt", &["-H", &h("If-Modified-Since", long_ago)]).0, 200);
    let both = ["-H", &h("If-None-Match", "\"other\""), "-H", &h("If-Modified-Since", &modified)];
    assert_eq!(get(&server, "/r.txt", &both).0, 200, "If-None-Match decides, If-Modified-Since is ignored");
    assert_eq!(get(&server, "/r.txt", &["-H", &h("If-Unmodified-Since", long_ago)]).0, 412);
    let both = ["-H", &h("If-Match", &etag), "-H", &h("If-Unmodified-Since", long_ago)];
    assert_eq!(get(&server, "/r.txt", &both).0, 200, "If-Match decides, If-Unmodified-Since is ignored");
    assert_eq!(get(&server, "/r.txt", &["-H", &h("If-Match", &format!("W/{etag}"))]).0, 412, "strong only");
    assert_eq!(get(&server, "/missing", &["-H", "If-Match: *"]).0, 404);

    // A 304 carries what the 200 would.
    let (status, headers, got) = get(&server, "/r.txt", &["-H", &h("If-None-Match", &etag)]);
    assert_eq!((status, got.len()), (304, 0));
    for name in ["etag", "cache-control", "last-modified"] {
        assert!(header(&headers, name).is_some(), "{name} on a 304: {headers}");
    }
    // (curl -I prints the headers where the body would go.)
    let (status, headers, got) = get(&server, "/r.txt", &["-I"]);
    assert_eq!(status, 200);
    assert!(!String::from_utf8_lossy(&got).contains("0000\n0001"), "HEAD sends no body");
    assert_eq!(header(&headers, "content-length"), Some(body.len().to_string()), "HEAD: the GET's length");

    // Ranges: single, suffix, several, none satisfiable.
    let (status, headers, got) = get(&server, "/r.txt", &["-H", "Range: bytes=5-9"]);
    assert_eq!((status, got.as_slice()), (206, &b"0001\n"[..]));
    assert_eq!(header(&headers, "content-range").as_deref(), Some("bytes 5-9/5000"));
    assert_eq!(get(&server, "/r.txt", &["-H", "Range: bytes=-5"]).2, b"0999\n");
    assert_eq!(
        get(&server, "/r.txt", &["-H", "Range: bytes=-99999"]).2,
        body,
        "a suffix longer than the file"
    );
    let (status, headers, got) = get(&server, "/r.txt", &["-H", "Range: bytes=0-4,4990-"]);
    assert_eq!(status, 206);
    let boundary = format!("tsmfs-{}", etag.trim_matches('"'));
    assert_eq!(header(&headers, "content-type"), Some(format!("multipart/byteranges; boundary={boundary}")));
    let expected = format!(
        "\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-4/5000\r\n\r\n0000\n\
         \r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 4990-4999/5000\r\n\r\n0998\n0999\n\
         \r\n--{boundary}--\r\n"
    );
    assert_eq!(String::from_utf8(got).unwrap(), expected);
    assert_eq!(header(&headers, "content-length"), Some(expected.len().to_string()));
    let (status, headers, _) = get(&server, "/r.txt", &["-H", "Range: bytes=5000-"]);
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range").as_deref(), Some("bytes */5000"));

    // If-Range: the range only if the client's copy is current.
    let ranged =
        |if_range: &str| get(&server, "/r.txt", &["-H", "Range: bytes=0-3", "-H", &h("If-Range", if_range)]);
    assert_eq!(ranged(&etag).0, 206);
    assert_eq!(ranged("\"old\"").2, body, "a stale If-Range gets the whole file");
    assert_eq!(ranged(&format!("W/{etag}")).0, 200, "If-Range compares strongly");
    assert_eq!(ranged(&modified).0, 206);
}

#[test]
fn by_hash_urls_serve_content_immutably() {
    let server = TestServer::new();
    let body = b"body { color: teal }".repeat(100);
    assert_eq!(put(&server, "/site/app.css", &body, &[]).0, 409, "no parent yet");
    assert_eq!(curl(&["-X", "MKCOL", &server.url("/site")], None).0, 201);
    let (_, headers) = put(&server, "/site/app.css", &body, &[]);
    let etag = header(&headers, "etag").expect("etag");
    let tag = etag.trim_matches('"');

    let (status, headers, got) = get(&server, &format!("/.tsmfs/by-hash/{tag}/app.css"), &[]);
    assert_eq!((status, got == body), (200, true));
    assert_eq!(header(&headers, "cache-control").as_deref(), Some("public, max-age=31536000, immutable"));
    assert_eq!(header(&headers, "content-type").as_deref(), Some("text/css"));
    assert_eq!(header(&headers, "etag"), Some(etag.clone()));
    let (status, headers, _) = get(&server, &format!("/.tsmfs/by-hash/{tag}"), &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type").as_deref(), Some("application/octet-stream"));
    let inm = format!("If-None-Match: {etag}");
    assert_eq!(get(&server, &format!("/.tsmfs/by-hash/{tag}/app.css"), &["-H", &inm]).0, 304);
    assert_eq!(get(&server, &format!("/.tsmfs/by-hash/{tag}/x"), &["-H", "Range: bytes=0-3"]).2, b"body");

    // Only content some file holds, under its one canonical name.
    assert_eq!(get(&server, &format!("/.tsmfs/by-hash/{tag}-0000000000000000"), &[]).0, 404);
    assert_eq!(get(&server, &format!("/.tsmfs/by-hash/{}", tag.to_uppercase()), &[]).0, 404);
    assert_eq!(get(&server, "/.tsmfs/by-hash/not-a-hash", &[]).0, 404);
    assert_eq!(put(&server, "/site/app.css", b"new version", &[]).0, 204);
    assert_eq!(get(&server, &format!("/.tsmfs/by-hash/{tag}"), &[]).0, 404, "no file holds it any more");
}

#[test]
fn cache_control_follows_the_longest_matching_prefix() {
    let mut server = TestServer::new();
    server.stop();
    let mut server = TestServer::start_with(
        &server.data.clone(),
        &["--cache-control", "/assets/=public, max-age=3600", "--cache-control", "/assets/raw/=no-store"],
    );
    for dir in ["/assets", "/assets/raw"] {
        assert_eq!(curl(&["-X", "MKCOL", &server.url(dir)], None).0, 201);
    }
    for (path, expected) in [
        ("/plain.txt", "no-cache"),
        ("/assets/a.js", "public, max-age=3600"),
        ("/assets/raw/b.bin", "no-store"),
    ] {
        assert!(matches!(put(&server, path, b"x", &[]).0, 201));
        let (_, headers, _) = get(&server, path, &[]);
        assert_eq!(header(&headers, "cache-control").as_deref(), Some(expected), "{path}");
        let inm = format!("If-None-Match: {}", header(&headers, "etag").expect("etag"));
        let (status, headers, _) = get(&server, path, &["-H", &inm]);
        assert_eq!(status, 304);
        assert_eq!(header(&headers, "cache-control").as_deref(), Some(expected), "the 304 too: {path}");
    }
    server.stop();
    let refused = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(["webdav", "--listen", "127.0.0.1:0", "--cache-control", "assets=x"])
        .arg(&server.data)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("must start with /"));
}

#[test]
fn every_get_after_a_put_sees_that_put() {
    let server = TestServer::new();
    for i in 0..200 {
        let body = format!("version {i} ").repeat(1 + i % 50).into_bytes();
        assert!(matches!(put(&server, "/hot.txt", &body, &[]).0, 201 | 204));
        let (status, headers, got) = get(&server, "/hot.txt", &[]);
        assert_eq!(status, 200);
        assert!(got == body, "GET {i} after PUT {i}");
        assert_eq!(header(&headers, "etag"), Some(sha1_id(&body).etag()));
    }
}

#[test]
fn the_sha1_collision_pair_gets_two_etags() {
    let server = TestServer::new();
    let (first, second) = collision_pair();
    assert_eq!(put(&server, "/1.bin", &first, &[]).0, 201);
    assert_eq!(put(&server, "/2.bin", &second, &[]).0, 201);
    let (_, h1, b1) = get(&server, "/1.bin", &[]);
    let (_, h2, b2) = get(&server, "/2.bin", &[]);
    assert_eq!((b1, b2), (first.clone(), second));
    let (e1, e2) = (header(&h1, "etag").expect("etag 1"), header(&h2, "etag").expect("etag 2"));
    assert_eq!(e1, sha1_id(&first).etag());
    assert_ne!(e1, e2, "same SHA-1, different bytes: different ETags");
    assert!(e2.ends_with("-0000000000000001\""), "collision index in the ETag: {e2}");
}

#[test]
fn collections_move_delete_and_metadata_only_copy() {
    let server = TestServer::new();
    let (status, _, _) = curl(&["-X", "MKCOL", &server.url("/dir/")], None);
    assert_eq!(status, 201);
    assert_eq!(put(&server, "/dir/f.txt", b"payload", &[]).0, 201);
    let destination = format!("Destination: {}", server.url("/dir/g.txt"));
    let (status, _, _) = curl(&["-X", "COPY", "-H", &destination, &server.url("/dir/f.txt")], None);
    assert_eq!(status, 201);
    let etag = |path: &str| header(&get(&server, path, &[]).1, "etag");
    assert_eq!(etag("/dir/g.txt"), etag("/dir/f.txt"));

    let (status, _, listing) = curl(&["-X", "PROPFIND", "-H", "Depth: 1", &server.url("/dir/")], None);
    assert_eq!(status, 207);
    let listing = String::from_utf8(listing).expect("utf-8");
    assert!(listing.contains("/dir/f.txt") && listing.contains("/dir/g.txt"), "{listing}");

    let (status, headers, index) = get(&server, "/dir/", &[]);
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type").is_some_and(|t| t.starts_with("text/html")), "{headers}");
    let index = String::from_utf8(index).expect("utf-8");
    assert!(index.contains("f.txt") && index.contains("g.txt"), "browsers get an HTML index: {index}");

    let destination = format!("Destination: {}", server.url("/dir/h.txt"));
    let (status, _, _) = curl(&["-X", "MOVE", "-H", &destination, &server.url("/dir/g.txt")], None);
    assert_eq!(status, 201);
    assert_eq!(get(&server, "/dir/g.txt", &[]).0, 404);
    assert_eq!(get(&server, "/dir/h.txt", &[]).2, b"payload");
    let (status, _, _) = curl(&["-X", "DELETE", &server.url("/dir/h.txt")], None);
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/dir/h.txt", &[]).0, 404);
}

/// Requests dav-server would carry out member by member, with members
/// gone before the step that fails: a DELETE of the root, a COPY or MOVE
/// whose overwritten destination holds the source or lies inside it, and
/// a COPY into its own subtree (which doubles the tree each time). Each is
/// refused whole (403) and the tree stays as it was.
#[test]
fn requests_that_would_destroy_their_own_source_are_refused_whole() {
    let server = TestServer::new();
    for dir in ["/a/", "/a/b/"] {
        assert_eq!(curl(&["-X", "MKCOL", &server.url(dir)], None).0, 201);
    }
    for file in ["/top.txt", "/a/f.txt", "/a/b/g.txt"] {
        assert_eq!(put(&server, file, file.as_bytes(), &[]).0, 201);
    }
    let listing = || {
        let (status, _, body) = curl(&["-X", "PROPFIND", "-H", "Depth: 1", &server.url("/a/")], None);
        assert_eq!(status, 207);
        let mut hrefs: Vec<String> = String::from_utf8(body)
            .expect("utf-8")
            .split("<D:href>")
            .skip(1)
            .filter_map(|rest| rest.split('<').next().map(str::to_owned))
            .collect();
        hrefs.sort();
        hrefs
    };
    let before = listing();
    assert_eq!(before, ["/a/", "/a/b/", "/a/f.txt"]);
    let moves = [
        ("DELETE", "/", None),
        ("DELETE", "", None),
        ("COPY", "/a/", Some("/")),
        ("MOVE", "/a/", Some("/")),
        ("COPY", "/", Some("/a/copy/")),
        ("MOVE", "/", Some("/moved/")),
        ("COPY", "/a/", Some("/a/b/c/")),
        ("MOVE", "/a/", Some("/a/b/")),
        ("COPY", "/a/b/", Some("/a/")),
        ("MOVE", "/a/b/", Some("/a")),
        ("MOVE", "/a/b/", Some("/a/b")),
        ("COPY", "/a/%62/", Some("/a/")),
    ];
    for (method, path, to) in moves {
        let destination = to.map(|to| format!("Destination: {}", server.url(to)));
        let mut args = vec!["-X", method, "-H", "Overwrite: T"];
        if let Some(destination) = &destination {
            args.extend(["-H", destination.as_str()]);
        }
        let url = server.url(path);
        args.push(&url);
        let (status, _, body) = curl(&args, None);
        assert_eq!(status, 403, "{method} {path} to {to:?}: {}", String::from_utf8_lossy(&body));
        assert_eq!(listing(), before, "after {method} {path} to {to:?}");
        for file in ["/top.txt", "/a/f.txt", "/a/b/g.txt"] {
            assert_eq!(get(&server, file, &[]).2, file.as_bytes(), "after {method} {path} to {to:?}");
        }
    }
    // A destination on another server is not moved here (502).
    for (method, to) in [("MOVE", "http://elsewhere.example/x"), ("COPY", "http://127.0.0.2:1/x")] {
        let destination = format!("Destination: {to}");
        let (status, _, _) = curl(&["-X", method, "-H", &destination, &server.url("/top.txt")], None);
        assert_eq!(status, 502, "{method} to {to}");
    }
    assert_eq!(get(&server, "/top.txt", &[]).2, b"/top.txt");
    assert_eq!(get(&server, "/x", &[]).0, 404);
    // Neighbours that only share a prefix are no overlap; a destination
    // given as a path alone is here.
    let destination = "Destination: /top-copy.txt";
    assert_eq!(curl(&["-X", "COPY", "-H", destination, &server.url("/top.txt")], None).0, 201);
    let destination = format!("Destination: {}", server.url("/ab/"));
    assert_eq!(curl(&["-X", "COPY", "-H", &destination, &server.url("/a/")], None).0, 201);
    assert_eq!(get(&server, "/ab/b/g.txt", &[]).2, b"/a/b/g.txt");
}

/// A file MOVEd (or COPYd) over a file replaces it in one commit (what
/// "safe save" clients do: PUT a temporary name, then MOVE it over the
/// real one).
/// dav-server deletes the destination first and renames after, two
/// commits with the file missing in between; the change log shows the
/// destination was never deleted on its own. Over a collection, the
/// collection still goes first.
#[test]
fn a_move_or_copy_over_a_file_replaces_it_in_one_commit() {
    let server = TestServer::new();
    assert_eq!(put(&server, "/doc.txt", b"version 1", &[]).0, 201);
    assert_eq!(put(&server, "/.doc.txt.tmp", b"version 2", &[]).0, 201);
    let destination = format!("Destination: {}", server.url("/doc.txt"));
    let (status, _, _) = curl(&["-X", "MOVE", "-H", &destination, &server.url("/.doc.txt.tmp")], None);
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/doc.txt", &[]).2, b"version 2");
    assert_eq!(get(&server, "/.doc.txt.tmp", &[]).0, 404);

    assert_eq!(curl(&["-X", "MKCOL", &server.url("/dir/")], None).0, 201);
    assert_eq!(put(&server, "/dir/inner.txt", b"inner", &[]).0, 201);
    let destination = format!("Destination: {}", server.url("/dir"));
    let (status, _, _) = curl(&["-X", "MOVE", "-H", &destination, &server.url("/doc.txt")], None);
    assert_eq!(status, 204, "a file over a collection");
    assert_eq!(get(&server, "/dir", &[]).2, b"version 2");

    // A COPY of a file over a file is one commit too, and the copy keeps
    // only its source's dead properties (RFC 4918, 9.8.4).
    assert_eq!(put(&server, "/copy-source.txt", b"copied", &[]).0, 201);
    assert_eq!(put(&server, "/copy-target.txt", b"old", &[]).0, 201);
    let proppatch = |path: &str, name: &str| {
        let body = format!(
            "<?xml version=\"1.0\"?><D:propertyupdate xmlns:D=\"DAV:\" xmlns:x=\"urn:x\">\
             <D:set><D:prop><x:{name}>v</x:{name}></D:prop></D:set></D:propertyupdate>"
        );
        curl(&["-X", "PROPPATCH", &server.url(path)], Some(body.as_bytes())).0
    };
    assert_eq!(proppatch("/copy-source.txt", "kept"), 207);
    assert_eq!(proppatch("/copy-target.txt", "dropped"), 207);
    let destination = format!("Destination: {}", server.url("/copy-target.txt"));
    let (status, _, _) = curl(&["-X", "COPY", "-H", &destination, &server.url("/copy-source.txt")], None);
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/copy-target.txt", &[]).2, b"copied");
    let (status, props) = propfind(&server, "/copy-target.txt", Some("0"), b"");
    assert_eq!(status, 207);
    assert!(props.contains("kept") && !props.contains("dropped"), "{props}");

    let db = rusqlite::Connection::open_with_flags(
        server.data.join("meta.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the metadata read-only");
    let ops: Vec<(String, Option<Vec<u8>>)> = db
        .prepare("SELECT op, name FROM changes WHERE op IN ('unlink', 'rename', 'rmdir') ORDER BY seq")
        .and_then(|mut statement| statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?.collect())
        .expect("read the change log");
    let ops: Vec<(String, String)> = ops
        .into_iter()
        .map(|(op, name)| (op, String::from_utf8_lossy(&name.unwrap_or_default()).into()))
        .collect();
    let expected =
        [("rename", ".doc.txt.tmp"), ("unlink", "inner.txt"), ("rmdir", "dir"), ("rename", "doc.txt")];
    let expected: Vec<(String, String)> =
        expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(ops, expected, "the change log");
}

#[test]
fn a_put_cut_off_mid_body_leaves_the_previous_version() {
    let server = TestServer::new();
    assert_eq!(put(&server, "/keep.txt", b"version one", &[]).0, 201);
    let addr = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "PUT /keep.txt HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\npartial")
        .expect("send");
    stream.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(&server, "/keep.txt", &[]).2, b"version one");
    // And a new name cut off the same way never appears.
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "PUT /new.txt HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\npartial")
        .expect("send");
    drop(stream);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(&server, "/new.txt", &[]).0, 404);
}

/// Send a PUT's head and the first half of its body on a new connection.
fn start_put(addr: &str, path: &str, extra_header: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_header}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("send head");
    stream.write_all(&body[..body.len() / 2]).expect("send half the body");
    stream
}

/// Send the rest of the body and read the response's status.
fn finish_put(mut stream: TcpStream, body: &[u8]) -> u16 {
    stream.write_all(&body[body.len() / 2..]).expect("send the rest");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("status line");
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"))
}

#[test]
fn racing_puts_with_the_same_if_match_cannot_both_win() {
    let server = TestServer::new();
    let (_, headers) = put(&server, "/race.txt", b"base version", &[]);
    let etag = header(&headers, "etag").expect("etag");
    let addr = server.base.trim_start_matches("http://");
    let condition = format!("If-Match: {etag}");
    let first: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let second: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    // Both heads arrive, and both pass dav-server's early check of the
    // ETag, before either body is complete.
    let a = start_put(addr, "/race.txt", &condition, &first);
    let b = start_put(addr, "/race.txt", &condition, &second);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(finish_put(a, &first), 204, "the first complete body wins");
    assert_eq!(finish_put(b, &second), 412, "the second finds its expected version gone");
    let (status, headers, bytes) = get(&server, "/race.txt", &[]);
    assert_eq!(status, 200);
    assert!(bytes == first, "the winner's bytes, whole");
    assert_eq!(header(&headers, "etag").unwrap(), sha1_id(&first).etag());

    // Create-only: two racing `If-None-Match: *` PUTs of a new name.
    let a = start_put(addr, "/new.txt", "If-None-Match: *", &first);
    let b = start_put(addr, "/new.txt", "If-None-Match: *", &second);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(finish_put(b, &second), 201);
    assert_eq!(finish_put(a, &first), 412);
    assert!(get(&server, "/new.txt", &[]).2 == second);
}

#[test]
fn dead_properties_survive_a_restart() {
    let server = TestServer::new();
    assert_eq!(put(&server, "/p.txt", b"x", &[]).0, 201);
    let patch = br#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:tsmfs-test"><D:set><D:prop><Z:colour>teal</Z:colour></D:prop></D:set></D:propertyupdate>"#;
    let (status, _, _) =
        curl(&["-X", "PROPPATCH", "-H", "Content-Type: text/xml", &server.url("/p.txt")], Some(patch));
    assert_eq!(status, 207);
    let server = server.restart();
    let find = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:colour xmlns:Z="urn:tsmfs-test"/></D:prop></D:propfind>"#;
    let (status, _, body) = curl(
        &["-X", "PROPFIND", "-H", "Depth: 0", "-H", "Content-Type: text/xml", &server.url("/p.txt")],
        Some(find),
    );
    assert_eq!(status, 207);
    let body = String::from_utf8(body).expect("utf-8");
    assert!(body.contains("teal"), "{body}");
}

#[test]
fn locks_survive_a_restart() {
    let server = TestServer::new();
    assert_eq!(put(&server, "/locked.txt", b"v1", &[]).0, 201);
    let lockinfo = br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype><D:owner>tester</D:owner></D:lockinfo>"#;
    let (status, headers, _) = curl(
        &[
            "-X",
            "LOCK",
            "-H",
            "Timeout: Second-600",
            "-H",
            "Content-Type: text/xml",
            &server.url("/locked.txt"),
        ],
        Some(lockinfo),
    );
    assert_eq!(status, 200);
    let token = header(&headers, "lock-token").expect("Lock-Token header");
    assert!(token.starts_with("<urn:uuid:"), "{token}");
    assert_eq!(put(&server, "/locked.txt", b"v2", &[]).0, 423);

    let server = server.restart();
    assert_eq!(put(&server, "/locked.txt", b"v2", &[]).0, 423, "still locked after a restart");
    let find = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:lockdiscovery/></D:prop></D:propfind>"#;
    let (status, _, body) = curl(
        &["-X", "PROPFIND", "-H", "Depth: 0", "-H", "Content-Type: text/xml", &server.url("/locked.txt")],
        Some(find),
    );
    assert_eq!(status, 207);
    let body = String::from_utf8(body).expect("utf-8");
    let bare = token.trim_matches(|c| c == '<' || c == '>');
    assert!(body.contains(bare) && body.contains("tester") && body.contains("Second-600"), "{body}");

    let submitted = format!("If: ({token})");
    assert_eq!(put(&server, "/locked.txt", b"v2", &["-H", &submitted]).0, 204);
    let lock_token = format!("Lock-Token: {token}");
    let (status, _, _) = curl(&["-X", "UNLOCK", "-H", &lock_token, &server.url("/locked.txt")], None);
    assert_eq!(status, 204);
    assert_eq!(put(&server, "/locked.txt", b"v3", &[]).0, 204);
    assert_eq!(get(&server, "/locked.txt", &[]).2, b"v3");
}

fn propfind(server: &TestServer, path: &str, depth: Option<&str>, body: &[u8]) -> (u16, String) {
    let url = server.url(path);
    let depth = depth.map(|d| format!("Depth: {d}"));
    let mut args = vec!["-X", "PROPFIND", "-H", "Content-Type: application/xml"];
    if let Some(depth) = &depth {
        args.extend(["-H", depth.as_str()]);
    }
    args.push(&url);
    let (status, _, body) = curl(&args, (!body.is_empty()).then_some(body));
    (status, String::from_utf8(body).expect("utf-8"))
}

/// The text of the first `<D:{name}>` after `from` in `xml`.
fn element_text<'a>(xml: &'a str, from: &str, name: &str) -> &'a str {
    let at = xml.find(from).unwrap_or_else(|| panic!("{from} in {xml}"));
    let open = format!("<D:{name}>");
    let start =
        xml[at..].find(&open).unwrap_or_else(|| panic!("{open} after {from} in {xml}")) + at + open.len();
    let end = xml[start..].find('<').expect("closing tag") + start;
    &xml[start..end]
}

#[test]
fn propfind_lists_quoted_etags_dead_props_and_locks_of_every_entry() {
    let server = TestServer::new();
    let (_, headers) = put(&server, "/dir/a%20file.txt", b"alpha", &[]);
    assert_eq!(headers.lines().next().map(|l| l.contains("409")), Some(true), "no parent yet: 409");
    assert_eq!(curl(&["-X", "MKCOL", &server.url("/dir")], None).0, 201);
    let (_, headers) = put(&server, "/dir/a%20file.txt", b"alpha", &[]);
    let etag = header(&headers, "etag").expect("etag");
    assert_eq!(put(&server, "/dir/b.html", b"<p>beta</p>", &[]).0, 201);
    assert_eq!(curl(&["-X", "MKCOL", &server.url("/dir/sub")], None).0, 201);
    let patch = br#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:tsmfs-test"><D:set><D:prop><Z:colour>teal &amp; blue</Z:colour></D:prop></D:set></D:propertyupdate>"#;
    let patched =
        curl(&["-X", "PROPPATCH", "-H", "Content-Type: text/xml", &server.url("/dir/b.html")], Some(patch));
    assert_eq!(patched.0, 207);
    let lockinfo = br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let (status, headers, _) = curl(
        &["-X", "LOCK", "-H", "Depth: 0", "-H", "Content-Type: text/xml", &server.url("/dir/sub/")],
        Some(lockinfo),
    );
    assert_eq!(status, 200);
    let token = header(&headers, "lock-token").expect("lock token");

    // allprop (an empty body), Depth 1.
    let (status, xml) = propfind(&server, "/dir", Some("1"), b"");
    assert_eq!(status, 207, "{xml}");
    assert!(xml.contains("<D:href>/dir/</D:href>"), "{xml}");
    assert_eq!(
        element_text(&xml, "<D:href>/dir/a%20file.txt</D:href>", "getetag"),
        etag,
        "getetag = ETag header"
    );
    assert_eq!(element_text(&xml, "<D:href>/dir/a%20file.txt</D:href>", "getcontentlength"), "5");
    assert_eq!(element_text(&xml, "<D:href>/dir/b.html</D:href>", "getcontenttype"), "text/html");
    let b_entry = &xml[xml.find("<D:href>/dir/b.html</D:href>").unwrap()..];
    assert!(b_entry.contains("teal &amp; blue"), "dead property of an entry: {xml}");
    let sub_entry = &xml[xml.find("<D:href>/dir/sub/</D:href>").unwrap()..];
    assert!(sub_entry.starts_with("<D:href>/dir/sub/</D:href>"));
    assert!(sub_entry.contains("<D:collection/>"));
    assert!(sub_entry.contains(token.trim_matches(['<', '>'])), "lock of an entry: {xml}");
    assert_eq!(xml.matches("<D:response>").count(), 4);

    // Named properties: found ones under 200, the rest under 404.
    let find = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/><D:getcontentlength/><Z:colour xmlns:Z="urn:tsmfs-test"/></D:prop></D:propfind>"#;
    let (status, xml) = propfind(&server, "/dir/sub", Some("0"), find);
    assert_eq!(status, 207);
    assert!(xml.contains("<D:getetag>\"d"), "a collection has an ETag: {xml}");
    let missing =
        &xml[xml.find("404 Not Found").map(|at| xml[..at].rfind("<D:propstat>").unwrap()).unwrap()..];
    assert!(missing.contains("<D:getcontentlength/>") && missing.contains("colour"), "{xml}");

    // propname: names, no values.
    let names = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>"#;
    let (_, xml) = propfind(&server, "/dir/b.html", Some("0"), names);
    assert!(xml.contains("<D:getetag/>") && xml.contains("colour") && !xml.contains("teal"), "{xml}");

    // A collection's ETag moves when its listing changes, and only then.
    let etag_prop =
        br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>"#;
    let dir_etag = || {
        element_text(&propfind(&server, "/dir/", Some("0"), etag_prop).1, "<D:href>/dir/</D:href>", "getetag")
            .to_owned()
    };
    let before = dir_etag();
    assert_eq!(dir_etag(), before);
    assert_eq!(put(&server, "/dir/new.txt", b"n", &[]).0, 201);
    let after = dir_etag();
    assert_ne!(after, before);
    assert_eq!(put(&server, "/dir/new.txt", b"changed content, same name", &[]).0, 204);
    assert_eq!(curl(&["-X", "DELETE", &server.url("/dir/new.txt")], None).0, 204);
    assert_ne!(dir_etag(), after);

    // Refusals.
    assert_eq!(propfind(&server, "/dir", None, b"").0, 403, "no Depth means infinity, which we refuse");
    let (status, xml) = propfind(&server, "/dir", Some("infinity"), b"");
    assert_eq!(status, 403);
    assert!(xml.contains("propfind-finite-depth"), "{xml}");
    assert_eq!(propfind(&server, "/dir", Some("1"), b"<D:propfind xmlns:D='DAV:'><D:prop>").0, 400);
    assert_eq!(propfind(&server, "/nowhere", Some("0"), b"").0, 404);
}

#[test]
fn propfind_streams_a_listing_of_ten_thousand_entries() {
    // Fill the collection with the bulk import, before the server starts.
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let many = dir.path().join("source/many");
    std::fs::create_dir_all(&many).expect("source dir");
    for i in 0..10_000 {
        std::fs::write(many.join(format!("f{i:05}")), i.to_string()).expect("write source file");
    }
    for args in [
        vec![OsStr::new("init"), data.as_os_str()],
        vec![OsStr::new("import"), data.as_os_str(), many.parent().expect("parent").as_os_str()],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tsmfs")).args(&args).output().expect("run tsmfs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut server = TestServer::start(&data);
    server._dir = Some(dir);
    let (status, xml) = propfind(&server, "/many/", Some("1"), b"");
    assert_eq!(status, 207);
    assert_eq!(xml.matches("<D:response>").count(), 10_001);
    assert!(xml.contains("<D:href>/many/f09999</D:href>") && xml.trim_end().ends_with("</D:multistatus>"));
    assert_eq!(element_text(&xml, "<D:href>/many/f00042</D:href>", "getetag"), sha1_id(b"42").etag());
}

#[test]
fn copy_of_a_collection_copies_every_dead_property() {
    let server = TestServer::new();
    for dir in ["/c", "/c/sub", "/c/sub/deeper"] {
        assert_eq!(curl(&["-X", "MKCOL", &server.url(dir)], None).0, 201);
    }
    assert_eq!(put(&server, "/c/sub/f.txt", b"file", &[]).0, 201);
    for (path, value) in
        [("/c", "top"), ("/c/sub/", "middle"), ("/c/sub/deeper", "bottom"), ("/c/sub/f.txt", "file")]
    {
        let patch = format!(
            r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:tsmfs-test"><D:set><D:prop><Z:tag>{value}</Z:tag></D:prop></D:set></D:propertyupdate>"#
        );
        let patched = curl(&["-X", "PROPPATCH", &server.url(path)], Some(patch.as_bytes()));
        assert_eq!(patched.0, 207, "{path}");
    }
    let destination = format!("Destination: {}", server.url("/copy"));
    assert_eq!(curl(&["-X", "COPY", "-H", &destination, &server.url("/c/")], None).0, 201);
    let find = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><Z:tag xmlns:Z="urn:tsmfs-test"/></D:prop></D:propfind>"#;
    for (path, value) in [
        ("/copy", "top"),
        ("/copy/sub", "middle"),
        ("/copy/sub/deeper", "bottom"),
        ("/copy/sub/f.txt", "file"),
    ] {
        let (status, xml) = propfind(&server, path, Some("0"), find);
        assert_eq!(status, 207, "{path}");
        assert!(xml.contains(&format!(">{value}<")), "{path}: {xml}");
    }
    // The source keeps its own.
    assert!(propfind(&server, "/c/sub", Some("0"), find).1.contains(">middle<"));
}

#[test]
fn litmus_passes_every_default_group() {
    let server = TestServer::new();
    let (status, _, _) = curl(&["-X", "MKCOL", &server.url("/litmus/")], None);
    assert_eq!(status, 201);
    let work = tempfile::tempdir().expect("temp dir");
    let out = Command::new("litmus")
        .arg(server.url("/litmus/"))
        .current_dir(work.path())
        .output()
        .unwrap_or_else(|e| panic!("litmus is needed (scripts/test installs it): {e}"));
    let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Ok(mut log) = std::fs::File::open(work.path().join("debug.log")) {
        let mut tail = String::new();
        let _ = log.read_to_string(&mut tail);
        report.push_str(&tail[tail.len().saturating_sub(4000)..]);
    }
    assert!(out.status.success(), "litmus failed:\n{report}");
    for group in ["basic", "copymove", "props", "locks", "http"] {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("<- summary for `{group}'")))
            .unwrap_or_else(|| panic!("litmus did not run {group}:\n{report}"));
        assert!(line.contains(" 0 failed") && line.ends_with("100.0%"), "{line}");
    }
}

#[test]
fn a_read_only_server_refuses_every_change() {
    let mut server = TestServer::new();
    assert_eq!(put(&server, "/f.txt", b"kept", &[]).0, 201);
    server.stop();
    let server = TestServer::start_with(&server.data.clone(), &["--read-only"]);
    let to = format!("Destination: {}", server.url("/g.txt"));
    let lockinfo = br#"<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"#;
    let patch = br#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:a>1</Z:a></D:prop></D:set></D:propertyupdate>"#;
    assert_eq!(put(&server, "/f.txt", b"changed", &[]).0, 403);
    assert_eq!(put(&server, "/new.txt", b"new", &[]).0, 403);
    for (method, extra, body) in [
        ("MKCOL", None, None),
        ("DELETE", None, None),
        ("MOVE", Some(to.as_str()), None),
        ("COPY", Some(to.as_str()), None),
        ("PROPPATCH", None, Some(&patch[..])),
        ("LOCK", None, Some(&lockinfo[..])),
    ] {
        let mut args = vec!["-X", method];
        if let Some(extra) = extra {
            args.extend(["-H", extra]);
        }
        let url = server.url(if method == "MKCOL" { "/dir" } else { "/f.txt" });
        args.push(&url);
        assert_eq!(curl(&args, body).0, 403, "{method}");
    }
    let (status, _, body) = get(&server, "/f.txt", &[]);
    assert_eq!((status, body.as_slice()), (200, &b"kept"[..]));
    assert_eq!(propfind(&server, "/", Some("1"), b"").0, 207, "reads still work");
}

#[test]
fn authentication_guards_every_request_and_non_loopback_needs_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let users = dir.path().join("users");
    // ann acts as root; eve, with no uid and no system account, as nobody.
    let passwd = crate::util::tsmfs_stdin(
        &["passwd", users.to_str().unwrap(), "ann", "--uid", "0", "--gid", "0"],
        b"s3cret pass\n",
    );
    assert!(passwd.status.success(), "{}", crate::util::stderr(&passwd));
    let passwd = crate::util::tsmfs_stdin(&["passwd", users.to_str().unwrap(), "eve"], b"eve's pass\n");
    assert!(passwd.status.success(), "{}", crate::util::stderr(&passwd));
    let mut server = TestServer::new();
    server.stop();
    let server = TestServer::start_with(&server.data.clone(), &["--auth-file", users.to_str().unwrap()]);
    let url = server.url("/f.txt");
    for args in [
        vec![url.as_str()],
        vec!["-u", "ann:wrong", url.as_str()],
        vec!["-u", "bob:s3cret pass", url.as_str()],
    ] {
        let (status, headers, _) = curl(&args, None);
        assert_eq!(status, 401, "{args:?}");
        assert_eq!(
            header(&headers, "www-authenticate").as_deref(),
            Some("Basic realm=\"tsmfs\", charset=\"UTF-8\"")
        );
    }
    assert_eq!(put(&server, "/f.txt", b"x", &[]).0, 401);
    assert_eq!(put(&server, "/f.txt", b"x", &["-u", "ann:s3cret pass"]).0, 201);
    let (status, _, body) = get(&server, "/f.txt", &["-u", "ann:s3cret pass"]);
    assert_eq!((status, body.as_slice()), (200, &b"x"[..]));
    assert_eq!(curl(&["-X", "PROPFIND", "-H", "Depth: 0", &url], None).0, 401);
    // Each user acts as its own identity, checked as the mount checks it.
    assert_eq!(get(&server, "/f.txt", &["-u", "eve:eve's pass"]).0, 200, "0644: readable");
    assert_eq!(put(&server, "/f.txt", b"eve", &["-u", "eve:eve's pass"]).0, 403, "root's file");
    assert_eq!(put(&server, "/g.txt", b"eve", &["-u", "eve:eve's pass"]).0, 403, "root's directory");
    let mut server = server;
    server.stop();

    // Beyond loopback: authentication, or an explicit opt-out.
    let refused = crate::util::tsmfs(&["webdav", "--listen", "0.0.0.0:0", server.data.to_str().unwrap()]);
    assert!(!refused.status.success());
    let message = crate::util::stderr(&refused);
    assert!(message.contains("refusing to serve 0.0.0.0:0 without authentication"), "{message}");
    // (192.0.2.1 is a documentation address: the bind fails after the check.)
    let opted_out = crate::util::tsmfs(&[
        "webdav",
        "--listen",
        "192.0.2.1:0",
        "--insecure-no-auth",
        server.data.to_str().unwrap(),
    ]);
    assert!(!opted_out.status.success());
    let message = crate::util::stderr(&opted_out);
    assert!(message.contains("listen on 192.0.2.1:0") && !message.contains("refusing"), "{message}");
}

#[test]
fn https_with_a_certificate_and_key_and_clear_errors_for_bad_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("cert");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    let (cert_arg, key_arg) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let mut first = TestServer::new();
    first.stop();
    let data = first.data.clone();
    let mut server = TestServer::start_with(&data, &["--tls-cert", cert_arg, "--tls-key", key_arg]);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let url = server.url("/secret.txt");
    let (status, _, _) = curl(&["--cacert", cert_arg, "-X", "PUT", &url], Some(b"over TLS"));
    assert_eq!(status, 201);
    let (status, headers, body) = curl(&["--cacert", cert_arg, &url], None);
    assert_eq!((status, body.as_slice()), (200, &b"over TLS"[..]));
    assert_eq!(header(&headers, "etag"), Some(crate::util::sha1_id(b"over TLS").etag()));
    // A client that does not trust the certificate, and plain HTTP to the
    // TLS port, get nowhere.
    let untrusted = Command::new("curl").args(["-s", "-o", "/dev/null", &url]).status().expect("curl");
    assert_eq!(untrusted.code(), Some(60), "curl's 'certificate not trusted'");
    let plain_url = url.replacen("https://", "http://", 1);
    let plain = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &plain_url])
        .output()
        .expect("curl");
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200", "plain HTTP answered on the TLS port");
    server.stop();

    // Bad files: one clear line each, exit 1.
    std::fs::write(dir.path().join("empty.pem"), b"").expect("write");
    let empty = dir.path().join("empty.pem");
    for (cert, key, expected) in [
        (cert_arg, empty.to_str().unwrap(), "no usable private key"),
        (empty.to_str().unwrap(), key_arg, "no PEM certificate"),
        ("/nonexistent/cert.pem", key_arg, "/nonexistent/cert.pem"),
    ] {
        let out = crate::util::tsmfs(&[
            "webdav",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            data.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{cert} {key}");
        let message = crate::util::stderr(&out);
        assert!(message.contains(expected), "{message}");
    }
    let half = crate::util::tsmfs(&["webdav", "--tls-cert", cert_arg, data.to_str().unwrap()]);
    assert!(
        crate::util::stderr(&half).contains("--tls-key"),
        "a certificate without a key is refused by the parser"
    );
}

#[test]
fn a_lock_on_an_unmapped_url_creates_an_empty_locked_file() {
    let server = TestServer::new();
    let url = server.url("/reserved.txt");
    let lockinfo = b"<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>";
    let (status, headers, _) = curl(&["-X", "LOCK", "-H", "Timeout: Second-600", &url], Some(lockinfo));
    assert_eq!(status, 201, "RFC 4918, 7.3");
    let token = header(&headers, "lock-token").expect("Lock-Token");
    let (status, _, body) = get(&server, "/reserved.txt", &[]);
    assert_eq!((status, body.len()), (200, 0), "the resource exists, empty");
    assert_eq!(put(&server, "/reserved.txt", b"mine", &[]).0, 423, "locked against others");
    let with_token = format!("If: ({token})");
    assert_eq!(put(&server, "/reserved.txt", b"mine", &["-H", &with_token]).0, 204);
    assert_eq!(get(&server, "/reserved.txt", &[]).2, b"mine");
}

/// DNS rebinding: a page whose name now points at 127.0.0.1 gets nothing
/// from the server, and changes nothing, unless that name was allowed.
#[test]
fn a_name_that_only_resolves_to_the_server_is_refused_unless_allowed() {
    let mut server = TestServer::new();
    assert_eq!(put(&server, "/secret.txt", b"mine", &[]).0, 201);
    let port = server.base.rsplit(':').next().expect("port").to_owned();
    let resolve = format!("rebound.example:{port}:127.0.0.1");
    let rebound = |path: &str| format!("http://rebound.example:{port}{path}");
    for (method, path, body) in [
        ("GET", "/secret.txt", None),
        ("PROPFIND", "/", None),
        ("PUT", "/secret.txt", Some(&b"theirs"[..])),
        ("PUT", "/new.txt", Some(&b"theirs"[..])),
        ("DELETE", "/secret.txt", None),
        ("MKCOL", "/dir", None),
    ] {
        let url = rebound(path);
        let (status, _, answer) = curl(&["--resolve", &resolve, "-X", method, &url], body);
        assert_eq!(status, 421, "{method} {path}");
        assert!(!String::from_utf8_lossy(&answer).contains("mine"), "{method} {path}");
    }
    let (status, _, body) = get(&server, "/secret.txt", &[]);
    assert_eq!((status, body.as_slice()), (200, &b"mine"[..]), "nothing changed");
    assert_eq!(get(&server, "/new.txt", &[]).0, 404);
    // The listen address and localhost, with or without the port.
    for host in
        [format!("127.0.0.1:{port}"), "127.0.0.1".into(), format!("localhost:{port}"), "localhost".into()]
    {
        let header = format!("Host: {host}");
        assert_eq!(get(&server, "/secret.txt", &["-H", &header]).0, 200, "{host}");
    }
    // A name the operator allows.
    server.stop();
    let server = TestServer::start_with(&server.data.clone(), &["--host", "Rebound.Example"]);
    let port = server.base.rsplit(':').next().expect("port").to_owned();
    let resolve = format!("rebound.example:{port}:127.0.0.1");
    let url = format!("http://rebound.example:{port}/secret.txt");
    let (status, _, body) = curl(&["--resolve", &resolve, &url], None);
    assert_eq!((status, body.as_slice()), (200, &b"mine"[..]));
    let url = format!("http://other.example:{port}/secret.txt");
    let resolve = format!("other.example:{port}:127.0.0.1");
    assert_eq!(curl(&["--resolve", &resolve, &url], None).0, 421);
}

/// 64 overlapping ranges of a 4 MB file once returned 256 MB for a
/// 197-byte request.
#[test]
fn overlapping_ranges_never_return_more_than_the_file() {
    let server = TestServer::new();
    let body = crate::util::noise(7, 4 << 20);
    assert_eq!(put(&server, "/big.bin", &body, &[]).0, 201);
    let overlapping = format!("Range: bytes={}", vec!["0-"; 64].join(","));
    let (status, headers, got) = get(&server, "/big.bin", &["-H", &overlapping]);
    assert_eq!((status, got.len()), (200, body.len()), "the whole file, once");
    assert!(header(&headers, "content-range").is_none());
    assert!(got == body);
    // Overlapping and adjacent ranges that add up to less are merged.
    let (status, headers, got) = get(&server, "/big.bin", &["-H", "Range: bytes=100-199,150-299,300-399"]);
    assert_eq!(status, 206);
    assert_eq!(header(&headers, "content-range").as_deref(), Some("bytes 100-399/4194304"));
    assert!(got == body[100..400]);
    // Separate ranges stay separate parts.
    let (status, headers, got) = get(&server, "/big.bin", &["-H", "Range: bytes=0-9,1000-1009"]);
    assert_eq!(status, 206);
    assert!(header(&headers, "content-type").is_some_and(|t| t.starts_with("multipart/byteranges")));
    assert!(got.len() < 400, "{} bytes for 20 asked", got.len());
}

/// What a user uploads never acts on the server's origin: no sniffing,
/// CSP sandbox unless the tree is trusted, and by-hash URLs never type
/// stored bytes as HTML just because the URL says so.
#[test]
fn uploaded_content_is_inert_on_the_servers_origin() {
    let mut server = TestServer::new();
    let script = b"<html><script>fetch('/secret').then(r => r.text()).then(alert)</script></html>";
    assert_eq!(put(&server, "/note.txt", script, &[]).0, 201);
    assert_eq!(put(&server, "/page.html", b"<p>hi</p>", &[]).0, 201);
    assert_eq!(put(&server, "/image.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", &[]).0, 201);
    let by_hash = |path: &str| {
        let (_, headers, _) = get(&server, path, &["-I"]);
        let etag = header(&headers, "etag").expect("etag");
        etag.trim_matches('"').to_owned()
    };
    let note = by_hash("/note.txt");
    let page = by_hash("/page.html");
    let cases = [
        ("GET", "/page.html".to_owned()),
        ("GET", "/image.svg".to_owned()),
        ("GET", "/note.txt".to_owned()),
        ("GET", "/".to_owned()),
        ("GET", "/missing".to_owned()),
        ("PROPFIND", "/".to_owned()),
        ("OPTIONS", "/".to_owned()),
        ("GET", format!("/.tsmfs/by-hash/{note}/x.html")),
    ];
    for (method, path) in &cases {
        let (_, headers, _) = curl(&["-X", method, &server.url(path)], None);
        assert_eq!(header(&headers, "x-content-type-options").as_deref(), Some("nosniff"), "{method} {path}");
        assert_eq!(
            header(&headers, "content-security-policy").as_deref(),
            Some("sandbox"),
            "{method} {path}"
        );
    }
    let content_type = |path: &str| header(&get(&server, path, &[]).1, "content-type");
    assert_eq!(
        content_type(&format!("/.tsmfs/by-hash/{note}/x.html")).as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        content_type(&format!("/.tsmfs/by-hash/{note}/x.svg")).as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(content_type(&format!("/.tsmfs/by-hash/{note}/x.txt")).as_deref(), Some("text/plain"));
    assert_eq!(content_type(&format!("/.tsmfs/by-hash/{page}/other.html")).as_deref(), Some("text/html"));
    // The same bytes given an HTML name in the tree may be served as HTML.
    assert_eq!(put(&server, "/now-a-page.html", script, &[]).0, 201);
    assert_eq!(content_type(&format!("/.tsmfs/by-hash/{note}/x.html")).as_deref(), Some("text/html"));

    server.stop();
    let server = TestServer::start_with(&server.data.clone(), &["--trusted-content"]);
    let (_, headers, _) = get(&server, "/page.html", &[]);
    assert_eq!(header(&headers, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header(&headers, "content-security-policy"), None, "a trusted site runs its scripts");
}

/// curl as user and group 65534 (nobody): (status, body).
fn curl_as_nobody(args: &[&str], body: Option<&[u8]>) -> (u16, Vec<u8>) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}"]).args(args).uid(65534).gid(65534);
    let out = curl_output(cmd, body);
    assert!(out.status.success(), "curl {args:?} as nobody failed: {}", out.status);
    let split = out.stdout.iter().rposition(|&b| b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&out.stdout[split + 1..]).parse().expect("status");
    (status, out.stdout[..split].to_vec())
}

/// A local user gets over HTTP what the mount gives them: the server
/// (root) acts, for a loopback client, as the user who owns the client's
/// socket, and checks that user against the tree's modes.
#[test]
fn a_local_user_gets_over_http_only_what_the_mount_gives_them() {
    use tsmfs::fs::{Caller, Origin, SetAttr};
    use tsmfs::id::Ino;
    let test = crate::util::TestFs::new();
    let root = Caller { uid: 0, gid: 0, origin: Origin::Cli };
    let chmod = |ino, perm| {
        test.fs.setattr(ino, &SetAttr { perm: Some(perm), ..SetAttr::default() }, &root).expect("chmod");
    };
    let secret = test.put(Ino::ROOT, "secret.txt", b"top secret: root only");
    chmod(secret.ino, 0o600);
    test.put(Ino::ROOT, "public.txt", b"for everyone");
    let private = test.fs.mkdir(Ino::ROOT, b"private", 0o700, &root).expect("mkdir");
    test.put(private.ino, "inner.txt", b"readable, behind a closed door");
    let drop_box = test.fs.mkdir(Ino::ROOT, b"drop", 0o777, &root).expect("mkdir");
    let tmp = test.fs.mkdir(Ino::ROOT, b"tmp", 0o1777, &root).expect("mkdir");
    let victim = test.put(tmp.ino, "victim.txt", b"root's, in a sticky directory");
    chmod(victim.ino, 0o666);
    let suid = test.put(drop_box.ino, "tool", b"#!/bin/sh\n");
    chmod(suid.ino, 0o6777);
    let data = test.data();
    let crate::util::TestFs { fs, dir: _dir } = test;
    drop(fs);

    let server = TestServer::start_on(&data);
    let url = |path: &str| server.url(path);
    let nobody = |args: &[&str]| curl_as_nobody(args, None);
    // Reads.
    assert_eq!(nobody(&[&url("/secret.txt")]).0, 403, "root's mode-600 file");
    assert_eq!(nobody(&[&url("/public.txt")]), (200, b"for everyone".to_vec()));
    assert_eq!(nobody(&[&url("/private/inner.txt")]).0, 403, "no search permission on private/");
    assert_eq!(nobody(&["-X", "PROPFIND", "-H", "Depth: 1", &url("/private/")]).0, 403);
    let secret_tag = sha1_id(b"top secret: root only").etag();
    let secret_tag = secret_tag.trim_matches('"');
    assert_eq!(nobody(&[&url(&format!("/.tsmfs/by-hash/{secret_tag}"))]).0, 404, "not by its hash either");
    let (status, listing) = nobody(&["-X", "PROPFIND", "-H", "Depth: 1", &url("/")]);
    let listing = String::from_utf8_lossy(&listing);
    assert_eq!(status, 207);
    assert!(listing.contains("secret.txt"), "names are listed, as ls shows them");
    assert!(!listing.contains(secret_tag), "but not the content id of an unreadable file");
    // Writes.
    assert_eq!(curl_as_nobody(&["-X", "PUT", &url("/public.txt")], Some(b"defaced")).0, 403);
    assert_eq!(curl_as_nobody(&["-X", "PUT", &url("/new.txt")], Some(b"x")).0, 403, "the root is 0755");
    assert_eq!(nobody(&["-X", "MKCOL", &url("/newdir")]).0, 403);
    assert_eq!(nobody(&["-X", "DELETE", &url("/public.txt")]).0, 403);
    assert_eq!(nobody(&["-X", "DELETE", &url("/tmp/victim.txt")]).0, 403, "sticky: not nobody's");
    let to_root = format!("Destination: {}", url("/moved.txt"));
    assert_eq!(nobody(&["-X", "MOVE", "-H", &to_root, &url("/public.txt")]).0, 403);
    assert_eq!(nobody(&["-X", "COPY", "-H", &to_root, &url("/public.txt")]).0, 403);
    let lockinfo = b"<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>";
    assert_eq!(curl_as_nobody(&["-X", "LOCK", &url("/public.txt")], Some(lockinfo)).0, 403);
    assert_eq!(nobody(&[&url("/private/")]).0, 403, "no HTML index of a directory it may not read");
    let proppatch = b"<?xml version=\"1.0\"?><D:propertyupdate xmlns:D=\"DAV:\"><D:set><D:prop><x:tag xmlns:x=\"urn:x\">v</x:tag></D:prop></D:set></D:propertyupdate>";
    assert_eq!(curl_as_nobody(&["-X", "PROPPATCH", &url("/public.txt")], Some(proppatch)).0, 403);
    let into_private = format!("Destination: {}", url("/private/stolen.txt"));
    assert_eq!(nobody(&["-X", "COPY", "-H", &into_private, &url("/public.txt")]).0, 403);
    // What nobody may do, it may, and what it creates is its own.
    assert_eq!(curl_as_nobody(&["-X", "PUT", &url("/drop/mine.txt")], Some(b"mine")).0, 201);
    assert_eq!(
        curl_as_nobody(&["-X", "PUT", &url("/tmp/victim.txt")], Some(b"rewritten")).0,
        204,
        "mode 666"
    );
    assert_eq!(curl_as_nobody(&["-X", "PUT", &url("/drop/tool")], Some(b"#!/bin/sh\necho\n")).0, 204);
    assert_eq!(nobody(&["-X", "MKCOL", &url("/drop/sub")]).0, 201);
    let to_drop = format!("Destination: {}", url("/drop/copy.txt"));
    assert_eq!(nobody(&["-X", "COPY", "-H", &to_drop, &url("/public.txt")]).0, 201);
    let renamed = format!("Destination: {}", url("/drop/renamed.txt"));
    assert_eq!(curl_as_nobody(&["-X", "PUT", &url("/drop/moving.txt")], Some(b"m")).0, 201);
    assert_eq!(nobody(&["-X", "MOVE", "-H", &renamed, &url("/drop/moving.txt")]).0, 201);
    assert_eq!(curl_as_nobody(&["-X", "PROPPATCH", &url("/drop/renamed.txt")], Some(proppatch)).0, 207);
    assert_eq!(nobody(&["-X", "DELETE", &url("/drop/renamed.txt")]).0, 204);
    // Root, over the same loopback, is not held back.
    assert_eq!(get(&server, "/secret.txt", &[]).2, b"top secret: root only");
    drop(server);

    let fs = tsmfs::fs::Fs::open(&data, tsmfs::fs::FsOptions::default()).expect("open");
    let drop_box = fs.resolve(b"drop").expect("drop");
    for name in [&b"mine.txt"[..], b"sub", b"copy.txt"] {
        let made = fs.lookup(drop_box.ino, name).expect("made by nobody");
        assert_eq!((made.uid, made.gid), (65534, 65534), "{}", String::from_utf8_lossy(name));
    }
    let tool = fs.lookup(drop_box.ino, b"tool").expect("tool");
    assert_eq!(tool.perm, 0o0777, "a write by another user than root drops setuid and setgid");
    assert_eq!(fs.resolve(b"public.txt").map(|a| a.size).ok(), Some(12), "unchanged");
}

/// PATCH as SabreDAV's partial update defines it (advertised in `DAV:`),
/// and PUT with Content-Range: only the bytes sent change, in one commit.
#[test]
fn partial_updates_change_only_the_bytes_sent() {
    let server = TestServer::new();
    let patch = |path: &str, range: &str, body: &[u8]| {
        let url = server.url(path);
        let range = format!("X-Update-Range: {range}");
        curl(
            &["-X", "PATCH", "-H", "Content-Type: application/x-sabredav-partialupdate", "-H", &range, &url],
            Some(body),
        )
        .0
    };
    // A small file, and one of 3 MiB (stored as extents, patched in place).
    for size in [1000usize, 3 << 20] {
        let path = format!("/f{size}");
        let mut expected = crate::util::noise(size as u64, size);
        assert_eq!(put(&server, &path, &expected, &[]).0, 201);
        assert_eq!(patch(&path, "bytes=10-14", b"HELLO"), 204);
        expected[10..15].copy_from_slice(b"HELLO");
        assert_eq!(patch(&path, "append", b"TAIL"), 204);
        expected.extend_from_slice(b"TAIL");
        assert_eq!(patch(&path, "bytes=-4", b"tail"), 204, "the last 4 bytes");
        let n = expected.len();
        expected[n - 4..].copy_from_slice(b"tail");
        let past = format!("bytes={}-", n + 6);
        assert_eq!(patch(&path, &past, b"far"), 204, "past the end: zeros between");
        expected.extend_from_slice(&[0; 6]);
        expected.extend_from_slice(b"far");
        let (status, headers, got) = get(&server, &path, &[]);
        assert_eq!((status, got.len()), (200, expected.len()), "{path}");
        assert!(got == expected, "{path}: other bytes");
        assert_eq!(header(&headers, "etag"), Some(sha1_id(&expected).etag()), "{path}");
        // Refused ones change nothing.
        assert_eq!(patch(&path, "bytes=5-1", b"xx"), 416);
        assert_eq!(patch(&path, "bytes=0-9", b"short"), 416, "range and length disagree");
        let url = server.url(&path);
        assert_eq!(curl(&["-X", "PATCH", "-H", "X-Update-Range: bytes=0-1", &url], Some(b"zz")).0, 415);
        let stale = format!("If-Match: {}", sha1_id(b"an older version").etag());
        let args = ["-X", "PATCH", "-H", "Content-Type: application/x-sabredav-partialupdate"];
        let guarded = |condition: &str| {
            let mut args = args.to_vec();
            args.extend(["-H", "X-Update-Range: bytes=0-1", "-H", condition, url.as_str()]);
            curl(&args, Some(b"if")).0
        };
        assert_eq!(guarded(&stale), 412, "a lost update is refused");
        assert!(get(&server, &path, &[]).2 == expected, "{path}: refused patches changed it");
        assert_eq!(guarded(&format!("If-Match: {}", sha1_id(&expected).etag())), 204);
        expected[0..2].copy_from_slice(b"if");
        // PUT with Content-Range writes a range too.
        let (status, _) = put(&server, &path, b"RANGE", &["-H", "Content-Range: bytes 100-104/*"]);
        assert!(status == 204 || status == 200, "{status}");
        expected[100..105].copy_from_slice(b"RANGE");
        assert!(get(&server, &path, &[]).2 == expected, "{path}: Content-Range");
    }
    // A missing file is created by an append, and by nothing else.
    assert_eq!(patch("/missing", "bytes=10-10", b"x"), 416);
    assert_eq!(get(&server, "/missing", &[]).0, 404);
    assert_eq!(patch("/missing", "append", b"new"), 201);
    assert_eq!(get(&server, "/missing", &[]).2, b"new");
}

/// `--listen unix:PATH`: local clients only, each acting as the user its
/// socket credentials name; no Host check (no web page reaches it).
#[test]
fn a_unix_socket_listener_acts_as_each_clients_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (data, socket) = (dir.path().join("data"), dir.path().join("dav.sock"));
    assert!(crate::util::tsmfs(&["init", data.to_str().unwrap()]).status.success());
    std::fs::write(&socket, b"").expect("a file where the socket goes");
    let listen = format!("unix:{}", socket.display());
    let out = crate::util::tsmfs(&["webdav", "--listen", &listen, data.to_str().unwrap()]);
    assert!(
        !out.status.success() && crate::util::stderr(&out).contains("not a socket"),
        "{}",
        crate::util::stderr(&out)
    );
    std::fs::remove_file(&socket).expect("remove");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(["webdav", "--listen", &listen])
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tsmfs webdav");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = lines.next().expect("server exited before listening").expect("read");
    assert!(line.contains(&listen), "{line}");
    std::thread::spawn(move || lines.for_each(drop));
    let sock = socket.to_str().unwrap();
    let curl_as = |uid: u32, args: &[&str], body: Option<&[u8]>| -> u16 {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", sock]).args(args);
        if uid != 0 {
            cmd.uid(uid).gid(uid);
        }
        let out = curl_output(cmd, body);
        String::from_utf8_lossy(&out.stdout).parse().expect("status")
    };
    assert_eq!(curl_as(0, &["-X", "PUT", "http://localhost/root.txt"], Some(b"root's")), 201);
    assert_eq!(curl_as(0, &["-X", "MKCOL", "http://any.name.works/open"], None), 201, "no Host check");
    assert_eq!(curl_as(65534, &["-X", "PUT", "http://localhost/root.txt"], Some(b"nobody's")), 403);
    assert_eq!(
        curl_as(65534, &["-X", "PUT", "http://localhost/open/mine.txt"], Some(b"x")),
        403,
        "0755, root's"
    );
    assert_eq!(curl_as(65534, &["http://localhost/root.txt"], None), 200, "0644: readable");
    // SAFETY: kill(2) on our own child's pid touches no memory.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().expect("wait").success());
    assert!(!socket.exists(), "the socket is removed at the stop");
    let fs = tsmfs::fs::Fs::open(&data, tsmfs::fs::FsOptions::default()).expect("open");
    let root = fs.resolve(b"root.txt").expect("root.txt");
    assert_eq!((root.uid, root.size), (0, 6));
}

/// A PUT whose precondition fails is answered from its headers, before
/// its body: the body is read (and dropped) first, so that a client still
/// sending it reads the 412 and a clean close, instead of a reset.
#[test]
fn an_early_412_is_read_by_a_client_still_sending_its_body() {
    use std::io::{BufRead, BufReader, Read, Write};
    let server = TestServer::new();
    let put = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-", &server.url("/f.bin")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201");
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
    let body = vec![b'x'; 2 << 20];
    let head = format!(
        "PUT /f.bin HTTP/1.1\r\nHost: {address}\r\nIf-Match: \"0000000000000000000000000000000000000000\"\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("headers");
    // The answer is decided from the headers; the body follows slowly.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for piece in body.chunks(64 * 1024) {
        stream.write_all(piece).expect("the server reads the body it did not need");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.starts_with("HTTP/1.1 412"), "{status}");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = n.trim().parse().expect("length");
        }
    }
    let mut rest = vec![0; length];
    reader.read_exact(&mut rest).expect("412 body");
    // dav-server closes after an early answer; cleanly, not with a reset.
    let mut more = Vec::new();
    match reader.read_to_end(&mut more) {
        Ok(_) => {}
        Err(e) => panic!("the connection ended with {e} after the 412"),
    }
}
