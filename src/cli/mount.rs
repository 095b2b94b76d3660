//! `tsmfs mount`: serve the tree through FUSE until unmounted or signalled.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tsmfs::fs::{Fs, FsOptions, Origin};
use tsmfs::fuse::{MountOptions, Mounted};

/// How often the main thread checks whether the mount went away.
const POLL: Duration = Duration::from_millis(200);
/// What the background child sends its parent once the mount is up.
const READY: &str = "ready";
/// Log file of a background mount, inside the data directory.
const LOG_FILE: &str = "tsmfs.log";

pub struct MountArgs {
    pub data: PathBuf,
    pub mountpoint: PathBuf,
    pub fs_options: FsOptions,
    pub options: MountOptions,
    pub foreground: bool,
}

pub fn mount(args: MountArgs) -> Result<ExitCode> {
    let data = args.data.canonicalize().with_context(|| format!("data directory {}", args.data.display()))?;
    if tsmfs::fuse::clear_stale_mount(&args.mountpoint).context("detach a stale mount")? {
        eprintln!("tsmfs: {} was a stale mount (a tsmfs that died); detached it", args.mountpoint.display());
    }
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", args.mountpoint.display()))?;
    let ready = if args.foreground { None } else { Some(daemonize(&data)?) };
    let result = run_mount(&data, &mountpoint, args.fs_options, &args.options, ready);
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    result
}

fn run_mount(
    data: &Path,
    mountpoint: &Path,
    fs_options: FsOptions,
    options: &MountOptions,
    ready: Option<Ready>,
) -> Result<ExitCode> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Catch signals before mounting, so none can end us mounted.
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).context("signal handlers")?;
    let started = (|| -> Result<(Arc<Fs>, Mounted)> {
        let fs = Arc::new(Fs::open(data, fs_options)?);
        let mounted = tsmfs::fuse::mount(fs.clone(), mountpoint, options)?;
        Ok((fs, mounted))
    })();
    let (fs, mounted) = match (started, ready) {
        (Ok(started), Some(ready)) => {
            ready.report(Ok(()));
            started
        }
        (Ok(started), None) => {
            eprintln!(
                "tsmfs: {} mounted at {} (Ctrl-C or `umount {}` to stop)",
                data.display(),
                mountpoint.display(),
                mountpoint.display()
            );
            started
        }
        (Err(e), Some(ready)) => {
            ready.report(Err(format!("{e:#}")));
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    let signalled = wait_for_stop(&mounted, &mut signals);
    if signalled {
        mounted.unmount().context("unmount")?;
    } else {
        mounted.join().context("FUSE session")?;
    }
    fs.release_all(Origin::Fuse).context("commit open files")?;
    fs.checkpoint().context("checkpoint metadata")?;
    tracing::info!("unmounted {}", mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

/// Block until SIGINT/SIGTERM/SIGHUP (true) or until the mount is gone
/// because someone ran `umount` (false).
fn wait_for_stop(mounted: &Mounted, signals: &mut signal_hook::iterator::Signals) -> bool {
    loop {
        if let Some(signal) = signals.pending().next() {
            tracing::info!("signal {signal}: unmounting");
            return true;
        }
        if mounted.is_finished() {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The child's half of the pipe that tells the waiting parent whether the
/// mount came up.
struct Ready(File);

impl Ready {
    fn report(mut self, outcome: Result<(), String>) {
        let message = match outcome {
            Ok(()) => READY.to_string(),
            Err(e) => e,
        };
        let _ = self.0.write_all(message.as_bytes());
        // Nothing else of the terminal: stdio now goes to /dev/null and
        // the log file.
        redirect_stdio_after_ready();
    }
}

/// Fork: the parent waits until the child reports the mount up (exit 0)
/// or failed (message, exit 1); the child returns and carries on.
fn daemonize(data: &Path) -> Result<Ready> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the descriptors are fresh and owned by these Files only.
    let (mut reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(tsmfs::store::PRIVATE_FILE_MODE)
        .open(data.join(LOG_FILE))
        .with_context(|| format!("log file {}", data.join(LOG_FILE).display()))?;
    // SAFETY: no other thread exists yet (called before anything spawns
    // one), so the child may run arbitrary code after fork.
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            drop(reader);
            // SAFETY: plain syscalls on descriptors we own.
            unsafe {
                libc::setsid();
                libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&log), libc::STDERR_FILENO);
            }
            Ok(Ready(writer))
        }
        _child => {
            drop(writer);
            let mut message = String::new();
            let _ = reader.read_to_string(&mut message);
            if message == READY {
                std::process::exit(0);
            }
            if message.is_empty() {
                message = format!(
                    "the mount process died before the mount came up (see {})",
                    data.join(LOG_FILE).display()
                );
            }
            eprintln!("tsmfs: {message}");
            std::process::exit(1);
        }
    }
}

fn redirect_stdio_after_ready() {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
        // SAFETY: dup2 onto the standard descriptors of this process.
        unsafe {
            libc::dup2(fd, libc::STDIN_FILENO);
            libc::dup2(fd, libc::STDOUT_FILENO);
        }
    }
}
