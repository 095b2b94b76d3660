//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: every ~1,200 creates one of them waited 100–150 ms while
//! 10,000 pages were copied into the database file and it was fsynced.
//! Here the writer's commit hook only wakes a thread. The thread copies the
//! log on its own connection in PASSIVE mode, beside readers and the
//! writer. The log only starts over when a write begins while every frame
//! in it has been copied, which a copy running beside a stream of commits
//! never achieves; so the thread then holds the writer's lock for a moment
//! and copies the few frames committed meanwhile. Writers wait for that
//! tail (and its fsync) only. Should the thread fall far behind, a commit
//! checkpoints by itself, as SQLite would have.

use std::ffi::c_int;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use super::{MetaError, configure};

/// WAL pages (4 KiB) after which a commit wakes the thread. More than
/// SQLite's 1,000: each checkpoint fsyncs the database, and a page that
/// many transactions rewrote in between is copied once.
const WAKE_AT: c_int = 4_000;
/// WAL pages after which a commit checkpoints itself: the thread is
/// behind (commits come faster than it copies).
const INLINE_AT: c_int = 3 * WAKE_AT;

enum Job {
    Checkpoint,
    Stop,
}

/// The checkpoint thread of one database. Dropping it stops the thread.
pub(super) struct Checkpointer {
    jobs: Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread for the database at `path`, and hand `writer` the
    /// commit hook that wakes it (which replaces SQLite's automatic
    /// checkpoint on that connection).
    pub(super) fn start(path: &Path, writer: &Arc<Mutex<Connection>>) -> Result<Checkpointer, MetaError> {
        let conn = Connection::open(path).map_err(MetaError::sql("open the checkpoint connection"))?;
        configure(&conn)?;
        // One job waiting is enough: a pass copies everything there is.
        let (jobs, queue) = crossbeam_channel::bounded(1);
        let wake = jobs.clone();
        writer
            .lock()
            .wal_hook(Some(move |wal: &mut Wal, pages: c_int| {
                if pages >= INLINE_AT {
                    // An error here would fail a statement whose commit
                    // has happened: log it instead. Busy means the thread
                    // is copying; the next commit tries again.
                    if let Err(e) = wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                        tracing::debug!("meta: checkpoint at commit: {e}");
                    }
                } else if pages >= WAKE_AT {
                    let _ = wake.try_send(Job::Checkpoint);
                }
                Ok(())
            }))
            .map_err(MetaError::sql("set the commit hook"))?;
        let writer = writer.clone();
        let thread = std::thread::Builder::new()
            .name("tsmfs-checkpoint".into())
            .spawn(move || run(&conn, &writer, &queue))
            .map_err(|source| MetaError::Io {
                action: "start the checkpoint thread for",
                path: path.into(),
                source,
            })?;
        Ok(Checkpointer { jobs, thread: Some(thread) })
    }
}

fn run(conn: &Connection, writer: &Mutex<Connection>, queue: &Receiver<Job>) {
    while let Ok(Job::Checkpoint) = queue.recv() {
        // The bulk, beside readers and the writer.
        if let Err(e) = conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            tracing::debug!("meta: background checkpoint: {e}");
            continue;
        }
        // The tail, with commits held off, so the next write restarts the
        // log. (A reader in the middle of a long read may still keep its
        // frames; they are copied next time.)
        match writer.lock().wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((frames, copied)) => {
                tracing::debug!("meta: checkpoint copied {copied} of {frames} WAL frames")
            }
            Err(e) => tracing::warn!("meta: checkpoint failed: {e}"),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("meta: the checkpoint thread panicked");
        }
    }
}
