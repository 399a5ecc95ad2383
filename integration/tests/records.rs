//! One test per record kind against the running server, over UDP and TCP, plus the protocol
//! edges: EDNS payload sizes, truncation, malformed packets, names outside the zone.

use std::{net::Ipv4Addr, time::Duration};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{Name, RData, RecordType},
};
use serde_json::json;
use svcnet_integration::{Svcnet, Transport, exchange, exchange_raw, query_sync, request, write_objects};

const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];
const TIMEOUT: Duration = Duration::from_secs(5);

/// A namespace `shop` with a dual-stack ClusterIP Service, a headless StatefulSet-style
/// Service whose endpoints come from Pods (hostname/subdomain), an ExternalName, and a headless
/// Service with 120 ready endpoints (too many for 512 bytes).
fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut objects = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
               "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
               "spec": {"clusterIP": "None", "selector": {"app": "db"},
                        "ports": [{"name": "mysql", "port": 3306, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext", "namespace": "shop"},
               "spec": {"type": "ExternalName", "externalName": "cart.shop.svc.cluster.local"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big", "namespace": "shop"},
               "spec": {"clusterIP": "None"}}),
    ];
    for i in 0..2 {
        objects.push(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("db-{i}"), "namespace": "shop", "labels": {"app": "db"}},
            "spec": {"hostname": format!("db-{i}"), "subdomain": "db", "containers": [{"name": "mysql", "image": "mysql"}]},
            "status": {"phase": "Running", "podIP": format!("10.1.0.{}", 10 + i), "podIPs": [{"ip": format!("10.1.0.{}", 10 + i)}],
                       "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    let endpoints: Vec<_> = (0..120)
        .map(|i| json!({"addresses": [format!("10.2.{}.{}", i / 200, i % 200 + 1)], "conditions": {"ready": true}}))
        .collect();
    objects.push(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "big-1", "namespace": "shop", "labels": {"kubernetes.io/service-name": "big"}},
        "addressType": "IPv4", "endpoints": endpoints}),
    );
    write_objects(dir.path(), "cluster.json", &objects);
    dir
}

/// svcnet serving `cluster()`, with no upstreams: these tests stay off the network.
fn start() -> (Svcnet, tempfile::TempDir) {
    let dir = cluster();
    (
        Svcnet::start_manifests(env!("CARGO_BIN_EXE_svcnet"), dir.path(), &["--upstreams="]),
        dir,
    )
}

fn ask(svcnet: &Svcnet, name: &str, qtype: RecordType, transport: Transport) -> Message {
    let name = Name::from_ascii(name).expect("name");
    query_sync(svcnet.dns, &name, qtype, transport, TIMEOUT)
        .unwrap_or_else(|e| panic!("{name} {qtype} over {transport:?}: {e}"))
}

fn rdata(msg: &Message) -> Vec<String> {
    let mut v: Vec<String> = msg.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

#[test]
fn cluster_ip_a_and_aaaa() {
    let (svcnet, _dir) = start();
    for t in TRANSPORTS {
        let a = ask(&svcnet, "cart.shop.svc.cluster.local.", RecordType::A, t);
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.metadata.authoritative, "AA is set");
        assert_eq!(rdata(&a), ["10.96.0.10"]);
        assert_eq!(a.answers[0].ttl, 30, "kubeadm's ttl 30 is the default");
        assert_eq!(
            rdata(&ask(&svcnet, "cart.shop.svc.cluster.local.", RecordType::AAAA, t)),
            ["fd00::10"]
        );
    }
}

