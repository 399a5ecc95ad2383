//! The desired state from a snapshot: which entry points exist, which endpoints each balances
//! over, and what happens without endpoints. Expected values follow kube-proxy's documented
//! rules, written out by hand.

use std::net::SocketAddr;

use svcnet_cluster::model::{Protocol::*, Service, ServiceAddressing, ServiceType, TrafficPolicy};
use svcnet_proxy::{
    Desired, desired,
    desired::{EntryPoint, LbChain, Masquerade, NoEndpoints},
};

use crate::common::*;

fn entry(addr: &str, protocol: svcnet_cluster::model::Protocol, port: u16) -> EntryPoint {
    EntryPoint {
        addr: ip(addr),
        protocol,
        port,
    }
}

fn family(d: &Desired, addr: &str) -> svcnet_proxy::desired::FamilyState {
    if ip(addr).is_ipv4() {
        d.ipv4.clone()
    } else {
        d.ipv6.clone()
    }
}

/// The endpoints an entry point balances over, in slot order.
fn endpoints_of(d: &Desired, e: EntryPoint) -> Vec<SocketAddr> {
    let state = family(d, &e.addr.to_string());
    let chain = state.service_ips.get(&e).map(|l| l.value);
    let list: Vec<SocketAddr> = state
        .endpoints
        .range((e, 0)..=(e, u32::MAX))
        .map(|(_, target)| *target)
        .collect();
    if let Some(chain) = chain {
        assert_eq!(chain.endpoints as usize, list.len(), "chain {chain:?} for {e:?}");
    } else {
        assert!(list.is_empty(), "endpoints without a service-ips element: {e:?}");
    }
    list
}

fn chain_of(d: &Desired, e: EntryPoint) -> Option<LbChain> {
    family(d, &e.addr.to_string())
        .service_ips
        .get(&e)
        .map(|l| l.value)
}

fn refused(d: &Desired, e: EntryPoint) -> Option<NoEndpoints> {
    family(d, &e.addr.to_string())
        .no_endpoints
        .get(&e)
        .map(|l| l.value)
}

fn lb(protocol: svcnet_cluster::model::Protocol, endpoints: u32, masquerade: Masquerade) -> LbChain {
    LbChain {
        protocol,
        endpoints,
        masquerade,
        affinity: false,
    }
}

fn one_service(svc: Service, endpoints: Vec<svcnet_cluster::model::Endpoint>) -> Desired {
    let name = svc.key.name.to_string();
    let ns = svc.key.namespace.to_string();
    let ports: Vec<_> = svc
        .ports
        .iter()
        .map(|p| (p.name.as_deref(), p.protocol, p.port + 1000))
        .collect();
    let slices = vec![slice(&format!("{ns}/{name}-1"), &name, &ports, endpoints)];
    desired(
        &snapshot(vec![svc], slices),
        &node(&["192.168.1.10"], &["10.244.0.0/16"]),
    )
}

#[test]
fn cluster_ip_uses_ready_endpoints_only() {
    let svc = service("ns/web", &["10.96.0.1"], vec![port(None, Tcp, 80)]);
    let d = one_service(
        svc,
        vec![
            endpoint("10.244.1.1", Some(NODE), State::Ready),
            endpoint("10.244.2.1", Some("node-b"), State::Ready),
            endpoint("10.244.2.2", Some("node-b"), State::Unready),
            endpoint("10.244.2.3", Some("node-b"), State::Draining),
        ],
    );
    let e = entry("10.96.0.1", Tcp, 80);
    assert_eq!(
        endpoints_of(&d, e),
        [sa("10.244.1.1:1080"), sa("10.244.2.1:1080")]
    );
    assert_eq!(chain_of(&d, e), Some(lb(Tcp, 2, Masquerade::OffCluster)));
    assert_eq!(refused(&d, e), None);
    // The local endpoint may reach itself through the Service.
    assert_eq!(
        d.ipv4.hairpin.iter().copied().collect::<Vec<_>>(),
        [ip("10.244.1.1")]
    );
    assert_eq!(d.ipv4.cluster_cidrs, ["10.244.0.0/16".parse().unwrap()]);
}

