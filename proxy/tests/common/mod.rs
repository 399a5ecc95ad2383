//! Fixtures: small clusters written out field by field, and a throwaway network namespace.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use svcnet_cluster::{
    ClusterState, Snapshot,
    model::{
        Endpoint, EndpointPort, EndpointSlice, ObjectKey, Protocol, Service, ServiceAddressing, ServicePort,
        ServiceType, TargetPort, TrafficPolicy,
    },
};
use svcnet_proxy::{Desired, NftCommand, NodeContext, desired, nft::Transaction};

pub const NODE: &str = "node-a";

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn key(s: &str) -> ObjectKey {
    let (ns, name) = s.split_once('/').unwrap();
    ObjectKey::new(ns, name)
}

/// A ClusterIP Service `ns/name` on `ips` with `ports`; change the rest with `..`.
pub fn service(name: &str, ips: &[&str], ports: Vec<ServicePort>) -> Service {
    Service {
        key: key(name),
        service_type: ServiceType::ClusterIp,
        addressing: ServiceAddressing::ClusterIp(ips.iter().map(|s| ip(s)).collect()),
        ports,
        selector: Some(BTreeMap::from([("app".to_owned(), "x".to_owned())])),
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

pub fn port(name: Option<&str>, protocol: Protocol, port: u16) -> ServicePort {
    ServicePort {
        name: name.map(str::to_owned),
        protocol,
        port,
        target_port: TargetPort::Number(port),
        node_port: None,
    }
}

pub fn node_port(name: Option<&str>, protocol: Protocol, number: u16, node_port: u16) -> ServicePort {
    ServicePort {
        node_port: Some(node_port),
        ..port(name, protocol, number)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    /// Not ready, not terminating (starting up, failing its probe).
    Unready,
    /// Terminating but still serving (draining).
    Draining,
    /// Terminating and no longer serving.
    Gone,
}

pub fn endpoint(addr: &str, node: Option<&str>, state: State) -> Endpoint {
    let (ready, serving, terminating) = match state {
        State::Ready => (true, true, false),
        State::Unready => (false, false, false),
        State::Draining => (false, true, true),
        State::Gone => (false, false, true),
    };
    Endpoint {
        addresses: vec![ip(addr)],
        hostname: None,
        ready,
        serving,
        terminating,
        node_name: node.map(str::to_owned),
        zone: None,
        pod_name: None,
    }
}

/// A slice `ns/slice-name` of Service `service` (same namespace).
pub fn slice(
    name: &str,
    service: &str,
    ports: &[(Option<&str>, Protocol, u16)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        key: key(name),
        service_name: service.into(),
        ports: ports
            .iter()
            .map(|(name, protocol, port)| EndpointPort {
                name: name.map(str::to_owned),
                protocol: *protocol,
                port: Some(*port),
            })
            .collect(),
        endpoints,
        last_change_trigger_time: None,
    }
}

pub fn snapshot(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Snapshot {
    let mut state = ClusterState::default();
    for svc in services {
        let key = svc.key.clone();
        state.services.apply(key, svc);
    }
    for slice in slices {
        let key = slice.key.clone();
        state.slices.apply(key, slice);
    }
    state.snapshot(true)
}

pub fn node(nodeport_addresses: &[&str], cluster_cidrs: &[&str]) -> NodeContext {
    NodeContext {
        node_name: Some(NODE.to_owned()),
        nodeport_addresses: nodeport_addresses.iter().map(|s| ip(s)).collect(),
        cluster_cidrs: cluster_cidrs.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

/// `ns/web`: ClusterIP 10.96.0.1, TCP 80.
pub fn web_service() -> Service {
    service("ns/web", &["10.96.0.1"], vec![port(None, Protocol::Tcp, 80)])
}

/// `svc` (named `ns/web`) with one slice of ready `endpoints` on another node, port 8080.
pub fn web_with(svc: Service, endpoints: &[&str]) -> Snapshot {
    let slices = vec![slice(
        "ns/web-1",
        "web",
        &[(None, Protocol::Tcp, 8080)],
        endpoints
            .iter()
            .map(|addr| endpoint(addr, Some("node-b"), State::Ready))
            .collect(),
    )];
    snapshot(vec![svc], slices)
}

/// [`web_service`] with `endpoints`.
pub fn web(endpoints: &[&str]) -> Snapshot {
    web_with(web_service(), endpoints)
}

/// The desired state of `snapshot` on a node with cluster CIDR 10.244.0.0/16.
pub fn on_node(snapshot: &Snapshot) -> Desired {
    desired(snapshot, &node(&[], &["10.244.0.0/16"]))
}

/// The desired state of [`web`].
pub fn web_state(endpoints: &[&str]) -> Desired {
    on_node(&web(endpoints))
}

/// A cluster with every kind of entry point and every rule variant, in both families:
/// ClusterIP (dual-stack), NodePort, LoadBalancer with externalIPs and an ingress IP,
/// Local policies with and without local endpoints, a Service without endpoints, TCP, UDP
/// and SCTP, a hairpin-capable local endpoint.
pub fn rich() -> (Snapshot, NodeContext) {
    use Protocol::*;
    let services = vec![
        service(
            "shop/web",
            &["10.96.0.80", "fd00:96::80"],
            vec![port(Some("http"), Tcp, 80), port(Some("dns"), Udp, 53)],
        ),
        Service {
            service_type: ServiceType::NodePort,
            ..service(
                "shop/api",
                &["10.96.0.90"],
                vec![node_port(None, Tcp, 8080, 30080)],
            )
        },
        Service {
            service_type: ServiceType::LoadBalancer,
            external_ips: vec![ip("192.0.2.10"), ip("2001:db8::10")],
            load_balancer_ips: vec![ip("198.51.100.7"), ip("2001:db8:ff::7")],
            // One range holds a node address: the load-balancer IP may then be a source too.
            load_balancer_source_ranges: ["203.0.113.0/25", "192.168.0.0/16", "2001:db8:1::/48"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            session_affinity: Some(std::time::Duration::from_secs(10_800)),
            external_traffic_policy: TrafficPolicy::Local,
            ..service(
                "shop/front",
                &["10.96.0.100", "fd00:96::100"],
                vec![
                    node_port(Some("https"), Tcp, 443, 30443),
                    port(Some("sig"), Sctp, 9000),
                ],
            )
        },
        Service {
            internal_traffic_policy: TrafficPolicy::Local,
            ..service("shop/cache", &["10.96.0.110"], vec![port(None, Udp, 11211)])
        },
        service(
            "shop/empty",
            &["10.96.0.120", "fd00:96::120"],
            vec![port(None, Tcp, 80)],
        ),
    ];
    let slices = vec![
        slice(
            "shop/web-v4",
            "web",
            &[(Some("http"), Tcp, 8080), (Some("dns"), Udp, 5353)],
            vec![
                endpoint("10.244.1.10", Some(NODE), State::Ready),
                endpoint("10.244.2.10", Some("node-b"), State::Ready),
                endpoint("10.244.2.11", Some("node-b"), State::Unready),
            ],
        ),
        slice(
            "shop/web-v6",
            "web",
            &[(Some("http"), Tcp, 8080), (Some("dns"), Udp, 5353)],
            vec![endpoint("fd00:244::10", Some(NODE), State::Ready)],
        ),
        slice(
            "shop/api-1",
            "api",
            &[(None, Tcp, 9090)],
            vec![
                endpoint("10.244.2.20", Some("node-b"), State::Ready),
                endpoint("10.244.3.20", Some("node-c"), State::Ready),
                endpoint("10.244.3.21", Some("node-c"), State::Ready),
            ],
        ),
        slice(
            "shop/front-1",
            "front",
            &[(Some("https"), Tcp, 8443), (Some("sig"), Sctp, 9000)],
            vec![
                endpoint("10.244.1.30", Some(NODE), State::Ready),
                endpoint("10.244.2.30", Some("node-b"), State::Ready),
            ],
        ),
        slice(
            "shop/front-2",
            "front",
            &[(Some("https"), Tcp, 8443), (Some("sig"), Sctp, 9000)],
            vec![endpoint("2001:db8:244::30", Some("node-b"), State::Ready)],
        ),
        slice(
            "shop/cache-1",
            "cache",
            &[(None, Udp, 11211)],
            vec![endpoint("10.244.2.40", Some("node-b"), State::Ready)],
        ),
    ];
    (
        snapshot(services, slices),
        node(
            &["192.168.1.10", "192.168.2.10", "fd00:1::10"],
            &["10.244.0.0/16", "fd00:244::/48"],
        ),
    )
}

/// A network namespace of this test process, deleted on drop, so nft commands never touch the
/// host's ruleset.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates the namespace, or panics saying why tests that need one cannot run.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // `id -u` rather than geteuid(): the workspace forbids unsafe code.
        let uid = Command::new("id").arg("-u").output().expect("run id -u");
        let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
        assert_eq!(
            uid, "0",
            "this test loads nftables rules in a network namespace and must run as root (uid is {uid})"
        );
        let name = format!(
            "svcnet-px-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `ip netns add` (is iproute2 installed?): {e}"));
        assert!(
            out.status.success(),
            "`ip netns add {name}` failed, network namespaces are needed to test nft rules: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let netns = Self { name };
        netns.list(&["ruleset"]);
        netns
    }

    pub fn nft(&self) -> NftCommand {
        NftCommand::in_netns(&self.name)
    }

    /// Applies `tx` in the namespace, or panics with nft's error and the text.
    pub async fn apply(&self, tx: &Transaction) {
        self.nft().apply(tx).await.unwrap_or_else(|e| panic!("{e}\n{tx}"));
    }

    /// Checks `tx` with `nft -c`, then applies it; panics with nft's error and the text.
    pub async fn check_and_apply(&self, tx: &Transaction) {
        self.nft().check(tx).await.unwrap_or_else(|e| panic!("{e}\n{tx}"));
        self.apply(tx).await;
    }

    /// `nft list ARGS` inside the namespace (blocking, for any test body).
    pub fn list(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "list"])
            .args(args)
            .output()
            .expect("run nft (is nftables installed?)");
        assert!(
            out.status.success(),
            "nft list {args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}
