//! The cluster zone without sockets: every record kind and every negative case of the
//! Kubernetes DNS specification's matrix, against a small snapshot built here.

use std::{collections::BTreeMap, sync::Arc};

use svcnet_cluster::{
    ClusterState,
    model::{
        Endpoint, EndpointPort, EndpointSlice, Namespace, ObjectKey, Pod, Service, ServicePort, ServiceType,
        TargetPort, TrafficPolicy,
    },
};

use super::*;

const TTL: u32 = 30;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service(ns: &str, name: &str, addressing: ServiceAddressing, ports: &[(&str, Protocol, u16)]) -> Service {
    Service {
        key: ObjectKey::new(ns, name),
        service_type: if matches!(addressing, ServiceAddressing::ExternalName(_)) {
            ServiceType::ExternalName
        } else {
            ServiceType::ClusterIp
        },
        addressing,
        ports: ports
            .iter()
            .map(|(n, protocol, port)| ServicePort {
                name: (!n.is_empty()).then(|| (*n).to_owned()),
                protocol: *protocol,
                port: *port,
                target_port: TargetPort::Number(*port),
                node_port: None,
            })
            .collect(),
        selector: None,
        publish_not_ready_addresses: false,
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        external_traffic_policy: TrafficPolicy::Cluster,
        internal_traffic_policy: TrafficPolicy::Cluster,
        session_affinity: None,
        health_check_node_port: None,
    }
}

fn endpoint(addr: &str, hostname: Option<&str>, ready: bool, pod: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![ip(addr)],
        hostname: hostname.map(str::to_owned),
        ready,
        serving: ready,
        terminating: false,
        node_name: None,
        zone: None,
        pod_name: pod.map(str::to_owned),
    }
}

fn slice(ns: &str, name: &str, svc: &str, ports: &[(&str, u16)], endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        key: ObjectKey::new(ns, name),
        service_name: Arc::from(svc),
        ports: ports
            .iter()
            .map(|(n, p)| EndpointPort {
                name: Some((*n).to_owned()),
                protocol: Protocol::Tcp,
                port: Some(*p),
            })
            .collect(),
        endpoints,
        last_change_trigger_time: None,
    }
}

/// Namespace `shop` with a dual-stack ClusterIP Service `cart` (two ready endpoints), a
/// StatefulSet-style headless `db` (db-0 ready, db-1 not), a headless `gone` with no ready
/// endpoint, an empty ClusterIP `idle`, ExternalNames `ext` (outside) and `alias` (inside),
/// a Pod 10.1.0.9, and an empty namespace `quiet`.
fn snapshot(synced: bool) -> Snapshot {
    let mut state = ClusterState::default();
    for ns in ["shop", "quiet"] {
        state.namespaces.apply(
            Arc::from(ns),
            Namespace {
                name: Arc::from(ns),
                labels: BTreeMap::new(),
            },
        );
    }
    let services = [
        service(
            "shop",
            "cart",
            ServiceAddressing::ClusterIp(vec![ip("10.96.0.10"), ip("fd00::10")]),
            &[("http", Protocol::Tcp, 80), ("", Protocol::Udp, 9000)],
        ),
        service(
            "shop",
            "db",
            ServiceAddressing::Headless,
            &[("mysql", Protocol::Tcp, 3306)],
        ),
        service("shop", "gone", ServiceAddressing::Headless, &[]),
        service(
            "shop",
            "idle",
            ServiceAddressing::ClusterIp(vec![ip("10.96.0.11")]),
            &[("http", Protocol::Tcp, 80)],
        ),
        service(
            "shop",
            "ext",
            ServiceAddressing::ExternalName("api.example.com".into()),
            &[],
        ),
        service(
            "shop",
            "alias",
            ServiceAddressing::ExternalName("cart.shop.svc.cluster.local".into()),
            &[],
        ),
    ];
    for svc in services {
        state.services.apply(svc.key.clone(), svc);
    }
    let slices = [
        slice(
            "shop",
            "cart-1",
            "cart",
            &[("http", 8080)],
            vec![
                endpoint("10.1.0.1", None, true, Some("cart-7d9f")),
                endpoint("10.1.0.2", None, true, None),
            ],
        ),
        slice(
            "shop",
            "db-1",
            "db",
            &[("mysql", 3306)],
            vec![
                endpoint("10.1.0.5", Some("db-0"), true, None),
                endpoint("10.1.0.6", Some("db-1"), false, None),
            ],
        ),
        slice(
            "shop",
            "gone-1",
            "gone",
            &[],
            vec![endpoint("10.1.0.7", None, false, None)],
        ),
    ];
    for s in slices {
        state.slices.apply(s.key.clone(), s);
    }
    let pod = Pod {
        key: ObjectKey::new("shop", "web"),
        ips: vec![ip("10.1.0.9")],
        node_name: None,
        host_network: false,
        terminating: false,
        cluster_first_search: true,
    };
    state.pods.apply(pod.key.clone(), pod);
    state.snapshot(synced)
}

