//! The HTTP frontend: WebDAV (dav-server on hyper) over the fs core.

mod assets;
pub mod auth;
mod dav;
mod get;
pub mod host;
mod identity;
mod limits;
mod locks;
mod propfind;
mod server;
pub mod tls;
mod variants;
mod windows;

use std::sync::Arc;

use bytes::Bytes;
use dav_server::body::Body;
use dav_server::{DavConfig, DavHandler};
use headers::HeaderMapExt;
use http::HeaderValue;
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

pub use dav::{DavFs, PutGuard, Transfer, TransferRoots, UploadClaims};
pub use identity::IdentityPolicy;
pub use locks::SqlLocks;
pub use server::{Listen, Server};

use crate::fs::{Attr, FileKind, Fs, Identity};

/// Every response body: dav-server's and our own streams.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn empty_body() -> ResponseBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full_body(bytes: Bytes) -> ResponseBody {
    http_body_util::Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// A core read handle, released (off the async workers) when dropped.
struct ReadHandle {
    fs: Arc<Fs>,
    handle: crate::id::Handle,
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        let (fs, handle) = (self.fs.clone(), self.handle);
        let release = move || {
            if let Err(e) = fs.release(handle, crate::fs::Origin::WebDav) {
                tracing::warn!("webdav: releasing a read handle: {e}");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

/// The strong ETag of a resource, quoted, as in the `ETag` header and
/// `getetag`: a file's content id (the FUSE xattr's string); for a
/// collection, its inode and last change, which move with every entry
/// change.
pub fn etag_of(attr: &Attr) -> Option<String> {
    match (attr.content_id(), attr.kind) {
        (Some(id), _) => Some(id.etag()),
        (None, FileKind::Dir) => Some(format!("\"d{:x}-{:x}\"", attr.ino.0, attr.mtime_ns)),
        (None, _) => None,
    }
}

/// Bytes of a path kept as they are in a URL; the rest is %-encoded.
const PATH_SAFE: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A decoded path (bytes, maybe not UTF-8) as a URL path.
fn url_path(path: &[u8]) -> String {
    percent_encode(path, PATH_SAFE).to_string()
}

/// Text for XML content or a double-quoted attribute. Only what must be
/// escaped is, so values such as a quoted ETag read as they are.
fn escape_xml(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['&', '<', '>', '"']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// If-None-Match compares weakly (RFC 9110, 13.1.2): `W/"x"` matches
/// `"x"`. dav-server compares strongly, and every tag we issue is strong,
/// so dropping the weakness marks before it looks is exactly the weak
/// comparison.
fn weak_if_none_match<B>(mut req: http::Request<B>) -> http::Request<B> {
    let headers = req.headers_mut();
    let values: Vec<http::HeaderValue> =
        headers.get_all(http::header::IF_NONE_MATCH).iter().cloned().collect();
    if !values.iter().any(|v| v.as_bytes().windows(3).any(|w| w == b"W/\"")) {
        return req;
    }
    headers.remove(http::header::IF_NONE_MATCH);
    for value in values {
        let stripped = String::from_utf8_lossy(value.as_bytes()).replace("W/\"", "\"");
        match http::HeaderValue::from_str(&stripped) {
            Ok(v) => headers.append(http::header::IF_NONE_MATCH, v),
            // Not text: leave it as it was; it cannot match a tag of ours.
            Err(_) => headers.append(http::header::IF_NONE_MATCH, value),
        };
    }
    req
}

/// The guard for a PUT that has If-Match or If-None-Match, re-tested when
/// it commits (RFC 9110, 13.1.1 and 13.1.2: If-Match compares strongly,
/// If-None-Match weakly; an absent file matches no tag and fails `*`).
fn put_guard(headers: &http::HeaderMap) -> Option<PutGuard> {
    let if_match = headers.typed_get::<headers::IfMatch>();
    let if_none_match = headers.typed_get::<headers::IfNoneMatch>();
    if if_match.is_none() && if_none_match.is_none() {
        return None;
    }
    Some(PutGuard::new(move |current| {
        let etag = current.and_then(|id| id.etag().parse::<headers::ETag>().ok());
        let matched = match (&if_match, &etag) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(condition), Some(etag)) => condition.precondition_passes(etag),
        };
        let none_matched = match (&if_none_match, &etag) {
            (None, _) | (Some(_), None) => true,
            (Some(condition), Some(etag)) => condition.precondition_passes(etag),
        };
        matched && none_matched
    }))
}

/// `None` if the request from `client` may go on; else the answer: 401,
/// or 429 for an address that failed too often lately (auth.rs).
async fn refused_access(
    users: &Arc<auth::Users>,
    headers: &http::HeaderMap,
    client: std::net::IpAddr,
) -> Option<http::Response<ResponseBody>> {
    match users.authorize(headers.get(http::header::AUTHORIZATION), client).await {
        auth::Verdict::Allowed => None,
        auth::Verdict::Refused => {
            let mut refused = http::Response::new(empty_body());
            *refused.status_mut() = http::StatusCode::UNAUTHORIZED;
            let challenge = HeaderValue::from_static("Basic realm=\"tsmfs\", charset=\"UTF-8\"");
            refused.headers_mut().insert(http::header::WWW_AUTHENTICATE, challenge);
            Some(refused)
        }
        auth::Verdict::Throttled { retry_after } => {
            let mut refused = limits::refusal(
                http::StatusCode::TOO_MANY_REQUESTS,
                "too many failed password checks from this address; retry later",
            );
            let seconds = retry_after.as_secs_f64().ceil() as u64;
            refused.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
            Some(refused)
        }
    }
}

/// Whether the request names a host we answer (see [`host`]). A request
/// without any (HTTP/1.0) is not a browser's, and passes.
fn for_us<B>(hosts: &host::AllowedHosts, req: &http::Request<B>) -> bool {
    if let Some(authority) = req.uri().authority() {
        return hosts.allows(authority.as_str());
    }
    match req.headers().get(http::header::HOST) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|authority| hosts.allows(authority)),
    }
}

