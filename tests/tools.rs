//! Everyday tools on the mount, each run the same way in a native
//! directory beside it: the times `cp -p`, `cp -a` and `tar -x` set
//! survive; `tar -c` of a fresh `git clone` finds nothing changing under
//! it; readers racing `rename(tmp, path)` never miss the path; the
//! terminal ioctls of every Python `open` get ENOTTY.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::TestMount;

/// Run `program` with `args`; its output, failing the test if it failed.
fn run(program: &str, args: &[&std::ffi::OsStr], dir: &Path) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A tree of files of assorted sizes (two past a chunk), each with its
/// own old mtime down to the nanosecond.
fn tree_with_old_times(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for i in 0..60u32 {
        let dir = root.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("f{i}"));
        let len = match i {
            7 => 3 << 20,
            8 => (1 << 20) + 17,
            _ => (i as usize * 997) % 50_000,
        };
        std::fs::write(&path, (0..len).map(|b| (b % 251) as u8 ^ i as u8).collect::<Vec<u8>>()).unwrap();
        let when = libc::timespec { tv_sec: 1_000_000_000 + i as i64 * 3_601, tv_nsec: 123_456_789 };
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path and two timespecs that outlive the call.
        assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), [when, when].as_ptr(), 0) }, 0);
        files.push(path.strip_prefix(root).unwrap().to_path_buf());
    }
    files
}

/// (mtime seconds, nanoseconds) of each of `files` under `root`.
fn mtimes(root: &Path, files: &[PathBuf]) -> Vec<(i64, i64)> {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(root.join(f)).unwrap();
            (meta.mtime(), meta.mtime_nsec())
        })
        .collect()
}

#[test]
fn cp_p_cp_a_and_tar_x_keep_every_mtime_as_on_a_native_directory() {
    let m = TestMount::new();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    let files = tree_with_old_times(&src);
    let archive = scratch.path().join("tree.tar");
    run("tar", &["--format=posix".as_ref(), "-cf".as_ref(), archive.as_os_str(), ".".as_ref()], &src);
    let native = scratch.path().join("native");
    std::fs::create_dir(&native).unwrap();
    for target in [&native, &m.mnt] {
        run("cp", &["-p".as_ref(), "-r".as_ref(), src.as_os_str(), "cp-p".as_ref()], target);
        run("cp", &["-a".as_ref(), src.as_os_str(), "cp-a".as_ref()], target);
        std::fs::create_dir(target.join("tar-x")).unwrap();
        run("tar", &["-xf".as_ref(), archive.as_os_str(), "-C".as_ref(), "tar-x".as_ref()], target);
    }
    let want = mtimes(&src, &files);
    for copy in ["cp-p", "cp-a", "tar-x"] {
        let on_native = mtimes(&native.join(copy), &files);
        assert_eq!(on_native, want, "{copy} in a native directory");
        let on_mount = mtimes(&m.mnt.join(copy), &files);
        let wrong = on_mount.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(wrong, 0, "{copy}: {wrong} of {} files lost their mtime on the mount", files.len());
        for f in &files {
            assert_eq!(std::fs::read(m.mnt.join(copy).join(f)).unwrap(), std::fs::read(src.join(f)).unwrap());
        }
    }
}

#[test]
fn tar_c_of_a_fresh_git_clone_finds_nothing_changing() {
    let m = TestMount::new();
    let scratch = tempfile::tempdir().unwrap();
    let repo = scratch.path().join("repo");
    let files = tree_with_old_times(&repo);
    assert!(!files.is_empty());
    let git = |args: &[&str], dir: &Path| {
        let mut all: Vec<&std::ffi::OsStr> =
            vec!["-c".as_ref(), "user.name=t".as_ref(), "-c".as_ref(), "user.email=t@t".as_ref()];
        all.extend(args.iter().map(|a| a.as_ref() as &std::ffi::OsStr));
        run("git", &all, dir)
    };
    git(&["init", "-q"], &repo);
    git(&["add", "."], &repo);
    git(&["commit", "-q", "-m", "tree"], &repo);
    let native = scratch.path().join("native");
    std::fs::create_dir(&native).unwrap();
    for target in [&native, &m.mnt] {
        let url = format!("file://{}", repo.display());
        git(&["clone", "-q", "--no-hardlinks", &url, "clone"], target);
        let out =
            Command::new("tar").args(["-cf", "/dev/null", "clone"]).current_dir(target).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && said.is_empty(), "tar -c in {}: {said}", target.display());
    }
    // What tar checks, for files whose attributes were asked for while
    // their writes were pending: the times a stat sees before reading are
    // those an fstat sees after.
    for target in [&native, &m.mnt] {
        let dir = target.join("written");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..200 {
            let mut file = std::fs::File::create(dir.join(format!("f{i}"))).unwrap();
            std::io::Write::write_all(&mut file, &vec![i as u8; 5000 + i]).unwrap();
            file.metadata().unwrap();
        }
        let times = |m: &std::fs::Metadata| (m.ctime(), m.ctime_nsec(), m.mtime(), m.mtime_nsec(), m.size());
        let mut changed = 0;
        for i in 0..200 {
            let path = dir.join(format!("f{i}"));
            let before = std::fs::metadata(&path).unwrap();
            let mut file = std::fs::File::open(&path).unwrap();
            std::io::Read::read_to_end(&mut file, &mut Vec::new()).unwrap();
            changed += usize::from(times(&before) != times(&file.metadata().unwrap()));
        }
        assert_eq!(changed, 0, "in {}: files changed as they were read", target.display());
    }
}

#[test]
fn readers_racing_a_rename_over_the_path_never_miss_it() {
    let m = TestMount::new();
    let scratch = tempfile::tempdir().unwrap();
    for dir in [scratch.path(), m.mnt.as_path()] {
        std::fs::write(dir.join("config"), b"version 0").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (path, stop) = (dir.join("config"), stop.clone());
                std::thread::spawn(move || {
                    let (mut reads, mut missed) = (0u32, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let opened = std::fs::read(&path);
                        let stated = std::fs::metadata(&path);
                        reads += 1;
                        for e in [opened.err(), stated.err()].into_iter().flatten() {
                            missed.push(e.to_string());
                        }
                    }
                    (reads, missed)
                })
            })
            .collect();
        for i in 1..=400 {
            let tmp = dir.join(format!("config.tmp{i}"));
            std::fs::write(&tmp, format!("version {i}")).unwrap();
            std::fs::rename(&tmp, dir.join("config")).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            let (reads, missed) = reader.join().unwrap();
            assert!(reads > 0);
            assert!(
                missed.is_empty(),
                "in {}: {} of {reads} reads failed: {:?}",
                dir.display(),
                missed.len(),
                &missed[..1]
            );
        }
        assert_eq!(std::fs::read(dir.join("config")).unwrap(), b"version 400");
    }
}

#[test]
fn terminal_ioctls_on_a_file_get_enotty() {
    use std::os::fd::AsRawFd;
    let m = TestMount::new();
    let scratch = tempfile::tempdir().unwrap();
    for dir in [scratch.path(), m.mnt.as_path()] {
        std::fs::write(dir.join("f"), b"not a terminal").unwrap();
        let file = std::fs::File::open(dir.join("f")).unwrap();
        // SAFETY: TCGETS writes a termios into the zeroed one we own.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TCGETS, &mut termios) };
        assert_eq!((rc, crate::util::errno()), (-1, libc::ENOTTY), "in {}", dir.display());
    }
}
