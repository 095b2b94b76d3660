//! Command-line interface: one function per subcommand.

mod check;
mod import;
mod mount;
mod serve;
mod show;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tsmfs::fs::{Caller, FileKind, Fs, FsError, FsOptions, Origin, PutOptions};
use tsmfs::fuse::MountOptions;
use tsmfs::id::Ino;

/// tsmfs: a content-addressed filesystem served over FUSE and WebDAV.
#[derive(Parser, Debug)]
#[command(name = "tsmfs", version, about, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new, empty data directory.
    Init {
        /// Directory to create (must be new or empty).
        data: PathBuf,
    },
    /// Store one file (or standard input) at PATH, creating parents.
    Put {
        /// Data directory.
        data: PathBuf,
        /// Host file to read, or `-` for standard input.
        src: PathBuf,
        /// Destination path inside the tree.
        path: String,
    },
    /// Write a file's bytes to DEST (or standard output).
    Get {
        /// Data directory.
        data: PathBuf,
        /// Path inside the tree.
        path: String,
        /// Host file to write; standard output if absent or `-`.
        dest: Option<PathBuf>,
    },
    /// List a directory.
    Ls {
        /// Data directory.
        data: PathBuf,
        /// Path inside the tree (default: the root).
        #[arg(default_value = "/")]
        path: String,
        /// Long format: mode, links, owner, size, time, ETag.
        #[arg(short, long)]
        long: bool,
    },
    /// Show a path's attributes, content id and ETag.
    Stat {
        /// Data directory.
        data: PathBuf,
        /// Path inside the tree.
        path: String,
    },
    /// Copy a host directory tree into the tree (recursive, with progress).
    Import {
        /// Data directory.
        data: PathBuf,
        /// Host directory to read.
        hostdir: PathBuf,
        /// Destination directory inside the tree (default: the root).
        #[arg(default_value = "/")]
        path: String,
    },
    /// Mount the tree at MOUNTPOINT through FUSE.
    ///
    /// Runs in the background once mounted (logging to DATA/tsmfs.log)
    /// unless --foreground. Stops cleanly on SIGINT, SIGTERM or
    /// `umount MOUNTPOINT`: open files are committed, then the metadata is
    /// checkpointed.
    Mount {
        /// Data directory.
        data: PathBuf,
        /// Empty directory to mount on.
        mountpoint: PathBuf,
        /// Let every user use the mount, not only the one who mounted it
        /// (FUSE allow_other; the kernel still checks permissions).
        #[arg(long)]
        allow_other: bool,
        /// Refuse every change (EROFS).
        #[arg(long)]
        read_only: bool,
        /// Stay in the foreground and log to stderr.
        #[arg(short, long)]
        foreground: bool,
        /// Let the kernel read file contents straight from the object files
        /// (kernel 6.9+, root). Faster cold reads, but while a file is open
        /// this way, opening it for writing fails with ETXTBSY.
        #[arg(long)]
        passthrough: bool,
        #[command(flatten)]
        durability: DurabilityFlags,
    },
    /// Serve the tree through FUSE and over WebDAV at once, coherently.
    ///
    /// One process, one fs core: what one side writes, the other sees at
    /// once. Stays in the foreground, logs to stderr. If the mount fails
    /// (no /dev/fuse, no permission), serves WebDAV alone and says why.
    /// SIGINT or SIGTERM: stop accepting, finish requests in flight,
    /// unmount, checkpoint, exit 0.
    Serve {
        /// Data directory.
        data: PathBuf,
        /// Empty directory to mount on.
        #[arg(long = "mount", value_name = "MOUNTPOINT")]
        mountpoint: PathBuf,
        /// Refuse every change, on both sides (EROFS, 403).
        #[arg(long)]
        read_only: bool,
        /// Let every user use the mount (FUSE allow_other).
        #[arg(long)]
        allow_other: bool,
        /// Let the kernel read file contents straight from the object files
        /// (see `tsmfs mount --help`).
        #[arg(long)]
        passthrough: bool,
        #[command(flatten)]
        durability: DurabilityFlags,
        #[command(flatten)]
        http: HttpFlags,
    },
    /// Serve the tree over WebDAV (HTTP) until SIGINT or SIGTERM.
    ///
    /// Listens on loopback unless told otherwise; port 0 picks a free
    /// port. The address is printed on stderr.
    Webdav {
        /// Data directory.
        data: PathBuf,
        /// Refuse every change (403).
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        durability: DurabilityFlags,
        #[command(flatten)]
        http: HttpFlags,
    },
    /// Add a user to a password file for --auth-file, or change their
    /// password. The password is read from standard input (one line).
    Passwd {
        /// Password file (rewritten whole, mode 0600).
        file: PathBuf,
        /// User name.
        user: String,
        /// The user id the user's requests act as (default: the system
        /// account of that name, else nobody).
        #[arg(long, value_name = "N")]
        uid: Option<u32>,
        /// Their group id (default: the primary group of --uid's account).
        #[arg(long, value_name = "N", requires = "uid")]
        gid: Option<u32>,
    },
    /// Check the metadata against the store: reference counts, link
    /// counts, dangling entries, missing, stray and unreferenced objects;
    /// and that no file in the data directory lets other users in.
    ///
    /// Needs the data directory to itself (stop `serve` first). Exits 1
    /// if problems are left.
    Fsck {
        /// Data directory.
        data: PathBuf,
        /// Fix what can be fixed without losing data.
        #[arg(long)]
        repair: bool,
    },
    /// Hash every object again (SHA-1 and blake3). Corrupt objects are
    /// moved to DATA/quarantine, so their files fail to read (EIO, HTTP
    /// 500) rather than return bad bytes. Exits 1 if any is corrupt or
    /// missing. Needs the data directory to itself.
    Scrub {
        /// Data directory.
        data: PathBuf,
    },
    /// Remove objects and variants nothing refers to any more (left by a
    /// crash; a running server removes its garbage itself). Safe beside a
    /// running server: each removal is re-checked under the database's
    /// write lock; staging files are then left for the next start.
    Gc {
        /// Data directory.
        data: PathBuf,
    },
    /// Totals: files, logical bytes, stored bytes, dedup ratio.
    Stats {
        /// Data directory.
        data: PathBuf,
    },
}

