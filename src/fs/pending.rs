//! Writes not yet committed: byte ranges laid over the version they were
//! written on. Recent bytes are held in memory. Appends at the end of the
//! file that pass [`RUN_MIN`] become a run: one staging file, hashed as
//! it grows, that becomes one object however long (a file written front
//! to back is one object, which the kernel can read directly). Other
//! ranges in memory are sealed into chunks of at most [`CHUNK_MAX`] once
//! they fill one, or once an inode holds too much. A commit turns the
//! ranges into extents; everything else of the file is left as it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Attr, FsError, FsResult};
use crate::store::{RunFile, SealedChunk, Store};

/// The largest chunk. Sequential writes are cut into chunks of this size,
/// on a grid from where their run starts (from 0 for a file written front
/// to back, so copies of a file share their chunks).
pub(crate) const CHUNK_MAX: u64 = 1 << 20;

/// Bytes of one inode's pending writes held in memory before all of them
/// are sealed (random writes that never fill a chunk).
const MEMORY_MAX: u64 = 8 << 20;

/// Appends that reach this length at the end of the file leave memory for
/// a run: one object, written and hashed as it grows, however long.
const RUN_MIN: u64 = CHUNK_MAX;

/// One pending range.
#[derive(Clone, Debug)]
pub(crate) enum Piece {
    /// Bytes in memory.
    Mem(Vec<u8>),
    /// Bytes of a sealed chunk.
    Sealed {
        /// The chunk.
        chunk: Arc<SealedChunk>,
        /// Where in it the range starts.
        chunk_off: u64,
        /// Length.
        len: u64,
    },
    /// Zeros (a hole punched or zeroed by fallocate).
    Zeros(u64),
}

impl Piece {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Piece::Mem(bytes) => bytes.len() as u64,
            Piece::Sealed { len, .. } | Piece::Zeros(len) => *len,
        }
    }

    /// Its bytes `[skip, skip + len)`.
    fn slice(&self, skip: u64, len: u64) -> Piece {
        match self {
            Piece::Mem(bytes) => Piece::Mem(bytes[skip as usize..(skip + len) as usize].to_vec()),
            Piece::Sealed { chunk, chunk_off, .. } => {
                Piece::Sealed { chunk: chunk.clone(), chunk_off: chunk_off + skip, len }
            }
            Piece::Zeros(_) => Piece::Zeros(len),
        }
    }

    /// Read its bytes `[skip, skip + buf.len())`.
    fn read(&self, skip: u64, buf: &mut [u8]) -> FsResult<()> {
        match self {
            Piece::Mem(bytes) => buf.copy_from_slice(&bytes[skip as usize..skip as usize + buf.len()]),
            Piece::Zeros(_) => buf.fill(0),
            Piece::Sealed { chunk, chunk_off, .. } => {
                let n = chunk.read_at(chunk_off + skip, buf)?;
                if n < buf.len() {
                    return Err(FsError::Internal("a staged chunk is shorter than its record"));
                }
            }
        }
        Ok(())
    }
}

/// The pending writes of one inode.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The file's size with the writes applied.
    size: u64,
    /// Bytes of the base version at or past this offset are gone (a
    /// truncation); `u64::MAX` if none is.
    cut: u64,
    /// Written ranges by offset, never overlapping.
    pieces: BTreeMap<u64, Piece>,
    /// Bytes of `Piece::Mem` ranges.
    memory: u64,
    /// Starts of ranges in memory that may have filled a chunk since the
    /// last seal, so that sealing does not look at every range.
    maybe_full: Vec<u64>,
    /// The run being appended to, at its offset; overlaps no piece.
    run: Option<(u64, RunFile)>,
    /// The file's mtime when committed: the time of the last write, or a
    /// time set explicitly since (futimens on an open file).
    pub(crate) mtime_ns: i64,
    /// When the bytes or held attributes last changed (the commit's ctime).
    pub(crate) changed_ns: i64,
    /// Attributes set since the last commit that commit with the writes.
    pub(crate) held: HeldAttrs,
}

