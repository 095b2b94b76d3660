//! Hostile input over HTTP: requests generated at random (methods, paths
//! full of `..`, `%2e%2e`, `%2f`, NUL and invalid UTF-8, overlong names,
//! garbage in Destination, If, Depth, Range, Overwrite and Timeout, broken
//! and deeply nested XML bodies) sent raw to a real `tsmfs webdav`; each
//! gets a 4xx (or a 2xx/3xx where it happens to be valid), never a 500, the
//! server never panics, and nothing outside its data directory changes.
//! Also each limit and its status.
//!
//! The suite sends 600 random requests; `TSMFS_FUZZ_CASES=100000 cargo
//! test hostile` sends more.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// A `tsmfs webdav` whose log is kept, to look for panics.
struct Server {
    child: Child,
    http: Client,
    log: Arc<Mutex<Vec<String>>>,
}

/// Raw HTTP/1.1, one request per connection: what a hostile client sends
/// need not be valid enough for an HTTP library.
struct Client {
    addr: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    fn start_with(data: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
            .args(["webdav", "--listen", "127.0.0.1:0"])
            .args(extra)
            .arg(data)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tsmfs webdav");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines.next().expect("server exited before listening").expect("read stderr");
            if let Some(at) = line.find("http://") {
                break line[at + 7..].trim_end_matches('/').to_owned();
            }
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            lines.map_while(Result::ok).for_each(|line| kept.lock().unwrap().push(line))
        });
        Server { child, http: Client { addr }, log }
    }

    /// The server still runs and has logged no panic.
    fn assert_healthy(&mut self, after: &str) {
        assert!(matches!(self.child.try_wait(), Ok(None)), "the server died after {after}");
        let log = self.log.lock().unwrap();
        assert!(
            !log.iter().any(|line| line.contains("panicked")),
            "the server panicked after {after}:\n{}",
            log.join("\n")
        );
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid touches no memory.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "server exit status {status}");
    }
}

impl Client {
    /// The status of one raw request (the connection closes after it).
    fn send(&self, request: &[u8]) -> Option<u16> {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        // The server may answer and close before reading everything.
        let _ = stream.write_all(request);
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n") && head.len() < 200 {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let line = String::from_utf8_lossy(&head);
        line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn request(&self, method: &str, path: &str, headers: &[String], body: &[u8]) -> Option<u16> {
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr).into_bytes();
        for header in headers {
            request.extend_from_slice(header.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body);
        self.send(&request)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A data directory with a few files, beside an `outside` directory
/// that no request may touch.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("init").arg(&data).status().expect("init").success()
    );
    std::fs::create_dir(dir.path().join("outside")).expect("outside");
    std::fs::write(dir.path().join("outside/canary"), b"canary").expect("canary");
    (dir, data)
}

/// Every path under `root` with its bytes (directories: empty).
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
                found.push((path, Vec::new()));
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

/// What is outside the data directory: the rest of the sandbox.
fn outside_data(sandbox: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(sandbox).into_iter().filter(|(path, _)| !path.starts_with(sandbox.join("data"))).collect()
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "dir", "b.txt", "new", "locked"]).prop_map(str::to_owned),
        4 => prop::sample::select(vec![
            "..", ".", "%2e%2e", "%2E%2e", "%2e", "%2f", "a%2fb", "%00", "a%00b", "%ff%fe", "%c0%ae%c0%ae",
            "%", "%zz", "%%", "~", "a b", "a\tb", "é", "\u{202e}x", "?q=1", "#frag", "%3f", "..;", "\\..\\",
        ])
        .prop_map(str::to_owned),
        1 => (250usize..300).prop_map(|n| "x".repeat(n)),
        2 => "[a-zA-Z0-9._~%-]{1,12}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (prop::collection::vec(segment(), 0..5), any::<bool>()).prop_map(|(segments, slash)| {
        let mut path = format!("/{}", segments.join("/"));
        if slash && !path.ends_with('/') {
            path.push('/');
        }
        path
    })
}