/// How long committed changes may wait for the disk (`serve`, `webdav`,
/// `mount`).
#[derive(clap::Args, Debug)]
struct DurabilityFlags {
    /// Make every committed change durable within this time (one
    /// filesystem sync for all of them). A close, or a 201 to a PUT, is
    /// visible and survives a crash of tsmfs at once; a power cut may
    /// undo what was not yet synced (never partly). fsync still syncs at
    /// once.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    sync_interval: humantime::Duration,
}

impl DurabilityFlags {
    fn fs_options(&self, read_only: bool) -> FsOptions {
        FsOptions { read_only, sync_interval: *self.sync_interval, ..Default::default() }
    }
}

/// How the HTTP side listens and whom it lets in (`serve`, `webdav`).
#[derive(clap::Args, Debug)]
struct HttpFlags {
    /// Address and port to listen on (loopback unless told otherwise;
    /// port 0 picks a free port), or `unix:PATH` for a Unix socket whose
    /// clients act as the users they run as.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: tsmfs::http::Listen,
    /// Cache-Control for files under a path prefix, as PREFIX=VALUE
    /// (repeatable; the longest prefix wins; default: no-cache), e.g.
    /// --cache-control '/assets/=public, max-age=86400'.
    #[arg(long = "cache-control", value_name = "PREFIX=VALUE")]
    cache_control: Vec<String>,
    /// Require HTTP Basic authentication against this file of users and
    /// argon2 password hashes (see `tsmfs passwd`). It must be private:
    /// no permission for group or others.
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (to everyone
    /// who can reach it).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also answer requests sent to this host name (repeatable). Only the
    /// listen address and `localhost` are answered otherwise, so that a
    /// web page cannot reach the server through a name it points at this
    /// machine (DNS rebinding): 421 for any other name.
    #[arg(long = "host", value_name = "NAME")]
    host_names: Vec<String>,
    /// The tree is a trusted site: let its HTML and SVG run scripts on
    /// the server's origin. By default every response carries
    /// `Content-Security-Policy: sandbox`, so that what one user uploads
    /// cannot act with another viewer's credentials.
    #[arg(long)]
    trusted_content: bool,
    /// Requests without credentials act as this user (default: over
    /// loopback, the local user whose program made the connection; from
    /// elsewhere, the server's own user). Permissions are checked as the
    /// mount checks them.
    #[arg(long, value_name = "UID")]
    anonymous_uid: Option<u32>,
    /// The group of --anonymous-uid (default: that user's primary group).
    #[arg(long, value_name = "GID", requires = "anonymous_uid")]
    anonymous_gid: Option<u32>,
    /// A request body that sends nothing for this long ends its request
    /// (408); what it sent is dropped.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    body_timeout: humantime::Duration,
    /// Give each file's MD5 beside its SHA-1 in `oc:checksums`, for
    /// clients that compare MD5 (rclone's `owncloud` vendor). Each is
    /// computed when first asked for (reading the file) and then kept.
    #[arg(long)]
    md5: bool,
}

impl HttpFlags {
    fn server_options(&self) -> Result<tsmfs::http::ServerOptions> {
        let listen = &self.listen;
        let cache_policy =
            tsmfs::http::CachePolicy::parse(&self.cache_control).map_err(anyhow::Error::msg)?;
        let users = self
            .auth_file
            .as_deref()
            .map(tsmfs::http::auth::Users::load)
            .transpose()?
            .map(std::sync::Arc::new);
        if users.is_none() && !self.insecure_no_auth && !listen.is_local() {
            bail!(
                "refusing to serve {listen} without authentication: anyone who can reach it could read and change \
                 everything. Give --auth-file FILE (make one with `tsmfs passwd FILE USER`), or \
                 --insecure-no-auth if that is really meant"
            );
        }
        if let Some(bad) = self.host_names.iter().find(|name| {
            name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        }) {
            bail!("--host {bad:?}: give a host name (letters, digits, '-', '.', '_'), without a port");
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(tsmfs::http::tls::server_config(cert, key)?),
            _ => None,
        };
        if users.is_some() && tls.is_none() && !listen.is_local() {
            eprintln!(
                "tsmfs: warning: passwords cross the network in clear text (HTTP Basic without TLS: give --tls-cert and --tls-key)"
            );
        }
        Ok(tsmfs::http::ServerOptions {
            cache_policy,
            users,
            tls,
            host_names: self.host_names.clone(),
            trusted_content: self.trusted_content,
            body_timeout: Some(*self.body_timeout),
            md5: self.md5,
            identity: tsmfs::http::IdentityPolicy {
                anonymous: self.anonymous_uid.map(|uid| {
                    (uid, self.anonymous_gid.unwrap_or_else(|| tsmfs::fs::Identity::of_user(uid).gid))
                }),
            },
        })
    }
}

fn passwd(file: &Path, user: &str, ids: Option<(u32, u32)>) -> Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).context("read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("empty password");
    }
    tsmfs::http::auth::set_password(file, user, password, ids)?;
    eprintln!("tsmfs: password of {user} set in {}", file.display());
    Ok(ExitCode::SUCCESS)
}