/// Attributes set on a file while it has pending writes, held back to
/// commit with them: the owner, mode and times that `tar -x` and `cp -a`
/// set on each file before they close it cost no transaction of their
/// own. Only changes that take no access from anyone are held (see
/// [`super::setattr`]), so a reader of the committed attributes is never
/// allowed more than the holder meant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeldAttrs {
    pub(crate) perm: Option<u32>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) atime_ns: Option<i64>,
    pub(crate) btime_ns: Option<i64>,
    /// A time set explicitly (the commit takes `Pending::mtime_ns`, which
    /// has it unless a write came after; this is what stays if the
    /// writes are lost).
    pub(crate) mtime_ns: Option<i64>,
}

impl HeldAttrs {
    /// What `after` holds that `stored` lacks, but for the mtime.
    pub(crate) fn between(stored: &Attr, after: &Attr) -> HeldAttrs {
        fn differs<T: PartialEq>(stored: T, after: T) -> Option<T> {
            (stored != after).then_some(after)
        }
        HeldAttrs {
            perm: differs(stored.perm, after.perm),
            uid: differs(stored.uid, after.uid),
            gid: differs(stored.gid, after.gid),
            atime_ns: differs(stored.atime_ns, after.atime_ns),
            btime_ns: differs(stored.btime_ns, after.btime_ns),
            mtime_ns: None,
        }
    }

    /// Lay them over `attr`.
    pub(crate) fn apply(&self, attr: &mut Attr) {
        attr.perm = self.perm.unwrap_or(attr.perm);
        attr.uid = self.uid.unwrap_or(attr.uid);
        attr.gid = self.gid.unwrap_or(attr.gid);
        attr.atime_ns = self.atime_ns.unwrap_or(attr.atime_ns);
        attr.btime_ns = self.btime_ns.unwrap_or(attr.btime_ns);
        attr.mtime_ns = self.mtime_ns.unwrap_or(attr.mtime_ns);
    }
}

impl Pending {
    /// No writes yet, over a version of `size` bytes.
    pub(crate) fn new(size: u64, now_ns: i64) -> Pending {
        Pending {
            size,
            cut: if size == 0 { 0 } else { u64::MAX },
            pieces: BTreeMap::new(),
            memory: 0,
            maybe_full: Vec::new(),
            run: None,
            mtime_ns: now_ns,
            changed_ns: now_ns,
            held: HeldAttrs::default(),
        }
    }

    /// Hold what `after` (the file's attributes as shown, changed at
    /// `now`) differs in from `stored` (as committed), to commit with the
    /// writes; `set_mtime`: the change set the mtime explicitly.
    pub(crate) fn hold(&mut self, stored: &Attr, after: &Attr, set_mtime: bool, now_ns: i64) {
        let mtime_ns = if set_mtime { Some(after.mtime_ns) } else { self.held.mtime_ns };
        self.held = HeldAttrs { mtime_ns, ..HeldAttrs::between(stored, after) };
        self.mtime_ns = after.mtime_ns;
        self.changed_ns = self.changed_ns.max(now_ns);
    }

    /// What was held has been committed (with a change of its own), as
    /// has `set_mtime`, a time set explicitly: the writes, still pending,
    /// commit with that time, not theirs (cp -p and tar set it before
    /// they close).
    pub(crate) fn held_committed(&mut self, set_mtime: Option<i64>) {
        self.held = HeldAttrs::default();
        if let Some(mtime_ns) = set_mtime {
            self.mtime_ns = mtime_ns;
        }
    }

    /// The size with the writes applied.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Where the base version was cut off (`u64::MAX`: it was not).
    pub(crate) fn cut(&self) -> u64 {
        self.cut
    }

    /// The written ranges, by offset (the run sealed first: see
    /// [`Pending::finish`]).
    pub(crate) fn pieces(&self) -> impl Iterator<Item = (u64, &Piece)> {
        self.pieces.iter().map(|(off, piece)| (*off, piece))
    }

