//! dav-server's filesystem traits over the fs core.
//!
//! Every core call blocks (SQLite, file I/O), so each runs on tokio's
//! blocking pool. Paths arrive decoded from dav-server as bytes.

use std::fmt;
use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError as DavError, FsFuture,
    FsResult as DavResult, FsStream, OpenOptions, ReadDirMeta,
};
use futures_util::{FutureExt, StreamExt};
use http::StatusCode;
use std::future::Future;

use crate::fs::{
    Attr, Caller, FileKind, Fs, FsError, Identity, OpenFlags, Origin, Precondition, PutOptions, RenameFlags,
    Stager, Want, lock_key, system_time,
};
use crate::id::{ContentId, Ino};

/// Directory entries fetched per core call while listing.
const LIST_BATCH: u32 = 1024;
/// Bytes of a PUT body gathered before they are staged in one blocking
/// call.
const STAGE_PIECE: usize = 256 * 1024;

/// The tree, as dav-server sees it.
#[derive(Clone)]
pub struct DavFs {
    fs: Arc<Fs>,
    /// The request's own condition on what a PUT replaces, if it has one.
    put_guard: Option<PutGuard>,
    /// What a PUT's headers say of its body (mtime, checksum).
    claims: UploadClaims,
    /// The COPY or MOVE this filesystem serves, if any (see [`Transfer`]).
    transfer: Option<Transfer>,
    /// Whose permissions the request is checked against (`None`: the
    /// server's own, unchecked).
    who: Option<Arc<Identity>>,
}

/// One COPY or MOVE. A COPY's collections are made by `Fs::copy_dir`, so
/// they take their source's dead properties along. And where the copy or
/// rename itself replaces its destination in one commit (a file over a
/// file), dav-server's deletion of the destination first is left out: two
/// commits would leave the target missing in between (a reader's 404;
/// after a crash there, a "safe save" by PUT then MOVE would have lost the
/// file).
#[derive(Clone, Debug)]
pub enum Transfer {
    /// A COPY.
    Copy(TransferRoots),
    /// A MOVE.
    Move(TransferRoots),
}

/// The source and destination paths of a COPY or MOVE.
#[derive(Clone, Debug)]
pub struct TransferRoots {
    /// The request URI's path, decoded.
    pub from: Vec<u8>,
    /// The Destination header's path, decoded.
    pub to: Vec<u8>,
}

impl Transfer {
    /// Its paths.
    pub fn roots(&self) -> &TransferRoots {
        match self {
            Transfer::Copy(roots) | Transfer::Move(roots) => roots,
        }
    }

    /// Whether the transfer replaces `parent/name`, its destination, in
    /// one commit by itself: a rename replaces anything but a directory;
    /// `Fs::copy_file` puts a file (read through links) over a regular
    /// file.
    fn replaces(&self, fs: &Fs, parent: Ino, name: &[u8]) -> bool {
        match self {
            Transfer::Move(roots) => fs.resolve(&roots.from).is_ok_and(|s| s.kind != FileKind::Dir),
            Transfer::Copy(roots) => {
                fs.resolve_following(&roots.from).is_ok_and(|s| s.kind == FileKind::File)
                    && fs.lookup(parent, name).is_ok_and(|d| d.kind == FileKind::File)
            }
        }
    }
}

impl TransferRoots {
    /// The source of `dest`, if `dest` is the destination or below it.
    fn source_of(&self, dest: &[u8]) -> Option<Vec<u8>> {
        let rest = rest_below(lock_key(dest), lock_key(&self.to))?;
        Some([lock_key(&self.from), rest].concat())
    }

    /// Why the transfer must be refused whole (403) before dav-server
    /// starts on it, if it must. dav-server works member by member and
    /// deletes an overwritten destination first, which may hold the source
    /// (the root, a parent) or lie inside it; and a COPY into its own
    /// subtree doubles the tree each time it is repeated.
    pub fn overlap(&self) -> Option<&'static str> {
        let (source, destination) = (lock_key(&self.from), lock_key(&self.to));
        if source.is_empty() || destination.is_empty() {
            Some("the root collection cannot be copied, moved or overwritten")
        } else if source == destination {
            Some("the source and the destination are the same")
        } else if rest_below(destination, source).is_some() {
            Some("a collection cannot be copied or moved into itself")
        } else if rest_below(source, destination).is_some() {
            Some("the destination contains the source")
        } else {
            None
        }
    }
}

/// What follows `root` in `path` (both without trailing slashes) when
/// `path` is `root` or below it: empty, or starting with a slash.
fn rest_below<'p>(path: &'p [u8], root: &[u8]) -> Option<&'p [u8]> {
    let rest = path.strip_prefix(root)?;
    (rest.is_empty() || rest.starts_with(b"/")).then_some(rest)
}

