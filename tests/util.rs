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

    /// Number of object files in the store, once unreferenced ones are
    /// removed (which waits for a durable point).
    pub fn object_files(&self) -> usize {
        self.fs.sync().expect("sync");
        self.object_files_on_disk()
    }

    /// Number of object files in the store right now.
    pub fn object_files_on_disk(&self) -> usize {
        walkdir::WalkDir::new(self.data().join("objects"))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .count()
    }
}

pub fn caller() -> Caller {
    Caller { uid: 1000, gid: 1000, origin: Origin::Cli }
}

pub fn rw() -> OpenFlags {
    OpenFlags { read: true, write: true, ..Default::default() }
}

pub fn sha1_id(bytes: &[u8]) -> ContentId {
    use sha1::Digest;
    ContentId::new(0, sha1::Sha1::digest(bytes).into())
}

/// The real SHA-1 collision pair shipped beside the repository.
pub fn collision_pair() -> (Vec<u8>, Vec<u8>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/sha1-collisions");
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
