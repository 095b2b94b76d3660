//! The `tsmfs` binary, run as a user would.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{stderr, stdout, tsmfs, tsmfs_stdin};

fn init(dir: &Path) -> String {
    let data = dir.join("data");
    let out = tsmfs(&["init", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    data.to_str().unwrap().to_owned()
}

#[test]
fn put_get_ls_stat_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let src = tmp.path().join("src.txt");
    std::fs::write(&src, b"hello\n").unwrap();
    let out = tsmfs(&["put", &data, src.to_str().unwrap(), "/docs/hello.txt"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"f572d396fae9206628714fb2ce00f72e94f2258f\""));

    let out = tsmfs(&["get", &data, "/docs/hello.txt"]);
    assert_eq!(out.stdout, b"hello\n");
    let dest = tmp.path().join("out.txt");
    assert!(tsmfs(&["get", &data, "docs/hello.txt", dest.to_str().unwrap()]).status.success());
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello\n");

    assert_eq!(stdout(&tsmfs(&["ls", &data])), "docs/\n");
    let long = stdout(&tsmfs(&["ls", "-l", &data, "/docs"]));
    assert!(long.starts_with("-rw-r--r--"), "{long}");
    assert!(long.contains("hello.txt"), "{long}");

    let stat = stdout(&tsmfs(&["stat", &data, "/docs/hello.txt"]));
    assert!(stat.contains("content: 0000000000000000/f572d396fae9206628714fb2ce00f72e94f2258f"), "{stat}");
    assert!(stat.contains("etag:    \"f572d396fae9206628714fb2ce00f72e94f2258f\""), "{stat}");
    assert!(stat.contains("size:    6"), "{stat}");
}

#[test]
fn put_from_stdin_streams_in_constant_memory() {
    use sha1::Digest;
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(["put", &data, "-", "/big.bin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // 512 MiB generated on the fly; the test itself holds 1 MiB at a time.
    let mut stdin = child.stdin.take().unwrap();
    let mut hasher = sha1::Sha1::new();
    let mut chunk: Vec<u8> = (0..1u32 << 20).map(|j| (j.wrapping_mul(2654435761) >> 13) as u8).collect();
    for i in 0..512u32 {
        chunk[..4].copy_from_slice(&i.to_le_bytes());
        hasher.update(&chunk);
        stdin.write_all(&chunk).unwrap();
    }
    // All but one pipe buffer has been consumed: the peak so far is the
    // peak of the whole put.
    let peak_kib = vm_hwm_kib(child.id());
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(peak_kib < 64 * 1024, "tsmfs put of 512 MiB peaked at {peak_kib} KiB resident");
    let etag = format!("\"{}\"", hex::encode(hasher.finalize()));
    assert!(stdout(&out).contains(&etag), "{}", stdout(&out));

    let mut get = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(["get", &data, "/big.bin"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut back = sha1::Sha1::new();
    let mut reader = get.stdout.take().unwrap();
    let mut total = 0usize;
    loop {
        let n = reader.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        back.update(&chunk[..n]);
    }
    assert!(get.wait().unwrap().success());
    assert_eq!(total, 512 << 20);
    assert_eq!(format!("\"{}\"", hex::encode(back.finalize())), etag);
}

/// Peak resident set of a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn import_copies_a_tree_and_stats_shows_dedup() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let host = tmp.path().join("host");
    std::fs::create_dir_all(host.join("a/b")).unwrap();
    for i in 0..300 {
        std::fs::write(host.join(format!("a/f{i}.txt")), format!("content {}\n", i % 100)).unwrap();
    }
    std::fs::write(host.join("a/b/big"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(host.join("a/b/big-copy"), vec![7u8; 3 << 20]).unwrap();
    std::fs::write(host.join("a/b/bytes-\u{e9}"), b"").unwrap();
    symlink("../f1.txt", host.join("a/b/link")).unwrap();
    let out = tsmfs(&["import", &data, host.to_str().unwrap(), "/imported"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("imported 303 files"), "{}", stdout(&out));

    assert_eq!(tsmfs(&["get", &data, "/imported/a/f250.txt"]).stdout, b"content 50\n");
    assert_eq!(tsmfs(&["get", &data, "/imported/a/b/big"]).stdout.len(), 3 << 20);
    let stat = stdout(&tsmfs(&["stat", &data, "/imported/a/b/link"]));
    assert!(stat.contains("target:  ../f1.txt"), "{stat}");

    let stats = stdout(&tsmfs(&["stats", &data]));
    assert!(stats.contains("files:            303"), "{stats}");
    assert!(stats.contains("distinct contents: 101"), "{stats}");
    let ratio: f64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("dedup ratio:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .expect("dedup ratio line");
    assert!(ratio > 1.9, "{stats}");

    // Importing again replaces in place and stores nothing new.
    let again = tsmfs(&["import", &data, host.to_str().unwrap(), "/imported"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&tsmfs(&["stats", &data])).contains("distinct contents: 101"));
}

#[test]
fn bad_arguments_and_data_dirs_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let out = tsmfs(&["ls", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not a tsmfs data directory"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"));

    let data = init(tmp.path());
    let again = tsmfs(&["init", &data]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already holds"), "{}", stderr(&again));

    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("x"), b"").unwrap();
    assert!(stderr(&tsmfs(&["init", busy.to_str().unwrap()])).contains("not empty"));

    for args in [
        vec!["get", &data, "/nope"],
        vec!["stat", &data, "/nope/deeper"],
        vec!["put", &data, "/no/such/host/file", "/x"],
        vec!["put", &data, "-", "/"],
        vec!["import", &data, "/no/such/host/dir"],
    ] {
        let out = tsmfs(&args);
        assert!(!out.status.success(), "{args:?} must fail");
        let err = stderr(&out);
        assert!(err.starts_with("tsmfs: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let usage = tsmfs(&["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(stderr(&usage).contains("Usage"));
}

#[test]
fn get_of_a_directory_is_refused_and_ls_of_a_file_lists_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let out = tsmfs_stdin(&["put", &data, "-", "/d/f"], b"x");
    assert!(out.status.success());
    let out = tsmfs(&["get", &data, "/d"]);
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    assert_eq!(stdout(&tsmfs(&["ls", &data, "/d/f"])), "f\n");
}

/// A `tsmfs import` killed with SIGKILL at any moment leaves a tree in
/// which every file that is there reads back whole and hashes to its
/// content id, and the data directory opens and imports again.
#[test]
fn an_import_killed_at_random_moments_leaves_a_consistent_tree() {
    use std::process::{Command, Stdio};
    use tsmfs::fs::{FileKind, Fs, FsOptions, Origin};
    const FILES: u64 = 4001;
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let host = tmp.path().join("host");
    for d in 0..40 {
        std::fs::create_dir_all(host.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            let body = format!("dir {d} file {f} ").repeat(f + 1);
            std::fs::write(host.join(format!("d{d}/f{f}")), body).unwrap();
        }
    }
    std::fs::write(host.join("big"), vec![42u8; 8 << 20]).unwrap();
    let files_in_tree = || {
        Fs::open(Path::new(&data), FsOptions { read_only: true, ..Default::default() })
            .unwrap()
            .totals()
            .unwrap()
            .files
    };
    // Kill right away, and right after the first, second and third batch
    // of files became visible (while the next one is being staged or
    // committed).
    let mut partial_runs = 0;
    for (run, after_files) in [0u64, 1, 1025, 2049].into_iter().enumerate() {
        let baseline = files_in_tree();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
            .args(["import", &data, host.to_str().unwrap(), &format!("/run{run}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while files_in_tree() < baseline + after_files && child.try_wait().unwrap().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let fs = Fs::open(Path::new(&data), FsOptions::default()).expect("reopens after a kill");
        let Ok(root) = fs.resolve(format!("/run{run}").as_bytes()) else { continue };
        let mut checked = 0;
        let mut dirs = vec![(root.ino, host.clone())];
        while let Some((dir, host_dir)) = dirs.pop() {
            for row in fs.readdir(dir, 0, u32::MAX).unwrap() {
                let name = String::from_utf8(row.name.clone()).unwrap();
                if row.inode.kind == FileKind::Dir {
                    dirs.push((row.inode.ino, host_dir.join(&name)));
                    continue;
                }
                let want = std::fs::read(host_dir.join(&name)).unwrap();
                let h = fs.open_file(row.inode.ino, crate::util::rw()).unwrap().handle;
                let got = fs.read(h, 0, want.len() as u32 + 1).unwrap();
                fs.release(h, Origin::Cli).unwrap();
                assert_eq!(got, want, "{name} after kill {run}");
                assert_eq!(row.inode.content_id(), Some(crate::util::sha1_id(&want)));
                checked += 1;
            }
        }
        drop(fs);
        eprintln!("kill {run} (after {after_files} files appeared): {checked} files whole");
        if checked > 0 && checked < FILES {
            partial_runs += 1;
        }
    }
    assert!(partial_runs > 0, "no kill landed in the middle of an import");
    let out = tsmfs(&["import", &data, host.to_str().unwrap(), "/final"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("imported {FILES} files")), "{}", stdout(&out));
    let stats = stdout(&tsmfs(&["stats", &data]));
    assert!(stats.contains(&format!("distinct contents: {FILES}")), "nothing stored twice: {stats}");
}

/// An ordinary user mounts their own data dir through fusermount3, with
/// nothing in /etc/fuse.conf (asking for `allow_root` made fusermount3
/// refuse), and the mount says what it is: type `fuse.tsmfs`.
#[test]
fn an_ordinary_user_mounts_through_fusermount3() {
    crate::util::require_fuse();
    let fusermount = Path::new("/usr/bin/fusermount3");
    assert!(fusermount.exists(), "needs fusermount3 (apt-get install fuse3; scripts/test installs it)");
    let tmp = tempfile::Builder::new().prefix("tsmfs-user").tempdir_in("/tmp").unwrap();
    let root = tmp.path();
    // The test binary's directory may not be open to other users: run a copy.
    let bin = root.join("tsmfs");
    std::fs::copy(env!("CARGO_BIN_EXE_tsmfs"), &bin).unwrap();
    let (data, mnt) = (root.join("data"), root.join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let chown =
        std::process::Command::new("chown").args(["-R", "nobody:nogroup"]).arg(root).status().unwrap();
    assert!(chown.success());
    std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("runuser").args(["-u", "nobody", "--"]).args(args).output().unwrap()
    };
    let out = as_nobody(&[bin.as_os_str(), "init".as_ref(), data.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = as_nobody(&[bin.as_os_str(), "mount".as_ref(), data.as_os_str(), mnt.as_os_str()]);
    assert!(out.status.success(), "mount as nobody: {}", stderr(&out));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(1) == mnt.to_str()).map(str::to_owned);
    let file = mnt.join("mine.txt");
    let wrote = as_nobody(&[
        "sh".as_ref(),
        "-c".as_ref(),
        format!("echo hi > {0} && cat {0}", file.display()).as_ref(),
    ]);
    let unmounted = as_nobody(&[fusermount.as_os_str(), "-u".as_ref(), mnt.as_os_str()]);
    if !unmounted.status.success() {
        let _ = std::process::Command::new("umount").arg("-l").arg(&mnt).status();
    }
    let line = line.expect("the mount is listed in /proc/mounts");
    assert!(line.starts_with("tsmfs ") && line.contains(" fuse.tsmfs "), "{line}");
    assert!(line.contains("user_id=65534") && !line.contains("allow_other"), "{line}");
    assert_eq!(stdout(&wrote), "hi\n", "{}", stderr(&wrote));
    assert!(unmounted.status.success(), "{}", stderr(&unmounted));
}

/// `tsmfs mount` as users run it: in the background until `umount`, and in
/// the foreground until SIGTERM; both leave nothing mounted and the data
/// committed.
#[test]
fn mount_runs_in_the_background_and_stops_cleanly() {
    crate::util::require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_s = mnt.to_str().unwrap();
    let is_mounted = || std::fs::read_to_string("/proc/mounts").unwrap().contains(&format!(" {mnt_s} fuse"));

    // Background: returns once mounted.
    let out = tsmfs(&["mount", &data, mnt_s]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(is_mounted());
    std::fs::write(mnt.join("bg.txt"), b"written in the background").unwrap();
    let umount = std::process::Command::new("umount").arg(&mnt).status().unwrap();
    assert!(umount.success());
    // The daemon notices, commits, checkpoints and exits, releasing the
    // data directory for the next writer.
    let probe = || tsmfs_stdin(&["put", &data, "-", "/probe"], b"p").status.success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !probe() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(probe(), "daemon still holds the data dir");
    assert_eq!(tsmfs(&["get", &data, "/bg.txt"]).stdout, b"written in the background");

    // Foreground: SIGTERM unmounts and exits 0.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(["mount", "--foreground", &data, mnt_s])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !is_mounted() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(is_mounted(), "foreground mount came up");
    assert_eq!(std::fs::read(mnt.join("bg.txt")).unwrap(), b"written in the background");
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!is_mounted(), "unmounted on SIGTERM");

    // Mount errors are one clear line.
    let out = tsmfs(&["mount", &data, "/no/such/dir"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("mount point /no/such/dir"), "{}", stderr(&out));
}

/// `umount M && tsmfs mount D2 M`: the first daemon, exiting after the
/// outside unmount, must not unmount the second mount by its path (it
/// did, every time, through fuser's mount handle).
#[test]
fn a_quick_remount_survives_the_previous_daemon_exiting() {
    crate::util::require_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let (first, second) = (tmp.path().join("first"), tmp.path().join("second"));
    for data in [&first, &second] {
        assert!(tsmfs(&["init", data.to_str().unwrap()]).status.success());
    }
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mnt_s = mnt.to_str().unwrap();
    let is_mounted = || std::fs::read_to_string("/proc/mounts").unwrap().contains(&format!(" {mnt_s} fuse"));
    for round in 0..3 {
        assert!(tsmfs(&["mount", first.to_str().unwrap(), mnt_s]).status.success());
        std::fs::write(mnt.join(format!("first-{round}")), b"1").unwrap();
        assert!(std::process::Command::new("umount").arg(&mnt).status().unwrap().success());
        assert!(tsmfs(&["mount", second.to_str().unwrap(), mnt_s]).status.success());
        // The first daemon commits, checkpoints and exits meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert!(is_mounted(), "round {round}: the second mount was taken down");
        assert!(!mnt.join(format!("first-{round}")).exists(), "round {round}: the second tree is mounted");
        assert!(std::process::Command::new("umount").arg(&mnt).status().unwrap().success());
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert_eq!(tsmfs(&["get", first.to_str().unwrap(), "/first-2"]).stdout, b"1");
}

/// Issue 15: `tsmfs passwd FILE USER` wrote FILE.tmp following symlinks
/// and keeping an existing file's mode. In a shared directory, a link
/// planted at that name made it overwrite the link's target (any file
/// root may write), and a file planted there kept its loose mode. The
/// new contents now go to a new private file under an unguessable name.
#[test]
fn passwd_follows_no_planted_link_and_writes_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"root's own file\n").unwrap();
    let users = shared.join("users");
    let users_s = users.to_str().unwrap();
    let mode = |path: &Path| std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777;

    // The name the old code wrote to, taken by a link to the victim.
    let planted = shared.join("users.tmp");
    symlink(&victim, &planted).unwrap();
    let out = tsmfs_stdin(&["passwd", users_s, "ann"], b"first password\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"root's own file\n", "the victim is unchanged");
    assert!(std::fs::symlink_metadata(&users).unwrap().is_file(), "FILE is a file, not the planted link");
    assert!(std::fs::read_to_string(&users).unwrap().starts_with("ann:$argon2id$"));
    assert_eq!(mode(&users), 0o600);

    // An older, loose FILE, and a world-writable file planted at the
    // old name: the new FILE is 0600 all the same.
    std::fs::remove_file(&planted).unwrap();
    std::fs::write(&planted, b"").unwrap();
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tsmfs_stdin(&["passwd", users_s, "bob"], b"second password\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode(&users), 0o600, "FILE keeps no loose mode");
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.contains("ann:$argon2id$") && text.contains("bob:$argon2id$"), "{text}");
    assert_eq!(std::fs::read(&planted).unwrap(), b"", "what was planted got none of it");
    let leftovers: Vec<_> = std::fs::read_dir(&shared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "users" && name != "users.tmp")
        .collect();
    assert!(leftovers.is_empty(), "nothing left aside: {leftovers:?}");
}

/// As ssh refuses a key others can read, the server refuses a password
/// file that group or others may read or write, saying how to fix it.
#[test]
fn a_password_file_others_can_read_or_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = init(tmp.path());
    let users = tmp.path().join("users");
    let users_s = users.to_str().unwrap();
    assert!(tsmfs_stdin(&["passwd", users_s, "ann"], b"a password\n").status.success());
    for (command, mode) in [("webdav", 0o644), ("webdav", 0o620), ("serve", 0o604)] {
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(mode)).unwrap();
        let mut args = vec![command, "--listen", "127.0.0.1:0", "--auth-file", users_s, &data];
        let mnt = tmp.path().join("mnt");
        let mnt_s = mnt.to_str().unwrap();
        if command == "serve" {
            args.extend(["--mount", mnt_s]);
        }
        let out = exited_within(Duration::from_secs(20), &args)
            .unwrap_or_else(|| panic!("{command} served with a {mode:04o} password file"));
        assert_eq!(out.status.code(), Some(1), "{command} with a {mode:04o} password file");
        let err = stderr(&out);
        assert!(err.contains(&format!("password file {users_s} has mode {mode:04o}")), "{err}");
        assert!(err.contains(&format!("chmod 600 {users_s}")), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

/// Run tsmfs; its output if it exits within `limit`, else `None` (it is
/// killed).
fn exited_within(limit: Duration, args: &[&str]) -> Option<std::process::Output> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tsmfs");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait for tsmfs").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().expect("tsmfs output"))
}
