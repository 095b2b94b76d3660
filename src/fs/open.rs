//! The one home of open-file state: handles, the state of each open
//! inode (the versions its handles read, its pending writes, who wrote
//! them), the versions being read (pins), and which inodes a frontend
//! still refers to (the kernel's lookup counts).
//!
//! Lock order: an inode's `OpenInode` lock, then the metadata writer
//! lock, then the tables lock. The tables lock is held only for a map
//! operation, never while waiting for anything else. One exception: a
//! file being created is counted as open inside its creating transaction
//! (`Fs::create_file`); nobody else knows its new inode number, so nobody
//! can hold its lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::extents::ExtentMap;
use super::pending::Pending;
use super::{FsError, FsResult, OpenFlags};
use crate::id::{ContentId, Handle, Ino};

/// Versions being read, by inode: the retired extents (and their chunks)
/// a version needs are kept while it is pinned.
#[derive(Debug, Default)]
pub(crate) struct Pins {
    versions: Mutex<HashMap<Ino, BTreeMap<u64, usize>>>,
    /// Inodes whose retired extents pruning kept for a version being read.
    held: Mutex<HashSet<Ino>>,
    /// A version of a `held` inode stopped being read since
    /// [`Pins::take_released`] last looked: what was kept may go now.
    released: AtomicBool,
}

impl Pins {
    /// Keep what inode `ino` looked like after change `seq` readable until
    /// the guard drops.
    pub(crate) fn pin(self: &Arc<Self>, ino: Ino, seq: u64) -> PinGuard {
        *self.versions.lock().entry(ino).or_default().entry(seq).or_default() += 1;
        PinGuard { pins: self.clone(), ino, seq }
    }

    /// Whether an extent of `ino` retired by change `retired` must stay:
    /// a version from before that change is being read. If so, the inode
    /// is noted, and letting go of one of its versions is reported by
    /// [`Pins::take_released`].
    pub(crate) fn holds(&self, ino: Ino, retired: u64) -> bool {
        let holds = self.versions.lock().get(&ino).is_some_and(|seqs| seqs.range(..retired).next().is_some());
        if holds {
            self.held.lock().insert(ino);
        }
        holds
    }

    /// Forget which inodes pruning kept extents for (a prune starts over).
    pub(crate) fn forget_held(&self) {
        self.held.lock().clear();
    }

    /// Whether a version of an inode pruning kept extents for stopped
    /// being read since the last call.
    pub(crate) fn take_released(&self) -> bool {
        self.released.swap(false, Ordering::AcqRel)
    }
}

/// A pin on one version; unpins when dropped.
#[derive(Debug)]
pub(crate) struct PinGuard {
    pins: Arc<Pins>,
    ino: Ino,
    seq: u64,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut pins = self.pins.versions.lock();
        if let Some(seqs) = pins.get_mut(&self.ino) {
            if let Some(count) = seqs.get_mut(&self.seq) {
                *count -= 1;
                if *count == 0 {
                    seqs.remove(&self.seq);
                    if self.pins.held.lock().remove(&self.ino) {
                        self.pins.released.store(true, Ordering::Release);
                    }
                }
            }
            if seqs.is_empty() {
                pins.remove(&self.ino);
            }
        }
    }
}

/// One committed version of a file, as open handles read it. Its extents
/// are loaded at the first read and kept readable by its pin.
#[derive(Debug)]
pub(crate) struct Version {
    pub(crate) ino: Ino,
    /// The change that wrote these bytes (`Attr::data_seq`).
    pub(crate) data_seq: u64,
    pub(crate) size: u64,
    /// The whole-file content id, when known.
    pub(crate) content: Option<ContentId>,
    /// The extents, once loaded.
    pub(crate) extents: Mutex<Option<Arc<ExtentMap>>>,
    _pin: PinGuard,
}

impl Version {
    pub(crate) fn new(
        ino: Ino,
        data_seq: u64,
        size: u64,
        content: Option<ContentId>,
        extents: Option<Arc<ExtentMap>>,
        pin: PinGuard,
    ) -> Version {
        Version { ino, data_seq, size, content, extents: Mutex::new(extents), _pin: pin }
    }
}

