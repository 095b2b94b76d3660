//! Keeping the kernel's caches true to changes made elsewhere (WebDAV).
//!
//! The mount lets the kernel keep entries and attributes for an hour and
//! page contents across opens. That is right only while every change
//! comes through the mount. Every change committed by another frontend is
//! therefore pushed to the kernel as invalidations: `inval_entry` for each
//! name that appeared, vanished or moved, `inval_inode` (attributes) for
//! each inode whose attributes or content changed; cached pages of a
//! changed content are dropped at the next open (no FOPEN_KEEP_CACHE).
//!
//! The notifications are written to /dev/fuse from one dedicated thread,
//! never from a FUSE callback nor under a lock a callback needs: the
//! kernel may wait on an in-flight request of the same inode before it
//! takes the notification, and that request may need us. (One exception,
//! attributes only, is [`AttrNotifier`].) The committing
//! thread (a WebDAV request's, which holds no fs core lock once the
//! transaction is over) waits until its change has been pushed, so when
//! the HTTP response goes out the mount already shows the change.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use fuser::{INodeNo, Notifier};

use crate::fs::{Change, ChangeOp, Fs, Origin};
use crate::id::Ino;

/// How long a committing thread waits for its invalidations before it
/// gives up (and logs): the kernel should take them in microseconds.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Attribute invalidations a FUSE callback asks for itself: after a
/// failed commit through the mount, the size the kernel computed from the
/// writes it sent is wrong (the previous version stayed), and the error
/// reply must not go out before the kernel forgot it. Attributes only
/// (offset -1) take no lock a request in flight could hold, so unlike
/// everything the invalidation thread sends this is safe from a callback.
#[derive(Default)]
pub(super) struct AttrNotifier(std::sync::OnceLock<Notifier>);

impl AttrNotifier {
    /// Called once the session exists (it needs the filesystem first).
    pub(super) fn connect(&self, notifier: Notifier) {
        let _ = self.0.set(notifier);
    }

    /// Make the kernel ask for `ino`'s attributes again.
    pub(super) fn drop_attributes(&self, ino: Ino) {
        match self.0.get() {
            Some(notifier) => report(notifier.inval_inode(INodeNo(ino.0), -1, 0), "inode", ino.0),
            None => tracing::warn!("fuse: no notifier yet to drop the attributes of inode {ino}"),
        }
    }
}

enum Job {
    Invalidate(Box<Change>, Sender<()>),
    Stop,
}

/// The invalidation thread of one mount.
pub(super) struct Invalidator {
    live: Arc<AtomicBool>,
    jobs: Sender<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Invalidator {
    /// Start pushing `fs`'s changes from other frontends to the kernel.
    pub(super) fn start(fs: &Arc<Fs>, notifier: Notifier) -> std::io::Result<Invalidator> {
        let (jobs, queue) = crossbeam_channel::unbounded();
        let kernel = fs.clone();
        let thread = std::thread::Builder::new()
            .name("tsmfs-invalidate".into())
            .spawn(move || run(&notifier, &kernel, &queue))?;
        let live = Arc::new(AtomicBool::new(true));
        let (subscriber_live, subscriber_jobs) = (live.clone(), jobs.clone());
        fs.subscribe(move |change| {
            // The kernel learned of its own changes as it made them.
            if change.origin == Origin::Fuse || !subscriber_live.load(Ordering::Acquire) {
                return;
            }
            let (ack, done) = crossbeam_channel::bounded(1);
            if subscriber_jobs.send(Job::Invalidate(Box::new(change.clone()), ack)).is_err() {
                return;
            }
            if done.recv_timeout(ACK_TIMEOUT).is_err() && subscriber_live.load(Ordering::Acquire) {
                tracing::warn!("fuse: invalidations for change {} took over {ACK_TIMEOUT:?}", change.seq);
            }
        });
        Ok(Invalidator { live, jobs, thread: Some(thread) })
    }

    /// Stop (before unmounting): later changes are no longer pushed.
    pub(super) fn stop(&mut self) {
        self.live.store(false, Ordering::Release);
        let _ = self.jobs.send(Job::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("fuse: the invalidation thread panicked");
        }
    }
}

impl Drop for Invalidator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(notifier: &Notifier, kernel: &Fs, queue: &Receiver<Job>) {
    while let Ok(Job::Invalidate(change, ack)) = queue.recv() {
        push(notifier, kernel, &change);
        let _ = ack.send(());
    }
}

/// The notifications for one change. The kernel answers ENOENT for what
/// it does not hold, which is fine: nothing to drop.
fn push(notifier: &Notifier, kernel: &Fs, change: &Change) {
    // Entry notifications are sent only for names the kernel may hold:
    // `inval_entry` takes the parent directory's lock, which a create in
    // flight on the mount holds while it waits for us; were the process
    // killed then, the notifying thread could never return and the dying
    // process never exit. A name that only appeared needs none (the kernel
    // never keeps a negative entry from us: a failed lookup is not cached;
    // the parent's attributes are dropped below), nor does a name that
    // vanished or moved when the kernel holds none of the inodes involved.
    let names_only_added =
        matches!(change.op, ChangeOp::Create | ChangeOp::Mkdir | ChangeOp::Symlink | ChangeOp::Link);
    let parents: Vec<Ino> = change.entries.iter().map(|(parent, _)| *parent).collect();
    let kernel_holds_a_name = std::iter::once(&change.ino)
        .chain(&change.also)
        .filter(|ino| !parents.contains(ino))
        .any(|ino| kernel.is_held(*ino));
    let entries = if names_only_added || !kernel_holds_a_name { &[][..] } else { &change.entries[..] };
    for (parent, name) in entries {
        report(notifier.inval_entry(INodeNo(parent.0), OsStr::from_bytes(name)), "entry", parent.0);
        kernel.metrics().kernel_invalidation("entry");
    }
    // Attributes only (offset -1): the kernel then drops no pages here,
    // so it never waits on a page lock held by a read in flight (which,
    // were the daemon killed meanwhile, would never be answered and
    // would keep the dying process from exiting). Stale pages go at the
    // next open instead: without FOPEN_KEEP_CACHE for changed content,
    // the kernel drops them itself; open handles keep their version.
    for ino in std::iter::once(&change.ino).chain(&change.also) {
        report(notifier.inval_inode(INodeNo(ino.0), -1, 0), "inode", ino.0);
        kernel.metrics().kernel_invalidation("inode");
    }
}

fn report(result: std::io::Result<()>, what: &str, ino: u64) {
    match result {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => tracing::debug!("fuse: invalidating {what} of inode {ino}: {e}"),
    }
}
