//! Which `Host` values the server answers: a guard against DNS rebinding.
//!
//! A web page can point a name it controls at 127.0.0.1; the browser then
//! sends the page's requests to us, with that name as `Host`, and lets
//! the page read the answers. A name has to be ours for a request to be
//! served: an IP literal for the address we listen on, `localhost`, or a
//! name the operator gave (`--host`). IP literals cannot be rebound, so an
//! unspecified listen address (0.0.0.0, ::) accepts any of them.

use std::net::{IpAddr, SocketAddr};

/// The names and addresses requests may be sent to.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    listen: IpAddr,
    names: Vec<String>,
}

impl AllowedHosts {
    /// For a server listening on `listen`, also answering `names`.
    pub fn new(listen: SocketAddr, names: &[String]) -> AllowedHosts {
        let names = names.iter().map(|name| name.trim_end_matches('.').to_ascii_lowercase()).collect();
        AllowedHosts { listen: listen.ip(), names }
    }

    /// Whether a request that named `authority` (a `Host` header or the
    /// authority of an absolute URI: host, maybe a port) is for us.
    pub fn allows(&self, authority: &str) -> bool {
        let Some(host) = host_part(authority) else { return false };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return ip == self.listen || self.listen.is_unspecified() || mapped(ip) == mapped(self.listen);
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host == "localhost" || self.names.contains(&host)
    }
}

/// `authority` without its port (and an IPv6 literal without brackets);
/// `None` if it is malformed.
fn host_part(authority: &str) -> Option<&str> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(is_port)).then_some(ip);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if is_port(port) && !host.contains(':') => Some(host),
        Some(_) => None,
        None => Some(authority),
    }
    .filter(|host| !host.is_empty())
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// An IPv4-mapped IPv6 address as IPv4, for comparison.
fn mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_address_localhost_and_given_names_are_answered() {
        let loopback = AllowedHosts::new("127.0.0.1:8080".parse().unwrap(), &["Files.Example.".into()]);
        for good in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.0.0.1:1",
            "localhost",
            "LOCALHOST:8080",
            "localhost.",
            "files.example",
            "files.example:443",
            "FILES.EXAMPLE.",
        ] {
            assert!(loopback.allows(good), "{good}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "127.0.0.2",
            "10.0.0.1:8080",
            "[::1]:8080",
            "localhost.attacker.example",
            "",
            ":8080",
            "127.0.0.1:",
            "127.0.0.1:99999x",
            "a:b:c",
            "[::1",
        ] {
            assert!(!loopback.allows(bad), "{bad}");
        }
        let v6 = AllowedHosts::new("[::1]:8080".parse().unwrap(), &[]);
        assert!(v6.allows("[::1]:8080") && v6.allows("[::1]") && v6.allows("localhost"));
        assert!(!v6.allows("127.0.0.1") && !v6.allows("rebound.example"));
        let any = AllowedHosts::new("0.0.0.0:80".parse().unwrap(), &[]);
        assert!(any.allows("192.0.2.7") && any.allows("[2001:db8::1]:80") && any.allows("localhost"));
        assert!(!any.allows("rebound.example"));
    }
}