/// What an upload's headers say of it, as ownCloud and Nextcloud clients
/// (and rclone with `vendor = nextcloud`) send them: `X-OC-Mtime`, the
/// modification time to keep (Unix seconds), and `OC-Checksum`, the
/// body's hash (`SHA1:<hex>`; other algorithms cannot be checked here and
/// are ignored). A body that does not match its SHA-1 is refused whole.
#[derive(Clone, Debug, Default)]
pub struct UploadClaims {
    /// The mtime to record, in ns since the epoch.
    pub mtime_ns: Option<i64>,
    /// The SHA-1 the body must have.
    pub sha1: Option<[u8; 20]>,
    mismatch: Arc<AtomicBool>,
}

impl UploadClaims {
    /// The claims of a request with `headers`; `Err` names a header that
    /// is there but malformed.
    pub fn of(headers: &http::HeaderMap) -> Result<UploadClaims, &'static str> {
        let mtime_ns = match headers.get("x-oc-mtime") {
            None => None,
            Some(value) => {
                Some(oc_mtime(value.as_bytes()).ok_or("X-OC-Mtime is not a time in Unix seconds")?)
            }
        };
        let sha1 = match headers.get("oc-checksum") {
            None => None,
            Some(value) => oc_sha1(value.as_bytes()).ok_or("OC-Checksum is not ALGORITHM:HEX")?,
        };
        Ok(UploadClaims { mtime_ns, sha1, mismatch: Arc::default() })
    }

    /// Whether the body did not match the checksum.
    pub fn mismatched(&self) -> bool {
        self.mismatch.load(Ordering::Acquire)
    }

    fn put_options(&self) -> PutOptions {
        PutOptions { mtime_ns: self.mtime_ns, expect_sha1: self.sha1, ..PutOptions::default() }
    }
}