/// What one handle is.
#[derive(Debug)]
pub(crate) struct HandleState {
    pub(crate) flags: OpenFlags,
    /// The version it reads when nothing is pending.
    pub(crate) version: Arc<Version>,
    /// It added to the pending writes since the last commit: a close of
    /// any descriptor of it commits them (a forked child's inherited copy
    /// too, closed at its exit or exec: the kernel sends that FLUSH on
    /// this handle, as NFS flushes at every close). Closes of other
    /// handles (a late RELEASE, a child's copy of a handle that wrote
    /// nothing) commit nothing, so another writer's half-done sequence is
    /// not published mid-way.
    pub(crate) dirty: bool,
    /// A failed commit discarded writes while it was open for writing; it
    /// hears of it once (with whether the disk was full).
    pub(crate) lost: Option<bool>,
}

/// The state of one open inode.
#[derive(Debug)]
pub(crate) struct OpenInode {
    pub(crate) ino: Ino,
    /// Handles counted, including ones still being set up.
    pub(crate) count: usize,
    pub(crate) handles: HashMap<Handle, HandleState>,
    /// The newest version known: what new opens read.
    pub(crate) current: Option<Arc<Version>>,
    /// Writes not yet committed.
    pub(crate) pending: Option<Pending>,
    /// The newest change at which its committed mode was seen without
    /// setid bits: until anything else commits, a write by a caller
    /// without CAP_FSETID (the kernel asks before each) needs no read.
    pub(crate) setid_free_at: Option<u64>,
}

impl OpenInode {
    /// `handle` changed the pending writes: its close commits them.
    pub(crate) fn changed_by(&mut self, handle: Handle) {
        if let Some(state) = self.handles.get_mut(&handle) {
            state.dirty = true;
        }
    }

    /// Every handle open for writing must commit at its close (a change
    /// made without a handle, such as a truncate, rides on theirs).
    pub(crate) fn changed_by_all_writers(&mut self) {
        for state in self.handles.values_mut().filter(|s| s.flags.write) {
            state.dirty = true;
        }
    }

    /// A commit made `version` current: every handle reads it now.
    pub(crate) fn moved_to(&mut self, version: Arc<Version>) {
        for state in self.handles.values_mut() {
            state.version = version.clone();
            state.dirty = false;
        }
        self.current = Some(version);
    }

    /// A commit failed and discarded the pending writes: every other
    /// writer hears of it once.
    pub(crate) fn lost_by_others(&mut self, by: Handle, disk_full: bool) {
        for (handle, state) in &mut self.handles {
            state.dirty = false;
            if *handle != by && state.flags.write {
                state.lost = Some(disk_full);
            }
        }
    }
}

/// A handle's entry in the table.
#[derive(Debug)]
pub(crate) struct OpenHandle {
    pub(crate) ino: Ino,
    pub(crate) flags: OpenFlags,
    pub(crate) inode: Arc<Mutex<OpenInode>>,
}

#[derive(Default)]
struct Tables {
    handles: HashMap<Handle, Arc<OpenHandle>>,
    inodes: HashMap<Ino, Arc<Mutex<OpenInode>>>,
    /// References a frontend holds (the kernel's lookup counts): the inode
    /// must stay valid until they are given back.
    lookups: HashMap<Ino, u64>,
    /// Inodes that lost their last name while open or looked up: the last
    /// release or forget deletes them.
    orphans: HashSet<Ino>,
}

/// The open-file tables of one `Fs`.
#[derive(Default)]
pub(crate) struct OpenFiles {
    tables: Mutex<Tables>,
    next_handle: AtomicU64,
}