    /// Seal the run, if one is open: a commit takes ranges only.
    pub(crate) fn finish(&mut self) -> FsResult<()> {
        if let Some((start, run)) = self.run.take() {
            let chunk = run.seal()?;
            let len = chunk.len();
            if len > 0 {
                self.pieces.insert(start, Piece::Sealed { chunk: Arc::new(chunk), chunk_off: 0, len });
            }
        }
        Ok(())
    }

    /// Seal the run if it reaches into `[off, end)`.
    fn finish_run_in(&mut self, off: u64, end: u64) -> FsResult<()> {
        match &self.run {
            Some((start, run)) if off < start + run.len() && end > *start => self.finish(),
            _ => Ok(()),
        }
    }

    fn touched(&mut self, now_ns: i64) {
        self.mtime_ns = now_ns;
        self.changed_ns = now_ns;
    }

    /// Write `data` at `off`. Only an append to a run can fail (the disk
    /// is full); then nothing of `data` was written.
    pub(crate) fn write(&mut self, off: u64, data: &[u8], now_ns: i64, store: &Store) -> FsResult<()> {
        if data.is_empty() {
            self.touched(now_ns);
            return Ok(());
        }
        let end = off + data.len() as u64;
        if let Some((start, run)) = &mut self.run {
            let run_end = *start + run.len();
            if off == run_end && self.pieces.range(off..end).next().is_none() {
                run.append(data)?;
                self.touched(now_ns);
                self.size = self.size.max(end);
                return Ok(());
            }
        }
        self.finish_run_in(off, end)?;
        self.touched(now_ns);
        let start = self.write_in_memory(off, data);
        if self.pieces.get(&start).is_some_and(|piece| piece.len() >= CHUNK_MAX) {
            self.maybe_full.push(start);
        }
        self.start_run_at_end(store);
        Ok(())
    }

    /// A range in memory that ends the file and has grown past [`RUN_MIN`]
    /// becomes the run. If no run can be started, it stays in memory.
    fn start_run_at_end(&mut self, store: &Store) {
        if self.run.is_some() {
            return;
        }
        let Some((&start, Piece::Mem(bytes))) = self.pieces.range(..self.size).next_back() else { return };
        if start + bytes.len() as u64 != self.size || (bytes.len() as u64) < RUN_MIN {
            return;
        }
        let started = store.start_run().and_then(|mut run| run.append(bytes).map(|()| run));
        match started {
            Ok(run) => {
                self.memory -= run.len();
                self.pieces.remove(&start);
                self.run = Some((start, run));
            }
            Err(e) => tracing::debug!("a run stays in memory: {e}"),
        }
    }

    /// Write `data` at `off` into the ranges held in memory; returns the
    /// start of the range that holds it.
    fn write_in_memory(&mut self, off: u64, data: &[u8]) -> u64 {
        let end = off + data.len() as u64;
        self.size = self.size.max(end);
        // Inside one range in memory (rewrites of a recent region).
        if let Some((&start, Piece::Mem(bytes))) = self.pieces.range_mut(..=off).next_back()
            && start + bytes.len() as u64 >= end
        {
            let at = (off - start) as usize;
            bytes[at..at + data.len()].copy_from_slice(data);
            return start;
        }
        // Right after one range in memory, with nothing beyond (appends).
        if let Some((&start, Piece::Mem(bytes))) = self.pieces.range_mut(..off).next_back()
            && start + bytes.len() as u64 == off
            && self.pieces.range(off..end).next().is_none()
        {
            let Some(Piece::Mem(bytes)) = self.pieces.get_mut(&start) else { unreachable!("just found") };
            bytes.extend_from_slice(data);
            self.memory += data.len() as u64;
            return start;
        }
        // Anything else: merge with the ranges in memory it overlaps or
        // touches; cut other ranges back to what lies outside it.
        let (mut lo, mut left, mut right) = (off, Vec::new(), Vec::new());
        for (start, piece) in self.take_touching(off, end) {
            let piece_end = start + piece.len();
            match piece {
                Piece::Mem(bytes) => {
                    self.memory -= bytes.len() as u64;
                    if start < off {
                        left = bytes[..(off - start) as usize].to_vec();
                        lo = start;
                    }
                    if piece_end > end {
                        right = bytes[(end - start) as usize..].to_vec();
                    }
                }
                other => self.keep_outside(start, other, off, end),
            }
        }
        left.extend_from_slice(data);
        left.extend_from_slice(&right);
        self.memory += left.len() as u64;
        self.pieces.insert(lo, Piece::Mem(left));
        lo
    }