/// `X-OC-Mtime`: Unix seconds, maybe with a fraction (some clients send
/// one); in ns.
fn oc_mtime(value: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let seconds: i64 = whole.parse().ok()?;
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = &fraction[..fraction.len().min(9)];
    let nanos: i64 = format!("{digits:0<9}").parse().ok()?;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The SHA-1 in an `OC-Checksum` value (`SHA1:<hex>`, maybe beside other
/// algorithms); `Some(None)` if it names none, `None` if malformed.
fn oc_sha1(value: &[u8]) -> Option<Option<[u8; 20]>> {
    let text = std::str::from_utf8(value).ok()?;
    let mut found = None;
    for item in text.split_ascii_whitespace() {
        let (algorithm, hex) = item.split_once(':')?;
        if algorithm.eq_ignore_ascii_case("sha1") {
            let mut sha1 = [0u8; 20];
            hex::decode_to_slice(hex, &mut sha1).ok()?;
            found = Some(sha1);
        }
    }
    Some(found)
}

/// A PUT's If-Match / If-None-Match, tested again inside the commit
/// transaction: dav-server tests them before the body arrives, which
/// leaves a window for another writer. `failed` tells the service to
/// answer 412, a status dav-server's file errors cannot carry.
#[derive(Clone)]
pub struct PutGuard {
    test: Arc<dyn Fn(Option<ContentId>) -> bool + Send + Sync>,
    failed: Arc<AtomicBool>,
}

impl PutGuard {
    /// A guard that lets the commit through when `test` holds for the
    /// target's current content (`None`: no such file).
    pub fn new(test: impl Fn(Option<ContentId>) -> bool + Send + Sync + 'static) -> PutGuard {
        PutGuard { test: Arc::new(test), failed: Arc::new(AtomicBool::new(false)) }
    }

    /// Whether the commit found the target changed.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

impl DavFs {
    /// Serve `fs` to `who` (`None`: unchecked, as the server itself).
    pub fn new(fs: Arc<Fs>, who: Option<Arc<Identity>>) -> Box<Self> {
        Box::new(DavFs { fs, put_guard: None, claims: UploadClaims::default(), transfer: None, who })
    }

    /// Serve `fs` for one PUT, which commits only under `guard` (if any)
    /// and does what `claims` ask.
    pub fn for_put(
        fs: Arc<Fs>,
        who: Option<Arc<Identity>>,
        guard: Option<PutGuard>,
        claims: UploadClaims,
    ) -> Box<Self> {
        Box::new(DavFs { fs, put_guard: guard, claims, transfer: None, who })
    }

    /// Serve `fs` for one COPY or MOVE request.
    pub fn transferring(fs: Arc<Fs>, who: Option<Arc<Identity>>, transfer: Transfer) -> Box<Self> {
        Box::new(DavFs {
            fs,
            put_guard: None,
            claims: UploadClaims::default(),
            transfer: Some(transfer),
            who,
        })
    }

    /// Whom what the request creates belongs to.
    fn caller(&self) -> Caller {
        caller_for(self.who.as_deref())
    }

    /// The metadata of `path` as `resolve` finds it, off the async workers.
    fn meta_at<'a>(&self, path: &DavPath, resolve: Resolver) -> FsFuture<'a, Box<dyn DavMetaData>> {
        let (fs, path, who) = (self.fs.clone(), path_bytes(path), self.who.clone());
        async move {
            let (ids, attr) = (fs.clone(), blocking(move || resolve(&fs, &path, who.as_deref())).await?);
            let meta: Box<dyn DavMetaData> = Box::new(Meta::lazy(attr, ids));
            Ok(meta)
        }
        .boxed()
    }

    /// Run `op` on the parent directory and final name of `path`, off the
    /// async workers.
    fn in_parent<'a, T: Send + 'static>(
        &self,
        path: &DavPath,
        op: impl FnOnce(&Fs, &Attr, &[u8]) -> Result<T, FsError> + Send + 'static,
    ) -> FsFuture<'a, T> {
        let (fs, path, who) = (self.fs.clone(), path_bytes(path), self.who.clone());
        blocking(move || {
            let (parent, name) = fs.resolve_parent_as(&path, who.as_deref())?;
            op(&fs, &parent, name)
        })
        .boxed()
    }
}

/// A path lookup for an identity (`Fs::resolve_as` and the like).
type Resolver = fn(&Fs, &[u8], Option<&Identity>) -> Result<Attr, FsError>;

/// Whom what a request of `who` creates belongs to.
pub(super) fn caller_for(who: Option<&Identity>) -> Caller {
    match who {
        Some(who) => Caller { uid: who.uid, gid: who.gid, origin: Origin::WebDav },
        None => Caller::process(Origin::WebDav),
    }
}

/// `who` may remove the entry `name` of `parent` (unlink, rmdir, or the
/// source or replaced destination of a rename).
fn require_removal(fs: &Fs, who: Option<&Identity>, parent: &Attr, name: &[u8]) -> Result<(), FsError> {
    let Some(who) = who else { return Ok(()) };
    let victim = fs.lookup(parent.ino, name)?;
    who.require_removal(parent, &victim)
}

/// `who` may add an entry to `parent`.
fn require_new_entry(who: Option<&Identity>, parent: &Attr) -> Result<(), FsError> {
    who.map_or(Ok(()), |who| who.require(parent, Want::CHANGE_ENTRIES))
}

/// `who` may have `want` of `node`.
fn require(who: Option<&Identity>, node: &Attr, want: Want) -> Result<(), FsError> {
    who.map_or(Ok(()), |who| who.require(node, want))
}

/// The one place core errors become dav-server's (and so HTTP statuses).
fn dav_error(e: FsError) -> DavError {
    match e {
        FsError::NotFound | FsError::NotDir => DavError::NotFound,
        FsError::Exists | FsError::NotEmpty | FsError::IsDir => DavError::Exists,
        FsError::NameTooLong => DavError::PathTooLong,
        FsError::TooBig => DavError::TooLarge,
        // Invalid: the request names something it cannot apply to (a PUT
        // of the root, a move into its own subtree): refused, not failed.
        FsError::ReadOnly | FsError::NotPermitted(_) | FsError::AccessDenied | FsError::Invalid(_) => {
            DavError::Forbidden
        }
        FsError::Loop => DavError::LoopDetected,
        FsError::Unsupported(_) => DavError::NotImplemented,
        // The service turns this into 412 (see `PutGuard`).
        FsError::PreconditionFailed => DavError::GeneralFailure,
        e if e.is_disk_full() => DavError::InsufficientStorage,
        FsError::LimitReached(what) => {
            tracing::warn!("webdav: {what}");
            DavError::InsufficientStorage
        }
        e => {
            tracing::warn!("webdav: {e}");
            DavError::GeneralFailure
        }
    }
}

/// The status dav-server answers for a core error (see [`dav_error`]),
/// for the requests we answer ourselves.
pub(super) fn status_of(e: FsError) -> StatusCode {
    match dav_error(e) {
        DavError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        DavError::Exists => StatusCode::METHOD_NOT_ALLOWED,
        DavError::NotFound => StatusCode::NOT_FOUND,
        DavError::Forbidden => StatusCode::FORBIDDEN,
        DavError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        DavError::LoopDetected => StatusCode::LOOP_DETECTED,
        DavError::PathTooLong => StatusCode::URI_TOO_LONG,
        DavError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        DavError::IsRemote => StatusCode::BAD_GATEWAY,
        DavError::GeneralFailure => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Run a blocking core call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> DavResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(dav_error),
        Err(e) => {
            tracing::error!("webdav: blocking task failed: {e}");
            Err(DavError::GeneralFailure)
        }
    }
}

fn path_bytes(path: &DavPath) -> Vec<u8> {
    path.as_bytes().to_vec()
}

/// Attributes of one inode, as dav-server's metadata.
#[derive(Clone)]
struct Meta(Attr, Option<Arc<Fs>>);

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Meta").field(&self.0).finish()
    }
}

