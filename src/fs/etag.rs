//! Reading committed versions, and the whole-file content id (the ETag)
//! of versions committed without it.
//!
//! A commit that rewrote part of a large file does not hash the whole
//! file again: its content id is computed once per version, after the
//! commit, by a background thread once writes to the file have settled
//! for [`SETTLE`], or at once by the first request that needs it (GET,
//! PROPFIND, the ETag xattr). One computation runs per version; others
//! asking meanwhile wait for it. The id is recorded on the inode only if
//! the file still holds that version, so it is never stale.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::content::register;
use super::extents::{ExtentMap, Span};
use super::open::Version;
use super::{Attr, EMPTY_CONTENT, FileKind, Fs, FsError, FsResult, Shared};
use crate::id::{ContentId, Ino};
use crate::meta::MetaError;
use crate::store::ContentHasher;

/// How long a file must go without a new commit before its content id is
/// computed in the background.
const SETTLE: Duration = Duration::from_secs(2);

/// Bytes hashed per read.
const HASH_PIECE: usize = 1 << 20;

/// A long hash checks this often that its version is still the file's:
/// a file deleted or rewritten meanwhile is not hashed to the end.
const STILL_CURRENT_EVERY: u64 = 64 * HASH_PIECE as u64;

/// Content ids being computed, and versions waiting to be.
#[derive(Default)]
pub(crate) struct Etags {
    /// One slot per version being computed: whoever holds its lock
    /// computes; the others find the result there.
    flights: Mutex<HashMap<(Ino, u64), Flight>>,
    /// Versions to compute in the background: inode → (version, due).
    queue: Mutex<EtagQueue>,
    wake: Condvar,
}

/// The result slot of one version's computation.
type Flight = Arc<Mutex<Option<ContentId>>>;

#[derive(Default)]
struct EtagQueue {
    due: HashMap<Ino, (u64, Instant)>,
    stop: bool,
}

impl Etags {
    pub(crate) fn stop(&self) {
        self.queue.lock().stop = true;
        self.wake.notify_all();
    }
}

impl Shared {
    /// The extents of `version`, loaded at first use.
    pub(crate) fn extents_of(&self, version: &Version) -> FsResult<Arc<ExtentMap>> {
        let mut extents = version.extents.lock();
        if let Some(map) = &*extents {
            return Ok(map.clone());
        }
        let rows = self.meta.read(|db| db.extents_as_of(version.ino, version.data_seq))?;
        let map = Arc::new(rows.into_iter().collect::<ExtentMap>());
        *extents = Some(map.clone());
        Ok(map)
    }

