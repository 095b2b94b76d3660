//! GET and HEAD of files, answered by us (collections go to dav-server's
//! HTML index): the static-asset fast path. RFC 9110 in full:
//! preconditions in the order of 13.2.2, If-Range, single and multiple
//! byte ranges, 416; a 304 carries the headers the 200 would.
//!
//! HTTP serves committed versions only. The path's version comes from
//! memory when it can (`assets`), small contents' bytes too; larger ones
//! are read from their object file, opened once, so a response is one
//! version from its first byte to its last even while the file is
//! replaced.

use std::sync::Arc;

use bytes::Bytes;
use headers::HeaderMapExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::assets::{Asset, Assets, Found, SMALL_CONTENT, blocking};
use super::variants;
use super::{ResponseBody, empty_body, full_body};
use crate::fs::{FsError, Identity, Want};

/// Bytes per read of an object file while streaming a body.
const PIECE: usize = 512 * 1024;
/// More ranges than this in one request are answered with the whole file
/// (RFC 9110, 14.2 lets a server ignore Range; many tiny ranges are a
/// known amplification trick).
const MAX_RANGES: usize = 64;

/// The outcome of looking at a request for a file.
pub(super) enum Get {
    /// Answered.
    Done(Response<ResponseBody>),
    /// Not a regular file: dav-server's turn (HTML index, errors).
    NotAFile(Request<hyper::body::Incoming>),
}

/// Immutable URLs: `/.tsmfs/by-hash/<etag>` (optionally followed by
/// `/<name>`, which only sets the Content-Type) serves that content.
pub(super) const BY_HASH: &[u8] = b"/.tsmfs/by-hash/";

/// Files holding a content looked at to type a by-hash URL and to see
/// whether the client may read it.
const HOLDERS_LOOKED_AT: usize = 32;

/// What a by-hash URL may be cached for: a year, unchanged.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Answer a by-hash request: `rest` is `<etag>` or `<etag>/<name>`.
async fn by_hash(
    shared: &super::Shared,
    who: Option<&Identity>,
    rest: &[u8],
    req: &Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    let assets = &shared.assets;
    let (tag, name) = match rest.iter().position(|&b| b == b'/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, &b""[..]),
    };
    let id = std::str::from_utf8(tag).ok().and_then(|tag| {
        // Only the canonical spelling: one URL per content.
        crate::id::ContentId::from_etag(tag).ok().filter(|id| id.etag_tag() == tag)
    });
    let Some(id) = id else { return status(StatusCode::NOT_FOUND) };
    let fs = assets.fs().clone();
    let found = blocking(move || {
        let Some(size) = fs.content_size(&id)? else { return Ok(None) };
        Ok(Some((size, fs.holders_of_content(&id, HOLDERS_LOOKED_AT)?)))
    });
    let (size, holders) = match found.await {
        Ok(Some(found)) => found,
        Ok(None) => return status(StatusCode::NOT_FOUND),
        Err(e) => return failed(&e),
    };
    // Only for who may read a file that holds it (by its mode); for
    // anyone else it does not exist, so that a guess cannot be confirmed.
    if let Some(who) = who
        && !holders.iter().any(|(_, holder)| who.may(holder, Want::READ))
    {
        return status(StatusCode::NOT_FOUND);
    }
    // The URL's name sets the type only if the tree gives the content a
    // name of that type: stored bytes are never typed as HTML (or
    // anything else) just because a URL says so.
    let wanted = super::assets::content_type(name);
    let typed = holders.iter().any(|(tree_name, _)| super::assets::content_type(tree_name) == wanted);
    let Some(asset) = super::assets::Asset::of_content(id, size, if typed { name } else { b"" }) else {
        return status(StatusCode::INTERNAL_SERVER_ERROR);
    };
    match send(shared, req, &asset, HeaderValue::from_static(IMMUTABLE)).await {
        Ok(response) => response,
        Err(FsError::NotFound) => status(StatusCode::NOT_FOUND),
        Err(e) => failed(&e),
    }
}