fn options() -> ZoneOptions {
    ZoneOptions {
        ttl: TTL,
        pods: PodsMode::Insecure,
        endpoint_pod_names: false,
        namespaces: HashSet::new(),
        ignore_empty_service: false,
        noendpoints: false,
        local_ips: vec![ip("127.0.0.1")],
    }
}

fn zone_with(options: ZoneOptions) -> ClusterZone {
    let zones = Zones::new(&[
        "cluster.local.".into(),
        "in-addr.arpa.".into(),
        "ip6.arpa.".into(),
    ])
    .unwrap();
    ClusterZone::new(zones, options)
}

fn ask_with(zone: &ClusterZone, snap: &Snapshot, name: &str, qtype: RecordType) -> Answer {
    zone.lookup(snap, &Name::from_ascii(name).unwrap(), qtype)
        .expect("name is in a served zone")
}

fn ask(name: &str, qtype: RecordType) -> Answer {
    ask_with(&zone_with(options()), &snapshot(true), name, qtype)
}

/// The answer section as `owner TYPE rdata` strings, sorted.
fn records(rrs: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = rrs
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect();
    v.sort();
    v
}

fn assert_nxdomain(a: &Answer) {
    assert_eq!(a.rcode, ResponseCode::NXDomain, "{a:?}");
    assert!(a.answers.is_empty());
    assert!(a.soa.is_some(), "negative answers carry the SOA");
}

fn assert_nodata(a: &Answer) {
    assert_eq!(a.rcode, ResponseCode::NoError, "{a:?}");
    assert!(a.answers.is_empty(), "{a:?}");
    assert!(a.soa.is_some(), "negative answers carry the SOA");
}

