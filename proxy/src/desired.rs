//! The desired state: from a cluster snapshot and the node, what every map and set of the
//! svcnet tables should hold. A pure function of its inputs, so it is tested without root and
//! diffed against what was applied last.
//!
//! The unit of the ruleset is the *entry point*: an (address, protocol, port) a client can
//! reach a Service on. Each ClusterIP:port, externalIP:port, load-balancer IP:port and node
//! address:nodePort is one. An entry point with endpoints dispatches to a load-balancing chain
//! chosen by its endpoint count and masquerade variant; its endpoints sit in one shared map
//! under (entry point, slot). One without endpoints is rejected or dropped in the filter hooks.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use ipnet::IpNet;
use svcnet_cluster::{
    ServiceEntry, Snapshot,
    model::{Protocol, ServiceAddressing, ServicePort, ServiceType, TrafficPolicy},
};

use crate::{nft::Family, node::NodeContext};

/// An address, protocol and port a Service is reached on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryPoint {
    pub addr: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// Whether a load-balancing chain marks the connection for masquerading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Masquerade {
    /// ClusterIP entries: only sources outside the cluster CIDRs, whose replies would
    /// otherwise not come back through this node.
    OffCluster,
    /// External entries of `externalTrafficPolicy: Cluster` Services: always, since the
    /// endpoint may be on another node and must answer through this one.
    Always,
    /// External entries of `externalTrafficPolicy: Local` Services: never, the endpoint is on
    /// this node and the client's address is kept (the point of the policy).
    Never,
}

/// A load-balancing chain: `numgen random mod N` over the entry point's endpoints. There is
/// one per (protocol, endpoint count, variant) in use, however many Services share it.
///
/// The protocol is part of it because each protocol has its own endpoint map (see
/// [`crate::ruleset`]); sorted by protocol first, so a family's chains list by protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbChain {
    pub protocol: Protocol,
    pub endpoints: u32,
    pub masquerade: Masquerade,
    /// `sessionAffinity: ClientIP`: the chain first sends a client back to the endpoint it
    /// got last time (see [`AffinityChain`]), and balances only clients it has not seen.
    pub affinity: bool,
}

impl LbChain {
    /// `lb-tcp-3`, `lb-udp-1-masq`, `lb-sctp-2-local`, `lb-tcp-2-aff`.
    pub fn name(self) -> String {
        let (protocol, n) = (self.protocol.as_str(), self.endpoints);
        let affinity = if self.affinity { "-aff" } else { "" };
        match self.masquerade {
            Masquerade::OffCluster => format!("lb-{protocol}-{n}{affinity}"),
            Masquerade::Always => format!("lb-{protocol}-{n}-masq{affinity}"),
            Masquerade::Never => format!("lb-{protocol}-{n}-local{affinity}"),
        }
    }
}

/// The chain that records which endpoint a new connection of a `ClientIP` Service went to, for
/// one protocol and one affinity timeout. There is one per (protocol, timeout) in use: the
/// timeout of an element added from the packet path is a constant of the rule that adds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AffinityChain {
    pub protocol: Protocol,
    pub timeout_secs: u32,
}

impl AffinityChain {
    /// `affinity-tcp-10800s`.
    pub fn name(self) -> String {
        format!("affinity-{}-{}s", self.protocol.as_str(), self.timeout_secs)
    }
}

/// What happens to new connections to an entry point without endpoints to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NoEndpoints {
    /// The Service has no usable endpoint anywhere: refuse at once (TCP reset, ICMP
    /// unreachable), so clients fail fast instead of timing out.
    Reject,
    /// A Local traffic policy and no usable endpoint on this node, while other nodes have
    /// some: drop, as kube-proxy does, so a load balancer's health check steers traffic away.
    Drop,
}

/// A map value with the Service port it came from, shown as an element comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labeled<T> {
    pub value: T,
    /// `namespace/name:port-name`, or `namespace/name` for an unnamed port.
    pub service: String,
}