fn if_header() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "(",
        ")",
        "<",
        ">",
        "[",
        "]",
        "Not",
        " ",
        "\"x\"",
        "W/\"x\"",
        "\"\"",
        "<urn:uuid:0>",
        "<opaquelocktoken:abc>",
        "<DAV:no-lock>",
        "<http://127.0.0.1/a>",
        "<",
        ",",
        "*",
        "\u{0}",
    ]);
    prop::collection::vec(token, 0..12).prop_map(|tokens| tokens.concat())
}

fn header() -> impl Strategy<Value = String> {
    let host = prop::sample::select(vec![
        "",
        "http://127.0.0.1",
        "http://evil.example",
        "file://",
        "//",
        "http://[::1",
    ]);
    prop_oneof![
        (host, path()).prop_map(|(host, path)| format!("Destination: {host}{path}")),
        if_header().prop_map(|v| format!("If: {v}")),
        prop::sample::select(vec!["0", "1", "infinity", "Infinity", "-1", "2", "", "1,1"])
            .prop_map(|v| format!("Depth: {v}")),
        prop::sample::select(vec![
            "bytes=0-0",
            "bytes=-5",
            "bytes=5-",
            "bytes=18446744073709551616-",
            "bytes=5-1",
            "bytes=",
            "bytes=-0",
            "bytes=0-0,0-0,0-0,0-0",
            "lines=1-2",
            "bytes=--1",
        ])
        .prop_map(|v| format!("Range: {v}")),
        prop::sample::select(vec!["T", "F", "t", "", "TF", "yes"]).prop_map(|v| format!("Overwrite: {v}")),
        prop::sample::select(vec![
            "Second-10",
            "Infinite",
            "Second-99999999999999999999",
            "Second--1",
            "Second-",
            "Infinite, Second-4",
            "Minute-1",
        ])
        .prop_map(|v| format!("Timeout: {v}")),
        prop::sample::select(vec![
            "If-Match",
            "If-None-Match",
            "If-Range",
            "If-Modified-Since",
            "Lock-Token"
        ])
        .prop_flat_map(|name| "[ -~]{0,40}".prop_map(move |v| format!("{name}: {v}"))),
    ]
}

/// XML that looks like a WebDAV body, with random elements nested.
fn xml_body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop::sample::select(vec![
        "<D:prop/>",
        "<D:allprop/>",
        "<D:propname/>",
        "<D:getetag/>",
        "<x:p xmlns:x=\"urn:x\">v</x:p>",
        "<D:lockscope><D:exclusive/></D:lockscope>",
        "<D:locktype><D:write/></D:locktype>",
        "<D:owner>o</D:owner>",
        "text",
        "&amp;",
        "&undefined;",
        "<![CDATA[x]]>",
        "<!-- c -->",
        "<D:remove/>",
        "<",
    ])
    .prop_map(str::to_owned);
    let tree = leaf.prop_recursive(40, 200, 4, |inner| {
        (
            prop::sample::select(vec![
                "D:prop",
                "D:set",
                "D:remove",
                "D:owner",
                "x",
                "D:lockinfo",
                "D:propfind",
            ]),
            prop::collection::vec(inner, 0..4),
        )
            .prop_map(|(name, children)| format!("<{name}>{}</{name}>", children.concat()))
    });
    let root = prop::sample::select(vec!["D:propfind", "D:propertyupdate", "D:lockinfo", "D:other"]);
    prop_oneof![
        4 => (root, tree, any::<prop::sample::Index>(), any::<bool>()).prop_map(|(root, tree, cut, truncate)| {
            let xml = format!("<?xml version=\"1.0\"?><{root} xmlns:D=\"DAV:\">{tree}</{root}>").into_bytes();
            if truncate { xml[..cut.index(xml.len() + 1)].to_vec() } else { xml }
        }),
        1 => (1usize..200).prop_map(|n| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n)).into_bytes()),
        1 => Just(b"<!DOCTYPE a [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]><D:propfind xmlns:D=\"DAV:\"><D:prop><c>&c;</c></D:prop></D:propfind>".to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..300),
        3 => Just(Vec::new()),
    ]
}

