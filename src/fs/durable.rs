//! Durability without an fsync per close.
//!
//! A commit writes its new chunk objects without syncing them (small
//! chunks go into its own transaction, see `inline.rs`) and commits its
//! metadata without syncing the write-ahead log: it survives a crash of
//! the process (the page cache does), but after a power cut the log may
//! have reached the disk before some object did. Two mechanisms make that
//! safe:
//!
//! - A sync thread makes every commit durable within [`SYNC_INTERVAL`]:
//!   one `syncfs` of the data directory's filesystem (objects, log and
//!   database together), after which the newest change it covers is
//!   recorded as durable. An `fsync` of a file that reads an object
//!   written since then does the same at once (callers waiting share one
//!   `syncfs`); for any other file a sync of the log is enough
//!   ([`Shared::sync_for`]).
//! - Every chunk object written since the last sync is listed
//!   (`unsynced_chunks`), and every commit keeps, until it is durable, what
//!   it replaced: the extents it retired and the file's size and times
//!   before it (`write_undo`). Opening a data directory after an unclean
//!   stop checks each listed object against its hash; a file that reads a
//!   missing or damaged one is rolled back to its version before the
//!   first change that wrote it. So after a power cut every file is one of
//!   its committed versions, never a mix and never pointing at lost bytes.
//!
//! Once a change is durable, what it retired is dropped (unless an open
//! version still reads it), and chunk objects nothing reads any more are
//! removed: within a sync interval of the commit.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::{ChangeOp, FileKind, Fs, FsError, FsResult, Origin, Shared};
use crate::id::{ContentId, Ino};
use crate::meta::{ContentRecord, MetaError};

/// The setting that holds the newest durable change.
pub(crate) const DURABLE_SEQ: &str = "durable_seq";

/// The longest a commit stays unsynced while nothing asks for a sync, by
/// default.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Retired extents dropped per transaction when pruning.
const PRUNE_BATCH: u32 = 1024;

/// Objects removed per hold of the writer lock (each costs an unlink).
const REMOVE_BATCH: usize = 64;

/// Orphaned inodes waiting before they are deleted in one transaction.
const ORPHAN_BATCH: usize = 256;

/// Where the sync thread stands.
pub(crate) struct DurableState {
    state: Mutex<SyncState>,
    changed: Condvar,
    interval: Duration,
}

struct SyncState {
    /// Every change up to this one is durable.
    durable: u64,
    /// What changes up to this one let go is dropped.
    pruned: u64,
    /// A caller waits for changes up to this one to be pruned.
    wanted: u64,
    /// Every change up to this one is in the metadata log on disk (its
    /// small chunks too; its chunk objects maybe not).
    logged: u64,
    /// A `syncfs` is under way.
    syncing: bool,
    /// Syncs finished so far.
    syncs: u64,
    /// The last prune kept retired extents that a version being read
    /// needed: prune again once a version is let go.
    held_back: bool,
    /// The last sync failed: up to which change, and why.
    failure: Option<(u64, String)>,
    /// Prune rounds finished, whether they succeeded or not.
    prunes: u64,
    /// The last prune round failed (a full disk): the change it was
    /// to prune up to. It is tried again an interval later.
    prune_failed: Option<u64>,
    stop: bool,
}

impl DurableState {
    pub(crate) fn new(durable: u64, interval: Duration) -> DurableState {
        DurableState {
            state: Mutex::new(SyncState {
                durable,
                logged: durable,
                pruned: 0,
                wanted: 0,
                syncing: false,
                syncs: 0,
                held_back: false,
                failure: None,
                prunes: 0,
                prune_failed: None,
                stop: false,
            }),
            changed: Condvar::new(),
            interval,
        }
    }
}

/// What a caller of [`Shared::sync_to`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The changes are durable (fsync).
    Durable,
    /// And what they let go is dropped (a sync of the whole tree).
    Pruned,
}

