//! A file's bytes as a map of extents: which range of which chunk holds
//! each range of the file; gaps read as zeros. Pure data: a commit
//! computes its edit on the stored rows it touches with this type, and
//! the same edit moves open versions in memory.

use std::collections::BTreeMap;

pub use crate::meta::ExtentRow as Extent;

impl Extent {
    /// One past its last byte in the file.
    pub fn end(&self) -> u64 {
        self.off + self.len
    }

    /// The part of it in `[start, end)` (which must overlap it).
    pub fn slice(&self, start: u64, end: u64) -> Extent {
        let from = start.max(self.off);
        let to = end.min(self.end());
        Extent { off: from, len: to - from, chunk: self.chunk, chunk_off: self.chunk_off + (from - self.off) }
    }
}

/// What one range of a file reads as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// Bytes of a chunk.
    Data(Extent),
    /// `len` zeros at `off`.
    Hole {
        /// Offset in the file.
        off: u64,
        /// Length.
        len: u64,
    },
}

/// The extents of (part of) one file, by offset, never overlapping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtentMap {
    by_off: BTreeMap<u64, Extent>,
}

/// How an edit changed a map: extents gone and extents new. An extent
/// both made and removed by one edit appears in neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    /// Extents removed (whole): stored rows to retire.
    pub removed: Vec<Extent>,
    /// Extents added: rows to insert.
    pub added: Vec<Extent>,
}

impl Edit {
    fn remove(&mut self, extent: Extent) {
        match self.added.iter().position(|e| *e == extent) {
            Some(i) => {
                self.added.swap_remove(i);
            }
            None => self.removed.push(extent),
        }
    }
}

impl FromIterator<Extent> for ExtentMap {
    fn from_iter<I: IntoIterator<Item = Extent>>(iter: I) -> Self {
        ExtentMap { by_off: iter.into_iter().map(|e| (e.off, e)).collect() }
    }
}

impl ExtentMap {
    /// Every extent, by offset.
    pub fn iter(&self) -> impl Iterator<Item = &Extent> {
        self.by_off.values()
    }

    /// The extents overlapping `[start, end)`, by offset (untrimmed).
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Extent> {
        let before = self.by_off.range(..start).next_back().map(|(_, e)| e).filter(|e| e.end() > start);
        before.into_iter().chain(self.by_off.range(start..end.max(start)).map(|(_, e)| e))
    }

    /// What `[start, end)` reads as: data trimmed to the range and holes
    /// between, covering the range exactly.
    pub fn spans(&self, start: u64, end: u64) -> Vec<Span> {
        let mut spans = Vec::new();
        let mut at = start;
        for extent in self.overlapping(start, end) {
            if extent.off > at {
                spans.push(Span::Hole { off: at, len: extent.off - at });
            }
            let piece = extent.slice(at.max(start), end);
            at = piece.end();
            spans.push(Span::Data(piece));
        }
        if at < end {
            spans.push(Span::Hole { off: at, len: end - at });
        }
        spans
    }

    /// Remove every byte in `[start, end)`: extents inside it go, those
    /// crossing an edge are replaced by what lies outside it.
    pub fn punch(&mut self, start: u64, end: u64, edit: &mut Edit) {
        if end <= start {
            return;
        }
        let hit: Vec<Extent> = self.overlapping(start, end).copied().collect();
        for extent in hit {
            self.by_off.remove(&extent.off);
            edit.remove(extent);
            if extent.off < start {
                self.insert(extent.slice(extent.off, start), edit);
            }
            if extent.end() > end {
                self.insert(extent.slice(end, extent.end()), edit);
            }
        }
    }

    /// Add `extent` where the map has nothing (the caller punched first).
    pub fn insert(&mut self, extent: Extent, edit: &mut Edit) {
        debug_assert!(self.overlapping(extent.off, extent.end()).next().is_none(), "insert over data");
        self.by_off.insert(extent.off, extent);
        edit.added.push(extent);
    }

    /// Put `extent` at its place, replacing whatever was there.
    pub fn write(&mut self, extent: Extent, edit: &mut Edit) {
        self.punch(extent.off, extent.end(), edit);
        self.insert(extent, edit);
    }