fn request() -> impl Strategy<Value = (String, String, Vec<String>, Vec<u8>)> {
    let method = prop::sample::select(vec![
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
        "MKCOL",
        "COPY",
        "MOVE",
        "PROPFIND",
        "PROPPATCH",
        "LOCK",
        "UNLOCK",
        "OPTIONS",
        "POST",
        "PATCH",
        "TRACE",
        "FOO",
    ]);
    (method, path(), prop::collection::vec(header(), 0..5), xml_body()).prop_map(
        |(method, path, headers, body)| {
            // A COPY of the root copies every earlier copy too: a few of them
            // double the tree until requests time out. That costs the client
            // nothing it could not do with many requests, so it is allowed;
            // here a COPY starts below the root instead.
            let path = if method == "COPY" {
                let inside =
                    path.split('/').filter(|s| !matches!(*s, ".." | "%2e%2e" | "%2E%2e" | "%2e" | "."));
                format!("/dir/{}", inside.collect::<Vec<_>>().join("/"))
            } else {
                path
            };
            (method.to_owned(), path, headers, body)
        },
    )
}

#[test]
fn random_hostile_requests_get_no_500_and_touch_nothing_outside() {
    let (dir, data) = sandbox();
    let mut server = Server::start(&data);
    for (method, path, body) in [
        ("PUT", "/a", &b"a"[..]),
        ("MKCOL", "/dir", b""),
        ("PUT", "/dir/b.txt", b"b"),
        ("PUT", "/locked", b"l"),
    ] {
        assert!(matches!(server.http.request(method, path, &[], body), Some(201)), "{method} {path}");
    }
    let lock = b"<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>";
    assert_eq!(server.http.request("LOCK", "/locked", &["Timeout: Second-600".into()], lock), Some(200));
    let before = outside_data(dir.path());

    let cases = crate::util::count_from_env("TSMFS_FUZZ_CASES", 600);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let statuses = Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&request(), |(method, path, headers, body)| {
        let status = server.http.request(&method, &path, &headers, &body);
        let status = status.ok_or_else(|| TestCaseError::fail("no status line in the answer"))?;
        *statuses.lock().unwrap().entry(status).or_default() += 1;
        // 501: a method we do not implement; 502: a COPY or MOVE to
        // another server; 507: out of room. Any other 5xx means we
        // failed on input we should have refused.
        prop_assert!(
            status < 500
                || matches!(status, 501 | 507)
                || (status == 502 && matches!(method.as_str(), "COPY" | "MOVE")),
            "{method} {path} {headers:?}: {status}"
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    server.assert_healthy("the random requests");
    assert_eq!(outside_data(dir.path()), before, "something outside the data directory changed");
    eprintln!("{cases} random requests, statuses: {:?}", statuses.lock().unwrap());
    server.stop();
    let fsck = Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("fsck").arg(&data).output().expect("fsck");
    assert!(fsck.status.success(), "fsck: {}", String::from_utf8_lossy(&fsck.stdout));
}

#[test]
fn each_limit_answers_with_its_status() {
    let (_dir, data) = sandbox();
    let mut server = Server::start(&data);
    assert_eq!(server.http.request("PUT", "/f", &[], b"f"), Some(201));
    // 9,000 levels in under 64 KiB: this once overflowed a worker's stack
    // and aborted the process.
    let deep = format!("{}{}", "<a>".repeat(9_000), "</a>".repeat(9_000));
    for method in ["PROPFIND", "PROPPATCH", "LOCK"] {
        assert_eq!(
            server.http.request(method, "/f", &["Depth: 0".into()], deep.as_bytes()),
            Some(400),
            "{method}"
        );
    }
    let big = vec![b' '; 65 * 1024];
    assert_eq!(server.http.request("PROPFIND", "/f", &["Depth: 0".into()], &big), Some(413));
    assert_eq!(server.http.request("PROPPATCH", "/f", &[], &big), Some(413));
    let long_header = format!("X-Long: {}", "a".repeat(1 << 20));
    assert_eq!(server.http.request("GET", "/f", &[long_header], b""), Some(431));
    assert_eq!(server.http.request("GET", &format!("/{}", "a".repeat(70_000)), &[], b""), Some(414));
    let name = "n".repeat(256);
    assert_eq!(
        server.http.request("PUT", &format!("/{name}"), &[], b"x"),
        Some(414),
        "a name over 255 bytes"
    );
    assert_eq!(
        server.http.request("GET", &format!("/{name}"), &[], b""),
        Some(404),
        "no such name can exist"
    );
    // A client that never finishes its headers is cut off (after 30 s).
    let mut slow = TcpStream::connect(&server.http.addr).expect("connect");
    slow.write_all(b"GET /f HTTP/1.1\r\nHost: x\r\n").expect("send");
    slow.set_read_timeout(Some(Duration::from_secs(45))).expect("timeout");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(started.elapsed() < Duration::from_secs(40), "a slow client held its connection");
    server.assert_healthy("the limits");
    server.stop();
}

#[test]
fn locks_stop_at_the_limit_with_507() {
    use tsmfs::fs::{Caller, Fs, FsError, FsOptions, LockRequest, Origin};
    let (_dir, data) = sandbox();
    let fs = Arc::new(Fs::open(&data, FsOptions { max_locks: 3, ..Default::default() }).expect("open"));
    let caller = Caller { uid: 0, gid: 0, origin: Origin::WebDav };
    let request = |path: &str| LockRequest {
        path: path.as_bytes().to_vec(),
        principal: None,
        owner_xml: None,
        timeout_s: Some(600),
        shared: false,
        deep: false,
    };
    fs.lock_path(&request("/x"), &caller).expect("lock").expect("no conflict");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let server = runtime
        .block_on(tsmfs::http::Server::bind(fs.clone(), "127.0.0.1:0".parse().unwrap(), Default::default()))
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let lock = b"<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>";
    let http = Client { addr: addr.to_string() };
    let statuses: Vec<Option<u16>> =
        ["/a", "/b", "/c"].iter().map(|path| http.request("LOCK", path, &[], lock)).collect();
    assert_eq!(statuses, [Some(201), Some(201), Some(507)], "the third lock is one too many");
    assert!(matches!(fs.lock_path(&request("/d"), &caller), Err(FsError::LimitReached(_))));
    let _ = stop.send(());
    runtime.block_on(serving).expect("join").expect("serve");
}

/// A PUT head and the first bytes of a body that never comes whole.
fn stalled_put(addr: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n0123456789");
    stream.write_all(head.as_bytes()).expect("send");
    stream
}

/// The status of the answer on `stream`, read within `within`.
fn status_within(stream: &mut TcpStream, within: Duration) -> Option<u16> {
    stream.set_read_timeout(Some(within)).expect("timeout");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    String::from_utf8_lossy(&head).strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn a_body_that_stops_arriving_gets_408_and_leaves_nothing() {
    let (_dir, data) = sandbox();
    let mut server = Server::start_with(&data, &["--body-timeout", "1s"]);
    let started = std::time::Instant::now();
    let mut stream = stalled_put(&server.http.addr, "/stalled.bin");
    assert_eq!(status_within(&mut stream, Duration::from_secs(10)), Some(408));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(server.http.request("GET", "/stalled.bin", &[], b""), Some(404), "nothing published");
    let staging: Vec<_> = std::fs::read_dir(data.join("staging")).expect("staging").collect();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    server.assert_healthy("a stalled body");
    server.stop();
}

/// Hundreds of uploads that stall hold no thread: other requests, small
/// uploads included, are answered at once; and a stop is not held up by
/// them.
#[test]
fn stalled_uploads_starve_nothing_and_do_not_hold_up_a_stop() {
    let (_dir, data) = sandbox();
    let mut server = Server::start_with(&data, &["--body-timeout", "120s"]);
    let stalled: Vec<TcpStream> =
        (0..600).map(|i| stalled_put(&server.http.addr, &format!("/s{i}"))).collect();
    std::thread::sleep(Duration::from_millis(500));
    for (method, path, body) in
        [("PUT", "/small.txt", &b"small"[..]), ("PROPFIND", "/", &b""[..]), ("GET", "/small.txt", &b""[..])]
    {
        let started = std::time::Instant::now();
        let headers = if method == "PROPFIND" { vec!["Depth: 1".to_owned()] } else { vec![] };
        let status = server.http.request(method, path, &headers, body);
        assert!(matches!(status, Some(200..=299)), "{method} {path}: {status:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{method} {path} took {:?}", started.elapsed());
    }
    let started = std::time::Instant::now();
    // SAFETY: kill(2) on our own child's pid touches no memory.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(20), "the stop took {:?}", started.elapsed());
    drop(stalled);
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("field")
            / 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Client {
    /// The response head of a request, lowercased.
    fn head(&self, request: &str) -> String {
        let mut stream = TcpStream::connect(&self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        stream.write_all(request.as_bytes()).expect("send");
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).to_ascii_lowercase()
    }
}

/// 20 clients asking at once for brotli of 20 large text files: the
/// compressions queue on one thread, other requests are answered at
/// once, and the memory they took goes back.
#[test]
fn compressing_many_large_files_at_once_is_bounded() {
    let (_dir, data) = sandbox();
    let mut server = Server::start(&data);
    let files = 20;
    let text: Vec<u8> =
        (0..16usize << 20).map(|i| b"abcdefghijklmnopqrstuvwxyz <>{}\n"[(i * 7 + i / 4093) % 32]).collect();
    for f in 0..files {
        let mut body = text.clone();
        body[..8].copy_from_slice(format!("{f:08}").as_bytes());
        assert_eq!(server.http.request("PUT", &format!("/t{f}.txt"), &[], &body), Some(201));
    }
    assert_eq!(server.http.request("PUT", "/small.txt", &[], b"small"), Some(201));
    let pid = server.child.id();
    let (baseline, _) = memory_mib(pid);
    let head = |f: usize| {
        format!(
            "HEAD /t{f}.txt HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: br\r\nConnection: close\r\n\r\n",
            server.http.addr
        )
    };
    std::thread::scope(|scope| {
        for f in 0..files {
            let (client, request) = (&server.http, head(f));
            scope.spawn(move || client.head(&request));
        }
    });
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut peak = 0;
    loop {
        let asked = std::time::Instant::now();
        assert_eq!(server.http.request("GET", "/small.txt", &[], b""), Some(200));
        slowest = slowest.max(asked.elapsed());
        peak = peak.max(memory_mib(pid).0);
        let done =
            (0..files).filter(|&f| server.http.head(&head(f)).contains("content-encoding: br")).count();
        if done == files {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{done} of {files} variants after 2 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (after, high_water) = memory_mib(pid);
    eprintln!(
        "compressions: {:?}, baseline {baseline} MiB, peak seen {peak} MiB, high water {high_water} MiB, after {after} MiB, slowest small GET {slowest:?}",
        started.elapsed()
    );
    assert!(high_water < baseline + 300, "high water {high_water} MiB from a baseline of {baseline} MiB");
    assert!(after < baseline + 150, "{after} MiB held afterwards (baseline {baseline} MiB)");
    assert!(slowest < Duration::from_millis(500), "a small GET took {slowest:?}");
    server.assert_healthy("compressions");
    server.stop();
}