impl Shared {
    /// Wait until every change up to `seq` is durable (and, with
    /// [`Wait::Pruned`], what they let go is dropped). For durability the
    /// caller syncs itself unless a sync is under way, whose end it waits
    /// for: callers arriving meanwhile share the next one.
    pub(crate) fn sync_to(&self, seq: u64, wait: Wait) -> FsResult<()> {
        let mut state = self.durable.state.lock();
        // A failure counts only if it is of a sync that ended after this
        // call began: an older one is retried.
        let (began, prunes_began) = (state.syncs, state.prunes);
        loop {
            let reached = match wait {
                Wait::Durable => state.durable,
                Wait::Pruned => state.pruned.min(state.durable),
            };
            if reached >= seq {
                return Ok(());
            }
            // Dropping what changes let go is done as far as it can be:
            // a round that failed since this call began (logged, retried)
            // ends the wait once the changes are durable.
            if wait == Wait::Pruned
                && state.durable >= seq
                && state.prunes > prunes_began
                && state.prune_failed.is_some_and(|upto| upto >= seq)
            {
                return Ok(());
            }
            if let Some((upto, why)) = &state.failure
                && *upto >= seq
                && state.syncs > began
            {
                tracing::error!("sync of {} failed: {why}", self.data_dir.display());
                return Err(FsError::Internal("the filesystem sync failed"));
            }
            if state.stop {
                return Err(FsError::Internal("the sync thread has stopped"));
            }
            if wait == Wait::Durable && !state.syncing {
                state.syncing = true;
                MutexGuard::unlocked(&mut state, || self.sync_now());
                continue;
            }
            if wait == Wait::Pruned {
                state.wanted = state.wanted.max(seq);
                self.durable.changed.notify_all();
            }
            self.durable.changed.wait(&mut state);
        }
    }

    /// Make every change so far that `ino` (none: any file) depends on
    /// durable, as an `fsync` of it must. When it reads no chunk object
    /// written since the last filesystem sync, a sync of the metadata log
    /// is enough: small chunks are kept in it, and a power cut that loses
    /// other files' objects rolls back only those files (see the module
    /// comment). Otherwise, and for the record of what is durable, a
    /// `syncfs` as [`Shared::sync_to`] does.
    pub(crate) fn sync_for(&self, ino: Option<Ino>) -> FsResult<()> {
        if self.read_only {
            return Ok(());
        }
        let seq = self.last_seq.load(Ordering::Acquire);
        let (durable, logged) = {
            let state = self.durable.state.lock();
            (state.durable, state.logged)
        };
        if durable >= seq {
            return Ok(());
        }
        let reads_unsynced = self.meta.read_point(|db| match ino {
            Some(ino) => db.reads_unsynced_chunk(ino, durable),
            None => db.any_unsynced_chunk(durable),
        })?;
        if reads_unsynced {
            return self.sync_to(seq, Wait::Durable);
        }
        // A directory fsync right after a file's (SQLite's journal) finds
        // nothing new in the log.
        if logged >= seq {
            return Ok(());
        }
        let started = Instant::now();
        self.meta.sync_wal().map_err(|e| {
            tracing::error!("{e}");
            FsError::Internal("the sync of the metadata log failed")
        })?;
        self.metrics.sync("log", started.elapsed());
        let mut state = self.durable.state.lock();
        state.logged = state.logged.max(seq);
        Ok(())
    }

    /// One `syncfs` covering every change committed so far; the caller
    /// has set `syncing`.
    fn sync_now(&self) {
        let target = self.last_seq.load(Ordering::Acquire);
        let started = Instant::now();
        let synced = self.store.sync_all();
        self.metrics.sync("filesystem", started.elapsed());
        let mut state = self.durable.state.lock();
        state.syncing = false;
        state.syncs += 1;
        match synced {
            Ok(()) => {
                state.durable = state.durable.max(target);
                state.logged = state.logged.max(target);
                state.failure = None;
            }
            Err(e) => {
                tracing::error!("{e}");
                state.failure = Some((target, e.to_string()));
            }
        }
        self.durable.changed.notify_all();
    }