    /// Make `[off, off + len)` read as zeros (fallocate's punch and zero
    /// modes); `extend` lets it grow the file.
    pub(crate) fn zero(&mut self, off: u64, len: u64, extend: bool, now_ns: i64) -> FsResult<()> {
        self.touched(now_ns);
        let end = if extend { off + len } else { (off + len).min(self.size) };
        if end <= off {
            return Ok(());
        }
        self.finish_run_in(off, end)?;
        for (start, piece) in self.take_touching(off, end) {
            if let Piece::Mem(bytes) = &piece {
                self.memory -= bytes.len() as u64;
            }
            self.keep_outside(start, piece, off, end);
        }
        self.pieces.insert(off, Piece::Zeros(end - off));
        self.size = self.size.max(end);
        Ok(())
    }

    /// Grow the size to `size` (zeros), if it is smaller (fallocate
    /// without KEEP_SIZE).
    pub(crate) fn extend(&mut self, size: u64, now_ns: i64) {
        if size > self.size {
            self.touched(now_ns);
            self.size = size;
        }
    }

    /// Set the size: shrinking drops what lies beyond, growing adds zeros.
    pub(crate) fn truncate(&mut self, size: u64, now_ns: i64) -> FsResult<()> {
        self.touched(now_ns);
        if size < self.size {
            self.finish_run_in(size, u64::MAX)?;
            for (start, piece) in self.take_touching(size, u64::MAX) {
                if let Piece::Mem(bytes) = &piece {
                    self.memory -= bytes.len() as u64;
                }
                self.keep_outside(start, piece, size, u64::MAX);
            }
            self.cut = self.cut.min(size);
        }
        self.size = size;
        Ok(())
    }

    /// Remove and return the ranges that overlap `[off, end)` or touch it.
    fn take_touching(&mut self, off: u64, end: u64) -> Vec<(u64, Piece)> {
        let keys: Vec<u64> = self
            .pieces
            .range(..=end)
            .rev()
            .take_while(|(start, piece)| *start + piece.len() >= off)
            .map(|(start, _)| *start)
            .collect();
        keys.into_iter().filter_map(|k| self.pieces.remove(&k).map(|p| (k, p))).collect()
    }

    /// Put back the parts of `piece` (at `start`) outside `[off, end)`.
    fn keep_outside(&mut self, start: u64, piece: Piece, off: u64, end: u64) {
        let piece_end = start + piece.len();
        if piece_end <= off || start >= end {
            if let Piece::Mem(bytes) = &piece {
                self.memory += bytes.len() as u64;
            }
            self.pieces.insert(start, piece);
            return;
        }
        for (from, to) in [(start, off.min(piece_end)), (end.max(start), piece_end)] {
            if from < to {
                let part = piece.slice(from - start, to - from);
                if let Piece::Mem(bytes) = &part {
                    self.memory += bytes.len() as u64;
                }
                self.pieces.insert(from, part);
            }
        }
    }

