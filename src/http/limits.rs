//! Limits on what a client may send, each answered with a clear status
//! before any work is done.
//!
//! - Request line and headers: hyper's read buffer bounds them (about
//!   400 KiB, always by 1 MiB: then 431; a URI over 64 KiB gets 414), and a client has
//!   [`HEAD_TIMEOUT`] to send them (slow clients cannot hold connections
//!   open for free).
//! - XML bodies (PROPFIND, PROPPATCH, LOCK): at most [`MAX_XML_BODY`] bytes
//!   (413) and [`MAX_XML_DEPTH`] levels of nesting (400). The depth check
//!   matters: the XML tree builder dav-server and we use recurses once per
//!   level, and a 64 KiB body of nested elements overflows a worker
//!   thread's stack, which aborts the whole process.
//! - Headers dav-server's parsers would panic on are refused (400) first:
//!   an `If` header whose `<…>` or `[…]` is never closed (read past its
//!   end), an entity tag that is a lone `"` or `W/"` in `If-Match`,
//!   `If-None-Match` or `If-Range` (sliced backwards).
//! - Active locks: at most [`crate::fs::MAX_LOCKS`] by default (507, RFC 4918, 11.5).
//! - A request body that sends nothing for [`BODY_IDLE_TIMEOUT`]
//!   (`--body-timeout`) ends its request with 408; a PUT's staged bytes
//!   are dropped. Uploads hold no thread while they wait for bytes, so
//!   stalled ones cost memory for what they sent and nothing else.
//! - Once asked to stop, the server gives requests in flight
//!   [`SHUTDOWN_GRACE`], then drops the connections left.
//! - PUT bodies are limited only by the disk (507 when it is full);
//!   PROPFIND answers are streamed in pages with bounded memory, and an
//!   infinite depth is refused (403), so their size needs no limit.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::ResponseBody;

/// Time to receive the request line and headers.
pub(super) const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a request body may send nothing before its request ends (408).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time requests in flight get to finish once the server is asked to stop.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// An XML request body (dav-server's own limit for them is the same).
pub(super) const MAX_XML_BODY: usize = 64 * 1024;
/// Nesting of an XML request body; real ones use five or six levels.
pub(super) const MAX_XML_DEPTH: usize = 32;

/// `req` with a body that fails if it sends nothing for `idle`; then
/// `stalled` is set.
pub(super) fn with_idle_timeout<B>(
    req: Request<B>,
    idle: Duration,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Request<impl hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    req.map(move |body| {
        tower_http::timeout::TimeoutBody::new(idle, body).map_err(move |e| {
            if e.is::<tower_http::timeout::TimeoutError>() {
                stalled.store(true, std::sync::atomic::Ordering::Release);
            }
            std::io::Error::other(e)
        })
    })
}

/// Unread request bodies up to this long are read (and dropped) before
/// an early answer goes out, for at most [`DRAINED_FOR`]; see [`Unread`].
pub(super) const DRAINED_AT_MOST: u64 = 8 << 20;
/// How long an early answer waits for the rest of a body it did not need.
const DRAINED_FOR: Duration = Duration::from_secs(5);

/// Where a request body that was dropped unread is left, so that it can
/// be read before the answer goes out. An answer given before the body
/// (a 412 decided from the headers) is otherwise followed by a close
/// with the body unread, and a client still sending it gets a reset
/// instead of the answer.
pub(super) type Unread<B> = std::sync::Arc<parking_lot::Mutex<Option<std::pin::Pin<Box<B>>>>>;

/// `req` with a body that leaves itself in the returned slot if it is
/// dropped before its end: only a body whose length is known and small
/// ([`DRAINED_AT_MOST`]), and not one whose client waits for `100
/// Continue` (it sends nothing unless asked, which is what it is for);
/// other requests get no slot.
pub(super) fn keep_unread<B>(req: Request<B>) -> (Request<LeftOnDrop<B>>, Option<Unread<B>>)
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static,
{
    let waits_for_continue = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let small = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n <= DRAINED_AT_MOST);
    let slot: Option<Unread<B>> = (small && !waits_for_continue).then(std::sync::Arc::default);
    let returned = slot.clone();
    (req.map(|body| LeftOnDrop { body: Some(Box::pin(body)), slot: returned }), slot)
}

/// See [`keep_unread`].
pub(super) struct LeftOnDrop<B> {
    body: Option<std::pin::Pin<Box<B>>>,
    slot: Option<Unread<B>>,
}

impl<B> hyper::body::Body for LeftOnDrop<B>
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error>,
{
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        match self.body.as_mut() {
            Some(body) => {
                let polled = body.as_mut().poll_frame(cx);
                if matches!(polled, std::task::Poll::Ready(None | Some(Err(_)))) {
                    // Ended: nothing left to read later.
                    self.body = None;
                }
                polled
            }
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body
            .as_ref()
            .map(|body| body.size_hint())
            .unwrap_or_else(|| hyper::body::SizeHint::with_exact(0))
    }
}

impl<B> Drop for LeftOnDrop<B> {
    fn drop(&mut self) {
        if let (Some(body), Some(slot)) = (self.body.take(), &self.slot) {
            *slot.lock() = Some(body);
        }
    }
}

