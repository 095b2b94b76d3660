//! GET and HEAD of files, answered by us (collections go to dav-server's
//! HTML index). RFC 9110 in full: preconditions in the order of 13.2.2,
//! If-Range, single and multiple byte ranges, 416; a 304 carries the
//! headers the 200 would. The bytes come from a core handle opened once,
//! so a response is one version of the file from its first byte to its
//! last, even while the file is replaced.

use std::sync::Arc;

use bytes::Bytes;
use headers::HeaderMapExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::{ReadHandle, ResponseBody, empty_body, etag_of, full_body};
use crate::fs::{Attr, FileKind, Fs, FsError, OpenFlags, system_time};

/// Bytes per core read while streaming a body.
const PIECE: u32 = 256 * 1024;
/// More ranges than this in one request are answered with the whole file
/// (RFC 9110, 14.2 lets a server ignore Range; many tiny ranges are a
/// known amplification trick).
const MAX_RANGES: usize = 64;
/// What clients may do with what they cached: keep it, but ask each time
/// (cheap: a 304 on the strong ETag).
const CACHE_CONTROL: &str = "no-cache";

/// The outcome of looking at a request for a file.
pub(super) enum Get {
    /// Answered.
    Done(Response<ResponseBody>),
    /// Not a regular file: dav-server's turn (HTML index, errors).
    NotAFile(Request<hyper::body::Incoming>),
}

/// Answer a GET or HEAD.
pub(super) async fn get(fs: Arc<Fs>, req: Request<hyper::body::Incoming>) -> Get {
    let Some(path) = super::decoded_path(req.uri()) else {
        return Get::Done(status(StatusCode::BAD_REQUEST));
    };
    let name = path.rsplit(|&b| b == b'/').next().unwrap_or_default().to_vec();
    let open_fs = fs.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let attr = open_fs.resolve(&path)?;
        if attr.kind != FileKind::File {
            return Ok(None);
        }
        open_fs.open_file(attr.ino, OpenFlags { read: true, ..OpenFlags::default() }).map(Some)
    })
    .await;
    let opened = match opened {
        Ok(Ok(Some(opened))) => opened,
        Ok(Ok(None)) => return Get::NotAFile(req),
        Ok(Err(FsError::NotFound | FsError::NotDir)) => return Get::Done(status(StatusCode::NOT_FOUND)),
        Ok(Err(e)) => {
            tracing::warn!("webdav: GET: {e}");
            return Get::Done(status(StatusCode::INTERNAL_SERVER_ERROR));
        }
        Err(e) => {
            tracing::error!("webdav: GET: blocking task failed: {e}");
            return Get::Done(status(StatusCode::INTERNAL_SERVER_ERROR));
        }
    };
    let handle = ReadHandle { fs, handle: opened.handle };
    Get::Done(respond(req.method(), req.headers(), &name, &opened.attr, handle))
}

fn status(code: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = code;
    response
}