    /// Read `buf.len()` bytes of `version` at `at` (the caller keeps within
    /// its size): chunk bytes, zeros for holes.
    pub(crate) fn read_version(&self, version: &Version, at: u64, buf: &mut [u8]) -> FsResult<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let extents = self.extents_of(version)?;
        for span in extents.spans(at, at + buf.len() as u64) {
            match span {
                Span::Hole { off, len } => buf[(off - at) as usize..(off - at + len) as usize].fill(0),
                Span::Data(extent) => {
                    let part = &mut buf[(extent.off - at) as usize..(extent.end() - at) as usize];
                    let n = self.read_chunk(&extent.chunk, extent.len, extent.chunk_off, part)?;
                    if n < part.len() {
                        tracing::error!(
                            "chunk {} is shorter than its extents say; run `tsmfs fsck`",
                            extent.chunk.etag_tag()
                        );
                        return Err(FsError::Internal("a chunk is shorter than its extents"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The content id of `ino`'s version `data_seq`, computed (once, if
    /// several ask) and recorded. NotFound if the file no longer holds
    /// that version.
    fn compute_content_id(&self, ino: Ino, data_seq: u64) -> FsResult<ContentId> {
        let flight = self.etags.flights.lock().entry((ino, data_seq)).or_default().clone();
        let mut slot = flight.lock();
        if let Some(id) = *slot {
            return Ok(id);
        }
        let computed = self.hash_version(ino, data_seq);
        if let Ok(id) = &computed {
            *slot = Some(*id);
        }
        drop(slot);
        self.etags.flights.lock().remove(&(ino, data_seq));
        computed
    }

    fn hash_version(&self, ino: Ino, data_seq: u64) -> FsResult<ContentId> {
        let pin = self.pins.pin(ino, self.last_seq.load(Ordering::Acquire));
        let inode = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        if inode.data_seq != data_seq {
            return Err(FsError::NotFound);
        }
        if let Some(id) = inode.content {
            return Ok(id);
        }
        if inode.size == 0 {
            return Ok(EMPTY_CONTENT);
        }
        let version = Version::new(ino, data_seq, inode.size, None, None, pin);
        let mut hasher = ContentHasher::new();
        let mut buf = vec![0u8; HASH_PIECE.min(inode.size as usize)];
        let mut at = 0u64;
        while at < inode.size {
            if at > 0 && at.is_multiple_of(STILL_CURRENT_EVERY) && !self.still_holds(ino, data_seq)? {
                return Err(FsError::NotFound);
            }
            let n = (inode.size - at).min(buf.len() as u64) as usize;
            self.read_version(&version, at, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let digest = hasher.finish();
        if self.read_only {
            let same = self.meta.read(|db| db.contents_with_sha1(&digest.sha1))?;
            let found = same.iter().find(|c| c.blake3 == digest.blake3 && c.size == digest.size);
            return Ok(
                found.map_or(ContentId::new(same.last().map_or(0, |c| c.id.hi + 1), digest.sha1), |c| c.id)
            );
        }
        let now = super::now_ns();
        Ok(self.meta.write(false, |db| {
            let (id, _) = register(db, &digest, now)?;
            if db.set_content_if_version(ino, data_seq, &id)? {
                db.add_content_refs(&id, 1)?;
            } else {
                db.delete_content_if_unused(&id)?;
            }
            Ok::<_, MetaError>(id)
        })?)
    }

    /// Whether `ino` still holds version `data_seq`.
    fn still_holds(&self, ino: Ino, data_seq: u64) -> FsResult<bool> {
        Ok(self.meta.read(|db| db.inode(ino))?.is_some_and(|inode| inode.data_seq == data_seq))
    }

    /// The background hasher: content ids of versions that settled.
    pub(crate) fn run_hasher(&self) {
        loop {
            let ready: Vec<(Ino, u64)> = {
                let mut queue = self.etags.queue.lock();
                loop {
                    if queue.stop {
                        return;
                    }
                    let now = Instant::now();
                    let ready: Vec<(Ino, u64)> = queue
                        .due
                        .iter()
                        .filter(|(_, (_, due))| *due <= now)
                        .map(|(ino, (seq, _))| (*ino, *seq))
                        .collect();
                    if !ready.is_empty() {
                        for (ino, _) in &ready {
                            queue.due.remove(ino);
                        }
                        break ready;
                    }
                    let next = queue.due.values().map(|(_, due)| *due).min();
                    match next {
                        Some(due) => {
                            self.etags.wake.wait_for(&mut queue, due.saturating_duration_since(now));
                        }
                        None => self.etags.wake.wait(&mut queue),
                    }
                }
            };
            for (ino, data_seq) in ready {
                match self.compute_content_id(ino, data_seq) {
                    Ok(_) | Err(FsError::NotFound) => {}
                    Err(e) => tracing::warn!("content id of inode {ino}: {e}"),
                }
            }
        }
    }
}

/// A committed content, open for reading: what HTTP serves. It reads the
/// version it was opened on to its last byte, whatever commits follow.
pub struct ContentFile {
    shared: Arc<Shared>,
    version: Option<Version>,
}

impl std::fmt::Debug for ContentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentFile").field("len", &self.len()).finish()
    }
}

impl ContentFile {
    /// Its length.
    pub fn len(&self) -> u64 {
        self.version.as_ref().map_or(0, |v| v.size)
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read up to `buf.len()` bytes at `offset`; the count read (0 at the
    /// end).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let Some(version) = &self.version else { return Ok(0) };
        let n = version.size.saturating_sub(offset).min(buf.len() as u64) as usize;
        self.shared.read_version(version, offset, &mut buf[..n]).map_err(std::io::Error::other)?;
        Ok(n)
    }
}

impl Fs {
    /// After a commit that left `attr`'s content id to compute: do it in
    /// the background once the file settles.
    pub(super) fn after_content_commit(&self, attr: &Attr) {
        if attr.kind != FileKind::File || attr.content.is_some() || attr.size == 0 || self.read_only {
            return;
        }
        let mut queue = self.etags.queue.lock();
        let was_idle = queue.due.keys().all(|ino| *ino == attr.ino);
        queue.due.insert(attr.ino, (attr.data_seq, Instant::now() + SETTLE));
        // Every entry is due SETTLE after its commit, so the hasher, if it
        // waits for another, wakes before this one is due.
        if was_idle {
            self.etags.wake.notify_all();
        }
    }

    /// `attr` (a regular file's) with its content id, computed if its
    /// commit left it for later. If the file changed meanwhile: its newest
    /// committed attributes, with theirs (size and id always agree).
    pub fn with_content_id(&self, mut attr: Attr) -> FsResult<Attr> {
        for _ in 0..16 {
            if attr.kind != FileKind::File || attr.content.is_some() || attr.size == 0 {
                return Ok(attr);
            }
            match self.compute_content_id(attr.ino, attr.data_seq) {
                Ok(id) => {
                    attr.content = Some(id);
                    return Ok(attr);
                }
                Err(FsError::NotFound) => {
                    attr = self.meta.read(|db| db.inode(attr.ino))?.ok_or(FsError::NotFound)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Retry)
    }

    /// The content id (ETag) of `ino`'s current committed version.
    pub fn current_content_id(&self, ino: Ino) -> FsResult<ContentId> {
        let inode = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        if inode.kind != FileKind::File {
            return Err(FsError::IsDir);
        }
        Ok(self.with_content_id(inode)?.content.unwrap_or(EMPTY_CONTENT))
    }

    /// Open committed content `id` for reading: the version of a file
    /// that holds it. NotFound if no file holds it (any more).
    pub fn open_content(&self, id: &ContentId) -> FsResult<ContentFile> {
        if *id == EMPTY_CONTENT {
            return Ok(ContentFile { shared: self.shared.clone(), version: None });
        }
        let inode = self.meta.read(|db| db.inode_with_content(id))?.ok_or(FsError::NotFound)?;
        let pin = self.pins.pin(inode.ino, inode.data_seq);
        // Pinned after the read: make sure the version is still there.
        let now = self.meta.read(|db| db.inode(inode.ino))?.ok_or(FsError::NotFound)?;
        if now.data_seq != inode.data_seq {
            return Err(FsError::NotFound);
        }
        let version = Version::new(inode.ino, inode.data_seq, inode.size, inode.content, None, pin);
        Ok(ContentFile { shared: self.shared.clone(), version: Some(version) })
    }

    /// The MD5 of committed content `id`, computed from its bytes the
    /// first time and kept (for clients that compare MD5 rather than
    /// SHA-1). NotFound if no file holds it (any more).
    pub fn md5_of(&self, id: &ContentId) -> FsResult<[u8; 16]> {
        use md5::Digest;
        if let Some(md5) = self.meta.read_point(|db| db.content_md5(id))? {
            return Ok(md5);
        }
        let file = self.open_content(id)?;
        let mut hasher = md5::Md5::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < file.len() {
            let n = file.read_at(&mut buf, at).map_err(|e| {
                FsError::Store(crate::store::StoreError::Io {
                    action: "read content",
                    path: id.etag_tag().into(),
                    source: e,
                })
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        let md5: [u8; 16] = hasher.finalize().into();
        if !self.read_only {
            self.meta.write(false, |db| db.set_content_md5(id, &md5))?;
        }
        Ok(md5)
    }

    /// All bytes of committed content `id` (for contents small enough to
    /// hold in memory). NotFound if no file holds it (any more).
    pub fn read_content(&self, id: &ContentId) -> FsResult<Vec<u8>> {
        let file = self.open_content(id)?;
        let mut bytes = vec![0u8; file.len() as usize];
        let n = file.read_at(&mut bytes, 0).map_err(|e| {
            FsError::Store(crate::store::StoreError::Io {
                action: "read content",
                path: id.etag_tag().into(),
                source: e,
            })
        })?;
        bytes.truncate(n);
        Ok(bytes)
    }
}
