//! PROPFIND (RFC 4918, 9.1), answered by us rather than dav-server:
//! - a Depth 1 listing reads each page of entries, their attributes and
//!   dead properties in one snapshot (two queries per 1,024 entries) and
//!   the locks below the collection in one more, never a query per entry;
//! - the response streams out page by page while later pages are read;
//! - `getetag` carries the quotes the `ETag` header has (dav-server
//!   leaves them out, and clients such as davfs2 compare the two).

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::{ResponseBody, escape_xml, etag_of, url_path};
use crate::fs::{
    Attr, DeadProps, FileKind, Fs, FsError, Identity, PathLock, Space, Want, lock_key, now_ns, system_time,
};

/// Entries per core call while listing.
const PAGE: u32 = 1024;
/// Response bytes gathered before they are sent on.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the listing task and the connection.
const QUEUE: usize = 4;

const DAV: &str = "DAV:";
/// ownCloud's namespace, whose `checksums` property rclone and the
/// ownCloud/Nextcloud clients read.
const OWNCLOUD: &str = "http://owncloud.org/ns";
/// The namespace of the Win32 properties Windows' WebDAV client reads and
/// sets (times as HTTP dates).
pub(super) const MICROSOFT: &str = "urn:schemas-microsoft-com:";

/// What the client asked for.
#[derive(Debug)]
enum Query {
    /// Live and dead properties with values.
    AllProp,
    /// Names only.
    PropName,
    /// These properties, as (namespace, local name).
    Props(Vec<(Option<String>, String)>),
}

impl Query {
    fn needs_dead_props(&self) -> bool {
        match self {
            Query::AllProp | Query::PropName => true,
            Query::Props(names) => {
                names.iter().any(|(ns, local)| LiveProp::find(ns.as_deref(), local).is_none())
            }
        }
    }

    fn needs_space(&self) -> bool {
        match self {
            Query::Props(names) => names
                .iter()
                .any(|(ns, local)| LiveProp::find(ns.as_deref(), local).is_some_and(LiveProp::is_quota)),
            _ => false,
        }
    }

    fn needs_locks(&self) -> bool {
        match self {
            Query::AllProp => true,
            Query::PropName => false,
            Query::Props(names) => {
                names.iter().any(|(ns, local)| ns.as_deref() == Some(DAV) && local == "lockdiscovery")
            }
        }
    }
}

/// The live properties we compute (RFC 4918, 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LiveProp {
    CreationDate,
    GetContentLength,
    GetContentType,
    GetEtag,
    GetLastModified,
    LockDiscovery,
    ResourceType,
    SupportedLock,
    /// `oc:checksums`: `SHA1:<hex>` of a file's bytes. Only when asked
    /// for by name, as ownCloud does (not in allprop).
    OcChecksums,
    /// RFC 4331 quota of a collection: the bytes free on the disk under
    /// the data directory, and those in use there. Not in allprop (4331,
    /// 3): they cost a statvfs.
    QuotaAvailableBytes,
    QuotaUsedBytes,
    /// The times Windows shows, by name only.
    Win32CreationTime,
    Win32LastAccessTime,
    Win32LastModifiedTime,
    /// Windows' attribute bits, as dav-server computes them: hidden for a
    /// dot name, directory, archive for files.
    Win32FileAttributes,
}

impl LiveProp {
    const ALL: [LiveProp; 8] = [
        LiveProp::CreationDate,
        LiveProp::GetContentLength,
        LiveProp::GetContentType,
        LiveProp::GetEtag,
        LiveProp::GetLastModified,
        LiveProp::LockDiscovery,
        LiveProp::ResourceType,
        LiveProp::SupportedLock,
    ];