    /// Seal what no longer belongs in memory: every full chunk of a run in
    /// memory, and everything once too much is held. `seal` hashes bytes
    /// and sets them aside. A failure leaves the bytes in memory.
    pub(crate) fn seal(&mut self, seal: &mut dyn FnMut(&[u8]) -> FsResult<SealedChunk>) -> FsResult<()> {
        let everything = self.memory > MEMORY_MAX;
        let candidates = std::mem::take(&mut self.maybe_full);
        let runs: Vec<u64> = if everything {
            self.pieces
                .iter()
                .filter(|(_, piece)| matches!(piece, Piece::Mem(_)))
                .map(|(start, _)| *start)
                .collect()
        } else {
            let mut full: Vec<u64> = candidates
                .into_iter()
                .filter(|start| matches!(self.pieces.get(start), Some(Piece::Mem(bytes)) if bytes.len() as u64 >= CHUNK_MAX))
                .collect();
            full.sort_unstable();
            full.dedup();
            full
        };
        for start in runs {
            let Some(Piece::Mem(bytes)) = self.pieces.remove(&start) else { continue };
            let mut at = 0usize;
            let mut failure = None;
            while at < bytes.len() {
                let take = (bytes.len() - at).min(CHUNK_MAX as usize);
                if take < CHUNK_MAX as usize && !everything {
                    break;
                }
                match seal(&bytes[at..at + take]) {
                    Ok(chunk) => {
                        let len = chunk.len();
                        self.pieces.insert(
                            start + at as u64,
                            Piece::Sealed { chunk: Arc::new(chunk), chunk_off: 0, len },
                        );
                        self.memory -= take as u64;
                        at += take;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if at < bytes.len() {
                self.pieces.insert(start + at as u64, Piece::Mem(bytes[at..].to_vec()));
            }
            if let Some(e) = failure {
                self.maybe_full.push(start + at as u64);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Read `buf.len()` bytes at `off` (the caller keeps within the size)
    /// with the writes applied; `base` reads the version they lie on.
    pub(crate) fn read(
        &self,
        off: u64,
        buf: &mut [u8],
        base: &mut dyn FnMut(u64, &mut [u8]) -> FsResult<()>,
    ) -> FsResult<()> {
        let end = off + buf.len() as u64;
        let mut at = off;
        let first = self.pieces.range(..=off).next_back().map(|(start, _)| *start).unwrap_or(off);
        let mut sources: Vec<(u64, u64, Option<&Piece>)> =
            self.pieces.range(first..end).map(|(start, piece)| (*start, piece.len(), Some(piece))).collect();
        if let Some((start, run)) = &self.run
            && start + run.len() > off
            && *start < end
        {
            let i = sources.partition_point(|(s, _, _)| s < start);
            sources.insert(i, (*start, run.len(), None));
        }
        for (start, len, piece) in sources {
            let piece_end = start + len;
            if piece_end <= at {
                continue;
            }
            if start > at {
                self.read_base(at, &mut buf[(at - off) as usize..(start - off) as usize], base)?;
                at = start;
            }
            let to = piece_end.min(end);
            let part = &mut buf[(at - off) as usize..(to - off) as usize];
            match (piece, &self.run) {
                (Some(piece), _) => piece.read(at - start, part)?,
                (None, Some((_, run))) => {
                    if run.read_at(at - start, part)? < part.len() {
                        return Err(FsError::Internal("a run is shorter than its record"));
                    }
                }
                (None, None) => unreachable!("a run source comes from the run"),
            }
            at = to;
        }
        if at < end {
            self.read_base(at, &mut buf[(at - off) as usize..], base)?;
        }
        Ok(())
    }

    /// Bytes of the base version at `at`, as far as the cut leaves them.
    fn read_base(
        &self,
        at: u64,
        buf: &mut [u8],
        base: &mut dyn FnMut(u64, &mut [u8]) -> FsResult<()>,
    ) -> FsResult<()> {
        let kept = self.cut.saturating_sub(at).min(buf.len() as u64) as usize;
        base(at, &mut buf[..kept])?;
        buf[kept..].fill(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(p: &Pending, base: &[u8]) -> Vec<u8> {
        let mut out = vec![0xEE; p.size() as usize];
        p.read(0, &mut out, &mut |at, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = base.get(at as usize + i).copied().unwrap_or(0);
            }
            Ok(())
        })
        .unwrap();
        out
    }

    #[derive(Clone, Debug)]
    enum Op {
        Write(u64, Vec<u8>),
        Zero(u64, u64),
        Truncate(u64),
        Seal,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..3000, proptest::collection::vec(any::<u8>(), 1..700)).prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..3000, 1u64..500).prop_map(|(o, l)| Op::Zero(o, l)),
            1 => (0u64..3500).prop_map(Op::Truncate),
            1 => Just(Op::Seal),
        ]
    }

    proptest! {
        /// Every sequence of writes, zeroings, truncations and seals reads
        /// back as the same operations on a plain byte vector.
        #[test]
        fn reads_match_a_byte_model(base_len in 0usize..2000, ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let base: Vec<u8> = (0..base_len).map(|i| (i % 250) as u8 + 1).collect();
            let mut model = base.clone();
            let mut p = Pending::new(base.len() as u64, 0);
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        let end = off as usize + data.len();
                        if model.len() < end { model.resize(end, 0); }
                        model[off as usize..end].copy_from_slice(&data);
                        p.write(off, &data, 1, &store).unwrap();
                    }
                    Op::Zero(off, len) => {
                        let end = (off + len) as usize;
                        if model.len() < end { model.resize(end, 0); }
                        model[off as usize..end].fill(0);
                        p.zero(off, len, true, 1).unwrap();
                    }
                    Op::Truncate(size) => {
                        model.resize(size as usize, 0);
                        p.truncate(size, 1).unwrap();
                    }
                    Op::Seal => {
                        p.seal(&mut |bytes| Ok(SealedChunk::in_memory(bytes.to_vec()))).unwrap();
                    }
                }
                prop_assert_eq!(read_all(&p, &base), model.clone());
                let memory: u64 = p.pieces().map(|(_, piece)| match piece { Piece::Mem(b) => b.len() as u64, _ => 0 }).sum();
                prop_assert_eq!(memory, p.memory);
                let mut last = 0;
                for (start, piece) in p.pieces() {
                    prop_assert!(start >= last && piece.len() > 0 && start + piece.len() <= p.size());
                    last = start + piece.len();
                }
            }
        }
    }