/// The response for `asset`: a compressed variant if the client takes
/// one and it is ready, else the identity bytes. Responses of
/// compressible contents carry `Vary: Accept-Encoding`, 304s included.
async fn send(
    shared: &super::Shared,
    req: &Request<hyper::body::Incoming>,
    asset: &Asset,
    cache_control: HeaderValue,
) -> Result<Response<ResponseBody>, FsError> {
    let (method, headers) = (req.method(), req.headers());
    let varies = variants::compressible(&asset.content_type, asset.size);
    // Ranges are served from the identity bytes.
    if varies
        && !headers.contains_key(header::RANGE)
        && let Some(encoding) = variants::choose(headers)
        && let Some(bytes) = shared.variants.get(asset.content, encoding)
    {
        let variant = asset.variant(encoding.name(), bytes.len() as u64);
        let mut response = respond(method, headers, &variant, cache_control, Source::Memory(bytes));
        response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding.name()));
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        return Ok(response);
    }
    let source = source(&shared.assets, asset, method).await?;
    let from_file = matches!(source, Source::File(_));
    let mut response = respond(method, headers, asset, cache_control, source);
    if from_file {
        response = with_first_bytes_read(response).await;
    }
    if varies {
        response.headers_mut().insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    Ok(response)
}

/// `response`, its body read as far as its first frame before the
/// headers go out: a content that cannot be read from its start (its
/// object found corrupt, or missing) gets a 500, not a 200 and a cut
/// body. Damage further in cuts the body where it lies.
async fn with_first_bytes_read(response: Response<ResponseBody>) -> Response<ResponseBody> {
    let (parts, mut body) = response.into_parts();
    match body.frame().await {
        None => Response::from_parts(parts, empty_body()),
        Some(Err(_)) => status(StatusCode::INTERNAL_SERVER_ERROR),
        Some(Ok(first)) => {
            use futures_util::StreamExt;
            let rest = http_body_util::BodyStream::new(body);
            let frames = futures_util::stream::once(std::future::ready(Ok(first))).chain(rest);
            Response::from_parts(parts, http_body_util::StreamBody::new(frames).boxed_unsync())
        }
    }
}

/// Where a response's bytes come from.
pub(super) enum Source {
    /// All of the content, in memory.
    Memory(Bytes),
    /// The content, read as the body goes out.
    File(Arc<crate::fs::ContentFile>),
}

/// Answer a GET or HEAD of a path.
pub(super) async fn get(
    shared: &super::Shared,
    who: Option<&Identity>,
    req: Request<hyper::body::Incoming>,
) -> Get {
    let (assets, policy) = (&shared.assets, &shared.options.cache_policy);
    let Some(path) = super::decoded_path(req.uri()) else {
        return Get::Done(status(StatusCode::BAD_REQUEST));
    };
    if let Some(rest) = path.strip_prefix(BY_HASH) {
        return Get::Done(by_hash(shared, who, rest, &req).await);
    }
    let cache_control = policy.for_path(&path);
    // Twice at most: an object removed between the lookup and the open
    // means the file changed; the change emptied the path map.
    for _ in 0..2 {
        let asset = match assets.lookup(&path).await {
            Ok(Found::File(asset)) => asset,
            Ok(Found::NotAFile) => return Get::NotAFile(req),
            Ok(Found::Missing) => return Get::Done(status(StatusCode::NOT_FOUND)),
            Err(e) => return Get::Done(failed(&e)),
        };
        if let Some(who) = who {
            let reachable =
                asset.access.as_ref().is_some_and(|(file, walked)| who.may_reach(walked, file, Want::READ));
            if !reachable {
                return Get::Done(failed(&FsError::AccessDenied));
            }
        }
        match send(shared, &req, &asset, cache_control.clone()).await {
            Ok(response) => return Get::Done(response),
            Err(FsError::NotFound) => assets.forget(&path),
            Err(e) => return Get::Done(failed(&e)),
        }
    }
    // Twice gone: not a race with a change; the object itself is missing
    // (quarantined by scrub, or lost).
    tracing::error!(
        "http: GET {}: the file's object is missing (quarantined by `tsmfs scrub`?); run `tsmfs fsck`",
        String::from_utf8_lossy(&path)
    );
    Get::Done(status(StatusCode::INTERNAL_SERVER_ERROR))
}

