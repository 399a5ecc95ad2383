//! Socket addresses: where svcnet listens, and the upstream resolvers it forwards to, by
//! default those of the node's `/etc/resolv.conf` as CoreDNS's `forward . /etc/resolv.conf`.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

/// The port of an upstream given without one.
const DNS_PORT: u16 = 53;

pub(crate) const LISTEN_ALLOWED: &str = "ADDR:PORT, e.g. 127.0.0.1:5353 or [::]:53";
pub(crate) const UPSTREAM_ALLOWED: &str =
    "IP or IP:PORT (port 53 if left out), e.g. 10.0.0.2, 10.0.0.2:5353 or [fd00::2]:53";

pub(crate) fn listen(entry: &str) -> Result<SocketAddr, String> {
    entry
        .parse()
        .map_err(|_| format!("{entry:?} is not an address; allowed {LISTEN_ALLOWED}"))
}

pub(crate) fn upstream(entry: &str) -> Result<SocketAddr, String> {
    let addr = entry
        .parse::<SocketAddr>()
        .or_else(|_| entry.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, DNS_PORT)))
        .map_err(|_| format!("{entry:?} is not an address; allowed {UPSTREAM_ALLOWED}"))?;
    if addr.port() == 0 {
        return Err(format!("{entry:?} has port 0; allowed {UPSTREAM_ALLOWED}"));
    }
    Ok(addr)
}

/// `entry` as a resolver to forward to: an upstream address that is not svcnet itself.
pub(crate) fn forward_target(entry: &str, listen: &[SocketAddr]) -> Result<SocketAddr, String> {
    let addr = upstream(entry)?;
    if is_self(addr, listen) {
        return Err(format!(
            "{entry:?} is svcnet's own dns-listen address, a forwarding loop; allowed any other \
             resolver"
        ));
    }
    Ok(addr)
}

/// Whether a query sent to `upstream` would reach svcnet itself, listening on `listen`: a loop.
/// A wildcard listener catches loopback destinations too; other local addresses of the node
/// cannot be known here and are not caught.
pub fn is_self(upstream: SocketAddr, listen: &[SocketAddr]) -> bool {
    listen.iter().any(|l| {
        l.port() == upstream.port()
            && (l.ip() == upstream.ip() || (l.ip().is_unspecified() && upstream.ip().is_loopback()))
    })
}

/// The `nameserver` addresses of a resolv.conf, in order. A missing or unreadable file gives
/// none, since a node (or a test container) without one simply has no upstreams. Entries that
/// are not plain addresses (an IPv6 address with a `%zone`) are skipped: svcnet cannot use them.
pub(crate) fn resolv_conf_nameservers(path: &Path) -> Vec<SocketAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

#[cfg(test)]
mod tests;