impl Meta {
    /// Metadata whose content id, if its commit left it for later, is
    /// computed only when dav-server asks for the ETag (If headers): a
    /// partial update of a large file does not hash it whole first.
    fn lazy(attr: Attr, fs: Arc<Fs>) -> Meta {
        Meta(attr, Some(fs))
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }

    fn modified(&self) -> DavResult<SystemTime> {
        Ok(system_time(self.0.mtime_ns))
    }

    fn is_dir(&self) -> bool {
        self.0.kind == FileKind::Dir
    }

    fn is_symlink(&self) -> bool {
        self.0.kind == FileKind::Symlink
    }

    /// [`super::etag_of`] without its quotes: dav-server adds them.
    fn etag(&self) -> Option<String> {
        let attr = match &self.1 {
            Some(fs) if self.0.kind == FileKind::File && self.0.content.is_none() && self.0.size > 0 => {
                match tokio::task::block_in_place(|| fs.with_content_id(self.0.clone())) {
                    Ok(attr) => std::borrow::Cow::Owned(attr),
                    Err(e) => {
                        tracing::warn!("webdav: computing an ETag: {e}");
                        return None;
                    }
                }
            }
            _ => std::borrow::Cow::Borrowed(&self.0),
        };
        super::etag_of(&attr).map(|tag| tag.trim_matches('"').to_owned())
    }

    fn accessed(&self) -> DavResult<SystemTime> {
        Ok(system_time(self.0.atime_ns))
    }

    fn created(&self) -> DavResult<SystemTime> {
        Ok(system_time(self.0.btime_ns))
    }

    fn status_changed(&self) -> DavResult<SystemTime> {
        Ok(system_time(self.0.ctime_ns))
    }

    fn executable(&self) -> DavResult<bool> {
        Ok(self.0.perm & 0o100 != 0)
    }
}

struct Entry {
    name: Vec<u8>,
    attr: Attr,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.clone()
    }

    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(Meta(self.attr.clone(), None));
        futures_util::future::ready(Ok(meta)).boxed()
    }
}

impl DavFileSystem for DavFs {
    fn open<'a>(&'a self, path: &'a DavPath, options: OpenOptions) -> FsFuture<'a, Box<dyn DavFile>> {
        async move {
            let fs = self.fs.clone();
            let path = path_bytes(path);
            let who = self.who.clone();
            if options.write && !options.truncate {
                // A file that is not there yet is made whole (a LOCK's
                // empty file, an append to nothing).
                match open_for_patch(fs.clone(), path.clone(), options.clone(), who.clone()).await {
                    Err(DavError::NotFound) if options.create => {}
                    opened => return opened,
                }
            }
            if options.write {
                return open_for_put(fs, path, options, self.put_guard.clone(), self.claims.clone(), who)
                    .await;
            }
            let (handle, attr) = blocking(move || {
                let attr = fs.resolve_following_as(&path, who.as_deref())?;
                if attr.kind != FileKind::File {
                    return Err(FsError::IsDir);
                }
                require(who.as_deref(), &attr, Want::READ)?;
                let opened = fs.open_file(attr.ino, OpenFlags { read: true, ..OpenFlags::default() })?;
                Ok((opened.handle, fs.with_content_id(opened.attr)?))
            })
            .await?;
            let file = super::ReadHandle { fs: self.fs.clone(), handle };
            let file: Box<dyn DavFile> = Box::new(ReadFile { file, attr, pos: 0 });
            Ok(file)
        }
        .boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let fs = self.fs.clone();
            let path = path_bytes(path);
            let dir_path = path.clone();
            let who = self.who.clone();
            let dir = blocking(move || {
                let dir = fs.resolve_following_as(&path, who.as_deref())?;
                if dir.kind == FileKind::Dir {
                    require(who.as_deref(), &dir, Want::READ)?;
                }
                Ok(dir)
            })
            .await?;
            if dir.kind != FileKind::Dir {
                return Err(DavError::Forbidden);
            }
            let fs = self.fs.clone();
            // Pages of entries, each from one core call, streamed as they come.
            let pages = futures_util::stream::unfold(Some(0u64), move |cursor| {
                let (fs, dir_path) = (fs.clone(), dir_path.clone());
                async move {
                    let cursor = cursor?;
                    let rows = blocking(move || {
                        let mut rows = fs.readdir(dir.ino, cursor, LIST_BATCH)?;
                        for row in rows.iter_mut().filter(|r| r.inode.kind == FileKind::Symlink) {
                            if let Some(named) = followed_entry(&fs, &dir_path, &row.name) {
                                row.inode = named;
                            }
                        }
                        Ok(rows)
                    })
                    .await;
                    match rows {
                        Ok(rows) if rows.is_empty() => None,
                        Ok(rows) => {
                            let next = rows.last().map(|r| r.cursor);
                            let entries: Vec<DavResult<Box<dyn DavDirEntry>>> = rows
                                .into_iter()
                                .map(|r| {
                                    Ok(Box::new(Entry { name: r.name, attr: r.inode })
                                        as Box<dyn DavDirEntry>)
                                })
                                .collect();
                            Some((futures_util::stream::iter(entries), next))
                        }
                        Err(e) => Some((futures_util::stream::iter(vec![Err(e)]), None)),
                    }
                }
            });
            let stream: FsStream<Box<dyn DavDirEntry>> = Box::pin(pages.flatten());
            Ok(stream)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        self.meta_at(path, Fs::resolve_following_as)
    }

