//! How each open file talks to the kernel: passthrough, page cache, or
//! direct I/O, and when the page cache may be kept across opens.
//!
//! The kernel (6.9+) puts an inode either in *cached* mode (I/O through
//! its page cache) or in *passthrough* mode, never both at once: while an
//! inode has passthrough opens, every new open must be passthrough with the
//! same backing file (anything else fails with EIO), and while it has
//! cached opens, passthrough opens fail. Objects are read-only, so a
//! writer can never be passthrough. Hence, with passthrough enabled:
//!
//! - a read-only open of committed content uses passthrough if the inode
//!   has no cached opens, sharing the inode's backing file;
//! - a read-only open while passthrough opens of an *older* content exist
//!   shares their backing and reads that older version until they close;
//! - an open for writing while passthrough opens exist fails with
//!   ETXTBSY (the kernel would fail it with EIO);
//! - everything else is cached.
//!
//! These limits are why passthrough is opt-in (`--passthrough`). A cached
//! open keeps the page cache (`FOPEN_KEEP_CACHE`) when the kernel cached
//! the same content id before.
//!
//! A write-only open (not passthrough) uses direct I/O: the kernel hands
//! the writer's pages to us without first copying them into its page cache
//! and waiting on each write there, which roughly halves the cost of a big
//! sequential write. Nothing reads through a write-only handle and it
//! cannot be mmapped, so no caching is lost; the page cache simply does not
//! hold what such a writer committed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

use fuser::{BackingId, FopenFlags};
use parking_lot::Mutex;

use crate::id::{Handle, Ino};

/// How one handle does its I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IoMode {
    /// The kernel reads the object file directly.
    Passthrough,
    /// Through the kernel page cache.
    Cached,
    /// Writes bypass the page cache (write-only handles).
    Direct,
}

/// How a handle was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Access {
    Read,
    ReadWrite,
    WriteOnly,
}

/// What [`OpenState::decide`] chose.
pub(super) struct Decision {
    pub mode: IoMode,
    pub flags: FopenFlags,
    pub backing: Option<Arc<BackingId>>,
}

#[derive(Default)]
struct InodeOpens {
    passthrough: Option<(u64, Arc<BackingId>)>,
    passthrough_opens: usize,
    /// Page-cache and direct-I/O opens (both keep passthrough out).
    cached_opens: usize,
    /// Of `cached_opens`, the direct-I/O ones.
    direct_opens: usize,
}

#[derive(Default)]
pub(super) struct OpenState {
    inodes: Mutex<HashMap<Ino, InodeOpens>>,
    handles: Mutex<HashMap<Handle, (Ino, IoMode)>>,
    /// The version (`Attr::data_seq`) the kernel's page cache holds for an
    /// inode, when known.
    cached_content: Mutex<HashMap<Ino, u64>>,
    /// Inodes written with direct I/O since the kernel last dropped their
    /// page cache: what it caches may be older than any commit.
    direct_written: Mutex<HashSet<Ino>>,
}

impl OpenState {
    /// Choose the I/O mode of a new handle. `backing` is the object file of
    /// a read-only handle with nothing pending (see `Opened::backing`),
    /// given only when passthrough is enabled; `open_backing` registers a
    /// file with the kernel. Fails with ETXTBSY for a writer while
    /// passthrough readers hold the inode.
    pub(super) fn decide(
        &self,
        ino: Ino,
        handle: Handle,
        access: Access,
        content: u64,
        backing: Option<&Arc<File>>,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Result<Decision, fuser::Errno> {
        let mut inodes = self.inodes.lock();
        let opens = inodes.entry(ino).or_default();
        let mut decision = Decision { mode: IoMode::Cached, flags: FopenFlags::empty(), backing: None };
        if let Some((shared, id)) = &opens.passthrough {
            if access != Access::Read {
                tracing::info!("inode {ino} is open for passthrough reads: refusing a writer (ETXTBSY)");
                return Err(fuser::Errno::from_i32(libc::ETXTBSY));
            }
            if *shared != content {
                tracing::debug!("inode {ino}: new reader shares the passthrough file of an older version");
            }
            decision.backing = Some(id.clone());
        } else if let Some(file) = backing.filter(|_| opens.cached_opens == 0) {
            match open_backing(file) {
                Ok(id) => {
                    let id = Arc::new(id);
                    opens.passthrough = Some((content, id.clone()));
                    decision.backing = Some(id);
                }
                Err(e) => tracing::debug!("passthrough unavailable for inode {ino}: {e}"),
            }
        }
        if decision.backing.is_some() {
            decision.mode = IoMode::Passthrough;
            opens.passthrough_opens += 1;
        } else if access == Access::WriteOnly {
            decision.mode = IoMode::Direct;
            decision.flags = FopenFlags::FOPEN_DIRECT_IO;
            opens.cached_opens += 1;
            opens.direct_opens += 1;
            self.direct_written.lock().insert(ino);
            self.cached_content.lock().remove(&ino);
        } else {
            opens.cached_opens += 1;
            let mut cached = self.cached_content.lock();
            let current = content;
            if cached.get(&ino) == Some(&current) {
                decision.flags = FopenFlags::FOPEN_KEEP_CACHE;
            } else if opens.direct_opens == 0 {
                // Without KEEP_CACHE the kernel drops the inode's pages;
                // they are trustworthy again unless a direct writer is
                // still open.
                self.direct_written.lock().remove(&ino);
            }
            cached.insert(ino, current);
        }
        self.handles.lock().insert(handle, (ino, decision.mode));
        Ok(decision)
    }

    /// A commit through the mount produced `content`. Writes through the
    /// page cache leave it holding that content; direct writes do not (an
    /// inode with a direct writer open is always in `direct_written`).
    pub(super) fn committed(&self, ino: Ino, content: u64) {
        let mut cached = self.cached_content.lock();
        if self.direct_written.lock().contains(&ino) {
            cached.remove(&ino);
        } else {
            cached.insert(ino, content);
        }
    }

    /// Writes through the mount were discarded: pages the kernel cached
    /// from them must go at the next open.
    pub(super) fn discarded(&self, ino: Ino) {
        self.cached_content.lock().remove(&ino);
    }

    /// The kernel evicted the inode and its page cache with it. Keeps the
    /// bookkeeping as small as the kernel's inode cache.
    pub(super) fn forgotten(&self, ino: Ino) {
        self.cached_content.lock().remove(&ino);
        self.direct_written.lock().remove(&ino);
    }

    /// The kernel changed the size itself (truncate through the mount):
    /// its cache matches the new content.
    pub(super) fn truncated(&self, ino: Ino, content: u64) {
        let mut cached = self.cached_content.lock();
        match self.direct_written.lock().contains(&ino) {
            false => cached.insert(ino, content),
            true => cached.remove(&ino),
        };
    }

    /// A handle was released.
    pub(super) fn released(&self, handle: Handle) {
        let Some((ino, mode)) = self.handles.lock().remove(&handle) else { return };
        let mut inodes = self.inodes.lock();
        let Some(opens) = inodes.get_mut(&ino) else { return };
        match mode {
            IoMode::Passthrough => {
                opens.passthrough_opens -= 1;
                if opens.passthrough_opens == 0 {
                    // The kernel drops the backing file with the last open.
                    opens.passthrough = None;
                }
            }
            IoMode::Cached => opens.cached_opens -= 1,
            IoMode::Direct => {
                opens.cached_opens -= 1;
                opens.direct_opens -= 1;
            }
        }
        if opens.passthrough_opens == 0 && opens.cached_opens == 0 {
            inodes.remove(&ino);
        }
    }
}