    #[test]
    fn a_range_in_memory_that_fills_a_chunk_is_sealed_by_the_next_seal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let size = CHUNK_MAX * 3;
        let mut p = Pending::new(size, 0);
        let mut model = vec![0u8; size as usize];
        // Backwards, so that no write appends and each one grows the range
        // after it from its front.
        let block = 64 * 1024;
        for (i, off) in (0..size / block as u64).rev().map(|k| k * block as u64).enumerate() {
            let data = vec![i as u8 + 1; block];
            model[off as usize..off as usize + block].copy_from_slice(&data);
            p.write(off, &data, 1, &store).unwrap();
            p.seal(&mut |bytes| Ok(SealedChunk::in_memory(bytes.to_vec()))).unwrap();
            for (_, piece) in p.pieces() {
                assert!(
                    !matches!(piece, Piece::Mem(b) if b.len() as u64 >= CHUNK_MAX),
                    "a full chunk left in memory"
                );
            }
        }
        assert!(p.memory < CHUNK_MAX);
        assert_eq!(read_all(&p, &vec![0u8; size as usize]), model);
    }

    #[test]
    fn a_file_written_front_to_back_becomes_one_run_then_one_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut p = Pending::new(0, 0);
        let data: Vec<u8> = (0..(CHUNK_MAX as usize * 3 + 5000)).map(|i| (i % 251) as u8).collect();
        for piece in data.chunks(128 * 1024) {
            p.write(p.size(), piece, 1, &store).unwrap();
            p.seal(&mut |bytes| Ok(SealedChunk::in_memory(bytes.to_vec()))).unwrap();
        }
        assert!(p.run.is_some() && p.pieces.is_empty(), "no range left in memory");
        assert_eq!(p.memory, 0);
        assert_eq!(read_all(&p, &[]), data);
        // A rewrite inside the run seals it; the new bytes lie over it.
        p.write(10, b"xyz", 2, &store).unwrap();
        assert!(p.run.is_none());
        let mut expected = data.clone();
        expected[10..13].copy_from_slice(b"xyz");
        assert_eq!(read_all(&p, &[]), expected);
        p.finish().unwrap();
        let sizes: Vec<u64> = p.pieces().map(|(_, piece)| piece.len()).collect();
        assert_eq!(sizes, vec![10, 3, data.len() as u64 - 13], "the run's object, sliced around the rewrite");
    }
}
