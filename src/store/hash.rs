//! Streaming content hashing: SHA-1 (the id) and blake3 (the collision
//! check) in one pass. blake3 is computed group by group (1 MiB subtrees
//! of its tree, merged into the same root), so the pass also yields the
//! chaining value of every group: what lets a read of a large object
//! check the groups it touches and no others (see `outboard.rs`).

use blake3::hazmat::{ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
use sha1::{Digest, Sha1};

/// Bytes per checked group of an object: a power of two of blake3
/// chunks, so that every group is a subtree of blake3's tree.
pub const GROUP: u64 = 1 << 20;

/// Both digests of one content, plus its length.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ContentDigest {
    /// SHA-1 of the bytes: the content id's `lo`.
    pub sha1: [u8; 20],
    /// blake3 of the bytes: tells two contents with one SHA-1 apart.
    pub blake3: [u8; 32],
    /// Length in bytes.
    pub size: u64,
}

/// The SHA-1 of `bytes` when it is not chunk `id`'s: they are not its
/// bytes. (A whole-object check that needs no blake3: reads of small
/// chunks.)
pub fn wrong_sha1(id: &crate::id::ContentId, bytes: &[u8]) -> Option<[u8; 20]> {
    let sha1: [u8; 20] = Sha1::digest(bytes).into();
    (sha1 != id.lo).then_some(sha1)
}

impl ContentDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> ContentDigest {
        let mut hasher = ContentHasher::new();
        hasher.update(bytes);
        hasher.finish_with_groups().0
    }
}

/// Incremental hasher over a byte stream.
#[derive(Clone, Default)]
pub struct ContentHasher {
    sha1: Sha1,
    blake3: GroupHasher,
    size: u64,
}

/// blake3 of a stream, one [`GROUP`] at a time.
#[derive(Clone, Default)]
struct GroupHasher {
    /// The group being hashed, set to its offset in the stream.
    group: blake3::Hasher,
    /// Bytes of it seen.
    in_group: u64,
    /// Chaining values of the groups before it.
    done: Vec<ChainingValue>,
}

impl GroupHasher {
    fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.in_group == GROUP {
                // Only once more bytes come: a stream of one group has a
                // root hash, not a chaining value.
                self.done.push(self.group.finalize_non_root());
                self.group = blake3::Hasher::new();
                self.group.set_input_offset(self.done.len() as u64 * GROUP);
                self.in_group = 0;
            }
            let take = bytes.len().min((GROUP - self.in_group) as usize);
            self.group.update(&bytes[..take]);
            self.in_group += take as u64;
            bytes = &bytes[take..];
        }
    }

    /// The root hash, and the groups' chaining values when there are
    /// two or more (none for a stream of one group).
    fn finish(mut self) -> ([u8; 32], Vec<ChainingValue>) {
        if self.done.is_empty() {
            return (*self.group.finalize().as_bytes(), Vec::new());
        }
        self.done.push(self.group.finalize_non_root());
        (blake3_root(&self.done), self.done)
    }
}

/// The blake3 hash of a stream whose groups have chaining values
/// `groups` (two or more): blake3's tree is left-balanced, so each node
/// splits its groups at the largest power of two below their count.
pub fn blake3_root(groups: &[ChainingValue]) -> [u8; 32] {
    let split = left_len(groups.len());
    *merge_subtrees_root(&subtree(&groups[..split]), &subtree(&groups[split..]), Mode::Hash).as_bytes()
}

fn subtree(groups: &[ChainingValue]) -> ChainingValue {
    match groups {
        [one] => *one,
        _ => {
            let split = left_len(groups.len());
            merge_subtrees_non_root(&subtree(&groups[..split]), &subtree(&groups[split..]), Mode::Hash)
        }
    }
}

/// The largest power of two below `n` (n ≥ 2).
fn left_len(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The chaining value of group `index` of a stream, from its bytes.
pub fn group_value(index: u64, bytes: &[u8]) -> ChainingValue {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * GROUP);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// Above this many bytes per update, blake3 runs on a second thread while
/// SHA-1 runs on this one: together they roughly halve hashing time.
const PARALLEL_THRESHOLD: usize = 256 * 1024;

impl std::fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContentHasher({} bytes)", self.size)
    }
}

impl ContentHasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the next bytes of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        if bytes.len() >= PARALLEL_THRESHOLD {
            let (sha1, blake3) = (&mut self.sha1, &mut self.blake3);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    blake3.update(bytes);
                });
                sha1.update(bytes);
            });
        } else {
            self.sha1.update(bytes);
            self.blake3.update(bytes);
        }
        self.size += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether no bytes were seen.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The digests of everything seen.
    pub fn finish(self) -> ContentDigest {
        self.finish_with_groups().0
    }

    /// The digests of everything seen, and the chaining values of its
    /// groups (none if it is one group long).
    pub fn finish_with_groups(self) -> (ContentDigest, Vec<ChainingValue>) {
        let (blake3, groups) = self.blake3.finish();
        (ContentDigest { sha1: self.sha1.finalize().into(), blake3, size: self.size }, groups)
    }

    /// Hash a whole byte slice at once.
    pub fn digest(bytes: &[u8]) -> ContentDigest {
        let mut hasher = ContentHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_content_has_the_well_known_sha1() {
        let d = ContentHasher::digest(b"");
        assert_eq!(hex::encode(d.sha1), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(d.size, 0);
    }

    #[test]
    fn chunked_and_parallel_updates_agree_with_one_shot() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut chunked = ContentHasher::new();
        for chunk in data.chunks(1000) {
            chunked.update(chunk);
        }
        let mut big = ContentHasher::new();
        big.update(&data);
        assert_eq!(chunked.finish(), big.finish());
    }

    #[test]
    fn group_by_group_blake3_is_plain_blake3_with_every_groups_value() {
        let data: Vec<u8> = (0..(9 * GROUP as usize + 4321)).map(|i| (i * 13 % 253) as u8).collect();
        for len in
            [0, 1, 1024, GROUP as usize, GROUP as usize + 1, 2 * GROUP as usize, 3 * GROUP as usize + 7]
                .into_iter()
                .chain([5 * GROUP as usize, 8 * GROUP as usize + 1, data.len()])
        {
            let bytes = &data[..len];
            let mut hasher = ContentHasher::new();
            for piece in bytes.chunks(300_001) {
                hasher.update(piece);
            }
            let (digest, groups) = hasher.finish_with_groups();
            assert_eq!(digest.blake3, *blake3::hash(bytes).as_bytes(), "{len} bytes");
            let count = len.div_ceil(GROUP as usize);
            assert_eq!(groups.len(), if count > 1 { count } else { 0 }, "{len} bytes");
            for (index, value) in groups.iter().enumerate() {
                let group = bytes.chunks(GROUP as usize).nth(index).unwrap();
                assert_eq!(*value, group_value(index as u64, group), "group {index} of {len} bytes");
            }
        }
    }
}