#[test]
fn without_ready_endpoints_draining_ones_serve_and_without_those_it_rejects() {
    let svc = || service("ns/web", &["10.96.0.1"], vec![port(None, Tcp, 80)]);
    let d = one_service(
        svc(),
        vec![
            endpoint("10.244.2.2", Some("node-b"), State::Unready),
            endpoint("10.244.2.3", Some("node-b"), State::Draining),
            endpoint("10.244.2.4", Some("node-b"), State::Gone),
        ],
    );
    let e = entry("10.96.0.1", Tcp, 80);
    assert_eq!(endpoints_of(&d, e), [sa("10.244.2.3:1080")]);

    let d = one_service(
        svc(),
        vec![
            endpoint("10.244.2.2", Some("node-b"), State::Unready),
            endpoint("10.244.2.4", Some("node-b"), State::Gone),
        ],
    );
    assert_eq!(endpoints_of(&d, e), []);
    assert_eq!(refused(&d, e), Some(NoEndpoints::Reject));
    assert!(d.ipv4.lb_chains.is_empty());
}

#[test]
fn a_service_without_any_slice_is_rejected_on_every_entry_point() {
    let svc = Service {
        service_type: ServiceType::LoadBalancer,
        external_ips: vec![ip("192.0.2.1")],
        load_balancer_ips: vec![ip("198.51.100.1")],
        ..service(
            "ns/web",
            &["10.96.0.1"],
            vec![node_port(Some("http"), Tcp, 80, 30080)],
        )
    };
    let d = desired(&snapshot(vec![svc], vec![]), &node(&["192.168.1.10"], &[]));
    for e in [
        entry("10.96.0.1", Tcp, 80),
        entry("192.0.2.1", Tcp, 80),
        entry("198.51.100.1", Tcp, 80),
        entry("192.168.1.10", Tcp, 30080),
    ] {
        assert_eq!(refused(&d, e), Some(NoEndpoints::Reject), "{e:?}");
    }
    assert!(d.ipv4.service_ips.is_empty() && d.ipv4.endpoints.is_empty());
    assert_eq!(
        d.ipv4.no_endpoints[&entry("10.96.0.1", Tcp, 80)].service,
        "ns/web:http"
    );
}

#[test]
fn dual_stack_services_get_an_entry_per_family_with_that_family_s_endpoints() {
    let svc = service("ns/web", &["10.96.0.1", "fd00:96::1"], vec![port(None, Udp, 53)]);
    let slices = vec![
        slice(
            "ns/web-v4",
            "web",
            &[(None, Udp, 5353)],
            vec![endpoint("10.244.1.1", Some(NODE), State::Ready)],
        ),
        slice(
            "ns/web-v6",
            "web",
            &[(None, Udp, 5353)],
            vec![
                endpoint("fd00:244::1", Some(NODE), State::Ready),
                endpoint("fd00:244::2", Some("node-b"), State::Ready),
            ],
        ),
    ];
    let d = desired(&snapshot(vec![svc], slices), &node(&[], &["fd00:244::/48"]));
    assert_eq!(
        endpoints_of(&d, entry("10.96.0.1", Udp, 53)),
        [sa("10.244.1.1:5353")]
    );
    assert_eq!(
        endpoints_of(&d, entry("fd00:96::1", Udp, 53)),
        [sa("[fd00:244::1]:5353"), sa("[fd00:244::2]:5353")]
    );
    assert_eq!(
        d.ipv6.hairpin.iter().copied().collect::<Vec<_>>(),
        [ip("fd00:244::1")]
    );
    // The IPv4 family has no cluster CIDR: its chains mark nothing by source.
    assert!(d.ipv4.cluster_cidrs.is_empty());
    assert_eq!(d.ipv6.cluster_cidrs.len(), 1);
}

#[test]
fn a_single_stack_service_is_not_served_in_the_other_family() {
    let svc = Service {
        service_type: ServiceType::NodePort,
        external_ips: vec![ip("2001:db8::1")],
        ..service("ns/web", &["10.96.0.1"], vec![node_port(None, Tcp, 80, 30080)])
    };
    let d = desired(
        &snapshot(vec![svc], vec![]),
        &node(&["192.168.1.10", "fd00:1::10"], &[]),
    );
    assert_eq!(d.ipv6, Default::default());
    assert_eq!(d.ipv4.no_endpoints.len(), 2);
}