    fn name(self) -> &'static str {
        match self {
            LiveProp::CreationDate => "creationdate",
            LiveProp::GetContentLength => "getcontentlength",
            LiveProp::GetContentType => "getcontenttype",
            LiveProp::GetEtag => "getetag",
            LiveProp::GetLastModified => "getlastmodified",
            LiveProp::LockDiscovery => "lockdiscovery",
            LiveProp::ResourceType => "resourcetype",
            LiveProp::SupportedLock => "supportedlock",
            LiveProp::OcChecksums => "checksums",
            LiveProp::QuotaAvailableBytes => "quota-available-bytes",
            LiveProp::QuotaUsedBytes => "quota-used-bytes",
            LiveProp::Win32CreationTime => "Win32CreationTime",
            LiveProp::Win32LastAccessTime => "Win32LastAccessTime",
            LiveProp::Win32LastModifiedTime => "Win32LastModifiedTime",
            LiveProp::Win32FileAttributes => "Win32FileAttributes",
        }
    }

    fn find(namespace: Option<&str>, local: &str) -> Option<LiveProp> {
        let by_name = |props: &[LiveProp]| props.iter().copied().find(|p| p.name() == local);
        match namespace {
            Some(DAV) => by_name(&LiveProp::ALL)
                .or_else(|| by_name(&[LiveProp::QuotaAvailableBytes, LiveProp::QuotaUsedBytes])),
            Some(OWNCLOUD) => by_name(&[LiveProp::OcChecksums]),
            Some(MICROSOFT) => by_name(&[
                LiveProp::Win32CreationTime,
                LiveProp::Win32LastAccessTime,
                LiveProp::Win32LastModifiedTime,
                LiveProp::Win32FileAttributes,
            ]),
            _ => None,
        }
    }

    fn is_quota(self) -> bool {
        matches!(self, LiveProp::QuotaAvailableBytes | LiveProp::QuotaUsedBytes)
    }

    /// Whether `attr` has this property at all.
    fn applies(self, attr: &Attr) -> bool {
        match self {
            LiveProp::GetContentLength => attr.kind == FileKind::File,
            LiveProp::GetEtag => etag_of(attr).is_some(),
            // Known only when the client may read the file (see `shown`).
            LiveProp::OcChecksums => attr.kind == FileKind::File && attr.content_id().is_some(),
            LiveProp::QuotaAvailableBytes | LiveProp::QuotaUsedBytes => attr.kind == FileKind::Dir,
            _ => true,
        }
    }
}

/// One resource to describe.
struct Resource<'a> {
    href: &'a str,
    name: &'a [u8],
    attr: &'a Attr,
    dead: &'a DeadProps,
    locks: &'a [&'a PathLock],
    /// The disk's space, when the query asks for quota.
    space: Option<Space>,
}

/// Answer a PROPFIND.
pub(super) async fn propfind(
    fs: Arc<Fs>,
    who: Option<Arc<Identity>>,
    md5: bool,
    req: Request<http_body_util::Full<bytes::Bytes>>,
) -> Response<ResponseBody> {
    let depth = match req.headers().get("depth").map(HeaderValue::as_bytes) {
        Some(b"0") => 0,
        Some(b"1") => 1,
        // RFC 4918, 9.1: no Depth means infinity, which servers may refuse.
        Some(v) if v.eq_ignore_ascii_case(b"infinity") => return finite_depth_only(),
        None => return finite_depth_only(),
        Some(_) => return status(StatusCode::BAD_REQUEST),
    };
    let Some(path) = super::decoded_path(req.uri()) else { return status(StatusCode::BAD_REQUEST) };
    // Read and checked against the limits already (`limits::bounded_xml`).
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(never) => match never {},
    };
    let Some(query) = parse_query(&body) else { return status(StatusCode::BAD_REQUEST) };

    let (lookup_fs, lookup_path, lookup_who) = (fs.clone(), path.clone(), who.clone());
    let target = match tokio::task::spawn_blocking(move || {
        let who = lookup_who.as_deref();
        let target = lookup_fs.resolve_following_as(&lookup_path, who)?;
        // Listing a collection's members reads it.
        if depth == 1 && target.kind == FileKind::Dir {
            who.map_or(Ok(()), |who| who.require(&target, Want::READ))?;
        }
        Ok::<_, FsError>(target)
    })
    .await
    {
        Ok(Ok(attr)) => attr,
        Ok(Err(FsError::NotFound | FsError::NotDir | FsError::NameTooLong)) => {
            return status(StatusCode::NOT_FOUND);
        }
        Ok(Err(e)) => return status(super::dav::status_of(e)),
        Err(e) => {
            tracing::error!("webdav: PROPFIND: blocking task failed: {e}");
            return status(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };

    let (sender, receiver) = mpsc::channel(QUEUE);
    tokio::task::spawn_blocking(move || {
        let listing = Listing {
            fs: &fs,
            who: who.as_deref(),
            md5,
            query: &query,
            sender: &sender,
            out: String::with_capacity(CHUNK * 2),
        };
        if let Err(e) = listing.run(&path, &target, depth) {
            tracing::warn!("webdav: PROPFIND listing ended early: {e}");
            // The status is sent already: break the body so the client
            // cannot take a partial listing for a whole one.
            let _ = sender.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((chunk.map(hyper::body::Frame::data), receiver))
    });
    let mut response = Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
    *response.status_mut() = StatusCode::MULTI_STATUS;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn status(code: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(super::empty_body());
    *response.status_mut() = code;
    response
}

/// 403 with the precondition RFC 4918 names for a refused infinite depth.
fn finite_depth_only() -> Response<ResponseBody> {
    let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\
               <D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>";
    let mut response = Response::new(super::full_body(Bytes::from_static(xml.as_bytes())));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml; charset=utf-8"));
    response
}

/// The request body: empty means allprop (RFC 4918, 9.1).
fn parse_query(body: &[u8]) -> Option<Query> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Some(Query::AllProp);
    }
    let root = xmltree::Element::parse(body).ok()?;
    if root.name != "propfind" || root.namespace.as_deref() != Some(DAV) {
        return None;
    }
    let mut children = root.children.iter().filter_map(|node| node.as_element());
    let first = children.find(|e| e.namespace.as_deref() == Some(DAV))?;
    match first.name.as_str() {
        // `include` may follow allprop; every live property we have is
        // in allprop already.
        "allprop" => Some(Query::AllProp),
        "propname" => Some(Query::PropName),
        "prop" => Some(Query::Props(
            first
                .children
                .iter()
                .filter_map(|node| node.as_element())
                .map(|e| (e.namespace.clone(), e.name.clone()))
                .collect(),
        )),
        _ => None,
    }
}

/// A response being written and sent in chunks.
struct Listing<'a> {
    fs: &'a Fs,
    /// Whose permissions decide what of each resource is shown.
    who: Option<&'a Identity>,
    /// `oc:checksums` has the MD5 too.
    md5: bool,
    query: &'a Query,
    sender: &'a mpsc::Sender<std::io::Result<Bytes>>,
    out: String,
}