/// A COPY or MOVE with its paths decoded as dav-server decodes them;
/// `None` for other methods, or if a path is malformed (dav-server then
/// refuses the request).
fn transfer<B>(req: &http::Request<B>) -> Option<Transfer> {
    let copy = match req.method().as_str() {
        "COPY" => true,
        "MOVE" => false,
        _ => return None,
    };
    let roots = TransferRoots { from: decoded_path(req.uri())?, to: decoded_path(&destination(req)?)? };
    Some(if copy { Transfer::Copy(roots) } else { Transfer::Move(roots) })
}

/// The Destination header of a request, if it parses.
fn destination<B>(req: &http::Request<B>) -> Option<http::Uri> {
    req.headers().get("destination")?.to_str().ok()?.parse().ok()
}

/// Whether a DELETE names the root. dav-server deletes member by member,
/// and removed every member before it failed on the root itself (403,
/// with the tree gone).
fn deletes_the_root<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::DELETE
        && decoded_path(req.uri()).is_some_and(|path| crate::fs::lock_key(&path).is_empty())
}

/// Whether a COPY or MOVE names a destination on another server (RFC
/// 4918, 9.8.5 and 9.9.4: 502). dav-server uses only the path, and would
/// copy or move the resource here, to that path.
fn foreign_destination<B>(req: &http::Request<B>) -> bool {
    if !matches!(req.method().as_str(), "COPY" | "MOVE") {
        return false;
    }
    let destination = destination(req);
    let Some(there) = destination.as_ref().and_then(http::Uri::authority) else { return false };
    let here =
        req.uri().authority().map(|a| a.as_str().to_owned()).or_else(|| {
            req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned)
        });
    // Ports are compared when given; a default one may be left out.
    let without_default_port =
        |authority: &str| authority.trim_end_matches(":80").trim_end_matches(":443").to_ascii_lowercase();
    here.is_some_and(|here| without_default_port(&here) != without_default_port(there.as_str()))
}

/// The path of `uri`, %-decoded and normalized as dav-server does it
/// (`DavPath::from_uri` does not decode); `None` if it is malformed.
fn decoded_path(uri: &http::Uri) -> Option<Vec<u8>> {
    Some(dav_server::davpath::DavPath::new(uri.path()).ok()?.as_bytes().to_vec())
}

