//! The one error type of the fs core. Frontends map it in one place each:
//! to an errno for FUSE, to an HTTP status for WebDAV.

use crate::meta::MetaError;
use crate::store::StoreError;

/// Why an fs core operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such file, directory or handle target.
    #[error("no such file or directory")]
    NotFound,
    /// The name is taken.
    #[error("file exists")]
    Exists,
    /// A directory was needed.
    #[error("not a directory")]
    NotDir,
    /// A non-directory was needed.
    #[error("is a directory")]
    IsDir,
    /// The directory has entries.
    #[error("directory not empty")]
    NotEmpty,
    /// A name component is longer than [`super::NAME_MAX`] bytes.
    #[error("file name too long")]
    NameTooLong,
    /// The request makes no sense (bad name, rename into own subtree...).
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    /// The operation is not permitted on this object.
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    /// The mode bits do not grant the caller this access.
    #[error("permission denied")]
    AccessDenied,
    /// The handle is unknown or not open for this kind of access.
    #[error("bad file handle")]
    BadHandle,
    /// No such extended attribute.
    #[error("no such attribute")]
    NoAttr,
    /// The value does not fit the caller's buffer or a limit.
    #[error("value out of range")]
    Range,
    /// The file would exceed the largest supported size.
    #[error("file too large")]
    TooBig,
    /// Not supported by tsmfs.
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    /// The file system was opened read-only.
    #[error("read-only file system")]
    ReadOnly,
    /// A symlink was found where a path must resolve through directories.
    #[error("too many levels of symbolic links")]
    Loop,
    /// A conditional write found the target changed (see `Fs::put_if`).
    #[error("precondition failed: the file changed")]
    PreconditionFailed,
    /// A limit on what clients may accumulate (e.g. locks) was reached.
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
    /// Writes pending on the file were discarded because a commit failed
    /// (for another handle, or this one earlier). Every handle open for
    /// writing at the time hears of it once, at its next flush, fsync or
    /// close, as Linux reports a writeback error to each open descriptor.
    #[error("pending writes were lost: {}", if *disk_full { "the disk was full" } else { "a commit failed" })]
    WritesLost {
        /// Whether the commit failed for want of space.
        disk_full: bool,
    },
    /// Bytes did not hash to the checksum their sender gave with them.
    #[error("the bytes do not match the checksum sent with them")]
    ChecksumMismatch,
    /// The file kept changing while its content id was computed: ask
    /// again.
    #[error("the file kept changing; try again")]
    Retry,
    /// Something in tsmfs itself failed (a worker task died).
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metadata database failed.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl FsError {
    /// Whether the failure is a full disk (ENOSPC / SQLITE_FULL).
    pub fn is_disk_full(&self) -> bool {
        match self {
            FsError::Store(e) => e.raw_os_error() == Some(libc::ENOSPC),
            FsError::Meta(e) => e.is_disk_full(),
            FsError::WritesLost { disk_full } => *disk_full,
            _ => false,
        }
    }
}

/// Result of fs core operations.
pub type FsResult<T> = Result<T, FsError>;
