//! Crash safety: `tsmfs serve` killed with SIGKILL at random moments
//! while mixed changes go through the mount (create + write + close,
//! rename, unlink) and over WebDAV (PUT, MOVE, DELETE, also of files the
//! mount made and the kernel holds); after each kill the process restarts
//! (clearing the stale mount) and
//! - `tsmfs fsck` finds no inconsistency (garbage objects are allowed:
//!   a crash may leave released objects for gc),
//! - every acknowledged change (close/rename/unlink returned, 201/204
//!   received) is there, each file reading back exactly,
//! - an unacknowledged one is either not there or whole: no name holds
//!   anything but one of the versions written to it (or, on the mount,
//!   the empty file an acknowledged open(O_CREAT) made).
//!
//! The suite runs 20 kills; `TSMFS_KILLS=150 cargo test crash` runs more.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What each name may hold now: one state once settled, two while a
/// change to it is unacknowledged (`None`: the name is absent).
#[derive(Default)]
struct Ledger(BTreeMap<String, Vec<State>>);

type State = Option<Arc<Vec<u8>>>;
type Shared = Arc<Mutex<Ledger>>;

impl Ledger {
    /// A change to `name` is under way: `state` becomes possible.
    fn begin(&mut self, name: &str, state: State) {
        self.0.entry(name.to_owned()).or_insert_with(|| vec![None]).push(state);
    }

    /// The change was acknowledged: `state` is the only one possible.
    fn acknowledge(&mut self, name: &str, state: State) {
        self.0.insert(name.to_owned(), vec![state]);
    }

    /// After `what` (a kill, a power cut) and a restart: fsck must pass
    /// and every name must hold one of its possible states, which then
    /// is its only one. Counts what was found where.
    fn settle(&mut self, data: &Path, what: &str, tally: &mut Tally) {
        let fsck = Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("fsck").arg(data).output().expect("fsck");
        assert!(
            fsck.status.success(),
            "fsck after {what}:\n{}{}",
            String::from_utf8_lossy(&fsck.stdout),
            String::from_utf8_lossy(&fsck.stderr)
        );
        let fs = tsmfs::fs::Fs::open(data, tsmfs::fs::FsOptions { read_only: true, ..Default::default() })
            .expect("open read-only");
        let describe =
            |state: &State| state.as_ref().map_or("absent".to_owned(), |b| format!("{} bytes", b.len()));
        for (name, allowed) in self.0.iter_mut() {
            let found = read_back(&fs, name);
            let Some(at) = allowed.iter().position(|state| *state == found) else {
                let possible: Vec<String> = allowed.iter().map(describe).collect();
                panic!("after {what}, {name} is {}; possible were only {possible:?}", describe(&found));
            };
            match (allowed.len(), at + 1 == allowed.len()) {
                (1, _) => tally.settled += 1,
                (_, true) => tally.newest += 1,
                (_, false) => tally.earlier += 1,
            }
            *allowed = vec![found];
        }
    }
}

/// What [`Ledger::settle`] found.
#[derive(Default)]
struct Tally {
    /// Names with one possible state (settled or acknowledged), there.
    settled: u64,
    /// Names changing at the crash, found in their newest state.
    newest: u64,
    /// Names changing at the crash, found in an earlier whole state.
    earlier: u64,
}

/// A pause of `min_ms` plus up to `spread_ms`, from a xorshift `seed`.
fn random_pause(seed: &mut u64, min_ms: u64, spread_ms: u64) {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    std::thread::sleep(Duration::from_millis(min_ms + *seed % spread_ms));
}

/// A new data directory at `data` and an empty mount point at `mnt`.
fn init_data(data: &Path, mnt: &Path) {
    std::fs::create_dir(mnt).expect("mount point");
    let init = Command::new(env!("CARGO_BIN_EXE_tsmfs")).arg("init").arg(data).output().expect("init");
    assert!(init.status.success());
}

/// The next start detaches the last stale mount and stops cleanly.
fn restart_and_stop(data: &Path, mnt: &Path) {
    let (mut running, _) = serve(data, mnt);
    // SAFETY: kill(2) on our own child's pid touches no memory.
    unsafe { libc::kill(running.child.id() as i32, libc::SIGTERM) };
    let status = running.child.wait().expect("wait");
    // (The log thread reads until the pipe closes, just after the exit.)
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        status.success(),
        "serve after SIGTERM: {status}; it said:\n{}",
        running.log.lock().unwrap().join("\n")
    );
    assert!(mounted(mnt).is_none(), "a mount left behind");
}