/// One request: PROPFIND and GET/HEAD of files are ours; conditional PUTs get a filesystem that
/// re-tests their condition at commit time; everything else goes to
/// dav-server as is.
async fn handle(
    shared: &Shared,
    // The connection's identity; with `--auth-file`, each request's user.
    who: Option<Arc<Identity>>,
    client: std::net::IpAddr,
    req: http::Request<hyper::body::Incoming>,
) -> http::Response<ResponseBody> {
    if shared.hosts.as_ref().is_some_and(|hosts| !for_us(hosts, &req)) {
        return limits::refusal(
            http::StatusCode::MISDIRECTED_REQUEST,
            "this server does not answer that host name (start it with --host NAME to allow a name)",
        );
    }
    let who = match &shared.options.users {
        None => who,
        Some(users) => match refused_access(users, req.headers(), client).await {
            Some(refused) => return refused,
            None => users.identity(req.headers().get(http::header::AUTHORIZATION)),
        },
    };
    if !limits::conditionals_are_safe(req.headers()) {
        return limits::refusal(http::StatusCode::BAD_REQUEST, "malformed conditional header");
    }
    if req.uri().path() == METRICS_PATH {
        return metrics(shared, req.method()).await;
    }
    let req = if matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        match get::get(shared, who.as_deref(), req).await {
            get::Get::Done(response) => return response,
            get::Get::NotAFile(req) => req,
        }
    } else {
        req
    };
    // A body that stops arriving ends its request with 408; what it sent
    // is dropped, and it holds no thread meanwhile (see `dav::PutFile`).
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let req = limits::with_idle_timeout(req, shared.options.body_timeout(), stalled.clone());
    let (req, unread) = limits::keep_unread(req);
    let response = dispatch(shared, who, req).await;
    if stalled.load(std::sync::atomic::Ordering::Acquire) {
        return limits::stalled_body();
    }
    // An answer decided before the body was read (412 from the headers)
    // reaches the client only if its body is read first.
    limits::drain(unread).await;
    response
}

/// A request with its body, past the checks every request gets.
async fn dispatch<B>(
    shared: &Shared,
    who: Option<Arc<Identity>>,
    req: http::Request<B>,
) -> http::Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static,
{
    let (handler, fs) = (shared.handler.clone(), shared.assets.fs().clone());
    if limits::has_xml_body(req.method()) {
        return xml_request(handler, fs, who, shared.options.md5, req).await;
    }
    let req = weak_if_none_match(req);
    if foreign_destination(&req) {
        return limits::refusal(http::StatusCode::BAD_GATEWAY, "the destination is on another server");
    }
    if deletes_the_root(&req) {
        return limits::refusal(http::StatusCode::FORBIDDEN, "the root collection cannot be deleted");
    }
    if let Some(transfer) = transfer(&req) {
        if let Some(reason) = transfer.roots().overlap() {
            return limits::refusal(http::StatusCode::FORBIDDEN, reason);
        }
        let claims = match UploadClaims::of(req.headers()) {
            Ok(claims) => claims,
            Err(why) => return limits::refusal(http::StatusCode::BAD_REQUEST, why),
        };
        let dav_fs = DavFs::transferring(fs.clone(), who.clone(), transfer.clone());
        let mut response = boxed(handler.handle_with(DavConfig::new().filesystem(dav_fs), req).await);
        if let Some(mtime_ns) = claims.mtime_ns
            && response.status().is_success()
        {
            // The copy keeps the time the client asked for (X-OC-Mtime).
            let to = transfer.roots().to.clone();
            let set = tokio::task::spawn_blocking(move || {
                let change = crate::fs::SetAttr {
                    mtime: Some(crate::fs::TimeSet::At(mtime_ns)),
                    ..Default::default()
                };
                set_times(&fs, &to, &change, who.as_deref())
            })
            .await;
            match set {
                Ok(Ok(())) => {
                    response.headers_mut().insert("x-oc-mtime", http::HeaderValue::from_static("accepted"));
                }
                Ok(Err(e)) => tracing::info!("webdav: X-OC-Mtime of a {}: {e}", transfer_name(&transfer)),
                Err(e) => tracing::error!("webdav: blocking task failed: {e}"),
            }
        }
        return response;
    }
    if req.method() != http::Method::PUT {
        let options = req.method() == http::Method::OPTIONS;
        let mut response =
            boxed(handler.handle_with(DavConfig::new().filesystem(DavFs::new(fs, who)), req).await);
        if options {
            // Windows' WebDAV client looks for it before it talks WebDAV.
            response.headers_mut().insert("ms-author-via", HeaderValue::from_static("DAV"));
        }
        return response;
    }
    let guard = put_guard(req.headers());
    let claims = match UploadClaims::of(req.headers()) {
        Ok(claims) => claims,
        Err(why) => return limits::refusal(http::StatusCode::BAD_REQUEST, why),
    };
    let dav_fs = DavFs::for_put(fs, who, guard.clone(), claims.clone());
    let response = handler.handle_with(DavConfig::new().filesystem(dav_fs), req).await;
    if guard.is_some_and(|guard| guard.failed()) {
        let mut failed = http::Response::new(empty_body());
        *failed.status_mut() = http::StatusCode::PRECONDITION_FAILED;
        return failed;
    }
    if claims.mismatched() {
        return limits::refusal(http::StatusCode::BAD_REQUEST, "the body does not match its OC-Checksum");
    }
    let mut response = boxed(response);
    if claims.mtime_ns.is_some() && response.status().is_success() {
        response.headers_mut().insert("x-oc-mtime", http::HeaderValue::from_static("accepted"));
    }
    response
}

