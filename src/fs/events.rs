//! Change events: after every commit the fs core tells in-process
//! subscribers what changed, so frontends can drop stale cache entries.
//!
//! Subscribers are called on the committing thread, after the transaction
//! and outside every fs core lock. They must be quick and must not call
//! back into the fs core: push into a channel and act elsewhere (the FUSE
//! invalidation thread, the HTTP cache).

use parking_lot::RwLock;

use crate::id::{ContentId, Ino};

/// Which frontend made a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The FUSE mount.
    Fuse,
    /// The WebDAV/HTTP server.
    WebDav,
    /// A CLI command (put, import).
    Cli,
    /// tsmfs itself (recovery, gc).
    Internal,
}

impl Origin {
    /// The name written to the change log.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Fuse => "fuse",
            Origin::WebDav => "webdav",
            Origin::Cli => "cli",
            Origin::Internal => "internal",
        }
    }
}

/// What kind of change happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeOp {
    /// A file, device, fifo or socket was created.
    Create,
    /// A directory was created.
    Mkdir,
    /// A symlink was created.
    Symlink,
    /// A hard link was added.
    Link,
    /// A name was removed (the inode may live on).
    Unlink,
    /// A directory was removed.
    Rmdir,
    /// An entry was moved (and maybe replaced another).
    Rename,
    /// Two entries swapped inodes.
    Exchange,
    /// Attributes changed (mode, owner, times, size by truncate).
    SetAttr,
    /// New content was committed.
    Write,
    /// An extended attribute or dead property changed.
    Xattr,
    /// An inode with no names left was deleted: the last handle or
    /// reference to an unlinked file went.
    Delete,
}

impl ChangeOp {
    /// The name written to the change log.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Mkdir => "mkdir",
            ChangeOp::Symlink => "symlink",
            ChangeOp::Link => "link",
            ChangeOp::Unlink => "unlink",
            ChangeOp::Rmdir => "rmdir",
            ChangeOp::Rename => "rename",
            ChangeOp::Exchange => "exchange",
            ChangeOp::SetAttr => "setattr",
            ChangeOp::Write => "write",
            ChangeOp::Xattr => "xattr",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Change-log sequence number.
    pub seq: u64,
    /// Who made it.
    pub origin: Origin,
    /// What happened.
    pub op: ChangeOp,
    /// The inode whose attributes or content changed.
    pub ino: Ino,
    /// Directory entries that appeared, vanished or moved: (parent, name).
    pub entries: Vec<(Ino, Vec<u8>)>,
    /// Other inodes whose attributes changed as a side effect (a replaced
    /// rename target, parents whose link count changed).
    pub also: Vec<Ino>,
    /// The new content, for writes.
    pub content: Option<ContentId>,
}

type Subscriber = Box<dyn Fn(&Change) + Send + Sync>;

/// The subscriber list.
#[derive(Default)]
pub(crate) struct Events {
    subscribers: RwLock<Vec<Subscriber>>,
}

impl Events {
    pub(crate) fn subscribe(&self, f: Subscriber) {
        self.subscribers.write().push(f);
    }

    pub(crate) fn emit(&self, change: &Change) {
        for subscriber in self.subscribers.read().iter() {
            subscriber(change);
        }
    }
}