/// Writers of one round: (base URL, mount, round, ledger, stop flag).
type StartWriters = fn(&str, &Path, u64, &Shared, &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>>;

/// One round under way: serve running, writers writing until `stop`.
struct Round {
    running: Running,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn start_round(data: &Path, mnt: &Path, round: u64, ledger: &Shared, start: StartWriters) -> Round {
    let (running, base) = serve(data, mnt);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = start(&base, mnt, round, ledger, &stop);
    Round { running, stop, threads }
}

fn stop_writers(stop: &AtomicBool, threads: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("writer");
    }
}

/// Names a writer may change (no other writer touches them).
struct Owned(Vec<(String, Arc<Vec<u8>>)>);

impl Owned {
    fn take(&mut self, pick: u64) -> Option<(String, Arc<Vec<u8>>)> {
        (!self.0.is_empty()).then(|| self.0.swap_remove(pick as usize % self.0.len()))
    }
}

/// A serve process, killed (and its mount detached) if the test panics.
struct Running {
    child: Child,
    mnt: PathBuf,
    /// What it printed after its "listening" line.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            if !reaped_within(&mut self.child, Duration::from_secs(5)) {
                abort_fuse_connection(&self.mnt);
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() && mounted(&self.mnt).is_some() {
            abort_fuse_connection(&self.mnt);
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).stderr(Stdio::null()).status();
        }
    }
}

/// Whether `child` exited within `limit` (polling: `wait` cannot time out).
fn reaped_within(child: &mut Child, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The device (`major:minor`) of the mount at `mnt`, from mountinfo: a
/// stat of the mount point could hang on a dead daemon.
fn mounted(mnt: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mnt = mnt.to_str()?;
    mounts.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&mnt)).then(|| fields[2].to_owned())
    })
}

/// Abort the FUSE connection behind `mnt` (fusectl), failing its
/// requests: the way out for a daemon that cannot finish dying.
fn abort_fuse_connection(mnt: &Path) {
    let Some(device) = mounted(mnt) else { return };
    let minor = device.rsplit(':').next().unwrap_or_default();
    let control = Path::new("/sys/fs/fuse/connections");
    let mounted_here = !control.join(minor).exists()
        && Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(control)
            .status()
            .is_ok_and(|s| s.success());
    let _ = std::fs::write(control.join(minor).join("abort"), "1");
    if mounted_here {
        let _ = Command::new("umount").arg(control).status();
    }
}

/// What the threads of a process are waiting on, for a failure message.
fn thread_states(pid: u32) -> String {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|dir| dir.flatten().collect::<Vec<_>>());
    let mut out = String::new();
    for task in tasks.unwrap_or_default() {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        let stack: Vec<String> = read("stack").lines().take(6).map(str::to_owned).collect();
        out += &format!("  {} ({}): {}\n", read("comm").trim(), read("wchan"), stack.join(" < "));
    }
    out
}

fn serve(data: &Path, mnt: &Path) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tsmfs"))
        .arg("serve")
        .arg(data)
        .arg("--mount")
        .arg(mnt)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tsmfs serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let base = loop {
        let line = lines.next().expect("serve exited early").expect("read");
        assert!(!line.contains("not mounted"), "{line}");
        if let Some(at) = line.find("http://") {
            break line[at..].trim_end_matches('/').to_owned();
        }
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| kept.lock().unwrap().push(line)));
    (Running { child, mnt: mnt.to_owned(), log }, base)
}

/// Bytes of write `n`: its length and contents depend on `n`.
fn bytes_of(n: u64) -> Arc<Vec<u8>> {
    Arc::new(crate::util::noise(n, ((n * 7919) % 200_000 + 1) as usize))
}

/// One WebDAV request; its status, or None when the server is gone.
fn http(agent: &ureq::Agent, method: &str, url: &str, destination: Option<&str>, body: &[u8]) -> Option<u16> {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(destination) = destination {
        request = request.header("Destination", destination).header("Overwrite", "F");
    }
    let response = agent.run(request.body(body.to_vec()).ok()?).ok()?;
    Some(response.status().as_u16())
}