#[test]
fn headless_and_statefulset_names_from_pods() {
    let (svcnet, _dir) = start();
    for t in TRANSPORTS {
        assert_eq!(
            rdata(&ask(&svcnet, "db.shop.svc.cluster.local.", RecordType::A, t)),
            ["10.1.0.10", "10.1.0.11"]
        );
        assert_eq!(
            rdata(&ask(&svcnet, "db-1.db.shop.svc.cluster.local.", RecordType::A, t)),
            ["10.1.0.11"]
        );
        let srv = ask(
            &svcnet,
            "_mysql._tcp.db.shop.svc.cluster.local.",
            RecordType::SRV,
            t,
        );
        assert_eq!(
            rdata(&srv),
            [
                "0 50 3306 db-0.db.shop.svc.cluster.local.",
                "0 50 3306 db-1.db.shop.svc.cluster.local."
            ]
        );
        assert_eq!(srv.additionals.len(), 2, "glue for each target");
    }
}

#[test]
fn srv_ptr_and_external_name() {
    let (svcnet, _dir) = start();
    for t in TRANSPORTS {
        let srv = ask(
            &svcnet,
            "_http._tcp.cart.shop.svc.cluster.local.",
            RecordType::SRV,
            t,
        );
        assert_eq!(rdata(&srv), ["0 50 80 cart.shop.svc.cluster.local."]);
        let ptr = ask(&svcnet, "10.0.96.10.in-addr.arpa.", RecordType::PTR, t);
        assert_eq!(rdata(&ptr), ["cart.shop.svc.cluster.local."]);
        let ptr = ask(&svcnet, "10.0.1.10.in-addr.arpa.", RecordType::PTR, t);
        assert_eq!(rdata(&ptr), ["db-0.db.shop.svc.cluster.local."]);
        let ext = ask(&svcnet, "ext.shop.svc.cluster.local.", RecordType::A, t);
        let types: Vec<RecordType> = ext.answers.iter().map(|r| r.record_type()).collect();
        assert_eq!(
            types,
            [RecordType::CNAME, RecordType::A],
            "CNAME first, then the chased target"
        );
    }
}

#[test]
fn pod_records_and_schema_version() {
    let (svcnet, _dir) = start();
    for t in TRANSPORTS {
        assert_eq!(
            rdata(&ask(
                &svcnet,
                "10-1-0-10.shop.pod.cluster.local.",
                RecordType::A,
                t
            )),
            ["10.1.0.10"]
        );
        let txt = ask(&svcnet, "dns-version.cluster.local.", RecordType::TXT, t);
        assert_eq!(rdata(&txt), ["1.1.0"]);
        let soa = ask(&svcnet, "cluster.local.", RecordType::SOA, t);
        assert!(matches!(soa.answers[0].data, RData::SOA(_)));
    }
}

#[test]
fn negative_answers_carry_the_soa() {
    let (svcnet, _dir) = start();
    for t in TRANSPORTS {
        let nx = ask(&svcnet, "nope.shop.svc.cluster.local.", RecordType::A, t);
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(nx.authorities.len(), 1);
        assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
        let nodata = ask(&svcnet, "cart.shop.svc.cluster.local.", RecordType::TXT, t);
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        assert_eq!(nodata.authorities[0].record_type(), RecordType::SOA);
    }
}

/// With no upstream to forward to, svcnet refuses rather than claim NXDOMAIN for others' names.
#[test]
fn names_outside_the_zone_are_refused_without_upstreams() {
    let (svcnet, _dir) = start();
    for t in TRANSPORTS {
        let r = ask(&svcnet, "example.com.", RecordType::A, t);
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    }
}

#[test]
fn edns_payload_decides_truncation() {
    let (svcnet, _dir) = start();
    let name = Name::from_ascii("big.shop.svc.cluster.local.").expect("name");
    // 120 A records (about 2 KB) do not fit 512 bytes: TC over plain UDP...
    let plain = exchange(
        svcnet.dns,
        &request(&name, RecordType::A, None),
        Transport::Udp,
        TIMEOUT,
    )
    .expect("reply");
    assert!(
        plain.metadata.truncation,
        "TC set when the answer exceeds 512 bytes"
    );
    assert!(plain.answers.len() < 120);
    // ...fit when the client offers 4096 bytes with EDNS, which svcnet echoes...
    let edns = exchange(
        svcnet.dns,
        &request(&name, RecordType::A, Some(4096)),
        Transport::Udp,
        TIMEOUT,
    )
    .expect("reply");
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 120);
    assert_eq!(edns.edns.as_ref().map(|e| e.max_payload()), Some(4096));
    // ...and always fit over TCP.
    let tcp = exchange(
        svcnet.dns,
        &request(&name, RecordType::A, None),
        Transport::Tcp,
        TIMEOUT,
    )
    .expect("reply");
    assert_eq!(tcp.answers.len(), 120);
}