/// The bytes of `asset` (none for HEAD).
pub(super) async fn source(assets: &Assets, asset: &Asset, method: &Method) -> Result<Source, FsError> {
    if *method == Method::HEAD || asset.size == 0 {
        return Ok(Source::Memory(Bytes::new()));
    }
    if asset.size <= SMALL_CONTENT {
        return assets.small_content(asset.content).await.map(Source::Memory);
    }
    assets.open(asset.content).await.map(Source::File)
}

pub(super) fn failed(e: &FsError) -> Response<ResponseBody> {
    match e {
        // A name over 255 bytes cannot exist, so it is not found.
        FsError::NotFound | FsError::NotDir | FsError::NameTooLong => status(StatusCode::NOT_FOUND),
        FsError::Loop => status(StatusCode::LOOP_DETECTED),
        FsError::AccessDenied | FsError::NotPermitted(_) => status(StatusCode::FORBIDDEN),
        e => {
            tracing::warn!("http: GET: {e}");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

pub(super) fn status(code: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = code;
    response
}

/// The response for `asset` with bytes from `source` to a request with
/// `method` and `headers`.
pub(super) fn respond(
    method: &Method,
    headers: &HeaderMap,
    asset: &Asset,
    cache_control: HeaderValue,
    source: Source,
) -> Response<ResponseBody> {
    let mut validators = HeaderMap::with_capacity(4);
    validators.insert(header::ETAG, asset.etag_value.clone());
    if let Some(last_modified) = &asset.last_modified {
        validators.insert(header::LAST_MODIFIED, last_modified.clone());
    }
    validators.insert(header::CACHE_CONTROL, cache_control);
    validators.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    // RFC 9110, 13.2.2, steps 1-4.
    if let Some(condition) = headers.typed_get::<headers::IfMatch>() {
        if !condition.precondition_passes(&asset.etag) {
            return with_headers(status(StatusCode::PRECONDITION_FAILED), validators);
        }
    } else if let Some(condition) = headers.typed_get::<headers::IfUnmodifiedSince>()
        && let Some(modified) = asset.modified
        && !condition.precondition_passes(modified)
    {
        return with_headers(status(StatusCode::PRECONDITION_FAILED), validators);
    }
    let not_modified = match headers.typed_get::<headers::IfNoneMatch>() {
        Some(condition) => !condition.precondition_passes(&asset.etag),
        None => headers
            .typed_get::<headers::IfModifiedSince>()
            .zip(asset.modified)
            .is_some_and(|(since, modified)| !since.is_modified(modified)),
    };
    if not_modified {
        return with_headers(status(StatusCode::NOT_MODIFIED), validators);
    }

    let len = asset.size;
    // Step 5: ranges, for GET only, and only if If-Range (if any) holds.
    let range_applies = *method == Method::GET
        && headers.typed_get::<headers::IfRange>().is_none_or(|condition| {
            let last_modified = asset.modified.map(headers::LastModified::from);
            !condition.is_modified(Some(&asset.etag), last_modified.as_ref())
        });
    let ranges = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) if range_applies => parse_ranges(spec, len),
        _ => Ranges::Whole,
    };
    let mut response = match ranges {
        Ranges::Unsatisfiable => {
            let mut response = status(StatusCode::RANGE_NOT_SATISFIABLE);
            response.headers_mut().typed_insert(headers::ContentRange::unsatisfied_bytes(len));
            return with_headers(response, validators);
        }
        Ranges::Whole => {
            let mut response = Response::new(body(source, vec![Part::Bytes(0, len)]));
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            response.headers_mut().insert(header::CONTENT_TYPE, asset.content_type.clone());
            response
        }
        Ranges::Some(list) if list.len() == 1 => {
            let (first, last) = list[0];
            let mut response = Response::new(body(source, vec![Part::Bytes(first, last + 1)]));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last + 1 - first));
            headers.insert(header::CONTENT_TYPE, asset.content_type.clone());
            insert_text(headers, header::CONTENT_RANGE, &format!("bytes {first}-{last}/{len}"));
            response
        }
        Ranges::Some(list) => {
            // A boundary made of the content's own SHA-1 cannot occur in
            // the content: that would need a SHA-1 fixed point.
            let boundary = format!("tsmfs-{}", asset.content.etag_tag());
            let content_type = asset.content_type.to_str().unwrap_or("application/octet-stream");
            let mut parts = Vec::with_capacity(list.len() * 2 + 1);
            let mut total = 0u64;
            for (first, last) in list {
                let head = format!(
                    "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {first}-{last}/{len}\r\n\r\n"
                );
                total += head.len() as u64 + (last + 1 - first);
                parts.push(Part::Text(Bytes::from(head)));
                parts.push(Part::Bytes(first, last + 1));
            }
            let tail = format!("\r\n--{boundary}--\r\n");
            total += tail.len() as u64;
            parts.push(Part::Text(Bytes::from(tail)));
            let mut response = Response::new(body(source, parts));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            insert_text(headers, header::CONTENT_TYPE, &format!("multipart/byteranges; boundary={boundary}"));
            response
        }
    };
    if *method == Method::HEAD {
        *response.body_mut() = empty_body();
    }
    response.headers_mut().extend(validators);
    response
}