    /// The sync thread: a sync a sync interval after an unsynced commit;
    /// then, at most once an interval unless asked, what durable changes
    /// let go is dropped.
    fn run_syncer(&self) {
        loop {
            {
                let mut state = self.durable.state.lock();
                let mut due = Instant::now() + self.durable.interval;
                loop {
                    if state.stop {
                        return;
                    }
                    if state.wanted > state.pruned.min(state.durable) {
                        break;
                    }
                    // Other threads' syncs wake this one: the interval
                    // counts from the last round, not from the last wake.
                    self.durable.changed.wait_until(&mut state, due);
                    if Instant::now() < due {
                        continue;
                    }
                    let behind = self.last_seq.load(Ordering::Acquire) > state.durable
                        || state.durable > state.pruned
                        || (state.held_back && self.pins.take_released())
                        || !self.orphans.lock().is_empty();
                    if behind {
                        break;
                    }
                    due = Instant::now() + self.durable.interval;
                }
            }
            self.purge_orphans();
            let target = self.last_seq.load(Ordering::Acquire);
            if self.sync_to(target, Wait::Durable).is_err() {
                // Logged by the sync; try again after a pause.
                std::thread::sleep(self.durable.interval.min(SYNC_INTERVAL));
                continue;
            }
            let durable = self.durable.state.lock().durable;
            let pruned = self.prune(durable);
            let mut state = self.durable.state.lock();
            state.prunes += 1;
            match pruned {
                Ok(held_back) => {
                    state.pruned = state.pruned.max(durable);
                    state.held_back = held_back;
                    state.prune_failed = None;
                }
                Err(e) => {
                    // Tried again an interval later (a full disk may have
                    // room by then): what it would free stays until then.
                    tracing::warn!("dropping what durable changes replaced: {e}; trying again");
                    state.prune_failed = Some(durable);
                    self.durable.changed.notify_all();
                    let pause = self.durable.interval.min(SYNC_INTERVAL);
                    self.durable.changed.wait_for(&mut state, pause);
                    continue;
                }
            }
            self.durable.changed.notify_all();
            drop(state);
            // Taken again, if a full disk took it, once there is room.
            if self.store.reserve_given_back()
                && let Err(e) = self.store.keep_reserve()
            {
                tracing::warn!("{e}");
            }
        }
    }

    /// Delete `ino`, whose last reference went after it lost its last
    /// name. Queued, and deleted with others in one transaction: `rm -rf`
    /// of a tree the kernel has looked up would otherwise cost two
    /// transactions a file. Nothing can reach it meanwhile.
    pub(super) fn delete_orphan(&self, ino: Ino) {
        let queued = {
            let mut orphans = self.orphans.lock();
            orphans.push(ino);
            orphans.len()
        };
        // Else the sync thread deletes them at its next round, within a
        // sync interval (waking it sooner would not move that round).
        if queued >= ORPHAN_BATCH {
            self.purge_orphans();
        }
    }

    /// Delete the queued orphans.
    pub(super) fn purge_orphans(&self) {
        let orphans = std::mem::take(&mut *self.orphans.lock());
        if let Err(e) = self.delete_orphans(&orphans) {
            // They stay orphans in the database: the next open deletes them.
            tracing::warn!("deleting unlinked files: {e}");
        }
    }

