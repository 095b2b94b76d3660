//! The listener and its connections: TCP (HTTP or HTTPS) or a Unix
//! socket, each connection served by hyper with the identity it acts as.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dav_server::DavHandler;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

use super::{
    DavFs, READ_BUF_SIZE, ServerOptions, Shared, SqlLocks, Stats, answer_even_if_panicking, assets, counted,
    handle, host, inert, limits, variants,
};
use crate::fs::{Fs, Identity};

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address and port (port 0 picks a free port).
    Tcp(SocketAddr),
    /// A Unix socket at this path: local clients only, each acting as the
    /// user its socket credentials name.
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    /// `ADDRESS:PORT`, or `unix:PATH`.
    fn from_str(text: &str) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in unix:/run/tsmfs.sock".into());
            }
            return Ok(Listen::Unix(path.into()));
        }
        text.parse().map(Listen::Tcp).map_err(|e| format!("{text:?}: {e} (give ADDRESS:PORT or unix:PATH)"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Listen {
    /// Whether only this machine can connect.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(addr) => addr.ip().to_canonical().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

/// A bound listener.
enum Listener {
    Tcp(TcpListener),
    /// The socket file is removed when the server is dropped.
    Unix(UnixListener, PathBuf),
}

/// Where a connection comes from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Peer {
    /// A TCP client at `peer`, connected to our `local` address.
    Tcp { peer: SocketAddr, local: SocketAddr },
    /// A Unix socket client whose process runs as `uid`, `gid`.
    Unix { uid: u32, gid: u32 },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp { peer, .. } => write!(f, "{peer}"),
            Peer::Unix { uid, .. } => write!(f, "a local process of uid {uid}"),
        }
    }
}

/// A bound WebDAV server, not yet serving.
pub struct Server {
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
}

impl Server {
    /// Bind `addr` (port 0 picks a free port) for `fs`.
    pub async fn bind(fs: Arc<Fs>, addr: SocketAddr, options: ServerOptions) -> std::io::Result<Server> {
        Server::listen(fs, &Listen::Tcp(addr), options).await
    }