/// The client went away; stop listing.
#[derive(Debug, thiserror::Error)]
#[error("client disconnected")]
struct Gone;

#[derive(Debug, thiserror::Error)]
enum ListingError {
    #[error(transparent)]
    Core(#[from] FsError),
    #[error(transparent)]
    Gone(#[from] Gone),
}

impl Listing<'_> {
    fn run(mut self, path: &[u8], target: &Attr, depth: u8) -> Result<(), ListingError> {
        self.out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">");
        let mut href = url_path(path);
        if target.kind == FileKind::Dir && !href.ends_with('/') {
            href.push('/');
        }
        let readable = self.readable(target);
        let target = &self.shown(target.clone())?;
        let dead = if self.query.needs_dead_props() && readable {
            self.fs.dead_props(target.ino)?
        } else {
            Vec::new()
        };
        let wants_locks = self.query.needs_locks();
        let covering = if wants_locks { self.fs.locks_covering(path)? } else { Vec::new() };
        let name = path.rsplit(|&b| b == b'/').find(|s| !s.is_empty()).unwrap_or(b"");
        let own: Vec<&PathLock> = covering.iter().collect();
        let space = if self.query.needs_space() { Some(self.fs.space()?) } else { None };
        self.resource(&Resource { href: &href, name, attr: target, dead: &dead, locks: &own, space })?;

        if depth == 1 && target.kind == FileKind::Dir {
            let key = lock_key(path).to_vec();
            // Locks on an entry: the collection's deep ones, and its own.
            let inherited: Vec<&PathLock> = covering.iter().filter(|l| l.deep).collect();
            let below = if wants_locks { self.fs.locks_below(path)? } else { Vec::new() };
            let mut cursor = 0;
            loop {
                let page = self.fs.readdir_with_dead_props(target.ino, cursor, PAGE)?;
                let Some(last) = page.last() else { break };
                cursor = last.0.cursor;
                for (row, dead) in &page {
                    // A link is listed as what it names, when that is in the tree.
                    let followed = (row.inode.kind == FileKind::Symlink)
                        .then(|| super::dav::followed_entry(self.fs, path, &row.name))
                        .flatten();
                    let attr = followed.as_ref().unwrap_or(&row.inode);
                    let readable = self.readable(attr);
                    let followed_dead = match &followed {
                        Some(named) if self.query.needs_dead_props() && readable => {
                            Some(self.fs.dead_props(named.ino)?)
                        }
                        _ => None,
                    };
                    let hidden = Vec::new();
                    let dead = match (&followed_dead, readable) {
                        (Some(named), _) => named,
                        (None, true) if followed.is_none() => dead,
                        _ => &hidden,
                    };
                    let attr = &self.shown(attr.clone())?;
                    let mut child_href = href.clone();
                    child_href.push_str(&url_path(&row.name));
                    if attr.kind == FileKind::Dir {
                        child_href.push('/');
                    }
                    let mut locks = inherited.clone();
                    if !below.is_empty() {
                        let mut child_key = key.clone();
                        child_key.push(b'/');
                        child_key.extend_from_slice(&row.name);
                        locks.extend(below.iter().filter(|l| l.path == child_key));
                    }
                    let resource =
                        Resource { href: &child_href, name: &row.name, attr, dead, locks: &locks, space };
                    self.resource(&resource)?;
                }
            }
        }
        self.out.push_str("</D:multistatus>\n");
        self.send()
    }

