//! Identifiers: content ids (`hi/lo`), inode numbers and file handles.
//!
//! A [`ContentId`] names one immutable content in the store. `lo` is the
//! SHA-1 of the bytes alone (no header, unlike git), `hi` a collision index
//! that is 0 unless a *different* content already holds the same SHA-1.
//! This type does no I/O; the store decides `hi`.

use std::fmt;
use std::str::FromStr;

/// Length of a SHA-1 digest in bytes.
pub const SHA1_LEN: usize = 20;
/// Length of a SHA-1 digest in hex digits.
pub const SHA1_HEX_LEN: usize = 2 * SHA1_LEN;
/// Length of the collision index in hex digits.
pub const HI_HEX_LEN: usize = 16;

/// The id of one content: collision index `hi` and SHA-1 `lo`.
///
/// Canonical text form (`Display`, `FromStr`): `"{hi:016x}/{lo}"`.
/// ETag form ([`ContentId::etag`]): `"{lo}"`, or `"{lo}-{hi:016x}"` when
/// `hi != 0`, so the common case is the bare SHA-1 every tool can check.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId {
    /// Collision index, 0 for the first content with a given SHA-1.
    pub hi: u64,
    /// SHA-1 of the content bytes.
    pub lo: [u8; SHA1_LEN],
}

/// Why a content id or ETag could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The text has the wrong shape or length.
    #[error("malformed content id {0:?}: expected <16 hex>/<40 hex> or an ETag")]
    Shape(String),
    /// A character is not a lowercase or uppercase hex digit.
    #[error("content id {0:?} contains a non-hex character")]
    NotHex(String),
}

impl ContentId {
    /// Id of the first content with SHA-1 `lo`.
    pub const fn new(hi: u64, lo: [u8; SHA1_LEN]) -> Self {
        ContentId { hi, lo }
    }

    /// SHA-1 as 40 lowercase hex digits.
    pub fn lo_hex(&self) -> String {
        hex::encode(self.lo)
    }

    /// The opaque tag (without quotes) used as HTTP ETag and FUSE xattr.
    pub fn etag_tag(&self) -> String {
        if self.hi == 0 { self.lo_hex() } else { format!("{}-{:016x}", self.lo_hex(), self.hi) }
    }

    /// The strong HTTP ETag, quoted: `"<sha1>"` or `"<sha1>-<hi>"`.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.etag_tag())
    }

    /// Parse the tag form produced by [`ContentId::etag_tag`], with or
    /// without surrounding quotes.
    pub fn from_etag(text: &str) -> Result<Self, ParseIdError> {
        let tag = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
        let (lo, hi) = match tag.split_once('-') {
            Some((lo, hi)) if hi.len() == HI_HEX_LEN => (lo, parse_hi(hi, text)?),
            Some(_) => return Err(ParseIdError::Shape(text.to_owned())),
            None => (tag, 0),
        };
        Ok(ContentId::new(hi, parse_lo(lo, text)?))
    }
}

fn parse_hi(hex_text: &str, whole: &str) -> Result<u64, ParseIdError> {
    if hex_text.len() != HI_HEX_LEN {
        return Err(ParseIdError::Shape(whole.to_owned()));
    }
    u64::from_str_radix(hex_text, 16).map_err(|_| ParseIdError::NotHex(whole.to_owned()))
}

fn parse_lo(hex_text: &str, whole: &str) -> Result<[u8; SHA1_LEN], ParseIdError> {
    if hex_text.len() != SHA1_HEX_LEN {
        return Err(ParseIdError::Shape(whole.to_owned()));
    }
    let mut lo = [0u8; SHA1_LEN];
    hex::decode_to_slice(hex_text, &mut lo).map_err(|_| ParseIdError::NotHex(whole.to_owned()))?;
    Ok(lo)
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/{}", self.hi, self.lo_hex())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId(hi={:x}, lo={})", self.hi, self.lo_hex())
    }
}

impl FromStr for ContentId {
    type Err = ParseIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = text.split_once('/').ok_or_else(|| ParseIdError::Shape(text.to_owned()))?;
        Ok(ContentId::new(parse_hi(hi, text)?, parse_lo(lo, text)?))
    }
}

/// An inode number. The root directory is [`Ino::ROOT`]; numbers are never
/// reused within one data directory.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Ino(pub u64);

impl Ino {
    /// The root directory, as FUSE expects.
    pub const ROOT: Ino = Ino(1);

    /// The value stored in SQLite (`INTEGER` is signed).
    pub fn as_sql(self) -> i64 {
        self.0 as i64
    }

    /// The inverse of [`Ino::as_sql`].
    pub fn from_sql(v: i64) -> Ino {
        Ino(v as u64)
    }
}

impl fmt::Display for Ino {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A file handle issued by [`crate::fs::Fs::open_file`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Handle(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    const LO: &str = "8ac60ba76f1999a1ab70223f225aefdc78d4ddc0";

    #[test]
    fn canonical_form_round_trips() {
        let id: ContentId = format!("0000000000000001/{LO}").parse().unwrap();
        assert_eq!(id.hi, 1);
        assert_eq!(id.to_string(), format!("0000000000000001/{LO}"));
    }

    #[test]
    fn etag_omits_a_zero_collision_index() {
        let id = ContentId::from_etag(LO).unwrap();
        assert_eq!(id.etag(), format!("\"{LO}\""));
        let second = ContentId::new(1, id.lo);
        assert_eq!(second.etag(), format!("\"{LO}-0000000000000001\""));
        assert_eq!(ContentId::from_etag(&second.etag()).unwrap(), second);
    }

    #[test]
    fn malformed_ids_are_rejected() {
        assert!(matches!("".parse::<ContentId>(), Err(ParseIdError::Shape(_))));
        assert!(matches!(
            format!("000000000000000g/{LO}").parse::<ContentId>(),
            Err(ParseIdError::NotHex(_))
        ));
        assert!(ContentId::from_etag("\"abc\"").is_err());
        assert!(ContentId::from_etag(&format!("{LO}-1")).is_err());
    }
}
