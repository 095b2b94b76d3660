//! Checked reads of large objects. An object longer than one [`GROUP`]
//! has an *outboard* file (`outboard/<2 hex>/<lo>-<hi>`): the blake3
//! chaining values of its 1 MiB groups, made while its bytes were hashed
//! for the commit. A read checks each group it touches the first time
//! this process reads it, and only those groups, so a ranged read of a
//! large file never reads the whole file. An outboard is derived data:
//! one missing or damaged is made again from the object, whose SHA-1
//! must then match its id.
//!
//! Format (little-endian): `tsmfsob1`, the object's length (u64), the
//! group length (u64), one 32-byte chaining value per group, the
//! object's blake3 (the groups merged), and the blake3 of everything
//! before it.

use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use blake3::hazmat::ChainingValue;

use super::chunk::read_full_at;
use super::hash::{GROUP, blake3_root, group_value};

const MAGIC: &[u8; 8] = b"tsmfsob1";
const HEADER: usize = 8 + 8 + 8;
const DIGEST: usize = 32;

/// The outboard file of an object of `len` bytes with group values
/// `groups`.
pub(super) fn encode(len: u64, groups: &[ChainingValue]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + groups.len() * DIGEST + 2 * DIGEST);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&GROUP.to_le_bytes());
    for value in groups {
        bytes.extend_from_slice(value);
    }
    bytes.extend_from_slice(&blake3_root(groups));
    let seal = blake3::hash(&bytes);
    bytes.extend_from_slice(seal.as_bytes());
    bytes
}

/// The group values an outboard file gives an object of `len` bytes;
/// `None` if it is damaged, or made for another length or group size.
pub(super) fn decode(bytes: &[u8], len: u64) -> Option<Vec<ChainingValue>> {
    let count = usize::try_from(len.div_ceil(GROUP)).ok()?;
    if count < 2 || bytes.len() != HEADER + count * DIGEST + 2 * DIGEST {
        return None;
    }
    let (body, seal) = bytes.split_at(bytes.len() - DIGEST);
    let header_ok =
        body[..8] == MAGIC[..] && body[8..16] == len.to_le_bytes() && body[16..24] == GROUP.to_le_bytes();
    if !header_ok || blake3::hash(body).as_bytes()[..] != *seal {
        return None;
    }
    let (values, root) = body[HEADER..].split_at(count * DIGEST);
    let groups: Vec<ChainingValue> =
        values.chunks_exact(DIGEST).map(|v| v.try_into().unwrap_or([0; DIGEST])).collect();
    (blake3_root(&groups) == root).then_some(groups)
}

/// The groups of one open large object and which of them this process
/// has checked.
#[derive(Debug)]
pub(super) struct GroupCheck {
    groups: Vec<ChainingValue>,
    checked: Vec<AtomicU64>,
    unchecked: AtomicUsize,
}

/// A read found group `0` of the object not matching its value.
#[derive(Debug)]
pub(super) struct BadGroup(pub u64);