    /// The link itself, for what changes names (MOVE, DELETE).
    fn symlink_metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        self.meta_at(path, Fs::resolve_as)
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        let source = match &self.transfer {
            Some(Transfer::Copy(roots)) => roots.source_of(path.as_bytes()),
            _ => None,
        };
        let (caller, who) = (self.caller(), self.who.clone());
        self.in_parent(path, move |fs, parent, name| {
            require_new_entry(who.as_deref(), parent)?;
            let made = match source {
                Some(source) => {
                    let source = fs.resolve_as(&source, who.as_deref())?;
                    require(who.as_deref(), &source, Want::READ)?;
                    fs.copy_dir(source.ino, parent.ino, name, &caller)
                }
                None => fs.mkdir(parent.ino, name, 0o755, &caller),
            };
            made.map(|_| ())
        })
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        let (caller, who) = (self.caller(), self.who.clone());
        self.in_parent(path, move |fs, parent, name| {
            require_removal(fs, who.as_deref(), parent, name)?;
            fs.rmdir(parent.ino, name, &caller)
        })
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        // The transfer's destination: left to the transfer if it replaces
        // it in one commit.
        let transfer = self.transfer.clone().filter(|t| lock_key(&t.roots().to) == lock_key(path.as_bytes()));
        let (caller, who) = (self.caller(), self.who.clone());
        self.in_parent(path, move |fs, parent, name| {
            require_removal(fs, who.as_deref(), parent, name)?;
            if transfer.is_some_and(|t| t.replaces(fs, parent.ino, name)) {
                return Ok(());
            }
            fs.unlink(parent.ino, name, &caller)
        })
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        let fs = self.fs.clone();
        let (from, to) = (path_bytes(from), path_bytes(to));
        let (caller, who) = (self.caller(), self.who.clone());
        blocking(move || {
            let who = who.as_deref();
            let (parent, name) = fs.resolve_parent_as(&from, who)?;
            let (new_parent, new_name) = fs.resolve_parent_as(&to, who)?;
            require_removal(&fs, who, &parent, name)?;
            require_new_entry(who, &new_parent)?;
            match fs.lookup(new_parent.ino, new_name) {
                Ok(_) => require_removal(&fs, who, &new_parent, new_name)?,
                Err(FsError::NotFound) => {}
                Err(e) => return Err(e),
            }
            // A directory that moves to another parent changes its own
            // `..` entry.
            let moved = fs.lookup(parent.ino, name)?;
            if moved.kind == FileKind::Dir && parent.ino != new_parent.ino {
                require(who, &moved, Want::WRITE)?;
            }
            fs.rename(parent.ino, name, new_parent.ino, new_name, RenameFlags::default(), &caller)
        })
        .boxed()
    }

    fn have_props<'a>(
        &'a self,
        path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let (fs, path, who) = (self.fs.clone(), path_bytes(path), self.who.clone());
        blocking(move || fs.has_dead_props(fs.resolve_following_as(&path, who.as_deref())?.ino))
            .map(|r| r.unwrap_or(false))
            .boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let fs = self.fs.clone();
            let path = path_bytes(path);
            let changes: Vec<(String, Option<Vec<u8>>)> = patch
                .iter()
                .map(|(set, prop)| {
                    (clark_name(prop), if *set { Some(prop.xml.clone().unwrap_or_default()) } else { None })
                })
                .collect();
            let (caller, who) = (self.caller(), self.who.clone());
            blocking(move || {
                let node = fs.resolve_following_as(&path, who.as_deref())?;
                require(who.as_deref(), &node, Want::WRITE)?;
                fs.patch_dead_props(node.ino, &changes, &caller)
            })
            .await?;
            Ok(patch.into_iter().map(|(_, prop)| (StatusCode::OK, DavProp { xml: None, ..prop })).collect())
        }
        .boxed()
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let (fs, path, who) = (self.fs.clone(), path_bytes(path), self.who.clone());
            let props = blocking(move || readable_dead_props(&fs, &path, who.as_deref())).await?;
            Ok(props
                .into_iter()
                .map(|(name, xml)| {
                    let (namespace, local) = split_clark(&name);
                    DavProp {
                        name: local.to_owned(),
                        prefix: None,
                        namespace: namespace.map(str::to_owned),
                        xml: do_content.then_some(xml),
                    }
                })
                .collect())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let wanted = clark_name(&prop);
            let (fs, path, who) = (self.fs.clone(), path_bytes(path), self.who.clone());
            let props = blocking(move || readable_dead_props(&fs, &path, who.as_deref())).await?;
            props.into_iter().find(|(name, _)| *name == wanted).map(|(_, xml)| xml).ok_or(DavError::NotFound)
        }
        .boxed()
    }

    /// A file copy names the same content: no bytes move.
    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        let fs = self.fs.clone();
        let (from, to) = (path_bytes(from), path_bytes(to));
        let (caller, who) = (self.caller(), self.who.clone());
        blocking(move || {
            let who = who.as_deref();
            let source = fs.resolve_following_as(&from, who)?;
            require(who, &source, Want::READ)?;
            let (parent, name) = fs.resolve_parent_as(&to, who)?;
            match fs.lookup(parent.ino, name) {
                Ok(existing) => require(who, &existing, Want::WRITE)?,
                Err(FsError::NotFound) => require_new_entry(who, &parent)?,
                Err(e) => return Err(e),
            }
            fs.copy_file(source.ino, parent.ino, name, &caller).map(|_| ())
        })
        .boxed()
    }
}