fn insert_text(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn with_headers(mut response: Response<ResponseBody>, headers: HeaderMap) -> Response<ResponseBody> {
    response.headers_mut().extend(headers);
    response
}

/// The ranges a Range header selects from `len` bytes (RFC 9110, 14.1.2).
#[derive(Debug, PartialEq, Eq)]
enum Ranges {
    /// No usable Range: send everything.
    Whole,
    /// Nothing satisfiable: 416.
    Unsatisfiable,
    /// First and last byte of each range, in the order asked.
    Some(Vec<(u64, u64)>),
}

/// Parsed here rather than with `headers::Range`, whose satisfiable
/// ranges (0.4) keep ranges that start past the end and drop suffixes
/// longer than the file, both against RFC 9110.
fn parse_ranges(spec: &str, len: u64) -> Ranges {
    let Some((unit, sets)) = spec.split_once('=') else { return Ranges::Whole };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ranges::Whole;
    }
    let mut selected = Vec::new();
    let mut count = 0;
    for set in sets.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        count += 1;
        if count > MAX_RANGES {
            return Ranges::Whole;
        }
        let Some((first, last)) = set.split_once('-') else { return Ranges::Whole };
        let number = |s: &str| -> Option<u64> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if first.trim().is_empty() {
            // A suffix: the last N bytes (all of them if N >= len).
            let Some(suffix) = number(last) else { return Ranges::Whole };
            if suffix > 0 && len > 0 {
                selected.push((len - suffix.min(len), len - 1));
            }
            continue;
        }
        let Some(first) = number(first) else { return Ranges::Whole };
        let last = if last.trim().is_empty() {
            u64::MAX
        } else {
            match number(last) {
                Some(last) if last >= first => last,
                // An invalid range makes the whole header invalid.
                _ => return Ranges::Whole,
            }
        };
        if first < len {
            selected.push((first, last.min(len - 1)));
        }
    }
    if count == 0 {
        return Ranges::Whole;
    }
    if selected.is_empty() {
        return Ranges::Unsatisfiable;
    }
    // Ranges that ask for more than the whole file get the whole file
    // (RFC 9110, 14.2: overlapping ranges are an amplification trick).
    let asked = selected.iter().try_fold(0u64, |sum, (first, last)| sum.checked_add(last - first + 1));
    if asked.is_none_or(|asked| asked > len) {
        return Ranges::Whole;
    }
    Ranges::Some(coalesced(selected))
}

/// `ranges` with overlapping and adjacent ones merged, in the order of
/// their first bytes when any merged (RFC 9110, 14.6 allows both).
fn coalesced(ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut sorted = ranges.clone();
    sorted.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (first, last) in sorted {
        match merged.last_mut() {
            Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
            _ => merged.push((first, last)),
        }
    }
    if merged.len() < ranges.len() { merged } else { ranges }
}

/// One piece of a body: literal bytes, or the file's bytes `[start, end)`.
enum Part {
    Text(Bytes),
    Bytes(u64, u64),
}