    /// Delete the `orphans` that nothing has opened or looked up again
    /// meanwhile, in one transaction.
    pub(super) fn delete_orphans(&self, orphans: &[Ino]) -> FsResult<()> {
        if orphans.is_empty() || self.read_only {
            return Ok(());
        }
        self.run_tx(Origin::Internal, |tx| {
            for ino in orphans {
                match tx.db.inode(*ino)? {
                    Some(inode) if inode.nlink == 0 && !self.open_files.keep_if_referenced(*ino) => {
                        tx.delete_inode(&inode)?;
                        tx.log(ChangeOp::Delete, *ino, None, None, None, vec![])?;
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// Every change up to `durable` is on disk: record it, forget its undo
    /// records, drop the extents it retired that no open version reads,
    /// and remove the chunk objects nothing reads any more. Returns
    /// whether it kept any for a version being read.
    fn prune(&self, durable: u64) -> FsResult<bool> {
        if self.read_only {
            return Ok(false);
        }
        let mut held_back = false;
        self.pins.forget_held();
        self.meta.write(false, |db| {
            db.set_setting(DURABLE_SEQ, &durable.to_string())?;
            db.prune_durable(durable)
        })?;
        let mut after = 0i64;
        loop {
            let (freed, more) = self.meta.write(false, |db| {
                let rows = db.retired_up_to(durable, after, PRUNE_BATCH)?;
                let mut freed = Vec::new();
                for row in &rows {
                    after = row.rowid;
                    if self.pins.holds(row.ino, row.seq) {
                        held_back = true;
                        continue;
                    }
                    db.delete_retired(row.rowid)?;
                    if db.add_chunk_refs(&row.chunk, -1)?.0 == 0 {
                        freed.push(row.chunk);
                    }
                }
                Ok::<_, MetaError>((freed, rows.len() == PRUNE_BATCH as usize))
            })?;
            self.remove_unused(&freed);
            if !more {
                return Ok(held_back);
            }
        }
    }

    /// Remove what nothing uses any more among `ids`, re-checked under the
    /// writer lock (a commit may have stored the same bytes again): the
    /// object of a chunk no extent reads, and the row and compressed
    /// variants of a content nothing holds. Failures are logged; what is
    /// left is found by gc.
    pub(crate) fn remove_unused(&self, ids: &[ContentId]) {
        // A few at a time: commits wait for the writer lock meanwhile.
        for batch in ids.chunks(REMOVE_BATCH) {
            self.remove_unused_batch(batch);
        }
    }

    fn remove_unused_batch(&self, ids: &[ContentId]) {
        let removed = self.meta.write(false, |db| {
            for id in ids {
                self.inline.forget(id);
                // Bytes kept in the database go with the row, or on their own.
                let removal = match db.content(id)? {
                    None => self.store.remove_object(id),
                    Some(record) if record.chunk_refs == 0 => {
                        if record.refcount == 0 {
                            db.delete_content(id)?;
                            self.store.remove_object(id)
                        } else {
                            db.delete_chunk_bytes(id)?;
                            self.store.remove_object_file(id)
                        }
                    }
                    Some(_) => Ok(()),
                };
                if let Err(e) = removal {
                    tracing::warn!("{e}");
                }
            }
            Ok::<_, MetaError>(())
        });
        if let Err(e) = removed {
            tracing::warn!("objects not removed: {e}");
        }
    }
}

impl Fs {
    /// Start the sync thread and the content-id hasher.
    pub(super) fn start_threads(&self) -> std::io::Result<()> {
        let mut threads = self.threads.lock();
        let shared = self.shared.clone();
        threads
            .push(std::thread::Builder::new().name("tsmfs-sync".into()).spawn(move || shared.run_syncer())?);
        let shared = self.shared.clone();
        threads
            .push(std::thread::Builder::new().name("tsmfs-etag".into()).spawn(move || shared.run_hasher())?);
        Ok(())
    }

    /// Stop the background threads (after a last sync).
    pub(super) fn stop_threads(&self) {
        self.durable.state.lock().stop = true;
        self.durable.changed.notify_all();
        self.etags.stop();
        for thread in self.threads.lock().drain(..) {
            if thread.join().is_err() {
                tracing::error!("a background thread of {} panicked", self.data_dir.display());
            }
        }
    }

    /// After an unclean stop: check the objects written since the last
    /// sync and roll back the files that read a lost one, delete inodes
    /// that were open-unlinked and staging files of writes that never
    /// committed; then make it all durable.
    pub(super) fn recover(&self) -> FsResult<()> {
        self.store.clear_staging()?;
        if let Err(e) = self.store.keep_reserve() {
            tracing::warn!("{e}");
        }
        let orphans = self.meta.read(|db| db.orphaned_inodes())?;
        if !orphans.is_empty() {
            self.transact(Origin::Internal, |tx| {
                for inode in &orphans {
                    tx.delete_inode(inode)?;
                    tx.log(ChangeOp::Delete, inode.ino, None, None, None, vec![])?;
                }
                Ok(())
            })?;
        }
        let unsynced = self.meta.read(|db| db.unsynced_chunks())?;
        let lost: Vec<ContentId> =
            unsynced.iter().filter(|c| !self.object_is_whole(c)).map(|c| c.id).collect();
        if !lost.is_empty() {
            self.roll_back(&lost)?;
            for id in &lost {
                if let Err(e) = self.store.remove_object_file(id) {
                    tracing::warn!("{e}");
                }
            }
        }
        let last = self.last_seq.load(Ordering::Acquire);
        self.store.sync_all()?;
        self.prune(last)?;
        let mut state = self.durable.state.lock();
        state.durable = state.durable.max(last);
        state.pruned = state.pruned.max(last);
        Ok(())
    }

    /// Whether the object of `record` is there with its bytes.
    fn object_is_whole(&self, record: &ContentRecord) -> bool {
        match self.store.digest_of_object(&record.id) {
            Ok(digest) => {
                digest.size == record.size && digest.sha1 == record.id.lo && digest.blake3 == record.blake3
            }
            Err(e) => {
                tracing::warn!("after an unclean stop: {e}");
                false
            }
        }
    }

    /// Roll every file that reads one of the `lost` chunks back to its
    /// version before the first change that wrote such an extent, again
    /// until none does (an older version may read a lost chunk too).
    fn roll_back(&self, lost: &[ContentId]) -> FsResult<()> {
        for _ in 0..64 {
            let mut affected: HashMap<Ino, u64> = HashMap::new();
            self.meta.read(|db| {
                for id in lost {
                    for (ino, since) in db.live_extent_users(id)? {
                        let first = affected.entry(ino).or_insert(since);
                        *first = (*first).min(since);
                    }
                }
                Ok::<_, MetaError>(())
            })?;
            if affected.is_empty() {
                return Ok(());
            }
            self.transact(Origin::Internal, |tx| {
                let seq = tx.seq()?;
                for (ino, since) in &affected {
                    let Some(mut inode) = tx.db.inode(*ino)? else { continue };
                    if inode.kind != FileKind::File {
                        continue;
                    }
                    let before = tx.db.first_undo_from(*ino, *since)?;
                    if before.is_some_and(|undo| undo.created) {
                        // Created by the change that lost its bytes: it was
                        // not there before.
                        tracing::warn!("after an unclean stop the bytes of inode {ino} were lost: it goes, as before change {since}");
                        for (parent, name) in tx.db.names_of(*ino)? {
                            tx.db.delete_dirent(parent, &name)?;
                            tx.db.touch_dir(parent, tx.now)?;
                            tx.log(ChangeOp::Unlink, *ino, Some((parent, &name)), None, None, vec![parent])?;
                        }
                        tx.delete_inode(&inode)?;
                        tx.log(ChangeOp::Delete, *ino, None, None, None, vec![])?;
                        continue;
                    }
                    tracing::warn!(
                        "after an unclean stop a chunk of inode {ino} was lost: it goes back to its version before change {since}"
                    );
                    tx.db.retire_live_since(*ino, *since, seq)?;
                    tx.db.restore_retired_since(*ino, *since)?;
                    let (size, mtime, ctime) = match before {
                        Some(undo) => (undo.size, undo.mtime_ns, undo.ctime_ns),
                        // Nothing to go back to: the file's bytes are gone.
                        None => {
                            tx.db.retire_all_extents(*ino, seq)?;
                            (0, inode.mtime_ns, inode.ctime_ns)
                        }
                    };
                    let logged = tx.set_content(&mut inode, size, None, mtime, ctime, seq)?;
                    tx.log_write(&inode, logged)?;
                }
                Ok(())
            })?;
        }
        Err(FsError::Internal("rolling files back after an unclean stop did not converge"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{FsOptions, OpenFlags};

    fn filesystem_syncs(fs: &Fs) -> u64 {
        fs.durable.state.lock().syncs
    }

    /// An fsync of a file whose chunks are all in the database syncs the
    /// metadata log, not the filesystem; one that reads a chunk object
    /// written since the last sync gets a filesystem sync.
    #[test]
    fn an_fsync_syncs_the_filesystem_only_for_a_file_that_reads_unsynced_objects() {
        // No background sync during the test.
        let options = FsOptions { sync_interval: Duration::from_secs(3600), ..FsOptions::default() };
        let (_dir, fs, caller) = crate::fs::testing::fresh_fs(options);
        let rw = OpenFlags { read: true, write: true, ..OpenFlags::default() };

        let small = fs.create_file(Ino::ROOT, b"journal", 0o644, &caller, rw).unwrap();
        fs.write(small.handle, 0, &[7u8; 9000]).unwrap();
        let before = filesystem_syncs(&fs);
        fs.fsync(small.handle, Origin::Cli).unwrap();
        assert_eq!(filesystem_syncs(&fs), before, "small chunks: the log sync is enough");
        assert!(fs.durable.state.lock().logged >= fs.last_seq.load(Ordering::Acquire));
        fs.sync_changes().unwrap();
        assert_eq!(filesystem_syncs(&fs), before, "nothing new for a directory fsync to sync");

        let large = fs.create_file(Ino::ROOT, b"large", 0o644, &caller, rw).unwrap();
        fs.write(large.handle, 0, &vec![9u8; 3 << 20]).unwrap();
        fs.fsync(large.handle, Origin::Cli).unwrap();
        assert_eq!(filesystem_syncs(&fs), before + 1, "an object written since the last sync");
        assert!(fs.durable.state.lock().durable >= fs.last_seq.load(Ordering::Acquire));

        // The small file again: the object is synced now, so the log is enough.
        fs.write(small.handle, 0, b"again").unwrap();
        fs.fsync(small.handle, Origin::Cli).unwrap();
        assert_eq!(filesystem_syncs(&fs), before + 1);
        // So for the large file, which still reads that object, and for a
        // directory, though no prune round has dropped the object's mark
        // yet: a sync covered it (SQLite copied in, then its journal).
        fs.write(large.handle, 4096, b"page").unwrap();
        fs.fsync(large.handle, Origin::Cli).unwrap();
        fs.sync_changes().unwrap();
        assert_eq!(filesystem_syncs(&fs), before + 1, "an object a sync covered is on disk");
        for handle in [small.handle, large.handle] {
            fs.release(handle, Origin::Cli).unwrap();
        }
    }
}