impl OpenFiles {
    /// A new handle number.
    pub(crate) fn new_handle(&self) -> Handle {
        Handle(self.next_handle.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The state of `ino`, with one more handle counted. A state found in
    /// the table may be dropped by a last release while we wait for its
    /// lock; then it is gone from the table and we try again, so all
    /// handles of an inode share one state.
    pub(crate) fn count_handle(&self, ino: Ino) -> Arc<Mutex<OpenInode>> {
        loop {
            let inode = self
                .tables
                .lock()
                .inodes
                .entry(ino)
                .or_insert_with(|| {
                    Arc::new(Mutex::new(OpenInode {
                        ino,
                        count: 0,
                        handles: HashMap::new(),
                        current: None,
                        pending: None,
                        setid_free_at: None,
                    }))
                })
                .clone();
            let mut guard = inode.lock();
            let current = self.tables.lock().inodes.get(&ino).is_some_and(|found| Arc::ptr_eq(found, &inode));
            if current {
                guard.count += 1;
                drop(guard);
                return inode;
            }
        }
    }

    /// Take back a count of [`OpenFiles::count_handle`]; returns whether the
    /// inode is now unreferenced and lost its last name (delete it).
    pub(crate) fn uncount(&self, inode: &mut OpenInode) -> bool {
        inode.count -= 1;
        if inode.count > 0 {
            return false;
        }
        let mut tables = self.tables.lock();
        tables.inodes.remove(&inode.ino);
        !tables.lookups.contains_key(&inode.ino) && tables.orphans.remove(&inode.ino)
    }

    /// Register an opened handle.
    pub(crate) fn insert(&self, handle: Handle, entry: OpenHandle) {
        self.tables.lock().handles.insert(handle, Arc::new(entry));
    }

    /// The entry of `handle`.
    pub(crate) fn get(&self, handle: Handle) -> FsResult<Arc<OpenHandle>> {
        self.tables.lock().handles.get(&handle).cloned().ok_or(FsError::BadHandle)
    }

    /// Remove `handle` from the table.
    pub(crate) fn remove(&self, handle: Handle) -> FsResult<Arc<OpenHandle>> {
        self.tables.lock().handles.remove(&handle).ok_or(FsError::BadHandle)
    }

    /// The state of `ino`, if open.
    pub(crate) fn inode(&self, ino: Ino) -> Option<Arc<Mutex<OpenInode>>> {
        self.tables.lock().inodes.get(&ino).cloned()
    }

    /// Every open handle.
    pub(crate) fn handles(&self) -> Vec<Handle> {
        self.tables.lock().handles.keys().copied().collect()
    }

    /// How many handles are open.
    pub(crate) fn handle_count(&self) -> usize {
        self.tables.lock().handles.len()
    }

    /// `ino` is losing its last name: if a handle or a frontend still
    /// refers to it, note that it must be deleted when they let go, and
    /// return true (the caller keeps it, with no links).
    pub(crate) fn keep_if_referenced(&self, ino: Ino) -> bool {
        let mut tables = self.tables.lock();
        let referenced = tables.inodes.contains_key(&ino) || tables.lookups.contains_key(&ino);
        if referenced {
            tables.orphans.insert(ino);
        }
        referenced
    }

    /// A frontend took one more reference to `ino` (an entry handed out).
    pub(crate) fn looked_up(&self, ino: Ino) {
        *self.tables.lock().lookups.entry(ino).or_default() += 1;
    }

    /// A frontend gave back `count` references; returns whether `ino` is
    /// now unreferenced and lost its last name (delete it).
    pub(crate) fn forgotten(&self, ino: Ino, count: u64) -> bool {
        let mut tables = self.tables.lock();
        let Some(held) = tables.lookups.get_mut(&ino) else { return false };
        *held = held.saturating_sub(count);
        if *held > 0 {
            return false;
        }
        tables.lookups.remove(&ino);
        !tables.inodes.contains_key(&ino) && tables.orphans.remove(&ino)
    }

    /// Whether a frontend holds a reference to `ino`.
    pub(crate) fn is_looked_up(&self, ino: Ino) -> bool {
        self.tables.lock().lookups.contains_key(&ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_holds_only_extents_retired_after_its_version() {
        let pins = Arc::new(Pins::default());
        let guard = pins.pin(Ino(5), 10);
        assert!(pins.holds(Ino(5), 11), "retired after the pinned version: needed");
        assert!(!pins.holds(Ino(5), 10), "retired by the pinned change itself: not part of it");
        assert!(!pins.holds(Ino(6), 11), "another inode");
        let second = pins.pin(Ino(5), 10);
        drop(guard);
        assert!(pins.holds(Ino(5), 11));
        drop(second);
        assert!(!pins.holds(Ino(5), 11));
    }

    #[test]
    fn an_orphan_is_deleted_by_whichever_reference_goes_last() {
        let files = OpenFiles::default();
        files.looked_up(Ino(7));
        let inode = files.count_handle(Ino(7));
        assert!(files.keep_if_referenced(Ino(7)));
        assert!(!files.uncount(&mut inode.lock()), "the kernel still holds it");
        assert!(files.forgotten(Ino(7), 1), "the last reference: delete");
        assert!(!files.keep_if_referenced(Ino(8)), "nothing refers to it: delete at once");
    }
}