/// The body: `parts`, with file bytes from memory (zero-copy slices) or
/// read from the object file piece by piece off the async workers.
fn body(source: Source, parts: Vec<Part>) -> ResponseBody {
    let file = match source {
        Source::Memory(bytes) => {
            let frames: Vec<Bytes> = parts
                .into_iter()
                .map(|part| match part {
                    Part::Text(text) => text,
                    Part::Bytes(start, end) => bytes.slice(start as usize..(end as usize).min(bytes.len())),
                })
                .collect();
            if let [single] = frames.as_slice() {
                return full_body(single.clone());
            }
            let stream =
                futures_util::stream::iter(frames.into_iter().map(|b| Ok(hyper::body::Frame::data(b))));
            return http_body_util::StreamBody::new(stream).boxed_unsync();
        }
        Source::File(file) => file,
    };
    let state = (file, parts.into_iter().rev().collect::<Vec<_>>());
    let stream = futures_util::stream::unfold(state, |(file, mut parts)| async move {
        let (start, end) = match parts.pop()? {
            Part::Text(text) => return Some((Ok(hyper::body::Frame::data(text)), (file, parts))),
            Part::Bytes(start, end) => (start, end),
        };
        let size = usize::try_from(end - start).unwrap_or(PIECE).min(PIECE);
        let reader = file.clone();
        // An I/O error ends the body: the client sees a cut response.
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; size];
            let n = reader.read_at(&mut buf, start)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>(buf)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let data = match read {
            Ok(data) if !data.is_empty() => data,
            Ok(_) => {
                let e =
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "object shorter than its size");
                return Some((Err(e), (file, Vec::new())));
            }
            Err(e) => {
                tracing::error!("http: reading an object for a response failed: {e}");
                return Some((Err(e), (file, Vec::new())));
            }
        };
        let next = start + data.len() as u64;
        if next < end {
            parts.push(Part::Bytes(next, end));
        }
        Some((Ok(hyper::body::Frame::data(Bytes::from(data))), (file, parts)))
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let some = |v: Vec<(u64, u64)>| Ranges::Some(v);
        assert_eq!(parse_ranges("bytes=0-3", 10), some(vec![(0, 3)]));
        assert_eq!(parse_ranges("bytes=5-", 10), some(vec![(5, 9)]));
        assert_eq!(parse_ranges("bytes=8-100", 10), some(vec![(8, 9)]));
        assert_eq!(parse_ranges("bytes=-3", 10), some(vec![(7, 9)]));
        assert_eq!(parse_ranges("bytes=-30", 10), some(vec![(0, 9)]), "a suffix longer than the file");
        assert_eq!(parse_ranges("BYTES= 0-0 , ,-1", 10), some(vec![(0, 0), (9, 9)]));
        assert_eq!(parse_ranges("bytes=10-", 10), Ranges::Unsatisfiable, "starts at the end");
        assert_eq!(parse_ranges("bytes=20-30,40-", 10), Ranges::Unsatisfiable);
        assert_eq!(parse_ranges("bytes=20-30,2-3", 10), some(vec![(2, 3)]), "unsatisfiable ones are dropped");
        assert_eq!(parse_ranges("bytes=-0", 10), Ranges::Unsatisfiable);
        assert_eq!(parse_ranges("bytes=0-", 0), Ranges::Unsatisfiable);
        assert_eq!(parse_ranges("bytes=5-3", 10), Ranges::Whole, "invalid: ignored");
        assert_eq!(parse_ranges("bytes=a-3", 10), Ranges::Whole);
        assert_eq!(parse_ranges("bytes=+1-3", 10), Ranges::Whole);
        assert_eq!(parse_ranges("items=0-3", 10), Ranges::Whole, "unknown unit");
        assert_eq!(parse_ranges("bytes=", 10), Ranges::Whole);
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(parse_ranges(&many, 10), Ranges::Whole);
        assert_eq!(parse_ranges("bytes=6-7,0-1", 10), some(vec![(6, 7), (0, 1)]), "kept in the order asked");
        assert_eq!(parse_ranges("bytes=4-5,0-1,2-3", 10), some(vec![(0, 5)]), "adjacent ones merge");
        assert_eq!(
            parse_ranges("bytes=0-2,1-3,8-9", 10),
            some(vec![(0, 3), (8, 9)]),
            "overlapping ones merge"
        );
        let overlapping = format!("bytes={}", ["0-5"; 2].join(","));
        assert_eq!(parse_ranges(&overlapping, 10), Ranges::Whole, "12 bytes asked of 10");
        assert_eq!(parse_ranges("bytes=0-,0-", 10), Ranges::Whole);
    }
}
