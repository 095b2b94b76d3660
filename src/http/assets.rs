//! What GET and HEAD need, kept in memory: path → the file's committed
//! version (content id, size, time, ready-made header values), and small
//! contents' bytes by content id.
//!
//! Bytes by content id never go stale: a content id names one sequence of
//! bytes forever. Paths do: every committed change (from any frontend)
//! empties the path map through a change-event subscriber, before the
//! committing call returns. A lookup that raced a change must not put
//! back what the change removed, so lookups carry the map's generation
//! and only insert if no change came in between.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use parking_lot::RwLock;

use crate::fs::{Attr, FileKind, Fs, FsError, system_time};
use crate::id::ContentId;

/// Contents up to this size are kept in memory once read (then a
/// response is a reference to them, not a read).
pub(super) const SMALL_CONTENT: u64 = 4 << 20;
/// Memory for small contents, in bytes.
const CONTENT_MEMORY: u64 = 256 << 20;
/// Paths remembered before the map starts over.
const MAX_PATHS: usize = 65_536;

/// One file's committed version, with its header values made once.
#[derive(Debug)]
pub(super) struct Asset {
    pub content: ContentId,
    pub size: u64,
    /// The file's mtime; `None` for a bare content id (by-hash URLs).
    pub modified: Option<SystemTime>,
    /// `"<sha1>"` or `"<sha1>-<hi>"`.
    pub etag: headers::ETag,
    pub etag_value: HeaderValue,
    pub last_modified: Option<HeaderValue>,
    pub content_type: HeaderValue,
    /// The file's mode and those of the directories its path goes
    /// through, for permission checks without another lookup (the path
    /// map is emptied by every change, chmod included).
    pub access: Option<(crate::fs::Attr, Vec<crate::fs::Mode>)>,
}

impl Asset {
    /// The asset for file `attr` named `name` (the name gives the type).
    pub(super) fn new(attr: &Attr, name: &[u8]) -> Option<Asset> {
        let mut asset = Asset::of_content(attr.content_id()?, attr.size, name)?;
        let modified = system_time(attr.mtime_ns);
        asset.modified = Some(modified);
        asset.last_modified = HeaderValue::from_str(&httpdate::fmt_http_date(modified)).ok();
        Some(asset)
    }

    /// Its variant in `encoding` (of `size` bytes): the same resource,
    /// another representation, so its own strong ETag `"<id>-<encoding>"`.
    pub(super) fn variant(&self, encoding: &str, size: u64) -> Asset {
        let tag = format!("\"{}-{encoding}\"", self.content.etag_tag());
        Asset {
            content: self.content,
            size,
            modified: self.modified,
            etag: tag.parse().unwrap_or_else(|_| self.etag.clone()),
            etag_value: HeaderValue::from_str(&tag).unwrap_or_else(|_| self.etag_value.clone()),
            last_modified: self.last_modified.clone(),
            content_type: self.content_type.clone(),
            access: self.access.clone(),
        }
    }

    /// The asset for content `id` of `size` bytes, typed by `name`.
    pub(super) fn of_content(id: ContentId, size: u64, name: &[u8]) -> Option<Asset> {
        let tag = id.etag();
        Some(Asset {
            content: id,
            size,
            modified: None,
            etag: tag.parse().ok()?,
            etag_value: HeaderValue::from_str(&tag).ok()?,
            last_modified: None,
            content_type: content_type(name),
            access: None,
        })
    }
}