#[test]
fn node_ports_are_served_on_every_node_address_and_always_masqueraded() {
    let svc = Service {
        service_type: ServiceType::NodePort,
        ..service("ns/web", &["10.96.0.1"], vec![node_port(None, Tcp, 80, 30080)])
    };
    let slices = vec![slice(
        "ns/web-1",
        "web",
        &[(None, Tcp, 8080)],
        vec![
            endpoint("10.244.1.1", Some(NODE), State::Ready),
            endpoint("10.244.2.1", Some("node-b"), State::Ready),
        ],
    )];
    let d = desired(
        &snapshot(vec![svc], slices),
        &node(&["192.168.1.10", "192.168.2.10"], &["10.244.0.0/16"]),
    );
    let both = [sa("10.244.1.1:8080"), sa("10.244.2.1:8080")];
    for addr in ["192.168.1.10", "192.168.2.10"] {
        let e = entry(addr, Tcp, 30080);
        assert_eq!(endpoints_of(&d, e), both, "{addr}");
        assert_eq!(chain_of(&d, e), Some(lb(Tcp, 2, Masquerade::Always)));
    }
    let cluster_ip = entry("10.96.0.1", Tcp, 80);
    assert_eq!(chain_of(&d, cluster_ip), Some(lb(Tcp, 2, Masquerade::OffCluster)));
    // A nodePort is not a port of the ClusterIP.
    assert_eq!(chain_of(&d, entry("10.96.0.1", Tcp, 30080)), None);
    assert_eq!(d.ipv4.service_ips.len(), 3);
}

#[test]
fn a_cluster_ip_service_s_node_port_field_is_ignored() {
    let svc = service("ns/web", &["10.96.0.1"], vec![node_port(None, Tcp, 80, 30080)]);
    let d = desired(&snapshot(vec![svc], vec![]), &node(&["192.168.1.10"], &[]));
    assert_eq!(d.ipv4.no_endpoints.len(), 1);
}

#[test]
fn external_ips_for_any_type_load_balancer_ips_only_for_load_balancers() {
    let svc = |service_type| Service {
        service_type,
        external_ips: vec![ip("192.0.2.1")],
        load_balancer_ips: vec![ip("198.51.100.1")],
        ..service("ns/web", &["10.96.0.1"], vec![port(None, Sctp, 9000)])
    };
    let slices = || {
        vec![slice(
            "ns/web-1",
            "web",
            &[(None, Sctp, 9001)],
            vec![endpoint("10.244.2.1", Some("node-b"), State::Ready)],
        )]
    };
    let d = desired(
        &snapshot(vec![svc(ServiceType::ClusterIp)], slices()),
        &node(&[], &[]),
    );
    assert_eq!(
        chain_of(&d, entry("192.0.2.1", Sctp, 9000)),
        Some(lb(Sctp, 1, Masquerade::Always))
    );
    assert_eq!(chain_of(&d, entry("198.51.100.1", Sctp, 9000)), None);

    let d = desired(
        &snapshot(vec![svc(ServiceType::LoadBalancer)], slices()),
        &node(&[], &[]),
    );
    for addr in ["192.0.2.1", "198.51.100.1"] {
        let e = entry(addr, Sctp, 9000);
        assert_eq!(chain_of(&d, e), Some(lb(Sctp, 1, Masquerade::Always)), "{addr}");
        assert_eq!(endpoints_of(&d, e), [sa("10.244.2.1:9001")]);
    }
}

