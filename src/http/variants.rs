//! Compressed variants (br, gzip) of compressible contents, made once per
//! content id and kept in the content store beside the object.
//!
//! Stampede-safe: the first request that finds a variant missing queues
//! its computation and is served the identity body, like every other
//! request until the variant is ready. No request ever waits for a
//! compression, and only one runs per content and encoding.
//!
//! Bounded: compressions run on [`COMPRESSORS`] threads of their own
//! (never more at once, whatever the requests), from a queue of at most
//! [`QUEUE`] (past it, a request is served identity and the variant is
//! asked for again later), reading the content in pieces into a streaming
//! encoder. Freed memory goes back to the system after each burst.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use parking_lot::Mutex;

use crate::fs::Fs;
use crate::id::ContentId;

/// Contents smaller than this are sent as they are.
const MIN_SIZE: u64 = 256;
/// Contents larger than this are sent as they are (compressing them once
/// would hold a blocking thread too long).
const MAX_SIZE: u64 = 16 << 20;
/// Memory for variants' bytes.
const VARIANT_MEMORY: u64 = 128 << 20;
/// Compressions at once: one core's worth, so serving keeps the others.
const COMPRESSORS: usize = 1;
/// Variants waiting to be made.
const QUEUE: usize = 256;
/// Bytes of content read per piece while compressing.
const PIECE: usize = 256 * 1024;
/// Contents up to this size get brotli's densest quality (11); larger
/// ones a quality several times faster and lighter (5).
const DENSEST_UP_TO: u64 = 1 << 20;

/// A content coding we produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    /// The coding's name in headers, ETags and the store.
    pub(super) fn name(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    /// Compress all of `input` (`len` bytes), read piece by piece.
    fn compress(self, input: &mut dyn std::io::Read, len: u64) -> std::io::Result<Vec<u8>> {
        let out = Vec::with_capacity((len / 4) as usize);
        match self {
            Encoding::Brotli => {
                let quality = if len <= DENSEST_UP_TO { 11 } else { 5 };
                let mut encoder = brotli::CompressorWriter::new(out, PIECE, quality, 22);
                std::io::copy(input, &mut encoder)?;
                // Finishes the stream.
                Ok(encoder.into_inner())
            }
            Encoding::Gzip => {
                let level = if len <= DENSEST_UP_TO {
                    flate2::Compression::best()
                } else {
                    flate2::Compression::new(6)
                };
                let mut encoder = flate2::write::GzEncoder::new(out, level);
                std::io::copy(input, &mut encoder)?;
                encoder.finish()
            }
        }
    }
}

/// A content read front to back, for an encoder.
struct ContentReader {
    file: crate::fs::ContentFile,
    at: u64,
}

impl std::io::Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The coding to send for a request's Accept-Encoding: br, else gzip,
/// among those it accepts (RFC 9110, 12.5.3: `q=0` refuses, `*` stands
/// for codings not named).
pub(super) fn choose(headers: &HeaderMap) -> Option<Encoding> {
    let mut accepted: Vec<(&str, f32)> = Vec::new();
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            accepted.push((coding, q));
        }
    }
    let quality = |name: &str| {
        accepted
            .iter()
            .find(|(coding, _)| coding.eq_ignore_ascii_case(name))
            .or_else(|| accepted.iter().find(|(coding, _)| *coding == "*"))
            .map_or(0.0, |(_, q)| *q)
    };
    [Encoding::Brotli, Encoding::Gzip].into_iter().filter(|e| quality(e.name()) > 0.0).max_by(|a, b| {
        // Equal preference: br, the denser, wins (listed first).
        quality(a.name()).total_cmp(&quality(b.name())).then(std::cmp::Ordering::Greater)
    })
}

/// Whether contents of this type and size get variants.
pub(super) fn compressible(content_type: &HeaderValue, size: u64) -> bool {
    if !(MIN_SIZE..=MAX_SIZE).contains(&size) {
        return false;
    }
    let Ok(essence) = content_type.to_str() else { return false };
    essence.starts_with("text/")
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/manifest+json"
                | "application/wasm"
                | "image/svg+xml"
        )
}

#[derive(Clone)]
struct BytesWeight;

impl quick_cache::Weighter<(ContentId, Encoding), Bytes> for BytesWeight {
    fn weight(&self, _key: &(ContentId, Encoding), bytes: &Bytes) -> u64 {
        bytes.len() as u64 + 64
    }
}

/// Variants of one server: ready ones in memory, the ones being made.
pub(super) struct Variants {
    fs: Arc<Fs>,
    /// Ready variants; empty bytes: the variant would not be smaller.
    ready: quick_cache::sync::Cache<(ContentId, Encoding), Bytes, BytesWeight>,
    making: Mutex<HashSet<(ContentId, Encoding)>>,
    /// Variants to make, for the compressor threads.
    queue: crossbeam_channel::Sender<(ContentId, Encoding)>,
    stats: Arc<super::Stats>,
}

