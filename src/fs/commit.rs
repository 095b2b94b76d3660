//! Commits of new content: pending writes, a whole new body, or another
//! file's extents become a file's new version in one transaction that
//! writes only what changed.
//!
//! A file up to [`SMALL_FILE`] bytes is always one chunk, so its chunk id
//! is its content id (its ETag), known at the commit, and it can be read
//! straight from one object. A larger file's commit turns each pending
//! range into chunks and lays them over the stored extents: the extents
//! it covers are retired (kept until the commit is durable, for a
//! roll-back after a power cut), those it crosses are trimmed. Its whole
//! content id is left to be computed later (`etag.rs`), unless the caller
//! hashed the whole body anyway (a put).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::content::stays_inline;
use super::extents::{Edit, Extent, ExtentMap};
use super::open::Version;
use super::pending::{CHUNK_MAX, HeldAttrs, Pending, Piece};
use super::{Attr, ChangeOp, Fs, FsError, FsResult, Origin, Tx};
use crate::id::{ContentId, Ino};
use crate::meta::WriteUndo;
use crate::store::{ContentDigest, SealedChunk};

/// Files up to this size are stored as one chunk, rewritten whole at
/// each commit (larger ones too when written whole). Above it a partial
/// rewrite stores only what changed: a page written into a 1 MB SQLite
/// database costs a page, not the database.
pub(crate) const SMALL_FILE: u64 = 64 * 1024;

/// A commit's result: the version it made.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) version: Version,
}

/// What one commit writes.
pub(crate) enum Body {
    /// The whole file is these chunks, end to end (none: empty), with the
    /// whole content's digest when known.
    Whole { chunks: Vec<Arc<SealedChunk>>, digest: Option<ContentDigest> },
    /// Ranges laid over the stored extents: everything at or past `cut`
    /// goes first, then each range is written.
    Patch { cut: u64, ranges: Vec<(u64, Range)> },
}

/// The version a body was written on: its change, and its extents if
/// they are loaded.
#[derive(Clone, Copy)]
pub(crate) struct Base<'m> {
    pub(crate) seq: u64,
    pub(crate) map: Option<&'m ExtentMap>,
}

/// What a commit sets besides the bytes: the file's times, and the
/// attributes held back to commit with them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    /// The new mtime.
    pub(crate) mtime_ns: i64,
    /// When the file last changed: the new ctime, unless the stored one
    /// is later.
    pub(crate) changed_ns: i64,
    pub(crate) held: HeldAttrs,
}

/// One range of a patch.
pub(crate) enum Range {
    /// Bytes of a chunk.
    Chunk { chunk: Arc<SealedChunk>, chunk_off: u64, len: u64 },
    /// Zeros.
    Zeros(u64),
}

impl Fs {
    /// Commit `pending`, written on `base`, as `ino`'s new version.
    pub(super) fn commit_pending(
        &self,
        ino: Ino,
        mut pending: Pending,
        base: &Version,
        origin: Origin,
    ) -> FsResult<Committed> {
        pending.finish()?;
        let size = pending.size();
        let mut pieces = pending.pieces();
        // Written whole since it was cut to 0: the pending bytes are the file.
        let (whole_run, whole_in_memory) = match (pieces.next(), pieces.next()) {
            (Some((0, Piece::Sealed { chunk, chunk_off: 0, len })), None)
                if pending.cut() == 0 && *len == size && chunk.len() == size =>
            {
                (Some(chunk.clone()), false)
            }
            (Some((0, Piece::Mem(bytes))), None) => (None, pending.cut() == 0 && bytes.len() as u64 == size),
            _ => (None, false),
        };
        let body = if let Some(chunk) = whole_run {
            // Written front to back: one object, whose hash is the file's.
            Body::Whole { digest: Some(chunk.digest), chunks: vec![chunk] }
        } else if size <= SMALL_FILE || whole_in_memory {
            let mut bytes = vec![0u8; size as usize];
            pending.read(0, &mut bytes, &mut |at, part| self.read_version(base, at, part))?;
            let chunk = Arc::new(SealedChunk::in_memory(bytes));
            let digest = Some(chunk.digest);
            Body::Whole { chunks: if size == 0 { vec![] } else { vec![chunk] }, digest }
        } else {
            let mut ranges = Vec::new();
            for (off, piece) in pending.pieces() {
                match piece {
                    Piece::Mem(bytes) => {
                        for (i, part) in bytes.chunks(CHUNK_MAX as usize).enumerate() {
                            let at = off + (i as u64) * CHUNK_MAX;
                            let len = part.len() as u64;
                            if part.iter().all(|&b| b == 0) {
                                ranges.push((at, Range::Zeros(len)));
                            } else {
                                let chunk = Arc::new(self.store.seal(part)?);
                                ranges.push((at, Range::Chunk { chunk, chunk_off: 0, len }));
                            }
                        }
                    }
                    Piece::Sealed { chunk, chunk_off, len } => ranges
                        .push((off, Range::Chunk { chunk: chunk.clone(), chunk_off: *chunk_off, len: *len })),
                    Piece::Zeros(len) => ranges.push((off, Range::Zeros(*len))),
                }
            }
            Body::Patch { cut: pending.cut().min(size), ranges }
        };
        let base_map = base.extents.lock().clone();
        let stamp = Stamp { mtime_ns: pending.mtime_ns, changed_ns: pending.changed_ns, held: pending.held };
        self.commit_body(ino, body, size, stamp, origin, (base.data_seq, base_map))
    }