#[test]
fn cluster_ip_a_and_aaaa_dual_stack() {
    let a = ask("cart.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(records(&a.answers), ["cart.shop.svc.cluster.local. A 10.96.0.10"]);
    assert_eq!(a.answers[0].ttl, TTL);
    let aaaa = ask("cart.shop.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(
        records(&aaaa.answers),
        ["cart.shop.svc.cluster.local. AAAA fd00::10"]
    );
}

#[test]
fn cluster_ip_answers_even_without_endpoints_unless_ignored() {
    let a = ask("idle.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(records(&a.answers), ["idle.shop.svc.cluster.local. A 10.96.0.11"]);
    let zone = zone_with(ZoneOptions {
        ignore_empty_service: true,
        ..options()
    });
    assert_nxdomain(&ask_with(
        &zone,
        &snapshot(true),
        "idle.shop.svc.cluster.local.",
        RecordType::A,
    ));
    // ExternalName and headless Services are never suppressed by it.
    let ext = ask_with(
        &zone,
        &snapshot(true),
        "ext.shop.svc.cluster.local.",
        RecordType::CNAME,
    );
    assert_eq!(
        records(&ext.answers),
        ["ext.shop.svc.cluster.local. CNAME api.example.com."]
    );
}

#[test]
fn srv_for_named_ports_and_the_bare_name() {
    let srv = ask("_http._tcp.cart.shop.svc.cluster.local.", RecordType::SRV);
    // Two ClusterIPs share one target: weight 100/2, one SRV, glue for both families.
    assert_eq!(
        records(&srv.answers),
        ["_http._tcp.cart.shop.svc.cluster.local. SRV 0 50 80 cart.shop.svc.cluster.local."]
    );
    assert_eq!(
        records(&srv.additionals),
        [
            "cart.shop.svc.cluster.local. A 10.96.0.10",
            "cart.shop.svc.cluster.local. AAAA fd00::10"
        ]
    );
    // The bare name lists every port, named or not: 2 addresses x 2 ports -> weight 25.
    let bare = ask("cart.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        records(&bare.answers),
        [
            "cart.shop.svc.cluster.local. SRV 0 25 80 cart.shop.svc.cluster.local.",
            "cart.shop.svc.cluster.local. SRV 0 25 9000 cart.shop.svc.cluster.local."
        ]
    );
    // Unknown port or protocol: the name does not exist.
    assert_nxdomain(&ask("_https._tcp.cart.shop.svc.cluster.local.", RecordType::SRV));
    assert_nxdomain(&ask("_http._udp.cart.shop.svc.cluster.local.", RecordType::SRV));
    // The name exists; an A question about it has no data.
    assert_nodata(&ask("_http._tcp.cart.shop.svc.cluster.local.", RecordType::A));
}

#[test]
fn headless_lists_ready_endpoints_only() {
    let a = ask("db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(records(&a.answers), ["db.shop.svc.cluster.local. A 10.1.0.5"]);
    let srv = ask("_mysql._tcp.db.shop.svc.cluster.local.", RecordType::SRV);
    assert_eq!(
        records(&srv.answers),
        ["_mysql._tcp.db.shop.svc.cluster.local. SRV 0 100 3306 db-0.db.shop.svc.cluster.local."]
    );
    assert_eq!(
        records(&srv.additionals),
        ["db-0.db.shop.svc.cluster.local. A 10.1.0.5"]
    );
    // A headless Service with no ready endpoint does not exist for DNS.
    assert_nxdomain(&ask("gone.shop.svc.cluster.local.", RecordType::A));
}

#[test]
fn statefulset_and_dashed_endpoint_names() {
    let a = ask("db-0.db.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        records(&a.answers),
        ["db-0.db.shop.svc.cluster.local. A 10.1.0.5"]
    );
    // db-1 is not ready: not published.
    assert_nxdomain(&ask("db-1.db.shop.svc.cluster.local.", RecordType::A));
    // Endpoints of ClusterIP Services have names too (dashed address without a hostname).
    let dashed = ask("10-1-0-2.cart.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        records(&dashed.answers),
        ["10-1-0-2.cart.shop.svc.cluster.local. A 10.1.0.2"]
    );
    assert_nodata(&ask("10-1-0-2.cart.shop.svc.cluster.local.", RecordType::AAAA));
    assert_nxdomain(&ask("bogus.cart.shop.svc.cluster.local.", RecordType::A));
}

#[test]
fn endpoint_pod_names_replace_dashed_addresses() {
    let zone = zone_with(ZoneOptions {
        endpoint_pod_names: true,
        ..options()
    });
    let a = ask_with(
        &zone,
        &snapshot(true),
        "cart-7d9f.cart.shop.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        records(&a.answers),
        ["cart-7d9f.cart.shop.svc.cluster.local. A 10.1.0.1"]
    );
    // An endpoint without a Pod reference keeps its dashed name.
    let b = ask_with(
        &zone,
        &snapshot(true),
        "10-1-0-2.cart.shop.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(b.answers.len(), 1);
}

#[test]
fn ptr_for_cluster_ips_and_endpoints() {
    let svc = ask("10.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        records(&svc.answers),
        ["10.0.96.10.in-addr.arpa. PTR cart.shop.svc.cluster.local."]
    );
    let v6 = ask(
        "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        RecordType::PTR,
    );
    assert_eq!(v6.answers.len(), 1, "{v6:?}");
    let ep = ask("5.0.1.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        records(&ep.answers),
        ["5.0.1.10.in-addr.arpa. PTR db-0.db.shop.svc.cluster.local."]
    );
    // Not-ready endpoints and unknown addresses have no PTR.
    assert_nxdomain(&ask("6.0.1.10.in-addr.arpa.", RecordType::PTR));
    assert_nxdomain(&ask("1.2.3.4.in-addr.arpa.", RecordType::PTR));
}

#[test]
fn external_name_is_a_cname_chased_inside_the_zone() {
    let ext = ask("ext.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(
        records(&ext.answers),
        ["ext.shop.svc.cluster.local. CNAME api.example.com."]
    );
    assert_eq!(
        ext.chase,
        Some(Name::from_ascii("api.example.com.").unwrap()),
        "outside targets are chased upstream"
    );
    let alias = ask("alias.shop.svc.cluster.local.", RecordType::A);
    assert_eq!(alias.answers[0].record_type(), RecordType::CNAME, "CNAME first");
    assert_eq!(
        records(&alias.answers),
        [
            "alias.shop.svc.cluster.local. CNAME cart.shop.svc.cluster.local.",
            "cart.shop.svc.cluster.local. A 10.96.0.10"
        ]
    );
    assert_eq!(alias.chase, None);
    // Nothing exists below an ExternalName.
    assert_nxdomain(&ask("x.ext.shop.svc.cluster.local.", RecordType::CNAME));
    assert_nxdomain(&ask("a.b.ext.shop.svc.cluster.local.", RecordType::A));
}

#[test]
fn pod_records_in_each_mode() {
    let name = "10-1-0-9.shop.pod.cluster.local.";
    let a = ask(name, RecordType::A);
    assert_eq!(
        records(&a.answers),
        ["10-1-0-9.shop.pod.cluster.local. A 10.1.0.9"]
    );
    // insecure: any well-formed address in an existing namespace.
    assert_eq!(
        ask("1-2-3-4.shop.pod.cluster.local.", RecordType::A)
            .answers
            .len(),
        1
    );
    assert_nxdomain(&ask("1-2-3-4.nowhere.pod.cluster.local.", RecordType::A));
    assert_nxdomain(&ask("blah.shop.pod.cluster.local.", RecordType::A));

    let verified = zone_with(ZoneOptions {
        pods: PodsMode::Verified,
        ..options()
    });
    assert_eq!(
        ask_with(&verified, &snapshot(true), name, RecordType::A)
            .answers
            .len(),
        1
    );
    assert_nxdomain(&ask_with(
        &verified,
        &snapshot(true),
        "1-2-3-4.shop.pod.cluster.local.",
        RecordType::A,
    ));
    // The Pod lives in `shop`, not in `quiet`.
    assert_nxdomain(&ask_with(
        &verified,
        &snapshot(true),
        "10-1-0-9.quiet.pod.cluster.local.",
        RecordType::A,
    ));

    let disabled = zone_with(ZoneOptions {
        pods: PodsMode::Disabled,
        ..options()
    });
    assert_nxdomain(&ask_with(&disabled, &snapshot(true), name, RecordType::A));
}

#[test]
fn negative_answer_matrix() {
    // Structural names exist (NODATA): the zone's own layers and existing namespaces.
    for name in [
        "cluster.local.",
        "svc.cluster.local.",
        "pod.cluster.local.",
        "shop.svc.cluster.local.",
        "quiet.pod.cluster.local.",
    ] {
        assert_nodata(&ask(name, RecordType::A));
    }
    // Existing service, type without data.
    for qtype in [RecordType::TXT, RecordType::PTR, RecordType::SOA, RecordType::MX] {
        assert_nodata(&ask("cart.shop.svc.cluster.local.", qtype));
    }
    assert_nodata(&ask("idle.shop.svc.cluster.local.", RecordType::AAAA));
    // Everything else NXDOMAIN, so resolvers walk on through the search list.
    for name in [
        "nowhere.svc.cluster.local.",
        "cart.nowhere.svc.cluster.local.",
        "missing.shop.svc.cluster.local.",
        "foo.cluster.local.",
        "api.example.com.shop.svc.cluster.local.",
        "100.0.0.10.cluster.local.",
        "a.b.c.cart.shop.svc.cluster.local.",
    ] {
        assert_nxdomain(&ask(name, RecordType::A));
    }
}

#[test]
fn namespaces_option_hides_the_others() {
    let zone = zone_with(ZoneOptions {
        namespaces: HashSet::from(["quiet".to_owned()]),
        ..options()
    });
    assert_nxdomain(&ask_with(
        &zone,
        &snapshot(true),
        "cart.shop.svc.cluster.local.",
        RecordType::A,
    ));
    assert_nxdomain(&ask_with(
        &zone,
        &snapshot(true),
        "shop.svc.cluster.local.",
        RecordType::A,
    ));
    assert_nxdomain(&ask_with(
        &zone,
        &snapshot(true),
        "10.0.96.10.in-addr.arpa.",
        RecordType::PTR,
    ));
    assert_nodata(&ask_with(
        &zone,
        &snapshot(true),
        "quiet.svc.cluster.local.",
        RecordType::A,
    ));
}

#[test]
fn noendpoints_turns_endpoint_names_off() {
    let zone = zone_with(ZoneOptions {
        noendpoints: true,
        ..options()
    });
    let snap = snapshot(true);
    assert_nxdomain(&ask_with(
        &zone,
        &snap,
        "db.shop.svc.cluster.local.",
        RecordType::A,
    ));
    assert_nxdomain(&ask_with(
        &zone,
        &snap,
        "db-0.db.shop.svc.cluster.local.",
        RecordType::A,
    ));
    assert_eq!(
        ask_with(&zone, &snap, "cart.shop.svc.cluster.local.", RecordType::A)
            .answers
            .len(),
        1
    );
}

#[test]
fn soa_ns_and_schema_version_at_the_apex() {
    let soa = ask("cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    let RData::SOA(rdata) = &soa.answers[0].data else {
        panic!("not an SOA")
    };
    assert_eq!(rdata.mname.to_string(), "ns.dns.cluster.local.");
    assert_eq!(rdata.rname.to_string(), "hostmaster.cluster.local.");
    assert_eq!(rdata.minimum, TTL, "the negative-caching TTL is the record TTL");
    assert_eq!(rdata.serial, snapshot(true).serial);

    let ns = ask("cluster.local.", RecordType::NS);
    assert_eq!(records(&ns.answers), ["cluster.local. NS ns.dns.cluster.local."]);
    assert_eq!(records(&ns.additionals), ["ns.dns.cluster.local. A 127.0.0.1"]);

    let txt = ask("dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(records(&txt.answers), ["dns-version.cluster.local. TXT 1.1.0"]);
    assert_eq!(txt.answers[0].ttl, 28_800);
}

#[test]
fn owner_names_echo_the_question_case() {
    let a = ask("CaRt.ShOp.SvC.Cluster.Local.", RecordType::SRV);
    // The owner is the question as asked; targets use API names and the zone as asked.
    assert_eq!(a.answers[0].name.to_string(), "CaRt.ShOp.SvC.Cluster.Local.");
    let RData::SRV(srv) = &a.answers[0].data else {
        panic!("not SRV")
    };
    assert_eq!(srv.target.to_string(), "cart.shop.svc.Cluster.Local.");
    let neg = ask("missing.shop.svc.CLUSTER.local.", RecordType::A);
    assert_eq!(neg.soa.unwrap().name.to_string(), "CLUSTER.local.");
}

#[test]
fn servfail_instead_of_nxdomain_before_the_first_sync() {
    let zone = zone_with(options());
    let a = ask_with(
        &zone,
        &snapshot(false),
        "missing.shop.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(a.rcode, ResponseCode::ServFail);
    assert!(a.soa.is_some());
    // What is known is answered.
    assert_eq!(
        ask_with(
            &zone,
            &snapshot(false),
            "cart.shop.svc.cluster.local.",
            RecordType::A
        )
        .answers
        .len(),
        1
    );
}

#[test]
fn names_outside_the_zones_are_not_answered() {
    let zone = zone_with(options());
    assert!(
        zone.lookup(
            &snapshot(true),
            &Name::from_ascii("example.com.").unwrap(),
            RecordType::A
        )
        .is_none()
    );
}