/// PROPFIND, PROPPATCH and LOCK: their XML bodies are read and checked
/// against the limits first.
async fn xml_request<B>(
    handler: DavHandler,
    fs: Arc<Fs>,
    who: Option<Arc<Identity>>,
    // Whether `oc:checksums` carries MD5s too (`--md5`).
    md5: bool,
    req: http::Request<B>,
) -> http::Response<ResponseBody>
where
    B: hyper::body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static,
{
    let req = match limits::bounded_xml(req).await {
        Ok(req) => req,
        Err(refused) => return refused,
    };
    if propfind::is_propfind(req.method()) {
        return propfind::propfind(fs, who, md5, req).await;
    }
    let config = DavConfig::new().filesystem(DavFs::new(fs.clone(), who.clone()));
    if req.method().as_str() == "PROPPATCH" {
        return proppatch(handler, config, fs, who, req).await;
    }
    if req.method().as_str() == "LOCK" {
        // dav-server's lock system can only answer "locked" (423); a lock
        // on a read-only tree is refused, as every other change is.
        if fs.is_read_only() {
            return limits::refusal(http::StatusCode::FORBIDDEN, "read-only");
        }
        // A new lock has a body (a refresh has none): is there room? (The
        // core refuses one too many as well, but dav-server's lock system
        // can only report that as 423.)
        if hyper::body::Body::size_hint(req.body()).exact() != Some(0) {
            let (limit, counting) = (fs.max_locks(), fs.clone());
            let count = tokio::task::spawn_blocking(move || counting.active_locks()).await;
            if matches!(count, Ok(Ok(n)) if n >= limit) {
                return limits::refusal(http::StatusCode::INSUFFICIENT_STORAGE, "too many locks");
            }
        }
        let path = decoded_path(req.uri());
        // A lock keeps others from writing: only for who may write.
        if let Some(path) = path.clone() {
            let (checking, who) = (fs.clone(), who.clone());
            let allowed =
                tokio::task::spawn_blocking(move || may_write(&checking, &path, who.as_deref())).await;
            match allowed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return get::status(dav::status_of(e)),
                Err(_) => return limits::refusal(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            }
        }
        let response = handler.handle_with(config, weak_if_none_match(req)).await;
        if response.status() == http::StatusCode::CREATED
            && let Some(path) = path
        {
            // RFC 4918, 7.3: a LOCK of an unmapped URL creates an empty
            // resource (dav-server only records the lock).
            let created = tokio::task::spawn_blocking(move || create_empty(&fs, &path, who.as_deref())).await;
            if let Ok(Err(e)) = created {
                tracing::warn!("webdav: LOCK could not create its empty resource: {e}");
            }
        }
        return boxed(response);
    }
    boxed(handler.handle_with(config, weak_if_none_match(req)).await)
}

fn transfer_name(transfer: &Transfer) -> &'static str {
    match transfer {
        Transfer::Copy(_) => "COPY",
        Transfer::Move(_) => "MOVE",
    }
}

/// `path`, if `who` may give it explicit times (its owner's right).
fn times_settable(
    fs: &Fs,
    path: &[u8],
    who: Option<&Identity>,
) -> Result<crate::fs::Attr, crate::fs::FsError> {
    let target = fs.resolve_following_as(path, who)?;
    who.map_or(Ok(()), |who| who.require_owner(&target))?;
    Ok(target)
}

/// Give `path` the times `change` sets, as `who`.
fn set_times(
    fs: &Fs,
    path: &[u8],
    change: &crate::fs::SetAttr,
    who: Option<&Identity>,
) -> Result<(), crate::fs::FsError> {
    let target = times_settable(fs, path, who)?;
    fs.setattr(target.ino, change, &dav::caller_for(who)).map(drop)
}

