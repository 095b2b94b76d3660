//! `tsmfs import`: copy a host directory tree in, fast.
//!
//! The walk runs on this thread and creates directories as it meets them;
//! two workers read and hash files into chunks in parallel; a committer
//! thread commits them in batches, one transaction each, and one sync at
//! the end makes the whole import durable.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tsmfs::fs::{Caller, FileKind, Fs, FsError, Origin, PutOptions, StagedPut};
use tsmfs::id::Ino;

/// Files per commit batch.
const BATCH_FILES: usize = 1024;
/// Staged bytes per commit batch.
const BATCH_BYTES: u64 = 256 * 1024 * 1024;
/// Threads reading and hashing files.
const STAGING_WORKERS: usize = 2;
/// Errors listed in full before the summary.
const ERRORS_SHOWN: usize = 20;

struct FileJob {
    parent: Ino,
    name: Vec<u8>,
    path: PathBuf,
    options: PutOptions,
}

pub fn import(fs: &Fs, hostdir: &Path, dest: &str) -> Result<ExitCode> {
    let started = Instant::now();
    let root_meta =
        std::fs::metadata(hostdir).with_context(|| format!("could not read {}", hostdir.display()))?;
    if !root_meta.is_dir() {
        bail!("{} is not a directory", hostdir.display());
    }
    let caller = Caller::process(Origin::Cli);
    let dest_ino = super::mkdir_p(fs, dest, &caller)?;
    let (total_files, total_bytes) = survey(hostdir);
    let progress = ProgressBar::new(total_bytes).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let errors = std::sync::Mutex::new(Vec::<String>::new());
    let report = |msg: String| {
        if let Ok(mut list) = errors.lock() {
            list.push(msg);
        }
    };
    let (job_tx, job_rx) = crossbeam_channel::bounded::<FileJob>(256);
    let (staged_tx, staged_rx) = crossbeam_channel::bounded::<(StagedPut, PathBuf)>(256);
    let files_done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..STAGING_WORKERS {
            let (job_rx, staged_tx) = (job_rx.clone(), staged_tx.clone());
            let report = &report;
            scope.spawn(move || {
                for job in job_rx {
                    match stage_file(fs, &job) {
                        Ok(put) => {
                            if staged_tx.send((put, job.path)).is_err() {
                                return;
                            }
                        }
                        Err(e) => report(format!("{}: {e:#}", job.path.display())),
                    }
                }
            });
        }
        drop(staged_tx);
        // The committer owns the receiving end: if it dies, the workers'
        // sends fail, they stop, and the walk's sends fail in turn, instead
        // of everyone waiting forever on a full channel.
        let (caller, progress, report, done) = (&caller, &progress, &report, &files_done);
        let committer =
            scope.spawn(move || commit_batches(fs, staged_rx, caller, progress, total_files, report, done));
        walk(fs, hostdir, dest_ino, caller, &job_tx, report);
        drop(job_tx);
        if committer.join().is_err() {
            report(
                "the committing thread failed; files staged after its last batch were not imported".into(),
            );
        }
    });
    progress.finish_and_clear();
    let errors = errors.into_inner().unwrap_or_default();
    let elapsed = started.elapsed();
    for e in errors.iter().take(ERRORS_SHOWN) {
        eprintln!("tsmfs: import: {e}");
    }
    println!(
        "imported {} files ({}) from {} into {dest} in {:.2?}",
        files_done.into_inner(),
        HumanBytes(total_bytes),
        hostdir.display(),
        elapsed
    );
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("tsmfs: import: {} entries failed", errors.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Count regular files and their bytes, for the progress bar.
fn survey(hostdir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for entry in walkdir::WalkDir::new(hostdir).into_iter().flatten() {
        if entry.file_type().is_file() {
            files += 1;
            bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    (files, bytes)
}

/// Walk the host tree: create directories, symlinks and special files here,
/// hand regular files to the staging workers.
fn walk(
    fs: &Fs,
    hostdir: &Path,
    dest: Ino,
    caller: &Caller,
    jobs: &crossbeam_channel::Sender<FileJob>,
    report: &(dyn Fn(String) + Sync),
) {
    let mut dirs: HashMap<PathBuf, Ino> = HashMap::from([(hostdir.to_path_buf(), dest)]);
    let walker = walkdir::WalkDir::new(hostdir).min_depth(1).sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                report(format!("{e}"));
                continue;
            }
        };
        let path = entry.path();
        let Some(parent) = path.parent().and_then(|p| dirs.get(p)).copied() else {
            continue; // its directory failed; already reported
        };
        let name = entry.file_name().as_bytes().to_vec();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                report(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let ft = entry.file_type();
        let perm = meta.mode() & 0o7777;
        let result = if ft.is_dir() {
            make_dir(fs, parent, &name, perm, caller).map(|ino| {
                dirs.insert(path.to_path_buf(), ino);
            })
        } else if ft.is_file() {
            let job = FileJob {
                parent,
                name,
                path: path.to_path_buf(),
                options: PutOptions {
                    perm,
                    mtime_ns: Some(meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
                    ..PutOptions::default()
                },
            };
            if jobs.send(job).is_err() {
                return;
            }
            Ok(())
        } else if ft.is_symlink() {
            std::fs::read_link(path).map_err(anyhow::Error::from).and_then(|target| {
                replace_with(fs, parent, &name, caller, |n| {
                    fs.symlink(parent, n, target.as_os_str().as_bytes(), caller)
                })
            })
        } else {
            let kind = if ft.is_fifo() {
                FileKind::Fifo
            } else if ft.is_socket() {
                FileKind::Socket
            } else if ft.is_char_device() {
                FileKind::CharDevice
            } else {
                FileKind::BlockDevice
            };
            replace_with(fs, parent, &name, caller, |n| {
                fs.mknod(parent, n, kind, perm, meta.rdev() as u32, caller)
            })
        };
        if let Err(e) = result {
            report(format!("{}: {e:#}", path.display()));
        }
    }
}

fn make_dir(fs: &Fs, parent: Ino, name: &[u8], perm: u32, caller: &Caller) -> Result<Ino> {
    match fs.mkdir(parent, name, perm, caller) {
        Ok(attr) => Ok(attr.ino),
        Err(FsError::Exists) => {
            let existing = fs.lookup(parent, name)?;
            if existing.kind != FileKind::Dir {
                bail!("exists in the tree and is not a directory");
            }
            Ok(existing.ino)
        }
        Err(e) => Err(e.into()),
    }
}

/// Create a non-file entry, replacing a non-directory of the same name.
fn replace_with(
    fs: &Fs,
    parent: Ino,
    name: &[u8],
    caller: &Caller,
    create: impl Fn(&[u8]) -> Result<tsmfs::fs::Attr, FsError>,
) -> Result<()> {
    match create(name) {
        Err(FsError::Exists) => {
            fs.unlink(parent, name, caller)?;
            create(name)?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

fn stage_file(fs: &Fs, job: &FileJob) -> Result<StagedPut> {
    let mut file = std::fs::File::open(&job.path).context("could not open")?;
    let staged = fs.stage(&mut file).context("could not read")?;
    Ok(StagedPut { parent: job.parent, name: job.name.clone(), staged, options: job.options })
}

/// Commit staged files in batches, counting them in `done`.
fn commit_batches(
    fs: &Fs,
    staged: crossbeam_channel::Receiver<(StagedPut, PathBuf)>,
    caller: &Caller,
    progress: &ProgressBar,
    total_files: u64,
    report: &(dyn Fn(String) + Sync),
    done: &std::sync::atomic::AtomicU64,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut batch: Vec<StagedPut> = Vec::with_capacity(BATCH_FILES);
    let mut paths: Vec<PathBuf> = Vec::with_capacity(BATCH_FILES);
    let mut batch_bytes = 0u64;
    let flush = |batch: &mut Vec<StagedPut>, paths: &mut Vec<PathBuf>, bytes: &mut u64| {
        if batch.is_empty() {
            return;
        }
        match fs.put_batch(batch, caller) {
            Ok(_) => {
                done.fetch_add(batch.len() as u64, Relaxed);
            }
            Err(batch_error) => {
                // Find the culprit(s): commit one by one (all or nothing per
                // file), reporting each failure with its path.
                tracing::debug!("batch failed ({batch_error}); retrying file by file");
                for (item, path) in batch.iter_mut().zip(paths.iter()) {
                    match fs.put_batch(std::slice::from_mut(item), caller) {
                        Ok(_) => {
                            done.fetch_add(1, Relaxed);
                        }
                        Err(e) => report(format!("{}: {e}", path.display())),
                    }
                }
            }
        }
        progress.inc(*bytes);
        progress.set_message(format!("{}/{total_files} files", done.load(Relaxed)));
        batch.clear();
        paths.clear();
        *bytes = 0;
    };
    for (item, path) in staged {
        batch_bytes += item.staged.size();
        batch.push(item);
        paths.push(path);
        if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
            flush(&mut batch, &mut paths, &mut batch_bytes);
        }
    }
    flush(&mut batch, &mut paths, &mut batch_bytes);
}