/// Mount-made files the mount writer handed to WebDAV writer 1 (which
/// then moves or deletes them: names the kernel holds, changed elsewhere).
type Handoff = Arc<Mutex<Vec<(String, Arc<Vec<u8>>)>>>;

fn writers(
    base: &str,
    mnt: &Path,
    round: u64,
    ledger: &Shared,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let handoff = Handoff::default();
    let mut threads = Vec::new();
    for writer in 0..2u64 {
        let (ledger, stop, base, handoff) = (ledger.clone(), stop.clone(), base.to_owned(), handoff.clone());
        threads.push(std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(5)))
                .build()
                .into();
            let mut owned = Owned(Vec::new());
            let fresh = |n: u64| format!("http-{round}-{writer}-{n}");
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let handed = if writer == 1 { handoff.lock().unwrap().pop() } else { None };
                let (from, bytes) = match (n % 5, handed) {
                    (_, Some(file)) => file,
                    (3 | 4, None) => match owned.take(n) {
                        Some(file) => file,
                        None => continue,
                    },
                    _ => {
                        let (name, bytes) = (fresh(n), bytes_of(round * 1_000_000 + writer * 10_000 + n));
                        ledger.lock().unwrap().begin(&name, Some(bytes.clone()));
                        if http(&agent, "PUT", &format!("{base}/{name}"), None, &bytes) != Some(201) {
                            break;
                        }
                        ledger.lock().unwrap().acknowledge(&name, Some(bytes.clone()));
                        owned.0.push((name, bytes));
                        continue;
                    }
                };
                if n % 2 == 0 {
                    let to = fresh(n);
                    ledger.lock().unwrap().begin(&from, None);
                    ledger.lock().unwrap().begin(&to, Some(bytes.clone()));
                    let moved =
                        http(&agent, "MOVE", &format!("{base}/{from}"), Some(&format!("{base}/{to}")), &[]);
                    if moved != Some(201) {
                        break;
                    }
                    let mut ledger = ledger.lock().unwrap();
                    ledger.acknowledge(&from, None);
                    ledger.acknowledge(&to, Some(bytes.clone()));
                    owned.0.push((to, bytes));
                } else {
                    ledger.lock().unwrap().begin(&from, None);
                    if http(&agent, "DELETE", &format!("{base}/{from}"), None, &[]) != Some(204) {
                        break;
                    }
                    ledger.lock().unwrap().acknowledge(&from, None);
                }
            }
        }));
    }
    let (ledger, stop, mnt) = (ledger.clone(), stop.clone(), mnt.to_owned());
    threads.push(std::thread::spawn(move || {
        let mut owned = Owned(Vec::new());
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let done = match (n % 6, owned.take(n)) {
                (3, Some((from, bytes))) => {
                    let to = format!("fuse-{round}-{n}");
                    ledger.lock().unwrap().begin(&from, None);
                    ledger.lock().unwrap().begin(&to, Some(bytes.clone()));
                    std::fs::rename(mnt.join(&from), mnt.join(&to)).map(|()| {
                        let mut ledger = ledger.lock().unwrap();
                        ledger.acknowledge(&from, None);
                        ledger.acknowledge(&to, Some(bytes.clone()));
                        owned.0.push((to, bytes));
                    })
                }
                (4, Some((name, _))) => {
                    ledger.lock().unwrap().begin(&name, None);
                    std::fs::remove_file(mnt.join(&name))
                        .map(|()| ledger.lock().unwrap().acknowledge(&name, None))
                }
                (_, taken) => {
                    owned.0.extend(taken);
                    let name = format!("fuse-{round}-{n}");
                    let bytes = bytes_of(round * 1_000_000 + 900_000 + n);
                    ledger.lock().unwrap().begin(&name, Some(Arc::new(Vec::new())));
                    ledger.lock().unwrap().begin(&name, Some(bytes.clone()));
                    // close() returning 0 is the acknowledgement (FLUSH
                    // commits).
                    write_and_close(&mnt.join(&name), &bytes).map(|()| {
                        ledger.lock().unwrap().acknowledge(&name, Some(bytes.clone()));
                        if n % 6 == 5 {
                            handoff.lock().unwrap().push((name, bytes));
                        } else {
                            owned.0.push((name, bytes));
                        }
                    })
                }
            };
            if done.is_err() {
                break;
            }
        }
    }));
    threads
}

