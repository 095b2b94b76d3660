//! dav-server's lock system over the fs core's persistent locks.

use std::time::{Duration, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures_util::FutureExt;
use std::sync::Arc;
use xmltree::Element;

use crate::fs::{Caller, Fs, FsError, LockHolder, LockRequest, Origin, PathLock, system_time};

/// Locks kept in SQLite: they survive a restart.
#[derive(Clone, Debug)]
pub struct SqlLocks {
    fs: Arc<Fs>,
}

impl SqlLocks {
    /// Locks of `fs`.
    pub fn new(fs: Arc<Fs>) -> Box<SqlLocks> {
        Box::new(SqlLocks { fs })
    }
}

fn caller() -> Caller {
    Caller::process(Origin::WebDav)
}

/// Run a core call off the async workers. Lock calls answer yes or no,
/// so a failure of the store itself is logged and counts as `failed`.
fn blocking<T: Send + 'static>(
    failed: T,
    f: impl FnOnce() -> Result<T, FsError> + Send + 'static,
) -> LsFuture<'static, T> {
    async move {
        match tokio::task::spawn_blocking(f).await {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                tracing::error!("webdav locks: {e}");
                failed
            }
            Err(e) => {
                tracing::error!("webdav locks: blocking task failed: {e}");
                failed
            }
        }
    }
    .boxed()
}

/// Bind every element's prefix to its namespace. dav-server renames the
/// owner element's prefix to `D` without declaring it, which would not
/// parse back.
fn bind_prefixes(element: &mut Element) {
    if let (Some(prefix), Some(namespace)) = (&element.prefix, &element.namespace) {
        element
            .namespaces
            .get_or_insert_with(xmltree::Namespace::empty)
            .force_put(prefix.clone(), namespace.clone());
    }
    for child in element.children.iter_mut() {
        if let xmltree::XMLNode::Element(child) = child {
            bind_prefixes(child);
        }
    }
}

fn owner_xml(owner: &Element) -> Option<Vec<u8>> {
    let mut owner = owner.clone();
    bind_prefixes(&mut owner);
    let config = xmltree::EmitterConfig::new().write_document_declaration(false);
    let mut xml = Vec::new();
    match owner.write_with_config(&mut xml, config) {
        Ok(()) => Some(xml),
        Err(e) => {
            tracing::warn!("webdav locks: owner element not kept: {e}");
            None
        }
    }
}

fn dav_lock(lock: PathLock) -> DavLock {
    let url = super::url_path(&lock.path);
    let path = match DavPath::new(if url.is_empty() { "/" } else { &url }) {
        Ok(path) => path,
        Err(e) => {
            tracing::warn!("webdav locks: stored path {url:?}: {e:?}");
            DavPath::new("/").unwrap_or_else(|_| unreachable!("\"/\" is a valid path"))
        }
    };
    DavLock {
        token: lock.token,
        path: Box::new(path),
        principal: lock.principal,
        owner: lock.owner_xml.and_then(|xml| Element::parse(&xml[..]).ok()).map(Box::new),
        timeout_at: lock.expires_ns.map(system_time),
        timeout: lock.timeout_s.map(Duration::from_secs),
        shared: lock.shared,
        deep: lock.deep,
    }
}

/// What a failed lock call reports when no real lock is in the way.
fn placeholder(path: &DavPath) -> DavLock {
    DavLock {
        token: String::new(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: Some(SystemTime::now()),
        timeout: None,
        shared: false,
        deep: false,
    }
}

impl DavLockSystem for SqlLocks {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let fs = self.fs.clone();
        let request = LockRequest {
            path: path.as_bytes().to_vec(),
            principal: principal.map(str::to_owned),
            owner_xml: owner.and_then(owner_xml),
            timeout_s: timeout.map(|d| d.as_secs()),
            shared,
            deep,
        };
        blocking(Err(placeholder(path)), move || {
            Ok(fs.lock_path(&request, &caller())?.map(dav_lock).map_err(dav_lock))
        })
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let (fs, path, token) = (self.fs.clone(), path.as_bytes().to_vec(), token.to_owned());
        blocking(Err(()), move || {
            Ok(if fs.unlock_path(&path, &token, &caller())? { Ok(()) } else { Err(()) })
        })
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let (fs, path, token) = (self.fs.clone(), path.as_bytes().to_vec(), token.to_owned());
        let timeout_s = timeout.map(|d| d.as_secs());
        blocking(Err(()), move || {
            Ok(fs.refresh_lock(&path, &token, timeout_s, &caller())?.map(dav_lock).ok_or(()))
        })
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let fs = self.fs.clone();
        let (key, principal) = (path.as_bytes().to_vec(), principal.map(str::to_owned));
        let tokens = submitted_tokens.to_vec();
        blocking(Err(placeholder(path)), move || {
            let holder = LockHolder {
                principal: principal.as_deref(),
                any_principal: ignore_principal,
                tokens: &tokens,
            };
            Ok(fs.check_locks(&key, deep, &holder)?.map_err(dav_lock))
        })
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let (fs, path) = (self.fs.clone(), path.as_bytes().to_vec());
        blocking(Vec::new(), move || Ok(fs.locks_covering(&path)?.into_iter().map(dav_lock).collect()))
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let (fs, path) = (self.fs.clone(), path.as_bytes().to_vec());
        blocking(Err(()), move || fs.remove_locks_under(&path, &caller()).map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_elements_round_trip() {
        let owner = Element::parse(&b"<D:owner xmlns:D=\"DAV:\"><D:href>me</D:href></D:owner>"[..]).unwrap();
        let back = Element::parse(&owner_xml(&owner).expect("serialized")[..]).unwrap();
        assert_eq!(back, owner);
        // As dav-server hands it over: prefix `D`, only a default namespace.
        let mut renamed = Element::parse(&b"<owner xmlns=\"DAV:\">litmus test suite</owner>"[..]).unwrap();
        renamed.prefix = Some("D".into());
        let back = Element::parse(&owner_xml(&renamed).expect("serialized")[..]).expect("parses back");
        assert_eq!(
            (back.namespace.as_deref(), back.get_text().as_deref()),
            (Some("DAV:"), Some("litmus test suite"))
        );
    }
}