/// Parse the process arguments (exits with usage on error).
pub fn parse() -> Args {
    Args::parse()
}

/// Run the parsed command.
pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Init { data } => init(&data),
        Command::Put { data, src, path } => put(&data, &src, &path),
        Command::Get { data, path, dest } => show::get(&open_read_only(&data)?, &path, dest.as_deref()),
        Command::Ls { data, path, long } => show::ls(&open_read_only(&data)?, &path, long),
        Command::Stat { data, path } => show::stat(&open_read_only(&data)?, &path),
        Command::Import { data, hostdir, path } => import::import(&open_writable(&data)?, &hostdir, &path),
        Command::Stats { data } => show::stats(&open_read_only(&data)?),
        Command::Serve { data, mountpoint, read_only, allow_other, passthrough, durability, http } => {
            serve::serve(serve::ServeArgs {
                data,
                mountpoint: Some(mountpoint),
                listen: http.listen.clone(),
                fs_options: durability.fs_options(read_only),
                mount_options: MountOptions { read_only, allow_other, passthrough },
                http: http.server_options()?,
            })
        }
        Command::Webdav { data, read_only, durability, http } => serve::serve(serve::ServeArgs {
            data,
            mountpoint: None,
            listen: http.listen.clone(),
            fs_options: durability.fs_options(read_only),
            mount_options: MountOptions { read_only, ..MountOptions::default() },
            http: http.server_options()?,
        }),
        Command::Passwd { file, user, uid, gid } => {
            let ids = uid.map(|uid| (uid, gid.unwrap_or_else(|| tsmfs::fs::Identity::of_user(uid).gid)));
            passwd(&file, &user, ids)
        }
        Command::Fsck { data, repair } => check::fsck(&open_writable(&data)?, repair),
        Command::Scrub { data } => check::scrub(&open_writable(&data)?),
        Command::Gc { data } => match Fs::open(&data, FsOptions::default()) {
            Ok(fs) => check::gc(&fs, false),
            Err(tsmfs::fs::OpenError::Locked(..)) => {
                eprintln!("tsmfs: gc: a server holds {}: removing only what nothing names", data.display());
                check::gc(&open_read_only(&data)?, true)
            }
            Err(e) => Err(e.into()),
        },
        Command::Mount { data, mountpoint, allow_other, read_only, foreground, passthrough, durability } => {
            mount::mount(mount::MountArgs {
                data,
                mountpoint,
                fs_options: durability.fs_options(read_only),
                options: MountOptions { allow_other, read_only, passthrough },
                foreground,
            })
        }
    }
}