/// The response for file `attr`, named `name` and open as `handle`, to a
/// request with `method` and `headers`.
fn respond(
    method: &Method,
    headers: &HeaderMap,
    name: &[u8],
    attr: &Attr,
    handle: ReadHandle,
) -> Response<ResponseBody> {
    let Some(etag_text) = etag_of(attr) else { return status(StatusCode::INTERNAL_SERVER_ERROR) };
    let etag: Option<headers::ETag> = etag_text.parse().ok();
    let modified = system_time(attr.mtime_ns);
    let mut validators = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&etag_text) {
        validators.insert(header::ETAG, value);
    }
    validators.typed_insert(headers::LastModified::from(modified));
    validators.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    validators.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    // RFC 9110, 13.2.2, steps 1-4.
    if let Some(condition) = headers.typed_get::<headers::IfMatch>() {
        if !etag.as_ref().is_some_and(|tag| condition.precondition_passes(tag)) {
            return with_headers(status(StatusCode::PRECONDITION_FAILED), validators);
        }
    } else if let Some(condition) = headers.typed_get::<headers::IfUnmodifiedSince>()
        && !condition.precondition_passes(modified)
    {
        return with_headers(status(StatusCode::PRECONDITION_FAILED), validators);
    }
    let not_modified = match headers.typed_get::<headers::IfNoneMatch>() {
        Some(condition) => !etag.as_ref().is_none_or(|tag| condition.precondition_passes(tag)),
        None => {
            headers.typed_get::<headers::IfModifiedSince>().is_some_and(|since| !since.is_modified(modified))
        }
    };
    if not_modified {
        return with_headers(status(StatusCode::NOT_MODIFIED), validators);
    }

    let len = attr.size;
    // By the request's name, not the inode: a file has as many names as links.
    let content_type = mime_guess::from_path(String::from_utf8_lossy(name).as_ref())
        .first_or_octet_stream()
        .essence_str()
        .to_owned();
    // Step 5: ranges, for GET only, and only if If-Range (if any) holds.
    let range_applies = *method == Method::GET
        && headers.typed_get::<headers::IfRange>().is_none_or(|condition| {
            let last_modified = headers::LastModified::from(modified);
            !condition.is_modified(etag.as_ref(), Some(&last_modified))
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
            let mut response = Response::new(body(method, handle, vec![Part::Bytes(0, len)]));
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            insert_text(response.headers_mut(), header::CONTENT_TYPE, &content_type);
            response
        }
        Ranges::Some(list) if list.len() == 1 => {
            let (first, last) = list[0];
            let mut response = Response::new(body(method, handle, vec![Part::Bytes(first, last + 1)]));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(last + 1 - first));
            insert_text(headers, header::CONTENT_TYPE, &content_type);
            insert_text(headers, header::CONTENT_RANGE, &format!("bytes {first}-{last}/{len}"));
            response
        }
        Ranges::Some(list) => {
            // A boundary made of the content's own SHA-1 cannot occur in
            // the content: that would need a SHA-1 fixed point.
            let boundary = format!("tsmfs-{}", etag_text.trim_matches('"'));
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
            let mut response = Response::new(body(method, handle, parts));
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
            insert_text(headers, header::CONTENT_TYPE, &format!("multipart/byteranges; boundary={boundary}"));
            response
        }
    };
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
        Ranges::Whole
    } else if selected.is_empty() {
        Ranges::Unsatisfiable
    } else {
        Ranges::Some(selected)
    }
}

/// One piece of a body: literal bytes, or the file's bytes `[start, end)`.
enum Part {
    Text(Bytes),
    Bytes(u64, u64),
}

/// The body: nothing for HEAD; else `parts`, the file's bytes read from
/// `handle` piece by piece off the async workers.
fn body(method: &Method, handle: ReadHandle, parts: Vec<Part>) -> ResponseBody {
    if *method == Method::HEAD {
        return empty_body();
    }
    if let [Part::Bytes(0, 0)] = parts.as_slice() {
        return full_body(Bytes::new());
    }
    let state = (Arc::new(handle), parts.into_iter().rev().collect::<Vec<_>>());
    let stream = futures_util::stream::unfold(state, |(handle, mut parts)| async move {
        let part = parts.pop()?;
        let (start, end) = match part {
            Part::Text(text) => return Some((Ok(hyper::body::Frame::data(text)), (handle, parts))),
            Part::Bytes(start, end) => (start, end),
        };
        let size = u32::try_from(end - start).unwrap_or(u32::MAX).min(PIECE);
        let reader = handle.clone();
        let read = tokio::task::spawn_blocking(move || reader.fs.read(reader.handle, start, size)).await;
        let data = match read {
            Ok(Ok(data)) if !data.is_empty() => data,
            Ok(Ok(_)) => {
                let e = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shorter than its size");
                return Some((Err(e), (handle, Vec::new())));
            }
            Ok(Err(e)) => return Some((Err(std::io::Error::other(e.to_string())), (handle, Vec::new()))),
            Err(e) => return Some((Err(std::io::Error::other(e.to_string())), (handle, Vec::new()))),
        };
        let next = start + data.len() as u64;
        if next < end {
            parts.push(Part::Bytes(next, end));
        }
        Some((Ok(hyper::body::Frame::data(Bytes::from(data))), (handle, parts)))
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
    }
}
