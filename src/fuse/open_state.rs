//! How each open file talks to the kernel: passthrough, page cache, or
//! direct I/O, and when the page cache may be kept across opens.
//!
//! The kernel puts an inode either in *cached* mode (reads and writes go
//! through its page cache) or in *uncached* mode (passthrough to a backing
//! file, or direct I/O), never both at once, and all passthrough opens of
//! an inode must share one backing file. So:
//!
//! - a read-only open of committed content uses passthrough, reusing the
//!   inode's backing file when it holds the same content, and only when
//!   no cached open exists;
//! - any other open is cached, unless passthrough opens exist, in which
//!   case it is direct (uncached, compatible with them);
//! - a cached open keeps the page cache (`FOPEN_KEEP_CACHE`) when the
//!   kernel cached the same content id before.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use fuser::{BackingId, FopenFlags};
use parking_lot::Mutex;

use crate::id::{ContentId, Handle, Ino};

/// How one handle does its I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum IoMode {
    /// The kernel reads the object file directly.
    Passthrough,
    /// Through the kernel page cache.
    Cached,
    /// Every read and write comes to us.
    Direct,
}

/// What [`OpenState::decide`] chose.
pub(super) struct Decision {
    pub mode: IoMode,
    pub flags: FopenFlags,
    pub backing: Option<Arc<BackingId>>,
}

#[derive(Default)]
struct InodeOpens {
    passthrough: Option<(Option<ContentId>, Arc<BackingId>)>,
    passthrough_opens: usize,
    cached_opens: usize,
}

#[derive(Default)]
pub(super) struct OpenState {
    inodes: Mutex<HashMap<Ino, InodeOpens>>,
    handles: Mutex<HashMap<Handle, (Ino, IoMode)>>,
    /// The content the kernel's page cache holds for an inode, when known.
    cached_content: Mutex<HashMap<Ino, ContentId>>,
}

impl OpenState {
    /// Choose the I/O mode of a new handle. `backing` is the object file of
    /// a read-only handle with nothing pending (see `Opened::backing`);
    /// `open_backing` registers a file with the kernel for passthrough.
    pub(super) fn decide(
        &self,
        ino: Ino,
        handle: Handle,
        content: Option<ContentId>,
        backing: Option<&Arc<File>>,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Decision {
        let mut inodes = self.inodes.lock();
        let opens = inodes.entry(ino).or_default();
        let mut decision = Decision { mode: IoMode::Cached, flags: FopenFlags::empty(), backing: None };
        if let Some(file) = backing {
            match &opens.passthrough {
                Some((shared, id)) if *shared == content => decision.backing = Some(id.clone()),
                None if opens.cached_opens == 0 => match open_backing(file) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        opens.passthrough = Some((content, id.clone()));
                        decision.backing = Some(id);
                    }
                    Err(e) => tracing::debug!("passthrough unavailable for inode {ino}: {e}"),
                },
                _ => {}
            }
        }
        if decision.backing.is_some() {
            decision.mode = IoMode::Passthrough;
            opens.passthrough_opens += 1;
        } else if opens.passthrough_opens > 0 {
            decision.mode = IoMode::Direct;
            decision.flags = FopenFlags::FOPEN_DIRECT_IO;
        } else {
            opens.cached_opens += 1;
            let mut cached = self.cached_content.lock();
            let current = content.unwrap_or(crate::fs::EMPTY_CONTENT);
            if cached.get(&ino) == Some(&current) {
                decision.flags = FopenFlags::FOPEN_KEEP_CACHE;
            }
            cached.insert(ino, current);
        }
        self.handles.lock().insert(handle, (ino, decision.mode));
        decision
    }

    /// The I/O mode of an open handle.
    pub(super) fn mode(&self, handle: Handle) -> Option<IoMode> {
        self.handles.lock().get(&handle).map(|(_, mode)| *mode)
    }

    /// A commit through `handle` produced `content`: a cached handle's
    /// writes went through the page cache, so it now holds that content;
    /// a direct handle's did not, so the page cache is stale.
    pub(super) fn committed(&self, handle: Handle, ino: Ino, content: ContentId) {
        let mode = self.mode(handle);
        let mut cached = self.cached_content.lock();
        match mode {
            Some(IoMode::Cached) => {
                cached.insert(ino, content);
            }
            _ => {
                cached.remove(&ino);
            }
        }
    }

    /// The kernel changed the size itself (truncate through the mount):
    /// its cache matches the new content.
    pub(super) fn truncated(&self, ino: Ino, content: Option<ContentId>) {
        let mut cached = self.cached_content.lock();
        match content {
            Some(id) => cached.insert(ino, id),
            None => cached.remove(&ino),
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
            IoMode::Direct => {}
        }
        if opens.passthrough_opens == 0 && opens.cached_opens == 0 {
            inodes.remove(&ino);
        }
    }
}