#[test]
fn internal_traffic_policy_local_uses_local_endpoints_and_drops_without_them() {
    let svc = || Service {
        internal_traffic_policy: TrafficPolicy::Local,
        external_ips: vec![ip("192.0.2.1")],
        ..service("ns/web", &["10.96.0.1"], vec![port(None, Tcp, 80)])
    };
    let cluster_ip = entry("10.96.0.1", Tcp, 80);
    let external = entry("192.0.2.1", Tcp, 80);

    let d = one_service(
        svc(),
        vec![
            endpoint("10.244.1.1", Some(NODE), State::Ready),
            endpoint("10.244.2.1", Some("node-b"), State::Ready),
        ],
    );
    assert_eq!(endpoints_of(&d, cluster_ip), [sa("10.244.1.1:1080")]);
    assert_eq!(chain_of(&d, cluster_ip), Some(lb(Tcp, 1, Masquerade::OffCluster)));
    // External traffic follows externalTrafficPolicy (Cluster): every endpoint.
    assert_eq!(endpoints_of(&d, external).len(), 2);

    let d = one_service(svc(), vec![endpoint("10.244.2.1", Some("node-b"), State::Ready)]);
    assert_eq!(refused(&d, cluster_ip), Some(NoEndpoints::Drop));
    assert_eq!(endpoints_of(&d, external), [sa("10.244.2.1:1080")]);

    // A local endpoint that is only draining still serves when no local one is ready.
    let d = one_service(
        svc(),
        vec![
            endpoint("10.244.1.1", Some(NODE), State::Draining),
            endpoint("10.244.2.1", Some("node-b"), State::Ready),
        ],
    );
    assert_eq!(endpoints_of(&d, cluster_ip), [sa("10.244.1.1:1080")]);
    assert_eq!(endpoints_of(&d, external), [sa("10.244.2.1:1080")]);

    let d = one_service(svc(), vec![]);
    assert_eq!(refused(&d, cluster_ip), Some(NoEndpoints::Reject));
}

#[test]
fn external_traffic_policy_local_keeps_the_source_and_drops_without_local_endpoints() {
    let svc = || Service {
        service_type: ServiceType::LoadBalancer,
        external_traffic_policy: TrafficPolicy::Local,
        load_balancer_ips: vec![ip("198.51.100.1")],
        ..service("ns/web", &["10.96.0.1"], vec![node_port(None, Tcp, 443, 30443)])
    };
    let lb_ip = entry("198.51.100.1", Tcp, 443);
    let node_port = entry("192.168.1.10", Tcp, 30443);
    let cluster_ip = entry("10.96.0.1", Tcp, 443);

    let d = one_service(
        svc(),
        vec![
            endpoint("10.244.1.1", Some(NODE), State::Ready),
            endpoint("10.244.2.1", Some("node-b"), State::Ready),
        ],
    );
    for e in [lb_ip, node_port] {
        assert_eq!(endpoints_of(&d, e), [sa("10.244.1.1:1443")], "{e:?}");
        assert_eq!(chain_of(&d, e), Some(lb(Tcp, 1, Masquerade::Never)));
    }
    assert_eq!(endpoints_of(&d, cluster_ip).len(), 2);

    let d = one_service(svc(), vec![endpoint("10.244.2.1", Some("node-b"), State::Ready)]);
    assert_eq!(refused(&d, lb_ip), Some(NoEndpoints::Drop));
    assert_eq!(refused(&d, node_port), Some(NoEndpoints::Drop));
    assert_eq!(chain_of(&d, cluster_ip), Some(lb(Tcp, 1, Masquerade::OffCluster)));
    assert!(d.ipv4.hairpin.is_empty());

    let d = one_service(svc(), vec![]);
    assert_eq!(refused(&d, lb_ip), Some(NoEndpoints::Reject));
}

#[test]
fn target_ports_come_from_the_slice_port_of_the_same_name_and_protocol() {
    let svc = service(
        "ns/web",
        &["10.96.0.1"],
        vec![
            port(Some("http"), Tcp, 80),
            port(Some("metrics"), Tcp, 9100),
            port(Some("dns"), Udp, 53),
        ],
    );
    let slices = vec![
        // Pods of two versions name the same container port differently.
        slice(
            "ns/web-a",
            "web",
            &[(Some("http"), Tcp, 8080), (Some("dns"), Tcp, 53)],
            vec![endpoint("10.244.1.1", Some(NODE), State::Ready)],
        ),
        slice(
            "ns/web-b",
            "web",
            &[(Some("http"), Tcp, 8081), (Some("metrics"), Tcp, 9101)],
            vec![endpoint("10.244.2.1", Some("node-b"), State::Ready)],
        ),
    ];
    let d = desired(&snapshot(vec![svc], slices), &node(&[], &[]));
    assert_eq!(
        endpoints_of(&d, entry("10.96.0.1", Tcp, 80)),
        [sa("10.244.1.1:8080"), sa("10.244.2.1:8081")]
    );
    assert_eq!(
        endpoints_of(&d, entry("10.96.0.1", Tcp, 9100)),
        [sa("10.244.2.1:9101")]
    );
    // A slice port of the same name but another protocol does not serve the UDP port.
    assert_eq!(
        refused(&d, entry("10.96.0.1", Udp, 53)),
        Some(NoEndpoints::Reject)
    );
}