    /// Make `ino` a copy of `version` (whose extents are `extents`): its
    /// extents, size and content id. No byte moves.
    pub(super) fn commit_copy(
        &self,
        ino: Ino,
        version: &Version,
        extents: &ExtentMap,
        origin: Origin,
    ) -> FsResult<Committed> {
        let now = super::now_ns();
        let (size, content) = (version.size, version.content);
        let (pin, attr) = self.transact(origin, |tx| {
            let seq = tx.seq()?;
            // Pinned before anyone can replace the new version.
            let pin = self.pins.pin(ino, seq);
            let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            tx.replace_extents(&inode, extents.iter(), seq)?;
            // The source's id is shared only while the source still holds
            // that version: once replaced, its row may be gone.
            let source = tx.db.inode(version.ino)?;
            let content = content.filter(|_| source.is_some_and(|s| s.data_seq == version.data_seq));
            if let Some(id) = content {
                tx.db.add_content_refs(&id, 1)?;
            }
            let logged = tx.set_content(&mut inode, size, content, now, now, seq)?;
            tx.log_write(&inode, logged)?;
            Ok((pin, inode))
        })?;
        self.after_content_commit(&attr);
        let map = Arc::new(extents.iter().copied().collect::<ExtentMap>());
        Ok(Committed { version: Version::new(ino, attr.data_seq, size, attr.content, Some(map), pin) })
    }

    /// Write `body`, written on version `base` (its change, and its
    /// extents if loaded), as `ino`'s new version of `size` bytes.
    pub(super) fn commit_body(
        &self,
        ino: Ino,
        body: Body,
        size: u64,
        stamp: Stamp,
        origin: Origin,
        (base_seq, base_map): (u64, Option<Arc<ExtentMap>>),
    ) -> FsResult<Committed> {
        let (pin, attr, new_map) = self.transact(origin, |tx| {
            let seq = tx.seq()?;
            // Pinned before anyone can replace the new version.
            let pin = self.pins.pin(ino, seq);
            let mut inode = tx.db.inode(ino)?.ok_or(FsError::NotFound)?;
            let base = Base { seq: base_seq, map: base_map.as_deref() };
            let (content, new_map) = tx.write_body(&inode, &body, size, seq, Some(base))?;
            let ctime = inode.ctime_ns.max(stamp.changed_ns);
            stamp.held.apply(&mut inode);
            let logged = tx.set_content(&mut inode, size, content, stamp.mtime_ns, ctime, seq)?;
            tx.log_write(&inode, logged)?;
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
            Ok((pin, inode, new_map))
        })?;
        self.after_content_commit(&attr);
        Ok(Committed {
            version: Version::new(ino, attr.data_seq, attr.size, attr.content, new_map.map(Arc::new), pin),
        })
    }
}