    /// Apply an edit computed on another map of the same file.
    pub fn apply(&mut self, edit: &Edit) {
        for extent in &edit.removed {
            self.by_off.remove(&extent.off);
        }
        for extent in &edit.added {
            self.by_off.insert(extent.off, *extent);
        }
    }

    /// The one extent that makes up a whole file of `size` bytes from
    /// chunk offset 0, if the file is exactly that.
    pub fn sole_extent(&self, size: u64) -> Option<&Extent> {
        match self.by_off.values().next() {
            Some(e) if self.by_off.len() == 1 && e.off == 0 && e.len == size && e.chunk_off == 0 => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ContentId;
    use proptest::prelude::*;

    fn chunk(n: u8) -> ContentId {
        ContentId::new(0, [n; 20])
    }

    /// The byte a model file holds at `pos`: (chunk, offset in it), or
    /// `None` for a hole.
    fn model(map: &ExtentMap, size: u64) -> Vec<Option<(u8, u64)>> {
        let mut bytes = vec![None; size as usize];
        for span in map.spans(0, size) {
            if let Span::Data(e) = span {
                for i in 0..e.len {
                    bytes[(e.off + i) as usize] = Some((e.chunk.lo[0], e.chunk_off + i));
                }
            }
        }
        bytes
    }

    #[test]
    fn punching_the_middle_keeps_both_ends_as_slices() {
        let mut map: ExtentMap =
            [Extent { off: 0, len: 100, chunk: chunk(1), chunk_off: 0 }].into_iter().collect();
        let mut edit = Edit::default();
        map.write(Extent { off: 40, len: 10, chunk: chunk(2), chunk_off: 0 }, &mut edit);
        let pieces: Vec<(u64, u64, u8, u64)> =
            map.iter().map(|e| (e.off, e.len, e.chunk.lo[0], e.chunk_off)).collect();
        assert_eq!(pieces, vec![(0, 40, 1, 0), (40, 10, 2, 0), (50, 50, 1, 50)]);
        assert_eq!(edit.removed.len(), 1);
        assert_eq!(edit.added.len(), 3);
        // A second write over a piece this edit made drops it from `added`.
        map.write(Extent { off: 40, len: 10, chunk: chunk(3), chunk_off: 0 }, &mut edit);
        assert_eq!((edit.removed.len(), edit.added.len()), (1, 3));
        assert_eq!(
            map.spans(30, 120),
            vec![
                Span::Data(Extent { off: 30, len: 10, chunk: chunk(1), chunk_off: 30 }),
                Span::Data(Extent { off: 40, len: 10, chunk: chunk(3), chunk_off: 0 }),
                Span::Data(Extent { off: 50, len: 50, chunk: chunk(1), chunk_off: 50 }),
                Span::Hole { off: 100, len: 20 },
            ]
        );
    }

    proptest! {
        /// Writes and punches on a map agree with the same operations on
        /// a byte model, and an edit replayed on a copy gives the same map.
        #[test]
        fn edits_match_a_byte_model(ops in proptest::collection::vec((0u64..200, 1u64..60, 0u8..4), 1..40)) {
            let size = 260u64;
            let mut map = ExtentMap::default();
            let mut bytes: Vec<Option<(u8, u64)>> = vec![None; size as usize];
            for (i, (off, len, kind)) in ops.into_iter().enumerate() {
                let before = map.clone();
                let mut edit = Edit::default();
                if kind == 0 {
                    map.punch(off, off + len, &mut edit);
                    for b in &mut bytes[off as usize..(off + len) as usize] { *b = None; }
                } else {
                    let id = (i % 200) as u8 + 10;
                    map.write(Extent { off, len, chunk: chunk(id), chunk_off: 7 }, &mut edit);
                    for j in 0..len { bytes[(off + j) as usize] = Some((id, 7 + j)); }
                }
                prop_assert_eq!(model(&map, size), bytes.clone());
                let mut replayed = before;
                replayed.apply(&edit);
                prop_assert_eq!(&replayed, &map);
                let mut last = 0;
                for e in map.iter() {
                    prop_assert!(e.off >= last && e.len > 0);
                    last = e.end();
                }
            }
        }
    }
}