/// The dead properties of `path`, which, like extended attributes on
/// the mount, only those who may read the resource may read.
fn readable_dead_props(
    fs: &Fs,
    path: &[u8],
    who: Option<&Identity>,
) -> Result<Vec<(String, Vec<u8>)>, FsError> {
    let node = fs.resolve_following_as(path, who)?;
    require(who, &node, Want::READ)?;
    fs.dead_props(node.ino)
}

/// What the symlink `name` in directory `dir` (a path) names, when that
/// is in the tree: a listing shows a link as what it names, as GET serves
/// it. `None` for a link that names nothing here (it stays a link).
pub(super) fn followed_entry(fs: &Fs, dir: &[u8], name: &[u8]) -> Option<Attr> {
    let mut path = dir.to_vec();
    path.push(b'/');
    path.extend_from_slice(name);
    fs.resolve_following(&path).ok()
}

/// A property's name in Clark notation, `{namespace}local`, as stored.
fn clark_name(prop: &DavProp) -> String {
    format!("{{{}}}{}", prop.namespace.as_deref().unwrap_or(""), prop.name)
}

/// The namespace (if any) and local name of a Clark-notation name.
fn split_clark(name: &str) -> (Option<&str>, &str) {
    match name.strip_prefix('{').and_then(|rest| rest.split_once('}')) {
        Some(("", local)) => (None, local),
        Some((namespace, local)) => (Some(namespace), local),
        None => (None, name),
    }
}

/// A file open for reading: one core handle, read at a position.
struct ReadFile {
    file: super::ReadHandle,
    attr: Attr,
    pos: u64,
}

impl fmt::Debug for ReadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadFile").field("handle", &self.file.handle).field("pos", &self.pos).finish()
    }
}