    /// Whether the client may read `attr`: its content id (the ETag says
    /// what the bytes are) and dead properties are shown only then, as the
    /// mount shows extended attributes only to who may read the file.
    fn readable(&self, attr: &Attr) -> bool {
        self.who.is_none_or(|who| who.may(attr, Want::READ))
    }

    /// `attr` as the client may see it: with its content id if readable.
    fn shown(&self, attr: Attr) -> Result<Attr, FsError> {
        if self.readable(&attr) { self.fs.with_content_id(attr) } else { Ok(Attr { content: None, ..attr }) }
    }

    /// Send what is gathered.
    fn send(&mut self) -> Result<(), ListingError> {
        let chunk = Bytes::from(std::mem::replace(&mut self.out, String::with_capacity(CHUNK * 2)));
        self.sender.blocking_send(Ok(chunk)).map_err(|_| Gone)?;
        Ok(())
    }

    /// The MD5 `oc:checksums` shows for `attr` (with `--md5`), if known.
    fn md5_of(&self, attr: &Attr) -> Option<[u8; 16]> {
        if !self.md5 || attr.kind != FileKind::File {
            return None;
        }
        let id = attr.content_id()?;
        self.fs.md5_of(&id).map_err(|e| tracing::warn!("webdav: MD5 of {}: {e}", id.etag_tag())).ok()
    }

    fn resource(&mut self, r: &Resource<'_>) -> Result<(), ListingError> {
        let md5 = match self.query {
            Query::Props(names)
                if names.iter().any(|(ns, local)| {
                    LiveProp::find(ns.as_deref(), local) == Some(LiveProp::OcChecksums)
                }) =>
            {
                self.md5_of(r.attr)
            }
            _ => None,
        };
        let out = &mut self.out;
        let _ = write!(out, "<D:response><D:href>{}</D:href>", escape_xml(r.href));
        match self.query {
            Query::PropName => {
                out.push_str("<D:propstat><D:prop>");
                for prop in LiveProp::ALL.into_iter().filter(|p| p.applies(r.attr)) {
                    let _ = write!(out, "<D:{}/>", prop.name());
                }
                for (name, _) in r.dead {
                    empty_element(out, name);
                }
                out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
            }
            Query::AllProp => {
                out.push_str("<D:propstat><D:prop>");
                for prop in LiveProp::ALL {
                    live_value(out, prop, r, None);
                }
                for (_, xml) in r.dead {
                    out.push_str(stored_element(xml));
                }
                out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
            }
            Query::Props(names) => {
                let mut missing = Vec::new();
                out.push_str("<D:propstat><D:prop>");
                for (namespace, local) in names {
                    if let Some(prop) = LiveProp::find(namespace.as_deref(), local) {
                        if !live_value(out, prop, r, md5) {
                            missing.push((namespace, local));
                        }
                        continue;
                    }
                    let clark = format!("{{{}}}{}", namespace.as_deref().unwrap_or(""), local);
                    match r.dead.iter().find(|(name, _)| *name == clark) {
                        Some((_, xml)) => out.push_str(stored_element(xml)),
                        None => missing.push((namespace, local)),
                    }
                }
                out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
                if !missing.is_empty() {
                    out.push_str("<D:propstat><D:prop>");
                    for (namespace, local) in missing {
                        let clark = format!("{{{}}}{}", namespace.as_deref().unwrap_or(""), local);
                        empty_element(out, &clark);
                    }
                    out.push_str("</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>");
                }
            }
        }
        out.push_str("</D:response>");
        if self.out.len() >= CHUNK {
            self.send()?;
        }
        Ok(())
    }
}