/// Read what is left of a body (see [`keep_unread`]), dropping it; a
/// body that fails or stalls just stops being read.
pub(super) async fn drain<B>(unread: Option<Unread<B>>)
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error>,
{
    let Some(mut body) = unread.and_then(|unread| unread.lock().take()) else { return };
    let reading = async { while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {} };
    // A client that sends nothing more gets its answer anyway.
    let _ = tokio::time::timeout(DRAINED_FOR, reading).await;
}

/// The answer to a request whose body stopped arriving.
pub(super) fn stalled_body() -> Response<ResponseBody> {
    let mut response = refusal(StatusCode::REQUEST_TIMEOUT, "the request body stopped arriving");
    response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
    response
}

/// Whether requests of `method` carry an XML body that gets parsed.
pub(super) fn has_xml_body(method: &http::Method) -> bool {
    matches!(method.as_str(), "PROPFIND" | "PROPPATCH" | "LOCK")
}

/// The request with its whole body read, if it is within the limits;
/// otherwise the answer to send.
pub(super) async fn bounded_xml<B>(req: Request<B>) -> Result<Request<Full<Bytes>>, Response<ResponseBody>>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_XML_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(refusal(StatusCode::PAYLOAD_TOO_LARGE, "request body over 64 KiB"));
        }
        Err(_) => return Err(refusal(StatusCode::BAD_REQUEST, "request body cut off")),
    };
    if xml_depth(&body) > MAX_XML_DEPTH {
        return Err(refusal(StatusCode::BAD_REQUEST, "XML nested too deeply"));
    }
    Ok(Request::from_parts(parts, Full::new(body)))
}

/// How deeply the elements of `xml` nest, without building a tree (the
/// reader is iterative). Malformed XML counts as far as it reads: the
/// parser proper reports it.
fn xml_depth(xml: &[u8]) -> usize {
    let reader = xml::reader::EventReader::new(xml);
    let (mut depth, mut deepest) = (0usize, 0usize);
    for event in reader {
        match event {
            Ok(xml::reader::XmlEvent::StartElement { .. }) => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_XML_DEPTH {
                    break;
                }
            }
            Ok(xml::reader::XmlEvent::EndElement { .. }) => depth = depth.saturating_sub(1),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    deepest
}

/// Whether dav-server can parse the conditional headers without
/// panicking (see the module notes).
pub(super) fn conditionals_are_safe(headers: &http::HeaderMap) -> bool {
    let lone_quote = |value: &http::HeaderValue| {
        value.as_bytes().split(|&b| b == b',').any(|tag| matches!(tag.trim_ascii(), b"\"" | b"W/\""))
    };
    headers.get_all("if").iter().all(|value| if_header_is_safe(value.as_bytes()))
        && [http::header::IF_MATCH, http::header::IF_NONE_MATCH, http::header::IF_RANGE]
            .iter()
            .all(|name| !headers.get_all(name).iter().any(lone_quote))
}

/// Whether dav-server's `If` parser can read `value` without running
/// past its end: every `<` or `[` that starts a token must be closed by
/// `>` or `]` (outside double quotes, which may hold them), or stopped
/// earlier by whitespace, which the parser reports as an error.
fn if_header_is_safe(value: &[u8]) -> bool {
    let mut at = 0;
    while at < value.len() {
        let close = match value[at] {
            b'<' => b'>',
            b'[' => b']',
            _ => {
                at += 1;
                continue;
            }
        };
        let mut quoted = false;
        let mut end = at + 1;
        loop {
            match value.get(end) {
                None => return false,
                Some(b' ' | b'\t' | b'\r' | b'\n') => return true,
                Some(&c) if c == close && !quoted => break,
                Some(b'"') => quoted = !quoted,
                Some(_) => {}
            }
            end += 1;
        }
        at = end + 1;
    }
    true
}

/// A plain-text refusal (the reason helps whoever debugs a client).
pub(super) fn refusal(status: StatusCode, reason: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(super::full_body(Bytes::from_static(reason.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_headers_that_would_be_read_past_their_end_are_caught() {
        for good in [&b"(<urn:uuid:1>)"[..], b"<http://h/a> ([\"x\"])", b"(Not <a> [\"]\"])", b"<a b", b""] {
            assert!(if_header_is_safe(good), "{}", String::from_utf8_lossy(good));
        }
        for bad in [&b"<"[..], b"(<urn:uuid:1", b"([\"x\"", b"([\"]", b"(<a>) ["] {
            assert!(!if_header_is_safe(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lone_quotes_in_tag_lists_are_caught() {
        let headers = |name: &'static str, value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(name, http::HeaderValue::from_static(value));
            headers
        };
        assert!(conditionals_are_safe(&headers("if-match", "\"a\", W/\"b\"")));
        assert!(conditionals_are_safe(&headers("if-none-match", "*")));
        assert!(!conditionals_are_safe(&headers("if-match", "\"")));
        assert!(!conditionals_are_safe(&headers("if-none-match", "\"a\", W/\"")));
        assert!(!conditionals_are_safe(&headers("if", "(<a")));
    }

    #[test]
    fn depth_counts_nesting_not_siblings() {
        assert_eq!(xml_depth(b"<a><b/><b/><b><c/></b></a>"), 3);
        assert_eq!(xml_depth(b""), 0);
        let deep = format!("{}{}", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert_eq!(xml_depth(deep.as_bytes()), MAX_XML_DEPTH + 1, "stops reading once too deep");
    }
}