impl DavFile for ReadFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let meta: Box<dyn DavMetaData> = Box::new(Meta(self.attr.clone(), None));
        futures_util::future::ready(Ok(meta)).boxed()
    }

    fn write_buf(&mut self, _buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        futures_util::future::ready(Err(DavError::Forbidden)).boxed()
    }

    fn write_bytes(&mut self, _buf: Bytes) -> FsFuture<'_, ()> {
        futures_util::future::ready(Err(DavError::Forbidden)).boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            let (fs, handle, pos) = (self.file.fs.clone(), self.file.handle, self.pos);
            let size = u32::try_from(count).unwrap_or(u32::MAX);
            let data = blocking(move || fs.read(handle, pos, size)).await?;
            self.pos += data.len() as u64;
            Ok(Bytes::from(data))
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let target = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.attr.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let result = match target {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(DavError::GeneralFailure),
        };
        futures_util::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// A PUT in progress: the body is staged piece by piece as it arrives,
/// each piece written on the blocking pool, so a client that stops
/// sending holds no thread; `flush` checks the byte count and commits
/// atomically. Dropped without `flush` (client gone, or silent too long),
/// nothing is published and the staged bytes go.
struct PutFile {
    fs: Arc<Fs>,
    target: PutTarget,
    caller: Caller,
    /// `None` while a piece is being written, or once committed.
    stager: Option<Stager>,
    /// Received, not yet staged.
    buffered: Vec<u8>,
    expected: Option<u64>,
    received: u64,
    /// Why staging failed, once it has: answered when the body is in.
    failure: Option<DavError>,
    attr: Option<Attr>,
    claims: UploadClaims,
}

/// What a [`PutFile`] writes when its body is complete.
enum PutTarget {
    /// Create or replace `parent/name`, under the request's own condition
    /// if it has one (PUT).
    Whole { parent: Ino, name: Vec<u8>, guard: Option<PutGuard> },
    /// Write into the existing file `ino` at `offset`, or at its end
    /// (`None`): a PATCH with `X-Update-Range`, or a PUT with
    /// `Content-Range`.
    Range { ino: Ino, offset: Option<u64> },
}

impl fmt::Debug for PutFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutFile").field("expected", &self.expected).field("received", &self.received).finish()
    }
}

async fn open_for_put(
    fs: Arc<Fs>,
    path: Vec<u8>,
    options: OpenOptions,
    guard: Option<PutGuard>,
    claims: UploadClaims,
    who: Option<Arc<Identity>>,
) -> DavResult<Box<dyn DavFile>> {
    let check_fs = fs.clone();
    let check_path = path.clone();
    let caller = caller_for(who.as_deref());
    let (parent, name, stager) = blocking(move || {
        let who = who.as_deref();
        let (parent, name) = check_fs.resolve_parent_as(&check_path, who)?;
        let name = name.to_vec();
        match check_fs.lookup(parent.ino, &name) {
            Ok(existing) if existing.kind != FileKind::File => return Err(FsError::IsDir),
            Ok(_) if options.create_new => return Err(FsError::Exists),
            Err(FsError::NotFound) if !options.create && !options.create_new => {
                return Err(FsError::NotFound);
            }
            Ok(existing) => require(who, &existing, Want::WRITE)?,
            Err(FsError::NotFound) => require_new_entry(who, &parent)?,
            Err(e) => return Err(e),
        }
        Ok((parent.ino, name, check_fs.stager()?))
    })
    .await?;
    Ok(PutFile::boxed(fs, PutTarget::Whole { parent, name, guard }, caller, stager, options.size, claims))
}

/// A partial update of an existing file (sabredav-partialupdate PATCH,
/// or PUT with Content-Range): staged as a PUT body is, then written into
/// the file in one commit.
async fn open_for_patch(
    fs: Arc<Fs>,
    path: Vec<u8>,
    options: OpenOptions,
    who: Option<Arc<Identity>>,
) -> DavResult<Box<dyn DavFile>> {
    let check_fs = fs.clone();
    let caller = caller_for(who.as_deref());
    let (ino, stager) = blocking(move || {
        let target = check_fs.resolve_following_as(&path, who.as_deref())?;
        if target.kind != FileKind::File {
            return Err(FsError::IsDir);
        }
        require(who.as_deref(), &target, Want::WRITE)?;
        Ok((target.ino, check_fs.stager()?))
    })
    .await?;
    let offset = if options.append { None } else { Some(0) };
    Ok(PutFile::boxed(
        fs,
        PutTarget::Range { ino, offset },
        caller,
        stager,
        options.size,
        UploadClaims::default(),
    ))
}

impl PutFile {
    /// A body of `expected` bytes (if told) for `target`, not yet received.
    fn boxed(
        fs: Arc<Fs>,
        target: PutTarget,
        caller: Caller,
        stager: Stager,
        expected: Option<u64>,
        claims: UploadClaims,
    ) -> Box<dyn DavFile> {
        Box::new(PutFile {
            fs,
            target,
            caller,
            stager: Some(stager),
            buffered: Vec::new(),
            expected,
            received: 0,
            failure: None,
            attr: None,
            claims,
        })
    }