/// Not std::fs::write: dropping a File ignores close's errors.
fn write_and_close(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    // SAFETY: the descriptor came from into_raw_fd and is closed once.
    if unsafe { libc::close(file.into_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What `/name` holds committed, read through the library (a read-only
/// open takes no lock).
fn read_back(fs: &tsmfs::fs::Fs, name: &str) -> State {
    use tsmfs::fs::{OpenFlags, Origin};
    let attr = fs.resolve_committed(format!("/{name}").as_bytes()).ok()?;
    // Through the file, not its content id: a version a recovery went back
    // to may have its id computed only later.
    let handle = fs.open_file(attr.ino, OpenFlags { read: true, ..Default::default() }).expect("open").handle;
    let bytes = fs.read(handle, 0, attr.size as u32).expect("bytes of a committed file");
    fs.release(handle, Origin::Cli).expect("release");
    assert_eq!(bytes.len() as u64, attr.size, "{name}: short read");
    Some(Arc::new(bytes))
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_change() {
    crate::util::require_fuse();
    let kills = crate::util::count_from_env("TSMFS_KILLS", 20u64);
    let dir = tempfile::tempdir().expect("temp dir");
    let (data, mnt): (PathBuf, PathBuf) = (dir.path().join("data"), dir.path().join("mnt"));
    init_data(&data, &mnt);
    let ledger = Shared::default();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut tally = Tally::default();
    for round in 0..kills {
        let Round { mut running, stop, threads } = start_round(&data, &mnt, round, &ledger, writers);
        random_pause(&mut seed, 50, 400);
        running.child.kill().expect("SIGKILL");
        if !reaped_within(&mut running.child, Duration::from_secs(10)) {
            let states = thread_states(running.child.id());
            abort_fuse_connection(&mnt);
            panic!("round {round}: the killed serve did not exit within 10 s; its threads:\n{states}");
        }
        stop_writers(&stop, threads);
        ledger.lock().unwrap().settle(&data, &format!("SIGKILL {round}"), &mut tally);
    }
    restart_and_stop(&data, &mnt);
    let names = ledger.lock().unwrap().0.len();
    let Tally { settled, newest, earlier } = tally;
    eprintln!(
        "{kills} kills, {names} names: {} checks passed ({settled} settled, {} in flight at a kill: {newest} in the new state, {earlier} in the old)",
        settled + newest + earlier,
        newest + earlier
    );
    assert!(settled > 0, "the writers got nothing done");
}

/// An ext4 file system on a loop device, mounted for the test.
struct LoopDisk {
    image: PathBuf,
    at: PathBuf,
}

impl LoopDisk {
    fn create(image: PathBuf, at: PathBuf) -> LoopDisk {
        let file = std::fs::File::create(&image).expect("image");
        // Sparse: only what is written takes room (100 power cuts write
        // about a gigabyte; 5 take some tens of megabytes).
        file.set_len(4 << 30).expect("size the image");
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .expect("run mkfs.ext4 (e2fsprogs)");
        assert!(mkfs.success(), "mkfs.ext4");
        std::fs::create_dir(&at).expect("disk mount point");
        let disk = LoopDisk { image, at };
        disk.mount();
        disk
    }

    fn mount(&self) {
        let status = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&self.image)
            .arg(&self.at)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a loop device needs root and /dev/loop-control");
    }

    fn unmount(&self) {
        let status = Command::new("umount").arg(&self.at).status().expect("umount");
        assert!(status.success(), "unmount the loop disk");
    }

    /// What a power cut does to the disk: ext4 stops at once, and what
    /// was not on disk yet (page cache, journal not yet committed) is
    /// lost (EXT4_IOC_SHUTDOWN with EXT4_GOING_FLAGS_NOLOGFLUSH, as
    /// xfstests' "godown").
    fn cut_power(&self) {
        const EXT4_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
        const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;
        let dir = std::fs::File::open(&self.at).expect("open the disk's root");
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 from the pointer we pass.
        let done = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&dir), EXT4_IOC_SHUTDOWN, &flags) };
        assert_eq!(done, 0, "EXT4_IOC_SHUTDOWN: {}", std::io::Error::last_os_error());
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).stderr(Stdio::null()).status();
    }
}

