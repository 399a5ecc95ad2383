//! The rendered nft text of a small cluster, against text written by hand from the ruleset
//! design (ruleset.rs's module comment), not copied from output.

use svcnet_cluster::model::Protocol::*;
use svcnet_proxy::{desired, ruleset};

use crate::common::*;

/// The parts of a table that do not depend on the cluster, for `family` (`ip`/`ip6`) with
/// address type `addr`.
fn skeleton(family: &str, addr: &str) -> String {
    format!(
        "add table {family} svcnet
delete table {family} svcnet
add table {family} svcnet
add set {family} svcnet cluster-cidrs {{ type {addr} ; flags interval ; }}
add map {family} svcnet service-ips {{ type {addr} . inet_proto . inet_service : verdict ; }}
add map {family} svcnet no-endpoints {{ type {addr} . inet_proto . inet_service : verdict ; }}
add map {family} svcnet endpoints-tcp {{ typeof {family} daddr . meta l4proto . th dport . numgen random mod 2 : {family} daddr . tcp dport ; }}
add map {family} svcnet endpoints-udp {{ typeof {family} daddr . meta l4proto . th dport . numgen random mod 2 : {family} daddr . udp dport ; }}
add map {family} svcnet endpoints-sctp {{ typeof {family} daddr . meta l4proto . th dport . numgen random mod 2 : {family} daddr . sctp dport ; }}
add set {family} svcnet hairpin {{ type {addr} . {addr} ; }}
add map {family} svcnet affinity {{ type {addr} . inet_proto . inet_service : verdict ; }}
add map {family} svcnet affinity-tcp {{ type {addr} . {addr} . inet_proto . inet_service : {addr} . inet_service ; flags dynamic,timeout ; size 1048576 ; }}
add map {family} svcnet affinity-udp {{ type {addr} . {addr} . inet_proto . inet_service : {addr} . inet_service ; flags dynamic,timeout ; size 1048576 ; }}
add map {family} svcnet affinity-sctp {{ type {addr} . {addr} . inet_proto . inet_service : {addr} . inet_service ; flags dynamic,timeout ; size 1048576 ; }}
add set {family} svcnet firewall-ips {{ type {addr} . inet_proto . inet_service ; }}
add set {family} svcnet firewall-allow {{ type {addr} . inet_proto . inet_service . {addr} ; flags interval ; }}
add chain {family} svcnet reject-chain
add rule {family} svcnet reject-chain meta l4proto tcp reject with tcp reset
add rule {family} svcnet reject-chain reject
"
    )
}

fn base_chains(family: &str) -> String {
    format!(
        "add chain {family} svcnet affinity-check
add rule {family} svcnet affinity-check meta l4proto tcp ct original {family} daddr . meta l4proto . ct original proto-dst vmap @affinity
add rule {family} svcnet affinity-check meta l4proto udp ct original {family} daddr . meta l4proto . ct original proto-dst vmap @affinity
add rule {family} svcnet affinity-check meta l4proto sctp ct original {family} daddr . meta l4proto . ct original proto-dst vmap @affinity
add chain {family} svcnet firewall-prerouting {{ type filter hook prerouting priority dstnat - 10 ; policy accept ; }}
add rule {family} svcnet firewall-prerouting ct state new {family} daddr . meta l4proto . th dport @firewall-ips {family} daddr . meta l4proto . th dport . {family} saddr != @firewall-allow drop
add chain {family} svcnet firewall-output {{ type filter hook output priority -110 ; policy accept ; }}
add rule {family} svcnet firewall-output ct state new {family} daddr . meta l4proto . th dport @firewall-ips {family} daddr . meta l4proto . th dport . {family} saddr != @firewall-allow drop
add chain {family} svcnet nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; }}
add rule {family} svcnet nat-prerouting {family} daddr . meta l4proto . th dport vmap @service-ips
add chain {family} svcnet nat-output {{ type nat hook output priority -100 ; policy accept ; }}
add rule {family} svcnet nat-output {family} daddr . meta l4proto . th dport vmap @service-ips
add chain {family} svcnet nat-postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}
add rule {family} svcnet nat-postrouting meta mark & 0x4000 != 0 meta mark set meta mark ^ 0x4000 masquerade fully-random
add rule {family} svcnet nat-postrouting ct status dnat {family} saddr . {family} daddr @hairpin masquerade fully-random
add chain {family} svcnet filter-input {{ type filter hook input priority filter ; policy accept ; }}
add rule {family} svcnet filter-input ct state new {family} daddr . meta l4proto . th dport vmap @no-endpoints
add rule {family} svcnet filter-input ct state new ct status dnat jump affinity-check
add chain {family} svcnet filter-forward {{ type filter hook forward priority filter ; policy accept ; }}
add rule {family} svcnet filter-forward ct state new {family} daddr . meta l4proto . th dport vmap @no-endpoints
add rule {family} svcnet filter-forward ct state new ct status dnat jump affinity-check
add chain {family} svcnet filter-output {{ type filter hook output priority filter ; policy accept ; }}
add rule {family} svcnet filter-output ct state new {family} daddr . meta l4proto . th dport vmap @no-endpoints
add rule {family} svcnet filter-output ct state new ct status dnat jump affinity-check
"
    )
}