#[test]
fn malformed_packets_get_formerr_or_nothing_and_the_server_lives() {
    let (svcnet, _dir) = start();
    // A header announcing one question followed by garbage: FORMERR.
    let mut bad = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    bad.extend([0x3f, b'x', b'y']);
    let reply = exchange_raw(svcnet.dns, &bad, Transport::Udp, TIMEOUT).expect("FORMERR reply");
    let reply = Message::from_vec(&reply).expect("parse");
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reply.metadata.id, 0x1234);
    // Two questions in one message: FORMERR too.
    let mut two = request(
        &Name::from_ascii("cart.shop.svc.cluster.local.").expect("name"),
        RecordType::A,
        None,
    );
    two.queries.push(two.queries[0].clone());
    let reply = exchange(svcnet.dns, &two, Transport::Udp, TIMEOUT).expect("reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Shorter than a header: dropped. The server must still answer afterwards.
    let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    socket.send_to(&[1, 2, 3], svcnet.dns).expect("send");
    let ok = ask(
        &svcnet,
        "cart.shop.svc.cluster.local.",
        RecordType::A,
        Transport::Udp,
    );
    assert_eq!(rdata(&ok), ["10.96.0.10"]);
}

#[test]
fn zone_transfers_are_refused() {
    let (svcnet, _dir) = start();
    let r = ask(&svcnet, "cluster.local.", RecordType::AXFR, Transport::Tcp);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn edns_versions_above_zero_get_badvers() {
    let (svcnet, _dir) = start();
    let name = Name::from_ascii("cart.shop.svc.cluster.local.").expect("name");
    let mut msg = request(&name, RecordType::A, Some(1232));
    if let Some(edns) = msg.edns.as_mut() {
        edns.set_version(1);
    }
    let reply = exchange(svcnet.dns, &msg, Transport::Udp, TIMEOUT).expect("reply");
    // BADVERS and BADSIG share the code 16 (RFC 6891, RFC 8945); hickory decodes it as BADSIG.
    assert_eq!(u16::from(reply.metadata.response_code), 16, "BADVERS");
}

#[test]
fn manifest_edits_are_served_within_a_second() {
    let (svcnet, dir) = start();
    let service = |ip: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "late", "namespace": "shop"},
               "spec": {"clusterIP": ip, "ports": [{"port": 80}]}})
    };
    let name = "late.shop.svc.cluster.local.";
    assert_eq!(
        ask(&svcnet, name, RecordType::A, Transport::Udp)
            .metadata
            .response_code,
        ResponseCode::NXDomain
    );

    for ip in ["10.96.0.77", "10.96.0.78"] {
        let written = std::time::Instant::now();
        write_objects(dir.path(), "late.json", &[service(ip)]);
        loop {
            if rdata(&ask(&svcnet, name, RecordType::A, Transport::Udp)) == [ip] {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(1),
                "edit not visible after {:?}",
                written.elapsed()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "records: {ip} served {:?} after the file was written",
            written.elapsed()
        );
    }
    std::fs::remove_file(dir.path().join("late.json")).expect("remove");
    let removed = std::time::Instant::now();
    while ask(&svcnet, name, RecordType::A, Transport::Udp)
        .metadata
        .response_code
        != ResponseCode::NXDomain
    {
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "deletion not visible after a second"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