#[test]
fn an_unnamed_port_matches_only_an_unnamed_slice_port() {
    let svc = service("ns/web", &["10.96.0.1"], vec![port(None, Tcp, 80)]);
    let slices = vec![slice(
        "ns/web-1",
        "web",
        &[(Some("http"), Tcp, 8080)],
        vec![endpoint("10.244.1.1", Some(NODE), State::Ready)],
    )];
    let d = desired(&snapshot(vec![svc], slices), &node(&[], &[]));
    assert_eq!(
        refused(&d, entry("10.96.0.1", Tcp, 80)),
        Some(NoEndpoints::Reject)
    );
}

#[test]
fn headless_and_external_name_services_get_no_rules() {
    let headless = Service {
        addressing: ServiceAddressing::Headless,
        external_ips: vec![ip("192.0.2.1")],
        ..service("ns/db", &[], vec![port(None, Tcp, 5432)])
    };
    let external_name = Service {
        service_type: ServiceType::ExternalName,
        addressing: ServiceAddressing::ExternalName("db.example.com".into()),
        ..service("ns/ext", &[], vec![port(None, Tcp, 5432)])
    };
    let slices = vec![slice(
        "ns/db-1",
        "db",
        &[(None, Tcp, 5432)],
        vec![endpoint("10.244.1.1", Some(NODE), State::Ready)],
    )];
    let d = desired(&snapshot(vec![headless, external_name], slices), &node(&[], &[]));
    assert_eq!(d, Desired::default());
}

#[test]
fn an_endpoint_in_two_slices_is_balanced_to_once() {
    let svc = service("ns/web", &["10.96.0.1"], vec![port(None, Tcp, 80)]);
    let ep = || endpoint("10.244.1.1", Some("node-b"), State::Ready);
    let slices = vec![
        slice("ns/web-1", "web", &[(None, Tcp, 8080)], vec![ep()]),
        slice("ns/web-2", "web", &[(None, Tcp, 8080)], vec![ep()]),
    ];
    let d = desired(&snapshot(vec![svc], slices), &node(&[], &[]));
    assert_eq!(
        endpoints_of(&d, entry("10.96.0.1", Tcp, 80)),
        [sa("10.244.1.1:8080")]
    );
}

#[test]
fn the_first_service_by_name_keeps_a_contested_entry_point() {
    let a = Service {
        external_ips: vec![ip("192.0.2.1")],
        ..service("ns/a", &["10.96.0.1"], vec![port(None, Tcp, 80)])
    };
    let b = Service {
        external_ips: vec![ip("192.0.2.1")],
        ..service("ns/b", &["10.96.0.2"], vec![port(None, Tcp, 80)])
    };
    let slices = vec![slice(
        "ns/b-1",
        "b",
        &[(None, Tcp, 8080)],
        vec![endpoint("10.244.1.1", Some("node-b"), State::Ready)],
    )];
    let d = desired(&snapshot(vec![b, a], slices), &node(&[], &[]));
    let contested = entry("192.0.2.1", Tcp, 80);
    assert_eq!(refused(&d, contested), Some(NoEndpoints::Reject));
    assert_eq!(d.ipv4.no_endpoints[&contested].service, "ns/a");
    assert_eq!(chain_of(&d, contested), None);
}

