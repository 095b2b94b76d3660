//! Who an HTTP request acts as, so that the core checks it with the
//! mount's permission rules.
//!
//! - `--anonymous-uid`/`--anonymous-gid`: that identity, for every
//!   request that is not authenticated.
//! - A loopback connection: the local user who owns the client's socket
//!   (Linux keeps each socket's owner in /proc/net/tcp, which identd
//!   read for the same purpose), so a user, and that user's browser, get
//!   over HTTP what the mount gives them. A socket whose owner cannot be
//!   found acts as `nobody`.
//! - A Unix socket (`--listen unix:PATH`): the user and group its
//!   client's credentials name (SO_PEERCRED).
//! - A user of `--auth-file`: the uid and gid the file gives it, else the
//!   system account of that name, else `nobody` (`auth::Users::identity`,
//!   per request).
//! - A remote client of `--insecure-no-auth`: the server's own identity.
//!
//! Root is not checked (`None`): it may read and write everything.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::server::Peer;
use crate::fs::Identity;

/// How the server decides who a request is.
#[derive(Clone, Debug, Default)]
pub struct IdentityPolicy {
    /// A fixed identity for requests without credentials: uid, gid.
    pub anonymous: Option<(u32, u32)>,
}

impl IdentityPolicy {
    /// The identity of requests without credentials on a connection from
    /// `peer` (a user of `--auth-file` acts as its own: see
    /// `auth::Users::identity`); blocking.
    pub(super) fn of_connection(&self, peer: Peer) -> Option<Arc<Identity>> {
        let identity = match (self.anonymous, peer) {
            (Some((uid, gid)), _) => Identity { uid, gid, groups: Identity::of_user(uid).groups },
            (_, Peer::Unix { uid, gid }) => Identity { gid, ..Identity::of_user(uid) },
            (_, Peer::Tcp { peer, local }) if is_loopback(peer.ip()) => match socket_owner(peer, local) {
                Some(uid) => Identity::of_user(uid),
                None => {
                    tracing::warn!("http: the owner of the socket of {peer} is unknown; it acts as nobody");
                    Identity::nobody()
                }
            },
            (_, Peer::Tcp { .. }) => Identity::process(),
        };
        (identity.uid != 0).then(|| Arc::new(identity))
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// The uid that owns the client's end of a loopback TCP connection: the
/// socket whose local address is `peer` and remote address `local`.
fn socket_owner(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let canonical = |addr: SocketAddr| SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let (peer, local) = (canonical(peer), canonical(local));
    let tables = [procfs::net::tcp(), procfs::net::tcp6()];
    tables.into_iter().filter_map(Result::ok).flatten().find_map(|entry| {
        (canonical(entry.local_address) == peer && canonical(entry.remote_address) == local)
            .then_some(entry.uid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_of_a_loopback_client_socket_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_end, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let uid = socket_owner(peer, listener.local_addr().unwrap());
        assert_eq!(uid, Some(nix::unistd::geteuid().as_raw()));
        assert_eq!(socket_owner("127.0.0.1:1".parse().unwrap(), listener.local_addr().unwrap()), None);
    }
}
