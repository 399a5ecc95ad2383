use super::*;

fn rev(cidr: &str) -> Result<String, String> {
    zone(cidr)
}

#[test]
fn ipv4_reverse_zones() {
    // 10.0.0.0/16: the first two octets, 10 and 0, reversed.
    assert_eq!(rev("10.0.0.0/16").unwrap(), "0.10.in-addr.arpa.");
    // 192.168.7.0/24: octets 192, 168, 7 reversed.
    assert_eq!(rev("192.168.7.0/24").unwrap(), "7.168.192.in-addr.arpa.");
    assert_eq!(rev("10.0.0.0/8").unwrap(), "10.in-addr.arpa.");
    assert_eq!(rev("10.1.2.3/32").unwrap(), "3.2.1.10.in-addr.arpa.");
    assert_eq!(rev("0.0.0.0/0").unwrap(), "in-addr.arpa.");
    // Host bits beyond the prefix do not change the zone.
    assert_eq!(rev("10.0.5.1/16").unwrap(), "0.10.in-addr.arpa.");
}

#[test]
fn ipv6_reverse_zones() {
    // fd00:0077:0030:0000::/64 is the 16 nibbles f d 0 0 0 0 7 7 0 0 3 0 0 0 0 0, reversed.
    assert_eq!(
        rev("fd00:77:30::/64").unwrap(),
        "0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa."
    );
    // 2001:0db8::/32 is the 8 nibbles 2 0 0 1 0 d b 8, reversed.
    assert_eq!(rev("2001:db8::/32").unwrap(), "8.b.d.0.1.0.0.2.ip6.arpa.");
    // fd00::/12: three nibbles f d 0.
    assert_eq!(rev("fd00::/12").unwrap(), "0.d.f.ip6.arpa.");
    assert_eq!(rev("::/0").unwrap(), "ip6.arpa.");
}

#[test]
fn misaligned_prefixes_are_rejected() {
    let err = rev("10.0.0.0/12").unwrap_err();
    assert!(err.contains("/12") && err.contains("multiple of 8"), "{err}");
    let err = rev("fd00::/62").unwrap_err();
    assert!(err.contains("/62") && err.contains("multiple of 4"), "{err}");
}

#[test]
fn names_and_junk() {
    assert_eq!(zone("Example.ORG").unwrap(), "example.org.");
    assert_eq!(zone("ip6.arpa.").unwrap(), "ip6.arpa.");
    assert!(zone("10.0.0.0").unwrap_err().contains("is an address"));
    assert!(zone("10.0.0.0/33").unwrap_err().contains("not a CIDR"));
    assert!(zone("a..b").unwrap_err().contains("not a domain name or CIDR"));
}

#[test]
fn within_compares_whole_labels_and_reverse_means_under_arpa() {
    assert!(is_within("a.cluster.local.", "cluster.local."));
    assert!(is_within("cluster.local.", "cluster.local."));
    assert!(!is_within("mycluster.local.", "cluster.local."));
    assert!(is_reverse("in-addr.arpa.") && is_reverse("0.10.in-addr.arpa.") && is_reverse("d.f.ip6.arpa."));
    assert!(!is_reverse("arpa.") && !is_reverse("cluster.local.") && !is_reverse("xin-addr.arpa."));
}