#[test]
fn a_small_cluster_renders_as_designed() {
    // kube-dns with a local and a remote endpoint, a NodePort with one remote endpoint, and a
    // Service without endpoints; one node address, the Pod CIDR 10.244.0.0/16.
    let dns = service(
        "kube-system/kube-dns",
        &["10.96.0.10"],
        vec![port(Some("dns"), Udp, 53)],
    );
    let web = svcnet_cluster::model::Service {
        service_type: svcnet_cluster::model::ServiceType::NodePort,
        ..service("shop/web", &["10.96.0.80"], vec![node_port(None, Tcp, 80, 30080)])
    };
    let none = service("shop/none", &["10.96.0.99"], vec![port(None, Tcp, 80)]);
    let slices = vec![
        slice(
            "kube-system/kube-dns-1",
            "kube-dns",
            &[(Some("dns"), Udp, 5353)],
            vec![
                endpoint("10.244.2.5", Some("node-b"), State::Ready),
                endpoint("10.244.1.5", Some(NODE), State::Ready),
            ],
        ),
        slice(
            "shop/web-1",
            "web",
            &[(None, Tcp, 8080)],
            vec![endpoint("10.244.2.8", Some("node-b"), State::Ready)],
        ),
    ];
    let snap = snapshot(vec![dns, web, none], slices);
    let text = ruleset::full(&desired(&snap, &node(&["192.168.1.10"], &["10.244.0.0/16"]))).render();

    let mut expected = skeleton("ip", "ipv4_addr");
    // Chains in (protocol, endpoint count, variant) order: lb-tcp-1 (ClusterIP of web),
    // lb-tcp-1-masq (its NodePort, eTP Cluster), lb-udp-2 (kube-dns).
    expected += "add chain ip svcnet lb-tcp-1
add rule ip svcnet lb-tcp-1 ip saddr != @cluster-cidrs meta mark set meta mark | 0x4000
add rule ip svcnet lb-tcp-1 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @endpoints-tcp
add chain ip svcnet lb-tcp-1-masq
add rule ip svcnet lb-tcp-1-masq meta mark set meta mark | 0x4000
add rule ip svcnet lb-tcp-1-masq dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 1 map @endpoints-tcp
add chain ip svcnet lb-udp-2
add rule ip svcnet lb-udp-2 ip saddr != @cluster-cidrs meta mark set meta mark | 0x4000
add rule ip svcnet lb-udp-2 dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 2 map @endpoints-udp
";
    expected += &base_chains("ip");
    // Elements sorted by entry point (address, then protocol TCP < UDP, then port); endpoint
    // slots follow the endpoints' address order, not the slice's.
    expected += r#"add element ip svcnet cluster-cidrs {
	10.244.0.0/16,
}
add element ip svcnet service-ips {
	10.96.0.10 . udp . 53 comment "kube-system/kube-dns:dns" : goto lb-udp-2,
	10.96.0.80 . tcp . 80 comment "shop/web" : goto lb-tcp-1,
	192.168.1.10 . tcp . 30080 comment "shop/web" : goto lb-tcp-1-masq,
}
add element ip svcnet no-endpoints {
	10.96.0.99 . tcp . 80 comment "shop/none" : goto reject-chain,
}
add element ip svcnet endpoints-tcp {
	10.96.0.80 . tcp . 80 . 0 : 10.244.2.8 . 8080,
	192.168.1.10 . tcp . 30080 . 0 : 10.244.2.8 . 8080,
}
add element ip svcnet endpoints-udp {
	10.96.0.10 . udp . 53 . 0 : 10.244.1.5 . 5353,
	10.96.0.10 . udp . 53 . 1 : 10.244.2.5 . 5353,
}
add element ip svcnet hairpin {
	10.244.1.5 . 10.244.1.5,
}
"#;
    // No IPv6 Service: the table and its hooks, no chains to balance and no elements.
    expected += &skeleton("ip6", "ipv6_addr");
    expected += &base_chains("ip6");

    assert_eq!(text, expected, "got:\n{text}");
}

#[test]
fn without_cluster_cidrs_nothing_is_masqueraded_by_source() {
    let svc = service("ns/web", &["fd00:96::1"], vec![port(None, Tcp, 80)]);
    let slices = vec![slice(
        "ns/web-1",
        "web",
        &[(None, Tcp, 8080)],
        vec![endpoint("fd00:244::1", Some("node-b"), State::Ready)],
    )];
    let text = ruleset::full(&desired(&snapshot(vec![svc], slices), &node(&[], &[]))).render();
    assert!(
        text.contains(
            "add chain ip6 svcnet lb-tcp-1\n\
             add rule ip6 svcnet lb-tcp-1 dnat ip6 to ip6 daddr . meta l4proto . th dport . numgen random mod 1 map @endpoints-tcp\n"
        ),
        "{text}"
    );
    assert!(!text.contains("saddr != @cluster-cidrs"), "{text}");
    assert!(
        text.contains("\tfd00:96::1 . tcp . 80 . 0 : fd00:244::1 . 8080,\n"),
        "{text}"
    );
}

#[test]
fn cleanup_deletes_both_tables_whether_or_not_they_exist() {
    assert_eq!(
        ruleset::cleanup().render(),
        "add table ip svcnet\ndelete table ip svcnet\nadd table ip6 svcnet\ndelete table ip6 svcnet\n"
    );
}
