//! Addresses written as DNS labels, the way Kubernetes DNS spells them.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv6Addr},
};

use hickory_proto::rr::Name;
use svcnet_cluster::model::Endpoint;

/// The "dashed" form of an address used for pod records and for endpoints without a hostname:
/// `10.0.0.1` -> `10-0-0-1`, and for IPv6 the compressed text with `:` -> `-`, plus a `0` when it
/// would end in `-` (`5678:abcd::1` -> `5678-abcd--1`, `10::` -> `10--0`), as CoreDNS writes it.
pub fn dashed(ip: IpAddr) -> String {
    let mut s = ip.to_string().replace([':', '.'], "-");
    if s.ends_with('-') {
        s.push('0');
    }
    s
}

/// Parses a dashed label back into an address. As in CoreDNS, a label with exactly three
/// dashes and no `--` is IPv4; anything else is tried as IPv6 with `-` read as `:`.
pub fn parse_dashed(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        return label.replace('-', ".").parse().ok().map(IpAddr::V4);
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The address a complete reverse name (`4.3.2.1.in-addr.arpa.`, 32 nibbles under `ip6.arpa.`)
/// stands for; `None` for partial or malformed names.
pub fn parse_reverse(name: &Name) -> Option<IpAddr> {
    let net = name.parse_arpa_name().ok()?;
    (net.prefix_len() == net.max_prefix_len()).then(|| net.addr())
}

/// The name of an endpoint under its Service: its hostname, else (with `endpoint_pod_names`) the
/// name of its Pod when that fits a label, else the dashed address.
pub fn endpoint_label(endpoint: &Endpoint, address: IpAddr, pod_names: bool) -> Cow<'_, str> {
    if let Some(hostname) = &endpoint.hostname {
        return Cow::Borrowed(hostname);
    }
    if pod_names && let Some(pod) = endpoint.pod_name.as_deref().filter(|p| p.len() < 64) {
        return Cow::Borrowed(pod);
    }
    Cow::Owned(dashed(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_forms_match_coredns() {
        // Examples from the CoreDNS kubernetes plugin's tests and README.
        assert_eq!(dashed("172.0.0.2".parse().unwrap()), "172-0-0-2");
        assert_eq!(dashed("5678:abcd::1".parse().unwrap()), "5678-abcd--1");
        assert_eq!(dashed("10::".parse().unwrap()), "10--0");
    }

    #[test]
    fn dashed_labels_parse_by_shape() {
        assert_eq!(parse_dashed("10-240-0-1"), Some("10.240.0.1".parse().unwrap()));
        assert_eq!(
            parse_dashed("5678-abcd--1"),
            Some("5678:abcd::1".parse().unwrap())
        );
        assert_eq!(parse_dashed("1-2-3"), None);
        assert_eq!(parse_dashed("blah"), None);
        assert_eq!(parse_dashed("300-0-0-1"), None);
    }

    #[test]
    fn reverse_names_need_every_label() {
        let full = Name::from_ascii("100.0.0.10.in-addr.arpa.").unwrap();
        assert_eq!(parse_reverse(&full), Some("10.0.0.100".parse().unwrap()));
        let partial = Name::from_ascii("0.10.in-addr.arpa.").unwrap();
        assert_eq!(parse_reverse(&partial), None);
        let v6 =
            Name::from_ascii("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.")
                .unwrap();
        assert_eq!(parse_reverse(&v6), Some("1234:abcd::1".parse().unwrap()));
    }

    #[test]
    fn endpoint_label_precedence() {
        let mut ep = Endpoint {
            addresses: vec!["10.1.2.3".parse().unwrap()],
            hostname: None,
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
            zone: None,
            pod_name: Some("web-0".into()),
        };
        let ip = ep.addresses[0];
        assert_eq!(endpoint_label(&ep, ip, false), "10-1-2-3");
        assert_eq!(endpoint_label(&ep, ip, true), "web-0");
        ep.hostname = Some("db".into());
        assert_eq!(endpoint_label(&ep, ip, true), "db");
    }
}