    /// Listen where `listen` says, for `fs`. A Unix socket replaces a
    /// stale socket file (one nothing listens on) and is made usable by
    /// every local user: each acts as themselves.
    pub async fn listen(fs: Arc<Fs>, listen: &Listen, options: ServerOptions) -> std::io::Result<Server> {
        let (listener, hosts) = match listen {
            Listen::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let hosts = host::AllowedHosts::new(listener.local_addr()?, &options.host_names);
                (Listener::Tcp(listener), Some(hosts))
            }
            Listen::Unix(path) => (Listener::Unix(bind_unix(path)?, path.clone()), None),
        };
        let handler = DavHandler::builder()
            // Every request gets its own filesystem, for its identity;
            // this one, the least privileged, is never used.
            .filesystem(DavFs::new(fs.clone(), Some(Arc::new(Identity::nobody()))))
            .locksystem(SqlLocks::new(fs.clone()))
            // Browsers get an HTML listing of a collection.
            .autoindex(true)
            // dav-server reads files in 16 KiB pieces by default; bigger
            // pieces mean fewer core calls per response.
            .read_buf_size(READ_BUF_SIZE)
            .build_handler();
        let stats = Arc::new(Stats::default());
        let variants = variants::Variants::new(fs.clone(), stats.clone());
        let tls = options.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let shared = Shared { handler, assets: assets::Assets::new(fs), variants, options, hosts, stats };
        Ok(Server { listener, tls, shared: Arc::new(shared) })
    }

    /// Counters of this server, live.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The TCP address actually bound (an error for a Unix socket).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.listener {
            Listener::Tcp(listener) => listener.local_addr(),
            Listener::Unix(..) => Err(std::io::Error::other("a Unix socket has no TCP address")),
        }
    }

    /// Where clients reach the server: `http://ADDR/`, `https://ADDR/` or
    /// `unix:PATH`.
    pub fn url(&self) -> std::io::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match &self.listener {
            Listener::Tcp(listener) => Ok(format!("{scheme}://{}/", listener.local_addr()?)),
            Listener::Unix(_, path) => Ok(format!("unix:{}", path.display())),
        }
    }

    /// Serve connections until `shutdown` resolves; then stop accepting
    /// and let connections in flight finish their current request.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) -> std::io::Result<()> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                accepted = accept(&self.listener) => accepted,
                () = &mut shutdown => break,
            };
            match accepted {
                Ok(Connection::Tcp(stream, peer)) => self.spawn(stream, peer, &graceful),
                Ok(Connection::Unix(stream, peer)) => self.spawn(stream, peer, &graceful),
                Err(e) => tracing::warn!("webdav: accept: {e}"),
            }
        }
        // Requests in flight get a grace period; connections still open
        // after it (a client that never finishes a body, say) are dropped
        // with the runtime, and their uploads publish nothing.
        if tokio::time::timeout(limits::SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!(
                "webdav: connections still open {} s after the stop was asked; closing them",
                limits::SHUTDOWN_GRACE.as_secs()
            );
        }
        Ok(())
    }

    /// Serve one connection in a task of its own.
    fn spawn<S>(&self, stream: S, peer: Peer, graceful: &hyper_util::server::graceful::GracefulShutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let shared = self.shared.clone();
        let builder = {
            let mut builder = http1::Builder::new();
            builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits::HEAD_TIMEOUT);
            builder
        };
        let tls = self.tls.clone();
        let watcher = graceful.watcher();
        // Password failures are counted per address; Unix socket clients
        // share one.
        let client = match peer {
            Peer::Tcp { peer, .. } => peer.ip(),
            Peer::Unix { .. } => std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        };
        tokio::spawn(async move {
            // With passwords, each request acts as its user (`handle`).
            let who = match shared.options.users {
                Some(_) => None,
                None => {
                    let policy = shared.options.identity.clone();
                    tokio::task::spawn_blocking(move || policy.of_connection(peer))
                        .await
                        .unwrap_or_else(|_| Some(Arc::new(Identity::nobody())))
                }
            };
            let service = service_fn(move |req| {
                let (shared, who) = (shared.clone(), who.clone());
                async move {
                    let sandboxed = !shared.options.trusted_content;
                    let (method, started) = (req.method().clone(), std::time::Instant::now());
                    let mut response = answer_even_if_panicking(handle(&shared, who, client, req)).await;
                    inert(response.headers_mut(), sandboxed);
                    let metrics = shared.assets.fs().metrics();
                    metrics.http_request(&method, response.status().as_u16(), started.elapsed());
                    Ok::<_, Infallible>(counted(response, metrics))
                }
            });
            let Some(acceptor) = tls else {
                let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                if let Err(e) = connection.await {
                    tracing::debug!("webdav: connection from {peer}: {e}");
                }
                return;
            };
            // The handshake runs in the connection's task, within the
            // header timeout, so a silent client holds nothing but its own
            // task.
            let handshake = tokio::time::timeout(limits::HEAD_TIMEOUT, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!("webdav: TLS handshake with {peer}: {e}"),
                Err(_) => return tracing::debug!("webdav: TLS handshake with {peer} timed out"),
            };
            let connection = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            if let Err(e) = connection.await {
                tracing::debug!("webdav: connection from {peer}: {e}");
            }
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = &self.listener
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!("webdav: removing the socket {}: {e}", path.display());
        }
    }
}

/// An accepted connection, by kind.
enum Connection {
    Tcp(tokio::net::TcpStream, Peer),
    Unix(tokio::net::UnixStream, Peer),
}

async fn accept(listener: &Listener) -> std::io::Result<Connection> {
    match listener {
        Listener::Tcp(listener) => {
            let (stream, peer) = listener.accept().await?;
            let local = stream.local_addr().unwrap_or(peer);
            Ok(Connection::Tcp(stream, Peer::Tcp { peer, local }))
        }
        Listener::Unix(listener, _) => {
            let (stream, _) = listener.accept().await?;
            let credentials = stream.peer_cred()?;
            Ok(Connection::Unix(stream, Peer::Unix { uid: credentials.uid(), gid: credentials.gid() }))
        }
    }
}

/// Bind a Unix socket at `path`, replacing a stale one, usable by every
/// local user (each acts as themselves).
fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let stale = meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_err();
        if !stale {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} exists (a server listening there, or not a socket)", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}