/// The contents of one family's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyState {
    /// The Pod CIDRs of this family, merged so the interval set has no overlaps (nft refuses
    /// overlapping intervals).
    pub cluster_cidrs: Vec<IpNet>,
    /// Entry points with endpoints, to the chain that balances over them.
    pub service_ips: BTreeMap<EntryPoint, Labeled<LbChain>>,
    /// Entry points without endpoints to use.
    pub no_endpoints: BTreeMap<EntryPoint, Labeled<NoEndpoints>>,
    /// (entry point, slot) to endpoint; slots run from 0 to the chain's count - 1. Rendered
    /// into one map per protocol.
    pub endpoints: BTreeMap<(EntryPoint, u32), SocketAddr>,
    /// Endpoints on this node, which may reach themselves through a Service (hairpin) and
    /// must then be masqueraded so the reply goes back through the DNAT.
    pub hairpin: BTreeSet<IpAddr>,
    /// The load-balancing chains the table has.
    pub lb_chains: BTreeSet<LbChain>,
    /// Entry points of `ClientIP` Services with endpoints, to the chain that records a new
    /// connection's endpoint with the Service's timeout.
    pub affinity: BTreeMap<EntryPoint, Labeled<AffinityChain>>,
    /// The affinity chains the table has.
    pub affinity_chains: BTreeSet<AffinityChain>,
    /// Load-balancer entry points with `loadBalancerSourceRanges` of this family: new
    /// connections from other sources are dropped before DNAT.
    pub firewall: BTreeSet<EntryPoint>,
    /// (protected entry point, allowed source range); merged per entry point, since nft
    /// refuses overlapping intervals.
    pub firewall_allow: BTreeSet<(EntryPoint, IpNet)>,
}

/// The desired contents of both tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub ipv4: FamilyState,
    pub ipv6: FamilyState,
}

impl Desired {
    pub fn family(&self, family: Family) -> &FamilyState {
        match family {
            Family::Ipv4 => &self.ipv4,
            Family::Ipv6 => &self.ipv6,
        }
    }

    fn family_mut(&mut self, family: Family) -> &mut FamilyState {
        match family {
            Family::Ipv4 => &mut self.ipv4,
            Family::Ipv6 => &mut self.ipv6,
        }
    }

    /// This state as the kernel has it after a partial sync from `previous`: partial syncs add
    /// load-balancing and affinity chains but never delete one (a chain still referenced cannot be deleted,
    /// and kernels before 6.2 see a chain as referenced for a while after its last map element
    /// goes), so unused chains stay until the next full replace.
    #[must_use]
    pub fn keeping_chains_of(mut self, previous: &Desired) -> Desired {
        for family in Family::ALL {
            let kept = previous.family(family);
            let state = self.family_mut(family);
            state.lb_chains.extend(kept.lb_chains.iter().copied());
            state.affinity_chains.extend(kept.affinity_chains.iter().copied());
        }
        self
    }
}

/// The desired state for `snapshot` on `node`.
pub fn desired(snapshot: &Snapshot, node: &NodeContext) -> Desired {
    let mut desired = Desired::default();
    for family in Family::ALL {
        let cidrs: Vec<IpNet> = node
            .cluster_cidrs
            .iter()
            .copied()
            .filter(|net| Family::of(net.addr()) == family)
            .collect();
        desired.family_mut(family).cluster_cidrs = IpNet::aggregate(&cidrs);
    }
    // Sorted so that when two Services claim one entry point, the same one wins every time.
    let mut services: Vec<&ServiceEntry> = snapshot.services().collect();
    services.sort_by(|a, b| a.service.key.cmp(&b.service.key));
    for entry in services {
        add_service(&mut desired, entry, node);
    }
    desired
}