/// Writers for the power cut: WebDAV PUTs (new names and overwrites) and
/// mount writes that end in fsync, the one acknowledgement that promises
/// durability. Returns the names whose write was fsynced.
fn durable_writers(
    base: &str,
    mnt: &Path,
    round: u64,
    ledger: &Shared,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (http_ledger, http_stop, base) = (ledger.clone(), stop.clone(), base.to_owned());
    let web = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut n = 0;
        while !http_stop.load(Ordering::Relaxed) {
            n += 1;
            // Every third PUT overwrites an earlier name of this round.
            let name = if n % 3 == 0 { format!("web-{round}-{}", n / 3) } else { format!("web-{round}-{n}") };
            let bytes = bytes_of(round * 1_000_000 + 500_000 + n);
            http_ledger.lock().unwrap().begin(&name, Some(bytes.clone()));
            // A 201/204 promises what a close does: not durability, so the
            // name may go back to an earlier state; nothing is settled.
            if !matches!(http(&agent, "PUT", &format!("{base}/{name}"), None, &bytes), Some(201 | 204)) {
                break;
            }
        }
    });
    let (ledger, stop, mnt) = (ledger.clone(), stop.clone(), mnt.to_owned());
    let fuse = std::thread::spawn(move || {
        use std::io::Write;
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let name = if n % 3 == 0 {
                format!("fsynced-{round}-{}", n / 3)
            } else {
                format!("fsynced-{round}-{n}")
            };
            let bytes = bytes_of(round * 1_000_000 + 700_000 + n);
            ledger.lock().unwrap().begin(&name, Some(Arc::new(Vec::new())));
            ledger.lock().unwrap().begin(&name, Some(bytes.clone()));
            let written = std::fs::File::create(mnt.join(&name)).and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            });
            if written.is_err() {
                break;
            }
            ledger.lock().unwrap().acknowledge(&name, Some(bytes));
        }
    });
    vec![web, fuse]
}

#[test]
fn power_cuts_lose_nothing_fsynced_and_tear_nothing() {
    crate::util::require_fuse();
    let cuts = crate::util::count_from_env("TSMFS_POWERCUTS", 5u64);
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = LoopDisk::create(dir.path().join("disk.img"), dir.path().join("disk"));
    let (data, mnt) = (disk.at.join("data"), dir.path().join("mnt"));
    init_data(&data, &mnt);
    let ledger = Shared::default();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut tally = Tally::default();
    for round in 0..cuts {
        let Round { mut running, stop, threads } = start_round(&data, &mnt, round, &ledger, durable_writers);
        random_pause(&mut seed, 100, 400);
        disk.cut_power();
        running.child.kill().expect("SIGKILL");
        assert!(
            reaped_within(&mut running.child, Duration::from_secs(10)),
            "round {round}: serve did not exit"
        );
        stop_writers(&stop, threads);
        disk.unmount();
        disk.mount();
        ledger.lock().unwrap().settle(&data, &format!("power cut {round}"), &mut tally);
    }
    restart_and_stop(&data, &mnt);
    let Tally { settled, newest, earlier } = tally;
    eprintln!(
        "{cuts} power cuts: {settled} settled or fsynced states all there; unsettled writes: {newest} kept their newest state, {earlier} went back to an earlier whole one"
    );
    assert!(settled > 0, "nothing was fsynced");
}