fn open_writable(data: &Path) -> Result<Fs> {
    Ok(Fs::open(data, FsOptions::default())?)
}

fn open_read_only(data: &Path) -> Result<Fs> {
    Ok(Fs::open(data, FsOptions { read_only: true, ..Default::default() })?)
}

fn init(data: &Path) -> Result<ExitCode> {
    Fs::init(data, Caller::process(Origin::Cli))?;
    println!("initialized tsmfs data directory {}", data.display());
    Ok(ExitCode::SUCCESS)
}

fn put(data: &Path, src: &Path, path: &str) -> Result<ExitCode> {
    let fs = open_writable(data)?;
    let caller = Caller::process(Origin::Cli);
    let (parent, name) = split_path(path)?;
    let parent = mkdir_p(&fs, parent, &caller)?;
    let mut options = PutOptions { durable: true, ..PutOptions::default() };
    let attr = if src == Path::new("-") {
        fs.put(parent, name, &mut std::io::stdin().lock(), options, &caller)
    } else {
        let mut file =
            std::fs::File::open(src).with_context(|| format!("could not open {}", src.display()))?;
        let meta = file.metadata().with_context(|| format!("could not stat {}", src.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", src.display());
        }
        options.perm = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        fs.put(parent, name, &mut file, options, &caller)
    }
    .with_context(|| format!("could not store {path}"))?;
    let etag = attr.content_id().map(|id| id.etag()).unwrap_or_default();
    println!("{path}\t{} bytes\t{etag}", attr.size);
    Ok(ExitCode::SUCCESS)
}

/// Split a tree path into its parent part and final name.
fn split_path(path: &str) -> Result<(&str, &[u8])> {
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
    if name.is_empty() {
        bail!("{path:?} names no file");
    }
    Ok((parent, name.as_bytes()))
}

/// Resolve `path` as a directory, creating missing components.
fn mkdir_p(fs: &Fs, path: &str, caller: &Caller) -> Result<Ino> {
    let mut dir = Ino::ROOT;
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let name = part.as_bytes();
        dir = match fs.lookup(dir, name) {
            Ok(attr) if attr.kind == FileKind::Dir => attr.ino,
            Ok(_) => bail!("{part} in {path} is not a directory"),
            Err(FsError::NotFound) => match fs.mkdir(dir, name, 0o755, caller) {
                Ok(attr) => attr.ino,
                Err(e) => {
                    return Err(e).with_context(|| format!("could not create directory {part} in {path}"));
                }
            },
            Err(e) => return Err(e).with_context(|| format!("could not look up {part} in {path}")),
        };
    }
    Ok(dir)
}