fn add_service(desired: &mut Desired, entry: &ServiceEntry, node: &NodeContext) {
    let svc = &*entry.service;
    // Headless Services and ExternalNames have no virtual IP: DNS alone serves them.
    let ServiceAddressing::ClusterIp(cluster_ips) = &svc.addressing else {
        return;
    };
    if svc.service_type == ServiceType::ExternalName {
        return;
    }
    let has_node_ports = matches!(
        svc.service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    );
    // Load-balancer addresses are programmed only while the Service is of that type, as
    // kube-proxy does; a stale status after a type change is ignored.
    let lb_ips: &[IpAddr] = if svc.service_type == ServiceType::LoadBalancer {
        &svc.load_balancer_ips
    } else {
        &[]
    };
    // kube-proxy bounds the timeout to 1 s..1 day through API validation; 0 is clamped here so
    // that an element never expires at once.
    let affinity = svc
        .session_affinity
        .map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX).max(1));
    for port in &svc.ports {
        let service = match &port.name {
            Some(name) => format!("{}:{name}", svc.key),
            None => svc.key.to_string(),
        };
        let candidates = candidates(entry, port, node);
        for family in Family::ALL {
            let in_family = |ip: &&IpAddr| Family::of(**ip) == family;
            // A Service exists in the families of its ClusterIPs only; its external addresses
            // or NodePorts in another family are not served (kube-proxy's per-family
            // proxiers ignore it there too).
            if !cluster_ips.iter().any(|ip| in_family(&ip)) {
                continue;
            }
            let all: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| Family::of(c.addr.ip()) == family)
                .collect();
            let cluster = usable(all.iter().copied());
            let local = usable(all.iter().copied().filter(|c| c.local));
            // Every local usable endpoint makes the cluster list non-empty too, so an empty
            // cluster list means no usable endpoint anywhere.
            let when_empty = if cluster.is_empty() {
                NoEndpoints::Reject
            } else {
                NoEndpoints::Drop
            };
            let internal = policy_endpoints(svc.internal_traffic_policy, &cluster, &local);
            let external = policy_endpoints(svc.external_traffic_policy, &cluster, &local);
            let external_masquerade = match svc.external_traffic_policy {
                TrafficPolicy::Cluster => Masquerade::Always,
                TrafficPolicy::Local => Masquerade::Never,
            };
            let state = desired.family_mut(family);
            let mut add = |addr: IpAddr, port_number: u16, endpoints: &[Candidate], masquerade| {
                let entry = EntryPoint {
                    addr,
                    protocol: port.protocol,
                    port: port_number,
                };
                let how = Balance {
                    masquerade,
                    // IPv4 only: nft 1.0.6 aborts (`netlink_gen_expr: Assertion dreg <
                    // ctx->reg_low`) on any packet-path map update whose key concatenates an
                    // IPv6 address, so IPv6 entry points are balanced without affinity.
                    affinity: affinity.filter(|_| family == Family::Ipv4),
                    when_empty,
                };
                state.add_entry(entry, endpoints, how, &service)
            };
            for ip in cluster_ips.iter().filter(in_family) {
                add(*ip, port.port, internal, Masquerade::OffCluster);
            }
            for ip in svc.external_ips.iter().filter(in_family) {
                add(*ip, port.port, external, external_masquerade);
            }
            let ranges: Vec<IpNet> = svc
                .load_balancer_source_ranges
                .iter()
                .copied()
                .filter(|net| Family::of(net.addr()) == family)
                .collect();
            let lb_entries: Vec<EntryPoint> = lb_ips
                .iter()
                .filter(in_family)
                .filter_map(|ip| add(*ip, port.port, external, external_masquerade))
                .collect();
            // NodePorts bypass the source ranges, as in kube-proxy: they are not the load
            // balancer's address.
            if let Some(node_port) = port.node_port.filter(|_| has_node_ports) {
                for ip in node.nodeport_addresses.iter().filter(in_family) {
                    add(*ip, node_port, external, external_masquerade);
                }
            }
            if !ranges.is_empty() {
                for entry in lb_entries {
                    state.add_firewall(entry, &ranges, node);
                }
            }
        }
    }
}

/// How an entry point's connections are balanced, and refused when it has no endpoints.
#[derive(Clone, Copy, Debug)]
struct Balance {
    masquerade: Masquerade,
    /// The `ClientIP` affinity timeout in seconds, if the Service has one.
    affinity: Option<u32>,
    when_empty: NoEndpoints,
}