impl Fs {
    /// Write `staged` into the regular file `ino` at `offset` (`None`: at
    /// its end), growing it if it ends past the end (zeros between), as
    /// one commit: readers see the file before or after, never part of the
    /// write. Only the new bytes are stored; the rest of the file is left
    /// as it is. A writer other than root clears setuid (and a
    /// group-executable setgid), as a write on the mount does.
    pub fn patch(
        &self,
        ino: Ino,
        offset: Option<u64>,
        staged: super::Staged,
        caller: &super::Caller,
    ) -> FsResult<Attr> {
        self.check_writable()?;
        let current = self.meta.read(|db| db.inode(ino))?.ok_or(FsError::NotFound)?;
        if current.kind != super::FileKind::File {
            return Err(FsError::IsDir);
        }
        let at = offset.unwrap_or(current.size);
        let end = at
            .checked_add(staged.size())
            .filter(|end| *end <= super::io::MAX_FILE_SIZE)
            .ok_or(FsError::TooBig)?;
        let perm = super::access::mode_after_write(caller.uid, current.perm);
        if perm != current.perm {
            let change = super::SetAttr { perm: Some(perm), ..super::SetAttr::default() };
            self.setattr(ino, &change, caller)?;
        }
        if staged.size() == 0 {
            return self.getattr(ino);
        }
        if current.size.max(end) <= SMALL_FILE {
            // A small file stays one chunk: rewritten whole, through a
            // handle, in one write.
            let mut bytes = vec![0u8; staged.size() as usize];
            let mut filled = 0;
            for chunk in &staged.chunks {
                filled += chunk.read_at(0, &mut bytes[filled..filled + chunk.len() as usize])?;
            }
            if filled != bytes.len() {
                return Err(FsError::Internal("a staged body is shorter than its record"));
            }
            let flags = super::OpenFlags { write: true, ..super::OpenFlags::default() };
            let opened = self.open_file(ino, flags)?;
            let written = self.write(opened.handle, at, &bytes[..filled]);
            let released = self.release(opened.handle, caller.origin);
            written?;
            released?;
            return self.getattr(ino);
        }
        let mut ranges = Vec::with_capacity(staged.chunks.len());
        let mut off = at;
        for chunk in staged.chunks {
            let len = chunk.len();
            ranges.push((off, Range::Chunk { chunk, chunk_off: 0, len }));
            off += len;
        }
        let body = Body::Patch { cut: current.size, ranges };
        let now = super::now_ns();
        let size = current.size.max(end);
        let stamp = Stamp { mtime_ns: now, changed_ns: now, held: HeldAttrs::default() };
        let committed = self.commit_body(ino, body, size, stamp, caller.origin, (current.data_seq, None))?;
        drop(committed);
        self.getattr(ino)
    }
}

impl Tx<'_, '_> {
    /// Lay `body` over the version it was written on, `base` (none: the
    /// body is whole), as `inode`'s change `seq`. Returns the new whole
    /// content id (taking a reference to it) when known, and the new
    /// extent map when it is known without another query.
    pub(super) fn write_body(
        &mut self,
        inode: &Attr,
        body: &Body,
        size: u64,
        seq: u64,
        base: Option<Base<'_>>,
    ) -> FsResult<(Option<ContentId>, Option<ExtentMap>)> {
        let ino = inode.ino;
        match body {
            Body::Whole { chunks, digest } => {
                // A file made only of chunks kept in this transaction can
                // lose nothing in a power cut: no roll-back needs its
                // previous size and times.
                if chunks.iter().any(|chunk| !stays_inline(chunk)) {
                    self.record_undo(inode, seq)?;
                }
                let mut extents = Vec::with_capacity(chunks.len());
                let mut off = 0;
                for chunk in chunks {
                    let id = self.adopt_chunk(chunk, seq)?;
                    extents.push(Extent { off, len: chunk.len(), chunk: id, chunk_off: 0 });
                    off += chunk.len();
                }
                if off != size {
                    return Err(FsError::Internal("a body's chunks do not add up to its size"));
                }
                self.set_extents(inode, extents.iter(), seq)?;
                let content = match digest {
                    Some(digest) if size > 0 => Some(self.adopt_content(digest)?),
                    _ => None,
                };
                Ok((content, Some(extents.into_iter().collect())))
            }
            Body::Patch { cut, ranges } => {
                let base = base.ok_or(FsError::Internal("a patch without the version it patches"))?;
                // Another frontend replaced the file since the writes began:
                // they lay over the version they were made on, all of it,
                // never over the other one.
                let replaced = base.seq != inode.data_seq;
                let mut touched: ExtentMap = if replaced {
                    self.db.extents_as_of(ino, base.seq)?.into_iter().collect()
                } else {
                    self.record_undo(inode, seq)?;
                    // The stored extents the patch touches, and only those.
                    let mut rows = self.db.extents_overlapping(ino, (*cut).min(size), u64::MAX)?;
                    for (off, range) in ranges {
                        rows.extend(self.db.extents_overlapping(ino, *off, off + range.len())?);
                    }
                    rows.into_iter().collect()
                };
                let mut edit = Edit::default();
                touched.punch((*cut).min(size), u64::MAX, &mut edit);
                let mut adopted: HashMap<*const SealedChunk, ContentId> = HashMap::new();
                for (off, range) in ranges {
                    match range {
                        Range::Zeros(len) => touched.punch(*off, off + len, &mut edit),
                        Range::Chunk { chunk, chunk_off, len } => {
                            let id = match adopted.get(&Arc::as_ptr(chunk)) {
                                Some(id) => *id,
                                None => {
                                    let id = self.adopt_chunk(chunk, seq)?;
                                    adopted.insert(Arc::as_ptr(chunk), id);
                                    id
                                }
                            };
                            touched.write(
                                Extent { off: *off, len: *len, chunk: id, chunk_off: *chunk_off },
                                &mut edit,
                            );
                        }
                    }
                }
                if replaced {
                    self.replace_extents(inode, touched.iter(), seq)?;
                    return Ok((None, Some(touched)));
                }
                for extent in &edit.removed {
                    self.db.retire_extent(ino, extent.off, seq)?;
                }
                for extent in &edit.added {
                    self.db.insert_extent(ino, extent, seq)?;
                }
                let new_map = base.map.map(|map| {
                    let mut map = map.clone();
                    map.apply(&edit);
                    map
                });
                Ok((None, new_map))
            }
        }
    }

