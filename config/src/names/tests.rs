use super::*;

#[test]
fn labels() {
    assert!(is_dns1123_label("kube-system"));
    assert!(is_dns1123_label("a"));
    assert!(is_dns1123_label(&"a".repeat(63)));
    assert!(!is_dns1123_label(&"a".repeat(64)));
    assert!(!is_dns1123_label(""));
    assert!(!is_dns1123_label("-a"));
    assert!(!is_dns1123_label("a-"));
    assert!(!is_dns1123_label("Default"));
    assert!(!is_dns1123_label("a.b"));
}

#[test]
fn subdomains() {
    assert!(is_dns1123_subdomain("node-1"));
    assert!(is_dns1123_subdomain("ip-10-0-0-1.ec2.internal"));
    assert!(!is_dns1123_subdomain("node_1"));
    assert!(!is_dns1123_subdomain("a..b"));
    assert!(!is_dns1123_subdomain(".a"));
    assert!(!is_dns1123_subdomain("Node"));
    assert!(!is_dns1123_subdomain(&"a".repeat(254)));
}

#[test]
fn domain_names() {
    assert_eq!(fqdn("cluster.local").as_deref(), Some("cluster.local."));
    assert_eq!(fqdn("Cluster.Local.").as_deref(), Some("cluster.local."));
    assert_eq!(fqdn("in-addr.arpa").as_deref(), Some("in-addr.arpa."));
    assert_eq!(fqdn("."), None);
    assert_eq!(fqdn(""), None);
    assert_eq!(fqdn("a..b"), None);
    assert_eq!(fqdn("a_b.local"), None);
    assert_eq!(fqdn("-a.local"), None);
    assert_eq!(fqdn(&format!("{}.local", "a".repeat(64))), None);
}
