//! The operator's endpoints: where `/health`, `/ready` and `/metrics` listen, on CoreDNS's
//! ports by default, so that a CoreDNS Deployment's probes and scrape configs carry over.

use std::{net::SocketAddr, time::Duration};

use crate::addrs::{self, LISTEN_ALLOWED};

/// CoreDNS `health`.
pub(crate) const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:8080";
/// CoreDNS `ready`.
pub(crate) const DEFAULT_READY_LISTEN: &str = "0.0.0.0:8181";
/// CoreDNS `prometheus :9153` in kubeadm's Corefile.
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "0.0.0.0:9153";
/// kubeadm's `health { lameduck 5s }`.
pub(crate) const DEFAULT_LAMEDUCK: Duration = Duration::from_secs(5);

/// The address an endpoint's `key` gives, `None` when it is disabled. With `manifests`
/// svcnet runs beside other programs (and other svcnets, in tests), so fixed ports would
/// collide: every endpoint is off unless asked for.
pub(crate) fn listen(
    fail: &mut impl FnMut(&'static str, String),
    key: &'static str,
    given: Option<&str>,
    default: &str,
    manifests: bool,
) -> Option<SocketAddr> {
    let entry = match given {
        Some(entry) => entry.trim(),
        None if manifests => return None,
        None => default,
    };
    if entry.is_empty() {
        return None;
    }
    addrs::listen(entry)
        .map_err(|message| fail(key, format!("{message} or empty to disable")))
        .ok()
}

/// Two endpoints on one address cannot both bind; the later key is reported.
pub(crate) fn check_distinct(
    fail: &mut impl FnMut(&'static str, String),
    endpoints: &[(&'static str, Option<SocketAddr>)],
) {
    for (i, (key, addr)) in endpoints.iter().enumerate() {
        let Some(addr) = addr.filter(|a| a.port() != 0) else {
            continue;
        };
        if let Some((other, _)) = endpoints[..i].iter().find(|(_, a)| *a == Some(addr)) {
            fail(
                key,
                format!("{addr} is also {other}; allowed {LISTEN_ALLOWED} not used by another endpoint"),
            );
        }
    }
}
