//! Integration tests, built as one binary. Each module is one topic.

// The content store: dedupe, the real SHA-1 collision pair, object files.
mod store;
// Names: create, link, unlink, rename in every form, readdir cursors.
mod namespace;
// Open files: staging, commit, snapshots, open-unlinked, truncate.
mod io;
// Attributes, xattrs, change log and events.
mod attrs;
// WebDAV locks: conflicts, coverage, expiry, restarts.
mod locks;
// Randomized operation sequences checked against a model.
mod model;
// The `tsmfs` binary: every subcommand and its errors.
mod cli;
// The FUSE mount, through ordinary system calls (root, /dev/fuse).
mod fuse;
// Random operation sequences on the mount and on a native directory.
mod fuse_model;
// Everyday tools (cp, tar, git, rename-over readers) on the mount and on a
// native directory.
mod tools;

mod util;

// The WebDAV server over HTTP, with curl and litmus.
mod webdav;
// Real WebDAV clients: rclone, cadaver, davfs2, Chromium.
mod webdav_clients;
// `tsmfs serve`: FUSE and WebDAV coherent in one process.
mod serve;
// Static assets: compressed variants, in an in-process server.
mod assets;
// fsck, scrub and gc against damage done on purpose.
mod check;
// SIGKILL at random moments under mixed writes: nothing acknowledged lost.
mod crash;
// Hostile HTTP input: random requests, limits and their statuses.
mod hostile;
// Password checks under attack: timing, throttling, memory.
mod auth;
// A full disk and read-only media (tmpfs mounts, root).
mod disk;