impl GroupCheck {
    /// Nothing checked yet.
    pub(super) fn new(groups: Vec<ChainingValue>) -> GroupCheck {
        let checked = (0..groups.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        let unchecked = AtomicUsize::new(groups.len());
        GroupCheck { groups, checked, unchecked }
    }

    /// Every group known good (the object was just hashed whole).
    pub(super) fn all_checked(groups: Vec<ChainingValue>) -> GroupCheck {
        let check = GroupCheck::new(groups);
        for index in 0..check.groups.len() {
            check.mark(index);
        }
        check
    }

    /// Whether every group has been checked.
    pub(super) fn complete(&self) -> bool {
        self.unchecked.load(Ordering::Acquire) == 0
    }

    fn is_checked(&self, index: usize) -> bool {
        self.checked[index / 64].load(Ordering::Acquire) & (1 << (index % 64)) != 0
    }

    fn mark(&self, index: usize) {
        let bit = 1 << (index % 64);
        if self.checked[index / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            self.unchecked.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Read up to `buf.len()` bytes at `offset` of `file` (`len` bytes
    /// long), checking each group the read touches that was not checked
    /// before. A group read for its check is read once: straight into
    /// `buf` when the read covers all of it.
    pub(super) fn read_at(
        &self,
        file: &File,
        len: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<Result<usize, BadGroup>> {
        let end = len.min(offset.saturating_add(buf.len() as u64));
        let mut at = offset;
        let mut scratch = Vec::new();
        while at < end {
            let index = at / GROUP;
            let (group_start, group_end) = (index * GROUP, len.min((index + 1) * GROUP));
            let piece_end = end.min(group_end);
            let piece = &mut buf[(at - offset) as usize..(piece_end - offset) as usize];
            let slot = index as usize;
            if self.is_checked(slot) {
                if read_full_at(file, at, piece)? < piece.len() {
                    return Ok(Err(BadGroup(index)));
                }
            } else {
                let whole = at == group_start && piece_end == group_end;
                let group: &mut [u8] = if whole {
                    piece
                } else {
                    scratch.resize((group_end - group_start) as usize, 0);
                    &mut scratch
                };
                let n = read_full_at(file, group_start, group)?;
                if n < group.len() || group_value(index, group) != self.groups[slot] {
                    return Ok(Err(BadGroup(index)));
                }
                self.mark(slot);
                if !whole {
                    let from = (at - group_start) as usize;
                    piece.copy_from_slice(&scratch[from..from + piece.len()]);
                }
            }
            at = piece_end;
        }
        Ok(Ok(end.saturating_sub(offset) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ContentHasher;
    use std::os::unix::fs::FileExt;

    fn object(len: usize) -> (tempfile::NamedTempFile, Vec<u8>, Vec<ChainingValue>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 249) as u8).collect();
        let mut hasher = ContentHasher::new();
        hasher.update(&bytes);
        let (_, groups) = hasher.finish_with_groups();
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().write_all_at(&bytes, 0).unwrap();
        (file, bytes, groups)
    }

    #[test]
    fn an_outboard_reads_back_and_any_damage_or_other_length_is_refused() {
        let len = 3 * GROUP + 99;
        let (_, _, groups) = object(len as usize);
        let bytes = encode(len, &groups);
        assert_eq!(decode(&bytes, len), Some(groups.clone()));
        assert_eq!(decode(&bytes, len + 1), None, "another length");
        for at in [0, 9, 17, HEADER + 5, bytes.len() - 40, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1;
            assert_eq!(decode(&damaged, len), None, "byte {at} flipped");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1], len), None, "cut short");
    }

    #[test]
    fn reads_check_only_the_groups_they_touch_and_find_a_flipped_byte() {
        let len = 5 * GROUP + 1000;
        let (file, bytes, groups) = object(len as usize);
        let check = GroupCheck::new(groups);
        let mut buf = vec![0u8; 4096];
        let at = 2 * GROUP + 10;
        assert_eq!(check.read_at(file.as_file(), len, at, &mut buf).unwrap().unwrap(), 4096);
        assert_eq!(buf[..], bytes[at as usize..at as usize + 4096]);
        assert!(check.is_checked(2) && !check.is_checked(1) && !check.is_checked(3));

        // Damage in group 4: reads elsewhere still pass, reads there fail.
        file.as_file().write_all_at(&[bytes[4 * GROUP as usize + 7] ^ 0x20], 4 * GROUP + 7).unwrap();
        let mut whole = vec![0u8; GROUP as usize];
        assert_eq!(check.read_at(file.as_file(), len, 0, &mut whole).unwrap().unwrap(), GROUP as usize);
        assert_eq!(whole[..], bytes[..GROUP as usize]);
        assert!(matches!(
            check.read_at(file.as_file(), len, 4 * GROUP + 100, &mut buf).unwrap(),
            Err(BadGroup(4))
        ));
        let mut tail = vec![0u8; 5000];
        assert_eq!(
            check.read_at(file.as_file(), len, len - 500, &mut tail).unwrap().unwrap(),
            500,
            "short at the end"
        );
        assert!(!check.complete());
    }
}