    /// Make `extents` all of `inode`'s extents (change `seq`).
    pub(super) fn replace_extents<'e>(
        &mut self,
        inode: &Attr,
        extents: impl Iterator<Item = &'e Extent>,
        seq: u64,
    ) -> FsResult<()> {
        self.record_undo(inode, seq)?;
        self.set_extents(inode, extents, seq)
    }

    /// Retire all of `inode`'s extents and insert `extents` (change
    /// `seq`), recording no undo row: [`Tx::replace_extents`] for a body
    /// a power cut cannot take apart.
    fn set_extents<'e>(
        &mut self,
        inode: &Attr,
        extents: impl Iterator<Item = &'e Extent>,
        seq: u64,
    ) -> FsResult<()> {
        self.db.retire_all_extents(inode.ino, seq)?;
        for extent in extents {
            self.db.insert_extent(inode.ino, extent, seq)?;
        }
        Ok(())
    }

    /// Remember `inode`'s size and times before change `seq` rewrites it.
    fn record_undo(&mut self, inode: &Attr, seq: u64) -> FsResult<()> {
        let created = self.created.contains(&inode.ino);
        let undo =
            WriteUndo { seq, size: inode.size, mtime_ns: inode.mtime_ns, ctime_ns: inode.ctime_ns, created };
        Ok(self.db.record_undo(inode.ino, &undo)?)
    }

    /// Record `inode`'s new content (a reference to `content` already
    /// taken), size and times as change `seq`, and drop the reference to
    /// its old content. Returns the content id to log (the caller logs).
    pub(super) fn set_content(
        &mut self,
        inode: &mut Attr,
        size: u64,
        content: Option<ContentId>,
        mtime_ns: i64,
        ctime_ns: i64,
        seq: u64,
    ) -> FsResult<Option<ContentId>> {
        let old = std::mem::replace(&mut inode.content, content);
        inode.size = size;
        inode.mtime_ns = mtime_ns;
        inode.ctime_ns = ctime_ns;
        inode.data_seq = seq;
        self.db.update_inode(inode)?;
        // New bytes lose the file's capabilities. A writer still holding
        // the file open makes exec fail (ETXTBSY), so removing them at the
        // commit rather than at the write leaves no window.
        self.db.remove_xattr(inode.ino, super::setattr::CAPABILITY_XATTR)?;
        if let Some(old) = old {
            self.release_content(old)?;
        }
        Ok(content.or((size == 0).then_some(super::EMPTY_CONTENT)))
    }

    /// Log a write of `inode` (its content id, if known).
    pub(super) fn log_write(&mut self, inode: &Attr, content: Option<ContentId>) -> FsResult<()> {
        self.log(ChangeOp::Write, inode.ino, None, None, content, vec![])
    }
}

impl Range {
    fn len(&self) -> u64 {
        match self {
            Range::Chunk { len, .. } | Range::Zeros(len) => *len,
        }
    }
}