impl Variants {
    pub(super) fn new(fs: Arc<Fs>, stats: Arc<super::Stats>) -> Arc<Variants> {
        let (queue, jobs) = crossbeam_channel::bounded(QUEUE);
        let variants = Arc::new(Variants {
            fs,
            ready: quick_cache::sync::Cache::with_weighter(4096, VARIANT_MEMORY, BytesWeight),
            making: Mutex::new(HashSet::new()),
            queue,
            stats,
        });
        for _ in 0..COMPRESSORS {
            // A weak reference: the threads end with the server.
            let (variants, jobs) = (Arc::downgrade(&variants), jobs.clone());
            let spawned = std::thread::Builder::new()
                .name("tsmfs-compress".into())
                .spawn(move || compress_jobs(&variants, &jobs));
            if let Err(e) = spawned {
                tracing::warn!("http: no compressor thread ({e}); files are sent uncompressed");
            }
        }
        variants
    }

    /// The variant `encoding` of `id`, if ready; otherwise `None` at once,
    /// and the variant is loaded or made in the background (once).
    pub(super) fn get(self: &Arc<Self>, id: ContentId, encoding: Encoding) -> Option<Bytes> {
        let key = (id, encoding);
        if let Some(bytes) = self.ready.get(&key) {
            return (!bytes.is_empty()).then_some(bytes);
        }
        if !self.making.lock().insert(key) {
            return None;
        }
        if self.queue.try_send(key).is_err() {
            // Too many waiting: asked for again by a later request.
            self.making.lock().remove(&key);
        }
        None
    }

    /// Blocking: make one queued variant.
    fn make(&self, (id, encoding): (ContentId, Encoding)) {
        match self.load_or_make(id, encoding) {
            Ok(bytes) => self.ready.insert((id, encoding), bytes),
            Err(e) => tracing::warn!("http: variant {} of {}: {e}", encoding.name(), id.etag_tag()),
        }
        self.making.lock().remove(&(id, encoding));
    }

    /// Blocking: the stored variant, or a new one, compressed and stored.
    fn load_or_make(&self, id: ContentId, encoding: Encoding) -> Result<Bytes, Box<dyn std::error::Error>> {
        if let Some(bytes) = self.fs.variant(&id, encoding.name())? {
            return Ok(Bytes::from(bytes));
        }
        let file = self.fs.open_content(&id)?;
        let len = file.len();
        self.stats.compressions.fetch_add(1, Ordering::Relaxed);
        let mut compressed = encoding.compress(&mut ContentReader { file, at: 0 }, len)?;
        if compressed.len() as u64 >= len {
            // Not worth it: remembered as empty, sent as identity.
            compressed.clear();
        }
        if let Err(e) = self.fs.store_variant(&id, encoding.name(), &compressed) {
            // Served from memory all the same; made again after a restart.
            tracing::warn!("http: storing variant {} of {}: {e}", encoding.name(), id.etag_tag());
        }
        Ok(Bytes::from(compressed))
    }
}

/// A compressor thread: makes queued variants until the server goes.
fn compress_jobs(
    variants: &std::sync::Weak<Variants>,
    jobs: &crossbeam_channel::Receiver<(ContentId, Encoding)>,
) {
    while let Ok(job) = jobs.recv() {
        let Some(variants) = variants.upgrade() else { return };
        variants.make(job);
        drop(variants);
        if jobs.is_empty() {
            give_back_freed_memory();
        }
    }
}

/// Return the heap an encoder freed to the system: glibc keeps freed
/// memory of large compressions mapped otherwise (hundreds of MB after a
/// burst of them).
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it has no other effect.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<Encoding> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(value).unwrap());
        choose(&headers)
    }

    #[test]
    fn accept_encoding_picks_br_then_gzip_and_honours_q() {
        assert_eq!(accept("gzip, deflate, br"), Some(Encoding::Brotli));
        assert_eq!(accept("gzip"), Some(Encoding::Gzip));
        assert_eq!(accept("br;q=0.5, gzip"), Some(Encoding::Gzip));
        assert_eq!(accept("br;q=0, gzip;q=0"), None);
        assert_eq!(accept("identity"), None);
        assert_eq!(accept("*"), Some(Encoding::Brotli));
        assert_eq!(accept("*;q=0.1, gzip;q=0.2"), Some(Encoding::Gzip));
        assert_eq!(accept("GZIP;Q=1"), Some(Encoding::Gzip));
        assert_eq!(choose(&HeaderMap::new()), None);
    }

    #[test]
    fn variants_round_trip() {
        let text = b"body { color: teal } ".repeat(200);
        let br = Encoding::Brotli.compress(&mut &text[..], text.len() as u64).unwrap();
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
        assert_eq!(back, text);
        let gz = Encoding::Gzip.compress(&mut &text[..], text.len() as u64).unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, text);
        assert!(br.len() < text.len() / 10 && gz.len() < text.len() / 10);
    }
}
