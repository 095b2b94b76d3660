//! Streaming content hashing: SHA-1 (the id) and blake3 (the collision
//! check) in one pass, with memory use independent of the content size.

use sha1::{Digest, Sha1};

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

/// Incremental hasher over a byte stream.
#[derive(Clone, Default)]
pub struct ContentHasher {
    sha1: Sha1,
    blake3: blake3::Hasher,
    size: u64,
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
        ContentDigest {
            sha1: self.sha1.finalize().into(),
            blake3: *self.blake3.finalize().as_bytes(),
            size: self.size,
        }
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
}