/// A power cut can lose chunk objects written since the last sync while
/// the metadata naming them reached the disk. At the next open, each file
/// that reads a lost chunk goes back to its version before the change that
/// wrote it (a file that change created goes), and nothing else changes.
/// Here the crash is a process that stops without a sync, and the test
/// deletes the objects written since, as such a power cut would.
#[test]
fn objects_lost_before_their_sync_roll_their_files_back() {
    use tsmfs::fs::{Fs, FsOptions, OpenFlags, Origin, PutOptions};
    use tsmfs::id::Ino;
    const VAR: &str = "TSMFS_TEST_UNSYNCED_DATA";
    let slow = FsOptions { sync_interval: Duration::from_secs(3600), ..Default::default() };
    let caller = crate::util::caller();
    let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 249) as u8).collect();
    if let Some(data) = std::env::var_os(VAR) {
        let fs = Fs::open(Path::new(&data), slow).expect("open");
        let put = |name: &str, bytes: &[u8]| {
            fs.put(Ino::ROOT, name.as_bytes(), &mut &bytes[..], PutOptions::default(), &caller).expect("put")
        };
        put("kept", b"synced, then untouched");
        let edited = put("edited", &big);
        let whole = put("whole", &crate::util::object_sized(b"a file rewritten whole, synced"));
        let small = put("small", b"a small file, synced");
        fs.sync().expect("sync");
        // Changes the power cut undoes, each of which wrote an object: a
        // patch of a large file, a file rewritten whole, and a new file.
        let rw = OpenFlags { read: true, write: true, ..Default::default() };
        let lost = crate::util::object_sized(b"LOST");
        let h = fs.open_file(edited.ino, rw).expect("open").handle;
        fs.write(h, 1 << 20, &lost).expect("write");
        fs.release(h, Origin::Cli).expect("commit");
        let h = fs.open_file(whole.ino, OpenFlags { truncate: true, ..rw }).expect("open").handle;
        fs.write(h, 0, &crate::util::object_sized(b"LOST too")).expect("write");
        fs.release(h, Origin::Cli).expect("commit");
        put("fresh", &crate::util::object_sized(b"created after the last sync"));
        // A change whose bytes are kept in the database: the log has them,
        // so it stays.
        let h = fs.open_file(small.ino, rw).expect("open").handle;
        fs.write(h, 2, b"KEPT").expect("write");
        fs.release(h, Origin::Cli).expect("commit");
        // Stop dead: no release, no sync, no clean close.
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    Fs::init(&data, caller).expect("init");
    let name = "crash::objects_lost_before_their_sync_roll_their_files_back";
    let exe = std::env::current_exe().expect("the test binary");
    let child =
        Command::new(exe).args(["--exact", name, "--nocapture"]).env(VAR, &data).output().expect("run");
    assert!(child.status.success(), "{}", String::from_utf8_lossy(&child.stderr));

    let db = rusqlite::Connection::open(data.join("meta.sqlite")).expect("open the metadata");
    let mut query = db
        .prepare("SELECT c.lo, c.hi FROM unsynced_chunks u JOIN contents c ON c.id = u.chunk")
        .expect("query");
    let lost: Vec<(Vec<u8>, i64)> =
        query.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("rows").map(Result::unwrap).collect();
    assert_eq!(lost.len(), 3, "the unsynced changes wrote three objects");
    for (lo, hi) in &lost {
        let lo = hex::encode(lo);
        std::fs::remove_file(data.join("objects").join(&lo[..2]).join(format!("{lo}-{hi:016x}")))
            .expect("remove an unsynced object");
    }
    drop(query);
    drop(db);

    let fs = Fs::open(&data, FsOptions::default()).expect("reopen");
    let read = |name: &str| {
        let attr = fs.resolve(name.as_bytes())?;
        let h = fs.open_file(attr.ino, OpenFlags { read: true, ..Default::default() })?.handle;
        let bytes = fs.read(h, 0, 8 << 20)?;
        fs.release(h, Origin::Cli)?;
        Ok::<_, tsmfs::fs::FsError>(bytes)
    };
    assert_eq!(read("kept").expect("kept"), b"synced, then untouched");
    assert!(read("edited").expect("edited") == big, "the patch is undone, the rest is as synced");
    assert_eq!(read("whole").expect("whole"), crate::util::object_sized(b"a file rewritten whole, synced"));
    assert_eq!(read("small").expect("small"), b"a KEPTl file, synced", "its chunk was not lost");
    assert!(matches!(read("fresh"), Err(tsmfs::fs::FsError::NotFound)), "created by a lost change: gone");
    let report = fs.check(false, &|_, _| {}).expect("fsck");
    let problems: Vec<String> =
        report.problems.iter().filter(|p| !p.is_garbage()).map(|p| p.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?}");
}
