//! The zones svcnet serves: domain names, and CIDRs turned into their reverse zones the way
//! CoreDNS turns a CIDR server-block key into a zone, so a Corefile's zone list carries over.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::names::fqdn;

/// What `dns-zones` accepts, for error messages.
pub(crate) const ALLOWED: &str =
    "a domain name (example.org) or a CIDR standing for its reverse zone (10.0.0.0/16, fd00::/64)";

/// `entry` of `dns-zones` as a lowercase fully qualified zone name, or why it is not one.
pub(crate) fn zone(entry: &str) -> Result<String, String> {
    if entry.contains('/') {
        let net: IpNet = entry
            .parse()
            .map_err(|_| format!("{entry:?} is not a CIDR; allowed {ALLOWED}"))?;
        return reverse_zone(net).map_err(|why| format!("{entry:?} {why}"));
    }
    // An address alone would pass as a name (`10.0.0.0.`), which is surely not what was meant.
    if entry.parse::<IpAddr>().is_ok() {
        return Err(format!("{entry:?} is an address, not a zone; allowed {ALLOWED}"));
    }
    fqdn(entry).ok_or_else(|| format!("{entry:?} is not a domain name or CIDR; allowed {ALLOWED}"))
}

/// The reverse zone of `net`: its prefix's octets (IPv4) or nibbles (IPv6), most specific
/// first, under `in-addr.arpa.` or `ip6.arpa.`. A zone can only end on a label boundary, so
/// the prefix length must be a multiple of 8 (IPv4) or 4 (IPv6). Host bits are ignored, as
/// CoreDNS ignores them.
pub(crate) fn reverse_zone(net: IpNet) -> Result<String, String> {
    let prefix = usize::from(net.prefix_len());
    match net.addr() {
        IpAddr::V4(addr) => {
            if prefix % 8 != 0 {
                return Err(format!(
                    "has prefix length /{prefix}, not a multiple of 8; allowed IPv4 prefix lengths \
                     are /0, /8, /16, /24, /32 (a reverse zone ends at an octet)"
                ));
            }
            let labels = addr.octets()[..prefix / 8]
                .iter()
                .rev()
                .map(u8::to_string)
                .collect();
            Ok(under(labels, "in-addr.arpa."))
        }
        IpAddr::V6(addr) => {
            if prefix % 4 != 0 {
                return Err(format!(
                    "has prefix length /{prefix}, not a multiple of 4; allowed IPv6 prefix lengths \
                     are multiples of 4 up to /128 (a reverse zone ends at a nibble)"
                ));
            }
            let nibbles = addr.octets().into_iter().flat_map(|b| [b >> 4, b & 0xf]);
            let mut labels: Vec<String> = nibbles.take(prefix / 4).map(|n| format!("{n:x}")).collect();
            labels.reverse();
            Ok(under(labels, "ip6.arpa."))
        }
    }
}

/// Whether `zone` (lowercase, fully qualified) is `in-addr.arpa.`, `ip6.arpa.` or below them.
pub(crate) fn is_reverse(zone: &str) -> bool {
    is_within(zone, "in-addr.arpa.") || is_within(zone, "ip6.arpa.")
}

/// Whether `name` is `zone` or below it; both lowercase and fully qualified.
pub(crate) fn is_within(name: &str, zone: &str) -> bool {
    name.strip_suffix(zone)
        .is_some_and(|prefix| prefix.is_empty() || prefix.ends_with('.'))
}

fn under(mut labels: Vec<String>, suffix: &str) -> String {
    labels.push(suffix.to_owned());
    labels.join(".")
}

#[cfg(test)]
mod tests;