/// Write `prop` of `r` with its value (`md5`: for `oc:checksums`); false
/// if `r` has no such property.
fn live_value(out: &mut String, prop: LiveProp, r: &Resource<'_>, md5: Option<[u8; 16]>) -> bool {
    let attr = r.attr;
    if !prop.applies(attr) {
        return false;
    }
    let _ = match prop {
        LiveProp::CreationDate => write!(
            out,
            "<D:creationdate>{}</D:creationdate>",
            humantime::format_rfc3339_seconds(system_time(attr.btime_ns))
        ),
        LiveProp::GetContentLength => write!(out, "<D:getcontentlength>{}</D:getcontentlength>", attr.size),
        LiveProp::GetContentType => {
            let mime = if attr.kind == FileKind::Dir {
                "httpd/unix-directory".to_owned()
            } else {
                let name = String::from_utf8_lossy(r.name);
                mime_guess::from_path(name.as_ref()).first_or_octet_stream().essence_str().to_owned()
            };
            write!(out, "<D:getcontenttype>{}</D:getcontenttype>", escape_xml(&mime))
        }
        LiveProp::GetEtag => {
            // Tags are hex, digits and `-` between quotes: nothing to escape,
            // and clients compare this text with the ETag header.
            write!(out, "<D:getetag>{}</D:getetag>", etag_of(attr).unwrap_or_default())
        }
        LiveProp::GetLastModified => write!(
            out,
            "<D:getlastmodified>{}</D:getlastmodified>",
            httpdate::fmt_http_date(system_time(attr.mtime_ns))
        ),
        LiveProp::ResourceType => {
            out.push_str(if attr.kind == FileKind::Dir {
                "<D:resourcetype><D:collection/></D:resourcetype>"
            } else {
                "<D:resourcetype/>"
            });
            Ok(())
        }
        LiveProp::OcChecksums => write!(
            out,
            "<oc:checksums xmlns:oc=\"{OWNCLOUD}\"><oc:checksum>SHA1:{}{}</oc:checksum></oc:checksums>",
            attr.content_id().map(|id| id.lo_hex()).unwrap_or_default(),
            md5.map(|md5| format!(" MD5:{}", hex::encode(md5))).unwrap_or_default()
        ),
        LiveProp::QuotaAvailableBytes | LiveProp::QuotaUsedBytes => {
            let Some(space) = r.space else { return false };
            let (name, bytes) = match prop {
                LiveProp::QuotaAvailableBytes => ("quota-available-bytes", space.available),
                _ => ("quota-used-bytes", space.used),
            };
            write!(out, "<D:{name}>{bytes}</D:{name}>")
        }
        LiveProp::Win32CreationTime | LiveProp::Win32LastAccessTime | LiveProp::Win32LastModifiedTime => {
            let at = match prop {
                LiveProp::Win32CreationTime => attr.btime_ns,
                LiveProp::Win32LastAccessTime => attr.atime_ns,
                _ => attr.mtime_ns,
            };
            write!(
                out,
                "<W:{name} xmlns:W=\"{MICROSOFT}\">{}</W:{name}>",
                httpdate::fmt_http_date(system_time(at)),
                name = prop.name()
            )
        }
        LiveProp::Win32FileAttributes => {
            const HIDDEN: u32 = 0x2;
            const DIRECTORY: u32 = 0x10;
            const ARCHIVE: u32 = 0x20;
            let kind = if attr.kind == FileKind::Dir { DIRECTORY } else { ARCHIVE };
            let bits = if r.name.starts_with(b".") { kind | HIDDEN } else { kind };
            write!(out, "<W:Win32FileAttributes xmlns:W=\"{MICROSOFT}\">{bits:08x}</W:Win32FileAttributes>")
        }
        LiveProp::SupportedLock => {
            out.push_str(concat!(
                "<D:supportedlock>",
                "<D:lockentry><D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>",
                "<D:lockentry><D:lockscope><D:shared/></D:lockscope><D:locktype><D:write/></D:locktype></D:lockentry>",
                "</D:supportedlock>"
            ));
            Ok(())
        }
        LiveProp::LockDiscovery => {
            out.push_str("<D:lockdiscovery>");
            for lock in r.locks {
                active_lock(out, lock);
            }
            out.push_str("</D:lockdiscovery>");
            Ok(())
        }
    };
    true
}

