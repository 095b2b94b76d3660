//! tsmfs ("that's so meta" filesystem): one tree of files, stored by
//! content, served over FUSE and WebDAV at once.
//!
//! - [`id`]: content ids (`hi/lo`), inode numbers, handles.
//! - [`store`]: immutable object files keyed by content id.
//! - [`meta`]: inodes, names, contents, xattrs, locks and the change log in
//!   SQLite.
//! - [`http`]: the WebDAV server.
//! - [`fs`]: the core API every frontend calls; it keeps store and
//!   metadata consistent and emits change events.
//! - [`metrics`]: what the frontends and the core count, for Prometheus.

#![deny(missing_docs)]

pub mod fs;
pub mod fuse;
pub mod http;
pub mod id;
pub mod meta;
pub mod metrics;
pub mod store;
