//! Real WebDAV clients against a real server on 127.0.0.1: rclone,
//! cadaver, davfs2 (a kernel mount) and headless Chromium. Each is a
//! Debian package that scripts/test installs; a missing one fails the
//! test with its name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::util::sha1_id;
use crate::webdav::TestServer;

/// Run `program` with `args` (and `stdin`), killed after `limit`.
fn run(program: &str, package: &str, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
    run_with_env(program, package, args, &[], stdin, limit)
}

/// As [`run`], with extra environment variables.
fn run_with_env(
    program: &str,
    package: &str,
    args: &[&str],
    env: &[(&str, &Path)],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program} is needed (Debian package {package}; scripts/test installs it): {e}")
        });
    let mut input = child.stdin.take().expect("stdin");
    if let Some(stdin) = stdin {
        input.write_all(stdin).expect("write stdin");
    }
    drop(input);
    // Collect output on another thread (a full pipe would stall the
    // child), and kill the child if it runs over.
    let pid = child.id() as i32;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(out) => out.expect("collect output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid touches no memory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let out = finished.recv().expect("output after kill").expect("collect output");
            panic!("{program} {args:?} ran over {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `root` as (relative path, bytes), sorted.
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(root).expect("under root").to_owned();
            (rel, std::fs::read(e.path()).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// Bytes that do not repeat in any short period.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    crate::util::noise(seed, len)
}

fn get(server: &TestServer, path: &str) -> (String, Vec<u8>) {
    let out =
        run("curl", "curl", &["-s", "-D", "/dev/stderr", &server.url(path)], None, Duration::from_secs(30));
    let body = out.stdout.clone();
    ok(&out, "curl GET");
    (String::from_utf8_lossy(&out.stderr).into_owned(), body)
}

#[test]
fn rclone_copies_a_tree_up_and_down_unchanged() {
    let server = TestServer::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let up = dir.path().join("up");
    for (path, bytes) in [
        ("a/b/c.txt", b"deep".to_vec()),
        ("empty.txt", Vec::new()),
        ("big.bin", noise(3 << 20, 1)),
        ("sp ace é.txt", "non-ASCII name".as_bytes().to_vec()),
    ] {
        let path = up.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }
    for i in 0..20 {
        std::fs::write(up.join(format!("a/small-{i}")), noise(100 + i * 37, i as u64)).expect("write");
    }
    let remote = ":webdav:tree";
    let url = format!("--webdav-url={}", server.base);
    let flags = ["--config", "/dev/null", &url, "--webdav-vendor=other"];
    let up_arg = up.to_str().expect("utf-8 path");
    let limit = Duration::from_secs(60);

    let copy_up: Vec<&str> = ["copy", up_arg, remote].iter().chain(&flags).copied().collect();
    ok(&run("rclone", "rclone", &copy_up, None, limit), "rclone copy up");
    // Names and sizes (the remote offers no hash rclone knows), then
    // every byte.
    let check: Vec<&str> = ["check", up_arg, remote].iter().chain(&flags).copied().collect();
    let out = run("rclone", "rclone", &check, None, limit);
    ok(&out, "rclone check");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 differences found"), "{out:?}");
    let check: Vec<&str> = ["check", "--download", up_arg, remote].iter().chain(&flags).copied().collect();
    ok(&run("rclone", "rclone", &check, None, limit), "rclone check --download");

    let down = dir.path().join("down");
    let down_arg = down.to_str().expect("utf-8 path");
    let copy_down: Vec<&str> = ["copy", remote, down_arg].iter().chain(&flags).copied().collect();
    ok(&run("rclone", "rclone", &copy_down, None, limit), "rclone copy down");
    let (sent, received) = (tree(&up), tree(&down));
    assert_eq!(sent.len(), 24);
    assert!(sent == received, "the tree came back different");

    let (headers, body) = get(&server, "/tree/big.bin");
    assert_eq!(body, noise(3 << 20, 1));
    let etag = format!("etag: {}", sha1_id(&body).etag());
    assert!(headers.to_ascii_lowercase().contains(&etag), "{headers}");
}

/// Set `path`'s modification time to `secs` after the epoch.
fn set_mtime(path: &Path, secs: u64) {
    let file = std::fs::File::options().write(true).open(path).expect("open");
    file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(secs)).expect("set mtime");
}

fn mtime_of(path: &Path) -> u64 {
    let modified = std::fs::metadata(path).expect("stat").modified().expect("mtime");
    modified.duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs()
}

/// rclone `args` with `flags` after them; its log (stderr), once it
/// succeeded.
fn rclone_with(flags: &[&str], args: &[&str]) -> String {
    let args: Vec<&str> = args.iter().chain(flags).copied().collect();
    let out = run("rclone", "rclone", &args, None, Duration::from_secs(60));
    ok(&out, &format!("rclone {args:?}"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Rewrite `note` with `bytes` of the same length, keep its mtime: a
/// `sync` by hash sends it (and only it) to `remote_path`; the next sends
/// nothing.
fn an_edit_that_keeps_size_and_mtime_is_synced(
    sync: &dyn Fn() -> String,
    note: &Path,
    bytes: &[u8],
    server: &TestServer,
    remote_path: &str,
) {
    let mtime = mtime_of(note);
    assert_eq!(std::fs::metadata(note).expect("stat").len(), bytes.len() as u64, "same size");
    std::fs::write(note, bytes).expect("write");
    set_mtime(note, mtime);
    let second = sync();
    assert!(second.contains("note.txt: Copied (replaced existing)"), "{second}");
    assert_eq!(second.matches(": Copied").count(), 1, "{second}");
    assert_eq!(get(server, remote_path).1, bytes);
    let third = sync();
    assert!(!third.contains(": Copied"), "nothing to send: {third}");
}

/// rclone's `nextcloud` remote reads each file's SHA-1 from
/// `oc:checksums` and sends mtimes with `X-OC-Mtime`: a sync by checksum
/// catches an edit that keeps size and mtime, a second sync sends
/// nothing, `rclone check` compares SHA-1s, and mtimes make the round
/// trip.
#[test]
fn rclone_syncs_by_sha1_and_keeps_modification_times() {
    let server = TestServer::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let up = dir.path().join("up");
    std::fs::create_dir_all(up.join("b")).expect("mkdir");
    let (note, blob) = (up.join("note.txt"), up.join("b/blob.bin"));
    std::fs::write(&note, b"draft number 1\n").expect("write");
    std::fs::write(&blob, noise(200_000, 7)).expect("write");
    set_mtime(&note, 1_600_000_000);
    set_mtime(&blob, 1_500_000_000);
    let url = format!("--webdav-url={}", server.base);
    let flags = ["--config", "/dev/null", &url, "--webdav-vendor=nextcloud", "-v"];
    let (up_arg, remote) = (up.to_str().expect("utf-8 path"), ":webdav:synced");
    let rclone = |args: &[&str]| rclone_with(&flags, args);

    let first = rclone(&["sync", "--checksum", up_arg, remote]);
    assert_eq!(first.matches(": Copied").count(), 2, "{first}");
    let check = rclone(&["check", "-vv", up_arg, remote]);
    assert!(check.contains("Using sha1 for hash comparisons"), "{check}");
    assert!(check.contains("0 differences found") && !check.contains("could not be checked"), "{check}");

    let sync = || rclone(&["sync", "--checksum", up_arg, remote]);
    an_edit_that_keeps_size_and_mtime_is_synced(
        &sync,
        &note,
        b"draft number 2\n",
        &server,
        "/synced/note.txt",
    );

    let down = dir.path().join("down");
    rclone(&["copy", remote, down.to_str().expect("utf-8 path")]);
    assert_eq!(mtime_of(&down.join("note.txt")), 1_600_000_000, "the mtime made the round trip");
    assert_eq!(mtime_of(&down.join("b/blob.bin")), 1_500_000_000);
    assert!(tree(&up) == tree(&down), "the tree came back different");
}

/// rclone's `owncloud` remote compares MD5 first: with `--md5` the
/// server gives it, and a sync by checksum catches an edit that keeps
/// size and mtime; `check` compares MD5s, each computed once.
#[test]
fn rclone_owncloud_syncs_by_md5_with_the_md5_flag() {
    let server = TestServer::new_with(&["--md5"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let up = dir.path().join("up");
    std::fs::create_dir_all(&up).expect("mkdir");
    let note = up.join("note.txt");
    std::fs::write(&note, b"version one\n").expect("write");
    std::fs::write(up.join("big.bin"), noise(3 << 20, 9)).expect("write");
    set_mtime(&note, 1_600_000_000);
    let url = format!("--webdav-url={}", server.base);
    let flags = ["--config", "/dev/null", &url, "--webdav-vendor=owncloud", "-vv"];
    let (up_arg, remote) = (up.to_str().expect("utf-8 path"), ":webdav:oc");
    let rclone = |args: &[&str]| rclone_with(&flags, args);
    rclone(&["sync", "--checksum", up_arg, remote]);
    let listed = String::from_utf8_lossy(
        &run("rclone", "rclone", &[&["lsjson", remote][..], &flags].concat(), None, Duration::from_secs(60))
            .stdout,
    )
    .into_owned();
    assert!(listed.contains("\"ModTime\":\"2020-09-13T12:26:40Z\""), "the mtime was kept: {listed}");
    let check = rclone(&["check", up_arg, remote]);
    assert!(check.contains("Using md5 for hash comparisons"), "{check}");
    assert!(check.contains("0 differences found") && !check.contains("could not be checked"), "{check}");
    let sync = || rclone(&["sync", "--checksum", up_arg, remote]);
    an_edit_that_keeps_size_and_mtime_is_synced(&sync, &note, b"version two\n", &server, "/oc/note.txt");
}

/// The ownCloud upload headers, by hand: `X-OC-Mtime` sets the mtime and
/// is answered `accepted`; a body that does not match its `OC-Checksum`
/// is refused and changes nothing; `oc:checksums` is the SHA-1.
#[test]
fn owncloud_upload_headers_set_the_mtime_and_check_the_body() {
    let server = TestServer::new();
    let curl = |args: &[&str]| {
        let out = run("curl", "curl", args, None, Duration::from_secs(30));
        ok(&out, "curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let body = "checked bytes";
    let sha1 = sha1_id(body.as_bytes()).lo_hex();
    let url = server.url("/f.txt");
    let put = |checksum: &str, data: &str| {
        curl(&[
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "--data-binary",
            data,
            "-H",
            "X-OC-Mtime: 1234567890",
            "-H",
            &format!("OC-Checksum: {checksum}"),
            &url,
        ])
        .to_ascii_lowercase()
    };
    let created = put(&format!("SHA1:{sha1} MD5:00112233445566778899aabbccddeeff"), body);
    assert!(created.starts_with("http/1.1 201"), "{created}");
    assert!(created.contains("x-oc-mtime: accepted"), "{created}");
    let refused = put(&format!("SHA1:{sha1}"), "other bytes!!");
    assert!(refused.starts_with("http/1.1 400"), "{refused}");
    assert_eq!(get(&server, "/f.txt").1, body.as_bytes(), "the refused body changed nothing");
    assert!(put("SHA1:nothex", body).starts_with("http/1.1 400"), "a malformed checksum");

    let propfind = curl(&[
        "-s",
        "-X",
        "PROPFIND",
        "-H",
        "Depth: 0",
        "--data",
        "<d:propfind xmlns:d='DAV:' xmlns:oc='http://owncloud.org/ns'><d:prop><d:getlastmodified/><oc:checksums/></d:prop></d:propfind>",
        &url,
    ]);
    assert!(propfind.contains(&format!("<oc:checksum>SHA1:{sha1}</oc:checksum>")), "{propfind}");
    assert!(propfind.contains("Fri, 13 Feb 2009 23:31:30 GMT"), "the mtime X-OC-Mtime gave: {propfind}");

    let copied = curl(&[
        "-s",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-X",
        "COPY",
        "-H",
        &format!("Destination: {}", server.url("/g.txt")),
        "-H",
        "X-OC-Mtime: 1000000000",
        &url,
    ])
    .to_ascii_lowercase();
    assert!(copied.starts_with("http/1.1 201") && copied.contains("x-oc-mtime: accepted"), "{copied}");
    let propfind = curl(&["-s", "-X", "PROPFIND", "-H", "Depth: 0", &server.url("/g.txt")]);
    assert!(propfind.contains("Sun, 09 Sep 2001 01:46:40 GMT"), "{propfind}");
}

fn http_status(server: &TestServer, method: &str, path: &str) -> u16 {
    let out = run(
        "curl",
        "curl",
        &["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, &server.url(path)],
        None,
        Duration::from_secs(30),
    );
    ok(&out, "curl").trim().parse().expect("status code")
}

#[test]
fn cadaver_runs_a_scripted_session() {
    let server = TestServer::new();
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("local.txt");
    let back = dir.path().join("back.txt");
    std::fs::write(&local, b"bytes from cadaver\n").expect("write");
    let script = format!(
        "mkcol docs\ncd docs\nput {} note.txt\nls\nget note.txt {}\npropset note.txt colour teal\npropget note.txt colour\n\
         lock note.txt\nunlock note.txt\ncopy note.txt copy.txt\nmove note.txt moved.txt\ndelete copy.txt\nls\nquit\n",
        local.display(),
        back.display()
    );
    let out =
        run("cadaver", "cadaver", &[&server.url("/")], Some(script.as_bytes()), Duration::from_secs(60));
    let transcript = ok(&out, "cadaver");
    for step in [
        "Creating `docs': succeeded.",
        "Uploading",
        "Downloading",
        "Setting property on `note.txt': succeeded.",
        "Locking `note.txt': succeeded.",
        "Unlocking `note.txt': succeeded.",
        "Copying `/docs/note.txt' to `/docs/copy.txt':  succeeded.",
        "Moving `/docs/note.txt' to `/docs/moved.txt':  succeeded.",
        "Deleting `copy.txt': succeeded.",
    ] {
        assert!(transcript.contains(step), "no {step:?} in:\n{transcript}");
    }
    assert!(!transcript.contains("failed"), "{transcript}");
    assert!(transcript.contains("colour") && transcript.contains("teal"), "propget: {transcript}");
    assert_eq!(std::fs::read(&back).expect("downloaded file"), b"bytes from cadaver\n");
    assert_eq!(get(&server, "/docs/moved.txt").1, b"bytes from cadaver\n");
    assert_eq!(http_status(&server, "GET", "/docs/note.txt"), 404);
    assert_eq!(http_status(&server, "GET", "/docs/copy.txt"), 404);
}

/// A davfs2 mount, unmounted (and so uploaded) on drop.
struct DavfsMount {
    point: PathBuf,
    mounted: bool,
}

impl DavfsMount {
    fn new(server: &TestServer, dir: &Path) -> DavfsMount {
        let point = dir.join("mnt");
        let cache = dir.join("cache");
        std::fs::create_dir_all(&point).expect("mount point");
        std::fs::create_dir_all(&cache).expect("cache dir");
        // mount.davfs drops to its own user, which must write the cache.
        std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .expect("chmod");
        let conf = dir.join("davfs2.conf");
        // buf_size 64: davfs2 1.6 reads directories with a buffer that
        // Linux 6.16 and later refuse (EINVAL on every readdir) unless it
        // is at least 64 KiB.
        let settings = format!("cache_dir {}\ndelay_upload 0\nuse_locks 1\nbuf_size 64\n", cache.display());
        std::fs::write(&conf, settings).expect("davfs2.conf");
        let options = format!("conf={}", conf.display());
        let (url, point_arg) = (server.url("/"), point.to_str().expect("utf-8 path").to_owned());
        // No credentials: the two prompts (user, password) get empty lines.
        let out = run(
            "mount.davfs",
            "davfs2",
            &[&url, &point_arg, "-o", &options],
            Some(b"\n\n"),
            Duration::from_secs(60),
        );
        ok(&out, "mount.davfs");
        DavfsMount { point, mounted: true }
    }

    /// Unmount, which waits for davfs2's uploads.
    fn unmount(&mut self) {
        if std::mem::take(&mut self.mounted) {
            let point = self.point.to_str().expect("utf-8 path").to_owned();
            ok(&run("umount", "mount", &[&point], None, Duration::from_secs(60)), "umount davfs2");
        }
    }
}

impl Drop for DavfsMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.point).status();
        }
    }
}

#[test]
fn davfs2_mounts_writes_and_reads_back() {
    // mount.davfs talks to the server as its own system user (davfs2),
    // for every user of its mount; here they are root.
    let server = TestServer::new_with(&["--anonymous-uid", "0"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let first = noise(200_000, 7);
    assert_eq!(
        ok(
            &run(
                "curl",
                "curl",
                &["-s", "-o", "/dev/null", "-w", "%{http_code}", "-T", "-", &server.url("/from-http.bin")],
                Some(&first),
                Duration::from_secs(30),
            ),
            "curl PUT"
        ),
        "201"
    );
    let mut mount = DavfsMount::new(&server, dir.path());
    let names: Vec<String> = std::fs::read_dir(&mount.point)
        .expect("readdir on the davfs2 mount")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"from-http.bin".to_owned()), "{names:?}");
    assert!(std::fs::read(mount.point.join("from-http.bin")).expect("read") == first);

    // A change made over HTTP: davfs2 revalidates with the ETag it holds
    // (its getetag and the ETag header must agree) and fetches the new
    // bytes, once its file_refresh (1 s, counted in whole seconds) is over.
    let second = noise(150_000, 8);
    let out = run(
        "curl",
        "curl",
        &["-s", "-T", "-", &server.url("/from-http.bin")],
        Some(&second),
        Duration::from_secs(30),
    );
    ok(&out, "curl PUT");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        std::fs::read(mount.point.join("from-http.bin")).expect("read again") == second,
        "stale after a PUT"
    );

    let written = noise(300_000, 9);
    std::fs::create_dir(mount.point.join("made")).expect("mkdir on the mount");
    std::fs::write(mount.point.join("made/by-davfs2.bin"), &written).expect("write on the mount");
    mount.unmount();
    let (headers, body) = get(&server, "/made/by-davfs2.bin");
    assert!(body == written, "the bytes written through davfs2");
    assert!(
        headers.to_ascii_lowercase().contains(&format!("etag: {}", sha1_id(&written).etag())),
        "{headers}"
    );
}

#[test]
fn chromium_renders_the_html_index() {
    let server = TestServer::new();
    assert_eq!(http_status(&server, "MKCOL", "/web"), 201);
    for name in ["plain.txt", "sp%20ace%20%C3%A9.txt"] {
        let out = run(
            "curl",
            "curl",
            &["-s", "-T", "-", &server.url(&format!("/web/{name}"))],
            Some(b"x"),
            Duration::from_secs(30),
        );
        ok(&out, "curl PUT");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // Chromium writes under $HOME (.cache, .pki) besides its profile.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let profile = format!("--user-data-dir={}", dir.path().join("profile").display());
    let shot = dir.path().join("index.png");
    let url = server.url("/web/");
    let browse = |extra: &[&str]| {
        let mut args = vec!["--headless", "--no-sandbox", "--disable-gpu", &profile];
        args.extend_from_slice(extra);
        args.push(&url);
        let env = [("HOME", home.as_path())];
        ok(&run_with_env("chromium", "chromium", &args, &env, None, Duration::from_secs(90)), "chromium")
    };
    let dom = browse(&["--dump-dom"]);
    assert!(dom.contains("<title>Index of /web/</title>"), "{dom}");
    assert!(dom.contains("href=\"/web/plain.txt\""), "{dom}");
    assert!(dom.contains("href=\"/web/sp%20ace%20%C3%A9.txt\">sp ace é.txt</a>"), "{dom}");
    let screenshot = format!("--screenshot={}", shot.display());
    browse(&[&screenshot, "--window-size=1024,768"]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000, "{} bytes", png.len());
}

/// One request with curl: status, headers (lowercased) and body.
fn exchange(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> (u16, String, String) {
    let mut args = vec!["-s", "-D", "/dev/stderr", "-X", method];
    for header in headers {
        args.extend(["-H", header]);
    }
    if let Some(body) = body {
        args.extend(["--data-binary", body]);
    }
    args.push(url);
    let out = run("curl", "curl", &args, None, Duration::from_secs(30));
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    ok(&out, "curl");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, head, String::from_utf8_lossy(&out.stdout).into_owned())
}

const MINI_REDIR: &str = "User-Agent: Microsoft-WebDAV-MiniRedir/10.0.19045";

/// What Windows' Mini-Redirector does when Explorer maps a drive and
/// saves a file, request for request: OPTIONS (it wants MS-Author-Via),
/// the quota of the root, LOCK of a new name, a 0-byte PUT, the real PUT
/// under the lock, PROPPATCH of the Win32 times and attributes, UNLOCK.
#[test]
fn windows_explorer_maps_a_drive_and_saves_a_file() {
    let server = TestServer::new();
    let (status, head, _) = exchange("OPTIONS", &server.url("/"), &[MINI_REDIR], None);
    assert_eq!(status, 200);
    assert!(head.contains("ms-author-via: dav") && head.contains("dav: 1,2"), "{head}");

    let quota = "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>\
                 <D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>";
    let (status, _, body) = exchange("PROPFIND", &server.url("/"), &[MINI_REDIR, "Depth: 0"], Some(quota));
    assert_eq!(status, 207, "{body}");
    let number = |name: &str| -> u64 {
        let open = format!("<D:{name}>");
        let at = body.find(&open).unwrap_or_else(|| panic!("no {name} in {body}")) + open.len();
        body[at..].split('<').next().and_then(|n| n.parse().ok()).expect("a number")
    };
    assert!(number("quota-available-bytes") > 0 && number("quota-used-bytes") > 0, "{body}");

    let url = server.url("/Report.docx");
    let lockinfo = "<?xml version=\"1.0\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope><D:exclusive/></D:lockscope>\
                    <D:locktype><D:write/></D:locktype><D:owner><D:href>WIN\\ann</D:href></D:owner></D:lockinfo>";
    let (status, head, _) = exchange("LOCK", &url, &[MINI_REDIR, "Timeout: Second-3600"], Some(lockinfo));
    assert_eq!(status, 201, "{head}");
    let token =
        head.lines().find_map(|l| l.strip_prefix("lock-token: ")).expect("Lock-Token").trim().to_owned();
    let under_lock = format!("If: ({token})");
    let (status, _, _) = exchange("PUT", &url, &[MINI_REDIR, &under_lock], Some(""));
    assert!(status == 200 || status == 204, "0-byte PUT under the lock: {status}");
    let (status, _, _) = exchange("PUT", &url, &[MINI_REDIR, &under_lock], Some("the report"));
    assert_eq!(status, 204, "the real PUT under the lock");
    let (status, _, _) = exchange("PUT", &url, &[MINI_REDIR], Some("a writer without the token"));
    assert_eq!(status, 423);

    let times = "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:propertyupdate xmlns:D=\"DAV:\" \
                 xmlns:Z=\"urn:schemas-microsoft-com:\"><D:set><D:prop>\
                 <Z:Win32CreationTime>Mon, 01 Jan 2024 08:00:00 GMT</Z:Win32CreationTime>\
                 <Z:Win32LastAccessTime>Tue, 02 Jan 2024 09:00:00 GMT</Z:Win32LastAccessTime>\
                 <Z:Win32LastModifiedTime>Wed, 03 Jan 2024 10:00:00 GMT</Z:Win32LastModifiedTime>\
                 <Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>";
    let (status, _, body) = exchange("PROPPATCH", &url, &[MINI_REDIR, &under_lock], Some(times));
    assert_eq!(status, 207, "{body}");
    assert_eq!(body.matches("200 OK").count(), 1, "one propstat, all 200: {body}");
    assert!(!body.contains("424") && !body.contains("409"), "{body}");
    let ask = "<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\" xmlns:Z=\"urn:schemas-microsoft-com:\"><D:prop>\
               <Z:Win32CreationTime/><Z:Win32LastAccessTime/><Z:Win32LastModifiedTime/><Z:Win32FileAttributes/>\
               <D:getlastmodified/><D:creationdate/></D:prop></D:propfind>";
    let (status, _, body) = exchange("PROPFIND", &url, &[MINI_REDIR, "Depth: 0"], Some(ask));
    assert_eq!(status, 207);
    for shown in [
        ">Mon, 01 Jan 2024 08:00:00 GMT</",
        ">Tue, 02 Jan 2024 09:00:00 GMT</",
        "<D:getlastmodified>Wed, 03 Jan 2024 10:00:00 GMT</D:getlastmodified>",
        "<D:creationdate>2024-01-01T08:00:00Z</D:creationdate>",
        ">00000020</",
    ] {
        assert!(body.contains(shown), "{shown} in {body}");
    }
    assert!(!body.contains("404"), "every property is known: {body}");
    let (status, _, _) = exchange("UNLOCK", &url, &[MINI_REDIR, &format!("Lock-Token: {token}")], None);
    assert_eq!(status, 204);
    assert_eq!(get(&server, "/Report.docx").1, b"the report");
}

/// What Finder does beside a user's files: AppleDouble (`._name`) and
/// `.DS_Store` files are stored like any other, its own properties are
/// answered as absent, and a lock is refreshed by a LOCK without a body.
#[test]
fn macos_finder_metadata_files_and_lock_refresh() {
    let server = TestServer::new();
    let finder = "User-Agent: WebDAVFS/3.0.0 (03008000) Darwin/22.1.0 (x86_64)";
    for (name, bytes) in
        [("/note.txt", "a note"), ("/._note.txt", "\u{5}\u{16}\u{7}resource fork"), ("/.DS_Store", "Bud1")]
    {
        let (status, _, _) = exchange("PUT", &server.url(name), &[finder], Some(bytes));
        assert_eq!(status, 201, "{name}");
        assert_eq!(get(&server, name).1, bytes.as_bytes(), "{name}");
    }
    let ask = "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:propfind xmlns:D=\"DAV:\"><D:prop>\
               <D:getlastmodified/><D:getcontentlength/><D:resourcetype/>\
               <A:executable xmlns:A=\"http://apple.com/ns\"/></D:prop></D:propfind>";
    let (status, _, body) = exchange("PROPFIND", &server.url("/"), &[finder, "Depth: 1"], Some(ask));
    assert_eq!(status, 207);
    assert!(
        body.contains("<D:href>/._note.txt</D:href>") && body.contains("<D:href>/.DS_Store</D:href>"),
        "{body}"
    );
    assert!(
        body.contains("404 Not Found") && body.contains("<D:getcontentlength>6</D:getcontentlength>"),
        "{body}"
    );

    let lockinfo = "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:lockinfo xmlns:D=\"DAV:\"><D:lockscope>\
                    <D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>\
                    <D:owner><D:href>http://www.apple.com/webdav_fs/</D:href></D:owner></D:lockinfo>";
    let url = server.url("/note.txt");
    let (status, head, _) =
        exchange("LOCK", &url, &[finder, "Timeout: Second-600", "Depth: 0"], Some(lockinfo));
    assert_eq!(status, 200, "{head}");
    let token =
        head.lines().find_map(|l| l.strip_prefix("lock-token: ")).expect("Lock-Token").trim().to_owned();
    let (status, _, body) =
        exchange("LOCK", &url, &[finder, "Timeout: Second-600", &format!("If: ({token})")], None);
    assert_eq!(status, 200, "refresh: {body}");
    assert!(body.contains("Second-") && body.contains(token.trim_matches(['<', '>'])), "{body}");
    let (status, _, _) = exchange("UNLOCK", &url, &[finder, &format!("Lock-Token: {token}")], None);
    assert_eq!(status, 204);
}