    async fn send(&mut self, bytes: Bytes) -> DavResult<()> {
        self.received += bytes.len() as u64;
        if self.failure.is_some() {
            return Ok(());
        }
        self.buffered.extend_from_slice(&bytes);
        if self.buffered.len() >= STAGE_PIECE
            && let Err(e) = self.stage_buffered().await
        {
            // The rest of the body is read and dropped, and the failure
            // answered once it is in: a server that answers and closes
            // while the client still sends resets the connection, and
            // the client never sees the answer (507 for a full disk).
            self.failure = Some(e);
            self.stager = None;
            self.buffered = Vec::new();
        }
        Ok(())
    }

    /// Write what is buffered to the stager, off the async workers.
    async fn stage_buffered(&mut self) -> DavResult<()> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let mut stager = self.stager.take().ok_or(DavError::GeneralFailure)?;
        let (fs, piece) = (self.fs.clone(), std::mem::take(&mut self.buffered));
        let (stager, piece) = blocking(move || stager.write(&fs, &piece).map(|()| (stager, piece))).await?;
        self.stager = Some(stager);
        // The buffer is used again for the next piece.
        self.buffered = piece;
        self.buffered.clear();
        Ok(())
    }

    async fn finish(&mut self) -> DavResult<Attr> {
        if let Some(attr) = &self.attr {
            return Ok(attr.clone());
        }
        if let Some(failure) = self.failure {
            return Err(failure);
        }
        if self.expected.is_some_and(|n| n != self.received) {
            tracing::info!(
                "webdav: PUT body had {} of {} bytes; nothing published",
                self.received,
                self.expected.unwrap_or(0)
            );
            self.stager = None;
            return Err(DavError::GeneralFailure);
        }
        self.stage_buffered().await?;
        let stager = self.stager.take().ok_or(DavError::GeneralFailure)?;
        let (fs, caller) = (self.fs.clone(), self.caller);
        let attr = match &self.target {
            PutTarget::Whole { parent, name, guard } => {
                let (parent, name, guard, claims) =
                    (*parent, name.clone(), guard.clone(), self.claims.clone());
                blocking(move || {
                    let staged = stager.finish(&fs)?;
                    let precondition = guard.as_ref().map(|guard| &*guard.test as Precondition<'_>);
                    let options = claims.put_options();
                    let put = fs.put_staged(parent, &name, staged, options, &caller, precondition);
                    match (&guard, &put) {
                        (Some(guard), Err(FsError::PreconditionFailed)) => {
                            guard.failed.store(true, Ordering::Release)
                        }
                        (_, Err(FsError::ChecksumMismatch)) => claims.mismatch.store(true, Ordering::Release),
                        _ => {}
                    }
                    put
                })
                .await?
            }
            PutTarget::Range { ino, offset } => {
                let (ino, offset) = (*ino, *offset);
                // The new ETag is left to be computed when asked for: a
                // large file is not hashed whole at every partial update.
                blocking(move || fs.patch(ino, offset, stager.finish(&fs)?, &caller)).await?
            }
        };
        self.attr = Some(attr.clone());
        Ok(attr)
    }
}

impl DavFile for PutFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let attr = self.finish().await?;
            let meta: Box<dyn DavMetaData> = Box::new(Meta(attr, None));
            Ok(meta)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        async move {
            let bytes = buf.copy_to_bytes(buf.remaining());
            self.send(bytes).await
        }
        .boxed()
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move { self.send(buf).await }.boxed()
    }

    fn read_bytes(&mut self, _count: usize) -> FsFuture<'_, Bytes> {
        futures_util::future::ready(Err(DavError::Forbidden)).boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        // A body is written front to back; a partial update says first
        // where it goes (ignored when it appends).
        let result = match (pos, &mut self.target) {
            (SeekFrom::Current(0), _) | (SeekFrom::Start(0), PutTarget::Whole { .. })
                if self.received == 0 =>
            {
                Ok(0)
            }
            (SeekFrom::Current(0), _) => Ok(self.received),
            (SeekFrom::Start(at), PutTarget::Range { offset, .. }) if self.received == 0 => {
                if let Some(offset) = offset {
                    *offset = at;
                }
                Ok(at)
            }
            _ => Err(DavError::NotImplemented),
        };
        futures_util::future::ready(result).boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move { self.finish().await.map(|_| ()) }.boxed()
    }
}