/// One `DAV:activelock` (RFC 4918, 14.1); the timeout is what is left.
pub(super) fn active_lock(out: &mut String, lock: &PathLock) {
    let scope = if lock.shared { "shared" } else { "exclusive" };
    let depth = if lock.deep { "infinity" } else { "0" };
    let _ = write!(
        out,
        "<D:activelock><D:locktype><D:write/></D:locktype><D:lockscope><D:{scope}/></D:lockscope><D:depth>{depth}</D:depth>"
    );
    if let Some(owner) = &lock.owner_xml {
        out.push_str(stored_element(owner));
    }
    let _ = match lock.expires_ns {
        Some(at) => {
            let left = (at - now_ns()).max(0) as u64;
            write!(out, "<D:timeout>Second-{}</D:timeout>", left.div_ceil(1_000_000_000))
        }
        None => write!(out, "<D:timeout>Infinite</D:timeout>"),
    };
    let mut root = url_path(&lock.path);
    if root.is_empty() {
        root.push('/');
    }
    let _ = write!(
        out,
        "<D:locktoken><D:href>{}</D:href></D:locktoken><D:lockroot><D:href>{}</D:href></D:lockroot></D:activelock>",
        escape_xml(&lock.token),
        escape_xml(&root)
    );
}

/// A stored property element without its XML declaration, if it has one.
fn stored_element(xml: &[u8]) -> &str {
    let text = std::str::from_utf8(xml).unwrap_or("");
    match text.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or("", |(_, element)| element),
        None => text,
    }
}

/// `<name/>` for a Clark name `{namespace}local`, declaring its namespace.
fn empty_element(out: &mut String, clark: &str) {
    let (namespace, local) = match clark.strip_prefix('{').and_then(|rest| rest.split_once('}')) {
        Some((namespace, local)) => (namespace, local),
        None => ("", clark),
    };
    let local = escape_xml(local);
    let _ = match namespace {
        DAV => write!(out, "<D:{local}/>"),
        "" => write!(out, "<{local} xmlns=\"\"/>"),
        namespace => write!(out, "<X:{local} xmlns:X=\"{}\"/>", escape_xml(namespace)),
    };
}

/// Whether a request is a PROPFIND we answer.
pub(super) fn is_propfind(method: &Method) -> bool {
    method.as_str() == "PROPFIND"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_parse_into_queries() {
        assert!(matches!(parse_query(b""), Some(Query::AllProp)));
        assert!(matches!(
            parse_query(b"<D:propfind xmlns:D='DAV:'><D:propname/></D:propfind>"),
            Some(Query::PropName)
        ));
        let Some(Query::Props(names)) =
            parse_query(b"<propfind xmlns='DAV:'><prop><getetag/><z:x xmlns:z='urn:z'/></prop></propfind>")
        else {
            panic!("a prop query");
        };
        assert_eq!(names, [(Some(DAV.into()), "getetag".into()), (Some("urn:z".into()), "x".into())]);
        assert!(parse_query(b"<propfind xmlns='urn:other'><allprop/></propfind>").is_none());
        assert!(parse_query(b"<D:propfind xmlns:D='DAV:'><D:prop>").is_none(), "not well-formed");
    }

    #[test]
    fn stored_elements_lose_their_declaration_and_missing_names_declare_namespaces() {
        assert_eq!(
            stored_element(b"<?xml version=\"1.0\"?><z:a xmlns:z=\"u\">1</z:a>"),
            "<z:a xmlns:z=\"u\">1</z:a>"
        );
        let mut out = String::new();
        empty_element(&mut out, "{urn:a&b}n");
        empty_element(&mut out, "{}plain");
        empty_element(&mut out, "{DAV:}getetag");
        assert_eq!(out, "<X:n xmlns:X=\"urn:a&amp;b\"/><plain xmlns=\"\"/><D:getetag/>");
    }
}
