//! The Win32 times Windows' WebDAV client sets by PROPPATCH after each
//! save (`Win32CreationTime`, `Win32LastAccessTime`,
//! `Win32LastModifiedTime`, as HTTP dates). dav-server answers them 200
//! without setting anything; here they are set, once dav-server has
//! accepted the PROPPATCH as a whole (its lock and permission checks,
//! all or nothing).

use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::propfind::MICROSOFT;
use crate::fs::{SetAttr, TimeSet};

/// The times one PROPPATCH sets, in ns since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Win32Times {
    created: Option<i64>,
    accessed: Option<i64>,
    modified: Option<i64>,
}

impl Win32Times {
    /// The Win32 times a PROPPATCH body sets; `None` if it sets none, or
    /// is not one (dav-server answers what it cannot read). A time that
    /// is not an HTTP date is left out: dav-server refuses it (409).
    pub(super) fn of(body: &[u8]) -> Option<Win32Times> {
        let root = xmltree::Element::parse(body).ok()?;
        let mut times = Win32Times::default();
        let sets = root.children.iter().filter_map(|n| n.as_element()).filter(|e| is_dav(e, "set"));
        for prop in sets.flat_map(|set| set.children.iter().filter_map(|n| n.as_element())) {
            if !is_dav(prop, "prop") {
                continue;
            }
            for value in prop.children.iter().filter_map(|n| n.as_element()) {
                if value.namespace.as_deref() != Some(MICROSOFT) {
                    continue;
                }
                let slot = match value.name.as_str() {
                    "Win32CreationTime" => &mut times.created,
                    "Win32LastAccessTime" => &mut times.accessed,
                    "Win32LastModifiedTime" => &mut times.modified,
                    _ => continue,
                };
                *slot = value.get_text().and_then(|text| http_date_ns(text.trim()));
            }
        }
        (times != Win32Times::default()).then_some(times)
    }

    /// The change that sets them.
    pub(super) fn change(self) -> SetAttr {
        SetAttr {
            btime: self.created,
            atime: self.accessed.map(TimeSet::At),
            mtime: self.modified.map(TimeSet::At),
            ..SetAttr::default()
        }
    }
}

fn is_dav(element: &xmltree::Element, name: &str) -> bool {
    element.namespace.as_deref() == Some("DAV:") && element.name == name
}

fn http_date_ns(text: &str) -> Option<i64> {
    let since = httpdate::parse_http_date(text).ok()?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_nanos()).ok()
}

/// Whether a PROPPATCH answer says every property was set: a 207 whose
/// every status is 200 (its body is small, and is kept).
pub(super) async fn all_set(
    response: http::Response<super::ResponseBody>,
) -> (bool, http::Response<super::ResponseBody>) {
    if response.status() != http::StatusCode::MULTI_STATUS {
        return (false, response);
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::warn!("webdav: reading a PROPPATCH answer: {e}");
            Bytes::new()
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut statuses = text.match_indices("HTTP/1.1 ").map(|(at, _)| &text[at + 9..]);
    let all_ok = statuses.clone().next().is_some() && statuses.all(|rest| rest.starts_with("200"));
    (all_ok, http::Response::from_parts(parts, super::full_body(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_times_of_a_windows_proppatch_are_read() {
        let body = br#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:"
            xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop>
            <Z:Win32CreationTime>Mon, 01 Jan 2024 08:00:00 GMT</Z:Win32CreationTime>
            <Z:Win32LastModifiedTime>Wed, 03 Jan 2024 10:00:00 GMT</Z:Win32LastModifiedTime>
            <Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;
        let times = Win32Times::of(body).expect("times");
        assert_eq!(times.created, Some(1_704_096_000_000_000_000));
        assert_eq!(times.modified, Some(1_704_276_000_000_000_000));
        assert_eq!(times.accessed, None);
        let none = br#"<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:x">1</x></D:prop></D:set></D:propertyupdate>"#;
        assert_eq!(Win32Times::of(none), None);
        assert_eq!(Win32Times::of(b"not xml"), None);
    }
}