impl FamilyState {
    /// Adds `entry` unless another Service claimed it first; returns it if added.
    fn add_entry(
        &mut self,
        entry: EntryPoint,
        endpoints: &[Candidate],
        how: Balance,
        service: &str,
    ) -> Option<EntryPoint> {
        if self.service_ips.contains_key(&entry) || self.no_endpoints.contains_key(&entry) {
            return None;
        }
        let service = service.to_owned();
        let Ok(count @ 1..) = u32::try_from(endpoints.len()) else {
            let value = Labeled {
                value: how.when_empty,
                service,
            };
            self.no_endpoints.insert(entry, value);
            return Some(entry);
        };
        if let Some(timeout_secs) = how.affinity {
            let chain = AffinityChain {
                protocol: entry.protocol,
                timeout_secs,
            };
            self.affinity_chains.insert(chain);
            let value = Labeled {
                value: chain,
                service: service.clone(),
            };
            self.affinity.insert(entry, value);
        }
        let chain = LbChain {
            protocol: entry.protocol,
            endpoints: count,
            masquerade: how.masquerade,
            affinity: how.affinity.is_some(),
        };
        self.lb_chains.insert(chain);
        self.service_ips.insert(
            entry,
            Labeled {
                value: chain,
                service,
            },
        );
        for (slot, endpoint) in (0..).zip(endpoints) {
            self.endpoints.insert((entry, slot), endpoint.addr);
            if endpoint.local {
                self.hairpin.insert(endpoint.addr.ip());
            }
        }
        Some(entry)
    }

    /// Lets only `ranges` (all of `entry`'s family) reach the load-balancer entry point
    /// `entry`. When a range holds an address of this node, the load-balancer IP itself is
    /// allowed too, as kube-proxy does: traffic the node sends to its own load balancer's
    /// address may come back with that address as its source (VIP loopback).
    fn add_firewall(&mut self, entry: EntryPoint, ranges: &[IpNet], node: &NodeContext) {
        let mut allowed = ranges.to_vec();
        let holds_node = node
            .nodeport_addresses
            .iter()
            .any(|ip| ranges.iter().any(|net| net.contains(ip)));
        if holds_node {
            allowed.push(IpNet::from(entry.addr));
        }
        self.firewall.insert(entry);
        for net in IpNet::aggregate(&allowed) {
            self.firewall_allow.insert((entry, net));
        }
    }
}

/// An endpoint address with the port of a Service port, and its conditions.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    addr: SocketAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// Every endpoint address of the Service with the port its slice gives `port`: the slice port
/// of the same name and protocol (unnamed matches unnamed). Slices without such a port
/// contribute nothing: their endpoints do not serve this port.
fn candidates(entry: &ServiceEntry, port: &ServicePort, node: &NodeContext) -> Vec<Candidate> {
    let mut out = Vec::new();
    for slice in &entry.slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let local = node.is_local(endpoint.node_name.as_deref());
            out.extend(endpoint.addresses.iter().map(|ip| Candidate {
                addr: SocketAddr::new(*ip, target),
                ready: endpoint.ready,
                serving: endpoint.serving,
                terminating: endpoint.terminating,
                local,
            }));
        }
    }
    out
}

/// The endpoints to balance over: the ready ones; if none is ready, those still serving while
/// terminating (kube-proxy's ProxyTerminatingEndpoints), so a rolling update with no ready Pod
/// left still drains to the old ones. Sorted by address and without repeats (an endpoint can
/// be in two slices while they are rebalanced), so slots are stable across syncs.
fn usable<'a>(candidates: impl Iterator<Item = &'a Candidate> + Clone) -> Vec<Candidate> {
    let ready: Vec<Candidate> = candidates.clone().filter(|c| c.ready).copied().collect();
    let mut chosen = if ready.is_empty() {
        candidates
            .filter(|c| c.serving && c.terminating)
            .copied()
            .collect()
    } else {
        ready
    };
    chosen.sort_by_key(|c| c.addr);
    chosen.dedup_by_key(|c| c.addr);
    chosen
}

fn policy_endpoints<'a>(
    policy: TrafficPolicy,
    cluster: &'a [Candidate],
    local: &'a [Candidate],
) -> &'a [Candidate] {
    match policy {
        TrafficPolicy::Cluster => cluster,
        TrafficPolicy::Local => local,
    }
}