/// Where Prometheus scrapes this server.
const METRICS_PATH: &str = "/.tsmfs/metrics";

/// Totals (file count, bytes, dedup ratio) in a scrape may be this old:
/// they count every row.
const METRICS_TOTALS_AGE: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /.tsmfs/metrics`: every metric in the OpenMetrics text format.
async fn metrics(shared: &Shared, method: &http::Method) -> http::Response<ResponseBody> {
    if !matches!(*method, http::Method::GET | http::Method::HEAD) {
        let mut refused = limits::refusal(http::StatusCode::METHOD_NOT_ALLOWED, "metrics are read with GET");
        refused.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    let fs = shared.assets.fs().clone();
    let text =
        tokio::task::spawn_blocking(move || fs.metrics_with_totals(METRICS_TOTALS_AGE).map(|m| m.render()));
    let text = match text.await {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return get::status(dav::status_of(e)),
        Err(_) => return limits::refusal(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    let mut response = http::Response::new(if *method == http::Method::HEAD {
        empty_body()
    } else {
        full_body(Bytes::from(text))
    });
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// PROPPATCH, by dav-server; the Win32 times in it (which dav-server only
/// pretends to set) are set once it has accepted the whole request.
async fn proppatch(
    handler: DavHandler,
    config: DavConfig,
    fs: Arc<Fs>,
    who: Option<Arc<Identity>>,
    req: http::Request<http_body_util::Full<Bytes>>,
) -> http::Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(never) => match never {},
    };
    let times = windows::Win32Times::of(&body);
    let req = http::Request::from_parts(parts, http_body_util::Full::new(body));
    let (Some(times), Some(path)) = (times, decoded_path(req.uri())) else {
        return boxed(handler.handle_with(config, weak_if_none_match(req)).await);
    };
    let (checking, checked_path, checked_who) = (fs.clone(), path.clone(), who.clone());
    let allowed = tokio::task::spawn_blocking(move || {
        times_settable(&checking, &checked_path, checked_who.as_deref()).map(drop)
    });
    match allowed.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return get::status(dav::status_of(e)),
        Err(_) => return limits::refusal(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
    let response = boxed(handler.handle_with(config, weak_if_none_match(req)).await);
    let (all_set, response) = windows::all_set(response).await;
    if all_set {
        let applied =
            tokio::task::spawn_blocking(move || set_times(&fs, &path, &times.change(), who.as_deref())).await;
        match applied {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return get::status(dav::status_of(e)),
            Err(_) => return limits::refusal(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        }
    }
    response
}

/// Whether `who` may write `path`: the file if it exists, else the
/// directory it would be created in.
fn may_write(fs: &Fs, path: &[u8], who: Option<&Identity>) -> Result<(), crate::fs::FsError> {
    let Some(who) = who else { return Ok(()) };
    let (parent, name) = fs.resolve_parent_as(path, Some(who))?;
    match fs.lookup(parent.ino, name) {
        Ok(existing) => who.require(&existing, crate::fs::Want::WRITE),
        Err(crate::fs::FsError::NotFound) => who.require(&parent, crate::fs::Want::CHANGE_ENTRIES),
        Err(e) => Err(e),
    }
}

/// An empty file at `path`, unless something is there by now.
fn create_empty(fs: &Fs, path: &[u8], who: Option<&Identity>) -> Result<(), crate::fs::FsError> {
    let (parent, name) = fs.resolve_parent(path)?;
    let caller = dav::caller_for(who);
    let absent = |current: Option<crate::id::ContentId>| current.is_none();
    match fs.put_if(
        parent.ino,
        name,
        &mut std::io::empty(),
        crate::fs::PutOptions::default(),
        &caller,
        &absent,
    ) {
        Ok(_) | Err(crate::fs::FsError::PreconditionFailed) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `response`, its body's bytes counted in `metrics` as they go out.
fn counted(
    response: http::Response<ResponseBody>,
    metrics: &Arc<crate::metrics::Metrics>,
) -> http::Response<ResponseBody> {
    // A body of known length (in memory, or empty) is counted whole now:
    // wrapping it would cost every small response an allocation.
    if let Some(len) = hyper::body::Body::size_hint(response.body()).exact() {
        metrics.http_body_sent(len);
        return response;
    }
    response.map(|inner| Counted { inner, metrics: metrics.clone() }.boxed_unsync())
}

/// A body whose data frames are counted as they are sent. Its length
/// stays known (the `Content-Length` hyper writes comes from it).
struct Counted {
    inner: ResponseBody,
    metrics: Arc<crate::metrics::Metrics>,
}

impl hyper::body::Body for Counted {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.metrics.http_body_sent(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request whose handling panics (a bug, ours or a library's) gets a
/// 500 and a log line instead of a dropped connection.
async fn answer_even_if_panicking(
    handling: impl std::future::Future<Output = http::Response<ResponseBody>>,
) -> http::Response<ResponseBody> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!("http: a request panicked (a bug: please report it with the request)");
            limits::refusal(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// Headers that keep what users stored from acting on the server's
/// origin: browsers take the type we send (no sniffing a .txt into HTML),
/// and, unless the tree is a trusted site, run no script or form of it
/// and give it no access to the origin's cookies, credentials or storage
/// (CSP sandbox, an opaque origin).
fn inert(headers: &mut http::HeaderMap, sandboxed: bool) {
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if sandboxed {
        headers.insert(http::header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    }
}

fn boxed(response: http::Response<Body>) -> http::Response<ResponseBody> {
    response.map(|body| body.boxed_unsync())
}

/// Bytes per read of a file's body.
const READ_BUF_SIZE: usize = 256 * 1024;

/// Cache-Control for GET and HEAD of files, by path prefix: the longest
/// matching prefix wins; the default is `no-cache` (keep, but revalidate:
/// cheap with strong ETags). By-hash URLs are always immutable.
#[derive(Clone, Debug)]
pub struct CachePolicy {
    rules: Vec<(Vec<u8>, HeaderValue)>,
    default: HeaderValue,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy { rules: Vec::new(), default: HeaderValue::from_static("no-cache") }
    }
}

impl CachePolicy {
    /// Rules `PREFIX=VALUE`, e.g. `/assets/=public, max-age=3600`.
    pub fn parse(rules: &[String]) -> Result<CachePolicy, String> {
        let mut policy = CachePolicy::default();
        for rule in rules {
            let (prefix, value) =
                rule.split_once('=').ok_or_else(|| format!("cache rule {rule:?}: expected PREFIX=VALUE"))?;
            if !prefix.starts_with('/') {
                return Err(format!("cache rule {rule:?}: the prefix must start with /"));
            }
            let value = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("cache rule {rule:?}: not a valid header value"))?;
            policy.rules.push((prefix.as_bytes().to_vec(), value));
        }
        // Longest prefix first, so the first match is the most specific.
        policy.rules.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(policy)
    }

    fn for_path(&self, path: &[u8]) -> HeaderValue {
        self.rules
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
            .map_or_else(|| self.default.clone(), |(_, value)| value.clone())
    }
}

/// How the HTTP server behaves.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Cache-Control of files.
    pub cache_policy: CachePolicy,
    /// Who may use the server (HTTP Basic); `None`: everyone.
    pub users: Option<Arc<auth::Users>>,
    /// HTTPS (see [`tls::server_config`]); `None`: plain HTTP.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Host names answered besides the listen address and `localhost`.
    pub host_names: Vec<String>,
    /// Serve HTML, SVG and the like as an ordinary site, without
    /// `Content-Security-Policy: sandbox`.
    pub trusted_content: bool,
    /// Whom requests act as (see [`IdentityPolicy`]).
    pub identity: IdentityPolicy,
    /// How long a request body may send nothing before the request ends
    /// with 408 (default [`limits::BODY_IDLE_TIMEOUT`]).
    pub body_timeout: Option<std::time::Duration>,
    /// Give files' MD5s in `oc:checksums` too (computed when first asked
    /// for, then kept), for clients that compare MD5.
    pub md5: bool,
}

impl ServerOptions {
    fn body_timeout(&self) -> std::time::Duration {
        self.body_timeout.unwrap_or(limits::BODY_IDLE_TIMEOUT)
    }
}

/// Counters of a server (for tests and monitoring).
#[derive(Debug, Default)]
pub struct Stats {
    compressions: std::sync::atomic::AtomicU64,
}

impl Stats {
    /// Compressed variants computed (not loaded from the store).
    pub fn compressions(&self) -> u64 {
        self.compressions.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What every connection shares.
struct Shared {
    handler: DavHandler,
    assets: assets::Assets,
    variants: Arc<variants::Variants>,
    options: ServerOptions,
    /// The Host values answered; `None`: any (a Unix socket, which no
    /// web page can reach).
    hosts: Option<host::AllowedHosts>,
    stats: Arc<Stats>,
}