/// The media type for a file name, by its extension.
pub(super) fn content_type(name: &[u8]) -> HeaderValue {
    let guess = mime_guess::from_path(String::from_utf8_lossy(name).as_ref()).first_or_octet_stream();
    HeaderValue::from_str(guess.essence_str()).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// What a lookup found.
pub(super) enum Found {
    File(Arc<Asset>),
    /// A collection or other non-file: not ours to serve.
    NotAFile,
    Missing,
}

#[derive(Clone)]
struct BytesWeight;

impl quick_cache::Weighter<ContentId, Bytes> for BytesWeight {
    fn weight(&self, _id: &ContentId, bytes: &Bytes) -> u64 {
        bytes.len() as u64 + 64
    }
}

/// The caches of one server.
pub(super) struct Assets {
    fs: Arc<Fs>,
    paths: Arc<RwLock<HashMap<Vec<u8>, Arc<Asset>>>>,
    generation: Arc<AtomicU64>,
    contents: quick_cache::sync::Cache<ContentId, Bytes, BytesWeight>,
}

impl Assets {
    /// Caches for `fs`, emptied of paths on every change it commits.
    pub(super) fn new(fs: Arc<Fs>) -> Assets {
        let paths: Arc<RwLock<HashMap<Vec<u8>, Arc<Asset>>>> = Arc::default();
        let generation = Arc::new(AtomicU64::new(0));
        let (subscriber_paths, subscriber_generation) = (paths.clone(), generation.clone());
        fs.subscribe(move |_change| {
            let mut paths = subscriber_paths.write();
            subscriber_generation.fetch_add(1, Ordering::AcqRel);
            paths.clear();
        });
        let contents = quick_cache::sync::Cache::with_weighter(4096, CONTENT_MEMORY, BytesWeight);
        Assets { fs, paths, generation, contents }
    }

    pub(super) fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    /// The committed file at `path` (decoded), from memory when possible.
    pub(super) async fn lookup(&self, path: &[u8]) -> Result<Found, FsError> {
        if let Some(asset) = self.paths.read().get(path) {
            self.fs.metrics().asset_lookup(true);
            return Ok(Found::File(asset.clone()));
        }
        self.fs.metrics().asset_lookup(false);
        let generation = self.generation.load(Ordering::Acquire);
        let (fs, owned) = (self.fs.clone(), path.to_vec());
        let found = blocking(move || {
            let (attr, walked) = fs.resolve_committed_walked(&owned)?;
            Ok((fs.with_content_id(attr)?, walked))
        });
        let (attr, walked) = match found.await {
            Ok(found) => found,
            Err(FsError::NotFound | FsError::NotDir | FsError::NameTooLong) => return Ok(Found::Missing),
            Err(e) => return Err(e),
        };
        if attr.kind != FileKind::File {
            return Ok(Found::NotAFile);
        }
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let Some(mut asset) = Asset::new(&attr, name) else { return Ok(Found::NotAFile) };
        asset.access = Some((attr, walked));
        let asset = Arc::new(asset);
        let mut paths = self.paths.write();
        if self.generation.load(Ordering::Acquire) == generation {
            if paths.len() >= MAX_PATHS {
                paths.clear();
            }
            paths.insert(path.to_vec(), asset.clone());
        }
        Ok(Found::File(asset))
    }

    /// Forget `path` (its object turned out to be gone).
    pub(super) fn forget(&self, path: &[u8]) {
        self.paths.write().remove(path);
    }

    /// All bytes of small content `id`, read once however many ask at
    /// the same time.
    pub(super) async fn small_content(&self, id: ContentId) -> Result<Bytes, FsError> {
        let fs = self.fs.clone();
        self.contents
            .get_or_insert_async(&id, async move {
                blocking(move || Ok(Bytes::from(fs.read_content(&id)?))).await
            })
            .await
    }

    /// Content `id`, open for reading.
    pub(super) async fn open(&self, id: ContentId) -> Result<Arc<crate::fs::ContentFile>, FsError> {
        let fs = self.fs.clone();
        blocking(move || fs.open_content(&id).map(Arc::new)).await
    }
}

/// Run a blocking core call off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> Result<T, FsError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => {
            tracing::error!("http: blocking task failed: {e}");
            Err(FsError::Internal("a blocking task failed"))
        }
    }
}
