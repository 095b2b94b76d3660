//! Helpers: temporary data directories, callers, the CLI binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tsmfs::fs::{Caller, Fs, FsOptions, OpenFlags, Origin, PutOptions};
use tsmfs::id::{ContentId, Ino};

/// A fresh, initialized data directory in a temp dir, opened.
pub struct TestFs {
    pub fs: Fs,
    pub dir: tempfile::TempDir,
}

impl TestFs {
    pub fn new() -> TestFs {
        let dir = tempfile::tempdir().expect("create temp dir");
        Fs::init(&dir.path().join("data"), caller()).expect("init data dir");
        let fs = Fs::open(&dir.path().join("data"), FsOptions::default()).expect("open data dir");
        TestFs { fs, dir }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Close and open again (as after a restart).
    pub fn reopen(self) -> TestFs {
        let TestFs { fs, dir } = self;
        drop(fs);
        let fs = Fs::open(&dir.path().join("data"), FsOptions::default()).expect("reopen data dir");
        TestFs { fs, dir }
    }

    /// Put `bytes` at `parent/name`.
    pub fn put(&self, parent: Ino, name: &str, bytes: &[u8]) -> tsmfs::fs::Attr {
        self.fs.put(parent, name.as_bytes(), &mut &bytes[..], PutOptions::default(), &caller()).expect("put")
    }

    /// All bytes of `ino`, read through a fresh handle.
    pub fn read_all(&self, ino: Ino) -> Vec<u8> {
        let opened = self.fs.open_file(ino, OpenFlags { read: true, ..Default::default() }).expect("open");
        let mut out = Vec::new();
        loop {
            let chunk = self.fs.read(opened.handle, out.len() as u64, 1 << 20).expect("read");
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.fs.release(opened.handle, Origin::Cli).expect("release");
        out
    }

    /// Number of chunks stored (object files and chunks kept in the
    /// database), once unreferenced ones are removed (which waits for a
    /// durable point).
    pub fn stored_chunks(&self) -> usize {
        self.fs.sync().expect("sync");
        self.stored_chunks_now()
    }

    /// Bytes of the chunks stored, once unreferenced ones are removed.
    pub fn stored_bytes(&self) -> u64 {
        self.fs.sync().expect("sync");
        let files: u64 = self.object_files().map(|e| e.metadata().map(|m| m.len()).unwrap_or(0)).sum();
        files + self.inline_chunks("SELECT COALESCE(SUM(length(bytes)), 0) FROM chunk_bytes")
    }

    /// Number of chunks stored right now.
    pub fn stored_chunks_now(&self) -> usize {
        self.object_files().count() + self.inline_chunks("SELECT COUNT(*) FROM chunk_bytes") as usize
    }

    fn object_files(&self) -> impl Iterator<Item = walkdir::DirEntry> {
        walkdir::WalkDir::new(self.data().join("objects"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
    }

    /// A number about the chunks kept in the database, read beside the
    /// open `Fs` (it sees every commit).
    fn inline_chunks(&self, sql: &str) -> u64 {
        let conn = rusqlite::Connection::open(self.data().join("meta.sqlite")).expect("open the database");
        conn.query_row(sql, [], |row| row.get::<_, i64>(0)).expect("count chunks") as u64
    }
}

pub fn caller() -> Caller {
    Caller { uid: 1000, gid: 1000, origin: Origin::Cli }
}

pub fn rw() -> OpenFlags {
    OpenFlags { read: true, write: true, ..Default::default() }
}

/// `pattern` repeated past 64 KiB: bytes stored as an object file, not in
/// the database.
pub fn object_sized(pattern: &[u8]) -> Vec<u8> {
    pattern.iter().copied().cycle().take(70_000 + pattern.len()).collect()
}

pub fn sha1_id(bytes: &[u8]) -> ContentId {
    use sha1::Digest;
    ContentId::new(0, sha1::Sha1::digest(bytes).into())
}

/// The real SHA-1 collision pair, kept under tests/data.
pub fn collision_pair() -> (Vec<u8>, Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sha1-collisions");
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("the SHA-1 collision pair must be at {}: {e}", dir.display()))
    };
    (read("sha-mbles-1.bin"), read("sha-mbles-2.bin"))
}

/// Run the `tsmfs` binary.
pub fn tsmfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tsmfs")).args(args).output().expect("run tsmfs")
}

/// Run the `tsmfs` binary with `stdin` as input.
pub fn tsmfs_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tsmfs");
    child.stdin.take().expect("stdin").write_all(stdin).expect("write stdin");
    child.wait_with_output().expect("wait tsmfs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A data directory mounted through FUSE in this process, unmounted on
/// drop. Needs root and /dev/fuse; fails (never skips) without them.
pub struct TestMount {
    pub fs: std::sync::Arc<Fs>,
    pub mnt: PathBuf,
    mounted: Option<tsmfs::fuse::Mounted>,
    _dir: tempfile::TempDir,
}

impl TestMount {
    pub fn new() -> TestMount {
        Self::with(tsmfs::fuse::MountOptions { allow_other: true, ..Default::default() })
    }

    pub fn with(options: tsmfs::fuse::MountOptions) -> TestMount {
        require_fuse();
        init_logging();
        let dir = tempfile::tempdir().expect("create temp dir");
        let data = dir.path().join("data");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        // Others must reach the mount point for tests that switch users.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Fs::init(&data, Caller { uid: 0, gid: 0, origin: Origin::Cli }).expect("init");
        let fs = std::sync::Arc::new(
            Fs::open(&data, FsOptions { read_only: options.read_only, ..Default::default() })
                .expect("open data dir"),
        );
        let mounted = tsmfs::fuse::mount(fs.clone(), &mnt, &options).expect("mount");
        // The first request waits for the kernel's INIT handshake.
        std::fs::metadata(&mnt).expect("stat the mount");
        TestMount { fs, mnt, mounted: Some(mounted), _dir: dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn passthrough(&self) -> bool {
        self.mounted.as_ref().is_some_and(|m| m.passthrough())
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.mounted.take().map(|m| m.unmount()) {
            // Never leave a mount behind (it would outlive this process as a
            // dead "transport endpoint"): detach it lazily.
            eprintln!("unmount {}: {e}; detaching", self.mnt.display());
            let path = std::ffi::CString::new(self.mnt.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid C string.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Fail with the reason when FUSE cannot be mounted here.
pub fn require_fuse() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "FUSE tests mount for real and must run as root");
    assert!(Path::new("/dev/fuse").exists(), "FUSE tests need /dev/fuse (modprobe fuse)");
}

/// A count from the environment (`var`, for longer runs by hand), else
/// `default`.
pub fn count_from_env<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Whether to run the calling test's body here: true in a copy of the
/// test binary that runs this test alone; in the test run itself, runs
/// that copy, asserts that it passed, and returns false. The test is
/// named by its thread, as libtest names each test's thread.
///
/// For tests whose descriptors on the mount must see only their own
/// closes: a fork by any other test's thread duplicates this process's
/// descriptors, and the child's close-on-exec sends a FLUSH for each,
/// which commits (or takes the error report of) what the test meant to
/// see at its own close.
pub fn alone_in_own_process() -> bool {
    const VAR: &str = "TSMFS_TEST_ALONE";
    let thread = std::thread::current();
    let name = thread.name().filter(|n| *n != "main").expect("run from a libtest test thread");
    if std::env::var_os(VAR).is_some_and(|v| v == name) {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .output()
        .expect("run the test binary");
    let (out_text, err_text) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "{name}, alone: {out_text}{err_text}");
    assert!(out_text.contains("1 passed"), "{name} did not run alone: {out_text}");
    false
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn cpath(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str())).unwrap()
}

/// getxattr(2): the value or the errno.
pub fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cpath(path), std::ffi::CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(errno());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

/// setxattr(2) with `flags`.
pub fn setxattr(path: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (p, n) = (cpath(path), std::ffi::CString::new(name).unwrap());
    // SAFETY: valid C strings and a value buffer of the given length.
    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), flags) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// listxattr(2) as a list of names.
pub fn listxattr(path: &Path) -> Result<Vec<String>, i32> {
    let p = cpath(path);
    let mut buf = vec![0u8; 65536];
    // SAFETY: a valid C string and a buffer of the given length.
    let len = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(errno());
    }
    buf.truncate(len as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// renameat2(2) with `flags`.
pub fn renameat2(from: &Path, to: &Path, flags: u32) -> Result<(), i32> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid C strings.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), flags) };
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// Run `script` with `sh -c` as user and group 65534 (nobody); returns
/// its exit code.
pub fn sh_as_nobody(script: &str) -> i32 {
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(65534)
        .gid(65534)
        .status()
        .expect("run sh")
        .code()
        .unwrap_or(-1)
}

/// Log to the test output (captured per test) at TSMFS_LOG or warn.
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("TSMFS_LOG").unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// Deterministic bytes that do not repeat in any short period and do not
/// compress (xorshift64, high bits), different for each `seed`.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}
