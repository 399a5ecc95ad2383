//! The cluster objects svcnet serves from, reduced to the fields DNS and the proxy read.
//!
//! Names are kept as the API server spells them; Kubernetes object names are already lowercase
//! DNS labels, so DNS can compare them with a lowercased query without allocating.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

/// `namespace/name` of a namespaced object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: Arc<str>,
    pub labels: BTreeMap<String, String>,
}

/// Transport protocol of a Service or endpoint port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The protocol as it appears in an SRV name label (`_tcp`), lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses the API spelling (`TCP`); the API server defaults a missing protocol to TCP.
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            None => Some(Protocol::Tcp),
            Some(s) if s.eq_ignore_ascii_case("tcp") => Some(Protocol::Tcp),
            Some(s) if s.eq_ignore_ascii_case("udp") => Some(Protocol::Udp),
            Some(s) if s.eq_ignore_ascii_case("sctp") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }
}

/// How a Service is addressed, which decides what DNS answers for its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceAddressing {
    /// One virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: DNS answers with the ready endpoints themselves.
    Headless,
    /// `type: ExternalName`: a CNAME to this name (as written, without a trailing dot).
    ExternalName(String),
}

/// `spec.type`, which the proxy needs beyond DNS's addressing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceType {
    ClusterIp,
    NodePort,
    LoadBalancer,
    ExternalName,
}

/// `targetPort` of a Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A container port name, resolved per Pod.
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    pub node_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    #[default]
    Cluster,
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    pub service_type: ServiceType,
    pub addressing: ServiceAddressing,
    pub ports: Vec<ServicePort>,
    /// `spec.selector`; `None` when the Service has none (endpoints are managed by hand).
    pub selector: Option<BTreeMap<String, String>>,
    pub publish_not_ready_addresses: bool,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    pub load_balancer_source_ranges: Vec<ipnet::IpNet>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP` and its timeout.
    pub session_affinity: Option<Duration>,
    pub health_check_node_port: Option<u16>,
}

/// A port of an EndpointSlice. `port` is `None` for a slice without ports (CoreDNS serves A
/// records for such endpoints but no SRV).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointPort {
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// `conditions.ready`, with a missing value counted as ready (as the API documents).
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node_name: Option<String>,
    pub zone: Option<String>,
    /// Name of the Pod in `targetRef`, if the target is a Pod.
    pub pod_name: Option<String>,
}

/// An EndpointSlice, keyed by its own name and tied to its Service by the
/// `kubernetes.io/service-name` label.
///
/// Equality ignores `last_change_trigger_time`: a slice that differs only in it serves the
/// same records and programs the same rules, so it must not count as a change (no new SOA
/// serial, no proxy sync), as CoreDNS's "equivalent for DNS" rule has it.
#[derive(Clone, Debug)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    pub service_name: Arc<str>,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation: when the change
    /// that produced this version of the slice happened (set by the EndpointSlice
    /// controller). The start of the DNS and network programming latency SLIs.
    pub last_change_trigger_time: Option<SystemTime>,
}

impl PartialEq for EndpointSlice {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            key,
            service_name,
            ports,
            endpoints,
            last_change_trigger_time: _,
        } = self;
        *key == other.key
            && *service_name == other.service_name
            && *ports == other.ports
            && *endpoints == other.endpoints
    }
}

impl Eq for EndpointSlice {}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub ips: Vec<IpAddr>,
    pub node_name: Option<String>,
    pub host_network: bool,
    /// Set once the Pod is being deleted; such a Pod no longer vouches for its IP.
    pub terminating: bool,
    /// Whether the Pod's resolv.conf searches exactly kubelet's ClusterFirst list
    /// (`<ns>.svc.<zone> svc.<zone> <zone>` + the node's): `dnsPolicy` ClusterFirst (or
    /// ClusterFirstWithHostNet) and no `dnsConfig.searches`. Search completion relies on it.
    pub cluster_first_search: bool,
}