#[test]
fn overlapping_cluster_cidrs_are_merged() {
    let d = desired(
        &snapshot(vec![], vec![]),
        &node(&[], &["10.244.0.0/16", "10.0.0.0/8", "fd00::/8", "10.245.0.0/16"]),
    );
    assert_eq!(d.ipv4.cluster_cidrs, ["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(d.ipv6.cluster_cidrs, ["fd00::/8".parse().unwrap()]);
}

#[test]
fn the_rich_cluster_has_every_variant() {
    let (snap, node) = rich();
    let d = desired(&snap, &node);
    let chains =
        |s: &svcnet_proxy::desired::FamilyState| s.lb_chains.iter().map(|c| c.name()).collect::<Vec<_>>();
    assert_eq!(
        chains(&d.ipv4),
        [
            "lb-tcp-1-local-aff",
            "lb-tcp-2",
            "lb-tcp-2-aff",
            "lb-tcp-3",
            "lb-tcp-3-masq",
            "lb-udp-2",
            "lb-sctp-1-local-aff",
            "lb-sctp-2-aff"
        ]
    );
    assert_eq!(chains(&d.ipv6), ["lb-tcp-1", "lb-udp-1", "lb-sctp-1"]);
    let verdicts: std::collections::BTreeSet<_> = d.ipv4.no_endpoints.values().map(|l| l.value).collect();
    assert_eq!(verdicts.len(), 2, "reject and drop: {:?}", d.ipv4.no_endpoints);
}

/// `ClientIP` affinity: every IPv4 entry point of the Service with endpoints records into the
/// affinity chain of its protocol and timeout and balances through an `-aff` chain; IPv6
/// entry points have none (nft 1.0.6 cannot update a map keyed by IPv6 concatenations).
#[test]
fn client_ip_affinity_covers_every_ipv4_entry_point() {
    let (snap, node) = rich();
    let d = desired(&snap, &node);
    let names: Vec<String> = d.ipv4.affinity_chains.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["affinity-tcp-10800s", "affinity-sctp-10800s"]);
    let entries: Vec<String> = d
        .ipv4
        .affinity
        .keys()
        .map(|e| format!("{}:{}", e.addr, e.port))
        .collect();
    assert_eq!(
        entries,
        [
            "10.96.0.100:443",
            "10.96.0.100:9000",
            "192.0.2.10:443",
            "192.0.2.10:9000",
            "192.168.1.10:30443",
            "192.168.2.10:30443",
            "198.51.100.7:443",
            "198.51.100.7:9000"
        ]
    );
    for entry in d.ipv4.affinity.keys() {
        assert!(chain_of(&d, *entry).unwrap().affinity, "{entry:?}");
    }
    assert!(d.ipv6.affinity.is_empty() && d.ipv6.affinity_chains.is_empty());
    assert!(d.ipv6.lb_chains.iter().all(|c| !c.affinity));
}

/// Source ranges protect the load-balancer IPs only (not the externalIPs, not the NodePorts),
/// per family; a range holding a node address also allows the load-balancer IP itself.
#[test]
fn source_ranges_protect_load_balancer_ips_only() {
    let (snap, node) = rich();
    let d = desired(&snap, &node);
    let protected: Vec<String> = d
        .ipv4
        .firewall
        .iter()
        .map(|e| format!("{} {:?} {}", e.addr, e.protocol, e.port))
        .collect();
    assert_eq!(protected, ["198.51.100.7 Tcp 443", "198.51.100.7 Sctp 9000"]);
    let allowed: Vec<String> = d
        .ipv4
        .firewall_allow
        .iter()
        .filter(|(e, _)| e.port == 443)
        .map(|(_, net)| net.to_string())
        .collect();
    // 192.168.0.0/16 holds the node's 192.168.1.10: the LB IP is allowed as a source too.
    assert_eq!(allowed, ["192.168.0.0/16", "198.51.100.7/32", "203.0.113.0/25"]);
    let v6: Vec<String> = d
        .ipv6
        .firewall_allow
        .iter()
        .map(|(e, net)| format!("{} {} {net}", e.addr, e.port))
        .collect();
    // No range holds fd00:1::10, so the IPv6 LB IP is not added.
    assert_eq!(
        v6,
        [
            "2001:db8:ff::7 443 2001:db8:1::/48",
            "2001:db8:ff::7 9000 2001:db8:1::/48"
        ]
    );
}
